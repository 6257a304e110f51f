package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"coapca/cmp"
	"coapca/coap"
	"coapca/internal/config"
	"coapca/internal/server"
	"coapca/internal/testtool"
)

// cmpFixtures are OpenSSL-made test certificates (Test Root CA, CMP Server, Device 1).
var cmpFixtures, _ = filepath.Abs(filepath.Join("..", "..", "cmp", "testdata", "openssl"))

// cmpTestServer starts coapca like testServerAt (coaps, coap, the "manual", "pop" and
// "sensors" profiles) plus the HTTP listener.
func cmpTestServer(t *testing.T) *served {
	t.Helper()
	return testServerAt(t, t.TempDir(), func(c *config.Config) { c.Listen.HTTP = "127.0.0.1:0" })
}

// opensslCMP runs `openssl cmp -config "" ARGS` in dir.
func opensslCMP(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	return testtool.OpenSSLCMP(t, 30*time.Second, dir, args...)
}

// TestCMPOpenSSLClient: OpenSSL 3.0's CMP client against our HTTP front door (RFC 9811):
// every Lightweight CMP Profile operation it has, including polling under manual approval.
func TestCMPOpenSSLClient(t *testing.T) {
	testtool.NeedOpenSSLCMP(t)
	s := cmpTestServer(t)
	d := s.data.Paths
	work := t.TempDir()
	host := strings.TrimPrefix(s.httpURL, "http://")
	secret := "pass:" + string(s.data.CMPSecret)
	for _, k := range []string{"k1", "k2", "k3", "k4"} {
		mustRun(t, "openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", filepath.Join(work, k+".pem"))
	}
	mustRun(t, "openssl", "req", "-new", "-key", filepath.Join(work, "k4.pem"), "-subj", "/CN=p10", "-out", filepath.Join(work, "p10.csr"))
	srv := []string{"-server", host, "-msg_timeout", "10", "-total_timeout", "30"}
	mac := append(srv, "-ref", "demo", "-secret", secret)
	device := append(srv, "-cert", d.Device, "-key", d.DeviceKey, "-trusted", d.Root)
	sig := func(cert, key string) []string { return append(srv, "-cert", cert, "-key", key, "-trusted", d.Root) }
	cat := func(a ...[]string) []string {
		var out []string
		for _, x := range a {
			out = append(out, x...)
		}
		return out
	}
	steps := []struct {
		name string
		args []string
		want []string // in the output
		cert string   // certificate that must come out
		fail bool     // openssl must exit non-zero
	}{
		{"ir PBM", cat(mac, []string{"-cmd", "ir", "-path", "/.well-known/cmp", "-newkey", "k1.pem", "-subject", "/CN=pbm", "-certout", "pbm.pem"}), []string{"received PKICONF"}, "pbm.pem", false},
		{"ir signed by the IDevID", cat(device, []string{"-cmd", "ir", "-path", "/.well-known/cmp/initialization", "-newkey", "k2.pem", "-subject", "/CN=dev", "-certout", "dev.pem", "-cacertsout", "capubs.pem"}), []string{"received PKICONF"}, "dev.pem", false},
		{"cr", cat(device, []string{"-cmd", "cr", "-path", "/.well-known/cmp/p/sensors/certification", "-newkey", "k3.pem", "-subject", "/CN=dev-cr", "-certout", "cr.pem"}), []string{"received PKICONF"}, "cr.pem", false},
		// Attack (issue 8, item 5): a certificate this CA issued asks for another subject.
		{"cr by the LDevID for another subject: rejected", cat(sig("dev.pem", "k2.pem"), []string{"-cmd", "cr", "-path", "/.well-known/cmp/p/sensors/certification", "-newkey", "k3.pem", "-subject", "/CN=dev-cr", "-certout", "cr2.pem"}), []string{"notAuthorized"}, "", true},
		{"p10cr", cat(device, []string{"-cmd", "p10cr", "-path", "/.well-known/cmp/pkcs10", "-csr", "p10.csr", "-certout", "p10.pem"}), []string{"received PKICONF"}, "p10.pem", false},
		{"kur", cat(sig("dev.pem", "k2.pem"), []string{"-cmd", "kur", "-path", "/.well-known/cmp/keyupdate", "-newkey", "k4.pem", "-certout", "kur.pem"}), []string{"received PKICONF"}, "kur.pem", false},
		{"implicit confirm", cat(mac, []string{"-cmd", "ir", "-path", "/.well-known/cmp", "-newkey", "k1.pem", "-subject", "/CN=implicit", "-implicit_confirm", "-certout", "impl.pem"}), []string{"received IP"}, "impl.pem", false},
		{"genm caCerts", cat(sig("kur.pem", "k4.pem"), []string{"-cmd", "genm", "-path", "/.well-known/cmp/getcacerts", "-infotype", "caCerts"}), []string{"id-it-caCerts"}, "", false},
		{"genm crl", cat(mac, []string{"-cmd", "genm", "-path", "/.well-known/cmp", "-infotype", "currentCRL"}), []string{"id-it-currentCRL"}, "", false},
		{"rr", cat(sig("kur.pem", "k4.pem"), []string{"-cmd", "rr", "-path", "/.well-known/cmp/revocation", "-oldcert", "kur.pem", "-revreason", "1"}), []string{"revocation accepted"}, "", false},
		{"rr again: rejected", cat(sig("p10.pem", "k4.pem"), []string{"-cmd", "rr", "-path", "/.well-known/cmp", "-oldcert", "kur.pem"}), []string{"notAuthorized"}, "", true},
		{"wrong secret: error", cat(srv, []string{"-ref", "demo", "-secret", "pass:wrong", "-trusted", d.Root, "-cmd", "ir", "-path", "/.well-known/cmp", "-newkey", "k1.pem", "-subject", "/CN=x", "-certout", "x.pem"}), []string{"badMessageCheck"}, "", true},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			out, err := opensslCMP(t, work, st.args...)
			if (err != nil) != st.fail {
				t.Fatalf("openssl cmp: %v\n%s", err, out)
			}
			for _, w := range st.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if st.cert != "" {
				c := readCert(t, filepath.Join(work, st.cert))
				if _, err := c.Verify(x509.VerifyOptions{Roots: pool(s.data.Root), Intermediates: pool(s.data.IssuingCA),
					KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
					t.Errorf("issued certificate: %v", err)
				}
			}
		})
	}
	// The CRL reflects the rr.
	kur := readCert(t, filepath.Join(work, "kur.pem"))
	der, err := s.auth.CRL(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	rl, _ := x509.ParseRevocationList(der)
	revoked := false
	for _, e := range rl.RevokedCertificateEntries {
		revoked = revoked || e.SerialNumber.Cmp(kur.SerialNumber) == 0 && e.ReasonCode == 1
	}
	if !revoked {
		t.Error("the CRL does not list the certificate revoked by rr")
	}

	// Polling (RFC 9483 §4.4): the manual profile answers waiting; OpenSSL polls while the
	// operator approves.
	t.Run("polling", func(t *testing.T) {
		done := make(chan string, 1)
		go func() {
			out, err := opensslCMP(t, work, cat(mac, []string{"-cmd", "ir", "-path", "/.well-known/cmp/p/manual", "-newkey", "k3.pem",
				"-subject", "/CN=slow", "-certout", "slow.pem"})...)
			done <- fmt.Sprintf("%v\n%s", err, out)
		}()
		approveFirstPending(t, s)
		select {
		case res := <-done:
			if !strings.HasPrefix(res, "<nil>") || !strings.Contains(res, "POLLREP") {
				t.Fatalf("openssl with polling: %s", res)
			}
		case <-time.After(40 * time.Second):
			t.Fatal("openssl did not finish after approval")
		}
		readCert(t, filepath.Join(work, "slow.pem"))
	})
}

