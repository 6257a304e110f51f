package postgres

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"coapca/store"
	"coapca/store/postgres/pgtest"
	"coapca/store/storetest"
)

func openFresh(t testing.TB) *Store {
	t.Helper()
	s, err := Open(context.Background(), pgtest.NewDatabase(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openFresh(t) })
}

// schemaOf describes the tables, columns and indexes of the database of s, to compare a
// migrated schema with a fresh one.
func schemaOf(t *testing.T, s *Store) string {
	t.Helper()
	ctx := context.Background()
	var out strings.Builder
	rows, err := s.pool.Query(ctx, `SELECT table_name, column_name, data_type, is_nullable, coalesce(column_default, ''),
		is_identity FROM information_schema.columns WHERE table_schema = 'public' ORDER BY table_name, column_name`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var a, b, c, d, e, f string
		if err := rows.Scan(&a, &b, &c, &d, &e, &f); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintln(&out, a, b, c, d, e, f)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows, err = s.pool.Query(ctx, `SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY indexname`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var d string
		if err := rows.Scan(&d); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintln(&out, d)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// seed writes, into a database at schema version v, one row of every kind that version knows;
// check reads them back after the migration to the current version.
var seeds = []struct {
	since int
	seed  func(ctx context.Context, s *Store) error
	check func(ctx context.Context, s *Store) error
}{
	{1, func(ctx context.Context, s *Store) error {
		seedDER, err := storetest.CertDER(0x5eed, []byte{0x5e, 0xed})
		if err != nil {
			return err
		}
		// Written as version 1 did (RecordIssued writes the current columns).
		if _, err := s.pool.Exec(ctx, `INSERT INTO certificates (serial, subject, issuer, not_before,
			not_after, der, label, op, protocol, transport, requester_subject, requester_issuer, requester_serial,
			requester_ref, requester_addr, pending_id, issued_at) VALUES ($1, 'CN=seed', '', now(), now(), $2,
			'', '', '', '', '', '', '', '', '', '', now())`, "5eed", seedDER); err != nil {
			return err
		}
		if _, _, err := s.CreatePending(ctx, &store.Pending{RequestKey: "seed", Label: "manual"}); err != nil {
			return err
		}
		if _, err := s.NextCounter(ctx, "crl"); err != nil {
			return err
		}
		return s.AddUnconfirmed(ctx, store.Unconfirmed{Serial: "5eed", Deadline: time.Unix(100, 0)})
	}, func(ctx context.Context, s *Store) error {
		c, err := s.Cert(ctx, "5eed")
		if err != nil || c.Subject != "CN=seed" {
			return fmt.Errorf("certificate after migration: %+v, %v", c, err)
		}
		// Schema 4 filled in the hash and key identifier of the rows already there (the seed
		// writes the row without them, as versions before 4 did: from 4 on, RecordIssued
		// writes them and the backfill does not run again).
		sum := sha256.Sum256(c.DER)
		if l, err := s.ListCerts(ctx, store.CertFilter{CertSHA256Prefix: sum[:8], KeyID: []byte{0x5e, 0xed}}); err != nil || (len(l) != 1 && migratedFrom(ctx) < 4) {
			return fmt.Errorf("certificate by x5t and kid after migration: %v, %v", l, err)
		}
		if l, err := s.ListPending(ctx, store.PendingFilter{}); err != nil || len(l) != 1 || l[0].RequestKey != "seed" {
			return fmt.Errorf("pending after migration: %v, %v", l, err)
		}
		if v, err := s.NextCounter(ctx, "crl"); err != nil || v != 2 {
			return fmt.Errorf("CRL number after migration = %d, %v; want 2 (monotonic)", v, err)
		}
		if due, err := s.DueUnconfirmed(ctx, time.Unix(100, 0), 0); err != nil || len(due) != 1 {
			return fmt.Errorf("unconfirmed after migration: %v, %v", due, err)
		}
		return nil
	}},
	{2, func(ctx context.Context, s *Store) error {
		return s.PutCMPTransaction(ctx, store.CMPTransaction{ID: []byte("tx"), State: []byte("st"), Expires: time.Unix(100, 0)})
	}, func(ctx context.Context, s *Store) error {
		if tx, err := s.CMPTransaction(ctx, []byte("tx")); err != nil || string(tx.State) != "st" {
			return fmt.Errorf("CMP transaction after migration: %+v, %v", tx, err)
		}
		return nil
	}},
}

// TestMigrateFromEveryVersion migrates a database left at every earlier schema version (with
// data of that version) to the current one: the data stays and the schema equals a fresh one.
func TestMigrateFromEveryVersion(t *testing.T) {
	ctx := context.Background()
	want := schemaOf(t, openFresh(t))
	for from := range SchemaVersion {
		t.Run(fmt.Sprintf("from %d", from), func(t *testing.T) {
			dsn := pgtest.NewDatabase(t)
			old, err := open(ctx, dsn, Options{}, from)
			if err != nil {
				t.Fatal(err)
			}
			for _, sd := range seeds {
				if sd.since <= from {
					if err := sd.seed(ctx, old); err != nil {
						t.Fatal(err)
					}
				}
			}
			old.Close()
			s, err := Open(ctx, dsn, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			var v int
			if err := s.pool.QueryRow(ctx, "SELECT version FROM coapca_schema").Scan(&v); err != nil || v != SchemaVersion {
				t.Fatalf("schema version = %d, %v; want %d", v, err, SchemaVersion)
			}
			if got := schemaOf(t, s); got != want {
				t.Errorf("schema migrated from %d differs from a fresh one:\n%s\nwant\n%s", from, got, want)
			}
			for _, sd := range seeds {
				if sd.since <= from {
					if err := sd.check(withMigratedFrom(ctx, from), s); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
}

// TestConcurrentOpen: instances started together on an empty database migrate it once, and
// none fails on the other's tables.
func TestConcurrentOpen(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	const n = 4
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			s, err := Open(context.Background(), dsn, Options{})
			if err == nil {
				s.Close()
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	s, err := Open(ctx, dsn, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.pool.Exec(ctx, "UPDATE coapca_schema SET version = $1", SchemaVersion+1); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err := Open(ctx, dsn, Options{}); err == nil || !strings.Contains(err.Error(), "newer than this program") {
		if s != nil {
			s.Close()
		}
		t.Fatalf("opened a database with a newer schema: %v", err)
	}
}

// TestBadDSN: a malformed data source name is a clear error that does not repeat the password.
func TestBadDSN(t *testing.T) {
	tests := []string{
		"postgres://coapca:s3cret@127.0.0.1:notaport/db",
		"host=127.0.0.1 password=s3cret port=notaport",
	}
	for _, dsn := range tests {
		_, err := Open(context.Background(), dsn, Options{})
		if err == nil {
			t.Fatalf("%q: opened", dsn)
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%q: the error shows the password: %v", dsn, err)
		}
	}
}

// TestTwoInstances: two stores on one database (two server instances) recording, counting and
// deciding at once: no serial twice, no counter value twice, and each sees the other's writes.
func TestTwoInstances(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	var ss [2]*Store
	for i := range ss {
		s, err := Open(ctx, dsn, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		ss[i] = s
	}
	const n = 50
	var wg sync.WaitGroup
	dup := make([]int, 2)
	vals := make([][]int64, 2)
	errc := make(chan error, 4*n)
	for i, s := range ss {
		wg.Go(func() {
			for k := range n {
				// Both instances try every serial: exactly one of each pair wins.
				err := s.RecordIssued(ctx, &store.Cert{Serial: fmt.Sprintf("%x", k), DER: []byte{byte(i)}})
				switch {
				case errors.Is(err, store.ErrDuplicateSerial):
					dup[i]++
				case err != nil:
					errc <- err
				}
				v, err := s.NextCounter(ctx, "crl")
				if err != nil {
					errc <- err
				}
				vals[i] = append(vals[i], v)
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if dup[0]+dup[1] != n {
		t.Errorf("%d duplicate refusals for %d serials written twice, want %d", dup[0]+dup[1], n, n)
	}
	for i, s := range ss {
		if l, err := s.ListCerts(ctx, store.CertFilter{}); err != nil || len(l) != n {
			t.Errorf("instance %d sees %d certificates, %v; want %d", i, len(l), err, n)
		}
		if !slices.IsSorted(vals[i]) {
			t.Errorf("instance %d got CRL numbers out of order: %v", i, vals[i])
		}
	}
	all := append(slices.Clone(vals[0]), vals[1]...)
	slices.Sort(all)
	for i, v := range all {
		if v != int64(i+1) {
			t.Fatalf("CRL numbers of both instances are not 1..%d without gaps or repeats: %v", 2*n, all)
		}
	}
}

// TestNotifyAcrossInstances: what one instance notifies — and every committed revocation —
// reaches the listener of another instance, in order; a refused revocation notifies nothing;
// after its connection is killed the listener says so ("") and keeps listening.
func TestNotifyAcrossInstances(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	a, b := openDSN(t, dsn), openDSN(t, dsn)
	got := make(chan string, 16)
	if err := a.Listen(ctx, func(e string) { got <- e }); err != nil {
		t.Fatal(err)
	}
	next := func() string {
		t.Helper()
		select {
		case e := <-got:
			return e
		case <-time.After(30 * time.Second):
			t.Fatal("no event within 30 s")
			return ""
		}
	}
	if err := b.RecordIssued(ctx, &store.Cert{Serial: "abc", DER: []byte{1}}); err != nil {
		t.Fatal(err)
	}
	if err := b.Notify(ctx, "accepted x abc"); err != nil {
		t.Fatal(err)
	}
	if err := b.RevokeCert(ctx, "abc", 1, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := b.RevokeCert(ctx, "abc", 1, time.Now()); !errors.Is(err, store.ErrAlreadyRevoked) {
		t.Fatal(err)
	}
	if err := b.RevokeCert(ctx, "def", 1, time.Now()); !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	b.Notify(ctx, "end")
	for _, want := range []string{"accepted x abc", "revoked abc", "end"} {
		if e := next(); e != want {
			t.Fatalf("event %q, want %q (a refused revocation must notify nothing)", e, want)
		}
	}
	if err := b.Notify(ctx, strings.Repeat("x", 8000)); err == nil {
		t.Error("an event over PostgreSQL's payload limit was accepted")
	}

	// Kill the listening connection: the listener reports the gap and listens again.
	if _, err := b.pool.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND query = 'LISTEN `+eventChannel+`'`); err != nil {
		t.Fatal(err)
	}
	if e := next(); e != "" {
		t.Fatalf("after the connection was lost: event %q, want \"\"", e)
	}
	b.Notify(ctx, "again")
	if e := next(); e != "again" {
		t.Fatalf("after listening again: %q", e)
	}
	// Close stops the listener.
	a.Close()
	if err := a.Listen(ctx, func(string) {}); err == nil {
		t.Error("Listen on a closed store succeeded")
	}
}

func openDSN(t *testing.T, dsn string) *Store {
	t.Helper()
	s, err := Open(context.Background(), dsn, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

type migratedFromKey struct{}

// withMigratedFrom tells a seed's check the version its rows were written at.
func withMigratedFrom(ctx context.Context, from int) context.Context {
	return context.WithValue(ctx, migratedFromKey{}, from)
}

func migratedFrom(ctx context.Context) int { v, _ := ctx.Value(migratedFromKey{}).(int); return v }

// BenchmarkAdvanceCounter measures the shared OSCORE replay check (one statement per request
// of a pre-shared context).
func BenchmarkAdvanceCounter(b *testing.B) {
	s := openFresh(b)
	ctx := context.Background()
	var v int64
	for b.Loop() {
		v++
		if ok, err := s.AdvanceCounter(ctx, "oscore-replay:bench", v); err != nil || !ok {
			b.Fatal(ok, err)
		}
	}
}
