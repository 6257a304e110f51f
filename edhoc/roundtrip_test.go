package edhoc

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"strings"
	"testing"

	"coapca/internal/testpki"
)

type credKind int

const (
	ccsKid credKind = iota
	x509T
	x509Chain
	ccsValue
)

func (k credKind) String() string { return [...]string{"ccs-kid", "x5t", "x5chain", "kccs"}[k] }

// party is a test identity: credential and private key for one role in one method and suite.
type party struct {
	cred *Credential
	key  crypto.PrivateKey
}

// testCA is the root that certifies the x5t/x5chain credentials: Ed25519, so that a
// certificate can carry any of the suites' public keys.
type testCA = testpki.CA

func newTestCA(t testing.TB) *testCA {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return testpki.NewRoot(t, &x509.Certificate{Subject: pkix.Name{CommonName: "EDHOC test root"}}, priv)
}

// newParty makes a random key fitting the suite (signature or static DH) and a credential.
func newParty(t testing.TB, ca *testCA, name string, suite Suite, signs bool, kind credKind, kid byte) party {
	p, err := params(suite)
	if err != nil {
		t.Fatal(err)
	}
	var priv crypto.PrivateKey
	var pub crypto.PublicKey
	switch {
	case signs && p.sig == sigEdDSA:
		pk, sk, _ := ed25519.GenerateKey(rand.Reader)
		priv, pub = sk, pk
	case signs:
		sk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		priv, pub = sk, &sk.PublicKey
	case p.curve == curveP256 && (kind == x509T || kind == x509Chain):
		// A P-256 ECDSA key pair used for static DH (the certificate holds an ECDSA key).
		sk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		priv, pub = sk, &sk.PublicKey
	default:
		sk, _ := p.ecdhCurve().GenerateKey(rand.Reader)
		priv, pub = sk, sk.PublicKey()
	}
	if x, ok := pub.(*ecdh.PublicKey); ok && x.Curve() == ecdh.X25519() && (kind == x509T || kind == x509Chain) {
		kind = ccsKid // crypto/x509 cannot issue certificates for X25519 keys
	}
	var cred *Credential
	switch kind {
	case ccsKid, ccsValue:
		var k []byte
		if kind == ccsKid {
			k = []byte{kid}
		}
		ccs, err := CCSFromPublicKey(name, k, pub)
		if err != nil {
			t.Fatal(err)
		}
		if cred, err = NewCCSCredential(ccs, nil); err != nil {
			t.Fatal(err)
		}
	case x509T, x509Chain:
		crt := ca.Issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: name}}, pub)
		ref := ByX5T
		chain := []*x509.Certificate{crt}
		if kind == x509Chain {
			ref = ByX5Chain
			chain = append(chain, ca.Cert)
		}
		if cred, err = NewX509Credential(chain, ref); err != nil {
			t.Fatal(err)
		}
	}
	return party{cred: cred, key: priv}
}

// trustingResolver plays the application: it knows the listed credentials by kid or x5t,
// accepts an x5chain whose end-entity certificate the test CA signed, and a kccs by value.
func trustingResolver(ca *testCA, known ...*Credential) Resolver {
	return func(id *IDCred, ead []EAD) (*Credential, error) {
		switch {
		case id.Kid != nil:
			for _, c := range known {
				if bytes.Equal(c.ID.Kid, id.Kid) {
					return c, nil
				}
			}
		case id.X5T != nil:
			for _, c := range known {
				if len(c.Certificates) > 0 && id.MatchesCert(c.Certificates[0].Raw) {
					return c, nil
				}
			}
		case len(id.X5Chain) > 0 || id.KCCS != nil:
			c, err := CredentialFromIDCred(id)
			if err != nil {
				return nil, err
			}
			if len(c.Certificates) > 0 {
				if err := c.Certificates[0].CheckSignatureFrom(ca.Cert); err != nil {
					return nil, fmt.Errorf("%w: %v", ErrUnknownCredential, err)
				}
			}
			return c, nil
		}
		return nil, ErrUnknownCredential
	}
}

