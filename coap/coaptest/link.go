// Package coaptest is an in-memory datagram network for tests of CoAP endpoints: a Link on
// which a coap.Server serves (Listen gives a net.PacketConn for Server.ServeUDP) and a
// coap.Client dials (Link.DialUDP is a coap.ClientOptions.DialUDP), optionally losing,
// delaying and so reordering datagrams with a seeded PRNG.
//
// The link uses no sockets and blocks only on channels and timers, so a test can run the
// whole exchange inside a testing/synctest bubble: RFC 7252 §4.2 retransmission timers,
// separate responses (§5.2.2), block-wise timeouts and observe re-registration then run on
// the bubble's fake clock, without sleeps and without depending on the machine's load.
//
//	synctest.Test(t, func(t *testing.T) {
//		link := coaptest.NewLink(coaptest.LinkOptions{Seed: 1, Loss: 0.3})
//		srv := coap.NewServer(mux, coap.Config{})
//		url := coaptest.Serve(t, link, srv)
//		c, err := coap.Dial(t.Context(), url, coap.ClientOptions{DialUDP: link.DialUDP})
//		...
//	})
//
// Determinism: the PRNG is drawn once per datagram, in the order datagrams are written, so
// the same seed and the same sequence of writes lose and delay the same datagrams. Within a
// synctest bubble timers fire on the fake clock, so delays reorder datagrams the same way on
// every run.
package coaptest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"
)

// LinkOptions configure a Link. The zero value is a perfect link: no loss, no delay.
type LinkOptions struct {
	// Seed seeds the PRNG that decides loss and delay.
	Seed uint64
	// Loss is the probability (0..1) that a datagram is dropped.
	Loss float64
	// MaxDelay delays each datagram by a uniformly drawn duration in [0, MaxDelay]; a later
	// datagram with a shorter delay overtakes an earlier one (reordering).
	MaxDelay time.Duration
	// Drop, when set, is asked about every datagram first (after the PRNG draws, so it does
	// not change them): true drops it. For targeted loss, e.g. "the first response".
	Drop func(from, to netip.AddrPort, b []byte) bool
	// QueueLen bounds each endpoint's receive queue (default 1024); a datagram arriving at a
	// full queue is dropped, as a full socket buffer drops it.
	QueueLen int
}

// Link is an in-memory datagram network between Conns.
type Link struct {
	opts LinkOptions

	mu       sync.Mutex
	rng      *rand.Rand
	conns    map[netip.AddrPort]*Conn
	nextPort uint16
	// The counters change under mu together with the queue they describe, so a reader that
	// has received a datagram sees it counted.
	stats Stats
}

// NewLink returns a Link with opts.
func NewLink(opts LinkOptions) *Link {
	if opts.QueueLen <= 0 {
		opts.QueueLen = 1024
	}
	return &Link{opts: opts, rng: rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x9e3779b97f4a7c15)),
		conns: map[netip.AddrPort]*Conn{}, nextPort: 40000}
}

// Stats counts datagrams: written, dropped (loss, Drop, unknown destination, full queue)
// and delivered into a receive queue.
type Stats struct{ Sent, Dropped, Delivered int64 }

// Stats returns the link's counters.
func (l *Link) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stats
}

// Listen returns an unconnected endpoint at addr ("127.0.0.1:5683"; port 0 picks a free
// one). It implements net.PacketConn.
func (l *Link) Listen(addr string) (*Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("coaptest: listen %q: %w", addr, err)
	}
	return l.bind(ap, netip.AddrPort{})
}

// DialUDP returns an endpoint at a fresh 127.0.0.1 port connected to addr: it writes only to
// addr and reads only from it. Its signature is coap.ClientOptions.DialUDP's.
func (l *Link) DialUDP(_ context.Context, addr string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("coaptest: dial %q: %w", addr, err)
	}
	return l.bind(netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), 0), ap)
}

func (l *Link) bind(local, remote netip.AddrPort) (*Conn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if local.Port() == 0 {
		for {
			l.nextPort++
			if l.nextPort == 0 {
				l.nextPort = 1024
			}
			if _, used := l.conns[netip.AddrPortFrom(local.Addr(), l.nextPort)]; !used {
				break
			}
		}
		local = netip.AddrPortFrom(local.Addr(), l.nextPort)
	}
	if _, used := l.conns[local]; used {
		return nil, fmt.Errorf("coaptest: %s already in use", local)
	}
	c := &Conn{link: l, local: local, remote: remote,
		in: make(chan datagram, l.opts.QueueLen), done: make(chan struct{})}
	l.conns[local] = c
	return c, nil
}

