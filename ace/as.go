package ace

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"
)

// More ACE parameters (RFC 9200 §8.10).
const (
	paramGrantType = 33
	// grantClientCredentials is the grant_type value client_credentials (RFC 9200 §8.11).
	grantClientCredentials = 2
)

// Error codes of the /token endpoint (RFC 9200 §5.8.3, §8.4).
const (
	ErrCodeInvalidRequest   = 1
	ErrCodeInvalidClient    = 2
	ErrCodeUnauthorized     = 4
	ErrCodeUnsupportedGrant = 5
	ErrCodeInvalidScope     = 6
)

// Audience is a resource server (or group of them) the AS issues tokens for.
type Audience struct {
	Name string // the aud value
	// Key protects the tokens: an Encrypt0 key shared with the RS, or a Mac0/Sign1 key whose
	// tokens are then encrypted with Encrypt (nested, see ProtectToken).
	Key     Key
	Encrypt *Key
}

// Client is a client registered at the AS.
type Client struct {
	Name      string   // the client's identity (the sub of its tokens)
	Scope     string   // the widest scope it may ask for (ParseScope syntax)
	Audiences []string // the audiences it may ask tokens for
}

// ASConfig configures an authorization server.
type ASConfig struct {
	Name      string        // iss of the tokens; required
	Audiences []Audience    // at least one
	Clients   []Client      // at least one
	Lifetime  time.Duration // token lifetime; default 1 h
	Logger    *slog.Logger
	Now       func() time.Time
	Rand      io.Reader
}

// AuthorizationServer issues access tokens for the OSCORE profile (RFC 9200 §5.8, RFC 9203
// §3): it authenticates the client by the channel the request came over (the caller passes
// the client's name), checks that the client may ask for the audience and scope, and answers
// with the token and the OSCORE_Input_Material. It keeps no state per token.
type AuthorizationServer struct {
	cfg       ASConfig
	log       *slog.Logger
	audiences map[string]Audience
	clients   map[string]clientReg
}

type clientReg struct {
	scope     []Scope
	audiences map[string]bool
}

// NewAuthorizationServer checks cfg and returns an authorization server.
func NewAuthorizationServer(cfg ASConfig) (*AuthorizationServer, error) {
	if cfg.Name == "" {
		return nil, errors.New("ace: the authorization server needs a name (the tokens' iss)")
	}
	as := &AuthorizationServer{cfg: cfg, audiences: map[string]Audience{}, clients: map[string]clientReg{}}
	for _, a := range cfg.Audiences {
		if a.Name == "" {
			return nil, errors.New("ace: an audience needs a name")
		}
		if err := a.Key.Validate(); err != nil {
			return nil, fmt.Errorf("ace: audience %q: %w", a.Name, err)
		}
		if a.Key.Alg == AlgES256 && a.Key.PrivateKey == nil {
			return nil, fmt.Errorf("ace: audience %q: ES256 needs the signing key", a.Name)
		}
		if a.Key.Alg != AlgAESCCM16_64_128 {
			// RFC 9203 §3.2.1: the token carries the Master Secret; it is encrypted.
			if a.Encrypt == nil {
				return nil, fmt.Errorf("ace: audience %q: a COSE_Mac0/COSE_Sign1 token carries the Master Secret and must be encrypted too: give an AES-CCM-16-64-128 encryption key", a.Name)
			}
			if err := a.Encrypt.Validate(); err != nil || a.Encrypt.Alg != AlgAESCCM16_64_128 {
				return nil, fmt.Errorf("ace: audience %q: the encryption key must be AES-CCM-16-64-128 (alg 10)", a.Name)
			}
		}
		as.audiences[a.Name] = a
	}
	for _, c := range cfg.Clients {
		sc, err := ParseScope(c.Scope)
		if err != nil {
			return nil, fmt.Errorf("ace: client %q: %w", c.Name, err)
		}
		reg := clientReg{scope: sc, audiences: map[string]bool{}}
		for _, a := range c.Audiences {
			if _, ok := as.audiences[a]; !ok {
				return nil, fmt.Errorf("ace: client %q names unknown audience %q", c.Name, a)
			}
			reg.audiences[a] = true
		}
		if c.Name == "" {
			return nil, errors.New("ace: a client needs a name")
		}
		as.clients[c.Name] = reg
	}
	if len(as.audiences) == 0 || len(as.clients) == 0 {
		return nil, errors.New("ace: the authorization server needs audiences and clients")
	}
	if as.cfg.Lifetime <= 0 {
		as.cfg.Lifetime = time.Hour
	}
	if as.cfg.Now == nil {
		as.cfg.Now = time.Now
	}
	if as.cfg.Rand == nil {
		as.cfg.Rand = rand.Reader
	}
	as.log = cfg.Logger
	if as.log == nil {
		as.log = slog.New(slog.DiscardHandler)
	}
	return as, nil
}

