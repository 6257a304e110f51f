package dtlsconn

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/dtls/v3/pkg/crypto/elliptic"
	"github.com/pion/logging"
)

// Dial opens a DTLS 1.2 session to addr ("host:port") and completes the
// handshake, bounded by ctx and cfg.HandshakeTimeout.
func Dial(ctx context.Context, network, addr string, cfg ClientConfig) (*Conn, error) {
	raddr, err := net.ResolveUDPAddr(network, addr)
	if err != nil {
		return nil, fmt.Errorf("dtlsconn: dial %s: %w", addr, err)
	}
	uc, err := net.DialUDP(network, nil, raddr)
	if err != nil {
		return nil, fmt.Errorf("dtlsconn: dial %s: %w", addr, err)
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = defaultHandshakeTimeout
	}
	serverName := cfg.ServerName
	if serverName == "" {
		if host, _, err := net.SplitHostPort(addr); err == nil && net.ParseIP(host) == nil {
			serverName = host
		}
	}
	pc := &clientPC{uc: uc, raddr: raddr, tr: newTranscript()}
	var accepted []*x509.Certificate
	opts := []dtls.ClientOption{
		dtls.WithRootCAs(cfg.RootCAs),
		dtls.WithServerName(serverName),
		dtls.WithInsecureSkipVerify(cfg.InsecureSkipVerify),
		dtls.WithCipherSuites(suiteList(cfg.CipherSuites)...),
		dtls.WithExtendedMasterSecret(dtls.RequireExtendedMasterSecret), // RFC 7627 §5.3
		dtls.WithEllipticCurves(elliptic.P256),
		dtls.WithLoggerFactory(nopLoggerFactory{}),
	}
	if len(cfg.Certificates) > 0 { // WithCertificates rejects an empty list
		opts = append(opts, dtls.WithCertificates(cfg.Certificates...))
	}
	if cfg.MTU > 0 { // WithMTU rejects 0; pion's default (1200) applies otherwise
		opts = append(opts, dtls.WithMTU(cfg.MTU))
	}
	if cfg.ConnectionID {
		opts = append(opts, dtls.WithConnectionIDGenerator(dtls.OnlySendCIDGenerator()))
	}
	// pion calls this only after its own verification of the server's chain against RootCAs
	// and ServerName (skipped with InsecureSkipVerify only); it adds to that check, never
	// replaces it.
	opts = append(opts, dtls.WithVerifyPeerCertificate(func(raw [][]byte, chains [][]*x509.Certificate) error {
		if cfg.VerifyPeer == nil {
			// pion has just parsed the chain to verify it: keep its certificates rather than
			// parse the same DER again in newConn.
			accepted = parsedChain(raw, chains)
			return nil
		}
		chain, err := cfg.VerifyPeer(raw)
		if err != nil {
			return err
		}
		accepted = chain
		return nil
	}))
	dc, err := dtls.ClientWithOptions(pc, raddr, opts...)
	if err != nil {
		_ = uc.Close()
		return nil, fmt.Errorf("dtlsconn: dial %s: %w", addr, err)
	}
	hctx, cancel := context.WithTimeout(ctx, cfg.HandshakeTimeout)
	defer cancel()
	if err := dc.HandshakeContext(hctx); err != nil {
		_ = dc.Close()
		_ = uc.Close()
		return nil, fmt.Errorf("dtlsconn: handshake with %s: %w", addr, err)
	}
	pc.mu.Lock()
	tr := pc.tr
	pc.tr = nil
	pc.mu.Unlock()
	c, err := newConn(dc, tr, onlySuite(cfg.CipherSuites), accepted, slog.New(slog.DiscardHandler))
	if err != nil {
		_ = dc.Close()
		return nil, err
	}
	return c, nil
}

