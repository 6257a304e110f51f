package coap

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"coapca/coap/coaptest"
)

// Floods from spoofed sources (issue 8, items 9 and 10): datagrams are injected with
// HandleDatagram under source addresses the test does not own, and everything the server
// answers them is recorded by recPC. A legitimate client on a real loopback socket keeps
// working meanwhile.

// recPC is a PacketConn that records what the server sends, by destination.
type recPC struct {
	mu   sync.Mutex
	sent map[netip.AddrPort][][]byte
}

func newRecPC() *recPC { return &recPC{sent: map[netip.AddrPort][][]byte{}} }

func (p *recPC) WriteTo(b []byte, a net.Addr) (int, error) {
	ap := a.(*net.UDPAddr).AddrPort()
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	p.mu.Lock()
	p.sent[ap] = append(p.sent[ap], append([]byte(nil), b...))
	p.mu.Unlock()
	return len(b), nil
}
func (p *recPC) ReadFrom([]byte) (int, net.Addr, error) { return 0, nil, net.ErrClosed }
func (p *recPC) Close() error                           { return nil }
func (p *recPC) LocalAddr() net.Addr                    { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5683} }
func (p *recPC) SetDeadline(time.Time) error            { return nil }
func (p *recPC) SetReadDeadline(time.Time) error        { return nil }
func (p *recPC) SetWriteDeadline(time.Time) error       { return nil }

func (p *recPC) to(ap netip.AddrPort) [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sent[ap]
}

// annBody is as large as the CMP announcement answer of the issue (≈ 1,050 bytes).
var annBody = testBody(1000, 0x41)

type floodSrv struct {
	srv     *Server
	addr    *net.UDPAddr
	annRuns atomic.Int64
	posts   atomic.Int64
}

func startFloodServer(t *testing.T, cfg Config) *floodSrv {
	t.Helper()
	fs := &floodSrv{}
	mux := NewMux()
	mux.Handle(Resource{Path: "/.well-known/cmp/ann", Observable: true, Handler: HandlerFunc(func(context.Context, *Request) *Response {
		fs.annRuns.Add(1)
		return NewResponse(codes.Content, annBody)
	})})
	mux.Handle(Resource{Path: "/up", Handler: HandlerFunc(func(_ context.Context, r *Request) *Response {
		fs.posts.Add(1)
		if !bytes.Equal(r.Payload, testBody(len(r.Payload), 0x33)) {
			return NewResponse(codes.BadRequest, nil)
		}
		return NewResponse(codes.Changed, nil)
	})})
	fs.srv = NewServer(mux, cfg)
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	fs.addr = pc.LocalAddr().(*net.UDPAddr)
	done := make(chan error, 1)
	go func() { done <- fs.srv.ServeUDP(pc) }()
	t.Cleanup(func() {
		_ = fs.srv.Close()
		if err := <-done; err != nil {
			t.Errorf("ServeUDP: %v", err)
		}
	})
	return fs
}

func (fs *floodSrv) dial(t *testing.T, bs int) *Client {
	t.Helper()
	c, err := Dial(context.Background(), "coap://"+fs.addr.String(), ClientOptions{BlockSize: bs, Config: fastConfig()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// spoofed is the i-th source of a flood: one IP address, one source port per datagram.
func spoofed(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, 7}), uint16(1024+i))
}

// observeGET is the 26-byte Observe registration of the issue.
func observeGET(i int) []byte {
	m := getReq(uint16(i), "tok4", "/.well-known/cmp/ann", message.Option{ID: message.Observe})
	return encode(m)
}

// firstBlock is a 38-byte first Block1 block of a POST that announces more.
func firstBlock(i int) []byte {
	m := getReq(uint16(i), "t", "/up", message.Option{ID: message.Block1, Value: block{More: true, SZX: 0}.encode()})
	m.Code, m.Payload = codes.POST, testBody(16, 0x33)
	return encode(m)
}

