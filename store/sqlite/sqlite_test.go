package sqlite

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"coapca/store"
	"coapca/store/storetest"
)

func openTemp(t testing.TB, path string) *Store {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "test.db")
	}
	s, err := Open(context.Background(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openTemp(t, "") })
}

func TestReopenKeepsData(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "x.db")
	s := openTemp(t, path)
	p, _, err := s.CreatePending(ctx, &store.Pending{RequestKey: "k", Label: "manual"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RecordIssued(ctx, &store.Cert{Serial: "1", DER: []byte{1}}); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s = openTemp(t, path) // migrations are idempotent
	defer s.Close()
	got, err := s.Pending(ctx, p.ID)
	if err != nil || got.Status != store.StatusPending || got.Label != "manual" {
		t.Fatalf("pending after reopen: %+v, %v", got, err)
	}
	if _, err := s.Cert(ctx, "1"); err != nil {
		t.Fatal(err)
	}
	var v int
	if err := s.db.QueryRow("PRAGMA user_version").Scan(&v); err != nil || v != SchemaVersion {
		t.Errorf("user_version = %d, %v; want %d", v, err, SchemaVersion)
	}
	var mode string
	if err := s.db.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode = %q, %v", mode, err)
	}
	var sync int
	if err := s.db.QueryRow("PRAGMA synchronous").Scan(&sync); err != nil || sync != 2 {
		t.Errorf("synchronous = %d, %v; want 2 (FULL)", sync, err)
	}
}

