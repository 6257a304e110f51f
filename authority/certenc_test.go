package authority

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"net"
	"net/url"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"coapca/internal/testpki"
)

// goTBS is the TBSCertificate x509.CreateCertificate writes for tmpl: the reference
// encodeTBS must reproduce byte for byte.
func goTBS(t testing.TB, tmpl *x509.Certificate, ca *testpki.CA, pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, err
	}
	// Cut the TBSCertificate out without x509's parser, which refuses some names the encoder
	// still writes (an IP address of 5 octets, say).
	in := cryptobyte.String(der)
	var cert, tbs cryptobyte.String
	if !in.ReadASN1(&cert, cbasn1.SEQUENCE) || !cert.ReadASN1Element(&tbs, cbasn1.SEQUENCE) {
		t.Fatalf("x509.CreateCertificate wrote no certificate: %x", der)
	}
	return tbs, nil
}

func mustURL(t testing.TB, s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func rawName(t testing.TB, n pkix.Name) []byte {
	raw, err := asn1.Marshal(n.ToRDNSequence())
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestEncodeTBSMatchesX509 compares encodeTBS with x509.CreateCertificate for the templates
// the authority builds: every extension, SAN type, key type and validity encoding.
func TestEncodeTBSMatchesX509(t *testing.T) {
	ca := testpki.NewCA(t, "encoder test CA")
	noSKI := testpki.NewRoot(t, &x509.Certificate{Subject: pkix.Name{CommonName: "CA without SKI"}}, testpki.NewKey(t))
	noSKI.Cert.SubjectKeyId = nil // as parsed from a CA certificate that has none
	devKey := testpki.NewKey(t)
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 4, 15, 4, 5, 999, time.FixedZone("CET", 3600))
	base := func() *x509.Certificate {
		return &x509.Certificate{
			SerialNumber:          new(big.Int).Lsh(big.NewInt(0xff), 120), // high bit set: a leading zero octet
			RawSubject:            rawName(t, pkix.Name{CommonName: "dev-1", SerialNumber: "0001"}),
			NotBefore:             now.Add(-time.Minute),
			NotAfter:              now.Add(365 * 24 * time.Hour),
			KeyUsage:              x509.KeyUsageDigitalSignature,
			ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			BasicConstraintsValid: true,
			SubjectKeyId:          []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20},
		}
	}
	tests := []struct {
		name   string
		ca     *testpki.CA
		pub    crypto.PublicKey
		change func(*x509.Certificate)
	}{
		{"device", ca, &devKey.PublicKey, nil},
		{"spki given", ca, &devKey.PublicKey, func(c *x509.Certificate) {
			c.RawSubjectPublicKeyInfo, _ = x509.MarshalPKIXPublicKey(&devKey.PublicKey)
		}},
		{"spki of another key: pub's is written", ca, &devKey.PublicKey, func(c *x509.Certificate) {
			c.RawSubjectPublicKeyInfo, _ = x509.MarshalPKIXPublicKey(&testpki.NewKey(t).PublicKey)
		}},
		{"small serial", ca, &devKey.PublicKey, func(c *x509.Certificate) { c.SerialNumber = big.NewInt(1) }},
		{"Ed25519 key", ca, edPub, nil},
		{"RSA key", ca, &rsaKey.PublicKey, nil},
		{"issuer without SKI", noSKI, &devKey.PublicKey, nil},
		{"no SKI", ca, &devKey.PublicKey, func(c *x509.Certificate) { c.SubjectKeyId = nil }},
		{"no key usage", ca, &devKey.PublicKey, func(c *x509.Certificate) { c.KeyUsage = 0 }},
		{"key usages in two octets", ca, &devKey.PublicKey, func(c *x509.Certificate) {
			c.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyAgreement | x509.KeyUsageDecipherOnly
		}},
		{"key usage ending in bit 7", ca, &devKey.PublicKey, func(c *x509.Certificate) {
			c.KeyUsage = x509.KeyUsageKeyEncipherment | x509.KeyUsageEncipherOnly
		}},
		{"every EKU", ca, &devKey.PublicKey, func(c *x509.Certificate) {
			c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth,
				x509.ExtKeyUsageCodeSigning, x509.ExtKeyUsageEmailProtection, x509.ExtKeyUsageTimeStamping,
				x509.ExtKeyUsageOCSPSigning, x509.ExtKeyUsageAny}
		}},
		{"no EKU", ca, &devKey.PublicKey, func(c *x509.Certificate) { c.ExtKeyUsage = nil }},
		{"no basic constraints", ca, &devKey.PublicKey, func(c *x509.Certificate) { c.BasicConstraintsValid = false }},
		{"every SAN type", ca, &devKey.PublicKey, func(c *x509.Certificate) {
			c.DNSNames = []string{"a.example", "*.b.example"}
			c.EmailAddresses = []string{"dev@example.com"}
			c.IPAddresses = []net.IP{net.ParseIP("192.0.2.1"), net.ParseIP("2001:db8::1"), net.IP{10, 0, 0, 1}}
			c.URIs = []*url.URL{mustURL(t, "urn:dev:ops:32473-Foo-0001"), mustURL(t, "coaps://[2001:db8::1]/x?y=z")}
		}},
		{"empty subject: SAN critical", ca, &devKey.PublicKey, func(c *x509.Certificate) {
			c.RawSubject = []byte{0x30, 0}
			c.DNSNames = []string{"only.example"}
		}},
		{"validity across 2050", ca, &devKey.PublicKey, func(c *x509.Certificate) {
			c.NotAfter = time.Date(2050, 1, 1, 0, 0, 0, 0, time.UTC)
		}},
		{"validity before 1950 and up to 9999", ca, &devKey.PublicKey, func(c *x509.Certificate) {
			c.NotBefore = time.Date(1949, 12, 31, 23, 59, 59, 0, time.UTC)
			c.NotAfter = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
		}},
		{"last UTCTime second", ca, &devKey.PublicKey, func(c *x509.Certificate) {
			c.NotAfter = time.Date(2049, 12, 31, 23, 59, 59, 0, time.UTC)
		}},
		{"long subject", ca, &devKey.PublicKey, func(c *x509.Certificate) {
			c.RawSubject = rawName(t, pkix.Name{CommonName: string(bytes.Repeat([]byte("x"), 300)),
				Organization: []string{"Acme", "Ünïcödé"}})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tmpl := base()
			if tc.change != nil {
				tc.change(tmpl)
			}
			want, err := goTBS(t, tmpl, tc.ca, tc.pub)
			if err != nil {
				t.Fatalf("x509.CreateCertificate: %v", err)
			}
			got, ok, err := encodeTBS(tmpl, tc.ca.Cert, tc.pub)
			if err != nil || !ok {
				t.Fatalf("encodeTBS: ok %v, %v", ok, err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("encodeTBS differs from x509.CreateCertificate:\n got %x\nwant %x", got, want)
			}
		})
	}
}

