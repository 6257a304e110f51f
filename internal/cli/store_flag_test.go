package cli

import (
	"testing"

	"coapca/internal/config"
)

// TestStoreFlag: --store takes "sqlite" or a PostgreSQL URL and replaces the configuration's
// store section; anything else is a usage error that leaves the configuration alone.
func TestStoreFlag(t *testing.T) {
	fromFile := config.Store{Driver: "postgres", DSNFile: "/etc/coapca/dsn"}
	tests := []struct {
		flag string
		want config.Store
		ok   bool
	}{
		{"", fromFile, true},
		{"sqlite", config.Store{Driver: "sqlite"}, true},
		{"postgres://ca@db:5432/ca?sslmode=verify-full", config.Store{Driver: "postgres", DSN: "postgres://ca@db:5432/ca?sslmode=verify-full"}, true},
		{"postgresql://ca@db/ca", config.Store{Driver: "postgres", DSN: "postgresql://ca@db/ca"}, true},
		{"postgres", fromFile, false},
		{"mysql://ca@db/ca", fromFile, false},
		{"host=db dbname=ca", fromFile, false},
	}
	for _, tt := range tests {
		cfg := config.Default()
		cfg.Store = fromFile
		err := applyStoreFlag(&cfg, tt.flag)
		if (err == nil) != tt.ok || cfg.Store != tt.want {
			t.Errorf("--store %q: store %+v, err %v; want %+v, ok %v", tt.flag, cfg.Store, err, tt.want, tt.ok)
		}
	}
}
