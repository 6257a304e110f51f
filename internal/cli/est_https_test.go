package cli

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"coapca/authority"
	"coapca/client"
	"coapca/est"
	"coapca/internal/config"
)

const testUser, testPassword = "alice", "correct horse"

// httpsServer starts coapca with EST over HTTPS on a loopback port, the HTTP Basic user alice
// and these profiles: "" and "manual" (manual approval, retry after 1 s) and "pop" (PoP
// linking required) admit the demo IDevIDs and alice; "devices" and "other" admit only
// IDevIDs (no user rule).
func httpsServer(t *testing.T, tweak ...func(*config.Config)) *served {
	t.Helper()
	hash, err := authority.HashPassword(testPassword)
	if err != nil {
		t.Fatal(err)
	}
	base := func(c *config.Config) {
		c.Listen.HTTPS = "127.0.0.1:0"
		c.Authority.Users = []config.User{{Name: testUser, PasswordHash: hash}}
		devices := config.DefaultRequesters()
		withUser := append(append([]config.RequesterRule{}, devices...), config.RequesterRule{Kind: "user", From: []string{testUser}})
		c.Authority.Profiles = []config.Profile{
			{Label: "", Requesters: withUser},
			{Label: "manual", ManualApproval: true, RetryAfter: time.Second, Requesters: withUser},
			{Label: "pop", RequirePoP: true, Requesters: withUser},
			{Label: "devices", Requesters: devices},
			{Label: "other", Requesters: devices},
		}
	}
	return testServerAt(t, t.TempDir(), append([]func(*config.Config){base}, tweak...)...)
}

// estURL is the EST base of label on s's HTTPS listener.
func (s *served) estURL(label string) string {
	u := "https://" + s.httpsAddr + "/.well-known/est"
	if label != "" {
		u += "/" + label
	}
	return u
}

type httpResult struct {
	status int
	header http.Header
	body   []byte
}

// estDo sends one request over a fresh TLS connection that trusts the server's root and
// presents cert (if any).
func estDo(t *testing.T, s *served, cert *tls.Certificate, maxVersion uint16, method, url, contentType string, body []byte, hdr ...string) httpResult {
	t.Helper()
	cfg := &tls.Config{RootCAs: client.Pool([]*x509.Certificate{s.data.IssuingChain()[len(s.data.IssuingChain())-1]}), MaxVersion: maxVersion}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 30 * time.Second}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "basic" {
			u, p, _ := strings.Cut(hdr[i+1], ":")
			req.SetBasicAuth(u, p)
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return httpResult{resp.StatusCode, resp.Header, b}
}

func demoDevice(t *testing.T, s *served) *tls.Certificate {
	t.Helper()
	p, err := tls.LoadX509KeyPair(s.data.Paths.Device, s.data.Paths.DeviceKey)
	if err != nil {
		t.Fatal(err)
	}
	return &p
}

