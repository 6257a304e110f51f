// Package postgres is the store.Store on PostgreSQL, through github.com/jackc/pgx/v5: the back
// end for several coapca instances sharing one database behind a load balancer (DESIGN.md, "the
// store"; docs/deployment.md).
//
// What several instances rely on, and how this package gives it:
//   - serial numbers are unique forever (RFC 5280 §4.1.2.2: a CA MUST NOT reuse a serial): the
//     certificates table's primary key; a second RecordIssued of a serial fails with
//     store.ErrDuplicateSerial whichever instance wrote the first;
//   - CRL numbers are monotonic (RFC 5280 §5.2.3): NextCounter is one INSERT … ON CONFLICT DO
//     UPDATE … RETURNING, which PostgreSQL executes atomically under concurrency;
//   - an approved request is issued at most once: RecordIssued moves the pending row from
//     approved to issued in the certificate's transaction, and a concurrent second writer waits
//     for the row lock, re-reads the row and finds it issued;
//   - every write is one transaction committed with the server's synchronous_commit (on by
//     default), so a recorded certificate is durable before it leaves the server.
//
// The schema is versioned in the table coapca_schema and migrated forward on Open under a
// transaction-scoped advisory lock, so instances starting together migrate once.
package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"coapca/store"
)

// Options tune Open. The zero value is the production setting.
type Options struct {
	// MaxConns caps the connection pool (default: pgxpool's, max(4, number of CPUs)); a
	// pool_max_conns parameter in the DSN takes precedence.
	MaxConns int32
	Logger   *slog.Logger
}

// Store is the PostgreSQL store.Store.
type Store struct {
	pool *pgxpool.Pool
	log  *slog.Logger

	mu        sync.Mutex
	closed    bool
	listeners []context.CancelFunc // of the Listen goroutines, cancelled by Close
	wg        sync.WaitGroup
}

var (
	_ store.Store    = (*Store)(nil)
	_ store.Notifier = (*Store)(nil)
)

// Open connects to the database named by dsn (a postgres:// URL or key=value string, as libpq
// takes it) and migrates its schema to SchemaVersion.
func Open(ctx context.Context, dsn string, opts Options) (*Store, error) {
	return open(ctx, dsn, opts, len(migrations))
}

// open migrates to version target (tests stop at earlier versions).
func open(ctx context.Context, dsn string, opts Options, target int) (*Store, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx's message masks the password of the DSN it quotes.
		return nil, fmt.Errorf("postgres: the data source name is not a valid PostgreSQL connection string: %w", err)
	}
	if opts.MaxConns > 0 && !strings.Contains(dsn, "pool_max_conns") {
		cfg.MaxConns = opts.MaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: connect: %w", err)
	}
	s := &Store{pool: pool, log: log}
	if err := s.migrate(ctx, target); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: %s: %w", where(cfg), err)
	}
	return s, nil
}

// where names the database for messages, without credentials.
func where(cfg *pgxpool.Config) string {
	return fmt.Sprintf("database %q on %s:%d", cfg.ConnConfig.Database, cfg.ConnConfig.Host, cfg.ConnConfig.Port)
}

// Close stops the listeners and closes the connection pool. It is safe to call twice.
func (s *Store) Close() error {
	s.mu.Lock()
	s.closed = true
	for _, cancel := range s.listeners {
		cancel()
	}
	s.listeners = nil
	s.mu.Unlock()
	s.wg.Wait()
	s.pool.Close()
	return nil
}

