// Package dtlsconn is the DTLS 1.2 transport of coapca's CoAP endpoint
// (RFC 7252 §9 "coaps"), built on github.com/pion/dtls/v3 through its public API.
//
// It adds what the CoAP endpoint needs around pion:
//
//   - its own UDP demultiplexer (one socket, one virtual net.PacketConn per
//     remote address handed to dtls.ServerWithOptions) with a per-source
//     handshake rate limit, a cap on concurrent half-open handshakes (the oldest handshake
//     that has not yet returned a cookie is evicted first), a short handshake
//     timeout, a session cap and an idle timeout;
//   - parking (Conn.Park, park.go): a quiet established session gives up pion's
//     connection, goroutines and buffers and keeps only its exported state (keys, epochs,
//     sequence numbers, replay cutoff; RFC 6347 §4.1, §4.1.2.6), a few hundred bytes; the
//     next datagram or write resumes it (100,000 idle sessions: about 2.5 KB of live
//     heap each, 825 MB RSS for the whole server, measured by coapca bench sessions);
//   - a read path that reads into the caller's buffer: a record larger than it is dropped
//     (io.ErrShortBuffer), never fatal, so a large record never ends a session. (pion
//     itself reads datagrams into 8192 bytes: datagrams carrying several records are split at record
//     boundaries before pion sees them, but a single record larger than that is
//     dropped by pion — not fatal — so peers should keep records below ≈ 8 KB;
//     CoAP over DTLS uses far smaller ones);
//   - channel binding: RFC 5929 §3 tls-unique (the first Finished message's
//     verify_data, on a full handshake the client's, recomputed from the
//     epoch-0 handshake messages observed on the wire per RFC 5246 §7.4.9 and
//     RFC 6347 §4.2.6, and the master secret from pion's exported State) and
//     RFC 9266 tls-exporter, all in binding.go, which says what it reads from pion
//     and which pion release it was verified against;
//   - fixed policy: TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8 (RFC 7252 §9.1.3.3) always
//     offered, P-256, extended master secret (RFC 7627) required, optional
//     Connection ID (RFC 9146).
//
// HelloVerifyRequest cookies are pion's (stateful, RFC 6347 §4.2.1). A
// stateless cookie exchange in front of pion is not possible through pion's
// public API: a pion server only starts from a ClientHello with message_seq 0,
// while the ClientHello answering a cookie has message_seq 1, and message_seq
// is part of the DTLS 1.2 transcript (signed by CertificateVerify, checked by
// Finished), so it cannot be rewritten. The demultiplexer bounds that state
// instead (see ServerConfig.MaxHalfOpen).
package dtlsconn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/logging"
)

// ClientAuth is a listener's policy for client certificates.
type ClientAuth int

// Client certificate policies.
const (
	NoClientCert      ClientAuth = iota // no CertificateRequest
	RequestClientCert                   // asked for; verified with VerifyPeer when sent
	RequireClientCert                   // handshake fails without a certificate accepted by VerifyPeer
)

// ServerConfig configures a Listener. Zero values take the defaults noted.
type ServerConfig struct {
	Certificates []tls.Certificate // ECDSA P-256 keys
	ClientAuth   ClientAuth
	// VerifyPeer, when set, decides about the client's chain (leaf first, raw
	// DER); it returns the chain it accepted, which Conn.PeerCertificates reports.
	VerifyPeer func(rawCerts [][]byte) ([]*x509.Certificate, error)
	// ClientCAs is used when VerifyPeer is nil: the leaf must chain to it
	// (x509 verification for client authentication).
	ClientCAs *x509.CertPool
	// CipherSuites are offered in this order of preference;
	// TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8 is always included (last when absent).
	CipherSuites []dtls.CipherSuiteID
	// HandshakeTimeout bounds a handshake from its first ClientHello (default
	// 10 s); one whose client has not returned the cookie is dropped after 3 s.
	HandshakeTimeout time.Duration
	// IdleTimeout closes a session without any datagram in either direction (default 10 min).
	IdleTimeout time.Duration
	// ParkAfter is how long a session's reader waits for a record before it may park the
	// session (Conn.Park: pion's connection released, resumed by the next datagram), as
	// reported by Conn.ParkAfter (default 10 s; negative = never).
	ParkAfter time.Duration
	// HandshakesPerSourcePerSecond limits cookie-verified handshakes per source
	// IP (token bucket, burst = max(2, 2×rate); default 20; negative = unlimited).
	HandshakesPerSourcePerSecond float64
	// MaxHalfOpen caps handshakes in progress (default 512). When the cap is
	// reached, the oldest handshake that has not answered the cookie is evicted;
	// evicted handshakes still winding down count too, so at most 1.5×MaxHalfOpen
	// pion handshake states exist at any time (≈ 40 KB and 6 goroutines each).
	MaxHalfOpen int
	// MaxSessions caps established plus half-open sessions (default 10000).
	MaxSessions int
	// ConnectionID enables RFC 9146 connection IDs (8 bytes) for clients that offer them.
	ConnectionID bool
	// MTU for pion's handshake fragmentation (default pion's 1200).
	MTU    int
	Logger *slog.Logger
}

