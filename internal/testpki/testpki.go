// Package testpki builds throw-away X.509 material for tests: CAs (roots and issuing CAs),
// leaves for every role this project uses — device identities (IDevIDs with a subject
// serialNumber, IEEE 802.1AR §8.6), DTLS/TLS server certificates (id-kp-serverAuth with DNS
// and IP SANs), registration authorities (id-kp-cmcRA, RFC 6402 §2.10), CMP signers
// (id-kp-cmcCA, RFC 9483 §3.5) — CSRs (RFC 2986) and PEM files for external peers
// (coap-client, openssl).
//
// Every function takes a testing.TB and ends the test on error, so a test reads as the PKI it
// needs:
//
//	root := testpki.NewCA(t, "test root")
//	ca := root.SubCA(t, "issuing CA")
//	srv := ca.Server(t)                    // localhost, 127.0.0.1, ::1
//	dev := ca.Device(t, "device-1", "SN-1") // IDevID
//	cfg := tls.Config{Certificates: []tls.Certificate{srv.TLS()}, RootCAs: root.Pool()}
//
// Validity is [now-1h, now+24h] on the clock of the caller: inside a testing/synctest bubble
// that is the bubble's clock (2000-01-01), so certificates made inside a bubble verify inside
// it and certificates made outside do not — make the PKI where it is used.
//
// Keys are ECDSA P-256 unless a caller passes its own (NewRoot, CA.Issue); serial
// numbers are random (RFC 5280 §4.1.2.2: unique per CA, at most 20 octets).
package testpki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var (
	// OIDCmcRA is id-kp-cmcRA (RFC 6402 §2.10): the holder is a registration authority.
	OIDCmcRA = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 28}
	// OIDCmcCA is id-kp-cmcCA (RFC 6402 §2.10): the holder acts for a CA (a CMP signer,
	// RFC 9483 §3.5).
	OIDCmcCA = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 27}
)

// NewKey returns a fresh ECDSA P-256 key.
func NewKey(tb testing.TB) *ecdsa.PrivateKey {
	tb.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("testpki: P-256 key: %v", err)
	}
	return k
}

// CA is a certificate authority: its certificate, its key and the chain above it.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// Chain is Cert followed by the CAs above it, up to and including the root.
	Chain []*x509.Certificate
}

// NewCA returns a self-signed root CA with a P-256 key.
func NewCA(tb testing.TB, cn string) *CA {
	tb.Helper()
	return NewRoot(tb, &x509.Certificate{Subject: pkix.Name{CommonName: cn}}, NewKey(tb))
}

// NewRoot returns a self-signed root CA made from tmpl with key (of any type, e.g. Ed25519).
// It is marked a CA (basicConstraints cA, keyCertSign and cRLSign when KeyUsage is zero);
// zero serial and validity are filled in as by Issue, so a test can set only what it needs
// (say, an early NotAfter).
func NewRoot(tb testing.TB, tmpl *x509.Certificate, key crypto.Signer) *CA {
	tb.Helper()
	markCA(tmpl)
	c := SelfSigned(tb, tmpl, key)
	return &CA{Cert: c, Key: key, Chain: []*x509.Certificate{c}}
}

// markCA makes tmpl a CA certificate (RFC 5280 §4.2.1.9 cA, §4.2.1.3 keyCertSign): basic
// constraints cA, and keyCertSign and cRLSign when KeyUsage is zero.
func markCA(tmpl *x509.Certificate) {
	tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	if tmpl.KeyUsage == 0 {
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	}
}

// SelfSigned signs tmpl with its own key, taken as given (zero serial and validity filled in
// as by Issue): a root, or a self-signed certificate that is deliberately not a CA.
func SelfSigned(tb testing.TB, tmpl *x509.Certificate, key crypto.Signer) *x509.Certificate {
	tb.Helper()
	fill(tb, tmpl)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		tb.Fatalf("testpki: self-signed %q: %v", tmpl.Subject.CommonName, err)
	}
	return parse(tb, der)
}

// SubCA returns an issuing CA (P-256) signed by ca.
func (ca *CA) SubCA(tb testing.TB, cn string) *CA {
	tb.Helper()
	return ca.IssueCA(tb, &x509.Certificate{Subject: pkix.Name{CommonName: cn}}, NewKey(tb))
}

// IssueCA returns a CA made from tmpl with key (of any type) and signed by ca: what SubCA
// does, for a test that needs its own validity, name or key. It is marked a CA as by NewRoot;
// zero serial and validity are filled in as by Issue.
func (ca *CA) IssueCA(tb testing.TB, tmpl *x509.Certificate, key crypto.Signer) *CA {
	tb.Helper()
	markCA(tmpl)
	c := ca.Issue(tb, tmpl, key.Public())
	return &CA{Cert: c, Key: key, Chain: append([]*x509.Certificate{c}, ca.Chain...)}
}

// Root returns the root certificate of ca's chain.
func (ca *CA) Root() *x509.Certificate { return ca.Chain[len(ca.Chain)-1] }

// Pool returns a pool holding only the root of ca's chain (a set of trust anchors).
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Root())
	return p
}

// Issue signs tmpl for pub. A zero SerialNumber, NotBefore or NotAfter is filled in (random
// serial, [now-1h, now+24h]); everything else is taken as given, so a test can build any
// certificate, including broken ones.
func (ca *CA) Issue(tb testing.TB, tmpl *x509.Certificate, pub crypto.PublicKey) *x509.Certificate {
	tb.Helper()
	fill(tb, tmpl)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		tb.Fatalf("testpki: issue %q from %q: %v", tmpl.Subject.CommonName, ca.Cert.Subject.CommonName, err)
	}
	return parse(tb, der)
}

