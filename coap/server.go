package coap

import (
	"container/list"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

const (
	wellKnownCore = "/.well-known/core"
	// maxTransfersPerPeer caps concurrent Block1 reassemblies and observations
	// per peer (memory is also capped globally by MaxCacheBytes).
	maxTransfersPerPeer = 64
)

var _ Metrics = (*Server)(nil)

// Server is a CoAP server over any number of UDP sockets and DTLS listeners,
// all sharing one resource table and one set of limits.
type Server struct {
	ep   *endpoint
	mux  *Mux
	echo *echoMinter

	mu       sync.Mutex
	closed   bool
	draining bool // Shutdown began: requests not yet admitted are refused (mu)
	udp      map[netip.AddrPort]*session
	lru      *list.List // verified UDP sessions, most recently heard first
	unv      *list.List // unverified UDP sessions, most recently heard first
	perIP    map[netip.Addr]*ipEntry
	secure   map[*session]struct{}
	// orphans are the deduplication caches of evicted UDP sessions, by address, until their
	// answers expire (orphanQ: oldest first, for the bound); under mu.
	orphans map[netip.AddrPort]*orphan
	orphanQ *list.List
	closers []io.Closer
	janitor sync.Once
	done    chan struct{}
	// readBufs are the DTLS readers' record buffers: a parked session's reader has
	// returned its own.
	readBufs sync.Pool
	running  sync.WaitGroup // handler goroutines
	handlers workers        // the goroutines the handlers run on
	// layerSlots bounds the coap:// requests whose Layer (OSCORE) work runs off the read loop
	// at once (Config.MaxLayerWorkers).
	layerSlots chan struct{}

	obsMu     sync.Mutex
	observers map[string]map[*observer]struct{} // by path
	obsAll    *list.List                        // every observer, newest first
	obsIP     map[netip.Addr]*list.List         // observers by IP address, newest first
	obsSeq    atomic.Uint32
}

// ipEntry is what the server holds for one IP address (Server.mu).
type ipEntry struct {
	sessions *list.List   // UDP sessions of this address, most recently heard first (Server.mu)
	block1   atomic.Int32 // Block1 reassemblies in progress from this address
}

// NewServer returns a server for the resources of m.
func NewServer(m *Mux, cfg Config) *Server {
	s := &Server{
		ep: newEndpoint(cfg), mux: m,
		udp:       map[netip.AddrPort]*session{},
		lru:       list.New(),
		unv:       list.New(),
		perIP:     map[netip.Addr]*ipEntry{},
		secure:    map[*session]struct{}{},
		orphans:   map[netip.AddrPort]*orphan{},
		orphanQ:   list.New(),
		observers: map[string]map[*observer]struct{}{},
		obsAll:    list.New(),
		obsIP:     map[netip.Addr]*list.List{},
		done:      make(chan struct{}),
		handlers:  workers{idleFor: handlerIdle},
	}
	s.echo = newEchoMinter(s.ep.cfg.EchoWindow)
	s.layerSlots = make(chan struct{}, s.ep.cfg.MaxLayerWorkers)
	s.readBufs.New = func() any { b := make([]byte, 4096); return &b }
	s.obsSeq.Store(uint32(time.Now().Unix()) & 0xffff)
	s.ep.onReq = s.onRequest
	s.ep.obsClean = s.removeObserver
	return s
}

// Stats returns a snapshot of the server's counters. DTLS handshake counters
// are in the dtlsconn.Listener's own Stats.
func (s *Server) Stats() Stats {
	st := s.ep.stats.snapshot()
	s.mu.Lock()
	st.ActiveSessions = len(s.udp) + len(s.secure)
	s.mu.Unlock()
	s.obsMu.Lock()
	for _, set := range s.observers {
		st.Observers += len(set)
	}
	s.obsMu.Unlock()
	return st
}

// Close stops every Serve loop, fails pending exchanges and forgets all sessions.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	closers := s.closers
	var sess []*session
	for _, x := range s.udp {
		sess = append(sess, x)
	}
	for x := range s.secure {
		sess = append(sess, x)
	}
	s.udp = map[netip.AddrPort]*session{}
	s.lru.Init()
	s.unv.Init()
	s.perIP = map[netip.Addr]*ipEntry{}
	s.secure = map[*session]struct{}{}
	for s.orphanQ.Len() > 0 {
		s.dropOrphanLocked(s.orphanQ.Front().Value.(*orphan))
	}
	close(s.done)
	s.mu.Unlock()
	s.ep.cancel()
	s.handlers.close()
	var errsOut []error
	for _, c := range closers {
		if err := c.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errsOut = append(errsOut, err)
		}
	}
	for _, x := range sess {
		x.close()
	}
	return errors.Join(errsOut...)
}

func (s *Server) addCloser(c io.Closer) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.closers = append(s.closers, c)
	s.janitor.Do(func() { go s.sweepLoop() })
	return nil
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// ServeUDP serves coap:// on pc until Close.
func (s *Server) ServeUDP(pc net.PacketConn) error {
	if err := s.addCloser(pc); err != nil {
		return err
	}
	uc, _ := pc.(*net.UDPConn)
	buf := make([]byte, 64*1024)
	for {
		var (
			n   int
			ap  netip.AddrPort
			err error
		)
		if uc != nil {
			n, ap, err = uc.ReadFromUDPAddrPort(buf)
		} else {
			var a net.Addr
			n, a, err = pc.ReadFrom(buf)
			if err == nil {
				ap, err = netip.ParseAddrPort(a.String())
				if err != nil {
					continue
				}
			}
		}
		if err != nil {
			if s.isClosed() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("coap: udp read: %w", err)
		}
		sess := s.udpSession(ap, pc, uc, buf[:n])
		if sess == nil {
			continue
		}
		b := make([]byte, n)
		copy(b, buf[:n])
		sess.handleDatagram(b, true)
	}
}

// HandleDatagram feeds one datagram from addr into the server as if read from
// pc (used by tests and fuzzing; replies go to pc).
func (s *Server) HandleDatagram(pc net.PacketConn, addr netip.AddrPort, b []byte) {
	uc, _ := pc.(*net.UDPConn)
	if sess := s.udpSession(addr, pc, uc, b); sess != nil {
		sess.handle(append([]byte(nil), b...))
	}
}

