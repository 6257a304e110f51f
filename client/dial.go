package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"coapca/coap"
	"coapca/coap/dtlsconn"
	"coapca/coap/oscorelayer"
	"coapca/edhoc"
	"coapca/oscore"
)

// ESTDialOptions configure DialEST: the three ways to reach an EST server over CoAP.
type ESTDialOptions struct {
	// BlockSize is the CoAP block size (16..1024; 0 = 1024).
	BlockSize int
	// Identity is the client's certificate chain and key: its DTLS client certificate
	// (coaps://, RFC 9148 §3) or its EDHOC credential (coap:// with EDHOC).
	Identity *tls.Certificate
	// VerifyServer checks the chain the server presents in DTLS or EDHOC and returns it
	// parsed (ServerVerifier, or ParseChain to accept any). Required for coaps:// and EDHOC:
	// a pre-shared OSCORE context authenticates the server by itself.
	VerifyServer func(raw [][]byte) ([]*x509.Certificate, error)
	// OSCORE protects the requests of coap:// with this pre-shared context (RFC 8613).
	OSCORE *oscore.Context
	// EDHOC keys OSCORE for coap:// with EDHOC (RFC 9528) authenticated by Identity;
	// message_3 travels in the first OSCORE request (RFC 9668) unless EDHOCSeparate.
	EDHOC, EDHOCSeparate bool
	// EDHOCCredential is how ID_CRED_I designates Identity's certificate (RFC 9528 §3.5.3,
	// RFC 9360 §2): "x5chain" (default: the chain by value), "x5t" (its SHA-256/64 hash) or
	// "kid" (its Subject Key Identifier). By reference, the server must know the certificate:
	// one it issued (an LDevID), one of its trust stores, or one this client used by value.
	EDHOCCredential string
	// ACE keys OSCORE for coap:// with an access token (RFC 9203): see NewACEClient.
	ACE *ACEClient
	// HTTPClient carries EST-oscore over http:// or https:// (RFC 8613 §11, with OSCORE);
	// nil = http.DefaultClient.
	HTTPClient *http.Client
}

// ESTConn is one association with an EST server: EST-coaps over DTLS, or EST-oscore over
// UDP (draft-ietf-ace-coap-est-oscore). Pass its Client to NewEST.
type ESTConn struct {
	*coap.Client
	binding     func(ctx context.Context) ([]byte, error)
	serverChain func() []*x509.Certificate
}

// ChannelBinding returns the value a CSR's challengePassword carries to link it to this
// association: tls-unique of the DTLS session (RFC 9148 §3, RFC 7030 §3.5) or edhoc-unique,
// running the EDHOC handshake first if it has not run yet. A pre-shared OSCORE context has
// none.
func (c *ESTConn) ChannelBinding(ctx context.Context) ([]byte, error) { return c.binding(ctx) }

// ServerChain returns the server's chain as VerifyServer returned it (nil before the
// handshake and with a pre-shared OSCORE context).
func (c *ESTConn) ServerChain() []*x509.Certificate { return c.serverChain() }

// DialEST opens an association with the EST server at rawURL (coaps://host[:port] or
// coap://host[:port]; a path is ignored: it is the label, for NewEST).
func DialEST(ctx context.Context, rawURL string, o ESTDialOptions) (*ESTConn, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("est: bad server URL %q", rawURL)
	}
	switch u.Scheme {
	case "coaps":
		if o.VerifyServer == nil {
			return nil, errors.New("est: coaps:// needs a check of the server's chain")
		}
		// The server is checked by VerifyServer alone (pion's own check cannot replace it: it
		// knows neither id-kp-cmcRA nor intermediate CAs among the anchors).
		dc := dtlsconn.ClientConfig{ServerName: u.Hostname(), InsecureSkipVerify: true, VerifyPeer: o.VerifyServer}
		if o.Identity != nil {
			dc.Certificates = []tls.Certificate{*o.Identity}
		}
		c, err := coap.Dial(ctx, "coaps://"+u.Host, coap.ClientOptions{DTLS: &dc, BlockSize: o.BlockSize})
		if err != nil {
			return nil, err
		}
		return &ESTConn{Client: c,
			serverChain: func() []*x509.Certificate { return c.Peer().Certificates },
			binding: func(context.Context) ([]byte, error) {
				if tu := c.Peer().TLSUnique(); len(tu) > 0 {
					return tu, nil
				}
				return nil, errors.New("the DTLS session has no tls-unique value")
			}}, nil
	case "coap":
		return dialOSCORE(ctx, u, o)
	case "http", "https":
		return dialOSCOREHTTP(ctx, u, o)
	}
	return nil, fmt.Errorf("est: unsupported scheme %q (coaps, or coap with OSCORE)", u.Scheme)
}

