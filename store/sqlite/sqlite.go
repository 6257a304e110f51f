// Package sqlite is the embedded store.Store: one SQLite file through modernc.org/sqlite
// (pure Go, no cgo).
//
// Durability: WAL journal with synchronous=FULL, so a committed certificate record has been
// fsync'd before the certificate leaves the server. busy_timeout lets a second process (the
// `coapca ca approve` command line) write while the server runs; inside one process writers are
// serialised by a mutex so they queue in Go instead of spinning in SQLite's busy handler.
// Every write is one transaction begun with BEGIN IMMEDIATE. The schema is versioned with
// PRAGMA user_version and migrated forward on Open. The database and its -wal and -shm files
// are readable by the CA's user only (0600).
package sqlite

import (
	"context"
	"crypto/rand"
	"database/sql"
	"database/sql/driver"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"runtime"
	"runtime/metrics"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"coapca/store"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Options tune Open. The zero value is the production setting.
type Options struct {
	// BusyTimeout is how long a write waits for another process's lock (default 10 s).
	BusyTimeout time.Duration
	// Synchronous is the PRAGMA synchronous value: FULL (default: every commit is fsync'd
	// before RecordIssued returns), EXTRA, NORMAL or OFF (tests only).
	Synchronous string
	// GroupCommitWait bounds how long a certificate's commit may wait for others to share its
	// fsync when several callers record at once (default 1 ms; negative: never wait).
	GroupCommitWait time.Duration
	// GroupCommitBusyWait bounds how long a commit may wait for more records while this
	// process's CPUs are all busy, which costs no throughput (default 4 ms; negative: never
	// wait for that reason). See groupCommit.
	GroupCommitBusyWait time.Duration
	Logger              *slog.Logger

	busy func() bool // replaces cpuBusy (tests)
}

// Store is the SQLite store.Store.
type Store struct {
	db  *sql.DB
	wmu sync.Mutex // serialises this process's write transactions
	// wconn is the connection every write transaction of this process runs on (under wmu),
	// once the schema is migrated. SQLite keeps a connection's page cache from one
	// transaction to the next unless another connection has written meanwhile, so the
	// committer finds the pages of its previous commit (the ends of the table and of its serial
	// and issued_at indexes) still in memory; a connection from the pool,
	// which the readers share, has had its cache emptied by the last commit made on another
	// one, and read them again first.
	wconn *sql.Conn
	log   *slog.Logger

	recq      chan *recordReq // RecordIssued → committer
	lingerMax time.Duration   // Options.GroupCommitWait
	busyMax   time.Duration   // Options.GroupCommitBusyWait
	stop      chan struct{}   // closed by Close
	exited    chan struct{}   // closed when the committer has returned
	closeOnce sync.Once

	// certBySerial is Cert's query, prepared once: every EST re-enrollment and CMP request
	// signed by one of our certificates looks its certificate up, and preparing the statement
	// anew each time was a third of that lookup's cost (bench est profile, issue 13).
	certBySerial *sql.Stmt
	// insertCert and markIssued are RecordIssued's statements, prepared once: parsing the
	// INSERT anew was half of its CPU (BenchmarkRecordIssuedCPU profile, issue 13).
	insertCert, markIssued *sql.Stmt

	// refs finds certificates by x5t and kid (ListCerts), in memory: see refIndex.
	refs refIndex

	// Group commit counters (read by tests and benchmarks, logged at debug level): the
	// transactions the committer ran and the records they carried.
	commits, committed atomic.Int64
}

// commitStats returns how many transactions the group committer has run and how many
// records they carried (each transaction is one fsync with synchronous=FULL).
func (s *Store) commitStats() (commits, records int64) {
	return s.commits.Load(), s.committed.Load()
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the database at path and migrates its schema.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	return open(ctx, path, opts, len(migrations))
}

// open migrates to schema version target (tests stop at earlier versions).
func open(ctx context.Context, path string, opts Options, target int) (*Store, error) {
	if opts.BusyTimeout <= 0 {
		opts.BusyTimeout = 10 * time.Second
	}
	if opts.GroupCommitWait == 0 {
		opts.GroupCommitWait = time.Millisecond
	}
	if opts.GroupCommitBusyWait == 0 {
		opts.GroupCommitBusyWait = 4 * time.Millisecond
	}
	if opts.busy == nil {
		opts.busy = cpuBusy()
	}
	switch opts.Synchronous = strings.ToUpper(opts.Synchronous); opts.Synchronous {
	case "":
		opts.Synchronous = "FULL"
	case "OFF", "NORMAL", "FULL", "EXTRA":
	default:
		return nil, fmt.Errorf("sqlite: synchronous %q is not OFF, NORMAL, FULL or EXTRA", opts.Synchronous)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := restrictFileModes(path, log); err != nil {
		return nil, err
	}
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", opts.BusyTimeout.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous("+opts.Synchronous+")")
	q.Add("_pragma", "foreign_keys(ON)")
	q.Set("_txlock", "immediate")
	dsn := "file:" + path + "?" + q.Encode()
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	// Readers run in parallel under WAL; writers are serialised by wmu anyway.
	db.SetMaxOpenConns(8)
	db.SetMaxIdleConns(8)
	db.SetConnMaxIdleTime(0)
	s := &Store{db: db, log: log, recq: make(chan *recordReq, maxBatch), lingerMax: opts.GroupCommitWait,
		busyMax: opts.GroupCommitBusyWait, stop: make(chan struct{}), exited: make(chan struct{})}
	if err := s.migrate(ctx, target); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlite: %s: %w", path, err)
	}
	if target == len(migrations) {
		if s.certBySerial, err = db.PrepareContext(ctx, "SELECT "+certColumns+" FROM certificates WHERE serial = ?"); err != nil {
			db.Close()
			return nil, fmt.Errorf("sqlite: %s: preparing the certificate lookup: %w", path, err)
		}
		if s.insertCert, err = db.PrepareContext(ctx, insertCertSQL); err != nil {
			s.closeStatements()
			db.Close()
			return nil, fmt.Errorf("sqlite: %s: preparing the certificate insert: %w", path, err)
		}
		if s.markIssued, err = db.PrepareContext(ctx, markIssuedSQL); err != nil {
			s.closeStatements()
			db.Close()
			return nil, fmt.Errorf("sqlite: %s: preparing the pending update: %w", path, err)
		}
	}
	if s.wconn, err = db.Conn(ctx); err != nil {
		s.closeStatements()
		db.Close()
		return nil, fmt.Errorf("sqlite: %s: the write connection: %w", path, err)
	}
	go s.committer(opts.busy)
	return s, nil
}

