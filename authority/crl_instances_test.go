package authority

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"testing"
	"time"

	"coapca/store"
)

// otherInstance is the store as one instance sees it while another instance works on the same
// database: before this instance's next counter increment, beforeCounter runs (once).
type otherInstance struct {
	store.Store
	beforeCounter func()
}

func (o *otherInstance) NextCounter(ctx context.Context, name string) (int64, error) {
	if f := o.beforeCounter; f != nil {
		o.beforeCounter = nil
		f()
	}
	return o.Store.NextCounter(ctx, name)
}

// TestCRLListsRevocationsBeforeItsNumber is the race of two instances signing CRLs from one
// store: this instance reads the revoked certificates; meanwhile the other instance revokes a
// certificate and signs a CRL with the next number; then this instance takes its number. Had
// it listed what it read first, its CRL would carry the higher number and miss the revocation
// the lower-numbered CRL has, and relying parties take the highest number as the latest
// (RFC 5280 §5.2.3). The CRL must list every revocation made before its number was taken.
func TestCRLListsRevocationsBeforeItsNumber(t *testing.T) {
	p := newPKI(t)
	base := p.openStore(t)
	s := &otherInstance{Store: base}
	a, err := New(p.config(), p.options(s))
	if err != nil {
		t.Fatal(err)
	}
	dev := p.idevid(t, p.mfrA, "A-9", p.now.Add(-time.Hour), noExpiry())
	victim, _ := enrolled(t, a, dev, pkix.Name{CommonName: "revoked-elsewhere"})
	s.beforeCounter = func() {
		// The other instance: revoke, then sign its CRL (number 1).
		if err := base.RevokeCert(ctx, victim.Serial, ReasonKeyCompromise, time.Now()); err != nil {
			t.Error(err)
		}
		if n, err := base.NextCounter(ctx, "crl-number"); err != nil || n != 1 {
			t.Errorf("the other instance's CRL number = %d, %v", n, err)
		}
	}
	der, err := a.CRL(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	if rl.Number.Int64() != 2 {
		t.Fatalf("CRL number %v, want 2 (after the other instance's 1)", rl.Number)
	}
	if len(rl.RevokedCertificateEntries) != 1 || rl.RevokedCertificateEntries[0].SerialNumber.Cmp(victim.Cert.SerialNumber) != 0 {
		t.Fatalf("CRL %v lists %d entries; it must list %s, revoked before its number was taken (CRL 1 lists it)",
			rl.Number, len(rl.RevokedCertificateEntries), victim.Serial)
	}
	// The cache holds what the CRL lists: asked again, the same CRL comes back.
	again, err := a.CRL(ctx)
	if err != nil || string(again) != string(der) {
		t.Errorf("second CRL differs from the first though nothing changed: %v", err)
	}
}
