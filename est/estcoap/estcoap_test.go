package estcoap

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"coapca/authority"
	"coapca/coap"
	"coapca/errs"
	"coapca/est"
	"coapca/est/estserver"
	"coapca/est/esttest"
)

type fixture struct {
	fa      *esttest.Authority
	b       *Binding
	dev     *x509.Certificate
	unique  []byte
	csr     []byte
	devKey  *ecdsa.PrivateKey
	popCSR  []byte // challengePassword = base64(unique)
	wrongPW []byte // challengePassword = something else
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	fa := esttest.New(t, "pop", "manual")
	fa.SetProfile(authority.Profile{Label: "pop", RequirePoP: true, KeyType: "P-256", Validity: time.Hour})
	dev := fa.ClientCert(t, "device-1").Cert
	f := &fixture{fa: fa, dev: dev, unique: []byte("twelve bytes")}
	f.b = New(estserver.New(fa, nil), Options{Labels: []string{"pop", "manual"}})
	f.devKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	mk := func(pw string) []byte {
		der, err := est.CreateCSR(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "device-1"}}, f.devKey, pw)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	f.csr = mk("")
	f.popCSR = mk(base64.StdEncoding.EncodeToString(f.unique))
	f.wrongPW = mk("bm90IHRoaXMgc2Vzc2lvbg==")
	return f
}

func (f *fixture) do(method codes.Code, path string, cf, accept coap.Format, payload []byte, opts ...message.Option) *coap.Response {
	r := &coap.Request{
		Method: method, Path: path, ContentFormat: cf, Accept: accept, Payload: payload,
		Options: opts,
		Peer: coap.Peer{Addr: &net.UDPAddr{IP: net.IPv6loopback, Port: 40000}, Secure: true,
			Certificates: []*x509.Certificate{f.dev}, TLS: estserver.StaticTLS{Unique: f.unique}},
	}
	resp := f.b.ServeCoAP(context.Background(), r)
	if resp == nil {
		panic("nil response")
	}
	return resp
}

const root = "/.well-known/est"

func TestRegisterDiscovery(t *testing.T) {
	f := newFixture(t)
	m := coap.NewMux()
	f.b.Register(m)
	got := map[string]coap.Resource{}
	for _, r := range m.Resources() {
		got[r.Path] = r
	}
	want := map[string]struct {
		rt string
		ct []int
	}{
		"crts": {"ace.est.crts", []int{281, 287}}, "sen": {"ace.est.sen", []int{281, 287}},
		"sren": {"ace.est.sren", []int{281, 287}}, "att": {"ace.est.att", []int{285}},
		"skg": {"ace.est.skg", []int{62}}, "skc": {"ace.est.skc", []int{62}},
	}
	for _, base := range []string{root, root + "/pop", root + "/manual"} {
		for fn, w := range want {
			r, ok := got[base+"/"+fn]
			if !ok {
				t.Errorf("%s/%s not registered", base, fn)
				continue
			}
			if !slices.Equal(r.RT, []string{w.rt}) || !slices.Equal(r.CT, w.ct) || r.Hidden || r.Handler == nil {
				t.Errorf("%s/%s: rt=%v ct=%v hidden=%v", base, fn, r.RT, r.CT, r.Hidden)
			}
		}
	}
	if r, ok := got[root]; !ok || !r.Prefix || !r.Hidden {
		t.Errorf("prefix resource: %+v", r)
	}
}

