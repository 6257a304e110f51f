package authority

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
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
	// pub is nil only when Authorize checks a registrar's relayed server-side key generation,
	// whose key the upstream CA makes: the names are checked, the key cannot be.
	var ski, spki []byte
	if pub != nil {
		kt, err := keyType(pub)
		if err != nil {
			return nil, errs.Wrap(errs.BadRequest, err, "unacceptable public key: %v", err)
		}
		if len(p.AcceptKeyTypes) > 0 && !slices.Contains(p.AcceptKeyTypes, kt) {
			return nil, errs.New(errs.BadRequest, "key type %s is not accepted for label %q (accepted: %s)",
				kt, p.Label, strings.Join(p.AcceptKeyTypes, ", "))
		}
		var raw []byte
		if r.PublicKey == nil && r.CSR != nil {
			raw = r.CSR.RawSubjectPublicKeyInfo // pub is the CSR's key
		}
		spki, err = subjectPublicKeyInfo(pub, raw)
		if err != nil {
			return nil, errs.Wrap(errs.BadRequest, err, "unacceptable public key")
		}
		// RFC 7093 §2 method 4: SHA-256 of the SubjectPublicKeyInfo, truncated to 160 bits.
		sum := sha256.Sum256(spki)
		ski = sum[:20]
	}

	names := p.names
	if who.rule != nil {
		names = who.rule.names
	}
	rawSubject, subject, err := a.subject(p, names, r.CSR, who)
	if err != nil {
		return nil, err
	}
	csr := r.CSR
	if len(csr.DNSNames) > 0 && !names.allowDNS || len(csr.IPAddresses) > 0 && !names.allowIP ||
		len(csr.EmailAddresses) > 0 && !names.allowEmail || len(csr.URIs) > 0 && !names.allowURI {
		return nil, errs.New(errs.BadRequest, "the CSR asks for a subjectAltName type that label %q does not allow for %s", p.Label, who.kind)
	}
	for _, d := range csr.DNSNames {
		if strings.Contains(d, "*") && !names.allowWildcard {
			return nil, errs.New(errs.BadRequest, "wildcard DNS name %q is not allowed for label %q", d, p.Label)
		}
		if names.dnsPattern != nil && !names.dnsPattern.MatchString(d) {
			return nil, errs.New(errs.BadRequest, "DNS name %q is not allowed for label %q", d, p.Label)
		}
	}
	if len(subject) == 0 && len(csr.DNSNames)+len(csr.IPAddresses)+len(csr.EmailAddresses)+len(csr.URIs) == 0 {
		return nil, errs.New(errs.BadRequest, "the CSR has neither a subject nor a subjectAltName")
	}

	if who.kind == KindLDevID {
		// A certificate this CA issued vouches only for its own identity. RFC 7030 §4.2.2 for
		// re-enrollment: "the Subject field and SubjectAltName extension MUST be identical to
		// the corresponding fields in the certificate being renewed or rekeyed"; the same holds
		// when it enrolls a further certificate under another label. Compared after the
		// profile's subject rules, so a copied serialNumber counts as the client's own.
		old := who.leaf
		what := "re-enrollment"
		if r.Op != OpReenroll {
			what = "a certificate issued by this CA enrolls only for its own identity and"
		}
		// The same encoding is the same name (the usual case: a device renews with the subject it
		// was given); otherwise compare the attributes.
		if !bytes.Equal(rawSubject, old.RawSubject) {
			oldSubject, err := parseRDN(old.RawSubject)
			if err != nil {
				return nil, errs.Wrap(errs.Internal, err, "old certificate subject")
			}
			if nameKey(subject) != nameKey(oldSubject) {
				return nil, errs.New(errs.Forbidden, "%s must keep the subject %q (CSR asks for %q)",
					what, oldSubject.String(), subject.String())
			}
		}
		// The same attributes, perhaps in another order or string type: renew the old name
		// byte for byte.
		rawSubject = old.RawSubject
		if sanKey(csr.DNSNames, csr.IPAddresses, csr.EmailAddresses, csr.URIs) !=
			sanKey(old.DNSNames, old.IPAddresses, old.EmailAddresses, old.URIs) {
			return nil, errs.New(errs.Forbidden, "%s must keep the subjectAltName of the certificate it authenticated with", what)
		}
	}

	now := a.now()
	notAfter := now.Add(p.Validity)
	if notAfter.After(a.issuer.NotAfter) {
		notAfter = a.issuer.NotAfter
	}
	return &x509.Certificate{
		RawSubject:            rawSubject,
		NotBefore:             now.Add(-a.backdate),
		NotAfter:              notAfter,
		KeyUsage:              p.KeyUsage,
		ExtKeyUsage:           slices.Clone(p.ExtKeyUsage),
		BasicConstraintsValid: true,
		SubjectKeyId:          ski,
		// x509.CreateCertificate marshals pub itself; encodeTBS writes this, the same bytes.
		RawSubjectPublicKeyInfo: spki,
		DNSNames:                slices.Clone(csr.DNSNames),
		IPAddresses:             slices.Clone(csr.IPAddresses),
		EmailAddresses:          slices.Clone(csr.EmailAddresses),
		URIs:                    slices.Clone(csr.URIs),
	}, nil
}

