package cli

import (
	"bytes"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"coapca/internal/config"
	"coapca/internal/pemfile"
	"coapca/kms"
	"coapca/oscore"
)

// hop is an HTTP hop between the registrar and the upstream that records every byte the
// registrar forwarded and every byte of the answers, and can stand in for a failing upstream.
type hop struct {
	target string // the upstream's http:// URL
	mode   atomic.Value

	mu       sync.Mutex
	requests int
	seen     [][]byte // request and answer bodies and header values, as they crossed
}

func (h *hop) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	h.requests++
	h.seen = append(h.seen, body, []byte(r.URL.String()))
	for _, v := range r.Header {
		h.seen = append(h.seen, []byte(strings.Join(v, ",")))
	}
	h.mu.Unlock()
	switch mode, _ := h.mode.Load().(string); mode {
	case "502":
		http.Error(w, "upstream internals: db01 is down", http.StatusBadGateway)
		return
	case "503":
		w.Header().Set("Retry-After", "7")
		http.Error(w, "busy", http.StatusServiceUnavailable)
		return
	case "200-plain":
		_, _ = w.Write([]byte("not an OSCORE answer"))
		return
	case "huge":
		w.Header().Set("OSCORE", "AA")
		w.Header().Set("Content-Type", "application/oscore")
		_, _ = w.Write(bytes.Repeat([]byte{0x42}, 1<<17))
		return
	case "hang":
		<-r.Context().Done() // the registrar gives up after upstream.timeout
		return
	case "close":
		if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
			_ = c.Close()
		}
		return
	}
	req, _ := http.NewRequestWithContext(r.Context(), r.Method, h.target+r.URL.Path, bytes.NewReader(body))
	req.Header = r.Header.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	h.mu.Lock()
	h.seen = append(h.seen, answer)
	for _, v := range resp.Header {
		h.seen = append(h.seen, []byte(strings.Join(v, ",")))
	}
	h.mu.Unlock()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(answer)
}

func (h *hop) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.requests
}

// contains reports whether needle crossed the hop in the clear.
func (h *hop) contains(needle []byte) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, b := range h.seen {
		if bytes.Contains(b, needle) {
			return true
		}
	}
	return false
}

// oscoreRegistrar starts an upstream coapca with EST-oscore over HTTP (listen.http, the
// pre-shared context sensor-17, EDHOC) and EST over HTTPS, a recording hop in front of its
// HTTP listener, and a registrar with upstream.oscore_url = the hop that holds no OSCORE
// context of its own.
func oscoreRegistrar(t *testing.T, dir string) (ca, reg *served, h *hop) {
	t.Helper()
	srvCtx := writeFile(t, filepath.Join(dir, "sensor-17.yaml"), pskServerYAML)
	ca = testServerAt(t, filepath.Join(dir, "ca"), func(c *config.Config) {
		c.OSCOREContexts = []string{srvCtx}
		c.Listen.HTTP = "127.0.0.1:0"
		c.Listen.HTTPS = "127.0.0.1:0"
	})
	h = &hop{target: ca.httpURL}
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	reg = testServerAt(t, filepath.Join(dir, "reg"), func(c *config.Config) {
		c.Upstream = config.Upstream{URL: "https://" + ca.httpsAddr, Trust: ca.data.Paths.Root, OSCOREURL: hs.URL,
			Timeout: 5 * time.Second, RetryAfter: 11 * time.Second}
	})
	return ca, reg, h
}