func udpWriter(ap netip.AddrPort, pc net.PacketConn, uc *net.UDPConn) func([]byte) error {
	if uc != nil {
		return func(b []byte) error { _, err := uc.WriteToUDPAddrPort(b, ap); return err }
	}
	addr := net.UDPAddrFromAddrPort(ap)
	return func(b []byte) error { _, err := pc.WriteTo(b, addr); return err }
}

// udpSession returns the session of ap, creating it when the datagram b may open one; nil
// when b was answered statelessly or dropped.
func (s *Server) udpSession(ap netip.AddrPort, pc net.PacketConn, uc *net.UDPConn, b []byte) *session {
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	s.mu.Lock()
	if sess, ok := s.udp[ap]; ok {
		s.touchLocked(sess)
		s.mu.Unlock()
		return sess
	}
	closed := s.closed
	// An address whose evicted session left answers behind had proven itself (keepDedupLocked).
	o := s.orphans[ap]
	proven := o != nil && o.verified
	s.mu.Unlock()
	if closed {
		return nil
	}
	write := udpWriter(ap, pc, uc)
	verified := s.ep.cfg.TrustUDPSources || proven
	verdict := gateVerified
	if !verified {
		verdict = s.gate(ap, b, write)
		switch verdict {
		case gateDrop:
			return nil
		case gateVerified:
			verified = true
		}
	}
	s.mu.Lock()
	sess, full := s.openUDPLocked(ap, verified, write)
	s.mu.Unlock()
	if full && verdict == gateUnverified {
		// An OSCORE request from an unproven source found no room: every slot of its address
		// (or of the server) is held by a proven peer, which an unproven newcomer never
		// displaces. Dropped in silence it would be retransmitted in vain until those peers'
		// sessions expire (EXCHANGE_LIFETIME after their last message), so it is asked to
		// prove its address as a plain request is, statelessly: 4.01 + Echo (RFC 9175 §2.3,
		// §2.4 item 3). The request sent again with the Echo value opens a proven session,
		// which may take the slot of an idle proven peer.
		s.statelessChallenge(ap, b, write)
	}
	return sess
}

// openUDPLocked creates and registers the session of ap (verified: its address is proven).
// full reports that there was no room for it: the caps (MaxSessionsPerIP, MaxSessions) are
// reached and no session could be evicted; a newcomer that has not proven its address never
// displaces one that has. nil, false when the server is closed.
func (s *Server) openUDPLocked(ap netip.AddrPort, verified bool, write func([]byte) error) (sess *session, full bool) {
	if sess, ok := s.udp[ap]; ok { // another reader created it meanwhile
		s.touchLocked(sess)
		return sess, false
	}
	if s.closed {
		return nil, false
	}
	ip := s.perIP[ap.Addr()]
	if ip != nil && ip.sessions.Len() >= s.ep.cfg.MaxSessionsPerIP && !s.evictFromLocked(ip.sessions, verified) {
		s.ep.stats.sessionsDropped.Add(1)
		return nil, true
	}
	if len(s.udp)+len(s.secure) >= s.ep.cfg.MaxSessions && !s.evictFromLocked(s.unv, false) && !(verified && s.evictFromLocked(s.lru, true)) {
		s.ep.stats.sessionsDropped.Add(1)
		return nil, true
	}
	o := s.orphans[ap]
	if o != nil {
		// The address's evicted session left answers behind: this session resends them to
		// retransmissions (RFC 7252 §4.5). It had proven the address, and would still hold
		// that proof had there been room to keep it (RFC 9175 §2.4).
		delete(s.orphans, ap)
		s.orphanQ.Remove(o.elem)
		verified = verified || o.verified
	}
	sess = s.ep.newSession(Peer{Addr: net.UDPAddrFromAddrPort(ap), AddressVerified: verified}, write)
	sess.verified.Store(verified)
	if o != nil {
		sess.dq = o.items
		sess.dedup = make(map[uint16]*dedupEntry, len(o.items))
		for _, it := range o.items {
			sess.dedup[it.mid] = it.e
		}
	}
	s.udp[ap] = sess
	sess.udpKey = ap
	if verified {
		sess.lruElem = s.lru.PushFront(sess)
	} else {
		sess.lruElem = s.unv.PushFront(sess)
	}
	if ip == nil {
		ip = &ipEntry{sessions: list.New()}
		s.perIP[ap.Addr()] = ip
	}
	sess.ipElem = ip.sessions.PushFront(sess)
	sess.ip = ip
	return sess, false
}

func (s *Server) touchLocked(sess *session) {
	if sess.verified.Load() {
		s.lru.MoveToFront(sess.lruElem)
	} else {
		s.unv.MoveToFront(sess.lruElem)
	}
	if ip := s.perIP[sess.udpKey.Addr()]; ip != nil && sess.ipElem != nil {
		ip.sessions.MoveToFront(sess.ipElem)
	}
}

// markVerified records that the session's peer proved its address (RFC 9175 §2.4): it is
// no longer among the first to be evicted, and its requests are served.
func (s *Server) markVerified(sess *session) {
	if sess.verified.Load() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if sess.verified.Load() {
		return
	}
	sess.verified.Store(true)
	if s.udp[sess.udpKey] == sess {
		s.unv.Remove(sess.lruElem)
		sess.lruElem = s.lru.PushFront(sess)
	}
}

// evictScan bounds the work of one eviction: only this many of the least recently heard
// sessions of a list are examined.
const evictScan = 8

// evictFromLocked frees one of the least recently heard sessions of l so that a flood from
// many (spoofed) sources cannot lock legitimate peers out: an unverified one (it holds
// nothing but deduplication state) if any, else, with allowVerified, a verified one that
// holds nothing but deduplication state (no exchange, observation, block-wise transfer or
// pending CON). Bounded work: at most evictScan sessions are examined.
func (s *Server) evictFromLocked(l *list.List, allowVerified bool) bool {
	var idle *session
	n := 0
	for e := l.Back(); e != nil && n < evictScan; e, n = e.Prev(), n+1 {
		x := e.Value.(*session)
		if !x.verified.Load() {
			s.removeUDPLocked(x)
			go x.close()
			return true
		}
		if allowVerified && idle == nil && !x.busy() {
			idle = x
		}
	}
	if idle == nil {
		return false
	}
	s.removeUDPLocked(idle)
	s.keepDedupLocked(idle)
	go idle.close()
	return true
}

