package ace

import (
	"bytes"
	"fmt"

	"github.com/fxamacker/cbor/v2"

	"coapca/oscore"
)

// ContentFormatACECBOR is application/ace+cbor (RFC 9200 §8.16).
const ContentFormatACECBOR = 19

// ACE parameters (RFC 9200 §8.10, RFC 9203 §9.3) used at /token and /authz-info.
const (
	paramAccessToken       = 1
	paramAudience          = 5
	paramScope             = 9
	paramClientID          = 24
	paramACEProfile        = 38
	paramNonce1            = 40
	paramNonce2            = 42
	paramClientRecipientID = 43
	paramServerRecipientID = 44
	paramCnf               = 8
	paramExpiresIn         = 2
	paramError             = 30
	paramASCreationHintAS  = 1 // AS Request Creation Hints (RFC 9200 §5.3): "AS"
)

// ProfileCoAPOSCORE is the ace_profile value of the OSCORE profile (RFC 9203 §9.1).
const ProfileCoAPOSCORE = 2

// NonceSize is the size of nonce1 and nonce2: RFC 9203 §4.1 RECOMMENDS 8 bytes (64 bits).
const NonceSize = 8

// Bounds of what a peer may send.
const (
	maxNonce = 32
	// maxID is the longest OSCORE Sender/Recipient ID with a 13-byte AEAD nonce (RFC 8613 §3.3).
	maxID = 7
)

// AuthzInfoRequest is the body of the POST to /authz-info (RFC 9203 §4.1):
// {access_token: bstr, nonce1: bstr, ace_client_recipientid: bstr}.
type AuthzInfoRequest struct {
	AccessToken       []byte
	Nonce1            []byte
	ClientRecipientID []byte
}

// Marshal encodes the request.
func (r *AuthzInfoRequest) Marshal() []byte {
	return marshal(map[int][]byte{paramAccessToken: r.AccessToken, paramNonce1: r.Nonce1,
		paramClientRecipientID: r.ClientRecipientID})
}

// ParseAuthzInfoRequest decodes and checks an /authz-info body: all three parameters
// present as byte strings, the nonce 1..32 bytes, the Recipient ID at most 7 bytes (RFC 8613
// §3.3 with the 13-byte nonce of AES-CCM-16-64-128), the token at most MaxTokenSize.
func ParseAuthzInfoRequest(b []byte) (*AuthzInfoRequest, error) {
	raw, err := paramMap(b)
	if err != nil {
		return nil, err
	}
	r := &AuthzInfoRequest{}
	if err := readParams(raw, "/authz-info body", "RFC 9203 §4.1", []bstrParam{
		{paramAccessToken, "access_token", &r.AccessToken, 1, MaxTokenSize},
		{paramNonce1, "nonce1", &r.Nonce1, 1, maxNonce},
		{paramClientRecipientID, "ace_client_recipientid", &r.ClientRecipientID, 0, maxID},
	}); err != nil {
		return nil, err
	}
	return r, nil
}

// AuthzInfoResponse is the body of the 2.01 answer (RFC 9203 §4.2):
// {nonce2: bstr, ace_server_recipientid: bstr}.
type AuthzInfoResponse struct {
	Nonce2            []byte
	ServerRecipientID []byte
}

// Marshal encodes the response.
func (r *AuthzInfoResponse) Marshal() []byte {
	return marshal(map[int][]byte{paramNonce2: r.Nonce2, paramServerRecipientID: r.ServerRecipientID})
}

// ParseAuthzInfoResponse decodes the RS's answer (the client side).
func ParseAuthzInfoResponse(b []byte) (*AuthzInfoResponse, error) {
	raw, err := paramMap(b)
	if err != nil {
		return nil, err
	}
	r := &AuthzInfoResponse{}
	if err := readParams(raw, "/authz-info response", "RFC 9203 §4.2", []bstrParam{
		{paramNonce2, "nonce2", &r.Nonce2, 1, maxNonce},
		{paramServerRecipientID, "ace_server_recipientid", &r.ServerRecipientID, 0, maxID},
	}); err != nil {
		return nil, err
	}
	return r, nil
}

func paramMap(b []byte) (map[int]cbor.RawMessage, error) {
	if len(b) > MaxTokenSize+256 {
		return nil, fmt.Errorf("ace: body of %d bytes is too large", len(b))
	}
	var raw map[int]cbor.RawMessage
	if err := wire.dec.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("ace: body is not a CBOR map with integer keys: %w", err)
	}
	return raw, nil
}

