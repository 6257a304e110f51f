package coap

import (
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// TestWorkers: handlers run once each; one after another they share one goroutine, at once
// they get one each; idle workers end after idleFor (synctest.Test fails if any goroutine of
// the bubble is left blocked), close ends the idle ones at once, and run still runs after
// close.
func TestWorkers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &workers{idleFor: time.Second}
		var ran atomic.Int64
		idle := func() int {
			p.mu.Lock()
			defer p.mu.Unlock()
			return len(p.idle)
		}

		for range 100 {
			done := make(chan struct{})
			p.run(func() { ran.Add(1); close(done) })
			<-done
			synctest.Wait()
			if n := idle(); n != 1 {
				t.Fatalf("one handler after another: %d idle workers, want 1", n)
			}
		}

		release := make(chan struct{})
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			p.run(func() { ran.Add(1); wg.Done(); <-release })
		}
		wg.Wait()
		if n := idle(); n != 0 {
			t.Fatalf("8 handlers at once: %d idle workers, want 0", n)
		}
		close(release)
		synctest.Wait()
		if n := idle(); n != 8 {
			t.Fatalf("after 8 at once: %d idle workers, want 8", n)
		}

		time.Sleep(time.Second / 2)
		synctest.Wait()
		if n := idle(); n != 8 {
			t.Fatalf("before idleFor: %d idle workers, want 8", n)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if n := idle(); n != 0 {
			t.Fatalf("after idleFor: %d idle workers, want 0", n)
		}

		// A run exactly when an idle worker's timer fires runs its function once, on that
		// worker or a new one.
		for range 20 {
			done := make(chan struct{})
			p.run(func() { close(done) })
			<-done
			synctest.Wait()
			time.Sleep(time.Second)
			done2 := make(chan struct{})
			p.run(func() { ran.Add(1); close(done2) })
			<-done2
		}

		p.run(func() { ran.Add(1) })
		synctest.Wait()
		p.close()
		synctest.Wait()
		if n := idle(); n != 0 {
			t.Fatalf("after close: %d idle workers", n)
		}
		done := make(chan struct{})
		p.run(func() { ran.Add(1); close(done) })
		<-done
		if got, want := ran.Load(), int64(100+8+20+1+1); got != want {
			t.Fatalf("%d handlers ran, want %d", got, want)
		}
	})
}
