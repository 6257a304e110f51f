package cmp

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Contents of the support messages of RFC 9483 §4.3 (genm/genp ITAVs, RFC 9810 §5.3.19).
// Requests carry the ITAV type with no value (except rootCaKeyUpdate's optional
// rootCaCert and crlStatusList); the helpers below build and parse the values.

// MarshalCertProfile encodes CertProfileValue ::= SEQUENCE SIZE (1..MAX) OF UTF8String.
func MarshalCertProfile(names []string) []byte {
	var b cryptobyte.Builder
	addFreeText(&b, names)
	return b.BytesOrPanic()
}

// ParseCertProfile decodes a CertProfileValue.
func ParseCertProfile(v []byte) ([]string, error) {
	s := cryptobyte.String(v)
	p, err := parseFreeText(&s)
	if err != nil || !s.Empty() {
		return nil, errors.New("cmp: bad CertProfileValue")
	}
	return p, nil
}

// MarshalCerts encodes SEQUENCE OF CMPCertificate (CaCertsValue, id-it 17).
func MarshalCerts(certs []*x509.Certificate) []byte {
	var b cryptobyte.Builder
	addCerts(&b, certs)
	return b.BytesOrPanic()
}

// ParseCerts decodes SEQUENCE OF CMPCertificate; an empty value (absent) gives no certs.
func ParseCerts(v []byte) ([]*x509.Certificate, error) {
	if len(v) == 0 {
		return nil, nil
	}
	certs, err := parseCertSeq(cryptobyte.String(v))
	if err != nil {
		return nil, fmt.Errorf("cmp: certificates: %w", err)
	}
	return certs, nil
}

// CACertsITAV returns the genp ITAV carrying the CA certificates (RFC 9483 §4.3.1).
func CACertsITAV(certs []*x509.Certificate) InfoTypeAndValue {
	it := InfoTypeAndValue{Type: OIDITCACerts}
	if len(certs) > 0 {
		it.Value = MarshalCerts(certs)
	}
	return it
}

// RootCACertITAV returns the genm ITAV naming the root CA certificate the client trusts
// (id-it-rootCaCert, RFC 9483 §4.3.2); its value is the certificate DER.
func RootCACertITAV(cert *x509.Certificate) InfoTypeAndValue {
	return InfoTypeAndValue{Type: OIDITRootCACert, Value: cert.Raw}
}

// RootCAKeyUpdate is RootCaKeyUpdateContent (RFC 9810 §5.3.19.2, RFC 9483 §4.3.2).
type RootCAKeyUpdate struct {
	NewWithNew *x509.Certificate
	NewWithOld *x509.Certificate // optional
	OldWithNew *x509.Certificate // optional
}

// Marshal encodes the content (the value of an id-it-rootCaKeyUpdate ITAV).
func (r *RootCAKeyUpdate) Marshal() ([]byte, error) {
	if r.NewWithNew == nil {
		return nil, errors.New("cmp: rootCaKeyUpdate without newWithNew")
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(r.NewWithNew.Raw)
		for i, c := range []*x509.Certificate{r.NewWithOld, r.OldWithNew} {
			if c != nil {
				b.AddASN1(tagC(uint8(i)), func(b *cryptobyte.Builder) { b.AddBytes(c.Raw) })
			}
		}
	})
	return b.Bytes()
}

// ParseRootCAKeyUpdate decodes RootCaKeyUpdateContent.
func ParseRootCAKeyUpdate(v []byte) (*RootCAKeyUpdate, error) {
	s := cryptobyte.String(v)
	var seq cryptobyte.String
	if !s.ReadASN1(&seq, cbasn1.SEQUENCE) || !s.Empty() {
		return nil, errors.New("cmp: bad RootCaKeyUpdateContent")
	}
	r := &RootCAKeyUpdate{}
	var c cryptobyte.String
	if !seq.ReadASN1Element(&c, cbasn1.SEQUENCE) {
		return nil, errors.New("cmp: bad newWithNew")
	}
	var err error
	if r.NewWithNew, err = x509.ParseCertificate(c); err != nil {
		return nil, fmt.Errorf("cmp: newWithNew: %w", err)
	}
	for i, out := range []**x509.Certificate{&r.NewWithOld, &r.OldWithNew} {
		var v cryptobyte.String
		var present bool
		if !seq.ReadOptionalASN1(&v, &present, tagC(uint8(i))) {
			return nil, errors.New("cmp: bad RootCaKeyUpdateContent")
		}
		if present {
			if *out, err = x509.ParseCertificate(v); err != nil {
				return nil, fmt.Errorf("cmp: rootCaKeyUpdate [%d]: %w", i, err)
			}
		}
	}
	if !seq.Empty() {
		return nil, errors.New("cmp: bad RootCaKeyUpdateContent tail")
	}
	return r, nil
}

// CertReqTemplateContent is the genp certReqTemplate value (RFC 9810 §5.3.19.16,
// RFC 9483 §4.3.3). KeySpec holds the controls (e.g. id-regCtrl-algId, -rsaKeyLen).
type CertReqTemplateContent struct {
	Template CertTemplate
	KeySpec  []AttributeTypeAndValue
}

