package dtlsconn

import (
	"bytes"
	"container/list"
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/dtls/v3/pkg/crypto/elliptic"
)

type phase int

const (
	phaseUnverified  phase = iota // pion answered with a HelloVerifyRequest; no ServerHello yet
	phaseVerified                 // the cookie was returned: pion sent its ServerHello
	phaseEstablished              // handshake complete
	phaseParked                   // established, pion's state exported and its connection gone (Conn.Park)
	phaseClosed
)

const (
	// unverifiedTimeout bounds how long a handshake may wait for the client to
	// return pion's cookie (a client retransmits within 1 s, RFC 6347 §4.2.4.1).
	unverifiedTimeout = 3 * time.Second
	sessionQueueLen   = 32
	maxBuckets        = 100000
)

type datagram struct {
	b    []byte
	from netip.AddrPort
}

type bucket struct {
	tokens float64
	last   time.Time
}

// Listener accepts DTLS sessions on one UDP socket.
type Listener struct {
	pc     *net.UDPConn
	cfg    ServerConfig
	base   []dtls.ServerOption // shared by every session; never appended to in place
	verify func(rawCerts [][]byte) ([]*x509.Certificate, error)
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc

	mu         sync.Mutex
	sessions   map[netip.AddrPort]*session
	byCID      map[string]*session
	unverified list.List // *session, oldest first
	halfOpen   int
	active     int
	parkedNow  int // established sessions parked now (counted in active too)
	inflight   int // handshake goroutines running: half-open sessions plus evicted ones still winding down
	buckets    map[netip.Addr]*bucket
	closed     bool

	accept    chan *Conn
	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup

	ok, failed, dropRate, dropCaps, evicted, garbage, dropQueue, idle, parked, resumed atomic.Uint64
	resumeOpts                                                                         []dtls.Option // for parked sessions (no handshake: no client auth)
}

// listenReadBuffer is the receive buffer Listen asks for its socket (SO_RCVBUF).
const listenReadBuffer = 4 << 20

// Listen opens a UDP socket on addr and serves DTLS handshakes on it.
func Listen(network, addr string, cfg ServerConfig) (*Listener, error) {
	if len(cfg.Certificates) == 0 {
		return nil, errors.New("dtlsconn: listen: no server certificate")
	}
	ua, err := net.ResolveUDPAddr(network, addr)
	if err != nil {
		return nil, fmt.Errorf("dtlsconn: listen %s: %w", addr, err)
	}
	pc, err := net.ListenUDP(network, ua)
	if err != nil {
		return nil, fmt.Errorf("dtlsconn: listen %s: %w", addr, err)
	}
	// Hundreds of devices handshaking at once (a factory line, a fleet-wide renewal) send
	// bursts that outrun the default socket buffer whenever the read loop is descheduled;
	// each flight lost there costs its device a retransmission timeout. The kernel caps the
	// size at net.core.rmem_max; a smaller buffer is not an error.
	_ = pc.SetReadBuffer(listenReadBuffer)
	l, err := newListener(pc, cfg)
	if err != nil {
		_ = pc.Close()
		return nil, err
	}
	return l, nil
}

