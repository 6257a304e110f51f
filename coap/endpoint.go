package coap

import (
	"container/list"
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// Errors of the messaging layer.
var (
	ErrTimeout = errors.New("coap: no acknowledgement after MAX_RETRANSMIT retransmissions")
	ErrReset   = errors.New("coap: peer answered with Reset")
	ErrClosed  = errors.New("coap: endpoint closed")
	// ErrSessionClosed: the server ended the DTLS session (close_notify, e.g. on its shutdown);
	// a new Dial makes a new one.
	ErrSessionClosed = errors.New("coap: the server closed the session")
)

const (
	maxOptions = 64
	maxBlock   = 1024
	maxSZX     = 6
)

// counters are the endpoint's metrics, updated atomically.
type counters struct {
	byCode          [256]atomic.Uint64
	retransmissions atomic.Uint64
	duplicates      atomic.Uint64
	resets          atomic.Uint64
	malformed       atomic.Uint64
	badOption       atomic.Uint64
	blockwise       atomic.Uint64
	notifications   atomic.Uint64
	sessionsDropped atomic.Uint64
	busy            atomic.Uint64
	challenges      atomic.Uint64
	obsEvicted      atomic.Uint64
	orphans         atomic.Uint64
	cacheBytes      atomic.Int64
	reasmBytes      atomic.Int64
}

// Stats is a snapshot of an endpoint's counters (for a Prometheus collector).
type Stats struct {
	Responses        map[string]uint64 // responses sent, by code ("2.05", "2.31", "4.04", ...)
	Retransmissions  uint64            // CON retransmissions sent
	Duplicates       uint64            // duplicate CON/NON messages detected (RFC 7252 §4.5)
	Resets           uint64            // Reset messages received
	Malformed        uint64            // datagrams that did not parse
	BadOption        uint64            // requests rejected 4.02 for an unknown critical option
	Blockwise        uint64            // completed Block1 reassemblies + Block2 bodies cached
	Notifications    uint64            // Observe notifications sent
	Busy             uint64            // requests refused because of MaxExchangesPerPeer
	SessionsDropped  uint64            // datagrams dropped because MaxSessions was reached
	EchoChallenges   uint64            // 4.01 + Echo challenges sent to unproven addresses (RFC 9175 §2.4)
	ObserversEvicted uint64            // observations dropped for MaxObservers / MaxObserversPerIP
	AnswersKept      uint64            // evicted coap:// sessions whose answers were kept for retransmissions
	ActiveSessions   int
	Observers        int
	CacheBytes       int64 // deduplication replies + Block2 representations held
	ReassemblyBytes  int64 // Block1 buffers held
}

// Metrics is what the server publishes for a metrics collector.
type Metrics interface {
	Stats() Stats
}

func (c *counters) snapshot() Stats {
	st := Stats{
		Responses:        map[string]uint64{},
		Retransmissions:  c.retransmissions.Load(),
		Duplicates:       c.duplicates.Load(),
		Resets:           c.resets.Load(),
		Malformed:        c.malformed.Load(),
		BadOption:        c.badOption.Load(),
		Blockwise:        c.blockwise.Load(),
		Notifications:    c.notifications.Load(),
		Busy:             c.busy.Load(),
		SessionsDropped:  c.sessionsDropped.Load(),
		EchoChallenges:   c.challenges.Load(),
		ObserversEvicted: c.obsEvicted.Load(),
		AnswersKept:      c.orphans.Load(),
		CacheBytes:       c.cacheBytes.Load(),
		ReassemblyBytes:  c.reasmBytes.Load(),
	}
	for i := range c.byCode {
		if v := c.byCode[i].Load(); v > 0 {
			st.Responses[codeString(codes.Code(i))] = v
		}
	}
	return st
}

// dedupEntry remembers a received CON/NON message ID for EXCHANGE_LIFETIME
// (RFC 7252 §4.5) and the reply to resend for a duplicate CON.
type dedupEntry struct {
	reply []byte
}

type dedupItem struct {
	mid     uint16
	expires time.Time
	e       *dedupEntry
}

// outCon is an outgoing confirmable message under retransmission (RFC 7252 §4.2).
type outCon struct {
	mid     uint16
	msg     []byte
	timeout time.Duration
	tries   int
	timer   *time.Timer
	onDone  func(ack *message.Message, err error)
}

// session is the state kept per remote endpoint (UDP address or DTLS session).
type session struct {
	ep    *endpoint
	peer  Peer
	write func([]byte) error
	conn  io.Closer // DTLS session, closed with the session

	udpKey   netip.AddrPort // UDP sessions: map key and LRU positions (Server.mu)
	lruElem  *list.Element  // in Server.lru (verified) or Server.unv
	ipElem   *list.Element  // in the ipEntry of udpKey's address
	verified atomic.Bool    // the peer proved its address (RFC 9175 §2.4); written under Server.mu
	ip       *ipEntry       // UDP sessions: the per-address counters

	mu       sync.Mutex
	lastSeen time.Time
	closed   bool
	// layerWork counts this session's requests a Layer worker is verifying (Server.onRequest);
	// int32 beside the bool so that the session stays in its allocation size class.
	layerWork int32
	dedup     map[uint16]*dedupEntry
	dq        []dedupItem
	dqHead    int
	pending   map[uint16]*outCon
	nextMID   uint16
	nstart    chan struct{}
	waiters   map[string]chan *message.Message // client side, by token

	// server side
	exchanges int
	block1    map[string]*block1State
	block2    map[string]*block2State
	observers map[string]*observer // by token
}

// endpoint is the messaging layer shared by Server and Client.
type endpoint struct {
	cfg    Config
	log    *slog.Logger
	stats  counters
	ctx    context.Context
	cancel context.CancelFunc
	// onReq takes a request; offload: it came from a reader shared by many peers (nil on a client).
	onReq    func(s *session, m *message.Message, e *dedupEntry, badOpt message.OptionID, offload bool)
	obsClean func(s *session, o *observer)
}

func newEndpoint(cfg Config) *endpoint {
	cfg = cfg.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	return &endpoint{cfg: cfg, log: cfg.Logger, ctx: ctx, cancel: cancel}
}

func (ep *endpoint) newSession(peer Peer, write func([]byte) error) *session {
	// The maps are made on first use: an idle session holds none (RFC 7252 §4.5
	// deduplication, RFC 7959 and RFC 7641 state exist only while used).
	return &session{
		ep: ep, peer: peer, write: write, lastSeen: time.Now(),
		nextMID: uint16(rand.Uint32()),
		nstart:  make(chan struct{}, ep.cfg.NStart),
	}
}

func encode(m *message.Message) []byte {
	n, err := coder.DefaultCoder.Size(*m)
	if err != nil {
		return nil
	}
	b := make([]byte, n)
	if _, err := coder.DefaultCoder.Encode(*m, b); err != nil {
		return nil
	}
	return b
}

// decode parses a datagram (RFC 7252 §3); the returned message aliases b.
// The header is read here and the options by go-coap's option codec without
// its option table, so that every option is kept and checked by checkOptions.
func decode(b []byte, m *message.Message) error {
	if len(b) < 4 {
		return coder.ErrMessageTruncated
	}
	if b[0]>>6 != 1 {
		return coder.ErrMessageInvalidVersion
	}
	tkl := int(b[0] & 0xf)
	if tkl > message.MaxTokenSize {
		return message.ErrInvalidTokenLen
	}
	if len(b) < 4+tkl {
		return coder.ErrMessageTruncated
	}
	m.Type = message.Type(b[0] >> 4 & 3)
	m.Code = codes.Code(b[1])
	m.MessageID = int32(binary.BigEndian.Uint16(b[2:4]))
	m.Token = nil
	if tkl > 0 {
		m.Token = b[4 : 4+tkl]
	}
	rest := b[4+tkl:]
	m.Options = make(message.Options, 0, 16)
	n, err := m.Options.Unmarshal(rest, nil)
	if errors.Is(err, message.ErrOptionsTooSmall) {
		m.Options = make(message.Options, 0, maxOptions)
		n, err = m.Options.Unmarshal(rest, nil)
	}
	if err != nil {
		return err
	}
	m.Payload = nil
	if len(rest) > n {
		m.Payload = rest[n:]
	}
	if m.Code == codes.Empty && (tkl != 0 || len(rest) != 0) {
		return errors.New("coap: empty message with token, options or payload") // RFC 7252 §4.1
	}
	return nil
}

// checkOptions drops options whose length is outside their definition
// (RFC 7252 §5.4.3: such options are treated as unrecognised) and returns the
// first unrecognised critical option (§5.4.1), or 0.
func checkOptions(opts message.Options) (message.Options, message.OptionID) {
	out := opts[:0]
	var bad message.OptionID
	for _, o := range opts {
		known := isKnownOption(o.ID)
		if known && optLenOK(o.ID, len(o.Value)) {
			out = append(out, o)
			continue
		}
		if !known {
			out = append(out, o) // kept for the handler (elective ones are ignored by us)
		}
		if o.ID&1 == 1 && bad == 0 {
			bad = o.ID
		}
	}
	return out, bad
}

// optLenOK checks an option's length against RFC 7252 §5.10 (and RFC 7641,
// 7959, 7967, 8613, 8768, 9175, 9668).
func optLenOK(id message.OptionID, n int) bool {
	lo, hi := 0, 255
	switch id {
	case message.IfMatch, optRequestTag:
		hi = 8
	case message.ETag:
		lo, hi = 1, 8
	case message.IfNoneMatch, optEDHOC:
		hi = 0
	case message.Observe, message.Block1, message.Block2:
		hi = 3
	case message.URIPort, message.ContentFormat, message.Accept:
		hi = 2
	case message.MaxAge, message.Size1, message.Size2:
		hi = 4
	case message.URIHost, message.ProxyScheme:
		lo = 1
	case message.ProxyURI:
		lo, hi = 1, 1034
	case optHopLimit, optNoResponse:
		lo, hi = 0, 1
		if id == optHopLimit {
			lo = 1
		}
	case optEcho:
		lo, hi = 1, 40
	}
	return n >= lo && n <= hi
}

func (s *session) send(b []byte) {
	if b == nil {
		return
	}
	if err := s.write(b); err != nil {
		s.ep.log.Debug("coap: write failed", "peer", s.peer.Addr, "err", err)
	}
}

func (s *session) sendEmpty(typ message.Type, mid uint16) []byte {
	b := []byte{1<<6 | byte(typ)<<4, 0, byte(mid >> 8), byte(mid)}
	s.send(b)
	return b
}

// handle processes one datagram from the session's peer. It runs on the read
// loop and never blocks on a handler.
func (s *session) handle(b []byte) { s.handleDatagram(b, false) }

// handleDatagram is handle; offload: the read loop serves many peers (coap://), so work that
// may be slow for one of them (the Layer's) is handed off (Server.onRequest).
func (s *session) handleDatagram(b []byte, offload bool) {
	ep := s.ep
	now := time.Now()
	if len(b) < 4 || b[0]>>6 != 1 {
		ep.stats.malformed.Add(1)
		return // RFC 7252 §3: unknown version numbers MUST be silently ignored
	}
	typ := message.Type(b[0] >> 4 & 3)
	tkl := int(b[0] & 0xf)
	code := codes.Code(b[1])
	mid := binary.BigEndian.Uint16(b[2:4])
	var m message.Message
	if err := decode(b, &m); err != nil {
		ep.stats.malformed.Add(1)
		// A request whose header and token parse gets 4.00 (RFC 7252 §5.4.1 allows
		// rejecting a CON with a format error); anything else is dropped. Never
		// does a bad datagram end the session.
		if typ == message.Confirmable && code>>5 == 0 && code != 0 && tkl <= 8 && len(b) >= 4+tkl {
			r := message.Message{Type: message.Acknowledgement, Code: codes.BadRequest, MessageID: int32(mid),
				Token: b[4 : 4+tkl], Payload: []byte("malformed message")}
			s.ep.stats.byCode[codes.BadRequest].Add(1)
			s.send(encode(&r))
		}
		return
	}
	s.mu.Lock()
	s.lastSeen = now
	s.mu.Unlock()
	var badOpt message.OptionID
	m.Options, badOpt = checkOptions(m.Options)
	switch typ {
	case message.Reset:
		ep.stats.resets.Add(1)
		s.onReset(mid) // RFC 7252 §4.2: a Reset is never answered
		return
	case message.Acknowledgement:
		s.onAck(mid, &m)
		return
	}
	if code == codes.Empty {
		if typ == message.Confirmable {
			s.sendEmpty(message.Reset, mid) // CoAP ping, RFC 7252 §4.3
		}
		return
	}
	class := code >> 5
	if class == 1 || class > 5 {
		if typ == message.Confirmable {
			s.sendEmpty(message.Reset, mid)
		}
		return
	}
	// Deduplication (RFC 7252 §4.5): O(1) map lookup, expiry from the head of a
	// time-ordered queue.
	s.mu.Lock()
	s.purgeDedupLocked(now)
	if e, ok := s.dedup[mid]; ok {
		reply := e.reply
		s.mu.Unlock()
		ep.stats.duplicates.Add(1)
		if typ == message.Confirmable {
			s.send(reply)
		}
		return
	}
	e := &dedupEntry{}
	if s.dedup == nil {
		s.dedup = map[uint16]*dedupEntry{}
	}
	s.dedup[mid] = e
	s.dq = append(s.dq, dedupItem{mid: mid, expires: now.Add(ep.cfg.ExchangeLifetime), e: e})
	s.mu.Unlock()

	if class == 0 {
		if ep.onReq == nil {
			if typ == message.Confirmable {
				s.setReply(e, s.sendEmpty(message.Reset, mid))
			}
			return
		}
		ep.onReq(s, &m, e, badOpt, offload)
		return
	}
	// A response arriving in a CON or NON (separate response, notification).
	if badOpt != 0 {
		// RFC 7252 §5.4.1: reject a CON response, ignore a NON one.
		if typ == message.Confirmable {
			s.setReply(e, s.sendEmpty(message.Reset, mid))
		}
		return
	}
	if s.deliver(&m) {
		if typ == message.Confirmable {
			// RFC 7252 §5.2.2: a CON response is acknowledged.
			s.setReply(e, s.sendEmpty(message.Acknowledgement, mid))
		}
		return
	}
	// Unknown token: reject (RFC 7252 §5.3.2; RFC 7641 §3.6 cancels observations this way).
	s.setReply(e, s.sendEmpty(message.Reset, mid))
}

// setReply stores the reply resent for duplicates of the message e belongs to.
func (s *session) setReply(e *dedupEntry, b []byte) {
	if e == nil || b == nil {
		return
	}
	if s.ep.stats.cacheBytes.Load()+int64(len(b)) > int64(s.ep.cfg.MaxCacheBytes) {
		return // over the cap: duplicates are then silently ignored
	}
	s.mu.Lock()
	old := len(e.reply)
	e.reply = b
	s.mu.Unlock()
	s.ep.stats.cacheBytes.Add(int64(len(b) - old))
}

func (s *session) purgeDedupLocked(now time.Time) {
	for s.dqHead < len(s.dq) && now.After(s.dq[s.dqHead].expires) {
		it := s.dq[s.dqHead]
		s.dq[s.dqHead] = dedupItem{}
		s.dqHead++
		if s.dedup[it.mid] == it.e {
			delete(s.dedup, it.mid)
		}
		if n := len(it.e.reply); n > 0 {
			s.ep.stats.cacheBytes.Add(-int64(n))
		}
	}
	if s.dqHead == len(s.dq) {
		// Nothing left to deduplicate: an idle session holds no cache (maps never shrink).
		s.dq, s.dqHead, s.dedup = nil, 0, nil
		return
	}
	if s.dqHead > 64 && s.dqHead*2 > len(s.dq) {
		n := copy(s.dq, s.dq[s.dqHead:])
		clear(s.dq[n:])
		s.dq = s.dq[:n]
		s.dqHead = 0
	}
}

// deliver hands a response to the waiter of its token; false when none.
func (s *session) deliver(m *message.Message) bool {
	s.mu.Lock()
	ch, ok := s.waiters[string(m.Token)]
	s.mu.Unlock()
	if !ok {
		return false
	}
	select {
	case ch <- m:
	default: // a slow observer loses intermediate notifications (RFC 7641 §4.5: eventual consistency)
	}
	return true
}

func (s *session) addWaiter(token []byte, n int) chan *message.Message {
	ch := make(chan *message.Message, n)
	s.mu.Lock()
	if s.waiters == nil {
		s.waiters = map[string]chan *message.Message{}
	}
	s.waiters[string(token)] = ch
	s.mu.Unlock()
	return ch
}

func (s *session) removeWaiter(token []byte) {
	s.mu.Lock()
	delete(s.waiters, string(token))
	s.mu.Unlock()
}

func (s *session) onAck(mid uint16, m *message.Message) {
	s.mu.Lock()
	o := s.pending[mid]
	if o != nil {
		delete(s.pending, mid)
		o.timer.Stop()
	}
	s.mu.Unlock()
	if o == nil {
		return
	}
	if m.Code != codes.Empty {
		s.deliver(m) // piggybacked response
	}
	o.onDone(m, nil)
}

func (s *session) onReset(mid uint16) {
	s.mu.Lock()
	o := s.pending[mid]
	if o != nil {
		delete(s.pending, mid)
		o.timer.Stop()
	}
	var dead *observer
	for _, ob := range s.observers {
		if ob.hasNonMID && ob.lastNonMID == mid {
			dead = ob
		}
	}
	s.mu.Unlock()
	if o != nil {
		o.onDone(nil, ErrReset)
	}
	if dead != nil && s.ep.obsClean != nil {
		s.ep.obsClean(s, dead) // RFC 7641 §3.6: a Reset to a notification cancels
	}
}

func (s *session) allocMIDLocked() uint16 {
	for {
		s.nextMID++
		if _, busy := s.pending[s.nextMID]; !busy {
			return s.nextMID
		}
	}
}

// startCON sends m as a confirmable message with retransmission (RFC 7252
// §4.2: initial timeout random in [ACK_TIMEOUT, ACK_TIMEOUT*ACK_RANDOM_FACTOR],
// doubled on every retransmission, at most MAX_RETRANSMIT). onDone is called
// once, with the ACK or an error, and must not block. m.MessageID is set here.
func (s *session) startCON(m *message.Message, onDone func(ack *message.Message, err error)) (uint16, error) {
	cfg := &s.ep.cfg
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return 0, ErrClosed
	}
	mid := s.allocMIDLocked()
	m.Type = message.Confirmable
	m.MessageID = int32(mid)
	b := encode(m)
	if b == nil {
		s.mu.Unlock()
		return 0, errors.New("coap: cannot encode message")
	}
	to := time.Duration(float64(cfg.ACKTimeout) * (1 + rand.Float64()*(cfg.ACKRandomFactor-1)))
	o := &outCon{mid: mid, msg: b, timeout: to, onDone: onDone}
	o.timer = time.AfterFunc(to, func() { s.retransmit(o) })
	if s.pending == nil {
		s.pending = map[uint16]*outCon{}
	}
	s.pending[mid] = o
	s.mu.Unlock()
	s.send(b)
	return mid, nil
}

