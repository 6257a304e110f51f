package oscorelayer

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"coapca/coap"
	"coapca/edhoc"
	"coapca/internal/testpki"
	"coapca/oscore"
)

// testPKI is a CA with a server and a device certificate (ECDSA P-256).
type testPKI struct {
	ca                *x509.Certificate
	caKey             crypto.Signer
	server, device    *x509.Certificate
	serverKey, devKey *ecdsa.PrivateKey
	revoked           sync.Map // string(DER) → true: verify refuses these certificates
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	ca := testpki.NewCA(t, "test CA")
	srv := ca.NewLeaf(t, &x509.Certificate{Subject: pkix.Name{CommonName: "server"}})
	dev := ca.NewLeaf(t, &x509.Certificate{Subject: pkix.Name{CommonName: "device"}})
	return &testPKI{ca: ca.Cert, caKey: ca.Key, server: srv.Cert, device: dev.Cert,
		serverKey: srv.Key.(*ecdsa.PrivateKey), devKey: dev.Key.(*ecdsa.PrivateKey)}
}

func (p *testPKI) verify(raw [][]byte) ([]*x509.Certificate, error) {
	leaf, err := x509.ParseCertificate(raw[0])
	if err != nil {
		return nil, err
	}
	if _, revoked := p.revoked.Load(string(raw[0])); revoked {
		return nil, errors.New("certificate revoked")
	}
	roots := x509.NewCertPool()
	roots.AddCert(p.ca)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots}); err != nil {
		return nil, err
	}
	return []*x509.Certificate{leaf, p.ca}, nil
}

// seen is what the protected resource saw of its last request.
type seen struct {
	mu   sync.Mutex
	peer coap.Peer
	n    atomic.Int64
}