// send decides the fate of one datagram and delivers it (now or after its delay).
func (l *Link) send(from, to netip.AddrPort, b []byte) {
	l.mu.Lock()
	l.stats.Sent++
	lost := l.opts.Loss > 0 && l.rng.Float64() < l.opts.Loss
	var delay time.Duration
	if l.opts.MaxDelay > 0 {
		delay = time.Duration(l.rng.Int64N(int64(l.opts.MaxDelay) + 1))
	}
	dst := l.conns[to]
	if lost || dst == nil {
		l.stats.Dropped++
		l.mu.Unlock()
		return
	}
	l.mu.Unlock()
	if l.opts.Drop != nil && l.opts.Drop(from, to, b) {
		l.mu.Lock()
		l.stats.Dropped++
		l.mu.Unlock()
		return
	}
	d := datagram{from: from, b: append([]byte(nil), b...)}
	if delay == 0 {
		l.enqueue(dst, d)
		return
	}
	time.AfterFunc(delay, func() { l.enqueue(dst, d) })
}

func (l *Link) enqueue(dst *Conn, d datagram) {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-dst.done:
		l.stats.Dropped++
		return
	default:
	}
	select { // never blocks: a full queue drops, as a full socket buffer does
	case dst.in <- d:
		l.stats.Delivered++
	default:
		l.stats.Dropped++
	}
}

type datagram struct {
	from netip.AddrPort
	b    []byte
}

// Conn is one endpoint of a Link: a net.PacketConn, and a net.Conn when it was dialed.
type Conn struct {
	link          *Link
	local, remote netip.AddrPort
	in            chan datagram
	done          chan struct{}
	closeOnce     sync.Once

	mu           sync.Mutex
	readDeadline time.Time
}

var (
	_ net.PacketConn = (*Conn)(nil)
	_ net.Conn       = (*Conn)(nil)
)

// ReadFrom implements net.PacketConn. A deadline set while a read is blocked applies to the
// next read.
func (c *Conn) ReadFrom(p []byte) (int, net.Addr, error) {
	c.mu.Lock()
	dl := c.readDeadline
	c.mu.Unlock()
	var expired <-chan time.Time
	if !dl.IsZero() {
		t := time.NewTimer(time.Until(dl))
		defer t.Stop()
		expired = t.C
	}
	for {
		select {
		case <-c.done:
			return 0, nil, net.ErrClosed
		case <-expired:
			return 0, nil, os.ErrDeadlineExceeded
		case d := <-c.in:
			if c.remote.IsValid() && d.from != c.remote {
				continue // a connected socket hears only its peer
			}
			n := copy(p, d.b)
			return n, net.UDPAddrFromAddrPort(d.from), nil
		}
	}
}

// WriteTo implements net.PacketConn.
func (c *Conn) WriteTo(p []byte, addr net.Addr) (int, error) {
	select {
	case <-c.done:
		return 0, net.ErrClosed
	default:
	}
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return 0, fmt.Errorf("coaptest: write to %v: %w", addr, err)
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if c.remote.IsValid() && ap != c.remote {
		return 0, errors.New("coaptest: write to another address on a connected endpoint")
	}
	c.link.send(c.local, ap, p)
	return len(p), nil
}

// Read implements net.Conn (a dialed endpoint).
func (c *Conn) Read(p []byte) (int, error) {
	n, _, err := c.ReadFrom(p)
	return n, err
}

// Write implements net.Conn (a dialed endpoint).
func (c *Conn) Write(p []byte) (int, error) {
	if !c.remote.IsValid() {
		return 0, errors.New("coaptest: write on an unconnected endpoint")
	}
	return c.WriteTo(p, net.UDPAddrFromAddrPort(c.remote))
}

// Close releases the endpoint's address; blocked and later reads return net.ErrClosed.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		close(c.done)
		c.link.mu.Lock()
		delete(c.link.conns, c.local)
		c.link.mu.Unlock()
	})
	return nil
}

// LocalAddr implements net.Conn and net.PacketConn.
func (c *Conn) LocalAddr() net.Addr { return net.UDPAddrFromAddrPort(c.local) }

// RemoteAddr implements net.Conn; nil for an unconnected endpoint.
func (c *Conn) RemoteAddr() net.Addr {
	if !c.remote.IsValid() {
		return nil
	}
	return net.UDPAddrFromAddrPort(c.remote)
}

// SetDeadline implements net.Conn (writes never block, so only the read deadline matters).
func (c *Conn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

// SetReadDeadline implements net.Conn.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.readDeadline = t
	return nil
}

// SetWriteDeadline implements net.Conn; writes never block.
func (c *Conn) SetWriteDeadline(time.Time) error { return nil }

// Server is what Serve runs: coap.Server's ServeUDP and Close.
type Server interface {
	ServeUDP(net.PacketConn) error
	Close() error
}

// Serve runs srv on link at 127.0.0.1:5683 until the test ends and returns the URL to dial
// ("coap://127.0.0.1:5683"); the client side of the pair is
//
//	coap.Dial(ctx, url, coap.ClientOptions{DialUDP: link.DialUDP})
//
// At cleanup the server is closed and ServeUDP must have returned without an error.
func Serve(tb testing.TB, link *Link, srv Server) string {
	tb.Helper()
	pc, err := link.Listen("127.0.0.1:5683")
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeUDP(pc) }()
	tb.Cleanup(func() {
		_ = srv.Close()
		_ = pc.Close()
		if err := <-done; err != nil {
			tb.Errorf("coaptest: ServeUDP: %v", err)
		}
	})
	return "coap://" + pc.LocalAddr().String()
}
