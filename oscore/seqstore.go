package oscore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// SequenceStore persists the Sender Sequence Number so that a crash or restart never reuses a
// nonce (RFC 8613 §7.5 item 1, Appendix B.1.1).
//
// The Context reserves sequence numbers in blocks of K (Params.SequenceGap): before it uses any
// number >= the last reserved limit, it calls Reserve(n + K), and it uses that number only after
// Reserve returned nil. After a restart, Load returns the last limit written, so the new Context
// starts at SSN2 = SSN1 + K, which is above every number used before (F = 0 because the write
// completes before the numbers are used).
type SequenceStore interface {
	// Load returns the first Sender Sequence Number that is safe to use.
	Load() (uint64, error)
	// Reserve durably records that sequence numbers below limit may be in use.
	Reserve(limit uint64) error
}

// SequenceAllocator is a SequenceStore shared by several processes that hold the same context
// (several server instances answering for one pre-shared context): a limit each of them
// reserves would overlap the others', so each takes whole blocks for itself instead. When the
// Context's store implements it, the Context calls Allocate(K) whenever its block is used up and
// continues at the block's first number; Load and Reserve are not used.
type SequenceAllocator interface {
	SequenceStore
	// Allocate durably reserves n consecutive sequence numbers for this caller alone (no other
	// caller, in this or another process, ever gets any of them) and returns the first.
	Allocate(n uint64) (first uint64, err error)
}

// MemorySequenceStore keeps the limit in memory: enough for contexts that never outlive the
// process (EDHOC-derived ones), and for tests that simulate a restart by sharing the store.
type MemorySequenceStore struct {
	mu    sync.Mutex
	limit uint64
}

// NewMemorySequenceStore returns a store whose first sequence number is start.
func NewMemorySequenceStore(start uint64) *MemorySequenceStore {
	return &MemorySequenceStore{limit: start}
}

// Load implements SequenceStore.
func (m *MemorySequenceStore) Load() (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.limit, nil
}

// Reserve implements SequenceStore.
func (m *MemorySequenceStore) Reserve(limit uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if limit > m.limit {
		m.limit = limit
	}
	return nil
}

// FileSequenceStore keeps the limit in a small text file, replaced atomically (write to a
// temporary file, fsync, rename, fsync the directory) so a crash leaves either the old or the new
// limit, never a torn one.
type FileSequenceStore struct {
	path  string
	start uint64
	mu    sync.Mutex
}

// NewFileSequenceStore returns a store backed by path; start is used when the file does not exist yet.
func NewFileSequenceStore(path string, start uint64) *FileSequenceStore {
	return &FileSequenceStore{path: path, start: start}
}

// Load implements SequenceStore.
func (f *FileSequenceStore) Load() (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, err := os.ReadFile(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		return f.start, nil
	}
	if err != nil {
		return 0, fmt.Errorf("oscore: read sequence store: %w", err)
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("oscore: sequence store %s: %w", f.path, err)
	}
	return max(v, f.start), nil
}

// Reserve implements SequenceStore.
func (f *FileSequenceStore) Reserve(limit uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	dir := filepath.Dir(f.path)
	tmp, err := os.CreateTemp(dir, filepath.Base(f.path)+".tmp*")
	if err != nil {
		return fmt.Errorf("oscore: sequence store: %w", err)
	}
	_, werr := tmp.WriteString(strconv.FormatUint(limit, 10) + "\n")
	if werr == nil {
		werr = tmp.Sync()
	}
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp.Name(), f.path)
	}
	if werr != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("oscore: write sequence store: %w", werr)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
