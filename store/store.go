// Package store defines what the authority keeps: issued certificates, pending (manually
// approved) requests, CMP certificates awaiting confirmation, key package receipts and errors
// (RFC 8295 §8.2), and counters such as the CRL number and reserved OSCORE sequence numbers.
//
// Store is an interface; store/sqlite is the embedded default and store/postgres the back end
// that several server instances share. Every implementation must pass the conformance suite
// in store/storetest.
//
// The guarantees every implementation gives (DESIGN.md, "the store"):
//   - a certificate is recorded in one transaction together with the pending request it
//     answers (RecordIssued), so there is never a half-written record;
//   - serial numbers are unique forever: RecordIssued fails with ErrDuplicateSerial rather than
//     overwrite, and revoked or expired rows are never deleted (RFC 5280 §4.1.2.2: a CA MUST
//     NOT reuse a serial number);
//   - a pending request is identified by a request key (see authority) and created at most once
//     (CreatePending is create-or-get), so an identical resend finds the same entry.
package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Sentinel errors. Implementations wrap them (errors.Is works).
var (
	// ErrNotFound: no row with that serial or ID.
	ErrNotFound = errors.New("store: not found")
	// ErrDuplicateSerial: a certificate with that serial is already recorded.
	ErrDuplicateSerial = errors.New("store: duplicate serial number")
	// ErrAlreadyRevoked: RevokeCert on a revoked certificate.
	ErrAlreadyRevoked = errors.New("store: certificate already revoked")
	// ErrPendingState: the pending request is not in the state the operation requires
	// (e.g. approving a rejected request, or recording a second certificate for one request).
	ErrPendingState = errors.New("store: pending request in wrong state")
)

// Cert is one issued certificate and how it was requested.
type Cert struct {
	Serial    string // lowercase hex without leading zeros (FormatSerial)
	Subject   string // RFC 4514 string of the subject
	Issuer    string // RFC 4514 string of the issuer
	NotBefore time.Time
	NotAfter  time.Time
	DER       []byte

	Label     string // profile label ("" = default profile)
	Op        string // "enroll", "reenroll", "serverkeygen", ...
	Protocol  string // "est", "cmp"
	Transport string // "coaps", "oscore", "coap", "https", "http"

	// The requester: the client certificate that authenticated the request (empty without one),
	// the MAC secret reference (CMP PBM), and the network address.
	RequesterSubject string
	RequesterIssuer  string
	RequesterSerial  string
	RequesterRef     string
	RequesterAddr    string

	PendingID string // the pending request this certificate answers, "" when none
	IssuedAt  time.Time

	RevokedAt        time.Time // zero when not revoked
	RevocationReason int       // RFC 5280 §5.3.1 CRLReason, valid when RevokedAt is set
}

// CertKeyRefs returns what a certificate is looked up by (CertFilter.CertSHA256Prefix and
// KeyID): the SHA-256 of its DER, and its Subject Key Identifier (nil when der does not parse
// or has none). Implementations store both when they record a certificate.
//
// The Subject Key Identifier is read by walking the DER (RFC 5280 §4.1, §4.2.1.2) rather than
// by x509.ParseCertificate: every issued certificate passes here once more after the CA parsed
// it, and a full parse was a visible share of the CPU of an enrollment (issue 13). A certificate
// that x509.ParseCertificate accepts gives the same identifier (FuzzCertKeyRefs); one whose
// outline is not a well-formed certificate gives nil.
func CertKeyRefs(der []byte) (sum, keyID []byte) {
	h := sha256.Sum256(der)
	if ski := subjectKeyID(der); len(ski) > 0 {
		keyID = bytes.Clone(ski)
	}
	return h[:], keyID
}

// oidSubjectKeyID is id-ce-subjectKeyIdentifier (RFC 5280 §4.2.1.2).
var oidSubjectKeyID = asn1.ObjectIdentifier{2, 5, 29, 14}

