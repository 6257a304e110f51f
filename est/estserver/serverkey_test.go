package estserver

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"coapca/est"

	"coapca/authority"
	"coapca/errs"
	"coapca/est/cms"
	"coapca/est/esttest"
)

// issueFrom makes a certificate for key signed by the fake CA.
func issueFrom(t testing.TB, fa *esttest.Authority, key crypto.Signer, cn string, serial int64) *x509.Certificate {
	t.Helper()
	return fa.PKI.Issue(t, &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}, key.Public())
}

func pemFile(t testing.TB, dir, name, typ string, der []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// keyEncFixture is a service with key encryption on: a KEK "kek-1" (AES-256) and "kek-16"
// (AES-128), and a server certificate from the fake CA.
type keyEncFixture struct {
	fa       *esttest.Authority
	svc      *Service
	kek      []byte
	kek128   []byte
	srvChain []*x509.Certificate
}

func newKeyEncFixture(t *testing.T) *keyEncFixture {
	fa := esttest.New(t)
	f := &keyEncFixture{fa: fa, svc: New(fa, nil), kek: bytes.Repeat([]byte{0x42}, 32), kek128: bytes.Repeat([]byte{0x17}, 16)}
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	f.srvChain = []*x509.Certificate{issueFrom(t, fa, srvKey, "est server", 900), fa.CA}
	if err := f.svc.SetKeyEncryption(KeyEncryption{KEKs: map[string][]byte{"kek-1": f.kek, "kek-16": f.kek128},
		Signer: srvKey, Chain: f.srvChain}); err != nil {
		t.Fatal(err)
	}
	return f
}

func csrWith(t testing.TB, cn string, attrs ...est.Attribute) []byte {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := est.CreateCSRWithAttributes(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key, attrs)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func caps(t testing.TB, algs ...asn1.ObjectIdentifier) est.Attribute {
	a, err := est.SMIMECapabilitiesAttribute(algs...)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestServerKeyGenEncrypted asks for an encrypted key with each recipient kind and recovers it
// three ways: our est.DecryptServerKey, `openssl cms -decrypt`, and `openssl cms -verify` on the
// inner SignedData; the key must be the one the issued certificate certifies.
func TestServerKeyGenEncrypted(t *testing.T) {
	f := newKeyEncFixture(t)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecCert := issueFrom(t, f.fa, ecKey, "ec device", 901)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsaCert := issueFrom(t, f.fa, rsaKey, "rsa device", 902)
	dir := t.TempDir()
	ecPKCS8, _ := x509.MarshalPKCS8PrivateKey(ecKey)
	rsaPKCS8, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	for _, tc := range []struct {
		name    string
		attrs   []est.Attribute
		chain   []*x509.Certificate
		dec     cms.Decrypter
		openssl []string
		cipher  asn1.ObjectIdentifier
	}{
		{"kekri", []est.Attribute{est.DecryptKeyIdentifierAttribute([]byte("kek-1"))}, nil,
			cms.Decrypter{KEK: func(id []byte) []byte { return map[string][]byte{"kek-1": f.kek}[string(id)] }},
			[]string{"-secretkey", hex.EncodeToString(f.kek), "-secretkeyid", hex.EncodeToString([]byte("kek-1"))}, cms.OIDAES256CBC},
		{"kekri AES-128 with SMIMECapabilities", []est.Attribute{caps(t, cms.OIDAES128CBC, cms.OIDAES128Wrap), est.DecryptKeyIdentifierAttribute([]byte("kek-16"))}, nil,
			cms.Decrypter{KEK: func(id []byte) []byte { return f.kek128 }},
			[]string{"-secretkey", hex.EncodeToString(f.kek128), "-secretkeyid", hex.EncodeToString([]byte("kek-16"))}, cms.OIDAES128CBC},
		{"kari (own EC certificate)", []est.Attribute{est.AsymmetricDecryptKeyIdentifierAttribute(est.SubjectKeyID(ecCert))}, []*x509.Certificate{ecCert, f.fa.CA},
			cms.Decrypter{Key: ecKey, Cert: ecCert},
			[]string{"-recip", pemFile(t, dir, "ec.pem", "CERTIFICATE", ecCert.Raw), "-inkey", pemFile(t, dir, "ec.key", "PRIVATE KEY", ecPKCS8)}, cms.OIDAES256CBC},
		{"ktri (own RSA certificate)", []est.Attribute{est.AsymmetricDecryptKeyIdentifierAttribute(est.SubjectKeyID(rsaCert))}, []*x509.Certificate{rsaCert},
			cms.Decrypter{Key: rsaKey},
			[]string{"-recip", pemFile(t, dir, "rsa.pem", "CERTIFICATE", rsaCert.Raw), "-inkey", pemFile(t, dir, "rsa.key", "PRIVATE KEY", rsaPKCS8)}, cms.OIDAES256CBC},
	} {
		t.Run(tc.name, func(t *testing.T) {
			csr := csrWith(t, "encrypted "+tc.name, tc.attrs...)
			sk, err := f.svc.ServerKeyGen(context.Background(), &Request{Body: csr, RequireEncryptedKey: true,
				Requester: authority.Requester{Chain: tc.chain, Transport: authority.TransportCoAPS}})
			if err != nil {
				t.Fatal(err)
			}
			if sk.PKCS8 != nil || len(sk.Encrypted) == 0 {
				t.Fatalf("PKCS8 %d bytes, Encrypted %d bytes: the key must travel encrypted only", len(sk.PKCS8), len(sk.Encrypted))
			}
			certKey := sk.Issued.Cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
			dk, err := est.DecryptServerKey(sk.Encrypted, tc.dec)
			if err != nil {
				t.Fatal(err)
			}
			if !certKey.Equal(dk.Key.(crypto.Signer).Public()) || !dk.Signer.Equal(f.srvChain[0]) {
				t.Fatal("decrypted key does not match the certificate, or the signer is not the server")
			}
			if _, err := exec.LookPath("openssl"); err != nil {
				t.Skip("openssl not installed")
			}
			env := filepath.Join(dir, "key.p7m")
			os.WriteFile(env, sk.Encrypted, 0o600)
			if out, err := exec.Command("openssl", "cms", "-cmsout", "-print", "-inform", "DER", "-in", env).CombinedOutput(); err != nil ||
				!strings.Contains(string(out), tc.cipher.String()) && !strings.Contains(strings.ToLower(string(out)), cipherName(tc.cipher)) {
				t.Fatalf("content cipher is not %v: %v\n%s", tc.cipher, err, out)
			}
			sdFile := filepath.Join(dir, "signed.der")
			args := append([]string{"cms", "-decrypt", "-binary", "-inform", "DER", "-in", env, "-out", sdFile}, tc.openssl...)
			if out, err := exec.Command("openssl", args...).CombinedOutput(); err != nil {
				t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			sd, _ := os.ReadFile(sdFile)
			ci, err := cms.ContentInfo(cms.OIDSignedData, sd)
			if err != nil {
				t.Fatal(err)
			}
			ciFile := filepath.Join(dir, "signed.p7")
			os.WriteFile(ciFile, ci, 0o600)
			root := pemFile(t, dir, "root.pem", "CERTIFICATE", f.fa.Root.Raw)
			pkgFile := filepath.Join(dir, "pkg.der")
			if out, err := exec.Command("openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", ciFile,
				"-CAfile", root, "-purpose", "any", "-out", pkgFile).CombinedOutput(); err != nil {
				t.Fatalf("openssl cms -verify: %v\n%s", err, out)
			}
			pkg, _ := os.ReadFile(pkgFile)
			keys, err := cms.ParseAsymmetricKeyPackage(pkg)
			if err != nil || len(keys) != 1 {
				t.Fatalf("AsymmetricKeyPackage: %v", err)
			}
			k, err := x509.ParsePKCS8PrivateKey(keys[0])
			if err != nil || !certKey.Equal(k.(crypto.Signer).Public()) {
				t.Fatalf("openssl recovered a key that the certificate does not certify (%v)", err)
			}
		})
	}
}

func cipherName(oid asn1.ObjectIdentifier) string {
	switch {
	case oid.Equal(cms.OIDAES128CBC):
		return "aes-128-cbc"
	case oid.Equal(cms.OIDAES256CBC):
		return "aes-256-cbc"
	}
	return oid.String()
}

// TestServerKeyGenEncryptionRefused is the list of requests for an encrypted key that must be
// refused before any key is generated or certificate issued.
func TestServerKeyGenEncryptionRefused(t *testing.T) {
	f := newKeyEncFixture(t)
	own, other := f.fa.ClientCert(t, "device").Cert, f.fa.ClientCert(t, "victim").Cert
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	edCert := issueFrom(t, f.fa, edKey, "ed device", 950)
	plain := New(f.fa, nil) // no SetKeyEncryption
	des3 := asn1.ObjectIdentifier{1, 2, 840, 113549, 3, 7}
	for _, tc := range []struct {
		name    string
		svc     *Service
		csr     []byte
		chain   []*x509.Certificate
		require bool
		kind    errs.Kind
		msg     string
	}{
		{"unknown KEK identifier", f.svc, csrWith(t, "a", est.DecryptKeyIdentifierAttribute([]byte("guessed"))), nil, false, errs.BadRequest, "names no key-encryption key"},
		{"identifier naming another device's key", f.svc, csrWith(t, "a", est.AsymmetricDecryptKeyIdentifierAttribute(est.SubjectKeyID(other))),
			[]*x509.Certificate{own}, false, errs.BadRequest, "does not name the key of the certificate this session authenticated"},
		{"asymmetric without an authenticated certificate", f.svc, csrWith(t, "a", est.AsymmetricDecryptKeyIdentifierAttribute(est.SubjectKeyID(own))),
			nil, false, errs.BadRequest, "authenticated no certificate"},
		{"Ed25519 certificate cannot receive", f.svc, csrWith(t, "a", est.AsymmetricDecryptKeyIdentifierAttribute(est.SubjectKeyID(edCert))),
			[]*x509.Certificate{edCert}, false, errs.BadRequest, "only EC"},
		{"two identifiers", f.svc, csrWith(t, "a", est.DecryptKeyIdentifierAttribute([]byte("kek-1")), est.AsymmetricDecryptKeyIdentifierAttribute(est.SubjectKeyID(own))),
			[]*x509.Certificate{own}, false, errs.BadRequest, "more than one"},
		{"identifier not an OCTET STRING", f.svc, csrWith(t, "a", est.Attribute{Type: est.OIDDecryptKeyIdentifier, Values: []asn1.RawValue{{Tag: asn1.TagUTF8String, Bytes: []byte("kek-1")}}}),
			nil, false, errs.BadRequest, "OCTET STRING"},
		{"capabilities without a cipher we have", f.svc, csrWith(t, "a", caps(t, des3), est.DecryptKeyIdentifierAttribute([]byte("kek-1"))), nil, false, errs.NotAcceptable, "SMIMECapabilities"},
		{"encryption not configured", plain, csrWith(t, "a", est.DecryptKeyIdentifierAttribute([]byte("kek-1"))), nil, false, errs.NotAcceptable, "not configured"},
		{"Accept 280 with a CSR that says no key (downgrade to plaintext)", f.svc, csrWith(t, "a"), nil, true, errs.NotAcceptable, "needs a CSR with DecryptKeyIdentifier"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(f.fa.Requests())
			sk, err := tc.svc.ServerKeyGen(context.Background(), &Request{Body: tc.csr, RequireEncryptedKey: tc.require,
				Requester: authority.Requester{Chain: tc.chain, Transport: authority.TransportCoAPS}})
			if errs.KindOf(err) != tc.kind || !strings.Contains(errs.Message(err), tc.msg) {
				t.Fatalf("got %v (%v), want %v containing %q", sk, err, tc.kind, tc.msg)
			}
			if n := len(f.fa.Requests()); n != before {
				t.Fatalf("the authority was asked to issue (%d requests, was %d)", n, before)
			}
		})
	}
}

func TestSetKeyEncryptionValidates(t *testing.T) {
	fa := esttest.New(t)
	svc := New(fa, nil)
	k1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	c1 := issueFrom(t, fa, k1, "srv", 1)
	for _, tc := range []struct {
		name string
		k    KeyEncryption
	}{
		{"no signer", KeyEncryption{Chain: []*x509.Certificate{c1}}},
		{"certificate of another key", KeyEncryption{Signer: k2, Chain: []*x509.Certificate{c1}}},
		{"KEK of 20 bytes", KeyEncryption{Signer: k1, Chain: []*x509.Certificate{c1}, KEKs: map[string][]byte{"x": make([]byte, 20)}}},
		{"empty identifier", KeyEncryption{Signer: k1, Chain: []*x509.Certificate{c1}, KEKs: map[string][]byte{"": make([]byte, 16)}}},
	} {
		if err := svc.SetKeyEncryption(tc.k); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	if svc.keyEnc != nil {
		t.Error("a refused configuration was installed")
	}
}
