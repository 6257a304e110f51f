package client

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"coapca/cmp"
	"coapca/est"
)

// oidSubjectAltName is id-ce-subjectAltName (RFC 5280 §4.2.1.6).
var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// SANs are the subjectAltName entries a request asks for (RFC 5280 §4.2.1.6), of the types
// crypto/x509 encodes natively.
type SANs struct {
	DNSNames       []string
	IPAddresses    []net.IP
	EmailAddresses []string
	URIs           []*url.URL
}

// Empty reports whether s names nothing.
func (s SANs) Empty() bool {
	return len(s.DNSNames)+len(s.IPAddresses)+len(s.EmailAddresses)+len(s.URIs) == 0
}

// SANsOf returns the subjectAltName entries of c, e.g. to renew it with the same names.
func SANsOf(c *x509.Certificate) SANs {
	return SANs{DNSNames: c.DNSNames, IPAddresses: c.IPAddresses, EmailAddresses: c.EmailAddresses, URIs: c.URIs}
}

// ParseSANs parses subjectAltName values written TYPE:VALUE, with TYPE dns, ip, email or uri
// (case-insensitive). A value without a colon, or whose part before the first colon contains a
// slash, is a DNS name.
func ParseSANs(specs ...string) (SANs, error) {
	var s SANs
	for _, spec := range specs {
		typ, v, ok := strings.Cut(spec, ":")
		if !ok || strings.Contains(typ, "/") {
			typ, v = "dns", spec
		}
		switch strings.ToLower(typ) {
		case "dns":
			s.DNSNames = append(s.DNSNames, v)
		case "ip":
			ip := net.ParseIP(v)
			if ip == nil {
				return SANs{}, fmt.Errorf("subjectAltName %q: bad IP address", spec)
			}
			s.IPAddresses = append(s.IPAddresses, ip)
		case "email":
			s.EmailAddresses = append(s.EmailAddresses, v)
		case "uri":
			u, err := url.Parse(v)
			if err != nil {
				return SANs{}, fmt.Errorf("subjectAltName %q: %w", spec, err)
			}
			s.URIs = append(s.URIs, u)
		default:
			return SANs{}, fmt.Errorf("subjectAltName %q: type must be dns, ip, email or uri", spec)
		}
	}
	return s, nil
}

// ParseSubject parses a distinguished name written "CN=x,O=y,serialNumber=z": a subset of
// RFC 4514 without escapes (a value cannot contain a comma), with the attribute types CN, O,
// OU, C, L, ST and serialNumber (case-insensitive).
func ParseSubject(s string) (pkix.Name, error) {
	var n pkix.Name
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || v == "" {
			return pkix.Name{}, fmt.Errorf("%q is not TYPE=value", part)
		}
		switch strings.ToLower(k) {
		case "cn":
			n.CommonName = v
		case "o":
			n.Organization = append(n.Organization, v)
		case "ou":
			n.OrganizationalUnit = append(n.OrganizationalUnit, v)
		case "c":
			n.Country = append(n.Country, v)
		case "l":
			n.Locality = append(n.Locality, v)
		case "st":
			n.Province = append(n.Province, v)
		case "serialnumber":
			n.SerialNumber = v
		default:
			return pkix.Name{}, fmt.Errorf("unsupported attribute %q (CN, O, OU, C, L, ST, serialNumber)", k)
		}
	}
	return n, nil
}

// CertRequest is what a device asks to have certified besides its key: a subject and
// subjectAltName entries.
type CertRequest struct {
	Subject pkix.Name
	// RawSubject (a DER Name) is used instead of Subject when set: a renewal keeps the old
	// certificate's subject byte for byte.
	RawSubject []byte
	SANs       SANs
}

func (r CertRequest) template() *x509.CertificateRequest {
	return &x509.CertificateRequest{Subject: r.Subject, RawSubject: r.RawSubject,
		DNSNames: r.SANs.DNSNames, IPAddresses: r.SANs.IPAddresses, EmailAddresses: r.SANs.EmailAddresses, URIs: r.SANs.URIs}
}

// NewCSR returns a DER PKCS#10 request (RFC 2986) for r signed by key, with a
// challengePassword attribute when challengePassword is not empty (the channel binding of RFC
// 7030 §3.5 and RFC 9148 §3).
func NewCSR(key crypto.Signer, r CertRequest, challengePassword string, extra ...est.Attribute) ([]byte, error) {
	attrs := extra
	if challengePassword != "" {
		attrs = append([]est.Attribute{est.ChallengePasswordAttribute(challengePassword)}, extra...)
	}
	return est.CreateCSRWithAttributes(rand.Reader, r.template(), key, attrs)
}

// NewCertTemplate returns the CRMF CertTemplate (RFC 4211 §5) of r for a CMP ir, cr or kur:
// the subject when r has one, and the subjectAltName extension as crypto/x509 encodes it
// (taken from a request signed by key, which the template is for).
func NewCertTemplate(key crypto.Signer, r CertRequest) (cmp.CertTemplate, error) {
	var t cmp.CertTemplate
	switch {
	case r.RawSubject != nil:
		t.Subject = r.RawSubject
	case len(r.Subject.ToRDNSequence()) > 0:
		if err := t.SetSubject(r.Subject); err != nil {
			return t, err
		}
	}
	if r.SANs.Empty() {
		return t, nil
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		DNSNames: r.SANs.DNSNames, IPAddresses: r.SANs.IPAddresses, EmailAddresses: r.SANs.EmailAddresses, URIs: r.SANs.URIs,
	}, key)
	if err != nil {
		return t, fmt.Errorf("subjectAltName: %w", err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return t, fmt.Errorf("subjectAltName: %w", err)
	}
	for _, e := range csr.Extensions {
		if e.Id.Equal(oidSubjectAltName) {
			t.Extensions = append(t.Extensions, e)
			return t, nil
		}
	}
	return t, errors.New("subjectAltName: crypto/x509 wrote no extension")
}
