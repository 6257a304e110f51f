package cmp

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Announcement bodies (RFC 9810 §5.3.13-16), which RFC 9482 §2.6 sends to observers of
// `…/ann`, and the nested body of RFC 9810 §5.1.3.4 used by RAs (RFC 9483 §5.2.2.1).
const (
	TypeCKUAnn BodyType = 15
	TypeCAnn   BodyType = 16
	TypeRAnn   BodyType = 17
	TypeCRLAnn BodyType = 18
	TypeNested BodyType = 20
)

// CAKeyUpdAnn is the ckuann [15] body: CAKeyUpdContent (RFC 9810 §5.3.13). The v3 choice
// cAKeyUpdAnnV3 [0] RootCaKeyUpdateContent is written; the deprecated v2 SEQUENCE
// {oldWithNew, newWithOld, newWithNew} is read too (then V2 is true).
type CAKeyUpdAnn struct {
	RootCAKeyUpdate
	V2 bool
}

// Type implements Body.
func (*CAKeyUpdAnn) Type() BodyType { return TypeCKUAnn }

func (c *CAKeyUpdAnn) marshal(b *cryptobyte.Builder) {
	if c.V2 {
		if c.OldWithNew == nil || c.NewWithOld == nil || c.NewWithNew == nil {
			b.SetError(errors.New("CAKeyUpdAnnContent needs all three certificates"))
			return
		}
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddBytes(c.OldWithNew.Raw)
			b.AddBytes(c.NewWithOld.Raw)
			b.AddBytes(c.NewWithNew.Raw)
		})
		return
	}
	der, err := c.RootCAKeyUpdate.Marshal()
	if err != nil {
		b.SetError(err)
		return
	}
	b.AddASN1(tagC(0), func(b *cryptobyte.Builder) { b.AddBytes(der) })
}

// CertAnn is the cann [16] body: a newly issued certificate.
type CertAnn struct {
	Cert *x509.Certificate
}

// Type implements Body.
func (*CertAnn) Type() BodyType { return TypeCAnn }

func (c *CertAnn) marshal(b *cryptobyte.Builder) {
	if c.Cert == nil {
		b.SetError(errors.New("cann without certificate"))
		return
	}
	b.AddBytes(c.Cert.Raw)
}

// RevAnn is the rann [17] body (RFC 9810 §5.3.15).
type RevAnn struct {
	Status          PKIStatus
	CertID          CertID
	WillBeRevokedAt time.Time
	BadSinceDate    time.Time
	CRLDetails      []pkix.Extension
}

// Type implements Body.
func (*RevAnn) Type() BodyType { return TypeRAnn }

func (r *RevAnn) marshal(b *cryptobyte.Builder) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1Int64(int64(r.Status))
		r.CertID.marshal(b)
		b.AddASN1GeneralizedTime(r.WillBeRevokedAt.UTC().Truncate(time.Second))
		b.AddASN1GeneralizedTime(r.BadSinceDate.UTC().Truncate(time.Second))
		if len(r.CRLDetails) > 0 {
			addExtensions(b, cbasn1.SEQUENCE, r.CRLDetails)
		}
	})
}

// CRLAnn is the crlann [18] body: DER CertificateLists.
type CRLAnn struct {
	CRLs [][]byte
}

// Type implements Body.
func (*CRLAnn) Type() BodyType { return TypeCRLAnn }

func (c *CRLAnn) marshal(b *cryptobyte.Builder) { b.AddBytes(MarshalCRLs(c.CRLs)) }

// Nested is the nested [20] body: PKIMessages (RFC 9810 §5.1.3.4). Nesting deeper than
// maxNesting is refused.
type Nested struct {
	Messages []*Message
}

// Type implements Body.
func (*Nested) Type() BodyType { return TypeNested }

func (n *Nested) marshal(b *cryptobyte.Builder) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		for _, m := range n.Messages {
			if m.Raw == nil {
				b.SetError(errors.New("nested message not marshaled"))
				return
			}
			b.AddBytes(m.Raw)
		}
	})
}