// restrictFileModes keeps the database private to the CA's user: it records every issued
// certificate, the pending requests and who asked for them. SQLite's unix VFS creates a new
// database 0644 (less the umask) and gives its -wal, -shm and -journal files the database
// file's own permissions, so the database is created here first with 0600; an existing
// database and its companion files lose any group or other permission (logged), and one whose
// permissions cannot be narrowed is refused.
func restrictFileModes(path string, log *slog.Logger) error {
	if path == "" || path == ":memory:" || runtime.GOOS == "windows" {
		return nil // no file, or ACLs rather than modes
	}
	suffixes := []string{"", "-wal", "-shm", "-journal"}
	// A FIFO would block the opens below; a directory or device is no database either.
	for _, suffix := range suffixes {
		if st, err := os.Stat(path + suffix); err == nil && !st.Mode().IsRegular() {
			return fmt.Errorf("sqlite: %s%s is not a regular file", path, suffix)
		}
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	err = restrictMode(f, log)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("sqlite: %s: %w", path, cerr)
	}
	if err != nil {
		return err
	}
	for _, suffix := range suffixes[1:] {
		f, err := os.Open(path + suffix)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("sqlite: %w", err)
		}
		err = restrictMode(f, log)
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

func restrictMode(f *os.File, log *slog.Logger) error {
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("sqlite: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("sqlite: %s is not a regular file", f.Name())
	}
	perm := st.Mode().Perm()
	if perm&0o077 == 0 {
		return nil
	}
	if err := f.Chmod(perm &^ 0o077); err != nil {
		return fmt.Errorf("sqlite: %s has mode %04o (readable by others) and cannot be restricted: %w", f.Name(), perm, err)
	}
	log.Warn("database file was accessible to other users; mode restricted", "file", f.Name(),
		"old_mode", fmt.Sprintf("%04o", perm), "new_mode", fmt.Sprintf("%04o", perm&^0o077))
	return nil
}

// Close stops the group committer and closes the database. It is safe to call twice.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.stop)
		<-s.exited
		commits, records := s.commitStats()
		s.log.Info("store: closed", "certificate_commits", commits, "certificates_recorded", records)
		s.closeStatements()
		s.wmu.Lock() // a write still running finishes on wconn first; beginWrite may replace it
		if s.wconn != nil {
			s.wconn.Close()
		}
		s.wmu.Unlock()
		err = s.db.Close()
	})
	return err
}

// closeStatements closes the prepared statements that were prepared.
func (s *Store) closeStatements() {
	for _, st := range []*sql.Stmt{s.certBySerial, s.insertCert, s.markIssued} {
		if st != nil {
			st.Close()
		}
	}
}

// migrations[i] brings the schema from version i to i+1. Never edit a released entry; append.
var migrations = []string{
	`CREATE TABLE certificates (
		serial             TEXT PRIMARY KEY,
		subject            TEXT NOT NULL,
		issuer             TEXT NOT NULL,
		not_before         INTEGER NOT NULL,
		not_after          INTEGER NOT NULL,
		der                BLOB NOT NULL,
		label              TEXT NOT NULL,
		op                 TEXT NOT NULL,
		protocol           TEXT NOT NULL,
		transport          TEXT NOT NULL,
		requester_subject  TEXT NOT NULL,
		requester_issuer   TEXT NOT NULL,
		requester_serial   TEXT NOT NULL,
		requester_ref      TEXT NOT NULL,
		requester_addr     TEXT NOT NULL,
		pending_id         TEXT NOT NULL,
		issued_at          INTEGER NOT NULL,
		revoked_at         INTEGER,
		revocation_reason  INTEGER NOT NULL DEFAULT 0
	);
	CREATE INDEX certificates_issued ON certificates(issued_at);
	CREATE INDEX certificates_revoked ON certificates(issuer, revoked_at) WHERE revoked_at IS NOT NULL;
	CREATE TABLE pending (
		id                 TEXT PRIMARY KEY,
		request_key        TEXT NOT NULL UNIQUE,
		status             TEXT NOT NULL,
		reason             TEXT NOT NULL,
		label              TEXT NOT NULL,
		op                 TEXT NOT NULL,
		protocol           TEXT NOT NULL,
		transport          TEXT NOT NULL,
		subject            TEXT NOT NULL,
		request            BLOB NOT NULL,
		requester_subject  TEXT NOT NULL,
		requester_issuer   TEXT NOT NULL,
		requester_serial   TEXT NOT NULL,
		requester_ref      TEXT NOT NULL,
		requester_addr     TEXT NOT NULL,
		cert_serial        TEXT NOT NULL,
		created_at         INTEGER NOT NULL,
		updated_at         INTEGER NOT NULL
	);
	CREATE INDEX pending_created ON pending(created_at);
	CREATE TABLE counters (
		name  TEXT PRIMARY KEY,
		value INTEGER NOT NULL
	);`,
	// 1→2: CMP certificates waiting for certConf survive a restart (store.Unconfirmed).
	`CREATE TABLE unconfirmed (
		serial          TEXT PRIMARY KEY REFERENCES certificates(serial),
		transaction_id  BLOB NOT NULL,
		deadline        INTEGER NOT NULL,
		created_at      INTEGER NOT NULL
	);
	CREATE INDEX unconfirmed_deadline ON unconfirmed(deadline);`,
	// 2→3: key package receipts and errors (RFC 8295 §8.2, RFC 7191; store.KeyPackageReturn).
	`CREATE TABLE key_package_returns (
		id                 INTEGER PRIMARY KEY AUTOINCREMENT,
		kind               TEXT NOT NULL,
		cert_serial        TEXT NOT NULL,
		pkg_id             BLOB NOT NULL,
		received_by        TEXT NOT NULL,
		error_code         TEXT NOT NULL,
		signer_serial      TEXT NOT NULL,
		requester_subject  TEXT NOT NULL,
		requester_issuer   TEXT NOT NULL,
		requester_serial   TEXT NOT NULL,
		requester_ref      TEXT NOT NULL,
		requester_addr     TEXT NOT NULL,
		der                BLOB NOT NULL,
		received_at        INTEGER NOT NULL
	);
	CREATE INDEX key_package_returns_cert ON key_package_returns(cert_serial);`,
	// 3→4: packages for clients and their delivery (RFC 8295 §2, §5; store.Package).
	`CREATE TABLE packages (
		id          INTEGER PRIMARY KEY AUTOINCREMENT,
		kind        TEXT NOT NULL,
		target      TEXT NOT NULL,
		name        TEXT NOT NULL,
		content     BLOB NOT NULL,
		created_at  INTEGER NOT NULL
	);
	CREATE INDEX packages_kind ON packages(kind);
	CREATE TABLE package_deliveries (
		package_id     INTEGER NOT NULL REFERENCES packages(id),
		client_serial  TEXT NOT NULL,
		fetched_at     INTEGER NOT NULL,
		fetches        INTEGER NOT NULL,
		return_kind    TEXT NOT NULL DEFAULT '',
		error_code     TEXT NOT NULL DEFAULT '',
		return_der     BLOB NOT NULL DEFAULT x'',
		returned_at    INTEGER NOT NULL DEFAULT 0,
		PRIMARY KEY (package_id, client_serial)
	);
	CREATE INDEX package_deliveries_client ON package_deliveries(client_serial);`,
	// 4→5: open CMP transactions survive a restart (store.CMPTransaction).
	`CREATE TABLE cmp_transactions (
		id       BLOB PRIMARY KEY,
		state    BLOB NOT NULL,
		expires  INTEGER NOT NULL
	);
	CREATE INDEX cmp_transactions_expires ON cmp_transactions(expires);`,
	// 5→6: certificates by reference, as an EDHOC Initiator designates its own (RFC 9528
	// §3.5.3: x5t = a hash of the DER, kid = the Subject Key Identifier). Existing rows are
	// filled in by backfills[5].
	`ALTER TABLE certificates ADD COLUMN cert_sha256 BLOB;
	ALTER TABLE certificates ADD COLUMN key_id BLOB;
	CREATE INDEX certificates_sha256 ON certificates(cert_sha256);
	CREATE INDEX certificates_key_id ON certificates(key_id) WHERE key_id IS NOT NULL;`,
	// 6→7: the symmetric key forms (RFC 8295 §5.1.2) the operator allows per package, and the
	// form of each client's latest fetch (store.Package.Forms, store.PackageDelivery.Form).
	`ALTER TABLE packages ADD COLUMN forms TEXT NOT NULL DEFAULT '';
	ALTER TABLE package_deliveries ADD COLUMN form TEXT NOT NULL DEFAULT '';`,
	// 7→8: certificates by x5t and kid are found in memory (refIndex), not by indexes of the
	// file, which each took a random leaf page per certificate recorded. The columns stay.
	`DROP INDEX certificates_sha256;
	DROP INDEX certificates_key_id;`,
}

