package edhoc

import (
	"bytes"
	"crypto/ecdh"
	"errors"
	"fmt"
)

// Method is the EDHOC authentication method (RFC 9528 §3.2, Table 2).
type Method int

// Methods: the Initiator's then the Responder's authentication key type.
const (
	MethodSigSig Method = 0 // Initiator signature, Responder signature
	MethodSigDH  Method = 1 // Initiator signature, Responder static DH
	MethodDHSig  Method = 2 // Initiator static DH, Responder signature
	MethodDHDH   Method = 3 // Initiator static DH, Responder static DH
)

func (m Method) valid() bool { return m >= 0 && m <= 3 }

// InitiatorSigns reports whether the Initiator authenticates with a signature key.
func (m Method) InitiatorSigns() bool { return m == MethodSigSig || m == MethodSigDH }

// ResponderSigns reports whether the Responder authenticates with a signature key.
func (m Method) ResponderSigns() bool { return m == MethodSigSig || m == MethodDHSig }

// EAD is one External Authorization Data item (RFC 9528 §3.8): ead_label and an optional
// ead_value. A negative label marks a critical item; label 0 is padding.
type EAD struct {
	Label int64
	Value []byte // nil = no ead_value
}

// Critical reports whether the item must be understood by the recipient (§3.8).
func (e EAD) Critical() bool { return e.Label < 0 }

func appendEAD(b []byte, items []EAD) []byte {
	for _, e := range items {
		b = appendInt(b, e.Label)
		if e.Value != nil {
			b = appendBstr(b, e.Value)
		}
	}
	return b
}

// readEAD reads the EAD items that end a CBOR sequence (§3.8: ead = (ead_label: int, ? ead_value: bstr)).
func (r *reader) readEAD() ([]EAD, error) {
	var out []EAD
	for !r.empty() {
		l, err := r.readInt()
		if err != nil {
			return nil, fmt.Errorf("EAD label: %w", err)
		}
		e := EAD{Label: l}
		if !r.empty() {
			v, n, err := r.peek()
			if err != nil {
				return nil, fmt.Errorf("EAD value: %w", err)
			}
			if s, ok := v.([]byte); ok {
				e.Value = bytes.Clone(s)
				r.rest = r.rest[n:]
			}
		}
		out = append(out, e)
	}
	return out, nil
}

// ErrMalformed marks a message that does not follow the CDDL of RFC 9528 §5 or that is not
// deterministically encoded. errors.Is works on every decoder error.
var ErrMalformed = errors.New("edhoc: malformed message")

func malformed(what string, err error) error {
	if err == nil {
		return fmt.Errorf("%w: %s", ErrMalformed, what)
	}
	return fmt.Errorf("%w: %s: %v", ErrMalformed, what, err)
}

// Message1 is the content of message_1 (RFC 9528 §5.2.1):
// message_1 = (METHOD: int, SUITES_I: suites, G_X: bstr, C_I: bstr / -24..23, ? EAD_1).
type Message1 struct {
	Method Method
	// SuitesI lists the Initiator's suites in order of preference, truncated after the
	// selected suite, which is the last element (§5.2.2).
	SuitesI []Suite
	GX      []byte
	CI      []byte // raw connection identifier
	EAD     []EAD
}

// Selected returns the selected cipher suite (the last of SUITES_I).
func (m *Message1) Selected() Suite { return m.SuitesI[len(m.SuitesI)-1] }

// Marshal encodes message_1.
func (m *Message1) Marshal() []byte {
	b := appendInt(nil, int64(m.Method))
	b = appendSuites(b, m.SuitesI)
	b = appendBstr(b, m.GX)
	b = appendIDBytes(b, m.CI)
	return appendEAD(b, m.EAD)
}

// appendSuites encodes SUITES_I / SUITES_R: an int when there is one suite, an array otherwise.
func appendSuites(b []byte, s []Suite) []byte {
	if len(s) == 1 {
		return appendInt(b, int64(s[0]))
	}
	return appendCBOR(b, s)
}

// readSuites reads suites = [2* int] / int (§5.2.1, §6.3.1). An array of one suite is
// rejected (RFC 9529 §4: "81 02" for SUITES_I = 2).
func (r *reader) readSuites() ([]Suite, error) {
	v, _, err := r.next()
	if err != nil {
		return nil, err
	}
	if i, ok, err := asInt(v); ok {
		if err != nil {
			return nil, err
		}
		return []Suite{Suite(i)}, nil
	}
	arr, ok := v.([]any)
	if !ok {
		return nil, errors.New("suites is neither int nor array")
	}
	if len(arr) < 2 {
		return nil, errors.New("array of fewer than two suites must be encoded as int")
	}
	out := make([]Suite, len(arr))
	for i, x := range arr {
		s, err := intValue(x)
		if err != nil {
			return nil, err
		}
		out[i] = Suite(s)
	}
	return out, nil
}