func newListener(pc *net.UDPConn, cfg ServerConfig) (*Listener, error) {
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = defaultHandshakeTimeout
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = defaultIdleTimeout
	}
	if cfg.ParkAfter == 0 {
		cfg.ParkAfter = defaultParkAfter
	}
	if cfg.HandshakesPerSourcePerSecond == 0 {
		cfg.HandshakesPerSourcePerSecond = defaultRatePerSource
	}
	if cfg.MaxHalfOpen <= 0 {
		cfg.MaxHalfOpen = defaultMaxHalfOpen
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = defaultMaxSessions
	}
	l := &Listener{
		pc: pc, cfg: cfg, log: discardLogger(cfg.Logger),
		sessions: map[netip.AddrPort]*session{}, byCID: map[string]*session{},
		buckets: map[netip.Addr]*bucket{}, accept: make(chan *Conn, 16), done: make(chan struct{}),
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.verify = cfg.VerifyPeer
	if l.verify == nil && cfg.ClientAuth != NoClientCert {
		if cfg.ClientCAs == nil {
			return nil, errors.New("dtlsconn: client certificates requested but neither VerifyPeer nor ClientCAs set")
		}
		l.verify = poolVerifier(cfg.ClientCAs, x509.ExtKeyUsageClientAuth)
	}
	l.base = []dtls.ServerOption{
		dtls.WithCertificates(cfg.Certificates...),
		dtls.WithCipherSuites(suiteList(cfg.CipherSuites)...),
		// RFC 7627 §5.3: we refuse handshakes without extended master secret.
		dtls.WithExtendedMasterSecret(dtls.RequireExtendedMasterSecret),
		dtls.WithEllipticCurves(elliptic.P256),
		dtls.WithLoggerFactory(quietLoggerFactory()),
	}
	if cfg.MTU > 0 { // WithMTU rejects 0; pion's default (1200) applies otherwise
		l.base = append(l.base, dtls.WithMTU(cfg.MTU))
	}
	l.resumeOpts = []dtls.Option{
		dtls.WithCertificates(cfg.Certificates...),
		dtls.WithCipherSuites(suiteList(cfg.CipherSuites)...),
		dtls.WithExtendedMasterSecret(dtls.RequireExtendedMasterSecret),
		dtls.WithEllipticCurves(elliptic.P256),
		dtls.WithLoggerFactory(quietLoggerFactory()),
	}
	if cfg.MTU > 0 {
		l.resumeOpts = append(l.resumeOpts, dtls.WithMTU(cfg.MTU))
	}
	switch cfg.ClientAuth {
	case RequireClientCert:
		l.base = append(l.base, dtls.WithClientAuth(dtls.RequireAnyClientCert)) // chain checked by VerifyPeer
	case RequestClientCert:
		l.base = append(l.base, dtls.WithClientAuth(dtls.RequestClientCert))
	}
	l.wg.Add(2)
	go l.readLoop()
	go l.janitor()
	return l, nil
}

// poolVerifier verifies a raw chain against roots for the given usage.
func poolVerifier(roots *x509.CertPool, usage x509.ExtKeyUsage) func([][]byte) ([]*x509.Certificate, error) {
	return func(raw [][]byte) ([]*x509.Certificate, error) {
		if len(raw) == 0 {
			return nil, errors.New("dtlsconn: no certificate")
		}
		certs := make([]*x509.Certificate, len(raw))
		for i, der := range raw {
			c, err := x509.ParseCertificate(der)
			if err != nil {
				return nil, fmt.Errorf("dtlsconn: parse peer certificate %d: %w", i, err)
			}
			certs[i] = c
		}
		inter := x509.NewCertPool()
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
		if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
			KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			return nil, fmt.Errorf("dtlsconn: verify peer certificate: %w", err)
		}
		return certs, nil
	}
}

// Addr returns the listening address.
func (l *Listener) Addr() net.Addr { return l.pc.LocalAddr() }

// Accept returns the next session whose handshake completed.
func (l *Listener) Accept() (*Conn, error) {
	select {
	case c := <-l.accept:
		return c, nil
	case <-l.done:
		return nil, ErrClosed
	}
}

// closeNotifyWait bounds how long Close waits for the sessions' close_notify alerts to be sent.
const closeNotifyWait = 2 * time.Second

