// Package oscorelayer plugs OSCORE (RFC 8613) and EDHOC (RFC 9528) into the coap endpoint: a
// server-side coap.Layer that verifies OSCORE requests and seals their responses, the EDHOC
// resource that keys it, and client-side coap.ClientLayers for pre-shared and EDHOC-derived
// contexts. It knows nothing of EST; the EST-oscore front door (draft-ietf-ace-coap-est-oscore)
// is estcoap registered with OSCORE marks on a table that has this layer.
//
// Implemented:
//   - RFC 9528 Appendix A.2, EDHOC over CoAP: POST to /.well-known/edhoc (rt core.edhoc), the
//     client prefixes message_1 with CBOR true (0xf5) and message_3 with C_R, requests carry
//     Content-Format 65 (application/cid-edhoc+cbor-seq), message_2 and error messages 64
//     (application/edhoc+cbor-seq); 2.04 answers, EDHOC error messages in 4.00 / 5.00 / 5.03.
//     The Responder keeps one state per C_R in a table with a cap and an expiry, so a peer that
//     abandons a handshake costs a bounded amount of memory for a bounded time.
//   - RFC 9528 Appendix A.1: the OSCORE context (Master Secret = EDHOC_Exporter(0, h”, key
//     length), Master Salt = EDHOC_Exporter(1, h”, 8), the Responder's Recipient ID is C_R).
//   - RFC 9668, the EDHOC + OSCORE combined request: the EDHOC option (21) and a payload of
//     message_3 ‖ OSCORE ciphertext, C_R carried as the OSCORE kid (§3.2 client, §3.3 server).
//   - An edhoc-unique channel-binding value (the seed of draft-ietf-ace-coap-est-oscore):
//     EDHOC_Exporter(ChannelBindingLabel, h”, 32) with a label from the private-use range,
//     reported in coap.ObjectSecurity.ChannelBinding.
//   - Inner block-wise (RFC 8613 §4.1.3.4.1): the coap endpoint protects every block message
//     separately; Outer block-wise of OSCORE messages is not implemented.
//   - RFC 9175 Echo after a restart: pre-shared contexts loaded with
//     oscore.Params.ReplayWindowUnsynchronized answer the first request with the protected
//     4.01 + Echo; Client (through oscore.Context.Exchange) repeats the request with it.
package oscorelayer

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"coapca/coap"
	"coapca/edhoc"
	"coapca/oscore"
)

// Constants of EDHOC over CoAP.
const (
	// WellKnownEDHOC is the EDHOC resource (RFC 9528 §10.10).
	WellKnownEDHOC = "/.well-known/edhoc"
	// CFEDHOC is application/edhoc+cbor-seq (RFC 9528 §10.9): message_2, message_4, errors.
	CFEDHOC = 64
	// CFCIDEDHOC is application/cid-edhoc+cbor-seq (RFC 9528 §10.9): requests prefixed with a
	// connection identifier or with CBOR true.
	CFCIDEDHOC = 65
	// ChannelBindingLabel is the EDHOC_Exporter label of the edhoc-unique channel binding:
	// 32768 is the first label of the private-use range (RFC 9528 §10.1); the seed of
	// draft-ietf-ace-coap-est-oscore names the value "EDHOC Unique" without a registered label.
	ChannelBindingLabel = 32768
	// ChannelBindingLength is the length of the edhoc-unique value.
	ChannelBindingLength = 32
)

// Identity is what the server layer reports about the owner of a security context.
type Identity struct {
	// Name names a pre-shared context's owner ("" for EDHOC peers).
	Name string
	// Certificates is the verified chain of an EDHOC peer (leaf first).
	Certificates []*x509.Certificate
	// ChannelBinding is the edhoc-unique value of an EDHOC-derived context.
	ChannelBinding []byte
	// Token is the reference of the ACE access token (RFC 9203) whose OSCORE input material
	// keyed the context ("" otherwise).
	Token string
	// Expires is the access token's exp: from then on the context is deleted and its requests
	// are answered like those of an unknown context (unprotected 4.01), so that the client
	// gets a new token. Zero = no expiry.
	Expires time.Time
}