// approveFirstPending waits until the client has polled a pending request once (RFC 9483
// §4.4: the server's metrics count the pollReq it answered) and approves it through the
// authority.
func approveFirstPending(t *testing.T, s *served) {
	t.Helper()
	waitUntil(t, 30*time.Second, "the client to poll a pending request", func() bool { return servedCount(t, s, "pollReq") > 0 })
	ids := listPending(t, s.data.Dir)
	if len(ids) == 0 {
		t.Fatal("polled, but no pending request")
	}
	if err := s.auth.Approve(context.Background(), ids[0]); err != nil {
		t.Error(err)
	}
}

// servedCount returns how many requests of function (a CMP body type such as "pollReq", or an EST
// operation) the server has answered over every transport, from its Prometheus metrics.
func servedCount(t *testing.T, s *served, function string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + s.metricsAddr.String() + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	var n float64
	for _, l := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(l, "coapca_requests_total{") || !strings.Contains(l, `function="`+function+`"`) {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(l[strings.LastIndexByte(l, ' ')+1:], &v); err != nil {
			t.Fatalf("metrics line %q: %v", l, err)
		}
		n += v
	}
	return n
}

// waitUntil polls cond until it holds, failing the test with what after d. For state that
// another goroutine or process reaches with no event the test can wait on (a client inside
// the CLI, an external openssl); bounded by d instead of being a fixed sleep.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting after %v for %s", d, what)
		}
	}
}

