package coap

import (
	"bytes"
	"context"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"coapca/coap/coaptest"
)

func TestLoopbackBlockwise(t *testing.T) {
	ts := startTestServer(t, fastConfig())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, bs := range []int{16, 64, 256, 1024} {
		c := dialTest(t, ts, bs)
		before := ts.bigCalls.Load()
		r, err := c.Do(ctx, &ClientRequest{Method: codes.GET, Path: "/big"})
		if err != nil {
			t.Fatalf("bs %d GET: %v", bs, err)
		}
		if r.Code != codes.Content || !bytes.Equal(r.Payload, testBody(3000, 0x5a)) || r.ContentFormat != CF(42) {
			t.Fatalf("bs %d GET: code %v, %d bytes, cf %v", bs, r.Code, len(r.Payload), r.ContentFormat)
		}
		if n := ts.bigCalls.Load() - before; n != 1 {
			t.Errorf("bs %d: handler ran %d times for one GET", bs, n)
		}
		body := testBody(2000, 0x33)
		before = ts.echoCalls.Load()
		r, err = c.Do(ctx, &ClientRequest{Method: codes.POST, Path: "/echo", ContentFormat: CF(42), Payload: body})
		if err != nil {
			t.Fatalf("bs %d POST: %v", bs, err)
		}
		if r.Code != codes.Changed || !bytes.Equal(r.Payload, echoBody(body)) {
			t.Fatalf("bs %d POST: code %v %q (%d bytes)", bs, r.Code, r.Payload[:min(len(r.Payload), 40)], len(r.Payload))
		}
		if n := ts.echoCalls.Load() - before; n != 1 {
			t.Errorf("bs %d: handler ran %d times for one POST", bs, n)
		}
	}
	st := ts.srv.Stats()
	if st.Blockwise == 0 || st.Responses["2.31"] == 0 {
		t.Errorf("stats: %+v", st)
	}
}

func TestLoopbackSmallAndNotFound(t *testing.T) {
	ts := startTestServer(t, fastConfig())
	c := dialTest(t, ts, 0)
	ctx := context.Background()
	tests := []struct {
		path string
		code codes.Code
		body string
	}{
		{"/small", codes.Content, "hello"},
		{"/nope", codes.NotFound, ""},
		{"/tree/a/b", codes.Content, "/tree/a/b"},
		{"/hidden", codes.Content, ""},
		{"/slow", codes.Content, "slow answer"}, // separate response
	}
	for _, tt := range tests {
		r, err := c.Do(ctx, &ClientRequest{Method: codes.GET, Path: tt.path})
		if err != nil {
			t.Fatalf("%s: %v", tt.path, err)
		}
		if r.Code != tt.code || string(r.Payload) != tt.body {
			t.Errorf("%s: got %v %q, want %v %q", tt.path, r.Code, r.Payload, tt.code, tt.body)
		}
	}
}

func TestWellKnownCore(t *testing.T) {
	ts := startTestServer(t, fastConfig())
	c := dialTest(t, ts, 64) // forces Block2 for the full listing
	tests := []struct {
		query []string
		want  []string
	}{
		{nil, []string{"/small", "/big", "/echo", "/slow", "/obs", "/tree"}},
		{[]string{"rt=ace.est*"}, []string{"/big", "/echo"}},
		{[]string{"rt=ace.est.sen"}, []string{"/echo"}},
		{[]string{"ct=42"}, []string{"/big"}},
		{[]string{"href=/sm*"}, []string{"/small"}},
		{[]string{"rt=nothing"}, nil},
	}
	for _, tt := range tests {
		r, err := c.Do(context.Background(), &ClientRequest{Method: codes.GET, Path: "/.well-known/core", Query: tt.query})
		if err != nil {
			t.Fatal(err)
		}
		if r.ContentFormat != CF(40) {
			t.Errorf("ct %v", r.ContentFormat)
		}
		links, err := ParseLinkFormat(r.Payload)
		if err != nil {
			t.Fatalf("%v: %q: %v", tt.query, r.Payload, err)
		}
		var got []string
		for _, l := range links {
			got = append(got, l.Href)
		}
		if strings.Join(got, ",") != strings.Join(tt.want, ",") {
			t.Errorf("%v: got %v want %v", tt.query, got, tt.want)
		}
	}
}

