package authority

import (
	"strings"
	"testing"
)

// TestCheckPolicy: the store-less check refuses what New refuses (a rule naming a source that
// does not exist would otherwise admit nobody, or be misread) and accepts the default.
func TestCheckPolicy(t *testing.T) {
	for _, tt := range []struct {
		name    string
		pol     Policy
		wantErr string
	}{
		{"default", Policy{}, ""},
		{"unknown trust store", Policy{Profiles: []ProfileOptions{{Label: "x", Requesters: []RequesterRule{{Kind: "idevid", From: []string{"acmee"}}}}}}, "acmee"},
		{"empty MAC secret", Policy{MACSecrets: []MACSecret{{Reference: "line-1"}}}, "line-1"},
		{"duplicate label", Policy{Profiles: []ProfileOptions{{Label: "a"}, {Label: "a"}}}, "twice"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckPolicy(tt.pol)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}
