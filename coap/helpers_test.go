package coap

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"coapca/coap/coaptest"
)

// testBody returns n deterministic, position-dependent bytes.
func testBody(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7+i/251) ^ seed
	}
	return b
}

// echoBody is what /echo answers for a request body: 3000 bytes derived from it.
func echoBody(in []byte) []byte {
	out := make([]byte, 3000)
	var sum byte
	for _, c := range in {
		sum += c
	}
	for i := range out {
		out[i] = byte(i*13) ^ sum ^ byte(len(in))
	}
	return out
}

type testSrv struct {
	srv       *Server
	addr      *net.UDPAddr
	link      *coaptest.Link // set when the server is on an in-memory link (startLinkServer)
	bigCalls  atomic.Int64
	echoCalls atomic.Int64
	mu        sync.Mutex
	echoBad   int
	obsCalls  atomic.Int64
}

func newTestMux(ts *testSrv, slow time.Duration) *Mux {
	mux := NewMux()
	big := testBody(3000, 0x5a)
	mux.Handle(Resource{Path: "/small", RT: []string{"test.small"}, CT: []int{0}, Handler: HandlerFunc(func(ctx context.Context, r *Request) *Response {
		resp := NewResponse(codes.Content, []byte("hello"))
		resp.ContentFormat = CF(0)
		return resp
	})})
	mux.Handle(Resource{Path: "/big", RT: []string{"ace.est.crts"}, CT: []int{42}, Handler: HandlerFunc(func(ctx context.Context, r *Request) *Response {
		ts.bigCalls.Add(1)
		resp := NewResponse(codes.Content, big)
		resp.ContentFormat = CF(42)
		return resp
	})})
	mux.Handle(Resource{Path: "/echo", RT: []string{"ace.est.sen"}, Handler: HandlerFunc(func(ctx context.Context, r *Request) *Response {
		ts.echoCalls.Add(1)
		if r.Method != codes.POST && r.Method != codes.PUT {
			return NewResponse(codes.MethodNotAllowed, nil)
		}
		if !bytes.Equal(r.Payload, testBody(len(r.Payload), 0x33)) {
			ts.mu.Lock()
			ts.echoBad++
			ts.mu.Unlock()
			return NewResponse(codes.BadRequest, []byte(fmt.Sprintf("body of %d bytes corrupted", len(r.Payload))))
		}
		resp := NewResponse(codes.Changed, echoBody(r.Payload))
		resp.ContentFormat = CF(42)
		return resp
	})})
	mux.Handle(Resource{Path: "/slow", Handler: HandlerFunc(func(ctx context.Context, r *Request) *Response {
		time.Sleep(slow) // simulated work (not a wait): it outlasts SeparateAfter; in a synctest bubble it takes no time
		return NewResponse(codes.Content, []byte("slow answer"))
	})})
	mux.Handle(Resource{Path: "/obs", RT: []string{"test.obs"}, Observable: true, Handler: HandlerFunc(func(ctx context.Context, r *Request) *Response {
		ts.obsCalls.Add(1)
		return NewResponse(codes.Content, []byte("state 0"))
	})})
	mux.Handle(Resource{Path: "/hidden", Hidden: true, Handler: HandlerFunc(func(ctx context.Context, r *Request) *Response {
		return NewResponse(codes.Content, nil)
	})})
	mux.Handle(Resource{Path: "/tree", Prefix: true, Handler: HandlerFunc(func(ctx context.Context, r *Request) *Response {
		return NewResponse(codes.Content, []byte(r.Path))
	})})
	return mux
}

func startTestServer(t testing.TB, cfg Config) *testSrv {
	t.Helper()
	ts := &testSrv{}
	ts.srv = NewServer(newTestMux(ts, 300*time.Millisecond), cfg)
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ts.addr = pc.LocalAddr().(*net.UDPAddr)
	done := make(chan error, 1)
	go func() { done <- ts.srv.ServeUDP(pc) }()
	t.Cleanup(func() {
		_ = ts.srv.Close()
		if err := <-done; err != nil {
			t.Errorf("ServeUDP: %v", err)
		}
	})
	return ts
}