// TestRoundTrip runs complete Initiator↔Responder exchanges with random keys for every method
// and every implemented suite, with every credential type, EAD items and message_4.
func TestRoundTrip(t *testing.T) {
	ca := newTestCA(t)
	kinds := []credKind{ccsKid, x509T, x509Chain, ccsValue}
	n := 0
	for _, suite := range SupportedSuites() {
		for m := MethodSigSig; m <= MethodDHDH; m++ {
			ki, kr := kinds[n%len(kinds)], kinds[(n+1)%len(kinds)]
			n++
			t.Run(fmt.Sprintf("suite%d/method%d/%v-%v", suite, m, ki, kr), func(t *testing.T) {
				pi := newParty(t, ca, "initiator", suite, m.InitiatorSigns(), ki, 0x2b)
				pr := newParty(t, ca, "responder", suite, m.ResponderSigns(), kr, 0x32)
				var seen [5][]EAD
				onEAD := func(msg int, items []EAD) error { seen[msg] = items; return nil }
				i, err := NewInitiator(Config{Method: m, Suites: []Suite{suite}, Credential: pi.cred, PrivateKey: pi.key,
					Resolve: trustingResolver(ca, pr.cred), OnEAD: onEAD})
				if err != nil {
					t.Fatal(err)
				}
				r, err := NewResponder(Config{Suites: []Suite{suite}, Credential: pr.cred, PrivateKey: pr.key,
					Resolve: trustingResolver(ca, pi.cred), OnEAD: onEAD})
				if err != nil {
					t.Fatal(err)
				}
				ead := func(l int64) []EAD { return []EAD{{Label: l, Value: []byte{byte(l)}}, {Label: l + 100}} }
				// Sent with padding (§3.8.1), which the receiver discards.
				padded := func(l int64) []EAD { return append(ead(l), EAD{Label: 0, Value: []byte{1, 2, 3}}, EAD{Label: 0}) }
				m1, err := i.Message1(padded(1))
				if err != nil {
					t.Fatal(err)
				}
				got1, err := r.ProcessMessage1(m1)
				if err != nil {
					t.Fatal(err)
				}
				if got1.Method != m || got1.Selected() != suite {
					t.Fatalf("message_1 decoded as %+v", got1)
				}
				m2, err := r.Message2(padded(2))
				if err != nil {
					t.Fatal(err)
				}
				info2, err := i.ProcessMessage2(m2)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(info2.Peer.Cred, pr.cred.Cred) {
					t.Error("initiator authenticated the wrong credential")
				}
				m3, err := i.Message3(padded(3))
				if err != nil {
					t.Fatal(err)
				}
				info3, err := r.ProcessMessage3(m3)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(info3.Peer.Cred, pi.cred.Cred) {
					t.Error("responder authenticated the wrong credential")
				}
				m4, err := r.Message4(padded(4))
				if err != nil {
					t.Fatal(err)
				}
				ead4, err := i.ProcessMessage4(m4)
				if err != nil {
					t.Fatal(err)
				}
				for k := 1; k <= 4; k++ {
					if fmt.Sprint(seen[k]) != fmt.Sprint(ead(int64(k))) {
						t.Errorf("EAD_%d = %v", k, seen[k])
					}
				}
				if fmt.Sprint(ead4) != fmt.Sprint(ead(4)) || fmt.Sprint(info2.EAD) != fmt.Sprint(ead(2)) || fmt.Sprint(info3.EAD) != fmt.Sprint(ead(3)) {
					t.Error("EAD not returned")
				}
				oi, err := i.OSCORE()
				if err != nil {
					t.Fatal(err)
				}
				or, err := r.OSCORE()
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(oi.MasterSecret, or.MasterSecret) || !bytes.Equal(oi.MasterSalt, or.MasterSalt) ||
					!bytes.Equal(oi.SenderID, or.RecipientID) || !bytes.Equal(oi.RecipientID, or.SenderID) || bytes.Equal(oi.SenderID, oi.RecipientID) {
					t.Errorf("OSCORE contexts differ: %+v / %+v", oi, or)
				}
				ei, _ := i.Exporter(40000, []byte("ctx"), 32)
				er, _ := r.Exporter(40000, []byte("ctx"), 32)
				if len(ei) != 32 || !bytes.Equal(ei, er) {
					t.Error("exporter outputs differ")
				}
				if err := i.KeyUpdate([]byte("n")); err != nil {
					t.Fatal(err)
				}
				if err := r.KeyUpdate([]byte("n")); err != nil {
					t.Fatal(err)
				}
				ei2, _ := i.Exporter(40000, []byte("ctx"), 32)
				er2, _ := r.Exporter(40000, []byte("ctx"), 32)
				if !bytes.Equal(ei2, er2) || bytes.Equal(ei, ei2) {
					t.Error("key update broken")
				}
				pi1, _ := i.PRKOut()
				pr1, _ := r.PRKOut()
				if !bytes.Equal(pi1, pr1) {
					t.Error("PRK_out differs")
				}
				if i.Suite() != suite || r.Method() != m || !i.Completed() || !r.Completed() {
					t.Error("accessors")
				}
				ci, cr := i.ConnIDs()
				ci2, cr2 := r.ConnIDs()
				if !bytes.Equal(ci, ci2) || !bytes.Equal(cr, cr2) || bytes.Equal(ci, cr) {
					t.Errorf("connection ids %x/%x vs %x/%x", ci, cr, ci2, cr2)
				}
				if !bytes.Equal(i.PeerCredential().Cred, pr.cred.Cred) || !bytes.Equal(r.PeerCredential().Cred, pi.cred.Cred) {
					t.Error("PeerCredential")
				}
				if fmt.Sprint(r.EAD1()) != fmt.Sprint(ead(1)) {
					t.Error("EAD1")
				}
				// A static-DH proof of possession against G_Y (EST-oscore): both sides agree.
				if csrKey, err := i.PeerEphemeralKey().Curve().GenerateKey(rand.Reader); err != nil {
					t.Error(err)
				} else {
					zzI, err1 := csrKey.ECDH(i.PeerEphemeralKey())
					zzR, err2 := r.EphemeralECDH(csrKey.PublicKey())
					if err1 != nil || err2 != nil || !bytes.Equal(zzI, zzR) {
						t.Errorf("ephemeral ECDH: %v %v", err1, err2)
					}
					if r.EphemeralKey() == nil {
						t.Error("EphemeralKey")
					}
				}
				r.Close()
				if _, err := r.Exporter(0, nil, 16); !errors.Is(err, ErrState) {
					t.Error("closed session still exports")
				}
			})
		}
	}
}