// ParseMessage1 decodes message_1 and checks the encoding of G_X for the selected suite when
// that suite is known (length for every registered suite; for implemented suites, a valid
// curve point: §9.2). It does not decide whether the suite is acceptable: that is
// Responder.ProcessMessage1's job.
func ParseMessage1(b []byte) (*Message1, error) {
	m, _, err := parseMessage1(b)
	return m, err
}

// parseMessage1 also returns the decoded G_X when the selected suite is implemented.
func parseMessage1(b []byte) (*Message1, *ecdh.PublicKey, error) {
	r := &reader{rest: b}
	method, err := r.readInt()
	if err != nil {
		return nil, nil, malformed("message_1 METHOD", err)
	}
	suites, err := r.readSuites()
	if err != nil {
		return nil, nil, malformed("message_1 SUITES_I", err)
	}
	gx, err := r.readBstr()
	if err != nil {
		return nil, nil, malformed("message_1 G_X", err)
	}
	ci, err := r.readIDBytes()
	if err != nil {
		return nil, nil, malformed("message_1 C_I", err)
	}
	ead, err := r.readEAD()
	if err != nil {
		return nil, nil, malformed("message_1 EAD_1", err)
	}
	m := &Message1{Method: Method(method), SuitesI: suites, GX: bytes.Clone(gx), CI: bytes.Clone(ci), EAD: ead}
	sel := m.Selected()
	if n, ok := ephemeralKeyLen(sel); ok && len(gx) != n {
		return nil, nil, malformed(fmt.Sprintf("message_1 G_X: %d bytes, suite %d needs %d", len(gx), sel, n), nil)
	}
	var gxKey *ecdh.PublicKey
	if p, err := params(sel); err == nil {
		if gxKey, err = p.decodePublic(gx, true); err != nil {
			return nil, nil, malformed("message_1 G_X", err)
		}
	}
	return m, gxKey, nil
}

// ParseMessage2 decodes message_2 = (G_Y_CIPHERTEXT_2: bstr) (§5.3.1) and splits it into G_Y
// (validated for the suite) and CIPHERTEXT_2.
func ParseMessage2(b []byte, suite Suite) (gy, ciphertext2 []byte, err error) {
	p, err := params(suite)
	if err != nil {
		return nil, nil, err
	}
	gy, ciphertext2, err = parseMessage2(b, 32)
	if err != nil {
		return nil, nil, err
	}
	if _, err := p.decodePublic(gy, true); err != nil {
		return nil, nil, malformed("message_2 G_Y", err)
	}
	return gy, ciphertext2, nil
}

func parseMessage2(b []byte, gLen int) (gy, ct []byte, err error) {
	r := &reader{rest: b}
	v, err := r.readBstr()
	if err != nil {
		return nil, nil, malformed("message_2", err)
	}
	if !r.empty() {
		return nil, nil, malformed("message_2: more than one element in the CBOR sequence", nil)
	}
	if len(v) <= gLen {
		return nil, nil, malformed("message_2: G_Y_CIPHERTEXT_2 too short", nil)
	}
	return v[:gLen], v[gLen:], nil
}

// ParseMessage3 decodes message_3 = (CIPHERTEXT_3: bstr) (§5.4.1).
func ParseMessage3(b []byte) ([]byte, error) { return parseBstrMessage("message_3", b) }

// ParseMessage4 decodes message_4 = (CIPHERTEXT_4: bstr) (§5.5.1).
func ParseMessage4(b []byte) ([]byte, error) { return parseBstrMessage("message_4", b) }

// parseBstrMessage decodes message_3 / message_4 = (CIPHERTEXT: bstr) (§5.4.1, §5.5.1).
func parseBstrMessage(name string, b []byte) ([]byte, error) {
	r := &reader{rest: b}
	v, err := r.readBstr()
	if err != nil {
		return nil, malformed(name, err)
	}
	if !r.empty() {
		return nil, malformed(name+": more than one element in the CBOR sequence", nil)
	}
	return v, nil
}