func pool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

// TestCMPOverCoAPWithLibcoap: requests built offline by `openssl cmp -use_mock_srv -reqout`
// are POSTed over coap:// by libcoap's coap-client (Content-Format 259, block-wise) to our
// server, and OpenSSL validates each answer with -rspin (RFC 9482).
func TestCMPOverCoAPWithLibcoap(t *testing.T) {
	testtool.NeedOpenSSLCMP(t)
	need(t, "coap-client-notls")
	s := cmpTestServer(t)
	d := s.data.Paths
	work := t.TempDir()
	mustRun(t, "openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", filepath.Join(work, "k.pem"))
	secret := "pass:" + string(s.data.CMPSecret)
	tests := []struct {
		name, path, block string
		prot              []string
	}{
		{"PBM", "/.well-known/cmp", "1024", []string{"-ref", "demo", "-secret", secret}},
		{"signature, block size 64", "/.well-known/cmp/p/sensors/ir", "64", []string{"-cert", d.Device, "-key", d.DeviceKey, "-trusted", d.Root}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, rsp := filepath.Join(work, "req.der"), filepath.Join(work, "rsp.der")
			// The mock server only makes -reqout possible offline; its answer is discarded.
			mock := []string{"-use_mock_srv", "-srv_ref", "x", "-srv_secret", "pass:x", "-rsp_cert", d.Device}
			args := append(append([]string{"-cmd", "ir", "-newkey", "k.pem", "-subject", "/CN=over-coap", "-certout", os.DevNull,
				"-reqout", req}, tc.prot...), mock...)
			if out, err := opensslCMP(t, work, args...); err != nil && !fileExists(req) {
				t.Fatalf("building the request: %v\n%s", err, out)
			}
			out, err := run(t, 30*time.Second, "coap-client-notls", "-m", "post", "-t", "259", "-A", "259", "-b", tc.block,
				"-f", req, "-o", rsp, s.coapURL+tc.path)
			if err != nil {
				t.Fatalf("coap-client: %v\n%s", err, out)
			}
			args = append([]string{"-cmd", "ir", "-newkey", "k.pem", "-subject", "/CN=over-coap", "-certout", "coap.pem",
				"-rspin", rsp, "-disable_confirm"}, tc.prot...)
			if out, err := opensslCMP(t, work, args...); err != nil {
				t.Fatalf("openssl rejects our answer: %v\n%s", err, out)
			}
			if c := readCert(t, filepath.Join(work, "coap.pem")); c.Subject.CommonName != "over-coap" {
				t.Errorf("subject %s", c.Subject)
			}
		})
	}
	// Discovery (RFC 9482 §2.2).
	out, err := run(t, 10*time.Second, "coap-client-notls", "-m", "get", s.coapURL+"/.well-known/core?ct=259")
	if err != nil || !strings.Contains(out, "</.well-known/cmp>;ct=259") || !strings.Contains(out, "</.well-known/cmp/ann>;ct=259;obs") {
		t.Errorf("discovery: %v\n%s", err, out)
	}
}

// TestCMPCLIHelper runs the coapca command line when the test binary is re-executed with
// COAPCA_CLI_HELPER=1 (inside a network namespace, beside OpenSSL's mock server).
func TestCMPCLIHelper(t *testing.T) {
	if os.Getenv("COAPCA_CLI_HELPER") != "1" {
		t.Skip("helper process only")
	}
	args := os.Args
	for i, a := range args {
		if a == "--" {
			args = args[i+1:]
			break
		}
	}
	os.Exit(Main(context.Background(), args, os.Stdout, os.Stderr))
}

