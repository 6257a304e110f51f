package cli

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"coapca/authority"
	"coapca/est"
	"coapca/internal/config"
	"coapca/internal/datadir"
	"coapca/internal/pemfile"
	"coapca/internal/server"
	"coapca/internal/testtool"
)

// testServer starts coapca in-process on a loopback port with a fresh data directory and three
// profiles beside the default: "manual" (manual approval, retry after 1 s), "pop" (PoP linking
// required) and "sensors".
func testServer(t *testing.T) *served {
	t.Helper()
	return testServerAt(t, t.TempDir())
}

func testServerAt(t *testing.T, dir string, tweak ...func(*config.Config)) *served {
	t.Helper()
	cfg := config.Default()
	cfg.Data = dir
	cfg.Listen.CoAPS = "127.0.0.1:0"
	cfg.Listen.CoAP = "127.0.0.1:0"
	cfg.Listen.Metrics = "127.0.0.1:0"
	anyone := config.DefaultRequesters()
	cfg.Authority.Profiles = []config.Profile{
		{Label: "manual", ManualApproval: true, RetryAfter: time.Second, Requesters: anyone},
		{Label: "pop", RequirePoP: true, Requesters: anyone},
		{Label: "sensors", Requesters: anyone},
	}
	for _, f := range tweak {
		f(&cfg)
	}
	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	started, err := server.Start(context.Background(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { started.Close() })
	return &served{Server: started, cfg: cfg, log: log, data: started.Data(), auth: started.Authority(),
		coapsURL: started.CoAPSURL(), coapURL: started.CoAPURL(), httpURL: started.HTTPURL(), metricsAddr: started.MetricsAddr(),
		httpsAddr: strings.TrimPrefix(started.HTTPSURL(), "https://")}
}

// served is a started internal/server.Server with what the tests read of it as fields, and the
// configuration and logger it was started with.
type served struct {
	*server.Server
	cfg                        config.Config
	log                        *slog.Logger
	data                       *datadir.Data
	auth                       *authority.Authority
	coapsURL, coapURL, httpURL string // "" when off
	httpsAddr                  string // host:port of the EST over HTTPS listener, "" when off
	metricsAddr                net.Addr
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// need skips the test unless every program is installed (in CI it fails instead).
func need(t *testing.T, bins ...string) {
	t.Helper()
	for _, b := range bins {
		testtool.LookPath(t, b)
	}
}

// run runs a program with a deadline and returns its combined output.
func run(t *testing.T, timeout time.Duration, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := run(t, 60*time.Second, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// cli runs `coapca ARGS` in-process and returns stdout, stderr and the exit code.
func cli(ctx context.Context, args ...string) (string, string, int) {
	var out, errb bytes.Buffer
	code := Main(ctx, args, &out, &errb)
	return out.String(), errb.String(), code
}

func (s *served) url(label string) string {
	u := s.coapsURL
	if label != "" {
		u += "/" + label
	}
	return u
}

// TestLibcoapDevices enrolls with libcoap's coap-client (both TLS back ends) as the device,
// at block size 64, and checks every output with openssl.
func TestLibcoapDevices(t *testing.T) {
	need(t, "coap-client-openssl", "coap-client-gnutls", "openssl")
	s := testServer(t)
	d := s.data.Paths
	for _, bin := range []string{"coap-client-openssl", "coap-client-gnutls"} {
		t.Run(bin, func(t *testing.T) {
			dir := t.TempDir()
			coapClient := func(args ...string) string {
				base := []string{"-B", "30", "-c", d.Device, "-j", d.DeviceKey, "-C", d.Root}
				return mustRun(t, bin, append(base, args...)...)
			}

			// Discovery: every EST resource of the default root and of every label.
			links := coapClient("-m", "get", s.coapsURL+"/.well-known/core?rt=ace.est*")
			for _, l := range []string{"", "/manual", "/pop", "/sensors"} {
				for _, fn := range []string{"crts", "sen", "sren", "att", "skg", "skc"} {
					want := fmt.Sprintf(`</.well-known/est%s/%s>;rt="ace.est.%s"`, l, fn, fn)
					if !strings.Contains(links, want) {
						t.Errorf("discovery lacks %s in %s", want, links)
					}
				}
			}

			// /crts at block size 64 → certs-only PKCS#7 with the issuing CA and the root.
			crts := filepath.Join(dir, "crts.p7")
			coapClient("-m", "get", "-b", "64", "-A", "281", "-o", crts, s.coapsURL+"/.well-known/est/crts")
			printed := mustRun(t, "openssl", "pkcs7", "-inform", "DER", "-in", crts, "-print_certs")
			if n := strings.Count(printed, "BEGIN CERTIFICATE"); n != 2 {
				t.Fatalf("/crts has %d certificates, want 2:\n%s", n, printed)
			}
			chain := filepath.Join(dir, "chain.pem")
			os.WriteFile(chain, []byte(printed), 0o600)

			// A CSR made by openssl req, posted to /sen at block size 64.
			key, csr := filepath.Join(dir, "dev.key"), filepath.Join(dir, "csr.der")
			mustRun(t, "openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
				"-keyout", key, "-subj", "/CN=demo-device-0001/O=Example", "-outform", "DER", "-out", csr)
			p7 := filepath.Join(dir, "cert.p7")
			coapClient("-m", "post", "-b", "64", "-t", "286", "-f", csr, "-o", p7, s.coapsURL+"/.well-known/est/sen")
			certPEM := filepath.Join(dir, "cert.pem")
			mustRun(t, "openssl", "pkcs7", "-inform", "DER", "-in", p7, "-print_certs", "-out", certPEM)
			if out := mustRun(t, "openssl", "verify", "-CAfile", d.Root, "-untrusted", chain, certPEM); !strings.Contains(out, "OK") {
				t.Fatalf("openssl verify: %s", out)
			}
			// The issued certificate certifies the CSR's key and carries the IDevID's serialNumber.
			certPub := mustRun(t, "openssl", "x509", "-in", certPEM, "-noout", "-pubkey")
			keyPub := mustRun(t, "openssl", "pkey", "-in", key, "-pubout")
			if certPub != keyPub {
				t.Errorf("issued certificate's key differs from the CSR's")
			}
			if subj := mustRun(t, "openssl", "x509", "-in", certPEM, "-noout", "-subject"); !strings.Contains(subj, "serialNumber = 0001") {
				t.Errorf("subject %q lacks the IDevID serialNumber", subj)
			}

			// /skg at block size 64: multipart-core with a PKCS#8 key and a PKCS#7 certificate.
			mp := filepath.Join(dir, "skg.cbor")
			coapClient("-m", "post", "-b", "64", "-t", "286", "-A", "62", "-f", csr, "-o", mp, s.coapsURL+"/.well-known/est/skg")
			raw, _ := os.ReadFile(mp)
			parts, err := est.ParseMultipart(raw)
			if err != nil || len(parts) != 2 || parts[0].ContentFormat != est.CFPKCS8 || parts[1].ContentFormat != est.CFPKCS7CertsOnly {
				t.Fatalf("/skg answer: %v %+v", err, parts)
			}
			skKey, skP7, skCert := filepath.Join(dir, "skg.key"), filepath.Join(dir, "skg.p7"), filepath.Join(dir, "skg.pem")
			os.WriteFile(skKey, parts[0].Body, 0o600)
			os.WriteFile(skP7, parts[1].Body, 0o600)
			mustRun(t, "openssl", "pkey", "-inform", "DER", "-in", skKey, "-check", "-noout")
			mustRun(t, "openssl", "pkcs7", "-inform", "DER", "-in", skP7, "-print_certs", "-out", skCert)
			if a, b := mustRun(t, "openssl", "x509", "-in", skCert, "-noout", "-pubkey"),
				mustRun(t, "openssl", "pkey", "-inform", "DER", "-in", skKey, "-pubout"); a != b {
				t.Errorf("server-generated key does not match its certificate")
			}
			mustRun(t, "openssl", "verify", "-CAfile", d.Root, "-untrusted", chain, skCert)

			// Errors: a wrong Content-Format is 4.15, garbage is 4.00 with a diagnostic,
			// an unknown label is 4.04.
			if out, _ := run(t, 30*time.Second, bin, "-B", "10", "-c", d.Device, "-j", d.DeviceKey, "-C", d.Root,
				"-m", "post", "-t", "0", "-f", csr, s.coapsURL+"/.well-known/est/sen"); !strings.Contains(out, "4.15") {
				t.Errorf("wrong Content-Format: %q, want 4.15", out)
			}
			junk := filepath.Join(dir, "junk")
			os.WriteFile(junk, []byte("this is not a CSR"), 0o600)
			if out, _ := run(t, 30*time.Second, bin, "-B", "10", "-c", d.Device, "-j", d.DeviceKey, "-C", d.Root,
				"-m", "post", "-t", "286", "-f", junk, s.coapsURL+"/.well-known/est/sen"); !strings.Contains(out, "4.00") {
				t.Errorf("bad CSR: %q, want 4.00", out)
			}
			if out, _ := run(t, 30*time.Second, bin, "-B", "10", "-c", d.Device, "-j", d.DeviceKey, "-C", d.Root,
				"-m", "get", s.coapsURL+"/.well-known/est/nosuchlabel/crts"); !strings.Contains(out, "4.04") {
				t.Errorf("unknown label: %q, want 4.04", out)
			}
		})
	}

	// Every enrollment above is in the store, with the transport and the requester.
	certs, err := s.auth.ListCertificates(context.Background(), authority.CertFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) != 4 {
		t.Errorf("store has %d certificates, want 4 (2 × sen, 2 × skg)", len(certs))
	}
	for _, c := range certs {
		if c.Transport != authority.TransportCoAPS || c.Protocol != authority.ProtocolEST || !strings.Contains(c.RequesterSubject, "demo-device-0001") {
			t.Errorf("record %+v lacks transport or requester", c)
		}
	}
	// And the metrics say so.
	resp, err := http.Get("http://" + s.metricsAddr.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`coapca_requests_total{function="enroll",protocol="est-coaps",result="issued"} 2`, "coapca_dtls_handshakes_ok_total", `coapca_coap_responses_total{code="4.15"}`,
		`coapca_requests_total{function="enroll",protocol="est-coaps",result="bad_request"} 2`,
		"coapca_oscore_contexts", "coapca_edhoc_sessions", "coapca_dtls_parked_sessions", "coapca_dtls_parks_total", "coapca_dtls_resumes_total"} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestClientLifecycle runs our CLI as the device: cacerts into an explicit trust anchor
// database, csrattrs, enroll with PoP linking, reenroll with the new identity, serverkeygen.
func TestClientLifecycle(t *testing.T) {
	s := testServer(t)
	d := s.data.Paths
	dir := t.TempDir()
	ctx := context.Background()
	ta := filepath.Join(dir, "ta.pem")
	idevid := []string{"--cert", d.Device, "--key", d.DeviceKey}
	est := func(args ...string) (string, string) {
		t.Helper()
		out, errOut, code := cli(ctx, append([]string{"est"}, args...)...)
		if code != 0 {
			t.Fatalf("coapca est %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
		return out, errOut
	}

	est(append([]string{"cacerts", "--server", s.url(""), "--trust", d.Root, "--explicit-ta", ta, "--out", filepath.Join(dir, "ca.pem")}, idevid...)...)
	if anchors, err := pemfile.ReadCerts(ta); err != nil || len(anchors) != 2 {
		t.Fatalf("explicit TA database: %v (%d certs)", err, len(anchors))
	}
	out, _ := est(append([]string{"csrattrs", "--server", s.url(""), "--explicit-ta", ta}, idevid...)...)
	if !strings.Contains(out, "P-256") {
		t.Errorf("csrattrs output lacks the key type: %s", out)
	}

	// The "pop" profile requires PoP linking: without --pop refused, with --pop issued.
	ldevid, ldevidKey := filepath.Join(dir, "ldevid.pem"), filepath.Join(dir, "ldevid.key")
	if _, errOut, code := cli(ctx, append([]string{"est", "enroll", "--server", s.url("pop"), "--explicit-ta", ta,
		"--subject", "CN=demo-device-0001", "--key-out", ldevidKey, "--out", ldevid}, idevid...)...); code == 0 || !strings.Contains(errOut, "4.0") {
		t.Fatalf("enroll without --pop under a PoP profile: exit %d %s", code, errOut)
	}
	est(append([]string{"enroll", "--server", s.url("pop"), "--explicit-ta", ta, "--pop",
		"--subject", "CN=demo-device-0001", "--san", "dns:dev1.example", "--key-out", ldevidKey, "--out", ldevid}, idevid...)...)
	cert := readCert(t, ldevid)
	if cert.Subject.CommonName != "demo-device-0001" || len(cert.DNSNames) != 1 {
		t.Fatalf("enrolled %v %v", cert.Subject, cert.DNSNames)
	}

	// Attack (issue 8, item 2): re-enrollment escapes the label the certificate was issued under.
	renewed, renewedKey := filepath.Join(dir, "renewed.pem"), filepath.Join(dir, "renewed.key")
	if _, errOut, code := cli(ctx, "est", "reenroll", "--server", s.url(""), "--explicit-ta", ta, "--cert", ldevid, "--key", ldevidKey,
		"--pop", "--key-out", renewedKey, "--out", renewed); code == 0 || !strings.Contains(errOut, "4.03") {
		t.Fatalf("re-enrollment under another label: exit %d %s", code, errOut)
	}
	// Re-enrollment with the new identity under its own label: same subject and SAN, new key,
	// cert format 287.
	est("reenroll", "--server", s.url("pop"), "--explicit-ta", ta, "--cert", ldevid, "--key", ldevidKey, "--pop",
		"--accept", "cert", "--block-size", "64", "--key-out", renewedKey, "--out", renewed)
	rc := readCert(t, renewed)
	if rc.Subject.String() != cert.Subject.String() || rc.SerialNumber.Cmp(cert.SerialNumber) == 0 {
		t.Errorf("renewed %v serial %x from %v serial %x", rc.Subject, rc.SerialNumber, cert.Subject, cert.SerialNumber)
	}
	// A re-enrollment that changes the subject is forbidden (RFC 7030 §4.2.2); the IDevID
	// (not issued by us) may not re-enroll at all.
	if _, errOut, code := cli(ctx, "est", "reenroll", "--server", s.url(""), "--explicit-ta", ta, "--cert", renewed, "--key", renewedKey,
		"--subject", "CN=someone-else"); code == 0 || !strings.Contains(errOut, "4.03") {
		t.Errorf("reenroll with another subject: exit %d %s", code, errOut)
	}
	if _, errOut, code := cli(ctx, append([]string{"est", "reenroll", "--server", s.url(""), "--explicit-ta", ta}, idevid...)...); code == 0 || !strings.Contains(errOut, "4.0") {
		t.Errorf("reenroll with the IDevID: exit %d %s", code, errOut)
	}

	// Server-side key generation via /skc.
	skKey, skCert := filepath.Join(dir, "sk.key"), filepath.Join(dir, "sk.pem")
	est(append([]string{"serverkeygen", "--server", s.url("sensors"), "--explicit-ta", ta, "--accept", "cert",
		"--subject", "CN=sensor-7", "--key-out", skKey, "--out", skCert}, idevid...)...)
	if c := readCert(t, skCert); c.Subject.CommonName != "sensor-7" {
		t.Errorf("serverkeygen subject %v", c.Subject)
	}

	// No client certificate, or one we do not trust: the handshake fails.
	if _, errOut, code := cli(ctx, "est", "cacerts", "--server", s.url(""), "--trust", d.Root, "--timeout", "15s"); code == 0 {
		t.Errorf("cacerts without a client certificate succeeded: %s", errOut)
	}
	strangerCert, strangerKey := filepath.Join(dir, "stranger.pem"), filepath.Join(dir, "stranger.key")
	need(t, "openssl")
	mustRun(t, "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", strangerKey, "-out", strangerCert, "-subj", "/CN=demo-device-0001", "-days", "2")
	if _, errOut, code := cli(ctx, "est", "cacerts", "--server", s.url(""), "--trust", d.Root, "--timeout", "15s",
		"--cert", strangerCert, "--key", strangerKey); code == 0 {
		t.Errorf("cacerts with an untrusted client certificate succeeded: %s", errOut)
	}
}

// TestManualApproval: a request under a manual-approval profile is pending (5.03 + Max-Age),
// survives a server restart, and is answered after `coapca ca approve` run while the server
// runs; a rejected one fails.
func TestManualApproval(t *testing.T) {
	dir := t.TempDir()
	s := testServerAt(t, dir)
	d := s.data.Paths
	ctx := context.Background()
	work := t.TempDir()
	csr := filepath.Join(work, "csr.der")
	makeCSR(t, csr, "CN=demo-device-0001")
	enroll := func(s *served, wait string) (string, int) {
		_, errOut, code := cli(ctx, "est", "enroll", "--server", s.url("manual"), "--trust", d.Root,
			"--cert", d.Device, "--key", d.DeviceKey, "--csr", csr, "--wait", wait, "--out", filepath.Join(work, "cert.pem"))
		return errOut, code
	}
	// First attempt: pending, the client gives up at once (--wait 0).
	if errOut, code := enroll(s, "0s"); code == 0 || !strings.Contains(errOut, "pending") {
		t.Fatalf("first enroll: exit %d %s", code, errOut)
	}
	pend := listPending(t, dir)
	if len(pend) != 1 {
		t.Fatalf("%d pending requests, want 1", len(pend))
	}
	// The identical CSR again: the same pending entry.
	enroll(s, "0s")
	if p2 := listPending(t, dir); len(p2) != 1 || p2[0] != pend[0] {
		t.Fatalf("resend created another pending entry: %v vs %v", p2, pend)
	}

	// Restart the server on the same directory: the request is still pending.
	s.Close()
	s = testServerAt(t, dir)
	if p := listPending(t, dir); len(p) != 1 || p[0] != pend[0] {
		t.Fatalf("after restart: %v", p)
	}

	// The device waits (following Max-Age) while the operator approves from another "process".
	done := make(chan string, 1)
	told := s.CoAPSStats().Responses["5.03"]
	go func() {
		errOut, code := enroll(s, "30s")
		done <- fmt.Sprintf("%d %s", code, errOut)
	}()
	// Approve once the device has been told to wait (5.03 + Max-Age, RFC 9148 §5).
	waitUntil(t, 30*time.Second, "the device to be told its request is pending", func() bool {
		return s.CoAPSStats().Responses["5.03"] > told
	})
	if out, errOut, code := cli(ctx, "ca", "approve", pend[0], "--data", dir); code != 0 {
		t.Fatalf("ca approve: %d %s %s", code, out, errOut)
	}
	select {
	case res := <-done:
		if !strings.HasPrefix(res, "0 ") || !strings.Contains(res, "pending: /sen not ready") {
			t.Fatalf("enroll after approval: %s", res)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("enroll did not finish after approval")
	}
	readCert(t, filepath.Join(work, "cert.pem"))
	if out, _, _ := cli(ctx, "ca", "list", "--data", dir); !strings.Contains(out, "demo-device-0001") {
		t.Errorf("ca list lacks the approved certificate:\n%s", out)
	}

	// A second device request, rejected.
	makeCSR(t, csr, "CN=demo-device-0001,O=Other")
	enroll(s, "0s")
	var id string
	for _, p := range listPending(t, dir) {
		if p != pend[0] {
			id = p
		}
	}
	if _, errOut, code := cli(ctx, "ca", "reject", id, "--data", dir, "--why", "unknown device"); code != 0 {
		t.Fatal(errOut)
	}
	if errOut, code := enroll(s, "0s"); code == 0 || !strings.Contains(errOut, "unknown device") {
		t.Errorf("rejected enroll: exit %d %s", code, errOut)
	}
}

// TestSlowIssuanceSeparateResponse: when issuance takes longer than coap.separate_after (here
// 1 µs, so every request counts as slow), the device gets an empty ACK at once and the
// certificate in a separate confirmable response (RFC 7252 §5.2.2), as libcoap's own log shows.
func TestSlowIssuanceSeparateResponse(t *testing.T) {
	need(t, "coap-client-openssl", "openssl")
	// A negative separate_after answers every confirmable request separately: deterministic,
	// where a tiny positive one raced the handler (the race detector's scheduling lost it).
	s := testServerAt(t, t.TempDir(), func(c *config.Config) { c.CoAP.SeparateAfter = -1 })
	d := s.data.Paths
	dir := t.TempDir()
	csr, p7 := filepath.Join(dir, "csr.der"), filepath.Join(dir, "cert.p7")
	makeCSR(t, csr, "CN=demo-device-0001")
	out := mustRun(t, "coap-client-openssl", "-v", "7", "-B", "20", "-m", "post", "-t", "286", "-f", csr, "-o", p7,
		"-c", d.Device, "-j", d.DeviceKey, "-C", d.Root, s.coapsURL+"/.well-known/est/sen")
	var sawEmptyACK, sawCON bool
	for _, l := range strings.Split(out, "\n") {
		sawEmptyACK = sawEmptyACK || strings.Contains(l, "t:ACK c:0.00") && !sawCON
		sawCON = sawCON || strings.Contains(l, "t:CON c:2.04")
	}
	if !sawEmptyACK || !sawCON {
		t.Fatalf("no empty ACK followed by a CON 2.04 in libcoap's log:\n%s", out)
	}
	mustRun(t, "openssl", "pkcs7", "-inform", "DER", "-in", p7, "-print_certs")
}

func listPending(t *testing.T, dir string) []string {
	t.Helper()
	out, errOut, code := cli(context.Background(), "ca", "pending", "--data", dir)
	if code != 0 {
		t.Fatal(errOut)
	}
	var ids []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
		if f := strings.Fields(l); len(f) > 1 && f[1] == "pending" {
			ids = append(ids, f[0])
		}
	}
	return ids
}

func makeCSR(t *testing.T, path, subject string) {
	t.Helper()
	need(t, "openssl")
	subj := "/" + strings.ReplaceAll(subject, ",", "/")
	mustRun(t, "openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", path+".key", "-subj", subj, "-outform", "DER", "-out", path)
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
