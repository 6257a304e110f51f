package server

import (
	"context"
	"fmt"
)

// backuper is a store that can copy itself while in use (SQLite: VACUUM INTO).
type backuper interface {
	Backup(ctx context.Context, path string) error
}

// checker is a store that can verify its own consistency (SQLite: integrity_check).
type checker interface {
	Check(ctx context.Context) error
}

// Backup writes a consistent copy of the database to path (which must not exist) while servers
// keep using it. Only the database: the rest of the data directory (CA keys and certificates)
// does not change after the first start and is copied once (docs/operations.md).
func (h *House) Backup(ctx context.Context, path string) error {
	b, ok := any(h.store).(backuper)
	if !ok {
		return fmt.Errorf("this store cannot back itself up: use its own tool (docs/operations.md)")
	}
	return b.Backup(ctx, path)
}

// Check verifies the consistency of the database.
func (h *House) Check(ctx context.Context) error {
	c, ok := any(h.store).(checker)
	if !ok {
		return fmt.Errorf("this store has no consistency check")
	}
	return c.Check(ctx)
}
