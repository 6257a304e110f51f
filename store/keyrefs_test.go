package store

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"
)

// keyRefCerts are certificates with and without a Subject Key Identifier, with extensions
// around it, with unique IDs absent, and a CA.
func keyRefCerts(t testing.TB) [][]byte {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpls := []*x509.Certificate{
		{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"}, NotBefore: now, NotAfter: now.Add(time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, SubjectKeyId: []byte{1, 2, 3, 4}},
		{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "leaf", SerialNumber: "x"}, NotBefore: now, NotAfter: now.Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			DNSNames: []string{"a.example"}, SubjectKeyId: bytes.Repeat([]byte{0xab}, 20)},
		{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "no-ski"}, NotBefore: now, NotAfter: now.Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature},
	}
	var out [][]byte
	for _, tmpl := range tmpls {
		// A leaf (not CA) template gets no SKI from CreateCertificate unless set.
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, der)
	}
	return out
}

// TestCertKeyRefs: the identifier read by walking the DER is the one x509.ParseCertificate
// finds, absent when there is none, and a truncated or trailing-garbage DER gives none.
func TestCertKeyRefs(t *testing.T) {
	for _, der := range keyRefCerts(t) {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		sum, keyID := CertKeyRefs(der)
		if want := sha256.Sum256(der); !bytes.Equal(sum, want[:]) {
			t.Errorf("%s: sum %x, want %x", c.Subject, sum, want)
		}
		if !bytes.Equal(keyID, c.SubjectKeyId) || (len(c.SubjectKeyId) == 0) != (keyID == nil) {
			t.Errorf("%s: key id %x, want %x", c.Subject, keyID, c.SubjectKeyId)
		}
		for _, bad := range [][]byte{der[:len(der)-1], append(bytes.Clone(der), 0), der[:10], nil} {
			if _, k := CertKeyRefs(bad); k != nil {
				t.Errorf("%s: malformed DER (%d bytes) gave key id %x", c.Subject, len(bad), k)
			}
		}
	}
}

// FuzzCertKeyRefs: whenever x509.ParseCertificate accepts the bytes, the walk finds exactly
// its Subject Key Identifier; it never panics on anything.
func FuzzCertKeyRefs(f *testing.F) {
	for _, der := range keyRefCerts(f) {
		f.Add(der)
	}
	f.Fuzz(func(t *testing.T, der []byte) {
		_, keyID := CertKeyRefs(der)
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return
		}
		if !bytes.Equal(keyID, c.SubjectKeyId) {
			t.Fatalf("key id %x, x509 says %x", keyID, c.SubjectKeyId)
		}
	})
}

func BenchmarkCertKeyRefs(b *testing.B) {
	der := keyRefCerts(b)[1]
	b.ReportAllocs()
	for b.Loop() {
		CertKeyRefs(der)
	}
}
