package datadir

import (
	"crypto/x509"
	"encoding/asn1"
	"os"
	"slices"
	"testing"
)

// TestRegistrarIdentity: in registrar mode the data directory holds an identity with
// id-kp-cmcRA (RFC 6402 §2.10) beside serverAuth and clientAuth, issued by the issuing CA, so
// that the upstream EST server sees an RA and a device checking its implicit TA database sees
// one too (RFC 9148 §10.2); it is kept across starts and absent otherwise.
func TestRegistrarIdentity(t *testing.T) {
	dir := t.TempDir()
	d, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(d.Paths.Registrar); d.Registrar != nil || err == nil {
		t.Fatal("a registrar identity without registrar mode")
	}
	d, err = Open(Options{Dir: dir, Registrar: true})
	if err != nil {
		t.Fatal(err)
	}
	c := d.Registrar
	if !slices.ContainsFunc(c.UnknownExtKeyUsage, func(o asn1.ObjectIdentifier) bool { return o.Equal(oidKPCmcRA) }) ||
		!slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageServerAuth) || !slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		t.Fatalf("registrar certificate EKUs %v %v", c.ExtKeyUsage, c.UnknownExtKeyUsage)
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: pool(d.Root), Intermediates: pool(d.IssuingCA),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, DNSName: "localhost"}); err != nil {
		t.Fatal(err)
	}
	if tc := d.RegistrarCertificate(); len(tc.Certificate) != 2 || tc.Leaf != c {
		t.Fatal("the TLS identity lacks the issuing CA")
	}
	again, err := Open(Options{Dir: dir, Registrar: true})
	if err != nil || !again.Registrar.Equal(c) {
		t.Fatalf("registrar identity not kept: %v", err)
	}
}

func pool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}
