package cmp

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/subtle"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"time"

	"coapca/errs"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// CertTemplate is the CRMF CertTemplate (RFC 4211 §5); the module uses IMPLICIT tags, so
// Name fields (a CHOICE) keep an explicit wrapper. Absent fields are nil/zero.
type CertTemplate struct {
	Version      *int64
	SerialNumber *big.Int
	SigningAlg   *pkix.AlgorithmIdentifier
	Issuer       []byte // DER Name
	NotBefore    time.Time
	NotAfter     time.Time
	Subject      []byte // DER Name
	PublicKey    []byte // DER SubjectPublicKeyInfo
	Extensions   []pkix.Extension
}

// SetSubject sets Subject from n.
func (t *CertTemplate) SetSubject(n pkix.Name) error {
	der, err := asn1.Marshal(n.ToRDNSequence())
	if err != nil {
		return fmt.Errorf("cmp: subject: %w", err)
	}
	t.Subject = der
	return nil
}

// SetPublicKey sets PublicKey from pub.
func (t *CertTemplate) SetPublicKey(pub crypto.PublicKey) error {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return fmt.Errorf("cmp: public key: %w", err)
	}
	t.PublicKey = der
	return nil
}

// SubjectName parses Subject (zero Name when absent).
func (t *CertTemplate) SubjectName() (pkix.Name, error) { return parseName(t.Subject) }

// IssuerName parses Issuer (zero Name when absent).
func (t *CertTemplate) IssuerName() (pkix.Name, error) { return parseName(t.Issuer) }

func parseName(der []byte) (pkix.Name, error) {
	var n pkix.Name
	if der == nil {
		return n, nil
	}
	var rdn pkix.RDNSequence
	rest, err := asn1.Unmarshal(der, &rdn)
	if err != nil || len(rest) != 0 {
		return n, errors.New("cmp: bad Name")
	}
	n.FillFromRDNSequence(&rdn)
	return n, nil
}

// ParsePublicKey parses PublicKey.
func (t *CertTemplate) ParsePublicKey() (crypto.PublicKey, error) {
	if t.PublicKey == nil {
		return nil, errors.New("cmp: template has no publicKey")
	}
	pub, err := x509.ParsePKIXPublicKey(t.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("cmp: template publicKey: %w", err)
	}
	return pub, nil
}

func (t *CertTemplate) marshal(b *cryptobyte.Builder) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		if t.Version != nil {
			b.AddASN1Int64WithTag(*t.Version, tagP(0))
		}
		if t.SerialNumber != nil {
			b.AddASN1(tagP(1), func(b *cryptobyte.Builder) {
				var ib cryptobyte.Builder
				ib.AddASN1BigInt(t.SerialNumber)
				s := cryptobyte.String(ib.BytesOrPanic())
				var c cryptobyte.String
				s.ReadASN1(&c, cbasn1.INTEGER)
				b.AddBytes(c)
			})
		}
		if t.SigningAlg != nil {
			b.AddASN1(tagC(2), func(b *cryptobyte.Builder) { addAlgContent(b, *t.SigningAlg) })
		}
		if t.Issuer != nil {
			b.AddASN1(tagC(3), func(b *cryptobyte.Builder) { b.AddBytes(t.Issuer) })
		}
		if !t.NotBefore.IsZero() || !t.NotAfter.IsZero() {
			b.AddASN1(tagC(4), func(b *cryptobyte.Builder) {
				for i, tm := range []time.Time{t.NotBefore, t.NotAfter} {
					if !tm.IsZero() {
						b.AddASN1(tagC(uint8(i)), func(b *cryptobyte.Builder) { addTime(b, tm) })
					}
				}
			})
		}
		if t.Subject != nil {
			b.AddASN1(tagC(5), func(b *cryptobyte.Builder) { b.AddBytes(t.Subject) })
		}
		if t.PublicKey != nil {
			b.AddASN1(tagC(6), func(b *cryptobyte.Builder) { addContent(b, t.PublicKey) })
		}
		if len(t.Extensions) > 0 {
			addExtensions(b, tagC(9), t.Extensions)
		}
	})
}