// Close stops the listener and closes every session, each with a close_notify alert.
func (l *Listener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		all := make([]*session, 0, len(l.sessions))
		for _, s := range l.sessions {
			all = append(all, s)
		}
		l.mu.Unlock()
		close(l.done)
		l.cancel()
		for _, s := range all {
			s.shutdown()
		}
		// Each session's close_notify goes out through l.pc: close the socket only after they
		// are sent (RFC 6347 §4.1 / RFC 5246 §7.2.1: the peer learns the session is gone instead of
		// retransmitting into it), waiting at most closeNotifyWait for a stuck one.
		bound := time.NewTimer(closeNotifyWait)
	wait:
		for _, s := range all {
			select {
			case <-s.closed:
			case <-bound.C:
				break wait
			}
		}
		bound.Stop()
		err = l.pc.Close()
		l.wg.Wait()
	drain:
		for {
			select {
			case c := <-l.accept:
				_ = c.Close()
			default:
				break drain
			}
		}
	})
	return err
}

// Stats returns a snapshot of the counters.
func (l *Listener) Stats() Stats {
	l.mu.Lock()
	active, half, parked := l.active, l.halfOpen, l.parkedNow
	l.mu.Unlock()
	return Stats{
		HandshakesOK: l.ok.Load(), HandshakesFailed: l.failed.Load(),
		ActiveSessions: active, HalfOpen: half, Parked: parked,
		DroppedRateLimit: l.dropRate.Load(), DroppedCaps: l.dropCaps.Load(), Evicted: l.evicted.Load(),
		DroppedGarbage: l.garbage.Load(), DroppedQueue: l.dropQueue.Load(), IdleClosed: l.idle.Load(),
		Parks: l.parked.Load(), Resumes: l.resumed.Load(),
	}
}

func (l *Listener) readLoop() {
	defer l.wg.Done()
	// 64 KiB: any UDP datagram, hence any record, fits.
	buf := make([]byte, 1<<16)
	for {
		n, from, err := l.pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			l.log.Debug("dtls: read", "err", err)
			continue
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		l.dispatch(buf[:n], from)
	}
}

// rateLocked applies the per-source token bucket; charge consumes a token.
func (l *Listener) rateLocked(ip netip.Addr, charge bool, now time.Time) bool {
	rate := l.cfg.HandshakesPerSourcePerSecond
	if rate < 0 {
		return true
	}
	burst := max(2, 2*rate)
	b := l.buckets[ip]
	if b == nil {
		if !charge {
			return true
		}
		if len(l.buckets) >= maxBuckets {
			clear(l.buckets) // fail open rather than grow without bound
		}
		b = &bucket{tokens: burst, last: now}
		l.buckets[ip] = b
	}
	b.tokens = min(burst, b.tokens+rate*now.Sub(b.last).Seconds())
	b.last = now
	if b.tokens < 1 {
		return false
	}
	if charge {
		b.tokens--
	}
	return true
}

func (l *Listener) dispatch(b []byte, from netip.AddrPort) {
	now := time.Now()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	s := l.sessions[from]
	if s == nil && l.cfg.ConnectionID && len(b) >= 11+cidLength && b[0] == contentTypeCID {
		// RFC 9146 §6: a record with our CID from a new address; pion
		// authenticates it and, if valid, answers to the new address.
		s = l.byCID[string(b[11:11+cidLength])]
	}
	if s != nil {
		ok, cookie := firstClientHello(b)
		if (s.phase == phaseEstablished || s.phase == phaseParked) && s.next == nil && ok && !cookie {
			// RFC 6347 §4.2.8: a new ClientHello on an established
			// association (a rebooted client reusing its port) starts a new
			// handshake; the old association stays until the new one has
			// completed the cookie exchange (see verified).
			n, victim, admitted := l.admitLocked(from, now, false)
			if !admitted {
				l.mu.Unlock()
				return
			}
			n.prev, s.next = s, n
			l.mu.Unlock()
			l.start(n, victim, b, from, now)
			return
		}
		if s.next != nil && len(b) >= recordHeaderLen && b[3] == 0 && b[4] == 0 {
			s = s.next // epoch-0 records belong to the pending handshake
		}
		if s.phase == phaseParked {
			// The datagram is held until pion's connection is back (resume).
			if len(s.held) < sessionQueueLen {
				s.held = append(s.held, datagram{bytes.Clone(b), from})
			} else {
				l.dropQueue.Add(1)
			}
			s.last.Store(now.UnixNano())
			wake := !s.resuming
			s.resuming = true
			l.mu.Unlock()
			if wake {
				go s.resumeAndWake()
			}
			return
		}
		if s.phase == phaseUnverified && ok && cookie {
			if !l.rateLocked(from.Addr(), false, now) {
				l.mu.Unlock()
				l.dropRate.Add(1)
				s.shutdown()
				return
			}
			// The cookie came back (pion checks it): while pion computes its
			// flight, the handshake must not be evicted for newer ClientHellos.
			// A forged cookie makes pion end the handshake at once.
			if s.elem != nil {
				l.unverified.Remove(s.elem)
				s.elem = nil
			}
		}
		l.mu.Unlock()
		s.deliver(b, from, now)
		return
	}
	ok, cookie := firstClientHello(b)
	if !ok || cookie {
		// Not a new handshake (RFC 6347 §4.1.2.7: invalid records are
		// silently discarded). A ClientHello with a cookie for a source we
		// do not know cannot complete: its handshake state is gone.
		l.mu.Unlock()
		l.garbage.Add(1)
		return
	}
	n, victim, admitted := l.admitLocked(from, now, true)
	l.mu.Unlock()
	if admitted {
		l.start(n, victim, b, from, now)
	}
}