// migrations[i] brings the schema from version i to i+1. Never edit a released entry; append.
// Times are timestamptz (microseconds); a zero time.Time is stored as 0001-01-01 UTC.
var migrations = []string{
	// 0→1: the store of the SQLite schema 3, in PostgreSQL types.
	`CREATE TABLE certificates (
		seq                bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
		serial             text PRIMARY KEY,
		subject            text NOT NULL,
		issuer             text NOT NULL,
		not_before         timestamptz NOT NULL,
		not_after          timestamptz NOT NULL,
		der                bytea NOT NULL,
		label              text NOT NULL,
		op                 text NOT NULL,
		protocol           text NOT NULL,
		transport          text NOT NULL,
		requester_subject  text NOT NULL,
		requester_issuer   text NOT NULL,
		requester_serial   text NOT NULL,
		requester_ref      text NOT NULL,
		requester_addr     text NOT NULL,
		pending_id         text NOT NULL,
		issued_at          timestamptz NOT NULL,
		revoked_at         timestamptz,
		revocation_reason  integer NOT NULL DEFAULT 0
	);
	CREATE INDEX certificates_issued ON certificates(issued_at);
	CREATE INDEX certificates_revoked ON certificates(issuer, revoked_at) WHERE revoked_at IS NOT NULL;
	CREATE TABLE pending (
		seq                bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
		id                 text PRIMARY KEY,
		request_key        text NOT NULL UNIQUE,
		status             text NOT NULL,
		reason             text NOT NULL,
		label              text NOT NULL,
		op                 text NOT NULL,
		protocol           text NOT NULL,
		transport          text NOT NULL,
		subject            text NOT NULL,
		request            bytea NOT NULL,
		requester_subject  text NOT NULL,
		requester_issuer   text NOT NULL,
		requester_serial   text NOT NULL,
		requester_ref      text NOT NULL,
		requester_addr     text NOT NULL,
		cert_serial        text NOT NULL,
		created_at         timestamptz NOT NULL,
		updated_at         timestamptz NOT NULL
	);
	CREATE INDEX pending_created ON pending(created_at);
	CREATE TABLE counters (
		name  text PRIMARY KEY,
		value bigint NOT NULL
	);
	CREATE TABLE unconfirmed (
		serial          text PRIMARY KEY REFERENCES certificates(serial),
		transaction_id  bytea NOT NULL,
		deadline        timestamptz NOT NULL,
		created_at      timestamptz NOT NULL
	);
	CREATE INDEX unconfirmed_deadline ON unconfirmed(deadline);
	CREATE TABLE key_package_returns (
		id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		kind               text NOT NULL,
		cert_serial        text NOT NULL,
		pkg_id             bytea NOT NULL,
		received_by        text NOT NULL,
		error_code         text NOT NULL,
		signer_serial      text NOT NULL,
		requester_subject  text NOT NULL,
		requester_issuer   text NOT NULL,
		requester_serial   text NOT NULL,
		requester_ref      text NOT NULL,
		requester_addr     text NOT NULL,
		der                bytea NOT NULL,
		received_at        timestamptz NOT NULL
	);
	CREATE INDEX key_package_returns_cert ON key_package_returns(cert_serial);`,
	// 1→2: open CMP transactions, so that their pollReq and certConf may reach any instance
	// (store.CMPTransaction).
	`CREATE TABLE cmp_transactions (
		id       bytea PRIMARY KEY,
		state    bytea NOT NULL,
		expires  timestamptz NOT NULL
	);
	CREATE INDEX cmp_transactions_expires ON cmp_transactions(expires);`,
	// 2→3: packages for clients and their delivery (RFC 8295 §2, §5–§7; store.Package).
	`CREATE TABLE packages (
		id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		kind        text NOT NULL,
		target      text NOT NULL,
		name        text NOT NULL,
		content     bytea NOT NULL,
		created_at  timestamptz NOT NULL
	);
	CREATE INDEX packages_kind ON packages(kind);
	CREATE TABLE package_deliveries (
		package_id     bigint NOT NULL REFERENCES packages(id),
		client_serial  text NOT NULL,
		fetched_at     timestamptz NOT NULL,
		fetches        bigint NOT NULL,
		return_kind    text NOT NULL DEFAULT '',
		error_code     text NOT NULL DEFAULT '',
		return_der     bytea NOT NULL DEFAULT '',
		returned_at    timestamptz,
		PRIMARY KEY (package_id, client_serial)
	);
	CREATE INDEX package_deliveries_client ON package_deliveries(client_serial);`,
	// 3→4: certificates by reference, as an EDHOC Initiator designates its own (RFC 9528
	// §3.5.3: x5t = a hash of the DER, kid = the Subject Key Identifier). Existing rows are
	// filled in by backfills[3].
	`ALTER TABLE certificates ADD COLUMN cert_sha256 bytea;
	ALTER TABLE certificates ADD COLUMN key_id bytea;
	CREATE INDEX certificates_sha256 ON certificates(cert_sha256);
	CREATE INDEX certificates_key_id ON certificates(key_id) WHERE key_id IS NOT NULL;`,
	// 4→5: the symmetric key forms (RFC 8295 §5.1.2) the operator allows per package, and the
	// form of each client's latest fetch (store.Package.Forms, store.PackageDelivery.Form).
	`ALTER TABLE packages ADD COLUMN forms text NOT NULL DEFAULT '';
	ALTER TABLE package_deliveries ADD COLUMN form text NOT NULL DEFAULT '';`,
}

// backfills[i], when set, runs after migrations[i] in the same transaction: what SQL alone
// cannot compute for the rows already there.
var backfills = map[int]func(ctx context.Context, tx pgx.Tx) error{
	3: backfillKeyRefs,
}