// ContextParams derives the OSCORE security context of RFC 9203 §4.3 from the input material,
// the two nonces and the two Recipient IDs (id1 = ace_client_recipientid, id2 =
// ace_server_recipientid). The Master Salt is the concatenation of salt, N1 and N2, each
// encoded as a CBOR byte string (an absent salt is the empty byte string); the ID Context is
// contextId. The client's Sender ID is id2 and its Recipient ID id1; the server's the reverse.
func ContextParams(m *InputMaterial, nonce1, nonce2, id1, id2 []byte, client bool) (oscore.Params, error) {
	if m == nil || len(m.MasterSecret) == 0 {
		return oscore.Params{}, ErrNoOSCORE
	}
	// RFC 9203 §4.2: ace_server_recipientid differs from ace_client_recipientid. The
	// /authz-info exchange is unprotected, so the client checks it too: with equal IDs its
	// Sender Key would be the server's (RFC 8613 §3.3: the Sender ID makes the key unique).
	if bytes.Equal(id1, id2) {
		return oscore.Params{}, fmt.Errorf("ace: ace_server_recipientid equals ace_client_recipientid %x (RFC 9203 §4.2)", id1)
	}
	salt := m.Salt
	if salt == nil {
		salt = []byte{}
	}
	var ms []byte
	ms = append(ms, marshal(salt)...)
	ms = append(ms, marshal(nonce1)...)
	ms = append(ms, marshal(nonce2)...)
	p := oscore.Params{MasterSecret: append([]byte{}, m.MasterSecret...), MasterSalt: ms,
		IDContext: append([]byte(nil), m.ContextID...), AEAD: m.AEAD, HKDF: m.HKDF}
	if client {
		p.SenderID, p.RecipientID = append([]byte{}, id2...), append([]byte{}, id1...)
	} else {
		p.SenderID, p.RecipientID = append([]byte{}, id1...), append([]byte{}, id2...)
	}
	return p, nil
}

// CreationHints is the body of the AS Request Creation Hints (RFC 9200 §5.3): the AS's URI,
// the audience to ask a token for and the scope needed, as application/ace+cbor.
func CreationHints(asURI, audience, scope string) []byte {
	m := map[int]any{paramASCreationHintAS: asURI}
	if audience != "" {
		m[paramAudience] = audience
	}
	if scope != "" {
		m[paramScope] = scope
	}
	return marshal(m)
}

// Hints are parsed AS Request Creation Hints.
type Hints struct {
	AS       string
	Audience string
	Scope    string
}

// ParseCreationHints decodes the AS Request Creation Hints of a 4.01 (client side).
func ParseCreationHints(b []byte) (*Hints, error) {
	raw, err := paramMap(b)
	if err != nil {
		return nil, err
	}
	h := &Hints{}
	v, ok := raw[paramASCreationHintAS]
	if !ok {
		return nil, fmt.Errorf("ace: creation hints without AS (RFC 9200 §5.3)")
	}
	if err := tstr(v, &h.AS); err != nil {
		return nil, fmt.Errorf("ace: creation hints AS: %w", err)
	}
	if v, ok := raw[paramAudience]; ok {
		if err := tstr(v, &h.Audience); err != nil {
			return nil, fmt.Errorf("ace: creation hints audience: %w", err)
		}
	}
	if v, ok := raw[paramScope]; ok {
		if err := tstr(v, &h.Scope); err != nil {
			return nil, fmt.Errorf("ace: creation hints scope: %w", err)
		}
	}
	return h, nil
}

// bstrParam is one byte-string parameter of an /authz-info message and its length bounds.
type bstrParam struct {
	key      int
	name     string
	dst      *[]byte
	min, max int
}

// readParams takes each of params from raw: present (what, and the section that requires it,
// name the message in the error), a byte string, and of a length within its bounds.
func readParams(raw map[int]cbor.RawMessage, what, section string, params []bstrParam) error {
	for _, f := range params {
		v, ok := raw[f.key]
		if !ok {
			return fmt.Errorf("ace: %s lacks %s (%s)", what, f.name, section)
		}
		if err := bstr(v, f.dst); err != nil {
			return fmt.Errorf("ace: %s: %w", f.name, err)
		}
		if n := len(*f.dst); n < f.min || n > f.max {
			return fmt.Errorf("ace: %s of %d bytes (want %d..%d)", f.name, n, f.min, f.max)
		}
	}
	return nil
}
