package dtlsconn

import (
	"bytes"
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
	pionelliptic "github.com/pion/dtls/v3/pkg/crypto/elliptic"
)

// swappablePC is a client socket whose local port can be changed mid-session
// (a NAT rebinding).
type swappablePC struct {
	mu sync.Mutex
	pc *net.UDPConn
}

func (s *swappablePC) cur() *net.UDPConn { s.mu.Lock(); defer s.mu.Unlock(); return s.pc }
func (s *swappablePC) swap(t *testing.T) {
	n, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	s.swapTo(n)
}

// swapTo moves to socket n (which may be one used before).
func (s *swappablePC) swapTo(n *net.UDPConn) {
	_ = n.SetReadDeadline(time.Time{})
	s.mu.Lock()
	old := s.pc
	s.pc = n
	s.mu.Unlock()
	_ = old.SetReadDeadline(time.Now()) // wake the reader; it moves to the new socket
}
func (s *swappablePC) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		pc := s.cur()
		n, a, err := pc.ReadFrom(b)
		if err != nil && pc != s.cur() {
			continue
		}
		return n, a, err
	}
}
func (s *swappablePC) WriteTo(b []byte, a net.Addr) (int, error) { return s.cur().WriteTo(b, a) }
func (s *swappablePC) Close() error                              { return s.cur().Close() }
func (s *swappablePC) LocalAddr() net.Addr                       { return s.cur().LocalAddr() }
func (s *swappablePC) SetDeadline(t time.Time) error             { return s.cur().SetDeadline(t) }
func (s *swappablePC) SetReadDeadline(t time.Time) error         { return s.cur().SetReadDeadline(t) }
func (s *swappablePC) SetWriteDeadline(t time.Time) error        { return s.cur().SetWriteDeadline(t) }

// TestConnectionIDMigration: with RFC 9146 connection IDs, the session
// survives a change of the client's address (RFC 9146 §6).
func TestConnectionIDMigration(t *testing.T) {
	p := testPKI(t)
	scfg := serverConfig(p)
	scfg.ConnectionID = true
	l := listen(t, scfg)
	acc := serve(t, l)
	first, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	spc := &swappablePC{pc: first}
	c, err := dtls.ClientWithOptions(spc, l.Addr(),
		dtls.WithCertificates(p.client), dtls.WithRootCAs(p.pool), dtls.WithServerName("localhost"),
		dtls.WithCipherSuites(dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8),
		dtls.WithExtendedMasterSecret(dtls.RequireExtendedMasterSecret),
		dtls.WithEllipticCurves(pionelliptic.P256),
		dtls.WithConnectionIDGenerator(dtls.OnlySendCIDGenerator()),
		dtls.WithLoggerFactory(quietLoggerFactory()),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.HandshakeContext(ctx); err != nil {
		t.Fatal(err)
	}
	s := acceptOne(t, acc)
	if !s.ConnectionID() {
		t.Fatal("no connection ID negotiated")
	}
	// roundTrip sends a CON and waits for the answer, resending like a CoAP client (RFC 7252
	// §4.2): right after the address change pion may still answer one record to the old
	// address before it adopts the new one (seen under the race detector's slowdown). Like a
	// CoAP client it matches the answer by Message ID (§4.4) and skips others: that early
	// answer waits in the old socket's queue and is read once the client moves back to it.
	roundTrip := func(mid byte) {
		t.Helper()
		want := []byte{0x60, 0x45, 0, mid, 0xff, 'o', 'k'}
		buf := make([]byte, 100)
		var n int
		var err error
	tries:
		for try := 0; try < 3; try++ {
			if _, err = c.Write([]byte{0x40, 0x01, 0, mid}); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			for {
				if n, err = c.Read(buf); err != nil {
					continue tries
				}
				if n >= 4 && buf[3] != mid {
					t.Logf("round trip %d: skipping the late answer %x", mid, buf[:n])
					continue
				}
				break tries
			}
		}
		if err != nil || !bytes.Equal(buf[:n], want) {
			t.Fatalf("round trip %d: %x %v", mid, buf[:n], err)
		}
	}
	roundTrip(1)
	before := s.RemoteAddr().String()
	spc.swap(t)
	roundTrip(2)
	if after := s.RemoteAddr().String(); after == before {
		t.Fatalf("server still sees %s", after)
	}
	// Back to the first address: the server's answers must follow again (the listener's
	// per-connection memory of the last checked destination must not keep the second one).
	spc.swapTo(first)
	roundTrip(3)
	if after := s.RemoteAddr().String(); after != before {
		t.Fatalf("server sees %s, want %s again", after, before)
	}
	if st := l.Stats(); st.ActiveSessions != 1 || st.HandshakesOK != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestMaxSessions: a ClientHello beyond MaxSessions gets no answer.
func TestMaxSessions(t *testing.T) {
	p := testPKI(t)
	scfg := serverConfig(p)
	scfg.MaxSessions = 1
	l := listen(t, scfg)
	serve(t, l)
	c, err := dialOnly(t, l, clientConfig(p), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cfg := clientConfig(p)
	cfg.HandshakeTimeout = 1500 * time.Millisecond
	if c2, err := dialOnly(t, l, cfg, 0); err == nil {
		c2.Close()
		t.Fatal("second session accepted beyond MaxSessions")
	}
	if st := l.Stats(); st.DroppedCaps == 0 || st.ActiveSessions != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestRebootedClient: a client that lost its session and starts a new
// handshake from the same address and port gets a new session (RFC 6347
// §4.2.8), and the old one is dropped.
func TestRebootedClient(t *testing.T) {
	p := testPKI(t)
	l := listen(t, serverConfig(p))
	acc := serve(t, l)
	laddr := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}
	var first *dtls.Conn
	var firstTU []byte
	for i := 0; i < 2; i++ {
		pc, err := net.ListenUDP("udp", laddr)
		if err != nil {
			t.Fatal(err)
		}
		laddr = pc.LocalAddr().(*net.UDPAddr) // same port the second time
		c, err := dtls.ClientWithOptions(pc, l.Addr(),
			dtls.WithCertificates(p.client), dtls.WithRootCAs(p.pool), dtls.WithServerName("localhost"),
			dtls.WithCipherSuites(dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8),
			dtls.WithExtendedMasterSecret(dtls.RequireExtendedMasterSecret),
			dtls.WithLoggerFactory(quietLoggerFactory()),
		)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = c.HandshakeContext(ctx)
		cancel()
		if err != nil {
			t.Fatalf("handshake %d: %v (stats %+v)", i, err, l.Stats())
		}
		s := acceptOne(t, acc)
		if i == 0 {
			first, firstTU = c, s.TLSUnique()
			_ = pc.Close() // "reboot": the socket goes away without close_notify
			continue
		}
		defer c.Close()
		if bytes.Equal(s.TLSUnique(), firstTU) {
			t.Fatal("same session")
		}
		if _, err := c.Write([]byte{0x40, 0x01, 0, 9}); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, 64)
		if n, err := c.Read(buf); err != nil || n != 7 {
			t.Fatalf("echo on new session: %d %v", n, err)
		}
	}
	_ = first
	waitUntil(t, 5*time.Second, "the server to finish the second handshake", func() bool {
		st := l.Stats()
		return st.HandshakesOK == 2 && st.ActiveSessions == 1 && st.HalfOpen == 0
	})
	if st := l.Stats(); st.HandshakesOK != 2 || st.ActiveSessions != 1 || st.HalfOpen != 0 {
		t.Fatalf("stats %+v", st)
	}
}
