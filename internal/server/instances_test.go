package server

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"coapca/authority"
	"coapca/client"
	"coapca/cmp"
	"coapca/internal/config"
	"coapca/kms"
	"coapca/store/postgres/pgtest"
)

// copyDataDir copies the data directory made by the first instance to another instance's
// directory, as docs/deployment.md tells the operator to (every instance signs with the same
// CA key; the database is shared).
func copyDataDir(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		dst := filepath.Join(to, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(dst, info.Mode().Perm())
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, info.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
}

// startInstances starts n servers on one PostgreSQL database: the first start creates the
// data directory, which the others get a copy of.
func startInstances(t *testing.T, n int, tweak func(*config.Config)) ([]*Server, []config.Config) {
	t.Helper()
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	base := t.TempDir()
	cfgFor := func(i int) config.Config {
		cfg := config.Default()
		cfg.Data = filepath.Join(base, fmt.Sprintf("instance-%d", i))
		cfg.Store = config.Store{Driver: config.DriverPostgres, DSN: dsn}
		cfg.Listen = config.Listen{CoAPS: "127.0.0.1:0", CoAP: "127.0.0.1:0", HTTP: "127.0.0.1:0"}
		cfg.DTLS.HandshakesPerSourcePerSecond = -1 // every device of the test shares 127.0.0.1
		cfg.Authority.Profiles = []config.Profile{{Label: "manual", ManualApproval: true, RetryAfter: time.Second,
			Requesters: config.DefaultRequesters()}}
		if tweak != nil {
			tweak(&cfg)
		}
		return cfg
	}
	first, err := Start(ctx, cfgFor(0), quiet())
	if err != nil {
		t.Fatal(err)
	}
	first.Close()
	out, cfgs := make([]*Server, n), make([]config.Config, n)
	for i := range n {
		cfgs[i] = cfgFor(i)
		if i > 0 {
			copyDataDir(t, cfgFor(0).Data, cfgFor(i).Data)
		}
		s, err := Start(ctx, cfgFor(i), quiet())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		out[i] = s
	}
	return out, cfgs
}

// estEnroll enrolls a new key over EST-coaps at s as the demo device, under label.
func estEnroll(ctx context.Context, s *Server, label, cn string, csr []byte) (*x509.Certificate, error) {
	dev := s.Data().DeviceCertificate()
	conn, err := client.DialEST(ctx, s.CoAPSURL(), client.ESTDialOptions{Identity: &dev, VerifyServer: client.ParseChain})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return client.NewEST(conn.Client, client.ESTOptions{Label: label, Trust: s.Data().IssuingChain()}).Enroll(ctx, csr)
}

func newCSR(t *testing.T, cn string) []byte {
	t.Helper()
	key, err := kms.GenerateKey("P-256")
	if err != nil {
		t.Fatal(err)
	}
	csr, err := client.NewCSR(key, client.CertRequest{Subject: pkix.Name{CommonName: cn}}, "")
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

// cmpEnroll runs one CMP ir transaction over HTTP at s with the demo MAC secret; with
// implicit false the certificate is confirmed by certConf.
func cmpEnroll(ctx context.Context, s *Server, cn string, implicit bool) (*x509.Certificate, error) {
	return cmpEnrollAt(ctx, s, s, cn, implicit)
}

// cmpEnrollAt is cmpEnroll with the first message sent to first and the others (certConf) to
// rest.
func cmpEnrollAt(ctx context.Context, first, rest *Server, cn string, implicit bool) (*x509.Certificate, error) {
	d := first.Data()
	var tr switching
	var err error
	if tr.first, err = client.DialCMP(ctx, first.HTTPURL(), client.CMPTransportOptions{}); err != nil {
		return nil, err
	}
	if tr.rest, err = client.DialCMP(ctx, rest.HTTPURL(), client.CMPTransportOptions{}); err != nil {
		tr.first.Close()
		return nil, err
	}
	defer tr.Close()
	c := client.NewCMP(&tr, client.CMPOptions{
		Protection: &cmp.PBMProtection{Secret: d.CMPSecret, Reference: []byte(d.CMPSecretRef), Iterations: 1000},
		Secret:     d.CMPSecret, Trust: d.IssuingChain(), ImplicitConfirm: implicit})
	key, err := kms.GenerateKey("P-256")
	if err != nil {
		return nil, err
	}
	var tmpl cmp.CertTemplate
	if err := tmpl.SetSubject(pkix.Name{CommonName: cn}); err != nil {
		return nil, err
	}
	e, err := c.Enroll(ctx, cmp.TypeIR, tmpl, key)
	if err != nil {
		return nil, err
	}
	return e.Cert, nil
}

// TestTwoInstancesOnePostgres runs two servers on one PostgreSQL database under concurrent
// EST-coaps and CMP enrollments (implicitly confirmed, and confirmed by a certConf sent to the
// other instance), then checks what several
// instances must keep true together: every delivered serial is unique and recorded (seen by
// both), an approval made on one instance lets the device's retry on the other get its
// certificate, and CRL numbers grow with every CRL whichever instance signs it, each CRL
// listing every revocation made before it on either instance.
func TestTwoInstancesOnePostgres(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	inst, _ := startInstances(t, 2, nil)

	// Concurrent load, spread over both instances.
	const perKind = 6
	type delivered struct {
		what string
		cert *x509.Certificate
		err  error
	}
	results := make(chan delivered, 3*perKind)
	var wg sync.WaitGroup
	for i := range perKind {
		s := inst[i%2]
		wg.Go(func() {
			cn := fmt.Sprintf("est-%d", i)
			c, err := estEnroll(ctx, s, "", cn, newCSR(t, cn))
			results <- delivered{cn, c, err}
		})
		wg.Go(func() {
			cn := fmt.Sprintf("cmp-implicit-%d", i)
			c, err := cmpEnroll(ctx, s, cn, true)
			results <- delivered{cn, c, err}
		})
		wg.Go(func() {
			// The certConf goes to the other instance.
			cn := fmt.Sprintf("cmp-certconf-%d", i)
			c, err := cmpEnrollAt(ctx, s, inst[(i+1)%2], cn, false)
			results <- delivered{cn, c, err}
		})
	}
	wg.Wait()
	close(results)
	serials := map[string]string{}
	for r := range results {
		if r.err != nil {
			t.Errorf("%s: %v", r.what, r.err)
			continue
		}
		sn := r.cert.SerialNumber.Text(16)
		if other, dup := serials[sn]; dup {
			t.Errorf("serial %s delivered twice: to %s and %s", sn, other, r.what)
		}
		serials[sn] = r.what
	}
	if t.Failed() {
		t.FailNow()
	}
	for sn, what := range serials {
		for i, s := range inst {
			rec, err := s.Authority().Certificate(ctx, sn)
			if err != nil {
				t.Errorf("instance %d does not know %s's certificate %s: %v", i, what, sn, err)
			} else if rec.Revoked() {
				t.Errorf("%s's certificate %s is revoked (a confirmed or implicitly confirmed certificate)", what, sn)
			}
		}
	}

	// Manual approval: the request reaches instance 0, the operator approves on instance 1,
	// and the device's retry reaches instance 1.
	csr := newCSR(t, "approved-elsewhere")
	_, err := estEnroll(ctx, inst[0], "manual", "approved-elsewhere", csr)
	var pe *client.PendingError
	if !errors.As(err, &pe) {
		t.Fatalf("enrollment under manual approval: %v, want pending", err)
	}
	pend, err := inst[1].Authority().ListPending(ctx, authority.PendingFilter{Status: authority.StatusPending, Label: "manual"})
	if err != nil || len(pend) != 1 {
		t.Fatalf("instance 1 sees %d pending requests (%v), want the one made on instance 0", len(pend), err)
	}
	if err := inst[1].Authority().Approve(ctx, pend[0].ID); err != nil {
		t.Fatal(err)
	}
	got, err := estEnroll(ctx, inst[1], "manual", "approved-elsewhere", csr)
	if err != nil {
		t.Fatalf("retry on instance 1 after approval there: %v", err)
	}
	if _, dup := serials[got.SerialNumber.Text(16)]; dup {
		t.Fatalf("approved certificate reuses serial %s", got.SerialNumber.Text(16))
	}
	// The other instance answers the same retry with the same certificate, not a second one.
	again, err := estEnroll(ctx, inst[0], "manual", "approved-elsewhere", csr)
	if err != nil || again.SerialNumber.Cmp(got.SerialNumber) != 0 {
		t.Fatalf("retry on instance 0: %v, %v; want the certificate %s again", again, err, got.SerialNumber.Text(16))
	}

	// CRLs: revoke on one instance, fetch the CRL from the other.
	last := big.NewInt(0)
	var revoked []*big.Int
	i := 0
	for sn := range serials {
		if i == 4 {
			break
		}
		if err := inst[i%2].Authority().Revoke(ctx, sn, authority.ReasonSuperseded); err != nil {
			t.Fatal(err)
		}
		n, _ := new(big.Int).SetString(sn, 16)
		revoked = append(revoked, n)
		der, err := inst[(i+1)%2].Authority().CRL(ctx)
		if err != nil {
			t.Fatal(err)
		}
		crl, err := x509.ParseRevocationList(der)
		if err != nil {
			t.Fatal(err)
		}
		if crl.Number.Cmp(last) <= 0 {
			t.Errorf("CRL number %v after %v: not increasing across instances", crl.Number, last)
		}
		last = crl.Number
		listed := map[string]bool{}
		for _, e := range crl.RevokedCertificateEntries {
			listed[e.SerialNumber.Text(16)] = true
		}
		for _, r := range revoked {
			if !listed[r.Text(16)] {
				t.Errorf("CRL %v of instance %d misses %s, revoked on instance %d", crl.Number, (i+1)%2, r.Text(16), i%2)
			}
		}
		i++
	}
}
