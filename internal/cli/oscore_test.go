package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"coapca/coap"
	"coapca/internal/config"
	"coapca/internal/pemfile"
	"coapca/store/sqlite"
)

// Pre-shared context of the tests (RFC 8613 Appendix C.1.1 inputs), server's and client's side.
const (
	pskServerYAML = `name: sensor-17
labels: ["", "sensors", "pop", "manual"]
master_secret: 0102030405060708090a0b0c0d0e0f10
master_salt: 9e7ca92223786340
sender_id: "01"
recipient_id: ""
`
	pskClientYAML = `master_secret: 0102030405060708090a0b0c0d0e0f10
master_salt: 9e7ca92223786340
sender_id: ""
recipient_id: "01"
`
)

// testOSCOREServer starts coapca like testServerAt (coaps, coap with EST-oscore, the "manual",
// "pop" and "sensors" profiles) with the pre-shared context files ctxFiles.
func testOSCOREServer(t *testing.T, dir string, ctxFiles ...string) *served {
	t.Helper()
	return testServerAt(t, dir, func(c *config.Config) { c.OSCOREContexts = ctxFiles })
}

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := cli(context.Background(), args...)
	if code != 0 {
		t.Fatalf("coapca %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

func TestESTOSCOREPreShared(t *testing.T) {
	dir := t.TempDir()
	srvCtx := writeFile(t, filepath.Join(dir, "sensor-17.yaml"), pskServerYAML)
	cliCtx := writeFile(t, filepath.Join(dir, "client.yaml"), pskClientYAML)
	s := testOSCOREServer(t, filepath.Join(dir, "data"), srvCtx)
	base := []string{"--server", s.coapURL, "--oscore", cliCtx}

	if out := mustCLI(t, append([]string{"est", "cacerts"}, base...)...); strings.Count(out, "BEGIN CERTIFICATE") != 2 {
		t.Fatalf("cacerts: %s", out)
	}
	if out := mustCLI(t, append([]string{"est", "csrattrs"}, base...)...); out == "" {
		t.Fatal("csrattrs: empty")
	}
	keyOut, certOut := filepath.Join(dir, "k.pem"), filepath.Join(dir, "c.pem")
	mustCLI(t, append([]string{"est", "enroll", "--subject", "CN=psk-device", "--key-out", keyOut, "--out", certOut}, base...)...)
	if chain, err := pemfile.ReadCerts(certOut); err != nil || chain[0].Subject.CommonName != "psk-device" {
		t.Fatalf("enrolled certificate: %v %v", chain, err)
	}
	// Under a label, block size 64 (inner block-wise both ways).
	mustCLI(t, "est", "enroll", "--server", s.coapURL+"/sensors", "--oscore", cliCtx, "--subject", "CN=psk-2", "--block-size", "64")
	out := mustCLI(t, append([]string{"est", "serverkeygen", "--subject", "CN=psk-skg", "--key-out", filepath.Join(dir, "skg.key")}, base...)...)
	if !strings.Contains(out, "BEGIN CERTIFICATE") {
		t.Fatalf("serverkeygen: %s", out)
	}
	// A pre-shared identity holds no certificate of ours: re-enrollment is refused (4.03).
	_, errOut, code := cli(context.Background(), append([]string{"est", "reenroll", "--cert", certOut, "--key", keyOut}, base...)...)
	if code == 0 || !strings.Contains(errOut, "4.03") {
		t.Fatalf("reenroll with a pre-shared context: exit %d: %s", code, errOut)
	}
	// The sequence number is persisted beside the client's context.
	if _, err := os.Stat(cliCtx + ".seq"); err != nil {
		t.Fatal(err)
	}

	// Discovery marks every EST resource `osc`; an unprotected EST request gets 4.01.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := coap.Dial(ctx, s.coapURL, coap.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, err := c.Do(ctx, &coap.ClientRequest{Method: codes.GET, Path: "/.well-known/core"})
	if err != nil {
		t.Fatal(err)
	}
	links := string(resp.Payload)
	for _, fn := range []string{"crts", "sen", "sren", "att", "skg", "skc"} {
		want := `</.well-known/est/` + fn + `>;rt="ace.est.` + fn + `"`
		i := strings.Index(links, want)
		if i < 0 {
			t.Fatalf("discovery lacks %s: %s", want, links)
		}
		link := links[i:]
		if j := strings.Index(link, ","); j > 0 {
			link = link[:j]
		}
		if !strings.Contains(link, ";osc") {
			t.Errorf("%s is not marked osc", link)
		}
	}
	if !strings.Contains(links, `</.well-known/edhoc>;rt="core.edhoc"`) {
		t.Errorf("discovery lacks the EDHOC resource: %s", links)
	}
	resp, err = c.Do(ctx, &coap.ClientRequest{Method: codes.GET, Path: "/.well-known/est/crts"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Code != codes.Unauthorized {
		t.Fatalf("unprotected /crts: %v, want 4.01", resp.Code)
	}
}

func TestESTOSCOREEDHOC(t *testing.T) {
	dir := t.TempDir()
	s := testOSCOREServer(t, filepath.Join(dir, "data"))
	d := s.data.Paths
	base := []string{"--server", s.coapURL, "--edhoc", "--trust", d.IssuingCA}
	dev := []string{"--cert", d.Device, "--key", d.DeviceKey}

	if out := mustCLI(t, append(append([]string{"est", "cacerts"}, base...), dev...)...); strings.Count(out, "BEGIN CERTIFICATE") != 2 {
		t.Fatalf("cacerts: %s", out)
	}
	mustCLI(t, append(append([]string{"est", "csrattrs"}, base...), dev...)...)
	keyOut, certOut := filepath.Join(dir, "ldevid.key"), filepath.Join(dir, "ldevid.pem")
	mustCLI(t, append(append([]string{"est", "enroll", "--subject", "CN=demo-device-0001", "--key-out", keyOut, "--out", certOut}, base...), dev...)...)
	// Re-enrollment: EDHOC authenticated with the certificate we issued.
	newCert := filepath.Join(dir, "renewed.pem")
	mustCLI(t, append([]string{"est", "reenroll", "--cert", certOut, "--key", keyOut, "--out", newCert}, base...)...)
	if chain, err := pemfile.ReadCerts(newCert); err != nil || chain[0].Subject.CommonName != "demo-device-0001" {
		t.Fatalf("renewed certificate: %v %v", chain, err)
	}
	// The LDevID by reference (RFC 9528 §3.5.3): the server finds it in its records, never
	// having seen it in an EDHOC handshake.
	for _, ref := range []string{"x5t", "kid"} {
		again := filepath.Join(dir, "renewed-"+ref+".pem")
		mustCLI(t, append([]string{"est", "reenroll", "--edhoc-cred", ref, "--cert", certOut, "--key", keyOut, "--out", again}, base...)...)
		if chain, err := pemfile.ReadCerts(again); err != nil || chain[0].Subject.CommonName != "demo-device-0001" {
			t.Fatalf("renewed with --edhoc-cred %s: %v %v", ref, chain, err)
		}
	}
	mustCLI(t, append(append([]string{"est", "serverkeygen", "--subject", "CN=skg", "--key-out", filepath.Join(dir, "skg.key")}, base...), dev...)...)
	// message_3 on its own (RFC 9528 Appendix A.2) instead of the combined request.
	mustCLI(t, append(append([]string{"est", "enroll", "--edhoc-separate", "--subject", "CN=sep"}, base...), dev...)...)
	// The "pop" profile requires the CSR to carry edhoc-unique.
	popBase := []string{"--server", s.coapURL + "/pop", "--edhoc", "--trust", d.IssuingCA}
	mustCLI(t, append(append([]string{"est", "enroll", "--pop", "--subject", "CN=pop"}, popBase...), dev...)...)
	_, errOut, code := cli(context.Background(), append(append([]string{"est", "enroll", "--subject", "CN=nopop"}, popBase...), dev...)...)
	if code == 0 || !strings.Contains(errOut, "4.00") {
		t.Fatalf("pop profile without edhoc-unique: exit %d: %s", code, errOut)
	}
	// A device the authority does not trust fails the handshake.
	_, errOut, code = cli(context.Background(), append([]string{"est", "enroll", "--subject", "CN=x", "--cert", d.Root, "--key", d.DeviceKey}, base...)...)
	if code == 0 {
		t.Fatalf("enroll with an untrusted identity succeeded: %s", errOut)
	}
}

// TestESTOSCORERestart: after a restart the server's pre-shared context starts with an
// unsynchronized replay window and answers with Echo; the client repeats its request; the
// server's Sender Sequence Number continues above every number it used before (its blocks are
// reserved in the store).
func TestESTOSCORERestart(t *testing.T) {
	dir := t.TempDir()
	srvCtx := writeFile(t, filepath.Join(dir, "sensor-17.yaml"), pskServerYAML)
	cliCtx := writeFile(t, filepath.Join(dir, "client.yaml"), pskClientYAML)
	data := filepath.Join(dir, "data")
	s := testOSCOREServer(t, data, srvCtx)
	mustCLI(t, "est", "enroll", "--server", s.coapURL, "--oscore", cliCtx, "--subject", "CN=before")
	// The next free sequence number of the context (Sender ID 01): reserving one more shows it.
	reserved := func() int64 {
		t.Helper()
		st, err := sqlite.Open(context.Background(), filepath.Join(data, "coapca.db"), sqlite.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		n, err := st.ReserveRange(context.Background(), "oscore-ssn:01__", 0, 1)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	b := reserved()
	s.Close()
	s2 := testOSCOREServer(t, data, srvCtx)
	mustCLI(t, "est", "enroll", "--server", s2.coapURL, "--oscore", cliCtx, "--subject", "CN=after")
	// The restarted server answered the Echo challenge with a Partial IV of its own: it took it
	// from a new block, above everything reserved before the restart (RFC 8613 Appendix B.1.1).
	if a := reserved(); a <= b+1 {
		t.Fatalf("next free sequence number %d after a restart, %d before: the restarted server reserved nothing new, a nonce could be reused", a, b)
	}
}

// TestESTOSCOREDelayed: a pending request is a protected 5.03 + Max-Age; the client follows
// Max-Age and gets its certificate once an operator approves.
func TestESTOSCOREDelayed(t *testing.T) {
	dir := t.TempDir()
	srvCtx := writeFile(t, filepath.Join(dir, "sensor-17.yaml"), pskServerYAML)
	cliCtx := writeFile(t, filepath.Join(dir, "client.yaml"), pskClientYAML)
	data := filepath.Join(dir, "data")
	s := testOSCOREServer(t, data, srvCtx)
	ctx := context.Background()
	csr := filepath.Join(dir, "csr.der")
	makeCSR(t, csr, "CN=delayed")
	done := make(chan string, 1)
	go func() {
		_, errOut, code := cli(ctx, "est", "enroll", "--server", s.coapURL+"/manual", "--oscore", cliCtx, "--csr", csr, "--wait", "30s")
		done <- fmt.Sprintf("%d %s", code, errOut)
	}()
	var pend []string
	waitUntil(t, 30*time.Second, "one pending request", func() bool {
		pend = listPending(t, data)
		return len(pend) == 1
	})
	if err := s.auth.Approve(ctx, pend[0]); err != nil {
		t.Fatal(err)
	}
	select {
	case res := <-done:
		if !strings.HasPrefix(res, "0 ") || !strings.Contains(res, "pending: /sen not ready") {
			t.Fatalf("enroll after approval: %s", res)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("enroll did not finish after approval")
	}
}

func TestESTOSCOREFlags(t *testing.T) {
	for _, args := range [][]string{
		{"est", "cacerts", "--server", "coap://127.0.0.1:1"},                                      // neither --oscore nor --edhoc
		{"est", "cacerts", "--server", "coap://127.0.0.1:1", "--oscore", "x.yaml", "--edhoc"},     // both
		{"est", "cacerts", "--server", "coaps://127.0.0.1:1", "--oscore", "x.yaml"},               // OSCORE over DTLS
		{"est", "cacerts", "--server", "coap://127.0.0.1:1", "--edhoc", "--insecure"},             // EDHOC without an identity
		{"est", "cacerts", "--server", "coap://127.0.0.1:1", "--oscore", "/nonexistent/ctx.yaml"}, // missing file
		{"est", "cacerts", "--server", "coap://127.0.0.1:1", "--edhoc", "--edhoc-cred", "x5c"},    // unknown ID_CRED_I kind
	} {
		if _, errOut, code := cli(context.Background(), args...); code == 0 {
			t.Errorf("%v succeeded: %s", args, errOut)
		}
	}
}