// Marshal encodes the content.
func (c *CertReqTemplateContent) Marshal() ([]byte, error) {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		c.Template.marshal(b)
		if len(c.KeySpec) > 0 {
			addATVs(b, c.KeySpec)
		}
	})
	return b.Bytes()
}

// ParseCertReqTemplate decodes CertReqTemplateContent.
func ParseCertReqTemplate(v []byte) (*CertReqTemplateContent, error) {
	s := cryptobyte.String(v)
	var seq, tmpl cryptobyte.String
	if !s.ReadASN1(&seq, cbasn1.SEQUENCE) || !s.Empty() || !seq.ReadASN1Element(&tmpl, cbasn1.SEQUENCE) {
		return nil, errors.New("cmp: bad CertReqTemplateContent")
	}
	t, err := parseCertTemplate(tmpl, cbasn1.SEQUENCE)
	if err != nil {
		return nil, fmt.Errorf("cmp: certReqTemplate: %w", err)
	}
	c := &CertReqTemplateContent{Template: t}
	var ks cryptobyte.String
	var present bool
	if !seq.ReadOptionalASN1(&ks, &present, cbasn1.SEQUENCE) || !seq.Empty() {
		return nil, errors.New("cmp: bad keySpec")
	}
	if present {
		if c.KeySpec, err = parseATVs(ks); err != nil {
			return nil, fmt.Errorf("cmp: keySpec: %w", err)
		}
	}
	return c, nil
}

// CRLStatus is one entry of CRLStatusListValue (RFC 9810 §5.3.19.17, RFC 9483 §4.3.4).
// Exactly one of DPN (DER of the DistributionPointName) or Issuer is set.
type CRLStatus struct {
	DPN        []byte
	Issuer     []GeneralName
	ThisUpdate time.Time // zero = absent
}

// MarshalCRLStatusList encodes CRLStatusListValue.
func MarshalCRLStatusList(list []CRLStatus) ([]byte, error) {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		for _, st := range list {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				if st.DPN != nil {
					b.AddASN1(tagC(0), func(b *cryptobyte.Builder) { b.AddBytes(st.DPN) })
				} else {
					b.AddASN1(tagC(1), func(b *cryptobyte.Builder) {
						b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
							for _, g := range st.Issuer {
								b.AddBytes(g.Raw)
							}
						})
					})
				}
				if !st.ThisUpdate.IsZero() {
					addTime(b, st.ThisUpdate)
				}
			})
		}
	})
	return b.Bytes()
}

// ParseCRLStatusList decodes CRLStatusListValue.
func ParseCRLStatusList(v []byte) ([]CRLStatus, error) {
	s := cryptobyte.String(v)
	var seq cryptobyte.String
	if !s.ReadASN1(&seq, cbasn1.SEQUENCE) || !s.Empty() {
		return nil, errors.New("cmp: bad CRLStatusListValue")
	}
	var out []CRLStatus
	for !seq.Empty() {
		var e, src cryptobyte.String
		var tag cbasn1.Tag
		if !seq.ReadASN1(&e, cbasn1.SEQUENCE) || !e.ReadAnyASN1(&src, &tag) {
			return nil, errors.New("cmp: bad CRLStatus")
		}
		var st CRLStatus
		switch tag {
		case tagC(0):
			st.DPN = append([]byte{}, src...)
		case tagC(1):
			var gns cryptobyte.String
			if !src.ReadASN1(&gns, cbasn1.SEQUENCE) || !src.Empty() {
				return nil, errors.New("cmp: bad CRLSource issuer")
			}
			for !gns.Empty() {
				var g cryptobyte.String
				var t cbasn1.Tag
				if !gns.ReadAnyASN1Element(&g, &t) {
					return nil, errors.New("cmp: bad GeneralName")
				}
				st.Issuer = append(st.Issuer, GeneralName{Raw: append([]byte{}, g...)})
			}
		default:
			return nil, errors.New("cmp: bad CRLSource")
		}
		if !e.Empty() && (!readTime(&e, &st.ThisUpdate) || !e.Empty()) {
			return nil, errors.New("cmp: bad CRLStatus thisUpdate")
		}
		out = append(out, st)
	}
	return out, nil
}

// MarshalCRLs encodes CRLsValue ::= SEQUENCE SIZE (1..MAX) OF CertificateList.
func MarshalCRLs(crls [][]byte) []byte {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		for _, c := range crls {
			b.AddBytes(c)
		}
	})
	return b.BytesOrPanic()
}

// ParseCRLs decodes CRLsValue into DER CertificateLists.
func ParseCRLs(v []byte) ([][]byte, error) {
	s := cryptobyte.String(v)
	var seq cryptobyte.String
	if !s.ReadASN1(&seq, cbasn1.SEQUENCE) || !s.Empty() {
		return nil, errors.New("cmp: bad CRLsValue")
	}
	var out [][]byte
	for !seq.Empty() {
		var c cryptobyte.String
		if !seq.ReadASN1Element(&c, cbasn1.SEQUENCE) {
			return nil, errors.New("cmp: bad CertificateList")
		}
		out = append(out, append([]byte{}, c...))
	}
	return out, nil
}