// orphan is the deduplication cache an evicted UDP session left behind (RFC 7252 §4.5): the
// answers to its last requests, until EXCHANGE_LIFETIME after each. Its peer may still
// retransmit one of them — its answer was lost — and must get that answer, not a second run
// of the request (a second certificate; for OSCORE, "Replay detected").
type orphan struct {
	key      netip.AddrPort
	items    []dedupItem // live, oldest first; their replies stay counted in cacheBytes
	verified bool        // the address had proven itself (RFC 9175 §2.4)
	elem     *list.Element
}

// keepDedupLocked takes the live answers of x, a UDP session being evicted, into the
// orphans, to be given to the next session of x's address. Bounded: at most MaxSessions
// orphans, the oldest dropped first; their replies count against MaxCacheBytes as before.
func (s *Server) keepDedupLocked(x *session) {
	items := x.takeDedup(time.Now())
	if len(items) == 0 {
		return
	}
	if old := s.orphans[x.udpKey]; old != nil {
		s.dropOrphanLocked(old)
	}
	for s.orphanQ.Len() >= s.ep.cfg.MaxSessions {
		s.dropOrphanLocked(s.orphanQ.Front().Value.(*orphan))
	}
	o := &orphan{key: x.udpKey, items: items, verified: x.verified.Load()}
	o.elem = s.orphanQ.PushBack(o)
	s.orphans[o.key] = o
	s.ep.stats.orphans.Add(1)
}

// dropOrphanLocked forgets o and releases its replies' bytes.
func (s *Server) dropOrphanLocked(o *orphan) {
	if s.orphans[o.key] == o {
		delete(s.orphans, o.key)
	}
	s.orphanQ.Remove(o.elem)
	var n int64
	for _, it := range o.items {
		n += int64(len(it.e.reply))
	}
	s.ep.stats.cacheBytes.Add(-n)
}

// expireOrphansLocked drops the orphans whose every answer has expired.
func (s *Server) expireOrphansLocked(now time.Time) {
	for e := s.orphanQ.Front(); e != nil; {
		next := e.Next()
		if o := e.Value.(*orphan); now.After(o.items[len(o.items)-1].expires) {
			s.dropOrphanLocked(o)
		}
		e = next
	}
}

// takeDedup removes and returns the session's unexpired deduplication entries that hold an
// answer (their bytes stay counted in cacheBytes: the caller owns them now).
func (x *session) takeDedup(now time.Time) []dedupItem {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.purgeDedupLocked(now)
	var out []dedupItem
	for _, it := range x.dq[x.dqHead:] {
		if len(it.e.reply) > 0 && x.dedup[it.mid] == it.e {
			out = append(out, it)
		} else if n := len(it.e.reply); n > 0 {
			x.ep.stats.cacheBytes.Add(-int64(n)) // superseded: close would have released it
		}
	}
	x.dq, x.dqHead, x.dedup = nil, 0, nil
	return out
}

// busy reports whether the session holds state worth keeping.
func (x *session) busy() bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.exchanges > 0 || x.layerWork > 0 || len(x.pending) > 0 || len(x.observers) > 0 || len(x.block1) > 0 || len(x.block2) > 0
}

func (s *Server) removeUDPLocked(x *session) {
	if s.udp[x.udpKey] != x {
		return
	}
	delete(s.udp, x.udpKey)
	if x.verified.Load() {
		s.lru.Remove(x.lruElem)
	} else {
		s.unv.Remove(x.lruElem)
	}
	if ip := s.perIP[x.udpKey.Addr()]; ip != nil {
		ip.sessions.Remove(x.ipElem)
		if ip.sessions.Len() == 0 {
			delete(s.perIP, x.udpKey.Addr())
		}
	}
}

type gateVerdict int

const (
	gateDrop       gateVerdict = iota // answered statelessly or ignored
	gateVerified                      // a request with a valid Echo value: open a verified session
	gateUnverified                    // an OSCORE request for the Layer: open an unverified session
)

// gate decides about a datagram from a source without a session while address validation is
// on. Nothing it does allocates state: a request without a valid Echo value gets a 4.01 +
// Echo challenge no larger than maxAmplification times itself (RFC 9175 §2.3, §2.4 item 3;
// RFC 7252 §11.3), a CoAP ping its Reset, a confirmable response a Reset (RFC 7252 §4.2), and
// everything else nothing.
func (s *Server) gate(ap netip.AddrPort, b []byte, write func([]byte) error) gateVerdict {
	ep := s.ep
	if len(b) < 4 || b[0]>>6 != 1 {
		ep.stats.malformed.Add(1)
		return gateDrop // RFC 7252 §3: unknown version numbers MUST be silently ignored
	}
	typ := message.Type(b[0] >> 4 & 3)
	code := codes.Code(b[1])
	if typ == message.Acknowledgement || typ == message.Reset {
		return gateDrop // nothing of ours is outstanding towards an unknown source
	}
	if code == codes.Empty || code>>5 != 0 {
		if typ == message.Confirmable {
			// A CoAP ping (RFC 7252 §4.3) or a confirmable message we cannot use: Reset,
			// four bytes, never more than the datagram.
			_ = write([]byte{1<<6 | byte(message.Reset)<<4, 0, b[2], b[3]})
		}
		return gateDrop
	}
	var m message.Message
	if err := decode(b, &m); err != nil {
		ep.stats.malformed.Add(1)
		return gateDrop // an unproven source gets no diagnostic
	}
	if v, ok := echoOf(m.Options); ok && s.echo.valid(v, ap) {
		return gateVerified
	}
	if s.mux.getLayer() != nil && m.Options.HasOption(optOSCORE) && !m.Options.HasOption(message.Block1) {
		// OSCORE authenticates the request itself (RFC 8613 §8.2) and its answers are small
		// errors until it verifies: the layer decides.
		return gateUnverified
	}
	s.statelessChallenge(ap, b, write)
	return gateDrop
}

