package sqlite

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"coapca/store"
)

// TestBatchFailureIsolated commits batches built by hand (the committer's grouping depends on
// timing) in which some records must fail: each failing record fails alone with its own
// error, every other record of the batch is recorded, and nothing of a failing record is left
// behind — no certificate row, no pending request marked issued. It covers the records
// without a pending request, committed without a SAVEPOINT (a constraint violation backs out
// its statement alone), the ones with a pending request (SAVEPOINT), and a failure that undoes
// the whole transaction (a trigger's RAISE(ROLLBACK)), after which the batch is committed
// record by record. Each batch is committed both ways the committer does: whole
// (commitBatch), and with its transaction open while the records arrive one by one (beginBatch,
// addToBatch, endBatch: a commit that waits for more), where no record may be visible to a
// reader before endBatch and records that arrive after a failure of the transaction are
// committed one by one with the others.
func TestBatchFailureIsolated(t *testing.T) {
	for _, mode := range []string{"whole", "as they arrive"} {
		t.Run(mode, func(t *testing.T) { testBatchFailureIsolated(t, mode == "whole") })
	}
}

func testBatchFailureIsolated(t *testing.T, whole bool) {
	ctx := context.Background()
	const existing = "e0"
	for _, tc := range []struct {
		name string
		// trigger, when set, makes any insert of serial "boom" fail this way.
		trigger string
		recs    []rec
		// wantCommits is the number of transactions: 1 for a batch, one per record after an
		// abandoned batch.
		wantCommits int64
	}{
		{name: "duplicate of a recorded serial in the middle", recs: []rec{
			{serial: "a1"}, {serial: existing, want: store.ErrDuplicateSerial}, {serial: "a2"},
		}, wantCommits: 1},
		{name: "same serial twice in one batch", recs: []rec{
			{serial: "b1"}, {serial: "b1", want: store.ErrDuplicateSerial}, {serial: "b2"},
		}, wantCommits: 1},
		{name: "NULL DER first", recs: []rec{
			{serial: "c0", nilDER: true, want: store.ErrDuplicateSerial}, {serial: "c1"}, {serial: "c2"},
		}, wantCommits: 1},
		{name: "pending requests approved and not", recs: []rec{
			{serial: "d1", pending: "approved"}, {serial: "d2", pending: "waiting", want: store.ErrPendingState},
			{serial: "d3"}, {serial: existing, pending: "approved", want: store.ErrDuplicateSerial}, {serial: "d4", pending: "approved"},
		}, wantCommits: 1},
		{name: "trigger rolls the transaction back", trigger: "ROLLBACK", recs: []rec{
			{serial: "f1"}, {serial: "boom", want: errAny}, {serial: "f2"}, {serial: "f3", pending: "approved"},
		}, wantCommits: 4},
		{name: "trigger aborts its statement", trigger: "ABORT", recs: []rec{
			{serial: "g1"}, {serial: "boom", want: errAny}, {serial: "g2"},
		}, wantCommits: 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTemp(t, "")
			defer s.Close()
			if err := s.RecordIssued(ctx, lookupCert(existing)); err != nil {
				t.Fatal(err)
			}
			if tc.trigger != "" {
				if _, err := s.db.ExecContext(ctx, fmt.Sprintf(`CREATE TRIGGER boom BEFORE INSERT ON certificates
					WHEN NEW.serial = 'boom' BEGIN SELECT RAISE(%s, 'boom'); END`, tc.trigger)); err != nil {
					t.Fatal(err)
				}
			}
			var batch []*recordReq
			pendingOf := map[string]string{}
			for i, r := range tc.recs {
				c := lookupCert(r.serial)
				if r.nilDER {
					c.DER = nil
				}
				if r.pending != "" {
					p, _, err := s.CreatePending(ctx, &store.Pending{RequestKey: fmt.Sprintf("k%d", i)})
					if err != nil {
						t.Fatal(err)
					}
					if r.pending == "approved" {
						if err := s.DecidePending(ctx, p.ID, store.StatusApproved, ""); err != nil {
							t.Fatal(err)
						}
					}
					c.PendingID = p.ID
					pendingOf[fmt.Sprint(i)] = p.ID
				}
				req := &recordReq{c: c, done: make(chan error, 1)}
				req.sum, req.keyID = store.CertKeyRefs(c.DER)
				batch = append(batch, req)
			}
			c0, _ := s.commitStats()
			if whole {
				s.commitBatch(batch)
			} else {
				b := s.beginBatch()
				for i, r := range batch {
					s.addToBatch(b, r)
					if tc.recs[i].serial == existing {
						continue
					}
					if got, err := s.Cert(ctx, tc.recs[i].serial); !errors.Is(err, store.ErrNotFound) {
						t.Fatalf("record %d (%s) readable before its batch is committed: %+v, %v", i, tc.recs[i].serial, got, err)
					}
					select {
					case err := <-r.done:
						t.Fatalf("record %d (%s) answered before its batch is committed: %v", i, tc.recs[i].serial, err)
					default:
					}
				}
				s.endBatch(b, batch)
			}
			if c1, _ := s.commitStats(); c1-c0 != tc.wantCommits {
				t.Errorf("%d transactions, want %d", c1-c0, tc.wantCommits)
			}
			for i, r := range tc.recs {
				err := <-batch[i].done
				switch {
				case r.want == nil && err != nil:
					t.Errorf("record %d (%s): %v, want recorded", i, r.serial, err)
				case r.want == errAny && err == nil, r.want != nil && r.want != errAny && !errors.Is(err, r.want):
					t.Errorf("record %d (%s): err = %v, want %v", i, r.serial, err, r.want)
				}
				got, lerr := s.Cert(ctx, r.serial)
				switch {
				case r.want == nil && lerr != nil:
					t.Errorf("record %d (%s) not in the store: %v", i, r.serial, lerr)
				case r.want != nil && r.serial != existing && !slices.Contains(serialsOK(tc.recs), r.serial) && lerr == nil:
					t.Errorf("record %d (%s) failed but its row is there: %+v", i, r.serial, got)
				case r.serial == existing && (lerr != nil || got.PendingID != ""):
					t.Errorf("the certificate recorded before was changed: %+v, %v", got, lerr)
				}
				if id := pendingOf[fmt.Sprint(i)]; id != "" {
					p, err := s.Pending(ctx, id)
					if err != nil {
						t.Fatal(err)
					}
					if issued := p.Status == store.StatusIssued; issued != (r.want == nil) {
						t.Errorf("record %d (%s): pending request is %s (cert %q), want issued = %v", i, r.serial, p.Status, p.CertSerial, r.want == nil)
					}
				}
			}
		})
	}
}

