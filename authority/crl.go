package authority

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"math/big"

	"coapca/errs"
	"coapca/store"
)

// RFC 5280 §5.3.1 CRLReason codes.
const (
	ReasonUnspecified          = 0
	ReasonKeyCompromise        = 1
	ReasonCACompromise         = 2
	ReasonAffiliationChanged   = 3
	ReasonSuperseded           = 4
	ReasonCessationOfOperation = 5
	ReasonCertificateHold      = 6
	ReasonRemoveFromCRL        = 8
	ReasonPrivilegeWithdrawn   = 9
	ReasonAACompromise         = 10
)

// Revoke revokes the certificate with that serial (hex as an operator types it) for an
// RFC 5280 §5.3.1 reason. errs.NotFound when unknown, errs.Conflict when already revoked,
// errs.BadRequest for a bad serial or reason.
func (a *Authority) Revoke(ctx context.Context, serial string, reason int) error {
	sn, err := store.NormalizeSerial(serial)
	if err != nil {
		return errs.Wrap(errs.BadRequest, err, "bad serial number %q", serial)
	}
	// 7 is unassigned; removeFromCRL only makes sense in delta CRLs (RFC 5280 §5.3.1).
	if reason < 0 || reason > 10 || reason == 7 || reason == ReasonRemoveFromCRL {
		return errs.New(errs.BadRequest, "invalid revocation reason %d", reason)
	}
	err = a.store.RevokeCert(ctx, sn, reason, a.now())
	switch {
	case errors.Is(err, store.ErrNotFound):
		return errs.Wrap(errs.NotFound, err, "no certificate with serial %s", sn)
	case errors.Is(err, store.ErrAlreadyRevoked):
		return errs.Wrap(errs.Conflict, err, "certificate %s is already revoked", sn)
	case err != nil:
		return errs.Wrap(errs.Internal, err, "cannot revoke %s", sn)
	}
	a.log.Info("revoked", "serial", sn, "reason", reason)
	if a.onRevoke != nil {
		a.onRevoke(sn, reason)
	}
	return nil
}

// CRL returns a freshly signed DER CRL of the issuing CA listing every certificate it revoked,
// with the next CRL number from the store (RFC 5280 §5.2.3) and nextUpdate after
// Config.CRLValidity.
func (a *Authority) CRL(ctx context.Context) ([]byte, error) {
	entries, err := a.store.RevokedCerts(ctx, a.issuerDN)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "cannot list revoked certificates")
	}
	num, err := a.store.NextCounter(ctx, "crl-number")
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "cannot allocate a CRL number")
	}
	now := a.now()
	rl := &x509.RevocationList{
		Number:     big.NewInt(num),
		ThisUpdate: now,
		NextUpdate: now.Add(a.crlValid),
	}
	for _, e := range entries {
		sn, ok := new(big.Int).SetString(e.Serial, 16)
		if !ok {
			return nil, errs.New(errs.Internal, "stored serial %q is not hex", e.Serial)
		}
		rl.RevokedCertificateEntries = append(rl.RevokedCertificateEntries, x509.RevocationListEntry{
			SerialNumber: sn, RevocationTime: e.RevokedAt, ReasonCode: e.Reason,
		})
	}
	der, err := x509.CreateRevocationList(rand.Reader, rl, a.issuer, a.signer)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "cannot sign the CRL")
	}
	return der, nil
}
