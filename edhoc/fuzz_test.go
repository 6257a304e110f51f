package edhoc

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/hex"
	"testing"
)

// trace1Configs returns the Initiator and Responder configurations of RFC 9529 trace 1, so that
// the fuzz targets reach deep states deterministically and the seeds are valid messages.
func trace1Configs(t testing.TB) (ic, rc Config, tf *traceFile) {
	tf = loadTrace(t, "edhoc-rfc9529-trace1.json")
	certR, _ := x509.ParseCertificate(tf.hex(t, "cred_r"))
	certI, _ := x509.ParseCertificate(tf.hex(t, "cred_i"))
	credR, _ := NewX509Credential([]*x509.Certificate{certR}, ByX5T)
	credI, _ := NewX509Credential([]*x509.Certificate{certI}, ByX5T)
	x, _ := ecdh.X25519().NewPrivateKey(tf.hex(t, "x"))
	y, _ := ecdh.X25519().NewPrivateKey(tf.hex(t, "y"))
	ic = Config{Method: MethodSigSig, Suites: []Suite{Suite0}, Credential: credI, PrivateKey: ed25519.NewKeyFromSeed(tf.hex(t, "sk_i")),
		ConnID: tf.hex(t, "c_i"), Resolve: resolverOf(credR), Ephemeral: x}
	rc = Config{Suites: []Suite{Suite0, Suite2}, Credential: credR, PrivateKey: ed25519.NewKeyFromSeed(tf.hex(t, "sk_r")),
		ConnID: tf.hex(t, "c_r"), Resolve: resolverOf(credI), Ephemeral: y}
	return ic, rc, tf
}

func addInvalidSeeds(f *testing.F, label string) {
	for _, c := range loadInvalid(f) {
		if c.Label == label {
			b, _ := hex.DecodeString(c.Hex)
			f.Add(b)
		}
	}
}

// FuzzMessage1 feeds message_1 decoding and the Responder state machine: an accepted
// message_1 must re-encode to the same bytes (deterministic CBOR), and nothing may panic.
func FuzzMessage1(f *testing.F) {
	ic, rc, tf := trace1Configs(f)
	_ = ic
	tf2 := loadTrace(f, "edhoc-rfc9529-trace2.json")
	f.Add(tf.hex(f, "message_1"))
	f.Add(tf2.hex(f, "message_1"))
	f.Add(tf2.hex(f, "attempt1_message_1"))
	addInvalidSeeds(f, "Invalid message_1")
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseMessage1(b)
		if err == nil && !bytes.Equal(m.Marshal(), b) {
			t.Fatalf("%x re-encodes as %x", b, m.Marshal())
		}
		r, err := NewResponder(rc)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.ProcessMessage1(b); err != nil {
			if ReplyFor(err) == nil {
				t.Fatalf("refused without an error message: %v", err)
			}
			return
		}
		if _, err := r.Message2(nil); err != nil {
			t.Logf("message_2: %v", err)
		}
	})
}

// FuzzMessage2 feeds the Initiator waiting for message_2 (message_2 and error decoding,
// PLAINTEXT_2 decoding through the keystream, credential lookup, MAC and signature checks).
func FuzzMessage2(f *testing.F) {
	ic, _, tf := trace1Configs(f)
	f.Add(tf.hex(f, "message_2"))
	f.Add([]byte{0x02, 0x02})
	f.Add([]byte{0x03, 0xf5})
	addInvalidSeeds(f, "Invalid message_2")
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _, _ = ParseMessage2(b, Suite0)
		i, err := NewInitiator(ic)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := i.Message1(nil); err != nil {
			t.Fatal(err)
		}
		if _, err := i.ProcessMessage2(b); err != nil {
			return
		}
		if _, err := i.Message3(nil); err != nil {
			t.Fatalf("message_3 after accepted message_2: %v", err)
		}
	})
}

// FuzzMessage3 feeds the Responder waiting for message_3.
func FuzzMessage3(f *testing.F) {
	ic, rc, tf := trace1Configs(f)
	_ = ic
	m1 := tf.hex(f, "message_1")
	f.Add(tf.hex(f, "message_3"))
	f.Add([]byte{0x01, 0x60})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ParseMessage3(b)
		r, err := NewResponder(rc)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.ProcessMessage1(m1); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Message2(nil); err != nil {
			t.Fatal(err)
		}
		if _, err := r.ProcessMessage3(b); err != nil {
			return
		}
		if _, err := r.OSCORE(); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzMessage4 feeds the Initiator that sent message_3 (trace 2: static DH, no signatures).
func FuzzMessage4(f *testing.F) {
	tf := loadTrace(f, "edhoc-rfc9529-trace2.json")
	skI, _ := ecdh.P256().NewPrivateKey(tf.hex(f, "sk_i"))
	credR, _ := NewCCSCredential(tf.hex(f, "cred_r"), []byte{0x32})
	credI, _ := NewCCSCredential(tf.hex(f, "cred_i"), []byte{0x2b})
	x, _ := ecdh.P256().NewPrivateKey(tf.hex(f, "x"))
	ic := Config{Method: MethodDHDH, Suites: []Suite{Suite6, Suite2}, Credential: credI, PrivateKey: skI,
		ConnID: tf.hex(f, "c_i"), Resolve: resolverOf(credR), Ephemeral: x}
	m2 := tf.hex(f, "message_2")
	f.Add(tf.hex(f, "message_4"))
	f.Add([]byte{0x40})
	f.Add([]byte{0x01, 0x61, 0x41})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ParseMessage4(b)
		i, err := NewInitiator(ic)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := i.Message1(nil); err != nil {
			t.Fatal(err)
		}
		if _, err := i.ProcessMessage2(m2); err != nil {
			t.Fatal(err)
		}
		if _, err := i.Message3(nil); err != nil {
			t.Fatal(err)
		}
		_, _ = i.ProcessMessage4(b)
	})
}

