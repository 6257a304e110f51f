package authority

import (
	"crypto/x509"
	"crypto/x509/pkix"
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
	forA, err := a.AddPackage(ctx, PackageSymmetricKeys, "serial:"+serialA, "key-a", []byte{0x30, 0})
	if err != nil {
		t.Fatal(err)
	}
	forAll, err := a.AddPackage(ctx, PackageSymmetricKeys, "label:", "key-all", []byte{0x30, 1})
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
			got, to, err := a.FetchPackage(ctx, req, label, PackageSymmetricKeys)
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
		{"attack: anonymous fetch", func() error { _, _, err := a.FetchPackage(ctx, Requester{}, "", PackageSymmetricKeys); return err },
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
	if got, _, err := a.FetchPackage(ctx, devA, "", PackageSymmetricKeys); err != nil || got.ID != forAll.ID {
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
	}{
		{"unknown serial", "symmetrickeys", "serial:abcdef", "k", []byte{1}, errs.NotFound},
		{"bad serial", "symmetrickeys", "serial:xyz", "k", []byte{1}, errs.BadRequest},
		{"unknown label", "symmetrickeys", "label:nope", "k", []byte{1}, errs.NotFound},
		{"no target kind", "symmetrickeys", "everyone", "k", []byte{1}, errs.BadRequest},
		{"empty subject", "symmetrickeys", "subject: ", "k", []byte{1}, errs.BadRequest},
		{"unknown kind", "crls", "label:", "k", []byte{1}, errs.BadRequest},
		{"no name", "symmetrickeys", "label:", "", []byte{1}, errs.BadRequest},
		{"no content", "symmetrickeys", "label:", "k", nil, errs.BadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.AddPackage(ctx, PackageKind(tc.kind), tc.target, tc.pkgName, tc.content)
			wantKind(t, err, tc.want, false)
		})
	}
	if ps, err := a.ListPackages(ctx, "", 0); err != nil || len(ps) != 0 {
		t.Fatalf("stored %v, %v", ps, err)
	}
}
