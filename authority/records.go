package authority

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"coapca/errs"
	"coapca/store"
)

// This file is the authority's read side: the records of issued certificates and pending
// requests as the authority shows them to operators (`coapca ca`) and to the services, and
// the list operations over them. Nothing outside the authority sees the store's own types
// (DESIGN.md: the core is sealed; internal/archtest checks it).

// CertRecord is an issued certificate and how it was requested.
type CertRecord struct {
	Serial    string // lowercase hex without leading zeros (FormatSerial)
	Subject   string // RFC 4514 string of the subject
	Issuer    string // RFC 4514 string of the issuer
	NotBefore time.Time
	NotAfter  time.Time
	DER       []byte

	Label     string // profile label ("" = default profile)
	Op        Op
	Protocol  Protocol
	Transport Transport

	// The requester: the certificate that authenticated the request (empty without one), the
	// origin that admitted it (RequesterRef: "ts:<trust store>", "ra:<trust store>",
	// "mac:<reference>", "psk:<name>", or for a re-enrollment the origin of the renewed
	// certificate), and the network address.
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

// Revoked reports whether the certificate has been revoked.
func (c *CertRecord) Revoked() bool { return !c.RevokedAt.IsZero() }

// PendingStatus is the state of a request under manual approval:
// pending → approved → issued, or pending → rejected.
type PendingStatus uint8

// The pending statuses. The zero value StatusUnknown is no state a request is in; in a
// PendingFilter it selects every status.
const (
	StatusUnknown  PendingStatus = iota
	StatusPending                // waiting for the operator
	StatusApproved               // approved; the next resend gets the certificate
	StatusRejected               // rejected; resends are refused with the reason
	StatusIssued                 // approved and answered with a certificate
	NumPendingStatuses
)

var pendingStatusNames = [NumPendingStatuses]string{"unknown", "pending", "approved", "rejected", "issued"}

// storeStatus is the store's spelling of each status ("" for StatusUnknown: no state).
var storeStatus = [NumPendingStatuses]store.PendingStatus{
	"", store.StatusPending, store.StatusApproved, store.StatusRejected, store.StatusIssued,
}

func (s PendingStatus) String() string {
	if s < NumPendingStatuses {
		return pendingStatusNames[s]
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

func statusFromStore(s store.PendingStatus) PendingStatus {
	for i, v := range storeStatus {
		if i > 0 && v == s {
			return PendingStatus(i)
		}
	}
	return StatusUnknown
}

// PendingRecord is a certificate request waiting for (or decided by) manual approval.
type PendingRecord struct {
	ID     string // short random ID shown to the operator (`coapca ca approve ID`)
	Status PendingStatus
	Reason string // why it was rejected

	Label     string
	Op        Op
	Protocol  Protocol
	Transport Transport
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

// Revocation selects certificates by revocation state in CertFilter.
type Revocation uint8

// The revocation filters.
const (
	AnyRevocation Revocation = iota // every certificate
	OnlyRevoked                     // revoked ones
	NotRevoked                      // not revoked ones (expired included)
	NumRevocations
)

var storeRevocation = [NumRevocations]store.RevocationFilter{store.AnyRevocation, store.OnlyRevoked, store.NotRevoked}

// CertFilter selects certificates in ListCertificates. The zero value selects every one.
type CertFilter struct {
	Label           string // exact profile label; set LabelSet to select the default label ""
	LabelSet        bool
	SubjectContains string // substring of the subject string
	SerialPrefix    string // prefix of the hex serial
	Issuer          string // exact issuer string
	Revocation      Revocation
	Limit           int // 0 = no limit
	Offset          int
}

// PendingFilter selects requests in ListPending. The zero value selects every one.
type PendingFilter struct {
	Status PendingStatus // StatusUnknown = every status
	Label  string
	Limit  int // 0 = no limit
	Offset int
}

// ListCertificates returns the records of issued certificates, newest first.
// errs.BadRequest for a filter out of range, errs.Internal when the store fails.
func (a *Authority) ListCertificates(ctx context.Context, f CertFilter) ([]*CertRecord, error) {
	if f.Revocation >= NumRevocations || f.Limit < 0 || f.Offset < 0 {
		return nil, errs.New(errs.BadRequest, "bad certificate filter (revocation %d, limit %d, offset %d)", f.Revocation, f.Limit, f.Offset)
	}
	cs, err := a.store.ListCerts(ctx, store.CertFilter{
		Label: f.Label, LabelSet: f.LabelSet, SubjectContains: f.SubjectContains,
		SerialPrefix: strings.ToLower(f.SerialPrefix), Issuer: f.Issuer,
		Revocation: storeRevocation[f.Revocation], Limit: f.Limit, Offset: f.Offset,
	})
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "cannot list certificates")
	}
	out := make([]*CertRecord, len(cs))
	for i, c := range cs {
		out[i] = certRecord(c)
	}
	return out, nil
}

// ListPending returns requests under manual approval, newest first.
// errs.BadRequest for a filter out of range, errs.Internal when the store fails.
func (a *Authority) ListPending(ctx context.Context, f PendingFilter) ([]*PendingRecord, error) {
	if f.Status >= NumPendingStatuses || f.Limit < 0 || f.Offset < 0 {
		return nil, errs.New(errs.BadRequest, "bad pending filter (status %d, limit %d, offset %d)", f.Status, f.Limit, f.Offset)
	}
	ps, err := a.store.ListPending(ctx, store.PendingFilter{Status: storeStatus[f.Status], Label: f.Label, Limit: f.Limit, Offset: f.Offset})
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "cannot list pending requests")
	}
	out := make([]*PendingRecord, len(ps))
	for i, p := range ps {
		out[i] = pendingRecord(p)
	}
	return out, nil
}

