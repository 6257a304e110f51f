//go:build unix

package sqlite

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// cpuTime is the process's user+system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchRecord runs RecordIssued from par goroutines (0: one caller) and reports the process
// CPU per record (the machine is shared, so wall time per record is noisy; CPU is not) and
// the records per commit (fsyncs per record = 1 / records-per-commit).
//
// pace, when set, is how long each caller works (sleeps) between two records, as a server's
// requests do between their records (signing, the handshake): records then arrive spread out
// instead of all queued at once.
//
// random draws 128-bit random serials, as the authority did before issue 13; otherwise serials
// are time-ordered as the authority's newSerial makes them (microseconds, then random bits).
func benchRecord(b *testing.B, par int, wait, pace time.Duration, random bool) {
	s, err := Open(context.Background(), filepath.Join(b.TempDir(), "bench.db"), Options{GroupCommitWait: wait})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	c0, r0 := s.commitStats()
	var n, waited atomic.Int64
	var latMu sync.Mutex
	var lats []time.Duration
	rec := func() error {
		if pace > 0 {
			time.Sleep(pace)
		}
		i := n.Add(1)
		var sn [16]byte
		if _, err := rand.Read(sn[:]); err != nil {
			return err
		}
		if !random {
			binary.BigEndian.PutUint64(sn[:8], 1<<63|uint64(time.Now().UnixMicro()))
		}
		c := lookupCert(fmt.Sprintf("%x", sn))
		c.DER = benchDER(i)
		c.Label, c.RequesterSubject, c.RequesterIssuer, c.RequesterSerial = "default", "CN=dev", "CN=Issuing CA", "01"
		t0 := time.Now()
		err := s.RecordIssued(ctx, c)
		d := time.Since(t0)
		waited.Add(int64(d))
		latMu.Lock()
		lats = append(lats, d)
		latMu.Unlock()
		return err
	}
	cpu0 := cpuTime(b)
	b.ResetTimer()
	if par == 0 {
		for b.Loop() {
			if err := rec(); err != nil {
				b.Fatal(err)
			}
		}
	} else {
		b.SetParallelism(par)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := rec(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	b.StopTimer()
	recs := reportCommits(b, s, c0, r0, cpu0, "cpu-ns/record")
	b.ReportMetric(float64(waited.Load())/recs, "ns-latency/record")
	slices.Sort(lats)
	b.ReportMetric(float64(lats[len(lats)*99/100]), "ns-p99-latency")
	b.ReportMetric(float64(lats[len(lats)-1]), "ns-max-latency")
}

// benchDER is a certificate-sized DER whose bytes differ per record, so that its SHA-256
// (indexed) and key identifier land at random places in their indexes as real ones do.
func benchDER(i int64) []byte {
	der := make([]byte, 600)
	for k := range der {
		der[k] = byte(i >> (8 * (k % 8)) * int64(k+1))
	}
	der[0], der[1] = 0x30, 0x82
	return der
}

// BenchmarkRecordIssuedCPU: CPU per record, records per commit and the mean time a caller
// waits for RecordIssued, for 1, 8 and 16 concurrent callers (bench est runs 8 devices),
// with and without the group commit wait. It assumes GOMAXPROCS 2 in the names.
func BenchmarkRecordIssuedCPU(b *testing.B) {
	for _, par := range []int{0, 4, 8} { // RunParallel runs par×GOMAXPROCS goroutines
		for _, wait := range []time.Duration{-1, 0} {
			name := fmt.Sprintf("callers=%d/wait=default", max(par*2, 1))
			if wait < 0 {
				name = fmt.Sprintf("callers=%d/wait=off", max(par*2, 1))
			}
			b.Run(name, func(b *testing.B) { benchRecord(b, par, wait, 0, false) })
		}
	}
	// The same with the random serials the authority drew before: each record's serial lands
	// on its own page of the serial index.
	b.Run("random-serials/callers=16/wait=default", func(b *testing.B) { benchRecord(b, 8, 0, 0, true) })
	// 8 callers that each work 5 ms between records: at most 1600 records/s offered, spread.
	for _, wait := range []time.Duration{-1, 0, 3 * time.Millisecond} {
		name := "paced/callers=8/wait=" + wait.String()
		switch wait {
		case -1:
			name = "paced/callers=8/wait=off"
		case 0:
			name = "paced/callers=8/wait=default"
		}
		b.Run(name, func(b *testing.B) { benchRecord(b, 4, wait, 5*time.Millisecond, false) })
	}
}

// BenchmarkLookupThenRecord is a re-enrollment's work on the store: look the requester's
// certificate up, then record the new one, from 8 goroutines at once. The lookups run on the
// pool's connections, the records on the write connection; CPU per re-enrollment (lookup and
// record) is what the server pays. Before the write connection was held, every commit ran on
// whichever pooled connection was free, whose page cache the previous commit (made on another
// connection) had emptied, and first read its pages again.
func BenchmarkLookupThenRecord(b *testing.B) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(b.TempDir(), "bench.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const devices = 1000
	for i := range devices {
		c := lookupCert(fmt.Sprintf("dev%04d", i))
		c.DER = benchDER(int64(i))
		if err := s.RecordIssued(ctx, c); err != nil {
			b.Fatal(err)
		}
	}
	var n atomic.Int64
	c0, r0 := s.commitStats()
	cpu0 := cpuTime(b)
	b.ResetTimer()
	b.SetParallelism(4) // 8 goroutines with GOMAXPROCS 2
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			if _, err := s.Cert(ctx, fmt.Sprintf("dev%04d", i%devices)); err != nil {
				b.Error(err)
				return
			}
			var sn [8]byte
			binary.BigEndian.PutUint64(sn[:], 1<<63|uint64(time.Now().UnixMicro()))
			c := lookupCert(fmt.Sprintf("%x%08x", sn, i))
			c.DER = benchDER(devices + i)
			if err := s.RecordIssued(ctx, c); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	reportCommits(b, s, c0, r0, cpu0, "cpu-ns/op")
}

// reportCommits reports the process CPU per record since cpu0 (as unit) and the records per
// commit since the commit stats c0, r0, and returns the records committed since.
func reportCommits(b *testing.B, s *Store, c0, r0 int64, cpu0 time.Duration, unit string) float64 {
	c1, r1 := s.commitStats()
	recs := float64(r1 - r0)
	b.ReportMetric(float64(cpuTime(b)-cpu0)/recs, unit)
	b.ReportMetric(recs/float64(c1-c0), "records/commit")
	return recs
}
