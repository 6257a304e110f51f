package cmpproxy

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"coapca/authority"
	"coapca/client"
	"coapca/cmp"
	"coapca/cmp/cmphttp"
	"coapca/cmp/cmpserver"
	"coapca/coap"
	"coapca/internal/datadir"
	"coapca/internal/testpki"
	"coapca/store/sqlite"
)

// raEnv is a registrar in RA mode in front of coapca's own RFC 9811 server. The upstream CA
// admits only the RA (an `ra` rule for the RA's CA); the registrar's own authority admits the
// demo device (manufacturer trust store), the demo MAC secret, and certificates of the
// upstream CA (for kur and rr).
type raEnv struct {
	data  *datadir.Data // the upstream CA
	up    *authority.Authority
	hits  *recorder
	ra    *testpki.Leaf
	proxy *Proxy
	dial  func() *coap.Client
	srv   *coap.Server
}

func openStore(t *testing.T) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "coapca.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func newRAEnv(t *testing.T) *raEnv {
	t.Helper()
	d, err := datadir.Open(datadir.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	raCA := testpki.NewCA(t, "RA CA")
	e := &raEnv{data: d, ra: raCA.RA(t, "registrar")}
	e.up, err = authority.New(authority.Policy{
		TrustStores: []authority.TrustStore{{Name: "ras", Roots: []*x509.Certificate{raCA.Cert}}},
		Profiles: []authority.ProfileOptions{{Label: "", Requesters: []authority.RequesterRule{
			{Kind: "ra", From: []string{"ras"}, MayRevoke: true}}}},
	}, authority.Options{Store: openStore(t), Signer: d.IssuingKey, Chain: d.IssuingChain()})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := cmpserver.New(e.up, cmpserver.Options{Signer: d.CMPSignerKey, Cert: d.CMPSigner,
		Chain: d.CMPSignerChain()[1:], Confirmations: e.up})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	cmphttp.New(svc, nil).Register(mux)
	e.hits = &recorder{answer: mux.ServeHTTP}
	hs := httptest.NewServer(e.hits)
	t.Cleanup(hs.Close)

	localCA := testpki.NewCA(t, "Registrar local CA")
	local, err := authority.New(authority.Policy{
		TrustStores: []authority.TrustStore{{Name: "mfr", Roots: []*x509.Certificate{d.ManufacturerCA}},
			{Name: "upstream-ca", Roots: []*x509.Certificate{d.Root}}},
		MACSecrets: []authority.MACSecret{{Reference: d.CMPSecretRef, Secret: d.CMPSecret}, {Reference: "other", Secret: []byte("other-secret")}},
		Profiles: []authority.ProfileOptions{
			{Label: "", Requesters: []authority.RequesterRule{
				{Kind: "idevid", From: []string{"mfr", "upstream-ca"}}, {Kind: "mac", From: []string{d.CMPSecretRef}}}},
			{Label: "rav", Requesters: []authority.RequesterRule{{Kind: "idevid", From: []string{"mfr"}}}},
		},
	}, authority.Options{Store: openStore(t), Signer: localCA.Key, Chain: localCA.Chain})
	if err != nil {
		t.Fatal(err)
	}
	e.proxy, err = New(Options{Upstream: hs.URL + "/.well-known/cmp", Default: Profile{Mode: ModeRA},
		Profiles:  map[string]Profile{"rav": {Mode: ModeRA, RAVerified: true}},
		Authority: local, Signer: e.ra.Key, Cert: e.ra.Cert, Chain: e.ra.Chain[1:],
		ResponseTrust: pool(d.Root),
		// The CoAP server exists once the proxy is registered: look it up per notification.
		Notify: func(path string, r *coap.Response) { e.srv.Notify(path, r) }})
	if err != nil {
		t.Fatal(err)
	}
	e.dial, e.srv = downstream(t, e.proxy)
	return e
}

func pool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