// p256SPKIPrefix is the DER of a P-256 SubjectPublicKeyInfo up to its uncompressed point
// (RFC 5480 §2.1.1, §2.2): SEQUENCE, AlgorithmIdentifier {id-ecPublicKey, secp256r1}, and the
// BIT STRING header with no unused bits, exactly as x509.MarshalPKIXPublicKey writes it.
var p256SPKIPrefix = []byte{0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
	0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00}

// subjectPublicKeyInfo returns x509.MarshalPKIXPublicKey(pub), the SubjectPublicKeyInfo that
// x509.CreateCertificate writes into the certificate. raw is the request's own encoding of pub
// (a CSR's RawSubjectPublicKeyInfo), or nil: for a P-256 key it is returned as is when it is
// byte for byte that encoding of that very point, which spares the reflection-based ASN.1
// marshalling on every request; anything else is marshalled.
func subjectPublicKeyInfo(pub crypto.PublicKey, raw []byte) ([]byte, error) {
	if k, ok := pub.(*ecdsa.PublicKey); ok && k.Curve == elliptic.P256() &&
		len(raw) == len(p256SPKIPrefix)+65 && bytes.HasPrefix(raw, p256SPKIPrefix) {
		if pt, err := k.Bytes(); err == nil && bytes.Equal(raw[len(p256SPKIPrefix):], pt) {
			return raw, nil
		}
	}
	return x509.MarshalPKIXPublicKey(pub)
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

// subject applies the subject rules to the CSR's subject. The CSR's attributes keep their
// order; only the attributes a rule names are replaced. (Values are re-encoded: PrintableString
// where possible, else UTF8String, as RFC 5280 §4.1.2.6 prefers.)
func (a *Authority) subject(p *Profile, n *nameRules, csr *x509.CertificateRequest, who identity) ([]byte, pkix.RDNSequence, error) {
	var seq pkix.RDNSequence
	if len(csr.RawSubject) > 0 {
		var err error
		if seq, err = parseRDN(csr.RawSubject); err != nil {
			return nil, nil, errs.Wrap(errs.BadRequest, err, "the CSR's subject does not parse")
		}
	} else {
		seq = csr.Subject.ToRDNSequence() // a CMP CertTemplate passed without raw bytes
	}
	for _, rdn := range seq {
		for _, atv := range rdn {
			if !n.allowAttrs[atv.Type.String()] {
				return nil, nil, errs.New(errs.BadRequest, "subject attribute %s is not allowed for label %q", attrName(atv.Type), p.Label)
			}
		}
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
	if len(n.organization) > 0 {
		drop(oidOrganization)
		add(oidOrganization, n.organization)
	}
	if len(n.organizationalUnit) > 0 {
		drop(oidOrganizationalUnit)
		add(oidOrganizationalUnit, n.organizationalUnit)
	}
	// The serialNumber attribute names a device (IEEE 802.1AR): only the device's own
	// certificate can vouch for it.
	device := who.leaf != nil && (who.kind == KindIDevID || who.kind == KindLDevID)
	var own []string
	if device {
		for _, atv := range who.leaf.Subject.Names {
			if atv.Type.Equal(oidSerialNumber) {
				if s, ok := atv.Value.(string); ok {
					own = append(own, s)
				}
			}
		}
	}
	switch asked := values(seq, oidSerialNumber); {
	case n.copySerialNumber && device:
		// Replace what the CSR asked for: the serial number is the device's, vouched for by
		// its certificate.
		drop(oidSerialNumber)
		add(oidSerialNumber, own)
	case len(asked) == 0:
	case device:
		for _, sn := range asked {
			if !slices.Contains(own, sn) {
				return nil, nil, errs.New(errs.Forbidden, "the CSR asks for serialNumber %q, which is not the authenticated device's", sn)
			}
		}
	case !n.serialExplicit:
		return nil, nil, errs.New(errs.Forbidden, "%s may not ask for a serialNumber under label %q: it names a device "+
			"and no device certificate vouches for it (list serialNumber in allow_attributes to permit it)", who.kind, p.Label)
	}
	cns := values(seq, oidCommonName)
	if (n.requireCommonName || n.commonNamePattern != nil || who.rule != nil && who.rule.bindCN) && len(cns) == 0 {
		return nil, nil, errs.New(errs.BadRequest, "the CSR's subject has no commonName (required for label %q)", p.Label)
	}
	if n.commonNamePattern != nil {
		for _, cn := range cns {
			if !n.commonNamePattern.MatchString(cn) {
				return nil, nil, errs.New(errs.BadRequest, "commonName %q is not allowed for label %q", cn, p.Label)
			}
		}
	}
	if who.rule != nil && who.rule.bindCN {
		bound := who.secretRef
		switch {
		case who.preShared != "":
			bound = who.preShared
		case who.user != "":
			bound = who.user
		}
		for _, cn := range cns {
			if cn != bound {
				return nil, nil, errs.New(errs.Forbidden, "commonName %q is not %s's own name %q", cn, who.kind, bound)
			}
		}
	}
	raw, err := asn1.Marshal(seq)
	if err != nil {
		return nil, nil, errs.Wrap(errs.BadRequest, err, "the subject cannot be encoded")
	}
	return raw, seq, nil
}

// attrName is the short name of a subject attribute type, or its dotted OID.
func attrName(o asn1.ObjectIdentifier) string {
	for n, v := range attrNames {
		if v.Equal(o) {
			switch n {
			case "serialnumber":
				return "serialNumber"
			case "emailaddress":
				return "emailAddress"
			}
			return strings.ToUpper(n)
		}
	}
	return o.String()
}

func values(seq pkix.RDNSequence, oid asn1.ObjectIdentifier) []string {
	var out []string
	for _, rdn := range seq {
		for _, atv := range rdn {
			if atv.Type.Equal(oid) {
				out = append(out, attrValue(atv.Value))
			}
		}
	}
	return out
}

// attrValue is fmt.Sprint(v) without fmt for the usual string values of a parsed name.
func attrValue(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return fmt.Sprint(v)
}

// nameKey is an order-independent text form of a name's attributes (type and value), so that
// a client that re-encodes its certificate's subject in another order still matches it.
func nameKey(seq pkix.RDNSequence) string {
	var all []string
	for _, rdn := range seq {
		for _, atv := range rdn {
			all = append(all, atv.Type.String()+"="+attrValue(atv.Value))
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
