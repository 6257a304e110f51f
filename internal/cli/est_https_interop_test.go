package cli

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"coapca/authority"
	"coapca/est"
	"coapca/internal/config"
)

// Interop of the EST over HTTPS front door with real peers over loopback: curl and openssl,
// our own client, strongSwan's pki --est, globalsign/est's estclient and estserver and
// Bouncy Castle's EST client. Each is skipped when its tool is missing (scripts/test.sh
// installs them; in CI a missing tool fails, see need).

// chainFile writes the server's root and issuing CA (the trust anchors a peer needs to
// authenticate the server) to a PEM file.
func chainFile(t *testing.T, s *served, dir string) string {
	t.Helper()
	var b strings.Builder
	for _, c := range s.data.IssuingChain() {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	p := filepath.Join(dir, "chain.pem")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// curlEST runs curl against url with args and returns the status, the response headers and
// the body.
func curlEST(t *testing.T, dir string, url string, args ...string) (int, string, []byte) {
	t.Helper()
	body, hdr := filepath.Join(dir, "body"), filepath.Join(dir, "headers")
	os.Remove(body)
	out, err := run(t, 30*time.Second, "curl", append([]string{"-sS", "-o", body, "-D", hdr, "-w", "%{http_code}", url}, args...)...)
	if err != nil {
		t.Fatalf("curl %s: %v\n%s", url, err, out)
	}
	var status int
	fmt.Sscanf(out, "%d", &status)
	h, _ := os.ReadFile(hdr)
	b, _ := os.ReadFile(body)
	return status, string(h), b
}

// opensslCerts decodes a base64 PKCS#7 answer with openssl and returns what openssl prints.
func opensslCerts(t *testing.T, dir string, b64body []byte) string {
	t.Helper()
	in, der := filepath.Join(dir, "p7.b64"), filepath.Join(dir, "p7.der")
	if err := os.WriteFile(in, b64body, 0o644); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "openssl", "base64", "-d", "-A", "-in", in, "-out", der)
	return mustRun(t, "openssl", "pkcs7", "-inform", "DER", "-in", der, "-print_certs", "-noout")
}

// TestESTHTTPSCurlOpenSSL: curl as the client, openssl making CSRs and reading the answers:
// cacerts, simpleenroll with a client certificate and with Basic, base64 with and without
// line breaks and with a Content-Transfer-Encoding header (RFC 8951), 202 under manual
// approval and the retry after approval, and the error statuses.
func TestESTHTTPSCurlOpenSSL(t *testing.T) {
	need(t, "curl", "openssl")
	s := httpsServer(t)
	d := s.data.Paths
	dir := t.TempDir()
	ca := chainFile(t, s, dir)
	csrDER := filepath.Join(dir, "csr.der")
	makeCSR(t, csrDER, "CN=curl-device")
	oneLine := mustRun(t, "openssl", "base64", "-A", "-in", csrDER)
	lines := mustRun(t, "openssl", "base64", "-in", csrDER) // 64 columns, LF
	if !strings.Contains(strings.TrimSpace(lines), "\n") {
		t.Fatal("openssl base64 wrote no line breaks")
	}
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	one, multi := write("one.b64", oneLine), write("multi.b64", lines)
	big := write("big.b64", strings.Repeat("QUFB", 20<<10))
	pkcs10 := []string{"-H", "Content-Type: application/pkcs10"}
	dev := []string{"--cert", d.Device, "--key", d.DeviceKey}
	basic := []string{"--user", testUser + ":" + testPassword}

	t.Run("cacerts", func(t *testing.T) {
		st, hdr, body := curlEST(t, dir, s.estURL("")+"/cacerts", "--cacert", ca)
		if st != 200 || !strings.Contains(strings.ToLower(hdr), "content-type: application/pkcs7-mime") {
			t.Fatalf("%d\n%s", st, hdr)
		}
		if out := opensslCerts(t, dir, body); !strings.Contains(out, "coapca Issuing CA") || !strings.Contains(out, "coapca Root CA") {
			t.Errorf("openssl pkcs7:\n%s", out)
		}
	})
	enrolls := []struct {
		name string
		args []string
	}{
		{"client certificate, unbroken base64", append(append([]string{"--data-binary", "@" + one}, dev...), pkcs10...)},
		{"client certificate, base64 in lines, CTE header", append(append([]string{"--data-binary", "@" + multi,
			"-H", "Content-Transfer-Encoding: base64"}, dev...), pkcs10...)},
		{"HTTP Basic, base64 in lines", append(append([]string{"--data-binary", "@" + multi}, basic...), pkcs10...)},
		{"HTTP Basic, unbroken base64, CTE header", append(append([]string{"--data-binary", "@" + one,
			"-H", "Content-Transfer-Encoding: base64"}, basic...), pkcs10...)},
	}
	for _, tc := range enrolls {
		t.Run("simpleenroll/"+tc.name, func(t *testing.T) {
			st, hdr, body := curlEST(t, dir, s.estURL("")+"/simpleenroll", append([]string{"--cacert", ca}, tc.args...)...)
			if st != 200 || !strings.Contains(strings.ToLower(hdr), "smime-type=certs-only") {
				t.Fatalf("%d\n%s%s", st, hdr, body)
			}
			if out := opensslCerts(t, dir, body); !strings.Contains(out, "CN=curl-device") && !strings.Contains(out, "CN = curl-device") {
				t.Errorf("openssl pkcs7:\n%s", out)
			}
		})
	}
	t.Run("pending, approval, retry", func(t *testing.T) {
		args := append(append([]string{"--cacert", ca, "--data-binary", "@" + one}, dev...), pkcs10...)
		st, hdr, _ := curlEST(t, dir, s.estURL("manual")+"/simpleenroll", args...)
		if st != 202 || !strings.Contains(hdr, "Retry-After: 1") {
			t.Fatalf("%d\n%s", st, hdr)
		}
		ids := listPending(t, s.data.Dir)
		if len(ids) != 1 {
			t.Fatalf("pending: %v", ids)
		}
		if _, errOut, code := cli(context.Background(), "ca", "approve", ids[0], "--data", s.data.Dir); code != 0 {
			t.Fatal(errOut)
		}
		st, _, body := curlEST(t, dir, s.estURL("manual")+"/simpleenroll", args...)
		if st != 200 {
			t.Fatalf("after approval: %d %s", st, body)
		}
		opensslCerts(t, dir, body)
	})
	t.Run("crls (RFC 8295 §4) after a revocation", func(t *testing.T) {
		st, _, body := curlEST(t, dir, s.estURL("")+"/simpleenroll", append(append([]string{"--cacert", ca, "--data-binary", "@" + one}, dev...), pkcs10...)...)
		if st != 200 {
			t.Fatalf("enroll: %d", st)
		}
		der, err := base64.StdEncoding.DecodeString(string(body))
		if err != nil {
			t.Fatal(err)
		}
		certs, err := est.ParseCertsOnly(der)
		if err != nil {
			t.Fatal(err)
		}
		serial := authority.FormatSerial(certs[0].SerialNumber)
		if _, errOut, code := cli(context.Background(), "ca", "revoke", serial, "--data", s.data.Dir); code != 0 {
			t.Fatal(errOut)
		}
		st, hdr, body := curlEST(t, dir, s.estURL("")+"/crls", "--cacert", ca)
		if st != 200 || !strings.Contains(strings.ToLower(hdr), "content-type: application/pkcs7-mime") {
			t.Fatalf("%d\n%s", st, hdr)
		}
		in := filepath.Join(dir, "crls.b64")
		os.WriteFile(in, body, 0o644)
		mustRun(t, "openssl", "base64", "-d", "-A", "-in", in, "-out", in+".der")
		out := mustRun(t, "openssl", "pkcs7", "-inform", "DER", "-in", in+".der", "-print_certs", "-text", "-noout")
		if !strings.Contains(out, "Certificate Revocation List") || !strings.Contains(strings.ToUpper(out), strings.ToUpper(serial)) {
			t.Errorf("the CRL does not list %s:\n%s", serial, out)
		}
	})
	t.Run("serverkeygen as PKCS #12 (RFC 8295 §8.3)", func(t *testing.T) {
		st, hdr, body := curlEST(t, dir, s.estURL("")+"/serverkeygen", append(append([]string{"--cacert", ca, "--data-binary", "@" + one,
			"-H", "Accept: application/pkcs12"}, basic...), pkcs10...)...)
		if st != 200 || !strings.Contains(strings.ToLower(hdr), "content-type: application/pkcs12") {
			t.Fatalf("%d\n%s%s", st, hdr, body)
		}
		in := filepath.Join(dir, "k.p12.b64")
		os.WriteFile(in, body, 0o644)
		mustRun(t, "openssl", "base64", "-d", "-A", "-in", in, "-out", in+".der")
		out := mustRun(t, "openssl", "pkcs12", "-in", in+".der", "-passin", "pass:"+testPassword, "-nodes")
		if !strings.Contains(out, "BEGIN PRIVATE KEY") || !strings.Contains(out, "CN = curl-device") {
			t.Fatalf("openssl pkcs12:\n%s", out)
		}
		// The key is the certificate's.
		pem := filepath.Join(dir, "p12.pem")
		os.WriteFile(pem, []byte(out), 0o600)
		keyPub := mustRun(t, "openssl", "pkey", "-in", pem, "-pubout")
		certPub := mustRun(t, "openssl", "x509", "-in", pem, "-noout", "-pubkey")
		if keyPub != certPub {
			t.Errorf("the PFX's key does not match its certificate:\n%s\n%s", keyPub, certPub)
		}
		// Without a Basic password there is nothing to shroud the PFX with: 406, nothing issued.
		before := certCount(t, s)
		st, _, body = curlEST(t, dir, s.estURL("")+"/serverkeygen", append(append([]string{"--cacert", ca, "--data-binary", "@" + one,
			"-H", "Accept: application/pkcs12"}, dev...), pkcs10...)...)
		if st != 406 || certCount(t, s) != before {
			t.Errorf("PKCS #12 without a password: %d %s (%d certificates issued)", st, body, certCount(t, s)-before)
		}
	})
	errors := []struct {
		name string
		url  string
		args []string
		want int
		hdr  string
	}{
		{"no credentials", "/simpleenroll", append([]string{"--data-binary", "@" + one}, pkcs10...), 401, "WWW-Authenticate: Basic realm="},
		{"wrong password", "/simpleenroll", append([]string{"--data-binary", "@" + one, "--user", testUser + ":nope"}, pkcs10...), 401, "WWW-Authenticate: Basic"},
		{"wrong media type", "/simpleenroll", append([]string{"--data-binary", "@" + one, "-H", "Content-Type: text/plain"}, dev...), 415, ""},
		{"bad base64", "/simpleenroll", append(append([]string{"--data-binary", "not*base64"}, dev...), pkcs10...), 400, ""},
		{"oversized body", "/simpleenroll", append(append([]string{"--data-binary", "@" + big}, dev...), pkcs10...), 413, ""},
		{"unknown label", "/../nosuch/simpleenroll", append(append([]string{"--path-as-is", "--data-binary", "@" + one}, dev...), pkcs10...), 404, ""},
		{"fullcmc", "/fullcmc", append(append([]string{"--data-binary", "@" + one}, dev...), pkcs10...), 501, ""},
	}
	for _, tc := range errors {
		t.Run("status/"+tc.name, func(t *testing.T) {
			url := s.estURL("") + tc.url
			if strings.HasPrefix(tc.url, "/../") {
				url = s.estURL(strings.TrimPrefix(tc.url, "/../"))
				url = strings.TrimSuffix(url, "/simpleenroll") + "/simpleenroll"
			}
			st, hdr, body := curlEST(t, dir, url, append([]string{"--cacert", ca}, tc.args...)...)
			if st != tc.want {
				t.Fatalf("status %d, want %d: %s", st, tc.want, body)
			}
			if tc.hdr != "" && !strings.Contains(strings.ToLower(hdr), strings.ToLower(tc.hdr)) {
				t.Errorf("headers lack %q:\n%s", tc.hdr, hdr)
			}
		})
	}
}

// TestESTHTTPSOurClient: `coapca est … --server https://…` against our server: cacerts into
// the explicit TA database, enroll with the IDevID and with Basic, PoP linking on TLS 1.2
// (tls-unique) and 1.3 (tls-exporter) where the profile requires it, csrattrs, serverkeygen,
// reenroll with the issued certificate, and a pending request waited out until approval.
func TestESTHTTPSOurClient(t *testing.T) {
	s := httpsServer(t)
	d := s.data.Paths
	dir := t.TempDir()
	ctx := context.Background()
	url := "https://" + s.httpsAddr
	pw := filepath.Join(dir, "password")
	if err := os.WriteFile(pw, []byte(testPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := func(n string) string { return filepath.Join(dir, n) }
	dev := []string{"--cert", d.Device, "--key", d.DeviceKey}
	steps := []struct {
		name string
		args []string
		out  string // a file that must hold a certificate afterwards
	}{
		{"cacerts into the explicit TA database", []string{"cacerts", "--server", url, "--trust", d.Root, "--explicit-ta", p("ta.pem"), "--out", p("cas.pem")}, p("cas.pem")},
		{"enroll with the IDevID", append([]string{"enroll", "--server", url, "--explicit-ta", p("ta.pem"), "--subject", "CN=https-1",
			"--key-out", p("l1.key"), "--out", p("l1.pem")}, dev...), p("l1.pem")},
		{"enroll with Basic", []string{"enroll", "--server", url, "--trust", d.Root, "--user", testUser, "--password-file", pw,
			"--subject", "CN=basic-1", "--key-out", p("b1.key"), "--out", p("b1.pem")}, p("b1.pem")},
		{"enroll with PoP over TLS 1.3 (tls-exporter)", append([]string{"enroll", "--server", url + "/pop", "--trust", d.Root, "--pop",
			"--subject", "CN=pop-13", "--key-out", p("p13.key"), "--out", p("p13.pem")}, dev...), p("p13.pem")},
		{"enroll with PoP over TLS 1.2 (tls-unique)", append([]string{"enroll", "--server", url + "/pop", "--trust", d.Root, "--pop", "--tls12",
			"--subject", "CN=pop-12", "--key-out", p("p12.key"), "--out", p("p12.pem")}, dev...), p("p12.pem")},
		{"csrattrs", append([]string{"csrattrs", "--server", url + "/pop", "--trust", d.Root}, dev...), ""},
		{"serverkeygen", append([]string{"serverkeygen", "--server", url, "--trust", d.Root, "--subject", "CN=skg-1",
			"--key-out", p("skg.key"), "--out", p("skg.pem")}, dev...), p("skg.pem")},
		{"reenroll", []string{"reenroll", "--server", url, "--trust", d.Root, "--cert", p("l1.pem"), "--key", p("l1.key"),
			"--key-out", p("l2.key"), "--out", p("l2.pem")}, p("l2.pem")},
	}
	for _, st := range steps {
		out, errOut, code := cli(ctx, append([]string{"est"}, st.args...)...)
		if code != 0 {
			t.Fatalf("%s: exit %d\n%s%s", st.name, code, out, errOut)
		}
		if st.out != "" {
			readCert(t, st.out)
		}
		if st.name == "csrattrs" && !strings.Contains(out, "challengePassword") {
			t.Errorf("csrattrs of a require_pop profile lacks challengePassword:\n%s", out)
		}
	}
	if c := readCert(t, p("l2.pem")); c.Subject.CommonName != "https-1" {
		t.Errorf("reenrolled subject %v", c.Subject)
	}

	// A pending request: the client follows 202 + Retry-After until the operator approves.
	done := make(chan string, 1)
	go func() {
		_, errOut, code := cli(ctx, append([]string{"est", "enroll", "--server", url + "/manual", "--trust", d.Root, "--subject", "CN=wait-1",
			"--wait", "60s", "--out", p("w.pem")}, dev...)...)
		done <- fmt.Sprintf("%d %s", code, errOut)
	}()
	var ids []string
	for deadline := time.Now().Add(30 * time.Second); len(ids) == 0 && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond) // polling for a state, not a timing assertion
		ids = listPending(t, s.data.Dir)
	}
	if len(ids) != 1 {
		t.Fatalf("pending: %v", ids)
	}
	if _, errOut, code := cli(ctx, "ca", "approve", ids[0], "--data", s.data.Dir); code != 0 {
		t.Fatal(errOut)
	}
	select {
	case res := <-done:
		if !strings.HasPrefix(res, "0 ") || !strings.Contains(res, "pending: /simpleenroll not ready") {
			t.Fatalf("enroll after approval: %s", res)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("enroll did not finish after approval")
	}
	readCert(t, p("w.pem"))
}

// TestESTHTTPSStrongSwan: strongSwan's pki --est enrolls with --userpass, waits out a 202
// until the operator approves, and re-enrolls with --cert/--key. pki sends
// Content-Type application/pkcs10 with unbroken base64 and no Content-Transfer-Encoding
// header, which RFC 8951 makes the normal case.
func TestESTHTTPSStrongSwan(t *testing.T) {
	need(t, "pki", "openssl")
	s := httpsServer(t)
	dir := t.TempDir()
	chainFile(t, s, dir)
	url := "https://" + s.httpsAddr
	p := func(n string) string { return filepath.Join(dir, n) }
	// pki reads one certificate per --cacert file: the root and the issuing CA.
	ca := s.data.Paths.Root
	issuing := p("issuing.pem")
	if err := os.WriteFile(issuing, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.data.IssuingChain()[0].Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	pki := func(timeout time.Duration, args ...string) (string, error) {
		return run(t, timeout, "pki", args...)
	}
	if out, err := pki(30*time.Second, "--gen", "--type", "ecdsa", "--size", "256", "--outform", "pem"); err != nil {
		t.Fatalf("pki --gen: %v\n%s", err, out)
	} else if err := os.WriteFile(p("k.pem"), []byte(pemOnly(out)), 0o600); err != nil {
		t.Fatal(err)
	}
	mustPKI := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("pki", args...).Output()
		if err != nil {
			t.Fatalf("pki %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if err := os.WriteFile(p("req.der"), []byte(mustPKI("--req", "--in", p("k.pem"), "--dn", "CN=swan-1", "--outform", "der")), 0o644); err != nil {
		t.Fatal(err)
	}
	// Initial enrollment with HTTP Basic.
	if out, err := pki(60*time.Second, "--est", "--url", url, "--in", p("req.der"), "--cacert", ca, "--cacert", issuing, "--userpass", testUser+":"+testPassword,
		"--outform", "pem"); err != nil || !strings.Contains(out, "BEGIN CERTIFICATE") {
		t.Fatalf("pki --est: %v\n%s", err, out)
	} else if err := os.WriteFile(p("c.pem"), []byte(pemOnly(out)), 0o644); err != nil {
		t.Fatal(err)
	}
	if c := readCert(t, p("c.pem")); c.Subject.CommonName != "swan-1" {
		t.Fatalf("issued %v", c.Subject)
	}

	// Manual approval: pki polls every second until the operator approves. pki appends
	// /.well-known/est/simpleenroll to --url and so cannot address a label: a second server
	// whose default profile needs approval.
	ms := httpsServer(t, func(c *config.Config) {
		c.Authority.Profiles[0].ManualApproval, c.Authority.Profiles[0].RetryAfter = true, time.Second
	})
	msIssuing := p("ms-issuing.pem")
	if err := os.WriteFile(msIssuing, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ms.data.IssuingChain()[0].Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan string, 1)
	go func() {
		out, err := pki(60*time.Second, "--est", "--url", "https://"+ms.httpsAddr, "--in", p("req.der"), "--cacert", ms.data.Paths.Root, "--cacert", msIssuing,
			"--userpass", testUser+":"+testPassword, "--interval", "1", "--maxpolltime", "50", "--outform", "pem")
		done <- fmt.Sprintf("%v\n%s", err, out)
	}()
	var ids []string
	for deadline := time.Now().Add(30 * time.Second); len(ids) == 0 && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond) // polling for a state, not a timing assertion
		ids = listPending(t, ms.data.Dir)
	}
	if len(ids) != 1 {
		t.Fatalf("pending: %v (%s)", ids, <-done)
	}
	if _, errOut, code := cli(context.Background(), "ca", "approve", ids[0], "--data", ms.data.Dir); code != 0 {
		t.Fatal(errOut)
	}
	if res := <-done; !strings.HasPrefix(res, "<nil>") || !strings.Contains(res, "BEGIN CERTIFICATE") {
		t.Fatalf("pki polling until approval: %s", res)
	}

	// Re-enrollment with the issued certificate (a new key, same subject).
	mustPKI2 := func() {
		out, err := pki(30*time.Second, "--gen", "--type", "ecdsa", "--size", "256", "--outform", "pem")
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(p("k2.pem"), []byte(pemOnly(out)), 0o600)
	}
	mustPKI2()
	if err := os.WriteFile(p("req2.der"), []byte(mustPKI("--req", "--in", p("k2.pem"), "--dn", "CN=swan-1", "--outform", "der")), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := pki(60*time.Second, "--est", "--url", url, "--in", p("req2.der"), "--cacert", ca, "--cacert", issuing, "--cert", p("c.pem"), "--key", p("k.pem"), "--outform", "pem")
	if err != nil || !strings.Contains(out, "BEGIN CERTIFICATE") {
		t.Fatalf("pki --est re-enrollment: %v\n%s", err, out)
	}
	os.WriteFile(p("c2.pem"), []byte(pemOnly(out)), 0o644)
	if c, old := readCert(t, p("c2.pem")), readCert(t, p("c.pem")); c.SerialNumber.Cmp(old.SerialNumber) == 0 {
		t.Error("re-enrollment returned the old certificate")
	}
}

// pemOnly keeps the PEM blocks of a tool's output (pki prints diagnostics too).
func pemOnly(s string) string {
	var b strings.Builder
	rest := []byte(s)
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			return b.String()
		}
		_ = pem.Encode(&b, blk)
	}
}

// globalsignTools builds globalsign/est v1.0.6's estclient and estserver in a throwaway
// module in dir (never in this repository). It skips the test when the module proxy cannot
// be reached.
func globalsignTools(t *testing.T, dir string) (estclient, estserver string) {
	t.Helper()
	need(t, "go")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	goCmd := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		c := exec.CommandContext(ctx, "go", args...)
		c.Dir = dir
		c.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
		out, err := c.CombinedOutput()
		return string(out), err
	}
	if out, err := goCmd("mod", "init", "x"); err != nil {
		t.Fatalf("go mod init: %v\n%s", err, out)
	}
	if out, err := goCmd("get", "github.com/globalsign/est@v1.0.6"); err != nil {
		t.Skipf("globalsign/est v1.0.6 not available from the module proxy (unreachable?): %v\n%s", err, out)
	}
	estclient, estserver = filepath.Join(dir, "estclient"), filepath.Join(dir, "estserver")
	for _, b := range []struct{ out, pkg string }{{estclient, "github.com/globalsign/est/cmd/estclient"}, {estserver, "github.com/globalsign/est/cmd/estserver"}} {
		if out, err := goCmd("build", "-o", b.out, b.pkg); err != nil {
			t.Fatalf("go build %s: %v\n%s", b.pkg, err, out)
		}
	}
	return estclient, estserver
}

