package ace

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"coapca/oscore"
)

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func testKeys(t testing.TB) map[string]Key {
	t.Helper()
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]Key{
		"encrypt0": {KID: []byte("k-enc"), Alg: AlgAESCCM16_64_128, Secret: bytes.Repeat([]byte{1}, 16), Issuer: "as1"},
		"mac0-64":  {KID: []byte("k-mac"), Alg: AlgHMAC256_64, Secret: bytes.Repeat([]byte{2}, 32), Issuer: "as1"},
		"mac0-256": {KID: []byte("k-mac256"), Alg: AlgHMAC256_256, Secret: bytes.Repeat([]byte{3}, 32), Issuer: "as1"},
		"sign1":    {KID: []byte("k-sig"), Alg: AlgES256, PrivateKey: ec, PublicKey: &ec.PublicKey, Issuer: "as1"},
	}
}

// TestProtectOpen: every algorithm round-trips, and each tampering is refused.
func TestProtectOpen(t *testing.T) {
	payload := []byte("claims")
	for name, k := range testKeys(t) {
		t.Run(name, func(t *testing.T) {
			tok, err := Protect(payload, k, rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			verify := k
			if k.Alg == AlgES256 {
				verify.PrivateKey = nil // the RS holds only the AS's public key
			}
			got, used, err := Open(tok, []Key{verify})
			if err != nil || !bytes.Equal(got, payload) || !bytes.Equal(used.KID, k.KID) {
				t.Fatalf("Open = %q, %v", got, err)
			}
			// attack: flip the last byte (tag, signature or ciphertext)
			bad := bytes.Clone(tok)
			bad[len(bad)-1] ^= 1
			if _, _, err := Open(bad, []Key{verify}); !errors.Is(err, ErrVerify) && !errors.Is(err, ErrMalformed) {
				t.Errorf("tampered token: %v", err)
			}
			// attack: a key the RS does not know
			other := verify
			other.KID = []byte("other")
			if _, _, err := Open(tok, []Key{other}); !errors.Is(err, ErrUnknownKey) {
				t.Errorf("unknown kid: %v", err)
			}
			// attack: same kid, another secret (a forged token)
			if k.Alg != AlgES256 {
				forged := k
				forged.Secret = bytes.Repeat([]byte{9}, len(k.Secret))
				ft, err := Protect(payload, forged, rand.Reader)
				if err != nil {
					t.Fatal(err)
				}
				if _, _, err := Open(ft, []Key{verify}); !errors.Is(err, ErrVerify) {
					t.Errorf("forged token: %v", err)
				}
			}
		})
	}
}

// TestAlgorithmConfusion: a token cannot name another algorithm than its key's (e.g. a MAC
// key used as if it were for a truncated MAC, or a symmetric key for a signature).
func TestAlgorithmConfusion(t *testing.T) {
	k := Key{KID: []byte("k"), Alg: AlgHMAC256_256, Secret: bytes.Repeat([]byte{2}, 32)}
	weak := k
	weak.Alg = AlgHMAC256_64
	tok, err := Protect([]byte("x"), weak, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Open(tok, []Key{k}); !errors.Is(err, ErrVerify) {
		t.Fatalf("algorithm downgrade accepted: %v", err)
	}
}

// fakeContexts and fakeGrants stand in for the OSCORE layer and the authority.
type fakeContexts struct {
	mu    sync.Mutex
	ctxs  map[*oscore.Context]string
	next  byte
	avoid []byte
}

func (f *fakeContexts) FreeRecipientID(avoid []byte) ([]byte, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.next++
	if bytes.Equal([]byte{f.next}, avoid) {
		f.next++
	}
	f.avoid = avoid
	return []byte{f.next}, true
}
func (f *fakeContexts) AddTokenContext(c *oscore.Context, ref string, _ time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ctxs[c] = ref
}
func (f *fakeContexts) RemoveContext(c *oscore.Context) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.ctxs, c)
}

type fakeGrants struct {
	granted map[string][]Scope
	issuers map[string]string // ref → the issuer granted under (when not nil)
	refuse  error
}

func (g *fakeGrants) Grant(ref, issuer string, c *Claims, scope []Scope) error {
	if g.refuse != nil {
		return g.refuse
	}
	g.granted[ref] = scope
	if g.issuers != nil {
		g.issuers[ref] = issuer
	}
	return nil
}
func (g *fakeGrants) Revoke(ref string) { delete(g.granted, ref) }

