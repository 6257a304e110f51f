package sqlite

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"coapca/store"
)

// TestBackupWhileWriting takes a backup while other goroutines keep issuing: the copy opens as a
// consistent database holding every record committed before the backup began, and the live
// store goes on.
func TestBackupWhileWriting(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openTemp(t, filepath.Join(dir, "live.db"))
	defer s.Close()
	const before = 50
	for i := range before {
		if err := s.RecordIssued(ctx, &store.Cert{Serial: fmt.Sprintf("b%03d", i), DER: []byte{1}}); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := s.RecordIssued(ctx, &store.Cert{Serial: fmt.Sprintf("w%d-%d", w, i), DER: []byte{2}}); err != nil {
					errc <- err
					return
				}
			}
		})
	}
	backup := filepath.Join(dir, "backup.db")
	err := s.Backup(ctx, backup)
	close(stop)
	wg.Wait()
	close(errc)
	if err != nil {
		t.Fatal(err)
	}
	for err := range errc {
		t.Fatalf("a writer failed during the backup: %v", err)
	}
	if fi, err := os.Stat(backup); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup mode: %v %v", fi, err)
	}
	c := openTemp(t, backup)
	defer c.Close()
	if err := c.Check(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range before {
		if _, err := c.Cert(ctx, fmt.Sprintf("b%03d", i)); err != nil {
			t.Fatalf("record committed before the backup is missing from it: %v", err)
		}
	}
}

// TestBackupRefusesExistingFile is the attack of a backup pointed at a file that exists (or a link
// planted where the backup goes): it is refused, and the file keeps its content.
func TestBackupRefusesExistingFile(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openTemp(t, filepath.Join(dir, "live.db"))
	defer s.Close()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{victim, link, filepath.Join(dir, "no-such-dir", "b.db")} {
		if err := s.Backup(ctx, p); err == nil {
			t.Errorf("backup to %s accepted", p)
		}
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep" {
		t.Fatalf("existing file changed: %q", b)
	}
}
