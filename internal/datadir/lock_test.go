package datadir

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestLockRefusesSecondServer is the attack of a second server started on a data directory that
// one already serves: it is refused with the first one's PID, and the directory is free again
// once the first lets go.
func TestLockRefusesSecondServer(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	first, err := Lock(dir)
	if err != nil {
		t.Fatal(err)
	}
	// flock(2) locks belong to the open file description: a second open in this process
	// conflicts exactly like a second process would.
	second, err := Lock(dir)
	if err == nil {
		second.Unlock()
		t.Fatal("a second lock on the same data directory was granted")
	}
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "process "+strconv.Itoa(os.Getpid())) {
		t.Fatalf("error does not name the holder: %v", err)
	}
	if err := first.Unlock(); err != nil {
		t.Fatal(err)
	}
	again, err := Lock(dir)
	if err != nil {
		t.Fatalf("lock not released: %v", err)
	}
	again.Unlock()
}