// ServerConfig configures the server layer. The EDHOC fields are needed only when the EDHOC
// resource is served.
type ServerConfig struct {
	// Credential and PrivateKey are the server's EDHOC authentication credential and key.
	Credential *edhoc.Credential
	PrivateKey crypto.PrivateKey
	// Suites the Responder supports, by preference; nil = 2 and 3 (mandatory for EST-oscore),
	// then the other implemented ones.
	Suites []edhoc.Suite
	// Methods accepted; nil = all four.
	Methods []edhoc.Method
	// VerifyPeer decides about an Initiator's X.509 chain (raw DER, leaf first, as carried in
	// x5chain, or as found for a reference) and returns the chain it accepted. Required for
	// EDHOC.
	VerifyPeer func(rawCerts [][]byte) ([]*x509.Certificate, error)
	// LookupCredential finds the X.509 chain (raw DER, leaf first) that an Initiator's
	// ID_CRED_I designates by reference, x5t or kid (RFC 9528 §3.5.3, RFC 9360 §2), for
	// instance in trust stores or a CA's records; it returns nil (or an error) when it knows
	// none. It is asked after the layer's own index of chains that completed EDHOC by value
	// (MaxKnownCredentials). Whatever is found is decided by VerifyPeer, like a chain carried
	// in x5chain. nil = the index only.
	LookupCredential func(id *edhoc.IDCred) ([][]byte, error)
	// MaxKnownCredentials bounds that index (kid = the certificate's Subject Key Identifier);
	// default 10000, negative = no index.
	MaxKnownCredentials int
	// SessionTimeout frees a handshake state that waited this long for message_3; default 60 s.
	SessionTimeout time.Duration
	// MaxSessions caps concurrent handshake states; default 1024. When it is reached, a new
	// message_1 evicts the oldest handshake of a peer whose address is unproven
	// (coap.Peer.AddressVerified), else gets 5.03 + Max-Age.
	MaxSessions int
	// MaxSessionsPerSource caps the handshake states of one IP address; a new message_1 from
	// an address at the cap evicts that address's oldest handshake. Default 16.
	MaxSessionsPerSource int
	// ContextIdle drops an EDHOC-derived OSCORE context unused this long; default 10 min.
	// Pre-shared contexts are never dropped.
	ContextIdle time.Duration
	// MaxContexts caps EDHOC-derived contexts (the least recently used is dropped); default 10000.
	MaxContexts int
	Logger      *slog.Logger
	Now         func() time.Time // tests
}

// Server is the server side: a coap.Layer (install with Mux.SetLayer) and the EDHOC resource.
// It is safe for concurrent use.
type Server struct {
	cfg   ServerConfig
	log   *slog.Logger
	ring  *oscore.Keyring
	known *knownCreds

	mu        sync.Mutex
	ctxs      map[*oscore.Context]*ctxEntry
	derived   int
	sessions  map[string]*hsState   // by C_R
	byM1      map[[32]byte]*hsState // by SHA-256 of message_1: replays are answered from here
	perSource map[netip.Addr]int    // handshake states by the Initiator's IP address
	lastSweep time.Time

	message2, resent, evicted atomic.Uint64
}

// Counters are the EDHOC responder's work counters.
type Counters struct {
	// Message2 counts message_2 computations (each an ECDH and a signature or MAC).
	Message2 uint64
	// Message2Resent counts replays of a message_1 answered with the message_2 already made.
	Message2Resent uint64
	// Evicted counts handshake states dropped to make room (per-source or overall cap).
	Evicted uint64
}

type ctxEntry struct {
	id       Identity
	derived  bool
	lastUsed time.Time
}

func (e *ctxEntry) expired(now time.Time) bool {
	return !e.id.Expires.IsZero() && !now.Before(e.id.Expires)
}

type hsState struct {
	r        *edhoc.Responder
	cr       string
	m1       [32]byte
	m2       []byte // nil while it is being made
	src      netip.Addr
	verified bool // the Initiator's address was proven when message_1 arrived
	created  time.Time
	expires  time.Time
}

var _ coap.Layer = (*Server)(nil)

