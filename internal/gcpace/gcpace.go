// Package gcpace paces the Go garbage collector of a long-running coapca server by heap
// headroom instead of by the live heap alone.
//
// Go's default pacing (GOGC=100) starts a collection when the heap has grown by as much as the
// live heap of the previous one. A server whose live heap is small — a CA with a few thousand
// DTLS sessions holds some tens of MB — then collects every few MB of allocation, and each
// enrollment allocates tens of KB (the DTLS handshake, the CSR, the certificate): garbage
// collection took about a tenth of the server's CPU in `coapca bench est`. The pacer lets the
// heap grow by at least a fixed headroom between collections (64 MiB by default) while the
// live heap is smaller than that, and by Go's own rule above it, so the memory it costs is
// bounded by the headroom and a server holding 100,000 sessions paces exactly as before.
//
// After each collection it reads the live heap (runtime/metrics /gc/heap/live:bytes) and sets
// the GC percent to max(100, 100 × headroom ÷ live), at most MaxPercent
// (runtime/debug.SetGCPercent). A memory limit (GOMEMLIMIT) still bounds the heap as usual.
package gcpace

import (
	"log/slog"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
)

const (
	// BasePercent is Go's default GC percent, the least the pacer sets.
	BasePercent = 100
	// MaxPercent bounds the GC percent the pacer sets for a tiny live heap.
	MaxPercent = 1000
	// liveMetric is the heap marked live by the last collection.
	liveMetric = "/gc/heap/live:bytes"
	// hysteresis: the percent is changed only when the new value differs from the one in force by
	// more than 1/hysteresis of it, so that a live heap wobbling by a few bytes does not reset it
	// after every collection.
	hysteresis = 10
)

// Percent is the GC percent that lets a heap whose last collection left live bytes grow by at
// least headroom bytes before the next one, never less than BasePercent nor more than
// MaxPercent.
func Percent(live, headroom uint64) int {
	if headroom == 0 {
		return BasePercent
	}
	if live == 0 || headroom/live >= MaxPercent/100 {
		return MaxPercent
	}
	// ceil(100 × headroom ÷ live); headroom < live × 10 here, so no overflow for any real heap.
	p := (headroom*100 + live - 1) / live
	return int(max(BasePercent, min(MaxPercent, p)))
}

// Pacer sets the GC percent after every collection; see the package documentation.
type Pacer struct {
	headroom uint64
	log      *slog.Logger
	setGC    func(int) int // debug.SetGCPercent
	stopped  atomic.Bool
	percent  atomic.Int64 // the percent in force, as last set

	mu    sync.Mutex // serialises cycle with Stop's restore
	prior int        // the percent found at Start, restored by Stop
}

// sentinel is the object whose cleanup marks the end of a collection. It holds a pointer and
// is larger than the runtime's 16-byte tiny allocations, which a cleanup may never see freed.
type sentinel struct {
	_ [4]*byte
}

// Start paces the garbage collector with headroom bytes of headroom until Stop. It does
// nothing (and returns a Pacer whose Stop does nothing) when headroom is 0 or when GOGC is set
// in the environment (gogcEnv: its value, "" when unset): an operator's explicit GOGC wins.
func Start(headroom uint64, gogcEnv string, log *slog.Logger) *Pacer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Pacer{headroom: headroom, log: log, setGC: debug.SetGCPercent}
	switch {
	case headroom == 0:
		p.stopped.Store(true)
		return p
	case gogcEnv != "":
		log.Info("GOGC is set: the garbage collector keeps it, gc_headroom_mib does not apply", "GOGC", gogcEnv)
		p.stopped.Store(true)
		return p
	}
	p.prior = p.setGC(BasePercent)
	p.percent.Store(BasePercent)
	p.cycle(p.live())
	return p
}

// Percent is the GC percent the pacer set last (at Start, for the live heap of the last
// collection before it; the prior percent after Stop).
func (p *Pacer) Percent() int { return int(p.percent.Load()) }

// Stop ends the pacing and restores the GC percent found at Start.
func (p *Pacer) Stop() {
	if p.stopped.Swap(true) {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.setGC(p.prior)
	p.percent.Store(int64(p.prior))
}

// live reads the heap the last collection marked live.
func (p *Pacer) live() uint64 {
	s := []metrics.Sample{{Name: liveMetric}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0 // unknown to this runtime: Percent then allows MaxPercent, bounded by headroom anyway
	}
	return s[0].Value.Uint64()
}

// cycle sets the percent for the live heap and arms the sentinel of the next collection. It
// runs once at Start and then on the runtime's cleanup goroutine after each collection.
func (p *Pacer) cycle(live uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped.Load() {
		return
	}
	want := Percent(live, p.headroom)
	if cur := int(p.percent.Load()); want != cur && abs(want-cur)*hysteresis > cur {
		p.setGC(want)
		p.percent.Store(int64(want))
		p.log.Debug("gc pacing", "live_heap_bytes", live, "gc_percent", want)
	}
	// The sentinel becomes garbage now; the collection that finds it so runs the cleanup.
	runtime.AddCleanup(&sentinel{}, func(p *Pacer) { p.cycle(p.live()) }, p)
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
