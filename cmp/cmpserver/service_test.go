package cmpserver_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"coapca/authority"
	"coapca/cmp"
	"coapca/cmp/cmpserver"
	"coapca/internal/datadir"
	"coapca/internal/testpki"
	"coapca/store/sqlite"
)

// env is a CMP service over a real authority (SQLite store, data directory with the demo PKI).
type env struct {
	t    testing.TB
	svc  *cmpserver.Service
	auth *authority.Authority
	st   *sqlite.Store
	data *datadir.Data
	dir  string
	now  time.Time
	mu   sync.Mutex
	anns []*cmp.Message
	// wrap, when set, stands between the service and the authority (to inject failures).
	wrap func(cmpserver.Authority) cmpserver.Authority
}

func newEnv(t testing.TB, opts cmpserver.Options) *env {
	return newEnvWith(t, opts, nil)
}

func newEnvWith(t testing.TB, opts cmpserver.Options, wrap func(cmpserver.Authority) cmpserver.Authority) *env {
	t.Helper()
	dir := t.TempDir()
	d, err := datadir.Open(datadir.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, data: d, dir: dir, now: time.Now(), wrap: wrap}
	e.start(opts)
	return e
}

// start opens the store of the data directory and runs a new authority and service on it: a
// server (re)start.
func (e *env) start(opts cmpserver.Options) {
	t, d := e.t, e.data
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(e.dir, "coapca.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e.st = st
	auth, err := authority.New(authority.Policy{
		Profiles: []authority.ProfileOptions{
			{Label: "manual", ManualApproval: true, RetryAfter: time.Second, Requesters: authority.DefaultProfile().Requesters},
			// A device's LDevID from the default label may get a further certificate for its
			// own identity here.
			{Label: "sensors", Subject: authority.SubjectRules{CopySerialNumber: true}, Requesters: append(authority.DefaultProfile().Requesters,
				authority.RequesterRule{Kind: "ldevid", From: []string{""}})},
		},
		TrustStores: []authority.TrustStore{{Name: "demo", Roots: []*x509.Certificate{d.ManufacturerCA}}},
		MACSecrets:  []authority.MACSecret{{Reference: d.CMPSecretRef, Secret: d.CMPSecret}},
	}, authority.Options{Store: st, Signer: d.IssuingKey, Chain: d.IssuingChain(), Now: e.clock})
	if err != nil {
		t.Fatal(err)
	}
	e.auth = auth
	opts.Signer, opts.Cert, opts.Chain = d.CMPSignerKey, d.CMPSigner, d.CMPSignerChain()[1:]
	if opts.Confirmations == nil {
		opts.Confirmations = auth
	}
	opts.Announce = func(der []byte, _ cmp.BodyType, _ string) {
		m, err := cmp.Parse(der)
		if err != nil {
			t.Errorf("announcement does not parse: %v", err)
			return
		}
		e.mu.Lock()
		e.anns = append(e.anns, m)
		e.mu.Unlock()
	}
	if opts.Now == nil {
		opts.Now = e.clock
	}
	var a cmpserver.Authority = auth
	if e.wrap != nil {
		a = e.wrap(auth)
	}
	if e.svc, err = cmpserver.New(a, opts); err != nil {
		t.Fatal(err)
	}
}

// stop closes the store: the server is gone (its in-memory transactions with it).
func (e *env) stop() {
	e.svc = nil
	if err := e.st.Close(); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) clock() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.now
}

func (e *env) advance(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.now = e.now.Add(d)
}

func (e *env) mac() cmp.Protector {
	return &cmp.PBMProtection{Secret: e.data.CMPSecret, Reference: []byte(e.data.CMPSecretRef), Iterations: 1000}
}

func (e *env) device() cmp.Protector {
	return &cmp.SignatureProtection{Signer: e.data.DeviceKey, Cert: e.data.Device}
}