func (e *raEnv) client(t *testing.T, path string, o client.CMPOptions) *client.CMP {
	t.Helper()
	tr, err := client.DialCMP(context.Background(), "coap://"+e.srvAddr(t)+path, client.CMPTransportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	if o.Trust == nil {
		o.Trust = []*x509.Certificate{e.data.Root}
	}
	return client.NewCMP(tr, o)
}

func (e *raEnv) srvAddr(t *testing.T) string {
	t.Helper()
	c := e.dial()
	return c.Peer().Addr.String()
}

func (e *raEnv) origin(t *testing.T, c *x509.Certificate) string {
	t.Helper()
	rec, err := e.up.Certificate(context.Background(), authority.FormatSerial(c.SerialNumber))
	if err != nil {
		t.Fatal(err)
	}
	return rec.RequesterRef
}

func tmpl(t *testing.T, cn string) cmp.CertTemplate {
	t.Helper()
	var tp cmp.CertTemplate
	if err := tp.SetSubject(pkix.Name{CommonName: cn}); err != nil {
		t.Fatal(err)
	}
	return tp
}

// TestRAForwarding: RA mode against coapca's own RFC 9811 server, which admits only the RA.
// ir (signature and MAC), p10cr and certConf reach it under the RA's protection (RFC 9483
// §5.2.3.1: the certificates are recorded as requested by the RA), the answers verify for the
// device (a MAC-protected device gets a MAC-protected answer, RFC 9483 §3.2); kur and rr signed
// with the certificate concerned go with their own protection (§5.2.2); raVerified is sent only
// for a POP the RA verified, where the profile asks for it (§5.2.3.2).
func TestRAForwarding(t *testing.T) {
	e := newRAEnv(t)
	d := e.data
	ctx := context.Background()
	dev := &cmp.SignatureProtection{Signer: d.DeviceKey, Cert: d.Device}

	// Signature-protected ir with certConf.
	k1 := testpki.NewKey(t)
	en, err := e.client(t, "", client.CMPOptions{Protection: dev}).Enroll(ctx, cmp.TypeIR, tmpl(t, "dev-1"), k1)
	if err != nil {
		t.Fatal(err)
	}
	if got := e.origin(t, en.Cert); got != "ra:ras" {
		t.Errorf("ir recorded as requested by %q, want the RA", got)
	}

	// MAC-protected cr with implicit confirmation: the answer comes back MAC-protected.
	mac := &cmp.PBMProtection{Secret: d.CMPSecret, Reference: []byte(d.CMPSecretRef)}
	en2, err := e.client(t, "", client.CMPOptions{Protection: mac, Secret: d.CMPSecret, ImplicitConfirm: true}).
		Enroll(ctx, cmp.TypeCR, tmpl(t, "dev-mac"), testpki.NewKey(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := e.origin(t, en2.Cert); got != "ra:ras" {
		t.Errorf("cr recorded as requested by %q", got)
	}

	// p10cr.
	k3 := testpki.NewKey(t)
	csr := testpki.CSR(t, k3, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "dev-p10"}})
	if _, err := e.client(t, "", client.CMPOptions{Protection: dev}).P10CR(ctx, csr); err != nil {
		t.Fatal(err)
	}

	// raVerified where the profile asks for it: the upstream accepts it from the RA.
	en4, err := e.client(t, "/.well-known/cmp/p/rav", client.CMPOptions{Protection: dev}).Enroll(ctx, cmp.TypeIR, tmpl(t, "dev-rav"), testpki.NewKey(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := e.origin(t, en4.Cert); got != "ra:ras" {
		t.Errorf("raVerified ir recorded as requested by %q", got)
	}

	// kur and rr signed with the certificate from the first ir: unchanged protection.
	own := &cmp.SignatureProtection{Signer: k1, Cert: en.Cert, Chain: en.Chain[1:]}
	k5 := testpki.NewKey(t)
	en5, err := e.client(t, "", client.CMPOptions{Protection: own}).KeyUpdate(ctx, en.Cert, cmp.CertTemplate{}, k5)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.client(t, "", client.CMPOptions{Protection: &cmp.SignatureProtection{Signer: k5, Cert: en5.Cert, Chain: en5.Chain[1:]}}).Revoke(ctx, en5.Cert, 1); err != nil {
		t.Fatal(err)
	}

	// genm, signed and unprotected.
	if _, err := e.client(t, "", client.CMPOptions{Protection: dev}).GenM(ctx, cmp.InfoTypeAndValue{Type: cmp.OIDITCACerts}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client(t, "", client.CMPOptions{}).GenM(ctx, cmp.InfoTypeAndValue{Type: cmp.OIDITCACerts}); err != nil {
		t.Fatal(err)
	}
}

// TestRARefusals: requests the RA must not launder with its own protection. Each is answered
// with a CMP error message naming the failure, and none reaches the upstream (which would
// trust the RA's protection).
func TestRARefusals(t *testing.T) {
	e := newRAEnv(t)
	d := e.data
	rogueCA := testpki.NewCA(t, "Rogue manufacturer")
	rogue := rogueCA.Device(t, "rogue", "R1")
	newKey := testpki.NewKey(t)
	dev := &cmp.SignatureProtection{Signer: d.DeviceKey, Cert: d.Device}

	ir := func(mod func(*cmp.CertReqMsg)) cmp.Body {
		tp := tmpl(t, "victim")
		crm, err := cmp.NewCertReqMsg(0, tp, nil, newKey)
		if err != nil {
			t.Fatal(err)
		}
		if mod != nil {
			mod(&crm)
		}
		return &cmp.CertReqMessages{BodyType: cmp.TypeIR, Requests: []cmp.CertReqMsg{crm}}
	}
	// A nested message (RFC 9483 §5.2.2.1) would carry another requester's request past
	// the RA's checks under the RA's own protection.
	innerHdr, err := cmp.NewRequestHeader(cmp.GeneralName{}, cmp.NullDN(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	inner := &cmp.Message{Header: innerHdr, Body: ir(nil)}
	if _, err := inner.Marshal(&cmp.SignatureProtection{Signer: rogue.Key, Cert: rogue.Cert}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		body  cmp.Body
		prot  cmp.Protector
		tweak func(der []byte) []byte
		path  string
		want  cmp.FailureInfo
	}{
		{"device of an unknown manufacturer", ir(nil), &cmp.SignatureProtection{Signer: rogue.Key, Cert: rogue.Cert}, nil, "", cmp.FailSignerNotTrusted},
		{"forged signature protection", ir(nil), dev, func(b []byte) []byte { b[len(b)-len(d.Device.Raw)-10] ^= 1; return b }, "", cmp.FailBadMessageCheck},
		{"MAC with a wrong secret", ir(nil), &cmp.PBMProtection{Secret: []byte("guess"), Reference: []byte(d.CMPSecretRef)}, nil, "", cmp.FailBadMessageCheck},
		{"MAC secret the label does not admit", ir(nil), &cmp.PBMProtection{Secret: []byte("other-secret"), Reference: []byte("other")}, nil, "", cmp.FailNotAuthorized},
		{"unknown MAC reference", ir(nil), &cmp.PBMProtection{Secret: []byte("x"), Reference: []byte("nobody")}, nil, "", cmp.FailSignerNotTrusted},
		{"MAC secret not admitted under the label", ir(nil), &cmp.PBMProtection{Secret: d.CMPSecret, Reference: []byte(d.CMPSecretRef)}, nil, "/p/rav", cmp.FailNotAuthorized},
		{"unprotected ir", ir(nil), nil, nil, "", cmp.FailBadMessageCheck},
		{"device claims raVerified POP", ir(func(c *cmp.CertReqMsg) {
			_ = c.Template.SetPublicKey(newKey.Public())
			c.POPKind, c.POP = cmp.POPRAVerified, nil
		}), dev, nil, "", cmp.FailBadPOP},
		{"signature POP that does not verify", ir(func(c *cmp.CertReqMsg) {
			c.POP.Signature = append([]byte{}, c.POP.Signature...)
			c.POP.Signature[8] ^= 1
		}), dev, nil, "", cmp.FailBadPOP},
		{"raVerified POP laundering on a raVerified profile", ir(func(c *cmp.CertReqMsg) {
			_ = c.Template.SetPublicKey(newKey.Public())
			c.POPKind, c.POP = cmp.POPRAVerified, nil
		}), dev, nil, "/p/rav", cmp.FailBadPOP},
		{"nested message", &cmp.Nested{Messages: []*cmp.Message{inner}}, dev, nil, "", cmp.FailBadRequest},
		{"central key generation (no POP)", ir(func(c *cmp.CertReqMsg) { c.POPKind, c.POP = cmp.POPNone, nil }), dev, nil, "", cmp.FailBadRequest},
	}
	c := e.dial()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sender := cmp.NullDN()
			if _, ok := tc.prot.(*cmp.SignatureProtection); ok {
				sender = cmp.GeneralName{}
			}
			hdr, err := cmp.NewRequestHeader(sender, cmp.NullDN(), nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			der, err := (&cmp.Message{Header: hdr, Body: tc.body}).Marshal(tc.prot)
			if err != nil {
				t.Fatal(err)
			}
			if tc.tweak != nil {
				der = tc.tweak(der)
			}
			before := e.hits.hits()
			rsp := post(t, c, "/.well-known/cmp"+tc.path, der)
			if rsp.Code.String() != "Changed" {
				t.Fatalf("CoAP %v: %s", rsp.Code, rsp.Payload)
			}
			m, err := cmp.Parse(rsp.Payload)
			if err != nil {
				t.Fatal(err)
			}
			var se *cmp.StatusError
			if f := m.Failed(); !errors.As(f, &se) || se.Status.FailInfo&tc.want == 0 {
				t.Fatalf("answer %s %v, want failInfo %v", m.Body.Type(), f, tc.want)
			}
			if n := e.hits.hits() - before; n != 0 {
				t.Errorf("the upstream saw %d requests", n)
			}
		})
	}
}

// TestRAAnnouncements: a root CA key update learned from the upstream by polling genm
// (RFC 9483 §4.3.2) reaches the observers of …/ann once, as a ckuann signed by the RA
// (RFC 9482 §2.6); an upstream answer signed by an untrusted key is not announced.
func TestRAAnnouncements(t *testing.T) {
	e := newRAEnv(t)
	d := e.data
	newRoot := testpki.NewCA(t, "New Root")
	upd := &cmp.RootCAKeyUpdate{NewWithNew: newRoot.Cert}
	val, err := upd.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	signer := &cmp.SignatureProtection{Signer: d.CMPSignerKey, Cert: d.CMPSigner, Chain: d.CMPSignerChain()[1:]}
	rogue := testpki.NewCA(t, "Rogue").CMPSigner(t, "rogue signer")
	answerWith := func(p *cmp.SignatureProtection) func(w http.ResponseWriter, r *http.Request) {
		return func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			req, err := cmp.Parse(b)
			if err != nil {
				http.Error(w, "bad", 400)
				return
			}
			h, _ := cmp.NewResponseHeader(&req.Header, cmp.DirectoryName(p.Cert.RawSubject))
			der, _ := (&cmp.Message{Header: h, Body: &cmp.GenContent{BodyType: cmp.TypeGenP,
				ITAVs: []cmp.InfoTypeAndValue{{Type: cmp.OIDITRootCAKeyUpdate, Value: val}}}}).Marshal(p)
			pkixAnswer(der)(w, r)
		}
	}
	c := e.dial()
	got := make(chan []byte, 10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.Observe(ctx, "/.well-known/cmp/ann", func(r *coap.Response) { got <- r.Payload })
	if first := <-got; len(first) != 0 {
		t.Fatalf("announcement before any: %d bytes", len(first))
	}

	// The upstream's real answer (no update), then a forged one, then the real update twice.
	for _, step := range []struct {
		name   string
		answer func(w http.ResponseWriter, r *http.Request)
		want   bool
		err    bool
	}{
		{"no update", nil, false, false},
		{"attack: update signed by an untrusted signer", answerWith(&cmp.SignatureProtection{Signer: rogue.Key, Cert: rogue.Cert}), false, true},
		{"update", answerWith(signer), true, false},
		{"same update again", answerWith(signer), false, false},
	} {
		if step.answer != nil {
			e.hits.mu.Lock()
			e.hits.answer = step.answer
			e.hits.mu.Unlock()
		}
		announced, err := e.proxy.PollAnnouncements(context.Background())
		if announced != step.want || (err != nil) != step.err {
			t.Fatalf("%s: announced %v, err %v", step.name, announced, err)
		}
	}
	select {
	case p := <-got:
		m, err := cmp.Parse(p)
		if err != nil {
			t.Fatal(err)
		}
		ann, ok := m.Body.(*cmp.CAKeyUpdAnn)
		if !ok || !ann.NewWithNew.Equal(newRoot.Cert) {
			t.Fatalf("notification %s", m.Body.Type())
		}
		if cert := m.ProtectionCert(); cert == nil || !cert.Equal(e.ra.Cert) || m.VerifySignature(cert) != nil {
			t.Errorf("the announcement is not signed by the RA")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no notification")
	}
	select {
	case p := <-got:
		t.Errorf("second notification (%d bytes)", len(p))
	default:
	}
}
