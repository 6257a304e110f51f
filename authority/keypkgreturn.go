package authority

import (
	"bytes"
	"context"
	"crypto/x509"
	"math/big"
	"time"

	"coapca/errs"
	"coapca/store"
)

// KeyPackageReturn is a key package receipt or error (RFC 7191) that a client returned for a
// server-generated key through /serverkeygen/return (RFC 8295 §8.2). The EST service fills in
// what it parsed (Kind to DER); RecordKeyPackageReturn decides and fills in the rest.
type KeyPackageReturn struct {
	Kind      string // "receipt" or "error"
	PkgID     []byte // the key package identifier it names (coapca: the certificate's serial number)
	By        string // the SIREntityName of the recipient, as text
	ErrorCode string // for an error
	// Signer is the certificate whose key signed it, SignerCerts the other certificates the
	// SignedData carried (intermediates); nil for an unsigned error.
	Signer      *x509.Certificate
	SignerCerts []*x509.Certificate
	DER         []byte // as received

	// Set by the authority.
	ID               int64
	CertSerial       string // the certificate of the key the package held
	SignerSerial     string
	RequesterSubject string
	RequesterSerial  string
	RequesterRef     string
	RequesterAddr    string
	ReceivedAt       time.Time
}

// RecordKeyPackageReturn decides whether req may return this receipt or error, and records it
// (docs/security.md). Default deny:
//   - the requester must authenticate (errs.Unauthorized);
//   - it must name a key package this CA delivered by server-side key generation (its
//     certificate's serial number; a signed receipt without one names the signer's
//     certificate): otherwise errs.NotFound or errs.BadRequest;
//   - that key package must be the requester's own: requested with the requester's certificate
//     (or the requester's Basic user name), or the requester authenticates with the package's
//     certificate itself (errs.Forbidden otherwise);
//   - a receipt must be signed (RFC 8295 §5.2.1); a signature must validate back to an
//     authorized trust anchor (RFC 8295 §5.2.2: "the server MUST reject it if the digital
//     signature does not validate back to an authorized TA"), and the signer must be the key
//     package's own certificate (proof that the client holds the delivered key) or the
//     requester's own certificate (errs.Forbidden otherwise).
//
// Nothing is recorded when it refuses.
func (a *Authority) RecordKeyPackageReturn(ctx context.Context, req Requester, r KeyPackageReturn) (*KeyPackageReturn, error) {
	who, err := a.authenticateRequester(ctx, req)
	if err != nil {
		return nil, err
	}
	switch r.Kind {
	case "receipt":
		if r.Signer == nil {
			return nil, errs.New(errs.BadRequest, "a key package receipt must be signed (RFC 8295 §5.2.1)")
		}
	case "error":
	default:
		return nil, errs.New(errs.BadRequest, "unknown key package return %q", r.Kind)
	}
	var signer identity
	if r.Signer != nil {
		signer, err = a.authenticate(ctx, append([]*x509.Certificate{r.Signer}, r.SignerCerts...), "")
		if err != nil {
			// RFC 8295 §5.2.2, §8.2.
			return nil, errs.New(errs.Forbidden, "the signature of the key package %s does not validate back to an authorized trust anchor: %s",
				r.Kind, errs.Message(err))
		}
	}
	serial := ""
	switch {
	case len(r.PkgID) > 0 && len(r.PkgID) <= 20: // RFC 5280 §4.1.2.2: at most 20 octets
		serial = store.FormatSerial(new(big.Int).SetBytes(r.PkgID))
	case len(r.PkgID) > 20:
		return nil, errs.New(errs.BadRequest, "key package identifier of %d bytes names no certificate serial number", len(r.PkgID))
	case signer.ours != nil:
		serial = signer.ours.Serial
	default:
		return nil, errs.New(errs.BadRequest, "the key package %s names no key package", r.Kind)
	}
	rec, err := a.storedCert(ctx, serial)
	if err != nil {
		if errs.KindOf(err) == errs.NotFound {
			return nil, errs.New(errs.NotFound, "no key package %s was delivered by this CA", serial)
		}
		return nil, err
	}
	if rec.Op != string(OpServerKeyGen) {
		return nil, errs.New(errs.BadRequest, "certificate %s was not issued for a server-generated key", serial)
	}
	if !owns(who, rec) {
		a.log.Info("key package return refused", "kind", r.Kind, "serial", serial, "requester", who.describe(), "addr", req.Addr)
		return nil, errs.New(errs.Forbidden, "%s did not receive key package %s", who.describe(), serial)
	}
	if r.Signer != nil {
		ofPackage := signer.ours != nil && signer.ours.Serial == rec.Serial
		ofRequester := who.leaf != nil && bytes.Equal(who.leaf.Raw, r.Signer.Raw)
		if !ofPackage && !ofRequester {
			return nil, errs.New(errs.Forbidden, "the key package %s is signed by %s, neither the key package's certificate nor the requester's",
				r.Kind, r.Signer.Subject)
		}
		r.SignerSerial = store.FormatSerial(r.Signer.SerialNumber)
	}
	r.CertSerial = rec.Serial
	r.RequesterRef, r.RequesterAddr = originOfRequester(who), req.Addr
	if who.leaf != nil {
		r.RequesterSubject, r.RequesterSerial = who.leaf.Subject.String(), store.FormatSerial(who.leaf.SerialNumber)
	}
	s := &store.KeyPackageReturn{Kind: r.Kind, CertSerial: r.CertSerial, PkgID: r.PkgID, By: r.By, ErrorCode: r.ErrorCode,
		SignerSerial: r.SignerSerial, RequesterSubject: r.RequesterSubject, RequesterSerial: r.RequesterSerial,
		RequesterRef: r.RequesterRef, RequesterAddr: r.RequesterAddr, DER: r.DER, ReceivedAt: a.now()}
	if who.leaf != nil {
		s.RequesterIssuer = who.leaf.Issuer.String()
	}
	if err := a.store.AddKeyPackageReturn(ctx, s); err != nil {
		return nil, errs.Wrap(errs.Internal, err, "recording the key package %s", r.Kind)
	}
	r.ID, r.ReceivedAt = s.ID, s.ReceivedAt
	a.log.Info("key package "+r.Kind, "serial", r.CertSerial, "error_code", r.ErrorCode, "requester", who.describe(), "addr", req.Addr)
	r.Signer, r.SignerCerts = nil, nil
	return &r, nil
}