// RevokedSerials returns the serials of every revoked certificate (of every issuer), e.g. to
// announce revocations made by another process (RFC 9482 §2.6).
func (a *Authority) RevokedSerials(ctx context.Context) ([]string, error) {
	rev, err := a.store.RevokedCerts(ctx, "")
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "cannot list revoked certificates")
	}
	out := make([]string, len(rev))
	for i, r := range rev {
		out[i] = r.Serial
	}
	return out, nil
}

// PendingRequest returns a pending request by ID (errs.NotFound).
func (a *Authority) PendingRequest(ctx context.Context, id string) (*PendingRecord, error) {
	p, err := a.store.Pending(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, errs.Wrap(errs.NotFound, err, "no pending request %s", id)
	}
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "pending request %s", id)
	}
	return pendingRecord(p), nil
}

// Certificate returns the record of an issued certificate; serial as an operator types it
// (hex, optional colons). errs.NotFound when unknown, errs.BadRequest when not hex.
func (a *Authority) Certificate(ctx context.Context, serial string) (*CertRecord, error) {
	c, err := a.storedCert(ctx, serial)
	if err != nil {
		return nil, err
	}
	return certRecord(c), nil
}

// storedCert is Certificate with the store's record, for the authority's own decisions.
func (a *Authority) storedCert(ctx context.Context, serial string) (*store.Cert, error) {
	sn, err := store.NormalizeSerial(serial)
	if err != nil {
		return nil, errs.Wrap(errs.BadRequest, err, "bad serial number %q", serial)
	}
	c, err := a.store.Cert(ctx, sn)
	if errors.Is(err, store.ErrNotFound) {
		return nil, errs.Wrap(errs.NotFound, err, "no certificate with serial %s", sn)
	}
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "certificate %s", sn)
	}
	return c, nil
}

// Unconfirmed is a certificate issued through CMP that its requester has not confirmed yet
// (RFC 9810 §5.1.1.2 certConf, RFC 9483 §4.1.1): it must be revoked when Deadline passes
// without a confirmation, also when the server restarted in between.
type Unconfirmed struct {
	Serial        string // the certificate (FormatSerial)
	TransactionID []byte // the CMP transaction that issued it
	Deadline      time.Time
	CreatedAt     time.Time // zero = now
}