// TestEncodeTBSRefuses: what x509.CreateCertificate refuses, encodeTBS refuses too, and a
// template with a field it does not write is left to x509 (ok false), never half encoded.
func TestEncodeTBSRefuses(t *testing.T) {
	ca := testpki.NewCA(t, "encoder test CA")
	pub := &testpki.NewKey(t).PublicKey
	base := func() *x509.Certificate {
		return &x509.Certificate{SerialNumber: big.NewInt(7), RawSubject: rawName(t, pkix.Name{CommonName: "d"}),
			NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), BasicConstraintsValid: true}
	}
	for _, bad := range []struct {
		name   string
		change func(*x509.Certificate)
	}{
		{"non-ASCII DNS name", func(c *x509.Certificate) { c.DNSNames = []string{"bücher.example"} }},
		{"non-ASCII email", func(c *x509.Certificate) { c.EmailAddresses = []string{"ü@example.com"} }},
		{"non-ASCII URI", func(c *x509.Certificate) { c.URIs = []*url.URL{{Scheme: "urn", Opaque: "ü"}} }},
		{"year 10000", func(c *x509.Certificate) { c.NotAfter = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }},
	} {
		t.Run(bad.name, func(t *testing.T) {
			tmpl := base()
			bad.change(tmpl)
			if _, err := goTBS(t, tmpl, ca, pub); err == nil {
				t.Fatal("x509.CreateCertificate accepts it: the case tests nothing")
			}
			if tbs, ok, err := encodeTBS(tmpl, ca.Cert, pub); err == nil {
				t.Fatalf("encodeTBS accepted it (ok %v, %d bytes)", ok, len(tbs))
			}
		})
	}
	for _, other := range []struct {
		name   string
		change func(*x509.Certificate)
	}{
		{"CA", func(c *x509.Certificate) { c.IsCA = true }},
		{"path length", func(c *x509.Certificate) { c.MaxPathLenZero = true }},
		{"no serial", func(c *x509.Certificate) { c.SerialNumber = nil }},
		{"subject not raw", func(c *x509.Certificate) { c.RawSubject = nil; c.Subject.CommonName = "d" }},
		{"self-issued", func(c *x509.Certificate) { c.RawSubject = ca.Cert.RawSubject }},
		{"signature algorithm", func(c *x509.Certificate) { c.SignatureAlgorithm = x509.ECDSAWithSHA384 }},
		{"AKI", func(c *x509.Certificate) { c.AuthorityKeyId = []byte{1} }},
		{"unknown EKU", func(c *x509.Certificate) { c.UnknownExtKeyUsage = []asn1.ObjectIdentifier{{1, 2, 3}} }},
		{"EKU without OID here", func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageIPSECUser} }},
		{"extra extension", func(c *x509.Certificate) {
			c.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 2, 3}, Value: []byte{5, 0}}}
		}},
		{"OCSP", func(c *x509.Certificate) { c.OCSPServer = []string{"http://ocsp"} }},
		{"CA issuers", func(c *x509.Certificate) { c.IssuingCertificateURL = []string{"http://ca"} }},
		{"CRL DP", func(c *x509.Certificate) { c.CRLDistributionPoints = []string{"http://crl"} }},
		{"policy", func(c *x509.Certificate) { c.PolicyIdentifiers = []asn1.ObjectIdentifier{{2, 5, 29, 32, 0}} }},
		{"policy OID", func(c *x509.Certificate) { c.Policies = []x509.OID{{}} }},
		{"name constraints", func(c *x509.Certificate) { c.PermittedDNSDomains = []string{"example"} }},
		{"excluded IP", func(c *x509.Certificate) {
			c.ExcludedIPRanges = []*net.IPNet{{IP: net.IP{10, 0, 0, 0}, Mask: net.IPMask{255, 0, 0, 0}}}
		}},
	} {
		t.Run(other.name, func(t *testing.T) {
			tmpl := base()
			other.change(tmpl)
			if tbs, ok, err := encodeTBS(tmpl, ca.Cert, pub); ok || err != nil {
				t.Fatalf("encodeTBS wrote %d bytes (ok %v, %v) for a field it does not encode", len(tbs), ok, err)
			}
		})
	}
}