// backfills[i], when set, runs after migrations[i] in the same transaction: what SQL alone
// cannot compute for the rows already there.
var backfills = map[int]func(ctx context.Context, tx *sql.Tx) error{
	5: backfillKeyRefs,
}

// backfillKeyRefs fills cert_sha256 and key_id of the certificates recorded before schema 6.
func backfillKeyRefs(ctx context.Context, tx *sql.Tx) error {
	rows, err := tx.QueryContext(ctx, "SELECT serial, der FROM certificates WHERE cert_sha256 IS NULL")
	if err != nil {
		return fmt.Errorf("backfill certificate hashes: %w", err)
	}
	type ref struct {
		serial     string
		sum, keyID []byte
	}
	var refs []ref
	for rows.Next() {
		var serial string
		var der []byte
		if err := rows.Scan(&serial, &der); err != nil {
			rows.Close()
			return fmt.Errorf("backfill certificate hashes: %w", err)
		}
		sum, keyID := store.CertKeyRefs(der)
		refs = append(refs, ref{serial, sum, keyID})
	}
	if err := rows.Err(); err != nil {
		rows.Close()
		return fmt.Errorf("backfill certificate hashes: %w", err)
	}
	rows.Close()
	for _, r := range refs {
		if _, err := tx.ExecContext(ctx, "UPDATE certificates SET cert_sha256 = ?, key_id = ? WHERE serial = ?",
			r.sum, r.keyID, r.serial); err != nil {
			return fmt.Errorf("backfill certificate %s: %w", r.serial, err)
		}
	}
	return nil
}

// SchemaVersion is the schema version this build writes.
const SchemaVersion = 8

func (s *Store) migrate(ctx context.Context, target int) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		var v int
		if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		if v > len(migrations) {
			return fmt.Errorf("database schema version %d is newer than this program (%d)", v, len(migrations))
		}
		for i := v; i < target; i++ {
			if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
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
			// PRAGMA takes no bind parameters; the value is our own constant.
			if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", target)); err != nil {
				return fmt.Errorf("set schema version: %w", err)
			}
		}
		return nil
	})
}

// write runs fn in one BEGIN IMMEDIATE transaction and commits it (fsync'd with synchronous=FULL).
func (s *Store) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	tx, err := s.beginWrite(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// beginWrite begins a write transaction on wconn (the caller holds wmu), or on the pool while
// the schema is migrated (before wconn is taken). If database/sql has given up on wconn's
// connection (the driver reported it bad), a fresh one is taken from the pool.
func (s *Store) beginWrite(ctx context.Context) (*sql.Tx, error) {
	if s.wconn == nil {
		return s.db.BeginTx(ctx, nil)
	}
	tx, err := s.wconn.BeginTx(ctx, nil)
	if errors.Is(err, sql.ErrConnDone) || errors.Is(err, driver.ErrBadConn) {
		c, cerr := s.db.Conn(ctx)
		if cerr != nil {
			return nil, fmt.Errorf("%w; taking a new write connection: %w", err, cerr)
		}
		s.wconn.Close()
		s.wconn = c
		tx, err = c.BeginTx(ctx, nil)
	}
	return tx, err
}

func unix(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

func fromUnix(v int64) time.Time { return time.Unix(v, 0).UTC() }

func isConstraint(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code()&0xff == sqlite3.SQLITE_CONSTRAINT
	}
	return false
}

// errClosed is returned by RecordIssued after Close.
var errClosed = errors.New("sqlite: store is closed")

// recordReq is one RecordIssued call waiting for the group committer.
type recordReq struct {
	c          *store.Cert
	sum, keyID []byte    // store.CertKeyRefs(c.DER), computed by the caller, not the committer
	at         time.Time // when RecordIssued queued it
	done       chan error
}

// maxBatch bounds the certificates committed in one transaction.
const maxBatch = 256

// RecordIssued implements store.Store.
//
// Group commit: calls are queued to one committer goroutine that writes every queued record
// in a single transaction (one fsync), so that one failure (duplicate serial, pending request
// in the wrong state) leaves the others intact: a record without a pending request is one
// INSERT, which a constraint violation backs out alone; one with a pending request has its
// own SAVEPOINT; any other failure commits the batch's records one by one (recordInBatch). A
// lone call with the CPUs idle is committed at once; under load, calls that arrive during an
// fsync share the next, and while several callers record at once, or goroutines wait for a
// CPU, a commit waits up to Options.GroupCommitWait or Options.GroupCommitBusyWait for more
// (groupCommit). A waiting commit has its transaction open and inserts each record as it
// arrives, so that only the COMMIT is left when the batch is complete; the store's other
// writes wait for it (at most those bounds).
// RecordIssued returns only after its record is durable (or failed).
func (s *Store) RecordIssued(ctx context.Context, c *store.Cert) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sqlite: record %s: %w", c.Serial, err)
	}
	r := &recordReq{c: c, done: make(chan error, 1)}
	r.sum, r.keyID = store.CertKeyRefs(c.DER)
	r.at = time.Now()
	select {
	case s.recq <- r:
	case <-s.stop:
		return errClosed
	case <-ctx.Done():
		return fmt.Errorf("sqlite: record %s: %w", c.Serial, ctx.Err())
	}
	// Once queued, wait for the outcome even if ctx ends: the caller must learn whether the
	// certificate was recorded.
	select {
	case err := <-r.done:
		return err
	case <-s.exited:
		select {
		case err := <-r.done:
			return err
		default:
			return errClosed
		}
	}
}

