package cmpproxy

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"coapca/cmp/cmpcoap"
	"coapca/cmp/cmpserver"
	"coapca/coap"
)

// downstream runs p on a coap:// loopback server and returns a client dialer.
func downstream(t *testing.T, p *Proxy) (dial func() *coap.Client, srv *coap.Server) {
	t.Helper()
	mux := coap.NewMux()
	p.Register(mux)
	srv = coap.NewServer(mux, coap.Config{})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeUDP(pc)
	t.Cleanup(func() { srv.Close() })
	dial = func() *coap.Client {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, err := coap.Dial(ctx, "coap://"+pc.LocalAddr().String(), coap.ClientOptions{BlockSize: 256})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	return dial, srv
}

func post(t *testing.T, c *coap.Client, path string, body []byte) *coap.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rsp, err := c.Do(ctx, &coap.ClientRequest{Method: codes.POST, Path: path, ContentFormat: coap.CF(CFPKIXCMP), Payload: body})
	if err != nil {
		t.Fatal(err)
	}
	return rsp
}

// derSeq is a DER SEQUENCE of n bytes of content (the shape of a PKIMessage).
func derSeq(n int, fill byte) []byte {
	var b []byte
	switch {
	case n < 0x80:
		b = []byte{0x30, byte(n)}
	case n < 0x100:
		b = []byte{0x30, 0x81, byte(n)}
	default:
		b = []byte{0x30, 0x82, byte(n >> 8), byte(n)}
	}
	return append(b, bytes.Repeat([]byte{fill}, n)...)
}

// recorder is an RFC 9811 upstream that records what it got.
type recorder struct {
	mu     sync.Mutex
	paths  []string
	bodies [][]byte
	ctypes []string
	answer func(w http.ResponseWriter, r *http.Request)
}

func (u *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(b))
	u.mu.Lock()
	u.paths, u.bodies, u.ctypes = append(u.paths, r.URL.Path), append(u.bodies, b), append(u.ctypes, r.Header.Get("Content-Type"))
	answer := u.answer
	u.mu.Unlock()
	answer(w, r)
}

func (u *recorder) hits() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.paths)
}

func pkixAnswer(body []byte) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/pkixcmp")
		_, _ = w.Write(body)
	}
}

