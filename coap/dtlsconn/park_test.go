package dtlsconn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"
)

// parkingEcho reads records on c and echoes them; after every record it parks the session
// (Conn.Park), and its wake callback starts it again. reads receives every record read.
func parkingEcho(c *Conn, reads chan<- string, parkErr chan<- error) {
	buf := make([]byte, 2048)
	for {
		n, err := c.Read(buf)
		if err != nil {
			close(reads)
			return
		}
		reads <- string(buf[:n])
		if _, err := c.Write(buf[:n]); err != nil {
			close(reads)
			return
		}
		err = c.Park(func() { parkingEcho(c, reads, parkErr) })
		if parkErr != nil {
			parkErr <- err
		}
		if err == nil {
			return
		}
	}
}

// udpProxy forwards datagrams between one client and the listener, recording them: the
// attacker on the path.
type udpProxy struct {
	front, back *net.UDPConn
	mu          sync.Mutex
	client      *net.UDPAddr
	up, down    [][]byte // client→server, server→client
}

func newProxy(t *testing.T, server net.Addr) *udpProxy {
	t.Helper()
	front, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	back, err := net.DialUDP("udp", nil, server.(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	p := &udpProxy{front: front, back: back}
	t.Cleanup(func() { front.Close(); back.Close() })
	go func() {
		buf := make([]byte, 1<<16)
		for {
			n, from, err := front.ReadFromUDP(buf)
			if err != nil {
				return
			}
			p.mu.Lock()
			p.client = from
			p.up = append(p.up, bytes.Clone(buf[:n]))
			p.mu.Unlock()
			_, _ = back.Write(buf[:n])
		}
	}()
	go func() {
		buf := make([]byte, 1<<16)
		for {
			n, err := back.Read(buf)
			if err != nil {
				return
			}
			p.mu.Lock()
			p.down = append(p.down, bytes.Clone(buf[:n]))
			to := p.client
			p.mu.Unlock()
			_, _ = front.WriteToUDP(buf[:n], to)
		}
	}()
	return p
}

// lastUp returns the last client→server datagram.
func (p *udpProxy) lastUp() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.up[len(p.up)-1]
}

// serverSeqs returns the (epoch, sequence number) of every record the server sent.
func (p *udpProxy) serverSeqs(t *testing.T) []recordHeader {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []recordHeader
	for _, d := range p.down {
		if err := splitRecords(d, func(h recordHeader, _ []byte) error {
			out = append(out, h)
			return nil
		}); err != nil {
			t.Fatalf("server datagram: %v", err)
		}
	}
	return out
}

func dialVia(t *testing.T, addr string, cfg ClientConfig) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, "udp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func roundTrip(t *testing.T, c *Conn, msg string) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != msg {
		t.Fatalf("echo of %q: %q, %v", msg, buf[:n], err)
	}
}

func recv(t *testing.T, ch <-chan string) string {
	t.Helper()
	select {
	case s := <-ch:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("server read nothing")
		return ""
	}
}

// TestParkResume: a parked session resumes on the peer's next record, many times, with the
// same channel bindings and peer, with and without a connection ID.
func TestParkResume(t *testing.T) {
	p := testPKI(t)
	for _, cid := range []bool{false, true} {
		t.Run(fmt.Sprintf("cid=%v", cid), func(t *testing.T) {
			scfg := serverConfig(p)
			scfg.ConnectionID = cid
			l := listen(t, scfg)
			ccfg := clientConfig(p)
			ccfg.ConnectionID = cid
			c := dialVia(t, l.Addr().String(), ccfg)
			s, err := l.Accept()
			if err != nil {
				t.Fatal(err)
			}
			unique, exporter := s.TLSUnique(), s.TLSExporter()
			reads, parked := make(chan string, 16), make(chan error, 16)
			go parkingEcho(s, reads, parked)
			const cycles = 5
			for i := range cycles {
				msg := fmt.Sprintf("message %d", i)
				roundTrip(t, c, msg)
				if got := recv(t, reads); got != msg {
					t.Fatalf("server read %q, want %q", got, msg)
				}
				if err := <-parked; err != nil {
					t.Fatalf("park %d: %v", i, err)
				}
			}
			st := l.Stats()
			if st.Parks != cycles || st.Resumes != cycles-1 || st.ActiveSessions != 1 || st.Parked != 1 {
				t.Fatalf("stats %+v", st)
			}
			if !bytes.Equal(s.TLSUnique(), unique) || !bytes.Equal(s.TLSExporter(), exporter) || len(unique) != 12 ||
				len(s.PeerCertificates()) == 0 || s.ConnectionID() != cid {
				t.Fatalf("bindings or peer changed across parking")
			}
		})
	}
}

