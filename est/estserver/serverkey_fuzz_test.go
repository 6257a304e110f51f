package estserver

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"coapca/est"

	"coapca/authority"
	"coapca/errs"
	"coapca/est/cms"
	"coapca/internal/testpki"
)

// FuzzEncryptionRequest feeds CSR bytes from the network to the reading of DecryptKeyIdentifier,
// AsymmetricDecryptKeyIdentifier and SMIMECapabilities: never a panic, every refusal a client
// error with a one-line diagnostic, and a resolved KEK recipient is a configured key.
func FuzzEncryptionRequest(f *testing.F) {
	key := testpki.NewKey(f)
	cert := testpki.SelfSigned(f, &x509.Certificate{Subject: pkix.Name{CommonName: "fuzz"}}, key)
	kek := bytes.Repeat([]byte{1}, 16)
	s := New(nil, nil)
	if err := s.SetKeyEncryption(KeyEncryption{KEKs: map[string][]byte{"k": kek}, Signer: key, Chain: []*x509.Certificate{cert}}); err != nil {
		f.Fatal(err)
	}
	capsAttr, _ := est.SMIMECapabilitiesAttribute(cms.OIDAES128CBC, cms.OIDAES256Wrap)
	for _, attrs := range [][]est.Attribute{
		{est.DecryptKeyIdentifierAttribute([]byte("k"))},
		{capsAttr, est.AsymmetricDecryptKeyIdentifierAttribute(est.SubjectKeyID(cert))},
		{est.DecryptKeyIdentifierAttribute([]byte("k")), est.DecryptKeyIdentifierAttribute([]byte("x"))},
	} {
		csr, err := est.CreateCSRWithAttributes(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "f"}}, key, attrs)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(csr)
	}
	r := &Request{Requester: authority.Requester{Chain: []*x509.Certificate{cert}}}
	f.Fuzz(func(t *testing.T, b []byte) {
		csr, err := est.ParseCSR(b, false)
		if err != nil {
			return
		}
		kr, err := s.encryptionRecipient(csr, r)
		if err != nil {
			if k := errs.KindOf(err); k != errs.BadRequest && k != errs.NotAcceptable {
				t.Fatalf("kind %v: %v", k, err)
			}
			if m := errs.Message(err); strings.ContainsAny(m, "\r\n") || !utf8.ValidString(m) {
				t.Fatalf("diagnostic %q", m)
			}
			return
		}
		if kr != nil && kr.r.KEK != nil && !bytes.Equal(kr.r.KEK, kek) {
			t.Fatal("resolved a KEK that is not configured")
		}
		if kr != nil && kr.r.Cert != nil && kr.r.Cert != cert {
			t.Fatal("resolved a certificate that is not the requester's")
		}
	})
}

// FuzzDecryptServerKey feeds a 280 part to the client's decryption: never a panic, and a sealed
// seed gives back its key.
func FuzzDecryptServerKey(f *testing.F) {
	key := testpki.NewKey(f)
	cert := testpki.SelfSigned(f, &x509.Certificate{Subject: pkix.Name{CommonName: "signer"}}, key)
	kek := bytes.Repeat([]byte{2}, 32)
	s := New(nil, nil)
	if err := s.SetKeyEncryption(KeyEncryption{KEKs: map[string][]byte{"k": kek}, Signer: key, Chain: []*x509.Certificate{cert}}); err != nil {
		f.Fatal(err)
	}
	p8, _ := est.MarshalPKCS8(key)
	seed, err := s.encryptKey(rand.Reader, &keyRecipient{r: cms.Recipient{KEK: kek, KEKID: []byte("k")}}, p8, time.Now())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	d := cms.Decrypter{KEK: func([]byte) []byte { return kek }}
	f.Fuzz(func(t *testing.T, b []byte) {
		dk, err := est.DecryptServerKey(b, d)
		if bytes.Equal(b, seed) && (err != nil || !bytes.Equal(dk.PKCS8, p8)) {
			t.Fatalf("the seed did not open to its key: %v", err)
		}
		if err == nil && (dk.Key == nil || dk.Signer == nil) {
			t.Fatal("opened without a key or a signer")
		}
	})
}

// FuzzDecryptKeyPackage feeds an RFC 8295 §8.1 key package (application/cms) to the client's
// parser: never a panic, a sealed seed gives back its key, and nothing opens without both
// signers.
func FuzzDecryptKeyPackage(f *testing.F) {
	key := testpki.NewKey(f)
	cert := testpki.SelfSigned(f, &x509.Certificate{Subject: pkix.Name{CommonName: "signer"}}, key)
	kek := bytes.Repeat([]byte{2}, 32)
	s := New(nil, nil)
	if err := s.SetKeyEncryption(KeyEncryption{KEKs: map[string][]byte{"k": kek}, Signer: key, Chain: []*x509.Certificate{cert}}); err != nil {
		f.Fatal(err)
	}
	p8, _ := est.MarshalPKCS8(key)
	now := time.Now()
	env, err := s.encryptKey(rand.Reader, &keyRecipient{r: cms.Recipient{KEK: kek, KEKID: []byte("k")}}, p8, now)
	if err != nil {
		f.Fatal(err)
	}
	seed, err := s.signEnvelope(rand.Reader, env, now)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add(env)
	d := cms.Decrypter{KEK: func([]byte) []byte { return kek }}
	f.Fuzz(func(t *testing.T, b []byte) {
		kp, err := est.DecryptKeyPackage(b, d)
		if bytes.Equal(b, seed) && (err != nil || !bytes.Equal(kp.PKCS8, p8)) {
			t.Fatalf("the seed did not open to its key: %v", err)
		}
		if err == nil && (kp.Key == nil || kp.Signer == nil || kp.OuterSigner == nil) {
			t.Fatal("opened without a key or a signer")
		}
	})
}