// send marshals a request, lets the service answer, and parses and checks the answer.
func (e *env) send(req *cmp.Message, p cmp.Protector, label, op string) *cmp.Message {
	e.t.Helper()
	der, err := req.Marshal(p)
	if err != nil {
		e.t.Fatal(err)
	}
	rsp := e.svc.Handle(context.Background(), &cmpserver.Request{Body: der, Label: label, Operation: op, Transport: authority.TransportCoAP})
	m, err := cmp.Parse(rsp.Body)
	if err != nil {
		e.t.Fatalf("answer does not parse: %v", err)
	}
	switch m.ProtectionKind() {
	case cmp.ProtectionPBM, cmp.ProtectionPBMAC1:
		if err := m.VerifyMAC(e.data.CMPSecret); err != nil {
			e.t.Fatalf("answer MAC: %v", err)
		}
	case cmp.ProtectionSignature:
		if err := m.VerifySignature(m.ProtectionCert()); err != nil || !m.ProtectionCert().Equal(e.data.CMPSigner) {
			e.t.Fatalf("answer signature: %v", err)
		}
	default:
		e.t.Fatalf("answer protection %v", m.ProtectionKind())
	}
	return m
}

func (e *env) hdr(txID, recipNonce []byte) cmp.Header {
	h, err := cmp.NewRequestHeader(cmp.NullDN(), cmp.NullDN(), txID, recipNonce)
	if err != nil {
		e.t.Fatal(err)
	}
	return h
}

func (e *env) certReq(t cmp.BodyType, subject string, key crypto.Signer, controls ...cmp.AttributeTypeAndValue) *cmp.CertReqMessages {
	e.t.Helper()
	var tmpl cmp.CertTemplate
	if subject != "" {
		if err := tmpl.SetSubject(pkix.Name{CommonName: subject}); err != nil {
			e.t.Fatal(err)
		}
	}
	crm, err := cmp.NewCertReqMsg(0, tmpl, controls, key)
	if err != nil {
		e.t.Fatal(err)
	}
	return &cmp.CertReqMessages{BodyType: t, Requests: []cmp.CertReqMsg{crm}}
}

func failInfo(m *cmp.Message) cmp.FailureInfo {
	switch b := m.Body.(type) {
	case *cmp.ErrorContent:
		return b.Status.FailInfo
	case *cmp.CertRepMessage:
		return b.Responses[0].Status.FailInfo
	case *cmp.RevRepContent:
		return b.Status[0].FailInfo
	}
	return 0
}

// enroll runs ir (or cr/kur) + certConf and returns the certificate.
func (e *env) enroll(t cmp.BodyType, p cmp.Protector, subject string, key crypto.Signer, label string, controls ...cmp.AttributeTypeAndValue) *x509.Certificate {
	e.t.Helper()
	req := &cmp.Message{Header: e.hdr(nil, nil), Body: e.certReq(t, subject, key, controls...)}
	rsp := e.send(req, p, label, "")
	res, err := cmp.ParseEnrollResponse(rsp, 0)
	if err != nil || res.Cert == nil {
		e.t.Fatalf("%s: %v (%v)", t, err, rsp.Body.Type())
	}
	if err := cmp.CheckResponse(&req.Header, &rsp.Header); err != nil {
		e.t.Fatal(err)
	}
	cs, _ := cmp.NewCertStatus(0, res.Cert, nil)
	conf := e.send(&cmp.Message{Header: e.hdr(req.Header.TransactionID, rsp.Header.SenderNonce),
		Body: &cmp.CertConfirmContent{Statuses: []cmp.CertStatus{cs}}}, p, label, "")
	if conf.Body.Type() != cmp.TypePKIConf {
		e.t.Fatalf("certConf answered %s: %v", conf.Body.Type(), conf.Failed())
	}
	return res.Cert
}