// TestTransparent: RFC 9482 §3, the PKIMessage bytes unchanged both ways, the path mapped to
// the upstream's (profile label per configuration, operation label to its RFC 9483 §6.1 name).
func TestTransparent(t *testing.T) {
	answer := derSeq(1500, 0xA5) // needs Block2 downstream
	up := &recorder{answer: pkixAnswer(answer)}
	hs := httptest.NewServer(up)
	defer hs.Close()
	var results []string
	var mu sync.Mutex
	p, err := New(Options{Upstream: hs.URL + "/pkix/", Name: "ca",
		Profiles: map[string]Profile{"sensors": {UpstreamLabel: "iot"}, "plain": {}},
		Observe: func(up, result string, _ time.Duration) {
			mu.Lock()
			results = append(results, up+":"+result)
			mu.Unlock()
		}})
	if err != nil {
		t.Fatal(err)
	}
	dial, _ := downstream(t, p)
	c := dial()
	tests := []struct{ path, upstream string }{
		{"/.well-known/cmp", "/pkix/"},
		{"/.well-known/cmp/ir", "/pkix/initialization"},
		{"/.well-known/cmp/p10", "/pkix/pkcs10"},
		{"/.well-known/cmp/p/sensors", "/pkix/p/iot"},
		{"/.well-known/cmp/p/sensors/crts", "/pkix/p/iot/getcacerts"},
		{"/.well-known/cmp/p/plain/rr", "/pkix/revocation"},
	}
	for i, tc := range tests {
		req := derSeq(700, byte(i))
		rsp := post(t, c, tc.path, req)
		if rsp.Code != codes.Changed || rsp.ContentFormat != coap.CF(CFPKIXCMP) || !bytes.Equal(rsp.Payload, answer) {
			t.Fatalf("%s: %v cf %v, %d bytes", tc.path, rsp.Code, rsp.ContentFormat, len(rsp.Payload))
		}
		up.mu.Lock()
		got, body, ct := up.paths[i], up.bodies[i], up.ctypes[i]
		up.mu.Unlock()
		if got != tc.upstream || !bytes.Equal(body, req) || ct != "application/pkixcmp" {
			t.Errorf("%s: upstream got %s (%s), body changed: %v", tc.path, got, ct, !bytes.Equal(body, req))
		}
	}
	if rsp := post(t, c, "/.well-known/cmp/p/unknown", derSeq(10, 0)); rsp.Code != codes.NotFound {
		t.Errorf("unknown label: %v", rsp.Code)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(results) != len(tests) || results[0] != "ca:ok" {
		t.Errorf("metrics saw %v", results)
	}
}

// TestHTTPSegmentsMatchCMPServer: the HTTP operation labels the proxy writes are the ones an
// RFC 9811 server reads (cmpserver.HTTPOperation), for every CoAP operation label.
func TestHTTPSegmentsMatchCMPServer(t *testing.T) {
	for _, seg := range cmpcoap.Operations() {
		op, ok := cmpserver.CoAPOperation(seg)
		if !ok {
			t.Fatalf("CoAP label %q unknown", seg)
		}
		if back, ok := cmpserver.HTTPOperation(httpSegment[op]); !ok || back != op {
			t.Errorf("%s → %q → %q", seg, httpSegment[op], back)
		}
	}
}

func TestFailureTableComplete(t *testing.T) {
	for k := failureKind(0); k < numFailureKinds; k++ {
		if failureTable[k].name == "" || failureTable[k].code == 0 {
			t.Errorf("failure kind %d has no entry", k)
		}
	}
}

// TestFailures: an upstream that is down, speaks bad TLS, leaks internals in its error pages,
// answers something else than CMP or too late never hangs the device, never gets a 5.00 and
// never shows it what the upstream said (RFC 8075 §7 codes).
func TestFailures(t *testing.T) {
	const secret = "password=hunter2 at /srv/ca/db.go:42"
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "http://" + closed.Addr().String() + "/"
	closed.Close()
	tlsUp := httptest.NewTLSServer(http.HandlerFunc(pkixAnswer(derSeq(10, 1))))
	defer tlsUp.Close()

	tests := []struct {
		name    string
		answer  func(w http.ResponseWriter, r *http.Request)
		url     string // instead of the recorder's
		payload []byte
		code    codes.Code
		maxAge  uint32 // 0 = no Max-Age option expected
		result  string
	}{
		{"upstream unreachable", nil, deadURL, derSeq(10, 0), codes.ServiceUnavailable, 10, "unreachable"},
		{"upstream TLS certificate not trusted", nil, tlsUp.URL, derSeq(10, 0), codes.BadGateway, 0, "tls"},
		{"upstream speaks plain HTTP on an https URL", func(w http.ResponseWriter, _ *http.Request) {}, "https-on-plain", derSeq(10, 0), codes.BadGateway, 0, "tls"},
		{"attack: upstream error page with internals", func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "panic: "+secret, http.StatusInternalServerError)
		}, "", derSeq(10, 0), codes.BadGateway, 0, "status"},
		{"upstream busy with Retry-After", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Retry-After", "7")
			http.Error(w, secret, http.StatusServiceUnavailable)
		}, "", derSeq(10, 0), codes.ServiceUnavailable, 7, "busy"},
		{"attack: upstream answers HTML with 200", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			_, _ = io.WriteString(w, "<html>"+secret)
		}, "", derSeq(10, 0), codes.BadGateway, 0, "bad_response"},
		{"attack: upstream answers non-DER as pkixcmp", pkixAnswer([]byte(secret)), "", derSeq(10, 0), codes.BadGateway, 0, "bad_response"},
		{"upstream too slow", func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }, "", derSeq(10, 0), codes.GatewayTimeout, 0, "timeout"},
		{"device sends no PKIMessage", pkixAnswer(derSeq(10, 1)), "", []byte("not DER"), codes.BadRequest, 0, "bad_request"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			up := &recorder{answer: tc.answer}
			hs := httptest.NewServer(up)
			defer hs.Close()
			url := hs.URL + "/"
			switch tc.url {
			case "":
			case "https-on-plain":
				url = "https://" + strings.TrimPrefix(hs.URL, "http://") + "/"
			default:
				url = tc.url
			}
			results := make(chan string, 1)
			// Only the upstream that never answers meets the timeout; the others answer (or
			// fail) long before it, however slow the machine.
			timeout := time.Minute
			if tc.result == "timeout" {
				timeout = 200 * time.Millisecond
			}
			p, err := New(Options{Upstream: url, Timeout: timeout,
				Observe: func(_, r string, _ time.Duration) { results <- r }})
			if err != nil {
				t.Fatal(err)
			}
			dial, _ := downstream(t, p)
			rsp := post(t, dial(), "/.well-known/cmp", tc.payload)
			if rsp.Code != tc.code {
				t.Fatalf("code %v, want %v: %s", rsp.Code, tc.code, rsp.Payload)
			}
			if got, ok := maxAge(rsp); tc.maxAge != 0 && (!ok || got != tc.maxAge) || tc.maxAge == 0 && ok {
				t.Errorf("Max-Age %d (present %v), want %d", got, ok, tc.maxAge)
			}
			if strings.Contains(string(rsp.Payload), "hunter2") || len(rsp.Payload) > 80 {
				t.Errorf("diagnostic leaks or rambles: %q", rsp.Payload)
			}
			if result := <-results; result != tc.result {
				t.Errorf("metrics result %q, want %q", result, tc.result)
			}
		})
	}
}