// TestCMPClientAgainstOpenSSLMock: our CLI client against OpenSSL's mock CMP server. The mock
// binds every interface, so it runs with the client in a fresh network namespace
// (`unshare -n`) with only loopback up.
func TestCMPClientAgainstOpenSSLMock(t *testing.T) {
	testtool.NeedOpenSSLCMP(t)
	need(t, "unshare", "ip")
	if out, err := exec.Command("unshare", "-n", "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Skipf("unshare -n is not permitted here (%v: %s); the mock server would listen on every interface", err, bytes.TrimSpace(out))
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const secret = "s3cret" // the fixture secret
	tests := []struct {
		name   string
		mock   string   // mock server flags
		client []string // coapca command lines (one per line of the script); URL appended
		want   []string
	}{
		{"MAC: ir with polling, p10cr, genm",
			"-srv_ref srv -srv_secret pass:" + secret + " -rsp_cert new.pem -poll_count 1 -check_after 1",
			[]string{
				"cmp ir --ref demo --secret " + secret + " --trust ca.pem --newkey new.key --subject CN=Device-1 --out ir.pem",
				"cmp p10cr --ref demo --secret " + secret + " --trust ca.pem --csr new.csr --out p10.pem",
				"cmp genm --ref demo --secret " + secret + " --info cacerts",
			},
			[]string{"waiting:", "enrolled: CN=Device 1", "caCerts: 0 certificate(s)"}},
		{"signature: cr, kur, rr",
			"-srv_cert srv.pem -srv_key srv.key -srv_trusted ca.pem -rsp_cert new.pem",
			[]string{
				"cmp cr --cert cli.pem --key cli.key --trust ca.pem --srvcert srv.pem --newkey new.key --subject CN=Device-1 --out cr.pem",
				"cmp kur --cert new.pem --key new.key --trust ca.pem --srvcert srv.pem --newkey new.key --out kur.pem",
				"cmp rr --cert new.pem --key new.key --trust ca.pem --srvcert srv.pem --reason 4",
			},
			[]string{"confirmed with certConf", "revoked: CN=Device 1"}},
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
			fmt.Fprintf(&script, "set -e\nip link set lo up\n")
			fmt.Fprintf(&script, "openssl cmp -config '' -port 0 -max_msgs 20 %s >mock.log 2>&1 &\n", tc.mock)
			script.WriteString("for i in $(seq 200); do grep -q ACCEPT mock.log && break; sleep 0.05; done\n")
			script.WriteString("PORT=$(sed -n 's/.*ACCEPT .*:\\([0-9]*\\) PID.*/\\1/p' mock.log | head -1)\n")
			for _, c := range tc.client {
				fmt.Fprintf(&script, "COAPCA_CLI_HELPER=1 %q -test.run='^TestCMPCLIHelper$' -- %s --server http://127.0.0.1:$PORT/pkix/ --timeout 20s\n", self, c)
			}
			out, err := runInNetns(work, 60*time.Second, script.String())
			if err != nil {
				log, _ := os.ReadFile(filepath.Join(work, "mock.log"))
				t.Fatalf("%v\n%s\nmock server:\n%s", err, out, log)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

// TestCMPClientServer: our client against our server over coap://, coaps:// and http:// for
// what OpenSSL 3.0 cannot do: PBMAC1, genm contents, and announcements (RFC 9482 §2.6).
func TestCMPClientServer(t *testing.T) {
	s := cmpTestServer(t)
	d := s.data.Paths
	ctx := context.Background()
	work := t.TempDir()
	for _, srv := range []string{s.coapURL, s.coapsURL + "/.well-known/cmp/p/sensors", s.httpURL} {
		scheme := strings.SplitN(srv, ":", 2)[0]
		t.Run(scheme, func(t *testing.T) {
			file := func(n string) string { return filepath.Join(work, scheme+"-"+n) }
			// ir signed by the device; over coaps the device is also the DTLS identity.
			if _, errOut, code := cli(ctx, "cmp", "ir", "--server", srv, "--cert", d.Device, "--key", d.DeviceKey, "--trust", d.Root,
				"--subject", "CN=dev", "--san", "dns:dev.example", "--key-out", file("k1"), "--out", file("c1"), "--ca-out", file("ca")); code != 0 {
				t.Fatalf("ir: %s", errOut)
			}
			if c := readCert(t, file("c1")); len(c.DNSNames) != 1 || c.DNSNames[0] != "dev.example" {
				t.Errorf("SAN %v", c.DNSNames)
			}
			if !strings.HasPrefix(srv, "coaps") {
				// PBMAC1 (RFC 9481 §6.1.2) with implicit confirmation.
				if _, errOut, code := cli(ctx, "cmp", "ir", "--server", srv, "--ref", "demo", "--secret-file", d.CMPSecret, "--pbmac1",
					"--subject", "CN=pbmac1", "--implicit-confirm", "--out", file("c2"), "--key-out", file("k2")); code != 0 || !strings.Contains(errOut, "implicitly confirmed") {
					t.Fatalf("ir PBMAC1: %s", errOut)
				}
			}
			// genm contents.
			_, errOut, code := cli(ctx, "cmp", "genm", "--server", srv, "--cert", file("c1"), "--key", file("k1"), "--trust", d.Root,
				"--info", "cacerts", "--info", "rootupdate", "--info", "template", "--info", "crls", "--out", file("genm.pem"))
			if code != 0 {
				t.Fatalf("genm: %s", errOut)
			}
			for _, w := range []string{"caCerts: 2 certificate(s)", "no root CA update", "keySpec 1.3.6.1.5.5.7.5.1.11", "crls: 1 CRL(s)"} {
				if !strings.Contains(errOut, w) {
					t.Errorf("genm output lacks %q:\n%s", w, errOut)
				}
			}
			// kur, then rr of the renewed certificate.
			if _, errOut, code := cli(ctx, "cmp", "kur", "--server", srv, "--cert", file("c1"), "--key", file("k1"), "--trust", d.Root,
				"--key-out", file("k3"), "--out", file("c3")); code != 0 {
				t.Fatalf("kur: %s", errOut)
			}
			if _, errOut, code := cli(ctx, "cmp", "rr", "--server", srv, "--cert", file("c3"), "--key", file("k3"), "--trust", d.Root, "--reason", "5"); code != 0 {
				t.Fatalf("rr: %s", errOut)
			}
		})
	}

	// Announcements: observe /ann over coap://, revoke over HTTP, receive rann and crlann.
	c, err := coap.Dial(ctx, s.coapURL, coap.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	anns := make(chan *cmp.Message, 10)
	octx, cancel := context.WithCancel(ctx)
	defer cancel()
	registered := make(chan struct{})
	var once sync.Once
	go c.Observe(octx, "/.well-known/cmp/ann", func(r *coap.Response) {
		once.Do(func() { close(registered) })
		if len(r.Payload) == 0 {
			return
		}
		if m, err := cmp.Parse(r.Payload); err == nil {
			anns <- m
		}
	})
	// The server registers an observer before it answers the registration (coap.Server).
	select {
	case <-registered:
	case <-time.After(10 * time.Second):
		t.Fatal("no answer to the observe registration")
	}
	if n := s.Observers("/.well-known/cmp/ann"); n != 1 {
		t.Fatalf("%d observers after the registration was answered", n)
	}
	// A fresh certificate (cann), then its revocation (rann, crlann).
	cert, key := filepath.Join(work, "ann.pem"), filepath.Join(work, "ann.key")
	if _, errOut, code := cli(ctx, "cmp", "ir", "--server", s.httpURL, "--ref", "demo", "--secret-file", d.CMPSecret,
		"--subject", "CN=announced", "--out", cert, "--key-out", key); code != 0 {
		t.Fatal(errOut)
	}
	if _, errOut, code := cli(ctx, "cmp", "rr", "--server", s.httpURL, "--cert", cert, "--key", key, "--trust", d.Root, "--reason", "1"); code != 0 {
		t.Fatal(errOut)
	}
	serial := readCert(t, cert).SerialNumber
	var got []cmp.BodyType
	for len(got) < 3 {
		select {
		case m := <-anns:
			if err := m.VerifySignature(m.ProtectionCert()); err != nil || !m.ProtectionCert().Equal(s.data.CMPSigner) {
				t.Errorf("announcement not signed by the CMP signer: %v", err)
			}
			got = append(got, m.Body.Type())
			if ra, ok := m.Body.(*cmp.RevAnn); ok && ra.CertID.Serial.Cmp(serial) != 0 {
				t.Errorf("rann for serial %x, want %x", ra.CertID.Serial, serial)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("announcements received: %v", got)
		}
	}
	// Observe notifications carry only the newest state (RFC 7641 §4.5.2), so the cann may be
	// superseded; the rann or crlann must arrive last.
	if last := got[len(got)-1]; last != cmp.TypeCRLAnn && last != cmp.TypeRAnn {
		t.Errorf("announcements %v", got)
	}

	// A revocation by `coapca ca revoke` (as from another process) is announced too, once the
	// server polls the store.
	other := readCert(t, filepath.Join(work, "coap-c2"))
	if out, errOut, code := cli(ctx, "ca", "revoke", other.SerialNumber.Text(16), "--data", s.data.Dir, "--reason", "4"); code != 0 {
		t.Fatalf("ca revoke: %s %s", out, errOut)
	}
	// The rann is followed at once by a crlann, and an observer is only promised the newest
	// state (RFC 7641 §4.5.2): either one naming the certificate shows the announcement.
	for deadline := time.After(4 * server.RevocationPoll); ; {
		select {
		case m := <-anns:
			if ra, ok := m.Body.(*cmp.RevAnn); ok && ra.CertID.Serial.Cmp(other.SerialNumber) == 0 {
				return
			}
			if ca, ok := m.Body.(*cmp.CRLAnn); ok && len(ca.CRLs) > 0 {
				if crl, err := x509.ParseRevocationList(ca.CRLs[0]); err == nil {
					for _, e := range crl.RevokedCertificateEntries {
						if e.SerialNumber.Cmp(other.SerialNumber) == 0 {
							return
						}
					}
				}
			}
		case <-deadline:
			t.Fatal("no rann or crlann for the certificate revoked with coapca ca revoke")
		}
	}
}

// TestCMPClientPolling: our client polls a manual-approval profile with progress output.
func TestCMPClientPolling(t *testing.T) {
	s := cmpTestServer(t)
	d := s.data.Paths
	done := make(chan string, 1)
	go func() {
		_, errOut, code := cli(context.Background(), "cmp", "ir", "--server", s.coapURL+"/.well-known/cmp/p/manual", "--ref", "demo",
			"--secret-file", d.CMPSecret, "--subject", "CN=slow", "--out", os.DevNull, "--wait", "30s")
		done <- fmt.Sprintf("%d %s", code, errOut)
	}()
	approveFirstPending(t, s)
	select {
	case res := <-done:
		if !strings.HasPrefix(res, "0 ") || !strings.Contains(res, "waiting: the request awaits approval") {
			t.Fatalf("ir with polling: %s", res)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("the client did not finish after approval")
	}
}

// TestCMPHTTP10KeepAlive: an HTTP/1.0 client asking for keep-alive gets two CMP answers on
// one connection.
func TestCMPHTTP10KeepAlive(t *testing.T) {
	s := cmpTestServer(t)
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.httpURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rd := bufio.NewReader(conn)
	body := []byte{0x30, 0x03, 0x02, 0x01, 0x02} // not a PKIMessage: a CMP error answer
	for i := range 2 {
		fmt.Fprintf(conn, "POST /.well-known/cmp HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nContent-Type: application/pkixcmp\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		rsp, err := http.ReadResponse(rd, nil)
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		b, _ := io.ReadAll(rsp.Body)
		rsp.Body.Close()
		if rsp.StatusCode != http.StatusOK || rsp.Header.Get("Content-Type") != "application/pkixcmp" {
			t.Fatalf("answer %d: %s %s", i, rsp.Status, rsp.Header.Get("Content-Type"))
		}
		m, err := cmp.Parse(b)
		if err != nil || m.Body.Type() != cmp.TypeError {
			t.Fatalf("answer %d: %v", i, err)
		}
		if rsp.Close {
			t.Fatalf("answer %d closes the connection", i)
		}
	}
}