type fixture struct {
	pki   *testPKI
	layer *Server
	srv   *coap.Server
	url   string
	seen  *seen
	clock *fakeClock
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// pskParams is the RFC 8613 Appendix C.1.1 context: the server's side when server is true.
func pskParams(server bool, store oscore.SequenceStore) oscore.Params {
	p := oscore.Params{MasterSecret: []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		MasterSalt: []byte{0x9e, 0x7c, 0xa9, 0x22, 0x23, 0x78, 0x63, 0x40}, SenderID: []byte{}, RecipientID: []byte{1},
		SequenceStore: store}
	if server {
		p.SenderID, p.RecipientID = p.RecipientID, p.SenderID
	}
	return p
}

func newFixture(t testing.TB, cfg ServerConfig, psk *oscore.Context) *fixture {
	t.Helper()
	return newFixtureCoAP(t, cfg, psk, coap.Config{})
}

// newFixtureCoAP is newFixture with the coap server's configuration.
func newFixtureCoAP(t testing.TB, cfg ServerConfig, psk *oscore.Context, ccfg coap.Config) *fixture {
	t.Helper()
	pki := newTestPKI(t)
	clock := &fakeClock{t: time.Now()}
	cred, err := edhoc.NewX509Credential([]*x509.Certificate{pki.server, pki.ca}, edhoc.ByX5Chain)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Credential, cfg.PrivateKey, cfg.VerifyPeer, cfg.Now = cred, pki.serverKey, pki.verify, clock.Now
	layer := NewServer(cfg)
	if psk != nil {
		layer.AddContext(psk, Identity{Name: "psk-1"})
	}
	sn := &seen{}
	mux := coap.NewMux()
	mux.Handle(coap.Resource{Path: "/r", OSCORE: true, Handler: coap.HandlerFunc(func(_ context.Context, r *coap.Request) *coap.Response {
		sn.mu.Lock()
		sn.peer = r.Peer
		sn.mu.Unlock()
		sn.n.Add(1)
		// A body larger than one block exercises inner block-wise (both directions).
		return &coap.Response{Code: codes.Content, ContentFormat: coap.CF(0), Payload: append(bytes.Repeat([]byte("x"), 1500), r.Payload...)}
	})})
	mux.Handle(layer.EDHOCResource())
	mux.SetLayer(layer)
	srv := coap.NewServer(mux, ccfg)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeUDP(pc)
	t.Cleanup(func() { srv.Close() })
	return &fixture{pki: pki, layer: layer, srv: srv, url: "coap://" + pc.LocalAddr().String(), seen: sn, clock: clock}
}

func (f *fixture) dial(t testing.TB, l coap.ClientLayer) *coap.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := coap.Dial(ctx, f.url, coap.ClientOptions{Layer: l, BlockSize: 256})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func get(t testing.TB, c *coap.Client, payload []byte) *coap.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m := codes.GET
	if payload != nil {
		m = codes.POST
	}
	resp, err := c.Do(ctx, &coap.ClientRequest{Method: m, Path: "/r", Payload: payload})
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func mustContext(t testing.TB, p oscore.Params) *oscore.Context {
	t.Helper()
	c, err := oscore.NewContext(p)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestPreSharedAndEcho(t *testing.T) {
	srvStore := oscore.NewMemorySequenceStore(0)
	cliStore := oscore.NewMemorySequenceStore(0)
	srvP := pskParams(true, srvStore)
	f := newFixture(t, ServerConfig{}, mustContext(t, srvP))
	c := f.dial(t, NewClient(mustContext(t, pskParams(false, cliStore))))
	body := bytes.Repeat([]byte("b"), 700) // Block1 at 256 bytes, protected block by block
	resp := get(t, c, body)
	if resp.Code != codes.Content || len(resp.Payload) != 1500+700 {
		t.Fatalf("got %v, %d bytes", resp.Code, len(resp.Payload))
	}
	f.seen.mu.Lock()
	id := f.seen.peer.OSCORE
	f.seen.mu.Unlock()
	if id == nil || id.Identity != "psk-1" || !bytes.Equal(id.KID, []byte{}) {
		t.Fatalf("peer identity %+v", id)
	}

	// A restart: the server's context is restored from its sequence store with an
	// unsynchronized replay window; the client (also restored) is challenged with Echo.
	ssnBefore := srvStore
	srvP2 := pskParams(true, ssnBefore)
	srvP2.ReplayWindowUnsynchronized = true
	restored := mustContext(t, srvP2)
	f2 := newFixture(t, ServerConfig{}, restored)
	c2 := f2.dial(t, NewClient(mustContext(t, pskParams(false, cliStore))))
	if resp := get(t, c2, nil); resp.Code != codes.Content {
		t.Fatalf("after restart: %v", resp.Code)
	}
	if !restored.ReplayWindowSynchronized() {
		t.Error("the replay window was not resynchronised by Echo")
	}
	if f2.seen.n.Load() != 1 {
		t.Errorf("handler ran %d times, want 1 (the Echo challenge must not reach it)", f2.seen.n.Load())
	}
}

// fakePC records what the server writes (for raw datagram tests and fuzzing).
type fakePC struct {
	mu    sync.Mutex
	out   [][]byte
	wrote chan struct{} // closed (and dropped) by the next write
}

func (p *fakePC) WriteTo(b []byte, _ net.Addr) (int, error) {
	p.mu.Lock()
	p.out = append(p.out, append([]byte(nil), b...))
	if p.wrote != nil {
		close(p.wrote)
		p.wrote = nil
	}
	p.mu.Unlock()
	return len(b), nil
}
func (p *fakePC) ReadFrom([]byte) (int, net.Addr, error) { return 0, nil, net.ErrClosed }
func (p *fakePC) Close() error                           { return nil }
func (p *fakePC) LocalAddr() net.Addr                    { return &net.UDPAddr{} }
func (p *fakePC) SetDeadline(time.Time) error            { return nil }
func (p *fakePC) SetReadDeadline(time.Time) error        { return nil }
func (p *fakePC) SetWriteDeadline(time.Time) error       { return nil }

func (p *fakePC) waitFor(t *testing.T, mid uint16) *message.Message {
	t.Helper()
	timeout := time.After(10 * time.Second) // only a guard against a hang
	for {
		p.mu.Lock()
		for _, b := range p.out {
			m := message.Message{Options: make(message.Options, 0, 32)}
			if _, err := coder.DefaultCoder.Decode(b, &m); err == nil && uint16(m.MessageID) == mid {
				p.mu.Unlock()
				return &m
			}
		}
		if p.wrote == nil {
			p.wrote = make(chan struct{})
		}
		wrote := p.wrote
		p.mu.Unlock()
		select {
		case <-wrote:
		case <-timeout:
			t.Fatalf("no answer to message %d", mid)
			return nil
		}
	}
}

func encodeMsg(t testing.TB, m *message.Message) []byte {
	n, err := coder.DefaultCoder.Size(*m)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, n)
	if _, err := coder.DefaultCoder.Encode(*m, b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestReplayRejected: the same OSCORE request under a new Message ID (so CoAP deduplication does
// not catch it) is refused with 4.01 "Replay detected" and never reaches the handler.
func TestReplayRejected(t *testing.T) {
	f := newFixture(t, ServerConfig{}, mustContext(t, pskParams(true, nil)))
	cli := mustContext(t, pskParams(false, nil))
	req := &message.Message{Code: codes.GET, Token: []byte{1, 2}, Type: message.Confirmable, MessageID: 100,
		Options: message.Options{{ID: message.URIPath, Value: []byte("r")}}}
	p, st, err := cli.ProtectRequest(req)
	if err != nil {
		t.Fatal(err)
	}
	p.Token, p.Type, p.MessageID = req.Token, message.Confirmable, 100
	pc := &fakePC{}
	addr := netip.MustParseAddrPort("192.0.2.1:5683")
	f.srv.HandleDatagram(pc, addr, encodeMsg(t, p))
	first := pc.waitFor(t, 100)
	if inner, err := cli.UnprotectResponse(st, first); err != nil || inner.Code != codes.Content {
		t.Fatalf("first: %v %v", first.Code, err)
	}
	p.MessageID = 101
	f.srv.HandleDatagram(pc, addr, encodeMsg(t, p))
	second := pc.waitFor(t, 101)
	if second.Code != codes.Unauthorized || !bytes.Contains(second.Payload, []byte("Replay")) {
		t.Fatalf("replay answered %v %q", second.Code, second.Payload)
	}
	if n := f.seen.n.Load(); n != 1 {
		t.Fatalf("handler ran %d times", n)
	}
	// Unprotected request to the OSCORE resource → 4.01.
	plain := &message.Message{Code: codes.GET, Type: message.Confirmable, MessageID: 102,
		Options: message.Options{{ID: message.URIPath, Value: []byte("r")}}}
	f.srv.HandleDatagram(pc, addr, encodeMsg(t, plain))
	if m := pc.waitFor(t, 102); m.Code != codes.Unauthorized {
		t.Fatalf("unprotected: %v", m.Code)
	}
}

func edhocClient(t testing.TB, f *fixture, separate bool) *EDHOCClient {
	t.Helper()
	cred, err := edhoc.NewX509Credential([]*x509.Certificate{f.pki.device}, edhoc.ByX5Chain)
	if err != nil {
		t.Fatal(err)
	}
	ec, err := NewEDHOCClient(EDHOCConfig{Credential: cred, PrivateKey: f.pki.devKey, VerifyPeer: f.pki.verify, Separate: separate})
	if err != nil {
		t.Fatal(err)
	}
	return ec
}

func TestEDHOC(t *testing.T) {
	for _, separate := range []bool{false, true} {
		name := "combined"
		if separate {
			name = "separate"
		}
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, ServerConfig{}, nil)
			ec := edhocClient(t, f, separate)
			c := f.dial(t, ec)
			for range 3 {
				if resp := get(t, c, []byte("csr")); resp.Code != codes.Content {
					t.Fatalf("got %v", resp.Code)
				}
			}
			f.seen.mu.Lock()
			peer := f.seen.peer
			f.seen.mu.Unlock()
			if peer.OSCORE == nil || len(peer.Certificates) == 0 || peer.Certificates[0].Subject.CommonName != "device" {
				t.Fatalf("peer %+v", peer)
			}
			if cb := ec.ChannelBinding(); len(cb) != ChannelBindingLength || !bytes.Equal(cb, peer.OSCORE.ChannelBinding) {
				t.Fatalf("edhoc-unique differs: %x vs %x", cb, peer.OSCORE.ChannelBinding)
			}
			if pc := ec.PeerChain(); len(pc) == 0 || pc[0].Subject.CommonName != "server" {
				t.Fatalf("server chain %v", pc)
			}
			if sess, ctxs := f.layer.Stats(); sess != 0 || ctxs != 1 {
				t.Fatalf("sessions %d contexts %d after the handshake", sess, ctxs)
			}
		})
	}
}

// TestEDHOCAbandoned: a handshake that never sends message_3 is freed after SessionTimeout,
// the table is capped, and an idle derived context is dropped after ContextIdle.
func TestEDHOCAbandoned(t *testing.T) {
	f := newFixture(t, ServerConfig{MaxSessions: 2, SessionTimeout: time.Minute, ContextIdle: time.Hour}, nil)
	c := f.dial(t, nil)
	message1 := func() *coap.Response {
		cred, _ := edhoc.NewX509Credential([]*x509.Certificate{f.pki.device}, edhoc.ByX5Chain)
		init, err := edhoc.NewInitiator(edhoc.Config{Suites: []edhoc.Suite{edhoc.Suite2}, Credential: cred,
			PrivateKey: f.pki.devKey, Resolve: func(*edhoc.IDCred, []edhoc.EAD) (*edhoc.Credential, error) { return nil, edhoc.ErrUnknownCredential }})
		if err != nil {
			t.Fatal(err)
		}
		m1, _ := init.Message1(nil)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := c.Do(ctx, &coap.ClientRequest{Method: codes.POST, Path: WellKnownEDHOC, ContentFormat: coap.CF(CFCIDEDHOC),
			Payload: append([]byte{0xf5}, m1...)})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	for i := range 2 {
		if r := message1(); r.Code != codes.Changed || r.ContentFormat != coap.CF(CFEDHOC) {
			t.Fatalf("message_1 #%d: %v cf %v", i, r.Code, r.ContentFormat)
		}
	}
	if r := message1(); r.Code != codes.ServiceUnavailable || r.MaxAge != coap.MaxAge(5) {
		t.Fatalf("over the cap: %v max-age %v", r.Code, r.MaxAge)
	}
	if s, _ := f.layer.Stats(); s != 2 {
		t.Fatalf("%d sessions", s)
	}
	f.clock.Add(61 * time.Second)
	f.layer.Sweep()
	if s, _ := f.layer.Stats(); s != 0 {
		t.Fatalf("%d abandoned sessions kept after the timeout", s)
	}
	if r := message1(); r.Code != codes.Changed {
		t.Fatalf("after the sweep: %v", r.Code)
	}

	// A completed handshake's context is dropped when idle.
	ec := edhocClient(t, f, false)
	get(t, f.dial(t, ec), nil)
	if _, n := f.layer.Stats(); n != 1 {
		t.Fatalf("%d contexts", n)
	}
	f.clock.Add(2 * time.Hour)
	f.layer.Sweep()
	if _, n := f.layer.Stats(); n != 0 {
		t.Fatalf("%d idle contexts kept", n)
	}

	// message_3 for an unknown C_R and garbage get EDHOC error messages in 4.00.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, p := range [][]byte{{0x37, 0x41, 0x00}, {0xff}, {0xf5, 0xff}} {
		r, err := c.Do(ctx, &coap.ClientRequest{Method: codes.POST, Path: WellKnownEDHOC, ContentFormat: coap.CF(CFCIDEDHOC), Payload: p})
		if err != nil {
			t.Fatal(err)
		}
		if r.Code != codes.BadRequest || r.ContentFormat != coap.CF(CFEDHOC) {
			t.Fatalf("%x: %v cf %v", p, r.Code, r.ContentFormat)
		}
		if _, err := edhoc.ParseErrorMessage(r.Payload); err != nil {
			t.Fatalf("%x: not an EDHOC error message: %v", p, err)
		}
	}
}

func TestSplitBstr(t *testing.T) {
	for _, tc := range []struct {
		in   []byte
		item int
		bad  bool
	}{
		{[]byte{0x43, 1, 2, 3, 9}, 4, false},
		{[]byte{0x58, 2, 1, 2}, 4, false},
		{[]byte{0x59, 0, 1, 7, 8}, 4, false},
		{[]byte{0x43, 1}, 0, true},
		{[]byte{0x01}, 0, true},
		{[]byte{0x5f}, 0, true},
		{[]byte{0x5a, 0xff, 0xff, 0xff, 0xff}, 0, true},
		{nil, 0, true},
	} {
		item, _, err := splitBstr(tc.in)
		if (err != nil) != tc.bad || len(item) != tc.item {
			t.Errorf("%x: item %x err %v", tc.in, item, err)
		}
	}
}

// TestConnIDDiffersFromCI: C_R is never C_I (RFC 9528 §3.3), whatever the draw.
func TestConnIDDiffersFromCI(t *testing.T) {
	s := NewServer(ServerConfig{})
	for i := range 2000 {
		ci := []byte{byte(i)}
		s.mu.Lock()
		cr, ok := s.freeConnIDLocked(ci)
		s.mu.Unlock()
		if !ok || bytes.Equal(cr, ci) {
			t.Fatalf("C_R %x for C_I %x (ok %v)", cr, ci, ok)
		}
	}
}

// BenchmarkPreSharedRequest: one OSCORE-protected request over loopback with a pre-shared context.
func BenchmarkPreSharedRequest(b *testing.B) {
	f := newFixture(b, ServerConfig{}, mustContext(b, pskParams(true, nil)))
	c := f.dial(b, NewClient(mustContext(b, pskParams(false, nil))))
	b.ResetTimer()
	for b.Loop() {
		get(b, c, []byte("csr"))
	}
}

// BenchmarkEDHOCCombined: a whole EDHOC handshake plus the combined first request over loopback.
func BenchmarkEDHOCCombined(b *testing.B) {
	f := newFixture(b, ServerConfig{}, nil)
	b.ResetTimer()
	for b.Loop() {
		c := f.dial(b, edhocClient(b, f, false))
		get(b, c, []byte("csr"))
		c.Close()
	}
}

// TestOuterBlockwise: a request whose OSCORE message a proxy split into Outer Block1 blocks
// (RFC 8613 §4.1.3.4.2) is reassembled before it is verified: 2.31 Continue for the blocks,
// then the protected answer, and the handler sees the whole inner payload once.
func TestOuterBlockwise(t *testing.T) {
	f := newFixture(t, ServerConfig{}, mustContext(t, pskParams(true, nil)))
	cli := mustContext(t, pskParams(false, nil))
	body := bytes.Repeat([]byte("0123456789abcdef"), 30) // 480 bytes: 8 outer blocks of 64
	req := &message.Message{Code: codes.POST, Token: []byte{7}, Type: message.Confirmable,
		Options: message.Options{{ID: message.URIPath, Value: []byte("r")}}, Payload: body}
	p, st, err := cli.ProtectRequest(req)
	if err != nil {
		t.Fatal(err)
	}
	pc := &fakePC{}
	addr := netip.MustParseAddrPort("192.0.2.7:5683")
	const szx = 2 // 64-byte blocks
	n := (len(p.Payload) + 63) / 64
	var last *message.Message
	for i := range n {
		chunk := p.Payload[i*64 : min(len(p.Payload), (i+1)*64)]
		more := i < n-1
		v := uint32(i)<<4 | uint32(szx)
		if more {
			v |= 8
		}
		blk := *p
		blk.MessageID, blk.Payload = int32(200+i), chunk
		opts, _, err := append(message.Options(nil), p.Options...).AddUint32(make([]byte, 4), message.Block1, v)
		if err != nil {
			t.Fatal(err)
		}
		blk.Options = opts
		f.srv.HandleDatagram(pc, addr, encodeMsg(t, &blk))
		got := pc.waitFor(t, uint16(200+i))
		if echo, err := got.Options.GetBytes(252); i == 0 && got.Code == codes.Unauthorized && err == nil {
			// The address is unproven and a reassembly would hold state: answer the
			// challenge (RFC 9175 §2.3), as a proxy would.
			blk.MessageID = 199
			blk.Options = append(message.Options(nil), blk.Options...).Add(message.Option{ID: 252, Value: echo})
			f.srv.HandleDatagram(pc, addr, encodeMsg(t, &blk))
			got = pc.waitFor(t, 199)
		}
		if more {
			if got.Code != codes.Continue {
				t.Fatalf("block %d answered %v, want 2.31", i, got.Code)
			}
			continue
		}
		last = got
	}
	inner, err := cli.UnprotectResponse(st, last)
	if err != nil || inner.Code != codes.Content {
		t.Fatalf("final answer: %v %v", last.Code, err)
	}
	// The handler answers 1500 bytes plus the request body: the (inner block-wise) answer's
	// Size2 shows that it saw all of it.
	if size2, err := inner.Options.GetUint32(message.Size2); err != nil || int(size2) != 1500+len(body) {
		t.Fatalf("answer Size2 %d (%v), want %d: the handler did not see the whole payload", size2, err, 1500+len(body))
	}
	if got := f.seen.n.Load(); got != 1 {
		t.Fatalf("handler ran %d times", got)
	}
}

// TestTokenContextExpires: a context keyed by an ACE access token (RFC 9203) serves until the
// token's exp, then is deleted: attack — a client keeps using the context of an expired token;
// it gets the unprotected 4.01 of an unknown context (and fetches a new token), and nothing
// reaches the handler.
func TestTokenContextExpires(t *testing.T) {
	f := newFixture(t, ServerConfig{}, nil)
	f.layer.AddTokenContext(mustContext(t, pskParams(true, nil)), Identity{Token: "cti-1", Expires: f.clock.Now().Add(time.Minute)})
	c := f.dial(t, NewClient(mustContext(t, pskParams(false, nil))))
	if resp := get(t, c, nil); resp.Code != codes.Content {
		t.Fatalf("before exp: %v", resp.Code)
	}
	f.seen.mu.Lock()
	tok := f.seen.peer.OSCORE.Token
	f.seen.mu.Unlock()
	if tok != "cti-1" {
		t.Fatalf("the request's token reference is %q", tok)
	}
	f.clock.Add(time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.Do(ctx, &coap.ClientRequest{Method: codes.GET, Path: "/r"})
	if err == nil || !strings.Contains(err.Error(), "Unauthorized") {
		t.Fatalf("after exp: %v, want an unprotected 4.01", err)
	}
	if _, n := f.layer.Stats(); n != 0 {
		t.Fatalf("%d contexts held after the token expired", n)
	}
	if f.seen.n.Load() != 1 {
		t.Fatalf("handler ran %d times, want 1", f.seen.n.Load())
	}
}
