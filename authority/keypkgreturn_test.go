package authority

import (
	"crypto/x509/pkix"
	"testing"

	"coapca/errs"
	"coapca/internal/testpki"
)

// TestNameBasedRequesters: the requesters that authenticate without a certificate (here CMP
// MAC secrets; Basic users and pre-shared identities take the same path) see only their own
// certificates through EECertificates and report only on their own key packages; another
// secret is refused, and nothing is recorded for it.
func TestNameBasedRequesters(t *testing.T) {
	p := newPKI(t)
	s := p.openStore(t)
	a := p.authority(t, s, p.authzConfig(t))
	demo, other := Requester{SecretRef: "demo"}, Requester{SecretRef: "other"}
	csr, _ := mkCSR(t, csrOpts{subject: pkix.Name{CommonName: "skg-demo"}})
	iss, err := a.Issue(ctx, CertRequest{Op: OpServerKeyGen, CSR: csr, PublicKey: testpki.NewKey(t).Public(), Requester: demo})
	if err != nil {
		t.Fatal(err)
	}
	// "fleet" admits both secrets: other has standing there but nothing of its own.
	fleetCSR, _ := mkCSR(t, csrOpts{subject: pkix.Name{CommonName: "demo"}}) // fleet binds the CN to the secret
	if _, err := a.Issue(ctx, CertRequest{Op: OpEnroll, Label: "fleet", CSR: fleetCSR, Requester: demo}); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		do   func() error
		want errs.Kind
		ok   bool
	}{
		{"demo sees its certificate", func() error {
			certs, err := a.EECertificates(ctx, demo, "")
			if err == nil && (len(certs) != 1 || certs[0].SerialNumber.Cmp(iss.Cert.SerialNumber) != 0) {
				t.Errorf("got %d certificates", len(certs))
			}
			return err
		}, 0, true},
		{"other has no standing under the default label", func() error { _, err := a.EECertificates(ctx, other, ""); return err }, errs.Forbidden, false},
		{"other sees none of demo's under a label both may use", func() error { _, err := a.EECertificates(ctx, other, "fleet"); return err }, errs.NotFound, false},
		{"unknown secret", func() error { _, err := a.EECertificates(ctx, Requester{SecretRef: "nope"}, ""); return err }, errs.Unauthorized, false},
		{"demo reports an error on its key package", func() error {
			_, err := a.RecordKeyPackageReturn(ctx, demo, KeyPackageReturn{Kind: "error", PkgID: iss.Cert.SerialNumber.Bytes(), ErrorCode: "decryptFailure"})
			return err
		}, 0, true},
		{"other reports on demo's key package", func() error {
			_, err := a.RecordKeyPackageReturn(ctx, other, KeyPackageReturn{Kind: "error", PkgID: iss.Cert.SerialNumber.Bytes(), ErrorCode: "other"})
			return err
		}, errs.Forbidden, false},
		{"unsigned receipt", func() error {
			_, err := a.RecordKeyPackageReturn(ctx, demo, KeyPackageReturn{Kind: "receipt", PkgID: iss.Cert.SerialNumber.Bytes()})
			return err
		}, errs.BadRequest, false},
		{"identifier longer than a serial number", func() error {
			_, err := a.RecordKeyPackageReturn(ctx, demo, KeyPackageReturn{Kind: "error", PkgID: make([]byte, 21)})
			return err
		}, errs.BadRequest, false},
		{"anonymous", func() error {
			_, err := a.RecordKeyPackageReturn(ctx, Requester{}, KeyPackageReturn{Kind: "error", PkgID: iss.Cert.SerialNumber.Bytes()})
			return err
		}, errs.Unauthorized, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { wantKind(t, tt.do(), tt.want, tt.ok) })
	}
	rets, err := a.KeyPackageReturns(ctx, "", 0)
	if err != nil || len(rets) != 1 || rets[0].RequesterRef != "mac:demo" || rets[0].CertSerial != iss.Serial {
		t.Fatalf("recorded %+v, %v; want demo's one error", rets, err)
	}
}
