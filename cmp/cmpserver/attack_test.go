package cmpserver_test

// Each test here is an attack on the CMP service, written as the attacker would send it; the
// service must refuse it and change nothing.

import (
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"strings"
	"testing"
	"time"

	"coapca/authority"
	"coapca/cmp"
	"coapca/cmp/cmpserver"
	"coapca/errs"
	"coapca/internal/testpki"
)

// certCount is the number of certificates in the store.
func (e *env) certCount() int {
	e.t.Helper()
	cs, err := e.auth.ListCertificates(context.Background(), authority.CertFilter{})
	if err != nil {
		e.t.Fatal(err)
	}
	return len(cs)
}

func spkiOf(t *testing.T, k crypto.Signer) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// popInputRequest builds a CertReqMsg whose POP is a signature by popKey over a poposkInput
// carrying inputKey's SPKI and authInfo (a publicKeyMAC with macSecret, or sender).
func popInputRequest(t *testing.T, subject string, templateKey, inputKey, popKey crypto.Signer, macSecret []byte, sender *cmp.GeneralName) cmp.CertReqMsg {
	t.Helper()
	var tmpl cmp.CertTemplate
	if subject != "" {
		if err := tmpl.SetSubject(pkix.Name{CommonName: subject}); err != nil {
			t.Fatal(err)
		}
	}
	if templateKey != nil {
		if err := tmpl.SetPublicKey(templateKey.Public()); err != nil {
			t.Fatal(err)
		}
	}
	crm, err := cmp.NewCertReqMsg(0, tmpl, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	spki := spkiOf(t, inputKey)
	var pkmac []byte
	if sender == nil {
		if pkmac, err = cmp.NewPublicKeyMAC(macSecret, spki, &cmp.PBMProtection{Iterations: 1000}); err != nil {
			t.Fatal(err)
		}
	}
	input, err := cmp.NewPOPOSigningKeyInput(sender, pkmac, spki)
	if err != nil {
		t.Fatal(err)
	}
	if err := crm.SignPOPOSigningKeyInput(popKey, input); err != nil {
		t.Fatal(err)
	}
	return crm
}

// TestPOPBindsTheCertifiedKey: a certificate is issued only for the key whose possession was
// proven (RFC 4211 §4.1). The first case is the reproduced attack: a MAC holder signs a
// poposkInput with its own key and puts a victim's public key in the template.
func TestPOPBindsTheCertifiedKey(t *testing.T) {
	e := newEnv(t, cmpserver.Options{})
	victim, attacker := testpki.NewKey(t), testpki.NewKey(t)
	devName := cmp.DirectoryName(e.data.Device.RawSubject)
	other := cmp.NameGN(pkix.Name{CommonName: "someone else"})
	tests := []struct {
		name    string
		crm     func() cmp.CertReqMsg
		prot    cmp.Protector
		ok      bool
		certKey crypto.Signer // the key the issued certificate must certify
	}{
		{"template holds the victim's key, poposkInput the attacker's", func() cmp.CertReqMsg {
			return popInputRequest(t, "", victim, attacker, attacker, e.data.CMPSecret, nil)
		}, e.mac(), false, nil},
		{"template with subject and the victim's key, poposkInput the attacker's", func() cmp.CertReqMsg {
			return popInputRequest(t, "victim", victim, attacker, attacker, e.data.CMPSecret, nil)
		}, e.mac(), false, nil},
		{"publicKeyMAC with another secret", func() cmp.CertReqMsg {
			return popInputRequest(t, "", nil, attacker, attacker, []byte("not the secret"), nil)
		}, e.mac(), false, nil},
		{"sender authInfo in a MAC-protected request", func() cmp.CertReqMsg {
			return popInputRequest(t, "", nil, attacker, attacker, nil, &devName)
		}, e.mac(), false, nil},
		{"sender authInfo naming someone else than the signer", func() cmp.CertReqMsg {
			return popInputRequest(t, "", nil, attacker, attacker, nil, &other)
		}, e.device(), false, nil},
		{"publicKeyMAC in a signature-protected request", func() cmp.CertReqMsg {
			return popInputRequest(t, "", nil, attacker, attacker, e.data.CMPSecret, nil)
		}, e.device(), false, nil},
		{"poposkInput signed by another key than its publicKey", func() cmp.CertReqMsg {
			return popInputRequest(t, "", nil, victim, attacker, e.data.CMPSecret, nil)
		}, e.mac(), false, nil},
		{"raVerified from a MAC holder", func() cmp.CertReqMsg {
			crm := e.certReq(cmp.TypeIR, "ra", victim).Requests[0]
			crm.POPKind, crm.POP = cmp.POPRAVerified, nil
			return crm
		}, e.mac(), false, nil},
		{"raVerified from a device", func() cmp.CertReqMsg {
			crm := e.certReq(cmp.TypeIR, "ra", victim).Requests[0]
			crm.POPKind, crm.POP = cmp.POPRAVerified, nil
			return crm
		}, e.device(), false, nil},
		// Controls: the legitimate uses of poposkInput still work, for the proven key.
		{"publicKeyMAC with the request's secret", func() cmp.CertReqMsg {
			return popInputRequest(t, "mac-input", nil, attacker, attacker, e.data.CMPSecret, nil)
		}, e.mac(), true, attacker},
		{"sender authInfo = the signer", func() cmp.CertReqMsg {
			return popInputRequest(t, "", nil, victim, victim, nil, &devName)
		}, e.device(), true, victim},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := e.certCount()
			req := &cmp.Message{Header: e.hdr(nil, nil), Body: &cmp.CertReqMessages{BodyType: cmp.TypeIR, Requests: []cmp.CertReqMsg{tc.crm()}}}
			req.Header.SetImplicitConfirm()
			rsp := e.send(req, tc.prot, "", "")
			res, err := cmp.ParseEnrollResponse(rsp, 0)
			if !tc.ok {
				if err == nil && res.Cert != nil {
					t.Fatalf("issued %s for key %T", res.Cert.Subject, res.Cert.PublicKey)
				}
				if got := failInfo(rsp); got&cmp.FailBadPOP == 0 {
					t.Errorf("failInfo %v, want badPOP (%v)", got, rsp.Failed())
				}
				if n := e.certCount(); n != before {
					t.Errorf("%d certificates issued", n-before)
				}
				return
			}
			if err != nil || res.Cert == nil {
				t.Fatalf("refused: %v", err)
			}
			if !res.Cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(tc.certKey.Public()) {
				t.Error("the certificate certifies another key than the proven one")
			}
		})
	}
}