func newCSR(t *testing.T, cn, challengePassword string) []byte {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := est.CreateCSR(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, k, challengePassword)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func b64(der []byte) []byte { return []byte(base64.StdEncoding.EncodeToString(der)) }

// issuedCert decodes a 200 certs-only answer.
func issuedCert(t *testing.T, r httpResult) *x509.Certificate {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	der, err := base64.StdEncoding.DecodeString(string(r.body))
	if err != nil {
		t.Fatalf("answer is not base64: %v", err)
	}
	certs, err := est.ParseCertsOnly(der)
	if err != nil || len(certs) == 0 {
		t.Fatalf("answer is not a certs-only PKCS#7: %v", err)
	}
	return certs[0]
}

func certCount(t *testing.T, s *served) int {
	t.Helper()
	certs, err := s.auth.ListCertificates(context.Background(), authority.CertFilter{})
	if err != nil {
		t.Fatal(err)
	}
	return len(certs)
}

// TestESTHTTPSAttacks: requests that must be refused over real loopback HTTPS, each with the
// status the authority's decision maps to, and nothing issued.
func TestESTHTTPSAttacks(t *testing.T) {
	s := httpsServer(t)
	dev := demoDevice(t, s)
	// An LDevID of the default label, for re-enrollment.
	ldevidKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := est.CreateCSR(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "ldevid-1"}}, ldevidKey, "")
	ldevid := issuedCert(t, estDo(t, s, dev, 0, "POST", s.estURL("")+"/simpleenroll", "application/pkcs10", b64(csr)))
	ldevidPair := &tls.Certificate{Certificate: [][]byte{ldevid.Raw}, PrivateKey: ldevidKey}
	renewCSR, _ := est.CreateCSR(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "ldevid-1"}}, ldevidKey, "")

	// PoP linking: a CSR made for one TLS session, replayed on another.
	popCSR := func(t *testing.T, maxVersion uint16) (linkedTo *client.HTTPS, replayOn *client.HTTPS, csr []byte) {
		anchors := []*x509.Certificate{s.data.IssuingChain()[len(s.data.IssuingChain())-1]}
		mk := func() *client.HTTPS {
			c, err := client.NewHTTPS(s.estURL("pop"), client.HTTPSOptions{VerifyServer: client.ServerVerifier(anchors, "127.0.0.1", nil),
				Certificates: []tls.Certificate{*dev}, MaxVersion: maxVersion, Trust: anchors})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			return c
		}
		a, b := mk(), mk()
		cb, err := a.ChannelBinding(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return a, b, newCSR(t, "pop-device", base64.StdEncoding.EncodeToString(cb))
	}

	tests := []struct {
		name string
		do   func(t *testing.T) int
		want int
	}{
		{"no credentials", func(t *testing.T) int {
			r := estDo(t, s, nil, 0, "POST", s.estURL("")+"/simpleenroll", "application/pkcs10", b64(newCSR(t, "anon", "")))
			if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Basic realm=") {
				t.Errorf("401 without a Basic challenge: %v", r.header)
			}
			return r.status
		}, http.StatusUnauthorized},
		{"wrong Basic password", func(t *testing.T) int {
			return estDo(t, s, nil, 0, "POST", s.estURL("")+"/simpleenroll", "application/pkcs10", b64(newCSR(t, "guess", "")),
				"basic", testUser+":wrong").status
		}, http.StatusUnauthorized},
		{"Basic user at a label that admits no users", func(t *testing.T) int {
			return estDo(t, s, nil, 0, "POST", s.estURL("devices")+"/simpleenroll", "application/pkcs10", b64(newCSR(t, "u", "")),
				"basic", testUser+":"+testPassword).status
		}, http.StatusForbidden},
		{"Basic credentials over plain HTTP to the TLS port", func(t *testing.T) int {
			req, _ := http.NewRequest("POST", "http://"+s.httpsAddr+"/.well-known/est/simpleenroll", bytes.NewReader(b64(newCSR(t, "plain", ""))))
			req.SetBasicAuth(testUser, testPassword)
			req.Header.Set("Content-Type", "application/pkcs10")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return 0 // the server hung up: no HTTP without TLS either
			}
			resp.Body.Close()
			return resp.StatusCode
		}, http.StatusBadRequest}, // net/http: "Client sent an HTTP request to an HTTPS server"
		{"PoP-linked CSR replayed on another TLS 1.2 session", func(t *testing.T) int {
			_, other, csr := popCSR(t, tls.VersionTLS12)
			_, err := other.Enroll(context.Background(), csr)
			return statusOf(t, err)
		}, http.StatusBadRequest},
		{"PoP-linked CSR replayed on another TLS 1.3 session", func(t *testing.T) int {
			_, other, csr := popCSR(t, tls.VersionTLS13)
			_, err := other.Enroll(context.Background(), csr)
			return statusOf(t, err)
		}, http.StatusBadRequest},
		{"re-enrollment at another label", func(t *testing.T) int {
			return estDo(t, s, ldevidPair, 0, "POST", s.estURL("other")+"/simplereenroll", "application/pkcs10", b64(renewCSR)).status
		}, http.StatusForbidden},
		{"re-enrollment with a factory certificate", func(t *testing.T) int {
			return estDo(t, s, dev, 0, "POST", s.estURL("")+"/simplereenroll", "application/pkcs10", b64(newCSR(t, "demo-device-0001", ""))).status
		}, http.StatusForbidden},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := certCount(t, s)
			if got := tc.do(t); got != tc.want {
				t.Errorf("status %d, want %d", got, tc.want)
			}
			if after := certCount(t, s); after != before {
				t.Errorf("%d certificates issued by a refused request", after-before)
			}
		})
	}

	// The controls: the same requests, made right, succeed.
	t.Run("controls", func(t *testing.T) {
		for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
			own, _, csr := popCSR(t, v)
			if _, err := own.Enroll(context.Background(), csr); err != nil {
				t.Errorf("PoP-linked CSR on its own session (TLS %x): %v", v, err)
			}
		}
		issuedCert(t, estDo(t, s, ldevidPair, 0, "POST", s.estURL("")+"/simplereenroll", "application/pkcs10", b64(renewCSR)))
		issuedCert(t, estDo(t, s, nil, 0, "POST", s.estURL("")+"/simpleenroll", "application/pkcs10", b64(newCSR(t, "basic-user", "")),
			"basic", testUser+":"+testPassword))
	})
}