// owns reports whether the certificate record rec was issued on who's request, or is who's own
// certificate.
func owns(who identity, rec *store.Cert) bool {
	if who.ours != nil && who.ours.Serial == rec.Serial {
		return true
	}
	if who.leaf != nil {
		return rec.RequesterIssuer == who.leaf.Issuer.String() && rec.RequesterSerial == store.FormatSerial(who.leaf.SerialNumber)
	}
	ref := originOfRequester(who)
	return ref != "" && rec.RequesterRef == ref
}

// originOfRequester is the origin namespace of a requester that authenticated without a
// certificate ("user:NAME", "psk:NAME", "mac:REF"); "" for a certificate.
func originOfRequester(who identity) string {
	switch {
	case who.leaf != nil:
		return ""
	case who.user != "":
		return who.originFor(KindUser)
	case who.preShared != "":
		return who.originFor(KindPreShared)
	case who.token != nil:
		return who.originFor(KindToken)
	case who.secretRef != "":
		return who.originFor(KindMAC)
	}
	return ""
}

// KeyPackageReturns lists the recorded receipts and errors, newest first: all, or those about
// the certificate with that serial (for `coapca ca receipts`).
func (a *Authority) KeyPackageReturns(ctx context.Context, serial string, limit int) ([]*KeyPackageReturn, error) {
	f := store.KeyPackageReturnFilter{Limit: limit}
	if serial != "" {
		sn, err := store.NormalizeSerial(serial)
		if err != nil {
			return nil, errs.Wrap(errs.BadRequest, err, "bad serial number %q", serial)
		}
		f.CertSerial = sn
	}
	rows, err := a.store.ListKeyPackageReturns(ctx, f)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "listing key package returns")
	}
	out := make([]*KeyPackageReturn, len(rows))
	for i, s := range rows {
		out[i] = &KeyPackageReturn{Kind: s.Kind, PkgID: s.PkgID, By: s.By, ErrorCode: s.ErrorCode, DER: s.DER, ID: s.ID,
			CertSerial: s.CertSerial, SignerSerial: s.SignerSerial, RequesterSubject: s.RequesterSubject,
			RequesterSerial: s.RequesterSerial, RequesterRef: s.RequesterRef, RequesterAddr: s.RequesterAddr, ReceivedAt: s.ReceivedAt}
	}
	return out, nil
}
