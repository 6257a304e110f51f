package authority

import (
	"context"
	"crypto/x509"
	"sync"
	"time"

	"coapca/errs"
)

// This file is what a registrar (RFC 9148 §5: EST-coaps in front of an upstream EST server
// over HTTPS) asks of the authority: the same decision as Issue, without issuing, and the
// upstream CA's certificates counted for re-enrollment like this CA's own.

// CANameUpstream is the source name of a registrar's upstream CA (learned from its /cacerts):
// a certificate that chains to it may re-enroll (OpReenroll) through the registrar. No trust
// store may take the name; a rule's "*" does not include it.
const CANameUpstream = "upstream"

// upstreamCAs holds the upstream CA certificates a registrar learned (SetUpstreamCAs).
type upstreamCAs struct {
	mu    sync.RWMutex
	roots *x509.CertPool // nil: no upstream
}

// SetUpstreamCAs makes certificates that chain to certs (an upstream EST server's /cacerts,
// each taken as an anchor: the registrar fetched them over a TLS connection it verified) count
// as issued by the upstream CA: they may re-enroll, keeping their subject and subjectAltName
// (RFC 7030 §4.2.2), and pass the DTLS handshake. An empty certs forgets the upstream.
func (a *Authority) SetUpstreamCAs(certs []*x509.Certificate) {
	var pool *x509.CertPool
	if len(certs) > 0 {
		pool = x509.NewCertPool()
		for _, c := range certs {
			pool.AddCert(c)
		}
	}
	a.upstream.mu.Lock()
	a.upstream.roots = pool
	a.upstream.mu.Unlock()
}

// verifyUpstream verifies chain's leaf against the upstream CA certificates.
func (a *Authority) verifyUpstream(chain []*x509.Certificate, inter *x509.CertPool, now time.Time) (identity, bool) {
	a.upstream.mu.RLock()
	roots := a.upstream.roots
	a.upstream.mu.RUnlock()
	if roots == nil {
		return identity{}, false
	}
	chains, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return identity{}, false
	}
	// Not cached: SetUpstreamCAs may change the anchors at any refresh of /cacerts.
	return identity{leaf: chain[0], chain: chains[0], source: CANameUpstream}, true
}

// Authorization is the authority's answer to Authorize: who the requester is and which kind
// of rule admitted it.
type Authorization struct {
	Kind Kind
	// Origin is the lineage the requester vouches for ("ts:STORE", "ra:STORE", "psk:NAME", "ca",
	// "upstream", ...), as Issue would record it.
	Origin string
	// Requester describes the requester for the log.
	Requester string
}

// Authorize makes every decision Issue makes for r — authentication, the matrix of
// docs/security.md, PoP linking (r.Link), the profile's subject and SAN rules, an LDevID
// keeping its own identity — without issuing or recording anything: a registrar asks it before
// it relays r to its upstream CA (RFC 9148 §5: the registrar MUST authenticate and authorize
// the client, and verifies PoP linking that the upstream cannot see). r.PublicKey may be nil
// for server-side key generation done upstream (the key type is then not checked).
//
// Errors as Issue, except errs.Pending (manual approval is the upstream's).
func (a *Authority) Authorize(ctx context.Context, r CertRequest) (*Authorization, error) {
	p, ok := a.profiles[r.Label]
	if !ok {
		return nil, errs.New(errs.NotFound, "unknown label %q", r.Label)
	}
	if r.CSR == nil {
		return nil, errs.New(errs.BadRequest, "no certificate request")
	}
	who, err := a.authorize(ctx, r, p)
	if err != nil {
		a.log.Info("registrar request refused", "op", r.Op, "label", r.Label, "transport", r.Requester.Transport,
			"addr", r.Requester.Addr, "requester", who.String(), "error", errs.Message(err))
		return nil, err
	}
	pub := r.PublicKey
	if pub == nil && r.Op != OpServerKeyGen {
		pub = r.CSR.PublicKey
	}
	if _, err := a.template(p, r, who, pub); err != nil {
		a.log.Info("registrar request refused", "op", r.Op, "label", r.Label, "transport", r.Requester.Transport,
			"addr", r.Requester.Addr, "requester", who.String(), "error", errs.Message(err))
		return nil, err
	}
	return &Authorization{Kind: who.kind, Origin: who.origin, Requester: who.String()}, nil
}