// TestCreateCertificateSigns: the fast path's certificate verifies under the CA and parses to
// the template; a signer that is not an in-process P-256 key goes through x509 (and its
// signature check), with the same result.
func TestCreateCertificateSigns(t *testing.T) {
	p256 := testpki.NewCA(t, "P-256 CA")
	p384Key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384 := testpki.NewRoot(t, &x509.Certificate{Subject: pkix.Name{CommonName: "P-384 CA"}}, p384Key)
	wrapped := &testpki.CA{Cert: p256.Cert, Key: opaqueSigner{p256.Key}, Chain: p256.Chain}
	dev := testpki.NewKey(t)
	for _, ca := range []*testpki.CA{p256, p384, wrapped} {
		a := &Authority{signer: ca.Key, issuer: ca.Cert}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(42), RawSubject: rawName(t, pkix.Name{CommonName: "dev"}),
			NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			BasicConstraintsValid: true, DNSNames: []string{"dev.example"}}
		der, err := a.createCertificate(tmpl, &dev.PublicKey)
		if err != nil {
			t.Fatalf("%s: %v", ca.Cert.Subject.CommonName, err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatalf("%s: %v", ca.Cert.Subject.CommonName, err)
		}
		if err := c.CheckSignatureFrom(ca.Cert); err != nil {
			t.Fatalf("%s: signature: %v", ca.Cert.Subject.CommonName, err)
		}
		if _, err := c.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Fatalf("%s: chain: %v", ca.Cert.Subject.CommonName, err)
		}
		if c.SerialNumber.Int64() != 42 || c.Subject.CommonName != "dev" || c.DNSNames[0] != "dev.example" ||
			!dev.PublicKey.Equal(c.PublicKey) || c.IsCA {
			t.Fatalf("%s: certificate does not match its template: %+v", ca.Cert.Subject.CommonName, c)
		}
	}
}