type rsFixture struct {
	rs    *ResourceServer
	ctxs  *fakeContexts
	gr    *fakeGrants
	now   time.Time
	keys  map[string]Key
	claim func() *Claims
}

func newRS(t *testing.T) *rsFixture {
	t.Helper()
	f := &rsFixture{ctxs: &fakeContexts{ctxs: map[*oscore.Context]string{}}, gr: &fakeGrants{granted: map[string][]Scope{}},
		now: time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC), keys: testKeys(t)}
	pub := f.keys["sign1"]
	pub.PrivateKey = nil
	rs, err := NewResourceServer(RSConfig{Audiences: []string{"coapca-rs"}, Keys: []Key{f.keys["encrypt0"], f.keys["mac0-64"], pub},
		Issuers: []string{"as1"}, Contexts: f.ctxs, Grants: f.gr, Now: func() time.Time { return f.now }})
	if err != nil {
		t.Fatal(err)
	}
	f.rs = rs
	n := 0
	f.claim = func() *Claims {
		n++
		return &Claims{Issuer: "as1", Subject: "client-1", Audience: []string{"coapca-rs"}, IssuedAt: f.now,
			Expires: f.now.Add(time.Hour), CTI: []byte{byte(n)}, Scope: "est",
			OSCORE: &InputMaterial{ID: []byte{1}, MasterSecret: bytes.Repeat([]byte{7}, 16), Salt: []byte{1, 2, 3}}}
	}
	return f
}