func statusOf(t *testing.T, err error) int {
	t.Helper()
	var se *client.HTTPStatusError
	if !errors.As(err, &se) {
		t.Fatalf("want an HTTP status error, got %v", err)
	}
	return se.Status
}

// TestESTHTTPSFraming: the media types, base64 variants (RFC 8951) and error statuses of the
// front door, with the server's own decisions in between.
func TestESTHTTPSFraming(t *testing.T) {
	s := httpsServer(t, func(c *config.Config) { c.HTTP.MaxBodySize = 8 << 10 })
	dev := demoDevice(t, s)
	csr := newCSR(t, "framing", "")
	lines := func(der []byte, eol string) []byte {
		enc := base64.StdEncoding.EncodeToString(der)
		var b strings.Builder
		for len(enc) > 64 {
			b.WriteString(enc[:64] + eol)
			enc = enc[64:]
		}
		b.WriteString(enc + eol)
		return []byte(b.String())
	}
	tests := []struct {
		name        string
		cert        *tls.Certificate
		method, url string
		ct          string
		body        []byte
		hdr         []string
		want        int
		wantCT      string
	}{
		{"cacerts", nil, "GET", s.estURL("") + "/cacerts", "", nil, nil, 200, "application/pkcs7-mime"},
		{"cacerts under a label", nil, "GET", s.estURL("devices") + "/cacerts", "", nil, nil, 200, "application/pkcs7-mime"},
		{"csrattrs", dev, "GET", s.estURL("pop") + "/csrattrs", "", nil, nil, 200, "application/csrattrs"},
		{"crls", nil, "GET", s.estURL("") + "/crls", "", nil, nil, 200, "application/pkcs7-mime"},
		{"crls under an unknown label", nil, "GET", s.estURL("nosuch") + "/crls", "", nil, nil, 404, ""},
		{"enroll, base64 on one line", dev, "POST", s.estURL("") + "/simpleenroll", "application/pkcs10", b64(csr), nil, 200, "application/pkcs7-mime; smime-type=certs-only"},
		{"enroll, base64 in CRLF lines with CTE", dev, "POST", s.estURL("") + "/simpleenroll", "application/pkcs10", lines(csr, "\r\n"),
			[]string{"Content-Transfer-Encoding", "base64"}, 200, "application/pkcs7-mime; smime-type=certs-only"},
		{"enroll, base64 in LF lines, CTE binary (ignored)", dev, "POST", s.estURL("") + "/simpleenroll", "application/pkcs10", lines(csr, "\n"),
			[]string{"Content-Transfer-Encoding", "binary"}, 200, "application/pkcs7-mime; smime-type=certs-only"},
		{"enroll, binary DER", dev, "POST", s.estURL("") + "/simpleenroll", "application/pkcs10", csr, nil, 200, "application/pkcs7-mime; smime-type=certs-only"},
		{"enroll, Content-Type with parameters", dev, "POST", s.estURL("") + "/simpleenroll", "application/pkcs10; charset=us-ascii", b64(csr), nil, 200, ""},
		{"serverkeygen", dev, "POST", s.estURL("") + "/serverkeygen", "application/pkcs10", b64(csr), nil, 200, "multipart/mixed"},
		{"wrong media type", dev, "POST", s.estURL("") + "/simpleenroll", "application/json", b64(csr), nil, 415, ""},
		{"bad base64", dev, "POST", s.estURL("") + "/simpleenroll", "application/pkcs10", []byte("MIIB$$$notbase64"), nil, 400, ""},
		{"oversized body", dev, "POST", s.estURL("") + "/simpleenroll", "application/pkcs10", bytes.Repeat([]byte("QUFB"), 4<<10), nil, 413, ""},
		{"unknown label", dev, "POST", s.estURL("nosuch") + "/simpleenroll", "application/pkcs10", b64(csr), nil, 404, ""},
		{"unknown operation", dev, "GET", s.estURL("") + "/nosuch", "", nil, nil, 404, ""},
		{"fullcmc", dev, "POST", s.estURL("") + "/fullcmc", "application/pkcs7-mime", b64(csr), nil, 501, ""},
		{"GET on simpleenroll", dev, "GET", s.estURL("") + "/simpleenroll", "", nil, nil, 405, ""},
		{"a CSR that is no CSR", dev, "POST", s.estURL("") + "/simpleenroll", "application/pkcs10", b64([]byte("0\x03\x02\x01\x01")), nil, 400, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := estDo(t, s, tc.cert, 0, tc.method, tc.url, tc.ct, tc.body, tc.hdr...)
			if r.status != tc.want {
				t.Fatalf("status %d, want %d: %s", r.status, tc.want, r.body)
			}
			if tc.wantCT != "" && !strings.HasPrefix(r.header.Get("Content-Type"), tc.wantCT) {
				t.Errorf("Content-Type %q, want %q", r.header.Get("Content-Type"), tc.wantCT)
			}
			if r.status == 200 && tc.wantCT != "multipart/mixed" {
				if _, err := base64.StdEncoding.DecodeString(string(r.body)); err != nil {
					t.Errorf("200 body is not unbroken base64 (RFC 8951): %v", err)
				}
			}
			if r.status >= 400 && strings.Contains(string(r.body), "internal") {
				t.Errorf("error body leaks an internal error: %s", r.body)
			}
		})
	}
}