// AddUnconfirmed records that certificate u.Serial waits for confirmation until u.Deadline
// (recording the same serial again replaces the entry). errs.NotFound when no such
// certificate was issued.
func (a *Authority) AddUnconfirmed(ctx context.Context, u Unconfirmed) error {
	if u.CreatedAt.IsZero() {
		u.CreatedAt = a.now()
	}
	err := a.store.AddUnconfirmed(ctx, store.Unconfirmed{Serial: u.Serial, TransactionID: u.TransactionID,
		Deadline: u.Deadline, CreatedAt: u.CreatedAt})
	if errors.Is(err, store.ErrNotFound) {
		return errs.Wrap(errs.NotFound, err, "no certificate with serial %s", u.Serial)
	}
	if err != nil {
		return errs.Wrap(errs.Internal, err, "cannot record the confirmation deadline of %s", u.Serial)
	}
	return nil
}

// DeleteUnconfirmed forgets the confirmation deadline of serial: the certificate was
// confirmed, or revoked. errs.NotFound when there is none.
func (a *Authority) DeleteUnconfirmed(ctx context.Context, serial string) error {
	err := a.store.DeleteUnconfirmed(ctx, serial)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return errs.Wrap(errs.NotFound, err, "certificate %s does not wait for confirmation", serial)
	case err != nil:
		return errs.Wrap(errs.Internal, err, "cannot record the confirmation of %s", serial)
	}
	return nil
}

// DueUnconfirmed returns at most limit (0 = no limit) certificates whose confirmation
// deadline is at or before now, earliest deadline first.
func (a *Authority) DueUnconfirmed(ctx context.Context, now time.Time, limit int) ([]Unconfirmed, error) {
	due, err := a.store.DueUnconfirmed(ctx, now, limit)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "cannot list unconfirmed certificates")
	}
	out := make([]Unconfirmed, len(due))
	for i, u := range due {
		out[i] = Unconfirmed{Serial: u.Serial, TransactionID: u.TransactionID, Deadline: u.Deadline, CreatedAt: u.CreatedAt}
	}
	return out, nil
}

// maxSequence bounds what ReserveSequence hands out: OSCORE sequence numbers end at 2^40-1
// (RFC 8613 §7.2.1); the store's counters are int64.
const maxSequence = 1<<40 - 1

// ReserveSequence reserves n sender sequence numbers of the OSCORE context named name for
// this process alone and returns the first (none below floor). Every instance sharing the
// store gets disjoint blocks, so no nonce is used twice whichever instance answers
// (RFC 8613 §7.2.1).
func (a *Authority) ReserveSequence(ctx context.Context, name string, floor, n uint64) (uint64, error) {
	if n == 0 || n > maxSequence || floor > maxSequence+1 {
		return 0, errs.New(errs.BadRequest, "bad sequence number range (floor %d, %d numbers)", floor, n)
	}
	first, err := a.store.ReserveRange(ctx, "oscore-ssn:"+name, int64(floor), int64(n))
	if err != nil {
		return 0, errs.Wrap(errs.Internal, err, "cannot reserve OSCORE sequence numbers of %s", name)
	}
	return uint64(first), nil
}

// AcceptSequence is the replay check of the OSCORE context named name shared by every
// instance on the store: it records the Partial IV seq as received and reports true, or
// reports false when seq or a higher number was accepted before, by any instance (RFC 8613
// §7.4). A refusal changes nothing, so a replayed request cannot hold back the sender's next.
func (a *Authority) AcceptSequence(ctx context.Context, name string, seq uint64) (bool, error) {
	if seq > maxSequence {
		return false, errs.New(errs.BadRequest, "sequence number %d beyond 2^40-1", seq)
	}
	ok, err := a.store.AdvanceCounter(ctx, "oscore-replay:"+name, int64(seq)+1)
	if err != nil {
		return false, errs.Wrap(errs.Internal, err, "cannot check the replay window of %s", name)
	}
	return ok, nil
}