// committer runs the group commits; busy tells whether goroutines wait for a CPU (cpuBusy).
func (s *Store) committer(busy func() bool) {
	defer close(s.exited)
	gc := groupCommit{busy: busy}
	var timer *time.Timer
	for {
		var batch []*recordReq
		select {
		case r := <-s.recq:
			batch = append(batch, r)
		case <-s.stop:
			return
		}
	drain:
		for len(batch) < maxBatch {
			select {
			case r := <-s.recq:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		wait, busyWait := gc.wait(s.lingerMax, batch), gc.busyWait(s.busyMax, batch)
		if wait == 0 && busyWait == 0 {
			gc.committed(batch)
			s.commitBatch(batch)
			continue
		}
		// More records are expected soon: let them share this commit's fsync. The
		// transaction begins now and each record is inserted as it arrives, while the CPUs
		// have other work, so that only the COMMIT (WAL frames and fsync) is left once the
		// batch is complete: the part during which every caller of the batch waits. While
		// the CPUs are busy the commit looks again every busyRecheck whether they still are.
		start := time.Now()
		b := s.beginBatch()
		for _, r := range batch {
			s.addToBatch(b, r)
		}
		next := func() time.Duration {
			elapsed := time.Since(start)
			if busyWait > elapsed {
				return min(busyRecheck, busyWait-elapsed)
			}
			return wait - elapsed
		}
		if timer == nil {
			timer = time.NewTimer(next())
		} else {
			timer.Reset(next())
		}
	linger:
		for len(batch) < maxBatch {
			select {
			case r := <-s.recq:
				batch = append(batch, r)
				s.addToBatch(b, r)
				if gc.complete(batch) {
					break linger
				}
			case <-timer.C:
				elapsed := time.Since(start)
				if busyWait > elapsed && !gc.busy() {
					busyWait = 0 // a CPU is free: waiting would now cost throughput
				}
				if elapsed >= wait && elapsed >= busyWait {
					break linger
				}
				timer.Reset(next())
			case <-s.stop:
				timer.Stop()
				break linger
			}
		}
		if len(batch) == maxBatch {
			timer.Stop()
		}
		gc.committed(batch)
		s.endBatch(b, batch)
	}
}

// busyRecheck is how often a commit waiting because the CPUs are busy looks whether they
// still are.
const busyRecheck = 500 * time.Microsecond

// groupCommit decides how long a commit waits for more records (real group commit: one
// fsync for several certificates). Two reasons make it wait, each with its own bound,
// counted from the batch's first record:
//
//   - Records come from several callers at once — the previous commit carried more than one
//     record — and arrive closer together than the bound (Options.GroupCommitWait). A lone
//     caller, or callers one at a time, never wait for this reason: their next record cannot
//     arrive before this one is committed.
//   - Goroutines of this process are waiting for a CPU (Options.GroupCommitBusyWait): the
//     server is loaded (handshakes, requests — some of which end in a record), so a commit
//     that waits costs no throughput, since the CPUs have other work; a commit that shares its fsync
//     saves the commit's fixed CPU cost (≈ 0.3 ms on the bench machine:
//     BenchmarkRecordIssuedCPU, 355 µs per record alone, 107 µs eight at a time). The wait
//     ends as soon as a CPU is free. Under a load of fresh DTLS handshakes, whose records are
//     further apart than GroupCommitWait, this is what makes records share commits.
//
// Either wait ends early once the batch is as large as the largest recent commit (complete).
type groupCommit struct {
	gap     time.Duration      // moving average of the time between two records' arrivals
	last    time.Time          // arrival of the last record seen
	busy    func() bool        // whether goroutines are waiting for a CPU (cpuBusy)
	recent  [recentCommits]int // records in each of the last commits, a ring (prev, complete)
	commits int                // commits noted, for recent's ring
}

// prev is how many records the previous commit carried (0 before the first).
func (g *groupCommit) prev() int {
	if g.commits == 0 {
		return 0
	}
	return g.recent[(g.commits-1)%recentCommits]
}

func (g *groupCommit) wait(bound time.Duration, batch []*recordReq) time.Duration {
	if bound <= 0 || g.prev() < 2 || g.gap >= bound || len(batch) >= maxBatch || g.complete(batch) {
		return 0
	}
	return bound - time.Since(batch[0].at)
}

func (g *groupCommit) busyWait(bound time.Duration, batch []*recordReq) time.Duration {
	if bound <= 0 || len(batch) >= maxBatch || g.complete(batch) || g.busy == nil || !g.busy() {
		return 0
	}
	return bound - time.Since(batch[0].at)
}

// cpuBusy returns a probe of whether any of this process's goroutines is runnable but
// waiting for a CPU (runtime/metrics, ≈ 0.1 µs a call). The probe is for one goroutine.
func cpuBusy() func() bool {
	sample := []metrics.Sample{{Name: "/sched/goroutines/runnable:goroutines"}}
	return func() bool {
		metrics.Read(sample)
		return sample[0].Value.Kind() == metrics.KindUint64 && sample[0].Value.Uint64() > 0
	}
}

// complete reports whether batch holds as many records as the largest of the last
// recentCommits commits, when that one carried several: as many callers as have recently
// recorded together have recorded again. With a fixed set of callers that each wait for their
// answer before the next request (a few devices re-enrolling at once), nobody else is coming
// before this commit, and waiting on only delays them all. Either wait ends there; later
// records start the next batch, which grows when more callers than before record at once.
// The largest recent commit, not the previous one: when a batch has been split (a CPU was free
// at a recheck before all the callers were in), its two parts come back apart, and completing
// each at the other's size would keep splitting them. Without this, 8 devices re-enrolling at
// once had each batch wait on for the busy-CPU recheck after its last record, and the CPUs
// idled meanwhile (issue 13: 60 % busy).
func (g *groupCommit) complete(batch []*recordReq) bool {
	peak := slices.Max(g.recent[:])
	return peak >= 2 && len(batch) >= peak
}

// recentCommits is how many commits' sizes complete looks back on.
const recentCommits = 16

// committed notes the arrivals of a batch about to be committed.
func (g *groupCommit) committed(batch []*recordReq) {
	for _, r := range batch {
		if !g.last.IsZero() {
			d := max(r.at.Sub(g.last), 0)
			g.gap += (d - g.gap) / 8
		}
		g.last = r.at
	}
	g.recent[g.commits%recentCommits] = len(batch)
	g.commits++
}

// commitBatch commits batch, records the committer did not wait for, in one transaction (a
// lone record in its own, commitAlone) and answers their callers.
func (s *Store) commitBatch(batch []*recordReq) {
	if len(batch) == 1 {
		// Alone: the transaction itself undoes a failed record.
		batch[0].done <- s.commitAlone(context.Background(), batch[0])
		return
	}
	b := s.beginBatch()
	for _, r := range batch {
		s.addToBatch(b, r)
	}
	s.endBatch(b, batch)
}

// batchTx is the transaction of a group commit, open from beginBatch to endBatch, which hold
// wmu in between: records are added one at a time (addToBatch), each undoing only its own
// failure, and endBatch commits them together and answers their callers.
type batchTx struct {
	tx      *sql.Tx
	err     error   // begin failed, or a record left the transaction unusable (abort)
	abort   bool    // err is a record's: the batch is committed one by one instead
	results []error // each added record's own outcome, in batch order
}

// beginBatch locks wmu and begins a group commit's transaction; endBatch unlocks.
func (s *Store) beginBatch() *batchTx {
	s.wmu.Lock()
	// One caller's cancellation must not abort the others' records.
	tx, err := s.beginWrite(context.Background())
	if err != nil {
		return &batchTx{err: fmt.Errorf("begin: %w", err)}
	}
	return &batchTx{tx: tx}
}

// addToBatch writes r in b's transaction (recordInBatch). After a failure of the transaction
// itself, records are only noted: endBatch then gives them the transaction's outcome, or
// commits them one by one.
func (s *Store) addToBatch(b *batchTx, r *recordReq) {
	if b.err != nil {
		b.results = append(b.results, nil)
		return
	}
	res, fatal := s.recordInBatch(context.Background(), b.tx, r)
	b.results = append(b.results, res)
	if fatal != nil {
		// The transaction may have undone more than this record's statement: roll it back
		// whole; nothing of the batch is written.
		b.tx.Rollback()
		b.err, b.abort = fatal, true
	}
}

// endBatch commits b, unlocks wmu and answers the callers of batch, the records added to b
// in that order.
func (s *Store) endBatch(b *batchTx, batch []*recordReq) {
	err := b.err
	if err == nil {
		if err = b.tx.Commit(); err != nil {
			err = fmt.Errorf("commit: %w", err)
		}
	}
	s.wmu.Unlock()
	if b.abort {
		// A record failed in a way that may have undone more than its own statement. Each
		// record gets its own transaction instead, so that the failing one fails alone.
		s.log.Warn("store: group commit abandoned; committing its records one by one",
			"records", len(batch), "error", err)
		for _, r := range batch {
			r.done <- s.commitAlone(context.Background(), r)
		}
		return
	}
	s.commits.Add(1)
	s.committed.Add(int64(len(batch)))
	for i, r := range batch {
		if err != nil {
			r.done <- err // the transaction failed: nothing of the batch was written
		} else {
			r.done <- b.results[i]
		}
	}
	s.log.Debug("store: group commit", "records", len(batch), "error", err)
}

// commitAlone records r in a transaction of its own.
func (s *Store) commitAlone(ctx context.Context, r *recordReq) error {
	s.commits.Add(1)
	s.committed.Add(1)
	return s.write(ctx, func(tx *sql.Tx) error { return s.recordOne(ctx, tx, r) })
}

// recordInBatch writes r inside a batch's transaction, undoing whatever r wrote if it fails,
// and nothing else. It returns r's own outcome, or fatal when the transaction cannot go on
// (the batch is then abandoned).
//
// A certificate without a pending request is one INSERT. A duplicate serial (or a NULL where
// the schema forbids one) fails that statement alone: SQLite's default conflict resolution,
// ABORT, backs out the statement's changes and keeps the transaction and its earlier
// statements (https://sqlite.org/lang_conflict.html), so no SAVEPOINT is needed — that saved
// two statements per record. Every other error abandons the batch (fatal). A certificate
// that also marks its pending request issued is two statements, so it keeps its SAVEPOINT.
func (s *Store) recordInBatch(ctx context.Context, tx *sql.Tx, r *recordReq) (recErr, fatal error) {
	if r.c.PendingID == "" {
		err := s.insertCertRow(ctx, tx, r)
		switch {
		case err == nil:
			return nil, nil
		case isStatementConstraint(err):
			return fmt.Errorf("sqlite: serial %s: %w", r.c.Serial, store.ErrDuplicateSerial), nil
		default:
			return nil, fmt.Errorf("sqlite: insert certificate %s: %w", r.c.Serial, err)
		}
	}
	if _, err := tx.ExecContext(ctx, "SAVEPOINT rec"); err != nil {
		return nil, fmt.Errorf("sqlite: savepoint: %w", err)
	}
	recErr = s.recordOne(ctx, tx, r)
	stmt := "RELEASE rec"
	if recErr != nil {
		stmt = "ROLLBACK TO rec; RELEASE rec"
	}
	if _, err := tx.ExecContext(ctx, stmt); err != nil {
		return nil, fmt.Errorf("sqlite: release savepoint: %w", err)
	}
	return recErr, nil
}

// isStatementConstraint reports whether err is a constraint violation that SQLite undoes by
// backing out the failing statement alone (conflict resolution ABORT): a duplicate key or a
// NULL in a NOT NULL column. Trigger errors (RAISE(ROLLBACK) undoes the whole transaction)
// and foreign key violations are not.
func isStatementConstraint(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code() {
	case sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY, sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_NOTNULL:
		return true
	}
	return false
}

const insertCertSQL = `INSERT INTO certificates (serial, subject, issuer, not_before, not_after, der,
	label, op, protocol, transport, requester_subject, requester_issuer, requester_serial, requester_ref,
	requester_addr, pending_id, issued_at, revoked_at, revocation_reason, cert_sha256, key_id)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, 0, ?, ?)`

const markIssuedSQL = `UPDATE pending SET status = ?, cert_serial = ?, updated_at = ? WHERE id = ? AND status = ?`

// execPrepared runs st (prepared once on the database, re-used on whichever connection tx
// holds) inside tx, or q when st was not prepared (a schema older than this code's).
func execPrepared(ctx context.Context, tx *sql.Tx, st *sql.Stmt, q string, args ...any) (sql.Result, error) {
	if st == nil {
		return tx.ExecContext(ctx, q, args...)
	}
	ts := tx.StmtContext(ctx, st)
	defer ts.Close()
	return ts.ExecContext(ctx, args...)
}

// insertCertRow inserts r's certificate row.
func (s *Store) insertCertRow(ctx context.Context, tx *sql.Tx, r *recordReq) error {
	c := r.c
	_, err := execPrepared(ctx, tx, s.insertCert, insertCertSQL,
		c.Serial, c.Subject, c.Issuer, unix(c.NotBefore), unix(c.NotAfter), c.DER,
		c.Label, c.Op, c.Protocol, c.Transport, c.RequesterSubject, c.RequesterIssuer, c.RequesterSerial,
		c.RequesterRef, c.RequesterAddr, c.PendingID, unix(issuedAt(c)), r.sum, r.keyID)
	return err
}

func issuedAt(c *store.Cert) time.Time {
	if c.IssuedAt.IsZero() {
		return time.Now()
	}
	return c.IssuedAt
}

// recordOne writes one certificate (and its pending request). On error the caller must roll
// back (transaction or savepoint): the certificate row may already be inserted.
func (s *Store) recordOne(ctx context.Context, tx *sql.Tx, r *recordReq) error {
	c := r.c
	if err := s.insertCertRow(ctx, tx, r); err != nil {
		if isConstraint(err) {
			return fmt.Errorf("sqlite: serial %s: %w", c.Serial, store.ErrDuplicateSerial)
		}
		return fmt.Errorf("sqlite: insert certificate %s: %w", c.Serial, err)
	}
	if c.PendingID != "" {
		// Only an approved request becomes issued; on failure the caller's rollback also
		// removes the certificate row inserted above.
		res, err := execPrepared(ctx, tx, s.markIssued, markIssuedSQL,
			store.StatusIssued, c.Serial, unix(issuedAt(c)), c.PendingID, store.StatusApproved)
		if err != nil {
			return fmt.Errorf("sqlite: mark pending %s issued: %w", c.PendingID, err)
		}
		if k, _ := res.RowsAffected(); k != 1 {
			return fmt.Errorf("sqlite: pending %s is not approved: %w", c.PendingID, store.ErrPendingState)
		}
	}
	return nil
}

const certColumns = `serial, subject, issuer, not_before, not_after, der, label, op, protocol, transport,
	requester_subject, requester_issuer, requester_serial, requester_ref, requester_addr, pending_id,
	issued_at, revoked_at, revocation_reason`

type scanner interface{ Scan(dest ...any) error }

func scanCert(r scanner) (*store.Cert, error) {
	var c store.Cert
	var nb, na, ia int64
	var ra sql.NullInt64
	if err := r.Scan(&c.Serial, &c.Subject, &c.Issuer, &nb, &na, &c.DER, &c.Label, &c.Op, &c.Protocol,
		&c.Transport, &c.RequesterSubject, &c.RequesterIssuer, &c.RequesterSerial, &c.RequesterRef,
		&c.RequesterAddr, &c.PendingID, &ia, &ra, &c.RevocationReason); err != nil {
		return nil, err
	}
	c.NotBefore, c.NotAfter, c.IssuedAt = fromUnix(nb), fromUnix(na), fromUnix(ia)
	if ra.Valid {
		c.RevokedAt = fromUnix(ra.Int64)
	}
	return &c, nil
}

// Cert implements store.Store.
func (s *Store) Cert(ctx context.Context, serial string) (*store.Cert, error) {
	var row *sql.Row
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: certificate %s: %w", serial, err)
	}
	// The lookup is one indexed row, over before any cancellation could matter; a context that
	// can be cancelled made database/sql (Rows.awaitDone) and the driver (interruptOnDone)
	// each start a goroutine per query and wake it at the end, on every re-enrollment (server
	// trace of bench est: a third of the goroutines waiting for a CPU had been woken there).
	ctx = context.WithoutCancel(ctx)
	if s.certBySerial != nil {
		row = s.certBySerial.QueryRowContext(ctx, serial)
	} else { // a schema older than this code's (tests of the migrations)
		row = s.db.QueryRowContext(ctx, "SELECT "+certColumns+" FROM certificates WHERE serial = ?", serial)
	}
	c, err := scanCert(row)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("sqlite: certificate %s: %w", serial, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: certificate %s: %w", serial, err)
	}
	return c, nil
}

// ListCerts implements store.Store.
func (s *Store) ListCerts(ctx context.Context, f store.CertFilter) ([]*store.Cert, error) {
	q, args, none, err := s.listQuery(ctx, f)
	if err != nil || none {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list certificates: %w", err)
	}
	defer rows.Close()
	var out []*store.Cert
	for rows.Next() {
		c, err := scanCert(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: list certificates: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list certificates: %w", err)
	}
	return out, nil
}

// listQuery is ListCerts' query; none reports that no certificate can match (a reference
// refIndex knows no candidate for).
func (s *Store) listQuery(ctx context.Context, f store.CertFilter) (q string, args []any, none bool, err error) {
	var where []string
	if f.Label != "" || f.LabelSet {
		where, args = append(where, "label = ?"), append(args, f.Label)
	}
	if f.SubjectContains != "" {
		where, args = append(where, "instr(subject, ?) > 0"), append(args, f.SubjectContains)
	}
	if f.SerialPrefix != "" {
		where, args = append(where, "substr(serial, 1, ?) = ?"), append(args, len(f.SerialPrefix), f.SerialPrefix)
	}
	if f.Issuer != "" {
		where, args = append(where, "issuer = ?"), append(args, f.Issuer)
	}
	if f.RequesterIssuer != "" {
		where, args = append(where, "requester_issuer = ?"), append(args, f.RequesterIssuer)
	}
	if f.RequesterSerial != "" {
		where, args = append(where, "requester_serial = ?"), append(args, f.RequesterSerial)
	}
	if f.RequesterRef != "" {
		where, args = append(where, "requester_ref = ?"), append(args, f.RequesterRef)
	}
	// By x5t or kid: the rows refIndex names, narrowed by the full columns (BLOBs compare as
	// memcmp, so a prefix is a range).
	rowids, narrowed, err := s.refs.candidates(ctx, s.db, s.log, f.CertSHA256Prefix, f.KeyID)
	if err != nil {
		return "", nil, false, fmt.Errorf("sqlite: list certificates: %w", err)
	}
	if narrowed {
		if len(rowids) == 0 {
			return "", nil, true, nil
		}
		// One bound parameter however many candidates: the rowids as a JSON array, bound as
		// TEXT (a BLOB would be read as JSONB).
		list, err := json.Marshal(rowids)
		if err != nil {
			return "", nil, false, fmt.Errorf("sqlite: list certificates: %w", err)
		}
		where, args = append(where, "rowid IN (SELECT value FROM json_each(?))"), append(args, string(list))
	}
	if len(f.CertSHA256Prefix) > 0 {
		where, args = append(where, "cert_sha256 >= ?"), append(args, f.CertSHA256Prefix)
		if end := store.PrefixEnd(f.CertSHA256Prefix); end != nil {
			where, args = append(where, "cert_sha256 < ?"), append(args, end)
		}
	}
	if len(f.KeyID) > 0 {
		where, args = append(where, "key_id = ?"), append(args, f.KeyID)
	}
	switch f.Revocation {
	case store.OnlyRevoked:
		where = append(where, "revoked_at IS NOT NULL")
	case store.NotRevoked:
		where = append(where, "revoked_at IS NULL")
	}
	q = "SELECT " + certColumns + " FROM certificates"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY issued_at DESC, rowid DESC" + limit(f.Limit, f.Offset)
	return q, args, false, nil
}

func limit(n, off int) string {
	switch {
	case n > 0:
		return fmt.Sprintf(" LIMIT %d OFFSET %d", n, max(off, 0))
	case off > 0:
		return fmt.Sprintf(" LIMIT -1 OFFSET %d", off)
	}
	return ""
}

// RevokeCert implements store.Store.
func (s *Store) RevokeCert(ctx context.Context, serial string, reason int, at time.Time) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		var ra sql.NullInt64
		err := tx.QueryRowContext(ctx, "SELECT revoked_at FROM certificates WHERE serial = ?", serial).Scan(&ra)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("sqlite: revoke %s: %w", serial, store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("sqlite: revoke %s: %w", serial, err)
		}
		if ra.Valid {
			return fmt.Errorf("sqlite: revoke %s: %w", serial, store.ErrAlreadyRevoked)
		}
		if _, err := tx.ExecContext(ctx, "UPDATE certificates SET revoked_at = ?, revocation_reason = ? WHERE serial = ?",
			unix(at), reason, serial); err != nil {
			return fmt.Errorf("sqlite: revoke %s: %w", serial, err)
		}
		return nil
	})
}