// addContent writes the content octets of a DER element (for IMPLICIT retagging).
func addContent(b *cryptobyte.Builder, el []byte) {
	s := cryptobyte.String(el)
	var c cryptobyte.String
	var tag cbasn1.Tag
	if !s.ReadAnyASN1(&c, &tag) || !s.Empty() {
		b.SetError(errors.New("bad DER element"))
		return
	}
	b.AddBytes(c)
}

func addAlgContent(b *cryptobyte.Builder, alg pkix.AlgorithmIdentifier) {
	der, err := asn1.Marshal(alg)
	if err != nil {
		b.SetError(err)
		return
	}
	addContent(b, der)
}

// addTime writes an RFC 5280 Time: UTCTime through 2049, GeneralizedTime after.
func addTime(b *cryptobyte.Builder, t time.Time) {
	t = t.UTC().Truncate(time.Second)
	if t.Year() >= 1950 && t.Year() < 2050 {
		b.AddASN1UTCTime(t)
	} else {
		b.AddASN1GeneralizedTime(t)
	}
}

func readTime(s *cryptobyte.String, out *time.Time) bool {
	if s.PeekASN1Tag(cbasn1.UTCTime) {
		return s.ReadASN1UTCTime(out)
	}
	return s.ReadASN1GeneralizedTime(out)
}

func addExtensions(b *cryptobyte.Builder, tag cbasn1.Tag, exts []pkix.Extension) {
	b.AddASN1(tag, func(b *cryptobyte.Builder) {
		for _, e := range exts {
			der, err := asn1.Marshal(e)
			if err != nil {
				b.SetError(err)
				return
			}
			b.AddBytes(der)
		}
	})
}

// parseExtensions parses the content of an Extensions SEQUENCE.
func parseExtensions(s cryptobyte.String) ([]pkix.Extension, error) {
	var out []pkix.Extension
	for !s.Empty() {
		var el cryptobyte.String
		if !s.ReadASN1Element(&el, cbasn1.SEQUENCE) {
			return nil, errors.New("bad Extension")
		}
		var e pkix.Extension
		if rest, err := asn1.Unmarshal(el, &e); err != nil || len(rest) != 0 {
			return nil, errors.New("bad Extension")
		}
		out = append(out, e)
	}
	return out, nil
}

