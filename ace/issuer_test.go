package ace

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"coapca/oscore"
)

// TestIssuerBoundToKey: with the keys of two authorization servers configured, a token's iss
// is only what the key that authenticated it vouches for. AS-1 must not mint a token that
// passes for AS-2's (requester rules of kind token, from: [as2]).
func TestIssuerBoundToKey(t *testing.T) {
	ec1, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]Key{
		"as1-enc":  {KID: []byte("as1-enc"), Alg: AlgAESCCM16_64_128, Secret: bytes.Repeat([]byte{1}, 16), Issuer: "as1"},
		"as1-sign": {KID: []byte("as1-sig"), Alg: AlgES256, PrivateKey: ec1, PublicKey: &ec1.PublicKey, Issuer: "as1"},
		"as2-enc":  {KID: []byte("as2-enc"), Alg: AlgAESCCM16_64_128, Secret: bytes.Repeat([]byte{2}, 16), Issuer: "as2"},
		"as2-mac":  {KID: []byte("as2-mac"), Alg: AlgHMAC256_256, Secret: bytes.Repeat([]byte{3}, 32), Issuer: "as2"},
	}
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		name       string
		iss        string
		inner, enc string // inner "" = the claims straight in enc's COSE_Encrypt0
		wantErr    error  // nil = accepted
		wantIssuer string // the issuer the grant is made under
	}{
		{"attack: AS-1's key, iss as2", "as2", "", "as1-enc", ErrIssuer, ""},
		{"attack: AS-1 signs iss as2, nested in AS-2's encryption", "as2", "as1-sign", "as2-enc", ErrIssuer, ""},
		{"attack: AS-1 signs iss as2, nested in AS-1's encryption", "as2", "as1-sign", "as1-enc", ErrIssuer, ""},
		{"attack: AS-1's token without iss does not pass for as2", "", "", "as1-enc", nil, "as1"},
		{"AS-1's key, iss as1", "as1", "", "as1-enc", nil, "as1"},
		{"AS-2's key, iss as2", "as2", "", "as2-enc", nil, "as2"},
		{"AS-2 MACs iss as2, nested in AS-1's encryption (the inner key vouches)", "as2", "as2-mac", "as1-enc", nil, "as2"},
		{"AS-2 MACs a token without iss", "", "as2-mac", "as2-enc", nil, "as2"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctxs := &fakeContexts{ctxs: map[*oscore.Context]string{}}
			gr := &fakeGrants{granted: map[string][]Scope{}, issuers: map[string]string{}}
			pub := keys["as1-sign"]
			pub.PrivateKey = nil
			rs, err := NewResourceServer(RSConfig{Audiences: []string{"coapca-rs"}, ASName: "as2",
				Keys:     []Key{keys["as1-enc"], pub, keys["as2-enc"], keys["as2-mac"]},
				Contexts: ctxs, Grants: gr, Now: func() time.Time { return now }})
			if err != nil {
				t.Fatal(err)
			}
			c := &Claims{Issuer: tt.iss, Subject: "client-1", Audience: []string{"coapca-rs"}, IssuedAt: now,
				Expires: now.Add(time.Hour), CTI: []byte{1}, Scope: "est",
				OSCORE: &InputMaterial{ID: []byte{1}, MasterSecret: bytes.Repeat([]byte{7}, 16)}}
			var inner *Key
			if tt.inner != "" {
				k := keys[tt.inner]
				inner = &k
			}
			tok, err := ProtectToken(c.Marshal(), inner, keys[tt.enc], rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			_, err = rs.AuthzInfo(post(tok))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !Unauthorized(err) {
					t.Fatalf("AuthzInfo = %v, want %v (4.01)", err, tt.wantErr)
				}
				if len(gr.granted) != 0 || len(ctxs.ctxs) != 0 {
					t.Fatalf("a refused token left a grant (%d) or a context (%d)", len(gr.granted), len(ctxs.ctxs))
				}
				return
			}
			if err != nil {
				t.Fatalf("AuthzInfo: %v", err)
			}
			if len(gr.issuers) != 1 || len(ctxs.ctxs) != 1 {
				t.Fatalf("grants %v, contexts %d: want one of each", gr.issuers, len(ctxs.ctxs))
			}
			for _, got := range gr.issuers {
				if got != tt.wantIssuer {
					t.Fatalf("granted under issuer %q, want %q", got, tt.wantIssuer)
				}
			}
		})
	}
}

// TestIssuerRequiredWithSeveralKeys: a resource server holding several ASes' keys refuses a key
// that names no AS (it could vouch for any iss); a single key may name none (its tokens' iss,
// or ASName, is the issuer).
func TestIssuerRequiredWithSeveralKeys(t *testing.T) {
	a := Key{KID: []byte("a"), Alg: AlgAESCCM16_64_128, Secret: bytes.Repeat([]byte{1}, 16), Issuer: "as1"}
	b := Key{KID: []byte("b"), Alg: AlgAESCCM16_64_128, Secret: bytes.Repeat([]byte{2}, 16)}
	for _, tt := range []struct {
		name string
		keys []Key
		ok   bool
	}{
		{"attack: two keys, one without issuer", []Key{a, b}, false},
		{"one key without issuer", []Key{b}, true},
		{"one key with issuer", []Key{a}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewResourceServer(RSConfig{Audiences: []string{"rs"}, Keys: tt.keys,
				Contexts: &fakeContexts{ctxs: map[*oscore.Context]string{}}, Grants: &fakeGrants{granted: map[string][]Scope{}}})
			if (err == nil) != tt.ok {
				t.Fatalf("NewResourceServer = %v, want ok %v", err, tt.ok)
			}
		})
	}
}
