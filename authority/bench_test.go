package authority

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509/pkix"
	"testing"
	"time"

	"coapca/internal/testpki"
	"coapca/store/sqlite"
)

// BenchmarkIssue measures whole issuances (authorization, template, ECDSA signature, fsync'd
// SQLite commit) next to BenchmarkECDSASign, the floor. Run with -cpu 1,2 to see the effect of
// parallel requests:
//
//	go test -run '^$' -bench 'Issue|ECDSA' -cpu 1,2 ./authority
func BenchmarkIssue(b *testing.B) {
	for _, bc := range []struct {
		name string
		op   Op
	}{{"enroll", OpEnroll}, {"reenroll", OpReenroll}} {
		b.Run(bc.name, func(b *testing.B) {
			p := newPKI(b)
			s := p.openStore(b)
			a := p.authority(b, s, p.config())
			req := benchRequest(b, p, a, "B-1", bc.op)
			start := time.Now()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := a.Issue(ctx, req); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "issues/s")
		})
	}
}

// benchRequest is the request the issuance benchmarks repeat: an enrollment by a new IDevID
// with serial number serial, or (op OpReenroll) the re-enrollment of the certificate that
// enrollment got.
func benchRequest(b *testing.B, p *testPKI, a *Authority, serial string, op Op) CertRequest {
	dev := p.idevid(b, p.mfrA, serial, p.now.Add(-time.Hour), noExpiry())
	csr, _ := mkCSR(b, csrOpts{subject: pkix.Name{CommonName: "bench"}})
	req := CertRequest{Op: OpEnroll, CSR: csr, Requester: est(dev)}
	if op == OpReenroll {
		ldev, err := a.Issue(ctx, req)
		if err != nil {
			b.Fatal(err)
		}
		req = CertRequest{Op: OpReenroll, CSR: csr, Requester: est(ldev.Cert)}
	}
	return req
}

// BenchmarkECDSASign is the crypto floor: one P-256 signature per certificate.
func BenchmarkECDSASign(b *testing.B) {
	k := testpki.NewKey(b)
	h := sha256.Sum256([]byte("tbsCertificate"))
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := ecdsa.SignASN1(rand.Reader, k, h[:]); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "signs/s")
}

// BenchmarkVerifyIDevID is the cost of authenticating a manufacturer chain per request.
func BenchmarkVerifyIDevID(b *testing.B) {
	p := newPKI(b)
	s := p.openStore(b)
	a := p.authority(b, s, p.config())
	dev := p.idevid(b, p.mfrA, "B-2", p.now.Add(-time.Hour), noExpiry())
	raw := [][]byte{dev.Raw}
	for b.Loop() {
		if _, err := a.VerifyClient(raw); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIssueCPU measures the authority's own work per issuance, one request at a time, on
// a SQLite store without fsync (synchronous OFF), so that the CPU and allocations of
// authorization, template, signing and recording are not hidden behind the disk:
//
//	go test -run '^$' -bench IssueCPU -benchmem ./authority
func BenchmarkIssueCPU(b *testing.B) {
	for _, bc := range []struct {
		name string
		op   Op
	}{{"enroll", OpEnroll}, {"reenroll", OpReenroll}} {
		b.Run(bc.name, func(b *testing.B) {
			p := newPKI(b)
			s, err := sqlite.Open(ctx, p.dbPath, sqlite.Options{Synchronous: "OFF"})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			a := p.authority(b, s, p.config())
			req := benchRequest(b, p, a, "B-3", bc.op)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := a.Issue(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
