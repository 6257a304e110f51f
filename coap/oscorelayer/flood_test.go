package oscorelayer

import (
	"bytes"
	"context"
	"crypto/x509"
	"net/netip"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"coapca/coap"
	"coapca/edhoc"
	"coapca/oscore"
)

// newMessage1 returns the payload of a fresh EDHOC message_1 request (CBOR true ‖ message_1).
func newMessage1(t *testing.T, f *fixture) []byte {
	t.Helper()
	cred, err := edhoc.NewX509Credential([]*x509.Certificate{f.pki.device}, edhoc.ByX5Chain)
	if err != nil {
		t.Fatal(err)
	}
	init, err := edhoc.NewInitiator(edhoc.Config{Suites: []edhoc.Suite{edhoc.Suite2}, Credential: cred,
		PrivateKey: f.pki.devKey, Resolve: func(*edhoc.IDCred, []edhoc.EAD) (*edhoc.Credential, error) { return nil, edhoc.ErrUnknownCredential }})
	if err != nil {
		t.Fatal(err)
	}
	defer init.Close()
	m1, err := init.Message1(nil)
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte{0xf5}, m1...)
}

func postEDHOC(t *testing.T, c *coap.Client, payload []byte) *coap.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.Do(ctx, &coap.ClientRequest{Method: codes.POST, Path: WellKnownEDHOC, ContentFormat: coap.CF(CFCIDEDHOC), Payload: payload})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestEDHOCMessage1Flood is the attack of issue 8 item 11 and its variants: one message_1
// replayed many times, from proven addresses and from spoofed ones, and many distinct
// message_1s from one address. The replays cost no new ECDH or signature and no new
// handshake state, the spoofed copies cost nothing at all, one address holds at most
// MaxSessionsPerSource states, and a legitimate Initiator still completes its handshake.
func TestEDHOCMessage1Flood(t *testing.T) {
	const perSource = 4
	f := newFixture(t, ServerConfig{MaxSessions: 64, MaxSessionsPerSource: perSource}, nil)

	// One captured message_1, replayed from ten proven ports, 30 times each.
	m1 := newMessage1(t, f)
	var first []byte
	for range 10 {
		c := f.dial(t, nil)
		for range 30 {
			r := postEDHOC(t, c, m1)
			if r.Code != codes.Changed {
				t.Fatalf("replayed message_1: %v", r.Code)
			}
			if first == nil {
				first = r.Payload
			} else if !bytes.Equal(r.Payload, first) {
				t.Fatal("a replayed message_1 got a new message_2")
			}
		}
	}
	if got := f.layer.Counters(); got.Message2 != 1 || got.Message2Resent != 299 {
		t.Fatalf("300 copies of one message_1: %+v, want one message_2 made and 299 resent", got)
	}
	if s, _ := f.layer.Stats(); s != 1 {
		t.Fatalf("300 copies of one message_1 hold %d handshake states", s)
	}

	// The same message_1 from a thousand spoofed sources: each gets a small challenge only.
	pc := &fakePC{}
	for i := range 1000 {
		req := &message.Message{Type: message.Confirmable, Code: codes.POST, MessageID: int32(i), Token: []byte{1, 2, 3, 4},
			Options: message.Options{{ID: message.URIPath, Value: []byte(".well-known")}, {ID: message.URIPath, Value: []byte("edhoc")},
				{ID: message.ContentFormat, Value: []byte{CFCIDEDHOC}}}, Payload: m1}
		f.srv.HandleDatagram(pc, netip.AddrPortFrom(netip.AddrFrom4([4]byte{203, 0, 113, 9}), uint16(1024+i)), encodeMsg(t, req))
	}
	pc.mu.Lock()
	if len(pc.out) == 0 {
		t.Fatal("spoofed message_1s were not challenged")
	}
	for _, b := range pc.out {
		if len(b) > 3*(len(m1)+30) {
			t.Fatalf("a spoofed message_1 was answered with %d bytes", len(b))
		}
	}
	pc.mu.Unlock()
	if got := f.layer.Counters(); got.Message2 != 1 {
		t.Fatalf("spoofed message_1s made the responder work: %+v", got)
	}

	// Fresh message_1s from one address: its handshake states stay capped.
	c := f.dial(t, nil)
	for range 40 {
		if r := postEDHOC(t, c, newMessage1(t, f)); r.Code != codes.Changed {
			t.Fatalf("fresh message_1: %v", r.Code)
		}
	}
	if s, _ := f.layer.Stats(); s > perSource {
		t.Fatalf("one address holds %d handshake states, cap %d", s, perSource)
	}
	if got := f.layer.Counters(); got.Evicted == 0 {
		t.Fatalf("no handshake state evicted: %+v", got)
	}

	// A legitimate Initiator (on the same address) completes EDHOC and uses the context.
	ec := edhocClient(t, f, true)
	if resp := get(t, f.dial(t, ec), []byte("csr")); resp.Code != codes.Content {
		t.Fatalf("legitimate EDHOC client after the flood: %v", resp.Code)
	}
}