// errAny stands for "some error" in TestBatchFailureIsolated.
var errAny = errors.New("any error")

type rec struct {
	serial, pending string // pending: "approved" or "waiting" creates such a request
	nilDER          bool
	want            error // nil: recorded
}

// serialsOK lists the serials some record of recs records successfully.
func serialsOK(recs []rec) []string {
	var out []string
	for _, r := range recs {
		if r.want == nil {
			out = append(out, r.serial)
		}
	}
	return out
}

// TestGroupCommitWait: a commit waits for more records only while several callers record at
// once (the previous commit carried more than one) and records arrive closer together than
// the bound; a lone caller, callers one at a time, a full batch or a disabled wait never
// wait, and the wait never ends later than the bound after the batch's first record.
func TestGroupCommitWait(t *testing.T) {
	const bound = 10 * time.Second // large, so that the time this test takes does not matter
	now := time.Now()
	batchOf := func(n int) []*recordReq {
		b := make([]*recordReq, n)
		for i := range b {
			b[i] = &recordReq{at: now}
		}
		return b
	}
	for _, tc := range []struct {
		name     string
		bound    time.Duration
		prevSize int
		peak     int // the largest recent commit
		gap      time.Duration
		batch    int
		wait     bool
	}{
		{name: "concurrent callers, close arrivals", bound: bound, prevSize: 3, gap: time.Millisecond, batch: 1, wait: true},
		{name: "concurrent callers, batch not full", bound: bound, prevSize: maxBatch, gap: time.Millisecond, batch: maxBatch - 1, wait: true},
		{name: "previous commit alone", bound: bound, prevSize: 1, gap: time.Millisecond, batch: 1},
		{name: "first commit", bound: bound, prevSize: 0, gap: 0, batch: 3},
		{name: "arrivals further apart than the bound", bound: bound, prevSize: 4, gap: bound, batch: 1},
		{name: "batch full", bound: bound, prevSize: 4, gap: time.Millisecond, batch: maxBatch},
		{name: "disabled", bound: -1, prevSize: 4, gap: time.Millisecond, batch: 1},
		{name: "as large as the largest recent commit", bound: bound, prevSize: 3, peak: 3, gap: time.Millisecond, batch: 3},
		{name: "smaller than the largest recent commit", bound: bound, prevSize: 3, peak: 5, gap: time.Millisecond, batch: 3, wait: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := groupCommit{gap: tc.gap}
			g.recent[0], g.recent[1], g.commits = tc.peak, tc.prevSize, 2 // prev: the later one
			w := g.wait(tc.bound, batchOf(tc.batch))
			if (w > 0) != tc.wait {
				t.Errorf("wait = %v, want waiting %v", w, tc.wait)
			}
			if w > max(tc.bound, 0) {
				t.Errorf("wait = %v, longer than the bound %v", w, tc.bound)
			}
		})
	}
	// The other reason: goroutines waiting for a CPU.
	for _, tc := range []struct {
		name  string
		bound time.Duration
		busy  func() bool
		peak  int // the largest recent commit
		batch int
		wait  bool
	}{
		{name: "CPUs busy", bound: bound, busy: func() bool { return true }, batch: 1, wait: true},
		{name: "a CPU free", bound: bound, busy: func() bool { return false }, batch: 1},
		{name: "CPUs busy, batch full", bound: bound, busy: func() bool { return true }, batch: maxBatch},
		{name: "CPUs busy, disabled", bound: -1, busy: func() bool { return true }, batch: 1},
		{name: "CPUs busy, as large as the largest recent commit", bound: bound, busy: func() bool { return true }, peak: 2, batch: 2},
		{name: "CPUs busy, smaller than the largest recent commit", bound: bound, busy: func() bool { return true }, peak: 3, batch: 2, wait: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The previous commit, if any, came from one caller at a time (a wide gap): the
			// other reason says no.
			g := groupCommit{busy: tc.busy, gap: time.Hour}
			g.recent[0], g.commits = tc.peak, 1
			if w := g.wait(bound, batchOf(tc.batch)); w != 0 {
				t.Fatalf("wait = %v for callers one at a time", w)
			}
			w := g.busyWait(tc.bound, batchOf(tc.batch))
			if (w > 0) != tc.wait {
				t.Errorf("busyWait = %v, want waiting %v", w, tc.wait)
			}
			if w > max(tc.bound, 0) {
				t.Errorf("busyWait = %v, longer than the bound %v", w, tc.bound)
			}
		})
	}
	// The moving average follows the arrivals: one at a time, 20 ms apart, it ends above a
	// 1 ms bound; eight at once, it falls below it.
	var g groupCommit
	for i := range 30 {
		g.committed([]*recordReq{{at: now.Add(time.Duration(i) * 20 * time.Millisecond)}})
	}
	if g.wait(time.Millisecond, batchOf(1)) != 0 || g.gap < time.Millisecond {
		t.Errorf("one caller every 20 ms: gap %v, previous commit %d; want no wait", g.gap, g.prev())
	}
	later := now.Add(time.Second)
	for i := range 30 {
		batch := make([]*recordReq, 8)
		for k := range batch {
			batch[k] = &recordReq{at: later.Add(time.Duration(i*8+k) * 10 * time.Microsecond)}
		}
		g.committed(batch)
	}
	if g.gap >= time.Millisecond || g.prev() != 8 {
		t.Errorf("eight callers at once: gap %v, previous commit %d; want a gap below 1 ms", g.gap, g.prev())
	}
	// A batch of eight split in two (5 + 3) still completes at eight, until recentCommits
	// smaller commits have pushed the eight out.
	g.committed(batchOf(5))
	g.committed(batchOf(3))
	if g.complete(batchOf(5)) || !g.complete(batchOf(8)) {
		t.Errorf("after commits of 8, 5 and 3: a batch of 5 complete %v, of 8 %v; want false, true", g.complete(batchOf(5)), g.complete(batchOf(8)))
	}
	for range recentCommits {
		g.committed(batchOf(3))
	}
	if !g.complete(batchOf(3)) {
		t.Error("after recentCommits commits of 3: a batch of 3 is not complete")
	}
}

