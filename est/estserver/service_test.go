package estserver

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"coapca/authority"
	"coapca/errs"
	"coapca/est"
	"coapca/est/esttest"
)

func newCSR(t testing.TB, cn, pw string) (crypto.Signer, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := est.CreateCSR(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}, DNSNames: []string{cn + ".example"}}, key, pw)
	if err != nil {
		t.Fatal(err)
	}
	return key, der
}

// TestServiceLinking: the service reports what it found about PoP linking (RFC 7030 §3.5,
// RFC 9148 §3, edhoc-unique) and leaves the decision to the authority (authority tests cover
// what each finding means for each requester kind).
func TestServiceLinking(t *testing.T) {
	fa := esttest.New(t, "pop")
	svc := New(fa, nil)
	ctx := context.Background()
	tlsUnique := []byte("finishedmsg!")
	exporter := make([]byte, 32)
	edhocUnique := []byte("0123456789abcdef0123456789abcdef")
	dev := fa.ClientCert(t, "device").Cert
	b64 := base64.StdEncoding.EncodeToString(tlsUnique)
	peer := authority.Requester{Chain: []*x509.Certificate{dev}, Transport: authority.TransportCoAPS, Protocol: authority.ProtocolEST}

	for _, tc := range []struct {
		name string
		pw   string
		tu   []byte
		cb   []byte
		want authority.Linking
	}{
		{"no pw", "", tlsUnique, nil, authority.LinkAbsent},
		{"base64 tls-unique", b64, tlsUnique, nil, authority.LinkMatched},
		{"raw tls-unique", string(tlsUnique), tlsUnique, nil, authority.LinkMatched},
		{"tls-exporter", base64.StdEncoding.EncodeToString(exporter), tlsUnique, nil, authority.LinkMatched},
		{"mismatch", "AAAAAAAAAAAAAAAA", tlsUnique, nil, authority.LinkMismatched},
		{"pw without binding", b64, nil, nil, authority.LinkMismatched},
		{"edhoc-unique", base64.StdEncoding.EncodeToString(edhocUnique), nil, edhocUnique, authority.LinkMatched},
		{"edhoc-unique mismatch", b64, nil, edhocUnique, authority.LinkMismatched},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key, csr := newCSR(t, "dev1", tc.pw)
			var binding TLSBinding
			if tc.tu != nil {
				binding = StaticTLS{Unique: tc.tu, Exporter: exporter}
			}
			iss, err := svc.Enroll(ctx, &Request{Body: csr, Requester: peer, TLS: binding, ChannelBinding: tc.cb})
			switch {
			case tc.want == authority.LinkMismatched:
				if errs.KindOf(err) != errs.BadRequest {
					t.Fatalf("mismatched link: %v", err)
				}
			case err != nil:
				t.Fatal(err)
			case !key.Public().(*ecdsa.PublicKey).Equal(iss.Cert.PublicKey):
				t.Error("certificate is not for the CSR's key")
			}
			reqs := fa.Requests()
			last := reqs[len(reqs)-1]
			if last.Link != tc.want || last.Requester.Protocol != authority.ProtocolEST || last.Requester.Transport != authority.TransportCoAPS {
				t.Errorf("request %+v, want link %v", last, tc.want)
			}
		})
	}
	if _, err := svc.Enroll(ctx, &Request{Label: "nope", Body: []byte{0x30}, Requester: peer}); errs.KindOf(err) != errs.NotFound {
		t.Errorf("unknown label: %v", err)
	}
}

func TestServiceErrors(t *testing.T) {
	fa := esttest.New(t)
	svc := New(fa, nil)
	ctx := context.Background()
	if _, err := svc.Enroll(ctx, &Request{Body: []byte("junk")}); errs.KindOf(err) != errs.BadRequest {
		t.Errorf("bad CSR: %v", err)
	}
	_, csr := newCSR(t, "d", "")
	bad := append([]byte{}, csr...)
	bad[len(bad)-3] ^= 0x55
	if _, err := svc.Reenroll(ctx, &Request{Body: bad}); errs.KindOf(err) != errs.BadRequest || !strings.Contains(errs.Message(err), "signature") {
		t.Errorf("bad signature: %v", err)
	}
	fa.SetPending("", 1, 90*time.Second)
	_, err := svc.Enroll(ctx, &Request{Body: csr})
	if e := errs.As(err); e == nil || e.Kind != errs.Pending || e.RetryAfter != 90*time.Second {
		t.Errorf("pending: %v", err)
	}
	fa.SetError("", errs.New(errs.Forbidden, "not your subject"))
	if _, err := svc.Reenroll(ctx, &Request{Body: csr}); errs.KindOf(err) != errs.Forbidden {
		t.Errorf("forbidden: %v", err)
	}
	fa.SetError("", context.DeadlineExceeded) // untyped → Internal, text hidden
	_, err = svc.Enroll(ctx, &Request{Body: csr})
	if errs.KindOf(err) != errs.Internal || strings.Contains(errs.Message(err), "deadline") {
		t.Errorf("untyped: %v / %q", err, errs.Message(err))
	}
}