// backfillKeyRefs fills cert_sha256 and key_id of the certificates recorded before schema 4.
func backfillKeyRefs(ctx context.Context, tx pgx.Tx) error {
	rows, err := tx.Query(ctx, "SELECT serial, der FROM certificates WHERE cert_sha256 IS NULL")
	if err != nil {
		return fmt.Errorf("backfill certificate hashes: %w", err)
	}
	type ref struct {
		serial     string
		sum, keyID []byte
	}
	refs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ref, error) {
		var serial string
		var der []byte
		if err := r.Scan(&serial, &der); err != nil {
			return ref{}, err
		}
		sum, keyID := store.CertKeyRefs(der)
		return ref{serial, sum, keyID}, nil
	})
	if err != nil {
		return fmt.Errorf("backfill certificate hashes: %w", err)
	}
	for _, r := range refs {
		if _, err := tx.Exec(ctx, "UPDATE certificates SET cert_sha256 = $1, key_id = $2 WHERE serial = $3",
			r.sum, r.keyID, r.serial); err != nil {
			return fmt.Errorf("backfill certificate %s: %w", r.serial, err)
		}
	}
	return nil
}

// SchemaVersion is the schema version this build writes.
const SchemaVersion = 5

// migrateLock is the advisory lock key held while the schema is migrated ("coapca" in ASCII).
const migrateLock = 0x636f61706361

func (s *Store) migrate(ctx context.Context, target int) error {
	return s.tx(ctx, func(tx pgx.Tx) error {
		// Instances starting together: the first migrates, the others wait here and then find
		// the schema current.
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(migrateLock)); err != nil {
			return fmt.Errorf("lock for migration: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS coapca_schema (
			only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
			version  integer NOT NULL)`); err != nil {
			return fmt.Errorf("create schema version table: %w", err)
		}
		var v int
		err := tx.QueryRow(ctx, "SELECT version FROM coapca_schema").Scan(&v)
		if errors.Is(err, pgx.ErrNoRows) {
			v = 0
		} else if err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		if v > len(migrations) {
			return fmt.Errorf("database schema version %d is newer than this program (%d)", v, len(migrations))
		}
		for i := v; i < target; i++ {
			if _, err := tx.Exec(ctx, migrations[i]); err != nil {
				return fmt.Errorf("migrate schema %d→%d: %w", i, i+1, err)
			}
			if fill := backfills[i]; fill != nil {
				if err := fill(ctx, tx); err != nil {
					return fmt.Errorf("migrate schema %d→%d: %w", i, i+1, err)
				}
			}
			s.log.Info("store: migrated schema", "from", i, "to", i+1)
		}
		if v < target {
			if _, err := tx.Exec(ctx, `INSERT INTO coapca_schema (version) VALUES ($1)
				ON CONFLICT (only_row) DO UPDATE SET version = excluded.version`, target); err != nil {
				return fmt.Errorf("set schema version: %w", err)
			}
		}
		return nil
	})
}

// tx runs fn in one transaction and commits it.
func (s *Store) tx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback(context.WithoutCancel(ctx))
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// ts is the stored form of t: UTC with PostgreSQL's microsecond precision, so what is read back
// equals what was written.
func ts(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// pgCode is the SQLSTATE of err ("" when it is no PostgreSQL error).
func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

const (
	uniqueViolation     = "23505"
	foreignKeyViolation = "23503"
)

// RecordIssued implements store.Store. PostgreSQL groups concurrent commits itself, so each
// call is its own transaction.
func (s *Store) RecordIssued(ctx context.Context, c *store.Cert) error {
	issued := c.IssuedAt
	if issued.IsZero() {
		issued = time.Now()
	}
	// Once started, finish: the caller must learn whether the certificate was recorded, and a
	// cancelled context would leave that open. A database that does not answer still ends it.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	sum, keyID := store.CertKeyRefs(c.DER) // outside the transaction: it parses the DER
	return s.tx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO certificates (serial, subject, issuer, not_before, not_after, der,
			label, op, protocol, transport, requester_subject, requester_issuer, requester_serial, requester_ref,
			requester_addr, pending_id, issued_at, revoked_at, revocation_reason, cert_sha256, key_id)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, NULL, 0, $18, $19)`,
			c.Serial, c.Subject, c.Issuer, ts(c.NotBefore), ts(c.NotAfter), nonNil(c.DER),
			c.Label, c.Op, c.Protocol, c.Transport, c.RequesterSubject, c.RequesterIssuer, c.RequesterSerial,
			c.RequesterRef, c.RequesterAddr, c.PendingID, ts(issued), sum, keyID)
		if pgCode(err) == uniqueViolation {
			return fmt.Errorf("postgres: serial %s: %w", c.Serial, store.ErrDuplicateSerial)
		}
		if err != nil {
			return fmt.Errorf("postgres: insert certificate %s: %w", c.Serial, err)
		}
		if c.PendingID == "" {
			return nil
		}
		// Only an approved request becomes issued. A concurrent writer of the same request waits
		// for this row's lock and then re-evaluates the condition against the committed row
		// (READ COMMITTED), so it finds the request issued and rolls its certificate back.
		tag, err := tx.Exec(ctx, `UPDATE pending SET status = $1, cert_serial = $2, updated_at = $3
			WHERE id = $4 AND status = $5`,
			store.StatusIssued, c.Serial, ts(issued), c.PendingID, store.StatusApproved)
		if err != nil {
			return fmt.Errorf("postgres: mark pending %s issued: %w", c.PendingID, err)
		}
		if tag.RowsAffected() != 1 {
			return fmt.Errorf("postgres: pending %s is not approved: %w", c.PendingID, store.ErrPendingState)
		}
		return nil
	})
}