func maxAge(r *coap.Response) (uint32, bool) { return r.MaxAge.Get() }

// TestConcurrencyLimit: with MaxConcurrent requests in flight the next one gets 5.03 with
// Max-Age at once instead of queueing behind a slow upstream; the held one still gets its
// answer when the upstream answers (a separate response from the endpoint).
func TestConcurrencyLimit(t *testing.T) {
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	answer := derSeq(20, 2)
	up := &recorder{answer: func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
		pkixAnswer(answer)(w, r)
	}}
	hs := httptest.NewServer(up)
	defer hs.Close()
	p, err := New(Options{Upstream: hs.URL, MaxConcurrent: 1, RetryAfter: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	dial, _ := downstream(t, p)
	held := make(chan *coap.Response, 1)
	c1 := dial()
	go func() { held <- post(t, c1, "/.well-known/cmp", derSeq(10, 0)) }()
	select {
	case <-arrived:
	case r := <-held:
		t.Fatalf("first request answered without reaching the upstream: %v %s", r.Code, r.Payload)
	}
	rsp := post(t, dial(), "/.well-known/cmp", derSeq(10, 0))
	if got, _ := maxAge(rsp); rsp.Code != codes.ServiceUnavailable || got != 3 {
		t.Fatalf("second request: %v Max-Age %d: %s", rsp.Code, got, rsp.Payload)
	}
	if n := up.hits(); n != 1 {
		t.Errorf("upstream saw %d requests, want 1", n)
	}
	close(release)
	if r := <-held; r.Code != codes.Changed || !bytes.Equal(r.Payload, answer) {
		t.Fatalf("held request: %v", r.Code)
	}
}

// TestSlowUpstreamSeparateResponse: while the upstream holds a request, the device already has
// the empty ACK (RFC 7252 §5.2.2), so it does not retransmit into a slow upstream; the answer
// follows as a separate response with the request's token.
func TestSlowUpstreamSeparateResponse(t *testing.T) {
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	answer := derSeq(20, 3)
	up := &recorder{answer: func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
		pkixAnswer(answer)(w, r)
	}}
	hs := httptest.NewServer(up)
	defer hs.Close()
	p, err := New(Options{Upstream: hs.URL})
	if err != nil {
		t.Fatal(err)
	}
	mux := coap.NewMux()
	p.Register(mux)
	// Any handler slower than a millisecond is answered separately; the upstream is held
	// until the test has seen the ACK, so "slower" does not depend on the clock.
	srv := coap.NewServer(mux, coap.Config{SeparateAfter: time.Millisecond, TrustUDPSources: true})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeUDP(pc)
	defer srv.Close()
	c, err := net.Dial("udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	buf := make([]byte, 64)
	opts, n, err := make(message.Options, 0, 8).SetPath(buf, Root)
	if err != nil {
		t.Fatal(err)
	}
	opts, _, err = opts.SetContentFormat(buf[n:], message.MediaType(CFPKIXCMP))
	if err != nil {
		t.Fatal(err)
	}
	send := func(m message.Message) {
		b := make([]byte, 2048)
		n, err := coder.DefaultCoder.Encode(m, b)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(b[:n]); err != nil {
			t.Fatal(err)
		}
	}
	recv := func() message.Message {
		b := make([]byte, 2048)
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		n, err := c.Read(b)
		if err != nil {
			t.Fatalf("no datagram: %v", err)
		}
		m := message.Message{Options: make(message.Options, 0, 16)}
		if _, err := coder.DefaultCoder.Decode(b[:n], &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	send(message.Message{Type: message.Confirmable, Code: codes.POST, MessageID: 7, Token: []byte("tok1"), Options: opts, Payload: derSeq(10, 0)})
	<-arrived
	ack := recv()
	if ack.Type != message.Acknowledgement || ack.Code != codes.Empty || ack.MessageID != 7 {
		close(release)
		t.Fatalf("while the upstream works: %v %v mid %d, want an empty ACK of 7", ack.Type, ack.Code, ack.MessageID)
	}
	close(release)
	rsp := recv()
	if rsp.Type != message.Confirmable || rsp.Code != codes.Changed || string(rsp.Token) != "tok1" || !bytes.Equal(rsp.Payload, answer) {
		t.Fatalf("separate response: %v %v token %q", rsp.Type, rsp.Code, rsp.Token)
	}
	send(message.Message{Type: message.Acknowledgement, Code: codes.Empty, MessageID: rsp.MessageID})
}

// TestHTTPSUpstream: an https upstream whose certificate the configured trust accepts.
func TestHTTPSUpstream(t *testing.T) {
	answer := derSeq(300, 9)
	hs := httptest.NewTLSServer(http.HandlerFunc(pkixAnswer(answer)))
	defer hs.Close()
	p, err := New(Options{Upstream: hs.URL + "/.well-known/cmp", Client: hs.Client()})
	if err != nil {
		t.Fatal(err)
	}
	dial, _ := downstream(t, p)
	if rsp := post(t, dial(), "/.well-known/cmp", derSeq(10, 0)); rsp.Code != codes.Changed || !bytes.Equal(rsp.Payload, answer) {
		t.Fatalf("%v: %s", rsp.Code, rsp.Payload)
	}
}

// TestNewRefuses: configurations that cannot work are refused when the proxy is made.
func TestNewRefuses(t *testing.T) {
	for _, o := range []Options{
		{Upstream: "coap://ca.example"},
		{Upstream: "http://ca.example/?q=1"},
		{Upstream: "http://ca.example", Default: Profile{Mode: ModeRA}},
		{Upstream: "http://ca.example", Profiles: map[string]Profile{"a/b": {}}},
		{Upstream: "http://ca.example", AnnouncePoll: time.Hour},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("accepted %+v", o)
		}
	}
}

// FuzzRoute: any Uri-Path is routed without panic, and an accepted one names a served label.
func FuzzRoute(f *testing.F) {
	for _, s := range []string{"/.well-known/cmp", "/.well-known/cmp/p/sensors/ir", "/.well-known/cmp/p//ann", "/.well-known/cmpx", "/", "/.well-known/cmp/p/other"} {
		f.Add(s)
	}
	p, err := New(Options{Upstream: "http://ca.example/pkix/", Profiles: map[string]Profile{"sensors": {UpstreamLabel: "iot"}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, path string) {
		rt, ok := p.route(path)
		if !ok {
			return
		}
		if rt.label != "" && rt.label != "sensors" {
			t.Fatalf("label %q from %q", rt.label, path)
		}
		if u := p.upstreamURL(rt); !strings.HasPrefix(u, "http://ca.example/pkix") {
			t.Fatalf("%q → %q", path, u)
		}
	})
}