// TestESTHTTPSPending: manual approval answers 202 + Retry-After; after `coapca ca approve`
// the identical request gets the certificate.
func TestESTHTTPSPending(t *testing.T) {
	s := httpsServer(t)
	dev := demoDevice(t, s)
	csr := b64(newCSR(t, "pending-device", ""))
	r := estDo(t, s, dev, 0, "POST", s.estURL("manual")+"/simpleenroll", "application/pkcs10", csr)
	if r.status != http.StatusAccepted || r.header.Get("Retry-After") != "1" {
		t.Fatalf("status %d Retry-After %q, want 202 and 1", r.status, r.header.Get("Retry-After"))
	}
	ids := listPending(t, s.data.Dir)
	if len(ids) != 1 {
		t.Fatalf("%d pending, want 1", len(ids))
	}
	if err := s.auth.Approve(context.Background(), ids[0]); err != nil {
		t.Fatal(err)
	}
	issuedCert(t, estDo(t, s, dev, 0, "POST", s.estURL("manual")+"/simpleenroll", "application/pkcs10", csr))
}

// TestBenchESTHTTPS runs `coapca bench est --https` briefly: every enrollment and
// re-enrollment succeeds and the floors are printed beside the results (no timing asserted).
func TestBenchESTHTTPS(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	out, errOut, code := cli(context.Background(), "bench", "est", "--https", "--devices", "6", "--concurrency", "2", "--duration", "300ms")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"raw crypto/tls handshakes", "ECDSA P-256 sign", "/simpleenroll", "/simplereenroll"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(out, "errors 0") != 2 {
		t.Errorf("errors in the run:\n%s%s", out, errOut)
	}
}

// TestESTHTTPSNoBasicChallengeWithoutUsers: without authority.users a 401 carries no
// WWW-Authenticate challenge, which would invite credentials nobody can check.
func TestESTHTTPSNoBasicChallengeWithoutUsers(t *testing.T) {
	s := httpsServer(t, func(c *config.Config) {
		c.Authority.Users = nil
		for i := range c.Authority.Profiles {
			c.Authority.Profiles[i].Requesters = config.DefaultRequesters()
		}
	})
	r := estDo(t, s, nil, 0, "POST", s.estURL("")+"/simpleenroll", "application/pkcs10", b64(newCSR(t, "anon", "")))
	if r.status != http.StatusUnauthorized {
		t.Fatalf("status %d, want 401", r.status)
	}
	if h := r.header.Get("WWW-Authenticate"); h != "" {
		t.Errorf("WWW-Authenticate %q without Basic users", h)
	}
}

