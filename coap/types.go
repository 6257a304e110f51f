package coap

import (
	"context"
	"crypto/x509"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// Peer describes the remote endpoint of an exchange.
type Peer struct {
	Addr         net.Addr
	Secure       bool                // DTLS (or later OSCORE-protected)
	Certificates []*x509.Certificate // DTLS peer chain, leaf first, as verified in the handshake; nil on UDP
	// TLS supplies the DTLS channel bindings, derived on first use; nil on plain UDP.
	TLS TLSBinding
	// AddressVerified reports that the peer proved it receives what is sent to its address:
	// a DTLS session, an RFC 9175 Echo value echoed on plain UDP, an OSCORE-verified request,
	// or a listener configured with TrustUDPSources. Until then a plain-UDP peer is answered
	// only with small challenges (RFC 9175 §2.4).
	AddressVerified bool
	// OSCORE is set on a request that a Layer (Mux.SetLayer) verified: the object-security
	// context it came under. Certificates then holds the chain the layer authenticated the
	// context's owner with (EDHOC), if any. nil on DTLS and plain UDP.
	OSCORE *ObjectSecurity
}

// ObjectSecurity describes the security context (OSCORE, RFC 8613) that protected a request,
// as the Layer that verified it reports it.
type ObjectSecurity struct {
	KID       []byte // the peer's Sender ID (the request's kid)
	IDContext []byte // nil when the context has none
	// Identity is the name the layer knows the context's owner by (e.g. the name of a
	// pre-shared context); "" when the owner is identified by Peer.Certificates.
	Identity string
	// ChannelBinding is a value both ends derived from the key exchange that made the
	// context (EDHOC: an EDHOC_Exporter output); nil for pre-shared contexts.
	ChannelBinding []byte
	// Token is the reference of the ACE access token (RFC 9203) that keyed the context; ""
	// for EDHOC and pre-shared contexts.
	Token string
}

// Layer is an object-security layer (OSCORE, RFC 8613) between the message layer and a resource
// table: it sees every request before the table and seals every response to a request it
// verified. Install it with Mux.SetLayer.
type Layer interface {
	// Unprotect is called with every request (after deduplication and the outer option checks).
	Unprotect(req *message.Message, peer Peer) LayerResult
}

// LayerResult is a Layer's verdict on one request. Exactly one of these holds:
//   - Reply != nil: send Reply as the answer (an OSCORE error or an Echo challenge) and serve
//     nothing;
//   - Request != nil: serve the decrypted Request with Peer, and pass every response message
//     to it (piggybacked, separate, block-wise, error) through Protect;
//   - Forward != nil: the request is still protected and not for this endpoint (a proxy that
//     holds no context for it, RFC 8613 §10): Forward serves the message as received, outside
//     the resource table, and its response is sent as it is (not sealed);
//   - all nil: the request is not for the layer (no OSCORE option); serve it as it is.
type LayerResult struct {
	Request *message.Message
	Peer    Peer
	Protect func(resp *message.Message) (*message.Message, error)
	Reply   *message.Message
	Forward Handler
}

// ClientLayer protects a client's requests (ClientOptions.Layer), e.g. with OSCORE.
type ClientLayer interface {
	// RoundTrip protects req, sends it with send (once, or again after a challenge such as
	// RFC 9175 Echo) and returns the verified, decrypted response.
	RoundTrip(req *message.Message, send func(*message.Message) (*message.Message, error)) (*message.Message, error)
}

// TLSBinding supplies the channel bindings of a DTLS session (*dtlsconn.Conn implements it).
type TLSBinding interface {
	TLSUnique() []byte   // RFC 5929 tls-unique: the first Finished's verify_data
	TLSExporter() []byte // RFC 9266 tls-exporter, 32 bytes
}

// TLSUnique returns the session's tls-unique, or nil without DTLS.
func (p Peer) TLSUnique() []byte {
	if p.TLS == nil {
		return nil
	}
	return p.TLS.TLSUnique()
}

// TLSExporter returns the session's tls-exporter value, or nil without DTLS.
func (p Peer) TLSExporter() []byte {
	if p.TLS == nil {
		return nil
	}
	return p.TLS.TLSExporter()
}

// Request is a CoAP request as a handler sees it: the body is already reassembled.
type Request struct {
	Method        codes.Code      // codes.GET/POST/PUT/DELETE/FETCH...
	Path          string          // "/.well-known/est/sen" (Uri-Path joined, leading '/')
	Query         []string        // Uri-Query values, in order
	ContentFormat Format          // zero when absent
	Accept        Format          // zero when absent
	Observe       Observe         // ObserveNone (zero) when absent
	Payload       []byte          // whole body, Block1 already reassembled
	Options       message.Options // every option as received (read-only)
	Peer          Peer
}

// Response is a handler's answer; the endpoint splits Payload into Block2 blocks.
type Response struct {
	Code          codes.Code
	ContentFormat Format          // zero: no Content-Format option
	Payload       []byte          // whole body; the endpoint does Block2
	MaxAge        Age             // zero: no Max-Age option (use MaxAge(n) for 5.03 + Max-Age)
	ETag          []byte          // optional; the endpoint adds one for block-wise bodies if absent
	Options       message.Options // extra options (Location-Path, ...), optional
}

// NewResponse returns a Response with code and payload and no Content-Format or Max-Age:
// the same as &Response{Code: code, Payload: payload}.
func NewResponse(code codes.Code, payload []byte) *Response {
	return &Response{Code: code, Payload: payload}
}

// Handler serves a CoAP request. It runs on its own goroutine; returning nil
// means 5.00.
type Handler interface {
	ServeCoAP(ctx context.Context, r *Request) *Response
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, r *Request) *Response

// ServeCoAP calls f.
func (f HandlerFunc) ServeCoAP(ctx context.Context, r *Request) *Response { return f(ctx, r) }

// Resource is one entry of the resource table.
type Resource struct {
	Path       string // exact path; with Prefix true, also matches every path below it
	Prefix     bool
	RT, IF     []string // link-format attributes (RFC 6690)
	CT         []int
	Title      string
	OSCORE     bool // adds `osc` to the link (EST-oscore)
	Observable bool // adds `obs`; GET with Observe:0 registers
	Hidden     bool // not listed in /.well-known/core
	Handler    Handler
}

// Mux is the resource table that front doors register into. It is safe for
// concurrent use.
type Mux struct {
	mu    sync.RWMutex
	exact map[string]*Resource
	list  []*Resource // registration order, for /.well-known/core
	layer Layer
	hints func(path string) (Format, []byte)
}

// SetUnprotectedHints sets the body of the 4.01 answered to an unprotected request for an
// OSCORE-only resource: e.g. the ACE AS Request Creation Hints (RFC 9200 §5.3) that tell a
// client where to get an access token. nil (the default) answers a diagnostic text.
func (m *Mux) SetUnprotectedHints(f func(path string) (Format, []byte)) {
	m.mu.Lock()
	m.hints = f
	m.mu.Unlock()
}

func (m *Mux) getHints() func(path string) (Format, []byte) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.hints
}