// token protects c as the AS does: with the Encrypt0 key, or MACed/signed with key and then
// encrypted (nested).
func (f *rsFixture) token(t *testing.T, c *Claims, key string) []byte {
	t.Helper()
	var inner *Key
	if k := f.keys[key]; k.Alg != AlgAESCCM16_64_128 {
		inner = &k
	}
	tok, err := ProtectToken(c.Marshal(), inner, f.keys["encrypt0"], rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func post(tok []byte) []byte {
	return (&AuthzInfoRequest{AccessToken: tok, Nonce1: []byte{1, 2, 3, 4, 5, 6, 7, 8}, ClientRecipientID: []byte{0x42}}).Marshal()
}

// TestAuthzInfoRefusals is the refusal table of RFC 9200 §5.10.1.1 / RFC 9203 §4.1, each row an
// attack: nothing is granted or installed for any of them.
func TestAuthzInfoRefusals(t *testing.T) {
	for _, tt := range []struct {
		name   string
		body   func(f *rsFixture) []byte
		want   error // nil: a malformed body (4.00)
		unauth bool
	}{
		{"expired token", func(f *rsFixture) []byte {
			c := f.claim()
			c.Expires = f.now.Add(-time.Second)
			return post(f.token(t, c, "mac0-64"))
		}, ErrExpired, true},
		{"token without exp", func(f *rsFixture) []byte {
			c := f.claim()
			c.Expires = time.Time{}
			return post(f.token(t, c, "mac0-64"))
		}, ErrExpired, true},
		{"not yet valid", func(f *rsFixture) []byte {
			c := f.claim()
			c.NotBefore = f.now.Add(time.Minute)
			return post(f.token(t, c, "mac0-64"))
		}, ErrExpired, true},
		{"token for another audience", func(f *rsFixture) []byte {
			c := f.claim()
			c.Audience = []string{"other-rs"}
			return post(f.token(t, c, "encrypt0"))
		}, ErrAudience, true},
		{"token from an unknown issuer", func(f *rsFixture) []byte {
			c := f.claim()
			c.Issuer = "rogue-as"
			return post(f.token(t, c, "encrypt0"))
		}, ErrIssuer, true},
		{"bad MAC", func(f *rsFixture) []byte {
			// A Mac0 with a wrong tag, then encrypted: the outer layer verifies, the inner not.
			c := f.claim()
			k := f.keys["mac0-64"]
			k.Secret = bytes.Repeat([]byte{0xee}, 32)
			tok, _ := ProtectToken(c.Marshal(), &k, f.keys["encrypt0"], rand.Reader)
			return post(tok)
		}, ErrVerify, true},
		{"bad signature", func(f *rsFixture) []byte {
			other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			k := f.keys["sign1"]
			k.PrivateKey = other
			tok, _ := ProtectToken(f.claim().Marshal(), &k, f.keys["encrypt0"], rand.Reader)
			return post(tok)
		}, ErrVerify, true},
		{"master secret in a MACed token, unencrypted", func(f *rsFixture) []byte {
			tok, _ := Protect(f.claim().Marshal(), f.keys["mac0-64"], rand.Reader)
			return post(tok)
		}, ErrPlaintextKey, true},
		{"master secret in a signed token, unencrypted", func(f *rsFixture) []byte {
			tok, _ := Protect(f.claim().Marshal(), f.keys["sign1"], rand.Reader)
			return post(tok)
		}, ErrPlaintextKey, true},
		{"encrypted token nested in an encrypted token", func(f *rsFixture) []byte {
			inner := f.token(t, f.claim(), "encrypt0")
			tok, _ := Protect(inner, f.keys["encrypt0"], rand.Reader)
			return post(tok)
		}, ErrMalformed, true},
		{"tampered ciphertext", func(f *rsFixture) []byte {
			tok := f.token(t, f.claim(), "encrypt0")
			tok[len(tok)-3] ^= 0x80
			return post(tok)
		}, ErrVerify, true},
		{"unknown kid", func(f *rsFixture) []byte {
			k := f.keys["encrypt0"]
			k.KID = []byte("nope")
			tok, _ := Protect(f.claim().Marshal(), k, rand.Reader)
			return post(tok)
		}, ErrUnknownKey, true},
		{"unknown kid of the inner layer", func(f *rsFixture) []byte {
			k := f.keys["mac0-64"]
			k.KID = []byte("nope")
			tok, _ := ProtectToken(f.claim().Marshal(), &k, f.keys["encrypt0"], rand.Reader)
			return post(tok)
		}, ErrUnknownKey, true},
		{"no OSCORE input material", func(f *rsFixture) []byte {
			c := f.claim()
			c.OSCORE = nil
			return post(f.token(t, c, "mac0-64"))
		}, ErrNoOSCORE, true},
		{"unknown scope operation", func(f *rsFixture) []byte {
			c := f.claim()
			c.Scope = "revoke"
			return post(f.token(t, c, "mac0-64"))
		}, ErrMalformed, true},
		{"body without nonce1", func(f *rsFixture) []byte {
			b, _ := cbor.Marshal(map[int][]byte{1: f.token(t, f.claim(), "mac0-64"), 43: {1}})
			return b
		}, nil, false},
		{"recipient id too long", func(f *rsFixture) []byte {
			return (&AuthzInfoRequest{AccessToken: f.token(t, f.claim(), "mac0-64"), Nonce1: []byte{1},
				ClientRecipientID: make([]byte, 8)}).Marshal()
		}, nil, false},
		{"not CBOR", func(f *rsFixture) []byte { return []byte("hello") }, nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newRS(t)
			_, err := f.rs.AuthzInfo(tt.body(f))
			if err == nil {
				t.Fatal("accepted")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
			if Unauthorized(err) != tt.unauth {
				t.Errorf("Unauthorized(%v) = %v, want %v", err, Unauthorized(err), tt.unauth)
			}
			if len(f.ctxs.ctxs) != 0 || len(f.gr.granted) != 0 {
				t.Errorf("refused token left state: %d contexts, %d grants", len(f.ctxs.ctxs), len(f.gr.granted))
			}
		})
	}
}

// TestAuthzInfoReplay: the same token posted twice (attack: a captured token replayed with the
// attacker's own nonce) is refused the second time; the first context stays.
func TestAuthzInfoReplay(t *testing.T) {
	f := newRS(t)
	tok := f.token(t, f.claim(), "encrypt0")
	if _, err := f.rs.AuthzInfo(post(tok)); err != nil {
		t.Fatal(err)
	}
	_, err := f.rs.AuthzInfo(post(tok))
	if !errors.Is(err, ErrReplay) || !Unauthorized(err) {
		t.Fatalf("replayed token: %v", err)
	}
	if len(f.ctxs.ctxs) != 1 || len(f.gr.granted) != 1 {
		t.Fatalf("%d contexts, %d grants after a replay", len(f.ctxs.ctxs), len(f.gr.granted))
	}
}

// TestAuthzInfoGrantRefused: when the authority refuses the grant (unknown label in the scope),
// no context is installed.
func TestAuthzInfoGrantRefused(t *testing.T) {
	f := newRS(t)
	f.gr.refuse = errors.New("unknown label")
	if _, err := f.rs.AuthzInfo(post(f.token(t, f.claim(), "mac0-64"))); !Unauthorized(err) {
		t.Fatalf("err = %v", err)
	}
	if len(f.ctxs.ctxs) != 0 {
		t.Fatal("context installed for a refused grant")
	}
}

// TestAuthzInfoDerivation: client and RS derive matching contexts (RFC 9203 §4.3): a request
// the client protects verifies at the RS, and a second token for the same client replaces the
// first context and grant.
func TestAuthzInfoDerivation(t *testing.T) {
	f := newRS(t)
	c := f.claim()
	nonce1 := []byte{9, 9, 9, 9, 9, 9, 9, 9}
	id1 := []byte{0x42}
	body := (&AuthzInfoRequest{AccessToken: f.token(t, c, "sign1"), Nonce1: nonce1, ClientRecipientID: id1}).Marshal()
	resp, err := f.rs.AuthzInfo(body)
	if err != nil {
		t.Fatal(err)
	}
	wire := resp.Marshal()
	back, err := ParseAuthzInfoResponse(wire)
	if err != nil || len(back.Nonce2) != NonceSize || bytes.Equal(back.ServerRecipientID, id1) {
		t.Fatalf("response %+v, %v", back, err)
	}
	cp, err := ContextParams(c.OSCORE, nonce1, back.Nonce2, id1, back.ServerRecipientID, true)
	if err != nil {
		t.Fatal(err)
	}
	client, err := oscore.NewContext(cp)
	if err != nil {
		t.Fatal(err)
	}
	var server *oscore.Context
	for k := range f.ctxs.ctxs {
		server = k
	}
	cs, cr, civ := client.Keys()
	ss, sr, siv := server.Keys()
	if !bytes.Equal(cs, sr) || !bytes.Equal(cr, ss) || !bytes.Equal(civ, siv) {
		t.Fatal("client and server contexts differ")
	}
	// A new token for the same client supersedes the first.
	first := f.ctxs.ctxs[server]
	if _, err := f.rs.AuthzInfo(post(f.token(t, f.claim(), "mac0-64"))); err != nil {
		t.Fatal(err)
	}
	if _, still := f.ctxs.ctxs[server]; still || len(f.ctxs.ctxs) != 1 {
		t.Fatal("old context kept after a new token")
	}
	if _, still := f.gr.granted[first]; still {
		t.Fatal("old grant kept after a new token")
	}
}

// TestMasterSalt checks the §4.3 construction byte by byte with the nonces of the RFC's example:
// Master Salt = bstr(salt) | bstr(N1) | bstr(N2).
func TestMasterSalt(t *testing.T) {
	n1, n2 := mustHex(t, "018a278f7faab55a"), mustHex(t, "25a8991cd700ac01")
	salt := mustHex(t, "f9af838368e353e78888e1426bd94e6f")
	p, err := ContextParams(&InputMaterial{ID: []byte{1}, MasterSecret: []byte{1}, Salt: salt, ContextID: []byte{0xab}},
		n1, n2, []byte{1}, []byte{2}, false)
	if err != nil {
		t.Fatal(err)
	}
	want := mustHex(t, "50 f9af838368e353e78888e1426bd94e6f 48 018a278f7faab55a 48 25a8991cd700ac01")
	if !bytes.Equal(p.MasterSalt, want) {
		t.Fatalf("Master Salt %x, want %x", p.MasterSalt, want)
	}
	if !bytes.Equal(p.IDContext, []byte{0xab}) || !bytes.Equal(p.SenderID, []byte{1}) || !bytes.Equal(p.RecipientID, []byte{2}) {
		t.Fatalf("params %+v", p)
	}
	// An absent salt is the empty byte string (0x40).
	p, _ = ContextParams(&InputMaterial{ID: []byte{1}, MasterSecret: []byte{1}}, n1, n2, nil, []byte{2}, true)
	if !bytes.HasPrefix(p.MasterSalt, []byte{0x40, 0x48}) {
		t.Fatalf("Master Salt without salt %x", p.MasterSalt)
	}
}

func TestScope(t *testing.T) {
	for _, tt := range []struct {
		in   string
		ok   bool
		want []Scope
	}{
		{"est", true, []Scope{{}}},
		{"enroll/sensors serverkeygen", true, []Scope{{Label: "sensors", Ops: []string{"enroll"}}, {Ops: []string{"serverkeygen"}}}},
		{"", false, nil},
		{"revoke", false, nil},
		{"est/a/b", false, nil},
	} {
		got, err := ParseScope(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("ParseScope(%q) err = %v", tt.in, err)
			continue
		}
		if tt.ok && len(got) != len(tt.want) {
			t.Errorf("ParseScope(%q) = %+v", tt.in, got)
		}
	}
	reg, _ := ParseScope("est/sensors enroll")
	for _, tt := range []struct {
		want string
		ok   bool
	}{
		{"est/sensors", true}, {"enroll/sensors", true}, {"enroll", true},
		{"serverkeygen", false}, {"est", false}, {"est/other", false},
	} {
		w, _ := ParseScope(tt.want)
		if Covers(reg, w) != tt.ok {
			t.Errorf("Covers(%q) = %v", tt.want, !tt.ok)
		}
	}
}

// TestAuthzInfoNoSubjectKeepsOthers is the attack of a client holding any valid token without a
// sub claim (another AS's tokens may carry none) posting it to evict the context and grant of
// every other sub-less client of the same AS: without a subject the RS cannot tell that two
// tokens are for the same client (RFC 9203 §4.4 replaces the context of the same client only),
// so neither token supersedes the other.
func TestAuthzInfoNoSubjectKeepsOthers(t *testing.T) {
	for _, tt := range []struct {
		name           string
		sub1, sub2     string
		wantCtx, wantG int
	}{
		{name: "two clients without sub", wantCtx: 2, wantG: 2},
		{name: "same sub supersedes", sub1: "client-1", sub2: "client-1", wantCtx: 1, wantG: 1},
		{name: "sub-less after a subject", sub1: "client-1", wantCtx: 2, wantG: 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newRS(t)
			c1, c2 := f.claim(), f.claim()
			c1.Subject, c2.Subject = tt.sub1, tt.sub2
			if _, err := f.rs.AuthzInfo(post(f.token(t, c1, "encrypt0"))); err != nil {
				t.Fatal(err)
			}
			if _, err := f.rs.AuthzInfo(post(f.token(t, c2, "encrypt0"))); err != nil {
				t.Fatal(err)
			}
			if len(f.ctxs.ctxs) != tt.wantCtx || len(f.gr.granted) != tt.wantG {
				t.Fatalf("%d contexts, %d grants; want %d, %d", len(f.ctxs.ctxs), len(f.gr.granted), tt.wantCtx, tt.wantG)
			}
			if _, ok := f.gr.granted[hex.EncodeToString(c2.CTI)]; !ok {
				t.Fatal("the second token's grant is missing")
			}
		})
	}
}

// TestContextParamsEqualIDs is the attack of an on-path rewriter of the unprotected
// /authz-info answer (RFC 9203 §4.2) setting ace_server_recipientid to the client's own
// ace_client_recipientid: neither side may derive a context whose Sender ID is its Recipient
// ID (RFC 8613 §3.3), so the client stops instead of sending under the server's Sender Key.
func TestContextParamsEqualIDs(t *testing.T) {
	m := &InputMaterial{ID: []byte{1}, MasterSecret: bytes.Repeat([]byte{7}, 16)}
	n1, n2 := []byte{1, 2, 3, 4, 5, 6, 7, 8}, []byte{8, 7, 6, 5, 4, 3, 2, 1}
	for _, tt := range []struct {
		name   string
		id1    []byte
		id2    []byte
		client bool
		ok     bool
	}{
		{"client, equal", []byte{0x42}, []byte{0x42}, true, false},
		{"server, equal", []byte{0x42}, []byte{0x42}, false, false},
		{"client, both empty", []byte{}, nil, true, false},
		{"client, distinct", []byte{0x42}, []byte{0x01}, true, true},
		{"client, empty and one byte", []byte{}, []byte{0}, true, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ContextParams(m, n1, n2, tt.id1, tt.id2, tt.client)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
			if err == nil && bytes.Equal(p.SenderID, p.RecipientID) {
				t.Fatalf("Sender ID = Recipient ID = %x", p.SenderID)
			}
		})
	}
}