// RevokedCerts implements store.Store.
func (s *Store) RevokedCerts(ctx context.Context, issuer string) ([]store.RevokedEntry, error) {
	q := "SELECT serial, revoked_at, revocation_reason, not_after FROM certificates WHERE revoked_at IS NOT NULL"
	var args []any
	if issuer != "" {
		q += " AND issuer = ?"
		args = append(args, issuer)
	}
	rows, err := s.db.QueryContext(ctx, q+" ORDER BY revoked_at, serial", args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: revoked certificates: %w", err)
	}
	defer rows.Close()
	var out []store.RevokedEntry
	for rows.Next() {
		var e store.RevokedEntry
		var ra, na int64
		if err := rows.Scan(&e.Serial, &ra, &e.Reason, &na); err != nil {
			return nil, fmt.Errorf("sqlite: revoked certificates: %w", err)
		}
		e.RevokedAt, e.NotAfter = fromUnix(ra), fromUnix(na)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: revoked certificates: %w", err)
	}
	return out, nil
}

const pendingColumns = `id, request_key, status, reason, label, op, protocol, transport, subject, request,
	requester_subject, requester_issuer, requester_serial, requester_ref, requester_addr, cert_serial,
	created_at, updated_at`

func scanPending(r scanner) (*store.Pending, error) {
	var p store.Pending
	var ca, ua int64
	if err := r.Scan(&p.ID, &p.RequestKey, &p.Status, &p.Reason, &p.Label, &p.Op, &p.Protocol, &p.Transport,
		&p.Subject, &p.Request, &p.RequesterSubject, &p.RequesterIssuer, &p.RequesterSerial, &p.RequesterRef,
		&p.RequesterAddr, &p.CertSerial, &ca, &ua); err != nil {
		return nil, err
	}
	p.CreatedAt, p.UpdatedAt = fromUnix(ca), fromUnix(ua)
	return &p, nil
}