// statelessChallenge answers the request b (its header and token already checked by gate)
// from the unproven source ap with 4.01 + Echo, holding no state and sending no more than
// maxAmplification times b (RFC 9175 §2.3, §2.4 item 3).
func (s *Server) statelessChallenge(ap netip.AddrPort, b []byte, write func([]byte) error) {
	tkl := int(b[0] & 0xf)
	if len(b) < 4+tkl || tkl > 8 {
		return
	}
	typ := message.Type(b[0] >> 4 & 3)
	mid := binary.BigEndian.Uint16(b[2:4])
	if typ == message.NonConfirmable {
		mid = uint16(mrand.Uint32())
	}
	if c := s.echo.challenge(typ, mid, b[4:4+tkl], len(b), ap); c != nil {
		s.ep.stats.challenges.Add(1)
		s.ep.stats.byCode[codes.Unauthorized].Add(1)
		_ = write(c)
	}
}

// addSecure registers a DTLS session; false when over MaxSessions.
func (s *Server) addSecure(sess *session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || len(s.udp)+len(s.secure) >= s.ep.cfg.MaxSessions {
		s.ep.stats.sessionsDropped.Add(1)
		return false
	}
	s.secure[sess] = struct{}{}
	return true
}

func (s *Server) removeSecure(sess *session) {
	s.mu.Lock()
	delete(s.secure, sess)
	s.mu.Unlock()
	sess.close()
}

// sweepLoop expires block-wise state and idle UDP sessions. It scans sessions
// once per tick, never per datagram.
func (s *Server) sweepLoop() {
	tick := s.ep.cfg.BlockTimeout / 4
	tick = min(max(tick, 50*time.Millisecond), time.Second)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case now := <-t.C:
			s.mu.Lock()
			s.expireOrphansLocked(now)
			all := make([]*session, 0, len(s.udp)+len(s.secure))
			for _, x := range s.udp {
				all = append(all, x)
			}
			nUDP := len(all)
			for x := range s.secure {
				all = append(all, x)
			}
			s.mu.Unlock()
			for i, x := range all {
				idle := x.sweep(now)
				if i < nUDP && !idle && !x.verified.Load() {
					// A session of an unproven address holds nothing worth keeping for
					// longer than its Echo values would be accepted.
					x.mu.Lock()
					idle = now.Sub(x.lastSeen) > s.ep.cfg.EchoWindow
					x.mu.Unlock()
				}
				if idle && i < nUDP {
					s.mu.Lock()
					s.removeUDPLocked(x)
					s.mu.Unlock()
					x.close()
				}
			}
		}
	}
}

// quiet reports whether the session has nothing in progress: no exchange, confirmable
// message awaiting its ACK, observation, block-wise transfer or client waiter. Its
// deduplication cache may hold answers: they stay with the session.
func (x *session) quiet() bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return !x.closed && x.exchanges == 0 && x.layerWork == 0 && len(x.pending) == 0 && len(x.observers) == 0 &&
		len(x.block1) == 0 && len(x.block2) == 0 && len(x.waiters) == 0
}

// sweep drops expired block-wise state; it reports whether the session is idle
// and holds nothing worth keeping.
func (x *session) sweep(now time.Time) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.purgeDedupLocked(now)
	for k, st := range x.block1 {
		if now.After(st.expires) {
			delete(x.block1, k)
			x.block1Gone(1)
			x.ep.stats.reasmBytes.Add(-int64(len(st.buf)))
		}
	}
	for k, st := range x.block2 {
		if now.After(st.expires) {
			delete(x.block2, k)
			x.ep.stats.cacheBytes.Add(-int64(len(st.body)))
		}
	}
	return len(x.dedup) == 0 && len(x.pending) == 0 && len(x.observers) == 0 && x.exchanges == 0 && x.layerWork == 0 &&
		len(x.block1) == 0 && len(x.block2) == 0 && now.Sub(x.lastSeen) > x.ep.cfg.ExchangeLifetime
}

// exchange is one request being answered.
type exchange struct {
	s     *session
	e     *dedupEntry
	typ   message.Type
	mid   uint16
	token []byte

	mu       sync.Mutex
	done     bool
	separate bool

	// protect seals every response message to a request a Layer verified; nil otherwise.
	protect func(*message.Message) (*message.Message, error)
	// limit caps the size of an answer to a peer whose address is unproven (RFC 9175 §2.4
	// item 3); 0 = none.
	limit int
}

// seal protects m when the request was verified by a Layer. A response that cannot be protected
// is replaced by an unprotected 5.00 without payload (nothing of the answer leaks).
func (ex *exchange) seal(m *message.Message) *message.Message {
	if ex.protect == nil {
		return m
	}
	p, err := ex.protect(m)
	if err != nil || p == nil {
		ex.s.ep.log.Debug("coap: cannot protect response", "peer", ex.s.peer.Addr, "err", err)
		return &message.Message{Code: codes.InternalServerError}
	}
	return p
}

// reply sends m as the answer to the request: piggybacked in the ACK of a CON
// (RFC 7252 §5.2.1), or as a NON for a NON request (§5.2.3).
func (ex *exchange) reply(m *message.Message) {
	m = ex.seal(m)
	m.Token = ex.token
	if ex.typ == message.Confirmable {
		m.Type = message.Acknowledgement
		m.MessageID = int32(ex.mid)
	} else {
		m.Type = message.NonConfirmable
		ex.s.mu.Lock()
		m.MessageID = int32(ex.s.allocMIDLocked())
		ex.s.mu.Unlock()
	}
	b := encode(m)
	if ex.limit > 0 && len(b) > ex.limit && len(m.Payload) > 0 {
		m.Payload = nil // the diagnostic goes first
		b = encode(m)
	}
	if b == nil || ex.limit > 0 && len(b) > ex.limit {
		return
	}
	ex.s.ep.stats.byCode[m.Code].Add(1)
	if ex.typ == message.Confirmable {
		ex.s.setReply(ex.e, b) // before sending, so a duplicate never misses it
	}
	ex.s.send(b)
}

