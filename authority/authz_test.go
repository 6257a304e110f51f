package authority

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"strings"
	"testing"
	"time"

	"coapca/errs"
	"coapca/internal/testpki"
	"coapca/store"
)

// authzConfig is the audit's configuration: the default label for devices of manufacturer A,
// a "servers" label restricted to manufacturer B that issues serverAuth certificates, a
// "fleet" label that MAC secrets may use (with revocation for per-device secrets), and an RA.
func (p *testPKI) authzConfig(t *testing.T) Policy {
	t.Helper()
	return Policy{
		TrustStores: []TrustStore{{Name: "mfr-a", Roots: []*x509.Certificate{p.mfrA.Cert}}, {Name: "mfr-b", Roots: []*x509.Certificate{p.mfrB.Cert}}},
		MACSecrets: []MACSecret{{Reference: "demo", Secret: []byte("s3cret")}, {Reference: "other", Secret: []byte("other")},
			// A MAC reference spelled like a pre-shared identity's record.
			{Reference: "psk:sensor-1", Secret: []byte("psk")}},
		Profiles: []ProfileOptions{
			{Label: "", Subject: SubjectRules{CopySerialNumber: true}, Requesters: []RequesterRule{
				{Kind: "idevid", From: []string{"mfr-a"}},
				{Kind: "mac", From: []string{"demo", "psk:sensor-1"}},
				{Kind: "preshared", From: []string{"*"}},
				{Kind: "ra", From: []string{"ca"}, MayRevoke: true},
			}},
			{Label: "servers", ExtKeyUsage: []string{"serverAuth"}, Requesters: []RequesterRule{
				{Kind: "idevid", From: []string{"mfr-b"}},
			}},
			{Label: "fleet", Requesters: []RequesterRule{
				{Kind: "mac", From: []string{"demo", "other"}, MayRevoke: true, BindCommonName: true},
				{Kind: "ldevid", From: []string{""}},
			}, ReenrollFrom: []string{""}},
			{Label: "linked", RequirePoP: true, Requesters: []RequesterRule{
				{Kind: "idevid", From: []string{"*"}},
				{Kind: "ra", From: []string{"ca"}},
			}},
			{Label: "dtls-only", Requesters: []RequesterRule{
				{Kind: "idevid", From: []string{"mfr-a"}, Transports: []string{"coaps"}},
			}},
		},
	}
}

// raCert issues a registrar's certificate from our issuing CA, with id-kp-cmcRA or without it
// (not recorded: an RA certificate made by the operator, like the server's own).
func (p *testPKI) raCert(t *testing.T, cmcRA bool) *x509.Certificate {
	t.Helper()
	if cmcRA {
		return p.issuing.RA(t, "registrar").Cert
	}
	return p.issuing.Client(t, "registrar").Cert
}

