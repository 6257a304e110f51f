package coap

import (
	"context"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// liveHeap is the heap of live objects after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkIdleUDPPeerMemory reports the server heap an idle coap:// peer costs (B/peer):
// n peers, each from its own socket, send one confirmable GET (answered piggybacked) and go
// quiet; the server keeps their sessions (and the deduplication entry of the GET, RFC 7252
// §4.5, for EXCHANGE_LIFETIME). Sources are trusted (Config.TrustUDPSources) so that each
// peer needs one exchange; a peer proven by Echo holds the same session. Run with
// -benchtime=1x; the clients are raw sockets (one source address each, 127.2.x.y), closed
// before measuring.
func BenchmarkIdleUDPPeerMemory(b *testing.B) {
	const n = 2000
	mux := NewMux()
	mux.Handle(Resource{Path: "/small", Handler: HandlerFunc(func(context.Context, *Request) *Response {
		return NewResponse(codes.Content, []byte("ok"))
	})})
	for b.Loop() {
		srv := NewServer(mux, Config{TrustUDPSources: true, MaxSessions: 2 * n, MaxSessionsPerIP: 2 * n})
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		go func() { _ = srv.ServeUDP(pc) }()
		before := liveHeap()
		buf := make([]byte, 1500)
		for i := range n {
			// A source address of its own for each peer: a closed socket's port may be reused.
			local := &net.UDPAddr{IP: net.IPv4(127, 2, byte((i+1)>>8), byte(i+1))}
			c, err := net.DialUDP("udp", local, pc.LocalAddr().(*net.UDPAddr))
			if err != nil {
				b.Fatal(err)
			}
			m := message.Message{Code: codes.GET, Type: message.Confirmable, MessageID: int32(i), Token: []byte{1, 2, 3, 4}}
			m.Options, _, _ = m.Options.SetPath(make([]byte, 64), "/small")
			if _, err := c.Write(encode(&m)); err != nil {
				b.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Read(buf); err != nil {
				b.Fatal(err)
			}
			c.Close()
		}
		if got := srv.Stats().ActiveSessions; got != n {
			b.Fatalf("server holds %d sessions, want %d", got, n)
		}
		after := liveHeap()
		b.ReportMetric((float64(after)-float64(before))/n, "B/peer")
		srv.Close()
	}
}
