package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"os"
	"path/filepath"
	"runtime/trace"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// spinForTest is the start function of the computing goroutine, so that its creation names
// it even if it never blocks or is preempted inside it.
//
//go:noinline
func spinForTest(done chan<- [32]byte) {
	var sum [32]byte
	for range 200_000 {
		sum = sha256.Sum256(sum[:])
	}
	done <- sum
}

//go:noinline
func waitForTest(ch <-chan struct{}) { <-ch }

// TestTraceWait records a real runtime trace of a goroutine that computes and one that waits
// on a channel, and reads it back: the computing goroutine is the one of interest and shows
// up in the timeline, the waiting one's place is named by its function in the blocked table.
// synctest.Wait makes sure the waiter has blocked before it is woken.
func TestTraceWait(t *testing.T) {
	path := filepath.Join(t.TempDir(), "trace.out")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := trace.Start(f); err != nil {
		t.Fatal(err)
	}
	synctest.Test(t, func(t *testing.T) {
		wake, done := make(chan struct{}), make(chan [32]byte, 1)
		var wg sync.WaitGroup
		go spinForTest(done)
		wg.Go(func() { waitForTest(wake) })
		<-done
		synctest.Wait() // the waiter has blocked
		close(wake)
		wg.Wait()
	})
	trace.Stop()
	window := time.Since(t0)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	var out bytes.Buffer
	if err := run([]string{"-bucket", "10ms", "-focus", `spinForTest`, "-to", window.String(), path}, &out); err != nil {
		t.Fatal(err)
	}
	t.Log(out.String())
	var focusedCPU float64
	waited := false
	sc := bufio.NewScanner(&out)
	blockedTable := false
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		switch {
		case strings.HasPrefix(line, "blocked from"):
			blockedTable = true
		case blockedTable && strings.Contains(line, "waitForTest"):
			if _, err := strconv.ParseFloat(fields[0], 64); err != nil {
				t.Fatalf("line %q: %v", line, err)
			}
			waited = true
		case !blockedTable && len(fields) == 3:
			v, err := strconv.ParseFloat(fields[2], 64)
			if err != nil {
				continue // the header
			}
			focusedCPU += v
		}
	}
	if focusedCPU <= 0 {
		t.Errorf("the computing goroutine used no CPU in the timeline")
	}
	if !waited {
		t.Errorf("the waiting goroutine's place is not in the blocked table")
	}
}

//go:noinline
func wakerForTest(wake chan<- struct{}) { wake <- struct{}{} }

// TestTraceWaitFocusNotInherited: a goroutine of interest that wakes another (a channel send,
// an event on its own stack about the other goroutine) does not make the woken one a
// goroutine of interest: the woken goroutine's computing stays out of the focused column.
func TestTraceWaitFocusNotInherited(t *testing.T) {
	path := filepath.Join(t.TempDir(), "trace.out")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := trace.Start(f); err != nil {
		t.Fatal(err)
	}
	synctest.Test(t, func(t *testing.T) {
		wake, done := make(chan struct{}), make(chan [32]byte, 1)
		go func() {
			<-wake
			spinForTest(done)
		}()
		synctest.Wait() // the computing goroutine waits for its wake-up
		go wakerForTest(wake)
		<-done
	})
	trace.Stop()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run([]string{"-bucket", "10ms", "-focus", `wakerForTest`, path}, &out); err != nil {
		t.Fatal(err)
	}
	t.Log(out.String())
	var all, focused float64
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 3 {
			continue
		}
		a, err1 := strconv.ParseFloat(fields[1], 64)
		v, err2 := strconv.ParseFloat(fields[2], 64)
		if err1 != nil || err2 != nil {
			continue // the header
		}
		all, focused = all+a, focused+v
	}
	if all <= 0 {
		t.Fatal("no CPU in the timeline")
	}
	if focused > all/2 {
		t.Errorf("focused CPU %.2f of %.2f: the woken goroutine's computing was counted as the waker's", focused, all)
	}
}

func TestTraceWaitUsage(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"a", "b"},
		{"-from", "2s", "-to", "1s", "f"},
		{"-focus", "(", "f"},
		{filepath.Join(t.TempDir(), "missing")},
	} {
		if err := run(args, &bytes.Buffer{}); err == nil {
			t.Errorf("run(%q) succeeded", args)
		}
	}
	// Not a trace: an error, not a panic.
	notTrace := filepath.Join(t.TempDir(), "not-a-trace")
	if err := os.WriteFile(notTrace, []byte("go 1.26 trace\x00\x00\x00garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := run([]string{notTrace}, &bytes.Buffer{}); err == nil {
		t.Error("a file that is not a trace was read")
	}
}