// ClientConfig configures Dial.
type ClientConfig struct {
	Certificates       []tls.Certificate
	RootCAs            *x509.CertPool
	ServerName         string
	InsecureSkipVerify bool
	CipherSuites       []dtls.CipherSuiteID // TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8 is always included
	HandshakeTimeout   time.Duration        // default 10 s
	ConnectionID       bool                 // offer an RFC 9146 connection ID
	MTU                int
	// VerifyPeer, when set, is called with the server's chain after the
	// standard verification (or instead of it with InsecureSkipVerify).
	VerifyPeer func(rawCerts [][]byte) ([]*x509.Certificate, error)
}

// Stats are a Listener's counters.
type Stats struct {
	HandshakesOK, HandshakesFailed uint64
	ActiveSessions, HalfOpen       int
	Parked                         int    // of ActiveSessions, those parked now (Conn.Park)
	DroppedRateLimit               uint64 // ClientHellos refused by the per-source rate limit
	DroppedCaps                    uint64 // refused by MaxSessions or MaxHalfOpen
	Evicted                        uint64 // half-open handshakes evicted for newer ones
	DroppedGarbage                 uint64 // datagrams from unknown sources that are not a ClientHello
	DroppedQueue                   uint64 // datagrams dropped because a session's queue was full
	IdleClosed                     uint64
	Parks, Resumes                 uint64 // sessions parked by Conn.Park and resumed by traffic
}

const (
	defaultHandshakeTimeout = 10 * time.Second
	defaultIdleTimeout      = 10 * time.Minute
	defaultParkAfter        = 10 * time.Second
	defaultRatePerSource    = 20
	defaultMaxHalfOpen      = 512
	defaultMaxSessions      = 10000
	cidLength               = 8
)

// ErrClosed is returned by Accept after Close.
var ErrClosed = errors.New("dtlsconn: listener closed")

// suiteList returns extra (in its order of preference) with
// TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8 appended when absent: it is mandatory to
// implement for certificate-based coaps (RFC 7252 §9.1.3.3).
func suiteList(extra []dtls.CipherSuiteID) []dtls.CipherSuiteID {
	out := append([]dtls.CipherSuiteID(nil), extra...)
	if !slices.Contains(out, dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8) {
		out = append(out, dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8)
	}
	return out
}

func quietLoggerFactory() logging.LoggerFactory {
	f := logging.NewDefaultLoggerFactory()
	f.DefaultLogLevel = logging.LogLevelDisabled
	f.ScopeLevels = nil
	return f
}

func discardLogger(l *slog.Logger) *slog.Logger {
	if l != nil {
		return l
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// Conn is an established DTLS session.
type Conn struct {
	dc        *dtls.Conn // client side; a listener's Conn asks its session (s) instead
	s         *session   // nil on the client side
	peerCerts []*x509.Certificate
	suite     dtls.CipherSuiteID
	log       *slog.Logger
	// finishedHash is Hash(handshake_messages) up to the client's Finished, taken from the
	// observed transcript; nil when the transcript was incomplete.
	finishedHash []byte

	// The channel bindings need pion's master secret, which only its gob-serialized State
	// carries: costly enough (≈ 6 % of a handshake) to be done on first use only.
	bindOnce    sync.Once
	tlsUnique   []byte
	tlsExporter []byte
	cid         bool

	readMu sync.Mutex
	// heard is set once a record from the peer was read: it has then completed its side of
	// the handshake, so our last flight never needs to be sent again (see Park).
	heard atomic.Bool

	closeOnce sync.Once
	closeErr  error
	onClose   func()
}

// ParkAfter is the listener's ServerConfig.ParkAfter: how long a reader should wait for a
// record before it parks the session; 0 = never (and on the client side).
func (c *Conn) ParkAfter() time.Duration {
	if c.s == nil || c.s.l.cfg.ParkAfter < 0 {
		return 0
	}
	return c.s.l.cfg.ParkAfter
}

// current returns pion's connection, resuming a parked session.
func (c *Conn) current() (*dtls.Conn, error) {
	if c.s == nil {
		return c.dc, nil
	}
	return c.s.active()
}

// Read reads the plaintext of one record. When b is shorter than the record, the record
// is dropped and io.ErrShortBuffer returned (the session stays up); a record of up to
// 2^14 bytes (RFC 6347 §4.1) is read whole into a b that large.
func (c *Conn) Read(b []byte) (int, error) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	dc, err := c.current()
	if err != nil {
		return 0, err
	}
	n, err := dc.Read(b)
	if err != nil {
		if isBufferTooSmall(err) {
			return 0, io.ErrShortBuffer
		}
		return 0, err
	}
	c.heard.Store(true)
	return n, nil
}

// isBufferTooSmall recognises pion's errBufferTooSmall (unexported: a temporary error with
// that text); pion drops the record and keeps the session.
func isBufferTooSmall(err error) bool {
	var te *dtls.TemporaryError
	return errors.As(err, &te) && strings.Contains(err.Error(), "buffer is too small")
}

// Write sends b as one record (resuming a parked session first).
func (c *Conn) Write(b []byte) (int, error) {
	dc, err := c.current()
	if err != nil {
		return 0, err
	}
	return dc.Write(b)
}

// Close sends close_notify (unless the session is parked) and releases the session.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		var dc *dtls.Conn
		if c.s == nil {
			dc = c.dc
		} else {
			c.s.mu.Lock()
			dc = c.s.dc
			c.s.mu.Unlock()
		}
		if dc != nil {
			c.closeErr = dc.Close()
		}
		if c.onClose != nil {
			c.onClose()
		}
	})
	return c.closeErr
}