// TestMigrateFromVersion1 upgrades a database written by the schema-1 build: its data stays and
// the unconfirmed table of schema 2 works.
func TestMigrateFromVersion1(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "v1.db")
	s := openTemp(t, path)
	if err := s.RecordIssued(ctx, &store.Cert{Serial: "1", DER: []byte{1}}); err != nil {
		t.Fatal(err)
	}
	// Make it a schema-1 database, as the previous release left it.
	if _, err := s.db.Exec(`DROP TABLE cmp_transactions; DROP TABLE package_deliveries; DROP TABLE packages;
		DROP TABLE key_package_returns; DROP TABLE unconfirmed;
		ALTER TABLE certificates DROP COLUMN cert_sha256; ALTER TABLE certificates DROP COLUMN key_id; PRAGMA user_version = 1`); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s = openTemp(t, path)
	defer s.Close()
	var v int
	if err := s.db.QueryRow("PRAGMA user_version").Scan(&v); err != nil || v != SchemaVersion {
		t.Fatalf("user_version = %d, %v; want %d", v, err, SchemaVersion)
	}
	if _, err := s.Cert(ctx, "1"); err != nil {
		t.Fatalf("certificate lost by the migration: %v", err)
	}
	if err := s.AddUnconfirmed(ctx, store.Unconfirmed{Serial: "1", Deadline: time.Unix(100, 0)}); err != nil {
		t.Fatal(err)
	}
	if due, err := s.DueUnconfirmed(ctx, time.Unix(100, 0), 0); err != nil || len(due) != 1 {
		t.Fatalf("due after migration: %v, %v", due, err)
	}
	// Schema 4's package tables exist and work.
	p := &store.Package{Kind: "symmetrickeys", Target: "serial:1", Name: "k", Content: []byte{0x30, 0}}
	if err := s.AddPackage(ctx, p); err != nil {
		t.Fatalf("packages after migration: %v", err)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.db")
	s := openTemp(t, path)
	if _, err := s.db.Exec(fmt.Sprintf("PRAGMA user_version = %d", SchemaVersion+1)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := Open(context.Background(), path, Options{}); err == nil {
		t.Fatal("opened a database with a newer schema")
	}
}

// TestTwoHandles simulates the server and a `coapca ca approve` process: two independent
// handles on one file, writing at the same time.
func TestTwoHandles(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "x.db")
	server, cli := openTemp(t, path), openTemp(t, path)
	defer server.Close()
	defer cli.Close()
	p, _, err := server.CreatePending(ctx, &store.Pending{RequestKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errc := make(chan error, 200)
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := range 100 {
			if err := server.RecordIssued(ctx, &store.Cert{Serial: fmt.Sprintf("a%d", i), DER: []byte{1}}); err != nil {
				errc <- err
			}
		}
	}()
	go func() {
		defer wg.Done()
		for range 100 {
			if _, err := cli.NextCounter(ctx, "n"); err != nil {
				errc <- err
			}
		}
		if err := cli.DecidePending(ctx, p.ID, store.StatusApproved, ""); err != nil {
			errc <- err
		}
	}()
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	got, err := server.Pending(ctx, p.ID)
	if err != nil || got.Status != store.StatusApproved {
		t.Errorf("server sees %+v, %v", got, err)
	}
	err = server.RecordIssued(ctx, &store.Cert{Serial: "a1", DER: []byte{1}})
	if !errors.Is(err, store.ErrDuplicateSerial) {
		t.Errorf("err = %v", err)
	}
}

// BenchmarkRecordIssued measures fsync'd commits (synchronous=FULL).
func BenchmarkRecordIssued(b *testing.B) {
	s := openTemp(b, "")
	defer s.Close()
	ctx := context.Background()
	der := make([]byte, 600)
	start := time.Now()
	i := 0
	for b.Loop() {
		if err := s.RecordIssued(ctx, &store.Cert{Serial: fmt.Sprintf("%x", i), DER: der}); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(i)/time.Since(start).Seconds(), "commits/s")
}

// BenchmarkRecordIssuedParallel shows group commit: parallel callers share fsyncs.
func BenchmarkRecordIssuedParallel(b *testing.B) {
	s := openTemp(b, "")
	defer s.Close()
	ctx := context.Background()
	der := make([]byte, 600)
	var n atomic.Int64
	start := time.Now()
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			if err := s.RecordIssued(ctx, &store.Cert{Serial: fmt.Sprintf("%x", i), DER: der}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
}

// schemaOf lists the tables and indexes of the database, to compare a migrated schema with a
// fresh one.
func schemaOf(t *testing.T, s *Store) string {
	t.Helper()
	rows, err := s.db.Query(`SELECT type, name, coalesce(sql, '') FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out string
	for rows.Next() {
		var typ, name, sql string
		if err := rows.Scan(&typ, &name, &sql); err != nil {
			t.Fatal(err)
		}
		out += typ + " " + name + ": " + strings.Join(strings.Fields(sql), " ") + "\n"
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestMigrateFromEveryVersion: a database left at every earlier schema version, with a
// certificate in it, migrates to the current one: the certificate stays, the schema equals a
// fresh one, and the tables added later work.
func TestMigrateFromEveryVersion(t *testing.T) {
	ctx := context.Background()
	want := schemaOf(t, openTemp(t, ""))
	kid := []byte{0x5e, 0xed}
	der, err := storetest.CertDER(0x5eed, kid)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	for from := 1; from < SchemaVersion; from++ {
		t.Run(fmt.Sprintf("from %d", from), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "old.db")
			old, err := open(ctx, path, Options{}, from)
			if err != nil {
				t.Fatal(err)
			}
			// Written as that version did (RecordIssued writes the current columns).
			if _, err := old.db.ExecContext(ctx, `INSERT INTO certificates (serial, subject, issuer, not_before,
				not_after, der, label, op, protocol, transport, requester_subject, requester_issuer, requester_serial,
				requester_ref, requester_addr, pending_id, issued_at) VALUES (?, '', '', 0, 0, ?, '', '', '', '', '', '', '', '', '', '', 0)`,
				"5eed", der); err != nil {
				t.Fatal(err)
			}
			old.Close()
			s := openTemp(t, path)
			defer s.Close()
			if got := schemaOf(t, s); got != want {
				t.Errorf("schema migrated from %d:\n%s\nwant\n%s", from, got, want)
			}
			if _, err := s.Cert(ctx, "5eed"); err != nil {
				t.Fatalf("certificate lost by the migration: %v", err)
			}
			// Schema 6 filled in the hash and key identifier of the rows already there (the row
			// above is written without them, as versions before 6 did: from 6 on, RecordIssued
			// writes them and the backfill does not run again).
			if l, err := s.ListCerts(ctx, store.CertFilter{CertSHA256Prefix: sum[:8], KeyID: kid}); err != nil || (len(l) != 1 && from < 6) {
				t.Fatalf("certificate by x5t and kid after the migration: %v, %v", l, err)
			}
			if err := s.AddUnconfirmed(ctx, store.Unconfirmed{Serial: "5eed", Deadline: time.Unix(100, 0)}); err != nil {
				t.Fatal(err)
			}
			if err := s.PutCMPTransaction(ctx, store.CMPTransaction{ID: []byte("tx"), Expires: time.Unix(100, 0)}); err != nil {
				t.Fatal(err)
			}
			if err := s.AddKeyPackageReturn(ctx, &store.KeyPackageReturn{Kind: "receipt", CertSerial: "5eed"}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// BenchmarkAdvanceCounter measures the shared OSCORE replay check (one write per request of a
// pre-shared context).
func BenchmarkAdvanceCounter(b *testing.B) {
	s := openTemp(b, filepath.Join(b.TempDir(), "bench.db"))
	ctx := context.Background()
	var v int64
	for b.Loop() {
		v++
		if ok, err := s.AdvanceCounter(ctx, "oscore-replay:bench", v); err != nil || !ok {
			b.Fatal(ok, err)
		}
	}
}

// TestWriteConnection: every write of the store runs on its one write connection (held, so
// that its page cache survives from one commit to the next), the pool's connections see what
// it committed, and a write connection that database/sql has given up on is replaced: the
// next write takes a fresh connection from the pool and succeeds.
func TestWriteConnection(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, "")
	defer s.Close()
	for _, serial := range []string{"01", "02"} {
		if err := s.RecordIssued(ctx, lookupCert(serial)); err != nil {
			t.Fatal(err)
		}
	}
	if st := s.db.Stats(); st.InUse != 1 {
		t.Errorf("%d connections in use between writes, want 1 (the write connection)", st.InUse)
	}
	if _, err := s.Cert(ctx, "02"); err != nil {
		t.Fatalf("a reader does not see the write connection's commit: %v", err)
	}

	// database/sql closes a connection whose driver reported it bad; Conn.Close does the same
	// to the write connection (under wmu, as the committer would see it between writes).
	s.wmu.Lock()
	s.wconn.Close()
	s.wmu.Unlock()
	if err := s.RecordIssued(ctx, lookupCert("03")); err != nil {
		t.Fatalf("record after the write connection closed: %v", err)
	}
	if err := s.RevokeCert(ctx, "01", 1, time.Now()); err != nil {
		t.Fatalf("revoke on the new write connection: %v", err)
	}
	c, err := s.Cert(ctx, "03")
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject != "CN=dev-03" {
		t.Errorf("subject %q", c.Subject)
	}
	if c, err := s.Cert(ctx, "01"); err != nil || !c.Revoked() {
		t.Errorf("01 after revocation: %+v, %v", c, err)
	}
	if st := s.db.Stats(); st.InUse != 1 {
		t.Errorf("%d connections in use after the replacement, want 1", st.InUse)
	}
}
