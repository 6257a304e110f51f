package cmp

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// BodyType is the PKIBody choice tag (RFC 9810 §5.1.2). These [n] tags are distinct from
// PKIMessage's protection [0] and extraCerts [1].
type BodyType int

// PKIBody choices supported by this package.
const (
	TypeIR       BodyType = 0
	TypeIP       BodyType = 1
	TypeCR       BodyType = 2
	TypeCP       BodyType = 3
	TypeP10CR    BodyType = 4
	TypeKUR      BodyType = 7
	TypeKUP      BodyType = 8
	TypeRR       BodyType = 11
	TypeRP       BodyType = 12
	TypePKIConf  BodyType = 19
	TypeGenM     BodyType = 21
	TypeGenP     BodyType = 22
	TypeError    BodyType = 23
	TypeCertConf BodyType = 24
	TypePollReq  BodyType = 25
	TypePollRep  BodyType = 26
)

var bodyNames = map[BodyType]string{
	TypeIR: "ir", TypeIP: "ip", TypeCR: "cr", TypeCP: "cp", TypeP10CR: "p10cr", TypeKUR: "kur",
	TypeKUP: "kup", TypeRR: "rr", TypeRP: "rp", TypePKIConf: "pkiconf", TypeGenM: "genm",
	TypeGenP: "genp", TypeError: "error", TypeCertConf: "certConf", TypePollReq: "pollReq",
	TypePollRep: "pollRep", TypeCKUAnn: "ckuann", TypeCAnn: "cann", TypeRAnn: "rann",
	TypeCRLAnn: "crlann", TypeNested: "nested",
}

func (t BodyType) String() string {
	if n, ok := bodyNames[t]; ok {
		return n
	}
	return fmt.Sprintf("body[%d]", int(t))
}

// Body is one PKIBody choice. The concrete types are *CertReqMessages (ir, cr, kur),
// *CertRepMessage (ip, cp, kup), *P10CR, *RevReqContent, *RevRepContent, *PKIConf,
// *GenContent (genm, genp), *ErrorContent, *CertConfirmContent, *PollReqContent,
// *PollRepContent, the announcements *CAKeyUpdAnn, *CertAnn, *RevAnn, *CRLAnn, and *Nested.
// Other choices (popdecc, krr, ccr, ...) are refused by Parse.
type Body interface {
	Type() BodyType
	marshal(b *cryptobyte.Builder)
}

// CertReqMessages is the body of ir [0], cr [2] and kur [7] (RFC 4211 §3).
type CertReqMessages struct {
	BodyType BodyType // TypeIR, TypeCR or TypeKUR
	Requests []CertReqMsg
}

// Type implements Body.
func (c *CertReqMessages) Type() BodyType { return c.BodyType }

func (c *CertReqMessages) marshal(b *cryptobyte.Builder) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		for i := range c.Requests {
			c.Requests[i].marshal(b)
		}
	})
}

// CertRepMessage is the body of ip [1], cp [3] and kup [8] (RFC 9810 §5.3.4).
type CertRepMessage struct {
	BodyType  BodyType // TypeIP, TypeCP or TypeKUP
	CAPubs    []*x509.Certificate
	Responses []CertResponse
}

// Type implements Body.
func (c *CertRepMessage) Type() BodyType { return c.BodyType }

func (c *CertRepMessage) marshal(b *cryptobyte.Builder) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		if len(c.CAPubs) > 0 {
			b.AddASN1(tagC(1), func(b *cryptobyte.Builder) { addCerts(b, c.CAPubs) })
		}
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			for i := range c.Responses {
				c.Responses[i].marshal(b)
			}
		})
	})
}

// CertResponse is one response in a CertRepMessage (RFC 9810 §5.3.4).
type CertResponse struct {
	CertReqID int64
	Status    StatusInfo
	// Cert is certOrEncCert.certificate; EncryptedCert is the DER of an encryptedCert
	// EncryptedKey (not decrypted here). PrivateKey is the DER of the optional privateKey
	// EncryptedKey (central key generation).
	Cert          *x509.Certificate
	EncryptedCert []byte
	PrivateKey    []byte
	RspInfo       []byte
}