// TestRAVerifiedKURFromNonRA: a device holding one of our certificates asks for a key update
// of an arbitrary key with raVerified POP: refused, nothing issued.
func TestRAVerifiedKURFromNonRA(t *testing.T) {
	e := newEnv(t, cmpserver.Options{})
	k := testpki.NewKey(t)
	ldev := e.enroll(cmp.TypeIR, e.device(), "ldev", k, "")
	crm := e.certReq(cmp.TypeKUR, "", testpki.NewKey(t), cmp.NewOldCertIDControl(ldev)).Requests[0]
	crm.POPKind, crm.POP = cmp.POPRAVerified, nil
	before := e.certCount()
	rsp := e.send(&cmp.Message{Header: e.hdr(nil, nil), Body: &cmp.CertReqMessages{BodyType: cmp.TypeKUR, Requests: []cmp.CertReqMsg{crm}}},
		&cmp.SignatureProtection{Signer: k, Cert: ldev}, "", "")
	if got := failInfo(rsp); got&cmp.FailBadPOP == 0 {
		t.Errorf("failInfo %v, want badPOP (%v)", got, rsp.Failed())
	}
	if n := e.certCount(); n != before {
		t.Errorf("%d certificates issued", n-before)
	}
}

// TestUnconfirmedRevokedAfterRestart: a certificate issued without implicitConfirm whose
// certConf never came is revoked at its deadline, also when the server stopped and a new one
// runs on the same database.
func TestUnconfirmedRevokedAfterRestart(t *testing.T) {
	tests := []struct {
		name        string
		confirm     bool          // send certConf before the stop
		restartAt   time.Duration // clock advance before the restart
		wantRevoked bool
	}{
		{"never confirmed, restarted after the deadline", false, 2 * time.Minute, true},
		{"never confirmed, restarted before the deadline", false, 30 * time.Second, false},
		{"confirmed before the stop", true, 2 * time.Minute, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := cmpserver.Options{ConfirmWait: time.Minute}
			e := newEnv(t, opts)
			var cert *x509.Certificate
			if tc.confirm {
				cert = e.enroll(cmp.TypeIR, e.mac(), "confirmed", testpki.NewKey(t), "")
			} else {
				rsp := e.send(&cmp.Message{Header: e.hdr(nil, nil), Body: e.certReq(cmp.TypeIR, "unconfirmed", testpki.NewKey(t))}, e.mac(), "", "")
				res, err := cmp.ParseEnrollResponse(rsp, 0)
				if err != nil || res.Cert == nil {
					t.Fatalf("ir: %v", err)
				}
				cert = res.Cert
			}
			e.stop()
			e.advance(tc.restartAt)
			e.start(opts)
			e.svc.Sweep(context.Background()) // what `coapca serve` does at start
			rec, err := e.auth.Certificate(context.Background(), cert.SerialNumber.Text(16))
			if err != nil {
				t.Fatal(err)
			}
			if rec.Revoked() != tc.wantRevoked {
				t.Fatalf("revoked = %v, want %v", rec.Revoked(), tc.wantRevoked)
			}
			if !tc.wantRevoked && !tc.confirm {
				// The deadline passes later: the periodic sweep revokes it then.
				e.advance(time.Minute)
				e.svc.Sweep(context.Background())
				if rec, _ := e.auth.Certificate(context.Background(), cert.SerialNumber.Text(16)); !rec.Revoked() {
					t.Error("not revoked once the deadline passed after the restart")
				}
			}
			if due, err := e.auth.DueUnconfirmed(context.Background(), e.clock().Add(time.Hour), 0); err != nil || len(due) != 0 {
				t.Errorf("entries left in the confirmation store: %v, %v", due, err)
			}
		})
	}
}

