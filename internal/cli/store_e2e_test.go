package cli

import (
	"context"
	"strings"
	"testing"

	"coapca/internal/config"
	"coapca/store/postgres/pgtest"
)

// TestCAWithPostgresStore: a server on PostgreSQL records its certificates there; `coapca ca
// list --store postgres://…` (another process, say on another host) sees them, and without
// --store the data directory's SQLite database, which the server never wrote, has none; a
// --store that is no PostgreSQL URL is a usage error.
func TestCAWithPostgresStore(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	if !strings.HasPrefix(dsn, "postgres://") && !strings.HasPrefix(dsn, "postgresql://") {
		t.Fatalf("%s must be a postgres:// URL for this test (--store takes URLs only)", pgtest.EnvDSN)
	}
	dir := t.TempDir()
	s := testServerAt(t, dir, func(c *config.Config) { c.Store = config.Store{Driver: config.DriverPostgres, DSN: dsn} })
	ctx := context.Background()
	d := s.data
	mustCLI(t, "est", "enroll", "--server", s.coapsURL, "--cert", d.Paths.Device, "--key", d.Paths.DeviceKey,
		"--trust", d.Paths.Root, "--subject", "CN=on-postgres", "--out", dir+"/cert.pem", "--key-out", dir+"/cert.key")
	if out := mustCLI(t, "ca", "list", "--data", dir, "--store", dsn); !strings.Contains(out, "on-postgres") {
		t.Errorf("ca list --store %s lacks the certificate:\n%s", dsn, out)
	}
	if out, errOut, code := cli(ctx, "ca", "list", "--data", dir); code != 0 || strings.Contains(out, "on-postgres") {
		t.Errorf("ca list on the data directory's SQLite: exit %d, %s%s; want no certificate of the PostgreSQL server", code, out, errOut)
	}
	if _, errOut, code := cli(ctx, "ca", "list", "--data", dir, "--store", "mysql://x"); code == 0 || !strings.Contains(errOut, "--store") {
		t.Errorf("--store mysql://x: exit %d, %s", code, errOut)
	}
}
