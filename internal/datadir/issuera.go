package datadir

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"time"
)

// RARequest is what IssueRA certifies: the public key of a separate registrar host (from its
// CSR, or of a key made for it) and the names devices and the upstream reach it by.
type RARequest struct {
	// PublicKey is the registrar's key (required).
	PublicKey crypto.PublicKey
	// CommonName is the subject CN ("" = the first name).
	CommonName string
	// Names are DNS names and IP addresses for subjectAltName (at least one: the registrar is
	// a DTLS and TLS server toward devices).
	Names []string
	// Validity is the lifetime (0 = one year), capped at the issuing CA's notAfter.
	Validity time.Duration
	// Now is the issuance time (zero = time.Now()).
	Now time.Time
}

// IssueRA certifies a registrar's key with the issuing CA of d: id-kp-cmcRA (RFC 6402 §2.10)
// beside serverAuth and clientAuth, the same profile as DIR/registrar.pem. RFC 9148 §5: the
// upstream EST server recognises a registrar by id-kp-cmcRA in its TLS client certificate
// (RFC 7030 §3.7 lets an RA relay CSRs linked to the device's session), and devices using
// their implicit TA database look for it in the registrar's DTLS server certificate.
func (d *Data) IssueRA(r RARequest) (*x509.Certificate, error) {
	if d.IssuingCA == nil || d.IssuingKey == nil {
		return nil, errors.New("datadir: no issuing CA key to certify a registrar with")
	}
	if r.PublicKey == nil {
		return nil, errors.New("datadir: registrar certificate: no public key")
	}
	var dns []string
	var ips []net.IP
	for _, n := range r.Names {
		n = strings.TrimSpace(n)
		switch {
		case n == "":
		case net.ParseIP(n) != nil:
			ips = append(ips, net.ParseIP(n))
		case strings.ContainsAny(n, " /:@*"):
			return nil, fmt.Errorf("datadir: registrar certificate: %q is neither a DNS name nor an IP address", n)
		default:
			dns = append(dns, strings.ToLower(n))
		}
	}
	if len(dns)+len(ips) == 0 {
		return nil, errors.New("datadir: registrar certificate: at least one DNS name or IP address")
	}
	cn := r.CommonName
	if cn == "" {
		cn = strings.TrimSpace(r.Names[0])
	}
	now := r.Now
	if now.IsZero() {
		now = time.Now()
	}
	validity := r.Validity
	if validity == 0 {
		validity = 365 * 24 * time.Hour
	}
	if validity < 0 {
		return nil, fmt.Errorf("datadir: registrar certificate: negative validity %s", validity)
	}
	notAfter := now.Add(validity)
	if notAfter.After(d.IssuingCA.NotAfter) {
		notAfter = d.IssuingCA.NotAfter // RFC 5280 §6: nothing outlives its issuer usefully
	}
	spki, err := x509.MarshalPKIXPublicKey(r.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("datadir: registrar certificate: %w", err)
	}
	ski := sha256.Sum256(spki)
	sn, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("datadir: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn.Add(sn, big.NewInt(1)),
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"coapca registrar"}},
		NotBefore:    now.Add(-time.Hour), NotAfter: notAfter,
		KeyUsage:           x509.KeyUsageDigitalSignature,
		ExtKeyUsage:        []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{oidKPCmcRA},
		DNSNames:           dns, IPAddresses: ips, BasicConstraintsValid: true,
		SubjectKeyId: ski[:20], // RFC 7093 §2 method 4
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, d.IssuingCA, r.PublicKey, d.IssuingKey)
	if err != nil {
		return nil, fmt.Errorf("datadir: registrar certificate: %w", err)
	}
	return x509.ParseCertificate(der)
}
