package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCMPUpstream: the cmp_upstream section decodes strictly and Validate refuses what cannot
// work before anything touches the disk or the network.
func TestCMPUpstream(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte(`
cmp_upstream:
  url: https://ca.example/.well-known/cmp
  mode: ra
  timeout: 5s
  max_concurrent: 4
  ra_cert_file: ra.pem
  ra_key_file: ra.key
  profiles:
    - {label: sensors, mode: transparent, upstream_label: iot, ra_verified: true}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	u := cfg.CMPUpstream
	if u.URL != "https://ca.example/.well-known/cmp" || u.Mode != "ra" || u.Timeout != 5*time.Second || u.MaxConcurrent != 4 ||
		len(u.Profiles) != 1 || u.Profiles[0].UpstreamLabel != "iot" || !u.Profiles[0].RAVerified {
		t.Fatalf("decoded %+v", u)
	}
	if err := u.Validate(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		c    CMPUpstream
		want string
	}{
		{"off", CMPUpstream{}, ""},
		{"coap URL", CMPUpstream{URL: "coap://ca.example"}, "http:// or https://"},
		{"no host", CMPUpstream{URL: "http:///cmp"}, "http:// or https://"},
		{"empty label", CMPUpstream{URL: "http://ca", Profiles: []CMPUpstreamProfile{{}}}, "label"},
		{"repeated label", CMPUpstream{URL: "http://ca", Profiles: []CMPUpstreamProfile{{Label: "a"}, {Label: "a"}}}, "repeated"},
		{"TLS cert without key", CMPUpstream{URL: "https://ca", CertFile: "c.pem"}, "cert_file and key_file"},
		{"RA key without cert", CMPUpstream{URL: "https://ca", RAKeyFile: "k.pem"}, "ra_cert_file and ra_key_file"},
	}
	for _, tc := range tests {
		err := tc.c.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	if err := os.WriteFile(path, []byte("cmp_upstream:\n  urll: http://x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil {
		t.Error("a misspelt cmp_upstream field was accepted")
	}
}