// TestObserveLoopback runs on an in-memory link in a synctest bubble: the server registers an
// observer before it answers (so the first notification proves the registration), and the
// client's deregistration (RFC 7641 §3.6) is acknowledged before Observe returns.
func TestObserveLoopback(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ts := startLinkServer(t, Config{ACKTimeout: 200 * time.Millisecond, ObserveConEvery: 2})
		c := dialTest(t, ts, 0)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		got := make(chan string, 100)
		done := make(chan error, 1)
		go func() {
			done <- c.Observe(ctx, "/obs", func(r *Response) { got <- string(r.Payload) })
		}()
		if s := <-got; s != "state 0" {
			t.Fatalf("first: %q", s)
		}
		if n := ts.srv.Observers("/obs"); n != 1 {
			t.Fatalf("%d observers after the registration was answered", n)
		}
		big := strings.Repeat("x", 2500)
		for i := 1; i <= 4; i++ {
			payload := "state " + string(rune('0'+i))
			if i == 4 {
				payload = big // block-wise notification
			}
			ts.srv.Notify("/obs", NewResponse(codes.Content, []byte(payload)))
			if s := <-got; s != payload {
				t.Fatalf("notification %d: %q", i, s[:min(len(s), 20)])
			}
		}
		cancel()
		<-done
		if n := ts.srv.Observers("/obs"); n != 0 {
			t.Errorf("observer not removed after cancel: %d", n)
		}
	})
}

func TestObserverRemovedOnReset(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ts := startLinkServer(t, fastConfig())
		r := newRaw(t, ts)
		r.send(getReq(1, "tk", "/obs", message.Option{ID: message.Observe}))
		if m := r.recv(2 * time.Second); m == nil || m.Code != codes.Content || optUint(m.Options, message.Observe) < 0 {
			t.Fatalf("registration: %v", m)
		}
		ts.srv.Notify("/obs", NewResponse(codes.Content, []byte("n1")))
		m := r.recv(2 * time.Second)
		if m == nil || m.Type != message.NonConfirmable {
			t.Fatalf("notification: %v", m)
		}
		r.send(&message.Message{Type: message.Reset, MessageID: m.MessageID, Code: codes.Empty})
		synctest.Wait() // the server has handled the Reset
		if ts.srv.Observers("/obs") != 0 {
			t.Fatal("observer survived a Reset")
		}
	})
}

func TestMessagingRules(t *testing.T) {
	ts := startTestServer(t, fastConfig())
	r := newRaw(t, ts)

	// Unknown critical option → 4.02; OSCORE/EDHOC/Request-Tag/Echo are known.
	r.send(getReq(10, "a", "/small", message.Option{ID: 2049, Value: []byte{1}}))
	if m := r.recv(time.Second); m == nil || m.Code != codes.BadOption || m.Type != message.Acknowledgement || m.MessageID != 10 {
		t.Fatalf("unknown critical: %v", m)
	}
	r.send(getReq(11, "b", "/small", message.Option{ID: optEcho, Value: []byte{1}}, message.Option{ID: optRequestTag, Value: []byte{2}}))
	if m := r.recv(time.Second); m == nil || m.Code != codes.Content {
		t.Fatalf("known options: %v", m)
	}
	// The same in a NON is silently ignored; a NON request gets a NON response.
	nonBad := getReq(19, "n", "/small", message.Option{ID: 2049, Value: []byte{1}})
	nonBad.Type = message.NonConfirmable
	r.send(nonBad)
	nonOK := getReq(20, "n2", "/small")
	nonOK.Type = message.NonConfirmable
	r.send(nonOK)
	if m := r.recv(time.Second); m == nil || m.Type != message.NonConfirmable || string(m.Token) != "n2" || m.Code != codes.Content {
		t.Fatalf("NON: %v", m)
	}
	// Many options (more than the decoder's first guess of 16).
	deep := "/tree" + strings.Repeat("/x", 30)
	r.send(getReq(21, "deep", deep))
	if m := r.recv(time.Second); m == nil || string(m.Payload) != deep {
		t.Fatalf("deep path: %v", m)
	}
	// Unknown elective option is ignored.
	r.send(getReq(12, "c", "/small", message.Option{ID: 2048, Value: []byte{1}}))
	if m := r.recv(time.Second); m == nil || m.Code != codes.Content {
		t.Fatalf("elective: %v", m)
	}
	// Duplicate CON → same reply, handler once.
	before := ts.bigCalls.Load()
	for range 3 {
		r.send(getReq(13, "d", "/big"))
		if m := r.recv(time.Second); m == nil || m.MessageID != 13 || m.Code != codes.Content {
			t.Fatalf("dup: %v", m)
		}
	}
	if n := ts.bigCalls.Load() - before; n != 1 {
		t.Errorf("duplicates ran the handler %d times", n)
	}
	if ts.srv.Stats().Duplicates < 2 {
		t.Errorf("duplicates not counted")
	}
	// Ping → RST.
	r.send(&message.Message{Type: message.Confirmable, Code: codes.Empty, MessageID: 14})
	if m := r.recv(time.Second); m == nil || m.Type != message.Reset || m.MessageID != 14 {
		t.Fatalf("ping: %v", m)
	}
	// A Reset is never answered; garbage is dropped.
	r.send(&message.Message{Type: message.Reset, Code: codes.Empty, MessageID: 15})
	r.sendRaw([]byte{0xff, 0xff})
	r.sendRaw([]byte{0x40, 0x01})
	if m := r.recv(200 * time.Millisecond); m != nil {
		t.Fatalf("answered Reset/garbage: %v", m)
	}
	// Malformed options in a CON request with a readable header → 4.00.
	r.sendRaw([]byte{0x41, 0x01, 0x00, 0x10, 0xaa, 0xbf})
	if m := r.recv(time.Second); m == nil || m.Code != codes.BadRequest || m.MessageID != 16 {
		t.Fatalf("malformed: %v", m)
	}
	// Block2 early negotiation: szx=0 → 16-byte blocks.
	r.send(getReq(17, "e", "/big", message.Option{ID: message.Block2, Value: block{SZX: 0}.encode()}))
	m := r.recv(time.Second)
	if m == nil || len(m.Payload) != 16 || optUint(m.Options, message.Size2) != 3000 {
		t.Fatalf("early negotiation: %v", m)
	}
	r.send(getReq(23, "px", "/small", message.Option{ID: message.ProxyURI, Value: []byte("coap://x/y")}))
	if m := r.recv(time.Second); m == nil || m.Code != codes.ProxyingNotSupported {
		t.Fatalf("Proxy-Uri: %v", m)
	}
	// Size2:0 in a request asks for the size even without block-wise transfer.
	r.send(getReq(22, "s2", "/small", message.Option{ID: message.Size2}))
	if m := r.recv(time.Second); m == nil || optUint(m.Options, message.Size2) != 5 {
		t.Fatalf("Size2: %v", m)
	}
	// Block2 follow-up with a different token from the cache.
	r.send(getReq(18, "zz", "/big", message.Option{ID: message.Block2, Value: block{Num: 3, SZX: 0}.encode()}))
	if m := r.recv(time.Second); m == nil || !bytes.Equal(m.Payload, testBody(3000, 0x5a)[48:64]) {
		t.Fatalf("follow-up: %v", m)
	}
}