// TestAuthorizationAttacks replays the audit's issuance attacks (issue "A CA that cannot be
// talked into a wrong certificate", items 2, 3 and 5) and the matrix's other refusals.
func TestAuthorizationAttacks(t *testing.T) {
	p := newPKI(t)
	s := p.openStore(t)
	a := p.authority(t, s, p.authzConfig(t))
	if err := a.AllowPreShared("sensor-1", nil); err != nil {
		t.Fatal(err)
	}
	devA := p.idevid(t, p.mfrA, "A-1", p.now.Add(-time.Hour), noExpiry())
	devB := p.idevid(t, p.mfrB, "B-1", p.now.Add(-time.Hour), noExpiry())
	ldev, _ := enrolled(t, a, devA, pkix.Name{CommonName: "dev-1"})
	ra, notRA := p.raCert(t, true), p.raCert(t, false)
	mac := func(ref string) Requester {
		return Requester{SecretRef: ref, Transport: TransportCoAP, Protocol: ProtocolCMP}
	}
	psk := Requester{PreShared: "sensor-1", Transport: TransportOSCORE, Protocol: ProtocolEST}
	cn := func(s string) pkix.Name { return pkix.Name{CommonName: s} }

	tests := []struct {
		name   string
		op     Op
		label  string
		req    Requester
		csr    csrOpts
		link   Linking
		raVer  bool
		kind   errs.Kind
		ok     bool
		subjec string
	}{
		// Item 2: re-enrollment escaped the label into "servers" (serverAuth, other trust store).
		{name: "attack 2: re-enroll a default-label certificate under servers", op: OpReenroll, label: "servers",
			req: est(ldev.Cert), csr: csrOpts{subject: cn("dev-1")}, kind: errs.Forbidden},
		{name: "re-enroll under its own label", op: OpReenroll, req: est(ldev.Cert), csr: csrOpts{subject: cn("dev-1")}, ok: true,
			subjec: "SERIALNUMBER=A-1,CN=dev-1"},
		{name: "re-enroll into fleet: moving is allowed there, but fleet does not admit the original IDevID", op: OpReenroll,
			label: "fleet", req: est(ldev.Cert), csr: csrOpts{subject: pkix.Name{CommonName: "dev-1", SerialNumber: "A-1"}}, kind: errs.Forbidden},
		// Item 3: a MAC secret or pre-shared identity ignored the profile's trust stores.
		{name: "attack 3: MAC secret enrolls a serverAuth certificate for www.bank.example", label: "servers",
			req: mac("demo"), csr: csrOpts{subject: cn("www.bank.example"), dns: []string{"www.bank.example"}}, kind: errs.Forbidden},
		{name: "attack 3: pre-shared identity enrolls under servers", label: "servers", req: psk,
			csr: csrOpts{subject: cn("www.bank.example")}, kind: errs.Forbidden},
		{name: "attack 3: IDevID of another trust store under servers", label: "servers", req: est(devA),
			csr: csrOpts{subject: cn("x")}, kind: errs.Forbidden},
		{name: "servers admits its own trust store", label: "servers", req: est(devB), csr: csrOpts{subject: cn("srv")}, ok: true,
			subjec: "CN=srv"},
		{name: "MAC secret not named by the profile", req: mac("other"), csr: csrOpts{subject: cn("x")}, kind: errs.Forbidden},
		// Item 5: subject binding.
		{name: "attack 5: LDevID enrolls another subject", label: "fleet", req: est(ldev.Cert), csr: csrOpts{subject: cn("dev-2")},
			kind: errs.Forbidden},
		{name: "LDevID enrolls a further certificate with its own identity where admitted", label: "fleet", req: est(ldev.Cert),
			csr: csrOpts{subject: pkix.Name{CommonName: "dev-1", SerialNumber: "A-1"}}, ok: true, subjec: "SERIALNUMBER=A-1,CN=dev-1"},
		{name: "attack 5: IDevID claims another device's serialNumber", label: "servers", req: est(devB),
			csr: csrOpts{subject: pkix.Name{CommonName: "srv", SerialNumber: "A-1"}}, kind: errs.Forbidden},
		{name: "attack 5: per-device secret enrolls another device's name", label: "fleet", req: mac("other"),
			csr: csrOpts{subject: cn("demo")}, kind: errs.Forbidden},
		{name: "per-device secret enrolls its own name", label: "fleet", req: mac("other"), csr: csrOpts{subject: cn("other")}, ok: true,
			subjec: "CN=other"},
		{name: "attack 5: pre-shared identity claims a serialNumber", req: psk,
			csr: csrOpts{subject: pkix.Name{CommonName: "s", SerialNumber: "A-1"}}, kind: errs.Forbidden},
		// Namespaces: a MAC reference "psk:sensor-1" is not the pre-shared identity sensor-1.
		{name: "MAC reference spelled psk:NAME enrolls as a MAC secret", req: mac("psk:sensor-1"), csr: csrOpts{subject: cn("m")}, ok: true,
			subjec: "CN=m"},
		// PoP linking and RAs (RFC 7030 §3.5, §3.7).
		{name: "PoP mismatch from a device", req: est(devA), csr: csrOpts{subject: cn("x")}, link: LinkMismatched, kind: errs.BadRequest},
		{name: "PoP required, absent", label: "linked", req: est(devA), csr: csrOpts{subject: cn("x")}, link: LinkAbsent, kind: errs.BadRequest},
		{name: "PoP required, linked", label: "linked", req: est(devA), csr: csrOpts{subject: cn("x")}, link: LinkMatched, ok: true,
			subjec: "CN=x"},
		{name: "authorized RA relays a CSR linked to the device's session", label: "linked", req: est(ra), csr: csrOpts{subject: cn("x")},
			link: LinkMismatched, ok: true, subjec: "CN=x"},
		{name: "attack: a certificate without cmcRA claims to be an RA", label: "linked", req: est(notRA), csr: csrOpts{subject: cn("x")},
			link: LinkMismatched, kind: errs.Forbidden},
		{name: "attack: raVerified POP from a MAC holder", req: mac("demo"), csr: csrOpts{subject: cn("x")}, raVer: true, kind: errs.Forbidden},
		{name: "raVerified POP from the RA", req: est(ra), csr: csrOpts{subject: cn("x")}, raVer: true, ok: true, subjec: "CN=x"},
		{name: "attack: RA certificate's serialNumber is not copied; RA asks for none", req: est(ra),
			csr: csrOpts{subject: pkix.Name{CommonName: "x", SerialNumber: "A-1"}}, kind: errs.Forbidden},
		// Transport restriction.
		{name: "transport restricted: oscore refused", label: "dtls-only", req: Requester{Chain: []*x509.Certificate{devA},
			Transport: TransportOSCORE, Protocol: ProtocolEST}, csr: csrOpts{subject: cn("x")}, kind: errs.Forbidden},
		{name: "transport restricted: coaps admitted", label: "dtls-only", req: est(devA), csr: csrOpts{subject: cn("x")}, ok: true,
			subjec: "CN=x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			csr, _ := mkCSR(t, tt.csr)
			op := tt.op
			if op == "" {
				op = OpEnroll
			}
			before, err := s.ListCerts(ctx, store.CertFilter{})
			if err != nil {
				t.Fatal(err)
			}
			iss, err := a.Issue(ctx, CertRequest{Op: op, Label: tt.label, CSR: csr, Requester: tt.req, Link: tt.link, RAVerified: tt.raVer})
			wantKind(t, err, tt.kind, tt.ok)
			after, _ := s.ListCerts(ctx, store.CertFilter{})
			if !tt.ok {
				if len(after) != len(before) {
					t.Fatalf("a refused request recorded a certificate (%d → %d)", len(before), len(after))
				}
				return
			}
			if got := iss.Cert.Subject.String(); got != tt.subjec {
				t.Errorf("subject %q, want %q", got, tt.subjec)
			}
		})
	}
}

