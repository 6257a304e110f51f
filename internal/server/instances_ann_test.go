package server

import (
	"context"
	"crypto/x509"
	"math/big"
	"testing"
	"time"

	"coapca/authority"
	"coapca/cmp"
	"coapca/coap"
)

// TestAnnouncementsAcrossInstances: a device observes the CMP announcements (RFC 9482 §2.6)
// of instance 1. A certificate accepted on instance 0 and its revocation by another process
// (`coapca ca revoke`, here OpenHouse on instance 0's configuration) reach that observer
// through the store's events (PostgreSQL LISTEN/NOTIFY). Before, an acceptance was announced
// only to the observers of the instance that accepted it.
func TestAnnouncementsAcrossInstances(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	inst, cfgs := startInstances(t, 2, nil)

	c, err := coap.Dial(ctx, inst[1].CoAPURL(), coap.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := make(chan []byte, 16)
	octx, ocancel := context.WithCancel(ctx)
	defer ocancel()
	go c.Observe(octx, "/.well-known/cmp/ann", func(r *coap.Response) { got <- r.Payload })
	next := func(what string) *cmp.Message {
		t.Helper()
		for {
			select {
			case p := <-got:
				if len(p) == 0 {
					continue // the registration's first answer
				}
				m, err := cmp.Parse(p)
				if err != nil {
					t.Fatalf("%s: %v", what, err)
				}
				t.Logf("waiting for %s: got %s", what, m.Body.Type())
				return m
			case <-time.After(30 * time.Second):
				t.Fatalf("instance 1's observer got no %s within 30 s", what)
				return nil
			}
		}
	}
	// The first answer proves the registration (the server registers before it answers).
	select {
	case <-got:
	case <-ctx.Done():
		t.Fatal("no answer to the observation")
	}

	cert, err := cmpEnroll(ctx, inst[0], "announced-elsewhere", true)
	if err != nil {
		t.Fatal(err)
	}
	m := next("cann")
	ca, ok := m.Body.(*cmp.CertAnn)
	if !ok || ca.Cert.SerialNumber.Cmp(cert.SerialNumber) != 0 {
		t.Fatalf("first announcement is %s, want cann of %s", m.Body.Type(), cert.SerialNumber.Text(16))
	}

	h, err := OpenHouse(ctx, cfgs[0], quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.Authority().Revoke(ctx, cert.SerialNumber.Text(16), authority.ReasonKeyCompromise); err != nil {
		t.Fatal(err)
	}
	// A revocation is announced as rann and with the new CRL (crlann); the two travel on
	// their own and may arrive in either order. An observer is owed the newest state only
	// (RFC 7641 §4.5.2): while a confirmable notification is unacknowledged the server keeps
	// just the newest of those that follow, so a crlann may stand in for the rann before it.
	// Either tells this observer of the revocation.
	m = next("rann or crlann")
	if crl, isCRL := m.Body.(*cmp.CRLAnn); isCRL {
		if !crlLists(t, crl, cert.SerialNumber) {
			t.Fatalf("crlann after the revocation does not list %s", cert.SerialNumber.Text(16))
		}
		return
	}
	ra, ok := m.Body.(*cmp.RevAnn)
	if !ok || ra.CertID.Serial.Cmp(cert.SerialNumber) != 0 {
		t.Fatalf("announcement after the revocation is %s, want rann of %s", m.Body.Type(), cert.SerialNumber.Text(16))
	}
}

// crlLists reports whether one of the CRLs of a crlann lists serial as revoked.
func crlLists(t *testing.T, c *cmp.CRLAnn, serial *big.Int) bool {
	t.Helper()
	for _, der := range c.CRLs {
		crl, err := x509.ParseRevocationList(der)
		if err != nil {
			t.Fatalf("crlann: %v", err)
		}
		for _, e := range crl.RevokedCertificateEntries {
			if e.SerialNumber.Cmp(serial) == 0 {
				return true
			}
		}
	}
	return false
}