// readIDCredCompact reads ID_CRED_x in PLAINTEXT_2/3 (§3.5.3.2): a map, or the compact kid
// (bstr / -24..23). A map holding nothing but a kid is rejected: it must be sent compact.
func (r *reader) readIDCredCompact() (*IDCred, error) {
	v, n, err := r.peek()
	if err != nil {
		return nil, err
	}
	if m, ok := v.(map[any]any); ok {
		raw := r.rest[:n]
		r.rest = r.rest[n:]
		id, err := idCredFromMap(m, raw)
		if err != nil {
			return nil, err
		}
		if id.onlyKid() {
			return nil, errors.New("ID_CRED with only kid must use the compact encoding")
		}
		return id, nil
	}
	kid, err := r.readIDBytes()
	if err != nil {
		return nil, err
	}
	id := IDCredKid(kid)
	return &id, nil
}

func appendIDCredCompact(b []byte, id *IDCred) []byte {
	if id.onlyKid() {
		return appendIDBytes(b, id.Kid)
	}
	return append(b, id.Raw...)
}

// Plaintext2 is PLAINTEXT_2 = (C_R, ID_CRED_R / bstr / -24..23, Signature_or_MAC_2: bstr, ? EAD_2) (§5.3.2).
type Plaintext2 struct {
	CR       []byte
	IDCredR  *IDCred
	SigOrMAC []byte
	EAD      []EAD
}

func (p *Plaintext2) marshal() []byte {
	b := appendIDBytes(nil, p.CR)
	b = appendIDCredCompact(b, p.IDCredR)
	b = appendBstr(b, p.SigOrMAC)
	return appendEAD(b, p.EAD)
}

// ParsePlaintext2 decodes PLAINTEXT_2; sigLen is the exact length Signature_or_MAC_2 must have
// for the method and suite (§5.3.2; RFC 9529 §4: a 4-byte MAC is invalid).
func ParsePlaintext2(b []byte, sigLen int) (*Plaintext2, error) {
	r := &reader{rest: b}
	cr, err := r.readIDBytes()
	if err != nil {
		return nil, malformed("PLAINTEXT_2 C_R", err)
	}
	id, err := r.readIDCredCompact()
	if err != nil {
		return nil, malformed("PLAINTEXT_2 ID_CRED_R", err)
	}
	sig, err := r.readBstr()
	if err != nil {
		return nil, malformed("PLAINTEXT_2 Signature_or_MAC_2", err)
	}
	if len(sig) != sigLen {
		return nil, malformed(fmt.Sprintf("PLAINTEXT_2 Signature_or_MAC_2 is %d bytes, want %d", len(sig), sigLen), nil)
	}
	ead, err := r.readEAD()
	if err != nil {
		return nil, malformed("PLAINTEXT_2 EAD_2", err)
	}
	return &Plaintext2{CR: bytes.Clone(cr), IDCredR: id, SigOrMAC: bytes.Clone(sig), EAD: ead}, nil
}

// Plaintext3 is PLAINTEXT_3 = (ID_CRED_I / bstr / -24..23, Signature_or_MAC_3: bstr, ? EAD_3) (§5.4.2).
type Plaintext3 struct {
	IDCredI  *IDCred
	SigOrMAC []byte
	EAD      []EAD
}

func (p *Plaintext3) marshal() []byte {
	b := appendIDCredCompact(nil, p.IDCredI)
	b = appendBstr(b, p.SigOrMAC)
	return appendEAD(b, p.EAD)
}

// ParsePlaintext3 decodes PLAINTEXT_3; sigLen as for ParsePlaintext2.
func ParsePlaintext3(b []byte, sigLen int) (*Plaintext3, error) {
	r := &reader{rest: b}
	id, err := r.readIDCredCompact()
	if err != nil {
		return nil, malformed("PLAINTEXT_3 ID_CRED_I", err)
	}
	sig, err := r.readBstr()
	if err != nil {
		return nil, malformed("PLAINTEXT_3 Signature_or_MAC_3", err)
	}
	if len(sig) != sigLen {
		return nil, malformed(fmt.Sprintf("PLAINTEXT_3 Signature_or_MAC_3 is %d bytes, want %d", len(sig), sigLen), nil)
	}
	ead, err := r.readEAD()
	if err != nil {
		return nil, malformed("PLAINTEXT_3 EAD_3", err)
	}
	return &Plaintext3{IDCredI: id, SigOrMAC: bytes.Clone(sig), EAD: ead}, nil
}

// ParsePlaintext4 decodes PLAINTEXT_4 = (? EAD_4) (§5.5.2).
func ParsePlaintext4(b []byte) ([]EAD, error) {
	r := &reader{rest: b}
	ead, err := r.readEAD()
	if err != nil {
		return nil, malformed("PLAINTEXT_4 EAD_4", err)
	}
	return ead, nil
}