// TestCloseWhileGroupCommitWaits: callers record at once (so commits wait for each other)
// while the store is closed. Every RecordIssued that returned nil is in the database when it
// is opened again; the others returned an error.
func TestCloseWhileGroupCommitWaits(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "x.db")
	s, err := Open(ctx, path, Options{GroupCommitWait: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	const callers, each = 8, 40
	var mu sync.Mutex
	var ok []string
	var wg sync.WaitGroup
	first := make(chan error, callers) // each caller's first outcome
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				sn := fmt.Sprintf("%02x%04x", c, i)
				err := s.RecordIssued(ctx, lookupCert(sn))
				if i == 0 {
					first <- err
				}
				if err != nil {
					return // closed
				}
				mu.Lock()
				ok = append(ok, sn)
				mu.Unlock()
			}
		}()
	}
	for range callers { // close once every caller has recorded one certificate
		if err := <-first; err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	commits, records := s.commitStats()
	s = openTemp(t, path)
	defer s.Close()
	for _, sn := range ok {
		if _, err := s.Cert(ctx, sn); err != nil {
			t.Errorf("RecordIssued(%s) returned nil but the certificate is not in the database: %v", sn, err)
		}
	}
	if len(ok) == callers*each {
		t.Logf("every record finished before Close (%d in %d commits)", records, commits)
	}
}

