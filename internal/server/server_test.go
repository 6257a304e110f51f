package server

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"coapca/internal/config"
)

// quiet is the logger of these tests; -v shows the server's logs.
func quiet() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// TestOpenHouseRefusesMissingDataDirectory: `coapca ca revoke --data TYPO` must not mint a new
// CA at TYPO and revoke nothing there; only Start creates a data directory.
func TestOpenHouseRefusesMissingDataDirectory(t *testing.T) {
	for _, tc := range []struct {
		name    string
		prepare func(dir string) error
	}{
		{"missing", func(string) error { return nil }},
		{"empty directory", func(dir string) error { return os.Mkdir(dir, 0o700) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "typo")
			if err := tc.prepare(dir); err != nil {
				t.Fatal(err)
			}
			cfg := config.Default()
			cfg.Data = dir
			h, err := OpenHouse(context.Background(), cfg, quiet())
			if err == nil {
				h.Close()
				t.Fatal("OpenHouse opened a data directory that was not there")
			}
			if !strings.Contains(err.Error(), "no data directory") {
				t.Errorf("error %q does not say what is missing", err)
			}
			if _, err := os.Stat(filepath.Join(dir, "ca.pem")); !os.IsNotExist(err) {
				t.Errorf("OpenHouse created a CA at %s", dir)
			}
		})
	}
}

// TestStartRefusesUnknownCipherSuite: a mistyped DTLS cipher suite is refused with its name
// before the first start creates a data directory (a CA the operator did not mean to make).
func TestStartRefusesUnknownCipherSuite(t *testing.T) {
	for _, suite := range []string{"TLS_RSA_WITH_NULL_SHA", "TLS_ECDHE_ECDSA_WITH_AES_128_CCM8", ""} {
		t.Run(suite, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			cfg := config.Default()
			cfg.Data = dir
			cfg.Listen = config.Listen{CoAPS: "127.0.0.1:0"}
			cfg.DTLS.CipherSuites = []string{"TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8", suite}
			s, err := Start(context.Background(), cfg, quiet())
			if err == nil {
				s.Close()
				t.Fatalf("Start accepted cipher suite %q", suite)
			}
			if !strings.Contains(err.Error(), "unknown or unsupported cipher suite") {
				t.Errorf("error %q does not name the problem", err)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("Start created %s before refusing the configuration", dir)
			}
		})
	}
}

// TestStartListeners: each listener of cfg.Listen runs on its own, and an address that is off
// reports "" (and no metrics address); the welcome text names only what runs.
func TestStartListeners(t *testing.T) {
	dir := t.TempDir() // one data directory for every case: created once, reused after
	for _, tc := range []struct {
		name                      string
		listen                    config.Listen
		coaps, coap, http, metric bool
		welcome                   []string
	}{
		{"none", config.Listen{}, false, false, false, false, []string{"no listener enabled"}},
		{"coaps", config.Listen{CoAPS: "127.0.0.1:0"}, true, false, false, false, []string{"EST-coaps on coaps://127.0.0.1:"}},
		{"coap", config.Listen{CoAP: "127.0.0.1:0"}, false, true, false, false, []string{"EST-oscore and CMP over CoAP on coap://127.0.0.1:"}},
		{"http and metrics", config.Listen{HTTP: "127.0.0.1:0", Metrics: "127.0.0.1:0"}, false, false, true, true,
			[]string{"CMP over HTTP on http://127.0.0.1:", "metrics on http://127.0.0.1:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.Data = dir
			cfg.Listen = tc.listen
			s, err := Start(context.Background(), cfg, quiet())
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			for _, l := range []struct {
				name, url, scheme string
				on                bool
			}{{"coaps", s.CoAPSURL(), "coaps://127.0.0.1:", tc.coaps}, {"coap", s.CoAPURL(), "coap://127.0.0.1:", tc.coap},
				{"http", s.HTTPURL(), "http://127.0.0.1:", tc.http}} {
				if got := strings.HasPrefix(l.url, l.scheme); got != l.on || (!l.on && l.url != "") {
					t.Errorf("%s URL = %q, want on = %v", l.name, l.url, l.on)
				}
			}
			if got := s.MetricsAddr() != nil; got != tc.metric {
				t.Errorf("metrics address %v, want on = %v", s.MetricsAddr(), tc.metric)
			}
			var w bytes.Buffer
			s.PrintWelcome(&w, "coapca")
			for _, want := range tc.welcome {
				if !strings.Contains(w.String(), want) {
					t.Errorf("welcome lacks %q:\n%s", want, w.String())
				}
			}
		})
	}
}

func TestConnectHost(t *testing.T) {
	for _, tc := range []struct {
		addr, defaultPort, want string
	}{
		{":5684", "5684", "localhost"},
		{"0.0.0.0:5684", "5684", "localhost"},
		{"[::]:5683", "5683", "localhost"},
		{"127.0.0.1:5684", "5684", "127.0.0.1"},
		{"127.0.0.1:15684", "5684", "127.0.0.1:15684"},
		{"[::1]:8080", "", "[::1]:8080"},
		{":8080", "", "localhost:8080"},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			a, err := net.ResolveUDPAddr("udp", tc.addr)
			if err != nil {
				t.Fatal(err)
			}
			if got := connectHost(a, tc.defaultPort); got != tc.want {
				t.Errorf("connectHost(%s, %q) = %q, want %q", a, tc.defaultPort, got, tc.want)
			}
		})
	}
}

// TestStartRefusesBadStore: a mistaken store section (a typo in the driver, a DSN for SQLite,
// an unreadable DSN file, a DSN that is no connection string) is refused before the first
// start creates a data directory with new CA keys.
func TestStartRefusesBadStore(t *testing.T) {
	tests := []struct {
		name    string
		store   config.Store
		wantErr string
	}{
		{"driver typo", config.Store{Driver: "postgress", DSN: "postgres://x@127.0.0.1/x"}, "postgress"},
		{"dsn for sqlite", config.Store{DSN: "postgres://x@127.0.0.1/x"}, "for driver postgres"},
		{"missing dsn file", config.Store{Driver: "postgres", DSNFile: "/nonexistent/dsn"}, "store.dsn_file"},
		{"postgres without dsn", config.Store{Driver: "postgres"}, "exactly one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			cfg := config.Default()
			cfg.Data, cfg.Store = dir, tt.store
			cfg.Listen = config.Listen{}
			s, err := Start(context.Background(), cfg, quiet())
			if err == nil {
				s.Close()
				t.Fatal("started with a bad store configuration")
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not say %q", err, tt.wantErr)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("a data directory was created at %s before the store configuration was refused", dir)
			}
		})
	}
}