// NewServer returns a server layer with no contexts.
func NewServer(cfg ServerConfig) *Server {
	if cfg.SessionTimeout <= 0 {
		cfg.SessionTimeout = 60 * time.Second
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = 1024
	}
	if cfg.MaxSessionsPerSource <= 0 {
		cfg.MaxSessionsPerSource = 16
	}
	if cfg.ContextIdle <= 0 {
		cfg.ContextIdle = 10 * time.Minute
	}
	if cfg.MaxContexts <= 0 {
		cfg.MaxContexts = 10000
	}
	if cfg.MaxKnownCredentials == 0 {
		cfg.MaxKnownCredentials = 10000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Suites == nil {
		cfg.Suites = []edhoc.Suite{edhoc.Suite2, edhoc.Suite3}
		for _, s := range edhoc.SupportedSuites() {
			if s != edhoc.Suite2 && s != edhoc.Suite3 {
				cfg.Suites = append(cfg.Suites, s)
			}
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, log: log, ring: oscore.NewKeyring(), known: newKnownCreds(cfg.MaxKnownCredentials),
		ctxs: map[*oscore.Context]*ctxEntry{}, sessions: map[string]*hsState{},
		byM1: map[[32]byte]*hsState{}, perSource: map[netip.Addr]int{}}
}

// AddContext adds a long-lived (pre-shared) context owned by id.
func (s *Server) AddContext(c *oscore.Context, id Identity) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ring.Add(c)
	s.ctxs[c] = &ctxEntry{id: id, lastUsed: s.cfg.Now()}
}

// AddTokenContext adds a context derived from an ACE access token (RFC 9203 §4.3). Like an
// EDHOC-derived one it is dropped when idle (ContextIdle) or over MaxContexts; the resource
// server drops it itself with RemoveContext when its token is replaced or expires.
func (s *Server) AddTokenContext(c *oscore.Context, id Identity) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addDerivedLocked(c, id, s.cfg.Now())
}

// RemoveContext drops a context (a token-derived one whose token was replaced).
func (s *Server) RemoveContext(c *oscore.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropLocked(c)
}

// FreeRecipientID picks a Recipient ID unused by handshakes and contexts and different from
// avoid (RFC 9203 §4.2: ace_server_recipientid MUST differ from ace_client_recipientid, and
// identify the context among the server's contexts).
func (s *Server) FreeRecipientID(avoid []byte) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.freeConnIDLocked(avoid)
}

// Stats reports the handshake states held and the OSCORE contexts known (pre-shared and derived).
func (s *Server) Stats() (sessions, contexts int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions), len(s.ctxs)
}

// Counters returns the responder's work counters.
func (s *Server) Counters() Counters {
	return Counters{Message2: s.message2.Load(), Message2Resent: s.resent.Load(), Evicted: s.evicted.Load()}
}

// Sweep frees expired handshake states and idle EDHOC-derived contexts. The layer sweeps by
// itself at most once a second as requests arrive; tests call it directly.
func (s *Server) Sweep() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweepLocked(s.cfg.Now())
}

func (s *Server) sweepLocked(now time.Time) {
	s.lastSweep = now
	for _, h := range s.sessions {
		if now.After(h.expires) {
			s.forgetLocked(h)
			h.r.Close() // wipes the secrets at once
		}
	}
	for c, e := range s.ctxs {
		if e.derived && now.Sub(e.lastUsed) > s.cfg.ContextIdle || e.expired(now) {
			s.dropLocked(c)
		}
	}
}

// forgetLocked takes a handshake state out of every table (its Responder is not closed).
func (s *Server) forgetLocked(h *hsState) {
	if s.sessions[h.cr] == h {
		delete(s.sessions, h.cr)
	}
	if s.byM1[h.m1] == h {
		delete(s.byM1, h.m1)
	}
	if n := s.perSource[h.src] - 1; n > 0 {
		s.perSource[h.src] = n
	} else {
		delete(s.perSource, h.src)
	}
}

// evictLocked drops the oldest handshake state for which pick is true; false when none.
// Bounded by MaxSessions.
func (s *Server) evictLocked(pick func(*hsState) bool) bool {
	var oldest *hsState
	for _, h := range s.sessions {
		if h.m2 != nil && pick(h) && (oldest == nil || h.created.Before(oldest.created)) {
			oldest = h
		}
	}
	if oldest == nil {
		return false
	}
	s.forgetLocked(oldest)
	oldest.r.Close()
	s.evicted.Add(1)
	return true
}

