package authority

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"math/big"
	"slices"
	"sync"
	"time"

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
	a.invalidateCRL()
	if a.onRevoke != nil {
		a.onRevoke(sn, reason)
	}
	return nil
}

// crlCache keeps the last signed CRL: a CRL is signed and numbered only when its content
// changed or it grew old, not once per request (a genm may ask for it many times, and every new
// CRL advances the CRL number). The zero value is an empty cache.
type crlCache struct {
	mu      sync.Mutex // held while a CRL is built, so concurrent callers share one signature
	der     []byte
	entries []store.RevokedEntry // what der lists
	made    time.Time
}

// crlMaxAge is how long a CRL is reused when nothing was revoked: a quarter of its validity,
// at most an hour, so that thisUpdate stays recent and a relying party never holds a CRL near
// its nextUpdate.
func (a *Authority) crlMaxAge() time.Duration {
	return min(a.crlValid/4, time.Hour)
}

// CRL returns the DER CRL of the issuing CA listing every certificate it revoked (RFC 5280
// §5), with nextUpdate after Config.CRLValidity. The last CRL is returned again while the
// revoked certificates in the store are the same (a revocation by this process or by another
// one, such as `coapca ca revoke`, makes a new one) and it is younger than crlMaxAge; a new
// CRL takes the next CRL number from the store (RFC 5280 §5.2.3).
func (a *Authority) CRL(ctx context.Context) ([]byte, error) {
	a.crl.mu.Lock()
	defer a.crl.mu.Unlock()
	entries, err := a.store.RevokedCerts(ctx, a.issuerDN)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "cannot list revoked certificates")
	}
	now := a.now()
	if a.crl.der != nil && sameEntries(entries, a.crl.entries) && now.Sub(a.crl.made) < a.crlMaxAge() && !now.Before(a.crl.made) {
		return a.crl.der, nil
	}
	der, entries, err := a.signCRL(ctx, now)
	if err != nil {
		return nil, err
	}
	a.crl.der, a.crl.entries, a.crl.made = der, entries, now
	return der, nil
}

func sameEntries(x, y []store.RevokedEntry) bool {
	return slices.EqualFunc(x, y, func(a, b store.RevokedEntry) bool {
		return a.Serial == b.Serial && a.Reason == b.Reason && a.RevokedAt.Equal(b.RevokedAt) && a.NotAfter.Equal(b.NotAfter)
	})
}

// invalidateCRL drops the cached CRL (after a revocation in this process).
func (a *Authority) invalidateCRL() {
	a.crl.mu.Lock()
	defer a.crl.mu.Unlock()
	a.crl.der, a.crl.entries = nil, nil
}

// signCRL signs a new CRL with the next CRL number, listing the revocations the store holds
// once that number is taken; it returns the CRL and what it lists.
//
// The number is taken before the revoked certificates are read: several instances (or `coapca
// ca` beside a server) sign CRLs from one store, and a CRL whose list was read before another
// instance's revocation but numbered after that instance's CRL would be a higher-numbered CRL
// that lists less. Taken first, a number is higher only than CRLs numbered before it, and its
// list includes every revocation committed before then (RFC 5280 §5.2.3: the CRL number is
// monotonically increasing, and a relying party takes the highest-numbered CRL as the latest).
func (a *Authority) signCRL(ctx context.Context, now time.Time) ([]byte, []store.RevokedEntry, error) {
	num, err := a.store.NextCounter(ctx, "crl-number")
	if err != nil {
		return nil, nil, errs.Wrap(errs.Internal, err, "cannot allocate a CRL number")
	}
	entries, err := a.store.RevokedCerts(ctx, a.issuerDN)
	if err != nil {
		return nil, nil, errs.Wrap(errs.Internal, err, "cannot list revoked certificates")
	}
	rl := &x509.RevocationList{
		Number:     big.NewInt(num),
		ThisUpdate: now,
		NextUpdate: now.Add(a.crlValid),
	}
	for _, e := range entries {
		sn, ok := new(big.Int).SetString(e.Serial, 16)
		if !ok {
			return nil, nil, errs.New(errs.Internal, "stored serial %q is not hex", e.Serial)
		}
		rl.RevokedCertificateEntries = append(rl.RevokedCertificateEntries, x509.RevocationListEntry{
			SerialNumber: sn, RevocationTime: e.RevokedAt, ReasonCode: e.Reason,
		})
	}
	der, err := x509.CreateRevocationList(rand.Reader, rl, a.issuer, a.signer)
	if err != nil {
		return nil, nil, errs.Wrap(errs.Internal, err, "cannot sign the CRL")
	}
	return der, entries, nil
}
