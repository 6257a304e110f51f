package registrar_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"coapca/authority"
	"coapca/errs"
	"coapca/est"
	"coapca/est/estcoap"
	"coapca/est/estserver"
	"coapca/internal/testpki"
	"coapca/kms"
	"coapca/registrar"
	"coapca/store/sqlite"
)

// fakeUpstream is an EST over HTTPS server on loopback that issues with its own CA, counts the
// requests that reach it, and can be told to misbehave.
type fakeUpstream struct {
	t    *testing.T
	ca   *testpki.CA
	srv  *httptest.Server
	hits atomic.Int32
	// paths records the request paths, in order.
	mu    sync.Mutex
	paths []string
	// override, when set, answers instead of the CA.
	override func(w http.ResponseWriter, r *http.Request) bool
	// noServerKeyGen answers /serverkeygen with 404.
	noServerKeyGen bool
	// otherKey issues for a key that is not the CSR's.
	otherKey bool
}

func newUpstream(t *testing.T) *fakeUpstream {
	t.Helper()
	u := &fakeUpstream{t: t, ca: testpki.NewCA(t, "Upstream CA")}
	u.srv = httptest.NewUnstartedServer(http.HandlerFunc(u.serve))
	u.srv.TLS = &tls.Config{Certificates: []tls.Certificate{u.ca.Server(t).TLS()}, ClientAuth: tls.RequestClientCert}
	u.srv.StartTLS()
	t.Cleanup(u.srv.Close)
	return u
}

