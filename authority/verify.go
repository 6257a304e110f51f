package authority

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"coapca/errs"
	"coapca/store"
)

// identity is an authenticated (and, after authorize, authorized) requester.
type identity struct {
	kind      Kind                // after authorize: the kind of the rule that admitted it
	leaf      *x509.Certificate   // client certificate; nil for secrets
	chain     []*x509.Certificate // verified chain, leaf first, up to the trust anchor
	source    string              // trust store name, CANameOurs, "secret" or "psk"
	ours      *store.Cert         // the record when leaf is a certificate this CA issued
	secretRef string
	preShared string      // name of a pre-shared key (AllowPreShared)
	user      string      // HTTP Basic user name
	token     *tokenGrant // the grant of an ACE access token (AllowToken)
	rule      *rule       // the requester rule that admitted an enrollment; nil for re-enrollment
	origin    string      // the record's RequesterRef: where this certificate's lineage started
	// leafSubject and leafIssuer are leaf.Subject.String() and leaf.Issuer.String(), once
	// cacheNames has run: a request needs them for its record and its log line, and
	// pkix.Name.String is not cheap.
	leafSubject, leafIssuer string
}

// cacheNames computes the leaf's subject and issuer strings once for the request. known maps
// the raw names of the configured CA certificates to their strings (Authority.knownDNs):
// identical DER names have identical strings.
func (w *identity) cacheNames(known map[string]string) {
	if w.leaf == nil || w.leafSubject != "" {
		return
	}
	w.leafSubject = w.leaf.Subject.String()
	var ok bool
	if w.leafIssuer, ok = known[string(w.leaf.RawIssuer)]; !ok {
		w.leafIssuer = w.leaf.Issuer.String()
	}
}

// subjectString is leaf.Subject.String() (the leaf must be set).
func (w identity) subjectString() string {
	if w.leafSubject != "" {
		return w.leafSubject
	}
	return w.leaf.Subject.String()
}

// issuerString is leaf.Issuer.String() (the leaf must be set).
func (w identity) issuerString() string {
	if w.leafIssuer != "" {
		return w.leafIssuer
	}
	return w.leaf.Issuer.String()
}

// authenticate decides who sent chain (or the shared secret ref). It checks, in order: a
// certificate recorded in our store (byte-identical DER, not revoked, in its validity), a
// chain to our CA, then each manufacturer trust store.
func (a *Authority) authenticate(ctx context.Context, chain []*x509.Certificate, secretRef string) (identity, error) {
	return a.authenticateRequester(ctx, Requester{Chain: chain, SecretRef: secretRef})
}

// authenticateRequester is authenticate with the pre-shared identities too. A refusal is
// logged at Info with its reason (expired, unknown issuer, revoked, unknown secret, ...), so an
// operator sees why a device cannot enroll.
func (a *Authority) authenticateRequester(ctx context.Context, r Requester) (identity, error) {
	who, reason, err := a.identify(ctx, r)
	if err != nil {
		attrs := []any{"reason", reason, "transport", r.Transport, "protocol", r.Protocol, "addr", r.Addr, "error", errs.Message(err)}
		switch {
		case len(r.Chain) > 0:
			attrs = append(attrs, "subject", r.Chain[0].Subject.String(), "issuer", r.Chain[0].Issuer.String(),
				"serial", store.FormatSerial(r.Chain[0].SerialNumber))
		case r.SecretRef != "":
			attrs = append(attrs, "secret", r.SecretRef)
		case r.PreShared != "":
			attrs = append(attrs, "pre_shared", r.PreShared)
		case r.Token != "":
			attrs = append(attrs, "token", r.Token)
		case r.User != "":
			attrs = append(attrs, "user", r.User)
		}
		level := slog.LevelInfo
		if errs.KindOf(err) == errs.Internal {
			level = slog.LevelError
		}
		a.log.Log(ctx, level, "authentication refused", attrs...)
	}
	return who, err
}

// verifyReason names why a chain did not verify, for the log.
func verifyReason(err error) string {
	var inv x509.CertificateInvalidError
	var ua x509.UnknownAuthorityError
	switch {
	case errors.As(err, &inv) && inv.Reason == x509.Expired:
		return "expired or not yet valid"
	case errors.As(err, &inv):
		return "invalid certificate"
	case errors.As(err, &ua):
		return "unknown issuer"
	}
	return "not trusted"
}

