package cmp

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"strings"
	"time"

	"coapca/errs"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Protocol versions (RFC 9810 §5.1.1 pvno).
const (
	PVNO2000 = 2 // cmp2000: the default
	PVNO2021 = 3 // cmp2021: only when a v3 feature is used (e.g. hashAlg in CertStatus)
)

// MaxMessageSize bounds what Parse accepts.
const MaxMessageSize = 1 << 20

// Message is a PKIMessage (RFC 9810 §5.1).
type Message struct {
	Header Header
	Body   Body
	// Protection is the PKIProtection BIT STRING content (nil when unprotected).
	Protection []byte
	// ExtraCerts are the extraCerts (RFC 9810 §5.1.4); with signature protection the
	// protection certificate comes first.
	ExtraCerts []*x509.Certificate

	// Raw is the whole DER of a parsed or marshaled message; RawHeader and RawBody are the
	// DER of the header and of the tagged body choice, over which protection is computed.
	Raw, RawHeader, RawBody []byte
}

// Header is a PKIHeader (RFC 9810 §5.1.1).
type Header struct {
	PVNO          int
	Sender        GeneralName
	Recipient     GeneralName
	MessageTime   time.Time // zero = absent
	ProtectionAlg *pkix.AlgorithmIdentifier
	SenderKID     []byte
	RecipKID      []byte
	TransactionID []byte
	SenderNonce   []byte
	RecipNonce    []byte
	FreeText      []string
	GeneralInfo   []InfoTypeAndValue
}

// InfoTypeAndValue is an ITAV (RFC 9810 §5.3.19). Value is the DER of infoValue, nil when absent.
type InfoTypeAndValue struct {
	Type  asn1.ObjectIdentifier
	Value []byte
}

// GeneralName is an RFC 5280 GeneralName kept as its DER (the context-tagged choice element).
type GeneralName struct {
	Raw []byte
}

// DirectoryName returns the directoryName [4] GeneralName for a DER-encoded Name
// (for example cert.RawSubject).
func DirectoryName(rawName []byte) GeneralName {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.Tag(4).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(rawName) })
	return GeneralName{Raw: b.BytesOrPanic()}
}

// NameGN returns the directoryName GeneralName for n.
func NameGN(n pkix.Name) GeneralName {
	der, err := asn1.Marshal(n.ToRDNSequence())
	if err != nil {
		return NullDN()
	}
	return DirectoryName(der)
}

// NullDN returns the directoryName with an empty Name, used when the sender or recipient is
// unknown (RFC 9810 §5.1.1, RFC 9483 §3.1).
func NullDN() GeneralName { return DirectoryName([]byte{0x30, 0x00}) }

// IsZero reports whether g is unset.
func (g GeneralName) IsZero() bool { return len(g.Raw) == 0 }

// Equal reports whether g and o have the same encoding.
func (g GeneralName) Equal(o GeneralName) bool { return bytes.Equal(g.Raw, o.Raw) }

// Directory returns the DER of the Name when g is a directoryName.
func (g GeneralName) Directory() ([]byte, bool) {
	s := cryptobyte.String(g.Raw)
	var inner cryptobyte.String
	if !s.ReadASN1(&inner, cbasn1.Tag(4).Constructed().ContextSpecific()) || !s.Empty() {
		return nil, false
	}
	var name cryptobyte.String
	if !inner.ReadASN1Element(&name, cbasn1.SEQUENCE) || !inner.Empty() {
		return nil, false
	}
	return name, true
}

// IsNullDN reports whether g is a directoryName with no RDNs.
func (g GeneralName) IsNullDN() bool {
	d, ok := g.Directory()
	return ok && len(d) == 2
}

// String renders a directoryName as an RFC 2253 string; other choices as their tag.
func (g GeneralName) String() string {
	if d, ok := g.Directory(); ok {
		var rdn pkix.RDNSequence
		if rest, err := asn1.Unmarshal(d, &rdn); err == nil && len(rest) == 0 {
			var n pkix.Name
			n.FillFromRDNSequence(&rdn)
			return n.String()
		}
	}
	if len(g.Raw) == 0 {
		return ""
	}
	return fmt.Sprintf("GeneralName[%d]", g.Raw[0]&0x1f)
}

