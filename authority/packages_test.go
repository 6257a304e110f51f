package authority

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"slices"
	"testing"
	"time"

	"coapca/errs"
	"coapca/internal/testpki"
)

// TestPackageAuthorization is the matrix row of /pal, /symmetrickeys and /symmetrickeys/return
// (docs/security.md), written as the attacks it refuses: another client's package, a receipt
// for it, receipts signed by someone else or by a rogue key, unsigned receipts, the wrong
// label, requesters without a certificate of this CA. Each refusal leaves the deliveries as
// they were.
func TestPackageAuthorization(t *testing.T) {
	p := newPKI(t)
	s := p.openStore(t)
	a := p.authority(t, s, p.authzConfig(t))
	now := time.Now()
	ldevid := func(serial string) *x509.Certificate {
		dev := p.idevid(t, p.mfrA, serial, now.Add(-time.Hour), now.AddDate(1, 0, 0))
		csr, _ := mkCSR(t, csrOpts{subject: pkix.Name{CommonName: "dev-" + serial, SerialNumber: serial}})
		iss, err := a.Issue(ctx, CertRequest{Op: OpEnroll, CSR: csr, Requester: Requester{Chain: []*x509.Certificate{dev}}})
		if err != nil {
			t.Fatal(err)
		}
		return iss.Cert
	}
	certA, certB := ldevid("A-1"), ldevid("B-1")
	devA, devB := Requester{Chain: []*x509.Certificate{certA}}, Requester{Chain: []*x509.Certificate{certB}}
	serialA := certA.SerialNumber.Text(16)
	forA, err := a.AddPackage(ctx, PackageSymmetricKeys, "serial:"+serialA, "key-a", []byte{0x30, 0}, nil)
	if err != nil {
		t.Fatal(err)
	}
	forAll, err := a.AddPackage(ctx, PackageSymmetricKeys, "label:", "key-all", []byte{0x30, 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	rogue := testpki.NewRoot(t, &x509.Certificate{Subject: certA.Subject, NotAfter: now.AddDate(1, 0, 0)}, testpki.NewKey(t)).Cert
	receipt := func(id int64, signer *x509.Certificate) PackageReturn {
		return PackageReturn{Kind: "receipt", PkgID: PackageID(PackageSymmetricKeys, id), Signer: signer, DER: []byte{0x30, 0}}
	}
	ret := func(req Requester, r PackageReturn) func() error {
		return func() error { _, err := a.RecordPackageReturn(ctx, req, "", PackageSymmetricKeys, r); return err }
	}
	fetch := func(req Requester, label string, want int64) func() error {
		return func() error {
			var to *x509.Certificate
			got, _, err := a.FetchPackage(ctx, req, label, PackageFetch{Kind: PackageSymmetricKeys, AnyForm: true,
				Seal: func(_ *Package, _ string, c *x509.Certificate) ([]byte, error) { to = c; return []byte{1}, nil }})
			if err == nil && (got.ID != want || !to.Equal(req.Chain[0])) {
				t.Errorf("fetched package %d for %v, want %d for the requester", got.ID, to.Subject, want)
			}
			return err
		}
	}
	pal := func(req Requester, label string) func() error {
		return func() error { _, err := a.PackagesFor(ctx, req, label); return err }
	}
	idevid := Requester{Chain: []*x509.Certificate{p.idevid(t, p.mfrA, "C-1", now.Add(-time.Hour), now.AddDate(1, 0, 0))}}
	anyForm := PackageFetch{Kind: PackageSymmetricKeys, AnyForm: true}

	tests := []struct {
		name string
		do   func() error
		want errs.Kind
		ok   bool
	}{
		{"attack: anonymous PAL", pal(Requester{}, ""), errs.Unauthorized, false},
		{"attack: a manufacturer certificate asks for a PAL", pal(idevid, ""), errs.Forbidden, false},
		{"attack: a MAC secret asks for a PAL", pal(Requester{SecretRef: "demo"}, ""), errs.Forbidden, false},
		{"attack: wrong label", pal(devA, "fleet"), errs.Forbidden, false},
		{"unknown label", pal(devA, "nope"), errs.NotFound, false},
		{"attack: anonymous fetch", func() error { _, _, err := a.FetchPackage(ctx, Requester{}, "", anyForm); return err },
			errs.Unauthorized, false},
		{"attack: fetch under the wrong label", fetch(devA, "fleet", 0), errs.Forbidden, false},
		{"attack: receipt for a package not yet fetched", ret(devA, receipt(forA.ID, certA)), errs.Conflict, false},
		{"A fetches its own package first", fetch(devA, "", forA.ID), 0, true},
		{"B gets the label's package, never A's", fetch(devB, "", forAll.ID), 0, true},
		{"attack: B returns a receipt for A's package", ret(devB, receipt(forA.ID, certB)), errs.Forbidden, false},
		{"attack: A's receipt signed with B's certificate", ret(devA, receipt(forA.ID, certB)), errs.Forbidden, false},
		{"attack: A's receipt signed by a rogue key with A's name", ret(devA, receipt(forA.ID, rogue)), errs.Forbidden, false},
		{"attack: unsigned receipt", ret(devA, PackageReturn{Kind: "receipt", PkgID: PackageID(PackageSymmetricKeys, forA.ID)}),
			errs.BadRequest, false},
		{"attack: receipt naming no package of ours", ret(devA, PackageReturn{Kind: "receipt", PkgID: []byte("x"), Signer: certA}),
			errs.BadRequest, false},
		{"receipt for an unknown package", ret(devA, receipt(999, certA)), errs.NotFound, false},
		{"attack: anonymous receipt", ret(Requester{}, receipt(forA.ID, certA)), errs.Unauthorized, false},
		{"A returns its receipt", ret(devA, receipt(forA.ID, certA)), 0, true},
		{"A then gets the label's package", fetch(devA, "", forAll.ID), 0, true},
		{"A reports an unsigned error on it", ret(devA, PackageReturn{Kind: "error", ErrorCode: "decryptFailure",
			PkgID: PackageID(PackageSymmetricKeys, forAll.ID)}), 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { wantKind(t, tt.do(), tt.want, tt.ok) })
	}

	// What was recorded is exactly the accepted: A's receipt and error, B's fetch.
	ds, err := a.PackageDeliveries(ctx, forA.ID)
	if err != nil || len(ds) != 1 || ds[0].ClientSerial != serialA || ds[0].ReturnKind != "receipt" || ds[0].Fetches != 1 {
		t.Fatalf("deliveries of A's package: %+v, %v", ds, err)
	}
	ds, err = a.PackageDeliveries(ctx, forAll.ID)
	if err != nil || len(ds) != 2 {
		t.Fatalf("deliveries of the label's package: %+v, %v", ds, err)
	}
	for _, d := range ds {
		switch {
		case d.ClientSerial == serialA && d.ReturnKind == "error" && d.ErrorCode == "decryptFailure":
		case d.ClientSerial == certB.SerialNumber.Text(16) && d.ReturnKind == "":
		default:
			t.Errorf("unexpected delivery %+v", d)
		}
	}
	// The PAL state follows: B sees the label's package only, fetched and not acknowledged.
	pb, err := a.PackagesFor(ctx, devB, "")
	if err != nil || len(pb) != 1 || pb[0].ID != forAll.ID || pb[0].FetchedAt.IsZero() || pb[0].ReturnKind != "" {
		t.Fatalf("B's packages: %+v, %v", pb, err)
	}
	// A has acknowledged its own: a further fetch delivers the one in error again, never the
	// acknowledged one.
	if got, _, err := a.FetchPackage(ctx, devA, "", anyForm); err != nil || got.ID != forAll.ID {
		t.Fatalf("A's next fetch: %+v, %v", got, err)
	}
}

// TestAddPackageRefuses: the operator's queueing refuses unknown targets and bad input, and
// stores nothing then.
func TestAddPackageRefuses(t *testing.T) {
	p := newPKI(t)
	s := p.openStore(t)
	a := p.authority(t, s, p.authzConfig(t))
	for _, tc := range []struct {
		name, kind, target, pkgName string
		content                     []byte
		want                        errs.Kind
		forms                       []string
	}{
		{"unknown serial", "symmetrickeys", "serial:abcdef", "k", []byte{1}, errs.NotFound, nil},
		{"bad serial", "symmetrickeys", "serial:xyz", "k", []byte{1}, errs.BadRequest, nil},
		{"unknown label", "symmetrickeys", "label:nope", "k", []byte{1}, errs.NotFound, nil},
		{"no target kind", "symmetrickeys", "everyone", "k", []byte{1}, errs.BadRequest, nil},
		{"empty subject", "symmetrickeys", "subject: ", "k", []byte{1}, errs.BadRequest, nil},
		{"unknown kind", "crls", "label:", "k", []byte{1}, errs.BadRequest, nil},
		{"no name", "symmetrickeys", "label:", "", []byte{1}, errs.BadRequest, nil},
		{"no content", "symmetrickeys", "label:", "k", nil, errs.BadRequest, nil},
		{"unknown form", "symmetrickeys", "label:", "k", []byte{1}, errs.BadRequest, []string{"enveloped", "cleartext"}},
		{"forms for firmware", "firmware", "label:", "k", []byte{1}, errs.BadRequest, []string{"plain"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.AddPackage(ctx, PackageKind(tc.kind), tc.target, tc.pkgName, tc.content, tc.forms)
			wantKind(t, err, tc.want, false)
		})
	}
	if ps, err := a.ListPackages(ctx, "", 0); err != nil || len(ps) != 0 {
		t.Fatalf("stored %v, %v", ps, err)
	}
}

// TestSymKeyFormDecision is the symmetric key form row of docs/security.md, written as the
// attacks it refuses: a client asking for a TLS-only form (plain, signed) of a package the
// operator did not allow it for (by default only the forms that encrypt for the client), an
// anonymous request naming no form (authenticated before its forms are looked at), and a
// sealing failure after the decision. None of them records a delivery. Then: a package
// delivered plain carries no identifier, so it is neither offered nor listed again.
func TestSymKeyFormDecision(t *testing.T) {
	p := newPKI(t)
	s := p.openStore(t)
	a := p.authority(t, s, p.authzConfig(t))
	now := time.Now()
	dev := p.idevid(t, p.mfrA, "F-1", now.Add(-time.Hour), now.AddDate(1, 0, 0))
	csr, _ := mkCSR(t, csrOpts{subject: pkix.Name{CommonName: "dev-F-1", SerialNumber: "F-1"}})
	iss, err := a.Issue(ctx, CertRequest{Op: OpEnroll, CSR: csr, Requester: Requester{Chain: []*x509.Certificate{dev}}})
	if err != nil {
		t.Fatal(err)
	}
	devA := Requester{Chain: []*x509.Certificate{iss.Cert}}
	target := "serial:" + iss.Cert.SerialNumber.Text(16)
	queue := func(name string, forms ...string) *Package {
		t.Helper()
		q, err := a.AddPackage(ctx, PackageSymmetricKeys, target, name, []byte{0x30, 0}, forms)
		if err != nil {
			t.Fatal(err)
		}
		return q
	}
	restricted := queue("default-forms")
	type step struct {
		name      string
		req       Requester
		forms     []string
		anyForm   bool
		seal      error
		fails     bool
		want      errs.Kind
		wantID    int64
		wantForm  string
		wantFetch map[int64]int // fetches recorded per package after the step
	}
	run := func(t *testing.T, steps []step) {
		for _, st := range steps {
			t.Run(st.name, func(t *testing.T) {
				var sealed string
				got, der, err := a.FetchPackage(ctx, st.req, "", PackageFetch{Kind: PackageSymmetricKeys, Forms: st.forms, AnyForm: st.anyForm,
					Seal: func(_ *Package, form string, _ *x509.Certificate) ([]byte, error) {
						sealed = form
						return []byte(form), st.seal
					}})
				wantKind(t, err, st.want, !st.fails)
				if !st.fails && (got.ID != st.wantID || sealed != st.wantForm || string(der) != st.wantForm || got.Form != st.wantForm) {
					t.Errorf("delivered package %d as %q (%q), want %d as %q", got.ID, sealed, der, st.wantID, st.wantForm)
				}
				for id, n := range st.wantFetch {
					ds, err := a.PackageDeliveries(ctx, id)
					if err != nil {
						t.Fatal(err)
					}
					fetches := 0
					if len(ds) == 1 {
						fetches = ds[0].Fetches
					}
					if fetches != n {
						t.Errorf("package %d: %d fetches recorded, want %d (%+v)", id, fetches, n, ds)
					}
				}
			})
		}
	}
	none := map[int64]int{restricted.ID: 0}
	run(t, []step{
		{name: "attack: plain for a package allowed only encrypted forms", req: devA, forms: []string{"plain"}, fails: true, want: errs.NotAcceptable, wantFetch: none},
		{name: "attack: signed for it", req: devA, forms: []string{"signed"}, fails: true, want: errs.NotAcceptable, wantFetch: none},
		{name: "attack: plain, then signed", req: devA, forms: []string{"plain", "signed"}, fails: true, want: errs.NotAcceptable, wantFetch: none},
		{name: "attack: anonymous naming no form we produce is unauthenticated, not 406", req: Requester{}, forms: []string{},
			fails: true, want: errs.Unauthorized, wantFetch: none},
		{name: "authenticated, naming no form we produce", req: devA, forms: []string{}, fails: true, want: errs.NotAcceptable, wantFetch: none},
		{name: "a sealing failure records no delivery", req: devA, anyForm: true,
			seal: errs.New(errs.Internal, "sealer broke"), fails: true, want: errs.Internal, wantFetch: none},
		{name: "plain or enveloped: enveloped", req: devA, forms: []string{"plain", "enveloped"}, wantID: restricted.ID,
			wantForm: "enveloped", wantFetch: map[int64]int{restricted.ID: 1}},
		{name: "any form: the server's first choice", req: devA, anyForm: true, wantID: restricted.ID,
			wantForm: "signed-enveloped-signed", wantFetch: map[int64]int{restricted.ID: 2}},
	})

	plain := queue("plain-allowed", "plain")
	signedOnly := queue("signed-allowed", "signed")
	run(t, []step{
		{name: "plain skips the restricted package for the one allowed plain", req: devA, forms: []string{"plain"}, wantID: plain.ID,
			wantForm: "plain", wantFetch: map[int64]int{restricted.ID: 2, plain.ID: 1}},
		{name: "attack: plain again: the plain delivery is done, the rest refuse plain", req: devA, forms: []string{"plain"},
			fails: true, want: errs.NotAcceptable, wantFetch: map[int64]int{restricted.ID: 2, plain.ID: 1, signedOnly.ID: 0}},
		{name: "any form never offers the plain delivery again", req: devA, anyForm: true, wantID: restricted.ID,
			wantForm: "signed-enveloped-signed", wantFetch: map[int64]int{plain.ID: 1}},
	})
	// The PAL (RFC 8295 §2) no longer lists the package delivered plain: no receipt can name it.
	ps, err := a.PackagesFor(ctx, devA, "")
	if err != nil {
		t.Fatal(err)
	}
	var listed []int64
	for _, q := range ps {
		listed = append(listed, q.ID)
	}
	if want := []int64{restricted.ID, signedOnly.ID}; !slices.Equal(listed, want) {
		t.Errorf("PAL packages %v, want %v (not the plain delivery %d)", listed, want, plain.ID)
	}
	// Nor can a receipt name it (it was never given an identifier to echo); one that guesses
	// it is still taken only for a fetched package, and changes nothing for the PAL.
	if ds, err := a.PackageDeliveries(ctx, plain.ID); err != nil || len(ds) != 1 || ds[0].Form != "plain" {
		t.Fatalf("plain delivery: %+v, %v", ds, err)
	}
}

// TestSymKeyFormLabelLimit: a label's profile (symmetric_key_forms) limits the forms of every
// symmetric key package delivered under it, whatever the package allows — written as the attack
// of a client asking for plain under a label that forbids it, for a package queued (by subject,
// which names no label) with --forms all. A package whose forms the label leaves none of is
// refused when queued; an unknown form in the profile is a configuration error.
func TestSymKeyFormLabelLimit(t *testing.T) {
	p := newPKI(t)
	s := p.openStore(t)
	cfg := p.authzConfig(t)
	cfg.Profiles[0].SymmetricKeyForms = []string{"enveloped", "signed-enveloped-signed"}
	a := p.authority(t, s, cfg)
	now := time.Now()
	dev := p.idevid(t, p.mfrA, "L-1", now.Add(-time.Hour), now.AddDate(1, 0, 0))
	csr, _ := mkCSR(t, csrOpts{subject: pkix.Name{CommonName: "dev-L-1", SerialNumber: "L-1"}})
	iss, err := a.Issue(ctx, CertRequest{Op: OpEnroll, CSR: csr, Requester: Requester{Chain: []*x509.Certificate{dev}}})
	if err != nil {
		t.Fatal(err)
	}
	devL := Requester{Chain: []*x509.Certificate{iss.Cert}}
	serial := "serial:" + iss.Cert.SerialNumber.Text(16)
	for _, tc := range []struct {
		name, target string
		forms        []string
	}{
		{"plain for a certificate of the label", serial, []string{"plain"}},
		{"plain and signed for the label", "label:", []string{"plain", "signed"}},
	} {
		t.Run("refused when queued: "+tc.name, func(t *testing.T) {
			_, err := a.AddPackage(ctx, PackageSymmetricKeys, tc.target, "k", []byte{0x30, 0}, tc.forms)
			wantKind(t, err, errs.BadRequest, false)
		})
	}
	if ps, err := a.ListPackages(ctx, "", 0); err != nil || len(ps) != 0 {
		t.Fatalf("stored %v, %v", ps, err)
	}
	all, err := a.AddPackage(ctx, PackageSymmetricKeys, "subject:"+iss.Cert.Subject.String(), "k", []byte{0x30, 0}, []string{"all"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		forms []string
		ok    bool
		want  string
	}{
		{"attack: plain under a label that forbids it", []string{"plain"}, false, ""},
		{"attack: signed under it", []string{"signed"}, false, ""},
		{"attack: the encrypted key package, allowed by the package, not by the label", []string{"encrypted-key-package"}, false, ""},
		{"plain or enveloped: enveloped", []string{"plain", "enveloped"}, true, "enveloped"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, _, err := a.FetchPackage(ctx, devL, "", PackageFetch{Kind: PackageSymmetricKeys, Forms: tc.forms})
			wantKind(t, err, errs.NotAcceptable, tc.ok)
			if tc.ok && (got.ID != all.ID || got.Form != tc.want) {
				t.Fatalf("delivered %d as %q, want %d as %q", got.ID, got.Form, all.ID, tc.want)
			}
			ds, err := a.PackageDeliveries(ctx, all.ID)
			if err != nil || (len(ds) != 0) != tc.ok {
				t.Fatalf("deliveries after %s: %+v, %v", tc.name, ds, err)
			}
		})
	}
	if _, err := (ProfileOptions{Label: "x", SymmetricKeyForms: []string{"rot13"}}).compile(); err == nil {
		t.Fatal("a profile with an unknown symmetric key form compiled")
	}
}
