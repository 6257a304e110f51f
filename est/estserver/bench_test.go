package estserver

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"path/filepath"
	"testing"

	"coapca/authority"
	"coapca/est"
	"coapca/internal/testpki"
	"coapca/store/sqlite"
)

// BenchmarkServiceEnroll measures the EST request path on the server without its transport:
// est.ParseCSR (with the proof-of-possession signature check), PoP linking, and the real
// Authority (authorization, template, signature, record) on SQLite without fsync (synchronous
// OFF, so that the disk does not hide the CPU), then the certs-only answer as EST-coaps sends it:
//
//	go test -run '^$' -bench ServiceEnroll -benchmem ./est/estserver
func BenchmarkServiceEnroll(b *testing.B) {
	for _, re := range []bool{false, true} {
		name := "enroll"
		if re {
			name = "reenroll"
		}
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			root := testpki.NewCA(b, "Bench Root")
			mfr := testpki.NewCA(b, "Bench Manufacturer")
			s, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "ca.db"), sqlite.Options{Synchronous: "OFF"})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			a, err := authority.New(authority.Policy{
				TrustStores: []authority.TrustStore{{Name: "mfr", Roots: []*x509.Certificate{mfr.Cert}}},
			}, authority.Options{Store: s, Signer: root.Key, Chain: root.Chain})
			if err != nil {
				b.Fatal(err)
			}
			svc := New(a, nil)
			dev := mfr.Device(b, "bench-device", "SN-1")
			key := testpki.NewKey(b)
			csr, err := est.CreateCSR(rand.Reader, &x509.CertificateRequest{
				Subject: pkix.Name{CommonName: "bench-device", SerialNumber: "SN-1"}}, key, "")
			if err != nil {
				b.Fatal(err)
			}
			who := authority.Requester{Chain: dev.Chain, Transport: authority.TransportCoAPS, Protocol: authority.ProtocolEST}
			if _, err := a.VerifyClient([][]byte{dev.Cert.Raw}); err != nil { // the handshake's check
				b.Fatal(err)
			}
			op := svc.Enroll
			if re {
				iss, err := svc.Enroll(ctx, &Request{Body: csr, Requester: who})
				if err != nil {
					b.Fatal(err)
				}
				who.Chain = append([]*x509.Certificate{iss.Cert}, iss.Chain...)
				op = svc.Reenroll
			}
			b.ReportAllocs()
			for b.Loop() {
				iss, err := op(ctx, &Request{Body: csr, Requester: who})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := est.EncodeCertsOnly([]*x509.Certificate{iss.Cert}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
