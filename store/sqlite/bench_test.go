//go:build unix

package sqlite

import (
	"context"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"coapca/store"
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
func benchRecord(b *testing.B, par int) {
	s := openTemp(b, "")
	defer s.Close()
	ctx := context.Background()
	c0, r0 := s.commitStats()
	var n atomic.Int64
	rec := func() error {
		i := n.Add(1)
		c := lookupCert(fmt.Sprintf("%032x", i))
		c.DER = benchDER(i)
		c.Label, c.RequesterSubject, c.RequesterIssuer, c.RequesterSerial = "default", "CN=dev", "CN=Issuing CA", "01"
		return s.RecordIssued(ctx, c)
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
	c1, r1 := s.commitStats()
	recs := float64(r1 - r0)
	b.ReportMetric(float64(cpuTime(b)-cpu0)/recs, "cpu-ns/record")
	b.ReportMetric(recs/float64(c1-c0), "records/commit")
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

// BenchmarkRecordIssuedCPU: CPU per record and records per commit for 1, 8 and 16
// concurrent callers (bench est runs 8 devices).
func BenchmarkRecordIssuedCPU(b *testing.B) {
	for _, par := range []int{0, 4, 8} { // RunParallel runs par×GOMAXPROCS goroutines
		b.Run(fmt.Sprintf("callers=%d", max(par*2, 1)), func(b *testing.B) { benchRecord(b, par) })
	}
}

var _ = store.ErrNotFound
