package datadir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// LockFile is the name of the lock file in the data directory.
const LockFile = "coapca.lock"

// ErrLocked is wrapped by Lock's error when another process holds the data directory.
var ErrLocked = errors.New("data directory in use")

// DirLock is the exclusive lock of a server on its data directory (see Lock).
type DirLock struct {
	f *os.File
}

// Lock takes the exclusive lock of the data directory dir (creating dir, mode 0700, when
// missing) and writes this process's PID into DIR/coapca.lock. A second server on the same
// directory gets an error wrapping ErrLocked that names the PID of the first. The lock is an
// flock(2) on the open file: the kernel releases it when the process ends, even by SIGKILL, so a
// crash never leaves a stale lock; the file itself stays. `coapca ca` commands do not lock: they
// work beside a running server.
func Lock(dir string) (*DirLock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("datadir: %w", err)
	}
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("datadir: lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			who := "another process"
			if pid, ok := lockPID(path); ok {
				who = "process " + strconv.Itoa(pid)
			}
			return nil, fmt.Errorf("datadir: %s is locked by %s (another 'coapca serve' on the same data directory): %w", dir, who, ErrLocked)
		}
		return nil, fmt.Errorf("datadir: lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, fmt.Errorf("datadir: lock: %w", err)
	}
	if _, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("datadir: lock: %w", err)
	}
	return &DirLock{f: f}, nil
}

// Unlock releases the lock. The PID stays in the file; only the flock matters.
func (l *DirLock) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the descriptor releases the flock
	l.f = nil
	return err
}

// LockHolder returns the PID of the process that holds the lock of the data directory dir (a
// running `coapca serve`, see Lock), or 0 when no process holds it. It probes with a shared
// flock that it releases at once, so it never keeps a server from starting; a server that
// starts during that instant is refused, as when another holds the directory.
func LockHolder(dir string) (int, error) {
	path := filepath.Join(dir, LockFile)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("datadir: lock holder: %w", err)
	}
	defer f.Close()
	switch err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); {
	case err == nil:
		return 0, nil // nobody holds it (closing the file releases the probe)
	case !errors.Is(err, syscall.EWOULDBLOCK):
		return 0, fmt.Errorf("datadir: lock holder: %w", err)
	}
	pid, ok := lockPID(path)
	if !ok {
		return 0, fmt.Errorf("datadir: lock holder: %s does not hold a PID", path)
	}
	return pid, nil
}

// lockPID reads the PID that Lock wrote into the lock file at path.
func lockPID(path string) (int, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid, err == nil && pid > 0
}
