//go:build unix

package sqlite

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"coapca/store"
)

// TestDatabaseFilesArePrivate is issue 8's finding: coapca.db and its WAL were created 0644,
// so any local user could read every issued certificate and pending request. The database,
// its -wal and its -shm must be 0600 whatever the umask, and files left world-readable by an
// older version are narrowed on Open.
func TestDatabaseFilesArePrivate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		umask int
		// before, when set, creates the database with an earlier Open and then widens the
		// modes of the named files, as an older coapca left them.
		widen     []string
		wantWarns int
	}{
		{name: "new database, umask 022", umask: 0o022},
		{name: "new database, umask 000", umask: 0o000},
		{name: "existing world-readable files", umask: 0o022, widen: []string{"", "-wal", "-shm"}, wantWarns: 3},
		{name: "existing group-writable database", umask: 0o022, widen: []string{""}, wantWarns: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The umask is process-wide; the tests of this package do not run in parallel.
			old := syscall.Umask(tc.umask)
			defer syscall.Umask(old)
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "coapca.db")
			if tc.widen != nil {
				first := openTemp(t, path)
				defer first.Close()
				write(t, first, "1")
				for _, suffix := range tc.widen {
					mode := os.FileMode(0o644)
					if len(tc.widen) == 1 {
						mode = 0o664
					}
					if err := os.Chmod(path+suffix, mode); err != nil {
						t.Fatal(err)
					}
				}
			}
			var logs bytes.Buffer
			s, err := Open(ctx, path, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			write(t, s, "2") // the WAL and the shared-memory index exist while the store is open
			for _, suffix := range []string{"", "-wal", "-shm"} {
				st, err := os.Stat(path + suffix)
				if err != nil {
					t.Fatalf("%s: %v", suffix, err)
				}
				if got := st.Mode().Perm(); got != 0o600 {
					t.Errorf("coapca.db%s: mode %04o, want 0600", suffix, got)
				}
			}
			if got := strings.Count(logs.String(), "mode restricted"); got != tc.wantWarns {
				t.Errorf("%d warnings, want %d:\n%s", got, tc.wantWarns, logs.String())
			}
		})
	}
}

// A database path that is not a regular file (here a FIFO, whose open would block, and a
// directory), or whose WAL is not, is refused before anything is created, opened or chmod'ed.
func TestDatabasePathNotARegularFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "coapca.db")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	walFifo := filepath.Join(dir, "other.db")
	if err := syscall.Mkfifo(walFifo+"-wal", 0o644); err != nil {
		t.Fatal(err)
	}
	before := map[string]os.FileMode{}
	for _, p := range []string{fifo, walFifo + "-wal"} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		before[p] = st.Mode()
	}
	for _, p := range []string{fifo, t.TempDir(), walFifo} {
		if _, err := Open(context.Background(), p, Options{}); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("Open(%s) = %v, want a refusal", p, err)
		}
	}
	for p, mode := range before {
		if st, err := os.Stat(p); err != nil || st.Mode() != mode {
			t.Errorf("%s changed: %v → %v, %v", p, mode, st.Mode(), err)
		}
	}
	if _, err := os.Stat(walFifo); !os.IsNotExist(err) {
		t.Errorf("a refused Open created %s: %v", walFifo, err)
	}
}

func write(t *testing.T, s *Store, serial string) {
	t.Helper()
	if err := s.RecordIssued(context.Background(), &store.Cert{Serial: serial, DER: []byte{1}}); err != nil {
		t.Fatal(err)
	}
}
