package cmp

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"coapca/internal/testtool"
)

// These tests build responses with this package and feed them to OpenSSL 3.0's CMP client
// with -rspin (offline): OpenSSL must accept protection, nonces, body and certificate.

func fixtureKey(t testing.TB, name string) crypto.Signer {
	t.Helper()
	blk, _ := pem.Decode(fixture(t, name))
	if blk == nil {
		t.Fatalf("%s: no PEM", name)
	}
	if k, err := x509.ParseECPrivateKey(blk.Bytes); err == nil {
		return k
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return k.(crypto.Signer)
}

// opensslCmp runs `openssl cmp -config "" args...` in the fixture directory.
func opensslCmp(t *testing.T, args ...string) (string, error) {
	t.Helper()
	dir, _ := filepath.Abs(filepath.Join("testdata", "openssl"))
	return testtool.OpenSSLCMP(t, 20*time.Second, dir, args...)
}

// answer builds the response to req with body and protection p.
func answer(t *testing.T, req *Message, sender GeneralName, body Body, p Protector, mod func(*Header)) []byte {
	t.Helper()
	hdr, err := NewResponseHeader(&req.Header, sender)
	if err != nil {
		t.Fatal(err)
	}
	if mod != nil {
		mod(&hdr)
	}
	der, err := (&Message{Header: hdr, Body: body}).Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func writeTemp(t *testing.T, name string, der []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, der, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestOpenSSLAcceptsOurResponses(t *testing.T) {
	testtool.NeedOpenSSLCMP(t)
	ca := fixtureCert(t, "ca.pem")
	caKey := fixtureKey(t, "ca.key")
	newCert := fixtureCert(t, "new.pem")
	srvCert, srvKey := fixtureCert(t, "srv.pem"), fixtureKey(t, "srv.key")
	caSender := DirectoryName(ca.RawSubject)
	srvSender := DirectoryName(srvCert.RawSubject)
	sig := func(key crypto.Signer, cert *x509.Certificate) Protector {
		return &SignatureProtection{Signer: key, Cert: cert, Chain: []*x509.Certificate{ca}}
	}
	// Extra CMP signers of other key types, issued by the fixture CA.
	k384, kRSA := newKey(t, "p384"), newKey(t, "rsa")
	srv384 := issue(t, ca, caKey, k384, "CMP Server 384", false)
	srvRSA := issue(t, ca, caKey, kRSA, "CMP Server RSA", false)
	pbm := &PBMProtection{Secret: []byte(fixtureSecret), Reference: []byte("srv")}
	pbmSHA1 := &PBMProtection{Secret: []byte(fixtureSecret), Reference: []byte("srv"), MAC: crypto.SHA1, Iterations: 500}
	ok := StatusInfo{Status: StatusAccepted}
	ipBody := func(t BodyType, caPubs ...*x509.Certificate) Body {
		return &CertRepMessage{BodyType: t, CAPubs: caPubs, Responses: []CertResponse{{CertReqID: 0, Status: ok, Cert: newCert}}}
	}
	pbmArgs := []string{"-ref", "1234", "-secret", "pass:" + fixtureSecret, "-recipient", "/CN=Test Root CA"}
	sigArgs := []string{"-cert", "cli.pem", "-key", "cli.key", "-trusted", "ca.pem"}
	enroll := []string{"-newkey", "new.key", "-subject", "/CN=Device 1"}
	cat := func(a ...[]string) []string {
		var out []string
		for _, x := range a {
			out = append(out, x...)
		}
		return out
	}

	type step struct {
		body Body
		mod  func(*Header)
	}
	tests := []struct {
		name     string
		req      string // fixture request we answer
		sender   GeneralName
		prot     Protector
		steps    []step
		args     []string
		wantFail string // non-empty: OpenSSL must fail and print this
		certOut  bool
	}{
		{name: "ip-pbm-hmacSHA256", req: "ir_pbm_req1.der", sender: caSender, prot: pbm,
			steps: []step{{ipBody(TypeIP), nil}, {&PKIConf{}, nil}},
			args:  cat([]string{"-cmd", "ir"}, pbmArgs, enroll), certOut: true},
		{name: "ip-pbm-hmacSHA1-caPubs", req: "ir_pbm_req1.der", sender: caSender, prot: pbmSHA1,
			steps: []step{{ipBody(TypeIP, ca), nil}, {&PKIConf{}, nil}},
			args:  cat([]string{"-cmd", "ir"}, pbmArgs, enroll, []string{"-cacertsout", os.DevNull}), certOut: true},
		{name: "ip-pbm-implicitConfirm", req: "ir_implicit_req1.der", sender: caSender, prot: pbm,
			steps: []step{{ipBody(TypeIP), func(h *Header) { h.SetImplicitConfirm() }}},
			args:  cat([]string{"-cmd", "ir", "-implicit_confirm"}, pbmArgs, enroll), certOut: true},
		{name: "ip-sig-p256", req: "ir_sig_req1.der", sender: srvSender, prot: sig(srvKey, srvCert),
			steps: []step{{ipBody(TypeIP, ca), nil}, {&PKIConf{}, nil}},
			args:  cat([]string{"-cmd", "ir"}, sigArgs, enroll), certOut: true},
		{name: "ip-sig-p384", req: "ir_sig_req1.der", sender: DirectoryName(srv384.RawSubject), prot: sig(k384, srv384),
			steps: []step{{ipBody(TypeIP), nil}, {&PKIConf{}, nil}},
			args:  cat([]string{"-cmd", "ir"}, sigArgs, enroll), certOut: true},
		{name: "ip-sig-rsa", req: "ir_sig_req1.der", sender: DirectoryName(srvRSA.RawSubject), prot: sig(kRSA, srvRSA),
			steps: []step{{ipBody(TypeIP), nil}, {&PKIConf{}, nil}},
			args:  cat([]string{"-cmd", "ir"}, sigArgs, enroll), certOut: true},
		{name: "cp-sig", req: "cr_req1.der", sender: srvSender, prot: sig(srvKey, srvCert),
			steps: []step{{ipBody(TypeCP), nil}, {&PKIConf{}, nil}},
			args:  cat([]string{"-cmd", "cr"}, sigArgs, enroll), certOut: true},
		{name: "cp-p10cr", req: "p10cr_req1.der", sender: srvSender, prot: sig(srvKey, srvCert),
			steps: []step{{ipBody(TypeCP), nil}, {&PKIConf{}, nil}},
			args:  cat([]string{"-cmd", "p10cr", "-csr", "new.csr"}, sigArgs), certOut: true},
		{name: "kup-sig", req: "kur_req1.der", sender: srvSender, prot: sig(srvKey, srvCert),
			steps: []step{{ipBody(TypeKUP), nil}, {&PKIConf{}, nil}},
			args:  cat([]string{"-cmd", "kur", "-oldcert", "new.pem", "-newkey", "new.key"}, sigArgs), certOut: true},
		{name: "rp-sig", req: "rr_req1.der", sender: srvSender, prot: sig(srvKey, srvCert),
			steps: []step{{&RevRepContent{Status: []StatusInfo{ok}}, nil}},
			args:  cat([]string{"-cmd", "rr", "-oldcert", "new.pem", "-revreason", "1"}, sigArgs)},
		{name: "genp-sig", req: "genm_req1.der", sender: srvSender, prot: sig(srvKey, srvCert),
			steps: []step{{&GenContent{BodyType: TypeGenP, ITAVs: []InfoTypeAndValue{CACertsITAV([]*x509.Certificate{ca})}}, nil}},
			args:  cat([]string{"-cmd", "genm"}, sigArgs)},
		{name: "polling-pbm", req: "ir_poll_req1.der", sender: caSender, prot: pbm,
			steps: []step{
				{&CertRepMessage{BodyType: TypeIP, Responses: []CertResponse{{CertReqID: 0, Status: StatusInfo{Status: StatusWaiting}}}}, nil},
				{&PollRepContent{Entries: []PollRep{{CertReqID: 0, CheckAfter: 0, Reason: []string{"manual approval"}}}}, nil},
				{ipBody(TypeIP), nil},
				{&PKIConf{}, nil}},
			args: cat([]string{"-cmd", "ir"}, pbmArgs, enroll), certOut: true},
		{name: "ip-rejection", req: "ir_pbm_req1.der", sender: caSender, prot: pbm,
			steps: []step{{&CertRepMessage{BodyType: TypeIP, Responses: []CertResponse{{CertReqID: 0,
				Status: StatusInfo{Status: StatusRejection, FailInfo: FailBadCertTemplate, StatusString: []string{"unknown profile"}}}}}, nil}},
			args: cat([]string{"-cmd", "ir"}, pbmArgs, enroll), wantFail: "unknown profile"},
		// Negative controls: OpenSSL really checks what we send.
		{name: "neg-pbm-wrong-secret", req: "ir_pbm_req1.der", sender: caSender,
			prot:  &PBMProtection{Secret: []byte("wrong"), Reference: []byte("srv")},
			steps: []step{{ipBody(TypeIP), nil}, {&PKIConf{}, nil}},
			args:  cat([]string{"-cmd", "ir"}, pbmArgs, enroll), wantFail: "error validating protection"},
		{name: "neg-sig-untrusted", req: "ir_sig_req1.der", sender: srvSender, prot: &SignatureProtection{Signer: k384, Cert: issue(t, nil, nil, k384, "CMP Server 384", false)},
			steps: []step{{ipBody(TypeIP), nil}, {&PKIConf{}, nil}},
			args:  cat([]string{"-cmd", "ir"}, sigArgs, enroll), wantFail: "error validating protection"},
		{name: "error-msg", req: "ir_sig_req1.der", sender: srvSender, prot: sig(srvKey, srvCert),
			steps: []step{{&ErrorContent{Status: StatusInfo{Status: StatusRejection, FailInfo: FailBadPOP, StatusString: []string{"bad POP"}}}, nil}},
			args:  cat([]string{"-cmd", "ir"}, sigArgs, enroll), wantFail: "badPOP"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := parseFixture(t, tt.req)
			dir := t.TempDir()
			var files []string
			for i, s := range tt.steps {
				der := answer(t, req, tt.sender, s.body, tt.prot, s.mod)
				p := filepath.Join(dir, "rsp"+string(rune('1'+i))+".der")
				if err := os.WriteFile(p, der, 0o600); err != nil {
					t.Fatal(err)
				}
				files = append(files, p)
			}
			args := append([]string{"-rspin", strings.Join(files, ","), "-msg_timeout", "5"}, tt.args...)
			certOut := filepath.Join(dir, "out.pem")
			if tt.certOut || tt.wantFail != "" {
				args = append(args, "-certout", certOut)
			}
			out, err := opensslCmp(t, args...)
			if tt.wantFail != "" {
				if err == nil || !strings.Contains(out, tt.wantFail) {
					t.Fatalf("want failure mentioning %q; err=%v\n%s", tt.wantFail, err, out)
				}
				t.Logf("openssl rejected as expected: %s", lastLine(out, tt.wantFail))
				return
			}
			if err != nil {
				t.Fatalf("openssl cmp refused our response: %v\n%s", err, out)
			}
			if tt.certOut {
				pemOut, err := os.ReadFile(certOut)
				if err != nil {
					t.Fatalf("no certificate saved: %v\n%s", err, out)
				}
				blk, _ := pem.Decode(pemOut)
				if blk == nil || !bytes.Equal(blk.Bytes, newCert.Raw) {
					t.Fatalf("openssl saved a different certificate\n%s", out)
				}
			}
		})
	}
}

func lastLine(out, sub string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}

// TestOpenSSLMockVerifiesOurRequests sends requests built here to OpenSSL's mock server in
// -reqin mode: the mock checks our protection and POP.
func TestOpenSSLMockVerifiesOurRequests(t *testing.T) {
	testtool.NeedOpenSSLCMP(t)
	ca := fixtureCert(t, "ca.pem")
	cli, cliKey := fixtureCert(t, "cli.pem"), fixtureKey(t, "cli.key")
	newKey := fixtureKey(t, "new.key")
	newCert := fixtureCert(t, "new.pem")
	var tmpl CertTemplate
	_ = tmpl.SetSubject(pkix.Name{CommonName: "Device 1"})
	build := func(t *testing.T, body Body, p Protector, sender GeneralName) string {
		hdr, err := NewRequestHeader(sender, DirectoryName(ca.RawSubject), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		der, err := (&Message{Header: hdr, Body: body}).Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		return writeTemp(t, "req.der", der)
	}
	crm, err := NewCertReqMsg(0, tmpl, nil, newKey)
	if err != nil {
		t.Fatal(err)
	}
	var edTmpl CertTemplate
	_ = edTmpl.SetSubject(pkix.Name{CommonName: "Device Ed"})
	edReq, err := NewCertReqMsg(0, edTmpl, nil, fixtureKey(t, "newed.key"))
	if err != nil {
		t.Fatal(err)
	}
	kurReq, err := NewCertReqMsg(0, tmpl, []AttributeTypeAndValue{NewOldCertIDControl(newCert)}, newKey)
	if err != nil {
		t.Fatal(err)
	}
	badKur, err := NewCertReqMsg(0, tmpl, []AttributeTypeAndValue{NewOldCertIDControl(cli)}, newKey)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(fixture(t, "new.csr"))
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	badPOP := crm
	badPOP.POP = &POPOSigningKey{Algorithm: crm.POP.Algorithm, Signature: append([]byte{}, crm.POP.Signature...)}
	badPOP.POP.Signature[10] ^= 1
	tests := []struct {
		name     string
		body     Body
		prot     Protector
		srv      []string
		cli      []string
		wantFail FailureInfo
	}{
		{"ir-pbm", &CertReqMessages{BodyType: TypeIR, Requests: []CertReqMsg{crm}},
			&PBMProtection{Secret: []byte(fixtureSecret), Reference: []byte("1234")},
			[]string{"-srv_ref", "srv", "-srv_secret", "pass:" + fixtureSecret},
			[]string{"-cmd", "ir", "-ref", "1234", "-secret", "pass:" + fixtureSecret, "-newkey", "new.key", "-subject", "/CN=Device 1"}, 0},
		{"cr-sig", &CertReqMessages{BodyType: TypeCR, Requests: []CertReqMsg{crm}},
			&SignatureProtection{Signer: cliKey, Cert: cli},
			[]string{"-srv_cert", "srv.pem", "-srv_key", "srv.key", "-srv_trusted", "ca.pem"},
			[]string{"-cmd", "cr", "-cert", "cli.pem", "-key", "cli.key", "-trusted", "ca.pem", "-newkey", "new.key", "-subject", "/CN=Device 1"}, 0},
		{"rr-sig", &RevReqContent{Requests: []RevDetails{NewRevDetails(newCert, 1)}},
			&SignatureProtection{Signer: cliKey, Cert: cli},
			[]string{"-srv_cert", "srv.pem", "-srv_key", "srv.key", "-srv_trusted", "ca.pem"},
			[]string{"-cmd", "rr", "-oldcert", "new.pem", "-cert", "cli.pem", "-key", "cli.key", "-trusted", "ca.pem"}, 0},
		{"ir-pbm-hmacsha1-edpop", &CertReqMessages{BodyType: TypeIR, Requests: []CertReqMsg{edReq}},
			&PBMProtection{Secret: []byte(fixtureSecret), Reference: []byte("1234"), MAC: crypto.SHA1, Iterations: 500},
			[]string{"-srv_ref", "srv", "-srv_secret", "pass:" + fixtureSecret, "-rsp_cert", "newed.pem"},
			[]string{"-cmd", "ir", "-ref", "1234", "-secret", "pass:" + fixtureSecret, "-newkey", "newed.key", "-subject", "/CN=Device Ed"}, 0},
		{"ir-sig-p384", &CertReqMessages{BodyType: TypeIR, Requests: []CertReqMsg{crm}},
			&SignatureProtection{Signer: fixtureKey(t, "cli384.key"), Cert: fixtureCert(t, "cli384.pem")},
			[]string{"-srv_cert", "srv.pem", "-srv_key", "srv.key", "-srv_trusted", "ca.pem"},
			[]string{"-cmd", "ir", "-cert", "cli384.pem", "-key", "cli384.key", "-trusted", "ca.pem", "-newkey", "new.key", "-subject", "/CN=Device 1"}, 0},
		{"ir-sig-rsa", &CertReqMessages{BodyType: TypeIR, Requests: []CertReqMsg{crm}},
			&SignatureProtection{Signer: fixtureKey(t, "clirsa.key"), Cert: fixtureCert(t, "clirsa.pem")},
			[]string{"-srv_cert", "srv.pem", "-srv_key", "srv.key", "-srv_trusted", "ca.pem"},
			[]string{"-cmd", "ir", "-cert", "clirsa.pem", "-key", "clirsa.key", "-trusted", "ca.pem", "-newkey", "new.key", "-subject", "/CN=Device 1"}, 0},
		{"p10cr-sig", &P10CR{CSR: csr},
			&SignatureProtection{Signer: cliKey, Cert: cli},
			[]string{"-srv_cert", "srv.pem", "-srv_key", "srv.key", "-srv_trusted", "ca.pem"},
			[]string{"-cmd", "p10cr", "-csr", "new.csr", "-cert", "cli.pem", "-key", "cli.key", "-trusted", "ca.pem"}, 0},
		{"kur-sig", &CertReqMessages{BodyType: TypeKUR, Requests: []CertReqMsg{kurReq}},
			&SignatureProtection{Signer: cliKey, Cert: cli},
			[]string{"-srv_cert", "srv.pem", "-srv_key", "srv.key", "-srv_trusted", "ca.pem"},
			[]string{"-cmd", "kur", "-oldcert", "new.pem", "-newkey", "new.key", "-cert", "cli.pem", "-key", "cli.key", "-trusted", "ca.pem"}, 0},
		{"genm-sig", &GenContent{BodyType: TypeGenM, ITAVs: []InfoTypeAndValue{{Type: OIDITCACerts}}},
			&SignatureProtection{Signer: cliKey, Cert: cli},
			[]string{"-srv_cert", "srv.pem", "-srv_key", "srv.key", "-srv_trusted", "ca.pem"},
			[]string{"-cmd", "genm", "-cert", "cli.pem", "-key", "cli.key", "-trusted", "ca.pem"}, 0},
		{"neg-kur-wrong-oldcert", &CertReqMessages{BodyType: TypeKUR, Requests: []CertReqMsg{badKur}},
			&SignatureProtection{Signer: cliKey, Cert: cli},
			[]string{"-srv_cert", "srv.pem", "-srv_key", "srv.key", "-srv_trusted", "ca.pem"},
			[]string{"-cmd", "kur", "-oldcert", "new.pem", "-newkey", "new.key", "-cert", "cli.pem", "-key", "cli.key", "-trusted", "ca.pem"}, FailBadRequest},
		{"neg-ir-pbm-wrong-secret", &CertReqMessages{BodyType: TypeIR, Requests: []CertReqMsg{crm}},
			&PBMProtection{Secret: []byte("wrong"), Reference: []byte("1234")},
			[]string{"-srv_ref", "srv", "-srv_secret", "pass:" + fixtureSecret},
			[]string{"-cmd", "ir", "-ref", "1234", "-secret", "pass:" + fixtureSecret, "-newkey", "new.key", "-subject", "/CN=Device 1"}, FailBadRequest}, // the mock's choice for "wrong pbm value"
		{"neg-cr-bad-pop", &CertReqMessages{BodyType: TypeCR, Requests: []CertReqMsg{badPOP}},
			&SignatureProtection{Signer: cliKey, Cert: cli},
			[]string{"-srv_cert", "srv.pem", "-srv_key", "srv.key", "-srv_trusted", "ca.pem"},
			[]string{"-cmd", "cr", "-cert", "cli.pem", "-key", "cli.key", "-trusted", "ca.pem", "-newkey", "new.key", "-subject", "/CN=Device 1"}, FailBadPOP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sender := DirectoryName(cli.RawSubject)
			if _, ok := tt.prot.(*SignatureProtection); ok {
				sender = GeneralName{} // Marshal fills in the protection cert's subject
			}
			req := build(t, tt.body, tt.prot, sender)
			rspOut := filepath.Join(t.TempDir(), "rsp.der")
			args := append([]string{"-use_mock_srv", "-reqin", req, "-rspout", rspOut, "-certout", filepath.Join(t.TempDir(), "o.pem")}, tt.srv...)
			if !strings.Contains(strings.Join(tt.srv, " "), "-rsp_cert") {
				args = append(args, "-rsp_cert", "new.pem")
			}
			args = append(args, tt.cli...)
			out, err := opensslCmp(t, args...)
			// -reqin replays only our first request; later ones (certConf) fail: judge the
			// mock's answer to ours.
			rsp, perr := os.ReadFile(rspOut)
			if perr != nil {
				t.Fatalf("mock gave no answer (err %v)\n%s", err, out)
			}
			m, perr := Parse(rsp)
			if perr != nil {
				t.Fatal(perr)
			}
			f := m.Failed()
			if tt.wantFail != 0 {
				var se *StatusError
				if !errors.As(f, &se) || se.Status.FailInfo&tt.wantFail == 0 {
					t.Fatalf("want %v from the mock, got %v\n%s", tt.wantFail, f, out)
				}
				t.Logf("mock refused as expected: %v", f)
				return
			}
			if f != nil || m.Body.Type() == TypeError {
				t.Fatalf("mock refused our request: %v\n%s", f, out)
			}
			t.Logf("mock answered %s", m.Body.Type())
		})
	}
}

// TestPBMAC1MatchesOpenSSL recomputes our PBMAC1 protection with `openssl kdf PBKDF2` and
// `openssl mac HMAC` (OpenSSL 3.0's CMP has no PBMAC1), and checks the parameter encoding
// with `openssl asn1parse`.
func TestPBMAC1MatchesOpenSSL(t *testing.T) {
	testtool.NeedOpenSSLCMP(t)
	salt := []byte("0123456789abcdef")
	for _, tc := range []struct {
		prf, mac crypto.Hash
		name     string
		klen     int
	}{{crypto.SHA256, crypto.SHA256, "SHA256", 32}, {crypto.SHA512, crypto.SHA512, "SHA512", 64}, {crypto.SHA256, crypto.SHA256, "SHA256", 16}} {
		p := &PBMAC1Protection{Secret: []byte("pw!"), PRF: tc.prf, MAC: tc.mac, Iterations: 1000, KeyLength: tc.klen, Salt: salt}
		hdr, _ := NewRequestHeader(NullDN(), NullDN(), nil, nil)
		m := &Message{Header: hdr, Body: &PKIConf{}}
		if _, err := m.Marshal(p); err != nil {
			t.Fatal(err)
		}
		run := func(args ...string) string {
			out, err := exec.Command("openssl", args...).CombinedOutput()
			if err != nil {
				t.Fatalf("openssl %v: %v\n%s", args, err, out)
			}
			return strings.TrimSpace(string(out))
		}
		key := strings.ReplaceAll(run("kdf", "-keylen", strconv.Itoa(tc.klen), "-kdfopt", "digest:"+tc.name, "-kdfopt", "pass:pw!",
			"-kdfopt", "hexsalt:"+hex.EncodeToString(salt), "-kdfopt", "iter:1000", "PBKDF2"), ":", "")
		in := writeTemp(t, "pp.der", protectedPart(m.RawHeader, m.RawBody))
		mac := run("mac", "-digest", tc.name, "-macopt", "hexkey:"+key, "-in", in, "HMAC")
		if !strings.EqualFold(mac, hex.EncodeToString(m.Protection)) {
			t.Errorf("%s/%d: our PBMAC1 %x, openssl %s", tc.name, tc.klen, m.Protection, mac)
		}
		params := writeTemp(t, "alg.der", m.Header.ProtectionAlg.Parameters.FullBytes)
		dump := run("asn1parse", "-inform", "DER", "-in", params)
		for _, want := range []string{"PBKDF2", "hmacWith" + tc.name, "INTEGER           :03E8", "INTEGER           :" + strings.ToUpper(strconv.FormatInt(int64(tc.klen), 16))} {
			if !strings.Contains(dump, want) {
				t.Errorf("PBMAC1 params lack %q:\n%s", want, dump)
			}
		}
	}
}

// TestOpenSSLMockTransaction replays a whole transaction built here (ir, pollReq, certConf)
// against OpenSSL's mock server with -reqin: the mock checks transactionID continuity,
// pollReq and the certConf certHash.
func TestOpenSSLMockTransaction(t *testing.T) {
	testtool.NeedOpenSSLCMP(t)
	ca := fixtureCert(t, "ca.pem")
	newCert := fixtureCert(t, "new.pem")
	var tmpl CertTemplate
	_ = tmpl.SetSubject(pkix.Name{CommonName: "Device 1"})
	crm, err := NewCertReqMsg(0, tmpl, nil, fixtureKey(t, "new.key"))
	if err != nil {
		t.Fatal(err)
	}
	prot := &PBMProtection{Secret: []byte(fixtureSecret), Reference: []byte("1234")}
	sender, recipient := NameGN(pkix.Name{CommonName: "Device 1"}), DirectoryName(ca.RawSubject)
	for _, badHash := range []bool{false, true} {
		t.Run("badCertHash="+strconv.FormatBool(badHash), func(t *testing.T) {
			mockTransaction(t, prot, sender, recipient, crm, newCert, badHash)
		})
	}
}

func mockTransaction(t *testing.T, prot Protector, sender, recipient GeneralName, crm CertReqMsg, newCert *x509.Certificate, badHash bool) {
	cs, err := NewCertStatus(0, newCert, nil)
	if err != nil {
		t.Fatal(err)
	}
	if badHash {
		cs.CertHash[0] ^= 1
	}
	dir := t.TempDir()
	var tid []byte
	write := func(name string, body Body) string {
		hdr, err := NewRequestHeader(sender, recipient, tid, nil)
		if err != nil {
			t.Fatal(err)
		}
		tid = hdr.TransactionID
		der, err := (&Message{Header: hdr, Body: body}).Marshal(prot)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, der, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	reqs := []string{
		write("ir.der", &CertReqMessages{BodyType: TypeIR, Requests: []CertReqMsg{crm}}),
		write("pollreq.der", &PollReqContent{CertReqIDs: []int64{0}}),
		write("certconf.der", &CertConfirmContent{Statuses: []CertStatus{cs}}),
	}
	var rsps []string
	for i := range reqs {
		rsps = append(rsps, filepath.Join(dir, "rsp"+strconv.Itoa(i)+".der"))
	}
	out, err := opensslCmp(t, "-use_mock_srv", "-reqin", strings.Join(reqs, ","), "-rspout", strings.Join(rsps, ","),
		"-srv_ref", "srv", "-srv_secret", "pass:"+fixtureSecret, "-rsp_cert", "new.pem", "-poll_count", "1", "-check_after", "0",
		"-cmd", "ir", "-ref", "1234", "-secret", "pass:"+fixtureSecret, "-newkey", "new.key", "-subject", "/CN=Device 1",
		"-certout", filepath.Join(dir, "out.pem"))
	if err != nil && !badHash {
		t.Fatalf("openssl: %v\n%s", err, out)
	}
	want := []BodyType{TypeIP, TypeIP, TypePKIConf}
	if badHash {
		want[2] = TypeError
	}
	for i, p := range rsps {
		der, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("no response %d\n%s", i, out)
		}
		m, err := Parse(der)
		if err != nil {
			t.Fatal(err)
		}
		if m.Body.Type() != want[i] || (m.Failed() != nil) != (want[i] == TypeError) {
			t.Fatalf("response %d: %s %v\n%s", i, m.Body.Type(), m.Failed(), out)
		}
		if want[i] == TypeError {
			t.Logf("mock refused the certConf: %v", m.Failed())
		}
		if err := m.VerifyMAC([]byte(fixtureSecret)); err != nil {
			t.Error(err)
		}
		if !bytes.Equal(m.Header.TransactionID, tid) {
			t.Errorf("response %d: transactionID changed", i)
		}
		res, _ := ParseEnrollResponse(m, 0)
		if i == 0 && (res == nil || !res.Waiting) {
			t.Errorf("first answer should be waiting: %+v", res)
		}
		if i == 1 && (res == nil || !res.Cert.Equal(newCert)) {
			t.Errorf("poll answer should carry the certificate: %+v", res)
		}
	}
}
