package authority

import (
	"context"
	"crypto/x509"

	"coapca/errs"
	"coapca/store"
)

// MaxEECerts caps the certificates one EECertificates answer carries (own and peers each).
const MaxEECerts = 1000

// EECertificates decides which end-entity certificates a requester may receive through
// /eecerts (RFC 8295 §3) under label, and returns them: its own current certificates of that
// label first, then, where the label's profile sets EECertsPeers, the current certificates of
// the label's other requesters (its peers).
//
// RFC 8295 §3 lets a server hand certificates to anyone, as they are signed by a CA; coapca's
// certificates name devices and users, so the matrix of docs/security.md asks more (default
// deny):
//   - the requester must authenticate (errs.Unauthorized otherwise);
//   - it must have standing under the label: a certificate this CA issued under that label,
//     or a requester rule of the label's profile that admits it (errs.Forbidden otherwise);
//   - its own certificates are those requested with the very certificate it authenticated with
//     (and that certificate itself when this CA issued it under the label), or, for a Basic
//     user, a pre-shared identity or a MAC secret, those enrolled under that name;
//   - revoked and expired certificates are never returned.
//
// Without any certificate to return the answer is errs.NotFound. An unknown label is
// errs.NotFound.
func (a *Authority) EECertificates(ctx context.Context, req Requester, label string) ([]*x509.Certificate, error) {
	p, ok := a.profiles[label]
	if !ok {
		return nil, errs.New(errs.NotFound, "unknown label %q", label)
	}
	who, err := a.authenticateRequester(ctx, req)
	if err != nil {
		return nil, err
	}
	ownLabel := who.ours != nil && who.ours.Label == label
	if !ownLabel && a.match(p, req.Transport, who) == nil {
		err := errs.New(errs.Forbidden, "%s has no certificates under label %q and may not enroll there", who.describe(), label)
		a.log.Info("eecerts refused", "label", label, "requester", who.describe(), "addr", req.Addr)
		return nil, err
	}

	now := a.now()
	var out []*x509.Certificate
	seen := map[string]bool{}
	add := func(recs []*store.Cert) error {
		for _, rec := range recs {
			if seen[rec.Serial] || rec.Revoked() || now.After(rec.NotAfter) || now.Before(rec.NotBefore) {
				continue
			}
			c, err := x509.ParseCertificate(rec.DER)
			if err != nil {
				return errs.Wrap(errs.Internal, err, "stored certificate %s does not parse", rec.Serial)
			}
			seen[rec.Serial] = true
			out = append(out, c)
		}
		return nil
	}
	base := store.CertFilter{Label: label, LabelSet: true, Revocation: store.NotRevoked, Limit: MaxEECerts}
	var own []*store.Cert
	switch {
	case who.leaf != nil:
		if ownLabel {
			own = append(own, who.ours)
		}
		f := base
		f.RequesterIssuer = who.leaf.Issuer.String()
		f.RequesterSerial = store.FormatSerial(who.leaf.SerialNumber)
		recs, err := a.store.ListCerts(ctx, f)
		if err != nil {
			return nil, errs.Wrap(errs.Internal, err, "cannot list certificates")
		}
		// The recorded requester issuer and serial name the client certificate; a
		// manufacturer may reuse a serial under another issuer name only, which the filter
		// keeps apart.
		own = append(own, recs...)
	default:
		var ref string
		switch {
		case who.user != "":
			ref = who.originFor(KindUser)
		case who.preShared != "":
			ref = who.originFor(KindPreShared)
		case who.token != nil:
			ref = who.originFor(KindToken)
		case who.secretRef != "":
			ref = who.originFor(KindMAC)
		}
		if ref == "" {
			return nil, errs.New(errs.Unauthorized, "authentication required")
		}
		f := base
		f.RequesterRef = ref
		recs, err := a.store.ListCerts(ctx, f)
		if err != nil {
			return nil, errs.Wrap(errs.Internal, err, "cannot list certificates")
		}
		own = recs
	}
	if err := add(own); err != nil {
		return nil, err
	}
	nOwn := len(out)
	if p.EECertsPeers {
		recs, err := a.store.ListCerts(ctx, base)
		if err != nil {
			return nil, errs.Wrap(errs.Internal, err, "cannot list certificates")
		}
		if err := add(recs); err != nil {
			return nil, err
		}
	}
	a.log.Debug("eecerts", "label", label, "requester", who.describe(), "own", nOwn, "peers", len(out)-nOwn)
	if len(out) == 0 {
		return nil, errs.New(errs.NotFound, "no current certificates for %s under label %q", who.describe(), label)
	}
	return out, nil
}