// NewPendingID returns a random 16-hex-digit ID (64 bits), short enough to type.
func NewPendingID() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("pending id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// CreatePending implements store.Store.
func (s *Store) CreatePending(ctx context.Context, p *store.Pending) (*store.Pending, bool, error) {
	var out *store.Pending
	created := false
	err := s.write(ctx, func(tx *sql.Tx) error {
		old, err := scanPending(tx.QueryRowContext(ctx, "SELECT "+pendingColumns+" FROM pending WHERE request_key = ?", p.RequestKey))
		if err == nil {
			out = old
			return nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("sqlite: find pending: %w", err)
		}
		n := *p
		now := time.Now().UTC().Truncate(time.Second)
		n.Status, n.CreatedAt, n.UpdatedAt, n.CertSerial, n.Reason = store.StatusPending, now, now, "", ""
		if n.Request == nil {
			n.Request = []byte{}
		}
		for attempt := 0; ; attempt++ {
			if n.ID == "" || attempt > 0 {
				if n.ID, err = NewPendingID(); err != nil {
					return err
				}
			}
			_, err = tx.ExecContext(ctx, "INSERT INTO pending ("+pendingColumns+`)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
				n.ID, n.RequestKey, n.Status, n.Reason, n.Label, n.Op, n.Protocol, n.Transport, n.Subject, n.Request,
				n.RequesterSubject, n.RequesterIssuer, n.RequesterSerial, n.RequesterRef, n.RequesterAddr,
				n.CertSerial, unix(n.CreatedAt), unix(n.UpdatedAt))
			if err == nil {
				break
			}
			if !isConstraint(err) || attempt >= 3 {
				return fmt.Errorf("sqlite: insert pending: %w", err)
			}
		}
		out, created = &n, true
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	return out, created, nil
}

// Pending implements store.Store.
func (s *Store) Pending(ctx context.Context, id string) (*store.Pending, error) {
	p, err := scanPending(s.db.QueryRowContext(ctx, "SELECT "+pendingColumns+" FROM pending WHERE id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("sqlite: pending request %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: pending request %s: %w", id, err)
	}
	return p, nil
}

// ListPending implements store.Store.
func (s *Store) ListPending(ctx context.Context, f store.PendingFilter) ([]*store.Pending, error) {
	var where []string
	var args []any
	if f.Status != "" {
		where, args = append(where, "status = ?"), append(args, f.Status)
	}
	if f.Label != "" {
		where, args = append(where, "label = ?"), append(args, f.Label)
	}
	q := "SELECT " + pendingColumns + " FROM pending"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY created_at DESC, rowid DESC" + limit(f.Limit, f.Offset)
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list pending: %w", err)
	}
	defer rows.Close()
	var out []*store.Pending
	for rows.Next() {
		p, err := scanPending(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: list pending: %w", err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list pending: %w", err)
	}
	return out, nil
}

// DecidePending implements store.Store.
func (s *Store) DecidePending(ctx context.Context, id string, status store.PendingStatus, reason string) error {
	if status != store.StatusApproved && status != store.StatusRejected {
		return fmt.Errorf("sqlite: decide pending %s: status %q is not a decision", id, status)
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		var cur store.PendingStatus
		err := tx.QueryRowContext(ctx, "SELECT status FROM pending WHERE id = ?", id).Scan(&cur)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("sqlite: decide pending %s: %w", id, store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("sqlite: decide pending %s: %w", id, err)
		}
		switch {
		case cur == status:
			return nil
		case cur != store.StatusPending:
			return fmt.Errorf("sqlite: pending %s is %s, cannot become %s: %w", id, cur, status, store.ErrPendingState)
		}
		if _, err := tx.ExecContext(ctx, "UPDATE pending SET status = ?, reason = ?, updated_at = ? WHERE id = ?",
			status, reason, time.Now().Unix(), id); err != nil {
			return fmt.Errorf("sqlite: decide pending %s: %w", id, err)
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
	if u.TransactionID == nil {
		u.TransactionID = []byte{}
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO unconfirmed (serial, transaction_id, deadline, created_at)
			VALUES (?, ?, ?, ?) ON CONFLICT(serial) DO UPDATE SET transaction_id = excluded.transaction_id,
			deadline = excluded.deadline, created_at = excluded.created_at`,
			u.Serial, u.TransactionID, unix(u.Deadline), unix(created))
		if isConstraint(err) {
			return fmt.Errorf("sqlite: unconfirmed %s: no such certificate: %w", u.Serial, store.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("sqlite: unconfirmed %s: %w", u.Serial, err)
		}
		return nil
	})
}

// DeleteUnconfirmed implements store.Store.
func (s *Store) DeleteUnconfirmed(ctx context.Context, serial string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "DELETE FROM unconfirmed WHERE serial = ?", serial)
		if err != nil {
			return fmt.Errorf("sqlite: delete unconfirmed %s: %w", serial, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("sqlite: unconfirmed %s: %w", serial, store.ErrNotFound)
		}
		return nil
	})
}

// DueUnconfirmed implements store.Store.
func (s *Store) DueUnconfirmed(ctx context.Context, now time.Time, limit int) ([]store.Unconfirmed, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT serial, transaction_id, deadline, created_at FROM unconfirmed
		WHERE deadline <= ? ORDER BY deadline, serial`+limitClause(limit), now.Unix())
	if err != nil {
		return nil, fmt.Errorf("sqlite: due unconfirmed: %w", err)
	}
	defer rows.Close()
	var out []store.Unconfirmed
	for rows.Next() {
		var u store.Unconfirmed
		var dl, ca int64
		if err := rows.Scan(&u.Serial, &u.TransactionID, &dl, &ca); err != nil {
			return nil, fmt.Errorf("sqlite: due unconfirmed: %w", err)
		}
		u.Deadline, u.CreatedAt = fromUnix(dl), fromUnix(ca)
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: due unconfirmed: %w", err)
	}
	return out, nil
}

// AddKeyPackageReturn implements store.Store.
func (s *Store) AddKeyPackageReturn(ctx context.Context, r *store.KeyPackageReturn) error {
	if r.ReceivedAt.IsZero() {
		r.ReceivedAt = time.Now()
	}
	pkgID, der := r.PkgID, r.DER
	if pkgID == nil {
		pkgID = []byte{}
	}
	if der == nil {
		der = []byte{}
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO key_package_returns (kind, cert_serial, pkg_id, received_by, error_code,
			signer_serial, requester_subject, requester_issuer, requester_serial, requester_ref, requester_addr, der, received_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			r.Kind, r.CertSerial, pkgID, r.By, r.ErrorCode, r.SignerSerial, r.RequesterSubject, r.RequesterIssuer,
			r.RequesterSerial, r.RequesterRef, r.RequesterAddr, der, unix(r.ReceivedAt))
		if err != nil {
			return fmt.Errorf("sqlite: key package return: %w", err)
		}
		if r.ID, err = res.LastInsertId(); err != nil {
			return fmt.Errorf("sqlite: key package return: %w", err)
		}
		return nil
	})
}

// ListKeyPackageReturns implements store.Store.
func (s *Store) ListKeyPackageReturns(ctx context.Context, f store.KeyPackageReturnFilter) ([]*store.KeyPackageReturn, error) {
	q := `SELECT id, kind, cert_serial, pkg_id, received_by, error_code, signer_serial, requester_subject, requester_issuer,
		requester_serial, requester_ref, requester_addr, der, received_at FROM key_package_returns`
	var args []any
	if f.CertSerial != "" {
		q, args = q+" WHERE cert_serial = ?", append(args, f.CertSerial)
	}
	rows, err := s.db.QueryContext(ctx, q+" ORDER BY received_at DESC, id DESC"+limit(f.Limit, f.Offset), args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list key package returns: %w", err)
	}
	defer rows.Close()
	var out []*store.KeyPackageReturn
	for rows.Next() {
		r := &store.KeyPackageReturn{}
		var at int64
		if err := rows.Scan(&r.ID, &r.Kind, &r.CertSerial, &r.PkgID, &r.By, &r.ErrorCode, &r.SignerSerial, &r.RequesterSubject,
			&r.RequesterIssuer, &r.RequesterSerial, &r.RequesterRef, &r.RequesterAddr, &r.DER, &at); err != nil {
			return nil, fmt.Errorf("sqlite: list key package returns: %w", err)
		}
		r.ReceivedAt = fromUnix(at)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list key package returns: %w", err)
	}
	return out, nil
}

// AddPackage implements store.Store.
func (s *Store) AddPackage(ctx context.Context, p *store.Package) error {
	if p.CreatedAt.IsZero() {
		p.CreatedAt = time.Now()
	}
	content := p.Content
	if content == nil {
		content = []byte{}
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO packages (kind, target, name, content, created_at, forms) VALUES (?, ?, ?, ?, ?, ?)`,
			p.Kind, p.Target, p.Name, content, unix(p.CreatedAt), p.Forms)
		if err != nil {
			return fmt.Errorf("sqlite: add package: %w", err)
		}
		if p.ID, err = res.LastInsertId(); err != nil {
			return fmt.Errorf("sqlite: add package: %w", err)
		}
		return nil
	})
}