// subjectKeyID returns the keyIdentifier of der's Subject Key Identifier extension, or nil
// when der is not a well-formed Certificate outline, is not version 3, has no such extension
// or has it twice (which x509.ParseCertificate refuses).
func subjectKeyID(der []byte) []byte {
	input := cryptobyte.String(der)
	var cert, tbs cryptobyte.String
	if !input.ReadASN1(&cert, cbasn1.SEQUENCE) || !input.Empty() || !cert.ReadASN1(&tbs, cbasn1.SEQUENCE) {
		return nil
	}
	version := 0
	if tbs.PeekASN1Tag(cbasn1.Tag(0).Constructed().ContextSpecific()) {
		var v cryptobyte.String
		if !tbs.ReadASN1(&v, cbasn1.Tag(0).Constructed().ContextSpecific()) || !v.ReadASN1Integer(&version) || !v.Empty() {
			return nil
		}
	}
	if version != 2 { // v3: only it has extensions (RFC 5280 §4.1.2.1)
		return nil
	}
	var serial cryptobyte.String
	if !tbs.ReadASN1(&serial, cbasn1.INTEGER) {
		return nil
	}
	// signature, issuer, validity, subject, subjectPublicKeyInfo
	for _, tag := range []cbasn1.Tag{cbasn1.SEQUENCE, cbasn1.SEQUENCE, cbasn1.SEQUENCE, cbasn1.SEQUENCE, cbasn1.SEQUENCE} {
		if !tbs.SkipASN1(tag) {
			return nil
		}
	}
	// issuerUniqueID [1], subjectUniqueID [2] (RFC 5280 §4.1.2.8)
	for _, tag := range []cbasn1.Tag{cbasn1.Tag(1).ContextSpecific(), cbasn1.Tag(2).ContextSpecific()} {
		if !tbs.SkipOptionalASN1(tag) {
			return nil
		}
	}
	var extsWrap, exts cryptobyte.String
	var present bool
	if !tbs.ReadOptionalASN1(&extsWrap, &present, cbasn1.Tag(3).Constructed().ContextSpecific()) || !tbs.Empty() || !present {
		return nil
	}
	if !extsWrap.ReadASN1(&exts, cbasn1.SEQUENCE) || !extsWrap.Empty() {
		return nil
	}
	var found []byte
	for !exts.Empty() {
		var ext, value cryptobyte.String
		var oid asn1.ObjectIdentifier
		if !exts.ReadASN1(&ext, cbasn1.SEQUENCE) || !ext.ReadASN1ObjectIdentifier(&oid) {
			return nil
		}
		if ext.PeekASN1Tag(cbasn1.BOOLEAN) && !ext.SkipASN1(cbasn1.BOOLEAN) {
			return nil
		}
		// Bytes after extnValue inside the Extension are left unread, as x509.ParseCertificate
		// leaves them (its parseExtension does not check for them): the walk must find the key
		// identifier x509 finds, or a certificate x509 accepts would not be found by its kid.
		if !ext.ReadASN1(&value, cbasn1.OCTET_STRING) {
			return nil
		}
		if !oid.Equal(oidSubjectKeyID) {
			continue
		}
		var ski cryptobyte.String
		if found != nil || !value.ReadASN1(&ski, cbasn1.OCTET_STRING) {
			return nil
		}
		found = ski
	}
	return found
}

