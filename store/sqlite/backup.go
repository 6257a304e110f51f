package sqlite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Backup writes a consistent copy of the database to path while the store stays in use: SQLite's
// VACUUM INTO reads one snapshot (a WAL read transaction), so writers of this and other
// processes go on and the copy holds every transaction committed before it started, none after.
// path must not exist (a backup never overwrites anything); it is created with mode 0600, written,
// fsync'd, and removed again when the backup fails. The copy is an ordinary database (no -wal):
// restoring it is copying it to DIR/coapca.db with the server stopped.
func (s *Store) Backup(ctx context.Context, path string) (err error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("sqlite: backup: %w", err)
	}
	// O_EXCL: an existing file (or a link planted there) is refused, never replaced. VACUUM INTO
	// accepts an empty file, so the mode is ours, not the umask's.
	f, err := os.OpenFile(abs, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("sqlite: backup: %w", err)
	}
	f.Close()
	defer func() {
		if err != nil {
			os.Remove(abs)
		}
	}()
	// VACUUM takes no bind parameter for its file name in every SQLite build; quote it as an
	// SQL string literal instead.
	lit := "'" + strings.ReplaceAll(abs, "'", "''") + "'"
	if _, err := s.db.ExecContext(ctx, "VACUUM INTO "+lit); err != nil {
		return fmt.Errorf("sqlite: backup to %s: %w", abs, err)
	}
	f, err = os.OpenFile(abs, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("sqlite: backup: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sqlite: backup: sync %s: %w", abs, err)
	}
	return f.Close()
}

// Check runs SQLite's integrity and foreign-key checks over the whole database and returns an
// error listing what they found; nil means the database is consistent.
func (s *Store) Check(ctx context.Context) error {
	rows, err := s.db.QueryContext(ctx, "PRAGMA integrity_check")
	if err != nil {
		return fmt.Errorf("sqlite: integrity check: %w", err)
	}
	var problems []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			rows.Close()
			return fmt.Errorf("sqlite: integrity check: %w", err)
		}
		if line != "ok" {
			problems = append(problems, line)
		}
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return fmt.Errorf("sqlite: integrity check: %w", err)
	}
	fk, err := s.db.QueryContext(ctx, "PRAGMA foreign_key_check")
	if err != nil {
		return fmt.Errorf("sqlite: foreign key check: %w", err)
	}
	for fk.Next() {
		var table, parent string
		var rowid, idx any
		if err := fk.Scan(&table, &rowid, &parent, &idx); err != nil {
			fk.Close()
			return fmt.Errorf("sqlite: foreign key check: %w", err)
		}
		problems = append(problems, fmt.Sprintf("%s row %v: no %s row for its foreign key", table, rowid, parent))
	}
	if err := errors.Join(fk.Err(), fk.Close()); err != nil {
		return fmt.Errorf("sqlite: foreign key check: %w", err)
	}
	if len(problems) > 0 {
		return fmt.Errorf("sqlite: database is inconsistent: %s", strings.Join(problems, "; "))
	}
	return nil
}
