package dtlsconn

import (
	"context"
	"crypto/rand"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
)

// captureClientHello returns the first datagram our client sends: a genuine
// initial ClientHello (no cookie).
func captureClientHello(t *testing.T) []byte {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := clientConfig(testPKI(t))
	cfg.HandshakeTimeout = 2 * time.Second
	go func() {
		_, _ = Dial(ctx, "udp", pc.LocalAddr().String(), cfg)
	}()
	_ = pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	n, _, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	if ok, cookie := firstClientHello(buf[:n]); !ok || cookie {
		t.Fatalf("captured datagram is not an initial ClientHello: %x", buf[:n])
	}
	return append([]byte(nil), buf[:n]...)
}

type memSample struct {
	goroutines int
	heap       uint64
}

func sample() memSample {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memSample{runtime.NumGoroutine(), ms.HeapInuse}
}

// TestSpoofedClientHellos: 5,000 ClientHellos from 5,000 source ports that
// never answer the cookie leave the listener serving a legitimate client,
// with goroutines and memory bounded by MaxHalfOpen.
// echoed reports whether an application record makes the round trip on c. A client that closes
// right after its handshake may have its close_notify processed while the server is still
// finishing (pion then reports a failed handshake); a round trip first makes both ends agree the
// session is up, so the failure count below measures only real failures.
func echoed(c *Conn) bool {
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	msg := []byte("\x00ping") // not CoAP (version 0): the test server echoes it verbatim
	if _, err := c.Write(msg); err != nil {
		return false
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	return err == nil && string(buf[:n]) == string(msg)
}

func TestSpoofedClientHellos(t *testing.T) {
	if testing.Short() {
		t.Skip("flood test")
	}
	p := testPKI(t)
	ch := captureClientHello(t)
	const maxHalfOpen = 256
	scfg := serverConfig(p)
	scfg.MaxHalfOpen = maxHalfOpen
	scfg.Logger = slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	l := listen(t, scfg)
	serve(t, l)
	runtime.GC()
	base := sample()

	var peak memSample
	var mu sync.Mutex
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tk := time.NewTicker(5 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
				s := sample()
				mu.Lock()
				peak.goroutines = max(peak.goroutines, s.goroutines)
				peak.heap = max(peak.heap, s.heap)
				mu.Unlock()
			}
		}
	}()

	// A legitimate client keeps (re)trying during the flood.
	var legitOK atomic.Int32
	wg.Add(1)
	go func() {
		defer wg.Done()
		cfg := clientConfig(p)
		cfg.HandshakeTimeout = 3 * time.Second
		for i := 0; i < 5 && legitOK.Load() == 0; i++ {
			c, err := Dial(context.Background(), "udp", l.Addr().String(), cfg)
			if err == nil {
				if echoed(c) {
					legitOK.Add(1)
				}
				c.Close()
			}
		}
	}()

	dst := l.Addr().(*net.UDPAddr)
	start := time.Now()
	const total, batch = 5000, 250
	for sent := 0; sent < total; sent += batch {
		socks := make([]*net.UDPConn, 0, batch)
		for i := 0; i < batch; i++ {
			s, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			socks = append(socks, s)
			_, _ = s.WriteToUDP(ch, dst)
		}
		for _, s := range socks {
			s.Close()
		}
	}
	floodTime := time.Since(start)
	// For the measurement below (logged, not asserted): let the listener take in the flood
	// until the half-open table is full, or 2 s.
	for deadline := time.Now().Add(2 * time.Second); l.Stats().HalfOpen < maxHalfOpen && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond) // a bounded poll of state that pion's goroutines reach
	}
	runtime.GC()
	live := sample() // the cap's worth of half-open handshakes is still alive here

	// After the flood, a fresh legitimate handshake must succeed. Normally it takes about a
	// millisecond; on a loaded machine the evicted handshakes may hold their slots for a few
	// seconds while they shut down, and the client's ClientHello retransmissions (1 s, 2 s, 4 s)
	// get through once they are released: allow for that.
	cfg := clientConfig(p)
	cfg.HandshakeTimeout = 20 * time.Second
	t0 := time.Now()
	c, err := Dial(context.Background(), "udp", l.Addr().String(), cfg)
	if err != nil {
		t.Fatalf("legitimate client after flood: %v (stats %+v)", err, l.Stats())
	}
	after := time.Since(t0)
	if !echoed(c) {
		t.Fatalf("legitimate session after flood carries no data (stats %+v)", l.Stats())
	}
	c.Close()
	close(stop)
	wg.Wait()
	// The server finishes after the client.
	waitUntil(t, 5*time.Second, "the server to finish the legitimate handshakes", func() bool { return l.Stats().HandshakesOK >= 2 })
	st := l.Stats()
	t.Logf("flood: %d spoofed ClientHellos in %v; legit during flood ok=%v; legit after flood handshake %v",
		total, floodTime, legitOK.Load() > 0, after)
	t.Logf("goroutines base %d peak %d (+%d); heap base %.1f MB peak %.1f MB (+%.1f MB)",
		base.goroutines, peak.goroutines, peak.goroutines-base.goroutines,
		float64(base.heap)/1e6, float64(peak.heap)/1e6, float64(peak.heap-base.heap)/1e6)
	t.Logf("after flood, GC'd: goroutines %d, live heap %.1f MB (%d half-open)",
		live.goroutines, float64(live.heap)/1e6, st.HalfOpen)
	t.Logf("stats %+v", st)
	if st.HalfOpen > maxHalfOpen {
		t.Fatalf("half-open %d > cap %d", st.HalfOpen, maxHalfOpen)
	}
	// Each half-open pion server holds ≈ 6 goroutines (ours, pion's FSM and
	// reader, its context watchers).
	if limit := base.goroutines + maxHalfOpen*3/2*8 + 50; peak.goroutines > limit {
		t.Fatalf("goroutines peaked at %d > %d", peak.goroutines, limit)
	}
	if peak.heap-base.heap > 64<<20 {
		t.Fatalf("heap grew by %d bytes", peak.heap-base.heap)
	}
	if st.Evicted == 0 {
		t.Fatalf("no eviction with %d spoofed sources and cap %d", total, maxHalfOpen)
	}
	if st.HandshakesOK < 1 || st.HandshakesFailed > 0 {
		t.Fatalf("legitimate handshakes: %+v", st)
	}
	// Handshakes whose cookie never comes back are dropped after 3 s,
	// without closing the listener.
	var drained memSample
	waitUntil(t, 10*time.Second, "the spoofed handshakes to be released", func() bool {
		runtime.GC()
		drained = sample()
		return l.Stats().HalfOpen == 0 && drained.goroutines <= base.goroutines+20
	})
	t.Logf("3 s later: half-open %d, goroutines %d, heap %.1f MB", l.Stats().HalfOpen, drained.goroutines,
		float64(drained.heap)/1e6)
	// Closing the listener releases everything.
	_ = l.Close()
	defer func() {
		// For the report: the same flood against stock pion (dtls.ListenWithOptions) in this run.
		g, h := floodStockPion(t, ch, total, batch)
		t.Logf("stock pion, same flood: goroutines +%d, heap +%.1f MB (ours: +%d, +%.1f MB)",
			g, float64(h)/1e6, peak.goroutines-base.goroutines, float64(peak.heap-base.heap)/1e6)
	}()
	waitUntil(t, 5*time.Second, "the goroutines to end after Close", func() bool {
		return runtime.NumGoroutine() <= base.goroutines+20
	})
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) { w.t.Log(string(b)); return len(b), nil }