func (r *CertResponse) marshal(b *cryptobyte.Builder) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1Int64(r.CertReqID)
		r.Status.marshal(b)
		if r.Cert != nil || r.EncryptedCert != nil {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				if r.Cert != nil {
					b.AddASN1(tagC(0), func(b *cryptobyte.Builder) { b.AddBytes(r.Cert.Raw) })
				} else {
					b.AddASN1(tagC(1), func(b *cryptobyte.Builder) { b.AddBytes(r.EncryptedCert) })
				}
				if r.PrivateKey != nil {
					b.AddASN1(tagC(0), func(b *cryptobyte.Builder) { b.AddBytes(r.PrivateKey) })
				}
			})
		}
		if r.RspInfo != nil {
			b.AddASN1OctetString(r.RspInfo)
		}
	})
}

// P10CR is the p10cr [4] body: a PKCS#10 CertificationRequest.
type P10CR struct {
	CSR *x509.CertificateRequest
}

// Type implements Body.
func (*P10CR) Type() BodyType { return TypeP10CR }

func (p *P10CR) marshal(b *cryptobyte.Builder) {
	if p.CSR == nil {
		b.SetError(errors.New("p10cr without CSR"))
		return
	}
	b.AddBytes(p.CSR.Raw)
}

// RevDetails is one revocation request (RFC 9810 §5.3.9).
type RevDetails struct {
	CertDetails     CertTemplate
	CRLEntryDetails []pkix.Extension // e.g. reasonCode
}

// RevReqContent is the rr [11] body.
type RevReqContent struct {
	Requests []RevDetails
}

// Type implements Body.
func (*RevReqContent) Type() BodyType { return TypeRR }

func (r *RevReqContent) marshal(b *cryptobyte.Builder) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		for _, d := range r.Requests {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				d.CertDetails.marshal(b)
				if len(d.CRLEntryDetails) > 0 {
					addExtensions(b, cbasn1.SEQUENCE, d.CRLEntryDetails)
				}
			})
		}
	})
}

// CertID identifies a certificate by issuer and serial number (RFC 4211 §6.5).
type CertID struct {
	Issuer GeneralName
	Serial *big.Int
}

func (c CertID) marshal(b *cryptobyte.Builder) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(c.Issuer.Raw)
		if c.Serial == nil {
			b.SetError(errors.New("CertId without serial"))
			return
		}
		b.AddASN1BigInt(c.Serial)
	})
}

func parseCertID(s *cryptobyte.String) (CertID, error) {
	var c CertID
	var seq, gn cryptobyte.String
	var tag cbasn1.Tag
	c.Serial = new(big.Int)
	if !s.ReadASN1(&seq, cbasn1.SEQUENCE) || !seq.ReadAnyASN1Element(&gn, &tag) ||
		!seq.ReadASN1Integer(c.Serial) || !seq.Empty() {
		return c, errors.New("bad CertId")
	}
	c.Issuer = GeneralName{Raw: append([]byte{}, gn...)}
	return c, nil
}

// RevRepContent is the rp [12] body (RFC 9810 §5.3.10).
type RevRepContent struct {
	Status   []StatusInfo
	RevCerts []CertID
	CRLs     [][]byte // DER CertificateLists
}

// Type implements Body.
func (*RevRepContent) Type() BodyType { return TypeRP }

func (r *RevRepContent) marshal(b *cryptobyte.Builder) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			for _, s := range r.Status {
				s.marshal(b)
			}
		})
		if len(r.RevCerts) > 0 {
			b.AddASN1(tagC(0), func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					for _, c := range r.RevCerts {
						c.marshal(b)
					}
				})
			})
		}
		if len(r.CRLs) > 0 {
			b.AddASN1(tagC(1), func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					for _, c := range r.CRLs {
						b.AddBytes(c)
					}
				})
			})
		}
	})
}

// PKIConf is the pkiconf [19] body (NULL).
type PKIConf struct{}

// Type implements Body.
func (*PKIConf) Type() BodyType { return TypePKIConf }

func (*PKIConf) marshal(b *cryptobyte.Builder) { b.AddASN1NULL() }