// admitLocked applies the caps and the rate limit to a new handshake from
// `from` and creates its session (registered under from when register is
// set). victim, if any, was evicted to make room and must be shut down.
func (l *Listener) admitLocked(from netip.AddrPort, now time.Time, register bool) (s, victim *session, ok bool) {
	switch {
	case l.active+l.halfOpen >= l.cfg.MaxSessions:
		l.dropCaps.Add(1)
		return nil, nil, false
	case !l.rateLocked(from.Addr(), false, now):
		l.dropRate.Add(1)
		return nil, nil, false
	case l.inflight >= l.cfg.MaxHalfOpen+max(1, l.cfg.MaxHalfOpen/2):
		// Evicted handshakes still hold pion state: do not make more yet.
		l.dropCaps.Add(1)
		return nil, nil, false
	}
	if l.halfOpen >= l.cfg.MaxHalfOpen {
		e := l.unverified.Front()
		if e == nil {
			l.dropCaps.Add(1)
			return nil, nil, false
		}
		victim = e.Value.(*session)
		victim.evicted = true
		l.removeLocked(victim)
		l.evicted.Add(1)
	}
	s = l.newSessionLocked(from, now, register)
	l.wg.Add(1)
	l.inflight++ // until the handshake goroutine exits
	return s, victim, true
}

func (l *Listener) start(s, victim *session, b []byte, from netip.AddrPort, now time.Time) {
	if victim != nil {
		victim.shutdown()
	}
	s.deliver(b, from, now)
	go l.handshake(s)
}

func (l *Listener) newSessionLocked(from netip.AddrPort, now time.Time, register bool) *session {
	s := &session{l: l, addr: from, closed: make(chan struct{}), tr: newTranscript(), created: now}
	s.pc.Store(newSessionPC(s, from, nil))
	s.sniff.Store(true)
	s.last.Store(now.UnixNano())
	s.ctx, s.cancel = context.WithTimeout(l.ctx, l.cfg.HandshakeTimeout)
	if register {
		l.sessions[from] = s
	}
	l.halfOpen++
	s.elem = l.unverified.PushBack(s)
	return s
}

// removeLocked forgets s (idempotent).
func (l *Listener) removeLocked(s *session) {
	switch s.phase {
	case phaseClosed:
		return
	case phaseUnverified, phaseVerified:
		l.halfOpen--
	case phaseEstablished:
		l.active--
	case phaseParked:
		l.active--
		l.parkedNow--
	}
	if s.elem != nil {
		l.unverified.Remove(s.elem)
		s.elem = nil
	}
	if l.sessions[s.addr] == s {
		delete(l.sessions, s.addr)
		if n := s.next; n != nil && n.phase != phaseClosed {
			l.sessions[n.addr] = n // the new handshake from this address takes over
		}
	}
	if p := s.prev; p != nil && p.next == s {
		p.next = nil
	}
	if n := s.next; n != nil && n.prev == s {
		n.prev = nil
	}
	s.prev, s.next = nil, nil
	if s.cid != nil && l.byCID[string(s.cid)] == s {
		delete(l.byCID, string(s.cid))
	}
	s.phase = phaseClosed
}

