package sqlite

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"coapca/store"
)

func lookupCert(serial string) *store.Cert {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return &store.Cert{Serial: serial, Subject: "CN=dev-" + serial, Issuer: "CN=Issuing CA",
		NotBefore: t0, NotAfter: t0.Add(24 * time.Hour), DER: []byte{0x30, 0x03, 0x02, 0x01, 0x01},
		Op: "enroll", Protocol: "est", Transport: "coaps", IssuedAt: t0}
}

// TestCertLookupSeesRevocationAtOnce: the certificate lookup behind client identification
// runs a prepared statement; a device whose certificate was looked up (statement prepared on
// every pooled connection, as under load) and then revoked must be seen revoked by the very
// next lookup, on any connection — the prepared statement caches the query, never its rows.
func TestCertLookupSeesRevocationAtOnce(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, "")
	defer s.Close()
	for _, sn := range []string{"c1", "c2"} {
		if err := s.RecordIssued(ctx, lookupCert(sn)); err != nil {
			t.Fatal(err)
		}
	}
	// Warm the statement on several connections at once.
	done := make(chan error, 8)
	for range 8 {
		go func() { _, err := s.Cert(ctx, "c1"); done <- err }()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if err := s.RevokeCert(ctx, "c1", 1, time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		serial  string
		revoked bool
	}{{"c1", true}, {"c1", true}, {"c2", false}} {
		c, err := s.Cert(ctx, tt.serial)
		if err != nil {
			t.Fatal(err)
		}
		if c.Revoked() != tt.revoked {
			t.Errorf("Cert(%s).Revoked() = %v after revoking c1, want %v", tt.serial, c.Revoked(), tt.revoked)
		}
	}
	if _, err := s.Cert(ctx, "nope"); err == nil {
		t.Error("lookup of an unknown serial succeeded")
	}
}

// BenchmarkCertLookup: the lookup every re-enrollment makes to recognise the device's own
// certificate (issue 13: authorization and certificate lookups).
// A request's context can be cancelled, which the lookup must not pay for.
func BenchmarkCertLookup(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := openTemp(b, "")
	defer s.Close()
	for i := range 1000 {
		if err := s.RecordIssued(ctx, lookupCert(fmt.Sprintf("%04x", i))); err != nil {
			b.Fatal(err)
		}
	}
	i := 0
	for b.Loop() {
		if _, err := s.Cert(ctx, fmt.Sprintf("%04x", i%1000)); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// TestCertLookupContext: the lookup ignores a cancellation that comes after it started (it
// is one indexed row), but a request whose context has already ended is refused, found or not.
func TestCertLookupContext(t *testing.T) {
	s := openTemp(t, "")
	defer s.Close()
	if err := s.RecordIssued(context.Background(), lookupCert("c1")); err != nil {
		t.Fatal(err)
	}
	live, cancelLive := context.WithCancel(context.Background())
	defer cancelLive()
	ended, cancelEnded := context.WithCancel(context.Background())
	cancelEnded()
	for _, tt := range []struct {
		name    string
		ctx     context.Context
		serial  string
		wantErr error
	}{
		{"live context, known serial", live, "c1", nil},
		{"live context, unknown serial", live, "c2", store.ErrNotFound},
		{"ended context, known serial", ended, "c1", context.Canceled},
		{"ended context, unknown serial", ended, "c2", context.Canceled},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := s.Cert(tt.ctx, tt.serial)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Cert(%s) error = %v, want %v", tt.serial, err, tt.wantErr)
			}
			if tt.wantErr == nil && c.Serial != tt.serial {
				t.Errorf("Cert(%s) = %s", tt.serial, c.Serial)
			}
		})
	}
}