func (ex *exchange) replyCode(c codes.Code, diag string) {
	m := &message.Message{Code: c}
	if diag != "" {
		m.Payload = []byte(diag) // RFC 7252 §5.5.2 diagnostic payload
	}
	ex.reply(m)
}

// block1State is a Block1 reassembly in progress (RFC 7959 §2.5).
type block1State struct {
	buf     []byte
	expires time.Time
}

// block2State is a cached representation served block by block (RFC 7959 §2.4).
type block2State struct {
	code    codes.Code
	opts    message.Options
	body    []byte
	etag    []byte
	expires time.Time
}

// onRequest takes a request the session's reader decoded and deduplicated. offload: the reader
// serves many peers (coap://), so the Layer's work is handed to a worker.
func (s *Server) onRequest(sess *session, m *message.Message, e *dedupEntry, id message.OptionID, offload bool) {
	ex := &exchange{s: sess, e: e, typ: m.Type, mid: uint16(m.MessageID), token: m.Token}
	layer := s.mux.getLayer()
	forLayer := layer != nil && m.Options.HasOption(optOSCORE) && !m.Options.HasOption(message.Block1)
	if !sess.verified.Load() {
		// A plain-UDP peer that has not proven its address (RFC 9175 §2.4 item 3): only an
		// Echo value we gave it, or an OSCORE request the layer verifies, gets it served.
		if v, ok := echoOf(m.Options); ok && s.echo.valid(v, sess.udpKey) {
			s.markVerified(sess)
		} else if !forLayer {
			s.challenge(sess, m, e)
			return
		}
	}
	if forLayer {
		// An outer Echo (answering our challenge) is not part of the OSCORE message.
		m.Options = m.Options.Remove(optEcho)
		if !sess.verified.Load() {
			ex.limit = maxAmplification * encodedLen(m) // the layer's error answers stay small
		}
	}
	if id != 0 {
		s.ep.stats.badOption.Add(1)
		if m.Type == message.NonConfirmable {
			return // RFC 7252 §5.4.1: a NON with an unrecognised critical option is ignored
		}
		ex.replyCode(codes.BadOption, "unrecognised critical option "+strconv.Itoa(int(id))) // RFC 7252 §5.4.1
		return
	}
	if m.Options.HasOption(message.ProxyURI) || m.Options.HasOption(message.ProxyScheme) {
		ex.replyCode(codes.ProxyingNotSupported, "") // RFC 7252 §5.7.2: not a proxy
		return
	}
	if offload && forLayer && s.admit() {
		// The layer's work — AEAD, EDHOC message_3, a shared replay check in the database —
		// runs off the coap:// read loop, so that one slow verification does not hold up
		// every other peer's datagrams (the DTLS sessions have a reader each). The slots
		// bound it: with all of them busy the read loop waits for one, as it did when this
		// ran inline.
		s.layerSlots <- struct{}{}
		sess.mu.Lock()
		sess.layerWork++ // the session is not idle meanwhile (busy, quiet, sweep)
		sess.mu.Unlock()
		go func() {
			defer func() {
				sess.mu.Lock()
				sess.layerWork--
				sess.mu.Unlock()
				<-s.layerSlots
				s.running.Done()
			}()
			s.unprotectAndServe(sess, m, e, ex, layer)
		}()
		return
	}
	s.unprotectAndServe(sess, m, e, ex, layer)
}