// recordTimeout bounds RecordIssued once it has started.
const recordTimeout = time.Minute

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

const certColumns = `serial, subject, issuer, not_before, not_after, der, label, op, protocol, transport,
	requester_subject, requester_issuer, requester_serial, requester_ref, requester_addr, pending_id,
	issued_at, revoked_at, revocation_reason`

func scanCert(r pgx.Row) (*store.Cert, error) {
	var c store.Cert
	var ra *time.Time
	if err := r.Scan(&c.Serial, &c.Subject, &c.Issuer, &c.NotBefore, &c.NotAfter, &c.DER, &c.Label, &c.Op,
		&c.Protocol, &c.Transport, &c.RequesterSubject, &c.RequesterIssuer, &c.RequesterSerial, &c.RequesterRef,
		&c.RequesterAddr, &c.PendingID, &c.IssuedAt, &ra, &c.RevocationReason); err != nil {
		return nil, err
	}
	c.NotBefore, c.NotAfter, c.IssuedAt = c.NotBefore.UTC(), c.NotAfter.UTC(), c.IssuedAt.UTC()
	if ra != nil {
		c.RevokedAt = ra.UTC()
	}
	return &c, nil
}

// Cert implements store.Store.
func (s *Store) Cert(ctx context.Context, serial string) (*store.Cert, error) {
	c, err := scanCert(s.pool.QueryRow(ctx, "SELECT "+certColumns+" FROM certificates WHERE serial = $1", serial))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("postgres: certificate %s: %w", serial, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: certificate %s: %w", serial, err)
	}
	return c, nil
}

// conds collects WHERE conditions with numbered parameters.
type conds struct {
	where []string
	args  []any
}

// add appends a condition; each %s in cond is replaced by the next parameter placeholder.
func (q *conds) add(cond string, args ...any) {
	ph := make([]any, len(args))
	for i := range args {
		ph[i] = fmt.Sprintf("$%d", len(q.args)+i+1)
	}
	q.where = append(q.where, fmt.Sprintf(cond, ph...))
	q.args = append(q.args, args...)
}

func (q *conds) String() string {
	if len(q.where) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(q.where, " AND ")
}

func limit(n, off int) string {
	var out string
	if n > 0 {
		out = fmt.Sprintf(" LIMIT %d", n)
	}
	if off > 0 {
		out += fmt.Sprintf(" OFFSET %d", off)
	}
	return out
}

// ListCerts implements store.Store.
func (s *Store) ListCerts(ctx context.Context, f store.CertFilter) ([]*store.Cert, error) {
	var q conds
	if f.Label != "" || f.LabelSet {
		q.add("label = %s", f.Label)
	}
	if f.SubjectContains != "" {
		q.add("strpos(subject, %s) > 0", f.SubjectContains)
	}
	if f.SerialPrefix != "" {
		q.add("starts_with(serial, %s)", f.SerialPrefix)
	}
	if f.Issuer != "" {
		q.add("issuer = %s", f.Issuer)
	}
	if f.RequesterIssuer != "" {
		q.add("requester_issuer = %s", f.RequesterIssuer)
	}
	if f.RequesterSerial != "" {
		q.add("requester_serial = %s", f.RequesterSerial)
	}
	if f.RequesterRef != "" {
		q.add("requester_ref = %s", f.RequesterRef)
	}
	if len(f.CertSHA256Prefix) > 0 {
		// A range on the indexed column (bytea compares bytewise), which the index answers.
		q.add("cert_sha256 >= %s", f.CertSHA256Prefix)
		if end := store.PrefixEnd(f.CertSHA256Prefix); end != nil {
			q.add("cert_sha256 < %s", end)
		}
	}
	if len(f.KeyID) > 0 {
		q.add("key_id = %s", f.KeyID)
	}
	switch f.Revocation {
	case store.OnlyRevoked:
		q.add("revoked_at IS NOT NULL")
	case store.NotRevoked:
		q.add("revoked_at IS NULL")
	}
	rows, err := s.pool.Query(ctx, "SELECT "+certColumns+" FROM certificates"+q.String()+
		" ORDER BY issued_at DESC, seq DESC"+limit(f.Limit, f.Offset), q.args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: list certificates: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*store.Cert, error) { return scanCert(r) })
	if err != nil {
		return nil, fmt.Errorf("postgres: list certificates: %w", err)
	}
	return out, nil
}