// TestRevokeAs replays attack 4 (rr by any holder of a shared MAC secret) and checks who may
// revoke what (RFC 9483 §4.2).
func TestRevokeAs(t *testing.T) {
	p := newPKI(t)
	s := p.openStore(t)
	a := p.authority(t, s, p.authzConfig(t))
	if err := a.AllowPreShared("sensor-1", nil); err != nil {
		t.Fatal(err)
	}
	mac := func(ref string) Requester {
		return Requester{SecretRef: ref, Transport: TransportCoAP, Protocol: ProtocolCMP}
	}
	issue := func(label string, req Requester, subject string) *Issued {
		t.Helper()
		csr, _ := mkCSR(t, csrOpts{subject: pkix.Name{CommonName: subject}})
		iss, err := a.Issue(ctx, CertRequest{Op: OpEnroll, Label: label, CSR: csr, Requester: req})
		if err != nil {
			t.Fatal(err)
		}
		return iss
	}
	devA := p.idevid(t, p.mfrA, "A-1", p.now.Add(-time.Hour), noExpiry())
	byDevice := issue("", est(devA), "dev-1")
	byDemoDefault := issue("", mac("demo"), "m1")      // default label: mac rule without may_revoke
	byDemoFleet := issue("fleet", mac("demo"), "demo") // fleet: may_revoke
	byOtherFleet := issue("fleet", mac("other"), "other")
	byPSKRef := issue("", Requester{PreShared: "sensor-1", Transport: TransportOSCORE, Protocol: ProtocolEST}, "s1")
	ra := p.raCert(t, true)
	other, _ := enrolled(t, a, devA, pkix.Name{CommonName: "dev-1"})

	tests := []struct {
		name   string
		req    Requester
		serial string
		kind   errs.Kind
		ok     bool
	}{
		{"attack 4: MAC secret revokes a device's certificate", mac("demo"), byDevice.Serial, errs.Forbidden, false},
		{"attack 4: MAC secret without may_revoke revokes its own enrollment", mac("demo"), byDemoDefault.Serial, errs.Forbidden, false},
		{"attack 4: MAC secret revokes another secret's certificate", mac("demo"), byOtherFleet.Serial, errs.Forbidden, false},
		{"attack 4: MAC reference psk:sensor-1 revokes the pre-shared identity's certificate", mac("psk:sensor-1"), byPSKRef.Serial, errs.Forbidden, false},
		{"attack: another certificate of the same device revokes", est(other.Cert), byDevice.Serial, errs.Forbidden, false},
		{"attack: an IDevID revokes", est(devA), byDevice.Serial, errs.Forbidden, false},
		{"MAC secret with may_revoke revokes its own enrollment", mac("demo"), byDemoFleet.Serial, 0, true},
		{"the certificate's own key revokes it", est(byDevice.Cert), byDevice.Serial, 0, true},
		{"an authorized RA revokes in its profile", est(ra), other.Serial, 0, true},
		{"unknown serial", est(ra), "abcdef", errs.NotFound, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := a.RevokeAs(ctx, tt.req, tt.serial, ReasonKeyCompromise)
			wantKind(t, err, tt.kind, tt.ok)
			if tt.kind == errs.NotFound {
				return
			}
			rec, err := s.Cert(ctx, tt.serial)
			if err != nil {
				t.Fatal(err)
			}
			if rec.Revoked() != tt.ok {
				t.Fatalf("revoked = %v, want %v", rec.Revoked(), tt.ok)
			}
		})
	}
}