// TestFloodFromSpoofedSources is the attack of issue 8 items 9 and 10: ten thousand Observe
// registrations on the announcement resource, or ten thousand first Block1 blocks, each from
// its own source port of an address the attacker does not own. None may take a session slot,
// an observer or a reassembly buffer, run a handler, or be answered with more than three
// times its size (RFC 9175 §2.4); a legitimate client keeps observing and uploading.
func TestFloodFromSpoofedSources(t *testing.T) {
	tests := []struct {
		name string
		dgm  func(i int) []byte
	}{
		{"observe registrations", observeGET},
		{"first Block1 blocks", firstBlock},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := fastConfig()
			cfg.MaxSessions = 100
			fs := startFloodServer(t, cfg)
			pc := newRecPC()

			// The legitimate client is observing before the flood and must see a
			// notification sent after it.
			c := fs.dial(t, 64)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			got := make(chan []byte, 4)
			obsDone := make(chan error, 1)
			go func() {
				obsDone <- c.Observe(ctx, "/.well-known/cmp/ann", func(r *Response) { got <- r.Payload })
			}()
			if b := <-got; !bytes.Equal(b, annBody) {
				t.Fatalf("first observation: %d bytes", len(b))
			}
			runsBefore := fs.annRuns.Load()

			const n = 10000
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range n {
					fs.srv.HandleDatagram(pc, spoofed(i), tc.dgm(i))
				}
			}()
			// A second legitimate client uploads block-wise while the flood runs.
			up := fs.dial(t, 16)
			body := testBody(300, 0x33)
			r, err := up.Do(context.Background(), &ClientRequest{Method: codes.POST, Path: "/up", Payload: body})
			if err != nil || r.Code != codes.Changed {
				t.Fatalf("legitimate upload during the flood: %v %v", r, err)
			}
			wg.Wait()

			st := fs.srv.Stats()
			if st.ActiveSessions > 2 {
				t.Errorf("%d sessions after the flood: spoofed sources hold slots", st.ActiveSessions)
			}
			if st.Observers != 1 {
				t.Errorf("%d observers after the flood, want only the legitimate one", st.Observers)
			}
			if st.ReassemblyBytes != 0 {
				t.Errorf("%d bytes of Block1 buffers held for spoofed sources", st.ReassemblyBytes)
			}
			if runs := fs.annRuns.Load() - runsBefore; runs != 0 {
				t.Errorf("the handler ran %d times for spoofed sources", runs)
			}
			answered := 0
			for i := range n {
				req := len(tc.dgm(i))
				sum := 0
				for _, b := range pc.to(spoofed(i)) {
					sum += len(b)
					var m message.Message
					if err := decode(b, &m); err != nil || m.Code != codes.Unauthorized || !m.Options.HasOption(optEcho) {
						t.Fatalf("spoofed source %d got %v (%v), not a 4.01 + Echo challenge", i, m.Code, err)
					}
				}
				if sum > maxAmplification*req {
					t.Fatalf("spoofed source %d: %d bytes answered to a %d-byte request", i, sum, req)
				}
				if sum > 0 {
					answered++
				}
			}
			if answered != n {
				t.Errorf("%d of %d spoofed requests challenged", answered, n)
			}

			// The first observer is still served.
			fs.srv.Notify("/.well-known/cmp/ann", NewResponse(codes.Content, []byte("after the flood")))
			if b := <-got; string(b) != "after the flood" {
				t.Fatalf("notification after the flood: %q", b)
			}
			cancel()
			<-obsDone
		})
	}
}

