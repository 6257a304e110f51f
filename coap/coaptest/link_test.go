package coaptest_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"coapca/coap"
	"coapca/coap/coaptest"
)

func testMux() *coap.Mux {
	mux := coap.NewMux()
	mux.Handle(coap.Resource{Path: "/hello", Handler: coap.HandlerFunc(func(ctx context.Context, r *coap.Request) *coap.Response {
		return coap.NewResponse(codes.Content, []byte("hello "+r.Peer.Addr.String()))
	})})
	return mux
}

// exchanges runs n confirmable GETs over a link with opts inside a synctest bubble and
// returns the link's counters and how long the bubble's clock ran.
func exchanges(t *testing.T, opts coaptest.LinkOptions, n int) (st coaptest.Stats, took time.Duration) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		link := coaptest.NewLink(opts)
		url := coaptest.Serve(t, link, coap.NewServer(testMux(), coap.Config{}))
		c, err := coap.Dial(t.Context(), url, coap.ClientOptions{DialUDP: link.DialUDP,
			Config: coap.Config{MaxRetransmit: 8}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for i := range n {
			r, err := c.Do(t.Context(), &coap.ClientRequest{Method: codes.GET, Path: "/hello"})
			if err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			if r.Code != codes.Content || !strings.HasPrefix(string(r.Payload), "hello 127.0.0.1:") {
				t.Fatalf("request %d: %v %q", i, r.Code, r.Payload)
			}
		}
		st, took = link.Stats(), time.Since(start)
	})
	return st, took
}

// A perfect link delivers everything at once: no time passes on the bubble's clock.
func TestPerfectLink(t *testing.T) {
	st, took := exchanges(t, coaptest.LinkOptions{}, 10)
	if st.Dropped != 0 || st.Delivered != st.Sent || st.Sent < 20 {
		t.Fatalf("stats %+v", st)
	}
	if took != 0 {
		t.Fatalf("the clock ran %v on a perfect link", took)
	}
}

// On a link losing 30 % of datagrams every request still gets its answer through RFC 7252
// §4.2 retransmission (the timers run on the bubble's clock, so no test time is spent), and
// the same seed loses the same datagrams: the counters repeat exactly.
func TestLossyLinkDeterministic(t *testing.T) {
	opts := coaptest.LinkOptions{Seed: 42, Loss: 0.3}
	st1, took := exchanges(t, opts, 20)
	if st1.Dropped == 0 {
		t.Fatalf("nothing lost: %+v", st1)
	}
	if took < 2*time.Second {
		t.Fatalf("losses recovered in %v, faster than one ACK_TIMEOUT", took)
	}
	st2, _ := exchanges(t, opts, 20)
	if st1 != st2 {
		t.Fatalf("same seed, different fate: %+v then %+v", st1, st2)
	}
}

// order sends n numbered datagrams over a delaying link and returns the order they arrive in.
func order(t *testing.T, seed uint64, n int) []int {
	var got []int
	synctest.Test(t, func(t *testing.T) {
		link := coaptest.NewLink(coaptest.LinkOptions{Seed: seed, MaxDelay: 100 * time.Millisecond})
		srv, err := link.Listen("127.0.0.1:5683")
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		cl, err := link.DialUDP(t.Context(), "127.0.0.1:5683")
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		for i := range n {
			if _, err := fmt.Fprintf(cl, "%d", i); err != nil {
				t.Fatal(err)
			}
		}
		buf := make([]byte, 16)
		for range n {
			m, from, err := srv.ReadFrom(buf)
			if err != nil {
				t.Fatal(err)
			}
			if from.String() != cl.LocalAddr().String() {
				t.Fatalf("from %v, want %v", from, cl.LocalAddr())
			}
			var v int
			if _, err := fmt.Sscan(string(buf[:m]), &v); err != nil {
				t.Fatal(err)
			}
			got = append(got, v)
		}
	})
	return got
}

// Delays reorder datagrams, none is lost, and a seed reorders them the same way every time.
func TestReorderDeterministic(t *testing.T) {
	a, b, other := order(t, 7, 50), order(t, 7, 50), order(t, 8, 50)
	if slices.IsSorted(a) {
		t.Fatalf("no reordering: %v", a)
	}
	if s := slices.Sorted(slices.Values(a)); len(s) != 50 || s[0] != 0 || s[49] != 49 {
		t.Fatalf("datagrams lost or duplicated: %v", a)
	}
	if !slices.Equal(a, b) {
		t.Fatalf("same seed, different order:\n%v\n%v", a, b)
	}
	if slices.Equal(a, other) {
		t.Fatal("another seed gave the same order")
	}
}

// The endpoint behaves as a socket: a read deadline expires on the bubble's clock, a
// connected endpoint ignores strangers, Close wakes a blocked read, an address is taken once.
func TestConnSemantics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		link := coaptest.NewLink(coaptest.LinkOptions{})
		srv, err := link.Listen("127.0.0.1:5683")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := link.Listen("127.0.0.1:5683"); err == nil {
			t.Fatal("address bound twice")
		}
		cl, err := link.DialUDP(t.Context(), "127.0.0.1:5683")
		if err != nil {
			t.Fatal(err)
		}
		stranger, err := link.Listen("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stranger.WriteTo([]byte("spoof"), cl.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		if err := cl.SetReadDeadline(time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if _, err := cl.Read(make([]byte, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read from a stranger or no deadline: %v", err)
		}
		if time.Since(start) != time.Second {
			t.Fatalf("deadline after %v", time.Since(start))
		}
		done := make(chan error)
		go func() { _, _, err := srv.ReadFrom(make([]byte, 8)); done <- err }()
		synctest.Wait()
		_ = srv.Close()
		if err := <-done; !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read after Close: %v", err)
		}
		if _, err := cl.Write([]byte("x")); err != nil {
			t.Fatalf("write to a closed peer (UDP drops it): %v", err)
		}
		if st := link.Stats(); st.Dropped != 1 {
			t.Fatalf("stats %+v", st)
		}
		_ = cl.Close()
		_ = stranger.Close()
	})
}
