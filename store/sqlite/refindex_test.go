package sqlite

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"coapca/store"
	"coapca/store/storetest"
)

// TestRefListBetween: after adds in any order, with and without merges, a range returns the
// rowids of exactly the entries whose key is in it.
func TestRefListBetween(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 10, 1023, 1024, 5000, 40000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			var l refList
			var all []refEntry
			for i := range n {
				var k [8]byte
				// Few distinct high bytes, so that ranges hold several entries and keys repeat.
				k[0] = byte(rng.IntN(16))
				k[7] = byte(rng.IntN(4))
				l.add(k[:], int64(i+1))
				all = append(all, refEntry{refKey(k[:]), int64(i + 1)})
			}
			if n >= 1024 && len(l.sorted) == 0 {
				t.Fatalf("%d entries and no merge", n)
			}
			for _, r := range [][2]uint64{
				{0, ^uint64(0)},
				{refKey([]byte{3}), refKey([]byte{3, 0, 0, 0, 0, 0, 0, 2})},
				{refKey([]byte{15, 0, 0, 0, 0, 0, 0, 3}), refKey([]byte{15, 0, 0, 0, 0, 0, 0, 3})},
				{refKey([]byte{16}), ^uint64(0)},
			} {
				got := l.between(r[0], r[1])
				var want []int64
				for _, e := range all {
					if e.key >= r[0] && e.key <= r[1] {
						want = append(want, e.rowid)
					}
				}
				slices.Sort(got)
				if !slices.Equal(got, want) {
					t.Errorf("between(%x, %x): %d rowids, want %d", r[0], r[1], len(got), len(want))
				}
			}
		})
	}
}