// TestRegistrarOSCOREEndToEnd: our EST-oscore client, with a pre-shared context and then with
// EDHOC (combined request, then message_3 on its own), enrolls over coap:// through a registrar
// that holds no context, forwarding over HTTP to a coapca EST-oscore server (RFC 8613 §11).
// The attack it refuses: a registrar reading the enrollment — the hop in between sees neither
// the CSR's subject nor the certificate, and the registrar holds no OSCORE context and no
// EDHOC session at the end.
func TestRegistrarOSCOREEndToEnd(t *testing.T) {
	dir := t.TempDir()
	ca, reg, h := oscoreRegistrar(t, dir)
	cliCtx := writeFile(t, filepath.Join(dir, "client.yaml"), pskClientYAML)
	d := ca.data.Paths
	// The upstream (the EDHOC responder) sends its certificate alone (edhoc.credential
	// x5chain-leaf): the device trusts the issuing CA.
	edhocArgs := []string{"--server", reg.coapURL, "--edhoc", "--trust", d.IssuingCA, "--cert", d.Device, "--key", d.DeviceKey}
	for _, tc := range []struct {
		name, subject string
		args          []string
	}{
		{"pre-shared", "proxied-psk-7f3a", []string{"--server", reg.coapURL + "/sensors", "--oscore", cliCtx}},
		{"edhoc combined", "proxied-edhoc-91c2", edhocArgs},
		{"edhoc separate", "proxied-edhoc-sep-44d1", append([]string{"--edhoc-separate"}, edhocArgs...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := h.count()
			certOut := filepath.Join(dir, tc.name+".pem")
			mustCLI(t, append([]string{"est", "enroll", "--subject", "CN=" + tc.subject,
				"--key-out", filepath.Join(dir, tc.name+".key"), "--out", certOut}, tc.args...)...)
			chain, err := pemfile.ReadCerts(certOut)
			if err != nil || chain[0].Subject.CommonName != tc.subject {
				t.Fatalf("enrolled certificate: %v %v", chain, err)
			}
			if chain[0].CheckSignatureFrom(ca.data.IssuingCA) != nil {
				t.Fatalf("the certificate is not from the upstream's issuing CA")
			}
			if h.count() == before || !h.contains([]byte("application/oscore")) {
				t.Fatalf("no OSCORE message crossed the HTTP hop: the registrar did not forward")
			}
			if h.contains([]byte(tc.subject)) {
				t.Errorf("the CSR's subject %q crossed the registrar in the clear", tc.subject)
			}
			if h.contains(chain[0].Raw) || h.contains(chain[0].RawSubjectPublicKeyInfo) {
				t.Errorf("the certificate crossed the registrar in the clear")
			}
		})
	}
	if !h.contains([]byte("/.well-known/edhoc")) {
		t.Errorf("EDHOC did not cross the hop: it did not run end to end with the upstream")
	}
	// A server-generated key (plain PKCS#8 under OSCORE, draft-ietf-ace-coap-est-oscore): end to
	// end, the registrar cannot read it — unlike EST-coaps through a registrar (RFC 9148 §10.2).
	skgKey := filepath.Join(dir, "skg.key")
	mustCLI(t, "est", "serverkeygen", "--server", reg.coapURL, "--oscore", cliCtx, "--subject", "CN=proxied-skg-5e0b",
		"--key-out", skgKey, "--out", filepath.Join(dir, "skg.pem"))
	key, err := kms.LoadKeyFile(skgKey)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if h.contains(der) || h.contains([]byte("proxied-skg-5e0b")) {
		t.Errorf("the server-generated key or its subject crossed the registrar in the clear")
	}
	if out := mustCLI(t, "est", "cacerts", "--server", reg.coapURL, "--oscore", cliCtx); strings.Count(out, "BEGIN CERTIFICATE") != 2 {
		t.Fatalf("cacerts through the registrar: %s", out)
	}
	if h.contains(ca.data.Root.Raw) {
		t.Errorf("/crts crossed the registrar in the clear")
	}
	m := scrape(t, reg)
	for _, want := range []string{"coapca_oscore_contexts 0", "coapca_edhoc_sessions 0", `operation="oscore",result="ok"`, `operation="edhoc",result="ok"`} {
		if !strings.Contains(m, want) {
			t.Errorf("registrar metrics lack %s", want)
		}
	}
}

