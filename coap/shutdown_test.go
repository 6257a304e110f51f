package coap

import (
	"context"
	"crypto/tls"
	"errors"
	"testing"
	"testing/synctest"

	"coapca/coap/dtlsconn"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// TestShutdownDeliversInFlightAnswers is the SIGINT-during-enrollment case at the CoAP layer:
// the server is told to stop while a handler is working on a request it took. The old Close
// dropped that answer (the work was done, the device never heard of it). Shutdown must: answer
// a request that arrives after it began with 5.03 + Max-Age (not taken), let the handler finish
// and deliver its answer over DTLS, end every session with close_notify (so the client fails at
// once with ErrSessionClosed instead of retransmitting into a dead session), and return nil.
func TestShutdownDeliversInFlightAnswers(t *testing.T) {
	p := newTestPKI(t)
	entered := make(chan struct{})
	release := make(chan struct{})
	mux := NewMux()
	mux.Handle(Resource{Path: "/slow", Handler: HandlerFunc(func(ctx context.Context, r *Request) *Response {
		close(entered)
		<-release
		return NewResponse(codes.Changed, []byte("issued"))
	})})
	mux.Handle(Resource{Path: "/fast", Handler: HandlerFunc(func(ctx context.Context, r *Request) *Response {
		return NewResponse(codes.Content, []byte("fast"))
	})})
	cfg := fastConfig()
	cfg.SeparateAfter = -1 // answers go as separate CONs: the drain must wait for their ACKs too
	srv := NewServer(mux, cfg)
	l, err := dtlsconn.Listen("udp", "127.0.0.1:0", dtlsconn.ServerConfig{
		Certificates: []tls.Certificate{p.server}, ClientAuth: dtlsconn.RequireClientCert, ClientCAs: p.pool,
		HandshakesPerSourcePerSecond: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.ServeDTLS(l) }()
	t.Cleanup(func() { srv.Close() })
	url := "coaps://" + l.Addr().String()
	dial := func() *Client {
		c, err := Dial(context.Background(), url, ClientOptions{Config: fastConfig(),
			DTLS: &DTLSClientConfig{Certificates: []tls.Certificate{p.client}, RootCAs: p.pool}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	inflight, late := dial(), dial()

	answer := make(chan *Response, 1)
	go func() {
		r, err := inflight.Do(context.Background(), &ClientRequest{Method: codes.POST, Path: "/slow", Payload: []byte("csr")})
		if err != nil {
			t.Errorf("in-flight request: %v", err)
		}
		answer <- r
	}()
	<-entered
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()

	// The drain has begun once a new request is refused; until then, /fast may still be served.
	var refused *Response
	for refused == nil {
		r, err := late.Do(context.Background(), &ClientRequest{Method: codes.GET, Path: "/fast"})
		if err != nil {
			t.Fatalf("late request: %v", err)
		}
		if r.Code == codes.ServiceUnavailable {
			refused = r
		}
	}
	if secs, ok := refused.MaxAge.Get(); !ok || secs == 0 {
		t.Fatalf("5.03 without Max-Age: %+v", refused)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned while a handler was running: %v", err)
	default:
	}
	close(release)
	r := <-answer
	if r == nil || r.Code != codes.Changed || string(r.Payload) != "issued" {
		t.Fatalf("in-flight answer not delivered: %+v", r)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("ServeDTLS: %v", err)
	}
	// close_notify reached the clients: the next request fails at once, not after MAX_RETRANSMIT.
	<-inflight.gone
	if _, err := inflight.Do(context.Background(), &ClientRequest{Method: codes.GET, Path: "/fast"}); !errors.Is(err, ErrSessionClosed) {
		t.Fatalf("request on a closed session: %v, want ErrSessionClosed", err)
	}
}

// TestShutdownDeadline: a handler that does not finish in time does not hold the server: Shutdown
// returns the context's error and closes.
func TestShutdownDeadline(t *testing.T) {
	ts := startTestServer(t, fastConfig())
	block := make(chan struct{})
	defer close(block)
	entered := make(chan struct{})
	ts.srv.mux.Handle(Resource{Path: "/stuck", Handler: HandlerFunc(func(ctx context.Context, r *Request) *Response {
		close(entered)
		<-block
		return NewResponse(codes.Content, nil)
	})})
	c := dialTest(t, ts, 1024)
	go func() { _, _ = c.Do(context.Background(), &ClientRequest{Method: codes.GET, Path: "/stuck"}) }()
	<-entered
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the deadline has passed
	if err := ts.srv.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown past its deadline: %v", err)
	}
	if !ts.srv.isClosed() {
		t.Fatal("server not closed after the deadline")
	}
}

// TestResponseBeforeSessionEndWins is the client's side of the case above: the read loop hands
// the in-flight answer to its waiter, then reads the close_notify that follows it and ends the
// session. A request that finds both its response and the session's end when it looks must
// return the response, not ErrSessionClosed (a select with both ready picks one at random: CI
// once lost TestShutdownDeliversInFlightAnswers that way). The request is held at NSTART so that
// both are there before it waits; 64 rounds leave a random choice no chance to pass.
func TestResponseBeforeSessionEndWins(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ts := startLinkServer(t, fastConfig())
		for round := range 64 {
			c := dialTest(t, ts, 0)
			c.sess.nstart <- struct{}{} // the NSTART slot is taken: the request waits before it is sent
			type result struct {
				r   *Response
				err error
			}
			done := make(chan result, 1)
			go func() {
				r, err := c.Do(context.Background(), &ClientRequest{Method: codes.GET, Path: "/small"})
				done <- result{r, err}
			}()
			synctest.Wait() // Do has registered its token and waits for the slot
			c.sess.mu.Lock()
			if len(c.sess.waiters) != 1 {
				c.sess.mu.Unlock()
				t.Fatalf("round %d: %d waiters, want the request's one", round, len(c.sess.waiters))
			}
			var token string
			for k := range c.sess.waiters {
				token = k
			}
			c.sess.mu.Unlock()
			// What the read loop does: the answer first, then the close_notify.
			if !c.sess.deliver(&message.Message{Type: message.Acknowledgement, Code: codes.Content, Token: []byte(token), Payload: []byte("answer")}) {
				t.Fatalf("round %d: the request's waiter is gone", round)
			}
			c.goneOnce.Do(func() { close(c.gone) })
			<-c.sess.nstart // the request goes on: it finds the answer and the session's end
			res := <-done
			if res.err != nil || res.r == nil || string(res.r.Payload) != "answer" {
				t.Fatalf("round %d: got %+v, %v; want the answer that arrived before the session ended", round, res.r, res.err)
			}
		}
	})
}