// RevokeCert implements store.Store.
func (s *Store) RevokeCert(ctx context.Context, serial string, reason int, at time.Time) error {
	return s.tx(ctx, func(tx pgx.Tx) error {
		var ra *time.Time
		err := tx.QueryRow(ctx, "SELECT revoked_at FROM certificates WHERE serial = $1 FOR UPDATE", serial).Scan(&ra)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("postgres: revoke %s: %w", serial, store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("postgres: revoke %s: %w", serial, err)
		}
		if ra != nil {
			return fmt.Errorf("postgres: revoke %s: %w", serial, store.ErrAlreadyRevoked)
		}
		if _, err := tx.Exec(ctx, "UPDATE certificates SET revoked_at = $1, revocation_reason = $2 WHERE serial = $3",
			ts(at), reason, serial); err != nil {
			return fmt.Errorf("postgres: revoke %s: %w", serial, err)
		}
		// Delivered to every listening instance when (and only if) the revocation commits.
		if _, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", eventChannel, store.EventRevoked+" "+serial); err != nil {
			return fmt.Errorf("postgres: revoke %s: notify: %w", serial, err)
		}
		return nil
	})
}

// RevokedCerts implements store.Store.
func (s *Store) RevokedCerts(ctx context.Context, issuer string) ([]store.RevokedEntry, error) {
	var q conds
	q.add("revoked_at IS NOT NULL")
	if issuer != "" {
		q.add("issuer = %s", issuer)
	}
	rows, err := s.pool.Query(ctx, "SELECT serial, revoked_at, revocation_reason, not_after FROM certificates"+
		q.String()+" ORDER BY revoked_at, serial", q.args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: revoked certificates: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.RevokedEntry, error) {
		var e store.RevokedEntry
		err := r.Scan(&e.Serial, &e.RevokedAt, &e.Reason, &e.NotAfter)
		e.RevokedAt, e.NotAfter = e.RevokedAt.UTC(), e.NotAfter.UTC()
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: revoked certificates: %w", err)
	}
	return out, nil
}

const pendingColumns = `id, request_key, status, reason, label, op, protocol, transport, subject, request,
	requester_subject, requester_issuer, requester_serial, requester_ref, requester_addr, cert_serial,
	created_at, updated_at`

func scanPending(r pgx.Row) (*store.Pending, error) {
	var p store.Pending
	if err := r.Scan(&p.ID, &p.RequestKey, &p.Status, &p.Reason, &p.Label, &p.Op, &p.Protocol, &p.Transport,
		&p.Subject, &p.Request, &p.RequesterSubject, &p.RequesterIssuer, &p.RequesterSerial, &p.RequesterRef,
		&p.RequesterAddr, &p.CertSerial, &p.CreatedAt, &p.UpdatedAt); err != nil {
		return nil, err
	}
	p.CreatedAt, p.UpdatedAt = p.CreatedAt.UTC(), p.UpdatedAt.UTC()
	return &p, nil
}

