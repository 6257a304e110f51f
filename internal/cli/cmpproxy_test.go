package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"coapca/authority"
	"coapca/internal/config"
	"coapca/internal/datadir"
	"coapca/internal/testpki"
	"coapca/internal/testtool"
)

// cmpRequest is one `openssl cmp` exchange: the client's arguments, built offline with
// -reqout, carried over CoAP by coap-client, and checked offline with -rspin.
type cmpRequest struct {
	name string
	args []string // client arguments (no -reqout / -rspin)
}

// buildRequest writes the request of r into dir/<name>.req.der with openssl's in-process mock
// (whose answer is discarded).
func buildRequest(t *testing.T, dir string, r cmpRequest, mock []string) string {
	t.Helper()
	req := filepath.Join(dir, r.name+".req.der")
	args := append(append(append([]string{}, r.args...), "-reqout", req, "-disable_confirm", "-use_mock_srv"), mock...)
	if out, err := opensslCMP(t, dir, args...); err != nil && !fileExists(req) {
		t.Fatalf("%s: building the request: %v\n%s", r.name, err, out)
	}
	return req
}

// checkResponse has openssl validate the answer to r (protection, body, certificate).
func checkResponse(t *testing.T, dir string, r cmpRequest) {
	t.Helper()
	rsp := filepath.Join(dir, r.name+".rsp.der")
	args := append(append([]string{}, r.args...), "-rspin", rsp, "-disable_confirm")
	out, err := opensslCMP(t, dir, args...)
	switch {
	case err != nil:
		t.Errorf("%s: openssl rejects the answer relayed by the registrar: %v\n%s", r.name, err, out)
	case !strings.Contains(out, "actually using "+rsp):
		t.Errorf("%s: openssl did not read the relayed answer:\n%s", r.name, out)
	}
}

// TestCMPRegistrarTransparentOpenSSLMock: `openssl cmp` requests made with -reqout (ir, p10cr,
// genm MAC-protected; cr, kur, rr, genm signed) go over coap:// through `coapca serve
// --cmp-upstream` to OpenSSL's mock CMP server, and OpenSSL validates each relayed answer with
// -rspin (RFC 9482 §3: the proxy changes neither message). The mock binds every interface, so
// the mock and the registrar run in a fresh network namespace with only loopback up.
func TestCMPRegistrarTransparentOpenSSLMock(t *testing.T) {
	testtool.NeedOpenSSLCMP(t)
	need(t, "unshare", "ip", "coap-client-notls")
	if out, err := exec.Command("unshare", "-n", "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("unshare -n is not permitted in CI: %v: %s", err, bytes.TrimSpace(out))
		}
		t.Skipf("unshare -n is not permitted here (%v: %s); the mock server would listen on every interface", err, bytes.TrimSpace(out))
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const secret = "pass:s3cret" // the fixture secret
	mac := []string{"-ref", "1234", "-secret", secret}
	sig := []string{"-cert", "cli.pem", "-key", "cli.key", "-trusted", "ca.pem"}
	cat := func(a ...[]string) []string {
		var out []string
		for _, x := range a {
			out = append(out, x...)
		}
		return out
	}
	tests := []struct {
		name string
		mock []string
		reqs []cmpRequest
	}{
		{"MAC", []string{"-srv_ref", "srv", "-srv_secret", secret, "-rsp_cert", "new.pem"}, []cmpRequest{
			{"ir", cat([]string{"-cmd", "ir", "-newkey", "new.key", "-subject", "/CN=Device 1", "-certout", "ir.pem"}, mac)},
			{"p10cr", cat([]string{"-cmd", "p10cr", "-csr", "new.csr", "-certout", "p10cr.pem"}, mac)},
			{"genm", cat([]string{"-cmd", "genm"}, mac)},
		}},
		{"signature", []string{"-srv_cert", "srv.pem", "-srv_key", "srv.key", "-srv_trusted", "ca.pem", "-rsp_cert", "new.pem"}, []cmpRequest{
			{"cr", cat([]string{"-cmd", "cr", "-newkey", "new.key", "-subject", "/CN=Device 1", "-certout", "cr.pem"}, sig)},
			{"kur", cat([]string{"-cmd", "kur", "-oldcert", "new.pem", "-newkey", "new.key", "-certout", "kur.pem"}, sig)},
			{"rr", cat([]string{"-cmd", "rr", "-oldcert", "new.pem"}, sig)},
			{"genm", cat([]string{"-cmd", "genm"}, sig)},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			work := t.TempDir()
			for _, f := range []string{"ca.pem", "srv.pem", "srv.key", "cli.pem", "cli.key", "new.pem", "new.key", "new.csr"} {
				b, err := os.ReadFile(filepath.Join(cmpFixtures, f))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(work, f), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			var script strings.Builder
			script.WriteString("set -e\nip link set lo up\n")
			fmt.Fprintf(&script, "openssl cmp -config '' -port 0 -max_msgs 20 %s >mock.log 2>&1 &\n", shellJoin(tc.mock))
			script.WriteString("for i in $(seq 200); do grep -q ACCEPT mock.log && break; sleep 0.05; done\n")
			script.WriteString("PORT=$(sed -n 's/.*ACCEPT .*:\\([0-9]*\\) PID.*/\\1/p' mock.log | head -1)\n")
			fmt.Fprintf(&script, "COAPCA_CLI_HELPER=1 %q -test.run='^TestCMPCLIHelper$' -- serve --data reg --coaps off --coap 127.0.0.1:5683 "+
				"--cmp-upstream http://127.0.0.1:$PORT/pkix/ >serve.log 2>&1 &\n", self)
			script.WriteString("for i in $(seq 600); do grep -q 'CMP over CoAP on' serve.log && break; sleep 0.05; done\n")
			for _, r := range tc.reqs {
				buildRequest(t, work, r, tc.mock)
				fmt.Fprintf(&script, "coap-client-notls -m post -t 259 -A 259 -b 1024 -f %s.req.der -o %s.rsp.der coap://127.0.0.1/.well-known/cmp\n", r.name, r.name)
			}
			if out, err := runInNetns(work, 120*time.Second, script.String()); err != nil {
				mock, _ := os.ReadFile(filepath.Join(work, "mock.log"))
				serve, _ := os.ReadFile(filepath.Join(work, "serve.log"))
				t.Fatalf("%v\n%s\nmock server:\n%s\nregistrar:\n%s", err, out, mock, serve)
			}
			if serve, _ := os.ReadFile(filepath.Join(work, "serve.log")); !bytes.Contains(serve, []byte("cmp registrar")) {
				t.Fatalf("the registrar did not start as one:\n%s", serve)
			}
			for _, r := range tc.reqs {
				checkResponse(t, work, r)
			}
		})
	}
}

// runInNetns runs script with sh in a new network namespace with only loopback (unshare -n),
// in dir and in a process group of its own, and returns its combined output. Every process the
// script started in the background (a mock server, a registrar) is killed when the script
// ends or its timeout does: a non-interactive sh has no job control, so `kill %1` at the end
// of a script did nothing and left them running in their namespace after every run.
func runInNetns(dir string, timeout time.Duration, script string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "-n", "sh", "-c", script)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	out, err := cmd.CombinedOutput()
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // what the script left in the background
	}
	return out, err
}