// TestMessageTime: a request whose messageTime is far from the server clock is refused with
// badTime (RFC 9483 §3.5) unless the check is turned off.
func TestMessageTime(t *testing.T) {
	tests := []struct {
		name      string
		tolerance time.Duration
		skew      time.Duration
		absent    bool
		ok        bool
	}{
		{"an hour old", 0, -time.Hour, false, false},
		{"an hour ahead", 0, time.Hour, false, false},
		{"on time", 0, 0, false, true},
		{"four minutes off (default tolerance 5m)", 0, -4 * time.Minute, false, true},
		{"two minutes off, tolerance 1m", time.Minute, 2 * time.Minute, false, false},
		{"no messageTime", 0, 0, true, true},
		{"an hour old, check off", -1, -time.Hour, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, cmpserver.Options{MessageTimeTolerance: tc.tolerance})
			req := &cmp.Message{Header: e.hdr(nil, nil), Body: e.certReq(cmp.TypeIR, "time", testpki.NewKey(t))}
			req.Header.SetImplicitConfirm()
			req.Header.MessageTime = e.clock().Add(tc.skew)
			if tc.absent {
				req.Header.MessageTime = time.Time{}
			}
			before := e.certCount()
			rsp := e.send(req, e.mac(), "", "")
			if tc.ok {
				if err := rsp.Failed(); err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if got := failInfo(rsp); got&cmp.FailBadTime == 0 {
				t.Errorf("failInfo %v, want badTime (%v)", got, rsp.Failed())
			}
			if n := e.certCount(); n != before {
				t.Errorf("%d certificates issued", n-before)
			}
		})
	}
}

