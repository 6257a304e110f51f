package ace

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"coapca/oscore"
)

// Contexts is where the resource server installs the OSCORE contexts it derives (the OSCORE
// layer of the coap:// listener).
type Contexts interface {
	// FreeRecipientID returns a Recipient ID no context uses, different from avoid.
	FreeRecipientID(avoid []byte) ([]byte, bool)
	// AddTokenContext installs c for requests until expires (the token's exp); ref names the
	// token (Grants' reference).
	AddTokenContext(c *oscore.Context, ref string, expires time.Time)
	// RemoveContext drops c.
	RemoveContext(c *oscore.Context)
}

// Grants receives what a verified token grants: the authorization decision is the caller's
// (the authority), this package only verifies.
type Grants interface {
	// Grant registers the token's grant under ref; an error refuses the token.
	Grant(ref, issuer string, c *Claims, scope []Scope) error
	// Revoke forgets ref's grant.
	Revoke(ref string)
}

// RSConfig configures a resource server.
type RSConfig struct {
	// Audiences are the aud values that name this server (RFC 9200 §5.10.1.1: the RS MUST
	// check that it is in the audience). Required.
	Audiences []string
	// Keys are the authorization servers' keys (a token's kid selects one). Required. With more
	// than one key, every key names its Issuer: a token is accepted only with the iss of the
	// key that authenticated it.
	Keys []Key
	// Issuers, when set, are the iss values accepted; a token without iss is then refused.
	Issuers []string
	// ASName names the AS for a token without iss whose key names no Issuer (a single key;
	// default "as").
	ASName string
	// MaxTokens bounds the tokens held (and remembered against replay); default 10000.
	MaxTokens int
	// ReplayWindowSynchronized: contexts are new on both sides (fresh nonces), so their replay
	// windows start synchronized.
	Contexts Contexts
	Grants   Grants
	Logger   *slog.Logger
	Now      func() time.Time // nil = time.Now
	Rand     io.Reader        // nil = crypto/rand
}

// ResourceServer verifies access tokens posted to /authz-info and derives their OSCORE
// contexts (RFC 9203 §4). It is safe for concurrent use.
type ResourceServer struct {
	cfg RSConfig
	log *slog.Logger

	mu     sync.Mutex
	seen   map[string]time.Time // cti (or token hash) → exp: refused a second time
	active map[string]*active   // by issuer + "\x00" + subject (a sub-less token: by its cti)
}

type active struct {
	ref     string
	ctx     *oscore.Context
	expires time.Time
}

// NewResourceServer checks cfg and returns a resource server.
func NewResourceServer(cfg RSConfig) (*ResourceServer, error) {
	if len(cfg.Audiences) == 0 {
		return nil, errors.New("ace: a resource server needs its audience names")
	}
	if len(cfg.Keys) == 0 {
		return nil, errors.New("ace: a resource server needs the AS's key")
	}
	for i := range cfg.Keys {
		if err := cfg.Keys[i].Validate(); err != nil {
			return nil, err
		}
		// With several ASes' keys, a key that names no AS would let its AS claim any iss.
		if len(cfg.Keys) > 1 && cfg.Keys[i].Issuer == "" {
			return nil, fmt.Errorf("ace: key %x names no issuer: with several AS keys each key names the AS it speaks for", cfg.Keys[i].KID)
		}
	}
	if cfg.Contexts == nil || cfg.Grants == nil {
		return nil, errors.New("ace: a resource server needs Contexts and Grants")
	}
	if cfg.ASName == "" {
		cfg.ASName = "as"
	}
	if cfg.MaxTokens <= 0 {
		cfg.MaxTokens = 10000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &ResourceServer{cfg: cfg, log: log, seen: map[string]time.Time{}, active: map[string]*active{}}, nil
}

// Verify checks a token and returns its claims: the COSE protection with the AS key its kid
// names (COSE_Encrypt0, or COSE_Mac0/COSE_Sign1 nested in COSE_Encrypt0: the Master Secret is
// never accepted unencrypted), the audience, the validity period and the OSCORE input material. It does not record
// the token (see AuthzInfo).
func (rs *ResourceServer) Verify(token []byte) (*Claims, error) {
	payload, encrypted, by, err := openToken(token, rs.cfg.Keys)
	if err != nil {
		return nil, err
	}
	c, err := ParseClaims(payload)
	if err != nil {
		return nil, err
	}
	// RFC 9200 §5.10.1.1: the RS verifies the token with the cryptographic material it shares
	// with a recognized AS, and the claims are only that AS's word: a key vouches for its own
	// AS alone, so a token whose iss names another AS is refused (4.01), and one without iss
	// is its key's AS's.
	if by.Issuer != "" && c.Issuer != "" && c.Issuer != by.Issuer {
		return nil, fmt.Errorf("%w: %q in a token authenticated by the key of %q", ErrIssuer, c.Issuer, by.Issuer)
	}
	now := rs.cfg.Now()
	// RFC 9200 §5.10.1.1: the RS MUST check the audience and the expiry. A token without exp
	// would be valid forever: refused.
	if c.Expires.IsZero() {
		return nil, fmt.Errorf("%w: the token has no exp", ErrExpired)
	}
	if !now.Before(c.Expires) {
		return nil, fmt.Errorf("%w at %s", ErrExpired, c.Expires.Format(time.RFC3339))
	}
	if !c.NotBefore.IsZero() && now.Before(c.NotBefore) {
		return nil, fmt.Errorf("%w: not valid before %s", ErrExpired, c.NotBefore.Format(time.RFC3339))
	}
	ok := false
	for _, a := range c.Audience {
		ok = ok || slices.Contains(rs.cfg.Audiences, a)
	}
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrAudience, c.Audience)
	}
	if len(rs.cfg.Issuers) > 0 && !slices.Contains(rs.cfg.Issuers, c.Issuer) {
		return nil, fmt.Errorf("%w: %q", ErrIssuer, c.Issuer)
	}
	if c.Issuer == "" {
		c.Issuer = by.Issuer // a token without iss is its key's AS's (AuthzInfo: else ASName)
	}
	if c.OSCORE == nil {
		return nil, ErrNoOSCORE // RFC 9203 §3.2.1: the cnf of this profile
	}
	if !encrypted {
		// The token reached /authz-info unprotected: a Master Secret in a merely MACed or
		// signed token was readable on the way, and whoever read it can derive the context.
		return nil, ErrPlaintextKey
	}
	if c.Scope == "" {
		return nil, fmt.Errorf("%w: the token has no scope", ErrMalformed)
	}
	return c, nil
}