// TestRefusalsLogged: every refused authentication is logged at Info with its reason, so an
// operator can see why a device cannot enroll (issue 8, requirement 9).
func TestRefusalsLogged(t *testing.T) {
	p := newPKI(t)
	s := p.openStore(t)
	var buf bytes.Buffer
	a, err := New(p.authzConfig(t), Options{Store: s, Signer: p.issuing.Key, Chain: p.issuing.Chain,
		Logger: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	if err != nil {
		t.Fatal(err)
	}
	devA := p.idevid(t, p.mfrA, "A-1", p.now.Add(-time.Hour), noExpiry())
	expired := p.idevid(t, p.mfrA, "A-old", p.now.AddDate(-3, 0, 0), p.now.AddDate(-1, 0, 0))
	stranger := testpki.NewCA(t, "Unknown").Cert
	ldev, _ := enrolled(t, a, devA, pkix.Name{CommonName: "dev-1"})
	if err := a.Revoke(ctx, ldev.Serial, ReasonKeyCompromise); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, label, want string
		req               Requester
	}{
		{"expired IDevID", "", `reason="expired or not yet valid"`, est(expired)},
		{"unknown issuer", "", `reason="unknown issuer"`, est(stranger)},
		{"revoked LDevID", "", "reason=revoked", est(ldev.Cert)},
		{"unknown MAC secret", "", `reason="unknown MAC secret"`, Requester{SecretRef: "nobody", Protocol: ProtocolCMP}},
		{"wrong label", "servers", `may not enroll under label \"servers\"`, est(devA)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			buf.Reset()
			csr, _ := mkCSR(t, csrOpts{subject: pkix.Name{CommonName: "x"}})
			if _, err := a.Issue(ctx, CertRequest{Op: OpEnroll, Label: tc.label, CSR: csr, Requester: tc.req}); err == nil {
				t.Fatal("issued")
			}
			if out := buf.String(); !strings.Contains(out, "level=INFO") || !strings.Contains(out, tc.want) {
				t.Fatalf("log lacks %s at INFO:\n%s", tc.want, out)
			}
		})
	}
}