// Leaf is an end-entity certificate with its key.
type Leaf struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// Chain is Cert followed by the CAs that issued it, up to and including the root.
	Chain []*x509.Certificate
}

// NewLeaf issues tmpl for a fresh P-256 key. A zero KeyUsage becomes digitalSignature.
func (ca *CA) NewLeaf(tb testing.TB, tmpl *x509.Certificate) *Leaf {
	tb.Helper()
	key := NewKey(tb)
	if tmpl.KeyUsage == 0 {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	}
	c := ca.Issue(tb, tmpl, key.Public())
	return &Leaf{Cert: c, Key: key, Chain: append([]*x509.Certificate{c}, ca.Chain...)}
}

// Device issues a device identity (an IDevID: subject CN and serialNumber, IEEE 802.1AR §8.6)
// for TLS/DTLS client authentication. An empty serialNumber leaves the attribute out.
func (ca *CA) Device(tb testing.TB, cn, serialNumber string) *Leaf {
	tb.Helper()
	return ca.NewLeaf(tb, &x509.Certificate{Subject: pkix.Name{CommonName: cn, SerialNumber: serialNumber},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
}

// Client issues a TLS/DTLS client certificate for cn with extra extended key usages.
func (ca *CA) Client(tb testing.TB, cn string, extraEKU ...asn1.ObjectIdentifier) *Leaf {
	tb.Helper()
	return ca.NewLeaf(tb, &x509.Certificate{Subject: pkix.Name{CommonName: cn},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, UnknownExtKeyUsage: extraEKU})
}

// Server issues a TLS/DTLS server certificate (id-kp-serverAuth) whose SANs are names (IP
// literals become IP SANs); no names means localhost, 127.0.0.1 and ::1. The CN is the first
// name.
func (ca *CA) Server(tb testing.TB, names ...string) *Leaf {
	tb.Helper()
	if len(names) == 0 {
		names = []string{"localhost", "127.0.0.1", "::1"}
	}
	tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: names[0]},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	return ca.NewLeaf(tb, tmpl)
}

// RA issues a registration-authority certificate: id-kp-cmcRA (RFC 6402 §2.10) and
// clientAuth, so it can both sign CMP messages and authenticate a DTLS/TLS session.
func (ca *CA) RA(tb testing.TB, cn string) *Leaf {
	tb.Helper()
	return ca.Client(tb, cn, OIDCmcRA)
}

// CMPSigner issues a certificate that protects CMP answers on the CA's behalf: id-kp-cmcCA
// (RFC 9483 §3.5, RFC 6402 §2.10).
func (ca *CA) CMPSigner(tb testing.TB, cn string) *Leaf {
	tb.Helper()
	return ca.NewLeaf(tb, &x509.Certificate{Subject: pkix.Name{CommonName: cn},
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{OIDCmcCA}})
}

// TLS returns l as a tls.Certificate: the leaf and its issuing CAs (the root left out, as a
// peer must already have it, RFC 8446 §4.4.2), the key, and Leaf set.
func (l *Leaf) TLS() tls.Certificate {
	chain := l.Chain
	if len(chain) > 1 {
		chain = chain[:len(chain)-1]
	}
	c := tls.Certificate{PrivateKey: l.Key, Leaf: l.Cert}
	for _, x := range chain {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c
}

// WritePEM writes l's certificate (name+".pem") and its PKCS#8 key (name+".key", mode 0600)
// into dir and returns both paths.
func (l *Leaf) WritePEM(tb testing.TB, dir, name string) (certPath, keyPath string) {
	tb.Helper()
	return WriteCerts(tb, filepath.Join(dir, name+".pem"), l.Cert), WriteKey(tb, filepath.Join(dir, name+".key"), l.Key)
}

// CSR returns a PKCS#10 request (RFC 2986) made from tmpl and signed by key, parsed and with
// its signature checked.
func CSR(tb testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) *x509.CertificateRequest {
	tb.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		tb.Fatalf("testpki: CSR %q: %v", tmpl.Subject.CommonName, err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		tb.Fatalf("testpki: CSR: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		tb.Fatalf("testpki: CSR: %v", err)
	}
	return csr
}

// WriteCerts writes certs as PEM CERTIFICATE blocks to path (mode 0600) and returns path.
func WriteCerts(tb testing.TB, path string, certs ...*x509.Certificate) string {
	tb.Helper()
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	writeFile(tb, path, b)
	return path
}

// WriteKey writes key as a PEM "PRIVATE KEY" (PKCS#8) to path (mode 0600) and returns path.
func WriteKey(tb testing.TB, path string, key crypto.Signer) string {
	tb.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatalf("testpki: key for %s: %v", path, err)
	}
	writeFile(tb, path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	return path
}

func writeFile(tb testing.TB, path string, b []byte) {
	tb.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		tb.Fatalf("testpki: %v", err)
	}
}

func fill(tb testing.TB, tmpl *x509.Certificate) {
	tb.Helper()
	if tmpl.SerialNumber == nil {
		// 127 random bits: positive and within RFC 5280 §4.1.2.2's 20 octets.
		s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
		if err != nil {
			tb.Fatalf("testpki: serial: %v", err)
		}
		tmpl.SerialNumber = s.Add(s, big.NewInt(1))
	}
	now := time.Now()
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = now.Add(-time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = now.Add(24 * time.Hour)
	}
}

func parse(tb testing.TB, der []byte) *x509.Certificate {
	tb.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatalf("testpki: parse: %v", err)
	}
	return c
}