func TestEnrollmentFlows(t *testing.T) {
	e := newEnv(t, cmpserver.Options{})
	ctx := context.Background()

	// ir with MAC: answered with MAC, caPubs = root, chain in extraCerts.
	k1 := testpki.NewKey(t)
	req := &cmp.Message{Header: e.hdr(nil, nil), Body: e.certReq(cmp.TypeIR, "mac-1", k1)}
	rsp := e.send(req, e.mac(), "", "")
	if rsp.ProtectionKind() != cmp.ProtectionPBM {
		t.Fatalf("MAC request answered with %v", rsp.ProtectionKind())
	}
	rep := rsp.Body.(*cmp.CertRepMessage)
	if rep.BodyType != cmp.TypeIP || len(rep.CAPubs) != 1 || !rep.CAPubs[0].Equal(e.data.Root) {
		t.Fatalf("ip: type %v caPubs %d", rep.BodyType, len(rep.CAPubs))
	}
	if _, ok := rsp.Header.ConfirmWaitTime(); !ok {
		t.Error("no confirmWaitTime while certConf is expected")
	}
	// A wrong certHash: badCertId, and the certificate is revoked.
	cert := rep.Responses[0].Cert
	bad := cmp.CertStatus{CertHash: make([]byte, 32), CertReqID: 0}
	conf := e.send(&cmp.Message{Header: e.hdr(req.Header.TransactionID, rsp.Header.SenderNonce),
		Body: &cmp.CertConfirmContent{Statuses: []cmp.CertStatus{bad}}}, e.mac(), "", "")
	if failInfo(conf)&cmp.FailBadCertID == 0 {
		t.Fatalf("bad certHash: %v", conf.Failed())
	}
	if rec, _ := e.auth.Certificate(ctx, cert.SerialNumber.Text(16)); rec == nil || !rec.Revoked() {
		t.Error("certificate with a failed certConf is not revoked")
	}

	// ir signed by the demo device (IDevID from the manufacturer CA): signed answer.
	k2 := testpki.NewKey(t)
	dev := e.enroll(cmp.TypeIR, e.device(), "dev-1", k2, "")
	if !strings.Contains(dev.Subject.String(), "dev-1") {
		t.Errorf("subject %s", dev.Subject)
	}
	devProt := &cmp.SignatureProtection{Signer: k2, Cert: dev}
	// cr by the new certificate, on a label that admits it, for its own identity.
	k3 := testpki.NewKey(t)
	if c := e.enroll(cmp.TypeCR, devProt, "dev-1", k3, "sensors"); c == nil || c.Subject.String() != dev.Subject.String() {
		t.Fatal("cr")
	}
	// Attack: the LDevID asks for another subject.
	rsp = e.send(&cmp.Message{Header: e.hdr(nil, nil), Body: e.certReq(cmp.TypeCR, "dev-1-tls", testpki.NewKey(t))}, devProt, "sensors", "")
	if failInfo(rsp)&cmp.FailNotAuthorized == 0 {
		t.Errorf("cr for another subject: %v", rsp.Failed())
	}
	// kur: same subject, new key, oldCertID names the certificate.
	k4 := testpki.NewKey(t)
	upd := e.enroll(cmp.TypeKUR, devProt, "", k4, "", cmp.NewOldCertIDControl(dev))
	if !upd.PublicKey.(*ecdsa.PublicKey).Equal(k4.Public()) || string(upd.RawSubject) != string(dev.RawSubject) {
		t.Error("kur did not keep the subject or certify the new key")
	}
	// kur by an identity that is not ours: refused.
	rsp = e.send(&cmp.Message{Header: e.hdr(nil, nil), Body: e.certReq(cmp.TypeKUR, "", testpki.NewKey(t), cmp.NewOldCertIDControl(e.data.Device))}, e.device(), "", "")
	if failInfo(rsp)&cmp.FailNotAuthorized == 0 {
		t.Errorf("kur with the IDevID: %v", rsp.Failed())
	}

	// implicitConfirm: granted, no certConf needed; the cann announcement goes out.
	e.anns = nil
	req = &cmp.Message{Header: e.hdr(nil, nil), Body: e.certReq(cmp.TypeIR, "impl", testpki.NewKey(t))}
	req.Header.SetImplicitConfirm()
	rsp = e.send(req, e.mac(), "", "")
	if !rsp.Header.ImplicitConfirm() || e.svc.OpenTransactions() != 0 {
		t.Errorf("implicitConfirm not granted (open transactions %d)", e.svc.OpenTransactions())
	}
	if len(e.anns) != 1 || e.anns[0].Body.Type() != cmp.TypeCAnn {
		t.Errorf("announcements after an accepted certificate: %d", len(e.anns))
	}

	// p10cr: certReqId -1.
	k5 := testpki.NewKey(t)
	csr := testpki.CSR(t, k5, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "p10"}})
	p10 := &cmp.Message{Header: e.hdr(nil, nil), Body: &cmp.P10CR{CSR: csr}}
	rsp = e.send(p10, e.mac(), "", cmpserver.OpP10CR)
	p10res, err := cmp.ParseEnrollResponse(rsp, -1)
	if err != nil || p10res.Cert == nil {
		t.Fatalf("p10cr: %v", err)
	}

	// rr by the certificate itself; the second time certRevoked; rann + crlann announced.
	e.anns = nil
	rr := &cmp.Message{Header: e.hdr(nil, nil), Body: &cmp.RevReqContent{Requests: []cmp.RevDetails{cmp.NewRevDetails(upd, 1)}}}
	rsp = e.send(rr, &cmp.SignatureProtection{Signer: k4, Cert: upd}, "", cmpserver.OpRR)
	if err := rsp.Failed(); err != nil {
		t.Fatalf("rr: %v", err)
	}
	if len(e.anns) != 2 || e.anns[0].Body.Type() != cmp.TypeRAnn || e.anns[1].Body.Type() != cmp.TypeCRLAnn {
		t.Fatalf("announcements after rr: %d", len(e.anns))
	}
	crl, err := x509.ParseRevocationList(e.anns[1].Body.(*cmp.CRLAnn).CRLs[0])
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range crl.RevokedCertificateEntries {
		found = found || (r.SerialNumber.Cmp(upd.SerialNumber) == 0 && r.ReasonCode == 1)
	}
	if !found {
		t.Error("the CRL does not list the revoked certificate with reason keyCompromise")
	}
	// rr of a certificate by someone else's key: notAuthorized.
	rr = &cmp.Message{Header: e.hdr(nil, nil), Body: &cmp.RevReqContent{Requests: []cmp.RevDetails{cmp.NewRevDetails(dev, 0)}}}
	rsp = e.send(rr, e.mac(), "", "")
	if failInfo(rsp)&cmp.FailNotAuthorized == 0 {
		t.Errorf("rr by a foreign secret: %v", rsp.Failed())
	}
	// Attack 4: rr by the shared secret that enrolled the certificate; the profile does not
	// allow MAC revocation, so anyone holding the shared secret could otherwise revoke all.
	rr = &cmp.Message{Header: e.hdr(nil, nil), Body: &cmp.RevReqContent{Requests: []cmp.RevDetails{cmp.NewRevDetails(p10res.Cert, 0)}}}
	rsp = e.send(rr, e.mac(), "", "")
	if failInfo(rsp)&cmp.FailNotAuthorized == 0 {
		t.Errorf("rr by the enrolling shared secret: %v", rsp.Failed())
	}
	if rec, _ := e.auth.Certificate(ctx, p10res.Cert.SerialNumber.Text(16)); rec == nil || rec.Revoked() {
		t.Error("the shared secret revoked the certificate")
	}
}

