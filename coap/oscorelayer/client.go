package oscorelayer

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"coapca/coap"
	"coapca/edhoc"
	"coapca/oscore"
)

// Client is a coap.ClientLayer with one OSCORE context (pre-shared, or from EDHOC): every
// request is protected and every response verified; a 4.01 + Echo challenge (a server that
// restarted, RFC 8613 Appendix B.1.2, RFC 9175) is answered once by repeating the request.
type Client struct{ ctx *oscore.Context }

var _ coap.ClientLayer = (*Client)(nil)

// NewClient returns the layer for c.
func NewClient(c *oscore.Context) *Client { return &Client{ctx: c} }

// RoundTrip implements coap.ClientLayer.
func (c *Client) RoundTrip(req *message.Message, send func(*message.Message) (*message.Message, error)) (*message.Message, error) {
	return exchange(c.ctx, req, send)
}

func exchange(c *oscore.Context, req *message.Message, send func(*message.Message) (*message.Message, error)) (*message.Message, error) {
	resp, err := c.Exchange(req, send)
	if err != nil {
		if resp != nil && errors.Is(err, oscore.ErrNotProtected) {
			return nil, fmt.Errorf("oscore: server answered %v without OSCORE: %s", resp.Code, diagnostic(resp))
		}
		return nil, err
	}
	return resp, nil
}

// EDHOCConfig configures the EDHOC client layer (the device is the Initiator).
type EDHOCConfig struct {
	// Credential and PrivateKey authenticate the device (e.g. its IDevID with ByX5Chain).
	Credential *edhoc.Credential
	PrivateKey crypto.PrivateKey
	// Method; zero value = 0 (signature keys on both sides).
	Method edhoc.Method
	// Suites is SUITES_I; nil = [2] (P-256, AES-CCM-16-64-128, mandatory for EST-oscore).
	Suites []edhoc.Suite
	// VerifyPeer decides about the server's X.509 chain (transported in x5chain) and returns
	// the chain it accepted. It must authenticate the server the client dialed, not just a
	// chain to the anchors: server role and the dialed host name (RFC 9148 §4, RFC 7030 §3.6;
	// client.ServerVerifier does both).
	VerifyPeer func(rawCerts [][]byte) ([]*x509.Certificate, error)
	// Separate sends message_3 in its own request (RFC 9528 Appendix A.2) instead of the
	// EDHOC + OSCORE combined request of RFC 9668 (the default).
	Separate bool
}

// EDHOCClient is a coap.ClientLayer that runs EDHOC with the server on first use and then
// protects every request with the derived OSCORE context. Requests to /.well-known/edhoc pass
// unprotected. It is safe for concurrent use; the handshake runs once.
type EDHOCClient struct {
	cfg EDHOCConfig

	mu      sync.Mutex
	ctx     *oscore.Context
	pending []byte // message_3 still to be sent in a combined request
	cb      []byte
	peer    []*x509.Certificate
}

// post sends one EDHOC request payload and returns the answer's code and payload.
type post func(payload []byte) (codes.Code, []byte, error)

var _ coap.ClientLayer = (*EDHOCClient)(nil)

// NewEDHOCClient checks cfg and returns the layer.
func NewEDHOCClient(cfg EDHOCConfig) (*EDHOCClient, error) {
	if cfg.Credential == nil || cfg.PrivateKey == nil || cfg.VerifyPeer == nil {
		return nil, errors.New("oscorelayer: EDHOC needs Credential, PrivateKey and VerifyPeer")
	}
	if cfg.Suites == nil {
		cfg.Suites = []edhoc.Suite{edhoc.Suite2}
	}
	return &EDHOCClient{cfg: cfg}, nil
}

// ChannelBinding returns edhoc-unique once the handshake ran (nil before).
func (e *EDHOCClient) ChannelBinding() []byte {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.cb
}

// PeerChain returns the server's verified chain once the handshake ran (nil before).
func (e *EDHOCClient) PeerChain() []*x509.Certificate {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.peer
}

