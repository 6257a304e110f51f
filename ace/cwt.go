package ace

import (
	"fmt"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// CWT claim keys (RFC 8392 §4, RFC 8747 §3.1, RFC 9200 §8.13).
const (
	claimIss   = 1
	claimSub   = 2
	claimAud   = 3
	claimExp   = 4
	claimNbf   = 5
	claimIat   = 6
	claimCti   = 7
	claimCnf   = 8
	claimScope = 9
)

// cnfOSC is the "osc" confirmation method (RFC 9203 §9.5): cnf = {4: OSCORE_Input_Material}.
const cnfOSC = 4

// OSCORE_Input_Material parameters (RFC 9203 §3.2.1, §9.4).
const (
	oscID        = 0
	oscVersion   = 1
	oscMS        = 2
	oscHKDF      = 3
	oscAlg       = 4
	oscSalt      = 5
	oscContextID = 6
)

// InputMaterial is OSCORE_Input_Material (RFC 9203 §3.2.1): what the AS gives the client and,
// inside the token, the resource server, to derive their OSCORE security context.
type InputMaterial struct {
	ID           []byte // id: identifies the material (required here)
	Version      int    // version; 0 = absent (OSCORE version 1)
	MasterSecret []byte // ms (required)
	HKDF         int    // hkdf; 0 = absent (HKDF SHA-256)
	AEAD         int    // alg; 0 = absent (AES-CCM-16-64-128)
	Salt         []byte // salt: an input to the Master Salt (§4.3); nil = absent
	ContextID    []byte // contextId: the OSCORE ID Context; nil = absent
}

func (m *InputMaterial) toMap() map[int]any {
	out := map[int]any{oscID: m.ID, oscMS: m.MasterSecret}
	if m.Version != 0 {
		out[oscVersion] = m.Version
	}
	if m.HKDF != 0 {
		out[oscHKDF] = m.HKDF
	}
	if m.AEAD != 0 {
		out[oscAlg] = m.AEAD
	}
	if m.Salt != nil {
		out[oscSalt] = m.Salt
	}
	if m.ContextID != nil {
		out[oscContextID] = m.ContextID
	}
	return out
}

// MarshalCBOR encodes the material as the CBOR map of RFC 9203 §3.2.1.
func (m *InputMaterial) MarshalCBOR() ([]byte, error) { return wire.enc.Marshal(m.toMap()) }

// UnmarshalCBOR decodes OSCORE_Input_Material. id and ms are required; hkdf and alg must be
// integers (text names are not supported), version must be 1 if present.
func (m *InputMaterial) UnmarshalCBOR(b []byte) error {
	var raw map[int]cbor.RawMessage
	if err := wire.dec.Unmarshal(b, &raw); err != nil {
		return fmt.Errorf("OSCORE_Input_Material: %w", err)
	}
	var out InputMaterial
	for k, v := range raw {
		var err error
		switch k {
		case oscID:
			err = bstr(v, &out.ID)
		case oscVersion:
			err = wire.dec.Unmarshal(v, &out.Version)
			if err == nil && out.Version != 1 {
				err = fmt.Errorf("OSCORE version %d (only 1)", out.Version)
			}
		case oscMS:
			err = bstr(v, &out.MasterSecret)
		case oscHKDF:
			err = intOnly(v, &out.HKDF)
		case oscAlg:
			err = intOnly(v, &out.AEAD)
		case oscSalt:
			err = bstr(v, &out.Salt)
		case oscContextID:
			err = bstr(v, &out.ContextID)
		default:
			err = fmt.Errorf("unknown parameter %d", k)
		}
		if err != nil {
			return fmt.Errorf("OSCORE_Input_Material: %w", err)
		}
	}
	if out.ID == nil || len(out.MasterSecret) == 0 {
		return fmt.Errorf("OSCORE_Input_Material: id and ms are required (RFC 9203 §3.2.1)")
	}
	*m = out
	return nil
}

func bstr(v cbor.RawMessage, dst *[]byte) error {
	if len(v) == 0 || v[0]>>5 != 2 {
		return fmt.Errorf("not a byte string")
	}
	var b []byte
	if err := wire.dec.Unmarshal(v, &b); err != nil {
		return err
	}
	if b == nil {
		b = []byte{}
	}
	*dst = b
	return nil
}

func tstr(v cbor.RawMessage, dst *string) error {
	if len(v) == 0 || v[0]>>5 != 3 {
		return fmt.Errorf("not a text string")
	}
	return wire.dec.Unmarshal(v, dst)
}

func intOnly(v cbor.RawMessage, dst *int) error {
	if len(v) == 0 || v[0]>>5 > 1 {
		return fmt.Errorf("not an integer")
	}
	var n int64
	if err := wire.dec.Unmarshal(v, &n); err != nil {
		return err
	}
	if n < -1<<31 || n > 1<<31-1 {
		return fmt.Errorf("integer %d out of range", n)
	}
	*dst = int(n)
	return nil
}

func numericDate(v cbor.RawMessage) (time.Time, error) {
	if len(v) == 0 || v[0]>>5 != 0 {
		return time.Time{}, fmt.Errorf("NumericDate is not an unsigned integer")
	}
	var n uint64
	if err := wire.dec.Unmarshal(v, &n); err != nil {
		return time.Time{}, err
	}
	if n > 1<<40 {
		return time.Time{}, fmt.Errorf("NumericDate %d out of range", n)
	}
	return time.Unix(int64(n), 0).UTC(), nil
}

// Claims are the CWT claims (RFC 8392 §3) an ACE access token for the OSCORE profile carries.
// Times are whole seconds; zero = absent.
type Claims struct {
	Issuer    string
	Subject   string
	Audience  []string // aud: one text string on the wire, or an array for several audiences
	Expires   time.Time
	NotBefore time.Time
	IssuedAt  time.Time
	CTI       []byte // the token's identifier; the resource server refuses a cti twice
	Scope     string // text scope (RFC 9200 §5.8.1): see ParseScope
	OSCORE    *InputMaterial
}

// Marshal encodes the claims set (the COSE payload).
func (c *Claims) Marshal() []byte {
	m := map[int]any{}
	if c.Issuer != "" {
		m[claimIss] = c.Issuer
	}
	if c.Subject != "" {
		m[claimSub] = c.Subject
	}
	switch len(c.Audience) {
	case 0:
	case 1:
		m[claimAud] = c.Audience[0]
	default:
		m[claimAud] = c.Audience
	}
	for k, t := range map[int]time.Time{claimExp: c.Expires, claimNbf: c.NotBefore, claimIat: c.IssuedAt} {
		if !t.IsZero() {
			m[k] = t.Unix()
		}
	}
	if c.CTI != nil {
		m[claimCti] = c.CTI
	}
	if c.Scope != "" {
		m[claimScope] = c.Scope
	}
	if c.OSCORE != nil {
		m[claimCnf] = map[int]any{cnfOSC: c.OSCORE.toMap()}
	}
	return marshal(m)
}

// ParseClaims decodes a CWT claims set. Unknown claims are ignored (RFC 8392 §3: a recipient
// need not understand every claim); the claims above must have their RFC types.
func ParseClaims(b []byte) (*Claims, error) {
	var raw map[int]cbor.RawMessage
	if err := wire.dec.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("%w: claims set: %v", ErrMalformed, err)
	}
	c := &Claims{}
	for k, v := range raw {
		var err error
		switch k {
		case claimIss:
			err = tstr(v, &c.Issuer)
		case claimSub:
			err = tstr(v, &c.Subject)
		case claimAud:
			if len(v) > 0 && v[0]>>5 == 4 {
				var list []cbor.RawMessage
				if err = wire.dec.Unmarshal(v, &list); err == nil {
					for _, e := range list {
						var s string
						if err = tstr(e, &s); err != nil {
							break
						}
						c.Audience = append(c.Audience, s)
					}
				}
			} else {
				var s string
				if err = tstr(v, &s); err == nil {
					c.Audience = []string{s}
				}
			}
		case claimExp:
			c.Expires, err = numericDate(v)
		case claimNbf:
			c.NotBefore, err = numericDate(v)
		case claimIat:
			c.IssuedAt, err = numericDate(v)
		case claimCti:
			err = bstr(v, &c.CTI)
		case claimScope:
			// RFC 9200 §5.8.1: scope is a text or byte string; this server defines text scopes.
			err = tstr(v, &c.Scope)
		case claimCnf:
			var cnf map[int]cbor.RawMessage
			if err = wire.dec.Unmarshal(v, &cnf); err == nil {
				osc, ok := cnf[cnfOSC]
				if !ok || len(cnf) != 1 {
					err = fmt.Errorf("cnf is not an OSCORE_Input_Material (RFC 9203 §3.2.1)")
				} else {
					c.OSCORE = &InputMaterial{}
					err = c.OSCORE.UnmarshalCBOR(osc)
				}
			}
		}
		if err != nil {
			return nil, fmt.Errorf("%w: claim %d: %v", ErrMalformed, k, err)
		}
	}
	return c, nil
}