func TestCACerts(t *testing.T) {
	f := newFixture(t)
	var none coap.Format // no option
	resp := f.do(codes.GET, root+"/crts", none, none, nil)
	if resp.Code != codes.Content || resp.ContentFormat != coap.CF(est.CFPKCS7CertsOnly) || len(resp.ETag) == 0 {
		t.Fatalf("crts: %v cf=%v etag=%x", resp.Code, resp.ContentFormat, resp.ETag)
	}
	certs, err := est.ParseCertsOnly(resp.Payload)
	if err != nil || len(certs) != 2 || !certs[0].Equal(f.fa.CA) || !certs[1].Equal(f.fa.Root) {
		t.Fatalf("crts payload: %v", err)
	}
	// The same ETag in the request: 2.03 Valid (RFC 7252 §5.10.6).
	valid := f.do(codes.GET, root+"/crts", none, none, nil, message.Option{ID: message.ETag, Value: resp.ETag})
	if valid.Code != codes.Valid || len(valid.Payload) != 0 || !bytes.Equal(valid.ETag, resp.ETag) {
		t.Errorf("revalidation: %v", valid.Code)
	}
	stale := f.do(codes.GET, root+"/crts", none, none, nil, message.Option{ID: message.ETag, Value: []byte{1}})
	if stale.Code != codes.Content {
		t.Errorf("stale etag: %v", stale.Code)
	}
	one := f.do(codes.GET, root+"/crts", none, coap.CF(est.CFPKIXCert), nil)
	if one.Code != codes.Content || one.ContentFormat != coap.CF(est.CFPKIXCert) || !bytes.Equal(one.Payload, f.fa.Root.Raw) {
		t.Errorf("crts 287: %v %v", one.Code, one.ContentFormat)
	}
	mp := f.do(codes.GET, root+"/pop/crts", none, coap.CF(est.CFMultipartCore), nil)
	parts, err := est.ParseMultipart(mp.Payload)
	if mp.Code != codes.Content || mp.ContentFormat != coap.CF(est.CFMultipartCore) || err != nil || len(parts) != 2 ||
		parts[0].ContentFormat != est.CFPKIXCert || !bytes.Equal(parts[1].Body, f.fa.Root.Raw) {
		t.Errorf("crts 62: %v %v %+v", mp.Code, err, parts)
	}
	if bytes.Equal(mp.ETag, resp.ETag) {
		t.Error("different representations share an ETag")
	}
}

func TestEnrollAndFormats(t *testing.T) {
	f := newFixture(t)
	var none coap.Format // no option
	resp := f.do(codes.POST, root+"/sen", coap.CF(est.CFPKCS10), none, f.csr)
	if resp.Code != codes.Changed || resp.ContentFormat != coap.CF(est.CFPKCS7CertsOnly) {
		t.Fatalf("sen: %v %s", resp.Code, resp.Payload)
	}
	certs, err := est.ParseCertsOnly(resp.Payload)
	if err != nil || len(certs) != 1 || !f.devKey.PublicKey.Equal(certs[0].PublicKey) {
		t.Fatalf("sen payload: %v", err)
	}
	resp = f.do(codes.POST, root+"/sren", none, coap.CF(est.CFPKIXCert), f.csr) // no Content-Format: taken as 286
	if resp.Code != codes.Changed || resp.ContentFormat != coap.CF(est.CFPKIXCert) {
		t.Fatalf("sren 287: %v %s", resp.Code, resp.Payload)
	}
	if _, err := x509.ParseCertificate(resp.Payload); err != nil {
		t.Fatal(err)
	}
	reqs := f.fa.Requests()
	last := reqs[len(reqs)-1]
	if last.Op != authority.OpReenroll || last.Requester.Transport != authority.TransportCoAPS || last.Requester.Addr != "[::1]:40000" ||
		len(last.Requester.Chain) != 1 || !last.Requester.Chain[0].Equal(f.dev) {
		t.Errorf("requester: %+v", last.Requester)
	}
	att := f.do(codes.GET, root+"/pop/att", none, none, nil)
	if att.Code != codes.Content || att.ContentFormat != coap.CF(est.CFCSRAttrs) {
		t.Fatalf("att: %v", att.Code)
	}
	a, err := est.ParseCsrAttrs(att.Payload)
	if err != nil || !a.WantsChallengePassword() || a.KeyType() != "P-256" {
		t.Errorf("att payload: %v", err)
	}
}

