package edhoc

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"sort"
	"testing"
)

type traceFile struct {
	Method      int               `json:"method"`
	CipherSuite int               `json:"cipher_suite"`
	Values      map[string]string `json:"values"`
	Certs       map[string]struct {
		PublicKey string `json:"public_key_ed25519"`
		Signature string `json:"signature_ed25519"`
	} `json:"certificates"`
}

func loadTrace(t testing.TB, name string) *traceFile {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	var tf traceFile
	if err := json.Unmarshal(b, &tf); err != nil {
		t.Fatal(err)
	}
	return &tf
}

func (tf *traceFile) hex(t testing.TB, k string) []byte {
	t.Helper()
	s, ok := tf.Values[k]
	if !ok {
		t.Fatalf("vector has no %q", k)
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("%s: %v", k, err)
	}
	return b
}

// checker records which vector values a test compared, so that a test can insist on all.
type checker struct {
	t       *testing.T
	tf      *traceFile
	checked map[string]bool
}

func (c *checker) eq(key string, got []byte) {
	c.t.Helper()
	want := c.tf.hex(c.t, key)
	if !bytes.Equal(got, want) {
		c.t.Errorf("%s:\n got  %x\n want %x", key, got, want)
	}
	c.checked[key] = true
}

// eqTrace compares every traced value that has a name in the vector.
func (c *checker) eqTrace(side string, tr map[string][]byte) {
	c.t.Helper()
	for k, v := range tr {
		if _, ok := c.tf.Values[k]; !ok {
			continue
		}
		want := c.tf.hex(c.t, k)
		if !bytes.Equal(v, want) {
			c.t.Errorf("%s %s:\n got  %x\n want %x", side, k, v, want)
		}
		c.checked[k] = true
	}
}

// requireTraced fails for every name that one side should have produced but did not.
func (c *checker) requireTraced(side string, tr map[string][]byte, names ...string) {
	c.t.Helper()
	for _, n := range names {
		if _, ok := tr[n]; !ok {
			c.t.Errorf("%s did not produce %s", side, n)
		}
	}
}