// parseCertTemplate parses a CertTemplate element carrying tag (SEQUENCE, or an implicit tag).
func parseCertTemplate(el cryptobyte.String, tag cbasn1.Tag) (CertTemplate, error) {
	var t CertTemplate
	var s, v cryptobyte.String
	var present bool
	if !el.ReadASN1(&s, tag) || !el.Empty() {
		return t, errors.New("bad CertTemplate")
	}
	if s.PeekASN1Tag(tagP(0)) {
		var ver int64
		if !s.ReadASN1Int64WithTag(&ver, tagP(0)) {
			return t, errors.New("bad version")
		}
		t.Version = &ver
	}
	if !s.ReadOptionalASN1(&v, &present, tagP(1)) {
		return t, errors.New("bad serialNumber")
	}
	if present {
		var ib cryptobyte.Builder
		ib.AddASN1(cbasn1.INTEGER, func(b *cryptobyte.Builder) { b.AddBytes(v) })
		is := cryptobyte.String(ib.BytesOrPanic())
		t.SerialNumber = new(big.Int)
		if !is.ReadASN1Integer(t.SerialNumber) {
			return t, errors.New("bad serialNumber")
		}
	}
	if !s.ReadOptionalASN1(&v, &present, tagC(2)) {
		return t, errors.New("bad signingAlg")
	}
	if present {
		var ab cryptobyte.Builder
		ab.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddBytes(v) })
		alg, err := parseAlgIDElement(ab.BytesOrPanic())
		if err != nil {
			return t, fmt.Errorf("signingAlg: %w", err)
		}
		t.SigningAlg = &alg
	}
	readName := func(n uint8, out *[]byte) error {
		if !s.ReadOptionalASN1(&v, &present, tagC(n)) {
			return fmt.Errorf("bad Name [%d]", n)
		}
		if present {
			var name cryptobyte.String
			if !v.ReadASN1Element(&name, cbasn1.SEQUENCE) || !v.Empty() {
				return fmt.Errorf("bad Name [%d]", n)
			}
			*out = append([]byte{}, name...)
		}
		return nil
	}
	if err := readName(3, &t.Issuer); err != nil {
		return t, err
	}
	if !s.ReadOptionalASN1(&v, &present, tagC(4)) {
		return t, errors.New("bad validity")
	}
	if present {
		for i, out := range []*time.Time{&t.NotBefore, &t.NotAfter} {
			var tv cryptobyte.String
			var p bool
			if !v.ReadOptionalASN1(&tv, &p, tagC(uint8(i))) {
				return t, errors.New("bad validity")
			}
			if p && (!readTime(&tv, out) || !tv.Empty()) {
				return t, errors.New("bad validity time")
			}
		}
		if !v.Empty() {
			return t, errors.New("bad validity")
		}
	}
	if err := readName(5, &t.Subject); err != nil {
		return t, err
	}
	if !s.ReadOptionalASN1(&v, &present, tagC(6)) {
		return t, errors.New("bad publicKey")
	}
	if present {
		var kb cryptobyte.Builder
		kb.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddBytes(v) })
		t.PublicKey = kb.BytesOrPanic()
	}
	// issuerUID [7] and subjectUID [8]: deprecated, ignored.
	if !s.SkipOptionalASN1(tagP(7)) || !s.SkipOptionalASN1(tagP(8)) {
		return t, errors.New("bad unique identifier")
	}
	if !s.ReadOptionalASN1(&v, &present, tagC(9)) {
		return t, errors.New("bad extensions")
	}
	if present {
		exts, err := parseExtensions(v)
		if err != nil {
			return t, err
		}
		t.Extensions = exts
	}
	if !s.Empty() {
		return t, fmt.Errorf("CertTemplate: %w", errTrailing)
	}
	return t, nil
}

// AttributeTypeAndValue is a CRMF control or regInfo entry; Value is the DER of the value.
type AttributeTypeAndValue struct {
	Type  asn1.ObjectIdentifier
	Value []byte
}

// POPKind is the ProofOfPossession choice (RFC 4211 §4).
type POPKind int

const (
	POPNone            POPKind = -1
	POPRAVerified      POPKind = 0
	POPSignature       POPKind = 1
	POPKeyEncipherment POPKind = 2
	POPKeyAgreement    POPKind = 3
)

// POPOSigningKey is the signature POP (RFC 4211 §4.1). Input is the DER of poposkInput
// (re-tagged as SEQUENCE) when present.
type POPOSigningKey struct {
	Input     []byte
	Algorithm pkix.AlgorithmIdentifier
	Signature []byte
}

// CertReqMsg is one CRMF certificate request (RFC 4211 §3).
type CertReqMsg struct {
	CertReqID int64
	Template  CertTemplate
	Controls  []AttributeTypeAndValue
	POPKind   POPKind         // POPNone when popo is absent
	POP       *POPOSigningKey // for POPSignature
	RegInfo   []AttributeTypeAndValue

	// RawCertReq is the DER of CertRequest, which a signature POP signs. Parse sets it;
	// NewCertReqMsg sets it; marshal re-encodes when nil.
	RawCertReq []byte
}