func (l *Listener) remove(s *session) {
	l.mu.Lock()
	l.removeLocked(s)
	l.mu.Unlock()
}

// verified is called when pion sends its ServerHello: the client returned the
// cookie, so its address is real; charge its source's rate bucket.
func (l *Listener) verified(s *session) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s.phase != phaseUnverified {
		return
	}
	s.phase = phaseVerified
	if s.elem != nil {
		l.unverified.Remove(s.elem)
		s.elem = nil
	}
	l.rateLocked(s.addr.Addr(), true, time.Now())
	if old := s.prev; old != nil {
		// RFC 6347 §4.2.8: the client proved reachability; the new
		// handshake replaces the old association.
		old.next, s.prev = nil, nil
		l.removeLocked(old)
		l.sessions[s.addr] = s
		go func() {
			old.finish() // close the socket first: no close_notify to the new peer
			old.shutdown()
		}()
	}
}

// migrate moves s to a new address after pion accepted a CID record from it.
func (l *Listener) migrate(s *session, to netip.AddrPort) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s.phase == phaseClosed || s.addr == to {
		return
	}
	if old := l.sessions[to]; old != nil && old != s {
		return // the new address is taken by another session; keep routing by CID
	}
	if l.sessions[s.addr] == s {
		delete(l.sessions, s.addr)
	}
	s.addr = to
	l.sessions[to] = s
}

func (l *Listener) handshake(s *session) {
	defer l.wg.Done()
	defer s.cancel()
	defer func() {
		l.mu.Lock()
		l.inflight--
		l.mu.Unlock()
	}()
	// Per-session options: the listener's base plus this session's verifier
	// and connection ID. A fresh slice, so sessions never share a backing array.
	opts := make([]dtls.ServerOption, 0, len(l.base)+2)
	opts = append(opts, l.base...)
	if l.verify != nil {
		verify := l.verify
		opts = append(opts, dtls.WithVerifyPeerCertificate(func(raw [][]byte, _ [][]*x509.Certificate) error {
			chain, err := verify(raw)
			if err != nil {
				return err
			}
			s.accepted = chain
			return nil
		}))
	}
	if l.cfg.ConnectionID {
		cid := make([]byte, cidLength)
		_, _ = rand.Read(cid)
		l.mu.Lock()
		s.cid = cid
		l.mu.Unlock()
		opts = append(opts, dtls.WithConnectionIDGenerator(func() []byte { return cid }))
	}
	pc := s.pc.Load()
	dc, err := dtls.ServerWithOptions(pc, pc.raddr, opts...)
	if err == nil {
		s.mu.Lock()
		s.dc = dc
		s.mu.Unlock()
		err = dc.HandshakeContext(s.ctx)
	}
	if err != nil {
		l.mu.Lock()
		evicted := s.evicted
		l.mu.Unlock()
		if !evicted {
			l.failed.Add(1)
			l.log.Debug("dtls: handshake failed", "remote", s.addr, "err", err)
		}
		s.shutdown()
		if dc != nil {
			_ = dc.Close()
		}
		s.finish()
		return
	}
	s.trMu.Lock()
	s.sniff.Store(false)
	tr := s.tr
	s.tr = nil
	s.trMu.Unlock()
	conn, err := newConn(dc, tr, onlySuite(l.cfg.CipherSuites), s.accepted, l.log)
	if err != nil {
		l.failed.Add(1)
		l.log.Warn("dtls: session setup", "remote", s.addr, "err", err)
		s.shutdown()
		return
	}
	l.mu.Lock()
	if s.phase == phaseClosed {
		evicted := s.evicted
		l.mu.Unlock()
		if !evicted {
			// The handshake completed, but the peer closed at once (its
			// close_notify was processed before we got here).
			l.ok.Add(1)
			l.log.Debug("dtls: session closed right after its handshake", "remote", s.addr)
		}
		_ = dc.Close()
		return
	}
	if s.elem != nil {
		l.unverified.Remove(s.elem)
		s.elem = nil
	}
	s.phase = phaseEstablished
	l.halfOpen--
	l.active++
	if s.cid != nil {
		l.byCID[string(s.cid)] = s
	}
	l.mu.Unlock()
	conn.onClose = s.shutdown
	conn.s, conn.dc = s, nil // the session holds pion's connection (none while parked)
	l.ok.Add(1)
	select {
	case l.accept <- conn:
	case <-l.done:
		_ = conn.Close()
	}
}