const packageColumns = `id, kind, target, name, content, created_at, forms`

func scanPackage(sc interface{ Scan(...any) error }) (*store.Package, error) {
	p := &store.Package{}
	var at int64
	if err := sc.Scan(&p.ID, &p.Kind, &p.Target, &p.Name, &p.Content, &at, &p.Forms); err != nil {
		return nil, err
	}
	p.CreatedAt = fromUnix(at)
	return p, nil
}

// GetPackage implements store.Store.
func (s *Store) GetPackage(ctx context.Context, id int64) (*store.Package, error) {
	p, err := scanPackage(s.db.QueryRowContext(ctx, `SELECT `+packageColumns+` FROM packages WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: package %d: %w", id, err)
	}
	return p, nil
}

// ListPackages implements store.Store.
func (s *Store) ListPackages(ctx context.Context, f store.PackageFilter) ([]*store.Package, error) {
	q := `SELECT ` + packageColumns + ` FROM packages`
	var args []any
	if f.Kind != "" {
		q, args = q+" WHERE kind = ?", append(args, f.Kind)
	}
	rows, err := s.db.QueryContext(ctx, q+" ORDER BY id"+limitClause(f.Limit), args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list packages: %w", err)
	}
	defer rows.Close()
	var out []*store.Package
	for rows.Next() {
		p, err := scanPackage(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: list packages: %w", err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list packages: %w", err)
	}
	return out, nil
}

// MarkPackageFetched implements store.Store.
func (s *Store) MarkPackageFetched(ctx context.Context, packageID int64, clientSerial, form string, at time.Time) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO package_deliveries (package_id, client_serial, fetched_at, fetches, form) VALUES (?, ?, ?, 1, ?)
			ON CONFLICT(package_id, client_serial) DO UPDATE SET fetched_at = excluded.fetched_at, fetches = fetches + 1, form = excluded.form`,
			packageID, clientSerial, unix(at), form)
		if err != nil {
			return fmt.Errorf("sqlite: package %d fetched: %w", packageID, err)
		}
		return nil
	})
}