// TokenError is a refusal of the /token endpoint (RFC 9200 §5.8.3).
type TokenError struct {
	Code int // ErrCode*
	Msg  string
}

func (e *TokenError) Error() string {
	return fmt.Sprintf("ace: token request refused (error %d): %s", e.Code, e.Msg)
}

// Body is the error response body {error: code} (application/ace+cbor).
func (e *TokenError) Body() []byte { return marshal(map[int]int{paramError: e.Code}) }

// TokenRequest is a request to /token (RFC 9200 §5.8.1).
type TokenRequest struct {
	Audience string
	Scope    string
}

// Marshal encodes the request as application/ace+cbor: grant_type client_credentials, the
// audience and the scope (the client is authenticated by the OSCORE context, RFC 9203 §3.1).
func (r *TokenRequest) Marshal() []byte {
	m := map[int]any{paramGrantType: grantClientCredentials, paramAudience: r.Audience}
	if r.Scope != "" {
		m[paramScope] = r.Scope
	}
	return marshal(m)
}

// ParseTokenRequest decodes a /token body.
func ParseTokenRequest(b []byte) (*TokenRequest, error) {
	raw, err := paramMap(b)
	if err != nil {
		return nil, err
	}
	r := &TokenRequest{}
	if v, ok := raw[paramGrantType]; ok {
		var g int
		if err := intOnly(v, &g); err != nil || g != grantClientCredentials {
			return nil, &TokenError{ErrCodeUnsupportedGrant, "only client_credentials"}
		}
	}
	v, ok := raw[paramAudience]
	if !ok {
		return nil, &TokenError{ErrCodeInvalidRequest, "audience is required"}
	}
	if err := tstr(v, &r.Audience); err != nil {
		return nil, &TokenError{ErrCodeInvalidRequest, "audience: " + err.Error()}
	}
	if v, ok := raw[paramScope]; ok {
		if err := tstr(v, &r.Scope); err != nil {
			return nil, &TokenError{ErrCodeInvalidScope, "scope: " + err.Error()}
		}
	}
	return r, nil
}

// TokenResponse is the AS's answer (RFC 9200 §5.8.2, RFC 9203 §3.2).
type TokenResponse struct {
	AccessToken []byte
	ExpiresIn   int
	Material    *InputMaterial // cnf: the client's copy of the OSCORE input material
}

// Marshal encodes the response: access_token, ace_profile coap_oscore, expires_in, cnf.
func (r *TokenResponse) Marshal() []byte {
	return marshal(map[int]any{paramAccessToken: r.AccessToken, paramACEProfile: ProfileCoAPOSCORE,
		paramExpiresIn: r.ExpiresIn, paramCnf: map[int]any{cnfOSC: r.Material.toMap()}})
}