// TestRefIndexSeesEveryWriter: a certificate recorded after the index was built is found by the
// next lookup, also one written by another connection (another process on the same file), and
// a collision on the first 8 bytes of a key returns only the certificate whose full key matches.
func TestRefIndexSeesEveryWriter(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "refs.db")
	s := openTemp(t, path)
	defer s.Close()
	other, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	insert := func(serial string, sum, kid []byte) {
		t.Helper()
		if _, err := other.ExecContext(ctx, `INSERT INTO certificates (serial, subject, issuer, not_before,
			not_after, der, label, op, protocol, transport, requester_subject, requester_issuer, requester_serial,
			requester_ref, requester_addr, pending_id, issued_at, cert_sha256, key_id)
			VALUES (?, '', '', 0, 0, x'00', '', '', '', '', '', '', '', '', '', '', 0, ?, ?)`, serial, sum, kid); err != nil {
			t.Fatal(err)
		}
	}
	find := func(f store.CertFilter) string {
		t.Helper()
		l, err := s.ListCerts(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		var out string
		for _, c := range l {
			out += c.Serial + " "
		}
		return out
	}

	// Nothing recorded yet: the first lookup builds an empty index.
	if got := find(store.CertFilter{KeyID: []byte("kid-a")}); got != "" {
		t.Fatalf("empty store: %q", got)
	}
	der := []byte("not a certificate, recorded by this process")
	if err := s.RecordIssued(ctx, &store.Cert{Serial: "a1", DER: der, IssuedAt: time.Unix(1, 0)}); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	if got := find(store.CertFilter{CertSHA256Prefix: sum[:8]}); got != "a1 " {
		t.Errorf("recorded by the store: %q", got)
	}

	// Two rows from another connection whose hashes and kids share their first 8 bytes.
	sumB := bytes.Repeat([]byte{0xb0}, 32)
	sumC := bytes.Clone(sumB)
	sumC[31] = 0xc0
	insert("b1", sumB, []byte("kid-shared-b"))
	insert("c1", sumC, []byte("kid-shared-c"))
	tests := []struct {
		name string
		f    store.CertFilter
		want string
	}{
		{"full hash", store.CertFilter{CertSHA256Prefix: sumC}, "c1 "},
		{"8 shared bytes", store.CertFilter{CertSHA256Prefix: sumB[:8]}, "c1 b1 "},
		{"short prefix", store.CertFilter{CertSHA256Prefix: sumB[:2]}, "c1 b1 "},
		{"short prefix, none", store.CertFilter{CertSHA256Prefix: []byte{0xb1}}, ""},
		{"kid", store.CertFilter{KeyID: []byte("kid-shared-b")}, "b1 "},
		{"kid sharing 8 bytes", store.CertFilter{KeyID: []byte("kid-shared-c")}, "c1 "},
		{"kid and hash", store.CertFilter{KeyID: []byte("kid-shared-c"), CertSHA256Prefix: sumC[:8]}, "c1 "},
		{"kid and hash of another", store.CertFilter{KeyID: []byte("kid-shared-c"), CertSHA256Prefix: sumB}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := find(tt.f); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestRefIndexManyCandidates: a kid on thousands of certificates (a device that re-enrolled
// with one key again and again) is answered whole, newest first, also with a limit, and
// concurrent lookups and records agree (run with -race).
func TestRefIndexManyCandidates(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, "")
	defer s.Close()
	kid := []byte("one key, many certificates")
	const n = 3000
	var wg sync.WaitGroup
	errc := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			der, err := storetest.CertDER(int64(i+1), kid)
			if err != nil {
				errc <- err
				return
			}
			c := &store.Cert{Serial: fmt.Sprintf("%05d", i), DER: der, IssuedAt: time.Unix(int64(i), 0)}
			if err := s.RecordIssued(ctx, c); err != nil {
				errc <- err
				return
			}
			if i%100 == 0 {
				sum := sha256.Sum256(der)
				l, err := s.ListCerts(ctx, store.CertFilter{CertSHA256Prefix: sum[:]})
				if err != nil || len(l) != 1 || l[0].Serial != c.Serial {
					errc <- fmt.Errorf("lookup of %s by x5t while others record: %v, %v", c.Serial, l, err)
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	all, err := s.ListCerts(ctx, store.CertFilter{KeyID: kid})
	if err != nil || len(all) != n {
		t.Fatalf("by kid: %d certificates, %v; want %d", len(all), err, n)
	}
	newest, err := s.ListCerts(ctx, store.CertFilter{KeyID: kid, Limit: 16})
	if err != nil || len(newest) != 16 || newest[0].Serial != fmt.Sprintf("%05d", n-1) || newest[15].Serial != fmt.Sprintf("%05d", n-16) {
		t.Fatalf("newest 16 by kid: %d, %v", len(newest), err)
	}
}

// TestRefQueryPlan: a lookup by x5t or kid reads the candidate rows by rowid, not the whole
// table (with ORDER BY issued_at and a LIMIT, SQLite could otherwise walk the issued_at index
// and test every row against the list), whatever the other filters.
func TestRefQueryPlan(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t, "")
	defer s.Close()
	der, err := storetest.CertDER(1, []byte("kid"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RecordIssued(ctx, &store.Cert{Serial: "01", DER: der}); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	for _, f := range []store.CertFilter{
		{CertSHA256Prefix: sum[:8], Limit: 2},
		{KeyID: []byte("kid"), Revocation: store.NotRevoked, Limit: 16},
		{KeyID: []byte("kid"), Label: "", LabelSet: true, Issuer: "CN=x"},
	} {
		q, args, none, err := s.listQuery(ctx, f)
		if err != nil || none {
			t.Fatalf("%+v: %v, none %v", f, err, none)
		}
		rows, err := s.db.QueryContext(ctx, "EXPLAIN QUERY PLAN "+q, args...)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		if !slices.Contains(plan, "SEARCH certificates USING INTEGER PRIMARY KEY (rowid=?)") {
			t.Errorf("%+v: plan %q does not look the candidates up by rowid", f, plan)
		}
	}
}
