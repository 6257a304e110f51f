package coap

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"coapca/internal/testtool"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// libcoap interop (Debian libcoap3-bin 4.3.1). Skipped when the binaries are missing.

var libcoapClients = []string{"coap-client-openssl", "coap-client-gnutls"}

func TestLibcoapClientBlockwise(t *testing.T) {
	for _, name := range libcoapClients {
		t.Run(name, func(t *testing.T) {
			bin := testtool.LookPath(t, name)
			ts := startTestServer(t, Config{})
			base := fmt.Sprintf("coap://%s", ts.addr)
			libcoapBlockMatrix(t, ts, bin, base, nil, []string{"16", "64", "256", "1024"}, "")
		})
	}
}

// libcoapBlockMatrix runs a GET of /big and a POST of 2000 bytes to /echo at
// each block size, checking every byte and that each handler ran once.
func libcoapBlockMatrix(t *testing.T, ts *testSrv, bin, base string, extra []string, sizes []string, loss string) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in")
	if err := os.WriteFile(in, testBody(2000, 0x33), 0o600); err != nil {
		t.Fatal(err)
	}
	timeout := 10 * time.Second
	brk := "8"
	if loss != "" {
		extra = append(extra, "-l", loss)
		// libcoap backs off exponentially from 2-3 s: a few unlucky blocks can take a minute.
		// Typical runs finish in seconds; the bound is only there so a hang cannot stall CI.
		timeout, brk = 100*time.Second, "90"
	}
	// Under loss libcoap gives up on an exchange after MAX_RETRANSMIT (RFC 7252 §4.2): with 25 %
	// of its datagrams dropped that happens to 0.25^5 ≈ 0.1 % of exchanges, i.e. to a few
	// percent of whole transfers (libcoap then exits, sometimes with status 0 and a partial
	// body). Such a run is repeated once, as a new process and so a new peer; every check
	// applies to the run that counts, and a second failure fails the test.
	attempts := 1
	if loss != "" {
		attempts = 2
	}
	transfer := func(what string, args []string, out string, want []byte, counter *atomic.Int64) {
		var problem string
		for i := 1; i <= attempts; i++ {
			before := counter.Load()
			_ = os.Remove(out)
			_, err := testtool.Run(t, timeout, bin, args...)
			got, _ := os.ReadFile(out)
			calls := counter.Load() - before
			switch {
			case err != nil:
				problem = err.Error()
			case !bytes.Equal(got, want):
				problem = fmt.Sprintf("got %d bytes %q…, not the %d expected", len(got), got[:min(len(got), 40)], len(want))
			case calls != 1:
				problem = fmt.Sprintf("handler ran %d times", calls)
			default:
				return
			}
			if i < attempts {
				t.Logf("%s: %s (libcoap gave up under loss; once more)", what, problem)
			}
		}
		t.Errorf("%s: %s", what, problem)
	}
	get := func(bs string) {
		out := filepath.Join(dir, "get"+bs)
		args := append(append([]string{}, extra...), "-m", "get", "-b", bs, "-B", brk, "-o", out, base+"/big")
		transfer("GET bs "+bs, args, out, testBody(3000, 0x5a), &ts.bigCalls)
	}
	post := func(bs string) {
		out := filepath.Join(dir, "post"+bs)
		args := append(append([]string{}, extra...), "-m", "post", "-t", "42", "-f", in, "-b", bs, "-B", brk, "-o", out, base+"/echo")
		transfer("POST bs "+bs, args, out, echoBody(testBody(2000, 0x33)), &ts.echoCalls)
	}
	for _, bs := range sizes {
		if loss == "" {
			get(bs)
			post(bs)
			continue
		}
		// Under loss the two transfers run side by side so the test stays under 30 s.
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); get(bs) }()
		go func() { defer wg.Done(); post(bs) }()
		wg.Wait()
	}
}

// TestLibcoapClientLoss repeats the block-wise matrix with 25 % datagram loss
// at the libcoap side. libcoap's ACK_TIMEOUT is 2 s and not configurable, so
// only the larger block sizes run (the smaller ones would take minutes; our own
// lossy loopback test covers them); -short skips it.
func TestLibcoapClientLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: libcoap retransmits after 2-3 s")
	}
	for _, name := range libcoapClients {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			bin := testtool.LookPath(t, name)
			ts := startTestServer(t, Config{})
			libcoapBlockMatrix(t, ts, bin, fmt.Sprintf("coap://%s", ts.addr), nil, []string{"256", "1024"}, "25%")
		})
	}
}