func (u *fakeUpstream) serve(w http.ResponseWriter, r *http.Request) {
	u.hits.Add(1)
	u.mu.Lock()
	u.paths = append(u.paths, r.URL.Path)
	u.mu.Unlock()
	if u.override != nil && u.override(w, r) {
		return
	}
	op := r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
	certsOnly := func(certs ...*x509.Certificate) string {
		der, err := est.EncodeCertsOnly(certs)
		if err != nil {
			panic(err)
		}
		return base64.StdEncoding.EncodeToString(der)
	}
	csr := func() *x509.CertificateRequest {
		b, _ := io.ReadAll(r.Body)
		der, err := base64.StdEncoding.DecodeString(string(b))
		if err != nil {
			return nil
		}
		c, _ := x509.ParseCertificateRequest(der)
		return c
	}
	issue := func(c *x509.CertificateRequest, pub any) *x509.Certificate {
		return u.ca.Issue(u.t, &x509.Certificate{RawSubject: c.RawSubject, DNSNames: c.DNSNames,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, pub)
	}
	switch op {
	case "cacerts":
		w.Header().Set("ETag", `"v1"`)
		if r.Header.Get("If-None-Match") == `"v1"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("Content-Type", "application/pkcs7-mime")
		io.WriteString(w, certsOnly(u.ca.Chain...))
	case "simpleenroll", "simplereenroll":
		c := csr()
		if c == nil {
			http.Error(w, "bad csr", http.StatusBadRequest)
			return
		}
		pub := c.PublicKey
		if u.otherKey {
			pub = testpki.NewKey(u.t).Public()
		}
		w.Header().Set("Content-Type", "application/pkcs7-mime; smime-type=certs-only")
		io.WriteString(w, certsOnly(issue(c, pub)))
	case "csrattrs":
		w.WriteHeader(http.StatusNoContent)
	case "serverkeygen":
		if u.noServerKeyGen {
			http.NotFound(w, r)
			return
		}
		c := csr()
		key, _ := kms.GenerateP256()
		p8, _ := est.MarshalPKCS8(key)
		var body bytes.Buffer
		mw := multipart.NewWriter(&body)
		keyType := "application/pkcs8"
		keyDER := p8
		if _, enc := est.EncryptedKeyRequest(c); enc {
			// A stand-in for the CMS blob: the registrar must relay it unopened.
			keyType, keyDER = "application/pkcs7-mime; smime-type=server-generated-key", []byte("opaque CMS EnvelopedData")
		}
		pw, _ := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {keyType}, "Content-Transfer-Encoding": {"base64"}})
		io.WriteString(pw, base64.StdEncoding.EncodeToString(keyDER))
		pw, _ = mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/pkcs7-mime; smime-type=certs-only"}, "Content-Transfer-Encoding": {"base64"}})
		io.WriteString(pw, certsOnly(issue(c, key.Public())))
		mw.Close()
		w.Header().Set("Content-Type", "multipart/mixed; boundary="+mw.Boundary())
		w.Write(body.Bytes())
	default:
		http.NotFound(w, r)
	}
}

// local is the registrar's own authority: a manufacturer trust store and two profiles.
type local struct {
	auth   *authority.Authority
	mfr    *testpki.CA
	device *testpki.Leaf
}

func newLocal(t *testing.T) *local {
	t.Helper()
	l := &local{mfr: testpki.NewCA(t, "Manufacturer")}
	l.device = l.mfr.Device(t, "dev-1", "SN1")
	ca := testpki.NewCA(t, "Registrar local CA")
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	anyone := authority.DefaultProfile().Requesters
	l.auth, err = authority.New(authority.Policy{
		TrustStores: []authority.TrustStore{{Name: "mfr", Roots: []*x509.Certificate{l.mfr.Cert}}},
		Profiles: []authority.ProfileOptions{
			{Label: "", Requesters: anyone},
			{Label: "pop", RequirePoP: true, Requesters: anyone},
			{Label: "nobody", Requesters: []authority.RequesterRule{{Kind: "mac", From: []string{"*"}}}},
		},
	}, authority.Options{Store: st, Signer: ca.Key, Chain: ca.Chain})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func newRegistrar(t *testing.T, l *local, u *fakeUpstream, tweak ...func(*registrar.Options)) *registrar.Service {
	t.Helper()
	o := registrar.Options{
		URL:       u.srv.URL,
		TLS:       &tls.Config{RootCAs: u.ca.Pool()},
		Authority: l.auth,
	}
	for _, f := range tweak {
		f(&o)
	}
	s, err := registrar.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

var deviceBinding = estserver.StaticTLS{Unique: []byte("device-session-tls-unique")}

func request(chain []*x509.Certificate, label string, body []byte) *estserver.Request {
	return &estserver.Request{Label: label, Body: body, TLS: deviceBinding, Requester: authority.Requester{
		Transport: authority.TransportCoAPS, Protocol: authority.ProtocolEST, Chain: chain, Addr: "127.0.0.1:1"}}
}

func csrDER(t *testing.T, subject pkix.Name, challenge string) ([]byte, *testpki.Leaf) {
	t.Helper()
	key := testpki.NewKey(t)
	der, err := est.CreateCSR(rand.Reader, &x509.CertificateRequest{Subject: subject}, key, challenge)
	if err != nil {
		t.Fatal(err)
	}
	return der, &testpki.Leaf{Key: key}
}

// TestRelay enrolls, re-enrolls with the certificate the upstream issued, and fetches /crts,
// /att and server-generated keys through the registrar.
func TestRelay(t *testing.T) {
	ctx := context.Background()
	l, u := newLocal(t), newUpstream(t)
	reg := newRegistrar(t, l, u)

	crts, err := reg.CACerts(ctx, request(l.device.Chain, "", nil))
	if err != nil || len(crts) != 1 || !crts[0].Equal(u.ca.Cert) {
		t.Fatalf("/crts = %v, %v; want the upstream's CA", crts, err)
	}
	// RFC 9148 §3: PoP linking with the device's own session; the registrar checks it.
	body, key := csrDER(t, pkix.Name{CommonName: "dev-1"}, base64.StdEncoding.EncodeToString(deviceBinding.Unique))
	iss, err := reg.Enroll(ctx, request(l.device.Chain, "pop", body))
	if err != nil {
		t.Fatal(err)
	}
	if iss.Cert.Issuer.CommonName != "Upstream CA" {
		t.Fatalf("issued by %s", iss.Cert.Issuer)
	}
	// The upstream-issued certificate renews through the registrar (it learned the upstream
	// CA from /cacerts).
	ldev := append([]*x509.Certificate{iss.Cert}, u.ca.Chain...)
	body2, _ := csrDER(t, pkix.Name{CommonName: "dev-1"}, "")
	if _, err := reg.Reenroll(ctx, request(ldev, "", body2)); err != nil {
		t.Fatalf("re-enrollment with the upstream's certificate: %v", err)
	}
	_ = key
	if a, err := reg.CSRAttrs(ctx, request(l.device.Chain, "", nil)); err != nil || a == nil {
		t.Fatalf("/att: %v", err)
	}
	sk, err := reg.ServerKeyGen(ctx, request(l.device.Chain, "", body2))
	if err != nil || sk.PKCS8 == nil || sk.Encrypted != nil {
		t.Fatalf("/skg: %+v %v", sk, err)
	}
	// An encrypted key (280) passes through unopened.
	encCSR, err := est.CreateCSRWithAttributes(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "dev-1"}},
		testpki.NewKey(t), []est.Attribute{est.DecryptKeyIdentifierAttribute([]byte("kek-1"))})
	if err != nil {
		t.Fatal(err)
	}
	r := request(l.device.Chain, "", encCSR)
	r.RequireEncryptedKey = true
	sk, err = reg.ServerKeyGen(ctx, r)
	if err != nil || string(sk.Encrypted) != "opaque CMS EnvelopedData" || sk.PKCS8 != nil {
		t.Fatalf("/skg 280: %+v %v", sk, err)
	}
	want := []string{"/.well-known/est/cacerts", "/.well-known/est/pop/simpleenroll", "/.well-known/est/simplereenroll",
		"/.well-known/est/csrattrs", "/.well-known/est/serverkeygen", "/.well-known/est/serverkeygen"}
	if fmt.Sprint(u.paths) != fmt.Sprint(want) {
		t.Errorf("upstream saw %v, want %v (Table 1 URI mapping)", u.paths, want)
	}
}

// TestRefusedBeforeRelaying: each request the local authority must refuse is refused with
// its code, and none reaches the upstream (RFC 9148 §5: the registrar MUST authenticate and
// authorize the client; PoP linking is lost upstream, so the registrar checks it).
func TestRefusedBeforeRelaying(t *testing.T) {
	ctx := context.Background()
	l, u := newLocal(t), newUpstream(t)
	reg := newRegistrar(t, l, u)
	stranger := testpki.NewCA(t, "Unknown manufacturer").Device(t, "dev-x", "SNX")
	// An upstream-issued certificate (for re-enrollment attacks); learning the upstream CA
	// costs one /cacerts.
	if err := reg.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	ldev := u.ca.Device(t, "dev-1", "")
	good := func(cn, challenge string) []byte { b, _ := csrDER(t, pkix.Name{CommonName: cn}, challenge); return b }
	sessionOfAnother := base64.StdEncoding.EncodeToString([]byte("someone else's session"))
	tests := []struct {
		name string
		do   func() error
		want errs.Kind
	}{
		{"a CSR linked to another session (relayed PoP)", func() error {
			_, err := reg.Enroll(ctx, request(l.device.Chain, "", good("dev-1", sessionOfAnother)))
			return err
		}, errs.BadRequest},
		{"no PoP link where the profile requires one", func() error {
			_, err := reg.Enroll(ctx, request(l.device.Chain, "pop", good("dev-1", "")))
			return err
		}, errs.BadRequest},
		{"a device of an unknown manufacturer", func() error {
			_, err := reg.Enroll(ctx, request(stranger.Chain, "", good("dev-x", "")))
			return err
		}, errs.Unauthorized},
		{"a label that admits no certificate", func() error {
			_, err := reg.Enroll(ctx, request(l.device.Chain, "nobody", good("dev-1", "")))
			return err
		}, errs.Forbidden},
		{"a label the registrar does not know", func() error {
			_, err := reg.Enroll(ctx, request(l.device.Chain, "nosuch", good("dev-1", "")))
			return err
		}, errs.NotFound},
		{"an IDevID asking to re-enroll", func() error {
			_, err := reg.Reenroll(ctx, request(l.device.Chain, "", good("dev-1", "")))
			return err
		}, errs.Forbidden},
		{"an upstream certificate renewing into another name", func() error {
			_, err := reg.Reenroll(ctx, request(ldev.Chain, "", good("dev-2", "")))
			return err
		}, errs.Forbidden},
		{"a stranger asking for a server-generated key", func() error {
			_, err := reg.ServerKeyGen(ctx, request(stranger.Chain, "", good("dev-x", "")))
			return err
		}, errs.Unauthorized},
		{"Accept 280 with a CSR that names no key to encrypt to", func() error {
			r := request(l.device.Chain, "", good("dev-1", ""))
			r.RequireEncryptedKey = true
			_, err := reg.ServerKeyGen(ctx, r)
			return err
		}, errs.BadRequest},
		{"garbage instead of a CSR", func() error {
			_, err := reg.Enroll(ctx, request(l.device.Chain, "", []byte("not a CSR")))
			return err
		}, errs.BadRequest},
	}
	before := u.hits.Load()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.do()
			if errs.KindOf(err) != tt.want || err == nil {
				t.Fatalf("err = %v, want kind %v", err, tt.want)
			}
			if n := u.hits.Load(); n != before {
				t.Fatalf("the upstream saw %d requests: a refused request was relayed", n-before)
			}
		})
	}
}

// TestUpstreamFailures: every way the upstream can fail reaches the device as the code RFC
// 8075 §7 / RFC 9148 §5 and the issue ask for, with a short diagnostic and nothing of the
// upstream's own text.
func TestUpstreamFailures(t *testing.T) {
	ctx := context.Background()
	const secret = "db=postgres://admin:hunter2@10.0.0.5/ca stack trace"
	tests := []struct {
		name     string
		override func(w http.ResponseWriter, r *http.Request) bool
		tweak    func(*registrar.Options, *fakeUpstream)
		code     codes.Code
		maxAge   uint32 // 0: not checked
		diag     string
	}{
		{name: "unreachable upstream → 5.03 + Max-Age", code: codes.ServiceUnavailable, maxAge: 42, diag: "unreachable",
			tweak: func(o *registrar.Options, u *fakeUpstream) {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					panic(err)
				}
				o.URL = "https://" + ln.Addr().String() // closed below: connection refused
				ln.Close()
				o.RetryAfter = 42 * time.Second
			}},
		{name: "upstream TLS certificate not trusted → 5.02", code: codes.BadGateway, diag: "TLS",
			tweak: func(o *registrar.Options, u *fakeUpstream) {
				o.TLS = &tls.Config{RootCAs: testpki.NewCA(t, "some other root").Pool()}
			}},
		{name: "upstream error 500 body not leaked → 5.00", code: codes.InternalServerError,
			override: func(w http.ResponseWriter, r *http.Request) bool {
				http.Error(w, secret, http.StatusInternalServerError)
				return true
			}},
		{name: "upstream 400 body not leaked → 4.00", code: codes.BadRequest, diag: "400",
			override: func(w http.ResponseWriter, r *http.Request) bool {
				http.Error(w, secret, http.StatusBadRequest)
				return true
			}},
		{name: "upstream 403 → 4.03", code: codes.Forbidden,
			override: func(w http.ResponseWriter, r *http.Request) bool {
				http.Error(w, secret, http.StatusForbidden)
				return true
			}},
		{name: "upstream 202 + Retry-After → 5.03 + Max-Age", code: codes.ServiceUnavailable, maxAge: 7,
			override: func(w http.ResponseWriter, r *http.Request) bool {
				w.Header().Set("Retry-After", "7")
				w.WriteHeader(http.StatusAccepted)
				io.WriteString(w, secret)
				return true
			}},
		{name: "upstream 503 + Retry-After → 5.03 + Max-Age", code: codes.ServiceUnavailable, maxAge: 9,
			override: func(w http.ResponseWriter, r *http.Request) bool {
				w.Header().Set("Retry-After", "9")
				http.Error(w, secret, http.StatusServiceUnavailable)
				return true
			}},
		{name: "upstream issues for another key → 5.02", code: codes.BadGateway,
			tweak: func(o *registrar.Options, u *fakeUpstream) { u.otherKey = true }},
		{name: "upstream answers garbage → 5.02", code: codes.BadGateway,
			override: func(w http.ResponseWriter, r *http.Request) bool {
				w.Header().Set("Content-Type", "application/pkcs7-mime")
				io.WriteString(w, "!!!"+secret)
				return true
			}},
		{name: "plain HTTP where TLS was expected → 5.02", code: codes.BadGateway,
			tweak: func(o *registrar.Options, u *fakeUpstream) {
				plain := httptest.NewServer(http.NotFoundHandler())
				t.Cleanup(plain.Close)
				o.URL = "https://" + strings.TrimPrefix(plain.URL, "http://")
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, u := newLocal(t), newUpstream(t)
			u.override = tt.override
			reg := newRegistrar(t, l, u, func(o *registrar.Options) {
				if tt.tweak != nil {
					tt.tweak(o, u)
				}
			})
			body, _ := csrDER(t, pkix.Name{CommonName: "dev-1"}, "")
			_, err := reg.Enroll(ctx, request(l.device.Chain, "", body))
			resp := estcoap.ErrorResponse(err)
			if resp.Code != tt.code {
				t.Fatalf("code %v (%v), want %v", resp.Code, err, tt.code)
			}
			if bytes.Contains(resp.Payload, []byte("hunter2")) || bytes.Contains(resp.Payload, []byte("x509")) || len(resp.Payload) > 120 {
				t.Errorf("diagnostic %q leaks upstream detail or is not short", resp.Payload)
			}
			if tt.diag != "" && !bytes.Contains(resp.Payload, []byte(tt.diag)) {
				t.Errorf("diagnostic %q lacks %q", resp.Payload, tt.diag)
			}
			if tt.maxAge != 0 {
				if got, ok := resp.MaxAge.Get(); !ok || got != tt.maxAge {
					t.Errorf("Max-Age %v, want %d", resp.MaxAge, tt.maxAge)
				}
			}
		})
	}
}

// TestSlowUpstream: an upstream that never answers costs the device a 5.04 after the timeout,
// not a hang; and with every upstream slot taken, a further request waits only as long as its
// caller does and never reaches the upstream.
func TestSlowUpstream(t *testing.T) {
	ctx := context.Background()
	// stall makes u hold every request until release is closed (or the client goes away).
	stall := func(u *fakeUpstream) (entered chan struct{}, release chan struct{}) {
		entered, release = make(chan struct{}, 4), make(chan struct{})
		u.override = func(w http.ResponseWriter, r *http.Request) bool {
			entered <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
			}
			http.Error(w, "late", http.StatusServiceUnavailable)
			return true
		}
		return entered, release
	}
	t.Run("timeout → 5.04", func(t *testing.T) {
		l, u := newLocal(t), newUpstream(t)
		_, release := stall(u)
		defer close(release)
		reg := newRegistrar(t, l, u, func(o *registrar.Options) { o.Timeout = 300 * time.Millisecond })
		body, _ := csrDER(t, pkix.Name{CommonName: "dev-1"}, "")
		_, err := reg.Enroll(ctx, request(l.device.Chain, "", body))
		if c := estcoap.ErrorResponse(err).Code; c != codes.GatewayTimeout {
			t.Fatalf("code %v (%v), want 5.04", c, err)
		}
	})
	t.Run("concurrency limit", func(t *testing.T) {
		l, u := newLocal(t), newUpstream(t)
		entered, release := stall(u)
		reg := newRegistrar(t, l, u, func(o *registrar.Options) { o.MaxConcurrent = 1; o.Timeout = time.Hour })
		done := make(chan error, 1)
		body, _ := csrDER(t, pkix.Name{CommonName: "dev-1"}, "")
		go func() {
			_, err := reg.Enroll(ctx, request(l.device.Chain, "", body))
			done <- err
		}()
		<-entered // the one slot is taken
		short, cancel := context.WithCancel(ctx)
		cancel() // a caller that has given up (its CoAP exchange ended)
		_, err := reg.Enroll(short, request(l.device.Chain, "", body))
		close(release)
		first := <-done
		if errs.KindOf(err) != errs.Unavailable {
			t.Fatalf("second request: %v, want unavailable", err)
		}
		if n := u.hits.Load(); n != 1 {
			t.Fatalf("upstream saw %d requests, want 1: the limit let a second through", n)
		}
		if errs.KindOf(first) != errs.Unavailable {
			t.Fatalf("first request: %v, want the upstream's 503", first)
		}
	})
}

// TestCACertsCache: /crts is served from the cache, refreshed with If-None-Match after
// CACertsRefresh, and served stale while the upstream is down.
func TestCACertsCache(t *testing.T) {
	ctx := context.Background()
	l, u := newLocal(t), newUpstream(t)
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	reg := newRegistrar(t, l, u, func(o *registrar.Options) {
		o.CACertsRefresh = time.Hour
		o.Now = func() time.Time { return time.Unix(0, now.Load()) }
	})
	var inm []string
	down := false
	u.override = func(w http.ResponseWriter, r *http.Request) bool {
		inm = append(inm, r.Header.Get("If-None-Match"))
		if down {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return true
		}
		return false
	}
	get := func() {
		t.Helper()
		c, err := reg.CACerts(ctx, request(l.device.Chain, "", nil))
		if err != nil || len(c) != 1 || !c[0].Equal(u.ca.Cert) {
			t.Fatalf("/crts = %v, %v", c, err)
		}
	}
	get()
	get() // cached
	if len(inm) != 1 || inm[0] != "" {
		t.Fatalf("upstream requests %q, want one without If-None-Match", inm)
	}
	now.Add(int64(2 * time.Hour))
	get() // revalidated: 304
	if len(inm) != 2 || inm[1] != `"v1"` {
		t.Fatalf("upstream requests %q, want a revalidation with the ETag", inm)
	}
	now.Add(int64(2 * time.Hour))
	down = true
	get() // stale but served
	if len(inm) != 3 {
		t.Fatalf("upstream requests %q", inm)
	}
}

// TestLocalKeyGen: with an upstream lacking /serverkeygen, the registrar makes the key itself
// when configured to (RFC 9148 §5), and counts it; without the option the device gets 4.04.
func TestLocalKeyGen(t *testing.T) {
	ctx := context.Background()
	for _, on := range []bool{false, true} {
		t.Run(fmt.Sprint("local_keygen=", on), func(t *testing.T) {
			l, u := newLocal(t), newUpstream(t)
			u.noServerKeyGen = true
			var counted atomic.Int32
			reg := newRegistrar(t, l, u, func(o *registrar.Options) {
				o.LocalKeyGen = on
				o.OnLocalKey = func(string) { counted.Add(1) }
			})
			body, _ := csrDER(t, pkix.Name{CommonName: "dev-1"}, "")
			sk, err := reg.ServerKeyGen(ctx, request(l.device.Chain, "", body))
			if !on {
				if errs.KindOf(err) != errs.NotFound {
					t.Fatalf("err = %v, want the upstream's 404", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			k, err := x509.ParsePKCS8PrivateKey(sk.PKCS8)
			if err != nil {
				t.Fatal(err)
			}
			if !sk.Issued.Cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(k.(crypto.Signer).Public()) {
				t.Fatal("the certificate does not certify the generated key")
			}
			if sk.Issued.Cert.Subject.CommonName != "dev-1" || counted.Load() != 1 || reg.LocalKeys() != 1 {
				t.Fatalf("subject %v, counted %d", sk.Issued.Cert.Subject, counted.Load())
			}
		})
	}
}

// TestLabelsAndCredentials: a local label is relayed under its mapped upstream label, with the
// configured HTTP Basic credentials and the registrar's TLS client certificate.
func TestLabelsAndCredentials(t *testing.T) {
	ctx := context.Background()
	l, u := newLocal(t), newUpstream(t)
	raID := testpki.NewCA(t, "Registrar CA").RA(t, "registrar-1")
	var user, pass, client string
	u.override = func(w http.ResponseWriter, r *http.Request) bool {
		user, pass, _ = r.BasicAuth()
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			client = r.TLS.PeerCertificates[0].Subject.CommonName
		}
		return false
	}
	reg := newRegistrar(t, l, u, func(o *registrar.Options) {
		o.Labels = map[string]string{"pop": "iot-pop"}
		o.User, o.Password = "edge-7", "s3cret"
		o.TLS.Certificates = []tls.Certificate{raID.TLS()}
	})
	body, _ := csrDER(t, pkix.Name{CommonName: "dev-1"}, base64.StdEncoding.EncodeToString(deviceBinding.Unique))
	if _, err := reg.Enroll(ctx, request(l.device.Chain, "pop", body)); err != nil {
		t.Fatal(err)
	}
	if got := u.paths[len(u.paths)-1]; got != "/.well-known/est/iot-pop/simpleenroll" {
		t.Errorf("relayed to %s", got)
	}
	if user != "edge-7" || pass != "s3cret" || client != "registrar-1" {
		t.Errorf("upstream saw user %q password %q client %q", user, pass, client)
	}
	if _, err := registrar.New(registrar.Options{URL: u.srv.URL, TLS: &tls.Config{RootCAs: u.ca.Pool()}, Authority: l.auth,
		Labels: map[string]string{"a": "b/c"}}); err == nil {
		t.Error("a label mapping with a slash was accepted")
	}
	for _, bad := range []string{"http://ca.example", "https://", "ca.example:443", "https://ca.example/?x=1"} {
		if _, err := registrar.New(registrar.Options{URL: bad, TLS: &tls.Config{RootCAs: u.ca.Pool()}, Authority: l.auth}); err == nil {
			t.Errorf("upstream URL %q accepted", bad)
		}
	}
}