// TestOSCOREGarbageFromSpoofedSources: OSCORE requests skip the address check (the layer
// authenticates them), so garbage with an OSCORE option from spoofed sources reaches the
// layer. Its error answers stay within three times the request, the sessions such sources
// open stay within the per-address and overall caps without displacing a proven peer, and a
// legitimate pre-shared-context client keeps working.
func TestOSCOREGarbageFromSpoofedSources(t *testing.T) {
	f := newFixtureCoAP(t, ServerConfig{}, mustContext(t, pskParams(true, nil)), coap.Config{MaxSessionsPerIP: 32, MaxSessions: 100})
	// A plain client proves its address before the flood.
	plain := f.dial(t, nil)
	wellKnown := func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r, err := plain.Do(ctx, &coap.ClientRequest{Method: codes.GET, Path: "/.well-known/core"})
		if err != nil || r.Code != codes.Content {
			t.Fatalf("plain client: %v %v", r, err)
		}
	}
	wellKnown()
	challenges := f.srv.Stats().EchoChallenges
	tests := []struct {
		name string
		msg  *message.Message
	}{
		{"empty OSCORE option", &message.Message{Type: message.Confirmable, Code: codes.POST,
			Options: message.Options{{ID: oscore.OptionNumber, Value: []byte{}}}}},
		{"unknown kid", &message.Message{Type: message.Confirmable, Code: codes.POST, Token: []byte{9},
			Options: message.Options{{ID: oscore.OptionNumber, Value: []byte{0x09, 0x01, 0x77}}}, Payload: make([]byte, 9)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pc := &fakePC{}
			for i := range 1000 {
				tc.msg.MessageID = int32(i)
				b := encodeMsg(t, tc.msg)
				pc.mu.Lock()
				pc.out = pc.out[:0]
				pc.mu.Unlock()
				f.srv.HandleDatagram(pc, netip.AddrPortFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(i % 8)}), uint16(1024+i)), b)
				pc.mu.Lock()
				for _, o := range pc.out {
					if len(o) > 3*len(b) {
						pc.mu.Unlock()
						t.Fatalf("a %d-byte spoofed request was answered with %d bytes", len(b), len(o))
					}
				}
				pc.mu.Unlock()
			}
			if n := f.srv.Stats().ActiveSessions; n > 100 {
				t.Fatalf("%d sessions, cap 100", n)
			}
		})
	}
	// The proven peer kept its session: it is not challenged again.
	wellKnown()
	if n := f.srv.Stats().EchoChallenges; n != challenges {
		t.Fatalf("the proven client was challenged again (%d challenges, %d before the flood): its session was displaced", n, challenges)
	}
	c := f.dial(t, NewClient(mustContext(t, pskParams(false, nil))))
	if resp := get(t, c, nil); resp.Code != codes.Content {
		t.Fatalf("legitimate OSCORE client: %v", resp.Code)
	}
}
