// Package esttest provides a small in-memory Authority for tests of the EST service, its
// bindings and its clients: a two-level CA (root and issuing CA from internal/testpki) that
// signs whatever it is asked, with switches for the policy outcomes the bindings must map
// (pending, forbidden, ...). It is not a policy engine; package authority is.
//
// dtls.go adds a DTLS server kit: a coap.Mux served over coaps:// on loopback with a server
// certificate and a device identity from the same CA.
package esttest

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"math/big"
	"sync"
	"testing"
	"time"

	"coapca/authority"
	"coapca/errs"
	"coapca/internal/testpki"
)

// Authority is a fake estserver.Authority.
type Authority struct {
	// PKI is the issuing CA (under a root) that signs everything; Root, CA, RootKey and CAKey
	// are its parts, spelled out for tests that hand them to the real authority.
	PKI        *testpki.CA
	Root, CA   *x509.Certificate
	RootKey    crypto.Signer
	CAKey      crypto.Signer
	mu         sync.Mutex
	profiles   map[string]*authority.Profile
	pending    map[string]time.Duration // label → answer errs.Pending with this retry
	fail       map[string]error         // label → Issue returns this error
	requests   []authority.CertRequest
	serial     int64
	pendingFor map[string]int // label → number of remaining pending answers (-1 = always)
}

// New returns an Authority with a default profile ("") and the given extra labels, all with
// P-256 keys and client-auth certificates, over a fresh root and issuing CA (testpki).
func New(tb testing.TB, labels ...string) *Authority {
	tb.Helper()
	root := testpki.NewCA(tb, "esttest root")
	ca := root.SubCA(tb, "esttest issuing CA")
	a := &Authority{PKI: ca, Root: root.Cert, CA: ca.Cert, RootKey: root.Key, CAKey: ca.Key,
		profiles: map[string]*authority.Profile{}, pending: map[string]time.Duration{},
		fail: map[string]error{}, pendingFor: map[string]int{}, serial: 100}
	for _, l := range append([]string{""}, labels...) {
		a.profiles[l] = &authority.Profile{Label: l, Validity: time.Hour, KeyType: "P-256",
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			RetryAfter: 2 * time.Second}
	}
	return a
}

// SetProfile replaces (or adds) the profile of p.Label.
func (a *Authority) SetProfile(p authority.Profile) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.profiles[p.Label] = &p
}

// SetPending makes the next n Issue calls for label answer errs.Pending with retry d
// (n < 0: always).
func (a *Authority) SetPending(label string, n int, d time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.pending[label], a.pendingFor[label] = d, n
}

// SetError makes Issue for label return err (nil clears it).
func (a *Authority) SetError(label string, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.fail[label] = err
}

// Requests returns the requests Issue received.
func (a *Authority) Requests() []authority.CertRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]authority.CertRequest(nil), a.requests...)
}

// Profile implements estserver.Authority.
func (a *Authority) Profile(label string) (*authority.Profile, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := a.profiles[label]
	if !ok {
		return nil, errs.New(errs.NotFound, "unknown label %q", label)
	}
	cp := *p
	return &cp, nil
}

// CACerts implements estserver.Authority: issuing CA, then root.
func (a *Authority) CACerts(string) []*x509.Certificate {
	return []*x509.Certificate{a.CA, a.Root}
}

// Issue implements estserver.Authority: it signs a certificate with the CSR's subject and SANs.
func (a *Authority) Issue(ctx context.Context, r authority.CertRequest) (*authority.Issued, error) {
	a.mu.Lock()
	a.requests = append(a.requests, r)
	p, ok := a.profiles[r.Label]
	failErr := a.fail[r.Label]
	n, pend := a.pendingFor[r.Label]
	retry := a.pending[r.Label]
	if pend && n != 0 {
		if n > 0 {
			a.pendingFor[r.Label] = n - 1
		}
	} else {
		pend = false
	}
	a.serial++
	serial := a.serial
	a.mu.Unlock()
	if !ok {
		return nil, errs.New(errs.NotFound, "unknown label %q", r.Label)
	}
	if failErr != nil {
		return nil, failErr
	}
	if pend {
		return nil, errs.NewPending(fmt.Sprintf("req-%s", r.Label), retry)
	}
	if r.CSR == nil {
		return nil, errs.New(errs.BadRequest, "no CSR")
	}
	// The real authority's PoP-linking decision for a device (RFC 7030 §3.5); RAs are not
	// modelled here (authority tests cover them).
	switch {
	case r.Link == authority.LinkMismatched:
		return nil, errs.New(errs.BadRequest, "the challengePassword does not match this session (fake authority)")
	case r.Link == authority.LinkAbsent && p.RequirePoP:
		return nil, errs.New(errs.BadRequest, "the profile requires proof-of-possession linking (fake authority)")
	}
	pub := r.PublicKey
	if pub == nil {
		pub = r.CSR.PublicKey
	}
	now := time.Now()
	t := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: r.CSR.Subject,
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(p.Validity),
		KeyUsage: p.KeyUsage, ExtKeyUsage: p.ExtKeyUsage,
		DNSNames: r.CSR.DNSNames, IPAddresses: r.CSR.IPAddresses, EmailAddresses: r.CSR.EmailAddresses, URIs: r.CSR.URIs,
	}
	der, err := x509.CreateCertificate(rand.Reader, t, a.CA, pub, a.CAKey)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "signing failed")
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "signing failed")
	}
	return &authority.Issued{Cert: c, Chain: a.CACerts(r.Label), Serial: fmt.Sprintf("%x", serial)}, nil
}

// ClientCert issues a client certificate for cn from the issuing CA (e.g. a device identity
// for Peer chains), with extra extended key usage OIDs (e.g. id-kp-cmcRA for a registrar).
func (a *Authority) ClientCert(tb testing.TB, cn string, extraEKU ...asn1.ObjectIdentifier) *testpki.Leaf {
	tb.Helper()
	return a.PKI.Client(tb, cn, extraEKU...)
}