// crlNumber returns the number of the authority's current CRL.
func (e *env) crlNumber() int64 {
	e.t.Helper()
	der, err := e.auth.CRL(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	rl, err := x509.ParseRevocationList(der)
	if err != nil {
		e.t.Fatal(err)
	}
	return rl.Number.Int64()
}

// TestGenMCRLFlood: one unprotected genm asking for the CRL 1,000 times used to make 1,000
// CRL signatures and advance the CRL number by 1,000. It is refused, and the CRL number moves
// by at most one per revocation.
func TestGenMCRLFlood(t *testing.T) {
	e := newEnv(t, cmpserver.Options{})
	statusList, err := cmp.MarshalCRLStatusList([]cmp.CRLStatus{{Issuer: []cmp.GeneralName{cmp.DirectoryName(e.data.IssuingCA.RawSubject)}}})
	if err != nil {
		t.Fatal(err)
	}
	genm := func(n int, typ asn1.ObjectIdentifier, value []byte) *cmp.Message {
		its := make([]cmp.InfoTypeAndValue, n)
		for i := range its {
			its[i] = cmp.InfoTypeAndValue{Type: typ, Value: value}
		}
		return &cmp.Message{Header: e.hdr(nil, nil), Body: &cmp.GenContent{BodyType: cmp.TypeGenM, ITAVs: its}}
	}
	long := make([]cmp.CRLStatus, 50)
	for i := range long {
		long[i] = cmp.CRLStatus{Issuer: []cmp.GeneralName{cmp.DirectoryName(e.data.IssuingCA.RawSubject)}}
	}
	longList, err := cmp.MarshalCRLStatusList(long)
	if err != nil {
		t.Fatal(err)
	}
	start := e.crlNumber()
	tests := []struct {
		name string
		msg  *cmp.Message
		ok   bool
	}{
		{"1000 crlStatusList items", genm(1000, cmp.OIDITCRLStatusList, statusList), false},
		{"1000 currentCRL items", genm(1000, cmpserver.OIDITCurrentCRL, nil), false},
		{"9 caCerts items", genm(9, cmp.OIDITCACerts, nil), false},
		{"3 CRL items", genm(3, cmp.OIDITCRLStatusList, statusList), false},
		{"a crlStatusList of 50 entries", genm(1, cmp.OIDITCRLStatusList, longList), false},
		{"2 CRL items", genm(2, cmp.OIDITCRLStatusList, statusList), true},
		{"1 CRL item", genm(1, cmp.OIDITCRLStatusList, statusList), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rsp := e.send(tc.msg, nil, "", "")
			if !tc.ok {
				if got := failInfo(rsp); got&cmp.FailBadRequest == 0 {
					t.Errorf("failInfo %v, want badRequest (%v)", got, rsp.Failed())
				}
				return
			}
			g, ok := rsp.Body.(*cmp.GenContent)
			if !ok {
				t.Fatalf("answered %v: %v", rsp.Body.Type(), rsp.Failed())
			}
			for _, it := range g.ITAVs {
				crls, err := cmp.ParseCRLs(it.Value)
				if err != nil || len(crls) != 1 {
					t.Fatalf("crls: %v", err)
				}
				rl, _ := x509.ParseRevocationList(crls[0])
				if rl.Number.Int64() != start {
					t.Errorf("CRL number %d, want the unchanged %d", rl.Number, start)
				}
			}
		})
	}
	if n := e.crlNumber(); n != start {
		t.Errorf("CRL number advanced from %d to %d without a revocation", start, n)
	}
	// A revocation makes the next CRL new, once.
	cert := e.enroll(cmp.TypeIR, e.mac(), "to-revoke", testpki.NewKey(t), "")
	if err := e.auth.Revoke(context.Background(), cert.SerialNumber.Text(16), authority.ReasonKeyCompromise); err != nil {
		t.Fatal(err)
	}
	e.send(genm(2, cmp.OIDITCRLStatusList, statusList), nil, "", "")
	if n := e.crlNumber(); n != start+1 {
		t.Errorf("after one revocation the CRL number is %d, want %d", n, start+1)
	}
	// An old CRL is not reused for ever: after its maximum age (an hour at most) a new one.
	e.advance(2 * time.Hour)
	if n := e.crlNumber(); n != start+2 {
		t.Errorf("two hours later the CRL number is %d, want %d", n, start+2)
	}
}

// pbmAlg returns a PasswordBasedMac protectionAlg (RFC 9481 §6.1.1) with the given iteration
// count, built by hand: coapca's own protectors never produce such parameters.
func pbmAlg(t *testing.T, iterations int) pkix.AlgorithmIdentifier {
	t.Helper()
	der, err := asn1.Marshal(struct {
		Salt           []byte
		OWF            pkix.AlgorithmIdentifier
		IterationCount int
		MAC            pkix.AlgorithmIdentifier
	}{make([]byte, 16), pkix.AlgorithmIdentifier{Algorithm: cmp.OIDSHA256}, iterations, pkix.AlgorithmIdentifier{Algorithm: cmp.OIDHMACWithSHA256}})
	if err != nil {
		t.Fatal(err)
	}
	return pkix.AlgorithmIdentifier{Algorithm: cmp.OIDPasswordBasedMac, Parameters: asn1.RawValue{FullBytes: der}}
}