func (a *Authority) identify(ctx context.Context, r Requester) (identity, string, error) {
	chain, secretRef := r.Chain, r.SecretRef
	if len(chain) == 0 && secretRef == "" && r.PreShared == "" && r.Token != "" {
		g, err := a.tokenGrant(r.Token)
		if err != nil {
			return identity{}, "access token", err
		}
		return identity{source: "token", token: g}, "", nil
	}
	if len(chain) == 0 && secretRef == "" && r.PreShared != "" {
		a.psMu.RLock()
		_, ok := a.preShared[r.PreShared]
		a.psMu.RUnlock()
		if !ok {
			return identity{}, "unknown pre-shared identity", errs.New(errs.Unauthorized, "unknown pre-shared identity %q", r.PreShared)
		}
		return identity{source: "psk", preShared: r.PreShared}, "", nil
	}
	if len(chain) == 0 && secretRef == "" && r.PreShared == "" && r.User != "" {
		if !a.checkPassword(r.User, r.Password) {
			return identity{}, "wrong user name or password", errs.New(errs.Unauthorized, "wrong user name or password")
		}
		return identity{source: "user", user: r.User}, "", nil
	}
	if len(chain) == 0 {
		if secretRef != "" {
			if _, ok := a.secrets[secretRef]; !ok {
				return identity{}, "unknown MAC secret", errs.New(errs.Unauthorized, "unknown MAC secret reference %q", secretRef)
			}
			return identity{source: "secret", secretRef: secretRef}, "", nil
		}
		// RFC 9148 §3: the client MUST authenticate with a certificate.
		return identity{}, "no credential", errs.New(errs.Unauthorized, "a client certificate is required")
	}
	leaf := chain[0]
	now := a.now()
	if a.issuedByUs(leaf) {
		rec, err := a.store.Cert(ctx, store.FormatSerial(leaf.SerialNumber))
		switch {
		case err == nil && bytes.Equal(rec.DER, leaf.Raw):
			// The DER is our own record, so its signature is ours; the handshake (or the CMP
			// protection) proved possession of its key.
			if rec.Revoked() {
				return identity{}, "revoked", errs.New(errs.Forbidden, "client certificate %s is revoked", rec.Serial)
			}
			if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
				return identity{}, "expired or not yet valid", errs.New(errs.Unauthorized, "client certificate %s is expired or not yet valid", rec.Serial)
			}
			return identity{leaf: leaf, chain: append([]*x509.Certificate{leaf}, a.chain...),
				source: CANameOurs, ours: rec}, "", nil
		case err != nil && !errors.Is(err, store.ErrNotFound):
			return identity{}, "store error", errs.Wrap(errs.Internal, err, "cannot look up the client certificate")
		}
		// Not recorded (e.g. the server's own certificate): verify it like any other.
	}
	if e, ok := a.chains.get(chain, now); ok {
		return identity{leaf: leaf, chain: e.chain, source: e.source}, "", nil
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	opts := x509.VerifyOptions{
		Intermediates: inter,
		CurrentTime:   now,
		// IDevIDs often carry no extendedKeyUsage, or one that names no TLS purpose.
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}
	var firstErr error
	// Our own CA: intermediates of our chain are added to the client-sent ones.
	ourOpts := opts
	ourOpts.Roots = a.caRoots
	ourInter := inter.Clone()
	for _, c := range a.chain[:len(a.chain)-1] {
		ourInter.AddCert(c)
	}
	ourOpts.Intermediates = ourInter
	if chains, err := leaf.Verify(ourOpts); err == nil {
		a.remember(chain, CANameOurs, chains[0], false, now)
		return identity{leaf: leaf, chain: chains[0], source: CANameOurs}, "", nil
	} else {
		firstErr = err
	}
	for _, ts := range a.trust {
		o := opts
		o.Roots = ts.roots
		chains, err := leaf.Verify(o)
		if err != nil && ts.allowExpired && now.After(leaf.NotAfter) {
			// RFC 9148 §9: an IDevID may outlive its notAfter; this store accepts that. The
			// chain is checked as of the leaf's last valid second.
			o.CurrentTime = leaf.NotAfter.Add(-time.Second)
			chains, err = leaf.Verify(o)
		}
		if err == nil {
			a.remember(chain, ts.name, chains[0], ts.allowExpired, now)
			return identity{leaf: leaf, chain: chains[0], source: ts.name}, "", nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	if who, ok := a.verifyUpstream(chain, inter, now); ok {
		return who, "", nil
	}
	return identity{}, verifyReason(firstErr), errs.Wrap(errs.Unauthorized, firstErr, "client certificate %s is not trusted", leaf.Subject)
}

// remember caches a verified chain under the chain as presented and as verified: the DTLS
// handshake presents the device's certificates, and the request that follows carries the
// verified chain (leaf to root) that VerifyClient returned.
func (a *Authority) remember(presented []*x509.Certificate, source string, verified []*x509.Certificate, leafMayExpire bool, now time.Time) {
	a.chains.put(presented, source, verified, leafMayExpire, now)
	a.chains.put(verified, source, verified, leafMayExpire, now)
}

// VerifyClient verifies a DTLS/TLS client chain (raw DER, leaf first) during the handshake:
// it must chain to a manufacturer trust store or to this CA, and a certificate this CA issued
// must not be revoked. It returns the verified chain, leaf first.
func (a *Authority) VerifyClient(rawCerts [][]byte) ([]*x509.Certificate, error) {
	if len(rawCerts) == 0 {
		return nil, errs.New(errs.Unauthorized, "a client certificate is required")
	}
	chain := make([]*x509.Certificate, 0, len(rawCerts))
	for i, raw := range rawCerts {
		c, err := x509.ParseCertificate(raw)
		if err != nil {
			return nil, errs.Wrap(errs.Unauthorized, err, "client certificate %d does not parse", i)
		}
		chain = append(chain, c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	who, err := a.authenticate(ctx, chain, "")
	if err != nil {
		return nil, fmt.Errorf("authority: %w", err)
	}
	return who.chain, nil
}
