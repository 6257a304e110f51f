package coap

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// TestConcurrentNotificationsKeepTheirOrder: several goroutines notify one resource at once —
// CMP's revocation and CRL announcements come from different goroutines. A notification's
// Observe number must go out in the order it was taken: the client drops one that arrives after a
// newer number (RFC 7641 §3.4), and the numbers were taken before the send, so a notification
// overtaken on its way to the socket was lost (seen as a CMP rann that never arrived).
func TestConcurrentNotificationsKeepTheirOrder(t *testing.T) {
	ts := startTestServer(t, Config{ACKTimeout: 200 * time.Millisecond, ObserveConEvery: 1 << 20})
	c := dialTest(t, ts, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got := make(chan string, 4096)
	go c.Observe(ctx, "/obs", func(r *Response) { got <- string(r.Payload) })
	if s := <-got; s != "state 0" {
		t.Fatalf("first: %q", s)
	}
	// Rounds of eight notifications started at once: few enough in flight that none is lost
	// to a socket buffer, so every missing one was dropped as stale.
	const senders, rounds = 8, 100
	for round := range rounds {
		start := make(chan struct{})
		var wg sync.WaitGroup
		for g := range senders {
			wg.Go(func() {
				<-start
				ts.srv.Notify("/obs", NewResponse(codes.Content, fmt.Appendf(nil, "%d-%d", round, g)))
			})
		}
		close(start)
		wg.Wait()
		for n := range senders {
			select {
			case <-got:
			case <-time.After(10 * time.Second): // a bound on a loaded machine, not a timing claim
				t.Fatalf("round %d: %d of %d notifications reached the client: the others arrived after a newer one and were dropped (RFC 7641 §3.4)", round, n, senders)
			}
		}
	}
}