// pbmac1Alg returns a PBMAC1 protectionAlg (RFC 9481 §6.1.2) with the given PBKDF2 PRF,
// iteration count and keyLength.
func pbmac1Alg(t *testing.T, prf asn1.ObjectIdentifier, iterations, keyLength int) pkix.AlgorithmIdentifier {
	t.Helper()
	kdf, err := asn1.Marshal(struct {
		Salt           []byte
		IterationCount int
		KeyLength      int
		PRF            pkix.AlgorithmIdentifier
	}{make([]byte, 16), iterations, keyLength, pkix.AlgorithmIdentifier{Algorithm: prf, Parameters: asn1.NullRawValue}})
	if err != nil {
		t.Fatal(err)
	}
	der, err := asn1.Marshal(struct {
		KDF pkix.AlgorithmIdentifier
		MAC pkix.AlgorithmIdentifier
	}{pkix.AlgorithmIdentifier{Algorithm: cmp.OIDPBKDF2, Parameters: asn1.RawValue{FullBytes: kdf}},
		pkix.AlgorithmIdentifier{Algorithm: cmp.OIDHMACWithSHA256, Parameters: asn1.NullRawValue}})
	if err != nil {
		t.Fatal(err)
	}
	return pkix.AlgorithmIdentifier{Algorithm: cmp.OIDPBMAC1, Parameters: asn1.RawValue{FullBytes: der}}
}

// TestMACParameterFlood: the requester chooses how much hashing its MAC costs the server.
// Parameters beyond the limits are refused with badAlg by the cheap check that runs before
// any key derivation (Message.CheckMACParams, which derives nothing), with a known senderKID.
func TestMACParameterFlood(t *testing.T) {
	tests := []struct {
		name  string
		limit int
		alg   pkix.AlgorithmIdentifier
	}{
		{"PBM with 10,000,000 iterations", 0, pbmAlg(t, 10_000_000)},
		{"PBMAC1 with 10,000,000 iterations", 0, pbmac1Alg(t, cmp.OIDHMACWithSHA256, 10_000_000, 32)},
		{"PBMAC1 whose 64-octet key needs 4 SHA-1 blocks of 100,000 iterations", 0, pbmac1Alg(t, cmp.OIDHMACWithSHA1, 100_000, 64)},
		{"PBMAC1 with a keyLength of 1 MiB", 0, pbmac1Alg(t, cmp.OIDHMACWithSHA256, 1000, 1<<20)},
		{"PBM with 5,000 iterations over a configured limit of 1,000", 1000, pbmAlg(t, 5000)},
		{"PBM with 99 iterations (RFC 4211 §4.4 minimum is 100)", 0, pbmAlg(t, 99)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, cmpserver.Options{MACLimits: cmp.MACLimits{MaxIterations: tc.limit}})
			req := &cmp.Message{Header: e.hdr(nil, nil), Body: e.certReq(cmp.TypeIR, "mac", testpki.NewKey(t)), Protection: make([]byte, 32)}
			req.Header.SetImplicitConfirm()
			req.Header.ProtectionAlg = &tc.alg
			req.Header.SenderKID = []byte(e.data.CMPSecretRef)
			der, err := req.Marshal(nil) // keeps the hand-made protectionAlg and protection
			if err != nil {
				t.Fatal(err)
			}
			parsed, err := cmp.Parse(der)
			if err != nil {
				t.Fatal(err)
			}
			if err := parsed.CheckMACParams(cmp.MACLimits{MaxIterations: tc.limit}); err == nil {
				t.Fatal("CheckMACParams accepted the parameters")
			}
			before := e.certCount()
			rsp := e.svc.Handle(context.Background(), &cmpserver.Request{Body: der, Transport: authority.TransportCoAP})
			m, err := cmp.Parse(rsp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if got := failInfo(m); got&cmp.FailBadAlg == 0 {
				t.Errorf("failInfo %v, want badAlg (%v)", got, m.Failed())
			}
			if n := e.certCount(); n != before {
				t.Errorf("%d certificates issued", n-before)
			}
		})
	}
	// Control: within a configured limit, the same kind of request is answered.
	e := newEnv(t, cmpserver.Options{MACLimits: cmp.MACLimits{MaxIterations: 1000}})
	req := &cmp.Message{Header: e.hdr(nil, nil), Body: e.certReq(cmp.TypeIR, "mac", testpki.NewKey(t))}
	req.Header.SetImplicitConfirm()
	if err := e.send(req, e.mac(), "", "").Failed(); err != nil {
		t.Fatalf("1,000 iterations within a limit of 1,000: %v", err)
	}
}

// failingAuthority makes Issue fail with an internal error whose text must stay in the log.
type failingAuthority struct {
	cmpserver.Authority
	err error
}

func (a failingAuthority) Issue(context.Context, authority.CertRequest) (*authority.Issued, error) {
	return nil, a.err
}