func certRecord(c *store.Cert) *CertRecord {
	return &CertRecord{
		Serial: c.Serial, Subject: c.Subject, Issuer: c.Issuer, NotBefore: c.NotBefore, NotAfter: c.NotAfter, DER: c.DER,
		Label: c.Label, Op: Op(c.Op), Protocol: parseProtocol(c.Protocol), Transport: parseTransportOrUnknown(c.Transport),
		RequesterSubject: c.RequesterSubject, RequesterIssuer: c.RequesterIssuer, RequesterSerial: c.RequesterSerial,
		RequesterRef: c.RequesterRef, RequesterAddr: c.RequesterAddr,
		PendingID: c.PendingID, IssuedAt: c.IssuedAt, RevokedAt: c.RevokedAt, RevocationReason: c.RevocationReason,
	}
}

func pendingRecord(p *store.Pending) *PendingRecord {
	return &PendingRecord{
		ID: p.ID, Status: statusFromStore(p.Status), Reason: p.Reason,
		Label: p.Label, Op: Op(p.Op), Protocol: parseProtocol(p.Protocol), Transport: parseTransportOrUnknown(p.Transport),
		Subject: p.Subject, Request: p.Request,
		RequesterSubject: p.RequesterSubject, RequesterIssuer: p.RequesterIssuer, RequesterSerial: p.RequesterSerial,
		RequesterRef: p.RequesterRef, RequesterAddr: p.RequesterAddr,
		CertSerial: p.CertSerial, CreatedAt: p.CreatedAt, UpdatedAt: p.UpdatedAt,
	}
}

func parseTransportOrUnknown(s string) Transport {
	t, _ := ParseTransport(s)
	return t
}

func parseProtocol(s string) Protocol {
	for i, n := range protocolNames {
		if i > 0 && n == s {
			return Protocol(i)
		}
	}
	return ProtocolUnknown
}

// FormatSerial is the text form of a serial number in records and filters: lowercase hex
// without leading zeros.
func FormatSerial(n *big.Int) string { return store.FormatSerial(n) }

// CMPTransaction is an open CMP transaction (RFC 9810 §5.1.1) as the store keeps it: State is
// the CMP service's own encoding.
type CMPTransaction struct {
	ID      []byte
	State   []byte
	Expires time.Time
}

// PutCMPTransaction creates or replaces the open CMP transaction t.ID, so that its next
// message (pollReq, certConf) can be answered by any instance sharing the store.
func (a *Authority) PutCMPTransaction(ctx context.Context, t CMPTransaction) error {
	if err := a.store.PutCMPTransaction(ctx, store.CMPTransaction{ID: t.ID, State: t.State, Expires: t.Expires}); err != nil {
		return errs.Wrap(errs.Internal, err, "cannot record the CMP transaction")
	}
	return nil
}

// CMPTransaction returns the open CMP transaction id; errs.NotFound when there is none.
func (a *Authority) CMPTransaction(ctx context.Context, id []byte) (*CMPTransaction, error) {
	t, err := a.store.CMPTransaction(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, errs.Wrap(errs.NotFound, err, "no open CMP transaction with this transactionID")
	case err != nil:
		return nil, errs.Wrap(errs.Internal, err, "cannot read the CMP transaction")
	}
	return &CMPTransaction{ID: t.ID, State: t.State, Expires: t.Expires}, nil
}

// DeleteCMPTransaction ends the CMP transaction id; errs.NotFound when there is none.
func (a *Authority) DeleteCMPTransaction(ctx context.Context, id []byte) error {
	err := a.store.DeleteCMPTransaction(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return errs.Wrap(errs.NotFound, err, "no open CMP transaction with this transactionID")
	case err != nil:
		return errs.Wrap(errs.Internal, err, "cannot end the CMP transaction")
	}
	return nil
}

// DeleteExpiredCMPTransactions removes the CMP transactions that expired before now.
func (a *Authority) DeleteExpiredCMPTransactions(ctx context.Context, now time.Time) (int, error) {
	n, err := a.store.DeleteExpiredCMPTransactions(ctx, now)
	if err != nil {
		return 0, errs.Wrap(errs.Internal, err, "cannot remove expired CMP transactions")
	}
	return n, nil
}
