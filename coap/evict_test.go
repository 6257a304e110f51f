package coap

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"testing/synctest"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// TestEvictedSessionKeepsItsAnswers: a coap:// peer's request was answered, the answer was
// lost, and before its retransmission arrives the peer's session is evicted — another port of
// the same address (a NAT gateway, a burst of devices) needed the slot. The retransmission
// must get the answer it was given, not a second run of the request (RFC 7252 §4.5: a
// second certificate; under OSCORE, "Replay detected"). On the previous code the evicted
// session's deduplication cache went with it and the request ran twice.
func TestEvictedSessionKeepsItsAnswers(t *testing.T) {
	for _, trust := range []bool{true, false} {
		t.Run(fmt.Sprintf("trust_udp_sources=%v", trust), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { testEvictedSessionKeepsItsAnswers(t, trust) })
		})
	}
}

func testEvictedSessionKeepsItsAnswers(t *testing.T, trust bool) {
	cfg := fastConfig()
	cfg.MaxSessionsPerIP = 1
	cfg.TrustUDPSources = trust
	var runs atomic.Int64
	mux := NewMux()
	mux.Handle(Resource{Path: "/sen", Handler: HandlerFunc(func(context.Context, *Request) *Response {
		return NewResponse(codes.Changed, fmt.Appendf(nil, "certificate %d", runs.Add(1)))
	})})
	srv := NewServer(mux, cfg)
	pc := newRecPC()
	post := func(ap netip.AddrPort, mid uint16, echo bool) []byte {
		m := getReq(mid, "tk", "/sen")
		m.Code, m.Payload = codes.POST, []byte("csr")
		if echo {
			// The Echo value a challenge gave the address (RFC 9175 §2.4).
			m.Options = append(message.Options(nil), m.Options...).Add(message.Option{ID: optEcho, Value: srv.echo.value(ap)})
		}
		return encode(m)
	}
	answers := func(ap netip.AddrPort, n int) [][]byte {
		t.Helper()
		synctest.Wait() // the handlers' goroutines have answered
		got := pc.to(ap)
		if len(got) != n {
			t.Fatalf("%v: %d answers, want %d", ap, len(got), n)
		}
		return got
	}
	a := netip.MustParseAddrPort("192.0.2.7:40001")
	b := netip.MustParseAddrPort("192.0.2.7:40002")

	seen := 0
	if !trust {
		// a proves its address once; its later requests carry no Echo.
		srv.HandleDatagram(pc, a, post(a, 99, true))
		seen = 1
		answers(a, seen)
	}
	reqA := post(a, 100, false)
	srv.HandleDatagram(pc, a, reqA)
	first := answers(a, seen+1)[seen]
	srv.HandleDatagram(pc, b, post(b, 200, !trust)) // takes a's slot: a's session is evicted
	answers(b, 1)
	if st := srv.Stats(); st.ActiveSessions != 1 {
		t.Fatalf("%d sessions with a cap of one per address", st.ActiveSessions)
	}

	// a's answer was lost; it retransmits the request (RFC 7252 §4.2), byte for byte.
	// Without trust, the address is not challenged again: it proved itself, and would
	// still be proven had its session not been evicted.
	srv.HandleDatagram(pc, a, reqA)
	again := answers(a, seen+2)[seen+1]
	if !bytes.Equal(again, first) {
		t.Fatalf("the retransmission got another answer:\n%x\nwant\n%x", again, first)
	}
	if n, want := runs.Load(), int64(seen+2); n != want {
		t.Fatalf("the handler ran %d times for %d requests", n, want)
	}
	if st := srv.Stats(); st.AnswersKept != 1 || st.Duplicates != 1 {
		t.Fatalf("answers kept %d, duplicates %d; want 1 and 1", st.AnswersKept, st.Duplicates)
	}

	// A new request from a (new Message ID) is a new request.
	srv.HandleDatagram(pc, a, post(a, 101, false))
	if n := answers(a, seen+3); runs.Load() != int64(seen+3) || bytes.Equal(n[seen+2], first) {
		t.Fatalf("a new request after the eviction was not run (%d runs)", runs.Load())
	}

	// Nothing leaks: every cached answer's bytes are released when the server closes.
	srv.Close()
	synctest.Wait() // the evicted sessions close in goroutines of their own
	if c := srv.Stats().CacheBytes; c != 0 {
		t.Fatalf("%d cache bytes still counted after Close", c)
	}
}
