package estserver

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"coapca/authority"
	"coapca/est/esttest"
)

// TestServiceLogLevels: a request the service refuses itself is logged at Info, the others at
// Debug; a line below the logger's level is not built, and the observer sees every outcome
// whatever the level.
func TestServiceLogLevels(t *testing.T) {
	_, good := newCSR(t, "dev-log", "")
	for _, tc := range []struct {
		name   string
		level  slog.Level
		body   []byte
		result string   // what the observer sees
		want   []string // in the log; nil = nothing logged
	}{
		{"refused at info", slog.LevelInfo, []byte("junk"), "bad_request",
			[]string{`msg="est request refused"`, `result="bad request"`, `client="CN=dev-log-client`}},
		{"refused at warn", slog.LevelWarn, []byte("junk"), "bad_request", nil},
		{"issued at info", slog.LevelInfo, good, "issued", nil},
		{"issued at debug", slog.LevelDebug, good, "issued",
			[]string{`msg="est request"`, "result=issued", "serial=", `client="CN=dev-log-client`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fa := esttest.New(t)
			var buf bytes.Buffer
			svc := New(fa, slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: tc.level})))
			var seen []string
			svc.SetObserver(func(function, transport, result string, d time.Duration) {
				seen = append(seen, fmt.Sprintf("%s/%s/%s", function, transport, result))
			})
			dev := fa.ClientCert(t, "dev-log-client").Cert
			peer := authority.Requester{Chain: []*x509.Certificate{dev}, Transport: authority.TransportCoAPS, Protocol: authority.ProtocolEST}
			_, _ = svc.Enroll(context.Background(), &Request{Body: tc.body, Requester: peer})
			if got, want := strings.Join(seen, " "), "enroll/coaps/"+tc.result; got != want {
				t.Errorf("observer saw %q, want %q", got, want)
			}
			if tc.want == nil && buf.Len() > 0 {
				t.Errorf("logged at level %v:\n%s", tc.level, buf.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(buf.String(), w) {
					t.Errorf("log lacks %s:\n%s", w, buf.String())
				}
			}
		})
	}
}
