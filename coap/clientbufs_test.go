package coap

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// TestClientReadBuffersReused: clients take their read buffers from a pool and give them back
// at Close. Over real loopback sockets (coap:// and coaps://), clients are closed and new ones
// dialed (taking the buffers given back) while others stay open and keep exchanging block-wise
// bodies: every client must still get exactly its own answers, the buffers never shared by
// two readers.
func TestClientReadBuffersReused(t *testing.T) {
	p := newTestPKI(t)
	udp := startTestServer(t, fastConfig())
	dtlsSrv, _ := startDTLSServer(t, p, fastConfig())
	for _, tc := range []struct {
		name string
		dial func(t *testing.T) *Client
	}{
		{"coap", func(t *testing.T) *Client { return dialTest(t, udp, 0) }},
		{"coaps", func(t *testing.T) *Client { return dialDTLSTest(t, p, dtlsSrv, 0) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			ask := func(c *Client, n int) {
				t.Helper()
				in := testBody(n, 0x33)
				r, err := c.Do(ctx, &ClientRequest{Method: codes.POST, Path: "/echo", Payload: in})
				if err != nil {
					t.Fatalf("POST /echo (%d bytes): %v", n, err)
				}
				if r.Code != codes.Changed || !bytes.Equal(r.Payload, echoBody(in)) {
					t.Fatalf("POST /echo (%d bytes): %v, %d bytes not the echo of ours", n, r.Code, len(r.Payload))
				}
			}
			open := []*Client{tc.dial(t), tc.dial(t), tc.dial(t)}
			for round := range 4 {
				// Close the oldest: its buffer goes back to the pool; a new client takes one.
				_ = open[0].Close()
				open = append(open[1:], tc.dial(t))
				done := make(chan error, len(open))
				for i, c := range open {
					go func() {
						for k := range 3 {
							n := 10 + 100*round + 10*i + k
							in := testBody(n, 0x33)
							r, err := c.Do(ctx, &ClientRequest{Method: codes.POST, Path: "/echo", Payload: in})
							if err != nil {
								done <- fmt.Errorf("client %d, POST %d bytes: %w", i, n, err)
								return
							}
							if r.Code != codes.Changed || !bytes.Equal(r.Payload, echoBody(in)) {
								done <- fmt.Errorf("client %d, POST %d bytes: %v, not the echo of its own body", i, n, r.Code)
								return
							}
						}
						done <- nil
					}()
				}
				for range open {
					if err := <-done; err != nil {
						t.Fatal(err)
					}
				}
			}
			ask(open[len(open)-1], 5)
		})
	}
}