func TestRejections(t *testing.T) {
	e := newEnv(t, cmpserver.Options{})
	ir := func() *cmp.Message {
		return &cmp.Message{Header: e.hdr(nil, nil), Body: e.certReq(cmp.TypeIR, "x", testpki.NewKey(t))}
	}
	wrongSecret := &cmp.PBMProtection{Secret: []byte("wrong"), Reference: []byte(e.data.CMPSecretRef), Iterations: 1000}
	unknownRef := &cmp.PBMProtection{Secret: []byte("x"), Reference: []byte("nobody"), Iterations: 1000}
	stranger := testpki.NewKey(t)
	selfSigned := testpki.SelfSigned(t, &x509.Certificate{Subject: pkix.Name{CommonName: "stranger"}}, stranger)
	tests := []struct {
		name  string
		msg   func() *cmp.Message
		prot  cmp.Protector
		label string
		op    string
		want  cmp.FailureInfo
	}{
		{"wrong MAC secret", ir, wrongSecret, "", "", cmp.FailBadMessageCheck},
		{"unknown reference", ir, unknownRef, "", "", cmp.FailSignerNotTrusted},
		{"untrusted signer", ir, &cmp.SignatureProtection{Signer: stranger, Cert: selfSigned}, "", "", cmp.FailSignerNotTrusted},
		{"unprotected ir", ir, nil, "", "", cmp.FailBadMessageCheck},
		{"unknown label", ir, e.mac(), "nope", "", cmp.FailBadCertTemplate},
		{"operation mismatch", ir, e.mac(), "", cmpserver.OpCR, cmp.FailBadRequest},
		{"certProfile contradicts label", func() *cmp.Message {
			m := ir()
			m.Header.SetCertProfile("sensors")
			return m
		}, e.mac(), "manual", "", cmp.FailBadCertTemplate},
		{"short transactionID", func() *cmp.Message {
			m := ir()
			m.Header.TransactionID = []byte{1}
			return m
		}, e.mac(), "", "", cmp.FailBadDataFormat},
		{"bad POP", func() *cmp.Message {
			m := ir()
			m.Body.(*cmp.CertReqMessages).Requests[0].POP.Signature[10] ^= 1
			return m
		}, e.mac(), "", "", cmp.FailBadPOP},
		{"certConf without transaction", func() *cmp.Message {
			return &cmp.Message{Header: e.hdr(nil, nil), Body: &cmp.CertConfirmContent{Statuses: []cmp.CertStatus{{CertHash: []byte{1}}}}}
		}, e.mac(), "", "", cmp.FailBadRequest},
		{"sender is not the signer", func() *cmp.Message {
			m := ir()
			m.Header.Sender = cmp.NameGN(pkix.Name{CommonName: "someone else"})
			return m
		}, e.device(), "", "", cmp.FailBadMessageCheck},
		{"pkiconf is no request", func() *cmp.Message { return &cmp.Message{Header: e.hdr(nil, nil), Body: &cmp.PKIConf{}} }, e.mac(), "", "", cmp.FailBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rsp := e.send(tc.msg(), tc.prot, tc.label, tc.op)
			if got := failInfo(rsp); got&tc.want == 0 {
				t.Errorf("failInfo %v, want %v (%v)", got, tc.want, rsp.Failed())
			}
		})
	}

	// A wrong recipNonce, then transactionID reuse (each error ends its transaction).
	req := ir()
	rsp := e.send(req, e.mac(), "", "")
	cert := rsp.Body.(*cmp.CertRepMessage).Responses[0].Cert
	cs, _ := cmp.NewCertStatus(0, cert, nil)
	wrongNonce := &cmp.Message{Header: e.hdr(req.Header.TransactionID, []byte("0123456789abcdef")), Body: &cmp.CertConfirmContent{Statuses: []cmp.CertStatus{cs}}}
	if r := e.send(wrongNonce, e.mac(), "", ""); failInfo(r)&cmp.FailBadRecipientNonce == 0 {
		t.Errorf("wrong recipNonce: %v", r.Failed())
	}
	req = ir()
	e.send(req, e.mac(), "", "")
	again := &cmp.Message{Header: e.hdr(req.Header.TransactionID, nil), Body: e.certReq(cmp.TypeIR, "x", testpki.NewKey(t))}
	if r := e.send(again, e.mac(), "", ""); failInfo(r)&cmp.FailTransactionIDInUse == 0 {
		t.Errorf("transactionID reuse: %v", r.Failed())
	}
}

