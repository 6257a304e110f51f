package client

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"coapca/ace"
	"coapca/coap"
	"coapca/coap/oscorelayer"
	"coapca/oscore"
)

// ACEConfig configures the client side of the ACE OSCORE profile (RFC 9200, RFC 9203).
type ACEConfig struct {
	// AS is the token endpoint: coap://host[:port][/path], path default /token.
	AS string
	// ASContext is the client's OSCORE context with the AS: its credential there (RFC 9203
	// §3.1: the client and the AS talk over OSCORE).
	ASContext *oscore.Context
	// Audience and Scope are asked for; empty Audience = learn both from the AS Request
	// Creation Hints (RFC 9200 §5.3) of the resource server's 4.01.
	Audience, Scope string
	// Timeout bounds fetching a token and posting it (default 30 s).
	Timeout time.Duration
}

// ACEClient is a coap.ClientLayer for EST-oscore with a context from an access token: on first
// use it gets a token from the AS, posts it to the server's /authz-info with nonce1 and its
// Recipient ID (RFC 9203 §4.1), derives the OSCORE context (§4.3) and protects every request
// with it. When the server answers 4.01 without OSCORE (its context is gone, or the token
// expired) it gets a new token once and repeats the request. Safe for concurrent use.
type ACEClient struct {
	cfg ACEConfig
	as  *url.URL

	mu     sync.Mutex
	ctx    *oscore.Context
	tokens int
	// Wire counts the bytes of the token round trips (AS and /authz-info), for `coapca bench`.
	wire ACEWire
}

// ACEWire counts what getting and posting tokens cost on the wire.
type ACEWire struct {
	Tokens                int // tokens fetched
	TokenRequestBytes     int // /token request payloads
	TokenResponseBytes    int // /token response payloads
	AuthzInfoRequestBytes int // /authz-info request payloads
	AuthzInfoRespBytes    int // /authz-info response payloads
}

var _ coap.ClientLayer = (*ACEClient)(nil)

