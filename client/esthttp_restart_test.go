package client

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestHTTPSWaitsAcrossServerRestart is the attack of a server restart while a client waits for
// its pending request (202 + Retry-After): the old client failed at the first refused
// connection. It must keep trying while Wait lasts and get its answer from the restarted
// server; before any 202, an unreachable server is reported at once.
func TestHTTPSWaitsAcrossServerRestart(t *testing.T) {
	first := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusAccepted)
	}))
	addr := first.Listener.Addr().String()
	var second *httptest.Server
	defer func() {
		if second != nil {
			second.Close()
		}
	}()
	c, err := NewHTTPS("https://"+addr, HTTPSOptions{VerifyServer: ParseChain, Wait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var sleeps []time.Duration
	c.sleep = func(ctx context.Context, d time.Duration) error {
		sleeps = append(sleeps, d)
		switch len(sleeps) {
		case 1: // waiting out the 202: the server goes down
			first.Close()
		case 3: // after two refused attempts, the restarted server is up on the same address
			l, err := net.Listen("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			second = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = w.Write([]byte("issued"))
			}))
			second.Listener = l
			second.StartTLS()
		}
		return nil
	}
	a, err := c.do(context.Background(), http.MethodPost, "simpleenroll", "application/pkcs10", []byte("csr"))
	if err != nil {
		t.Fatalf("across the restart: %v (waits %v)", err, sleeps)
	}
	if string(a.body) != "issued" {
		t.Fatalf("answer %q", a.body)
	}
	if want := []time.Duration{time.Second, redialFirst, 2 * redialFirst}; len(sleeps) != 3 || sleeps[1] != want[1] || sleeps[2] != want[2] {
		t.Fatalf("waits %v, want %v", sleeps, want)
	}

	// Before any 202, an unreachable server is an error at once.
	second.Close()
	second = nil
	c2, err := NewHTTPS("https://"+addr, HTTPSOptions{VerifyServer: ParseChain, Wait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.sleep = func(ctx context.Context, d time.Duration) error {
		t.Fatalf("waited %v for a server never reached", d)
		return nil
	}
	if _, err := c2.do(context.Background(), http.MethodPost, "simpleenroll", "application/pkcs10", []byte("csr")); err == nil {
		t.Fatal("no error from an unreachable server")
	}
}