// AuthzInfo processes an /authz-info body (RFC 9203 §4.1–§4.3): it verifies the token, refuses
// one seen before, hands the grant to Grants, derives the OSCORE context with a fresh nonce2
// and a free ace_server_recipientid, installs it (replacing the context of the same client's
// previous token) and returns the answer. Errors wrapping the Err* values mean 4.01; others
// 4.00 (a malformed body) or, for ErrTooManyTokens, 5.03.
func (rs *ResourceServer) AuthzInfo(body []byte) (*AuthzInfoResponse, error) {
	req, err := ParseAuthzInfoRequest(body)
	if err != nil {
		return nil, err
	}
	c, err := rs.Verify(req.AccessToken)
	if err != nil {
		return nil, err
	}
	scope, err := ParseScope(c.Scope)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	issuer := c.Issuer
	if issuer == "" {
		issuer = rs.cfg.ASName
	}
	id := c.CTI
	if id == nil {
		h := sha256.Sum256(req.AccessToken)
		id = h[:]
	}
	ref := hex.EncodeToString(id)
	now := rs.cfg.Now()

	rs.mu.Lock()
	defer rs.mu.Unlock()
	for k, exp := range rs.seen {
		if !now.Before(exp) {
			delete(rs.seen, k)
		}
	}
	// A token is posted once: a replayed token (the same cti) would let whoever captured it
	// make its own context if the input material ever leaked, and the client gets a new
	// context by asking the AS for a new token.
	if _, dup := rs.seen[ref]; dup {
		return nil, fmt.Errorf("%w: cti %s", ErrReplay, ref)
	}
	if len(rs.seen) >= rs.cfg.MaxTokens {
		return nil, ErrTooManyTokens
	}
	nonce2 := make([]byte, NonceSize)
	if _, err := io.ReadFull(rs.cfg.Rand, nonce2); err != nil {
		return nil, fmt.Errorf("ace: nonce2: %w", err)
	}
	// RFC 9203 §4.2: ace_server_recipientid MUST differ from ace_client_recipientid and be
	// unused as a Recipient ID here.
	id2, ok := rs.cfg.Contexts.FreeRecipientID(req.ClientRecipientID)
	if !ok {
		return nil, ErrTooManyTokens
	}
	if bytes.Equal(id2, req.ClientRecipientID) {
		return nil, errors.New("ace: Recipient IDs collide")
	}
	p, err := ContextParams(c.OSCORE, req.Nonce1, nonce2, req.ClientRecipientID, id2, false)
	if err != nil {
		return nil, err
	}
	p.Logger = rs.log
	octx, err := oscore.NewContext(p)
	if err != nil {
		return nil, fmt.Errorf("%w: OSCORE input material: %v", ErrMalformed, err)
	}
	if err := rs.cfg.Grants.Grant(ref, issuer, c, scope); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	rs.seen[ref] = c.Expires
	key := issuer + "\x00" + c.Subject
	if c.Subject == "" {
		// Without a sub the RS cannot tell that two tokens are for the same client: only a
		// token of the same client replaces a context (RFC 9203 §4.4), so a sub-less token
		// supersedes nothing (the cti keeps its entry apart).
		key = "\x00cti\x00" + ref
	}
	if old := rs.active[key]; old != nil {
		// A new token from the same client supersedes the old one: its context and grant go.
		rs.cfg.Contexts.RemoveContext(old.ctx)
		rs.cfg.Grants.Revoke(old.ref)
	}
	for k, a := range rs.active {
		if !now.Before(a.expires) {
			rs.cfg.Contexts.RemoveContext(a.ctx)
			rs.cfg.Grants.Revoke(a.ref)
			delete(rs.active, k)
		}
	}
	rs.active[key] = &active{ref: ref, ctx: octx, expires: c.Expires}
	rs.cfg.Contexts.AddTokenContext(octx, ref, c.Expires)
	rs.log.Info("ace: access token accepted", "issuer", issuer, "subject", c.Subject, "scope", c.Scope,
		"cti", ref, "expires", c.Expires)
	return &AuthzInfoResponse{Nonce2: nonce2, ServerRecipientID: id2}, nil
}

// Unauthorized reports whether err is a token refusal (4.01, RFC 9200 §5.10.1.1).
func Unauthorized(err error) bool {
	for _, e := range []error{ErrUnknownKey, ErrVerify, ErrExpired, ErrAudience, ErrIssuer, ErrReplay, ErrNoOSCORE,
		ErrPlaintextKey, ErrMalformed} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