// newPendingID returns a random 16-hex-digit ID (64 bits), short enough to type.
func newPendingID() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("pending id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// CreatePending implements store.Store. Two instances creating the same request key at once
// both end with the one stored row: the second INSERT waits for the first's unique index entry
// and then does nothing.
func (s *Store) CreatePending(ctx context.Context, p *store.Pending) (*store.Pending, bool, error) {
	n := *p
	now := ts(time.Now()).Truncate(time.Second)
	n.Status, n.CreatedAt, n.UpdatedAt, n.CertSerial, n.Reason = store.StatusPending, now, now, "", ""
	n.Request = nonNil(n.Request)
	for attempt := 0; ; attempt++ {
		if n.ID == "" || attempt > 0 {
			var err error
			if n.ID, err = newPendingID(); err != nil {
				return nil, false, err
			}
		}
		tag, err := s.pool.Exec(ctx, "INSERT INTO pending ("+pendingColumns+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
			ON CONFLICT (request_key) DO NOTHING`,
			n.ID, n.RequestKey, n.Status, n.Reason, n.Label, n.Op, n.Protocol, n.Transport, n.Subject, n.Request,
			n.RequesterSubject, n.RequesterIssuer, n.RequesterSerial, n.RequesterRef, n.RequesterAddr,
			n.CertSerial, n.CreatedAt, n.UpdatedAt)
		switch {
		case err == nil && tag.RowsAffected() == 1:
			return &n, true, nil
		case err == nil:
			old, err := scanPending(s.pool.QueryRow(ctx, "SELECT "+pendingColumns+" FROM pending WHERE request_key = $1", n.RequestKey))
			if err != nil {
				return nil, false, fmt.Errorf("postgres: find pending: %w", err)
			}
			return old, false, nil
		case pgCode(err) == uniqueViolation && attempt < 3:
			// The random ID collided with another request's: draw again.
		default:
			return nil, false, fmt.Errorf("postgres: insert pending: %w", err)
		}
	}
}

// Pending implements store.Store.
func (s *Store) Pending(ctx context.Context, id string) (*store.Pending, error) {
	p, err := scanPending(s.pool.QueryRow(ctx, "SELECT "+pendingColumns+" FROM pending WHERE id = $1", id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("postgres: pending request %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: pending request %s: %w", id, err)
	}
	return p, nil
}

// ListPending implements store.Store.
func (s *Store) ListPending(ctx context.Context, f store.PendingFilter) ([]*store.Pending, error) {
	var q conds
	if f.Status != "" {
		q.add("status = %s", string(f.Status))
	}
	if f.Label != "" {
		q.add("label = %s", f.Label)
	}
	rows, err := s.pool.Query(ctx, "SELECT "+pendingColumns+" FROM pending"+q.String()+
		" ORDER BY created_at DESC, seq DESC"+limit(f.Limit, f.Offset), q.args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: list pending: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*store.Pending, error) { return scanPending(r) })
	if err != nil {
		return nil, fmt.Errorf("postgres: list pending: %w", err)
	}
	return out, nil
}

// DecidePending implements store.Store.
func (s *Store) DecidePending(ctx context.Context, id string, status store.PendingStatus, reason string) error {
	if status != store.StatusApproved && status != store.StatusRejected {
		return fmt.Errorf("postgres: decide pending %s: status %q is not a decision", id, status)
	}
	return s.tx(ctx, func(tx pgx.Tx) error {
		var cur store.PendingStatus
		err := tx.QueryRow(ctx, "SELECT status FROM pending WHERE id = $1 FOR UPDATE", id).Scan(&cur)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("postgres: decide pending %s: %w", id, store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("postgres: decide pending %s: %w", id, err)
		}
		switch {
		case cur == status:
			return nil
		case cur != store.StatusPending:
			return fmt.Errorf("postgres: pending %s is %s, cannot become %s: %w", id, cur, status, store.ErrPendingState)
		}
		if _, err := tx.Exec(ctx, "UPDATE pending SET status = $1, reason = $2, updated_at = $3 WHERE id = $4",
			status, reason, ts(time.Now()), id); err != nil {
			return fmt.Errorf("postgres: decide pending %s: %w", id, err)
		}
		return nil
	})
}

// AddUnconfirmed implements store.Store.
func (s *Store) AddUnconfirmed(ctx context.Context, u store.Unconfirmed) error {
	created := u.CreatedAt
	if created.IsZero() {
		created = time.Now()
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO unconfirmed (serial, transaction_id, deadline, created_at)
		VALUES ($1, $2, $3, $4) ON CONFLICT (serial) DO UPDATE SET transaction_id = excluded.transaction_id,
		deadline = excluded.deadline, created_at = excluded.created_at`,
		u.Serial, nonNil(u.TransactionID), ts(u.Deadline), ts(created))
	if pgCode(err) == foreignKeyViolation {
		return fmt.Errorf("postgres: unconfirmed %s: no such certificate: %w", u.Serial, store.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("postgres: unconfirmed %s: %w", u.Serial, err)
	}
	return nil
}

// DeleteUnconfirmed implements store.Store.
func (s *Store) DeleteUnconfirmed(ctx context.Context, serial string) error {
	tag, err := s.pool.Exec(ctx, "DELETE FROM unconfirmed WHERE serial = $1", serial)
	if err != nil {
		return fmt.Errorf("postgres: delete unconfirmed %s: %w", serial, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: unconfirmed %s: %w", serial, store.ErrNotFound)
	}
	return nil
}

// DueUnconfirmed implements store.Store.
func (s *Store) DueUnconfirmed(ctx context.Context, now time.Time, n int) ([]store.Unconfirmed, error) {
	rows, err := s.pool.Query(ctx, `SELECT serial, transaction_id, deadline, created_at FROM unconfirmed
		WHERE deadline <= $1 ORDER BY deadline, serial`+limit(n, 0), ts(now))
	if err != nil {
		return nil, fmt.Errorf("postgres: due unconfirmed: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Unconfirmed, error) {
		var u store.Unconfirmed
		err := r.Scan(&u.Serial, &u.TransactionID, &u.Deadline, &u.CreatedAt)
		u.Deadline, u.CreatedAt = u.Deadline.UTC(), u.CreatedAt.UTC()
		return u, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: due unconfirmed: %w", err)
	}
	return out, nil
}

// AddKeyPackageReturn implements store.Store.
func (s *Store) AddKeyPackageReturn(ctx context.Context, r *store.KeyPackageReturn) error {
	if r.ReceivedAt.IsZero() {
		r.ReceivedAt = time.Now()
	}
	r.ReceivedAt = ts(r.ReceivedAt)
	err := s.pool.QueryRow(ctx, `INSERT INTO key_package_returns (kind, cert_serial, pkg_id, received_by, error_code,
		signer_serial, requester_subject, requester_issuer, requester_serial, requester_ref, requester_addr, der, received_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id`,
		r.Kind, r.CertSerial, nonNil(r.PkgID), r.By, r.ErrorCode, r.SignerSerial, r.RequesterSubject, r.RequesterIssuer,
		r.RequesterSerial, r.RequesterRef, r.RequesterAddr, nonNil(r.DER), r.ReceivedAt).Scan(&r.ID)
	if err != nil {
		return fmt.Errorf("postgres: key package return: %w", err)
	}
	return nil
}

// ListKeyPackageReturns implements store.Store.
func (s *Store) ListKeyPackageReturns(ctx context.Context, f store.KeyPackageReturnFilter) ([]*store.KeyPackageReturn, error) {
	var q conds
	if f.CertSerial != "" {
		q.add("cert_serial = %s", f.CertSerial)
	}
	rows, err := s.pool.Query(ctx, `SELECT id, kind, cert_serial, pkg_id, received_by, error_code, signer_serial,
		requester_subject, requester_issuer, requester_serial, requester_ref, requester_addr, der, received_at
		FROM key_package_returns`+q.String()+" ORDER BY received_at DESC, id DESC"+limit(f.Limit, f.Offset), q.args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: list key package returns: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*store.KeyPackageReturn, error) {
		r := &store.KeyPackageReturn{}
		err := row.Scan(&r.ID, &r.Kind, &r.CertSerial, &r.PkgID, &r.By, &r.ErrorCode, &r.SignerSerial, &r.RequesterSubject,
			&r.RequesterIssuer, &r.RequesterSerial, &r.RequesterRef, &r.RequesterAddr, &r.DER, &r.ReceivedAt)
		r.ReceivedAt = r.ReceivedAt.UTC()
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: list key package returns: %w", err)
	}
	return out, nil
}

// NextCounter implements store.Store. One statement: PostgreSQL serialises concurrent
// increments of a row (from any instance) on its row lock, so no value is returned twice
// (RFC 5280 §5.2.3: the CRL number MUST be monotonically increasing).
func (s *Store) NextCounter(ctx context.Context, name string) (int64, error) {
	var v int64
	err := s.pool.QueryRow(ctx, `INSERT INTO counters (name, value) VALUES ($1, 1)
		ON CONFLICT (name) DO UPDATE SET value = counters.value + 1 RETURNING value`, name).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("postgres: counter %s: %w", name, err)
	}
	return v, nil
}

// ReserveRange implements store.Store: one statement, serialised on the counter's row lock
// across instances, so two reservations never overlap (RFC 8613 §7.2.1).
func (s *Store) ReserveRange(ctx context.Context, name string, floor, n int64) (int64, error) {
	if n <= 0 || floor < 0 {
		return 0, fmt.Errorf("postgres: reserve %s: bad range (floor %d, n %d)", name, floor, n)
	}
	var end int64
	err := s.pool.QueryRow(ctx, `INSERT INTO counters (name, value) VALUES ($1, $2::bigint + $3::bigint)
		ON CONFLICT (name) DO UPDATE SET value = greatest(counters.value, $2::bigint) + $3::bigint RETURNING value`,
		name, floor, n).Scan(&end)
	if err != nil {
		return 0, fmt.Errorf("postgres: reserve %s: %w", name, err)
	}
	return end - n, nil
}

// AdvanceCounter implements store.Store: one statement on the counter's row lock, so of two
// instances advancing to the same value only one succeeds (RFC 8613 §7.4).
func (s *Store) AdvanceCounter(ctx context.Context, name string, value int64) (bool, error) {
	if value < 0 {
		return false, fmt.Errorf("postgres: advance %s: negative value %d", name, value)
	}
	var v int64
	err := s.pool.QueryRow(ctx, `INSERT INTO counters (name, value) VALUES ($1, $2)
		ON CONFLICT (name) DO UPDATE SET value = excluded.value WHERE counters.value < excluded.value
		RETURNING value`, name, value).Scan(&v)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return false, nil // at or above value: unchanged
	case err != nil:
		return false, fmt.Errorf("postgres: advance %s: %w", name, err)
	}
	return true, nil
}

// eventChannel is the LISTEN/NOTIFY channel of store.Notifier.
const eventChannel = "coapca_events"

// maxEvent is PostgreSQL's limit on a NOTIFY payload (8000 bytes, less one).
const maxEvent = 7999

// Notify implements store.Notifier.
func (s *Store) Notify(ctx context.Context, event string) error {
	if len(event) > maxEvent {
		return fmt.Errorf("postgres: notify: event of %d bytes exceeds %d", len(event), maxEvent)
	}
	if _, err := s.pool.Exec(ctx, "SELECT pg_notify($1, $2)", eventChannel, event); err != nil {
		return fmt.Errorf("postgres: notify: %w", err)
	}
	return nil
}

// Listen implements store.Notifier on a connection of its own (outside the pool: it waits
// for notifications as long as it listens).
func (s *Store) Listen(ctx context.Context, fn func(event string)) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errors.New("postgres: listen: store is closed")
	}
	ctx, cancel := context.WithCancel(ctx)
	s.listeners = append(s.listeners, cancel)
	s.mu.Unlock()
	conn, err := s.listenConn(ctx)
	if err != nil {
		cancel()
		return err
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer cancel()
		s.listen(ctx, conn, fn)
	}()
	return nil
}

// listenConn connects and executes LISTEN.
func (s *Store) listenConn(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig)
	if err != nil {
		return nil, fmt.Errorf("postgres: listen: %w", err)
	}
	if _, err := conn.Exec(ctx, "LISTEN "+eventChannel); err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("postgres: listen: %w", err)
	}
	return conn, nil
}