// parsedChain returns the certificates of raw (the chain as the server sent it, leaf first)
// taken from pion's verified chains, which hold the very certificates pion parsed from raw
// (leaf and intermediates) and trust anchors from RootCAs; a certificate is reused only when
// its DER is byte-for-byte the one received. It returns nil when one is not found there
// (InsecureSkipVerify: no chains), and newConn then parses raw itself.
func parsedChain(raw [][]byte, chains [][]*x509.Certificate) []*x509.Certificate {
	if len(raw) == 0 || len(chains) == 0 {
		return nil
	}
	out := make([]*x509.Certificate, len(raw))
	for i, der := range raw {
	search:
		for _, chain := range chains {
			for _, c := range chain {
				if bytes.Equal(c.Raw, der) {
					out[i] = c
					break search
				}
			}
		}
		if out[i] == nil {
			return nil
		}
	}
	return out
}

// nopLoggerFactory gives pion loggers that drop everything, without the environment lookups
// of logging.NewDefaultLoggerFactory on every Dial.
type nopLoggerFactory struct{}

func (nopLoggerFactory) NewLogger(string) logging.LeveledLogger { return nopLogger{} }

type nopLogger struct{}

func (nopLogger) Trace(string)          {}
func (nopLogger) Tracef(string, ...any) {}
func (nopLogger) Debug(string)          {}
func (nopLogger) Debugf(string, ...any) {}
func (nopLogger) Info(string)           {}
func (nopLogger) Infof(string, ...any)  {}
func (nopLogger) Warn(string)           {}
func (nopLogger) Warnf(string, ...any)  {}
func (nopLogger) Error(string)          {}
func (nopLogger) Errorf(string, ...any) {}

// clientPC adapts a connected UDP socket to the net.PacketConn pion wants and
// records the epoch-0 handshake for tls-unique.
type clientPC struct {
	uc      *net.UDPConn
	raddr   *net.UDPAddr
	mu      sync.Mutex
	tr      *transcript
	buf     *[]byte  // the datagram buffer while pending holds chunks of it (from datagramBufs)
	pending [][]byte // chunks of the last datagram not yet handed to pion
}

// datagramBufs recycles the 64 KiB buffers client sessions read whole datagrams into (the
// largest UDP payload, so that no datagram is truncated before splitDatagram cuts it). A
// buffer is taken for one datagram and given back once pion has all of it (the transcript
// copies what it keeps): a session no longer allocates and clears 64 KiB of its own, a
// quarter of the bytes a full enrollment allocated on the client. A sync.Pool holds no
// state, only memory the GC may reclaim.
var datagramBufs = sync.Pool{New: func() any { b := make([]byte, 1<<16); return &b }}

func (p *clientPC) sniff(b []byte, fromClient bool) {
	p.mu.Lock()
	if p.tr != nil {
		p.tr.addDatagram(b, fromClient)
	}
	p.mu.Unlock()
}

// ReadFrom hands pion one datagram, split at record boundaries when it is
// longer than pion's read buffer (pion reads sequentially from one goroutine).
func (p *clientPC) ReadFrom(b []byte) (int, net.Addr, error) {
	if len(p.pending) == 0 {
		bp := datagramBufs.Get().(*[]byte)
		n, err := p.uc.Read(*bp)
		if err != nil {
			datagramBufs.Put(bp)
			return 0, nil, err
		}
		d := (*bp)[:n]
		p.sniff(d, false)
		if n <= min(len(b), pionInboundBuffer) { // the usual case: the datagram fits pion's buffer
			n = copy(b, d)
			datagramBufs.Put(bp)
			return n, p.raddr, nil
		}
		p.buf = bp
		p.pending = splitDatagram(d, min(len(b), pionInboundBuffer))
	}
	n := copy(b, p.pending[0])
	p.pending = p.pending[1:]
	if len(p.pending) == 0 {
		datagramBufs.Put(p.buf)
		p.buf = nil
	}
	return n, p.raddr, nil
}

func (p *clientPC) WriteTo(b []byte, _ net.Addr) (int, error) {
	p.sniff(b, true)
	return p.uc.Write(b)
}

func (p *clientPC) Close() error                       { return p.uc.Close() }
func (p *clientPC) LocalAddr() net.Addr                { return p.uc.LocalAddr() }
func (p *clientPC) SetDeadline(t time.Time) error      { return p.uc.SetDeadline(t) }
func (p *clientPC) SetReadDeadline(t time.Time) error  { return p.uc.SetReadDeadline(t) }
func (p *clientPC) SetWriteDeadline(t time.Time) error { return p.uc.SetWriteDeadline(t) }