func (c *checker) allChecked() {
	c.t.Helper()
	var missing []string
	for k := range c.tf.Values {
		if !c.checked[k] {
			missing = append(missing, k)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		c.t.Errorf("vector values never compared: %v", missing)
	}
	c.t.Logf("%d of %d vector values compared byte for byte", len(c.checked), len(c.tf.Values))
}

func recorder(m map[string][]byte) func(string, []byte) {
	return func(k string, v []byte) { m[k] = v }
}

func resolverOf(creds ...*Credential) Resolver {
	return func(id *IDCred, _ []EAD) (*Credential, error) {
		for _, c := range creds {
			if bytes.Equal(id.Raw, c.ID.Raw) {
				return c, nil
			}
		}
		return nil, ErrUnknownCredential
	}
}

// Steps both sides compute; each must appear in both traces.
var (
	commonSteps = []string{"input_th_2", "th_2", "g_xy", "prk_2e", "prk_3e2m", "context_2", "info_mac_2", "mac_2",
		"signature_or_mac_2", "plaintext_2", "info_keystream_2", "keystream_2", "input_th_3", "th_3",
		"prk_4e3m", "context_3", "info_mac_3", "mac_3", "signature_or_mac_3", "plaintext_3", "a_3",
		"info_k_3", "k_3", "info_iv_3", "iv_3", "input_th_4", "th_4", "info_prk_out", "prk_out",
		"info_prk_exporter", "prk_exporter", "a_4", "info_k_4", "k_4", "info_iv_4", "iv_4", "plaintext_4",
		"keyupdate_prk_out", "keyupdate_prk_exporter"}
	initiatorOnly = []string{"message_1", "h_message_1", "ciphertext_3", "message_3"}
	responderOnly = []string{"h_message_1", "ciphertext_2", "message_2", "ciphertext_4", "message_4"}
)

type handshake struct {
	iTrace, rTrace map[string][]byte
	i              *Initiator
	r              *Responder
	m1, m2, m3, m4 []byte
	info2          *Message2Info
	iOSC, rOSC     *OSCOREContext
	iUpd, rUpd     *OSCOREContext
}

// runHandshake drives a full exchange with message_4, then a KeyUpdate.
func runHandshake(t *testing.T, ic, rc Config, keyUpdateCtx []byte) *handshake {
	t.Helper()
	h := &handshake{iTrace: map[string][]byte{}, rTrace: map[string][]byte{}}
	ic.Trace, rc.Trace = recorder(h.iTrace), recorder(h.rTrace)
	var err error
	if h.i, err = NewInitiator(ic); err != nil {
		t.Fatal(err)
	}
	if h.r, err = NewResponder(rc); err != nil {
		t.Fatal(err)
	}
	if h.m1, err = h.i.Message1(nil); err != nil {
		t.Fatal("message_1:", err)
	}
	if _, err = h.r.ProcessMessage1(h.m1); err != nil {
		t.Fatal("process message_1:", err)
	}
	if h.m2, err = h.r.Message2(nil); err != nil {
		t.Fatal("message_2:", err)
	}
	if h.info2, err = h.i.ProcessMessage2(h.m2); err != nil {
		t.Fatal("process message_2:", err)
	}
	if h.m3, err = h.i.Message3(nil); err != nil {
		t.Fatal("message_3:", err)
	}
	if _, err = h.r.ProcessMessage3(h.m3); err != nil {
		t.Fatal("process message_3:", err)
	}
	if h.m4, err = h.r.Message4(nil); err != nil {
		t.Fatal("message_4:", err)
	}
	if _, err = h.i.ProcessMessage4(h.m4); err != nil {
		t.Fatal("process message_4:", err)
	}
	if h.iOSC, err = h.i.OSCORE(); err != nil {
		t.Fatal(err)
	}
	if h.rOSC, err = h.r.OSCORE(); err != nil {
		t.Fatal(err)
	}
	if err := h.i.KeyUpdate(keyUpdateCtx); err != nil {
		t.Fatal(err)
	}
	if err := h.r.KeyUpdate(keyUpdateCtx); err != nil {
		t.Fatal(err)
	}
	if h.iUpd, err = h.i.OSCORE(); err != nil {
		t.Fatal(err)
	}
	if h.rUpd, err = h.r.OSCORE(); err != nil {
		t.Fatal(err)
	}
	return h
}

// checkCommon compares everything that both traces share.
func checkCommon(c *checker, h *handshake, suite Suite) {
	t := c.t
	t.Helper()
	c.requireTraced("initiator", h.iTrace, append(commonSteps, initiatorOnly...)...)
	c.requireTraced("responder", h.rTrace, append(commonSteps, responderOnly...)...)
	c.eqTrace("initiator", h.iTrace)
	c.eqTrace("responder", h.rTrace)
	c.eq("message_1", h.m1)
	c.eq("message_2", h.m2)
	c.eq("message_3", h.m3)
	c.eq("message_4", h.m4)

	m1, err := ParseMessage1(h.m1)
	if err != nil {
		t.Fatal(err)
	}
	c.eq("method", appendInt(nil, int64(m1.Method)))
	c.eq("suites_i", appendSuites(nil, m1.SuitesI))
	c.eq("g_x", m1.GX)
	c.eq("g_x_cbor", appendBstr(nil, m1.GX))
	c.eq("c_i", m1.CI)
	c.eq("c_i_cbor", appendIDBytes(nil, m1.CI))
	c.eq("ead_1", appendEAD(nil, m1.EAD))
	gy := h.m2[2:34]
	c.eq("g_y", gy)
	c.eq("g_y_cbor", appendBstr(nil, gy))
	c.eq("c_r", h.info2.CR)
	c.eq("c_r_cbor", appendIDBytes(nil, h.info2.CR))
	for _, k := range []string{"h_message_1", "th_2", "th_3", "th_4", "mac_2", "mac_3", "signature_or_mac_2", "signature_or_mac_3"} {
		c.eq(k+"_cbor", appendBstr(nil, h.iTrace[k]))
	}
	c.eq("salt_for_prk_2e", h.iTrace["th_2"])
	c.eq("context_2_bstr", appendBstr(nil, h.rTrace["context_2"]))
	c.eq("context_3_bstr", appendBstr(nil, h.iTrace["context_3"]))
	c.eq("ead_2", nil)
	c.eq("ead_3", nil)
	if _, ok := c.tf.Values["ead_4"]; ok {
		c.eq("ead_4", nil)
	}
	c.eq("ciphertext_2", h.rTrace["ciphertext_2"])
	c.eq("ciphertext_4", h.rTrace["ciphertext_4"])

	// OSCORE (Appendix A.1): both sides, with the ids crossed.
	c.eq("oscore_master_secret", h.iOSC.MasterSecret)
	c.eq("oscore_master_salt", h.iOSC.MasterSalt)
	c.eq("info_oscore_master_secret", kdfInfo(0, nil, 16))
	c.eq("info_oscore_master_salt", kdfInfo(1, nil, 8))
	c.eq("oscore_client_sender_id", h.iOSC.SenderID)
	c.eq("oscore_server_sender_id", h.rOSC.SenderID)
	if !bytes.Equal(h.iOSC.MasterSecret, h.rOSC.MasterSecret) || !bytes.Equal(h.iOSC.MasterSalt, h.rOSC.MasterSalt) ||
		!bytes.Equal(h.iOSC.SenderID, h.rOSC.RecipientID) || !bytes.Equal(h.iOSC.RecipientID, h.rOSC.SenderID) {
		t.Errorf("OSCORE contexts of the two sides do not match: %+v %+v", h.iOSC, h.rOSC)
	}
	if h.iOSC.AEAD != AlgAESCCM16_64_128 || h.iOSC.Hash != AlgSHA256 {
		t.Errorf("application algorithms %d/%d", h.iOSC.AEAD, h.iOSC.Hash)
	}
	// KeyUpdate (Appendix H)
	c.eq("keyupdate_context_cbor", appendBstr(nil, c.tf.hex(t, "keyupdate_context")))
	c.checked["keyupdate_context"] = true
	c.eq("keyupdate_oscore_master_secret", h.iUpd.MasterSecret)
	c.eq("keyupdate_oscore_master_salt", h.iUpd.MasterSalt)
	c.eq("keyupdate_oscore_master_secret", h.rUpd.MasterSecret)
	c.eq("keyupdate_oscore_master_salt", h.rUpd.MasterSalt)
	_ = suite
}

// TestTrace1 reproduces RFC 9529 §2 (method 0, suite 0, X.509 by x5t) at every step.
func TestTrace1(t *testing.T) {
	tf := loadTrace(t, "edhoc-rfc9529-trace1.json")
	c := &checker{t: t, tf: tf, checked: map[string]bool{}}

	certR, err := x509.ParseCertificate(tf.hex(t, "cred_r"))
	if err != nil {
		t.Fatal(err)
	}
	certI, err := x509.ParseCertificate(tf.hex(t, "cred_i"))
	if err != nil {
		t.Fatal(err)
	}
	credR, err := NewX509Credential([]*x509.Certificate{certR}, ByX5T)
	if err != nil {
		t.Fatal(err)
	}
	credI, err := NewX509Credential([]*x509.Certificate{certI}, ByX5T)
	if err != nil {
		t.Fatal(err)
	}
	c.eq("id_cred_r", credR.ID.Raw)
	c.eq("id_cred_i", credI.ID.Raw)
	c.eq("cred_r", certR.Raw)
	c.eq("cred_i", certI.Raw)
	c.eq("cred_r_cbor", credR.Cred)
	c.eq("cred_i_cbor", credI.Cred)
	skR := ed25519.NewKeyFromSeed(tf.hex(t, "sk_r"))
	skI := ed25519.NewKeyFromSeed(tf.hex(t, "sk_i"))
	c.checked["sk_r"], c.checked["sk_i"] = true, true
	c.eq("pk_r", skR.Public().(ed25519.PublicKey))
	c.eq("pk_i", skI.Public().(ed25519.PublicKey))
	c.eq("pk_r", certR.PublicKey.(ed25519.PublicKey))
	c.eq("pk_i", certI.PublicKey.(ed25519.PublicKey))
	// The certificates' own values from the dump.
	for name, crt := range map[string]*x509.Certificate{"responder": certR, "initiator": certI} {
		want := tf.Certs[name]
		if hex.EncodeToString(crt.PublicKey.(ed25519.PublicKey)) != want.PublicKey || hex.EncodeToString(crt.Signature) != want.Signature {
			t.Errorf("%s certificate does not match its dump", name)
		}
	}
	root, err := hex.DecodeString(tf.Certs["root"].PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, crt := range []*x509.Certificate{certR, certI} {
		if !ed25519.Verify(root, crt.RawTBSCertificate, crt.Signature) {
			t.Errorf("%s not signed by the trace's root", crt.Subject)
		}
	}

	x, err := ecdh.X25519().NewPrivateKey(tf.hex(t, "x"))
	if err != nil {
		t.Fatal(err)
	}
	y, err := ecdh.X25519().NewPrivateKey(tf.hex(t, "y"))
	if err != nil {
		t.Fatal(err)
	}
	c.checked["x"], c.checked["y"] = true, true
	ic := Config{Method: MethodSigSig, Suites: []Suite{Suite0}, Credential: credI, PrivateKey: skI,
		ConnID: tf.hex(t, "c_i"), Resolve: resolverOf(credR), Ephemeral: x}
	rc := Config{Suites: []Suite{Suite0}, Credential: credR, PrivateKey: skR,
		ConnID: tf.hex(t, "c_r"), Resolve: resolverOf(credI), Ephemeral: y}
	h := runHandshake(t, ic, rc, tf.hex(t, "keyupdate_context"))
	checkCommon(c, h, Suite0)
	c.requireTraced("initiator", h.iTrace, "message_to_be_signed_3")
	c.requireTraced("responder", h.rTrace, "message_to_be_signed_2", "message_to_be_signed_3")
	c.requireTraced("initiator", h.iTrace, "message_to_be_signed_2")
	if !bytes.Equal(h.info2.Peer.Cred, credR.Cred) {
		t.Error("initiator resolved the wrong credential")
	}
	c.allChecked()
}

// TestTrace2 reproduces RFC 9529 §3 (method 3, suite 2, CCS by kid) at every step, including
// the first message_1 with suite 6 that the Responder rejects with SUITES_R.
func TestTrace2(t *testing.T) {
	tf := loadTrace(t, "edhoc-rfc9529-trace2.json")
	c := &checker{t: t, tf: tf, checked: map[string]bool{}}

	// The Responder supports suite 2 only.
	skR, err := ecdh.P256().NewPrivateKey(tf.hex(t, "sk_r"))
	if err != nil {
		t.Fatal(err)
	}
	skI, err := ecdh.P256().NewPrivateKey(tf.hex(t, "sk_i"))
	if err != nil {
		t.Fatal(err)
	}
	c.checked["sk_r"], c.checked["sk_i"] = true, true
	c.eq("pk_r_x", skR.PublicKey().Bytes()[1:33])
	c.eq("pk_r_y", skR.PublicKey().Bytes()[33:])
	c.eq("pk_i_x", skI.PublicKey().Bytes()[1:33])
	c.eq("pk_i_y", skI.PublicKey().Bytes()[33:])
	credR, err := NewCCSCredential(tf.hex(t, "cred_r"), []byte{0x32})
	if err != nil {
		t.Fatal(err)
	}
	credI, err := NewCCSCredential(tf.hex(t, "cred_i"), []byte{0x2b})
	if err != nil {
		t.Fatal(err)
	}
	c.eq("cred_r", credR.Cred)
	c.eq("cred_i", credI.Cred)
	c.eq("id_cred_r", credR.ID.Raw)
	c.eq("id_cred_i", credI.ID.Raw)
	// The CCS's COSE_Key is the static DH public key.
	pubR, err := (&session{p: &suiteParams{curve: curveP256}}).peerStaticDH(credR)
	if err != nil || !pubR.Equal(skR.PublicKey()) {
		t.Errorf("CCS key of R does not match sk_r: %v", err)
	}

	// Attempt 1: SUITES_I = 6, rejected with ERR_CODE 2, SUITES_R = 2.
	//
	// Quirk of RFC 9529 §3.2: suite 6 uses X25519, but the trace's first G_X is the P-256
	// x-coordinate of attempt1_x. The message is therefore rebuilt at the codec level with that
	// key; the Initiator state machine (which, correctly, makes an X25519 key for suite 6) must
	// produce the same message except for G_X.
	x1 := tf.hex(t, "attempt1_x")
	c.checked["attempt1_x"] = true
	x1p256, err := ecdh.P256().NewPrivateKey(x1)
	if err != nil {
		t.Fatal(err)
	}
	a1 := (&Message1{Method: MethodDHDH, SuitesI: []Suite{Suite6}, GX: x1p256.PublicKey().Bytes()[1:33], CI: tf.hex(t, "attempt1_c_i")}).Marshal()
	c.eq("attempt1_message_1", a1)
	pm, err := ParseMessage1(a1)
	if err != nil {
		t.Fatal(err)
	}
	c.eq("attempt1_method", appendInt(nil, int64(pm.Method)))
	c.eq("attempt1_suites_i", appendSuites(nil, pm.SuitesI))
	c.eq("attempt1_g_x", pm.GX)
	c.eq("attempt1_g_x_cbor", appendBstr(nil, pm.GX))
	c.eq("attempt1_c_i", pm.CI)
	c.eq("attempt1_c_i_cbor", appendIDBytes(nil, pm.CI))
	x1x, err := ecdh.X25519().NewPrivateKey(x1)
	if err != nil {
		t.Fatal(err)
	}
	rc := Config{Suites: []Suite{Suite2}, Credential: credR, PrivateKey: skR, Resolve: resolverOf(credI)}
	// (The static key plays no part in message_1; suite 6 needs an X25519 one.)
	skI6, _ := ecdh.X25519().GenerateKey(rand.Reader)
	i1, err := NewInitiator(Config{Method: MethodDHDH, Suites: []Suite{Suite6}, Credential: credI, PrivateKey: skI6,
		ConnID: tf.hex(t, "attempt1_c_i"), Resolve: resolverOf(credR), Ephemeral: x1x})
	if err != nil {
		t.Fatal(err)
	}
	sm1, err := i1.Message1(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(sm1) != len(a1) || !bytes.Equal(sm1[:4], a1[:4]) || !bytes.Equal(sm1[36:], a1[36:]) {
		t.Errorf("state machine attempt-1 message_1 %x differs from the trace beyond G_X", sm1)
	}
	r1, err := NewResponder(rc)
	if err != nil {
		t.Fatal(err)
	}
	_, err = r1.ProcessMessage1(a1)
	reply := ReplyFor(err)
	c.eq("error_message", reply)
	_, err = i1.ProcessMessage2(reply)
	var em *ErrorMessage
	if !errors.As(err, &em) || em.Code != ErrCodeWrongSuite {
		t.Fatalf("initiator did not see ERR_CODE 2: %v", err)
	}
	c.eq("error_suites_r", appendSuites(nil, em.SuitesR))
	suites, err := SuitesAfterError([]Suite{Suite6, Suite2}, em.SuitesR)
	if err != nil {
		t.Fatal(err)
	}

	// Attempt 2: SUITES_I = [6, 2].
	x, err := ecdh.P256().NewPrivateKey(tf.hex(t, "x"))
	if err != nil {
		t.Fatal(err)
	}
	y, err := ecdh.P256().NewPrivateKey(tf.hex(t, "y"))
	if err != nil {
		t.Fatal(err)
	}
	c.checked["x"], c.checked["y"] = true, true
	c.eq("g_x_y_coordinate", x.PublicKey().Bytes()[33:])
	c.eq("g_y_y_coordinate", y.PublicKey().Bytes()[33:])
	ic := Config{Method: MethodDHDH, Suites: suites, Credential: credI, PrivateKey: skI,
		ConnID: tf.hex(t, "c_i"), Resolve: resolverOf(credR), Ephemeral: x}
	rc.ConnID, rc.Ephemeral = tf.hex(t, "c_r"), y
	h := runHandshake(t, ic, rc, tf.hex(t, "keyupdate_context"))
	checkCommon(c, h, Suite2)
	for _, side := range []map[string][]byte{h.iTrace, h.rTrace} {
		c.requireTraced("both", side, "info_salt_3e2m", "salt_3e2m", "g_rx", "info_salt_4e3m", "salt_4e3m", "g_iy")
	}
	c.allChecked()
}