// janitor closes idle sessions and forgets full rate buckets.
func (l *Listener) janitor() {
	defer l.wg.Done()
	tick := min(l.cfg.IdleTimeout/4, 500*time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-l.done:
			return
		case now := <-t.C:
			var idle, stale []*session
			cut := now.Add(-l.cfg.IdleTimeout).UnixNano()
			l.mu.Lock()
			// Handshakes whose cookie never came back (spoofed sources) are
			// dropped well before HandshakeTimeout.
			staleCut := now.Add(-min(l.cfg.HandshakeTimeout, unverifiedTimeout))
			for e := l.unverified.Front(); e != nil; e = e.Next() {
				s := e.Value.(*session)
				if !s.created.Before(staleCut) {
					break
				}
				stale = append(stale, s)
			}
			for _, s := range l.sessions {
				if (s.phase == phaseEstablished || s.phase == phaseParked) && s.last.Load() < cut {
					idle = append(idle, s)
				}
			}
			rate := l.cfg.HandshakesPerSourcePerSecond
			for ip, b := range l.buckets {
				if b.tokens+rate*now.Sub(b.last).Seconds() >= max(2, 2*rate) {
					delete(l.buckets, ip)
				}
			}
			l.mu.Unlock()
			for _, s := range stale {
				l.mu.Lock()
				s.evicted = true // not a failed handshake: nobody was there
				l.mu.Unlock()
				s.shutdown()
			}
			for _, s := range idle {
				l.log.Debug("dtls: idle session closed", "remote", s.addr)
				s.shutdown() // removes s from the active count at once
				// Counted after: a reader who sees IdleClosed also sees the session gone.
				l.idle.Add(1)
			}
		}
	}
}

// session is one remote address's DTLS state.
type session struct {
	l       *Listener
	addr    netip.AddrPort // guarded by l.mu
	phase   phase          // guarded by l.mu
	elem    *list.Element  // in l.unverified; guarded by l.mu
	evicted bool           // guarded by l.mu
	// prev/next link an established session and a new handshake from the
	// same address (RFC 6347 §4.2.8); guarded by l.mu.
	prev, next *session
	cid        []byte // guarded by l.mu
	created    time.Time
	last       atomic.Int64
	pc         atomic.Pointer[sessionPC] // the virtual socket of pion's current connection; nil when parked
	held       []datagram                // datagrams for a parked session, until it resumes; l.mu
	resuming   bool                      // a resume is under way; l.mu
	ctx        context.Context
	cancel     context.CancelFunc

	trMu  sync.Mutex
	tr    *transcript
	sniff atomic.Bool

	accepted []*x509.Certificate // set by VerifyPeer during the handshake

	mu    sync.Mutex
	dc    *dtls.Conn // nil while parked
	state []byte     // pion's exported state (MarshalBinary) while parked; used once, then nil
	wake  func()     // Conn.Park's callback, called when a parked session resumes or ends

	closed    chan struct{}
	closeOnce sync.Once
	shutOnce  sync.Once
}