// unprotectAndServe continues onRequest: the Layer (OSCORE) unprotects the request, then the
// resource is found and its handler started.
func (s *Server) unprotectAndServe(sess *session, m *message.Message, e *dedupEntry, ex *exchange, layer Layer) {
	peer := sess.peer
	peer.AddressVerified = sess.verified.Load()
	var forward Handler
	if l := layer; l != nil {
		if m.Options.HasOption(optOSCORE) && m.Options.HasOption(message.Block1) {
			// RFC 8613 §4.1.3.4.2: Outer Block options (a proxy fragmenting an OSCORE message)
			// are processed first, until the whole OSCORE message has arrived; its blocks share
			// the OSCORE option (same Partial IV and kid) and the outer Request-Tag.
			ob1, _, err := getBlock(m.Options, message.Block1)
			if err != nil {
				ex.replyCode(codes.BadOption, "bad block option")
				return
			}
			osc, _ := optBytes(m.Options, optOSCORE)
			tag, _ := optBytes(m.Options, optRequestTag)
			key := "oscore-outer\x00" + strconv.Itoa(int(m.Code)) + "\x00" + string(osc) + "\x00" + string(tag)
			full, resp := sess.block1Step(key, ob1, m.Payload, optUint(m.Options, message.Size1))
			if resp != nil {
				ex.reply(resp)
				return
			}
			outer := *m
			outer.Payload = full
			outer.Options = append(message.Options(nil), m.Options...).Remove(message.Block1).Remove(message.Size1).Remove(optRequestTag)
			m = &outer
		}
		lr := l.Unprotect(m, sess.peer)
		switch {
		case lr.Reply != nil:
			ex.reply(lr.Reply)
			return
		case lr.Forward != nil:
			if !sess.verified.Load() {
				// A forwarded request is not verified here, so it does not prove the source
				// address: the source answers an Echo challenge first (RFC 9175 §2.4 item 3),
				// or a spoofed datagram would make the upstream's answer an amplifier.
				s.challenge(sess, m, e)
				return
			}
			forward = lr.Forward
		case lr.Request != nil:
			inner := lr.Request
			inner.Type, inner.MessageID, inner.Token = m.Type, m.MessageID, m.Token
			m, peer, ex.protect = inner, lr.Peer, lr.Protect
			// A request that verified under OSCORE (fresh, RFC 8613 §7.4) came from its owner.
			s.markVerified(sess)
			peer.AddressVerified = true
			ex.limit = 0
			if ex.protect == nil {
				ex.protect = func(r *message.Message) (*message.Message, error) {
					return nil, errors.New("coap: layer gave no Protect")
				}
			}
			var bad message.OptionID
			if m.Options, bad = checkOptions(m.Options); bad != 0 {
				s.ep.stats.badOption.Add(1)
				ex.replyCode(codes.BadOption, "unrecognised critical option "+strconv.Itoa(int(bad))) // RFC 8613 §8.2 step 8
				return
			}
		}
	}
	b1, has1, err1 := getBlock(m.Options, message.Block1)
	b2, has2, err2 := getBlock(m.Options, message.Block2)
	if err1 != nil || err2 != nil {
		ex.replyCode(codes.BadOption, "bad block option")
		return
	}
	path := pathOf(m.Options)
	query := queriesOf(m.Options)
	cf := optUint(m.Options, message.ContentFormat)
	res, ok := s.mux.lookup(path)
	if forward != nil {
		res, ok = Resource{Path: path, Handler: forward}, true
	} else if !ok && path == wellKnownCore {
		res, ok = Resource{Path: wellKnownCore, Handler: HandlerFunc(s.wellKnown)}, true
	}
	if !ok {
		ex.replyCode(codes.NotFound, "")
		return
	}
	if res.OSCORE && peer.OSCORE == nil {
		// An OSCORE-only resource (EST-oscore) reached without object security: fail closed,
		// whether or not a Layer is installed.
		if hints := s.mux.getHints(); hints != nil {
			if f, body := hints(path); body != nil {
				m := &message.Message{Code: codes.Unauthorized, Payload: body}
				if cf, ok := f.Get(); ok {
					m.Options = message.Options{{ID: message.ContentFormat, Value: encodeUint(uint32(cf))}}
				}
				ex.reply(m)
				return
			}
		}
		ex.replyCode(codes.Unauthorized, "this resource requires OSCORE (RFC 8613)")
		return
	}
	qs := strings.Join(query, "&")
	key2 := strconv.Itoa(int(m.Code)) + "\x00" + path + "\x00" + qs
	body := m.Payload
	var b1echo *block
	if has1 {
		// RFC 9175 §3.3: blocks belong together when endpoint, method, URI,
		// Content-Format and Request-Tag match; the token plays no part.
		tag, _ := optBytes(m.Options, optRequestTag)
		key1 := key2 + "\x00" + strconv.FormatInt(cf, 10) + "\x00" + string(tag)
		full, resp := sess.block1Step(key1, b1, m.Payload, optUint(m.Options, message.Size1))
		if resp != nil {
			ex.reply(resp)
			return
		}
		body = full
		b1echo = &block{Num: b1.Num, SZX: b1.SZX}
	} else if has2 && b2.Num > 0 {
		if sess.serveCached(ex, key2, b2) {
			return
		}
		if m.Code != codes.GET && m.Code != codes.Code(5) { // GET, FETCH may be recomputed
			ex.replyCode(codes.RequestEntityIncomplete, "no cached representation")
			return
		}
	}
	if !s.admit() {
		// Shutting down: the request is not taken. RFC 7252 §5.9.3.4: 5.03 with Max-Age tells
		// the client when to retry (by then a restarted server answers it).
		r := &message.Message{Code: codes.ServiceUnavailable, Payload: []byte("server shutting down")}
		r.Options = addUint(make(message.Options, 0, 1), message.MaxAge, drainRetryAfter)
		ex.reply(r)
		return
	}
	sess.mu.Lock()
	if sess.exchanges >= s.ep.cfg.MaxExchangesPerPeer {
		sess.mu.Unlock()
		s.running.Done()
		s.ep.stats.busy.Add(1)
		r := &message.Message{Code: codes.ServiceUnavailable}
		r.Options = addUint(make(message.Options, 0, 1), message.MaxAge, 1)
		ex.reply(r)
		return
	}
	sess.exchanges++
	sess.mu.Unlock()
	req := &Request{
		Method: m.Code, Path: path, Query: query, ContentFormat: optFormat(m.Options, message.ContentFormat),
		Accept: optFormat(m.Options, message.Accept), Observe: optObserve(m.Options),
		Payload: body, Options: m.Options, Peer: peer,
	}
	if !has2 {
		b2 = block{SZX: maxSZX}
	}
	s.handlers.run(func() {
		defer s.running.Done() // admitted above
		s.serve(ex, res, req, key2, b2, b1echo)
	})
}

// handlerIdle is how long a handler goroutine waits for the next request before it ends.
const handlerIdle = 2 * time.Second

// challenge answers a request from an unproven address with 4.01 + Echo (RFC 9175 §2.4 item 3).
func (s *Server) challenge(sess *session, m *message.Message, e *dedupEntry) {
	typ, mid := m.Type, uint16(m.MessageID)
	if typ == message.NonConfirmable {
		sess.mu.Lock()
		mid = sess.allocMIDLocked()
		sess.mu.Unlock()
	}
	if c := s.echo.challenge(typ, mid, m.Token, encodedLen(m), sess.udpKey); c != nil {
		s.ep.stats.challenges.Add(1)
		s.ep.stats.byCode[codes.Unauthorized].Add(1)
		if typ == message.Confirmable {
			sess.setReply(e, c)
		}
		sess.send(c)
	}
}

// drainRetryAfter is the Max-Age (seconds) of the 5.03 that refuses requests during Shutdown.
const drainRetryAfter = 5

// admit counts a request in (running) unless Shutdown has begun. The check and the Add are under
// mu so that Shutdown's Wait never races an Add.
func (s *Server) admit() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining || s.closed {
		return false
	}
	s.running.Add(1)
	return true
}

// Shutdown stops the server gracefully: requests received from now on are answered 5.03 +
// Max-Age (retry later) instead of being handled, the handlers of requests already taken run to
// their end and their answers are sent (piggybacked, or separate and acknowledged), then the
// server closes as Close does — every DTLS session with a close_notify alert. When ctx ends
// first, Shutdown closes at once and returns ctx's error: answers still being computed are lost.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.draining = true
	s.mu.Unlock()
	idle := make(chan struct{})
	go func() {
		s.running.Wait()
		close(idle)
	}()
	var err error
	select {
	case <-idle:
	case <-ctx.Done():
		err = fmt.Errorf("coap: shutdown: requests still in progress: %w", ctx.Err())
	}
	return errors.Join(err, s.Close())
}

