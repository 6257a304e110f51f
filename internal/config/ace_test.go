package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestACEKeyIssuerRequired: with keys of several authorization servers, a key that names no
// issuer would let its AS vouch for any iss; the configuration is refused before the data
// directory is made.
func TestACEKeyIssuerRequired(t *testing.T) {
	for _, tt := range []struct {
		name string
		keys []ACEKey
		want string // "" = this check passes
	}{
		{"attack: two keys, the second names no issuer", []ACEKey{{KID: "01", Alg: 10, Issuer: "as1"}, {KID: "02", Alg: 10}}, "ace.keys[1]: issuer is required"},
		{"attack: two keys, blank issuer", []ACEKey{{KID: "01", Alg: 10, Issuer: " "}, {KID: "02", Alg: 10, Issuer: "as2"}}, "ace.keys[0]: issuer is required"},
		{"two keys, both named", []ACEKey{{KID: "01", Alg: 10, Issuer: "as1"}, {KID: "02", Alg: 10, Issuer: "as2"}}, ""},
		{"one key without issuer (as_name)", []ACEKey{{KID: "01", Alg: 10}}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := ACE{Audiences: []string{"rs"}, Keys: tt.keys}.validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("validate = %v, want %q", err, tt.want)
			}
			data := filepath.Join(t.TempDir(), "data")
			err = Config{Data: data, ACE: ACE{Audiences: []string{"rs"}, Keys: tt.keys}}.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Config.Validate = %v, want %q", err, tt.want)
			}
			if _, err := os.Stat(data); !os.IsNotExist(err) {
				t.Fatalf("the data directory was touched: %v", err)
			}
		})
	}
}
