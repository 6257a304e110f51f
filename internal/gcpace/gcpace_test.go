package gcpace

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

const mib = 1 << 20

func TestPercent(t *testing.T) {
	for _, tc := range []struct {
		name           string
		live, headroom uint64
		want           int
	}{
		{"off", 10 * mib, 0, BasePercent},
		{"unknown live heap", 0, 64 * mib, MaxPercent},
		{"tiny live heap is capped", 1 * mib, 64 * mib, MaxPercent},
		{"exactly the cap", 6*mib + 4*mib/10, 64 * mib, MaxPercent},
		{"small live heap gets the headroom", 16 * mib, 64 * mib, 400},
		{"rounded up", 48 * mib, 64 * mib, 134},
		{"live heap as large as the headroom: Go's rule", 64 * mib, 64 * mib, BasePercent},
		{"large live heap: Go's rule", 500 * mib, 64 * mib, BasePercent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Percent(tc.live, tc.headroom)
			if got != tc.want {
				t.Fatalf("Percent(%d, %d) = %d, want %d", tc.live, tc.headroom, got, tc.want)
			}
			// What it promises: at least headroom of growth, unless capped or at Go's rule.
			if got > BasePercent && got < MaxPercent && tc.live*uint64(got)/100 < tc.headroom {
				t.Fatalf("percent %d gives %d bytes of headroom over %d live, want >= %d", got, tc.live*uint64(got)/100, tc.live, tc.headroom)
			}
		})
	}
}

// gcPercent reads the GC percent in force from the runtime (not from the pacer).
func gcPercent() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int(s[0].Value.Uint64())
}

// waitPercent collects garbage until the runtime's GC percent is want (cleanups run on their
// own goroutine after the collection, so the change is seen a little later).
func waitPercent(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for gcPercent() != want {
		if time.Now().After(deadline) {
			t.Fatalf("GC percent is %d, want %d", gcPercent(), want)
		}
		runtime.GC()
		time.Sleep(time.Millisecond)
	}
}

// TestPacerFollowsLiveHeap runs the pacer against the real runtime: with a small live heap it
// raises the GC percent to give the headroom, with a live heap above the headroom it falls back
// to Go's rule, and Stop restores what it found.
func TestPacerFollowsLiveHeap(t *testing.T) {
	prior := debug.SetGCPercent(77)
	defer debug.SetGCPercent(prior)

	// This test binary's live heap is a few MB: 1 GiB of headroom gives the cap.
	p := Start(1<<30, "", nil)
	waitPercent(t, MaxPercent)
	if p.Percent() != MaxPercent {
		t.Fatalf("pacer says %d, runtime %d", p.Percent(), MaxPercent)
	}

	// A live heap of 48 MiB against 64 MiB of headroom: about 134 %.
	p.Stop()
	waitPercent(t, 77)
	p = Start(64*mib, "", nil)
	ballast := make([]byte, 48*mib)
	for i := range ballast {
		ballast[i] = byte(i) // touch it, so that it is real memory
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		time.Sleep(time.Millisecond)
		if got := gcPercent(); got > BasePercent && got < 150 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GC percent %d with 48 MiB live and 64 MiB headroom, want 100 < p < 150", gcPercent())
		}
	}

	// Above the headroom: Go's rule.
	more := make([]byte, 32*mib)
	for i := range more {
		more[i] = byte(i)
	}
	waitPercent(t, BasePercent)
	runtime.KeepAlive(ballast)
	runtime.KeepAlive(more)

	p.Stop()
	waitPercent(t, 77)
	// Stopped: collections no longer change it.
	runtime.GC()
	runtime.GC()
	time.Sleep(10 * time.Millisecond)
	if got := gcPercent(); got != 77 {
		t.Fatalf("after Stop the GC percent is %d, want 77", got)
	}
}

func TestPacerOffOrOverridden(t *testing.T) {
	prior := debug.SetGCPercent(88)
	defer debug.SetGCPercent(prior)
	for _, tc := range []struct {
		name     string
		headroom uint64
		gogc     string
	}{
		{"headroom 0", 0, ""},
		{"GOGC set", 64 * mib, "150"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := Start(tc.headroom, tc.gogc, nil)
			defer p.Stop()
			// A pacer that does not start arms no cleanup: nothing runs after a collection.
			runtime.GC()
			if got := gcPercent(); got != 88 {
				t.Fatalf("GC percent %d, want the one in force (88)", got)
			}
		})
	}
}
