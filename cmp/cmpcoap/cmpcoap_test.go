package cmpcoap

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"coapca/authority"
	"coapca/cmp"
	"coapca/cmp/cmpserver"
	"coapca/coap"
)

type fakeSvc struct{ got chan *cmpserver.Request }

func (f *fakeSvc) Handle(_ context.Context, r *cmpserver.Request) *cmpserver.Response {
	f.got <- r
	return &cmpserver.Response{Body: make([]byte, 1500), Result: "ok"} // needs Block2
}

func TestSplit(t *testing.T) {
	tests := []struct {
		path, label, op string
		ann, ok         bool
	}{
		{"/.well-known/cmp", "", "", false, true},
		{"/.well-known/cmp/ir", "", cmpserver.OpIR, false, true},
		{"/.well-known/cmp/p10", "", cmpserver.OpP10CR, false, true},
		{"/.well-known/cmp/p/sensors", "sensors", "", false, true},
		{"/.well-known/cmp/p/sensors/crts", "sensors", cmpserver.OpGenCACerts, false, true},
		{"/.well-known/cmp/ann", "", "", true, true},
		{"/.well-known/cmp/p/sensors/ann", "sensors", "", true, true},
		{"/.well-known/cmp/initialization", "", "", false, false}, // an HTTP label
		{"/.well-known/cmp/p", "", "", false, false},
		{"/.well-known/cmp/a/b", "", "", false, false},
		{"/.well-known/cmpir", "", "", false, false}, // not below the root
	}
	for _, tc := range tests {
		label, op, ann, ok := split(tc.path)
		if ok != tc.ok || ok && (label != tc.label || op != tc.op || ann != tc.ann) {
			t.Errorf("%s: got %q %q %v %v", tc.path, label, op, ann, ok)
		}
	}
}

func TestBinding(t *testing.T) {
	svc := &fakeSvc{got: make(chan *cmpserver.Request, 10)}
	mux := coap.NewMux()
	var srv *coap.Server
	b := New(svc, Options{Labels: []string{"sensors"}, Notify: func(p string, r *coap.Response) { srv.Notify(p, r) }})
	b.Register(mux)
	srv = coap.NewServer(mux, coap.Config{})
	defer srv.Close()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeUDP(pc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := coap.Dial(ctx, "coap://"+pc.LocalAddr().String(), coap.ClientOptions{BlockSize: 256})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// RFC 9482 §2.2: discovery by ct=259.
	wkc, err := c.Do(ctx, &coap.ClientRequest{Method: codes.GET, Path: "/.well-known/core", Query: []string{"ct=259"}})
	if err != nil {
		t.Fatal(err)
	}
	links, err := coap.ParseLinkFormat(wkc.Payload)
	if err != nil || len(links) != 2*(len(operations)+2) {
		t.Fatalf("discovery: %v, %d links: %s", err, len(links), wkc.Payload)
	}
	if !strings.Contains(string(wkc.Payload), "</.well-known/cmp/p/sensors/ann>") || !strings.Contains(string(wkc.Payload), "obs") {
		t.Errorf("discovery misses the observable announcement resource: %s", wkc.Payload)
	}

	tests := []struct {
		name     string
		method   codes.Code
		path     string
		cf       coap.Format
		want     codes.Code
		label    string
		op       string
		reachSvc bool
	}{
		{"259", codes.POST, "/.well-known/cmp", coap.CF(CFPKIXCMP), codes.Changed, "", "", true},
		{"42 on a label and operation", codes.POST, "/.well-known/cmp/p/sensors/kur", coap.CF(CFOctetStream), codes.Changed, "sensors", cmpserver.OpKUR, true},
		{"no Content-Format, unlisted label", codes.POST, "/.well-known/cmp/p/other/rr", coap.Format{}, codes.Changed, "other", cmpserver.OpRR, true},
		{"wrong Content-Format", codes.POST, "/.well-known/cmp", coap.CF(60), codes.UnsupportedMediaType, "", "", false},
		{"GET", codes.GET, "/.well-known/cmp/ir", coap.Format{}, codes.MethodNotAllowed, "", "", false},
		{"unknown operation", codes.POST, "/.well-known/cmp/initialization", coap.CF(CFPKIXCMP), codes.NotFound, "", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rsp, err := c.Do(ctx, &coap.ClientRequest{Method: tc.method, Path: tc.path, ContentFormat: tc.cf, Payload: make([]byte, 600)})
			if err != nil {
				t.Fatal(err)
			}
			if rsp.Code != tc.want {
				t.Fatalf("code %v, want %v: %s", rsp.Code, tc.want, rsp.Payload)
			}
			if !tc.reachSvc {
				return
			}
			r := <-svc.got
			if r.Label != tc.label || r.Operation != tc.op || r.Transport != authority.TransportCoAP || len(r.Body) != 600 {
				t.Errorf("service saw %+v", r)
			}
			if rsp.ContentFormat != coap.CF(CFPKIXCMP) || len(rsp.Payload) != 1500 {
				t.Errorf("answer: cf %v, %d bytes", rsp.ContentFormat, len(rsp.Payload))
			}
		})
	}

	// RFC 9482 §2.6: an observer of …/p/sensors/ann gets announcements for its label and for
	// all labels; not for another label.
	got := make(chan []byte, 10)
	octx, ocancel := context.WithCancel(ctx)
	defer ocancel()
	go c.Observe(octx, "/.well-known/cmp/p/sensors/ann", func(r *coap.Response) { got <- r.Payload })
	if first := <-got; len(first) != 0 {
		t.Fatalf("first answer before any announcement: %d bytes", len(first))
	}
	// The server registers an observer before it answers (coap.Server), so the first answer
	// proves the registration.
	if n := srv.Observers("/.well-known/cmp/p/sensors/ann"); n != 1 {
		t.Fatalf("%d observers after the registration was answered", n)
	}
	b.Announce([]byte("other"), cmp.TypeCAnn, "other")
	b.Announce([]byte("mine"), cmp.TypeCAnn, "sensors")
	b.Announce([]byte("all"), cmp.TypeCRLAnn, "")
	for _, want := range []string{"mine", "all"} {
		select {
		case p := <-got:
			if string(p) != want {
				t.Errorf("notification %q, want %q", p, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no notification %q", want)
		}
	}
}

// FuzzSplit: any Uri-Path is parsed without panic, and an accepted one has a clean label.
func FuzzSplit(f *testing.F) {
	for _, s := range []string{"/.well-known/cmp", "/.well-known/cmp/p/a/ir", "/.well-known/cmp/p//ann", "/.well-known/cmpx", "/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		label, _, _, ok := split(path)
		if ok && strings.Contains(label, "/") {
			t.Fatalf("label %q from %q", label, path)
		}
	})
}