// pairFor builds a matching Initiator/Responder pair for quick negative tests.
func pairFor(t testing.TB, m Method, suite Suite, mod func(ic, rc *Config)) (*Initiator, *Responder) {
	ca := newTestCA(t)
	pi := newParty(t, ca, "i", suite, m.InitiatorSigns(), ccsKid, 1)
	pr := newParty(t, ca, "r", suite, m.ResponderSigns(), x509T, 2)
	ic := Config{Method: m, Suites: []Suite{suite}, Credential: pi.cred, PrivateKey: pi.key, Resolve: trustingResolver(ca, pr.cred)}
	rc := Config{Suites: []Suite{suite}, Credential: pr.cred, PrivateKey: pr.key, Resolve: trustingResolver(ca, pi.cred)}
	if mod != nil {
		mod(&ic, &rc)
	}
	i, err := NewInitiator(ic)
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewResponder(rc)
	if err != nil {
		t.Fatal(err)
	}
	return i, r
}

func replyCode(t *testing.T, err error) int {
	t.Helper()
	b := ReplyFor(err)
	if b == nil {
		t.Fatalf("no error message for %v", err)
	}
	em, perr := ParseErrorMessage(b)
	if perr != nil {
		t.Fatal(perr)
	}
	return em.Code
}

func TestFailures(t *testing.T) {
	t.Run("tampered message_2", func(t *testing.T) {
		for _, m := range []Method{MethodSigSig, MethodDHDH} {
			i, r := pairFor(t, m, Suite2, nil)
			m1, _ := i.Message1(nil)
			r.ProcessMessage1(m1)
			m2, _ := r.Message2(nil)
			m2[len(m2)-1] ^= 1
			_, err := i.ProcessMessage2(m2)
			if err == nil || replyCode(t, err) != ErrCodeUnspecified {
				t.Fatalf("tampered message_2 accepted: %v", err)
			}
			if _, err := i.Message3(nil); !errors.Is(err, ErrState) {
				t.Error("failed initiator continues")
			}
		}
	})
	t.Run("tampered message_3", func(t *testing.T) {
		i, r := pairFor(t, MethodDHSig, Suite3, nil)
		m1, _ := i.Message1(nil)
		r.ProcessMessage1(m1)
		m2, _ := r.Message2(nil)
		i.ProcessMessage2(m2)
		m3, _ := i.Message3(nil)
		m3[3] ^= 0x80
		if _, err := r.ProcessMessage3(m3); !errors.Is(err, ErrAuth) {
			t.Fatalf("tampered message_3: %v", err)
		}
		if _, err := r.Message4(nil); !errors.Is(err, ErrState) {
			t.Error("failed responder continues")
		}
	})
	t.Run("tampered message_4", func(t *testing.T) {
		i, r := pairFor(t, MethodSigDH, Suite0, nil)
		m1, _ := i.Message1(nil)
		r.ProcessMessage1(m1)
		m2, _ := r.Message2(nil)
		i.ProcessMessage2(m2)
		m3, _ := i.Message3(nil)
		r.ProcessMessage3(m3)
		m4, _ := r.Message4(nil)
		m4[1] ^= 1
		if _, err := i.ProcessMessage4(m4); !errors.Is(err, ErrAuth) {
			t.Fatalf("tampered message_4: %v", err)
		}
	})
	t.Run("unknown credential", func(t *testing.T) {
		i, r := pairFor(t, MethodSigSig, Suite2, func(ic, rc *Config) {
			rc.Resolve = func(*IDCred, []EAD) (*Credential, error) { return nil, ErrUnknownCredential }
		})
		m1, _ := i.Message1(nil)
		r.ProcessMessage1(m1)
		m2, _ := r.Message2(nil)
		i.ProcessMessage2(m2)
		m3, _ := i.Message3(nil)
		_, err := r.ProcessMessage3(m3)
		if replyCode(t, err) != ErrCodeUnknownCredential || !bytes.Equal(ReplyFor(err), []byte{0x03, 0xf5}) {
			t.Fatalf("%v → %x", err, ReplyFor(err))
		}
	})
	t.Run("critical EAD without handler", func(t *testing.T) {
		i, r := pairFor(t, MethodSigSig, Suite2, nil)
		m1, _ := i.Message1([]EAD{{Label: -5, Value: []byte("x")}})
		if _, err := r.ProcessMessage1(m1); err == nil || replyCode(t, err) != ErrCodeUnspecified {
			t.Fatalf("critical EAD accepted: %v", err)
		}
	})
	t.Run("method not accepted", func(t *testing.T) {
		i, r := pairFor(t, MethodDHDH, Suite2, func(ic, rc *Config) { rc.Methods = []Method{MethodSigSig} })
		m1, _ := i.Message1(nil)
		if _, err := r.ProcessMessage1(m1); err == nil {
			t.Fatal("method accepted")
		}
	})
	t.Run("preferred suite supported", func(t *testing.T) {
		// SUITES_I = [3, 2]: the Responder supports 3, which the Initiator prefers → ERR_CODE 2.
		i, r := pairFor(t, MethodSigSig, Suite2, func(ic, rc *Config) { ic.Suites = []Suite{Suite3, Suite2}; rc.Suites = []Suite{Suite2, Suite3} })
		m1, _ := i.Message1(nil)
		_, err := r.ProcessMessage1(m1)
		if replyCode(t, err) != ErrCodeWrongSuite {
			t.Fatal(err)
		}
		em, _ := ParseErrorMessage(ReplyFor(err))
		if fmt.Sprint(em.SuitesR) != "[3]" {
			t.Errorf("SUITES_R = %v, want the Initiator's most preferred supported suite", em.SuitesR)
		}
		s, err := SuitesAfterError([]Suite{Suite3, Suite2}, em.SuitesR)
		if err != nil || len(s) != 1 || s[0] != Suite3 {
			t.Fatalf("SuitesAfterError = %v %v", s, err)
		}
		// No suite of SUITES_I supported: SUITES_R lists all of the Responder's.
		i, r = pairFor(t, MethodSigSig, Suite6, func(ic, rc *Config) { rc.Suites = []Suite{Suite2, Suite3} })
		m1, _ = i.Message1(nil)
		_, err = r.ProcessMessage1(m1)
		em, _ = ParseErrorMessage(ReplyFor(err))
		if em == nil || fmt.Sprint(em.SuitesR) != "[2 3]" {
			t.Errorf("SUITES_R = %v", em)
		}
	})
	t.Run("connection identifiers", func(t *testing.T) {
		i, r := pairFor(t, MethodSigSig, Suite2, func(ic, rc *Config) { ic.ConnID = []byte{7}; rc.ConnID = []byte{7} })
		m1, _ := i.Message1(nil)
		r.ProcessMessage1(m1)
		if _, err := r.Message2(nil); err == nil {
			t.Fatal("C_R = C_I accepted")
		}
		i, r = pairFor(t, MethodSigSig, Suite2, func(ic, rc *Config) { ic.ConnID = []byte{7} })
		m1, _ = i.Message1(nil)
		r.ProcessMessage1(m1)
		if err := r.SetConnID([]byte("long-connection-id")); err != nil {
			t.Fatal(err)
		}
		m2, err := r.Message2(nil)
		if err != nil {
			t.Fatal(err)
		}
		info, err := i.ProcessMessage2(m2)
		if err != nil || string(info.CR) != "long-connection-id" {
			t.Fatalf("C_R %v %v", info, err)
		}
	})
	t.Run("out of order", func(t *testing.T) {
		i, r := pairFor(t, MethodSigSig, Suite2, nil)
		if _, err := i.ProcessMessage2([]byte{0x40}); !errors.Is(err, ErrState) {
			t.Error(err)
		}
		if _, err := r.Message2(nil); !errors.Is(err, ErrState) {
			t.Error(err)
		}
		if _, err := i.Exporter(0, nil, 16); !errors.Is(err, ErrState) {
			t.Error(err)
		}
		if _, err := i.OSCORE(); !errors.Is(err, ErrState) {
			t.Error(err)
		}
	})
	t.Run("wrong key type for suite", func(t *testing.T) {
		// An Ed25519 signature key with an ES256 suite.
		i, r := pairFor(t, MethodSigSig, Suite2, func(ic, rc *Config) {
			_, sk, _ := ed25519.GenerateKey(rand.Reader)
			rc.PrivateKey = sk
		})
		m1, _ := i.Message1(nil)
		if _, err := r.ProcessMessage1(m1); err == nil || ReplyFor(err) == nil {
			t.Fatalf("accepted a method its key cannot serve: %v", err)
		}
		_, sk, _ := ed25519.GenerateKey(rand.Reader)
		if _, err := NewInitiator(Config{Method: MethodSigSig, Suites: []Suite{Suite2}, Credential: &Credential{}, PrivateKey: sk,
			Resolve: resolverOf()}); err == nil {
			t.Fatal("Initiator accepted an Ed25519 key for ES256")
		}
	})
	t.Run("long PLAINTEXT_2", func(t *testing.T) {
		i, r := pairFor(t, MethodSigSig, Suite2, func(ic, rc *Config) {
			c := *rc.Credential
			ders := make([][]byte, 40)
			for k := range ders {
				ders[k] = c.Certificates[0].Raw
			}
			c.ID = IDCredX5Chain(ders)
			rc.Credential = &c
		})
		m1, _ := i.Message1(nil)
		r.ProcessMessage1(m1)
		if _, err := r.Message2(nil); err == nil {
			t.Fatal("PLAINTEXT_2 beyond 255*hash_length accepted")
		}
	})
	t.Run("low-order G_Y", func(t *testing.T) {
		i, _ := pairFor(t, MethodSigSig, Suite0, nil)
		i.Message1(nil)
		m2 := appendBstr(nil, append(make([]byte, 32), 1, 2, 3, 4, 5))
		if _, err := i.ProcessMessage2(m2); err == nil || ReplyFor(err) == nil {
			t.Fatalf("low-order G_Y: %v", err)
		}
	})
	t.Run("unknown method", func(t *testing.T) {
		_, r := pairFor(t, MethodSigSig, Suite2, nil)
		k, _ := ecdh.P256().GenerateKey(rand.Reader)
		m1 := (&Message1{Method: 4, SuitesI: []Suite{Suite2}, GX: k.PublicKey().Bytes()[1:33], CI: []byte{1}}).Marshal()
		_, err := r.ProcessMessage1(m1)
		if err == nil || !strings.Contains(err.Error(), "method 4") || ReplyFor(err) == nil {
			t.Fatalf("method 4: %v", err)
		}
	})
	t.Run("injected ephemeral on wrong curve", func(t *testing.T) {
		k, _ := ecdh.X25519().GenerateKey(rand.Reader)
		i, _ := pairFor(t, MethodSigSig, Suite2, func(ic, rc *Config) { ic.Ephemeral = k })
		if _, err := i.Message1(nil); err == nil {
			t.Fatal("accepted")
		}
	})
}