func (s *session) deliver(b []byte, from netip.AddrPort, now time.Time) {
	d := make([]byte, len(b))
	copy(d, b)
	if s.sniff.Load() {
		s.trMu.Lock()
		if s.tr != nil {
			s.tr.addDatagram(d, true)
		}
		s.trMu.Unlock()
	}
	s.last.Store(now.UnixNano())
	pc := s.pc.Load()
	if pc == nil {
		s.l.dropQueue.Add(1) // parked meanwhile: lost like any datagram (CoAP retransmits)
		return
	}
	pc.push(d, from)
}

// shutdown ends the session: the listener's bookkeeping at once, then pion's
// conn (close_notify when established) and the virtual socket.
func (s *session) shutdown() {
	s.shutOnce.Do(func() {
		s.l.remove(s)
		s.cancel()
		s.mu.Lock()
		dc := s.dc
		s.state = nil
		wake := s.wake
		s.wake = nil
		s.mu.Unlock()
		if wake != nil {
			go wake() // the parked session's reader comes back to read net.ErrClosed
		}
		if dc == nil {
			s.finish()
			return
		}
		go func() {
			_ = dc.Close()
			s.finish()
		}()
	})
}

// finish closes the virtual socket (pion's reader returns).
func (s *session) finish() {
	s.l.remove(s)
	s.closeOnce.Do(func() { close(s.closed) })
}

// sessionPC is the net.PacketConn pion sees for one connection of a session (a parked
// session that resumes gets a new one). pion interrupts reads with SetReadDeadline, so read
// deadlines are implemented.
type sessionPC struct {
	s     *session
	in    chan datagram
	done  chan struct{} // closed by Close once detached (parking)
	once  sync.Once
	dmu   sync.Mutex
	dl    chan struct{} // closed when the read deadline passes; nil = none
	wake  chan struct{} // closed when the deadline changes
	timer *time.Timer

	// wmu orders writes against freeze: once frozen, no record leaves (parking).
	wmu      sync.RWMutex
	frozen   bool
	detached atomic.Bool // Close ends only this connection, not the session

	// raddr is the source address ReadFrom last handed to pion, as a *net.UDPAddr for rap: it is
	// reused while datagrams keep coming from rap (one allocation per address, not two per
	// datagram; pion compares it by identity to notice an RFC 9146 address change). Guarded by dmu.
	raddr *net.UDPAddr
	rap   netip.AddrPort
	// wap is the destination of the last write that found it equal to the session's address:
	// later writes to it skip the listener's lock. Only pion's writer uses it (pion's writes to
	// one connection are serial).
	wap netip.AddrPort
}

// newSessionPC makes the virtual socket of a connection to addr; raddr is the address given to
// pion for it (nil: made here).
func newSessionPC(s *session, addr netip.AddrPort, raddr *net.UDPAddr) *sessionPC {
	if raddr == nil {
		raddr = net.UDPAddrFromAddrPort(addr)
	}
	return &sessionPC{s: s, in: make(chan datagram, sessionQueueLen), done: make(chan struct{}),
		raddr: raddr, rap: addr}
}

// push queues a datagram (split at record boundaries for pion's read buffer).
func (p *sessionPC) push(d []byte, from netip.AddrPort) {
	if len(d) <= pionInboundBuffer {
		p.queue(d, from)
		return
	}
	for _, part := range splitDatagram(d, pionInboundBuffer) {
		p.queue(part, from)
	}
}

func (p *sessionPC) queue(d []byte, from netip.AddrPort) {
	select {
	case p.in <- datagram{d, from}:
	default:
		p.s.l.dropQueue.Add(1)
	}
}

// freeze stops every later write: they are dropped as if lost.
func (p *sessionPC) freeze() {
	p.wmu.Lock()
	p.frozen = true
	p.wmu.Unlock()
}

