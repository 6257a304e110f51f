package config

import (
	"strings"
	"testing"
)

// TestUpstreamValidate: a registrar section that cannot work is refused before anything starts.
func TestUpstreamValidate(t *testing.T) {
	ok := Upstream{URL: "https://ca.example:8443/est", Trust: "ca.pem"}
	tests := []struct {
		name string
		u    Upstream
		err  string
	}{
		{"off", Upstream{}, ""},
		{"minimal", ok, ""},
		{"plain http upstream (the device's CSR and key in clear)", Upstream{URL: "http://ca.example", Trust: "ca.pem"}, "https://"},
		{"no anchors for the upstream", Upstream{URL: "https://ca.example"}, "upstream.trust"},
		{"certificate without key", Upstream{URL: ok.URL, Trust: "t", Cert: "c.pem"}, "go together"},
		{"password without user", Upstream{URL: ok.URL, Trust: "t", PasswordFile: "p"}, "without upstream.user"},
		{"settings without url", Upstream{Trust: "t"}, "without upstream.url"},
		{"label with a slash", Upstream{URL: ok.URL, Trust: "t", Labels: map[string]string{"a": "b/c"}}, "one path segment"},
		{"negative timeout", Upstream{URL: ok.URL, Trust: "t", Timeout: -1}, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.u.Validate()
			if tt.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("err = %v, want %q", err, tt.err)
			}
		})
	}
}