// NewACEClient checks cfg and returns the layer.
func NewACEClient(cfg ACEConfig) (*ACEClient, error) {
	u, err := url.Parse(cfg.AS)
	if err != nil || u.Scheme != "coap" || u.Host == "" {
		return nil, fmt.Errorf("ace: AS URL %q: want coap://host[:port][/path] (the token endpoint over OSCORE)", cfg.AS)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = ace.TokenPath
	}
	if cfg.ASContext == nil {
		return nil, errors.New("ace: the client needs its OSCORE context with the AS")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	return &ACEClient{cfg: cfg, as: u}, nil
}

// Wire returns the byte counts so far.
func (a *ACEClient) Wire() ACEWire {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.wire
}

// RoundTrip implements coap.ClientLayer.
func (a *ACEClient) RoundTrip(req *message.Message, send func(*message.Message) (*message.Message, error)) (*message.Message, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cfg.Audience == "" {
		if err := a.discoverLocked(req, send); err != nil {
			return nil, err
		}
	}
	for attempt := 0; ; attempt++ {
		if a.ctx == nil {
			if err := a.obtainLocked(send); err != nil {
				return nil, err
			}
		}
		resp, err := a.ctx.Exchange(req, send)
		if err == nil {
			return resp, nil
		}
		if resp == nil || !errors.Is(err, oscore.ErrNotProtected) || resp.Code != codes.Unauthorized || attempt > 0 {
			if resp != nil {
				return nil, fmt.Errorf("%w: %s", err, resp.Payload)
			}
			return nil, err
		}
		// RFC 9203 §4.3 / RFC 9200 §5.10.1.1: the server lost the context or the token
		// expired; a new token makes a new context.
		if h, herr := ace.ParseCreationHints(resp.Payload); herr == nil && h.Audience != "" && cfMatches(resp) {
			a.cfg.Audience, a.cfg.Scope = h.Audience, h.Scope
		}
		a.ctx = nil
	}
}

func cfMatches(m *message.Message) bool {
	for _, o := range m.Options {
		if o.ID == message.ContentFormat {
			return len(o.Value) == 1 && o.Value[0] == ace.ContentFormatACECBOR
		}
	}
	return false
}

// discoverLocked learns the audience and scope from the AS Request Creation Hints: an
// unprotected GET of the request's path (no payload: nothing is disclosed) answered 4.01.
func (a *ACEClient) discoverLocked(req *message.Message, send func(*message.Message) (*message.Message, error)) error {
	probe := &message.Message{Code: codes.GET}
	for _, o := range req.Options {
		if o.ID == message.URIPath {
			probe.Options = probe.Options.Add(o)
		}
	}
	resp, err := send(probe)
	if err != nil {
		return fmt.Errorf("ace: creation hints: %w", err)
	}
	if resp.Code != codes.Unauthorized || !cfMatches(resp) {
		return fmt.Errorf("ace: the server answered %v without AS Request Creation Hints: give the audience", resp.Code)
	}
	h, err := ace.ParseCreationHints(resp.Payload)
	if err != nil {
		return err
	}
	if h.Audience == "" {
		return errors.New("ace: the creation hints name no audience: give the audience")
	}
	a.cfg.Audience, a.cfg.Scope = h.Audience, h.Scope
	return nil
}

// obtainLocked gets a token from the AS and posts it to /authz-info (RFC 9203 §3, §4).
func (a *ACEClient) obtainLocked(send func(*message.Message) (*message.Message, error)) error {
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.Timeout)
	defer cancel()
	asc, err := coap.Dial(ctx, "coap://"+a.as.Host, coap.ClientOptions{Layer: oscorelayer.NewClient(a.cfg.ASContext)})
	if err != nil {
		return fmt.Errorf("ace: AS %s: %w", a.as.Host, err)
	}
	defer asc.Close()
	treq := (&ace.TokenRequest{Audience: a.cfg.Audience, Scope: a.cfg.Scope}).Marshal()
	resp, err := asc.Do(ctx, &coap.ClientRequest{Method: codes.POST, Path: a.as.Path,
		ContentFormat: coap.CF(ace.ContentFormatACECBOR), Payload: treq})
	if err != nil {
		return fmt.Errorf("ace: token request: %w", err)
	}
	if resp.Code != codes.Created {
		return fmt.Errorf("ace: the AS refused the token request: %v %x", resp.Code, resp.Payload)
	}
	tr, err := ace.ParseTokenResponse(resp.Payload)
	if err != nil {
		return err
	}
	a.wire.Tokens++
	a.wire.TokenRequestBytes += len(treq)
	a.wire.TokenResponseBytes += len(resp.Payload)

	nonce1, id1 := make([]byte, ace.NonceSize), make([]byte, 1)
	if _, err := rand.Read(nonce1); err != nil {
		return err
	}
	if _, err := rand.Read(id1); err != nil {
		return err
	}
	body := (&ace.AuthzInfoRequest{AccessToken: tr.AccessToken, Nonce1: nonce1, ClientRecipientID: id1}).Marshal()
	m := &message.Message{Code: codes.POST, Payload: body, Options: message.Options{
		{ID: message.URIPath, Value: []byte("authz-info")},
		{ID: message.ContentFormat, Value: []byte{ace.ContentFormatACECBOR}}}}
	ar, err := send(m)
	if err != nil {
		return fmt.Errorf("ace: /authz-info: %w", err)
	}
	if ar.Code != codes.Created {
		return fmt.Errorf("ace: /authz-info answered %v: %s", ar.Code, ar.Payload)
	}
	air, err := ace.ParseAuthzInfoResponse(ar.Payload)
	if err != nil {
		return err
	}
	a.wire.AuthzInfoRequestBytes += len(body)
	a.wire.AuthzInfoRespBytes += len(ar.Payload)
	p, err := ace.ContextParams(tr.Material, nonce1, air.Nonce2, id1, air.ServerRecipientID, true)
	if err != nil {
		return err
	}
	if a.ctx, err = oscore.NewContext(p); err != nil {
		return fmt.Errorf("ace: OSCORE context: %w", err)
	}
	a.tokens++
	return nil
}