var (
	errTrailing = errors.New("trailing data")
)

func tagC(n uint8) cbasn1.Tag { return cbasn1.Tag(n).Constructed().ContextSpecific() }
func tagP(n uint8) cbasn1.Tag { return cbasn1.Tag(n).ContextSpecific() }

// Parse decodes a DER PKIMessage (RFC 9810 §5.1). It does not check the protection.
// Errors are errs.BadRequest with PKIFailureInfo badDataFormat.
func Parse(der []byte) (*Message, error) {
	m, err := parse(der)
	if err != nil {
		// The peer sees one short line; the full parser error stays the cause (for the log).
		return nil, &FailureError{Info: FailBadDataFormat, cause: err,
			Err: errs.New(errs.BadRequest, "malformed PKIMessage: %s", strings.TrimPrefix(shortError(err), "cmp: "))}
	}
	return m, nil
}

func parse(der []byte) (*Message, error) { return parseDepth(der, 0) }

func parseDepth(der []byte, depth int) (*Message, error) {
	if len(der) > MaxMessageSize {
		return nil, fmt.Errorf("cmp: message of %d bytes exceeds %d", len(der), MaxMessageSize)
	}
	s := cryptobyte.String(der)
	var msg, rawMsg cryptobyte.String
	if !s.ReadASN1Element(&rawMsg, cbasn1.SEQUENCE) || !s.Empty() {
		return nil, errors.New("cmp: PKIMessage is not one DER SEQUENCE")
	}
	inner := rawMsg
	inner.ReadASN1(&msg, cbasn1.SEQUENCE)
	m := &Message{Raw: append([]byte(nil), rawMsg...)}
	var hdr cryptobyte.String
	if !msg.ReadASN1Element(&hdr, cbasn1.SEQUENCE) {
		return nil, errors.New("cmp: missing PKIHeader")
	}
	m.RawHeader = hdr
	if err := m.Header.parse(hdr); err != nil {
		return nil, fmt.Errorf("cmp: PKIHeader: %w", err)
	}
	var body cryptobyte.String
	var bodyTag cbasn1.Tag
	if !msg.ReadAnyASN1Element(&body, &bodyTag) {
		return nil, errors.New("cmp: missing PKIBody")
	}
	m.RawBody = body
	b, err := parseBody(body, bodyTag, depth)
	if err != nil {
		return nil, fmt.Errorf("cmp: PKIBody: %w", err)
	}
	m.Body = b
	var prot cryptobyte.String
	var present bool
	if !msg.ReadOptionalASN1(&prot, &present, tagC(0)) {
		return nil, errors.New("cmp: bad protection")
	}
	if present {
		var bs asn1.BitString
		if !prot.ReadASN1BitString(&bs) || !prot.Empty() || bs.BitLength%8 != 0 {
			return nil, errors.New("cmp: bad protection BIT STRING")
		}
		m.Protection = bs.Bytes
	}
	var extra cryptobyte.String
	if !msg.ReadOptionalASN1(&extra, &present, tagC(1)) {
		return nil, errors.New("cmp: bad extraCerts")
	}
	if present {
		certs, err := parseCertSeq(extra)
		if err != nil {
			return nil, fmt.Errorf("cmp: extraCerts: %w", err)
		}
		m.ExtraCerts = certs
	}
	if !msg.Empty() {
		return nil, fmt.Errorf("cmp: PKIMessage: %w", errTrailing)
	}
	return m, nil
}

// parseCertSeq parses "SEQUENCE OF CMPCertificate" given the outer element's content holder
// (the explicit tag's content, which is the SEQUENCE element).
func parseCertSeq(s cryptobyte.String) ([]*x509.Certificate, error) {
	var seq cryptobyte.String
	if !s.ReadASN1(&seq, cbasn1.SEQUENCE) || !s.Empty() {
		return nil, errors.New("not a SEQUENCE OF Certificate")
	}
	return parseCerts(seq)
}