// TestESTHTTPSWelcomeCommands runs the curl and openssl commands that `coapca serve` prints
// for the EST over HTTPS listener, as printed: they fetch the CA certificates and enroll the
// demo device.
func TestESTHTTPSWelcomeCommands(t *testing.T) {
	need(t, "curl", "openssl", "bash")
	s := httpsServer(t)
	var b strings.Builder
	s.PrintESTHTTPSWelcome(&b, "coapca")
	var cmds []string
	var cur string
	for _, l := range strings.Split(b.String(), "\n") {
		l = strings.TrimSpace(l)
		switch {
		case cur != "":
			cur += " " + strings.TrimSuffix(l, "\\")
		case strings.HasPrefix(l, "curl ") || strings.HasPrefix(l, "openssl "):
			cur = strings.TrimSuffix(l, "\\")
		default:
			continue
		}
		if !strings.HasSuffix(l, "\\") {
			cmds, cur = append(cmds, cur), ""
		}
	}
	if len(cmds) != 3 {
		t.Fatalf("%d curl/openssl commands in the welcome text, want 3:\n%s", len(cmds), b.String())
	}
	dir := t.TempDir()
	for _, c := range cmds {
		cmd := exec.Command("bash", "-o", "pipefail", "-c", c)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", c, err, out)
		}
		if strings.HasPrefix(c, "curl") && !strings.Contains(string(out), "subject=") {
			t.Errorf("%s printed no certificate:\n%s", c, out)
		}
	}
}

// TestESTHTTPSRAExemption: an RA (id-kp-cmcRA, admitted by an ra rule) relays a CSR that a
// device linked to its own TLS session, which cannot match the RA's session (RFC 7030 §3.7);
// the authority admits it from the RA and refuses the same CSR from a device (400), and a
// certificate of this CA without id-kp-cmcRA gets a device's checks. The front door only
// reports what it found and maps the decision.
func TestESTHTTPSRAExemption(t *testing.T) {
	s := httpsServer(t, func(c *config.Config) {
		c.Authority.Profiles = append(c.Authority.Profiles, config.Profile{Label: "via-ra", RequirePoP: true,
			Requesters: append(config.DefaultRequesters(), config.RequesterRule{Kind: "ra", From: []string{"ca"}})})
	})
	_, _, ra := issueFromDataDir(t, s.data, &x509.Certificate{Subject: pkix.Name{CommonName: "registrar"},
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{client.OIDKPCmcRA}})
	_, _, notRA := issueFromDataDir(t, s.data, &x509.Certificate{Subject: pkix.Name{CommonName: "registrar"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	// The device's own session (to the registrar, here: any other TLS session) and its CSR.
	anchors := []*x509.Certificate{s.data.Root}
	devSession, err := client.NewHTTPS(s.estURL("via-ra"), client.HTTPSOptions{VerifyServer: client.ServerVerifier(anchors, "127.0.0.1", nil),
		Certificates: []tls.Certificate{*demoDevice(t, s)}})
	if err != nil {
		t.Fatal(err)
	}
	defer devSession.Close()
	cb, err := devSession.ChannelBinding(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	linked := b64(newCSR(t, "relayed-device", base64.StdEncoding.EncodeToString(cb)))
	unlinked := b64(newCSR(t, "relayed-device", ""))
	tests := []struct {
		name string
		who  *tls.Certificate
		csr  []byte
		want int
	}{
		{"RA relays a CSR linked to the device's session", &ra, linked, 200},
		{"RA relays an unlinked CSR under require_pop", &ra, unlinked, 200},
		{"a device sends a CSR linked to another session", demoDevice(t, s), linked, 400},
		{"a non-RA certificate of this CA relays a linked CSR", &notRA, linked, 403},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := estDo(t, s, tc.who, 0, "POST", s.estURL("via-ra")+"/simpleenroll", "application/pkcs10", tc.csr)
			if r.status != tc.want {
				t.Errorf("status %d, want %d: %s", r.status, tc.want, r.body)
			}
		})
	}
}