// OldCertID returns the oldCertID control (kur, RFC 4211 §6.5).
func (m *CertReqMsg) OldCertID() (CertID, bool) {
	for _, c := range m.Controls {
		if c.Type.Equal(OIDRegCtrlOldCertID) {
			s := cryptobyte.String(c.Value)
			id, err := parseCertID(&s)
			if err == nil && s.Empty() {
				return id, true
			}
		}
	}
	return CertID{}, false
}

func (m *CertReqMsg) certRequestDER() ([]byte, error) {
	if m.RawCertReq != nil {
		return m.RawCertReq, nil
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1Int64(m.CertReqID)
		m.Template.marshal(b)
		if len(m.Controls) > 0 {
			addATVs(b, m.Controls)
		}
	})
	return b.Bytes()
}

func addATVs(b *cryptobyte.Builder, atvs []AttributeTypeAndValue) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		for _, a := range atvs {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1ObjectIdentifier(a.Type)
				b.AddBytes(a.Value)
			})
		}
	})
}

func parseATVs(s cryptobyte.String) ([]AttributeTypeAndValue, error) {
	var out []AttributeTypeAndValue
	for !s.Empty() {
		var e, v cryptobyte.String
		var a AttributeTypeAndValue
		var tag cbasn1.Tag
		if !s.ReadASN1(&e, cbasn1.SEQUENCE) || !e.ReadASN1ObjectIdentifier(&a.Type) ||
			!e.ReadAnyASN1Element(&v, &tag) || !e.Empty() {
			return nil, errors.New("bad AttributeTypeAndValue")
		}
		a.Value = append([]byte{}, v...)
		out = append(out, a)
	}
	return out, nil
}

func (m *CertReqMsg) marshal(b *cryptobyte.Builder) {
	cr, err := m.certRequestDER()
	if err != nil {
		b.SetError(err)
		return
	}
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(cr)
		switch m.POPKind {
		case POPNone:
		case POPRAVerified:
			b.AddASN1(tagP(0), func(*cryptobyte.Builder) {})
		case POPSignature:
			if m.POP == nil {
				b.SetError(errors.New("signature POP without POPOSigningKey"))
				return
			}
			b.AddASN1(tagC(1), func(b *cryptobyte.Builder) {
				if m.POP.Input != nil {
					b.AddASN1(tagC(0), func(b *cryptobyte.Builder) { addContent(b, m.POP.Input) })
				}
				addAlgID(b, m.POP.Algorithm)
				b.AddASN1BitString(m.POP.Signature)
			})
		default:
			b.SetError(fmt.Errorf("POP kind %d not supported for encoding", m.POPKind))
		}
		if len(m.RegInfo) > 0 {
			addATVs(b, m.RegInfo)
		}
	})
}