// serve runs the handler on its own goroutine and sends its answer,
// piggybacked or, when slower than SeparateAfter, as a separate response.
func (s *Server) serve(ex *exchange, res Resource, req *Request, key2 string, b2 block, b1echo *block) {
	sess := ex.s
	defer func() {
		sess.mu.Lock()
		sess.exchanges--
		sess.mu.Unlock()
	}()
	var timer *time.Timer
	separate := func() {
		ex.mu.Lock()
		defer ex.mu.Unlock()
		if !ex.done {
			// RFC 7252 §5.2.2: empty ACK now, the response later as a CON.
			ex.separate = true
			sess.setReply(ex.e, sess.sendEmpty(message.Acknowledgement, ex.mid))
		}
	}
	switch {
	case ex.typ != message.Confirmable:
	case s.ep.cfg.SeparateAfter < 0:
		separate()
	default:
		timer = time.AfterFunc(s.ep.cfg.SeparateAfter, separate)
	}
	resp := s.callHandler(res.Handler, req)
	if timer != nil {
		timer.Stop()
	}
	ex.mu.Lock()
	ex.done = true
	sep := ex.separate
	ex.mu.Unlock()

	obs := int64(-1)
	var registered *observer // its sendMu is held until the response has gone out (register)
	release := func() {
		if registered != nil {
			registered.sendMu.Unlock()
			registered = nil
		}
	}
	defer release()
	if req.Method == codes.GET {
		// Observations under OSCORE are not kept: notifications would need the exchange's
		// security state (RFC 8613 §4.1.3.5); the request is answered as a plain GET.
		if req.Observe == ObserveRegister && res.Observable && resp.Code>>5 == 2 && ex.protect == nil && sess.canObserve(ex.token) {
			seq, o := s.register(sess, ex.token, req.Path, req.Query, b2.SZX)
			obs, registered = int64(seq), o
		} else {
			s.deregister(sess, ex.token) // RFC 7641 §3.6: GET without Observe (or 1) cancels
		}
	}
	m := sess.buildResponse(resp, key2, b2, b1echo, obs)
	if _, asked := optBytes(req.Options, message.Size2); asked && optUint(m.Options, message.Size2) < 0 {
		m.Options = addUint(m.Options, message.Size2, uint32(len(resp.Payload))) // RFC 7959 §4
	}
	if !sep {
		ex.reply(m)
		release()
		return
	}
	// A separate response first waits for NSTART and then for its ACK: notifications do not
	// wait that long for it.
	release()
	m = ex.seal(m)
	m.Token = ex.token
	s.ep.stats.byCode[m.Code].Add(1)
	ctx, cancel := context.WithTimeout(s.ep.ctx, s.ep.cfg.ExchangeLifetime)
	defer cancel()
	if _, err := sess.sendCONWait(ctx, m); err != nil {
		s.ep.log.Debug("coap: separate response not acknowledged", "peer", sess.peer.Addr, "err", err)
	}
}

func (s *Server) callHandler(h Handler, req *Request) (resp *Response) {
	defer func() {
		if p := recover(); p != nil {
			s.ep.log.Error("coap: handler panicked", "path", req.Path, "panic", p)
			resp = NewResponse(codes.InternalServerError, nil)
		}
	}()
	if h == nil {
		return NewResponse(codes.NotImplemented, nil)
	}
	resp = h.ServeCoAP(s.ep.ctx, req)
	if resp == nil {
		resp = NewResponse(codes.InternalServerError, nil)
	}
	return resp
}

// block1Step adds one Block1 block; it returns the whole body when the last
// block arrived, or the message to answer with.
func (x *session) block1Step(key string, b block, payload []byte, size1 int64) ([]byte, *message.Message) {
	cfg := &x.ep.cfg
	tooLarge := func() *message.Message {
		// RFC 7959 §2.9.3: 4.13 with Size1 indicating the largest acceptable body.
		r := &message.Message{Code: codes.RequestEntityTooLarge}
		r.Options = addUint(make(message.Options, 0, 1), message.Size1, uint32(cfg.MaxBodySize))
		return r
	}
	off := b.offset()
	if size1 > int64(cfg.MaxBodySize) || off+len(payload) > cfg.MaxBodySize {
		x.dropBlock1(key)
		return nil, tooLarge()
	}
	if b.More && len(payload) != b.size() {
		x.dropBlock1(key)
		return nil, &message.Message{Code: codes.BadRequest, Payload: []byte("block payload does not match block size")}
	}
	x.mu.Lock()
	st := x.block1[key]
	if b.Num == 0 && st == nil && (len(x.block1) >= maxTransfersPerPeer ||
		x.ip != nil && int(x.ip.block1.Load()) >= cfg.MaxTransfersPerIP) {
		x.mu.Unlock()
		r := &message.Message{Code: codes.ServiceUnavailable}
		r.Options = addUint(make(message.Options, 0, 1), message.MaxAge, 5)
		return nil, r
	}
	if b.Num == 0 {
		if st != nil {
			x.ep.stats.reasmBytes.Add(-int64(len(st.buf)))
		} else if x.ip != nil {
			x.ip.block1.Add(1)
		}
		st = &block1State{}
		if x.block1 == nil {
			x.block1 = map[string]*block1State{}
		}
		x.block1[key] = st
	} else if st == nil || off > len(st.buf) {
		x.mu.Unlock()
		// RFC 7959 §2.3: a missing or out-of-order block → 4.08.
		return nil, &message.Message{Code: codes.RequestEntityIncomplete}
	}
	grow := off + len(payload) - len(st.buf)
	if x.ep.stats.reasmBytes.Load()+int64(grow) > int64(cfg.MaxCacheBytes) {
		delete(x.block1, key)
		x.block1Gone(1)
		x.mu.Unlock()
		x.ep.stats.reasmBytes.Add(-int64(len(st.buf)))
		r := &message.Message{Code: codes.ServiceUnavailable}
		r.Options = addUint(make(message.Options, 0, 1), message.MaxAge, 5)
		return nil, r
	}
	// A block at an offset already received (resent under a new MID) rewrites the tail.
	st.buf = append(st.buf[:off], payload...)
	x.ep.stats.reasmBytes.Add(int64(grow))
	st.expires = time.Now().Add(cfg.BlockTimeout) // refreshed per block
	if b.More {
		x.mu.Unlock()
		r := &message.Message{Code: codes.Continue}
		r.Options = make(message.Options, 0, 1).Add(message.Option{ID: message.Block1, Value: block{Num: b.Num, More: true, SZX: b.SZX}.encode()})
		return nil, r
	}
	delete(x.block1, key)
	x.block1Gone(1)
	x.mu.Unlock()
	x.ep.stats.reasmBytes.Add(-int64(len(st.buf)))
	x.ep.stats.blockwise.Add(1)
	return st.buf, nil
}

