package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"coapca/store"
)

// AddPackage implements store.Store.
func (s *Store) AddPackage(ctx context.Context, p *store.Package) error {
	if p.CreatedAt.IsZero() {
		p.CreatedAt = time.Now()
	}
	p.CreatedAt = ts(p.CreatedAt)
	err := s.pool.QueryRow(ctx, `INSERT INTO packages (kind, target, name, content, created_at, forms)
		VALUES ($1, $2, $3, $4, $5, $6) RETURNING id`,
		p.Kind, p.Target, p.Name, nonNil(p.Content), p.CreatedAt, p.Forms).Scan(&p.ID)
	if err != nil {
		return fmt.Errorf("postgres: add package: %w", err)
	}
	return nil
}

const packageColumns = `id, kind, target, name, content, created_at, forms`

func scanPackage(row pgx.Row) (*store.Package, error) {
	p := &store.Package{}
	if err := row.Scan(&p.ID, &p.Kind, &p.Target, &p.Name, &p.Content, &p.CreatedAt, &p.Forms); err != nil {
		return nil, err
	}
	p.CreatedAt = p.CreatedAt.UTC()
	return p, nil
}

// GetPackage implements store.Store.
func (s *Store) GetPackage(ctx context.Context, id int64) (*store.Package, error) {
	p, err := scanPackage(s.pool.QueryRow(ctx, `SELECT `+packageColumns+` FROM packages WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: package %d: %w", id, err)
	}
	return p, nil
}

// ListPackages implements store.Store.
func (s *Store) ListPackages(ctx context.Context, f store.PackageFilter) ([]*store.Package, error) {
	var q conds
	if f.Kind != "" {
		q.add("kind = %s", f.Kind)
	}
	rows, err := s.pool.Query(ctx, `SELECT `+packageColumns+` FROM packages`+q.String()+" ORDER BY id"+limit(f.Limit, 0), q.args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: list packages: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*store.Package, error) { return scanPackage(row) })
	if err != nil {
		return nil, fmt.Errorf("postgres: list packages: %w", err)
	}
	return out, nil
}

// MarkPackageFetched implements store.Store: one upsert, so concurrent fetches from any
// instance count each fetch once.
func (s *Store) MarkPackageFetched(ctx context.Context, packageID int64, clientSerial, form string, at time.Time) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO package_deliveries (package_id, client_serial, fetched_at, fetches, form)
		VALUES ($1, $2, $3, 1, $4)
		ON CONFLICT (package_id, client_serial) DO UPDATE
		SET fetched_at = excluded.fetched_at, fetches = package_deliveries.fetches + 1, form = excluded.form`,
		packageID, clientSerial, ts(at), form)
	if err != nil {
		return fmt.Errorf("postgres: package %d fetched: %w", packageID, err)
	}
	return nil
}

// ReturnPackage implements store.Store: ErrNotFound when the client never fetched the package.
func (s *Store) ReturnPackage(ctx context.Context, d store.PackageDelivery) error {
	tag, err := s.pool.Exec(ctx, `UPDATE package_deliveries SET return_kind = $1, error_code = $2, return_der = $3, returned_at = $4
		WHERE package_id = $5 AND client_serial = $6`,
		d.ReturnKind, d.ErrorCode, nonNil(d.ReturnDER), ts(d.ReturnedAt), d.PackageID, d.ClientSerial)
	if err != nil {
		return fmt.Errorf("postgres: package %d return: %w", d.PackageID, err)
	}
	if tag.RowsAffected() == 0 {
		return store.ErrNotFound
	}
	return nil
}

// ListPackageDeliveries implements store.Store.
func (s *Store) ListPackageDeliveries(ctx context.Context, f store.PackageDeliveryFilter) ([]*store.PackageDelivery, error) {
	var q conds
	if f.PackageID != 0 {
		q.add("package_id = %s", f.PackageID)
	}
	if f.ClientSerial != "" {
		q.add("client_serial = %s", f.ClientSerial)
	}
	rows, err := s.pool.Query(ctx, `SELECT package_id, client_serial, fetched_at, fetches, return_kind, error_code,
		return_der, returned_at, form FROM package_deliveries`+q.String()+" ORDER BY package_id, client_serial"+limit(f.Limit, 0), q.args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: list package deliveries: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*store.PackageDelivery, error) {
		d := &store.PackageDelivery{}
		var returned *time.Time
		if err := row.Scan(&d.PackageID, &d.ClientSerial, &d.FetchedAt, &d.Fetches, &d.ReturnKind, &d.ErrorCode,
			&d.ReturnDER, &returned, &d.Form); err != nil {
			return nil, err
		}
		d.FetchedAt = d.FetchedAt.UTC()
		if returned != nil && d.ReturnKind != "" {
			d.ReturnedAt = returned.UTC()
		}
		return d, nil
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: list package deliveries: %w", err)
	}
	return out, nil
}
