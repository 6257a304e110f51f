package ace

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func newAS(t *testing.T, keys map[string]Key) *AuthorizationServer {
	t.Helper()
	enc := keys["encrypt0"]
	as, err := NewAuthorizationServer(ASConfig{Name: "as1",
		Audiences: []Audience{{Name: "coapca-rs", Key: keys["encrypt0"]}, {Name: "rs2", Key: keys["sign1"], Encrypt: &enc}},
		Clients: []Client{{Name: "client-1", Scope: "est enroll/sensors", Audiences: []string{"coapca-rs", "rs2"}},
			{Name: "client-2", Scope: "enroll", Audiences: []string{"rs2"}}},
		Now: func() time.Time { return time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC) }})
	if err != nil {
		t.Fatal(err)
	}
	return as
}

// TestTokenEndpoint: the AS issues tokens only to registered clients, for their audiences and
// within their scope (each refusal an attack: a client asking for more than it was given), and
// a resource server holding only the AS's key accepts what it issues.
func TestTokenEndpoint(t *testing.T) {
	f := newRS(t)
	as := newAS(t, f.keys)
	for _, tt := range []struct {
		name, client, aud, scope string
		code                     int
	}{
		{"default scope", "client-1", "coapca-rs", "", 0},
		{"narrower scope", "client-1", "coapca-rs", "enroll/sensors", 0},
		{"second audience", "client-1", "rs2", "est", 0},
		{"attack: unknown client", "mallory", "coapca-rs", "", ErrCodeInvalidClient},
		{"attack: audience not registered", "client-2", "coapca-rs", "", ErrCodeUnauthorized},
		{"attack: wider scope", "client-1", "coapca-rs", "est/sensors", ErrCodeInvalidScope},
		{"attack: scope of another label", "client-2", "rs2", "enroll/admin", ErrCodeInvalidScope},
	} {
		t.Run(tt.name, func(t *testing.T) {
			wire := (&TokenRequest{Audience: tt.aud, Scope: tt.scope}).Marshal()
			req, err := ParseTokenRequest(wire)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := as.Token(tt.client, req)
			var te *TokenError
			if tt.code != 0 {
				if !errors.As(err, &te) || te.Code != tt.code {
					t.Fatalf("err = %v, want code %d", err, tt.code)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			back, err := ParseTokenResponse(resp.Marshal())
			if err != nil || !bytes.Equal(back.AccessToken, resp.AccessToken) || back.ExpiresIn != 3600 ||
				!bytes.Equal(back.Material.MasterSecret, resp.Material.MasterSecret) {
				t.Fatalf("response round trip %+v, %v", back, err)
			}
			if tt.aud != "coapca-rs" {
				// rs2's tokens are signed, then encrypted (nested).
				if _, encrypted, err := OpenToken(back.AccessToken, []Key{f.keys["encrypt0"], f.keys["sign1"]}); err != nil || !encrypted {
					t.Fatalf("signed token for rs2: encrypted %v, %v", encrypted, err)
				}
				return
			}
			c, err := f.rs.Verify(back.AccessToken)
			if err != nil {
				t.Fatal(err)
			}
			if c.Subject != tt.client || c.Issuer != "as1" || !bytes.Equal(c.OSCORE.MasterSecret, back.Material.MasterSecret) {
				t.Fatalf("claims %+v", c)
			}
		})
	}
}

func TestTokenRequestRefusals(t *testing.T) {
	for name, body := range map[string][]byte{
		"no audience":       marshal(map[int]any{paramGrantType: grantClientCredentials}),
		"password grant":    marshal(map[int]any{paramGrantType: 0, paramAudience: "x"}),
		"audience not text": marshal(map[int]any{paramAudience: []byte("x")}),
		"scope not text":    marshal(map[int]any{paramAudience: "x", paramScope: []byte{1}}),
		"not a map":         {0x80},
	} {
		if _, err := ParseTokenRequest(body); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestASRefusesUnencryptedTokens: an audience whose key only MACs or signs must also have an
// encryption key: the token carries the Master Secret (RFC 9203 §3.2.1).
func TestASRefusesUnencryptedTokens(t *testing.T) {
	keys := testKeys(t)
	for _, k := range []string{"mac0-64", "sign1"} {
		_, err := NewAuthorizationServer(ASConfig{Name: "as1", Audiences: []Audience{{Name: "rs", Key: keys[k]}},
			Clients: []Client{{Name: "c", Scope: "est", Audiences: []string{"rs"}}}})
		if err == nil {
			t.Errorf("%s without encryption accepted", k)
		}
	}
}