func (s *Server) maybeSweepLocked(now time.Time) {
	if now.Sub(s.lastSweep) >= time.Second {
		s.sweepLocked(now)
	}
}

func (s *Server) dropLocked(c *oscore.Context) {
	if e, ok := s.ctxs[c]; ok {
		if e.derived {
			s.derived--
		}
		delete(s.ctxs, c)
		s.ring.Remove(c)
	}
}

// addDerivedLocked adds an EDHOC-derived context, dropping the least recently used one over the cap.
func (s *Server) addDerivedLocked(c *oscore.Context, id Identity, now time.Time) {
	if s.derived >= s.cfg.MaxContexts {
		var oldest *oscore.Context
		var t time.Time
		for k, e := range s.ctxs {
			if e.derived && (oldest == nil || e.lastUsed.Before(t)) {
				oldest, t = k, e.lastUsed
			}
		}
		if oldest != nil {
			s.dropLocked(oldest)
		}
	}
	s.ring.Add(c)
	s.ctxs[c] = &ctxEntry{id: id, derived: true, lastUsed: now}
	s.derived++
}

// HoldsContext reports whether req is an OSCORE request this layer may verify: one whose kid
// (and ID Context) names a context it holds. It changes nothing (no replay window is touched); a proxy asks it
// to decide whether a request is its own or is forwarded without security processing
// (RFC 8613 §10).
func (s *Server) HoldsContext(req *message.Message) bool {
	ov, err := oscore.ParseMessage(req)
	if err != nil {
		return false
	}
	return len(s.ring.Lookup(ov)) > 0
}

// Unprotect implements coap.Layer: it verifies an OSCORE request (RFC 8613 §8.2), first
// completing EDHOC when it is a combined request (RFC 9668 §3.3.1).
func (s *Server) Unprotect(req *message.Message, peer coap.Peer) coap.LayerResult {
	if !oscore.IsProtected(req) {
		if hasOption(req, oscore.OptionEDHOC) {
			return coap.LayerResult{Reply: &message.Message{Code: codes.BadRequest,
				Payload: []byte("EDHOC option without OSCORE option (RFC 9668 §3.1)")}}
		}
		return coap.LayerResult{}
	}
	if hasOption(req, oscore.OptionEDHOC) {
		inner, reply := s.combined(req)
		if reply != nil {
			return coap.LayerResult{Reply: reply}
		}
		req = inner
	}
	in, st, err := s.ring.UnprotectRequest(req)
	if err != nil {
		resp, rerr := oscore.ErrorResponse(req, err)
		if rerr != nil || resp == nil {
			resp = &message.Message{Code: codes.BadRequest}
		}
		s.log.Debug("oscore: request refused", "peer", peer.Addr, "err", err)
		return coap.LayerResult{Reply: resp}
	}
	c := st.Context()
	now := s.cfg.Now()
	s.mu.Lock()
	e := s.ctxs[c]
	if e != nil && e.expired(now) {
		// The access token that keyed this context has expired: the context goes with it, and
		// the request is answered as for an unknown context so the client fetches a new token.
		s.dropLocked(c)
		e = nil
	}
	if e != nil {
		e.lastUsed = now
	}
	s.maybeSweepLocked(now)
	s.mu.Unlock()
	if e == nil {
		// Dropped between verification and now: answer like an unknown context.
		resp, _ := oscore.ErrorResponse(req, oscore.ErrContextNotFound)
		return coap.LayerResult{Reply: resp}
	}
	out := coap.Peer{Addr: peer.Addr, Secure: true, Certificates: e.id.Certificates,
		OSCORE: &coap.ObjectSecurity{KID: st.KID(), IDContext: c.IDContext(), Identity: e.id.Name,
			ChannelBinding: e.id.ChannelBinding, Token: e.id.Token}}
	return coap.LayerResult{Request: in, Peer: out, Protect: func(r *message.Message) (*message.Message, error) {
		return c.ProtectResponse(st, r)
	}}
}