func TestServerKeyGen(t *testing.T) {
	f := newFixture(t)
	var none coap.Format // no option
	a3, err := os.ReadFile("../testdata/a3-skg-request-286.der")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path   string
		accept coap.Format
		certCF uint16
	}{
		{root + "/skg", none, est.CFPKCS7CertsOnly},
		{root + "/skg", coap.CF(est.CFMultipartCore), est.CFPKCS7CertsOnly},
		{root + "/skc", none, est.CFPKIXCert},
		{root + "/skg", coap.CF(est.CFPKIXCert), est.CFPKIXCert},
	} {
		resp := f.do(codes.POST, tc.path, coap.CF(est.CFPKCS10), tc.accept, a3)
		if resp.Code != codes.Changed || resp.ContentFormat != coap.CF(est.CFMultipartCore) {
			t.Fatalf("%s: %v %s", tc.path, resp.Code, resp.Payload)
		}
		parts, err := est.ParseMultipart(resp.Payload)
		if err != nil || len(parts) != 2 || parts[0].ContentFormat != est.CFPKCS8 || parts[1].ContentFormat != tc.certCF {
			t.Fatalf("%s accept %v: %v %+v", tc.path, tc.accept, err, parts)
		}
		key, err := x509.ParsePKCS8PrivateKey(parts[0].Body)
		if err != nil {
			t.Fatal(err)
		}
		var cert *x509.Certificate
		if tc.certCF == est.CFPKIXCert {
			cert, err = x509.ParseCertificate(parts[1].Body)
		} else {
			var cs []*x509.Certificate
			cs, err = est.ParseCertsOnly(parts[1].Body)
			if err == nil {
				cert = cs[0]
			}
		}
		if err != nil || !key.(*ecdsa.PrivateKey).PublicKey.Equal(cert.PublicKey) {
			t.Fatalf("%s: key/cert mismatch: %v", tc.path, err)
		}
	}
}

