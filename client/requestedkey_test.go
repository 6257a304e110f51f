package client

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"testing"

	"coapca/est"
	"coapca/internal/testpki"
)

// TestRequestedKey: the key an issued certificate is checked against is the CSR's, whether it
// is taken from the certificate (SubjectPublicKeyInfo byte-identical to the CSR's) or parsed
// from the CSR; the attack rows are a server answering with a certificate for another key.
func TestRequestedKey(t *testing.T) {
	ca := testpki.NewCA(t, "requested-key CA")
	key, other := testpki.NewKey(t), testpki.NewKey(t)
	csr, err := est.CreateCSR(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "dev"}}, key, "")
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := x509.ParseCertificateRequest(csr)
	if err != nil {
		t.Fatal(err)
	}
	if spki, ok := csrPublicKeyInfo(csr); !ok || !bytes.Equal(spki, parsed.RawSubjectPublicKeyInfo) {
		t.Fatalf("csrPublicKeyInfo = %x, %v; want the CSR's SubjectPublicKeyInfo", spki, ok)
	}
	ours := ca.Issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "dev"}}, key.Public())
	foreign := ca.Issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "dev"}}, other.Public())
	noCAs := func(context.Context) ([]*x509.Certificate, error) { return nil, nil }
	for _, tc := range []struct {
		name    string
		csr     []byte
		issued  *x509.Certificate
		wantErr bool // requestedKey fails
		ok      bool // checkIssuedCert accepts
	}{
		{"the certificate certifies the CSR's key", csr, ours, false, true},
		{"attack: the certificate certifies another key", csr, foreign, false, false},
		{"CSR with trailing bytes: not read by the shortcut, refused as before", append(append([]byte(nil), csr...), 0), ours, true, false},
		{"our CSR does not parse", []byte{0x30, 0x03, 0x02, 0x01, 0x00}, ours, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pub, err := requestedKey(tc.csr, tc.issued)
			if (err != nil) != tc.wantErr {
				t.Fatalf("requestedKey: %v", err)
			}
			if err != nil {
				return
			}
			if !pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(key.Public()) {
				t.Fatal("requestedKey returned a key other than the CSR's")
			}
			err = checkIssuedCert(context.Background(), "sen", tc.issued, pub, nil, nil, noCAs)
			if tc.ok != (err == nil) {
				t.Fatalf("checkIssuedCert: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// BenchmarkRequestedKey compares the key lookup of every enrollment with parsing the whole CSR.
func BenchmarkRequestedKey(b *testing.B) {
	ca := testpki.NewCA(b, "bench CA")
	key := testpki.NewKey(b)
	csr, err := est.CreateCSR(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "dev"}}, key, "")
	if err != nil {
		b.Fatal(err)
	}
	issued := ca.Issue(b, &x509.Certificate{Subject: pkix.Name{CommonName: "dev"}}, key.Public())
	b.Run("requestedKey", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := requestedKey(csr, issued); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ParseCertificateRequest", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := x509.ParseCertificateRequest(csr); err != nil {
				b.Fatal(err)
			}
		}
	})
}