// combined handles an EDHOC + OSCORE request (RFC 9668 §3.3.1): it takes message_3 from the
// front of the payload, completes the handshake of the session whose C_R is the OSCORE kid,
// adds the derived context and returns the request as a plain OSCORE request (option 21 and
// message_3 removed). Failures are answered with an EDHOC error message (§3.3.1 step 2).
func (s *Server) combined(req *message.Message) (*message.Message, *message.Message) {
	ov, err := oscore.ParseMessage(req)
	if err != nil || !ov.HasKID {
		resp, _ := oscore.ErrorResponse(req, oscore.ErrDecode)
		return nil, resp
	}
	m3, rest, err := splitBstr(req.Payload)
	if err != nil || len(rest) == 0 {
		return nil, edhocError(codes.BadRequest, "combined request: payload is not message_3 followed by the OSCORE ciphertext")
	}
	if _, reply := s.finish(ov.KID, m3); reply != nil {
		return nil, reply
	}
	out := *req
	out.Options = make(message.Options, 0, len(req.Options))
	for _, o := range req.Options {
		if o.ID != oscore.OptionEDHOC {
			out.Options = append(out.Options, o)
		}
	}
	out.Payload = rest
	return &out, nil
}

// EDHOCResource returns the EDHOC resource (RFC 9528 Appendix A.2) to register in the table.
func (s *Server) EDHOCResource() coap.Resource {
	return coap.Resource{Path: WellKnownEDHOC, RT: []string{"core.edhoc"}, CT: []int{CFEDHOC, CFCIDEDHOC},
		Handler: coap.HandlerFunc(s.serveEDHOC)}
}

func (s *Server) serveEDHOC(_ context.Context, r *coap.Request) *coap.Response {
	if r.Method != codes.POST {
		return &coap.Response{Code: codes.MethodNotAllowed}
	}
	if r.ContentFormat.IsSet() && r.ContentFormat != coap.CF(CFCIDEDHOC) && r.ContentFormat != coap.CF(CFEDHOC) {
		return toResponse(edhocError(codes.UnsupportedMediaType, "EDHOC requests are application/cid-edhoc+cbor-seq (65)"))
	}
	if len(r.Payload) == 0 {
		return toResponse(edhocError(codes.BadRequest, "empty EDHOC request"))
	}
	if r.Payload[0] == 0xf5 { // CBOR true: message_1 (Appendix A.2)
		return s.message1(r.Payload[1:], r.Peer)
	}
	cr, m3, err := edhoc.SplitConnID(r.Payload)
	if err != nil {
		return toResponse(edhocError(codes.BadRequest, "request is neither true ‖ message_1 nor C_R ‖ message_3"))
	}
	if _, reply := s.finish(cr, m3); reply != nil {
		return toResponse(reply)
	}
	// No message_4: the first OSCORE response confirms the key (RFC 9528 §5.5).
	return &coap.Response{Code: codes.Changed}
}