// TestParkReplay is the attack on a parked session's receive side: a record the client sent
// before the session was parked, replayed from the client's address, resumes the session
// but is refused (RFC 6347 §4.1.2.6 replay protection survives the export); the client's
// next record is read.
func TestParkReplay(t *testing.T) {
	p := testPKI(t)
	l := listen(t, serverConfig(p))
	px := newProxy(t, l.Addr())
	c := dialVia(t, px.front.LocalAddr().String(), clientConfig(p))
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	reads, parked := make(chan string, 16), make(chan error, 16)
	go parkingEcho(s, reads, parked)
	roundTrip(t, c, "enroll me")
	if got := recv(t, reads); got != "enroll me" {
		t.Fatalf("read %q", got)
	}
	if err := <-parked; err != nil {
		t.Fatal(err)
	}
	recorded := px.lastUp() // the application record "enroll me"
	for range 3 {
		if _, err := px.back.Write(recorded); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, 10*time.Second, "the replay to resume the session", func() bool { return l.Stats().Resumes >= 1 })
	roundTrip(t, c, "next")
	if got := recv(t, reads); got != "next" {
		t.Fatalf("the server read %q after a replayed record: want only the client's next record", got)
	}
}

// TestParkNeverReusesSequenceNumbers is the attack on a parked session's send side: an
// eavesdropper collecting the server's records across park/resume cycles must never see two
// records with the same epoch and sequence number (RFC 6347 §4.1: the AEAD nonce of
// CCM_8/GCM is built from them; a repeat would reveal plaintext and forge records).
func TestParkNeverReusesSequenceNumbers(t *testing.T) {
	p := testPKI(t)
	l := listen(t, serverConfig(p))
	px := newProxy(t, l.Addr())
	c := dialVia(t, px.front.LocalAddr().String(), clientConfig(p))
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	reads, parked := make(chan string, 16), make(chan error, 16)
	go parkingEcho(s, reads, parked)
	for i := range 6 {
		roundTrip(t, c, fmt.Sprint("m", i))
		recv(t, reads)
		if err := <-parked; err != nil {
			t.Fatal(err)
		}
	}
	seen := map[[2]uint64]bool{}
	var last uint64
	n := 0
	for _, h := range px.serverSeqs(t) {
		if h.Epoch == 0 {
			continue
		}
		k := [2]uint64{uint64(h.Epoch), h.Seq}
		if seen[k] {
			t.Fatalf("server reused epoch %d sequence number %d", h.Epoch, h.Seq)
		}
		if h.Seq <= last && n > 0 {
			t.Fatalf("server sequence number went back: %d after %d", h.Seq, last)
		}
		seen[k], last = true, h.Seq
		n++
	}
	if n < 7 { // Finished + 6 echoes
		t.Fatalf("only %d epoch-1 records seen", n)
	}
}