// parseCerts parses concatenated Certificate elements.
func parseCerts(seq cryptobyte.String) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for !seq.Empty() {
		var c cryptobyte.String
		if !seq.ReadASN1Element(&c, cbasn1.SEQUENCE) {
			return nil, errors.New("bad certificate element")
		}
		cert, err := x509.ParseCertificate(c)
		if err != nil {
			return nil, err
		}
		out = append(out, cert)
	}
	return out, nil
}

func addCerts(b *cryptobyte.Builder, certs []*x509.Certificate) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		for _, c := range certs {
			b.AddBytes(c.Raw)
		}
	})
}

func (h *Header) parse(der cryptobyte.String) error {
	var s cryptobyte.String
	if !der.ReadASN1(&s, cbasn1.SEQUENCE) {
		return errors.New("not a SEQUENCE")
	}
	var pvno int64
	if !s.ReadASN1Integer(&pvno) || pvno < 0 || pvno > 100 {
		return errors.New("bad pvno")
	}
	h.PVNO = int(pvno)
	var gn cryptobyte.String
	var tag cbasn1.Tag
	if !s.ReadAnyASN1Element(&gn, &tag) || tag&0xc0 != 0x80 {
		return errors.New("bad sender")
	}
	h.Sender = GeneralName{Raw: append([]byte(nil), gn...)}
	if !s.ReadAnyASN1Element(&gn, &tag) || tag&0xc0 != 0x80 {
		return errors.New("bad recipient")
	}
	h.Recipient = GeneralName{Raw: append([]byte(nil), gn...)}
	var v cryptobyte.String
	var present bool
	if !s.ReadOptionalASN1(&v, &present, tagC(0)) {
		return errors.New("bad messageTime")
	}
	if present {
		if !v.ReadASN1GeneralizedTime(&h.MessageTime) || !v.Empty() {
			return errors.New("bad messageTime")
		}
	}
	if !s.ReadOptionalASN1(&v, &present, tagC(1)) {
		return errors.New("bad protectionAlg")
	}
	if present {
		alg, err := parseAlgID(v)
		if err != nil {
			return fmt.Errorf("protectionAlg: %w", err)
		}
		h.ProtectionAlg = &alg
	}
	octets := []*[]byte{&h.SenderKID, &h.RecipKID, &h.TransactionID, &h.SenderNonce, &h.RecipNonce}
	for i, p := range octets {
		if !s.ReadOptionalASN1(&v, &present, tagC(uint8(2+i))) {
			return fmt.Errorf("bad header field [%d]", 2+i)
		}
		if present {
			var o []byte
			if !v.ReadASN1Bytes(&o, cbasn1.OCTET_STRING) || !v.Empty() {
				return fmt.Errorf("bad header field [%d]", 2+i)
			}
			*p = append([]byte{}, o...)
		}
	}
	if !s.ReadOptionalASN1(&v, &present, tagC(7)) {
		return errors.New("bad freeText")
	}
	if present {
		ft, err := parseFreeText(&v)
		if err != nil || !v.Empty() {
			return errors.New("bad freeText")
		}
		h.FreeText = ft
	}
	if !s.ReadOptionalASN1(&v, &present, tagC(8)) {
		return errors.New("bad generalInfo")
	}
	if present {
		var seq cryptobyte.String
		if !v.ReadASN1(&seq, cbasn1.SEQUENCE) || !v.Empty() {
			return errors.New("bad generalInfo")
		}
		itavs, err := parseITAVs(seq)
		if err != nil {
			return fmt.Errorf("generalInfo: %w", err)
		}
		h.GeneralInfo = itavs
	}
	if !s.Empty() {
		return errTrailing
	}
	return nil
}