// message1 runs ProcessMessage1 and Message2 for a new session.
//
// Handshake states are a resource anyone can ask for, at the price of one message_1, and
// each costs the Responder an ECDH and a signature (RFC 9528 §9, denial of service): a
// message_1 seen before (a replay, or a retransmission by a client whose ACK was lost) is
// answered with the message_2 already made for it, without new work; one IP address holds
// at most MaxSessionsPerSource states (its oldest is evicted for a new one); and when the
// table is full, a state of a peer with an unproven address is evicted first. The coap
// endpoint has already made the peer prove its address (RFC 9175 Echo) unless configured to
// trust source addresses, so a spoofed message_1 costs nothing here.
func (s *Server) message1(m1 []byte, peer coap.Peer) *coap.Response {
	if s.cfg.Credential == nil || s.cfg.VerifyPeer == nil {
		return toResponse(edhocError(codes.InternalServerError, "EDHOC is not configured"))
	}
	now := s.cfg.Now()
	key := sha256.Sum256(m1)
	src := addrOf(peer.Addr)
	busy := func() *coap.Response {
		resp := toResponse(edhocError(codes.ServiceUnavailable, "too many EDHOC sessions in progress"))
		resp.MaxAge = coap.MaxAge(5)
		return resp
	}
	s.mu.Lock()
	s.maybeSweepLocked(now)
	if h := s.byM1[key]; h != nil && !now.After(h.expires) {
		m2 := h.m2
		s.mu.Unlock()
		if m2 == nil {
			return busy() // the first copy is still being answered
		}
		s.resent.Add(1)
		return &coap.Response{Code: codes.Changed, ContentFormat: coap.CF(CFEDHOC), Payload: m2}
	}
	if s.perSource[src] >= s.cfg.MaxSessionsPerSource {
		s.evictLocked(func(h *hsState) bool { return h.src == src })
	}
	if len(s.sessions) >= s.cfg.MaxSessions {
		s.sweepLocked(now)
	}
	if len(s.sessions) >= s.cfg.MaxSessions && !s.evictLocked(func(h *hsState) bool { return !h.verified }) {
		s.mu.Unlock()
		return busy()
	}
	if s.perSource[src] >= s.cfg.MaxSessionsPerSource {
		s.mu.Unlock()
		return busy() // every state of this source is still being answered
	}
	s.mu.Unlock()
	r, err := edhoc.NewResponder(edhoc.Config{
		Methods: s.cfg.Methods, Suites: s.cfg.Suites, Credential: s.cfg.Credential,
		PrivateKey: s.cfg.PrivateKey, Resolve: s.resolve, Logger: s.log,
	})
	if err != nil {
		// The detail goes to the log; the peer learns only the kind (docs/security.md).
		s.log.Error("edhoc: cannot start a responder", "err", err)
		return toResponse(edhocError(codes.InternalServerError, "internal error"))
	}
	msg1, err := r.ProcessMessage1(m1)
	if err != nil {
		r.Close()
		s.log.Debug("edhoc: message_1 refused", "err", err)
		return toResponse(replyFor(err))
	}
	s.mu.Lock()
	if s.byM1[key] != nil || len(s.sessions) >= s.cfg.MaxSessions || s.perSource[src] >= s.cfg.MaxSessionsPerSource {
		// Another copy of this message_1, or other handshakes, took the room meanwhile.
		s.mu.Unlock()
		r.Close()
		return busy()
	}
	cr, ok := s.freeConnIDLocked(msg1.CI)
	if !ok {
		s.mu.Unlock()
		r.Close()
		return toResponse(edhocError(codes.ServiceUnavailable, "no free connection identifier"))
	}
	// Reserve C_R (and the message_1) while message_2 is built.
	h := &hsState{r: r, cr: string(cr), m1: key, src: src, verified: peer.AddressVerified,
		created: now, expires: now.Add(s.cfg.SessionTimeout)}
	s.sessions[h.cr] = h
	s.byM1[key] = h
	s.perSource[src]++
	s.mu.Unlock()
	fail := func(resp *message.Message) *coap.Response {
		s.mu.Lock()
		s.forgetLocked(h)
		s.mu.Unlock()
		r.Close()
		return toResponse(resp)
	}
	if err := r.SetConnID(cr); err != nil {
		s.log.Error("edhoc: cannot set the connection identifier", "err", err)
		return fail(edhocError(codes.InternalServerError, "internal error"))
	}
	s.message2.Add(1)
	m2, err := r.Message2(nil)
	if err != nil {
		s.log.Debug("edhoc: message_2 failed", "err", err)
		return fail(replyFor(err))
	}
	s.mu.Lock()
	h.m2 = m2
	s.mu.Unlock()
	return &coap.Response{Code: codes.Changed, ContentFormat: coap.CF(CFEDHOC), Payload: m2}
}