// TestInternalErrorTextNotSent: the statusString of an internal error is only its kind; the
// detail (paths, SQL, driver errors) goes to the log, never to the peer.
func TestInternalErrorTextNotSent(t *testing.T) {
	const secret = "/var/lib/coapca/coapca.db: database disk image is malformed"
	tests := []struct {
		name string
		err  error
	}{
		{"typed internal error with a message", errs.Wrap(errs.Internal, errors.New(secret), "store failed at %s", secret)},
		{"untyped error", errors.New(secret)},
		{"internal error with explicit failure bits", cmp.WithFailInfo(errs.New(errs.Internal, "%s", secret), cmp.FailSystemFailure)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnvWith(t, cmpserver.Options{}, func(a cmpserver.Authority) cmpserver.Authority {
				return failingAuthority{Authority: a, err: tc.err}
			})
			rsp := e.send(&cmp.Message{Header: e.hdr(nil, nil), Body: e.certReq(cmp.TypeIR, "x", testpki.NewKey(t))}, e.mac(), "", "")
			rep, ok := rsp.Body.(*cmp.CertRepMessage)
			if !ok {
				t.Fatalf("answered %v", rsp.Body.Type())
			}
			st := rep.Responses[0].Status
			if got := strings.Join(st.StatusString, "; "); got != "internal error" || st.FailInfo != cmp.FailSystemFailure {
				t.Errorf("status %v, want rejection (systemFailure): internal error", st)
			}
		})
	}
}

// TestParserErrorIsShort: a PKIMessage that encoding/asn1 chokes on is answered with one short
// line, not a Go struct dump.
func TestParserErrorIsShort(t *testing.T) {
	e := newEnv(t, cmpserver.Options{})
	// A PKIHeader whose protectionAlg holds an INTEGER where the OID belongs.
	der := []byte{0x30, 0x14, 0x30, 0x12, 0x02, 0x01, 0x02, 0xa4, 0x02, 0x30, 0x00, 0xa4, 0x02, 0x30, 0x00,
		0xa1, 0x05, 0x30, 0x03, 0x02, 0x01, 0x02}
	rsp := e.svc.Handle(context.Background(), &cmpserver.Request{Body: der, Transport: authority.TransportCoAP})
	m, err := cmp.Parse(rsp.Body)
	if err != nil {
		t.Fatal(err)
	}
	st := m.Body.(*cmp.ErrorContent).Status
	text := strings.Join(st.StatusString, "; ")
	if !strings.HasPrefix(text, "malformed PKIMessage: ") || strings.ContainsAny(text, "{}\n") ||
		strings.Contains(text, "asn1:") || len(text) > 200 || st.FailInfo != cmp.FailBadDataFormat {
		t.Errorf("status %v", st)
	}
}

// TestFailInfoTableComplete: every errs kind has a PKIFailureInfo (a kind added to errs and
// forgotten here fails this test), and the table answers as RFC 9483 §3.6.4 expects.
func TestFailInfoTableComplete(t *testing.T) {
	if missing := cmpserver.FailInfoTableMissing(); len(missing) > 0 {
		t.Errorf("kinds missing from the table: %v", missing)
	}
	tests := []struct {
		err    error
		status cmp.PKIStatus
		fail   cmp.FailureInfo
	}{
		{errs.New(errs.BadRequest, "bad csr"), cmp.StatusRejection, cmp.FailBadRequest},
		{errs.New(errs.Unauthorized, "who"), cmp.StatusRejection, cmp.FailSignerNotTrusted},
		{errs.New(errs.Forbidden, "no"), cmp.StatusRejection, cmp.FailNotAuthorized},
		{errs.New(errs.NotFound, "label"), cmp.StatusRejection, cmp.FailBadCertTemplate},
		{errs.New(errs.UnsupportedFormat, "fmt"), cmp.StatusRejection, cmp.FailBadDataFormat},
		{errs.New(errs.Unavailable, "busy"), cmp.StatusRejection, cmp.FailSystemUnavail},
		{errs.New(errs.Conflict, "revoked"), cmp.StatusRejection, cmp.FailCertRevoked},
		{errors.New("disk"), cmp.StatusRejection, cmp.FailSystemFailure},
		{errs.NewPending("abc", time.Minute), cmp.StatusWaiting, 0},
		{cmp.WithFailInfo(errs.New(errs.BadRequest, "pop"), cmp.FailBadPOP), cmp.StatusRejection, cmp.FailBadPOP},
	}
	for _, tt := range tests {
		st := cmpserver.StatusFromError(tt.err)
		if st.Status != tt.status || st.FailInfo != tt.fail {
			t.Errorf("%v → %v, want %v/%v", tt.err, st, tt.status, tt.fail)
		}
	}
}
