package esthttp

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"coapca/authority"
	"coapca/errs"
)

func TestStatusTableCoversEveryKind(t *testing.T) {
	if missing := errs.TableComplete(statusFor); len(missing) > 0 {
		t.Errorf("statusFor has no entry for %v", missing)
	}
	for k := errs.Kind(0); k < errs.NumKinds; k++ {
		if s := statusFor[k]; s < 200 || s > 599 || (s < 400 && k != errs.Pending) {
			t.Errorf("%v → %d: not an error status", k, s)
		}
	}
}

func TestDecodeBody(t *testing.T) {
	der := bytes.Repeat([]byte{0x30, 0x82, 0x01, 0x02, 0xff, 0x00, 0x7f}, 40)
	enc := base64.StdEncoding.EncodeToString(der)
	wrap := func(s, eol string, n int) string {
		var b strings.Builder
		for len(s) > n {
			b.WriteString(s[:n] + eol)
			s = s[n:]
		}
		return b.String() + s + eol
	}
	tests := []struct {
		name, body string
		want       []byte // nil = error
	}{
		{"unbroken", enc, der},
		{"64-column CRLF lines", wrap(enc, "\r\n", 64), der},
		{"76-column LF lines", wrap(enc, "\n", 76), der},
		{"surrounding space", "  \t" + enc + "\n\n", der},
		{"no padding", strings.TrimRight(base64.StdEncoding.EncodeToString(der[:10]), "="), der[:10]},
		{"binary DER", string(der), der},
		{"empty", "", nil},
		{"only whitespace", " \r\n", nil},
		{"bad alphabet", enc[:20] + "*" + enc[21:], nil},
		{"truncated to a length no base64 has", enc[:len(enc)-3], nil},
		{"URL alphabet", strings.NewReplacer("+", "-", "/", "_").Replace(enc), nil},
		{"binary that is no DER", "\x00\x01\x02\xff", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeBody([]byte(tc.body))
			if tc.want == nil {
				if err == nil || errs.KindOf(err) != errs.BadRequest {
					t.Fatalf("got %x, %v; want a bad request", got, err)
				}
				return
			}
			if err != nil || !bytes.Equal(got, tc.want) {
				t.Fatalf("got %x, %v", got, err)
			}
		})
	}
}

// TestBasicOnlyOverTLS: HTTP Basic credentials that arrive without TLS are not handed to the
// authority (RFC 7030 §3.2.3), and the request's transport says so.
func TestBasicOnlyOverTLS(t *testing.T) {
	tests := []struct {
		name      string
		tls       *tls.ConnectionState
		wantUser  string
		transport authority.Transport
	}{
		{"plain HTTP", nil, "", authority.TransportHTTP},
		{"TLS", &tls.ConnectionState{Version: tls.VersionTLS13}, "alice", authority.TransportHTTPS},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/.well-known/est/simpleenroll", nil)
			r.SetBasicAuth("alice", "pw")
			r.TLS = tc.tls
			req := Request(r, "")
			if req.Requester.User != tc.wantUser || req.Requester.Transport != tc.transport {
				t.Errorf("user %q transport %v, want %q %v", req.Requester.User, req.Requester.Transport, tc.wantUser, tc.transport)
			}
			if tc.tls == nil && (req.Requester.Password != "" || req.TLS != nil) {
				t.Error("credentials or channel bindings without TLS")
			}
		})
	}
}

func TestSplit(t *testing.T) {
	tests := []struct {
		path, label, op string
		ok              bool
	}{
		{"/.well-known/est/cacerts", "", "cacerts", true},
		{"/.well-known/est/lbl/simpleenroll", "lbl", "simpleenroll", true},
		{"/.well-known/est/", "", "", false},
		{"/.well-known/est//cacerts", "", "", false},
		{"/.well-known/est/a/b/cacerts", "", "", false},
		{"/.well-known/estcacerts", "", "", false},
		{"/.well-known/est/serverkeygen/return", "", opReturn, true},
		{"/.well-known/est/lbl/serverkeygen/return", "lbl", opReturn, true},
		{"/.well-known/est/a/b/serverkeygen/return", "", "", false},
		{"/.well-known/est//serverkeygen/return", "", "", false},
	}
	for _, tc := range tests {
		l, o, ok := split(tc.path)
		if ok != tc.ok || ok && (l != tc.label || o != tc.op) {
			t.Errorf("split(%q) = %q %q %v", tc.path, l, o, ok)
		}
	}
}

func TestKeyFormat(t *testing.T) {
	tests := []struct {
		accept           []string
		pkcs12, cmsTypes bool
	}{
		{nil, false, false},
		{[]string{"*/*"}, false, false},
		{[]string{"application/pkcs12"}, true, false},
		{[]string{"text/plain, application/PKCS12;q=0.9"}, true, false},
		{[]string{"application/pkcs12", "multipart/mixed"}, false, false},
		{[]string{"multipart/mixed"}, false, false},
		{[]string{";;;"}, false, false},
		{[]string{"multipart/mixed, application/cms"}, false, true},
		{[]string{`application/cms; innerContent=aKeyPackage`}, false, true},
		{[]string{"application/pkcs12, application/cms"}, false, true},
	}
	for _, tc := range tests {
		if p, c := keyFormat(tc.accept); p != tc.pkcs12 || c != tc.cmsTypes {
			t.Errorf("keyFormat(%q) = %v, %v; want %v, %v", tc.accept, p, c, tc.pkcs12, tc.cmsTypes)
		}
	}
}
