package ace

import (
	"fmt"
	"testing"

	"github.com/fxamacker/cbor/v2"
)

// The CDDL of the messages of a token-based enrollment, as data: for each message, its
// parameters (key → major type) and which are required. From RFC 9200 §5.8.1 (token request),
// §5.8.2 (token response), RFC 9203 §3.2.1 (OSCORE_Input_Material), §4.1 (authz-info request),
// §4.2 (authz-info response), RFC 8392 §3 (claims), RFC 9200 §5.3 (creation hints).
type cddlField struct {
	major    byte // CBOR major type: 0 uint, 1 nint, 2 bstr, 3 tstr, 4 array, 5 map
	required bool
	alt      byte // an alternative major type (int = uint / nint), 0xff = none
}

var (
	cddlTokenRequest = map[int]cddlField{paramGrantType: {0, false, 0xff}, paramAudience: {3, true, 0xff}, paramScope: {3, false, 2}}
	cddlTokenResp    = map[int]cddlField{paramAccessToken: {2, true, 0xff}, paramACEProfile: {0, false, 1},
		paramExpiresIn: {0, false, 0xff}, paramCnf: {5, true, 0xff}}
	cddlMaterial = map[int]cddlField{oscID: {2, true, 0xff}, oscVersion: {0, false, 0xff}, oscMS: {2, true, 0xff},
		oscHKDF: {1, false, 0}, oscAlg: {0, false, 1}, oscSalt: {2, false, 0xff}, oscContextID: {2, false, 0xff}}
	cddlAuthzReq = map[int]cddlField{paramAccessToken: {2, true, 0xff}, paramNonce1: {2, true, 0xff},
		paramClientRecipientID: {2, true, 0xff}}
	cddlAuthzResp = map[int]cddlField{paramNonce2: {2, true, 0xff}, paramServerRecipientID: {2, true, 0xff}}
	cddlClaims    = map[int]cddlField{claimIss: {3, false, 0xff}, claimSub: {3, false, 0xff}, claimAud: {3, false, 4},
		claimExp: {0, true, 0xff}, claimIat: {0, false, 0xff}, claimCti: {2, false, 0xff}, claimScope: {3, true, 2},
		claimCnf: {5, true, 0xff}}
	cddlHints = map[int]cddlField{paramASCreationHintAS: {3, true, 0xff}, paramAudience: {3, false, 0xff},
		paramScope: {3, false, 2}}
)

func checkCDDL(b []byte, rule map[int]cddlField) error {
	var m map[int]cbor.RawMessage
	if err := cbor.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("not a map with integer keys: %w", err)
	}
	for k, f := range rule {
		v, ok := m[k]
		if !ok {
			if f.required {
				return fmt.Errorf("required key %d missing", k)
			}
			continue
		}
		if mt := v[0] >> 5; mt != f.major && mt != f.alt {
			return fmt.Errorf("key %d has major type %d, want %d", k, mt, f.major)
		}
	}
	for k := range m {
		if _, ok := rule[k]; !ok {
			return fmt.Errorf("key %d not in the CDDL", k)
		}
	}
	return nil
}

// TestMessagesMatchCDDL: every message of a token-based enrollment, as this package puts it
// on the wire, has the shape the RFCs' CDDL gives.
func TestMessagesMatchCDDL(t *testing.T) {
	f := newRS(t)
	as := newAS(t, f.keys)
	treq := (&TokenRequest{Audience: "coapca-rs", Scope: "est"}).Marshal()
	r, _ := ParseTokenRequest(treq)
	tresp, err := as.Token("client-1", r)
	if err != nil {
		t.Fatal(err)
	}
	payload, _, err := Open(tresp.AccessToken, []Key{f.keys["encrypt0"]})
	if err != nil {
		t.Fatal(err)
	}
	areq := (&AuthzInfoRequest{AccessToken: tresp.AccessToken, Nonce1: make([]byte, 8), ClientRecipientID: []byte{1}}).Marshal()
	aresp, err := f.rs.AuthzInfo(areq)
	if err != nil {
		t.Fatal(err)
	}
	var claims map[int]cbor.RawMessage
	if err := cbor.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	var cnf map[int]cbor.RawMessage
	if err := cbor.Unmarshal(claims[claimCnf], &cnf); err != nil || len(cnf) != 1 || cnf[cnfOSC] == nil {
		t.Fatalf("cnf %v: want {4 (osc): OSCORE_Input_Material} (RFC 9203 §3.2.1)", cnf)
	}
	for _, m := range []struct {
		name string
		b    []byte
		rule map[int]cddlField
	}{
		{"token request (RFC 9200 §5.8.1)", treq, cddlTokenRequest},
		{"token response (RFC 9200 §5.8.2, RFC 9203 §3.2)", tresp.Marshal(), cddlTokenResp},
		{"access token claims (RFC 8392)", payload, cddlClaims},
		{"OSCORE_Input_Material in the token (RFC 9203 §3.2.1)", cnf[cnfOSC], cddlMaterial},
		{"authz-info request (RFC 9203 §4.1)", areq, cddlAuthzReq},
		{"authz-info response (RFC 9203 §4.2)", aresp.Marshal(), cddlAuthzResp},
		{"AS Request Creation Hints (RFC 9200 §5.3)", CreationHints("coap://as/token", "coapca-rs", "est"), cddlHints},
	} {
		if err := checkCDDL(m.b, m.rule); err != nil {
			t.Errorf("%s: %v", m.name, err)
		}
	}
	// The access token is a tagged COSE_Encrypt0 (RFC 9052 §5.2): tag 16, 3-item array.
	if tresp.AccessToken[0] != 0xd0 || tresp.AccessToken[1] != 0x83 {
		t.Errorf("access token starts %x, want d0 83 (COSE_Encrypt0)", tresp.AccessToken[:2])
	}
}