func TestErrorMessages(t *testing.T) {
	for _, tc := range []struct {
		e   ErrorMessage
		hex string
	}{
		{ErrorMessage{Code: ErrCodeUnspecified, Diagnostic: "bad"}, "0163626164"},
		{ErrorMessage{Code: ErrCodeWrongSuite, SuitesR: []Suite{2}}, "0202"},
		{ErrorMessage{Code: ErrCodeWrongSuite, SuitesR: []Suite{2, 3}}, "02820203"},
		{ErrorMessage{Code: ErrCodeUnknownCredential}, "03f5"},
		{ErrorMessage{Code: 9, Info: []byte{0x40}}, "0940"},
	} {
		b := tc.e.Marshal()
		if fmt.Sprintf("%x", b) != tc.hex {
			t.Errorf("%+v → %x, want %s", tc.e, b, tc.hex)
		}
		if !IsErrorMessage(b) {
			t.Error("IsErrorMessage")
		}
		got, err := ParseErrorMessage(b)
		if err != nil || fmt.Sprint(*got) != fmt.Sprint(tc.e) {
			t.Errorf("parse %x = %+v, %v", b, got, err)
		}
		if got.Error() == "" {
			t.Error("empty text")
		}
	}
	for _, bad := range []string{"", "00f5", "0140", "03f4", "0281", "02810202", "0163626164ff", "01"} {
		b := make([]byte, len(bad)/2)
		fmt.Sscanf(bad, "%x", &b)
		if _, err := ParseErrorMessage(b); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func TestConnIDEncoding(t *testing.T) {
	for _, tc := range []struct{ raw, enc string }{
		{"2d", "2d"}, {"18", "4118"}, {"00", "00"}, {"37", "37"}, {"17", "17"}, {"20", "20"}, {"38", "4138"},
		{"", "40"}, {"0102", "420102"},
	} {
		var raw []byte
		fmt.Sscanf(tc.raw, "%x", &raw)
		if raw == nil {
			raw = []byte{}
		}
		enc := appendIDBytes(nil, raw)
		if fmt.Sprintf("%x", enc) != tc.enc {
			t.Errorf("%s → %x want %s", tc.raw, enc, tc.enc)
		}
		got, err := (&reader{rest: enc}).readIDBytes()
		if err != nil || !bytes.Equal(got, raw) {
			t.Errorf("%x decodes to %x %v", enc, got, err)
		}
	}
	id, rest, err := SplitConnID([]byte{0x41, 0x18, 0x52, 0xaa})
	if err != nil || !bytes.Equal(id, []byte{0x18}) || !bytes.Equal(rest, []byte{0x52, 0xaa}) {
		t.Errorf("SplitConnID = %x %x %v", id, rest, err)
	}
	for _, bad := range [][]byte{{0x41, 0x0e}, {0x18, 0x18}, {0x38, 0x18}, {0x60}} {
		if _, err := (&reader{rest: bad}).readIDBytes(); err == nil {
			t.Errorf("%x accepted", bad)
		}
	}
}