func (h *Header) marshal(b *cryptobyte.Builder) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		pvno := h.PVNO
		if pvno == 0 {
			pvno = PVNO2000
		}
		b.AddASN1Int64(int64(pvno))
		for _, g := range []GeneralName{h.Sender, h.Recipient} {
			if g.IsZero() {
				g = NullDN()
			}
			b.AddBytes(g.Raw)
		}
		if !h.MessageTime.IsZero() {
			b.AddASN1(tagC(0), func(b *cryptobyte.Builder) { b.AddASN1GeneralizedTime(h.MessageTime.UTC().Truncate(time.Second)) })
		}
		if h.ProtectionAlg != nil {
			b.AddASN1(tagC(1), func(b *cryptobyte.Builder) { addAlgID(b, *h.ProtectionAlg) })
		}
		for i, o := range [][]byte{h.SenderKID, h.RecipKID, h.TransactionID, h.SenderNonce, h.RecipNonce} {
			if o != nil {
				b.AddASN1(tagC(uint8(2+i)), func(b *cryptobyte.Builder) { b.AddASN1OctetString(o) })
			}
		}
		if len(h.FreeText) > 0 {
			b.AddASN1(tagC(7), func(b *cryptobyte.Builder) { addFreeText(b, h.FreeText) })
		}
		if len(h.GeneralInfo) > 0 {
			b.AddASN1(tagC(8), func(b *cryptobyte.Builder) { addITAVs(b, h.GeneralInfo) })
		}
	})
}

func parseAlgID(s cryptobyte.String) (pkix.AlgorithmIdentifier, error) {
	var el cryptobyte.String
	var alg pkix.AlgorithmIdentifier
	if !s.ReadASN1Element(&el, cbasn1.SEQUENCE) || !s.Empty() {
		return alg, errors.New("bad AlgorithmIdentifier")
	}
	return parseAlgIDElement(el)
}

func parseAlgIDElement(el []byte) (pkix.AlgorithmIdentifier, error) {
	var alg pkix.AlgorithmIdentifier
	rest, err := asn1.Unmarshal(el, &alg)
	if err != nil {
		return alg, fmt.Errorf("bad AlgorithmIdentifier: %w", err)
	}
	if len(rest) != 0 {
		return alg, errTrailing
	}
	return alg, nil
}

func addAlgID(b *cryptobyte.Builder, alg pkix.AlgorithmIdentifier) {
	der, err := asn1.Marshal(alg)
	if err != nil {
		b.SetError(err)
		return
	}
	b.AddBytes(der)
}

// parseFreeText parses a PKIFreeText element (SEQUENCE OF UTF8String).
func parseFreeText(s *cryptobyte.String) ([]string, error) {
	var seq cryptobyte.String
	if !s.ReadASN1(&seq, cbasn1.SEQUENCE) {
		return nil, errors.New("bad PKIFreeText")
	}
	out := []string{}
	for !seq.Empty() {
		var u []byte
		if !seq.ReadASN1Bytes(&u, cbasn1.UTF8String) {
			return nil, errors.New("bad UTF8String")
		}
		out = append(out, string(u))
	}
	return out, nil
}

func addFreeText(b *cryptobyte.Builder, ft []string) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		for _, t := range ft {
			b.AddASN1(cbasn1.UTF8String, func(b *cryptobyte.Builder) { b.AddBytes([]byte(t)) })
		}
	})
}

func parseITAVs(seq cryptobyte.String) ([]InfoTypeAndValue, error) {
	out := []InfoTypeAndValue{}
	for !seq.Empty() {
		var it cryptobyte.String
		if !seq.ReadASN1(&it, cbasn1.SEQUENCE) {
			return nil, errors.New("bad InfoTypeAndValue")
		}
		var itav InfoTypeAndValue
		if !it.ReadASN1ObjectIdentifier(&itav.Type) {
			return nil, errors.New("bad infoType")
		}
		if !it.Empty() {
			var val cryptobyte.String
			var tag cbasn1.Tag
			if !it.ReadAnyASN1Element(&val, &tag) || !it.Empty() {
				return nil, errors.New("bad infoValue")
			}
			itav.Value = append([]byte{}, val...)
		}
		out = append(out, itav)
	}
	return out, nil
}

