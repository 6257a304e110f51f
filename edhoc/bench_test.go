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

// BenchmarkMessageCodec measures the CBOR layer alone, without cryptography: encoding
// message_1 and decoding PLAINTEXT_2 and ID_CRED_R of RFC 9529 trace 1, and an error message.
func BenchmarkMessageCodec(b *testing.B) {
	tf := loadTrace(b, "edhoc-rfc9529-trace1.json")
	m1, err := ParseMessage1(tf.hex(b, "message_1"))
	if err != nil {
		b.Fatal(err)
	}
	pt2, idCred := tf.hex(b, "plaintext_2"), tf.hex(b, "id_cred_r")
	errMsg := (&ErrorMessage{Code: ErrCodeWrongSuite, SuitesR: []Suite{Suite2, Suite0}}).Marshal()
	b.ReportAllocs()
	for b.Loop() {
		_ = m1.Marshal()
		if _, err := ParsePlaintext2(pt2, 64); err != nil {
			b.Fatal(err)
		}
		if _, err := ParseIDCred(idCred); err != nil {
			b.Fatal(err)
		}
		if _, err := ParseErrorMessage(errMsg); err != nil {
			b.Fatal(err)
		}
	}
}