// TestBasicUsers: HTTP Basic users (RFC 7030 §3.2.3) are a requester kind like any other:
// refused with a wrong password, refused where no rule admits them, and bound to their name
// where the rule says so.
func TestBasicUsers(t *testing.T) {
	p := newPKI(t)
	s := p.openStore(t)
	cfg := p.authzConfig(t)
	hash, err := HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Users = []User{{Name: "line-7", PasswordHash: hash}, {Name: "other", PasswordHash: hash}}
	cfg.Profiles = append(cfg.Profiles, ProfileOptions{Label: "factory", Requesters: []RequesterRule{
		{Kind: "user", From: []string{"line-7"}, BindCommonName: true, Transports: []string{"https"}}}})
	a := p.authority(t, s, cfg)
	user := func(name, pw string) Requester {
		return Requester{User: name, Password: pw, Transport: TransportHTTPS, Protocol: ProtocolEST}
	}
	for _, tc := range []struct {
		name, label, cn string
		req             Requester
		kind            errs.Kind
		ok              bool
	}{
		{"user enrolls its own name", "factory", "line-7", user("line-7", "correct horse"), 0, true},
		{"again (verification cached)", "factory", "line-7", user("line-7", "correct horse"), 0, true},
		{"attack: wrong password", "factory", "line-7", user("line-7", "Tr0ub4dor&3"), errs.Unauthorized, false},
		{"attack: unknown user", "factory", "line-7", user("mallory", "correct horse"), errs.Unauthorized, false},
		{"attack: user no rule admits", "factory", "other", user("other", "correct horse"), errs.Forbidden, false},
		{"attack: user on a label without a user rule", "", "line-7", user("line-7", "correct horse"), errs.Forbidden, false},
		{"attack: user claims another name", "factory", "line-8", user("line-7", "correct horse"), errs.Forbidden, false},
		{"attack: user over plain HTTP", "factory", "line-7", Requester{User: "line-7", Password: "correct horse",
			Transport: TransportHTTP, Protocol: ProtocolEST}, errs.Forbidden, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			csr, _ := mkCSR(t, csrOpts{subject: pkix.Name{CommonName: tc.cn}})
			iss, err := a.Issue(ctx, CertRequest{Op: OpEnroll, Label: tc.label, CSR: csr, Requester: tc.req})
			wantKind(t, err, tc.kind, tc.ok)
			if tc.ok {
				rec, _ := s.Cert(ctx, iss.Serial)
				if rec == nil || rec.RequesterRef != "user:line-7" {
					t.Fatalf("record %+v", rec)
				}
			}
		})
	}
	bad := cfg
	bad.Users = []User{{Name: "x", PasswordHash: "plaintext"}}
	if _, err := New(bad, p.options(s)); err == nil {
		t.Error("a password that is not a bcrypt hash was accepted")
	}
}

// TestPendingKeyPerUser: two Basic users sending the same CSR to a label under manual approval
// get two pending requests; approving one does not hand the other a certificate.
func TestPendingKeyPerUser(t *testing.T) {
	p := newPKI(t)
	s := p.openStore(t)
	cfg := p.authzConfig(t)
	hash, err := HashPassword("pw")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Users = []User{{Name: "alice", PasswordHash: hash}, {Name: "bob", PasswordHash: hash}}
	cfg.Profiles = append(cfg.Profiles, ProfileOptions{Label: "approve", ManualApproval: true,
		Requesters: []RequesterRule{{Kind: "user", From: []string{"*"}}}})
	a := p.authority(t, s, cfg)
	csr, _ := mkCSR(t, csrOpts{subject: pkix.Name{CommonName: "shared"}})
	req := func(user string) CertRequest {
		return CertRequest{Op: OpEnroll, Label: "approve", CSR: csr,
			Requester: Requester{User: user, Password: "pw", Transport: TransportHTTPS, Protocol: ProtocolEST}}
	}
	_, err = a.Issue(ctx, req("alice"))
	ea := errs.As(err)
	if ea == nil || ea.Kind != errs.Pending {
		t.Fatalf("alice: %v", err)
	}
	if err := a.Approve(ctx, ea.ID); err != nil {
		t.Fatal(err)
	}
	_, err = a.Issue(ctx, req("bob"))
	if eb := errs.As(err); eb == nil || eb.Kind != errs.Pending || eb.ID == ea.ID {
		t.Fatalf("bob got %v: alice's approval must not answer bob's request", err)
	}
	if iss, err := a.Issue(ctx, req("alice")); err != nil || iss.Cert == nil {
		t.Fatalf("alice after approval: %v", err)
	}
}