// FuzzErrorMessage: an accepted error message re-encodes to the same bytes.
func FuzzErrorMessage(f *testing.F) {
	for _, s := range []string{"0202", "02820602", "03f5", "0163626164", "0940", "00f5"} {
		b, _ := hex.DecodeString(s)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := ParseErrorMessage(b)
		if err != nil {
			return
		}
		if !bytes.Equal(e.Marshal(), b) {
			t.Fatalf("%x re-encodes as %x", b, e.Marshal())
		}
		_ = e.Error()
	})
}

// FuzzPlaintext feeds the inner decoders (PLAINTEXT_2/3/4, ID_CRED, CCS).
func FuzzPlaintext(f *testing.F) {
	t1 := loadTrace(f, "edhoc-rfc9529-trace1.json")
	t2 := loadTrace(f, "edhoc-rfc9529-trace2.json")
	for _, k := range []string{"plaintext_2", "plaintext_3", "id_cred_r", "id_cred_i"} {
		f.Add(t1.hex(f, k))
		f.Add(t2.hex(f, k))
	}
	f.Add(t2.hex(f, "cred_r"))
	addInvalidSeeds(f, "Invalid PLAINTEXT_2")
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, n := range []int{8, 16, 64} {
			if p, err := ParsePlaintext2(b, n); err == nil && !bytes.Equal(p.marshal(), b) {
				t.Fatalf("PLAINTEXT_2 %x re-encodes as %x", b, p.marshal())
			}
			if p, err := ParsePlaintext3(b, n); err == nil && !bytes.Equal(p.marshal(), b) {
				t.Fatalf("PLAINTEXT_3 %x re-encodes as %x", b, p.marshal())
			}
		}
		_, _ = ParsePlaintext4(b)
		if id, err := ParseIDCred(b); err == nil {
			_, _ = CredentialFromIDCred(id)
		}
		_, _ = NewCCSCredential(b, nil)
		if id, rest, err := SplitConnID(b); err == nil {
			if got := append(AppendConnID(nil, id), rest...); !bytes.Equal(got, b) {
				t.Fatalf("connection id %x re-encodes as %x", b, got)
			}
		}
	})
}

// FuzzStateMachine drives an Initiator and a Responder (trace 1 configuration) with an
// arbitrary sequence of calls: each op byte picks a method, and messages are either the
// peer's last output (possibly with one flipped byte) or fuzzer bytes. Nothing may panic,
// and a session that completed on both sides must agree on PRK_out.
func FuzzStateMachine(f *testing.F) {
	ic, rc, _ := trace1Configs(f)
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7}, []byte{})
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, []byte{0x41})
	f.Add([]byte{0, 1, 1, 2, 3, 3, 4, 5, 6, 6, 7}, []byte{0x40, 0x02})
	f.Add([]byte{0, 0x81, 2, 3, 4, 0x85, 6, 7}, []byte{0xf5, 0x0e})
	f.Fuzz(func(t *testing.T, ops []byte, junk []byte) {
		if len(ops) > 32 {
			return
		}
		i, err := NewInitiator(ic)
		if err != nil {
			t.Fatal(err)
		}
		r, err := NewResponder(rc)
		if err != nil {
			t.Fatal(err)
		}
		var toR, toI []byte
		var updI, updR int
		pick := func(last []byte, op byte) []byte {
			switch {
			case op&0x80 != 0:
				return junk
			case op&0x40 != 0 && len(last) > 0:
				m := bytes.Clone(last)
				m[int(op)%len(m)] ^= 0x01
				return m
			}
			return last
		}
		for _, op := range ops {
			switch op & 0x0f {
			case 0:
				toR, _ = i.Message1(nil)
			case 1:
				_, _ = r.ProcessMessage1(pick(toR, op))
			case 2:
				toI, _ = r.Message2(nil)
			case 3:
				_, _ = i.ProcessMessage2(pick(toI, op))
			case 4:
				toR, _ = i.Message3(nil)
			case 5:
				_, _ = r.ProcessMessage3(pick(toR, op))
			case 6:
				toI, _ = r.Message4(nil)
			case 7:
				_, _ = i.ProcessMessage4(pick(toI, op))
			case 8:
				_, _ = i.Exporter(int(op>>4), junk, 16)
				_, _ = r.OSCORE()
			case 9:
				if i.KeyUpdate(junk) == nil {
					updI++
				}
				if r.KeyUpdate(junk) == nil {
					updR++
				}
			case 10:
				_ = r.SetConnID(junk)
			}
		}
		if i.Completed() && r.Completed() && updI == updR {
			a, _ := i.PRKOut()
			b, _ := r.PRKOut()
			if !bytes.Equal(a, b) {
				t.Fatalf("completed sessions disagree on PRK_out")
			}
		}
	})
}