// opaqueSigner hides the key's type, as a PKCS#11 signer does.
type opaqueSigner struct{ crypto.Signer }

// FuzzEncodeTBS: for names, usages and times from arbitrary bytes, encodeTBS and
// x509.CreateCertificate agree byte for byte, or both refuse.
func FuzzEncodeTBS(f *testing.F) {
	f.Add("dev.example", "a@example.com", "urn:x:1", []byte{192, 0, 2, 1}, []byte{0x30, 0x00}, uint16(1), uint8(2), int64(0), int64(86400))
	f.Add("b\u00fccher", "", "", []byte{}, []byte{}, uint16(0x1ff), uint8(0xff), int64(-1e10), int64(3e9))
	f.Add("", "", "coaps://h/p", []byte{1, 2, 3, 4, 5}, []byte{0x30, 0x03, 0x31, 0x01, 0x30}, uint16(0), uint8(0), int64(0), int64(0))
	ca := testpki.NewCA(f, "fuzz CA")
	pub := &testpki.NewKey(f).PublicKey
	ekus := []x509.ExtKeyUsage{x509.ExtKeyUsageAny, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth,
		x509.ExtKeyUsageCodeSigning, x509.ExtKeyUsageEmailProtection, x509.ExtKeyUsageTimeStamping,
		x509.ExtKeyUsageOCSPSigning, x509.ExtKeyUsageClientAuth}
	f.Fuzz(func(t *testing.T, dns, email, uri string, ip, subject []byte, ku uint16, eku uint8, nb, na int64) {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1 + nb&0xffff), RawSubject: subject,
			NotBefore: time.Unix(nb, 0), NotAfter: time.Unix(na, 0), KeyUsage: x509.KeyUsage(ku),
			BasicConstraintsValid: eku&1 == 0, SubjectKeyId: ip}
		if rest, err := asn1.Unmarshal(subject, new(asn1.RawValue)); err != nil || len(rest) > 0 {
			tmpl.RawSubject = []byte{0x30, 0} // x509 copies RawSubject unchecked; the authority's is always DER
		}
		for i, u := range ekus {
			if eku&(1<<i) != 0 {
				tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, u)
			}
		}
		if dns != "" {
			tmpl.DNSNames = []string{dns}
		}
		if email != "" {
			tmpl.EmailAddresses = []string{email}
		}
		if u, err := url.Parse(uri); err == nil && uri != "" {
			tmpl.URIs = []*url.URL{u}
		}
		if len(ip) > 0 {
			tmpl.IPAddresses = []net.IP{ip}
		}
		want, werr := goTBS(t, tmpl, ca, pub)
		got, ok, gerr := encodeTBS(tmpl, ca.Cert, pub)
		switch {
		case werr != nil && gerr != nil:
		case werr != nil || gerr != nil:
			t.Fatalf("x509: %v; encodeTBS: %v", werr, gerr)
		case !ok:
			if !bytes.Equal(tmpl.RawSubject, ca.Cert.RawSubject) {
				t.Fatalf("encodeTBS declined a template it should write")
			}
		case !bytes.Equal(got, want):
			t.Fatalf("encodeTBS differs from x509.CreateCertificate:\n got %x\nwant %x", got, want)
		}
	})
}
