package ace

import (
	"bytes"
	"reflect"
	"testing"
)

// FuzzParseClaims: the CWT claims / cnf decoder never panics, and what it accepts re-encodes
// to claims it decodes to the same value.
func FuzzParseClaims(f *testing.F) {
	c := &Claims{Issuer: "as1", Subject: "c", Audience: []string{"a", "b"}, CTI: []byte{1}, Scope: "est",
		OSCORE: &InputMaterial{ID: []byte{1}, MasterSecret: []byte{2}, Salt: []byte{3}, ContextID: []byte{4}, Version: 1, AEAD: 10, HKDF: -10}}
	f.Add(c.Marshal())
	f.Add([]byte{0xa1, 0x08, 0xa1, 0x04, 0xa0})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseClaims(b)
		if err != nil {
			return
		}
		c2, err := ParseClaims(c.Marshal())
		if err != nil {
			t.Fatalf("re-encoded claims do not parse: %v", err)
		}
		if !reflect.DeepEqual(c, c2) {
			t.Fatalf("round trip: %+v != %+v", c, c2)
		}
	})
}

// FuzzAuthzInfoRequest: the /authz-info body parser never panics and round-trips.
func FuzzAuthzInfoRequest(f *testing.F) {
	f.Add(post([]byte{0xd0, 0x83, 0x40, 0xa0, 0x40}))
	f.Add([]byte{0xa0})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseAuthzInfoRequest(b)
		if err != nil {
			return
		}
		r2, err := ParseAuthzInfoRequest(r.Marshal())
		if err != nil || !bytes.Equal(r.AccessToken, r2.AccessToken) || !bytes.Equal(r.Nonce1, r2.Nonce1) ||
			!bytes.Equal(r.ClientRecipientID, r2.ClientRecipientID) {
			t.Fatalf("round trip: %+v, %+v, %v", r, r2, err)
		}
	})
}

// FuzzOpen: the COSE decoder never panics on any token, with every kind of key.
func FuzzOpen(f *testing.F) {
	keys := testKeys(f)
	var list []Key
	for _, k := range keys {
		tok, err := Protect([]byte{0xa0}, k, bytes.NewReader(bytes.Repeat([]byte{5}, 256)))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(tok)
		list = append(list, k)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _, _ = Open(b, list)
	})
}

// FuzzACEMessages: the other ACE bodies read from the network (the AS's /token request, the
// client's token response, /authz-info response and creation hints) never panic and
// round-trip.
func FuzzACEMessages(f *testing.F) {
	f.Add((&TokenRequest{Audience: "rs", Scope: "est"}).Marshal())
	f.Add((&TokenResponse{AccessToken: []byte{1}, ExpiresIn: 60, Material: &InputMaterial{ID: []byte{1}, MasterSecret: []byte{2}}}).Marshal())
	f.Add((&AuthzInfoResponse{Nonce2: []byte{1, 2}, ServerRecipientID: []byte{3}}).Marshal())
	f.Add(CreationHints("coap://as/token", "rs", "est"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, err := ParseTokenRequest(b); err == nil {
			r2, err := ParseTokenRequest(r.Marshal())
			if err != nil || *r2 != *r {
				t.Fatalf("token request round trip: %+v %+v %v", r, r2, err)
			}
		}
		if r, err := ParseTokenResponse(b); err == nil {
			r2, err := ParseTokenResponse(r.Marshal())
			if err != nil || !bytes.Equal(r2.AccessToken, r.AccessToken) || !reflect.DeepEqual(r2.Material, r.Material) {
				t.Fatalf("token response round trip: %+v %+v %v", r, r2, err)
			}
		}
		if r, err := ParseAuthzInfoResponse(b); err == nil {
			r2, err := ParseAuthzInfoResponse(r.Marshal())
			if err != nil || !bytes.Equal(r2.Nonce2, r.Nonce2) || !bytes.Equal(r2.ServerRecipientID, r.ServerRecipientID) {
				t.Fatalf("authz-info response round trip: %+v %+v %v", r, r2, err)
			}
		}
		if h, err := ParseCreationHints(b); err == nil {
			h2, err := ParseCreationHints(CreationHints(h.AS, h.Audience, h.Scope))
			if err != nil || *h2 != *h {
				t.Fatalf("creation hints round trip: %+v %+v %v", h, h2, err)
			}
		}
	})
}