func addITAVs(b *cryptobyte.Builder, itavs []InfoTypeAndValue) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		for _, it := range itavs {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1ObjectIdentifier(it.Type)
				if it.Value != nil {
					b.AddBytes(it.Value)
				}
			})
		}
	})
}

// Marshal encodes m. With p non-nil it first sets header.protectionAlg (and senderKID when
// empty), puts p's certificates at the front of extraCerts, and computes the protection over
// DER(ProtectedPart) (RFC 9810 §5.1.3); an unset sender becomes the protection cert's subject
// for signature protection. With p nil, m.Protection is written as it is (nil for
// an unprotected message; a parsed message re-encodes to its original DER).
// Raw, RawHeader, RawBody and Protection are updated.
func (m *Message) Marshal(p Protector) ([]byte, error) {
	if m.Body == nil {
		return nil, errors.New("cmp: marshal: no body")
	}
	if cc, ok := m.Body.(*CertConfirmContent); ok && m.Header.PVNO < PVNO2021 {
		for _, st := range cc.Statuses {
			if st.HashAlg != nil { // RFC 9810 §5.3.18: hashAlg only with cmp2021
				m.Header.PVNO = PVNO2021
			}
		}
	}
	if p != nil {
		alg, kid, err := p.params()
		if err != nil {
			return nil, fmt.Errorf("cmp: protection: %w", err)
		}
		m.Header.ProtectionAlg = &alg
		if m.Header.SenderKID == nil && kid != nil {
			m.Header.SenderKID = kid
		}
		m.ExtraCerts = mergeCerts(p.certs(), m.ExtraCerts)
		// RFC 9483 §3.1: with signature protection, sender is the subject of the protection cert.
		if sp, ok := p.(*SignatureProtection); ok && m.Header.Sender.IsZero() {
			m.Header.Sender = DirectoryName(sp.Cert.RawSubject)
		}
	}
	var hb cryptobyte.Builder
	m.Header.marshal(&hb)
	hdr, err := hb.Bytes()
	if err != nil {
		return nil, fmt.Errorf("cmp: marshal header: %w", err)
	}
	var bb cryptobyte.Builder
	bb.AddASN1(tagC(uint8(m.Body.Type())), func(b *cryptobyte.Builder) { m.Body.marshal(b) })
	body, err := bb.Bytes()
	if err != nil {
		return nil, fmt.Errorf("cmp: marshal %s body: %w", m.Body.Type(), err)
	}
	m.RawHeader, m.RawBody = hdr, body
	if p != nil {
		prot, err := p.protect(*m.Header.ProtectionAlg, protectedPart(hdr, body))
		if err != nil {
			return nil, fmt.Errorf("cmp: protect: %w", err)
		}
		m.Protection = prot
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(hdr)
		b.AddBytes(body)
		if m.Protection != nil {
			b.AddASN1(tagC(0), func(b *cryptobyte.Builder) { b.AddASN1BitString(m.Protection) })
		}
		if len(m.ExtraCerts) > 0 {
			b.AddASN1(tagC(1), func(b *cryptobyte.Builder) { addCerts(b, m.ExtraCerts) })
		}
	})
	out, err := b.Bytes()
	if err != nil {
		return nil, fmt.Errorf("cmp: marshal: %w", err)
	}
	m.Raw = out
	return out, nil
}

// protectedPart is DER(ProtectedPart ::= SEQUENCE { header PKIHeader, body PKIBody }).
func protectedPart(hdr, body []byte) []byte {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(hdr)
		b.AddBytes(body)
	})
	return b.BytesOrPanic()
}

func mergeCerts(first, rest []*x509.Certificate) []*x509.Certificate {
	var out []*x509.Certificate
	seen := map[string]bool{}
	for _, c := range append(append([]*x509.Certificate{}, first...), rest...) {
		if c == nil || seen[string(c.Raw)] {
			continue
		}
		seen[string(c.Raw)] = true
		out = append(out, c)
	}
	return out
}
