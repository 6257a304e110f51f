package cli

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"coapca/coap"
	"coapca/coap/oscorelayer"
	"coapca/internal/config"
	"coapca/internal/pemfile"
	"coapca/internal/server"
	"coapca/oscore"
)

// TestESTOSCOREOverHTTP: EST-oscore over HTTP (RFC 8613 §11) with the CLI: enroll and cacerts
// over http://, then over coap:// with the same client context (one sequence-number store).
func TestESTOSCOREOverHTTP(t *testing.T) {
	dir := t.TempDir()
	srvCtx := writeFile(t, filepath.Join(dir, "sensor-17.yaml"), pskServerYAML)
	cliCtx := writeFile(t, filepath.Join(dir, "client.yaml"), pskClientYAML)
	s := testServerAt(t, filepath.Join(dir, "data"), func(c *config.Config) {
		c.OSCOREContexts = []string{srvCtx}
		c.Listen.HTTP = "127.0.0.1:0"
	})
	if out := mustCLI(t, "est", "cacerts", "--server", s.httpURL, "--oscore", cliCtx); strings.Count(out, "BEGIN CERTIFICATE") != 2 {
		t.Fatalf("cacerts over http: %s", out)
	}
	certOut := filepath.Join(dir, "c.pem")
	mustCLI(t, "est", "enroll", "--server", s.httpURL+"/sensors", "--oscore", cliCtx, "--subject", "CN=http-oscore",
		"--key-out", filepath.Join(dir, "k.pem"), "--out", certOut)
	if chain, err := pemfile.ReadCerts(certOut); err != nil || chain[0].Subject.CommonName != "http-oscore" {
		t.Fatalf("enrolled certificate: %v %v", chain, err)
	}
	mustCLI(t, "est", "enroll", "--server", s.coapURL, "--oscore", cliCtx, "--subject", "CN=coap-after-http")
	mustCLI(t, "est", "cacerts", "--server", s.httpURL, "--oscore", cliCtx)
}

// TestESTOSCOREOverHTTPS: the EST over HTTPS listener takes OSCORE-protected requests too
// (RFC 8613 §12.1 recommends TLS on HTTP hops), next to plain EST.
func TestESTOSCOREOverHTTPS(t *testing.T) {
	dir := t.TempDir()
	srvCtx := writeFile(t, filepath.Join(dir, "sensor-17.yaml"), pskServerYAML)
	cliCtx := writeFile(t, filepath.Join(dir, "client.yaml"), pskClientYAML)
	s := testServerAt(t, filepath.Join(dir, "data"), func(c *config.Config) {
		c.OSCOREContexts = []string{srvCtx}
		c.Listen.HTTPS = "127.0.0.1:0"
	})
	mustCLI(t, "est", "enroll", "--server", "https://"+s.httpsAddr+"/sensors", "--oscore", cliCtx, "--trust", s.data.Paths.Root,
		"--subject", "CN=https-oscore")
	// Plain EST over HTTPS still answers on the same listener.
	if out := mustCLI(t, "est", "cacerts", "--server", "https://"+s.httpsAddr, "--trust", s.data.Paths.Root); strings.Count(out, "BEGIN CERTIFICATE") != 2 {
		t.Fatalf("cacerts over plain HTTPS: %s", out)
	}
}

