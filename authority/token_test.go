package authority

import (
	"crypto/x509/pkix"
	"testing"
	"time"

	"coapca/errs"
	"coapca/internal/testpki"
)

// TestToken: an ACE access token grant (RFC 9203) enrolls only while registered and unexpired,
// only for the labels and operations of its scope, only where a token rule admits its AS, never
// re-enrolls, and is recorded as token:AS/SUBJECT. Each refusal is an attack: a client with a
// token for one label (or one operation) asking for another, a token past its exp, a forged
// reference, a token from an AS the label does not trust.
func TestToken(t *testing.T) {
	p := newPKI(t)
	s := p.openStore(t)
	now := time.Now()
	cfg := p.config()
	cfg.Profiles = append(cfg.Profiles, ProfileOptions{Label: "as2-only",
		Requesters: []RequesterRule{{Kind: "token", From: []string{"as2"}}}})
	opts := p.options(s)
	opts.Now = func() time.Time { return now }
	a, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	grant := func(iss string, exp time.Time, scopes ...TokenScope) TokenGrant {
		return TokenGrant{Issuer: iss, Subject: "client-1", Scopes: scopes, Expires: exp}
	}
	for ref, g := range map[string]TokenGrant{
		"good":       grant("as1", now.Add(time.Hour), TokenScope{Label: ""}, TokenScope{Label: "strict", Ops: []Op{OpServerKeyGen}}),
		"expired":    grant("as1", now.Add(-time.Second), TokenScope{Label: ""}),
		"other-as":   grant("as1", now.Add(time.Hour), TokenScope{Label: "as2-only"}),
		"as2":        grant("as2", now.Add(time.Hour), TokenScope{Label: "as2-only"}),
		"enrollonly": grant("as1", now.Add(time.Hour), TokenScope{Label: "", Ops: []Op{OpEnroll}}),
	} {
		if err := a.AllowToken(ref, g); err != nil {
			t.Fatal(ref, err)
		}
	}
	for _, bad := range []TokenGrant{
		grant("as1", now, TokenScope{Label: "no-such-label"}),
		grant("as1", now, TokenScope{Label: "", Ops: []Op{OpReenroll}}),
		{Subject: "x"},
	} {
		if err := a.AllowToken("bad", bad); err == nil {
			t.Errorf("AllowToken accepted %+v", bad)
		}
	}
	for _, tt := range []struct {
		name, ref, label string
		op               Op
		want             errs.Kind
		ok               bool
	}{
		{"enroll in scope", "good", "", OpEnroll, 0, true},
		{"serverkeygen in scope", "good", "", OpServerKeyGen, 0, true},
		{"attack: label outside the scope", "good", "manual", OpEnroll, errs.Forbidden, false},
		{"attack: operation outside the scope", "good", "strict", OpEnroll, errs.Forbidden, false},
		{"attack: serverkeygen with an enroll-only scope", "enrollonly", "", OpServerKeyGen, errs.Forbidden, false},
		{"attack: expired token", "expired", "", OpEnroll, errs.Unauthorized, false},
		{"attack: unregistered token reference", "forged", "", OpEnroll, errs.Unauthorized, false},
		{"attack: AS the label does not trust", "other-as", "as2-only", OpEnroll, errs.Forbidden, false},
		{"trusted AS", "as2", "as2-only", OpEnroll, 0, true},
		{"attack: re-enrollment with a token", "good", "", OpReenroll, errs.Forbidden, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cn := "dev-1"
			csr, _ := mkCSR(t, csrOpts{subject: pkix.Name{CommonName: cn, Organization: []string{"Acme"}}})
			r := CertRequest{Op: tt.op, Label: tt.label, CSR: csr,
				Requester: Requester{Token: tt.ref, Transport: TransportOSCORE, Protocol: ProtocolEST}}
			if tt.op == OpServerKeyGen {
				r.PublicKey = testpki.NewKey(t).Public()
			}
			iss, err := a.Issue(ctx, r)
			wantKind(t, err, tt.want, tt.ok)
			if tt.ok {
				rec, err := s.Cert(ctx, iss.Serial)
				want := "token:as1/client-1"
				if tt.ref == "as2" {
					want = "token:as2/client-1"
				}
				if err != nil || rec.RequesterRef != want {
					t.Fatalf("record %+v, %v; want origin %s", rec, err, want)
				}
			}
		})
	}
	a.DropToken("good")
	csr, _ := mkCSR(t, csrOpts{subject: pkix.Name{CommonName: "dev-2"}})
	_, err = a.Issue(ctx, CertRequest{Op: OpEnroll, CSR: csr, Requester: Requester{Token: "good", Transport: TransportOSCORE}})
	wantKind(t, err, errs.Unauthorized, false)
}

// TestTokenOriginReenrollFrom: a certificate enrolled with an access token (origin
// token:AS/SUBJECT) moves to a label that lists its label in reenroll_from only when that label
// admits the token's AS. The attack row: a label whose token rule names another AS must not
// take it (the original requester would not have been admitted there).
func TestTokenOriginReenrollFrom(t *testing.T) {
	p := newPKI(t)
	s := p.openStore(t)
	now := time.Now()
	cfg := p.config()
	cfg.Profiles = append(cfg.Profiles,
		ProfileOptions{Label: "moved-as1", ReenrollFrom: []string{""}, Requesters: []RequesterRule{{Kind: "token", From: []string{"as1"}}}},
		ProfileOptions{Label: "moved-as2", ReenrollFrom: []string{""}, Requesters: []RequesterRule{{Kind: "token", From: []string{"as2"}}}},
		ProfileOptions{Label: "moved-idevid", ReenrollFrom: []string{""}, Requesters: []RequesterRule{{Kind: "idevid", From: []string{"*"}}}})
	opts := p.options(s)
	opts.Now = func() time.Time { return now }
	a, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.AllowToken("t1", TokenGrant{Issuer: "as1", Subject: "client-1", Scopes: []TokenScope{{Label: ""}},
		Expires: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	csr, _ := mkCSR(t, csrOpts{subject: pkix.Name{CommonName: "dev-t"}})
	iss, err := a.Issue(ctx, CertRequest{Op: OpEnroll, CSR: csr, Requester: Requester{Token: "t1", Transport: TransportOSCORE,
		Protocol: ProtocolEST}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, label string
		want        errs.Kind
		ok          bool
	}{
		{"label trusting the token's AS", "moved-as1", 0, true},
		{"attack: label trusting another AS", "moved-as2", errs.Forbidden, false},
		{"attack: label without token rules", "moved-idevid", errs.Forbidden, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			csr, _ := mkCSR(t, csrOpts{subject: pkix.Name{CommonName: "dev-t"}})
			_, err := a.Issue(ctx, CertRequest{Op: OpReenroll, Label: tt.label, CSR: csr, Requester: est(iss.Cert)})
			wantKind(t, err, tt.want, tt.ok)
		})
	}
}
