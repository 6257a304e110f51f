package sqlite

import (
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"encoding/binary"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// refIndex finds certificates by reference — the SHA-256 of the DER (an x5t, RFC 9360 §2)
// and the Subject Key Identifier (a kid), as an EDHOC Initiator may designate its own (RFC
// 9528 §3.5.3) — in memory instead of in two indexes of the database file.
//
// Both keys are hashes, so an index on them in the file took a random leaf page per
// certificate: each group commit wrote one more WAL frame per record for each (two write(2)
// calls a frame) and inserted into two B-trees, on the issuance path, for lookups that only
// EDHOC by reference makes. Interleaved runs of bench est (the server in its own process, 8
// devices at once) of an experiment build without those two indexes and of the build with
// them: 340–399 against 392–425 µs of server CPU per re-enrollment (issue 13).
//
// The index holds the first 8 bytes of each key with the certificate's rowid, 16 bytes a
// certificate and key kind; a lookup narrows the rows to those candidates and SQL compares the
// full columns, so a collision on 8 bytes costs a row read, never a wrong answer. It is built
// on the first lookup from the columns cert_sha256 and key_id (every RecordIssued writes
// them), and every lookup first reads the rows recorded since the previous one (rowid above
// the highest read: certificates are never deleted, and SQLite gives a new row a rowid above
// every committed one), so a certificate recorded by any connection or process is found by the
// next lookup. The two columns of a row are written with it and never changed (the schema-6
// migration fills them in for older rows, before any lookup). The index decides nothing: the
// rows come from the database, with their revocation as it is then.
type refIndex struct {
	mu   sync.Mutex
	upTo int64 // the highest certificates.rowid read into the lists
	sha  refList
	kid  refList
}

// refEntry is one certificate in a refList: the first 8 bytes of its key (zero-padded),
// big-endian, and its rowid.
type refEntry struct {
	key   uint64
	rowid int64
}

// refList is sorted (by key, then rowid) plus the entries read since its last merge.
type refList struct {
	sorted, recent []refEntry
}

// refKey is the index key of a key or key prefix: its first 8 bytes, zero-padded.
func refKey(b []byte) uint64 {
	var k [8]byte
	copy(k[:], b)
	return binary.BigEndian.Uint64(k[:])
}

func (l *refList) add(key []byte, rowid int64) {
	if key == nil {
		return
	}
	l.recent = append(l.recent, refEntry{refKey(key), rowid})
	// A lookup scans the unsorted tail: it is sorted into the rest once it holds 1024 entries
	// and a sixteenth as many as the sorted part (so merges cost O(1) an entry on average).
	if len(l.recent) >= 1024 && len(l.recent) >= len(l.sorted)/16 {
		l.merge()
	}
}

func (l *refList) merge() {
	byKey := func(a, b refEntry) int {
		return cmp.Or(cmp.Compare(a.key, b.key), cmp.Compare(a.rowid, b.rowid))
	}
	slices.SortFunc(l.recent, byKey)
	merged := make([]refEntry, 0, len(l.sorted)+len(l.recent))
	i, j := 0, 0
	for i < len(l.sorted) && j < len(l.recent) {
		if byKey(l.sorted[i], l.recent[j]) <= 0 {
			merged = append(merged, l.sorted[i])
			i++
		} else {
			merged = append(merged, l.recent[j])
			j++
		}
	}
	merged = append(merged, l.sorted[i:]...)
	merged = append(merged, l.recent[j:]...)
	l.sorted, l.recent = merged, l.recent[:0]
}

// between returns the rowids of the entries whose key is in [lo, hi].
func (l *refList) between(lo, hi uint64) []int64 {
	var out []int64
	i, _ := slices.BinarySearchFunc(l.sorted, lo, func(e refEntry, k uint64) int { return cmp.Compare(e.key, k) })
	for ; i < len(l.sorted) && l.sorted[i].key <= hi; i++ {
		out = append(out, l.sorted[i].rowid)
	}
	for _, e := range l.recent {
		if e.key >= lo && e.key <= hi {
			out = append(out, e.rowid)
		}
	}
	return out
}

// catchUp reads the certificates recorded since the last call (on the first, all of them).
// The caller holds x.mu.
func (x *refIndex) catchUp(ctx context.Context, db *sql.DB, log *slog.Logger) error {
	first := x.upTo == 0
	t0 := time.Now()
	rows, err := db.QueryContext(ctx, "SELECT rowid, cert_sha256, key_id FROM certificates WHERE rowid > ? ORDER BY rowid", x.upTo)
	if err != nil {
		return fmt.Errorf("certificate references: %w", err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var rowid int64
		var sum, kid []byte
		if err := rows.Scan(&rowid, &sum, &kid); err != nil {
			return fmt.Errorf("certificate references: %w", err)
		}
		x.sha.add(sum, rowid)
		x.kid.add(kid, rowid)
		x.upTo = rowid
		n++
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("certificate references: %w", err)
	}
	if first && n > 0 {
		log.Info("store: indexed the certificates by x5t and kid in memory", "certificates", n,
			"bytes", 16*(len(x.sha.sorted)+len(x.sha.recent)+len(x.kid.sorted)+len(x.kid.recent)),
			"took", time.Since(t0).Round(time.Millisecond))
	}
	return nil
}

// candidates returns the rowids of the certificates whose SHA-256 may start with sumPrefix
// (when set) and whose Subject Key Identifier may be kid (when set): a superset of the
// matches, which the caller's SQL narrows with the full columns. ok is false when both are
// unset (no narrowing).
func (x *refIndex) candidates(ctx context.Context, db *sql.DB, log *slog.Logger, sumPrefix, kid []byte) (rowids []int64, ok bool, err error) {
	if len(sumPrefix) == 0 && len(kid) == 0 {
		return nil, false, nil
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if err := x.catchUp(ctx, db, log); err != nil {
		return nil, true, err
	}
	if len(sumPrefix) > 0 {
		lo, hi := refKey(sumPrefix), refKey(sumPrefix)
		if len(sumPrefix) < 8 {
			ff := bytes.Repeat([]byte{0xff}, 8)
			copy(ff, sumPrefix)
			hi = refKey(ff)
		}
		rowids = x.sha.between(lo, hi)
	}
	if len(kid) > 0 {
		k := refKey(kid)
		byKid := x.kid.between(k, k)
		if len(sumPrefix) > 0 {
			slices.Sort(byKid)
			rowids = slices.DeleteFunc(rowids, func(r int64) bool {
				_, found := slices.BinarySearch(byKid, r)
				return !found
			})
		} else {
			rowids = byKid
		}
	}
	return rowids, true, nil
}