func TestBlock1Errors(t *testing.T) {
	cfg := fastConfig()
	cfg.MaxBodySize = 1000
	ts := startTestServer(t, cfg)
	r := newRaw(t, ts)
	post := func(mid uint16, b block, tag string, payload []byte) *message.Message {
		m := getReq(mid, "t", "/echo", message.Option{ID: message.Block1, Value: b.encode()}, message.Option{ID: optRequestTag, Value: []byte(tag)})
		m.Code = codes.POST
		m.Payload = payload
		r.send(m)
		return r.recv(time.Second)
	}
	body := testBody(64, 0x33)
	if m := post(1, block{Num: 0, More: true, SZX: 2}, "x", body); m == nil || m.Code != codes.Continue {
		t.Fatalf("block 0: %v", m)
	}
	if m := post(2, block{Num: 2, More: true, SZX: 2}, "x", body); m == nil || m.Code != codes.RequestEntityIncomplete {
		t.Fatalf("gap: %v", m)
	}
	if m := post(3, block{Num: 5, More: true, SZX: 2}, "other-tag", body); m == nil || m.Code != codes.RequestEntityIncomplete {
		t.Fatalf("unknown tag: %v", m)
	}
	m := post(4, block{Num: 16, More: true, SZX: 2}, "x", body)
	if m == nil || m.Code != codes.RequestEntityTooLarge || optUint(m.Options, message.Size1) != 1000 {
		t.Fatalf("too large: %v", m)
	}
}

func TestResetFloodAndGarbage(t *testing.T) {
	ts := startTestServer(t, fastConfig())
	c := dialTest(t, ts, 0)
	r := newRaw(t, ts)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 5000 {
			switch i % 3 {
			case 0:
				r.sendRaw([]byte{0x70, 0x00, byte(i >> 8), byte(i)}) // RST
			case 1:
				r.sendRaw(testBody(i%200, byte(i))) // garbage
			case 2:
				r.sendRaw([]byte{0x40, 0x01, byte(i >> 8), byte(i), 0xd1, 0xff}) // bad option
			}
		}
	}()
	for range 20 {
		resp, err := c.Do(context.Background(), &ClientRequest{Method: codes.GET, Path: "/small"})
		if err != nil || resp.Code != codes.Content {
			t.Fatalf("legitimate client: %v %v", resp, err)
		}
	}
	wg.Wait()
	resp, err := c.Do(context.Background(), &ClientRequest{Method: codes.GET, Path: "/big"})
	if err != nil || !bytes.Equal(resp.Payload, testBody(3000, 0x5a)) {
		t.Fatalf("after flood: %v", err)
	}
	if ts.srv.Stats().Resets == 0 {
		t.Error("resets not counted")
	}
}

