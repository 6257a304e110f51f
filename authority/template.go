package authority

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"net"
	"net/url"
	"slices"
	"sort"
	"strings"

	"coapca/errs"
)

var (
	oidCommonName         = asn1.ObjectIdentifier{2, 5, 4, 3}
	oidSerialNumber       = asn1.ObjectIdentifier{2, 5, 4, 5}
	oidOrganization       = asn1.ObjectIdentifier{2, 5, 4, 10}
	oidOrganizationalUnit = asn1.ObjectIdentifier{2, 5, 4, 11}
)

// keyType names pub the way profiles spell key types, checking minimum sizes.
func keyType(pub crypto.PublicKey) (string, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch n := k.Curve.Params().Name; n {
		case "P-256", "P-384", "P-521":
			return n, nil
		default:
			return "", fmt.Errorf("unsupported curve %s", n)
		}
	case ed25519.PublicKey:
		return "Ed25519", nil
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return "", fmt.Errorf("RSA key of %d bits is too small (minimum 2048)", k.N.BitLen())
		}
		return fmt.Sprintf("RSA-%d", k.N.BitLen()), nil
	case nil:
		return "", fmt.Errorf("no public key")
	}
	return "", fmt.Errorf("unsupported public key type %T", pub)
}

// template builds the certificate to sign for r under profile p: the subject and SANs from the
// CSR with the profile's rules applied, and for re-enrollment the check that they equal the
// old certificate's (RFC 7030 §4.2.2).
func (a *Authority) template(p *Profile, r CertRequest, who identity, pub crypto.PublicKey) (*x509.Certificate, error) {
	kt, err := keyType(pub)
	if err != nil {
		return nil, errs.Wrap(errs.BadRequest, err, "unacceptable public key: %v", err)
	}
	if len(p.AcceptKeyTypes) > 0 && !slices.Contains(p.AcceptKeyTypes, kt) {
		return nil, errs.New(errs.BadRequest, "key type %s is not accepted for label %q (accepted: %s)",
			kt, p.Label, strings.Join(p.AcceptKeyTypes, ", "))
	}
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, errs.Wrap(errs.BadRequest, err, "unacceptable public key")
	}

	rawSubject, subject, err := a.subject(p, r.CSR, who)
	if err != nil {
		return nil, err
	}
	csr := r.CSR
	if len(csr.DNSNames) > 0 && !p.AllowDNS || len(csr.IPAddresses) > 0 && !p.AllowIP ||
		len(csr.EmailAddresses) > 0 && !p.AllowEmail || len(csr.URIs) > 0 && !p.AllowURI {
		return nil, errs.New(errs.BadRequest, "the CSR asks for a subjectAltName type that label %q does not allow", p.Label)
	}
	if p.DNSPattern != nil {
		for _, d := range csr.DNSNames {
			if !p.DNSPattern.MatchString(d) {
				return nil, errs.New(errs.BadRequest, "DNS name %q is not allowed for label %q", d, p.Label)
			}
		}
	}
	if len(subject) == 0 && len(csr.DNSNames)+len(csr.IPAddresses)+len(csr.EmailAddresses)+len(csr.URIs) == 0 {
		return nil, errs.New(errs.BadRequest, "the CSR has neither a subject nor a subjectAltName")
	}

	if r.Op == OpReenroll {
		old := who.leaf
		// RFC 7030 §4.2.2: "the Subject field and SubjectAltName extension MUST be identical to
		// the corresponding fields in the certificate being renewed or rekeyed". Compared after
		// the profile's subject rules, so a copied serialNumber counts as the client's own.
		oldSubject, err := parseRDN(old.RawSubject)
		if err != nil {
			return nil, errs.Wrap(errs.Internal, err, "old certificate subject")
		}
		if nameKey(subject) != nameKey(oldSubject) {
			return nil, errs.New(errs.Forbidden, "re-enrollment must keep the subject %q (CSR asks for %q)",
				oldSubject.String(), subject.String())
		}
		// The same attributes, perhaps in another order or string type: renew the old name
		// byte for byte.
		rawSubject = old.RawSubject
		if sanKey(csr.DNSNames, csr.IPAddresses, csr.EmailAddresses, csr.URIs) !=
			sanKey(old.DNSNames, old.IPAddresses, old.EmailAddresses, old.URIs) {
			return nil, errs.New(errs.Forbidden, "re-enrollment must keep the subjectAltName of the certificate being renewed")
		}
	}

	now := a.now()
	notAfter := now.Add(p.Validity)
	if notAfter.After(a.issuer.NotAfter) {
		notAfter = a.issuer.NotAfter
	}
	ski := sha256.Sum256(spki)
	return &x509.Certificate{
		RawSubject:            rawSubject,
		NotBefore:             now.Add(-a.backdate),
		NotAfter:              notAfter,
		KeyUsage:              p.KeyUsage,
		ExtKeyUsage:           slices.Clone(p.ExtKeyUsage),
		BasicConstraintsValid: true,
		// RFC 7093 §2 method 4: SHA-256 of the SubjectPublicKeyInfo, truncated to 160 bits.
		SubjectKeyId:   ski[:20],
		DNSNames:       slices.Clone(csr.DNSNames),
		IPAddresses:    slices.Clone(csr.IPAddresses),
		EmailAddresses: slices.Clone(csr.EmailAddresses),
		URIs:           slices.Clone(csr.URIs),
	}, nil
}

