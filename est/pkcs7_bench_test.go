package est

import (
	"crypto/x509"
	"testing"

	"coapca/internal/testpki"
)

// BenchmarkEncodeCertsOnly is the certs-only answer to every enrollment (RFC 9148 §4.3: one
// issued certificate), and a three-certificate chain as /crts answers it:
//
//	go test -run '^$' -bench EncodeCertsOnly -benchmem ./est
func BenchmarkEncodeCertsOnly(b *testing.B) {
	root := testpki.NewCA(b, "Bench Root")
	sub := root.SubCA(b, "Bench Sub")
	leaf := sub.Device(b, "bench-device", "SN-1").Cert
	for _, bc := range []struct {
		name  string
		certs []*x509.Certificate
	}{{"leaf", []*x509.Certificate{leaf}}, {"chain", []*x509.Certificate{leaf, sub.Cert, root.Cert}}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := EncodeCertsOnly(bc.certs); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