// dialOSCOREHTTP opens EST-oscore over HTTP (RFC 8613 §11): every request is protected with
// the pre-shared context and POSTed to the server's root with the OSCORE header field; the
// CoAP client only frames the requests (nothing goes over UDP). HTTPClient, when set, is used
// for the HTTP requests (TLS settings for https://).
func dialOSCOREHTTP(ctx context.Context, u *url.URL, o ESTDialOptions) (*ESTConn, error) {
	if o.OSCORE == nil || o.EDHOC || o.ACE != nil {
		return nil, errors.New("est: OSCORE over HTTP needs a pre-shared OSCORE context")
	}
	target := u.Scheme + "://" + u.Host + "/"
	opts := coap.ClientOptions{BlockSize: 1024,
		Layer: oscorelayer.NewHTTPTransport(o.OSCORE, target, o.HTTPClient),
		// The CoAP client needs a datagram connection; nothing is ever sent on it.
		DialUDP: func(context.Context, string) (net.Conn, error) { return newNullConn(), nil }}
	c, err := coap.Dial(ctx, "coap://"+u.Host, opts)
	if err != nil {
		return nil, err
	}
	return &ESTConn{Client: c,
		serverChain: func() []*x509.Certificate { return nil },
		binding: func(context.Context) ([]byte, error) {
			return nil, errors.New("a pre-shared OSCORE context has no channel-binding value")
		}}, nil
}

// nullConn is a datagram connection that carries nothing: writes are dropped, reads wait for
// Close.
type nullConn struct {
	closed chan struct{}
	once   sync.Once
}

func newNullConn() *nullConn { return &nullConn{closed: make(chan struct{})} }

func (c *nullConn) Read([]byte) (int, error) {
	<-c.closed
	return 0, net.ErrClosed
}
func (c *nullConn) Write(b []byte) (int, error) { return len(b), nil }
func (c *nullConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}
func (c *nullConn) LocalAddr() net.Addr                { return &net.UDPAddr{} }
func (c *nullConn) RemoteAddr() net.Addr               { return &net.UDPAddr{} }
func (c *nullConn) SetDeadline(t time.Time) error      { return nil }
func (c *nullConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *nullConn) SetWriteDeadline(t time.Time) error { return nil }

// dialOSCORE opens coap:// protected by OSCORE: with the pre-shared context, or with a context
// from EDHOC.
func dialOSCORE(ctx context.Context, u *url.URL, o ESTDialOptions) (*ESTConn, error) {
	n := 0
	for _, b := range []bool{o.OSCORE != nil, o.EDHOC, o.ACE != nil} {
		if b {
			n++
		}
	}
	if n != 1 {
		return nil, errors.New("est: coap:// needs exactly one of a pre-shared OSCORE context, EDHOC and an ACE access token")
	}
	opts := coap.ClientOptions{BlockSize: o.BlockSize}
	if o.OSCORE != nil || o.ACE != nil {
		opts.Layer = oscorelayer.NewClient(o.OSCORE)
		if o.ACE != nil {
			opts.Layer = o.ACE
		}
		c, err := coap.Dial(ctx, "coap://"+u.Host, opts)
		if err != nil {
			return nil, err
		}
		return &ESTConn{Client: c,
			serverChain: func() []*x509.Certificate { return nil },
			binding: func(context.Context) ([]byte, error) {
				return nil, errors.New("a pre-shared or token-derived OSCORE context has no channel-binding value (use EDHOC)")
			}}, nil
	}
	if o.Identity == nil {
		return nil, errors.New("est: EDHOC needs a client identity (certificate and key)")
	}
	if o.VerifyServer == nil {
		return nil, errors.New("est: EDHOC needs a check of the server's chain")
	}
	chain := make([]*x509.Certificate, 0, len(o.Identity.Certificate))
	for _, der := range o.Identity.Certificate {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("client identity: %w", err)
		}
		chain = append(chain, c)
	}
	cred, err := EDHOCCredential(chain, o.EDHOCCredential)
	if err != nil {
		return nil, err
	}
	ed, err := oscorelayer.NewEDHOCClient(oscorelayer.EDHOCConfig{
		Credential: cred, PrivateKey: o.Identity.PrivateKey, VerifyPeer: o.VerifyServer, Separate: o.EDHOCSeparate,
	})
	if err != nil {
		return nil, err
	}
	opts.Layer = ed
	c, err := coap.Dial(ctx, "coap://"+u.Host, opts)
	if err != nil {
		return nil, err
	}
	return &ESTConn{Client: c, serverChain: ed.PeerChain,
		binding: func(ctx context.Context) ([]byte, error) {
			if err := ed.Handshake(ctx, c); err != nil {
				return nil, err
			}
			return ed.ChannelBinding(), nil
		}}, nil
}

// EDHOCCredential is the client's EDHOC credential for chain (leaf first), designated in
// ID_CRED_I as kind says: "" or "x5chain" (by value), "x5t" or "kid" (by reference; see
// ESTDialOptions.EDHOCCredential).
func EDHOCCredential(chain []*x509.Certificate, kind string) (*edhoc.Credential, error) {
	ref := edhoc.ByX5Chain
	switch kind {
	case "", "x5chain":
	case "x5t", "kid":
		ref = edhoc.ByX5T
	default:
		return nil, fmt.Errorf("edhoc credential %q: want x5chain, x5t or kid", kind)
	}
	cred, err := edhoc.NewX509Credential(chain, ref)
	if err != nil {
		return nil, fmt.Errorf("edhoc credential: %w", err)
	}
	if kind == "kid" {
		if len(chain[0].SubjectKeyId) == 0 {
			return nil, errors.New("edhoc credential kid: the certificate has no Subject Key Identifier")
		}
		cred.ID = edhoc.IDCredKid(chain[0].SubjectKeyId)
	}
	return cred, nil
}