func parseRDN(raw []byte) (pkix.RDNSequence, error) {
	var seq pkix.RDNSequence
	rest, err := asn1.Unmarshal(raw, &seq)
	if err != nil {
		return nil, err
	}
	if len(rest) > 0 {
		return nil, fmt.Errorf("trailing data after the name")
	}
	return seq, nil
}

// subject applies the profile's subject rules to the CSR's subject. The CSR's attributes
// keep their order; only the attributes a rule names are replaced. (Values are re-encoded:
// PrintableString where possible, else UTF8String, as RFC 5280 §4.1.2.6 prefers.)
func (a *Authority) subject(p *Profile, csr *x509.CertificateRequest, who identity) ([]byte, pkix.RDNSequence, error) {
	var seq pkix.RDNSequence
	if len(csr.RawSubject) > 0 {
		var err error
		if seq, err = parseRDN(csr.RawSubject); err != nil {
			return nil, nil, errs.Wrap(errs.BadRequest, err, "the CSR's subject does not parse")
		}
	} else {
		seq = csr.Subject.ToRDNSequence() // a CMP CertTemplate passed without raw bytes
	}
	drop := func(oid asn1.ObjectIdentifier) {
		var out pkix.RDNSequence
		for _, rdn := range seq {
			rdn = slices.DeleteFunc(slices.Clone(rdn), func(atv pkix.AttributeTypeAndValue) bool { return atv.Type.Equal(oid) })
			if len(rdn) > 0 {
				out = append(out, rdn)
			}
		}
		seq = out
	}
	add := func(oid asn1.ObjectIdentifier, vals []string) {
		for _, v := range vals {
			seq = append(seq, pkix.RelativeDistinguishedNameSET{{Type: oid, Value: v}})
		}
	}
	if len(p.Organization) > 0 {
		drop(oidOrganization)
		add(oidOrganization, p.Organization)
	}
	if len(p.OrganizationalUnit) > 0 {
		drop(oidOrganizationalUnit)
		add(oidOrganizationalUnit, p.OrganizationalUnit)
	}
	if p.CopySerialNumber && who.leaf != nil {
		var sn []string
		for _, atv := range who.leaf.Subject.Names {
			if atv.Type.Equal(oidSerialNumber) {
				if s, ok := atv.Value.(string); ok {
					sn = append(sn, s)
				}
			}
		}
		// Replace what the CSR asked for: the serial number is the device's, vouched for by
		// its certificate.
		drop(oidSerialNumber)
		add(oidSerialNumber, sn)
	}
	cns := values(seq, oidCommonName)
	if p.RequireCommonName && len(cns) == 0 {
		return nil, nil, errs.New(errs.BadRequest, "the CSR's subject has no commonName (required for label %q)", p.Label)
	}
	if p.CommonNamePattern != nil {
		for _, cn := range cns {
			if !p.CommonNamePattern.MatchString(cn) {
				return nil, nil, errs.New(errs.BadRequest, "commonName %q is not allowed for label %q", cn, p.Label)
			}
		}
	}
	raw, err := asn1.Marshal(seq)
	if err != nil {
		return nil, nil, errs.Wrap(errs.BadRequest, err, "the subject cannot be encoded")
	}
	return raw, seq, nil
}

func values(seq pkix.RDNSequence, oid asn1.ObjectIdentifier) []string {
	var out []string
	for _, rdn := range seq {
		for _, atv := range rdn {
			if atv.Type.Equal(oid) {
				out = append(out, fmt.Sprint(atv.Value))
			}
		}
	}
	return out
}

// nameKey is an order-independent text form of a name's attributes (type and value), so that
// a client that re-encodes its certificate's subject in another order still matches it.
func nameKey(seq pkix.RDNSequence) string {
	var all []string
	for _, rdn := range seq {
		for _, atv := range rdn {
			all = append(all, atv.Type.String()+"="+fmt.Sprint(atv.Value))
		}
	}
	sort.Strings(all)
	return strings.Join(all, "\n")
}

// sanKey is an order-independent text form of a set of SANs.
func sanKey(dns []string, ips []net.IP, emails []string, uris []*url.URL) string {
	var all []string
	for _, d := range dns {
		all = append(all, "dns:"+strings.ToLower(d))
	}
	for _, ip := range ips {
		all = append(all, "ip:"+ip.String())
	}
	for _, e := range emails {
		all = append(all, "email:"+e)
	}
	for _, u := range uris {
		all = append(all, "uri:"+u.String())
	}
	sort.Strings(all)
	return strings.Join(slices.Compact(all), "\n")
}