// Handshake runs EDHOC now through c (whose Layer is e; requests to /.well-known/edhoc pass
// through unprotected), so that ChannelBinding is available before the first protected request
// (e.g. for a CSR's challengePassword). Without it the handshake runs on the first request.
func (e *EDHOCClient) Handshake(ctx context.Context, c *coap.Client) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.handshakeLocked(func(p []byte) (codes.Code, []byte, error) {
		resp, err := c.Do(ctx, &coap.ClientRequest{Method: codes.POST, Path: WellKnownEDHOC,
			ContentFormat: coap.CF(CFCIDEDHOC), Payload: p})
		if err != nil {
			return 0, nil, err
		}
		return resp.Code, resp.Payload, nil
	})
}

// sendPost posts an EDHOC request through the raw send of a RoundTrip and fetches a
// block-wise answer (message_2 with a certificate chain is often larger than one block,
// RFC 7959 §2.4) with Block2 follow-ups.
func sendPost(send func(*message.Message) (*message.Message, error)) post {
	return func(p []byte) (codes.Code, []byte, error) {
		r, err := send(edhocRequest(p))
		if err != nil {
			return 0, nil, err
		}
		body := append([]byte(nil), r.Payload...)
		for n := 0; ; n++ {
			v, ok := optionValue(r, message.Block2)
			if !ok {
				break
			}
			num, more, szx := decodeBlock(v)
			if !more {
				break
			}
			if n > 64 || num != uint32(n) || len(body) != int(num+1)<<(szx+4) {
				return 0, nil, errors.New("edhoc: bad block-wise answer")
			}
			next := edhocRequest(nil)
			next.Options = next.Options.Add(message.Option{ID: message.Block2, Value: encodeBlock(num+1, szx)})
			if r, err = send(next); err != nil {
				return 0, nil, err
			}
			body = append(body, r.Payload...)
		}
		return r.Code, body, nil
	}
}

func optionValue(m *message.Message, id message.OptionID) ([]byte, bool) {
	for _, o := range m.Options {
		if o.ID == id {
			return o.Value, true
		}
	}
	return nil, false
}

func decodeBlock(v []byte) (num uint32, more bool, szx uint8) {
	var u uint32
	for _, b := range v {
		u = u<<8 | uint32(b)
	}
	return u >> 4, u&8 != 0, uint8(u & 7)
}

func encodeBlock(num uint32, szx uint8) []byte {
	u := num<<4 | uint32(szx)
	switch {
	case u < 1<<8:
		return []byte{byte(u)}
	case u < 1<<16:
		return []byte{byte(u >> 8), byte(u)}
	}
	return []byte{byte(u >> 16), byte(u >> 8), byte(u)}
}

// RoundTrip implements coap.ClientLayer.
func (e *EDHOCClient) RoundTrip(req *message.Message, send func(*message.Message) (*message.Message, error)) (*message.Message, error) {
	if isEDHOCPath(req) {
		return send(req)
	}
	e.mu.Lock()
	if err := e.handshakeLocked(sendPost(send)); err != nil {
		e.mu.Unlock()
		return nil, err
	}
	ctx, m3 := e.ctx, e.pending
	e.pending = nil
	if m3 == nil {
		e.mu.Unlock()
		return exchange(ctx, req, send)
	}
	// The combined request is sent under the lock: no other request may overtake it.
	defer e.mu.Unlock()
	p, st, err := ctx.ProtectRequest(req)
	if err != nil {
		return nil, err
	}
	// RFC 9668 §3.2.1: EDHOC option (empty, class U) and payload message_3 ‖ OSCORE ciphertext.
	p.Options = p.Options.Add(message.Option{ID: oscore.OptionEDHOC, Value: []byte{}})
	p.Payload = append(append(make([]byte, 0, len(m3)+len(p.Payload)), m3...), p.Payload...)
	raw, err := send(p)
	if err != nil {
		return nil, fmt.Errorf("oscore: send: %w", err)
	}
	if !oscore.IsProtected(raw) {
		return nil, fmt.Errorf("edhoc+oscore: server answered %v: %s", raw.Code, edhocDiagnostic(raw.Payload))
	}
	return ctx.UnprotectResponse(st, raw)
}