func parseCertReqMsg(s *cryptobyte.String) (CertReqMsg, error) {
	m := CertReqMsg{POPKind: POPNone}
	var msg, cr, crBody cryptobyte.String
	if !s.ReadASN1(&msg, cbasn1.SEQUENCE) || !msg.ReadASN1Element(&cr, cbasn1.SEQUENCE) {
		return m, errors.New("bad CertReqMsg")
	}
	m.RawCertReq = append([]byte{}, cr...)
	if !cr.ReadASN1(&crBody, cbasn1.SEQUENCE) || !crBody.ReadASN1Integer(&m.CertReqID) {
		return m, errors.New("bad CertRequest")
	}
	var tmpl cryptobyte.String
	if !crBody.ReadASN1Element(&tmpl, cbasn1.SEQUENCE) {
		return m, errors.New("bad certTemplate")
	}
	t, err := parseCertTemplate(tmpl, cbasn1.SEQUENCE)
	if err != nil {
		return m, fmt.Errorf("certTemplate: %w", err)
	}
	m.Template = t
	var v cryptobyte.String
	var present bool
	if !crBody.ReadOptionalASN1(&v, &present, cbasn1.SEQUENCE) || !crBody.Empty() {
		return m, errors.New("bad controls")
	}
	if present {
		if m.Controls, err = parseATVs(v); err != nil {
			return m, fmt.Errorf("controls: %w", err)
		}
	}
	var tag cbasn1.Tag
	if !msg.Empty() && !msg.PeekASN1Tag(cbasn1.SEQUENCE) {
		if !msg.ReadAnyASN1(&v, &tag) {
			return m, errors.New("bad popo")
		}
		switch tag {
		case tagP(0), tagC(0):
			m.POPKind = POPRAVerified
		case tagC(1):
			m.POPKind = POPSignature
			pop := &POPOSigningKey{}
			var in cryptobyte.String
			if !v.ReadOptionalASN1(&in, &present, tagC(0)) {
				return m, errors.New("bad poposkInput")
			}
			if present {
				var ib cryptobyte.Builder
				ib.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddBytes(in) })
				pop.Input = ib.BytesOrPanic()
			}
			var alg cryptobyte.String
			var sig asn1.BitString
			if !v.ReadASN1Element(&alg, cbasn1.SEQUENCE) || !v.ReadASN1BitString(&sig) || !v.Empty() || sig.BitLength%8 != 0 {
				return m, errors.New("bad POPOSigningKey")
			}
			if pop.Algorithm, err = parseAlgIDElement(alg); err != nil {
				return m, err
			}
			pop.Signature = sig.Bytes
			m.POP = pop
		case tagC(2):
			m.POPKind = POPKeyEncipherment
		case tagC(3):
			m.POPKind = POPKeyAgreement
		default:
			return m, errors.New("unknown popo choice")
		}
	}
	if !msg.ReadOptionalASN1(&v, &present, cbasn1.SEQUENCE) || !msg.Empty() {
		return m, errors.New("bad regInfo")
	}
	if present {
		if m.RegInfo, err = parseATVs(v); err != nil {
			return m, fmt.Errorf("regInfo: %w", err)
		}
	}
	return m, nil
}

// NewCertReqMsg builds a request for tmpl. With signer non-nil it adds a signature POP over
// DER(CertRequest) (RFC 4211 §4.1 case where poposkInput is absent: the template carries
// subject and publicKey); tmpl.PublicKey defaults to signer's public key.
func NewCertReqMsg(id int64, tmpl CertTemplate, controls []AttributeTypeAndValue, signer crypto.Signer) (CertReqMsg, error) {
	m := CertReqMsg{CertReqID: id, Template: tmpl, Controls: controls, POPKind: POPNone}
	if signer != nil && m.Template.PublicKey == nil {
		if err := m.Template.SetPublicKey(signer.Public()); err != nil {
			return m, err
		}
	}
	cr, err := m.certRequestDER()
	if err != nil {
		return m, fmt.Errorf("cmp: CertRequest: %w", err)
	}
	m.RawCertReq = cr
	if signer == nil {
		return m, nil
	}
	alg, sig, err := sign(signer, cr)
	if err != nil {
		return m, fmt.Errorf("cmp: POP: %w", err)
	}
	m.POPKind = POPSignature
	m.POP = &POPOSigningKey{Algorithm: alg, Signature: sig}
	return m, nil
}

// POPAuth is what the verifier of a proof of possession knows about the authenticated
// requester; VerifyPOP checks the authInfo of poposkInput against it (RFC 4211 §4.1).
type POPAuth struct {
	// Sender is the DER Name that the request's protection authenticated (the subject of the
	// signature-protection certificate); nil when the request was not signature-protected.
	Sender []byte
	// Secret is the shared secret that MAC-protected the request; nil when it was not.
	Secret []byte
	// Limits bound the parameters of a publicKeyMAC (zero value = defaults).
	Limits MACLimits
}

