package testpki

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// Every role verifies to the root through the issuing CA with exactly the usage it is for,
// and not with the usage it is not for.
func TestRoles(t *testing.T) {
	root := NewCA(t, "root")
	ca := root.SubCA(t, "issuing")
	inter := x509.NewCertPool()
	inter.AddCert(ca.Cert)
	tests := []struct {
		name   string
		leaf   *Leaf
		usage  x509.ExtKeyUsage
		denied x509.ExtKeyUsage
		check  func(*x509.Certificate) bool
	}{
		{"device", ca.Device(t, "device-1", "SN-1"), x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth,
			func(c *x509.Certificate) bool { return c.Subject.SerialNumber == "SN-1" }},
		{"server", ca.Server(t), x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth,
			func(c *x509.Certificate) bool {
				return c.VerifyHostname("localhost") == nil && c.VerifyHostname("127.0.0.1") == nil && c.VerifyHostname("::1") == nil
			}},
		{"RA", ca.RA(t, "ra"), x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth,
			func(c *x509.Certificate) bool { return slices.ContainsFunc(c.UnknownExtKeyUsage, OIDCmcRA.Equal) }},
		{"CMP signer", ca.CMPSigner(t, "signer"), x509.ExtKeyUsageAny, x509.ExtKeyUsageServerAuth,
			func(c *x509.Certificate) bool { return slices.ContainsFunc(c.UnknownExtKeyUsage, OIDCmcCA.Equal) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.leaf.Cert
			if _, err := c.Verify(x509.VerifyOptions{Roots: root.Pool(), Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{tc.usage}}); err != nil {
				t.Fatalf("verify: %v", err)
			}
			if _, err := c.Verify(x509.VerifyOptions{Roots: root.Pool(), Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{tc.denied}}); err == nil {
				t.Fatalf("verifies for %v too", tc.denied)
			}
			if !tc.check(c) {
				t.Fatal("role attribute missing")
			}
			if c.IsCA || len(tc.leaf.Chain) != 3 || tc.leaf.Chain[2] != root.Cert {
				t.Fatalf("IsCA %v, chain of %d", c.IsCA, len(tc.leaf.Chain))
			}
			tc := tc.leaf.TLS()
			if len(tc.Certificate) != 2 || tc.Leaf != c {
				t.Fatalf("tls.Certificate carries %d certificates", len(tc.Certificate))
			}
		})
	}
}

// Two leaves never share a serial number (RFC 5280 §4.1.2.2).
func TestSerialsUnique(t *testing.T) {
	ca := NewCA(t, "root")
	seen := map[string]bool{ca.Cert.SerialNumber.String(): true}
	for range 50 {
		s := ca.Client(t, "c").Cert.SerialNumber
		if s.Sign() <= 0 || seen[s.String()] {
			t.Fatalf("serial %v reused or not positive", s)
		}
		seen[s.String()] = true
	}
}

func TestOtherKeyAndCSR(t *testing.T) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca := NewRoot(t, &x509.Certificate{Subject: pkix.Name{CommonName: "ed25519 root"}}, priv)
	if ca.Cert.PublicKeyAlgorithm != x509.Ed25519 {
		t.Fatalf("root key %v", ca.Cert.PublicKeyAlgorithm)
	}
	k := NewKey(t)
	csr := CSR(t, k, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "dev"}, DNSNames: []string{"dev.example"}})
	if csr.Subject.CommonName != "dev" || csr.DNSNames[0] != "dev.example" {
		t.Fatalf("CSR %v %v", csr.Subject, csr.DNSNames)
	}
	c := ca.Issue(t, &x509.Certificate{Subject: csr.Subject}, csr.PublicKey)
	if err := c.CheckSignatureFrom(ca.Cert); err != nil {
		t.Fatal(err)
	}
}

// The PEM files load with the standard library as a key pair an external peer would use.
func TestWritePEM(t *testing.T) {
	dir := t.TempDir()
	ca := NewCA(t, "root")
	leaf := ca.Server(t)
	certPath, keyPath := leaf.WritePEM(t, dir, "server")
	if _, err := tls.LoadX509KeyPair(certPath, keyPath); err != nil {
		t.Fatal(err)
	}
	p := WriteCerts(t, filepath.Join(dir, "chain.pem"), leaf.Cert, ca.Cert)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	for blk, rest := pem.Decode(b); blk != nil; blk, rest = pem.Decode(rest) {
		n++
	}
	if n != 2 {
		t.Fatalf("%d PEM blocks", n)
	}
	if fi, _ := os.Stat(keyPath); fi.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v", fi.Mode())
	}
}

// IssueCA keeps what the template asks for (here a ten-year validity and an Ed25519 key),
// makes a CA of it, and leaves issued below it verify to the root through it.
func TestIssueCA(t *testing.T) {
	root := NewCA(t, "root")
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	nb, na := time.Now().Add(-time.Hour).Truncate(time.Second), time.Now().AddDate(10, 0, 0).Truncate(time.Second)
	ca := root.IssueCA(t, &x509.Certificate{Subject: pkix.Name{CommonName: "long-lived"}, NotBefore: nb, NotAfter: na}, priv)
	c := ca.Cert
	if !c.IsCA || c.KeyUsage&x509.KeyUsageCertSign == 0 || c.PublicKeyAlgorithm != x509.Ed25519 ||
		!c.NotBefore.Equal(nb) || !c.NotAfter.Equal(na) {
		t.Fatalf("IsCA %v, key usage %v, key %v, validity %v..%v", c.IsCA, c.KeyUsage, c.PublicKeyAlgorithm, c.NotBefore, c.NotAfter)
	}
	if len(ca.Chain) != 2 || ca.Chain[1] != root.Cert || ca.Root() != root.Cert {
		t.Fatalf("chain of %d", len(ca.Chain))
	}
	inter := x509.NewCertPool()
	inter.AddCert(c)
	leaf := ca.Device(t, "device-1", "SN-1")
	if _, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: root.Pool(), Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("leaf below the CA: %v", err)
	}
}