// TestGarbage: random datagrams, truncated records and bare handshake headers
// are dropped without creating state, and a client still connects.
func TestGarbage(t *testing.T) {
	p := testPKI(t)
	l := listen(t, serverConfig(p))
	serve(t, l)
	ch := captureClientHello(t)
	s, err := net.DialUDP("udp", nil, l.Addr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	garbage := [][]byte{
		{},
		{0x16},
		{0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff}, // record longer than datagram
		ch[:20],                         // truncated ClientHello
		append([]byte{0x17}, ch[1:]...), // application data from unknown source
		{0x19, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0}, // CID record, unknown CID
	}
	for i := 0; i < 200; i++ {
		b := make([]byte, 1+i*7%1400)
		_, _ = rand.Read(b)
		garbage = append(garbage, b)
	}
	for _, g := range garbage {
		_, _ = s.Write(g)
	}
	waitUntil(t, 5*time.Second, "the garbage to be dropped", func() bool { return l.Stats().DroppedGarbage >= 100 })
	if st := l.Stats(); st.HalfOpen != 0 || st.DroppedGarbage < 100 {
		t.Fatalf("stats after garbage %+v", st)
	}
	c, err := Dial(context.Background(), "udp", l.Addr().String(), clientConfig(p))
	if err != nil {
		t.Fatal(err)
	}
	// Garbage inside an established session's address is handed to pion,
	// which drops it; the session survives.
	ca := c.LocalAddr().(*net.UDPAddr)
	_ = ca
	if _, err := c.Write([]byte{0x40, 0x01, 0, 1}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(buf); err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// floodStockPion sends the spoofed ClientHellos to a plain pion listener
// (accepting and handshaking like a server would) and returns the peak growth
// of goroutines and heap over the following 300 ms.
func floodStockPion(t *testing.T, ch []byte, total, batch int) (int, uint64) {
	p := testPKI(t)
	ln, err := dtls.ListenWithOptions("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)},
		dtls.WithCertificates(p.server),
		dtls.WithCipherSuites(dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8),
		dtls.WithExtendedMasterSecret(dtls.RequireExtendedMasterSecret),
		dtls.WithClientAuth(dtls.RequireAnyClientCert),
		dtls.WithLoggerFactory(quietLoggerFactory()),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				if dc, ok := c.(*dtls.Conn); ok {
					_ = dc.HandshakeContext(ctx)
				}
				_ = c.Close()
			}()
		}
	}()
	runtime.GC()
	base := sample()
	dst := ln.Addr().(*net.UDPAddr)
	peak := base
	for sent := 0; sent < total; sent += batch {
		for i := 0; i < batch; i++ {
			s, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			_, _ = s.WriteToUDP(ch, dst)
			s.Close()
		}
		cur := sample()
		peak.goroutines, peak.heap = max(peak.goroutines, cur.goroutines), max(peak.heap, cur.heap)
	}
	// A measurement window (logged, not asserted): sample the peak for 300 ms.
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		cur := sample()
		peak.goroutines, peak.heap = max(peak.goroutines, cur.goroutines), max(peak.heap, cur.heap)
	}
	return peak.goroutines - base.goroutines, peak.heap - base.heap
}
