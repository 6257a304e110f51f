package authority

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"testing"

	"coapca/errs"
	"coapca/internal/testpki"
	"coapca/store"
)

// TestFindCredential: an EDHOC Initiator's reference (x5t, kid; RFC 9528 §3.5.3, RFC 9360 §2)
// resolves to the one certificate it designates, among this CA's records and the certificates
// of the trust stores (a device certificate pinned as an anchor), and what it resolves to
// still goes through VerifyClient. A reference that designates several certificates, a
// truncated hash shorter than SHA-256/64, or a revoked certificate is refused.
func TestFindCredential(t *testing.T) {
	ctx := context.Background()
	p := newPKI(t)
	s := p.openStore(t)
	// A device whose own certificate the operator pinned in a trust store, and another whose
	// pinned certificate carries the kid of one of our LDevIDs.
	pinned := testpki.SelfSigned(t, &x509.Certificate{Subject: pkix.Name{CommonName: "pinned"},
		SubjectKeyId: []byte("pinned-kid")}, testpki.NewKey(t))
	clash := testpki.SelfSigned(t, &x509.Certificate{Subject: pkix.Name{CommonName: "clash"},
		SubjectKeyId: []byte("shared-kid")}, testpki.NewKey(t))
	cfg := p.config()
	cfg.TrustStores = append(cfg.TrustStores, TrustStore{Name: "pinned", Roots: []*x509.Certificate{pinned, clash}})
	a := p.authority(t, s, cfg)

	// LDevIDs this CA issued, as recorded.
	record := func(cn string, kid []byte) *x509.Certificate {
		l := p.issuing.NewLeaf(t, &x509.Certificate{Subject: pkix.Name{CommonName: cn}, SubjectKeyId: kid})
		if err := s.RecordIssued(ctx, &store.Cert{Serial: store.FormatSerial(l.Cert.SerialNumber), Subject: cn,
			Issuer: l.Cert.Issuer.String(), NotBefore: l.Cert.NotBefore, NotAfter: l.Cert.NotAfter, DER: l.Cert.Raw,
			Op: "enroll", Protocol: "est", Transport: "oscore", IssuedAt: p.now}); err != nil {
			t.Fatal(err)
		}
		return l.Cert
	}
	ldevid := record("ldevid", []byte("ldevid-kid"))
	revoked := record("revoked", []byte("revoked-kid"))
	record("shared", []byte("shared-kid"))
	// Two of our certificates with one kid and two keys (not as this CA makes kids, but
	// records may hold anything).
	record("two-keys-1", []byte("two-keys-kid"))
	record("two-keys-2", []byte("two-keys-kid"))
	if err := a.Revoke(ctx, store.FormatSerial(revoked.SerialNumber), 1); err != nil {
		t.Fatal(err)
	}
	x5t := func(c *x509.Certificate, n int) []byte { sum := sha256.Sum256(c.Raw); return sum[:n] }

	for _, tc := range []struct {
		name   string
		ref    CredentialRef
		want   *x509.Certificate // nil: refused by FindCredential
		verify bool              // VerifyClient accepts what was found
	}{
		{"x5t (SHA-256/64) of an LDevID we issued", CredentialRef{SHA256Prefix: x5t(ldevid, 8)}, ldevid, true},
		{"x5t (SHA-256) of an LDevID we issued", CredentialRef{SHA256Prefix: x5t(ldevid, 32)}, ldevid, true},
		{"kid of an LDevID we issued", CredentialRef{KeyID: []byte("ldevid-kid")}, ldevid, true},
		{"x5t of a device certificate pinned in a trust store", CredentialRef{SHA256Prefix: x5t(pinned, 8)}, pinned, true},
		{"kid of a device certificate pinned in a trust store", CredentialRef{KeyID: []byte("pinned-kid")}, pinned, true},
		{"x5t of a revoked LDevID: found, then refused", CredentialRef{SHA256Prefix: x5t(revoked, 8)}, revoked, false},
		{"kid of a revoked LDevID", CredentialRef{KeyID: []byte("revoked-kid")}, nil, false},
		{"kid of our LDevID and of a trust store's certificate (ambiguous)", CredentialRef{KeyID: []byte("shared-kid")}, nil, false},
		{"kid of two of our certificates with different keys (ambiguous)", CredentialRef{KeyID: []byte("two-keys-kid")}, nil, false},
		{"x5t shorter than SHA-256/64", CredentialRef{SHA256Prefix: x5t(ldevid, 4)}, nil, false},
		{"x5t of a certificate nobody knows", CredentialRef{SHA256Prefix: make([]byte, 8)}, nil, false},
		{"kid nobody knows", CredentialRef{KeyID: []byte("nobody")}, nil, false},
		{"both x5t and kid", CredentialRef{SHA256Prefix: x5t(ldevid, 8), KeyID: []byte("ldevid-kid")}, nil, false},
		{"neither", CredentialRef{}, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chain, err := a.FindCredential(ctx, tc.ref)
			if tc.want == nil {
				if err == nil {
					t.Fatalf("resolved to %d certificates, want refused", len(chain))
				}
				if k := errs.KindOf(err); k != errs.Unauthorized && k != errs.BadRequest {
					t.Fatalf("refused as %v (%v), want unauthorized or bad request", k, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			leaf, err := x509.ParseCertificate(chain[0])
			if err != nil || !leaf.Equal(tc.want) {
				t.Fatalf("resolved to %v, want %v", leaf.Subject, tc.want.Subject)
			}
			_, err = a.VerifyClient(chain)
			if tc.verify != (err == nil) {
				t.Fatalf("VerifyClient accepted = %v (%v), want %v", err == nil, err, tc.verify)
			}
		})
	}
}
