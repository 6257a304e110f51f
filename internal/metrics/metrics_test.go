package metrics

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestHandler(t *testing.T) {
	m := New()
	m.Observe("est-coaps", "enroll", "ok", 3*time.Millisecond)
	m.Observe("est-coaps", "enroll", "forbidden", time.Millisecond)
	m.CounterFunc("coap_retransmissions_total", "test", func() float64 { return 7 })
	m.GaugeFunc("dtls_sessions", "test", func() float64 { return 2 })
	healthy := true
	srv := httptest.NewServer(m.Handler(func(context.Context) error {
		if healthy {
			return nil
		}
		return errors.New("store closed")
	}))
	defer srv.Close()

	body := get(t, srv.URL+"/metrics", 200)
	for _, want := range []string{
		`coapca_requests_total{function="enroll",protocol="est-coaps",result="ok"} 1`,
		`coapca_requests_total{function="enroll",protocol="est-coaps",result="forbidden"} 1`,
		`coapca_request_duration_seconds_count{function="enroll",protocol="est-coaps"} 2`,
		`coapca_coap_retransmissions_total 7`,
		`coapca_dtls_sessions 2`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	get(t, srv.URL+"/healthz", 200)
	healthy = false
	if b := get(t, srv.URL+"/healthz", 503); !strings.Contains(b, "store closed") {
		t.Errorf("unhealthy body %q", b)
	}
}

func get(t *testing.T, url string, code int) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != code {
		t.Fatalf("GET %s = %d, want %d: %s", url, resp.StatusCode, code, b)
	}
	return string(b)
}