func TestLibcoapWellKnownCore(t *testing.T) {
	bin := testtool.LookPath(t, "coap-client-openssl")
	ts := startTestServer(t, Config{})
	out, err := testtool.Run(t, 10*time.Second, bin, "-B", "5", "-b", "64", fmt.Sprintf("coap://%s/.well-known/core?rt=ace.est*", ts.addr))
	if err != nil {
		t.Fatal(err)
	}
	links, err := ParseLinkFormat(bytes.TrimSpace(out))
	if err != nil {
		t.Fatalf("%q: %v", out, err)
	}
	if len(links) != 2 || links[0].Href != "/big" || links[1].Href != "/echo" {
		t.Fatalf("filtered listing: %q", out)
	}
	out, err = testtool.Run(t, 10*time.Second, bin, "-B", "5", "-b", "16", fmt.Sprintf("coap://%s/.well-known/core", ts.addr))
	if err != nil {
		t.Fatal(err)
	}
	if links, err := ParseLinkFormat(bytes.TrimSpace(out)); err != nil || len(links) != 6 {
		t.Fatalf("full listing (16-byte blocks): %q %v", out, err)
	}
}

func TestLibcoapObserve(t *testing.T) {
	bin := testtool.LookPath(t, "coap-client-openssl")
	ts := startTestServer(t, Config{ObserveConEvery: 2})
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		tk := time.NewTicker(200 * time.Millisecond)
		defer tk.Stop()
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			case <-tk.C:
				ts.srv.Notify("/obs", NewResponse(codes.Content, []byte(fmt.Sprintf("state %d", i))))
			}
		}
	}()
	out, err := testtool.Run(t, 10*time.Second, bin, "-s", "2", "-B", "4", fmt.Sprintf("coap://%s/obs", ts.addr))
	if err != nil {
		t.Fatal(err)
	}
	n := strings.Count(string(out), "state ") - 1 // minus the first response
	if n < 2 {
		t.Fatalf("got %d notifications: %q", n, out)
	}
}