// TestFloodFromProvenPorts: an attacker who does receive at its address (so answers the
// Echo challenge) registers observations and starts Block1 transfers from many ports of one
// IP address, then from many addresses. Sessions, observers and reassemblies stay within
// their per-address and overall caps, and a legitimate client is still served.
func TestFloodFromProvenPorts(t *testing.T) {
	cfg := fastConfig()
	cfg.MaxSessionsPerIP = 50
	cfg.MaxObserversPerIP = 8
	cfg.MaxObservers = 40
	cfg.MaxTransfersPerIP = 10
	fs := startFloodServer(t, cfg)
	pc := newRecPC()
	withEcho := func(b []byte, ap netip.AddrPort) []byte {
		var m message.Message
		if err := decode(b, &m); err != nil {
			t.Fatal(err)
		}
		m.Options = append(message.Options(nil), m.Options...).Add(message.Option{ID: optEcho, Value: fs.srv.echo.value(ap)})
		return encode(&m)
	}
	src := func(ipn, port int) netip.AddrPort {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(ipn)}), uint16(2000+port))
	}
	for port := range 1000 {
		ap := src(1, port)
		fs.srv.HandleDatagram(pc, ap, withEcho(observeGET(port), ap))
		ap2 := src(2, port)
		fs.srv.HandleDatagram(pc, ap2, withEcho(firstBlock(port), ap2))
	}
	// The handlers run on goroutines of their own; the counts below are of their outcome.
	fs.srv.running.Wait()
	st := fs.srv.Stats()
	if st.Observers > cfg.MaxObserversPerIP {
		t.Errorf("%d observers from one address, cap %d", st.Observers, cfg.MaxObserversPerIP)
	}
	if st.ActiveSessions > 2*cfg.MaxSessionsPerIP {
		t.Errorf("%d sessions from two addresses, cap %d each", st.ActiveSessions, cfg.MaxSessionsPerIP)
	}
	if max := int64(cfg.MaxTransfersPerIP * 16); st.ReassemblyBytes > max {
		t.Errorf("%d bytes of Block1 buffers from one address, cap %d transfers of 16 bytes", st.ReassemblyBytes, cfg.MaxTransfersPerIP)
	}
	// Many addresses: the overall observer cap holds.
	for ipn := 10; ipn < 60; ipn++ {
		for port := range 4 {
			ap := src(ipn, port)
			fs.srv.HandleDatagram(pc, ap, withEcho(observeGET(port), ap))
		}
	}
	fs.srv.running.Wait()
	if st := fs.srv.Stats(); st.Observers > cfg.MaxObservers || st.ObserversEvicted == 0 {
		t.Errorf("%d observers (cap %d), %d evicted", st.Observers, cfg.MaxObservers, st.ObserversEvicted)
	}
	// An evicted observer is told so with a non-2.xx notification (RFC 7641 §3.2).
	last := pc.to(src(1, 0))
	var m message.Message
	if len(last) == 0 || decode(last[len(last)-1], &m) != nil || m.Code != codes.ServiceUnavailable {
		t.Errorf("evicted observer not told: %v", m)
	}

	c := fs.dial(t, 16)
	r, err := c.Do(context.Background(), &ClientRequest{Method: codes.POST, Path: "/up", Payload: testBody(100, 0x33)})
	if err != nil || r.Code != codes.Changed {
		t.Fatalf("legitimate upload: %v %v", r, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan []byte, 4)
	go func() { _ = c.Observe(ctx, "/.well-known/cmp/ann", func(r *Response) { got <- r.Payload }) }()
	if b := <-got; !bytes.Equal(b, annBody) {
		t.Fatalf("legitimate observation: %d bytes", len(b))
	}
}