func (s *session) retransmit(o *outCon) {
	s.mu.Lock()
	if s.pending[o.mid] != o {
		s.mu.Unlock()
		return
	}
	if o.tries >= s.ep.cfg.MaxRetransmit {
		delete(s.pending, o.mid)
		s.mu.Unlock()
		o.onDone(nil, ErrTimeout)
		return
	}
	o.tries++
	o.timeout *= 2
	o.timer.Reset(o.timeout)
	s.mu.Unlock()
	s.ep.stats.retransmissions.Add(1)
	s.send(o.msg)
}

// cancelCON stops retransmitting mid (e.g. a separate response arrived first).
func (s *session) cancelCON(mid uint16) {
	s.mu.Lock()
	o := s.pending[mid]
	if o != nil {
		delete(s.pending, mid)
		o.timer.Stop()
	}
	s.mu.Unlock()
	if o != nil {
		o.onDone(nil, context.Canceled)
	}
}

// sendCONWait sends m confirmably, respecting NSTART (RFC 7252 §4.7), and
// waits for the ACK.
func (s *session) sendCONWait(ctx context.Context, m *message.Message) (*message.Message, error) {
	select {
	case s.nstart <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	done := make(chan error, 1)
	var ack *message.Message
	mid, err := s.startCON(m, func(a *message.Message, err error) {
		ack = a
		done <- err
	})
	if err != nil {
		<-s.nstart
		return nil, err
	}
	defer func() { <-s.nstart }()
	select {
	case err := <-done:
		return ack, err
	case <-ctx.Done():
		s.cancelCON(mid)
		return nil, ctx.Err()
	}
}

// close fails every pending CON and forgets the session's state.
func (s *session) close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	pend := s.pending
	s.pending = nil
	var freed int64
	for _, st := range s.block1 {
		freed += int64(len(st.buf))
	}
	s.block1Gone(len(s.block1))
	s.block1 = nil
	var cfreed int64
	for _, st := range s.block2 {
		cfreed += int64(len(st.body))
	}
	for _, it := range s.dq[s.dqHead:] {
		cfreed += int64(len(it.e.reply))
	}
	s.dq, s.dqHead, s.dedup = nil, 0, nil
	s.block2 = nil
	obs := s.observers
	s.observers = nil
	conn := s.conn
	s.mu.Unlock()
	if conn != nil {
		_ = conn.Close()
	}
	s.ep.stats.reasmBytes.Add(-freed)
	s.ep.stats.cacheBytes.Add(-cfreed)
	for _, o := range pend {
		o.timer.Stop()
		o.onDone(nil, ErrClosed)
	}
	if s.ep.obsClean != nil {
		for _, o := range obs {
			s.ep.obsClean(s, o)
		}
	}
}

func newToken() []byte {
	t := make([]byte, 8)
	_, _ = crand.Read(t)
	return t
}