// GenContent is the body of genm [21] and genp [22] (RFC 9810 §5.3.19-20).
type GenContent struct {
	BodyType BodyType // TypeGenM or TypeGenP
	ITAVs    []InfoTypeAndValue
}

// Type implements Body.
func (g *GenContent) Type() BodyType { return g.BodyType }

func (g *GenContent) marshal(b *cryptobyte.Builder) { addITAVs(b, g.ITAVs) }

// Find returns the first ITAV of type oid.
func (g *GenContent) Find(oid []int) (InfoTypeAndValue, bool) {
	for _, it := range g.ITAVs {
		if it.Type.Equal(oid) {
			return it, true
		}
	}
	return InfoTypeAndValue{}, false
}

// ErrorContent is the error [23] body (RFC 9810 §5.3.21).
type ErrorContent struct {
	Status       StatusInfo
	ErrorCode    *int64
	ErrorDetails []string
}

// Type implements Body.
func (*ErrorContent) Type() BodyType { return TypeError }

func (e *ErrorContent) marshal(b *cryptobyte.Builder) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		e.Status.marshal(b)
		if e.ErrorCode != nil {
			b.AddASN1Int64(*e.ErrorCode)
		}
		if len(e.ErrorDetails) > 0 {
			addFreeText(b, e.ErrorDetails)
		}
	})
}

// CertStatus is one entry of certConf (RFC 9810 §5.3.18).
type CertStatus struct {
	CertHash   []byte
	CertReqID  int64
	StatusInfo *StatusInfo               // absent = accepted
	HashAlg    *pkix.AlgorithmIdentifier // cmp2021 only
}

// CertConfirmContent is the certConf [24] body.
type CertConfirmContent struct {
	Statuses []CertStatus
}

// Type implements Body.
func (*CertConfirmContent) Type() BodyType { return TypeCertConf }

func (c *CertConfirmContent) marshal(b *cryptobyte.Builder) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		for _, s := range c.Statuses {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1OctetString(s.CertHash)
				b.AddASN1Int64(s.CertReqID)
				if s.StatusInfo != nil {
					s.StatusInfo.marshal(b)
				}
				if s.HashAlg != nil {
					b.AddASN1(tagC(0), func(b *cryptobyte.Builder) { addAlgID(b, *s.HashAlg) })
				}
			})
		}
	})
}

// PollReqContent is the pollReq [25] body.
type PollReqContent struct {
	CertReqIDs []int64
}

// Type implements Body.
func (*PollReqContent) Type() BodyType { return TypePollReq }

func (p *PollReqContent) marshal(b *cryptobyte.Builder) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		for _, id := range p.CertReqIDs {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddASN1Int64(id) })
		}
	})
}

// PollRep is one pollRep entry; CheckAfter is in seconds (RFC 9810 §5.3.22).
type PollRep struct {
	CertReqID  int64
	CheckAfter int64
	Reason     []string
}

// PollRepContent is the pollRep [26] body.
type PollRepContent struct {
	Entries []PollRep
}

// Type implements Body.
func (*PollRepContent) Type() BodyType { return TypePollRep }

func (p *PollRepContent) marshal(b *cryptobyte.Builder) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		for _, e := range p.Entries {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1Int64(e.CertReqID)
				b.AddASN1Int64(e.CheckAfter)
				if len(e.Reason) > 0 {
					addFreeText(b, e.Reason)
				}
			})
		}
	})
}