// listen delivers notifications until ctx ends, reconnecting (with a growing pause, at most
// 30 s) when the connection is lost.
func (s *Store) listen(ctx context.Context, conn *pgx.Conn, fn func(string)) {
	pause := time.Second
	for {
		n, err := conn.WaitForNotification(ctx)
		if err == nil {
			pause = time.Second
			fn(n.Payload)
			continue
		}
		conn.Close(context.WithoutCancel(ctx))
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("store: lost the notification connection; listening again", "err", err)
		for {
			t := time.NewTimer(pause)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			pause = min(2*pause, 30*time.Second)
			if conn, err = s.listenConn(ctx); err == nil {
				break
			}
			s.log.Warn("store: cannot listen for notifications", "err", err)
		}
		fn("") // events may have been missed while the connection was down
	}
}

// PutCMPTransaction implements store.Store.
func (s *Store) PutCMPTransaction(ctx context.Context, t store.CMPTransaction) error {
	if len(t.ID) == 0 {
		return errors.New("postgres: CMP transaction without an ID")
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO cmp_transactions (id, state, expires) VALUES ($1, $2, $3)
		ON CONFLICT (id) DO UPDATE SET state = excluded.state, expires = excluded.expires`,
		t.ID, nonNil(t.State), ts(t.Expires))
	if err != nil {
		return fmt.Errorf("postgres: CMP transaction %x: %w", t.ID, err)
	}
	return nil
}

// CMPTransaction implements store.Store.
func (s *Store) CMPTransaction(ctx context.Context, id []byte) (*store.CMPTransaction, error) {
	t := store.CMPTransaction{ID: id}
	err := s.pool.QueryRow(ctx, "SELECT state, expires FROM cmp_transactions WHERE id = $1", id).Scan(&t.State, &t.Expires)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("postgres: CMP transaction %x: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: CMP transaction %x: %w", id, err)
	}
	t.Expires = t.Expires.UTC()
	return &t, nil
}

// DeleteCMPTransaction implements store.Store.
func (s *Store) DeleteCMPTransaction(ctx context.Context, id []byte) error {
	tag, err := s.pool.Exec(ctx, "DELETE FROM cmp_transactions WHERE id = $1", id)
	if err != nil {
		return fmt.Errorf("postgres: delete CMP transaction %x: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres: CMP transaction %x: %w", id, store.ErrNotFound)
	}
	return nil
}

// DeleteExpiredCMPTransactions implements store.Store.
func (s *Store) DeleteExpiredCMPTransactions(ctx context.Context, now time.Time) (int, error) {
	tag, err := s.pool.Exec(ctx, "DELETE FROM cmp_transactions WHERE expires < $1", ts(now))
	if err != nil {
		return 0, fmt.Errorf("postgres: delete expired CMP transactions: %w", err)
	}
	return int(tag.RowsAffected()), nil
}