// TestGroupCommitWaitsWhileCPUsBusy: while goroutines wait for a CPU, a commit waits for more
// records (up to Options.GroupCommitBusyWait) and they share its fsync; as soon as a CPU is
// free it commits. With the CPUs idle a lone record is committed at once. It runs in a
// synctest bubble: time is the bubble's, and synctest.Wait returns once the committer and the
// callers are blocked, so "not committed yet" is a fact, not a guess after a sleep.
func TestGroupCommitWaitsWhileCPUsBusy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var busy atomic.Bool
		busy.Store(true)
		s, record, returned := busyStore(t, &busy)
		pending := func(done <-chan error) bool { return !returned(done) }

		first := record("b1")
		synctest.Wait() // the committer holds b1 and waits
		time.Sleep(10 * busyRecheck)
		synctest.Wait()
		if !pending(first) {
			t.Fatal("RecordIssued returned while the CPUs were busy: the commit did not wait")
		}
		second := record("b2")
		synctest.Wait() // b2 joined the waiting batch
		busy.Store(false)
		time.Sleep(busyRecheck) // the next look finds a CPU free
		synctest.Wait()
		if pending(first) || pending(second) {
			t.Fatal("RecordIssued did not return after a CPU became free")
		}
		if commits, records := s.commitStats(); commits != 1 || records != 2 {
			t.Errorf("%d commits carried %d records, want both records in one commit", commits, records)
		}

		// CPUs idle: a lone record does not wait, not even one recheck.
		third := record("b3")
		synctest.Wait()
		if pending(third) {
			t.Fatal("a lone record waited with the CPUs idle")
		}
		if commits, records := s.commitStats(); commits != 2 || records != 3 {
			t.Errorf("%d commits carried %d records, want the third alone", commits, records)
		}
	})
}

// TestGroupCommitEndsWhenCallersAreBack: a commit waiting while the CPUs are busy commits as
// soon as its batch is as large as the largest recent commit (here the previous one) — the
// callers that recorded together last time are all back, and with each waiting for its answer
// nobody else is coming — instead of waiting for a CPU to be free (issue 13: devices
// re-enrolling at once). A smaller batch still waits. Synctest bubble, as
// TestGroupCommitWaitsWhileCPUsBusy.
func TestGroupCommitEndsWhenCallersAreBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var busy atomic.Bool
		busy.Store(true)
		s, record, returned := busyStore(t, &busy)

		// The first commit carries three records; it ends when a CPU is free.
		var first []<-chan error
		for _, sn := range []string{"c1", "c2", "c3"} {
			first = append(first, record(sn))
			synctest.Wait()
		}
		busy.Store(false)
		time.Sleep(busyRecheck)
		synctest.Wait()
		for i, done := range first {
			if !returned(done) {
				t.Fatalf("record %d of the first commit did not return once a CPU was free", i)
			}
		}

		// The CPUs are busy again. Two records of three wait; the third completes the batch
		// and all three are committed without any time passing.
		busy.Store(true)
		start := time.Now()
		d1, d2 := record("d1"), record("d2")
		synctest.Wait()
		time.Sleep(10 * busyRecheck)
		synctest.Wait()
		if returned(d1) || returned(d2) {
			t.Fatal("a batch smaller than the largest recent commit did not wait while the CPUs were busy")
		}
		waited := time.Since(start)
		d3 := record("d3")
		synctest.Wait()
		for i, done := range []<-chan error{d1, d2, d3} {
			if !returned(done) {
				t.Fatalf("record d%d did not return once the batch was as large as the largest recent commit", i+1)
			}
		}
		if d := time.Since(start); d != waited {
			t.Errorf("the complete batch waited %v more", d-waited)
		}
		if commits, records := s.commitStats(); commits != 2 || records != 6 {
			t.Errorf("%d commits carried %d records, want 2 commits of 3", commits, records)
		}
	})
}

// busyStore opens a store, for a synctest bubble, whose commits wait for more records only
// while busy says the CPUs are busy (up to a minute: far beyond the tests' steps, so that only
// the probe, or a complete batch, ends the wait). record starts a RecordIssued call; returned
// reports whether that call has returned, failing the test if it failed.
func busyStore(t *testing.T, busy *atomic.Bool) (s *Store, record func(sn string) <-chan error, returned func(<-chan error) bool) {
	t.Helper()
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "x.db"), Options{GroupCommitWait: -1, // the other reason is off
		GroupCommitBusyWait: time.Minute, busy: busy.Load})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	record = func(sn string) <-chan error {
		done := make(chan error, 1)
		go func() { done <- s.RecordIssued(ctx, lookupCert(sn)) }()
		return done
	}
	returned = func(done <-chan error) bool {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			return true
		default:
			return false
		}
	}
	return s, record, returned
}