func TestServiceServerKeyGen(t *testing.T) {
	fa := esttest.New(t)
	svc := New(fa, nil)
	ctx := context.Background()
	// RFC 9148 A.3: the example CSR works; its (example) key is not the certified one.
	csrA3 := readVector(t, "a3-skg-request-286.der")
	sk, err := svc.ServerKeyGen(ctx, &Request{Body: csrA3})
	if err != nil {
		t.Fatal(err)
	}
	if sk.Issued.Cert.Subject.Organization[0] != "skg example" {
		t.Errorf("subject %v", sk.Issued.Cert.Subject)
	}
	k, err := x509.ParsePKCS8PrivateKey(sk.PKCS8)
	if err != nil {
		t.Fatal(err)
	}
	if !k.(*ecdsa.PrivateKey).PublicKey.Equal(sk.Issued.Cert.PublicKey) {
		t.Error("certificate does not certify the generated key")
	}
	oldCSR, _ := x509.ParseCertificateRequest(csrA3)
	if oldCSR.PublicKey.(*ecdsa.PublicKey).Equal(sk.Issued.Cert.PublicKey) {
		t.Error("the CSR's key was certified")
	}
	if r := fa.Requests(); r[len(r)-1].Op != authority.OpServerKeyGen || r[len(r)-1].PublicKey == nil {
		t.Errorf("request: %+v", r[len(r)-1])
	}
	// A corrupted signature is ignored for server keygen (RFC 9148 §4.8).
	bad := append([]byte{}, csrA3...)
	bad[len(bad)-3] ^= 0x55
	if _, err := svc.ServerKeyGen(ctx, &Request{Body: bad}); err != nil {
		t.Errorf("signature not ignored: %v", err)
	}
	// Asking for an encrypted key from a service without key encryption configured.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	enc, err := est.CreateCSRWithAttributes(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "enc"}},
		key, []est.Attribute{{Type: est.OIDDecryptKeyIdentifier, Values: []asn1.RawValue{{Tag: asn1.TagOctetString, Bytes: []byte("kek")}}}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = svc.ServerKeyGen(ctx, &Request{Body: enc})
	if errs.KindOf(err) != errs.NotAcceptable || !strings.Contains(errs.Message(err), "not configured") {
		t.Errorf("encrypted key request: %v", err)
	}
}

func TestServiceCSRAttrsAndCACerts(t *testing.T) {
	fa := esttest.New(t, "pop")
	fa.SetProfile(authority.Profile{Label: "pop", RequirePoP: true, KeyType: "P-384",
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyAgreement, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	svc := New(fa, nil)
	ctx := context.Background()
	a, err := svc.CSRAttrs(ctx, &Request{Label: "pop"})
	if err != nil {
		t.Fatal(err)
	}
	if !a.WantsChallengePassword() || a.KeyType() != "P-384" || a.SignatureAlgorithm() != x509.ECDSAWithSHA384 || len(a.Extensions()) != 2 {
		t.Errorf("csrattrs:\n%s", a)
	}
	s := a.String()
	for _, want := range []string{"digitalSignature, keyAgreement", "clientAuth"} {
		if !strings.Contains(s, want) {
			t.Errorf("String lacks %q:\n%s", want, s)
		}
	}
	a, err = svc.CSRAttrs(ctx, &Request{})
	if err != nil || a.WantsChallengePassword() || a.KeyType() != "P-256" {
		t.Errorf("default csrattrs: %v\n%s", err, a)
	}
	if _, err := svc.CSRAttrs(ctx, &Request{Label: "x"}); errs.KindOf(err) != errs.NotFound {
		t.Errorf("unknown label: %v", err)
	}
	certs, err := svc.CACerts(ctx, &Request{})
	if err != nil || len(certs) != 2 || !certs[1].Equal(fa.Root) {
		t.Errorf("cacerts: %v", err)
	}
	if _, err := svc.CACerts(ctx, &Request{Label: "x"}); errs.KindOf(err) != errs.NotFound {
		t.Errorf("unknown label: %v", err)
	}
}

// readVector reads an RFC 9148 example from the est package's testdata.
func readVector(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