func scrape(t *testing.T, s *served) string {
	t.Helper()
	resp, err := http.Get("http://" + s.metricsAddr.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// rawCoAP is a device that writes datagrams itself.
type rawCoAP struct {
	t   *testing.T
	c   net.Conn
	mid uint16
}

func dialRaw(t *testing.T, coapURL string) *rawCoAP {
	t.Helper()
	c, err := net.Dial("udp", strings.TrimPrefix(coapURL, "coap://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawCoAP{t: t, c: c, mid: 100}
}

// once sends m as a CON and returns the answer (waiting past an empty ACK for a separate one).
func (r *rawCoAP) once(m message.Message) message.Message {
	r.t.Helper()
	r.mid++
	m.Type, m.MessageID, m.Token = message.Confirmable, int32(r.mid), []byte{byte(r.mid), 0xa5}
	b := make([]byte, 4096)
	n, err := coder.DefaultCoder.Encode(m, b)
	if err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.c.Write(b[:n]); err != nil {
		r.t.Fatal(err)
	}
	for {
		_ = r.c.SetReadDeadline(time.Now().Add(30 * time.Second))
		n, err := r.c.Read(b)
		if err != nil {
			r.t.Fatalf("no answer: %v", err)
		}
		out := message.Message{Options: make(message.Options, 0, 16)}
		if _, err := coder.DefaultCoder.Decode(b[:n], &out); err != nil {
			r.t.Fatal(err)
		}
		if out.Code == codes.Empty {
			continue // the empty ACK of a separate response (RFC 7252 §5.2.2)
		}
		if out.Type == message.Confirmable {
			ack := message.Message{Type: message.Acknowledgement, Code: codes.Empty, MessageID: out.MessageID}
			k, _ := coder.DefaultCoder.Encode(ack, b)
			_, _ = r.c.Write(b[:k])
		}
		return out
	}
}

// do sends m, answering an Echo challenge once (RFC 9175 §2.3) as a real device would.
func (r *rawCoAP) do(m message.Message) message.Message {
	r.t.Helper()
	out := r.once(m)
	if v, err := out.Options.GetBytes(optEchoID); err == nil && out.Code == codes.Unauthorized {
		m.Options = append(append(message.Options(nil), m.Options...), message.Option{ID: optEchoID, Value: v})
		out = r.once(m)
	}
	return out
}

func optionOf(m message.Message, id message.OptionID) ([]byte, bool) {
	v, err := m.Options.GetBytes(id)
	return v, err == nil
}

// oscoreOpt is a well-formed OSCORE option (RFC 8613 §6.1): Partial IV 5, kid 0x42 — a context
// nobody holds.
var oscoreOpt = message.Option{ID: oscore.OptionNumber, Value: []byte{0x09, 0x05, 0x42}}

// TestRegistrarOSCOREForwardingRefuses: the forwarding path cannot authenticate the device, so
// it is no more than a pipe to the configured upstream's EST-oscore resources. Each case is an
// attack; none may reach the upstream.
func TestRegistrarOSCOREForwardingRefuses(t *testing.T) {
	dir := t.TempDir()
	_, reg, h := oscoreRegistrar(t, dir)
	sen := message.Options{{ID: message.URIPath, Value: []byte(".well-known")}, {ID: message.URIPath, Value: []byte("est")},
		{ID: message.URIPath, Value: []byte("sen")}}
	for _, tc := range []struct {
		name   string
		m      message.Message
		want   codes.Code
		direct bool // without answering the Echo challenge
	}{
		// An open proxy: OSCORE-looking request aimed at another host through Proxy-Uri.
		{"proxy-uri to another host", message.Message{Code: codes.POST, Payload: []byte("ciphertext"), Options: message.Options{oscoreOpt,
			{ID: message.ProxyURI, Value: []byte("http://169.254.169.254/latest/meta-data")}}}, codes.ProxyingNotSupported, false},
		{"proxy-scheme", message.Message{Code: codes.POST, Payload: []byte("ciphertext"), Options: message.Options{
			{ID: message.URIHost, Value: []byte("intranet.example")}, oscoreOpt, {ID: message.ProxyScheme, Value: []byte("http")}}}, codes.ProxyingNotSupported, false},
		// A plain (unprotected) enrollment on an EST-oscore path: not forwarded, 4.01.
		{"plain request to /sen", message.Message{Code: codes.POST, Payload: []byte("csr"), Options: sen}, codes.Unauthorized, false},
		// An outer Uri-Path would let a device steer the upstream URL: refused.
		{"outer uri-path", message.Message{Code: codes.POST, Payload: []byte("ciphertext"), Options: append(message.Options{oscoreOpt},
			message.Option{ID: message.URIPath, Value: []byte("admin")})}, codes.BadRequest, false},
		// RFC 8613 §11.1: only POST maps to HTTP.
		{"outer FETCH", message.Message{Code: codes.Code(5), Payload: []byte("ciphertext"), Options: message.Options{oscoreOpt}}, codes.MethodNotAllowed, false},
		// An oversized body announced with Size1 (RFC 7959 §4): refused at the first block.
		{"oversized body", message.Message{Code: codes.POST, Payload: bytes.Repeat([]byte{1}, 1024), Options: message.Options{oscoreOpt,
			{ID: message.Block1, Value: []byte{0x0e}}, {ID: message.Size1, Value: []byte{0x10, 0x00, 0x00}}}}, codes.RequestEntityTooLarge, false},
		// A spoofed source must not make the upstream's answer an amplifier: the first request
		// from an unproven address is challenged, not forwarded (RFC 9175 §2.4).
		{"unproven source", message.Message{Code: codes.POST, Payload: []byte("ciphertext"), Options: message.Options{oscoreOpt}}, codes.Unauthorized, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := h.count()
			dev := dialRaw(t, reg.coapURL)
			var out message.Message
			if tc.direct {
				out = dev.once(tc.m)
				if _, ok := optionOf(out, optEchoID); !ok {
					t.Errorf("no Echo challenge: %v", out.Code)
				}
			} else {
				out = dev.do(tc.m)
			}
			if out.Code != tc.want {
				t.Errorf("answer %v (%s), want %v", out.Code, out.Payload, tc.want)
			}
			if h.count() != before {
				t.Errorf("the request reached the upstream")
			}
		})
	}
}

// TestRegistrarOSCOREForwardingFailures: the upstream's failures reach the device as the
// registrar's EST relaying maps them (RFC 8075 §7), never with the upstream's text.
func TestRegistrarOSCOREForwardingFailures(t *testing.T) {
	dir := t.TempDir()
	_, reg, h := oscoreRegistrar(t, dir)
	req := message.Message{Code: codes.POST, Payload: []byte("ciphertext"), Options: message.Options{oscoreOpt}}
	for _, tc := range []struct {
		mode   string
		want   codes.Code
		maxAge uint32
	}{
		{"", codes.Unauthorized, 0}, // the upstream holds no such context: its 401 mapped back
		{"502", codes.BadGateway, 0},
		{"503", codes.ServiceUnavailable, 7},
		{"200-plain", codes.BadGateway, 0},
		{"close", codes.BadGateway, 0},
		{"huge", codes.BadGateway, 0}, // an answer above the size limit is not relayed
		{"hang", codes.GatewayTimeout, 0},
	} {
		t.Run("mode "+tc.mode, func(t *testing.T) {
			h.mode.Store(tc.mode)
			before := h.count()
			out := dialRaw(t, reg.coapURL).do(req)
			if out.Code != tc.want {
				t.Fatalf("answer %v (%s), want %v", out.Code, out.Payload, tc.want)
			}
			if h.count() == before {
				t.Fatalf("not forwarded")
			}
			if strings.Contains(string(out.Payload), "db01") {
				t.Errorf("the upstream's text reached the device: %s", out.Payload)
			}
			if tc.maxAge != 0 {
				if v, err := out.Options.GetUint32(message.MaxAge); err != nil || v != tc.maxAge {
					t.Errorf("Max-Age %d (%v), want %d", v, err, tc.maxAge)
				}
			}
			if _, ok := optionOf(out, oscore.OptionNumber); ok {
				t.Errorf("an error answer carries an OSCORE option")
			}
		})
	}
}

// optEchoID is the Echo option (RFC 9175 §2.2.1).
const optEchoID message.OptionID = 252

// TestEDHOCOverHTTPRefuses: the upstream's EDHOC resource over HTTP takes only what a
// CoAP→HTTP proxy maps from a CoAP POST of RFC 9528 Appendix A.2; each case is a request it
// must refuse without starting a handshake.
func TestEDHOCOverHTTPRefuses(t *testing.T) {
	dir := t.TempDir()
	ca := testServerAt(t, filepath.Join(dir, "ca"), func(c *config.Config) { c.Listen.HTTP = "127.0.0.1:0" })
	for _, tc := range []struct {
		name, method, ctype string
		body                []byte
		want                int
	}{
		{"GET", http.MethodGet, "", nil, http.StatusMethodNotAllowed},
		{"wrong media type", http.MethodPost, "application/json", []byte{0xf5, 0x03}, http.StatusUnsupportedMediaType},
		{"empty", http.MethodPost, "application/cid-edhoc+cbor-seq", nil, http.StatusBadRequest},
		{"garbage message_1", http.MethodPost, "application/cid-edhoc+cbor-seq", []byte{0xf5, 0xff, 0xff}, http.StatusBadRequest},
		{"oversized", http.MethodPost, "application/cid-edhoc+cbor-seq", bytes.Repeat([]byte{0xf5}, 1<<20), http.StatusRequestEntityTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, ca.httpURL+"/.well-known/edhoc", bytes.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
	if m := scrape(t, ca); !strings.Contains(m, "coapca_edhoc_sessions 0") {
		t.Errorf("a refused request left an EDHOC session")
	}
}