// parseBody decodes the tagged PKIBody element.
func parseBody(el cryptobyte.String, tag cbasn1.Tag, depth int) (Body, error) {
	if tag&0xe0 != 0xa0 {
		return nil, fmt.Errorf("PKIBody tag 0x%02x is not a constructed context tag", uint8(tag))
	}
	t := BodyType(tag & 0x1f)
	var s cryptobyte.String
	if !el.ReadASN1(&s, tag) {
		return nil, errors.New("bad PKIBody element")
	}
	var body Body
	var err error
	switch t {
	case TypeIR, TypeCR, TypeKUR:
		body, err = parseCertReqMessages(&s, t)
	case TypeIP, TypeCP, TypeKUP:
		body, err = parseCertRepMessage(&s, t)
	case TypeP10CR:
		var csr cryptobyte.String
		if !s.ReadASN1Element(&csr, cbasn1.SEQUENCE) {
			return nil, errors.New("bad p10cr")
		}
		var req *x509.CertificateRequest
		req, err = x509.ParseCertificateRequest(csr)
		body = &P10CR{CSR: req}
	case TypeRR:
		body, err = parseRevReq(&s)
	case TypeRP:
		body, err = parseRevRep(&s)
	case TypePKIConf:
		var n cryptobyte.String
		if !s.ReadASN1(&n, cbasn1.NULL) || !n.Empty() {
			return nil, errors.New("bad pkiconf")
		}
		body = &PKIConf{}
	case TypeGenM, TypeGenP:
		var seq cryptobyte.String
		if !s.ReadASN1(&seq, cbasn1.SEQUENCE) {
			return nil, errors.New("bad GenMsgContent")
		}
		var itavs []InfoTypeAndValue
		itavs, err = parseITAVs(seq)
		body = &GenContent{BodyType: t, ITAVs: itavs}
	case TypeError:
		body, err = parseError(&s)
	case TypeCertConf:
		body, err = parseCertConf(&s)
	case TypePollReq:
		body, err = parsePollReq(&s)
	case TypePollRep:
		body, err = parsePollRep(&s)
	default:
		body, err = parseAnnouncement(&s, t, depth)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", t, err)
	}
	if !s.Empty() {
		return nil, fmt.Errorf("%s: %w", t, errTrailing)
	}
	return body, nil
}

func parseCertReqMessages(s *cryptobyte.String, t BodyType) (*CertReqMessages, error) {
	var seq cryptobyte.String
	if !s.ReadASN1(&seq, cbasn1.SEQUENCE) {
		return nil, errors.New("bad CertReqMessages")
	}
	c := &CertReqMessages{BodyType: t}
	for !seq.Empty() {
		m, err := parseCertReqMsg(&seq)
		if err != nil {
			return nil, err
		}
		c.Requests = append(c.Requests, m)
	}
	if len(c.Requests) == 0 {
		return nil, errors.New("empty CertReqMessages")
	}
	return c, nil
}

func parseCertRepMessage(s *cryptobyte.String, t BodyType) (*CertRepMessage, error) {
	var seq cryptobyte.String
	if !s.ReadASN1(&seq, cbasn1.SEQUENCE) {
		return nil, errors.New("bad CertRepMessage")
	}
	c := &CertRepMessage{BodyType: t}
	var caPubs cryptobyte.String
	var present bool
	if !seq.ReadOptionalASN1(&caPubs, &present, tagC(1)) {
		return nil, errors.New("bad caPubs")
	}
	if present {
		certs, err := parseCertSeq(caPubs)
		if err != nil {
			return nil, fmt.Errorf("caPubs: %w", err)
		}
		c.CAPubs = certs
	}
	var rsps cryptobyte.String
	if !seq.ReadASN1(&rsps, cbasn1.SEQUENCE) || !seq.Empty() {
		return nil, errors.New("bad response sequence")
	}
	for !rsps.Empty() {
		var r cryptobyte.String
		if !rsps.ReadASN1(&r, cbasn1.SEQUENCE) {
			return nil, errors.New("bad CertResponse")
		}
		var cr CertResponse
		if !r.ReadASN1Integer(&cr.CertReqID) {
			return nil, errors.New("bad certReqId")
		}
		st, err := parseStatusInfo(&r)
		if err != nil {
			return nil, err
		}
		cr.Status = st
		var ckp cryptobyte.String
		if !r.ReadOptionalASN1(&ckp, &present, cbasn1.SEQUENCE) {
			return nil, errors.New("bad certifiedKeyPair")
		}
		if present {
			var coe cryptobyte.String
			var tag cbasn1.Tag
			if !ckp.ReadAnyASN1(&coe, &tag) {
				return nil, errors.New("bad certOrEncCert")
			}
			switch tag {
			case tagC(0):
				var c cryptobyte.String
				if !coe.ReadASN1Element(&c, cbasn1.SEQUENCE) || !coe.Empty() {
					return nil, errors.New("bad certificate")
				}
				cert, err := x509.ParseCertificate(c)
				if err != nil {
					return nil, fmt.Errorf("certificate: %w", err)
				}
				cr.Cert = cert
			case tagC(1):
				cr.EncryptedCert = append([]byte{}, coe...)
			default:
				return nil, errors.New("bad certOrEncCert choice")
			}
			var pk cryptobyte.String
			if !ckp.ReadOptionalASN1(&pk, &present, tagC(0)) {
				return nil, errors.New("bad privateKey")
			}
			if present {
				cr.PrivateKey = append([]byte{}, pk...)
			}
			if !ckp.SkipOptionalASN1(tagC(1)) || !ckp.Empty() { // publicationInfo: ignored
				return nil, errors.New("bad CertifiedKeyPair")
			}
		}
		if !r.ReadOptionalASN1OctetString(&cr.RspInfo, &present, cbasn1.OCTET_STRING) || !r.Empty() {
			return nil, errors.New("bad CertResponse tail")
		}
		c.Responses = append(c.Responses, cr)
	}
	return c, nil
}