func (p *sessionPC) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		p.dmu.Lock()
		if p.wake == nil {
			p.wake = make(chan struct{})
		}
		dl, wake := p.dl, p.wake
		p.dmu.Unlock()
		select {
		case d := <-p.in:
			p.dmu.Lock()
			if d.from != p.rap {
				p.raddr, p.rap = net.UDPAddrFromAddrPort(d.from), d.from
			}
			ra := p.raddr
			p.dmu.Unlock()
			return copy(b, d.b), ra, nil
		case <-p.s.closed:
			return 0, nil, net.ErrClosed
		case <-p.done:
			return 0, nil, net.ErrClosed
		case <-dl:
			return 0, nil, os.ErrDeadlineExceeded
		case <-wake:
		}
	}
}

func (p *sessionPC) SetReadDeadline(t time.Time) error {
	p.dmu.Lock()
	defer p.dmu.Unlock()
	if p.wake != nil {
		close(p.wake)
		p.wake = nil
	}
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
	if t.IsZero() {
		p.dl = nil
		return nil
	}
	ch := make(chan struct{})
	p.dl = ch
	if d := time.Until(t); d > 0 {
		p.timer = time.AfterFunc(d, func() { close(ch) })
	} else {
		close(ch)
	}
	return nil
}

func (p *sessionPC) WriteTo(b []byte, addr net.Addr) (int, error) {
	p.wmu.RLock()
	defer p.wmu.RUnlock()
	if p.frozen {
		return len(b), nil // parked: this connection's last word was said before the snapshot
	}
	s := p.s
	select {
	case <-s.closed:
		return 0, net.ErrClosed
	default:
	}
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, fmt.Errorf("dtlsconn: write to %T", addr)
	}
	to := ua.AddrPort()
	to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())
	if s.sniff.Load() {
		s.trMu.Lock()
		if s.tr != nil {
			s.tr.addDatagram(b, false)
		}
		s.trMu.Unlock()
		if hasHandshakeType(b, hsServerHello) {
			s.l.verified(s)
		}
	} else if to != p.wap {
		s.l.mu.Lock()
		cur := s.addr
		s.l.mu.Unlock()
		if cur != to {
			s.l.migrate(s, to)
			s.l.mu.Lock()
			cur = s.addr
			s.l.mu.Unlock()
		}
		if cur == to {
			p.wap = to
		}
	}
	s.last.Store(time.Now().UnixNano())
	return s.l.pc.WriteToUDPAddrPort(b, to)
}

// WriteToNonBlock is WriteTo for pion's netctx (netctx.NonBlockWritePacketConn): netctx then
// writes at once instead of arming a watch of the write's context around it, which for pion's
// write contexts starts a goroutine per datagram. The watch could never interrupt a write
// here: a session's writes go to the listener's socket without a deadline (SetWriteDeadline
// does nothing), so the outcome is WriteTo's either way.
func (p *sessionPC) WriteToNonBlock(b []byte, addr net.Addr) (int, bool, error) {
	n, err := p.WriteTo(b, addr)
	return n, true, err
}

func (p *sessionPC) Close() error {
	if p.detached.Load() {
		p.once.Do(func() { close(p.done) })
		return nil
	}
	p.s.finish()
	return nil
}

func (p *sessionPC) LocalAddr() net.Addr              { return p.s.l.pc.LocalAddr() }
func (p *sessionPC) SetDeadline(t time.Time) error    { return p.SetReadDeadline(t) }
func (p *sessionPC) SetWriteDeadline(time.Time) error { return nil }

// hasHandshakeType reports whether datagram b holds an epoch-0 handshake
// fragment of type typ.
func hasHandshakeType(b []byte, typ uint8) bool {
	found := false
	_ = splitRecords(b, func(h recordHeader, body []byte) error {
		if h.Type != contentTypeHandshake || h.Epoch != 0 {
			return nil
		}
		return splitFragments(body, func(f hsFragment) error {
			if f.Type == typ {
				found = true
			}
			return nil
		})
	})
	return found
}