// addrOf returns the IP address of a peer address (zero when it has none).
func addrOf(a net.Addr) netip.Addr {
	if u, ok := a.(*net.UDPAddr); ok {
		return u.AddrPort().Addr().Unmap()
	}
	if a == nil {
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// freeConnIDLocked picks a C_R unused by handshakes and contexts and different from the
// Initiator's C_I (RFC 9528 §3.3: the two MUST differ, they become the two OSCORE Sender IDs):
// one byte when possible (the compact encoding of §3.3.2 saves bytes in every OSCORE request),
// longer when crowded.
func (s *Server) freeConnIDLocked(ci []byte) ([]byte, bool) {
	for _, n := range []int{1, 1, 1, 1, 2, 2, 2, 4, 4, 4} {
		id := make([]byte, n)
		if _, err := rand.Read(id); err != nil {
			return nil, false
		}
		if bytes.Equal(id, ci) {
			continue
		}
		if _, busy := s.sessions[string(id)]; busy {
			continue
		}
		if len(s.ring.Lookup(oscore.OptionValue{KID: id, HasKID: true})) > 0 {
			continue
		}
		return id, true
	}
	return nil, false
}

// resolve authenticates the Initiator's X.509 credential: a chain transported in x5chain, or
// the chain an x5t or kid designates (RFC 9528 §3.5.3), found in the layer's index or by
// LookupCredential; either way VerifyPeer decides (the same rules as for DTLS clients).
func (s *Server) resolve(id *edhoc.IDCred, _ []edhoc.EAD) (*edhoc.Credential, error) {
	raw := id.X5Chain
	if len(raw) == 0 {
		if id.X5T == nil && id.Kid == nil {
			return nil, fmt.Errorf("%w: only X.509 credentials (x5chain, x5t, kid) are accepted", edhoc.ErrUnknownCredential)
		}
		raw = s.known.lookup(id)
		if raw == nil && s.cfg.LookupCredential != nil {
			found, err := s.cfg.LookupCredential(id)
			if err != nil {
				return nil, fmt.Errorf("%w: %v", edhoc.ErrUnknownCredential, err)
			}
			raw = found
		}
		if len(raw) == 0 {
			return nil, fmt.Errorf("%w: no certificate known for this reference", edhoc.ErrUnknownCredential)
		}
		// RFC 9360 §2: x5t is the hash of the end-entity certificate, which the credential is.
		if id.X5T != nil && !id.MatchesCert(raw[0]) {
			return nil, fmt.Errorf("%w: the certificate found does not match the x5t", edhoc.ErrUnknownCredential)
		}
		// A kid designates the certificate with that Subject Key Identifier, whatever a lookup
		// returned.
		if id.X5T == nil {
			leaf, err := x509.ParseCertificate(raw[0])
			if err != nil || !bytes.Equal(leaf.SubjectKeyId, id.Kid) {
				return nil, fmt.Errorf("%w: the certificate found does not carry the kid", edhoc.ErrUnknownCredential)
			}
		}
	}
	cred, err := edhoc.CredentialFromIDCred(&edhoc.IDCred{X5Chain: raw})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", edhoc.ErrUnknownCredential, err)
	}
	chain, err := s.cfg.VerifyPeer(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", edhoc.ErrUnknownCredential, err)
	}
	cred.ID, cred.Certificates = *id, chain
	return cred, nil
}

// finish processes message_3 for the session C_R and installs the derived OSCORE context
// (Appendix A.1). The session leaves the table whatever the outcome.
func (s *Server) finish(cr, m3 []byte) (*oscore.Context, *message.Message) {
	now := s.cfg.Now()
	s.mu.Lock()
	h := s.sessions[string(cr)]
	if h != nil && h.m2 == nil {
		h = nil // message_2 is still being made: this cannot be its message_3
	}
	if h != nil {
		s.forgetLocked(h)
	}
	s.mu.Unlock()
	if h == nil || now.After(h.expires) {
		if h != nil {
			h.r.Close()
		}
		return nil, edhocError(codes.BadRequest, "no EDHOC session for this C_R")
	}
	defer h.r.Close()
	if _, err := h.r.ProcessMessage3(m3); err != nil {
		s.log.Debug("edhoc: message_3 refused", "err", err)
		return nil, replyFor(err)
	}
	peer := h.r.PeerCredential()
	c, id, err := deriveContext(h.r, peer)
	if err != nil {
		s.log.Error("edhoc: cannot derive the OSCORE context", "err", err)
		return nil, edhocError(codes.InternalServerError, "cannot derive the OSCORE context")
	}
	// The Initiator proved its key for this chain: it may reference it next time.
	s.known.add(peer.ID.X5Chain)
	s.mu.Lock()
	s.addDerivedLocked(c, id, now)
	s.mu.Unlock()
	return c, nil
}

// exporter is what Initiator and Responder share for key export.
type exporter interface {
	OSCORE() (*edhoc.OSCOREContext, error)
	Exporter(label int, context []byte, length int) ([]byte, error)
}

// deriveContext builds the OSCORE context of RFC 9528 Appendix A.1 and the identity of the
// peer (chain and edhoc-unique).
func deriveContext(x exporter, peer *edhoc.Credential) (*oscore.Context, Identity, error) {
	oc, err := x.OSCORE()
	if err != nil {
		return nil, Identity{}, err
	}
	hkdf := oscore.HKDFSHA256
	if oc.Hash != edhoc.AlgSHA256 {
		return nil, Identity{}, fmt.Errorf("edhoc: application hash %d has no OSCORE HKDF here", oc.Hash)
	}
	c, err := oscore.NewContext(oscore.Params{MasterSecret: oc.MasterSecret, MasterSalt: oc.MasterSalt,
		SenderID: oc.SenderID, RecipientID: oc.RecipientID, AEAD: oc.AEAD, HKDF: hkdf})
	if err != nil {
		return nil, Identity{}, err
	}
	cb, err := x.Exporter(ChannelBindingLabel, nil, ChannelBindingLength)
	if err != nil {
		return nil, Identity{}, err
	}
	id := Identity{ChannelBinding: cb}
	if peer != nil {
		id.Certificates = peer.Certificates
	}
	return c, id, nil
}

// replyFor turns an EDHOC processing error into the CoAP answer: the EDHOC error message of
// RFC 9528 §6 (or ERR_CODE 1) in a 4.00 (Appendix A.2).
func replyFor(err error) *message.Message {
	if b := edhoc.ReplyFor(err); b != nil {
		return &message.Message{Code: codes.BadRequest, Options: cfOpts(CFEDHOC), Payload: b}
	}
	return edhocError(codes.BadRequest, "EDHOC processing failed")
}

// edhocError is an EDHOC error message with ERR_CODE 1 and a diagnostic (RFC 9528 §6.2).
func edhocError(code codes.Code, diag string) *message.Message {
	b := (&edhoc.ErrorMessage{Code: edhoc.ErrCodeUnspecified, Diagnostic: diag}).Marshal()
	return &message.Message{Code: code, Options: cfOpts(CFEDHOC), Payload: b}
}

func cfOpts(cf int) message.Options {
	return message.Options{{ID: message.ContentFormat, Value: []byte{byte(cf)}}}
}

func toResponse(m *message.Message) *coap.Response {
	resp := &coap.Response{Code: m.Code, Payload: m.Payload}
	for _, o := range m.Options {
		if o.ID == message.ContentFormat && len(o.Value) == 1 {
			resp.ContentFormat = coap.CF(uint16(o.Value[0]))
		}
	}
	return resp
}

func hasOption(m *message.Message, id message.OptionID) bool {
	for _, o := range m.Options {
		if o.ID == id {
			return true
		}
	}
	return false
}

var errBstr = errors.New("not a definite-length CBOR byte string")

// splitBstr splits a leading CBOR byte string (its whole encoding) from b (RFC 9668 §3.2.1:
// the combined payload starts with message_3, which is one bstr).
func splitBstr(b []byte) (item, rest []byte, err error) {
	if len(b) == 0 || b[0]>>5 != 2 {
		return nil, nil, errBstr
	}
	ai := b[0] & 0x1f
	var n, hdr int
	switch {
	case ai < 24:
		n, hdr = int(ai), 1
	case ai == 24 && len(b) >= 2:
		n, hdr = int(b[1]), 2
	case ai == 25 && len(b) >= 3:
		n, hdr = int(b[1])<<8|int(b[2]), 3
	case ai == 26 && len(b) >= 5:
		v := uint64(b[1])<<24 | uint64(b[2])<<16 | uint64(b[3])<<8 | uint64(b[4])
		if v > uint64(len(b)) {
			return nil, nil, errBstr
		}
		n, hdr = int(v), 5
	default:
		return nil, nil, errBstr
	}
	if len(b)-hdr < n {
		return nil, nil, errBstr
	}
	return b[:hdr+n], b[hdr+n:], nil
}
