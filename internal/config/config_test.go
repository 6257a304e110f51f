package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoad(t *testing.T) {
	tests := []struct {
		name, yaml string
		check      func(t *testing.T, c Config)
		err        string
	}{
		{name: "defaults kept", yaml: "log:\n  level: debug\n", check: func(t *testing.T, c Config) {
			if c.Data != "./coapca-data" || c.Listen.CoAPS != ":5684" || c.Log.Level != "debug" {
				t.Errorf("got %+v", c)
			}
		}},
		{name: "durations and profiles", yaml: `
data: /var/lib/coapca
coap:
  separate_after: 250ms
authority:
  profiles:
    - label: manual
      manual_approval: true
      retry_after: 10s
`, check: func(t *testing.T, c Config) {
			if c.CoAP.SeparateAfter != 250*time.Millisecond {
				t.Errorf("separate_after = %v", c.CoAP.SeparateAfter)
			}
			if len(c.Authority.Profiles) != 1 || !c.Authority.Profiles[0].ManualApproval || c.Authority.Profiles[0].RetryAfter != 10*time.Second {
				t.Errorf("profiles = %+v", c.Authority.Profiles)
			}
		}},
		{name: "typo rejected", yaml: "lsten:\n  coaps: :1\n", err: "field lsten not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "c.yaml")
			if err := os.WriteFile(p, []byte(tt.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := Load(p)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}