// SetLayer installs an object-security layer for the requests this table serves (nil removes
// it). Resources marked OSCORE answer 4.01 to requests the layer did not verify.
func (m *Mux) SetLayer(l Layer) {
	m.mu.Lock()
	m.layer = l
	m.mu.Unlock()
}

func (m *Mux) getLayer() Layer {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.layer
}

// NewMux returns an empty resource table. /.well-known/core is served by the
// endpoint from the table unless a resource is registered at that path.
func NewMux() *Mux { return &Mux{exact: map[string]*Resource{}} }

// Handle registers r, replacing any resource with the same path.
func (m *Mux) Handle(r Resource) {
	r.Path = cleanPath(r.Path)
	m.mu.Lock()
	defer m.mu.Unlock()
	if old, ok := m.exact[r.Path]; ok {
		*old = r
		return
	}
	rr := r
	m.exact[r.Path] = &rr
	m.list = append(m.list, &rr)
}

// Resources returns a copy of the table in registration order.
func (m *Mux) Resources() []Resource {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]Resource, len(m.list))
	for i, r := range m.list {
		out[i] = *r
	}
	return out
}

// lookup finds the resource for path: an exact match first, then the longest
// prefix resource.
func (m *Mux) lookup(path string) (Resource, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if r, ok := m.exact[path]; ok {
		return *r, true
	}
	var best *Resource
	for _, r := range m.list {
		if r.Prefix && (strings.HasPrefix(path, r.Path+"/") || r.Path == "/") {
			if best == nil || len(r.Path) > len(best.Path) {
				best = r
			}
		}
	}
	if best == nil {
		return Resource{}, false
	}
	return *best, true
}