// TestESTHTTPSGlobalSign: globalsign/est v1.0.6's estclient against our server (cacerts,
// csrattrs, enroll, reenroll, serverkeygen), and our client against its estserver (a mock CA).
func TestESTHTTPSGlobalSign(t *testing.T) {
	need(t, "openssl")
	if testing.Short() {
		t.Skip("-short: builds globalsign/est")
	}
	dir := t.TempDir()
	estclient, estserver := globalsignTools(t, filepath.Join(dir, "gs"))
	s := httpsServer(t)
	d := s.data.Paths
	p := func(n string) string { return filepath.Join(dir, n) }
	server := s.httpsAddr
	makeCSR(t, p("e.der"), "CN=gs-1")
	mustRun(t, "openssl", "req", "-inform", "DER", "-in", p("e.der"), "-out", p("e.csr"))
	gs := func(args ...string) string {
		t.Helper()
		out, err := run(t, 60*time.Second, estclient, append(args, "-server", server, "-explicit", d.Root)...)
		if err != nil {
			t.Fatalf("estclient %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	gs("cacerts", "-out", p("cas.pem"))
	if cas := readCerts(t, p("cas.pem")); len(cas) != 2 {
		t.Errorf("estclient cacerts: %d certificates", len(cas))
	}
	if out := gs("csrattrs", "-certs", d.Device, "-key", d.DeviceKey); strings.TrimSpace(out) == "" {
		t.Error("estclient csrattrs printed nothing")
	}
	gs("enroll", "-certs", d.Device, "-key", d.DeviceKey, "-csr", p("e.csr"), "-out", p("e.pem"))
	if c := readCert(t, p("e.pem")); c.Subject.CommonName != "gs-1" {
		t.Fatalf("enrolled %v", c.Subject)
	}
	// Re-enrollment: the issued certificate authenticates, the CSR keeps its subject.
	makeCSR(t, p("r.der"), "CN=gs-1")
	mustRun(t, "openssl", "req", "-inform", "DER", "-in", p("r.der"), "-out", p("r.csr"))
	gs("reenroll", "-certs", p("e.pem"), "-key", p("e.der.key"), "-csr", p("r.csr"), "-out", p("r.pem"))
	if readCert(t, p("r.pem")).SerialNumber.Cmp(readCert(t, p("e.pem")).SerialNumber) == 0 {
		t.Error("reenroll returned the old certificate")
	}
	makeCSR(t, p("k.der"), "CN=gs-skg")
	mustRun(t, "openssl", "req", "-inform", "DER", "-in", p("k.der"), "-out", p("k.csr"))
	gs("serverkeygen", "-certs", d.Device, "-key", d.DeviceKey, "-csr", p("k.csr"), "-out", p("k.pem"), "-keyout", p("k.key"))
	mustRun(t, "openssl", "x509", "-in", p("k.pem"), "-noout")
	if out := mustRun(t, "openssl", "pkey", "-in", p("k.key"), "-pubout"); !strings.Contains(out, "PUBLIC KEY") {
		t.Errorf("serverkeygen key: %s", out)
	}

	// Our client against globalsign's estserver, with a CA made by openssl.
	mustRun(t, "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", p("gsca.key"),
		"-subj", "/CN=gs test CA", "-days", "2", "-out", p("gsca.pem"), "-addext", "basicConstraints=critical,CA:TRUE",
		"-addext", "keyUsage=critical,keyCertSign,cRLSign")
	mustRun(t, "openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", p("gssrv.key"),
		"-subj", "/CN=127.0.0.1", "-out", p("gssrv.csr"))
	ext := p("srv.ext")
	os.WriteFile(ext, []byte("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n"), 0o644)
	mustRun(t, "openssl", "x509", "-req", "-in", p("gssrv.csr"), "-CA", p("gsca.pem"), "-CAkey", p("gsca.key"), "-CAcreateserial",
		"-days", "2", "-extfile", ext, "-out", p("gssrv.pem"))
	port := freeTCPPort(t)
	cfg := fmt.Sprintf(`{"mock_ca":{"certificates":%q,"private_key":%q},"tls":{"listen_address":"127.0.0.1:%d","certificates":%q,"private_key":%q,"client_cas":[%q]},"allowed_hosts":["127.0.0.1"],"rate_limit":0,"timeout":30}`,
		p("gsca.pem"), p("gsca.key"), port, p("gssrv.pem"), p("gssrv.key"), p("gsca.pem"))
	os.WriteFile(p("gs.json"), []byte(cfg), 0o644)
	srv := exec.Command(estserver, "-config", p("gs.json"))
	var srvLog strings.Builder
	srv.Stdout, srv.Stderr = &srvLog, &srvLog
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	url := fmt.Sprintf("https://127.0.0.1:%d", port)
	ctx := context.Background()
	ours := func(args ...string) {
		t.Helper()
		var out, errOut string
		var code int
		for attempt := 0; attempt < 50; attempt++ { // the server may still be starting
			out, errOut, code = cli(ctx, append([]string{"est"}, args...)...)
			if code == 0 || !strings.Contains(errOut, "connection refused") {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if code != 0 {
			t.Fatalf("coapca est %s: %d\n%s%s\nestserver log:\n%s", strings.Join(args, " "), code, out, errOut, srvLog.String())
		}
	}
	ours("cacerts", "--server", url, "--trust", p("gsca.pem"), "--out", p("o-cas.pem"))
	ours("csrattrs", "--server", url, "--trust", p("gsca.pem"))
	ours("enroll", "--server", url, "--trust", p("gsca.pem"), "--subject", "CN=ours-at-gs", "--key-out", p("o.key"), "--out", p("o.pem"))
	if c := readCert(t, p("o.pem")); c.Subject.CommonName != "ours-at-gs" {
		t.Errorf("enrolled %v", c.Subject)
	}
	ours("reenroll", "--server", url, "--trust", p("gsca.pem"), "--cert", p("o.pem"), "--key", p("o.key"), "--key-out", p("o2.key"), "--out", p("o2.pem"))
	ours("serverkeygen", "--server", url, "--trust", p("gsca.pem"), "--subject", "CN=ours-skg", "--key-out", p("os.key"), "--out", p("os.pem"))
}

func readCerts(t *testing.T, path string) []*x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return out
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// bcJars is the Bouncy Castle classpath of Debian's libbcprov-java, libbcpkix-java,
// libbcutil-java and libbctls-java.
var bcJars = []string{"/usr/share/java/bcprov.jar", "/usr/share/java/bcpkix.jar", "/usr/share/java/bcutil.jar", "/usr/share/java/bctls.jar"}

// TestESTHTTPSBouncyCastle: Bouncy Castle's EST client (testdata/ESTInterop.java, compiled
// here) against our server: cacerts, csrattrs, simpleenroll with the IDevID, simpleenroll
// with tls-unique PoP (TLS 1.2) under a profile that requires it, and serverkeygen. BC decodes
// base64 answers only when they carry Content-Transfer-Encoding: base64 (RFC 7030's header,
// which RFC 8951 makes optional), and insists on Content-Length.
func TestESTHTTPSBouncyCastle(t *testing.T) {
	need(t, "java", "javac")
	for _, j := range bcJars {
		if _, err := os.Stat(j); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is required in CI (scripts/test.sh installs it)", j)
			}
			t.Skipf("%s not installed", j)
		}
	}
	dir := t.TempDir()
	cp := strings.Join(bcJars, string(os.PathListSeparator))
	if out, err := run(t, 2*time.Minute, "javac", "-cp", cp, "-d", dir, filepath.Join("testdata", "ESTInterop.java")); err != nil {
		t.Fatalf("javac: %v\n%s", err, out)
	}
	s := httpsServer(t)
	d := s.data.Paths
	_, port, _ := net.SplitHostPort(s.httpsAddr)
	out, err := run(t, 2*time.Minute, "java", "-cp", cp+string(os.PathListSeparator)+dir, "ESTInterop",
		"localhost:"+port, d.Root, d.Device, d.DeviceKey, "pop")
	if err != nil {
		t.Fatalf("ESTInterop: %v\n%s", err, out)
	}
	for _, want := range []string{"CACERTS 2", "CSRATTRS ", "ENROLL CN=bc-1", "POP CN=bc-pop", "SERVERKEYGEN CN=bc-skg 1.2.840.10045.2.1"} {
		if !strings.Contains(out, want) {
			t.Errorf("Bouncy Castle output lacks %q:\n%s", want, out)
		}
	}
}
