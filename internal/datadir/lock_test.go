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

// TestLockHolder: the PID of a running server is found from its data directory while it holds
// the lock, and no longer once it lets go; probing never blocks a server from taking the lock.
func TestLockHolder(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if pid, err := LockHolder(dir); err != nil || pid != 0 {
		t.Fatalf("LockHolder of a directory without a lock file = %d, %v; want 0, nil", pid, err)
	}
	l, err := Lock(dir)
	if err != nil {
		t.Fatal(err)
	}
	if pid, err := LockHolder(dir); err != nil || pid != os.Getpid() {
		t.Fatalf("LockHolder while locked = %d, %v; want %d", pid, err, os.Getpid())
	}
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	// The lock file keeps the old PID; the holder is the flock, not the file's text.
	if pid, err := LockHolder(dir); err != nil || pid != 0 {
		t.Fatalf("LockHolder after Unlock = %d, %v; want 0, nil", pid, err)
	}
	again, err := Lock(dir)
	if err != nil {
		t.Fatalf("Lock after a probe: %v", err)
	}
	again.Unlock()
}