// TestConfirmWaitExpiry: a certificate never confirmed is revoked after confirmWaitTime.
func TestConfirmWaitExpiry(t *testing.T) {
	e := newEnv(t, cmpserver.Options{ConfirmWait: time.Minute})
	rsp := e.send(&cmp.Message{Header: e.hdr(nil, nil), Body: e.certReq(cmp.TypeIR, "late", testpki.NewKey(t))}, e.mac(), "", "")
	cert := rsp.Body.(*cmp.CertRepMessage).Responses[0].Cert
	e.mu.Lock()
	e.now = e.now.Add(2 * time.Minute)
	e.mu.Unlock()
	e.svc.Sweep(context.Background())
	if e.svc.OpenTransactions() != 0 {
		t.Error("expired transaction still open")
	}
	rec, err := e.auth.Certificate(context.Background(), cert.SerialNumber.Text(16))
	if err != nil || !rec.Revoked() {
		t.Errorf("unconfirmed certificate not revoked: %v", err)
	}
}

// TestPolling: a manual-approval profile answers waiting, then pollRep, then after approval
// the certificate (RFC 9483 §4.4).
func TestPolling(t *testing.T) {
	e := newEnv(t, cmpserver.Options{})
	ctx := context.Background()
	req := &cmp.Message{Header: e.hdr(nil, nil), Body: e.certReq(cmp.TypeIR, "slow", testpki.NewKey(t))}
	req.Header.SetCertProfile("manual")
	rsp := e.send(req, e.mac(), "", "")
	res, err := cmp.ParseEnrollResponse(rsp, 0)
	if err != nil || !res.Waiting {
		t.Fatalf("first answer: %v %+v", err, res)
	}
	poll := func() *cmp.Message {
		m := e.send(&cmp.Message{Header: e.hdr(req.Header.TransactionID, rsp.Header.SenderNonce),
			Body: &cmp.PollReqContent{CertReqIDs: []int64{0}}}, e.mac(), "", "")
		rsp = m
		return m
	}
	if m := poll(); m.Body.Type() != cmp.TypePollRep || m.Body.(*cmp.PollRepContent).Entries[0].CheckAfter != 1 {
		t.Fatalf("poll while pending: %v", m.Body.Type())
	}
	pend, err := e.auth.PendingRequest(ctx, pendingID(t, rsp))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.auth.Approve(ctx, pend.ID); err != nil {
		t.Fatal(err)
	}
	m := poll()
	res, err = cmp.ParseEnrollResponse(m, 0)
	if err != nil || res.Cert == nil {
		t.Fatalf("poll after approval: %v", err)
	}
	cs, _ := cmp.NewCertStatus(0, res.Cert, nil)
	if c := e.send(&cmp.Message{Header: e.hdr(req.Header.TransactionID, m.Header.SenderNonce),
		Body: &cmp.CertConfirmContent{Statuses: []cmp.CertStatus{cs}}}, e.mac(), "", ""); c.Body.Type() != cmp.TypePKIConf {
		t.Fatalf("certConf after polling: %v", c.Failed())
	}
}