// Every error path of the binding, with the code of RFC 9148 Table 4 and a diagnostic payload
// without Content-Format (RFC 7252 §5.5.2).
func TestErrorPaths(t *testing.T) {
	f := newFixture(t)
	var none coap.Format // no option
	encKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	encCSR, err := est.CreateCSRWithAttributes(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "enc"}},
		encKey, []est.Attribute{{Type: est.OIDAsymmetricDecryptKeyIdentifier, Values: []asn1.RawValue{{Tag: asn1.TagOctetString, Bytes: []byte("kid")}}}})
	if err != nil {
		t.Fatal(err)
	}
	badSig := append([]byte{}, f.csr...)
	badSig[len(badSig)-4] ^= 0x42

	for _, tc := range []struct {
		name    string
		method  codes.Code
		path    string
		cf, acc coap.Format
		body    []byte
		setup   func()
		code    codes.Code
		diag    string
		maxAge  coap.Age
	}{
		{"bad CSR", codes.POST, root + "/sen", coap.CF(286), none, []byte("not a csr"), nil, codes.BadRequest, "not a DER PKCS#10", coap.Age{}},
		{"bad CSR signature", codes.POST, root + "/sren", coap.CF(286), none, badSig, nil, codes.BadRequest, "signature does not verify", coap.Age{}},
		{"empty body", codes.POST, root + "/sen", coap.CF(286), none, nil, nil, codes.BadRequest, "empty request body", coap.Age{}},
		{"wrong content-format", codes.POST, root + "/sen", coap.CF(0), none, f.csr, nil, codes.UnsupportedMediaType, "must be 286", coap.Age{}},
		{"wrong content-format skg", codes.POST, root + "/skg", coap.CF(281), none, f.csr, nil, codes.UnsupportedMediaType, "must be 286", coap.Age{}},
		{"accept crts", codes.GET, root + "/crts", none, coap.CF(285), nil, nil, codes.NotAcceptable, "offers 281, 287, 62", coap.Age{}},
		{"accept sen", codes.POST, root + "/sen", coap.CF(286), coap.CF(62), f.csr, nil, codes.NotAcceptable, "cannot produce Content-Format 62", coap.Age{}},
		{"accept att", codes.GET, root + "/att", none, coap.CF(281), nil, nil, codes.NotAcceptable, "offers 285", coap.Age{}},
		{"accept skg 280", codes.POST, root + "/skg", coap.CF(286), coap.CF(280), f.csr, nil, codes.NotAcceptable, "needs a CSR with DecryptKeyIdentifier", coap.Age{}},
		{"accept skg 50", codes.POST, root + "/skc", coap.CF(286), coap.CF(50), f.csr, nil, codes.NotAcceptable, "offers 62", coap.Age{}},
		{"encrypted key asked in CSR", codes.POST, root + "/skg", coap.CF(286), none, encCSR, nil, codes.NotAcceptable, "AsymmetricDecryptKeyIdentifier", coap.Age{}},
		{"unknown label", codes.GET, root + "/nolabel/crts", none, none, nil, nil, codes.NotFound, "unknown label", coap.Age{}},
		{"unknown label sen", codes.POST, root + "/nolabel/sen", coap.CF(286), none, f.csr, nil, codes.NotFound, "unknown label", coap.Age{}},
		{"unknown function", codes.GET, root + "/cacerts", none, none, nil, nil, codes.NotFound, "unknown EST function", coap.Age{}},
		{"too deep", codes.GET, root + "/a/b/crts", none, none, nil, nil, codes.NotFound, "no EST function", coap.Age{}},
		{"root itself", codes.GET, root, none, none, nil, nil, codes.NotFound, "no EST function", coap.Age{}},
		{"POST crts", codes.POST, root + "/crts", coap.CF(286), none, f.csr, nil, codes.MethodNotAllowed, "GET only", coap.Age{}},
		{"GET sen", codes.GET, root + "/sen", none, none, nil, nil, codes.MethodNotAllowed, "POST only", coap.Age{}},
		{"PUT att", codes.PUT, root + "/pop/att", none, none, nil, nil, codes.MethodNotAllowed, "GET only", coap.Age{}},
		{"pending", codes.POST, root + "/manual/sen", coap.CF(286), none, f.csr,
			func() { f.fa.SetPending("manual", 1, 90*time.Second) }, codes.ServiceUnavailable, "pending", coap.MaxAge(90)},
		{"pending sub-second rounds up", codes.POST, root + "/manual/sren", coap.CF(286), none, f.csr,
			func() { f.fa.SetPending("manual", 1, 1500*time.Millisecond) }, codes.ServiceUnavailable, "pending", coap.MaxAge(2)},
		{"PoP mismatch", codes.POST, root + "/sen", coap.CF(286), none, f.wrongPW, nil, codes.BadRequest, "does not match", coap.Age{}},
		{"PoP required", codes.POST, root + "/pop/sen", coap.CF(286), none, f.csr, nil, codes.BadRequest, "requires proof-of-possession", coap.Age{}},
		{"forbidden", codes.POST, root + "/manual/sren", coap.CF(286), none, f.csr,
			func() { f.fa.SetError("manual", errs.New(errs.Forbidden, "subject differs")) }, codes.Forbidden, "subject differs", coap.Age{}},
		{"unauthorized", codes.POST, root + "/manual/sen", coap.CF(286), none, f.csr,
			func() { f.fa.SetError("manual", errs.New(errs.Unauthorized, "untrusted")) }, codes.Unauthorized, "untrusted", coap.Age{}},
		{"conflict", codes.POST, root + "/manual/skg", coap.CF(286), none, f.csr,
			func() { f.fa.SetError("manual", errs.New(errs.Conflict, "already answered")) }, codes.Code(137), "already answered", coap.Age{}},
		{"internal hidden", codes.POST, root + "/manual/sen", coap.CF(286), none, f.csr,
			func() { f.fa.SetError("manual", errors.New("disk on fire")) }, codes.InternalServerError, "internal error", coap.Age{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.fa.SetError("manual", nil)
			if tc.setup != nil {
				tc.setup()
			}
			resp := f.do(tc.method, tc.path, tc.cf, tc.acc, tc.body)
			if resp.Code != tc.code {
				t.Fatalf("code %v, want %v (%s)", resp.Code, tc.code, resp.Payload)
			}
			if resp.ContentFormat.IsSet() || !strings.Contains(string(resp.Payload), tc.diag) {
				t.Errorf("diagnostic cf=%v %q, want %q", resp.ContentFormat, resp.Payload, tc.diag)
			}
			if resp.MaxAge != tc.maxAge {
				t.Errorf("Max-Age %v, want %v", resp.MaxAge, tc.maxAge)
			}
			if strings.Contains(string(resp.Payload), "disk on fire") {
				t.Error("internal error text leaked")
			}
		})
	}
	// After the pending answers, the identical request succeeds (RFC 9148 §4.7).
	f.fa.SetError("manual", nil)
	if resp := f.do(codes.POST, root+"/manual/sen", coap.CF(286), none, f.csr); resp.Code != codes.Changed {
		t.Errorf("after pending: %v %s", resp.Code, resp.Payload)
	}
}