// TestLibcoapServer runs our client against coap-server-openssl: a block-wise
// PUT to its dynamic resource, then a block-wise GET of it.
func TestLibcoapServer(t *testing.T) {
	port := startLibcoapServer(t, "-d", "10")
	c, err := Dial(context.Background(), fmt.Sprintf("coap://127.0.0.1:%d", port), ClientOptions{BlockSize: 64, Config: Config{ACKTimeout: 300 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rctx, rcancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer rcancel()
	resp, err := c.Do(rctx, &ClientRequest{Method: codes.GET, Path: "/.well-known/core"})
	if err != nil || resp.Code != codes.Content {
		t.Fatalf("GET /.well-known/core: %v %v", resp, err)
	}
	if _, err := ParseLinkFormat(resp.Payload); err != nil {
		t.Errorf("libcoap's link-format: %v", err)
	}
	body := testBody(3000, 0x77)
	resp, err = c.Do(rctx, &ClientRequest{Method: codes.PUT, Path: "/dyn", ContentFormat: CF(42), Payload: body})
	if err != nil || resp.Code>>5 != 2 {
		t.Fatalf("PUT /dyn: %v %v", resp, err)
	}
	resp, err = c.Do(rctx, &ClientRequest{Method: codes.GET, Path: "/dyn"})
	if err != nil || resp.Code != codes.Content {
		t.Fatalf("GET /dyn: %v %v", resp, err)
	}
	if !bytes.Equal(resp.Payload, body) {
		t.Fatalf("GET /dyn: %d bytes, not what was PUT", len(resp.Payload))
	}
	if c.Stats().Retransmissions > 0 {
		t.Logf("retransmissions: %d", c.Stats().Retransmissions)
	}
}

// TestLibcoapSeparate: a handler slower than SeparateAfter answers with an
// empty ACK and a CON response, which libcoap accepts.
func TestLibcoapSeparate(t *testing.T) {
	bin := testtool.LookPath(t, "coap-client-openssl")
	ts := startTestServer(t, Config{SeparateAfter: 50 * time.Millisecond})
	out, err := testtool.Run(t, 10*time.Second, bin, "-B", "5", fmt.Sprintf("coap://%s/slow", ts.addr))
	if err != nil || !bytes.Contains(out, []byte("slow answer")) {
		t.Fatalf("%q %v", out, err)
	}
}

// startLibcoapServer runs coap-server-openssl on 127.0.0.1 (UDP port, DTLS on
// port+1) and returns the UDP port.
func startLibcoapServer(t *testing.T, args ...string) int {
	t.Helper()
	bin := testtool.LookPath(t, "coap-server-openssl")
	port := freeUDPPort(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, append([]string{"-A", "127.0.0.1", "-p", fmt.Sprint(port)}, args...)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	waitUDPBound(t, port)
	return port
}

// waitUDPBound waits until some process has bound 127.0.0.1:port (UDP), as listed in
// /proc/net/udp — the external server has no other way to say it is ready, and probing the
// port by binding it could take it from the server. The wait is a poll because the event
// happens in another process; the deadline bounds it.
func waitUDPBound(t *testing.T, port int) {
	t.Helper()
	want := fmt.Sprintf(" 0100007F:%04X ", port)
	for deadline := time.Now().Add(10 * time.Second); ; {
		b, err := os.ReadFile("/proc/net/udp")
		if err != nil {
			t.Fatalf("cannot see whether the server bound its port: %v", err)
		}
		if strings.Contains(string(b), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no process bound 127.0.0.1:%d", port)
		}
		time.Sleep(10 * time.Millisecond) // polling another process (see above)
	}
}

// TestLibcoapServerObserve: our client observes libcoap's /time (one
// notification a second) and gets at least two notifications.
func TestLibcoapServerObserve(t *testing.T) {
	port := startLibcoapServer(t)
	c, err := Dial(context.Background(), fmt.Sprintf("coap://127.0.0.1:%d", port), ClientOptions{Config: Config{ACKTimeout: 300 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n := 0
	err = c.Observe(ctx, "/time", func(r *Response) {
		t.Logf("notification %s %q observe=%d", r.Code, r.Payload, optUint(r.Options, message.Observe))
		if r.Code == codes.Content && len(r.Payload) > 0 {
			n++
		}
		if n >= 3 {
			cancel()
		}
	})
	if n < 3 {
		t.Fatalf("got %d responses (first + notifications): %v", n, err)
	}
}

// TestLibcoapServerDTLS: our coaps client with a client certificate against
// coap-server-openssl with PKI, block-wise PUT then GET.
func TestLibcoapServerDTLS(t *testing.T) {
	p := newTestPKI(t)
	port := startLibcoapServer(t, "-d", "10", "-c", p.serverCertPEM, "-j", p.serverKeyPEM, "-C", p.caPEM)
	// libcoap binds its DTLS port after the plain one (startLibcoapServer waited for that):
	// dialing before it is bound was refused (seen once in CI).
	waitUDPBound(t, port+1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, fmt.Sprintf("coaps://127.0.0.1:%d", port+1), ClientOptions{BlockSize: 256,
		Config: Config{ACKTimeout: 300 * time.Millisecond},
		DTLS:   &DTLSClientConfig{Certificates: []tls.Certificate{p.client}, RootCAs: p.pool}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if pe := c.Peer(); !pe.Secure || len(pe.TLSExporter()) != 32 || len(pe.Certificates) == 0 {
		t.Errorf("peer: %+v", pe)
	}
	body := testBody(3000, 0x21)
	resp, err := c.Do(ctx, &ClientRequest{Method: codes.PUT, Path: "/dyn2", ContentFormat: CF(0), Payload: body})
	if err != nil || resp.Code>>5 != 2 {
		t.Fatalf("PUT: %v %v", resp, err)
	}
	resp, err = c.Do(ctx, &ClientRequest{Method: codes.GET, Path: "/dyn2"})
	if err != nil || !bytes.Equal(resp.Payload, body) {
		t.Fatalf("GET: %v", err)
	}
}