// VerifyPOP checks a signature proof of possession (RFC 4211 §4.1, RFC 9483 §4.1.1) and
// returns the DER SubjectPublicKeyInfo whose possession it proved: a certificate may be issued
// for that key and no other.
//
//   - Without poposkInput the signature is over DER(certReq) and verifies with the template's
//     publicKey, which must be present.
//   - With poposkInput (RFC 4211 §4.1: only when the template lacks subject or publicKey) its
//     publicKey MUST be exactly the template's when the template has one; its authInfo must be
//     the authenticated sender (a.Sender) or a publicKeyMAC over publicKey that verifies with
//     the request's shared secret (a.Secret); the signature is over DER(poposkInput).
//
// Other POP kinds are refused here: raVerified is the caller's decision (RFC 4211 §4: only an
// RA the CA trusts may assert it), keyEncipherment and keyAgreement are not supported. Errors
// are errs.BadRequest with PKIFailureInfo badPOP.
func (m *CertReqMsg) VerifyPOP(a POPAuth) ([]byte, error) {
	spki, err := m.verifyPOP(a)
	if err != nil {
		return nil, failure(errs.BadRequest, FailBadPOP, err)
	}
	return spki, nil
}

func (m *CertReqMsg) verifyPOP(a POPAuth) ([]byte, error) {
	if m.POPKind != POPSignature || m.POP == nil {
		return nil, fmt.Errorf("cmp: POP kind %d is not a signature", m.POPKind)
	}
	t := &m.Template
	if m.POP.Input == nil {
		if t.PublicKey == nil {
			return nil, errors.New("cmp: POP: the template has no publicKey and there is no poposkInput")
		}
		data, err := m.certRequestDER()
		if err != nil {
			return nil, err
		}
		if err := verifySPKISignature(t.PublicKey, m.POP.Algorithm, data, m.POP.Signature); err != nil {
			return nil, err
		}
		return t.PublicKey, nil
	}
	// RFC 4211 §4.1: "If the CertReqMsg certReq CertTemplate contains the subject and
	// publicKey values, then poposkInput MUST be omitted".
	if t.Subject != nil && t.PublicKey != nil {
		return nil, errors.New("cmp: poposkInput present although the template has subject and publicKey")
	}
	// POPOSigningKeyInput ::= SEQUENCE { authInfo CHOICE { sender [0] GeneralName,
	// publicKeyMAC PKMACValue }, publicKey SubjectPublicKeyInfo }
	s := cryptobyte.String(m.POP.Input)
	var in, auth, spki cryptobyte.String
	var tag cbasn1.Tag
	if !s.ReadASN1(&in, cbasn1.SEQUENCE) || !s.Empty() || !in.ReadAnyASN1Element(&auth, &tag) ||
		!in.ReadASN1Element(&spki, cbasn1.SEQUENCE) || !in.Empty() {
		return nil, errors.New("cmp: bad poposkInput")
	}
	// RFC 4211 §4.1: publicKey "MUST be exactly the same value as contained in the
	// certificate template" when the template has one.
	if t.PublicKey != nil && !bytes.Equal(spki, t.PublicKey) {
		return nil, errors.New("cmp: the publicKey of poposkInput is not the template's")
	}
	switch tag {
	case tagC(0):
		// sender: "used only if an authenticated identity has been established for the
		// sender": it must be the identity the message protection authenticated.
		var gn cryptobyte.String
		var gtag cbasn1.Tag
		var inner cryptobyte.String
		if !auth.ReadASN1(&inner, tagC(0)) || !inner.ReadAnyASN1Element(&gn, &gtag) || !inner.Empty() {
			return nil, errors.New("cmp: bad poposkInput sender")
		}
		dn, ok := GeneralName{Raw: gn}.Directory()
		if !ok || a.Sender == nil || !bytes.Equal(dn, a.Sender) {
			return nil, errors.New("cmp: the poposkInput sender is not the authenticated requester")
		}
	case cbasn1.SEQUENCE:
		// publicKeyMAC: a password-based MAC over DER(publicKey) with the shared secret
		// (RFC 4211 §4.1, §4.4).
		if a.Secret == nil {
			return nil, errors.New("cmp: poposkInput publicKeyMAC, but the request is not protected by a shared secret")
		}
		var pk, algEl cryptobyte.String
		var val asn1.BitString
		if !auth.ReadASN1(&pk, cbasn1.SEQUENCE) || !pk.ReadASN1Element(&algEl, cbasn1.SEQUENCE) ||
			!pk.ReadASN1BitString(&val) || !pk.Empty() || val.BitLength%8 != 0 {
			return nil, errors.New("cmp: bad PKMACValue")
		}
		alg, err := parseAlgIDElement(algEl)
		if err != nil {
			return nil, fmt.Errorf("cmp: PKMACValue: %w", err)
		}
		want, err := macProtectLimited(alg, a.Secret, spki, a.Limits)
		if err != nil {
			return nil, fmt.Errorf("cmp: publicKeyMAC: %w", err)
		}
		if subtle.ConstantTimeCompare(want, val.Bytes) != 1 {
			return nil, errors.New("cmp: publicKeyMAC does not verify with the shared secret")
		}
	default:
		return nil, errors.New("cmp: bad poposkInput authInfo")
	}
	if err := verifySPKISignature(spki, m.POP.Algorithm, m.POP.Input, m.POP.Signature); err != nil {
		return nil, err
	}
	return append([]byte(nil), spki...), nil
}