// Error codes (RFC 9528 §6, Table 3).
const (
	ErrCodeSuccess           = 0
	ErrCodeUnspecified       = 1
	ErrCodeWrongSuite        = 2
	ErrCodeUnknownCredential = 3
)

// ErrorMessage is an EDHOC error message (RFC 9528 §6): error = (ERR_CODE: int, ERR_INFO: any).
// It is also the error returned when the peer sent one.
type ErrorMessage struct {
	Code int
	// Diagnostic is ERR_INFO for ERR_CODE 1 (a text string, §6.2).
	Diagnostic string
	// SuitesR is ERR_INFO for ERR_CODE 2 (§6.3): the suites the Responder supports.
	SuitesR []Suite
	// Info is the raw ERR_INFO for other codes.
	Info []byte
}

func (e *ErrorMessage) Error() string {
	switch e.Code {
	case ErrCodeUnspecified:
		return fmt.Sprintf("edhoc: peer error: %s", e.Diagnostic)
	case ErrCodeWrongSuite:
		return fmt.Sprintf("edhoc: peer error: wrong selected cipher suite, peer supports %v", e.SuitesR)
	case ErrCodeUnknownCredential:
		return "edhoc: peer error: unknown credential referenced"
	}
	return fmt.Sprintf("edhoc: peer error code %d", e.Code)
}

// Marshal encodes the error message.
func (e *ErrorMessage) Marshal() []byte {
	b := appendInt(nil, int64(e.Code))
	switch e.Code {
	case ErrCodeUnspecified:
		return appendTstr(b, e.Diagnostic)
	case ErrCodeWrongSuite:
		return appendSuites(b, e.SuitesR)
	case ErrCodeUnknownCredential:
		return appendCBOR(b, true) // §6.4
	}
	if e.Info != nil {
		return append(b, e.Info...)
	}
	return b
}

// IsErrorMessage reports whether b starts like an error message (an int where message_2 and
// message_4 have a bstr; RFC 9528 §6).
func IsErrorMessage(b []byte) bool {
	v, _, err := (&reader{rest: b}).peek()
	return err == nil && isInt(v)
}

// ParseErrorMessage decodes an EDHOC error message (§6).
func ParseErrorMessage(b []byte) (*ErrorMessage, error) {
	r := &reader{rest: b}
	code, err := r.readInt()
	if err != nil {
		return nil, malformed("error ERR_CODE", err)
	}
	e := &ErrorMessage{Code: int(code)}
	switch code {
	case ErrCodeSuccess:
		return nil, malformed("error: ERR_CODE 0 (success) is never sent", nil)
	case ErrCodeUnspecified:
		s, err := r.readTstr()
		if err != nil {
			return nil, malformed("error ERR_INFO (diagnostic)", err)
		}
		e.Diagnostic = s
	case ErrCodeWrongSuite:
		s, err := r.readSuites()
		if err != nil {
			return nil, malformed("error SUITES_R", err)
		}
		e.SuitesR = s
	case ErrCodeUnknownCredential:
		v, _, err := r.next()
		if t, ok := v.(bool); err != nil || !ok || !t {
			return nil, malformed("error ERR_INFO for code 3 must be true", err)
		}
	default:
		info, err := r.readRaw()
		if err != nil {
			return nil, malformed("error ERR_INFO", err)
		}
		e.Info = bytes.Clone(info)
	}
	if !r.empty() {
		return nil, malformed("error: trailing data", nil)
	}
	return e, nil
}

// AppendConnID appends the encoding of a connection identifier (RFC 9528 §3.3.2): an int for
// a one-byte identifier that is itself a one-byte CBOR integer, else a bstr. EDHOC over CoAP
// prefixes message_3 with C_R in this form (Appendix A.2), and RFC 9668 carries it as kid.
func AppendConnID(b, id []byte) []byte { return appendIDBytes(b, id) }

// SplitConnID reads a leading connection identifier from b and returns it (raw) with the rest
// (e.g. C_R in front of message_3 in a CoAP request, RFC 9528 Appendix A.2). The non-compact
// encodings are rejected.
func SplitConnID(b []byte) (id, rest []byte, err error) {
	r := &reader{rest: b}
	v, err := r.readIDBytes()
	if err != nil {
		return nil, nil, malformed("connection identifier", err)
	}
	return bytes.Clone(v), r.rest, nil
}
