package cmphttp

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"coapca/authority"
	"coapca/cmp/cmpserver"
)

type fakeSvc struct{ got *cmpserver.Request }

func (f *fakeSvc) Handle(_ context.Context, r *cmpserver.Request) *cmpserver.Response {
	f.got = r
	return &cmpserver.Response{Body: []byte{0x30, 0x00}, Result: "error"}
}

func TestSplit(t *testing.T) {
	tests := []struct {
		path, label, op string
		ok              bool
	}{
		{"/.well-known/cmp", "", "", true},
		{"/.well-known/cmp/", "", "", true},
		{"/.well-known/cmp/p/sensors", "sensors", "", true},
		{"/.well-known/cmp/p/sensors/initialization", "sensors", cmpserver.OpIR, true},
		{"/.well-known/cmp/keyupdate", "", cmpserver.OpKUR, true},
		{"/.well-known/cmp/pkcs10", "", cmpserver.OpP10CR, true},
		{"/.well-known/cmp/getcrls", "", cmpserver.OpGenCRLs, true},
		{"/.well-known/cmp/ir", "", "", false}, // a CoAP label, not an HTTP one
		{"/.well-known/cmp/p/", "", "", false},
		{"/.well-known/cmp/p/x/y/z", "", "", false},
		{"/other", "", "", false},
		{"/.well-known/cmpkeyupdate", "", "", false}, // not below the root
	}
	for _, tc := range tests {
		label, op, ok := split(tc.path)
		if ok != tc.ok || ok && (label != tc.label || op != tc.op) {
			t.Errorf("%s: got %q %q %v", tc.path, label, op, ok)
		}
	}
}

func TestHandler(t *testing.T) {
	svc := &fakeSvc{}
	mux := http.NewServeMux()
	New(svc, nil).Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	tests := []struct {
		name, method, path, ct string
		want                   int
	}{
		{"post", http.MethodPost, "/.well-known/cmp/p/sensors/certification", ContentType, http.StatusOK},
		{"post with parameters", http.MethodPost, "/.well-known/cmp", ContentType + "; charset=binary", http.StatusOK},
		{"get", http.MethodGet, "/.well-known/cmp", ContentType, http.StatusMethodNotAllowed},
		{"wrong type", http.MethodPost, "/.well-known/cmp", "application/octet-stream", http.StatusUnsupportedMediaType},
		{"unknown path", http.MethodPost, "/.well-known/cmp/nope", ContentType, http.StatusNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, srv.URL+tc.path, bytes.NewReader([]byte{0x30, 0x00}))
			req.Header.Set("Content-Type", tc.ct)
			rsp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			rsp.Body.Close()
			if rsp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", rsp.StatusCode, tc.want)
			}
			if tc.want == http.StatusOK && rsp.Header.Get("Content-Type") != ContentType {
				t.Errorf("Content-Type %q", rsp.Header.Get("Content-Type"))
			}
		})
	}
	if svc.got == nil || svc.got.Transport != authority.TransportHTTP {
		t.Errorf("service saw %+v", svc.got)
	}
}

// FuzzSplit: any request path is parsed without panic, and an accepted one has a clean label.
func FuzzSplit(f *testing.F) {
	for _, s := range []string{"/.well-known/cmp", "/.well-known/cmp/p/a/initialization", "/.well-known/cmp/p//x", "/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		label, _, ok := split(path)
		if ok && strings.Contains(label, "/") {
			t.Fatalf("label %q from %q", label, path)
		}
	})
}