const maxNesting = 3

func parseAnnouncement(s *cryptobyte.String, t BodyType, depth int) (Body, error) {
	switch t {
	case TypeCKUAnn:
		if s.PeekASN1Tag(tagC(0)) {
			var v cryptobyte.String
			if !s.ReadASN1(&v, tagC(0)) {
				return nil, errors.New("bad cAKeyUpdAnnV3")
			}
			r, err := ParseRootCAKeyUpdate(v)
			if err != nil {
				return nil, err
			}
			return &CAKeyUpdAnn{RootCAKeyUpdate: *r}, nil
		}
		var seq cryptobyte.String
		if !s.ReadASN1(&seq, cbasn1.SEQUENCE) {
			return nil, errors.New("bad CAKeyUpdAnnContent")
		}
		certs, err := parseCerts(seq)
		if err != nil || len(certs) != 3 {
			return nil, errors.New("bad CAKeyUpdAnnContent")
		}
		return &CAKeyUpdAnn{RootCAKeyUpdate: RootCAKeyUpdate{OldWithNew: certs[0], NewWithOld: certs[1], NewWithNew: certs[2]}, V2: true}, nil
	case TypeCAnn:
		var c cryptobyte.String
		if !s.ReadASN1Element(&c, cbasn1.SEQUENCE) {
			return nil, errors.New("bad cann")
		}
		cert, err := x509.ParseCertificate(c)
		if err != nil {
			return nil, err
		}
		return &CertAnn{Cert: cert}, nil
	case TypeRAnn:
		var seq cryptobyte.String
		var st int64
		if !s.ReadASN1(&seq, cbasn1.SEQUENCE) || !seq.ReadASN1Integer(&st) {
			return nil, errors.New("bad RevAnnContent")
		}
		r := &RevAnn{Status: PKIStatus(st)}
		var err error
		if r.CertID, err = parseCertID(&seq); err != nil {
			return nil, err
		}
		if !seq.ReadASN1GeneralizedTime(&r.WillBeRevokedAt) || !seq.ReadASN1GeneralizedTime(&r.BadSinceDate) {
			return nil, errors.New("bad RevAnnContent times")
		}
		if !seq.Empty() {
			var exts cryptobyte.String
			if !seq.ReadASN1(&exts, cbasn1.SEQUENCE) || !seq.Empty() {
				return nil, errors.New("bad crlDetails")
			}
			if r.CRLDetails, err = parseExtensions(exts); err != nil {
				return nil, err
			}
		}
		return r, nil
	case TypeCRLAnn:
		var el cryptobyte.String
		if !s.ReadASN1Element(&el, cbasn1.SEQUENCE) {
			return nil, errors.New("bad CRLAnnContent")
		}
		crls, err := ParseCRLs(el)
		if err != nil {
			return nil, err
		}
		return &CRLAnn{CRLs: crls}, nil
	case TypeNested:
		if depth >= maxNesting {
			return nil, fmt.Errorf("nesting deeper than %d", maxNesting)
		}
		var seq cryptobyte.String
		if !s.ReadASN1(&seq, cbasn1.SEQUENCE) {
			return nil, errors.New("bad PKIMessages")
		}
		n := &Nested{}
		for !seq.Empty() {
			var el cryptobyte.String
			if !seq.ReadASN1Element(&el, cbasn1.SEQUENCE) {
				return nil, errors.New("bad nested PKIMessage")
			}
			m, err := parseDepth(el, depth+1)
			if err != nil {
				return nil, fmt.Errorf("nested message: %w", err)
			}
			n.Messages = append(n.Messages, m)
		}
		if len(n.Messages) == 0 {
			return nil, errors.New("empty PKIMessages")
		}
		return n, nil
	}
	return nil, fmt.Errorf("unsupported PKIBody type %s", t)
}