// ParseTokenResponse decodes the AS's answer (client side). RFC 9203 §3.2: the cnf MUST hold
// the OSCORE_Input_Material; an ace_profile other than coap_oscore is refused.
func ParseTokenResponse(b []byte) (*TokenResponse, error) {
	raw, err := paramMap(b)
	if err != nil {
		return nil, err
	}
	r := &TokenResponse{}
	v, ok := raw[paramAccessToken]
	if !ok {
		return nil, errors.New("ace: token response without access_token")
	}
	if err := bstr(v, &r.AccessToken); err != nil {
		return nil, fmt.Errorf("ace: access_token: %w", err)
	}
	if v, ok := raw[paramACEProfile]; ok {
		var p int
		if err := intOnly(v, &p); err != nil || p != ProfileCoAPOSCORE {
			return nil, fmt.Errorf("ace: ace_profile is not coap_oscore (RFC 9203 §9.1)")
		}
	}
	if v, ok := raw[paramExpiresIn]; ok {
		if err := intOnly(v, &r.ExpiresIn); err != nil {
			return nil, fmt.Errorf("ace: expires_in: %w", err)
		}
	}
	cnf, ok := raw[paramCnf]
	if !ok {
		return nil, errors.New("ace: token response without cnf (RFC 9203 §3.2)")
	}
	// cnf is the sender's bytes, well-formed CBOR but not necessarily valid (a bignum tag
	// around an integer): re-encoding it can fail, and must not panic as marshal does on
	// this package's own values.
	claims, err := wire.enc.Marshal(map[int]any{claimCnf: cnf})
	if err != nil {
		return nil, fmt.Errorf("ace: cnf: %w", err)
	}
	c, err := ParseClaims(claims)
	if err != nil || c.OSCORE == nil {
		return nil, fmt.Errorf("ace: cnf: %v", err)
	}
	r.Material = c.OSCORE
	return r, nil
}

// Token answers a token request of the client named client (authenticated by the caller's
// transport). The scope defaults to the client's registered scope; a wider one is refused
// (RFC 9200 §5.8.3 invalid_scope), as is an audience the client is not registered for.
func (as *AuthorizationServer) Token(client string, req *TokenRequest) (*TokenResponse, error) {
	reg, ok := as.clients[client]
	if !ok {
		return nil, &TokenError{ErrCodeInvalidClient, fmt.Sprintf("unknown client %q", client)}
	}
	aud, ok := as.audiences[req.Audience]
	if !ok || !reg.audiences[req.Audience] {
		return nil, &TokenError{ErrCodeUnauthorized, fmt.Sprintf("client %q may not ask for audience %q", client, req.Audience)}
	}
	scope := req.Scope
	if scope == "" {
		scope = as.scopeString(reg.scope)
	}
	want, err := ParseScope(scope)
	if err != nil {
		return nil, &TokenError{ErrCodeInvalidScope, err.Error()}
	}
	if !Covers(reg.scope, want) {
		return nil, &TokenError{ErrCodeInvalidScope, fmt.Sprintf("client %q may not ask for scope %q", client, scope)}
	}
	rnd := func(n int) ([]byte, error) {
		b := make([]byte, n)
		_, err := io.ReadFull(as.cfg.Rand, b)
		return b, err
	}
	id, err1 := rnd(8)
	ms, err2 := rnd(16)
	salt, err3 := rnd(8)
	cti, err4 := rnd(8)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return nil, fmt.Errorf("ace: randomness: %w", err)
	}
	now := as.cfg.Now().Truncate(time.Second)
	mat := &InputMaterial{ID: id, MasterSecret: ms, Salt: salt}
	claims := &Claims{Issuer: as.cfg.Name, Subject: client, Audience: []string{aud.Name}, IssuedAt: now,
		Expires: now.Add(as.cfg.Lifetime), CTI: cti, Scope: scope, OSCORE: mat}
	var tok []byte
	if aud.Key.Alg == AlgAESCCM16_64_128 {
		tok, err = ProtectToken(claims.Marshal(), nil, aud.Key, as.cfg.Rand)
	} else {
		tok, err = ProtectToken(claims.Marshal(), &aud.Key, *aud.Encrypt, as.cfg.Rand)
	}
	if err != nil {
		return nil, err
	}
	as.log.Info("ace: access token issued", "client", client, "audience", aud.Name, "scope", scope)
	return &TokenResponse{AccessToken: tok, ExpiresIn: int(as.cfg.Lifetime / time.Second), Material: mat}, nil
}

func (as *AuthorizationServer) scopeString(sc []Scope) string {
	var s string
	for i, e := range sc {
		if i > 0 {
			s += " "
		}
		switch len(e.Ops) {
		case 1:
			s += e.Ops[0]
		default:
			s += "est"
		}
		if e.Label != "" {
			s += "/" + e.Label
		}
	}
	return s
}