// PrefixEnd returns the smallest byte string greater than every string that starts with
// prefix, or nil when there is none (prefix empty or all 0xff): with it, a prefix match is
// the range [prefix, end) that an index answers.
func PrefixEnd(prefix []byte) []byte {
	end := bytes.Clone(prefix)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// Revoked reports whether the certificate has been revoked.
func (c *Cert) Revoked() bool { return !c.RevokedAt.IsZero() }

// PendingStatus is the state of a pending request:
// pending → approved → issued, or pending → rejected.
type PendingStatus string

const (
	StatusPending  PendingStatus = "pending"
	StatusApproved PendingStatus = "approved"
	StatusRejected PendingStatus = "rejected"
	StatusIssued   PendingStatus = "issued"
)

// Pending is a certificate request waiting for (or decided by) manual approval.
type Pending struct {
	ID         string // short random ID shown to the operator (`coapca ca approve ID`)
	RequestKey string // hash identifying the request; unique
	Status     PendingStatus
	Reason     string // why it was rejected

	Label     string
	Op        string
	Protocol  string
	Transport string
	Subject   string // requested subject (RFC 4514), for display
	Request   []byte // the request as received (CSR DER, or CMP CertTemplate DER)

	RequesterSubject string
	RequesterIssuer  string
	RequesterSerial  string
	RequesterRef     string
	RequesterAddr    string

	CertSerial string // set when issued
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

// Unconfirmed is a certificate issued through CMP that its requester has not confirmed yet
// (RFC 9810 §5.1.1.2 certConf, RFC 9483 §4.1.1): it must be revoked when Deadline passes
// without a confirmation, also when the server restarted in between.
type Unconfirmed struct {
	Serial        string // the certificate (FormatSerial)
	TransactionID []byte // the CMP transaction that issued it
	Deadline      time.Time
	CreatedAt     time.Time
}

// CMPTransaction is an open CMP transaction (RFC 9810 §5.1.1): an enrollment waiting for
// approval (pollReq) or for certConf. Kept in the store so that its next message may reach any
// server instance, or the same one after a restart.
type CMPTransaction struct {
	ID      []byte // the transactionID
	State   []byte // the CMP service's encoding of what it needs to continue
	Expires time.Time
}

// KeyPackageReturn is a key package receipt or error (RFC 7191) that a client returned for a
// server-generated key (RFC 8295 §8.2, /serverkeygen/return). Rows are only ever added.
type KeyPackageReturn struct {
	ID         int64  // set by the store
	Kind       string // "receipt" or "error"
	CertSerial string // the certificate of the key the package held (FormatSerial)
	PkgID      []byte // the key package identifier the client named (receiptOf / errorOf)
	By         string // who received it (the SIREntityName, as text)
	ErrorCode  string // for an error: its code (name or OID)
	// SignerSerial is the certificate that signed the receipt or error ("" when unsigned,
	// which RFC 8295 §5.2.1 allows for errors only).
	SignerSerial string
	// The requester that returned it, as for Cert.
	RequesterSubject string
	RequesterIssuer  string
	RequesterSerial  string
	RequesterRef     string
	RequesterAddr    string
	DER              []byte // the returned content as received (the ContentInfo)
	ReceivedAt       time.Time
}

// KeyPackageReturnFilter selects returns in ListKeyPackageReturns. Zero fields do not filter.
type KeyPackageReturnFilter struct {
	CertSerial string
	Limit      int
	Offset     int
}

// Package is a package the operator queued for clients (RFC 8295 §5: symmetric keys): the
// content to deliver and whom it is for. Rows are only ever added.
type Package struct {
	ID   int64  // set by the store
	Kind string // "symmetrickeys"
	// Target names the clients it is for: "serial:HEX" (the client that authenticates with
	// that certificate), "subject:DN" (any client whose certificate of this CA has that
	// subject), or "label:L" (any client holding a certificate of this CA issued under L).
	Target    string
	Name      string // what the operator calls it (e.g. the key identifier)
	Content   []byte // the inner content (DER), e.g. a SymmetricKeyPackage (RFC 6031)
	CreatedAt time.Time
	// Forms are the forms (RFC 8295 §5.1.2) the operator allows a symmetric key package to be
	// delivered in, comma-separated ("" the authority's default); unused for other kinds.
	Forms string
}

// PackageFilter selects packages in ListPackages. Zero fields do not filter.
type PackageFilter struct {
	Kind  string
	Limit int
}

// PackageDelivery is the state of one package for one client: fetched, and returned (a
// receipt or error, RFC 7191).
type PackageDelivery struct {
	PackageID    int64
	ClientSerial string // the certificate the client authenticated with (FormatSerial)
	FetchedAt    time.Time
	Fetches      int
	// Form is the form of the latest fetch of a symmetric key package (RFC 8295 §5.1.2), ""
	// for other kinds.
	Form string
	// ReturnKind is "" until the client returns a receipt or error; then "receipt" or "error"
	// with ErrorCode, the returned DER and when. A later return replaces an earlier one.
	ReturnKind string
	ErrorCode  string
	ReturnDER  []byte
	ReturnedAt time.Time
}

// PackageDeliveryFilter selects deliveries in ListPackageDeliveries. Zero fields do not filter.
type PackageDeliveryFilter struct {
	PackageID    int64
	ClientSerial string
	Limit        int
}

// RevokedEntry is one line of a CRL.
type RevokedEntry struct {
	Serial    string
	RevokedAt time.Time
	Reason    int
	NotAfter  time.Time
}

// RevocationFilter selects certificates by revocation state in ListCerts.
type RevocationFilter int

const (
	AnyRevocation RevocationFilter = iota // all certificates
	OnlyRevoked                           // revoked ones
	NotRevoked                            // not revoked ones (expired included)
)

// CertFilter selects certificates in ListCerts. Zero fields do not filter.
type CertFilter struct {
	Label           string // exact profile label; use LabelSet to select the default label ""
	LabelSet        bool
	SubjectContains string // substring of the subject string
	SerialPrefix    string // prefix of the hex serial
	Issuer          string // exact issuer string
	// RequesterIssuer and RequesterSerial select certificates requested with that client
	// certificate (both exact; either alone filters too); RequesterRef those whose recorded
	// requester reference is exactly that (e.g. "user:alice").
	RequesterIssuer string
	RequesterSerial string
	RequesterRef    string
	// CertSHA256Prefix selects the certificates whose DER's SHA-256 starts with these bytes:
	// an x5t of RFC 9360 §2 (SHA-256, or SHA-256/64 = its first 8 bytes), by which an EDHOC
	// Initiator may designate its certificate (RFC 9528 §3.5.3). KeyID selects those whose
	// Subject Key Identifier extension is exactly this (an EDHOC kid). Both are indexed.
	CertSHA256Prefix []byte
	KeyID            []byte
	Revocation       RevocationFilter
	Limit            int // 0 = no limit
	Offset           int
}

// PendingFilter selects pending requests in ListPending. Zero fields do not filter.
type PendingFilter struct {
	Status PendingStatus
	Label  string
	Limit  int
	Offset int
}

// Store keeps certificates, pending requests and counters. Implementations are safe for
// concurrent use, and for use by several processes on the same database (the server and the
// `coapca ca` command line).
type Store interface {
	// RecordIssued records a newly signed certificate. When c.PendingID is set, the same
	// transaction moves that pending request from approved to issued with c.Serial; if the
	// request is not approved (e.g. a concurrent resend already issued it) nothing is written
	// and ErrPendingState is returned. A serial that exists → ErrDuplicateSerial, nothing written.
	RecordIssued(ctx context.Context, c *Cert) error
	// Cert returns the certificate with that serial (ErrNotFound).
	Cert(ctx context.Context, serial string) (*Cert, error)
	// ListCerts returns certificates, newest first.
	ListCerts(ctx context.Context, f CertFilter) ([]*Cert, error)
	// RevokeCert marks a certificate revoked (ErrNotFound, ErrAlreadyRevoked).
	RevokeCert(ctx context.Context, serial string, reason int, at time.Time) error
	// RevokedCerts returns every revoked certificate of issuer (all issuers when "").
	RevokedCerts(ctx context.Context, issuer string) ([]RevokedEntry, error)

	// CreatePending stores p unless a request with p.RequestKey exists; it returns the stored
	// request and whether it was created now. The store sets ID (when empty), Status
	// (StatusPending), CreatedAt and UpdatedAt of a new row.
	CreatePending(ctx context.Context, p *Pending) (stored *Pending, created bool, err error)
	// Pending returns the pending request with that ID (ErrNotFound).
	Pending(ctx context.Context, id string) (*Pending, error)
	// ListPending returns pending requests, newest first.
	ListPending(ctx context.Context, f PendingFilter) ([]*Pending, error)
	// DecidePending moves a request from pending to approved or rejected (with a reason).
	// Deciding the same way twice is not an error; any other transition → ErrPendingState.
	DecidePending(ctx context.Context, id string, status PendingStatus, reason string) error

	// AddUnconfirmed records that certificate u.Serial waits for confirmation until
	// u.Deadline (recording the same serial again replaces the entry). The store sets
	// CreatedAt when it is zero.
	AddUnconfirmed(ctx context.Context, u Unconfirmed) error
	// DeleteUnconfirmed removes the entry of serial: the certificate was confirmed, or revoked
	// (ErrNotFound when there is none).
	DeleteUnconfirmed(ctx context.Context, serial string) error
	// DueUnconfirmed returns at most limit entries (0 = no limit) whose deadline is at or
	// before now, earliest deadline first.
	DueUnconfirmed(ctx context.Context, now time.Time, limit int) ([]Unconfirmed, error)

	// PutCMPTransaction creates or replaces the open CMP transaction t.ID.
	PutCMPTransaction(ctx context.Context, t CMPTransaction) error
	// CMPTransaction returns the open CMP transaction with that ID (ErrNotFound).
	CMPTransaction(ctx context.Context, id []byte) (*CMPTransaction, error)
	// DeleteCMPTransaction removes the transaction (ErrNotFound when there is none).
	DeleteCMPTransaction(ctx context.Context, id []byte) error
	// DeleteExpiredCMPTransactions removes the transactions that expired before now and
	// returns how many.
	DeleteExpiredCMPTransactions(ctx context.Context, now time.Time) (int, error)

	// AddKeyPackageReturn records a key package receipt or error; the store sets ID, and
	// ReceivedAt when it is zero.
	AddKeyPackageReturn(ctx context.Context, r *KeyPackageReturn) error
	// ListKeyPackageReturns returns recorded receipts and errors, newest first.
	ListKeyPackageReturns(ctx context.Context, f KeyPackageReturnFilter) ([]*KeyPackageReturn, error)

	// AddPackage records a package for clients; the store sets ID, and CreatedAt when zero.
	AddPackage(ctx context.Context, p *Package) error
	// GetPackage returns the package with that ID (ErrNotFound).
	GetPackage(ctx context.Context, id int64) (*Package, error)
	// ListPackages returns packages, oldest first.
	ListPackages(ctx context.Context, f PackageFilter) ([]*Package, error)
	// MarkPackageFetched records that the client fetched the package (again) at at, in form
	// ("" when the kind has no forms).
	MarkPackageFetched(ctx context.Context, packageID int64, clientSerial, form string, at time.Time) error
	// ReturnPackage records a receipt or error (d.ReturnKind, ErrorCode, ReturnDER,
	// ReturnedAt) for a package the client fetched; ErrNotFound when it never fetched it.
	ReturnPackage(ctx context.Context, d PackageDelivery) error
	// ListPackageDeliveries returns deliveries, by package then client.
	ListPackageDeliveries(ctx context.Context, f PackageDeliveryFilter) ([]*PackageDelivery, error)

	// NextCounter atomically increments the named counter and returns its new value
	// (the first call returns 1). Used for CRL numbers (RFC 5280 §5.2.3: monotonically increasing).
	NextCounter(ctx context.Context, name string) (int64, error)
	// ReserveRange atomically reserves n (> 0) consecutive values of the named counter for
	// the caller alone and returns the first; no value below floor is handed out (a floor
	// above the counter moves it up). Reservations are durable and never overlap, whichever
	// process makes them: OSCORE sender sequence numbers of a context that several instances
	// share (RFC 8613 §7.2.1: a nonce is never reused). It shares NextCounter's names: a name is
	// used by one of the two only.
	ReserveRange(ctx context.Context, name string, floor, n int64) (first int64, err error)
	// AdvanceCounter atomically raises the named counter to value when it is below value and
	// reports whether it did; a counter at or above value is left as it is (false). A name
	// without a counter yet is created at value (true). Whichever processes race, one value is
	// accepted at most once: the replay check of an OSCORE context that several instances
	// share (RFC 8613 §7.4). It shares NextCounter's names: a name is used by one of them only.
	AdvanceCounter(ctx context.Context, name string, value int64) (bool, error)

	Close() error
}

// Notifier is implemented by stores that several processes share and that can tell every one
// of them about an event at once (PostgreSQL LISTEN/NOTIFY): CMP announcements reach the
// observers of every server instance without polling. RevokeCert of such a store notifies
// EventRevoked+" "+serial itself, in the revocation's transaction.
type Notifier interface {
	// Notify delivers event (at most 7999 bytes) to every Listen on the database, this
	// process's included.
	Notify(ctx context.Context, event string) error
	// Listen calls fn with every event notified on the database, from one goroutine, in order,
	// until ctx ends or the store is closed. It returns once listening is in effect: every event
	// notified after Listen returned reaches fn. When the connection is lost, it listens again
	// and then calls fn(""): events may have been missed in between.
	Listen(ctx context.Context, fn func(event string)) error
}

// EventRevoked starts the event a Notifier's RevokeCert sends: "revoked SERIAL".
const EventRevoked = "revoked"

// FormatSerial is the canonical text form of a serial number: lowercase hex, no leading zeros.
func FormatSerial(n *big.Int) string { return n.Text(16) }

// NormalizeSerial accepts a serial as an operator types it ("0x01:AB", "01ab", "1AB") and
// returns the canonical form.
func NormalizeSerial(s string) (string, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	t = strings.TrimPrefix(t, "0x")
	t = strings.NewReplacer(":", "", " ", "").Replace(t)
	n, ok := new(big.Int).SetString(t, 16)
	if !ok || t == "" || strings.Trim(t, "0123456789abcdef") != "" {
		return "", fmt.Errorf("store: %q is not a hexadecimal serial number", s)
	}
	return FormatSerial(n), nil
}