// block1Gone accounts for n Block1 reassemblies that ended (x.mu held).
func (x *session) block1Gone(n int) {
	if x.ip != nil && n > 0 {
		x.ip.block1.Add(-int32(n))
	}
}

func (x *session) dropBlock1(key string) {
	x.mu.Lock()
	st := x.block1[key]
	delete(x.block1, key)
	if st != nil {
		x.block1Gone(1)
	}
	x.mu.Unlock()
	if st != nil {
		x.ep.stats.reasmBytes.Add(-int64(len(st.buf)))
	}
}

// serveCached answers a Block2 follow-up from the cached representation.
func (x *session) serveCached(ex *exchange, key string, b block) bool {
	x.mu.Lock()
	st := x.block2[key]
	if st == nil {
		x.mu.Unlock()
		return false
	}
	st.expires = time.Now().Add(x.ep.cfg.BlockTimeout)
	x.mu.Unlock()
	ex.reply(st.blockMessage(b.Num, b.SZX))
	return true
}

func (st *block2State) blockMessage(num uint32, szx uint8) *message.Message {
	size := 1 << (szx + 4)
	off := int(num) * size
	if off >= len(st.body) && off > 0 {
		return &message.Message{Code: codes.BadOption, Payload: []byte("block out of range")} // RFC 7959 §2.2
	}
	end := min(off+size, len(st.body))
	opts := make(message.Options, len(st.opts), len(st.opts)+4)
	copy(opts, st.opts)
	opts = opts.Add(message.Option{ID: message.ETag, Value: st.etag})
	opts = opts.Add(message.Option{ID: message.Block2, Value: block{Num: num, More: end < len(st.body), SZX: szx}.encode()})
	opts = addUint(opts, message.Size2, uint32(len(st.body)))
	return &message.Message{Code: st.code, Options: opts, Payload: st.body[off:end]}
}

// buildResponse turns a handler's Response into the first (or only) message;
// a body larger than the negotiated block size is cached and served with Block2.
func (x *session) buildResponse(resp *Response, key2 string, b2 block, b1echo *block, obs int64) *message.Message {
	opts := make(message.Options, 0, len(resp.Options)+8)
	for _, o := range resp.Options {
		opts = opts.Add(o)
	}
	if cf, ok := resp.ContentFormat.Get(); ok {
		opts = addUint(opts, message.ContentFormat, uint32(cf))
	}
	if age, ok := resp.MaxAge.Get(); ok {
		opts = addUint(opts, message.MaxAge, uint32(age))
	}
	if obs >= 0 {
		opts = addUint(opts, message.Observe, uint32(obs))
	}
	if b1echo != nil {
		opts = opts.Add(message.Option{ID: message.Block1, Value: b1echo.encode()})
	}
	szx := min(b2.SZX, maxSZX)
	if len(resp.Payload) <= 1<<(szx+4) && b2.Num == 0 {
		if len(resp.ETag) > 0 {
			opts = opts.Add(message.Option{ID: message.ETag, Value: resp.ETag})
		}
		return &message.Message{Code: resp.Code, Options: opts, Payload: resp.Payload}
	}
	etag := resp.ETag
	if len(etag) == 0 {
		h := fnv.New64a()
		h.Write(resp.Payload)
		etag = h.Sum(nil)
	}
	// The block-wise response must not carry Observe in follow-ups, nor Block1.
	base := opts.Remove(message.Observe).Remove(message.Block1)
	base = append(message.Options(nil), base...)
	st := &block2State{code: resp.Code, opts: base, body: resp.Payload, etag: etag,
		expires: time.Now().Add(x.ep.cfg.BlockTimeout)}
	if x.ep.stats.cacheBytes.Load()+int64(len(st.body)) > int64(x.ep.cfg.MaxCacheBytes) {
		r := &message.Message{Code: codes.ServiceUnavailable}
		r.Options = addUint(make(message.Options, 0, 1), message.MaxAge, 5)
		return r
	}
	x.mu.Lock()
	if old := x.block2[key2]; old != nil {
		x.ep.stats.cacheBytes.Add(-int64(len(old.body)))
	}
	if x.block2 == nil {
		x.block2 = map[string]*block2State{}
	}
	x.block2[key2] = st
	x.mu.Unlock()
	x.ep.stats.cacheBytes.Add(int64(len(st.body)))
	x.ep.stats.blockwise.Add(1)
	m := st.blockMessage(b2.Num, szx)
	if obs >= 0 {
		m.Options = addUint(m.Options, message.Observe, uint32(obs))
	}
	if b1echo != nil {
		m.Options = m.Options.Add(message.Option{ID: message.Block1, Value: b1echo.encode()})
	}
	return m
}

// wellKnown serves /.well-known/core from the table (RFC 6690 §4), filtered by
// the query (§4.1).
func (s *Server) wellKnown(_ context.Context, r *Request) *Response {
	if r.Method != codes.GET {
		return NewResponse(codes.MethodNotAllowed, nil)
	}
	links := FilterLinks(resourceLinks(s.mux.Resources()), r.Query)
	resp := NewResponse(codes.Content, FormatLinks(links))
	resp.ContentFormat = CF(40)
	return resp
}

// canObserve reports whether the session may add (or refresh) the observation token.
func (x *session) canObserve(token []byte) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	_, exists := x.observers[string(token)]
	return exists || len(x.observers) < maxTransfersPerPeer
}