// startLinkServer is startTestServer on a perfect in-memory link (coaptest) instead of a UDP
// socket: inside a testing/synctest bubble, the server's timers and the test's waits then run
// on the bubble's clock. Clients from dialTest and newRaw use the same link.
func startLinkServer(t testing.TB, cfg Config) *testSrv {
	t.Helper()
	return startLinkServerOn(t, cfg, coaptest.LinkOptions{})
}

// startLinkServerOn is startLinkServer on a link with opts (loss, delay).
func startLinkServerOn(t testing.TB, cfg Config, opts coaptest.LinkOptions) *testSrv {
	t.Helper()
	ts := &testSrv{link: coaptest.NewLink(opts)}
	ts.srv = NewServer(newTestMux(ts, 300*time.Millisecond), cfg)
	u := coaptest.Serve(t, ts.link, ts.srv)
	ts.addr = net.UDPAddrFromAddrPort(netip.MustParseAddrPort(strings.TrimPrefix(u, "coap://")))
	return ts
}

func fastConfig() Config {
	return Config{ACKTimeout: 200 * time.Millisecond, SeparateAfter: 100 * time.Millisecond}
}

func dialTest(t testing.TB, ts *testSrv, bs int) *Client {
	t.Helper()
	opts := ClientOptions{BlockSize: bs, Config: fastConfig()}
	if ts.link != nil {
		opts.DialUDP = ts.link.DialUDP
	}
	c, err := Dial(context.Background(), "coap://"+ts.addr.String(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// rawConn is a bare UDP socket (or link endpoint) to speak hand-made datagrams to the server.
type rawConn struct {
	t *testing.T
	c net.Conn
}

// newRaw returns a raw socket whose address the server has verified (RFC 9175 Echo).
func newRaw(t *testing.T, ts *testSrv) *rawConn {
	r := newUnprovenRaw(t, ts)
	r.prove()
	return r
}

// newUnprovenRaw returns a raw socket that has not answered an Echo challenge.
func newUnprovenRaw(t *testing.T, ts *testSrv) *rawConn {
	var (
		c   net.Conn
		err error
	)
	if ts.link != nil {
		c, err = ts.link.DialUDP(context.Background(), ts.addr.String())
	} else {
		c, err = net.DialUDP("udp", nil, ts.addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &rawConn{t: t, c: c}
}

// prove answers the server's Echo challenge as a client must (RFC 9175 §2.3), with message
// IDs the tests do not use.
func (r *rawConn) prove() {
	r.t.Helper()
	r.send(getReq(0xfff0, "pv", "/small"))
	m := r.recv(2 * time.Second)
	if m == nil {
		r.t.Fatal("no answer to the address check")
	}
	if m.Code == codes.Content {
		return // the server trusts source addresses
	}
	echo, ok := optBytes(m.Options, optEcho)
	if m.Code != codes.Unauthorized || !ok {
		r.t.Fatalf("address check: %v", m)
	}
	r.send(getReq(0xfff1, "pv", "/small", message.Option{ID: optEcho, Value: echo}))
	if m := r.recv(2 * time.Second); m == nil || m.Code != codes.Content {
		r.t.Fatalf("address check with Echo: %v", m)
	}
}

func (r *rawConn) send(m *message.Message) {
	r.t.Helper()
	b := encode(m)
	if b == nil {
		r.t.Fatal("encode failed")
	}
	r.sendRaw(b)
}

func (r *rawConn) sendRaw(b []byte) {
	if _, err := r.c.Write(b); err != nil {
		r.t.Fatal(err)
	}
}

// recv returns the next message or nil after d.
func (r *rawConn) recv(d time.Duration) *message.Message {
	buf := make([]byte, 2048)
	_ = r.c.SetReadDeadline(time.Now().Add(d))
	n, err := r.c.Read(buf)
	if err != nil {
		return nil
	}
	var m message.Message
	if err := decode(buf[:n], &m); err != nil {
		r.t.Fatalf("server sent undecodable datagram: %v", err)
	}
	return &m
}

func getReq(mid uint16, token string, path string, extra ...message.Option) *message.Message {
	opts := setPath(make(message.Options, 0, 8), path)
	for _, o := range extra {
		opts = opts.Add(o)
	}
	return &message.Message{Type: message.Confirmable, Code: codes.GET, MessageID: int32(mid), Token: []byte(token), Options: opts}
}

func freeUDPPort(t testing.TB) int {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port
}