// ReturnPackage implements store.Store.
func (s *Store) ReturnPackage(ctx context.Context, d store.PackageDelivery) error {
	der := d.ReturnDER
	if der == nil {
		der = []byte{}
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE package_deliveries SET return_kind = ?, error_code = ?, return_der = ?, returned_at = ?
			WHERE package_id = ? AND client_serial = ?`, d.ReturnKind, d.ErrorCode, der, unix(d.ReturnedAt), d.PackageID, d.ClientSerial)
		if err != nil {
			return fmt.Errorf("sqlite: package %d return: %w", d.PackageID, err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return store.ErrNotFound
		}
		return nil
	})
}

// ListPackageDeliveries implements store.Store.
func (s *Store) ListPackageDeliveries(ctx context.Context, f store.PackageDeliveryFilter) ([]*store.PackageDelivery, error) {
	q := `SELECT package_id, client_serial, fetched_at, fetches, return_kind, error_code, return_der, returned_at, form FROM package_deliveries`
	var where []string
	var args []any
	if f.PackageID != 0 {
		where, args = append(where, "package_id = ?"), append(args, f.PackageID)
	}
	if f.ClientSerial != "" {
		where, args = append(where, "client_serial = ?"), append(args, f.ClientSerial)
	}
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	rows, err := s.db.QueryContext(ctx, q+" ORDER BY package_id, client_serial"+limitClause(f.Limit), args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list package deliveries: %w", err)
	}
	defer rows.Close()
	var out []*store.PackageDelivery
	for rows.Next() {
		d := &store.PackageDelivery{}
		var fetched, returned int64
		if err := rows.Scan(&d.PackageID, &d.ClientSerial, &fetched, &d.Fetches, &d.ReturnKind, &d.ErrorCode, &d.ReturnDER, &returned, &d.Form); err != nil {
			return nil, fmt.Errorf("sqlite: list package deliveries: %w", err)
		}
		d.FetchedAt = fromUnix(fetched)
		if d.ReturnKind != "" {
			d.ReturnedAt = fromUnix(returned)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list package deliveries: %w", err)
	}
	return out, nil
}

func limitClause(n int) string {
	if n > 0 {
		return fmt.Sprintf(" LIMIT %d", n)
	}
	return ""
}

// NextCounter implements store.Store.
func (s *Store) NextCounter(ctx context.Context, name string) (int64, error) {
	var v int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `INSERT INTO counters (name, value) VALUES (?, 1)
			ON CONFLICT(name) DO UPDATE SET value = value + 1 RETURNING value`, name).Scan(&v)
		if err != nil {
			return fmt.Errorf("sqlite: counter %s: %w", name, err)
		}
		return nil
	})
	return v, err
}

// ReserveRange implements store.Store.
func (s *Store) ReserveRange(ctx context.Context, name string, floor, n int64) (int64, error) {
	if n <= 0 || floor < 0 {
		return 0, fmt.Errorf("sqlite: reserve %s: bad range (floor %d, n %d)", name, floor, n)
	}
	var end int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `INSERT INTO counters (name, value) VALUES (?, ? + ?)
			ON CONFLICT(name) DO UPDATE SET value = max(value, ?) + ? RETURNING value`, name, floor, n, floor, n).Scan(&end)
		if err != nil {
			return fmt.Errorf("sqlite: reserve %s: %w", name, err)
		}
		return nil
	})
	return end - n, err
}

// AdvanceCounter implements store.Store.
func (s *Store) AdvanceCounter(ctx context.Context, name string, value int64) (bool, error) {
	if value < 0 {
		return false, fmt.Errorf("sqlite: advance %s: negative value %d", name, value)
	}
	var advanced bool
	err := s.write(ctx, func(tx *sql.Tx) error {
		var v int64
		err := tx.QueryRowContext(ctx, `INSERT INTO counters (name, value) VALUES (?, ?)
			ON CONFLICT(name) DO UPDATE SET value = excluded.value WHERE counters.value < excluded.value
			RETURNING value`, name, value).Scan(&v)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return nil // at or above value: unchanged
		case err != nil:
			return fmt.Errorf("sqlite: advance %s: %w", name, err)
		}
		advanced = true
		return nil
	})
	return advanced, err
}

// PutCMPTransaction implements store.Store.
func (s *Store) PutCMPTransaction(ctx context.Context, t store.CMPTransaction) error {
	if len(t.ID) == 0 {
		return errors.New("sqlite: CMP transaction without an ID")
	}
	state := t.State
	if state == nil {
		state = []byte{}
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO cmp_transactions (id, state, expires) VALUES (?, ?, ?)
			ON CONFLICT(id) DO UPDATE SET state = excluded.state, expires = excluded.expires`, t.ID, state, unix(t.Expires))
		if err != nil {
			return fmt.Errorf("sqlite: CMP transaction %x: %w", t.ID, err)
		}
		return nil
	})
}

// CMPTransaction implements store.Store.
func (s *Store) CMPTransaction(ctx context.Context, id []byte) (*store.CMPTransaction, error) {
	t := store.CMPTransaction{ID: id}
	var exp int64
	err := s.db.QueryRowContext(ctx, "SELECT state, expires FROM cmp_transactions WHERE id = ?", id).Scan(&t.State, &exp)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("sqlite: CMP transaction %x: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: CMP transaction %x: %w", id, err)
	}
	t.Expires = fromUnix(exp)
	return &t, nil
}

// DeleteCMPTransaction implements store.Store.
func (s *Store) DeleteCMPTransaction(ctx context.Context, id []byte) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "DELETE FROM cmp_transactions WHERE id = ?", id)
		if err != nil {
			return fmt.Errorf("sqlite: delete CMP transaction %x: %w", id, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("sqlite: CMP transaction %x: %w", id, store.ErrNotFound)
		}
		return nil
	})
}

// DeleteExpiredCMPTransactions implements store.Store.
func (s *Store) DeleteExpiredCMPTransactions(ctx context.Context, now time.Time) (int, error) {
	var n int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "DELETE FROM cmp_transactions WHERE expires < ?", now.Unix())
		if err != nil {
			return fmt.Errorf("sqlite: delete expired CMP transactions: %w", err)
		}
		n, _ = res.RowsAffected()
		return nil
	})
	return int(n), err
}
