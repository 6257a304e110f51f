// Package pgtest gives tests a fresh, empty PostgreSQL database on the cluster named by the
// environment variable COAPCA_TEST_POSTGRES (a DSN with the right to CREATE DATABASE; the
// cluster that scripts/test.sh starts). With CI=true a missing DSN fails the test: the
// PostgreSQL tests always run in CI. Elsewhere they are skipped with a message that says how to
// run them.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvDSN is the environment variable holding the test cluster's DSN.
const EnvDSN = "COAPCA_TEST_POSTGRES"

// BaseDSN returns the test cluster's DSN, or fails (CI=true) or skips t when there is none.
func BaseDSN(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv(EnvDSN)
	if dsn != "" {
		return dsn
	}
	msg := EnvDSN + " is not set: PostgreSQL tests need a cluster (scripts/test.sh starts one; " +
		"see docs/deployment.md, \"Testing against PostgreSQL\")"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// NewDatabase creates an empty database for t on the test cluster and returns its DSN; the
// database is dropped when t ends.
func NewDatabase(t testing.TB) string {
	t.Helper()
	base := BaseDSN(t)
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	name := "coapca_test_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("pgtest: connect to %s: %v", EnvDSN, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	dsn, err := WithDatabase(base, name)
	if err != nil {
		t.Fatal(err)
	}
	return dsn
}

// WithDatabase returns dsn naming database name instead of its own (URL or key=value form).
func WithDatabase(dsn, name string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", err
		}
		u.Path = "/" + name
		return u.String(), nil
	}
	// key=value: a later keyword overrides an earlier one.
	return dsn + " dbname=" + name, nil
}