func parseRevReq(s *cryptobyte.String) (*RevReqContent, error) {
	var seq cryptobyte.String
	if !s.ReadASN1(&seq, cbasn1.SEQUENCE) {
		return nil, errors.New("bad RevReqContent")
	}
	r := &RevReqContent{}
	for !seq.Empty() {
		var d cryptobyte.String
		if !seq.ReadASN1(&d, cbasn1.SEQUENCE) {
			return nil, errors.New("bad RevDetails")
		}
		var rd RevDetails
		var tmpl cryptobyte.String
		if !d.ReadASN1Element(&tmpl, cbasn1.SEQUENCE) {
			return nil, errors.New("bad certDetails")
		}
		t, err := parseCertTemplate(tmpl, cbasn1.SEQUENCE)
		if err != nil {
			return nil, fmt.Errorf("certDetails: %w", err)
		}
		rd.CertDetails = t
		var exts cryptobyte.String
		var present bool
		if !d.ReadOptionalASN1(&exts, &present, cbasn1.SEQUENCE) || !d.Empty() {
			return nil, errors.New("bad crlEntryDetails")
		}
		if present {
			if rd.CRLEntryDetails, err = parseExtensions(exts); err != nil {
				return nil, fmt.Errorf("crlEntryDetails: %w", err)
			}
		}
		r.Requests = append(r.Requests, rd)
	}
	return r, nil
}

func parseRevRep(s *cryptobyte.String) (*RevRepContent, error) {
	var seq, sts cryptobyte.String
	if !s.ReadASN1(&seq, cbasn1.SEQUENCE) || !seq.ReadASN1(&sts, cbasn1.SEQUENCE) {
		return nil, errors.New("bad RevRepContent")
	}
	r := &RevRepContent{}
	for !sts.Empty() {
		st, err := parseStatusInfo(&sts)
		if err != nil {
			return nil, err
		}
		r.Status = append(r.Status, st)
	}
	var v cryptobyte.String
	var present bool
	if !seq.ReadOptionalASN1(&v, &present, tagC(0)) {
		return nil, errors.New("bad revCerts")
	}
	if present {
		var ids cryptobyte.String
		if !v.ReadASN1(&ids, cbasn1.SEQUENCE) || !v.Empty() {
			return nil, errors.New("bad revCerts")
		}
		for !ids.Empty() {
			id, err := parseCertID(&ids)
			if err != nil {
				return nil, err
			}
			r.RevCerts = append(r.RevCerts, id)
		}
	}
	if !seq.ReadOptionalASN1(&v, &present, tagC(1)) || !seq.Empty() {
		return nil, errors.New("bad crls")
	}
	if present {
		var crls cryptobyte.String
		if !v.ReadASN1(&crls, cbasn1.SEQUENCE) || !v.Empty() {
			return nil, errors.New("bad crls")
		}
		for !crls.Empty() {
			var c cryptobyte.String
			if !crls.ReadASN1Element(&c, cbasn1.SEQUENCE) {
				return nil, errors.New("bad CertificateList")
			}
			r.CRLs = append(r.CRLs, append([]byte{}, c...))
		}
	}
	return r, nil
}

