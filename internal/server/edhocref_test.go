package server

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"testing"

	"coapca/client"
	"coapca/internal/config"
	"coapca/kms"
)

// TestEDHOCInitiatorCredentialFromRecords: a device that enrolled an LDevID re-keys OSCORE
// with EDHOC sending only a reference to it (x5t or kid, RFC 9528 §3.5.3, RFC 9360 §2), which
// the server resolves from its own records, never seen in an EDHOC handshake before, and
// re-enrolls over real loopback. Every reference that would let a device act with a
// certificate it may not use is refused: a revoked LDevID, another device's LDevID with the
// attacker's own key, a kid that resolves to another certificate than the one the device
// holds (a kid on two certificates of different keys is refused by FindCredential,
// TestFindCredential).
func TestEDHOCInitiatorCredentialFromRecords(t *testing.T) {
	ctx := context.Background()
	cfg := config.Default()
	cfg.Data = t.TempDir()
	cfg.Listen = config.Listen{CoAP: "127.0.0.1:0"}
	s, err := Start(ctx, cfg, quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d := s.Data()
	verify := client.ServerVerifier(d.IssuingChain(), "127.0.0.1", nil)

	// est runs one EST-oscore request keyed by EDHOC with identity designated as cred; with
	// enroll it enrolls (as the IDevID), else re-enrolls (as the LDevID); it returns the new
	// certificate and the key it certifies.
	est := func(t *testing.T, identity tls.Certificate, cred, cn string, key crypto.Signer, enroll bool) (*x509.Certificate, crypto.Signer, error) {
		t.Helper()
		if key == nil {
			var err error
			if key, err = kms.GenerateKey("P-256"); err != nil {
				t.Fatal(err)
			}
		}
		csr, err := client.NewCSR(key, client.CertRequest{Subject: pkix.Name{CommonName: cn}}, "")
		if err != nil {
			t.Fatal(err)
		}
		conn, err := client.DialEST(ctx, s.CoAPURL(), client.ESTDialOptions{Identity: &identity,
			VerifyServer: verify, EDHOC: true, EDHOCCredential: cred})
		if err != nil {
			return nil, nil, err
		}
		defer conn.Close()
		e := client.NewEST(conn.Client, client.ESTOptions{Trust: d.IssuingChain()})
		var crt *x509.Certificate
		if enroll {
			crt, err = e.Enroll(ctx, csr)
		} else {
			crt, err = e.Reenroll(ctx, csr)
		}
		return crt, key, err
	}
	// ldevid enrolls a new LDevID (by x5chain, as the demo IDevID) under cn, with key when set.
	ldevid := func(t *testing.T, cn string, key crypto.Signer) tls.Certificate {
		t.Helper()
		crt, key, err := est(t, d.DeviceCertificate(), "x5chain", cn, key, true)
		if err != nil {
			t.Fatalf("enroll %s: %v", cn, err)
		}
		return tls.Certificate{Certificate: [][]byte{crt.Raw}, PrivateKey: key, Leaf: crt}
	}

	for i, tc := range []struct {
		name string
		// identity is what the initiator authenticates with, cred how it designates it.
		identity func(t *testing.T, cn string) tls.Certificate
		cred     string
		ok       bool
	}{
		{"x5t of an LDevID this CA issued", func(t *testing.T, cn string) tls.Certificate {
			return ldevid(t, cn, nil)
		}, "x5t", true},
		{"kid of an LDevID this CA issued", func(t *testing.T, cn string) tls.Certificate {
			return ldevid(t, cn, nil)
		}, "kid", true},
		{"x5t of an LDevID revoked since", func(t *testing.T, cn string) tls.Certificate {
			id := ldevid(t, cn, nil)
			if err := s.auth.Revoke(ctx, id.Leaf.SerialNumber.Text(16), 1); err != nil {
				t.Fatal(err)
			}
			return id
		}, "x5t", false},
		{"kid of an LDevID revoked since", func(t *testing.T, cn string) tls.Certificate {
			id := ldevid(t, cn, nil)
			if err := s.auth.Revoke(ctx, id.Leaf.SerialNumber.Text(16), 1); err != nil {
				t.Fatal(err)
			}
			return id
		}, "kid", false},
		{"x5t of another device's LDevID with the attacker's key", func(t *testing.T, cn string) tls.Certificate {
			victim := ldevid(t, cn, nil)
			attacker := ldevid(t, cn+"-attacker", nil)
			return tls.Certificate{Certificate: victim.Certificate, PrivateKey: attacker.PrivateKey, Leaf: victim.Leaf}
		}, "x5t", false},
		{"kid of another device's LDevID with the attacker's key", func(t *testing.T, cn string) tls.Certificate {
			victim := ldevid(t, cn, nil)
			attacker := ldevid(t, cn+"-attacker", nil)
			return tls.Certificate{Certificate: victim.Certificate, PrivateKey: attacker.PrivateKey, Leaf: victim.Leaf}
		}, "kid", false},
		{"kid of the newest of two LDevIDs of one key (re-enrolled, key kept)", func(t *testing.T, cn string) tls.Certificate {
			first := ldevid(t, cn, nil)
			return ldevid(t, cn, first.PrivateKey.(crypto.Signer))
		}, "kid", true},
		{"kid of the older of two LDevIDs of one key (MAC_3 covers CRED_I)", func(t *testing.T, cn string) tls.Certificate {
			first := ldevid(t, cn, nil)
			ldevid(t, cn, first.PrivateKey.(crypto.Signer))
			return first
		}, "kid", false},
		{"x5t of one of two LDevIDs of one key", func(t *testing.T, cn string) tls.Certificate {
			first := ldevid(t, cn, nil)
			ldevid(t, cn, first.PrivateKey.(crypto.Signer))
			return first
		}, "x5t", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cn := fmt.Sprintf("ref-%d", i)
			id := tc.identity(t, cn)
			crt, _, err := est(t, id, tc.cred, id.Leaf.Subject.CommonName, nil, false)
			if tc.ok != (err == nil) {
				t.Fatalf("re-enrollment with ID_CRED_I = %s accepted = %v (%v), want %v", tc.cred, err == nil, err, tc.ok)
			}
			if tc.ok && crt.Subject.CommonName != id.Leaf.Subject.CommonName {
				t.Fatalf("re-enrolled %v, want %s", crt.Subject, id.Leaf.Subject.CommonName)
			}
		})
	}
}