// shellJoin quotes args for sh.
func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// TestCMPRegistrarRAToCoapca: RA mode (RFC 9483 §5) in front of coapca's own `--http` CMP
// server, which admits only the RA (an `ra` requester rule for the RA's CA, RFC 6402
// id-kp-cmcRA). `openssl cmp` requests made with -reqout, MAC-protected with the registrar's
// demo secret or signed by the registrar's demo device (neither of which the upstream knows),
// go over coap:// to the registrar; OpenSSL validates each answer with -rspin. kur and rr
// signed by the certificate the upstream issued go with their own protection (§5.2.2).
func TestCMPRegistrarRAToCoapca(t *testing.T) {
	testtool.NeedOpenSSLCMP(t)
	need(t, "coap-client-notls")
	work := t.TempDir()
	raCA := testpki.NewCA(t, "Registrar RA CA")
	ra := raCA.RA(t, "coapca registrar")
	raCAFile := testpki.WriteCerts(t, filepath.Join(work, "ra-ca.pem"), raCA.Cert)
	raCert := testpki.WriteCerts(t, filepath.Join(work, "ra.pem"), ra.Chain[:len(ra.Chain)-1]...)
	raKey := testpki.WriteKey(t, filepath.Join(work, "ra.key"), ra.Key)

	ca := testServerAt(t, t.TempDir(), func(c *config.Config) {
		c.Listen.HTTP = "127.0.0.1:0"
		c.Authority.TrustStores = []config.TrustStore{{Name: "ras", CertsFile: raCAFile}}
		c.Authority.Profiles = append(c.Authority.Profiles, config.Profile{Label: "",
			Requesters: []config.RequesterRule{{Kind: "ra", From: []string{"ras"}, MayRevoke: true}}})
	})
	// The registrar's own data directory first, so that its configuration can name its demo
	// manufacturer CA and secret next to the upstream CA's root (for kur and rr).
	regDir := t.TempDir()
	rd, err := datadir.Open(datadir.Options{Dir: regDir})
	if err != nil {
		t.Fatal(err)
	}
	reg := testServerAt(t, regDir, func(c *config.Config) {
		c.Listen.CoAPS = ""
		c.Authority.TrustStores = []config.TrustStore{{Name: "mfr", CertsFile: rd.Paths.ManufacturerCA, AllowExpired: true},
			{Name: "upstream-ca", CertsFile: ca.data.Paths.Root}}
		c.Authority.MACSecrets = []config.MACSecret{{Reference: "demo", SecretFile: rd.Paths.CMPSecret}}
		c.Authority.Profiles = append(c.Authority.Profiles, config.Profile{Label: "",
			Requesters: []config.RequesterRule{{Kind: "idevid", From: []string{"mfr", "upstream-ca"}}, {Kind: "mac", From: []string{"demo"}}}})
		c.CMPUpstream = config.CMPUpstream{URL: ca.httpURL + "/.well-known/cmp", Mode: "ra",
			RACertFile: raCert, RAKeyFile: raKey, ResponseTrustFile: ca.data.Paths.Root}
	})

	root := ca.data.Paths.Root
	for _, k := range []string{"k1", "k2", "k3", "k4"} {
		mustRun(t, "openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", filepath.Join(work, k+".pem"))
	}
	mustRun(t, "openssl", "req", "-new", "-key", filepath.Join(work, "k3.pem"), "-subj", "/CN=p10", "-out", filepath.Join(work, "p10.csr"))
	mac := []string{"-ref", "demo", "-secret", "pass:" + string(rd.CMPSecret), "-trusted", root}
	device := []string{"-cert", rd.Paths.Device, "-key", rd.Paths.DeviceKey, "-trusted", root}
	// The in-process mock only makes -reqout possible offline; its answers are discarded.
	mock := []string{"-srv_ref", "x", "-srv_secret", "pass:x", "-rsp_cert", rd.Paths.Device}
	steps := []cmpRequest{
		{"ir-mac", append([]string{"-cmd", "ir", "-newkey", "k1.pem", "-subject", "/CN=via-ra-mac", "-certout", "ir-mac.pem"}, mac...)},
		{"cr-sig", append([]string{"-cmd", "cr", "-newkey", "k2.pem", "-subject", "/CN=via-ra-sig", "-certout", "cr-sig.pem"}, device...)},
		{"p10cr-mac", append([]string{"-cmd", "p10cr", "-csr", "p10.csr", "-certout", "p10cr.pem"}, mac...)},
		{"genm-sig", append([]string{"-cmd", "genm"}, device...)},
		{"kur-own", []string{"-cmd", "kur", "-oldcert", "cr-sig.pem", "-cert", "cr-sig.pem", "-key", "k2.pem", "-newkey", "k4.pem",
			"-trusted", root, "-certout", "kur.pem", "-extracerts", ca.data.Paths.IssuingCA}},
		{"rr-own", []string{"-cmd", "rr", "-oldcert", "kur.pem", "-cert", "kur.pem", "-key", "k4.pem", "-trusted", root,
			"-extracerts", ca.data.Paths.IssuingCA}},
	}
	for _, r := range steps {
		// Each step may use the certificate an earlier step got.
		req := buildRequest(t, work, r, mock)
		rsp := filepath.Join(work, r.name+".rsp.der")
		if out, err := run(t, 30*time.Second, "coap-client-notls", "-m", "post", "-t", "259", "-A", "259", "-b", "1024",
			"-f", req, "-o", rsp, reg.coapURL+"/.well-known/cmp"); err != nil {
			t.Fatalf("%s: coap-client: %v\n%s", r.name, err, out)
		}
		checkResponse(t, work, r)
		if t.Failed() {
			t.FailNow()
		}
	}
	// The upstream recorded the enrollments as the RA's, the renewal as the device's own.
	for _, f := range []string{"ir-mac.pem", "cr-sig.pem", "p10cr.pem"} {
		c := readCert(t, filepath.Join(work, f))
		rec, err := ca.auth.Certificate(context.Background(), authority.FormatSerial(c.SerialNumber))
		if err != nil {
			t.Fatal(err)
		}
		if rec.RequesterRef != "ra:ras" {
			t.Errorf("%s: upstream recorded requester %q, want the RA", f, rec.RequesterRef)
		}
	}
	// Metrics per upstream: every exchange counted as ok, and in the latency histogram.
	rsp, err := http.Get("http://" + reg.metricsAddr.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(rsp.Body)
	rsp.Body.Close()
	upstream := strings.TrimPrefix(ca.httpURL, "http://")
	for _, want := range []string{
		fmt.Sprintf(`coapca_cmp_upstream_requests_total{result="ok",upstream=%q} %d`, upstream, len(steps)),
		fmt.Sprintf(`coapca_cmp_upstream_duration_seconds_count{upstream=%q} %d`, upstream, len(steps)),
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	kur := readCert(t, filepath.Join(work, "kur.pem"))
	if rec, err := ca.auth.Certificate(context.Background(), authority.FormatSerial(kur.SerialNumber)); err != nil || rec.Op != authority.OpReenroll || !rec.Revoked() {
		t.Errorf("kur certificate: %+v %v (want a revoked re-enrollment)", rec, err)
	}
}
