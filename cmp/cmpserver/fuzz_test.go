package cmpserver_test

import (
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"

	"coapca/authority"
	"coapca/cmp"
	"coapca/cmp/cmpserver"
	"coapca/errs"
	"coapca/internal/datadir"
)

// fuzzAuthority is an in-memory Authority: it knows the OpenSSL fixtures' secret (reference
// "1234") and refuses everything else, so that fuzzing exercises the CMP code, not SQLite.
type fuzzAuthority struct{ d *datadir.Data }

func (a fuzzAuthority) Issue(context.Context, authority.CertRequest) (*authority.Issued, error) {
	return nil, errs.NewPending("p1", 1)
}
func (a fuzzAuthority) Profile(label string) (*authority.Profile, error) {
	if label != "" {
		return nil, errs.New(errs.NotFound, "unknown label")
	}
	return &authority.Profile{KeyType: "P-256"}, nil
}
func (a fuzzAuthority) CACerts(string) []*x509.Certificate { return a.d.IssuingChain() }
func (a fuzzAuthority) Root() *x509.Certificate            { return a.d.Root }
func (a fuzzAuthority) MACSecret(ref string) ([]byte, error) {
	if ref == "1234" {
		return []byte("s3cret"), nil
	}
	return nil, errs.New(errs.Unauthorized, "unknown reference")
}
func (a fuzzAuthority) VerifyClient([][]byte) ([]*x509.Certificate, error) {
	return nil, errs.New(errs.Unauthorized, "untrusted")
}
func (a fuzzAuthority) Revoke(context.Context, string, int) error {
	return errs.New(errs.NotFound, "no")
}
func (a fuzzAuthority) RevokeAs(context.Context, authority.Requester, string, int) error {
	return errs.New(errs.Forbidden, "no")
}
func (a fuzzAuthority) CRL(context.Context) ([]byte, error) {
	return nil, errs.New(errs.Internal, "no CRL")
}
func (a fuzzAuthority) Certificate(context.Context, string) (*authority.CertRecord, error) {
	return nil, errs.New(errs.NotFound, "no")
}
func (a fuzzAuthority) PendingRequest(context.Context, string) (*authority.PendingRecord, error) {
	return &authority.PendingRecord{ID: "p1", Status: authority.StatusPending}, nil
}

// FuzzHandle feeds arbitrary bytes to the service's request path: it must never panic and
// always answer with a PKIMessage (an error message for garbage).
func FuzzHandle(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("..", "testdata", "openssl", "*_req*.der"))
	for _, s := range seeds {
		if b, err := os.ReadFile(s); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte{})
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x02})
	d, err := datadir.Open(datadir.Options{Dir: f.TempDir()})
	if err != nil {
		f.Fatal(err)
	}
	// The seeds are recorded openssl requests with old messageTimes: the check is off, so that
	// fuzzing reaches the code behind it (TestMessageTime covers the check).
	svc, err := cmpserver.New(fuzzAuthority{d}, cmpserver.Options{Signer: d.CMPSignerKey, Cert: d.CMPSigner,
		MessageTimeTolerance: -1})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		rsp := svc.Handle(context.Background(), &cmpserver.Request{Body: b, Transport: authority.TransportCoAP})
		if _, err := cmp.Parse(rsp.Body); err != nil {
			t.Fatalf("answer does not parse: %v", err)
		}
	})
}
