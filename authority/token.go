package authority

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"coapca/errs"
)

// TokenGrant is what a verified ACE access token (RFC 9200 §5.10, RFC 9203) grants: the front
// door that verified the token (the resource server's /authz-info) registers it with AllowToken
// and then names it in Requester.Token. The authority decides with it like with any other
// requester: a profile rule of kind token must admit the Issuer, and the Scopes must cover the
// label and the operation.
type TokenGrant struct {
	// Issuer names the authorization server (the rule's From names it).
	Issuer string
	// Subject names the client the token was issued to (RFC 8392 sub, or the AS's client name);
	// the certificate's origin is "token:ISSUER/SUBJECT".
	Subject string
	// Scopes are the labels and operations granted; none = nothing.
	Scopes []TokenScope
	// Expires is the token's exp (RFC 8392 §3.1.4); after it the grant is refused. Zero = no
	// expiry given (the resource server then applies its own lifetime).
	Expires time.Time
}

// TokenScope grants operations under one label ("" = the default profile).
type TokenScope struct {
	Label string
	Ops   []Op // empty = enroll and serverkeygen
}

type tokenGrant struct {
	TokenGrant
}

func (g *tokenGrant) covers(label string, op Op) bool {
	for _, s := range g.Scopes {
		if s.Label != label {
			continue
		}
		if len(s.Ops) == 0 && (op == OpEnroll || op == OpServerKeyGen) || slices.Contains(s.Ops, op) {
			return true
		}
	}
	return false
}

// maxTokens bounds the registered grants; expired ones are dropped first.
const maxTokens = 100000

// AllowToken registers the grant of a verified access token under ref (the front door's
// reference for the token, e.g. its cti). Registering a ref again replaces its grant (a new
// token for the same context, RFC 9203 §4.4). Unknown labels and operations are refused.
func (a *Authority) AllowToken(ref string, g TokenGrant) error {
	if ref == "" || g.Issuer == "" || g.Subject == "" {
		return errors.New("authority: an access token grant needs a reference, an issuer and a subject")
	}
	for _, s := range g.Scopes {
		if _, ok := a.profiles[s.Label]; !ok {
			return fmt.Errorf("authority: access token scope names unknown label %q", s.Label)
		}
		for _, op := range s.Ops {
			if op != OpEnroll && op != OpServerKeyGen {
				return fmt.Errorf("authority: access token scope names operation %q (want enroll or serverkeygen)", op)
			}
		}
	}
	c := &tokenGrant{g}
	c.Scopes = slices.Clone(g.Scopes)
	now := a.now()
	a.psMu.Lock()
	defer a.psMu.Unlock()
	if a.tokens == nil {
		a.tokens = map[string]*tokenGrant{}
	}
	if len(a.tokens) >= maxTokens {
		for k, t := range a.tokens {
			if !t.Expires.IsZero() && now.After(t.Expires) {
				delete(a.tokens, k)
			}
		}
		if len(a.tokens) >= maxTokens {
			return errs.New(errs.Unavailable, "too many access tokens registered")
		}
	}
	a.tokens[ref] = c
	return nil
}

// DropToken forgets a grant (its context was replaced or dropped).
func (a *Authority) DropToken(ref string) {
	a.psMu.Lock()
	defer a.psMu.Unlock()
	delete(a.tokens, ref)
}

// tokenGrant returns the registered, unexpired grant of ref.
func (a *Authority) tokenGrant(ref string) (*tokenGrant, error) {
	a.psMu.RLock()
	g := a.tokens[ref]
	a.psMu.RUnlock()
	if g == nil {
		return nil, errs.New(errs.Unauthorized, "unknown access token %q", ref)
	}
	// RFC 9200 §5.10.1.1: an expired token MUST no longer be used; its context is refused too.
	if !g.Expires.IsZero() && !a.now().Before(g.Expires) {
		return nil, errs.New(errs.Unauthorized, "access token %q expired at %s", ref, g.Expires.UTC().Format(time.RFC3339))
	}
	return g, nil
}