// TestSessionCap: with MaxSessions reached, a session that holds only
// deduplication state is evicted for a new peer; a busy one is not.
func TestSessionCap(t *testing.T) {
	synctest.Test(t, testSessionCap)
}

func testSessionCap(t *testing.T) {
	cfg := fastConfig()
	cfg.MaxSessions = 4
	// Spoofed peers that hold Block1 state need sources taken on trust (with address
	// validation they are challenged and hold nothing: TestFloods).
	cfg.TrustUDPSources = true
	ts := startLinkServer(t, cfg)
	// Garbage and pings from many (spoofed) sources fill the table; the answers go nowhere.
	pc, err := ts.link.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	for i := range 5000 {
		ap := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 5683)
		ts.srv.HandleDatagram(pc, ap, []byte{0x40, 0, byte(i >> 8), byte(i)})
	}
	if n := ts.srv.Stats().ActiveSessions; n > 4 {
		t.Fatalf("%d sessions over a cap of 4", n)
	}
	c := dialTest(t, ts, 0)
	if _, err := c.Do(context.Background(), &ClientRequest{Method: codes.GET, Path: "/small"}); err != nil {
		t.Fatalf("legitimate client locked out: %v", err)
	}
	// The client has its answer; the handler goroutine releases the exchange right after
	// sending it, and then every goroutine of the bubble is idle.
	synctest.Wait()
	// Four peers each in the middle of a Block1 transfer cannot be evicted.
	for i := range 4 {
		m := getReq(1, "b", "/echo", message.Option{ID: message.Block1, Value: block{More: true, SZX: 0}.encode()})
		m.Code, m.Payload = codes.POST, testBody(16, 0x33)
		ts.srv.HandleDatagram(pc, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 9, 9, byte(i)}), 1), encode(m))
	}
	c2, err := Dial(context.Background(), "coap://"+ts.addr.String(), ClientOptions{Config: Config{ACKTimeout: 50 * time.Millisecond, MaxRetransmit: 1},
		DialUDP: ts.link.DialUDP})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if _, err := c2.Do(context.Background(), &ClientRequest{Method: codes.GET, Path: "/small"}); err == nil {
		t.Fatal("served over MaxSessions although every session is busy")
	}
	if ts.srv.Stats().SessionsDropped == 0 {
		t.Error("drop not counted")
	}
}

// TestLossyLoopback: our client against a server on a link that loses 25 % of the datagrams
// in each direction and delays each by up to 1 s (so retransmissions and answers overtake each
// other), a seeded choice; RFC 7252's default timers run on a synctest clock. Every byte must
// arrive and every handler run once.
func TestLossyLoopback(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// MaxRetransmit 10 backs off to minutes between tries (RFC 7252 §4.2): the server keeps
		// its block-wise state that long.
		ts := startLinkServerOn(t, Config{BlockTimeout: time.Hour}, coaptest.LinkOptions{Seed: 1, Loss: 0.25, MaxDelay: time.Second})
		start := time.Now()
		ctx := t.Context()
		for _, bs := range []int{16, 64, 256, 1024} {
			c, err := Dial(ctx, "coap://"+ts.addr.String(), ClientOptions{BlockSize: bs, Config: Config{MaxRetransmit: 10},
				DialUDP: ts.link.DialUDP})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			before := ts.bigCalls.Load()
			r, err := c.Do(ctx, &ClientRequest{Method: codes.GET, Path: "/big"})
			if err != nil || !bytes.Equal(r.Payload, testBody(3000, 0x5a)) {
				t.Fatalf("bs %d GET: %v", bs, err)
			}
			if n := ts.bigCalls.Load() - before; n != 1 {
				t.Errorf("bs %d: GET handler ran %d times", bs, n)
			}
			before = ts.echoCalls.Load()
			body := testBody(2000, 0x33)
			r, err = c.Do(ctx, &ClientRequest{Method: codes.POST, Path: "/echo", ContentFormat: CF(42), Payload: body})
			if err != nil || !bytes.Equal(r.Payload, echoBody(body)) {
				t.Fatalf("bs %d POST: %v %v %q (after %v)", bs, err, r.Code, r.Payload[:min(len(r.Payload), 60)], time.Since(start))
			}
			if n := ts.echoCalls.Load() - before; n != 1 {
				t.Errorf("bs %d: POST handler ran %d times", bs, n)
			}
		}
		if c := ts.srv.Stats().Duplicates; c == 0 {
			t.Error("no duplicates seen despite loss")
		}
		if st := ts.link.Stats(); st.Dropped == 0 {
			t.Errorf("the link lost nothing: %+v", st)
		}
	})
}