// pendingID takes the pending request ID from a pollRep reason ("request ID awaits ...").
func pendingID(t *testing.T, m *cmp.Message) string {
	t.Helper()
	r := m.Body.(*cmp.PollRepContent).Entries[0].Reason
	if len(r) == 0 {
		t.Fatal("pollRep without reason")
	}
	f := strings.Fields(r[0])
	if len(f) < 2 {
		t.Fatalf("reason %q", r[0])
	}
	return f[1]
}

func TestGenM(t *testing.T) {
	e := newEnv(t, cmpserver.Options{})
	crlList, _ := cmp.MarshalCRLStatusList([]cmp.CRLStatus{{Issuer: []cmp.GeneralName{cmp.DirectoryName(e.data.IssuingCA.RawSubject)}}})
	req := &cmp.Message{Header: e.hdr(nil, nil), Body: &cmp.GenContent{BodyType: cmp.TypeGenM, ITAVs: []cmp.InfoTypeAndValue{
		{Type: cmp.OIDITCACerts}, cmp.RootCACertITAV(e.data.Root), {Type: cmp.OIDITRootCAKeyUpdate},
		{Type: cmp.OIDITCertReqTemplate}, {Type: cmp.OIDITCRLStatusList, Value: crlList},
		{Type: asn1.ObjectIdentifier{1, 2, 3, 4}},
	}}}
	for _, prot := range []cmp.Protector{e.mac(), nil} {
		rsp := e.send(req, prot, "sensors", cmpserver.OpGenCACerts)
		g, ok := rsp.Body.(*cmp.GenContent)
		if !ok || g.BodyType != cmp.TypeGenP || len(g.ITAVs) != 4 {
			t.Fatalf("genp: %v %v", rsp.Body.Type(), rsp.Failed())
		}
		it, _ := g.Find(cmp.OIDITCACerts)
		if certs, err := cmp.ParseCerts(it.Value); err != nil || len(certs) != 2 || !certs[0].Equal(e.data.IssuingCA) {
			t.Errorf("caCerts: %v %d", err, len(certs))
		}
		if it, _ := g.Find(cmp.OIDITRootCAKeyUpdate); it.Value != nil {
			t.Error("rootCaKeyUpdate has a value though no update exists")
		}
		it, _ = g.Find(cmp.OIDITCertReqTemplate)
		if tc, err := cmp.ParseCertReqTemplate(it.Value); err != nil || len(tc.KeySpec) != 1 {
			t.Errorf("certReqTemplate: %v", err)
		}
		it, _ = g.Find(cmp.OIDITCRLs)
		if crls, err := cmp.ParseCRLs(it.Value); err != nil || len(crls) != 1 {
			t.Errorf("crls: %v", err)
		}
	}
}
