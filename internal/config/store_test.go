package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStoreValidate: every mistaken store section is refused with a message naming the field,
// and a DSN file is read (trimmed) only for driver postgres.
func TestStoreValidate(t *testing.T) {
	dir := t.TempDir()
	dsnFile := filepath.Join(dir, "dsn")
	if err := os.WriteFile(dsnFile, []byte("  postgres://ca@db:5432/ca?sslmode=verify-full\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		s       Store
		wantDSN string
		wantErr string // substring; "" = valid
	}{
		{"default", Store{}, "", ""},
		{"sqlite", Store{Driver: "sqlite"}, "", ""},
		{"typo in driver", Store{Driver: "postgress", DSN: "postgres://x"}, "", `"postgress" is not sqlite or postgres`},
		{"dsn for sqlite", Store{DSN: "postgres://x"}, "", "for driver postgres"},
		{"dsn file for sqlite", Store{Driver: "sqlite", DSNFile: dsnFile}, "", "for driver postgres"},
		{"postgres without dsn", Store{Driver: "postgres"}, "", "exactly one of store.dsn and store.dsn_file"},
		{"postgres with both", Store{Driver: "postgres", DSN: "postgres://x", DSNFile: dsnFile}, "", "exactly one"},
		{"postgres dsn", Store{Driver: "postgres", DSN: "postgres://x"}, "postgres://x", ""},
		{"postgres dsn file", Store{Driver: "postgres", DSNFile: dsnFile}, "postgres://ca@db:5432/ca?sslmode=verify-full", ""},
		{"postgres dsn file missing", Store{Driver: "postgres", DSNFile: filepath.Join(dir, "nope")}, "", "store.dsn_file"},
		{"postgres dsn file empty", Store{Driver: "postgres", DSNFile: empty}, "", "is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.s.Validate()
			if tt.s.Driver == DriverPostgres && err == nil {
				var dsn string
				dsn, err = tt.s.PostgresDSN()
				if err == nil && dsn != tt.wantDSN {
					t.Errorf("DSN = %q, want %q", dsn, tt.wantDSN)
				}
			}
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tt.wantErr != "" && err == nil:
				t.Errorf("accepted, want an error with %q", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Errorf("error %q does not say %q", err, tt.wantErr)
			}
		})
	}
}

// TestLoadStore: the store section is read from YAML, and a misspelled field in it is an error.
func TestLoadStore(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("store:\n  driver: postgres\n  dsn: postgres://ca@db/ca\n"), 0o600)
	cfg, err := Load(good)
	if err != nil || cfg.Store != (Store{Driver: "postgres", DSN: "postgres://ca@db/ca"}) {
		t.Fatalf("Load = %+v, %v", cfg.Store, err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("store:\n  driver: postgres\n  dns: postgres://ca@db/ca\n"), 0o600)
	if _, err := Load(bad); err == nil || !strings.Contains(err.Error(), "dns") {
		t.Fatalf("misspelled store field: %v", err)
	}
}