// postOSCORE sends one OSCORE message over HTTP as RFC 8613 §11 maps it.
func postOSCORE(t *testing.T, url string, m *message.Message, header, ctype string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(m.Payload))
	if err != nil {
		t.Fatal(err)
	}
	if header != "" {
		req.Header.Set("OSCORE", header)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// rawLayer sends one prepared (already protected) message over CoAP.
type rawLayer struct{ m *message.Message }

func (l rawLayer) RoundTrip(_ *message.Message, send func(*message.Message) (*message.Message, error)) (*message.Message, error) {
	return send(l.m)
}

// TestOSCOREOverHTTPAttacks: the HTTP carrier shares the CoAP carrier's contexts and replay
// windows, so each row is an attack that must fail: a captured request replayed over HTTP, the
// same request replayed over coap:// after it was accepted over HTTP, a tampered body, a GET,
// and an OSCORE header without its media type.
func TestOSCOREOverHTTPAttacks(t *testing.T) {
	dir := t.TempDir()
	srvCtx := writeFile(t, filepath.Join(dir, "sensor-17.yaml"), pskServerYAML)
	cliCtx := writeFile(t, filepath.Join(dir, "client.yaml"), pskClientYAML)
	s := testServerAt(t, filepath.Join(dir, "data"), func(c *config.Config) {
		c.OSCOREContexts = []string{srvCtx}
		c.Listen.HTTP = "127.0.0.1:0"
	})
	_, p, err := server.LoadOSCOREContext(cliCtx)
	if err != nil {
		t.Fatal(err)
	}
	octx, err := oscore.NewContext(p)
	if err != nil {
		t.Fatal(err)
	}
	url := s.httpURL + "/"
	crts := func() *message.Message {
		m := &message.Message{Code: codes.GET}
		for _, seg := range []string{".well-known", "est", "crts"} {
			m.Options = m.Options.Add(message.Option{ID: message.URIPath, Value: []byte(seg)})
		}
		return m
	}
	// A full exchange first: the server's window starts unsynchronized (Echo, RFC 9175).
	tr := oscorelayer.NewHTTPTransport(octx, url, nil)
	resp, err := tr.RoundTrip(crts(), nil)
	if err != nil || resp.Code != codes.Content {
		t.Fatalf("first exchange: %v %v", resp, err)
	}
	protect := func() *message.Message {
		m, _, err := octx.ProtectRequest(crts())
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	header := func(m *message.Message) string {
		for _, o := range m.Options {
			if o.ID == oscore.OptionNumber {
				return oscorelayer.EncodeHTTPHeader(o.Value)
			}
		}
		t.Fatal("no OSCORE option")
		return ""
	}
	m1 := protect()
	if code, h, _ := postOSCORE(t, url, m1, header(m1), oscorelayer.MediaType); code != 200 || h.Get("OSCORE") == "" ||
		h.Get("Content-Type") != oscorelayer.MediaType {
		t.Fatalf("fresh request: %d %v", code, h)
	}
	if code, _, body := postOSCORE(t, url, m1, header(m1), oscorelayer.MediaType); code != http.StatusUnauthorized {
		t.Fatalf("attack: replay over HTTP: %d %s, want 401", code, body)
	}
	// Accepted over HTTP, replayed over coap:// → the same replay window refuses it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := coap.Dial(ctx, s.coapURL, coap.ClientOptions{Layer: rawLayer{m1}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cr, err := c.Do(ctx, &coap.ClientRequest{Method: codes.POST, Path: "/"})
	if err != nil || cr.Code != codes.Unauthorized {
		t.Fatalf("attack: HTTP request replayed over coap://: %v %v, want 4.01", cr, err)
	}
	m2 := protect()
	tampered := *m2
	tampered.Payload = bytes.Clone(m2.Payload)
	tampered.Payload[len(tampered.Payload)-1] ^= 1
	for _, tt := range []struct {
		name          string
		m             *message.Message
		header, ctype string
		method        string
		want          int
	}{
		{"attack: tampered ciphertext", &tampered, header(m2), oscorelayer.MediaType, http.MethodPost, http.StatusBadRequest},
		{"OSCORE header without application/oscore", m2, header(m2), "application/cbor", http.MethodPost, http.StatusBadRequest},
		{"GET with OSCORE header", m2, header(m2), oscorelayer.MediaType, http.MethodGet, http.StatusMethodNotAllowed},
		{"header not base64url", m2, "!!", oscorelayer.MediaType, http.MethodPost, http.StatusBadRequest},
		{"unknown kid", m2, oscorelayer.EncodeHTTPHeader([]byte{0x09, 0x00, 0x42}), oscorelayer.MediaType, http.MethodPost, http.StatusUnauthorized},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.method != http.MethodPost {
				req, _ := http.NewRequest(tt.method, url, nil)
				req.Header.Set("OSCORE", tt.header)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != tt.want {
					t.Fatalf("%d, want %d", resp.StatusCode, tt.want)
				}
				return
			}
			if code, _, body := postOSCORE(t, url, tt.m, tt.header, tt.ctype); code != tt.want {
				t.Fatalf("%d %s, want %d", code, body, tt.want)
			}
		})
	}
	// The untampered m2 still verifies: the refusals changed nothing.
	if code, _, body := postOSCORE(t, url, m2, header(m2), oscorelayer.MediaType); code != 200 {
		t.Fatalf("m2 after the refusals: %d %s", code, body)
	}
}

func TestOSCOREHTTPHeader(t *testing.T) {
	// RFC 8613 §11.5 example: option 09 25 is "CSU"; the empty option is "AA".
	if got := oscorelayer.EncodeHTTPHeader([]byte{0x09, 0x25}); got != "CSU" {
		t.Fatalf("header %q", got)
	}
	if v, err := oscorelayer.DecodeHTTPHeader("AA"); err != nil || len(v) != 0 || oscorelayer.EncodeHTTPHeader(nil) != "AA" {
		t.Fatal("empty OSCORE option")
	}
	if v, err := oscorelayer.DecodeHTTPHeader("CSU"); err != nil || !bytes.Equal(v, []byte{0x09, 0x25}) {
		t.Fatalf("decode CSU: %x %v", v, err)
	}
}