// handshakeLocked runs EDHOC up to message_3 once.
func (e *EDHOCClient) handshakeLocked(send post) error {
	if e.ctx != nil {
		return nil
	}
	init, err := edhoc.NewInitiator(edhoc.Config{
		Method: e.cfg.Method, Suites: e.cfg.Suites, Credential: e.cfg.Credential, PrivateKey: e.cfg.PrivateKey,
		Resolve: func(id *edhoc.IDCred, _ []edhoc.EAD) (*edhoc.Credential, error) {
			if len(id.X5Chain) == 0 {
				return nil, fmt.Errorf("%w: the server must send its chain (x5chain)", edhoc.ErrUnknownCredential)
			}
			cred, err := edhoc.CredentialFromIDCred(id)
			if err != nil {
				return nil, fmt.Errorf("%w: %v", edhoc.ErrUnknownCredential, err)
			}
			chain, err := e.cfg.VerifyPeer(id.X5Chain)
			if err != nil {
				return nil, fmt.Errorf("%w: %v", edhoc.ErrUnknownCredential, err)
			}
			cred.Certificates = chain
			return cred, nil
		},
	})
	if err != nil {
		return err
	}
	defer init.Close()
	m1, err := init.Message1(nil)
	if err != nil {
		return err
	}
	code, m2, err := send(append([]byte{0xf5}, m1...)) // Appendix A.2: CBOR true ‖ message_1
	if err != nil {
		return fmt.Errorf("edhoc: message_1: %w", err)
	}
	if code != codes.Changed {
		return fmt.Errorf("edhoc: message_1 answered %v: %s", code, edhocDiagnostic(m2))
	}
	info, err := init.ProcessMessage2(m2)
	if err != nil {
		return fmt.Errorf("edhoc: message_2: %w", err)
	}
	m3, err := init.Message3(nil)
	if err != nil {
		return err
	}
	c, id, err := deriveContext(init, nil)
	if err != nil {
		return err
	}
	if e.cfg.Separate {
		_, cr := init.ConnIDs()
		code, b, err := send(append(edhoc.AppendConnID(nil, cr), m3...)) // C_R ‖ message_3
		if err != nil {
			return fmt.Errorf("edhoc: message_3: %w", err)
		}
		if code != codes.Changed {
			return fmt.Errorf("edhoc: message_3 answered %v: %s", code, edhocDiagnostic(b))
		}
	} else {
		e.pending = m3
	}
	e.ctx, e.cb = c, id.ChannelBinding
	if info.Peer != nil {
		e.peer = info.Peer.Certificates
	}
	return nil
}

func edhocRequest(payload []byte) *message.Message {
	opts := make(message.Options, 0, 3)
	for _, seg := range strings.Split(strings.Trim(WellKnownEDHOC, "/"), "/") {
		opts = opts.Add(message.Option{ID: message.URIPath, Value: []byte(seg)})
	}
	opts = opts.Add(message.Option{ID: message.ContentFormat, Value: []byte{CFCIDEDHOC}})
	return &message.Message{Code: codes.POST, Options: opts, Payload: payload}
}

func isEDHOCPath(m *message.Message) bool {
	var sb strings.Builder
	for _, o := range m.Options {
		if o.ID == message.URIPath {
			sb.WriteByte('/')
			sb.Write(o.Value)
		}
	}
	return sb.String() == WellKnownEDHOC
}

func diagnostic(m *message.Message) string {
	if len(m.Payload) == 0 {
		return "(no diagnostic)"
	}
	return string(m.Payload)
}

func edhocDiagnostic(b []byte) string {
	if em, err := edhoc.ParseErrorMessage(b); err == nil {
		return em.Error()
	}
	if len(b) == 0 {
		return "(no diagnostic)"
	}
	return string(b)
}