func TestErrorTableCoversEveryKind(t *testing.T) {
	// codeFor is a [errs.NumKinds] array: a kind added to errs without a code here is a zero
	// (Empty, 0.00) entry, which this loop reports.
	if missing := errs.TableComplete(codeFor); len(missing) > 0 {
		t.Errorf("kinds without a CoAP code: %v", missing)
	}
	for k := errs.Kind(0); k < errs.NumKinds; k++ {
		if c := ErrorResponse(&errs.Error{Kind: k, Msg: "m"}).Code; c < codes.BadRequest {
			t.Errorf("kind %v maps to %v, not an error code", k, c)
		}
	}
	// A kind outside the table (a corrupt or future value) is a 5.00 with no text, never a panic.
	for _, k := range []errs.Kind{-1, errs.NumKinds, errs.NumKinds + 7} {
		r := ErrorResponse(&errs.Error{Kind: k, Msg: "detail"})
		if r.Code != codes.InternalServerError || string(r.Payload) != "internal error" {
			t.Errorf("kind %d: %v %q", int(k), r.Code, r.Payload)
		}
	}
	r := ErrorResponse(&errs.Error{Kind: errs.Unavailable, Msg: "overloaded", RetryAfter: 5 * time.Second})
	if r.Code != codes.ServiceUnavailable || r.MaxAge != coap.MaxAge(5) {
		t.Errorf("unavailable: %v %v", r.Code, r.MaxAge)
	}
	if r := ErrorResponse(errs.NewPending("x", 0)); r.Code != codes.ServiceUnavailable || r.MaxAge != coap.MaxAge(60) {
		t.Errorf("pending without retry: %v %v", r.Code, r.MaxAge)
	}
}

// TestOSCOREPeer: a request verified by an OSCORE layer is transport "oscore", its
// edhoc-unique is the channel binding the challengePassword must match, and a pre-shared
// context's name is the requester's identity.
func TestOSCOREPeer(t *testing.T) {
	f := newFixture(t)
	edhocPeer := coap.Peer{Addr: &net.UDPAddr{IP: net.IPv6loopback, Port: 40001}, Secure: true,
		Certificates: []*x509.Certificate{f.dev}, OSCORE: &coap.ObjectSecurity{KID: []byte{1}, ChannelBinding: f.unique}}
	pskPeer := coap.Peer{Addr: &net.UDPAddr{IP: net.IPv6loopback, Port: 40002}, Secure: true,
		OSCORE: &coap.ObjectSecurity{KID: []byte{2}, Identity: "sensor-17"}}
	for _, tc := range []struct {
		name string
		peer coap.Peer
		path string
		csr  []byte
		code codes.Code
	}{
		{"edhoc, edhoc-unique required and present", edhocPeer, root + "/pop/sen", f.popCSR, codes.Changed},
		{"edhoc, wrong challengePassword", edhocPeer, root + "/sen", f.wrongPW, codes.BadRequest},
		{"pre-shared, no channel binding for pop", pskPeer, root + "/pop/sen", f.popCSR, codes.BadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := New(estserver.New(f.fa, nil), Options{Labels: []string{"pop"}, OSCORE: true})
			resp := b.ServeCoAP(context.Background(), &coap.Request{Method: codes.POST, Path: tc.path, ContentFormat: coap.CF(est.CFPKCS10),
				Payload: tc.csr, Peer: tc.peer})
			if resp.Code != tc.code {
				t.Fatalf("code %v, want %v: %s", resp.Code, tc.code, resp.Payload)
			}
		})
	}
	reqs := f.fa.Requests()
	if len(reqs) == 0 || reqs[len(reqs)-1].Requester.Transport != authority.TransportOSCORE {
		t.Fatalf("requests: %+v", reqs)
	}
	// The pre-shared identity reaches the authority.
	b := New(estserver.New(f.fa, nil), Options{OSCORE: true})
	b.ServeCoAP(context.Background(), &coap.Request{Method: codes.POST, Path: root + "/sen", ContentFormat: coap.CF(est.CFPKCS10),
		Payload: f.csr, Peer: pskPeer})
	reqs = f.fa.Requests()
	if last := reqs[len(reqs)-1].Requester; last.PreShared != "sensor-17" || last.Transport != authority.TransportOSCORE {
		t.Fatalf("requester %+v", last)
	}
}