func verifySPKISignature(spki []byte, alg pkix.AlgorithmIdentifier, data, sig []byte) error {
	pub, err := x509.ParsePKIXPublicKey(spki)
	if err != nil {
		return fmt.Errorf("cmp: POP public key: %w", err)
	}
	if err := verifySignature(pub, alg, data, sig); err != nil {
		return fmt.Errorf("cmp: POP: %w", err)
	}
	return nil
}

// NewPublicKeyMAC returns the PKMACValue authInfo of a poposkInput (RFC 4211 §4.1): a
// PasswordBasedMac with secret over spki, the DER SubjectPublicKeyInfo.
func NewPublicKeyMAC(secret, spki []byte, p *PBMProtection) ([]byte, error) {
	if p == nil {
		p = &PBMProtection{}
	}
	pp := *p
	pp.Secret = secret
	alg, _, err := pp.params()
	if err != nil {
		return nil, err
	}
	v, err := macProtect(alg, secret, spki)
	if err != nil {
		return nil, err
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		addAlgID(b, alg)
		b.AddASN1BitString(v)
	})
	return b.Bytes()
}

// NewPOPOSigningKeyInput returns the DER poposkInput (RFC 4211 §4.1) for spki with authInfo,
// which is either the DER of a PKMACValue (NewPublicKeyMAC) or, with sender set, the
// authenticated sender name.
func NewPOPOSigningKeyInput(sender *GeneralName, publicKeyMAC, spki []byte) ([]byte, error) {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		if sender != nil {
			b.AddASN1(tagC(0), func(b *cryptobyte.Builder) { b.AddBytes(sender.Raw) })
		} else {
			b.AddBytes(publicKeyMAC)
		}
		b.AddBytes(spki)
	})
	return b.Bytes()
}

// SignPOPOSigningKeyInput sets m's POP to a signature by signer over input (a
// NewPOPOSigningKeyInput value).
func (m *CertReqMsg) SignPOPOSigningKeyInput(signer crypto.Signer, input []byte) error {
	alg, sig, err := sign(signer, input)
	if err != nil {
		return fmt.Errorf("cmp: POP: %w", err)
	}
	m.POPKind = POPSignature
	m.POP = &POPOSigningKey{Input: input, Algorithm: alg, Signature: sig}
	return nil
}

// randomBytes returns n random octets.
func randomBytes(n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	return b, nil
}