func parseError(s *cryptobyte.String) (*ErrorContent, error) {
	var seq cryptobyte.String
	if !s.ReadASN1(&seq, cbasn1.SEQUENCE) {
		return nil, errors.New("bad ErrorMsgContent")
	}
	st, err := parseStatusInfo(&seq)
	if err != nil {
		return nil, err
	}
	e := &ErrorContent{Status: st}
	if seq.PeekASN1Tag(cbasn1.INTEGER) {
		var code int64
		if !seq.ReadASN1Integer(&code) {
			return nil, errors.New("bad errorCode")
		}
		e.ErrorCode = &code
	}
	if !seq.Empty() {
		if e.ErrorDetails, err = parseFreeText(&seq); err != nil {
			return nil, fmt.Errorf("errorDetails: %w", err)
		}
	}
	if !seq.Empty() {
		return nil, errTrailing
	}
	return e, nil
}

func parseCertConf(s *cryptobyte.String) (*CertConfirmContent, error) {
	var seq cryptobyte.String
	if !s.ReadASN1(&seq, cbasn1.SEQUENCE) {
		return nil, errors.New("bad CertConfirmContent")
	}
	c := &CertConfirmContent{}
	for !seq.Empty() {
		var e cryptobyte.String
		var cs CertStatus
		if !seq.ReadASN1(&e, cbasn1.SEQUENCE) ||
			!e.ReadASN1Bytes(&cs.CertHash, cbasn1.OCTET_STRING) || !e.ReadASN1Integer(&cs.CertReqID) {
			return nil, errors.New("bad CertStatus")
		}
		cs.CertHash = append([]byte{}, cs.CertHash...)
		if e.PeekASN1Tag(cbasn1.SEQUENCE) {
			st, err := parseStatusInfo(&e)
			if err != nil {
				return nil, err
			}
			cs.StatusInfo = &st
		}
		var v cryptobyte.String
		var present bool
		if !e.ReadOptionalASN1(&v, &present, tagC(0)) || !e.Empty() {
			return nil, errors.New("bad CertStatus tail")
		}
		if present {
			alg, err := parseAlgID(v)
			if err != nil {
				return nil, fmt.Errorf("hashAlg: %w", err)
			}
			cs.HashAlg = &alg
		}
		c.Statuses = append(c.Statuses, cs)
	}
	return c, nil
}

func parsePollReq(s *cryptobyte.String) (*PollReqContent, error) {
	var seq cryptobyte.String
	if !s.ReadASN1(&seq, cbasn1.SEQUENCE) {
		return nil, errors.New("bad PollReqContent")
	}
	p := &PollReqContent{}
	for !seq.Empty() {
		var e cryptobyte.String
		var id int64
		if !seq.ReadASN1(&e, cbasn1.SEQUENCE) || !e.ReadASN1Integer(&id) || !e.Empty() {
			return nil, errors.New("bad pollReq entry")
		}
		p.CertReqIDs = append(p.CertReqIDs, id)
	}
	return p, nil
}

func parsePollRep(s *cryptobyte.String) (*PollRepContent, error) {
	var seq cryptobyte.String
	if !s.ReadASN1(&seq, cbasn1.SEQUENCE) {
		return nil, errors.New("bad PollRepContent")
	}
	p := &PollRepContent{}
	for !seq.Empty() {
		var e cryptobyte.String
		var r PollRep
		if !seq.ReadASN1(&e, cbasn1.SEQUENCE) || !e.ReadASN1Integer(&r.CertReqID) || !e.ReadASN1Integer(&r.CheckAfter) {
			return nil, errors.New("bad pollRep entry")
		}
		if !e.Empty() {
			ft, err := parseFreeText(&e)
			if err != nil || !e.Empty() {
				return nil, errors.New("bad pollRep reason")
			}
			r.Reason = ft
		}
		p.Entries = append(p.Entries, r)
	}
	return p, nil
}