// LocalAddr returns the local address.
func (c *Conn) LocalAddr() net.Addr {
	if c.s != nil {
		return c.s.l.pc.LocalAddr()
	}
	return c.dc.LocalAddr()
}

// RemoteAddr returns the peer's current address (it may change with a connection ID).
func (c *Conn) RemoteAddr() net.Addr {
	if c.s != nil {
		c.s.l.mu.Lock()
		defer c.s.l.mu.Unlock()
		return net.UDPAddrFromAddrPort(c.s.addr)
	}
	return c.dc.RemoteAddr()
}

// SetReadDeadline sets the deadline for Read. On a parked session it does nothing: the
// next Read resumes it without a deadline.
func (c *Conn) SetReadDeadline(t time.Time) error {
	if dc := c.live(); dc != nil {
		return dc.SetReadDeadline(t)
	}
	return nil
}

// SetWriteDeadline sets the deadline for Write (nothing on a parked session).
func (c *Conn) SetWriteDeadline(t time.Time) error {
	if dc := c.live(); dc != nil {
		return dc.SetWriteDeadline(t)
	}
	return nil
}

// SetDeadline sets both deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	if dc := c.live(); dc != nil {
		return dc.SetDeadline(t)
	}
	return nil
}

// live returns pion's connection without resuming a parked session (nil then).
func (c *Conn) live() *dtls.Conn {
	if c.s == nil {
		return c.dc
	}
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	return c.s.dc
}

// PeerCertificates returns the peer's chain, leaf first, as accepted in the
// handshake (VerifyPeer's result when set), or nil.
func (c *Conn) PeerCertificates() []*x509.Certificate { return c.peerCerts }

// TLSUnique returns the RFC 5929 §3.1 tls-unique channel binding: the
// verify_data of the first Finished message of the handshake (12 bytes). It is
// nil when it could not be recomputed (the handshake transcript was not
// observable in full); callers that need it must then refuse the binding.
func (c *Conn) TLSUnique() []byte { c.bind(); return c.tlsUnique }

// TLSExporter returns the RFC 9266 tls-exporter channel binding (32 bytes).
func (c *Conn) TLSExporter() []byte { c.bind(); return c.tlsExporter }

// CipherSuite returns the negotiated cipher suite.
func (c *Conn) CipherSuite() dtls.CipherSuiteID { return c.suite }

// ConnectionID reports whether an RFC 9146 connection ID is in use in either direction.
func (c *Conn) ConnectionID() bool { c.bind(); return c.cid }

// onlySuite returns the cipher suite a handshake configured with suiteList(extra) can only
// have negotiated when that list holds one suite (pion completes no handshake on a suite it
// was not given), else 0.
func onlySuite(extra []dtls.CipherSuiteID) dtls.CipherSuiteID {
	if l := suiteList(extra); len(l) == 1 {
		return l[0]
	}
	return 0
}

// newConn builds a Conn after a completed handshake. The channel bindings are derived on
// first use (bind); here only the transcript hash is kept. suite is the negotiated cipher
// suite when the configuration allowed one only (onlySuite), peer the chain accepted during
// the handshake: when both are known, pion's state is not copied out (ConnectionState
// serializes it and, on a fresh goroutine, grows its stack: ≈ 1 % of a server handshake).
func newConn(dc *dtls.Conn, tr *transcript, suite dtls.CipherSuiteID, peer []*x509.Certificate, log *slog.Logger) (*Conn, error) {
	c := &Conn{dc: dc, suite: suite, peerCerts: peer, log: log}
	if suite != 0 && peer != nil {
		return c.withFinishedHash(tr), nil
	}
	st, ok := dc.ConnectionState()
	if !ok {
		return nil, errors.New("dtlsconn: no connection state after handshake")
	}
	c.suite = st.CipherSuiteID
	if c.peerCerts == nil {
		for _, der := range st.PeerCertificates {
			cert, err := x509.ParseCertificate(der)
			if err != nil {
				return nil, fmt.Errorf("dtlsconn: peer certificate: %w", err)
			}
			c.peerCerts = append(c.peerCerts, cert)
		}
	}
	return c.withFinishedHash(tr), nil
}

// withFinishedHash keeps the hash of the handshake transcript up to the client's Finished,
// for tls-unique.
func (c *Conn) withFinishedHash(tr *transcript) *Conn {
	fh, err := finishedHash(tr, c.suite)
	if err != nil {
		c.log.Warn("dtls: tls-unique unavailable", "remote", c.dc.RemoteAddr(), "err", err)
		return c
	}
	c.finishedHash = fh
	return c
}