func cleanPath(p string) string {
	p = strings.TrimRight(p, "/")
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	return p
}

// Config holds the transmission parameters and limits of an endpoint. Zero
// values mean the RFC 7252 §4.8 defaults or the sane limits documented per field.
type Config struct {
	ACKTimeout       time.Duration // ACK_TIMEOUT, default 2 s
	ACKRandomFactor  float64       // ACK_RANDOM_FACTOR, default 1.5
	MaxRetransmit    int           // MAX_RETRANSMIT, default 4
	NStart           int           // NSTART, default 1
	ExchangeLifetime time.Duration // EXCHANGE_LIFETIME, default 247 s (derived per §4.8.2)
	// SeparateAfter: a handler slower than this gets an empty ACK first and its
	// answer as a separate CON response (RFC 7252 §5.2.2). Default 1 s; negative = always
	// (the empty ACK goes out before the handler runs, e.g. in front of a slow HSM).
	SeparateAfter time.Duration
	// MaxBodySize caps a Block1 reassembly (4.13 + Size1). Default 1 MiB.
	MaxBodySize int
	// BlockTimeout is how long a block-wise transfer (either direction) waits for
	// its next block; refreshed on every block. Default 60 s.
	BlockTimeout        time.Duration
	MaxSessions         int // default 10000
	MaxExchangesPerPeer int // concurrent handler exchanges per peer, default 16
	// MaxCacheBytes caps the memory of response caches (deduplication and Block2
	// representations) and, separately, of Block1 reassembly buffers. Default 64 MiB.
	MaxCacheBytes int
	// ObserveConEvery makes every n-th notification confirmable (RFC 7641 §4.5);
	// default 5. A notification is also CON if the last CON was over 24 h ago.
	ObserveConEvery int
	// TrustUDPSources turns off address validation on plain UDP: every source address is
	// treated as proven. Only for networks where source addresses cannot be spoofed.
	// Default false: a request from a plain-UDP source that has not yet proven its address
	// is answered with 4.01 + Echo (RFC 9175 §2.3, §2.4 item 3) and creates no session,
	// except an OSCORE request when a Layer is installed (the layer authenticates it) and
	// there is room for its session; with no room it is challenged like any other, and once
	// proven it may take the slot of an idle proven peer.
	TrustUDPSources bool
	// EchoWindow is how long an Echo value handed out in a challenge is accepted. Default 30 s.
	EchoWindow time.Duration
	// MaxSessionsPerIP caps the plain-UDP sessions of one IP address (all its ports); a new
	// one evicts that address's least recently heard unverified or idle session. Default 256.
	MaxSessionsPerIP int
	// MaxObservers caps the observations held at once; a new one evicts the oldest. Default 4096.
	MaxObservers int
	// MaxObserversPerIP caps the observations of one IP address (all its ports and DTLS
	// sessions); a new one evicts that address's oldest. Default 16.
	MaxObserversPerIP int
	// MaxTransfersPerIP caps the Block1 reassemblies in progress from one IP address;
	// beyond it a first block gets 5.03 + Max-Age. Default 64.
	MaxTransfersPerIP int
	// MaxLayerWorkers caps the coap:// requests whose Layer work (OSCORE verification, EDHOC
	// message_3 in a combined request, a shared replay check in the database) runs at once
	// beside the read loop; with all busy, the read loop waits for one. Default 64.
	MaxLayerWorkers int
	Logger          *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.ACKTimeout <= 0 {
		c.ACKTimeout = 2 * time.Second
	}
	if c.ACKRandomFactor < 1 {
		c.ACKRandomFactor = 1.5
	}
	if c.MaxRetransmit <= 0 {
		c.MaxRetransmit = 4
	}
	if c.NStart <= 0 {
		c.NStart = 1
	}
	if c.ExchangeLifetime <= 0 {
		// RFC 7252 §4.8.2: MAX_TRANSMIT_SPAN + 2*MAX_LATENCY + PROCESSING_DELAY.
		span := time.Duration(float64(c.ACKTimeout) * float64(int(1)<<c.MaxRetransmit-1) * c.ACKRandomFactor)
		c.ExchangeLifetime = span + 2*100*time.Second + c.ACKTimeout
	}
	if c.SeparateAfter == 0 {
		c.SeparateAfter = time.Second
	}
	if c.MaxBodySize <= 0 {
		c.MaxBodySize = 1 << 20
	}
	if c.BlockTimeout <= 0 {
		c.BlockTimeout = 60 * time.Second
	}
	if c.MaxSessions <= 0 {
		c.MaxSessions = 10000
	}
	if c.MaxExchangesPerPeer <= 0 {
		c.MaxExchangesPerPeer = 16
	}
	if c.MaxLayerWorkers <= 0 {
		c.MaxLayerWorkers = 64
	}
	if c.MaxCacheBytes <= 0 {
		c.MaxCacheBytes = 64 << 20
	}
	if c.ObserveConEvery <= 0 {
		c.ObserveConEvery = 5
	}
	if c.EchoWindow <= 0 {
		c.EchoWindow = 30 * time.Second
	}
	if c.MaxSessionsPerIP <= 0 {
		c.MaxSessionsPerIP = 256
	}
	if c.MaxObservers <= 0 {
		c.MaxObservers = 4096
	}
	if c.MaxObserversPerIP <= 0 {
		c.MaxObserversPerIP = 16
	}
	if c.MaxTransfersPerIP <= 0 {
		c.MaxTransfersPerIP = 64
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// ServeMessage serves one whole request message that did not come over a CoAP transport (an
// OSCORE request carried over HTTP, RFC 8613 §11, once its Layer verified it): it finds the
// resource of the message's Uri-Path, calls its handler and returns the answer as one message
// (no block-wise: the carrier moves whole bodies). A resource marked OSCORE answers 4.01 unless
// peer.OSCORE is set; an unknown path 4.04; a request with Block1/Block2 options 4.02 (inner
// block-wise is not available without a CoAP transport).
func (m *Mux) ServeMessage(ctx context.Context, msg *message.Message, peer Peer) *message.Message {
	// A first block that is also the last (Block1 0 without More) or a Block2 size proposal
	// for block 0 asks for nothing the whole body does not give; any other block is refused.
	var opts message.Options
	for _, o := range msg.Options {
		if o.ID == message.Block1 || o.ID == message.Block2 {
			var v uint32
			for _, b := range o.Value {
				v = v<<8 | uint32(b)
			}
			if len(o.Value) > 3 || v>>4 != 0 || (o.ID == message.Block1 && v&0x8 != 0) {
				return &message.Message{Code: codes.BadOption, Payload: []byte("block-wise transfer is not available over this carrier")}
			}
			continue
		}
		opts = append(opts, o)
	}
	msg = &message.Message{Code: msg.Code, Options: opts, Payload: msg.Payload}
	path := pathOf(msg.Options)
	res, ok := m.lookup(path)
	if !ok {
		return &message.Message{Code: codes.NotFound}
	}
	if res.OSCORE && peer.OSCORE == nil {
		return &message.Message{Code: codes.Unauthorized, Payload: []byte("this resource requires OSCORE (RFC 8613)")}
	}
	req := &Request{Method: msg.Code, Path: path, Query: queriesOf(msg.Options),
		ContentFormat: optFormat(msg.Options, message.ContentFormat), Accept: optFormat(msg.Options, message.Accept),
		Payload: msg.Payload, Options: msg.Options, Peer: peer}
	resp := res.Handler.ServeCoAP(ctx, req)
	if resp == nil {
		return &message.Message{Code: codes.InternalServerError}
	}
	opts = make(message.Options, 0, len(resp.Options)+3)
	for _, o := range resp.Options {
		opts = opts.Add(o)
	}
	if cf, ok := resp.ContentFormat.Get(); ok {
		opts = addUint(opts, message.ContentFormat, uint32(cf))
	}
	if age, ok := resp.MaxAge.Get(); ok {
		opts = addUint(opts, message.MaxAge, uint32(age))
	}
	if len(resp.ETag) > 0 {
		opts = opts.Add(message.Option{ID: message.ETag, Value: resp.ETag})
	}
	return &message.Message{Code: resp.Code, Options: opts, Payload: resp.Payload}
}
