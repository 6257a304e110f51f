package edhoc

import (
	"fmt"
	"testing"
)

// BenchmarkHandshake measures complete handshakes (message_1..message_3, both sides, with
// fresh ephemeral keys, no message_4) per method and suite; ns/op is the CPU cost of one
// handshake for both peers together, handshakes/s is 1e9/ns_per_op.
func BenchmarkHandshake(b *testing.B) {
	ca := newTestCA(b)
	for _, suite := range []Suite{Suite0, Suite2, Suite3} {
		for m := MethodSigSig; m <= MethodDHDH; m++ {
			b.Run(fmt.Sprintf("suite%d/method%d", suite, m), func(b *testing.B) {
				pi := newParty(b, ca, "i", suite, m.InitiatorSigns(), ccsKid, 1)
				pr := newParty(b, ca, "r", suite, m.ResponderSigns(), ccsKid, 2)
				ic := Config{Method: m, Suites: []Suite{suite}, Credential: pi.cred, PrivateKey: pi.key, Resolve: resolverOf(pr.cred)}
				rc := Config{Suites: []Suite{suite}, Credential: pr.cred, PrivateKey: pr.key, Resolve: resolverOf(pi.cred)}
				var bytesOnWire int
				b.ReportAllocs()
				for b.Loop() {
					i, _ := NewInitiator(ic)
					r, _ := NewResponder(rc)
					m1, _ := i.Message1(nil)
					if _, err := r.ProcessMessage1(m1); err != nil {
						b.Fatal(err)
					}
					m2, _ := r.Message2(nil)
					if _, err := i.ProcessMessage2(m2); err != nil {
						b.Fatal(err)
					}
					m3, _ := i.Message3(nil)
					if _, err := r.ProcessMessage3(m3); err != nil {
						b.Fatal(err)
					}
					bytesOnWire = len(m1) + len(m2) + len(m3)
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "handshakes/s")
				b.ReportMetric(float64(bytesOnWire), "B/handshake")
			})
		}
	}
}