// TestEchoValue: an Echo value is bound to the address it was given to and expires.
func TestEchoValue(t *testing.T) {
	e := newEchoMinter(30 * time.Second)
	now := time.Unix(1_800_000_000, 0)
	e.now = func() time.Time { return now }
	a := netip.MustParseAddrPort("192.0.2.1:5683")
	v := e.value(a)
	tests := []struct {
		name  string
		v     []byte
		ap    netip.AddrPort
		after time.Duration
		want  bool
	}{
		{"same address", v, a, 0, true},
		{"within the window", v, a, 30 * time.Second, true},
		{"expired", v, a, 31 * time.Second, false},
		{"other port", v, netip.MustParseAddrPort("192.0.2.1:5684"), 0, false},
		{"other address", v, netip.MustParseAddrPort("192.0.2.2:5683"), 0, false},
		{"forged MAC", append(append([]byte(nil), v[:echoTimeLen]...), make([]byte, echoMACLen)...), a, 0, false},
		{"truncated", v[:echoLen-1], a, 0, false},
		{"from the future", v, a, -2 * time.Second, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.now = func() time.Time { return now.Add(tc.after) }
			if got := e.valid(tc.v, tc.ap); got != tc.want {
				t.Errorf("valid = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestEchoOnDualStackSocket: on a socket bound to the IPv6 wildcard (as `serve` binds ":5683"),
// IPv4 clients arrive as IPv4-mapped addresses; the challenge must reach them and their Echo
// must verify.
func TestEchoOnDualStackSocket(t *testing.T) {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{})
	if err != nil {
		t.Skipf("no wildcard UDP socket: %v", err)
	}
	ts := &testSrv{}
	ts.srv = NewServer(newTestMux(ts, 0), fastConfig())
	done := make(chan error, 1)
	go func() { done <- ts.srv.ServeUDP(pc) }()
	defer func() {
		_ = ts.srv.Close()
		<-done
	}()
	port := pc.LocalAddr().(*net.UDPAddr).Port
	c, err := Dial(context.Background(), "coap://127.0.0.1:"+strconv.Itoa(port), ClientOptions{Config: fastConfig()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.Do(ctx, &ClientRequest{Method: codes.GET, Path: "/big"})
	if err != nil || !bytes.Equal(r.Payload, testBody(3000, 0x5a)) {
		t.Fatalf("GET over the dual-stack socket: %v", err)
	}
	if st := ts.srv.Stats(); st.EchoChallenges != 1 {
		t.Fatalf("%d challenges, want 1", st.EchoChallenges)
	}
}

// fullTableServer serves /plain with an object-security layer (tagLayer) and room for four
// sessions, for the tests and benchmarks that fill its table with proven peers.
func fullTableServer() *Server {
	mux := NewMux()
	mux.Handle(Resource{Path: "/plain", Handler: HandlerFunc(func(context.Context, *Request) *Response {
		return NewResponse(codes.Content, []byte("plain"))
	})})
	mux.SetLayer(&tagLayer{})
	return NewServer(mux, Config{MaxSessions: 4, SeparateAfter: time.Hour})
}

// TestUnprovenNeverDisplacesProven: with the session table full of peers that proved their
// addresses, requests for the object-security layer from new, unproven (spoofed) sources —
// the one kind of request that opens a session before the address is proven — open no
// session: they get a stateless address challenge at most (RFC 9175 §2.4 item 3) and do not
// evict the proven peers, which are still served without a new challenge.
func TestUnprovenNeverDisplacesProven(t *testing.T) {
	srv := fullTableServer()
	defer srv.Close()
	pc := newRecPC()
	proven := func(i int) netip.AddrPort {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), 5683)
	}
	for i := range 4 {
		m := getReq(1, "p", "/plain", message.Option{ID: optEcho, Value: srv.echo.value(proven(i))})
		srv.HandleDatagram(pc, proven(i), encode(m))
	}
	srv.running.Wait() // every proven session is idle again
	for i := range 100 {
		m := getReq(uint16(i), "g", "/plain", message.Option{ID: optOSCORE, Value: []byte("bad")})
		srv.HandleDatagram(pc, netip.AddrPortFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), 5683), encode(m))
	}
	if st := srv.Stats(); st.SessionsDropped == 0 || st.ActiveSessions != 4 {
		t.Fatalf("%d sessions, %d dropped", st.ActiveSessions, st.SessionsDropped)
	}
	for i := range 4 {
		srv.HandleDatagram(pc, proven(i), encode(getReq(2, "q", "/plain")))
	}
	srv.running.Wait()
	for i := range 4 {
		out := pc.to(proven(i))
		var m message.Message
		if len(out) != 2 || decode(out[1], &m) != nil || m.Code != codes.Content {
			t.Fatalf("proven peer %d after the flood: %d answers, last %v", i, len(out), m.Code)
		}
	}
}

// TestUnprovenSessionsExpire: the sessions that unproven sources open (requests for the
// object-security layer) are swept once their Echo values would no longer be accepted,
// instead of holding their slots for EXCHANGE_LIFETIME.
func TestUnprovenSessionsExpire(t *testing.T) {
	synctest.Test(t, testUnprovenSessionsExpire)
}

func testUnprovenSessionsExpire(t *testing.T) {
	mux := NewMux()
	mux.SetLayer(&tagLayer{})
	srv := NewServer(mux, Config{EchoWindow: 100 * time.Millisecond, BlockTimeout: 200 * time.Millisecond})
	pc, err := coaptest.NewLink(coaptest.LinkOptions{}).Listen("127.0.0.1:5683")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeUDP(pc) }() // starts the sweeper
	defer func() {
		_ = srv.Close()
		<-done
	}()
	rec := newRecPC()
	for i := range 50 {
		m := getReq(uint16(i), "g", "/x", message.Option{ID: optOSCORE, Value: []byte("bad")})
		srv.HandleDatagram(rec, netip.AddrPortFrom(netip.AddrFrom4([4]byte{203, 0, 113, 1}), uint16(1024+i)), encode(m))
	}
	if n := srv.Stats().ActiveSessions; n != 50 {
		t.Fatalf("%d sessions, want 50", n)
	}
	// Past the Echo window and a sweep tick (50 ms) on the bubble's clock, with the sweeper
	// done: not one unproven session is left. Before the window ends, they are all kept.
	time.Sleep(50 * time.Millisecond)
	synctest.Wait()
	if n := srv.Stats().ActiveSessions; n != 50 {
		t.Fatalf("%d sessions left within the Echo window, want 50", n)
	}
	time.Sleep(time.Second)
	synctest.Wait()
	if n := srv.Stats().ActiveSessions; n != 0 {
		t.Fatalf("%d unproven sessions never swept", n)
	}
}

// countPC counts what the server writes and keeps none of it (benchmarks).
type countPC struct {
	recPC
	writes, bytes atomic.Int64
}

func (p *countPC) WriteTo(b []byte, _ net.Addr) (int, error) {
	p.writes.Add(1)
	p.bytes.Add(int64(len(b)))
	return len(b), nil
}

// BenchmarkOSCORENewcomerAtFullTable is the cost of one OSCORE request from a new, unproven
// source when every session slot is held by a proven peer: the stateless 4.01 + Echo
// challenge (an HMAC, no state) that lets a real device in, which is also what each spoofed
// datagram of a flood costs.
func BenchmarkOSCORENewcomerAtFullTable(b *testing.B) {
	srv := fullTableServer()
	defer srv.Close()
	pc := &countPC{}
	for i := range 4 {
		ap := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), 5683)
		srv.HandleDatagram(pc, ap, encode(getReq(1, "p", "/plain", message.Option{ID: optEcho, Value: srv.echo.value(ap)})))
	}
	srv.running.Wait()
	req := encode(getReq(7, "g", "/plain", message.Option{ID: optOSCORE, Value: []byte{0x09, 0x01, 0x77}}))
	before := pc.writes.Load()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		srv.HandleDatagram(pc, netip.AddrPortFrom(netip.AddrFrom4([4]byte{203, 0, byte(i >> 8), byte(i)}), uint16(1024+i%60000)), req)
	}
	if st := srv.Stats(); st.ActiveSessions != 4 {
		b.Fatalf("%d sessions, want the 4 proven ones", st.ActiveSessions)
	}
	b.ReportMetric(float64(pc.writes.Load()-before)/float64(i), "answers/op")
}