// TestParkRefused: a session cannot be parked before the peer has sent a record after the
// handshake (it may still need our Finished again), twice, or on the client side.
func TestParkRefused(t *testing.T) {
	p := testPKI(t)
	l := listen(t, serverConfig(p))
	c := dialVia(t, l.Addr().String(), clientConfig(p))
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Park(func() {}); !errors.Is(err, ErrBusy) {
		t.Fatalf("park before any record: %v, want ErrBusy", err)
	}
	if err := c.Park(func() {}); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("park a client session: %v", err)
	}
	reads := make(chan string, 4)
	go parkingEcho(s, reads, nil)
	roundTrip(t, c, "x")
	waitUntil(t, 10*time.Second, "the session to park", func() bool { return l.Stats().Parks == 1 })
	if err := s.Park(func() {}); !errors.Is(err, ErrBusy) {
		t.Fatalf("park a parked session: %v, want ErrBusy", err)
	}
}

// TestParkedGarbageAndIdle: garbage from a parked session's address resumes it without
// ending it; an idle parked session is closed by the idle timeout and its reader woken to
// see the end; a parked session holds no goroutine.
func TestParkedGarbageAndIdle(t *testing.T) {
	p := testPKI(t)
	cfg := serverConfig(p)
	cfg.IdleTimeout = 2 * time.Second
	l := listen(t, cfg)
	px := newProxy(t, l.Addr())
	c := dialVia(t, px.front.LocalAddr().String(), clientConfig(p))
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	reads, parked := make(chan string, 16), make(chan error, 16)
	go parkingEcho(s, reads, parked)
	roundTrip(t, c, "a")
	recv(t, reads)
	if err := <-parked; err != nil {
		t.Fatal(err)
	}
	for _, g := range [][]byte{{0x17, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 99, 0, 5, 1, 2, 3, 4, 5}, {0xff}, bytes.Repeat([]byte{0x17}, 300)} {
		if _, err := px.back.Write(g); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, 10*time.Second, "the garbage to resume the session", func() bool { return l.Stats().Resumes >= 1 })
	roundTrip(t, c, "b")
	if got := recv(t, reads); got != "b" {
		t.Fatalf("read %q", got)
	}
	if err := <-parked; err != nil {
		t.Fatal(err)
	}
	// Parked: the idle timeout ends it and wakes the reader, which sees the end.
	select {
	case _, ok := <-reads:
		if ok {
			t.Fatal("unexpected record")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the parked session's reader was not woken by the idle timeout")
	}
	// The idle sweep counts IdleClosed after the shutdown that woke the reader.
	waitUntil(t, 10*time.Second, "the idle close to be counted", func() bool { return l.Stats().IdleClosed == 1 })
	if st := l.Stats(); st.ActiveSessions != 0 || st.IdleClosed != 1 || st.Parked != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestParkedSessionsHoldNoGoroutines: parking many sessions leaves no per-session goroutine.
func TestParkedSessionsHoldNoGoroutines(t *testing.T) {
	p := testPKI(t)
	l := listen(t, serverConfig(p))
	const n = 20
	var clients []*Conn
	for range n {
		clients = append(clients, dialVia(t, l.Addr().String(), clientConfig(p)))
	}
	var servers []*Conn
	for range n {
		s, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		servers = append(servers, s)
	}
	base := runtime.NumGoroutine()
	for _, s := range servers {
		go parkingEcho(s, make(chan string, 4), nil)
	}
	for _, c := range clients {
		roundTrip(t, c, "hello")
	}
	waitUntil(t, 10*time.Second, "every session to park", func() bool { return l.Stats().Parks == n })
	if st := l.Stats(); st.Parked != n || st.ActiveSessions != n {
		t.Fatalf("parked gauge %d of %d sessions, want %d of %d", st.Parked, st.ActiveSessions, n, n)
	}
	// base counted the server's pion goroutines of every established session (at least
	// two each); parked, they are gone.
	waitUntil(t, 10*time.Second, "the parked sessions' goroutines to end", func() bool {
		return runtime.NumGoroutine() <= base-2*n
	})
	for i := range n {
		roundTrip(t, clients[i], "again")
	}
}
