// Package cmpserver is coapca's CMP service: the CA/RA side of the Lightweight CMP Profile
// (RFC 9483) on top of the PKIMessage codec of package cmp and the authority. It is
// transport-independent: the bindings cmp/cmpcoap (RFC 9482) and cmp/cmphttp (RFC 9811) hand
// it the DER of a request and send back the DER it returns.
//
// Implemented:
//   - RFC 9483 §3: generic header checks (pvno, transactionID, senderNonce, recipNonce of
//     follow-up messages, messageTime within a tolerance, §3.1, §3.5), protection by
//     signature (protection certificate validated with the authority's chain verification:
//     manufacturer trust stores or this CA) or by MAC with a shared secret per reference
//     (PasswordBasedMac, PBMAC1, §3.2); responses
//     protected the same way (MAC with the same secret, else signed by the CMP signer with its
//     chain in extraCerts, §3.3); error messages with PKIFailureInfo mapped from errs kinds
//     by this package's table (§3.6.4). The cheap checks (header, messageTime, operation,
//     MAC parameters within [Options.MACLimits], known senderKID, transaction state) run
//     before the expensive ones (key derivation, signature and chain verification).
//   - §4.1.1-4.1.5: ir, cr, kur (old certificate must be ours), p10cr; signature POP checked
//     (RFC 4211 §4.1, with poposkInput's authInfo bound to the authenticated requester) and the
//     certificate issued for the proven key only; caPubs with the root in ip; implicitConfirm
//     when requested and allowed; otherwise a certConf whose certHash is verified before the
//     certificate counts as accepted, with a transaction table and confirmWaitTime
//     (certificates rejected in certConf or never confirmed are revoked; the deadlines are
//     kept in the store, so this holds across restarts).
//   - §4.2: rr, as the authority allows (the certificate's own key, an authorized RA, or a
//     MAC secret explicitly allowed to revoke what it enrolled).
//   - §4.3: genm/genp support messages: CA certificates, root CA update, certificate request
//     template, CRL update (crlStatusList → crls); at most maxGenMItems items per genm.
//   - §4.4: delayed delivery: status waiting on errs.Pending, then pollReq/pollRep until the
//     authority's pending request is approved or rejected.
//   - Announcements (RFC 9810 §5.3.13-16, sent by the CoAP binding per RFC 9482 §2.6): cann
//     when a certificate is accepted, rann and crlann on revocation (through rr, or found by
//     the server in the store: [Service.AnnounceRevocations]), and [Service.Announce] for
//     anything else (e.g. a CA key update).
//
// Not implemented: nested messages (§5.2.2.1), central key generation (§4.1.6), raVerified
// POP from RAs (refused with badPOP until RAs are authorized: [Service.raVerified]), and the
// RA forwarding role (§5).
package cmpserver

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"log/slog"
	"sync"
	"time"

	"coapca/authority"
	"coapca/cmp"
	"coapca/errs"
)

// Authority is what the CMP service needs from the CA; *authority.Authority implements it.
type Authority interface {
	Issue(ctx context.Context, r authority.CertRequest) (*authority.Issued, error)
	Profile(label string) (*authority.Profile, error)
	CACerts(label string) []*x509.Certificate
	Root() *x509.Certificate
	MACSecret(ref string) ([]byte, error)
	VerifyClient(rawCerts [][]byte) ([]*x509.Certificate, error)
	Revoke(ctx context.Context, serial string, reason int) error
	RevokeAs(ctx context.Context, req authority.Requester, serial string, reason int) error
	CRL(ctx context.Context) ([]byte, error)
	Certificate(ctx context.Context, serial string) (*authority.CertRecord, error)
	PendingRequest(ctx context.Context, id string) (*authority.PendingRecord, error)
}

// ConfirmStore keeps the certificates that wait for certConf (*authority.Authority implements
// it), so that a certificate never confirmed is revoked also when the server restarted in
// between. DeleteUnconfirmed fails with an error of kind errs.NotFound when serial has no entry.
type ConfirmStore interface {
	AddUnconfirmed(ctx context.Context, u authority.Unconfirmed) error
	DeleteUnconfirmed(ctx context.Context, serial string) error
	DueUnconfirmed(ctx context.Context, now time.Time, limit int) ([]authority.Unconfirmed, error)
}

// TxnStore keeps the open transactions where every server instance sharing the store finds
// them (*authority.Authority implements it): the pollReq and certConf of a transaction may reach
// another instance than its first message, or the same one after a restart.
// CMPTransaction and DeleteCMPTransaction fail with an error of kind errs.NotFound when there is
// no such transaction.
type TxnStore interface {
	PutCMPTransaction(ctx context.Context, t authority.CMPTransaction) error
	CMPTransaction(ctx context.Context, id []byte) (*authority.CMPTransaction, error)
	DeleteCMPTransaction(ctx context.Context, id []byte) error
	DeleteExpiredCMPTransactions(ctx context.Context, now time.Time) (int, error)
}

// DefaultMessageTimeTolerance is the default of Options.MessageTimeTolerance.
const DefaultMessageTimeTolerance = 5 * time.Minute

// Options configure the service.
type Options struct {
	// Signer, Cert and Chain are the CMP signer: it protects responses to signature-protected
	// requests (and errors, announcements). Chain follows Cert in extraCerts (RFC 9483 §3.3):
	// the issuing CA and the root.
	Signer crypto.Signer
	Cert   *x509.Certificate
	Chain  []*x509.Certificate
	// ConfirmWait is how long an issued certificate waits for certConf (RFC 9810 §5.1.1.2
	// confirmWaitTime) before it is revoked. Default 5 minutes.
	ConfirmWait time.Duration
	// NoImplicitConfirm refuses implicitConfirm requests: every certificate then needs certConf.
	NoImplicitConfirm bool
	// MaxTransactions caps the open transactions (default 10000); beyond it new ones get
	// systemUnavail.
	MaxTransactions int
	// MessageTimeTolerance is how far a request's messageTime may be from the server's clock
	// before it is refused with badTime (RFC 9483 §3.5: the recipient may check it; RFC 9810
	// §5.1.1). 0 = DefaultMessageTimeTolerance (5 minutes: constrained devices' clocks drift,
	// and a replayed message is also caught by its nonces); negative = not checked.
	MessageTimeTolerance time.Duration
	// MACLimits bound the PasswordBasedMac/PBMAC1 parameters a requester may choose (they are
	// checked before any key derivation). Zero value = cmp defaults.
	MACLimits cmp.MACLimits
	// Confirmations keeps the certificates waiting for certConf; nil keeps them in memory
	// only (then a restart forgets them: production wiring passes the authority).
	Confirmations ConfirmStore
	// Transactions keeps the open transactions; nil keeps them in this process only (then
	// another instance, or this one after a restart, does not know them: production wiring
	// passes the authority).
	Transactions TxnStore
	// Announce receives every announcement (RFC 9482 §2.6) as a signed PKIMessage, with the
	// profile label it concerns ("" = all). nil = no announcements.
	Announce func(der []byte, body cmp.BodyType, label string)
	// Observe is called after every request (metrics): the request's body type, the
	// transport and the result ("ok", "waiting", "rejected", "error").
	Observe func(bodyType, transport, result string, d time.Duration)
	Logger  *slog.Logger
	Now     func() time.Time
}

// Request is one CMP request as a binding received it.
type Request struct {
	Body      []byte // DER PKIMessage
	Label     string // from /p/<label>; "" = none (certProfile in generalInfo may choose one)
	Operation string // normalized operation label from the path (Op*), "" = none
	Transport authority.Transport
	Addr      string
}

// Operation labels (RFC 9483 §6.1 for HTTP, §6.2 for CoAP), normalized to the body they
// start.
const (
	OpIR          = "ir"
	OpCR          = "cr"
	OpKUR         = "kur"
	OpP10CR       = "p10cr"
	OpRR          = "rr"
	OpGenCACerts  = "getcacerts"
	OpGenRoot     = "getrootupdate"
	OpGenTemplate = "getcertreqtemplate"
	OpGenCRLs     = "getcrls"
)

// HTTPOperation maps an HTTP path segment of RFC 9483 §6.1 to its operation.
func HTTPOperation(segment string) (string, bool) {
	op, ok := httpOperations[segment]
	return op, ok
}

// CoAPOperation maps a CoAP path segment of RFC 9483 §6.2 to its operation.
func CoAPOperation(segment string) (string, bool) {
	op, ok := coapOperations[segment]
	return op, ok
}

var httpOperations = map[string]string{
	"initialization": OpIR, "certification": OpCR, "keyupdate": OpKUR, "pkcs10": OpP10CR,
	"revocation": OpRR, "getcacerts": OpGenCACerts, "getrootupdate": OpGenRoot,
	"getcertreqtemplate": OpGenTemplate, "getcrls": OpGenCRLs,
}

var coapOperations = map[string]string{
	"ir": OpIR, "cr": OpCR, "kur": OpKUR, "p10": OpP10CR, "rr": OpRR, "crts": OpGenCACerts,
	"rcu": OpGenRoot, "att": OpGenTemplate, "crls": OpGenCRLs,
}

// Response is the service's answer.
type Response struct {
	Body     []byte // DER PKIMessage (always set)
	BodyType string // of the request ("" when it did not parse)
	Result   string // "ok", "waiting", "rejected", "error"
}

// Service is the CMP CA/RA. It is safe for concurrent use.
type Service struct {
	auth Authority
	opts Options
	log  *slog.Logger
	now  func() time.Time
	sign *cmp.SignatureProtection
	name cmp.GeneralName

	mu        sync.Mutex
	txns      map[string]*txn
	lastSweep time.Time
	sweeping  bool            // a sweep of the confirmation store is running
	announced map[string]bool // revoked serials already announced
}

// txn is an open transaction (RFC 9810 §5.1.1 transactionID): an enrollment waiting for
// approval (pollReq) or for certConf.
type txn struct {
	id        string
	who       string // identity key: "ref:<ref>" or "cert:<sha256>"
	bodyType  cmp.BodyType
	label     string
	certReqID int64
	creq      authority.CertRequest
	pendingID string
	issued    *authority.Issued
	// lastNonce is the senderNonce of our last answer: the next request's recipNonce
	// (RFC 9483 §3.5).
	lastNonce []byte
	expires   time.Time
	busy      bool
	stored    bool // in the transaction store (Options.Transactions)
}

// New returns the CMP service of auth.
func New(auth Authority, opts Options) (*Service, error) {
	if opts.Signer == nil || opts.Cert == nil {
		return nil, errors.New("cmpserver: the CMP signer (Signer, Cert) is required")
	}
	if opts.Transactions != nil && opts.Confirmations == nil {
		return nil, errors.New("cmpserver: a transaction store (Transactions) needs the confirmation store (Confirmations)")
	}
	if opts.ConfirmWait <= 0 {
		opts.ConfirmWait = 5 * time.Minute
	}
	if opts.MaxTransactions <= 0 {
		opts.MaxTransactions = 10000
	}
	s := &Service{auth: auth, opts: opts, log: opts.Logger, now: opts.Now, txns: map[string]*txn{}, announced: map[string]bool{},
		sign: &cmp.SignatureProtection{Signer: opts.Signer, Cert: opts.Cert, Chain: opts.Chain},
		name: cmp.DirectoryName(opts.Cert.RawSubject)}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s, nil
}

// session is the state of one request while it is handled.
type session struct {
	r        *Request
	req      *cmp.Message
	label    string
	who      string
	chain    []*x509.Certificate // verified protection chain (signature)
	ref      string              // MAC reference
	secret   []byte              // the shared secret of ref (set before the MAC is verified)
	prot     cmp.Protector       // for the answer
	extra    []*x509.Certificate
	implicit bool // grant implicitConfirm in the answer
	cwt      time.Time
}

// Handle answers one request. It never fails: every problem becomes a CMP error message.
func (s *Service) Handle(ctx context.Context, r *Request) *Response {
	start := time.Now()
	rsp := s.handle(ctx, r)
	if s.opts.Observe != nil {
		s.opts.Observe(rsp.BodyType, r.Transport.String(), rsp.Result, time.Since(start))
	}
	return rsp
}

func (s *Service) handle(ctx context.Context, r *Request) *Response {
	s.sweep(ctx)
	req, err := cmp.Parse(r.Body)
	if err != nil {
		s.log.Info("cmp: unparsable request", "addr", r.Addr, "transport", r.Transport, "err", err)
		rsp := s.errorAnswer(&session{r: r, prot: s.sign}, nil, err)
		rsp.BodyType = "invalid"
		return rsp
	}
	ses := &session{r: r, req: req, prot: s.sign}
	bt := req.Body.Type().String()
	body, err := s.dispatch(ctx, ses)
	if err != nil {
		level := slog.LevelInfo
		if errs.KindOf(err) == errs.Internal {
			level = slog.LevelError // the peer gets only "internal error": the detail is here
		}
		s.log.Log(ctx, level, "cmp: request failed", "body", bt, "addr", r.Addr, "transport", r.Transport,
			"transaction", hex.EncodeToString(req.Header.TransactionID), "err", err)
		rsp := s.errorAnswer(ses, req, err)
		rsp.BodyType = bt
		return rsp
	}
	der, nonce, err := s.marshal(ses, body)
	if err != nil {
		s.log.Error("cmp: cannot encode the answer", "body", bt, "err", err)
		rsp := s.errorAnswer(ses, req, errs.Wrap(errs.Internal, err, "cannot encode the answer"))
		rsp.BodyType = bt
		return rsp
	}
	s.noteNonce(ctx, req.Header.TransactionID, nonce)
	return &Response{Body: der, BodyType: bt, Result: result(body)}
}

func result(b cmp.Body) string {
	switch b := b.(type) {
	case *cmp.PollRepContent:
		return "waiting"
	case *cmp.CertRepMessage:
		for _, r := range b.Responses {
			switch r.Status.Status {
			case cmp.StatusWaiting:
				return "waiting"
			case cmp.StatusRejection:
				return "rejected"
			}
		}
	case *cmp.RevRepContent:
		for _, st := range b.Status {
			if st.Status == cmp.StatusRejection {
				return "rejected"
			}
		}
	}
	return "ok"
}

// errorAnswer builds an error message (RFC 9810 §5.3.21, RFC 9483 §3.6.4). It is protected
// like the request when the request's protection was verified (MAC), else signed.
func (s *Service) errorAnswer(ses *session, req *cmp.Message, err error) *Response {
	var hdr cmp.Header
	if req != nil {
		hdr, _ = cmp.NewResponseHeader(&req.Header, s.name)
	} else {
		nonce, _ := cmp.NewNonce()
		hdr = cmp.Header{PVNO: cmp.PVNO2000, Sender: s.name, Recipient: cmp.NullDN(), MessageTime: s.now(), SenderNonce: nonce}
	}
	hdr.Sender = s.name
	body := errorBody(err)
	m := &cmp.Message{Header: hdr, Body: body}
	der, mErr := m.Marshal(ses.prot)
	if mErr != nil {
		// The MAC parameters of the request may be unusable for the answer: sign instead.
		m = &cmp.Message{Header: hdr, Body: body}
		der, mErr = m.Marshal(s.sign)
	}
	if mErr != nil {
		s.log.Error("cmp: cannot encode an error message", "err", mErr)
	}
	if req != nil {
		// RFC 9483 §3.6.4: an error ends the transaction; an unconfirmed certificate is not
		// accepted.
		s.dropTxn(context.Background(), req.Header.TransactionID, ses.who, true)
	}
	return &Response{Body: der, Result: "error"}
}

func (s *Service) marshal(ses *session, body cmp.Body) ([]byte, []byte, error) {
	hdr, err := cmp.NewResponseHeader(&ses.req.Header, s.name)
	if err != nil {
		return nil, nil, err
	}
	if ses.implicit {
		hdr.SetImplicitConfirm()
	}
	if !ses.cwt.IsZero() {
		hdr.SetConfirmWaitTime(ses.cwt)
	}
	m := &cmp.Message{Header: hdr, Body: body, ExtraCerts: ses.extra}
	der, err := m.Marshal(ses.prot)
	return der, hdr.SenderNonce, err
}

// dispatch authenticates the request and runs its body.
func (s *Service) dispatch(ctx context.Context, ses *session) (cmp.Body, error) {
	req := ses.req
	h := &req.Header
	// The cheap checks come first, so that a request that will be refused anyway costs no key
	// derivation or signature verification.
	if err := cmp.CheckRequest(h); err != nil {
		return nil, err
	}
	if tol := s.messageTimeTolerance(); tol >= 0 {
		// RFC 9483 §3.5, RFC 9810 §5.1.1: messageTime too far from the server's clock → badTime.
		if err := cmp.CheckMessageTime(h, s.now(), tol); err != nil {
			return nil, err
		}
	}
	t := req.Body.Type()
	if err := checkOperation(ses.r.Operation, t); err != nil {
		return nil, err
	}
	if err := s.precheckProtection(ses); err != nil {
		return nil, err
	}
	if err := s.precheckTransaction(ctx, ses); err != nil {
		return nil, err
	}
	if err := s.authenticate(ses); err != nil {
		return nil, err
	}
	if err := s.chooseLabel(ses); err != nil {
		return nil, err
	}
	switch b := req.Body.(type) {
	case *cmp.CertReqMessages:
		return s.enroll(ctx, ses, b)
	case *cmp.P10CR:
		return s.p10cr(ctx, ses, b)
	case *cmp.CertConfirmContent:
		return s.certConf(ctx, ses, b)
	case *cmp.PollReqContent:
		return s.pollReq(ctx, ses, b)
	case *cmp.RevReqContent:
		return s.revoke(ctx, ses, b)
	case *cmp.GenContent:
		if b.BodyType == cmp.TypeGenM {
			return s.genm(ctx, ses, b)
		}
	case *cmp.ErrorContent:
		// RFC 9483 §3.6.4: an error from the EE ends the transaction; acknowledge it.
		s.dropTxn(ctx, h.TransactionID, ses.who, true)
		return &cmp.PKIConf{}, nil
	}
	return nil, cmp.WithFailInfo(errs.New(errs.BadRequest, "%s is not a request this CA answers", t), cmp.FailBadRequest)
}

// checkOperation enforces an operation label of the path (RFC 9483 §6): it names the first
// message of the transaction; follow-up messages may use it too.
func checkOperation(op string, t cmp.BodyType) error {
	if op == "" {
		return nil
	}
	switch t {
	case cmp.TypeCertConf, cmp.TypePollReq, cmp.TypeError:
		return nil
	}
	want := map[string]cmp.BodyType{OpIR: cmp.TypeIR, OpCR: cmp.TypeCR, OpKUR: cmp.TypeKUR,
		OpP10CR: cmp.TypeP10CR, OpRR: cmp.TypeRR}[op]
	switch op {
	case OpGenCACerts, OpGenRoot, OpGenTemplate, OpGenCRLs:
		want = cmp.TypeGenM
	}
	if t != want {
		return cmp.WithFailInfo(errs.New(errs.BadRequest, "%s sent to the %s operation path", t, op), cmp.FailBadRequest)
	}
	return nil
}

// chooseLabel picks the profile: /p/<label> or certProfile in generalInfo
// (RFC 9483 §3.1, RFC 9810 §5.1.1.4).
func (s *Service) chooseLabel(ses *session) error {
	label := ses.r.Label
	if cp := ses.req.Header.CertProfile(); len(cp) > 0 {
		switch {
		case label == "":
			label = cp[0]
		case label != cp[0]:
			return cmp.WithFailInfo(errs.New(errs.BadRequest, "certProfile %q contradicts the path label %q", cp[0], label), cmp.FailBadCertTemplate)
		}
	}
	if _, err := s.auth.Profile(label); err != nil {
		return err
	}
	ses.label = label
	return nil
}

func (s *Service) messageTimeTolerance() time.Duration {
	if s.opts.MessageTimeTolerance == 0 {
		return DefaultMessageTimeTolerance
	}
	return s.opts.MessageTimeTolerance
}

// precheckProtection does the cheap part of authentication: the protection algorithm is one
// this server accepts, MAC parameters are within the limits, and the senderKID of a
// MAC-protected request names a known secret.
func (s *Service) precheckProtection(ses *session) error {
	m := ses.req
	switch m.ProtectionKind() {
	case cmp.ProtectionPBM, cmp.ProtectionPBMAC1:
		ref := string(m.Header.SenderKID)
		if ref == "" {
			return cmp.WithFailInfo(errs.New(errs.Unauthorized, "MAC protection without senderKID"), cmp.FailBadMessageCheck)
		}
		secret, err := s.auth.MACSecret(ref)
		if err != nil {
			return cmp.WithFailInfo(err, cmp.FailSignerNotTrusted)
		}
		if err := m.CheckMACParams(s.opts.MACLimits); err != nil {
			return err
		}
		ses.secret = secret
	case cmp.ProtectionUnknown:
		return cmp.WithFailInfo(errs.New(errs.Unauthorized, "unsupported protection algorithm %v", m.Header.ProtectionAlg.Algorithm), cmp.FailBadAlg)
	}
	return nil
}

// precheckTransaction checks the transaction state before the protection is verified: a
// first message must bring an unused transactionID (RFC 9810 §5.1.1), a certConf or pollReq
// must continue an open, unexpired transaction with recipNonce = our last senderNonce
// (RFC 9483 §3.5). followUp and newTxn check again, with the requester's identity.
func (s *Service) precheckTransaction(ctx context.Context, ses *session) error {
	h := &ses.req.Header
	if _, err := s.loadTxn(ctx, string(h.TransactionID)); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	x, ok := s.txns[string(h.TransactionID)]
	switch ses.req.Body.Type() {
	case cmp.TypeIR, cmp.TypeCR, cmp.TypeKUR, cmp.TypeP10CR:
		if ok {
			return cmp.WithFailInfo(errs.New(errs.Conflict, "transactionID is already in use"), cmp.FailTransactionIDInUse)
		}
	case cmp.TypeCertConf, cmp.TypePollReq:
		if !ok || s.now().After(x.expires) {
			return cmp.WithFailInfo(errs.New(errs.BadRequest, "no open transaction with this transactionID"), cmp.FailBadRequest)
		}
		if len(x.lastNonce) > 0 && string(h.RecipNonce) != string(x.lastNonce) {
			return cmp.WithFailInfo(errs.New(errs.BadRequest, "recipNonce does not match the last senderNonce of this transaction"), cmp.FailBadRecipientNonce)
		}
	}
	return nil
}

// authenticate checks the protection (RFC 9483 §3.2) and decides how to protect the answer.
func (s *Service) authenticate(ses *session) error {
	m := ses.req
	switch k := m.ProtectionKind(); k {
	case cmp.ProtectionPBM, cmp.ProtectionPBMAC1:
		ref, secret := string(m.Header.SenderKID), ses.secret
		if secret == nil {
			return cmp.WithFailInfo(errs.New(errs.Unauthorized, "MAC protection not prechecked"), cmp.FailBadMessageCheck)
		}
		if err := m.VerifyMACWith(secret, s.opts.MACLimits); err != nil {
			return err
		}
		ses.ref, ses.who = ref, "ref:"+ref
		// RFC 9483 §3.2: the answer is protected with the same shared secret.
		ses.prot = m.MACProtectionLike(secret)
	case cmp.ProtectionSignature:
		cert := m.ProtectionCert()
		if err := m.VerifySignature(cert); err != nil {
			return err
		}
		// RFC 9483 §3.1: with signature protection, sender is the protection certificate's
		// subject (a NULL-DN sender is tolerated).
		if d, ok := m.Header.Sender.Directory(); ok && len(d) > 2 && !bytes.Equal(d, cert.RawSubject) &&
			m.Header.Sender.String() != cert.Subject.String() {
			return cmp.WithFailInfo(errs.New(errs.Unauthorized, "sender %q is not the subject of the protection certificate %q",
				m.Header.Sender.String(), cert.Subject.String()), cmp.FailBadMessageCheck)
		}
		raw := make([][]byte, 0, len(m.ExtraCerts))
		for _, c := range m.ExtraCerts {
			raw = append(raw, c.Raw)
		}
		chain, err := s.auth.VerifyClient(raw)
		if err != nil {
			return cmp.WithFailInfo(errs.Wrap(errs.KindOf(err), err, "protection certificate %s: %s", cert.Subject, errs.Message(err)), cmp.FailSignerNotTrusted)
		}
		sum := sha256.Sum256(cert.Raw)
		ses.chain, ses.who = chain, "cert:"+hex.EncodeToString(sum[:])
	case cmp.ProtectionNone:
		// RFC 9483 §4.3: only support messages may come unprotected; they carry public data.
		if m.Body.Type() != cmp.TypeGenM {
			return cmp.WithFailInfo(errs.New(errs.Unauthorized, "%s must be protected", m.Body.Type()), cmp.FailBadMessageCheck)
		}
		ses.who = "anonymous"
	default:
		return cmp.WithFailInfo(errs.New(errs.Unauthorized, "unsupported protection algorithm %v", m.Header.ProtectionAlg.Algorithm), cmp.FailBadAlg)
	}
	return nil
}

// newTxn registers a new transaction (RFC 9810 §5.1.1: a transactionID in use is refused,
// also when another instance holds it).
func (s *Service) newTxn(ctx context.Context, ses *session, t cmp.BodyType) (*txn, error) {
	id := string(ses.req.Header.TransactionID)
	if _, err := s.loadTxn(ctx, id); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.txns[id]; ok {
		return nil, cmp.WithFailInfo(errs.New(errs.Conflict, "transactionID is already in use"), cmp.FailTransactionIDInUse)
	}
	if len(s.txns) >= s.opts.MaxTransactions {
		return nil, cmp.WithFailInfo(errs.New(errs.Unavailable, "too many open transactions"), cmp.FailSystemUnavail)
	}
	x := &txn{id: id, who: ses.who, bodyType: t, label: ses.label, busy: true,
		expires: s.now().Add(s.opts.ConfirmWait)}
	s.txns[id] = x
	return x, nil
}

// followUp finds the open transaction of a certConf or pollReq and checks that the same
// requester sends it with recipNonce = our last senderNonce (RFC 9483 §3.5).
func (s *Service) followUp(ctx context.Context, ses *session) (*txn, error) {
	h := &ses.req.Header
	if _, err := s.loadTxn(ctx, string(h.TransactionID)); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	x, ok := s.txns[string(h.TransactionID)]
	if !ok || s.now().After(x.expires) {
		// An expired transaction is over: the sweep revokes its unconfirmed certificate.
		return nil, cmp.WithFailInfo(errs.New(errs.BadRequest, "no open transaction with this transactionID"), cmp.FailBadRequest)
	}
	if x.who != ses.who {
		return nil, cmp.WithFailInfo(errs.New(errs.Forbidden, "the transaction belongs to another requester"), cmp.FailNotAuthorized)
	}
	if x.busy {
		return nil, cmp.WithFailInfo(errs.New(errs.Conflict, "the transaction is busy"), cmp.FailTransactionIDInUse)
	}
	if len(x.lastNonce) > 0 && string(h.RecipNonce) != string(x.lastNonce) {
		return nil, cmp.WithFailInfo(errs.New(errs.BadRequest, "recipNonce does not match the last senderNonce of this transaction"), cmp.FailBadRecipientNonce)
	}
	x.busy = true
	return x, nil
}

// release ends the handling of x: it stays open (keep) or is removed. A kept transaction
// reaches the transaction store with the nonce of the answer (noteNonce).
func (s *Service) release(ctx context.Context, x *txn, keep bool) {
	s.mu.Lock()
	x.busy = false
	if !keep {
		delete(s.txns, x.id)
	}
	stored := x.stored
	s.mu.Unlock()
	if !keep && stored {
		s.forgetTxn(ctx, x.id)
	}
}

// noteNonce records the senderNonce of our answer in transaction id (the next message's
// recipNonce, RFC 9483 §3.5) and saves the open transaction to the transaction store.
func (s *Service) noteNonce(ctx context.Context, id, nonce []byte) {
	s.mu.Lock()
	x, ok := s.txns[string(id)]
	if !ok || x.busy {
		s.mu.Unlock()
		return
	}
	x.lastNonce = nonce
	st, err := x.encode()
	exp := x.expires
	s.mu.Unlock()
	if s.opts.Transactions == nil {
		return
	}
	if err == nil {
		err = s.opts.Transactions.PutCMPTransaction(ctx, authority.CMPTransaction{ID: id, State: st, Expires: exp})
	}
	if err == nil {
		s.mu.Lock()
		x.stored = true
		s.mu.Unlock()
	}
	if err != nil {
		// The transaction stays open here; another instance will not know it.
		s.log.Error("cmp: cannot save the open transaction", "transaction", hex.EncodeToString(id), "err", err)
	}
}

// dropTxn removes the transaction id of requester who; with revoke, a certificate issued in
// it and not yet confirmed is revoked.
func (s *Service) dropTxn(ctx context.Context, id []byte, who string, revoke bool) {
	if _, err := s.loadTxn(ctx, string(id)); err != nil {
		s.log.Error("cmp: cannot end the transaction", "transaction", hex.EncodeToString(id), "err", err)
		return
	}
	s.mu.Lock()
	x, ok := s.txns[string(id)]
	if !ok || x.who != who || x.busy {
		s.mu.Unlock()
		return
	}
	delete(s.txns, x.id)
	stored := x.stored
	s.mu.Unlock()
	if stored {
		s.forgetTxn(ctx, x.id)
	}
	if revoke && x.issued != nil {
		s.revokeUnconfirmed(ctx, x, "the requester ended the transaction with an error")
	}
}

// sweep ends expired transactions; certificates never confirmed are revoked
// (RFC 9810 §5.1.1.2: after confirmWaitTime the CA may revoke).
func (s *Service) sweep(ctx context.Context) { s.sweepAt(ctx, false) }

func (s *Service) sweepAt(ctx context.Context, force bool) {
	now := s.now()
	var expired []*txn
	s.mu.Lock()
	// Scanning the table once a second is enough for expiry measured in minutes.
	if !force && now.Sub(s.lastSweep) < time.Second {
		s.mu.Unlock()
		return
	}
	s.lastSweep = now
	for id, x := range s.txns {
		if !x.busy && now.After(x.expires) {
			delete(s.txns, id)
			expired = append(expired, x)
		}
	}
	s.mu.Unlock()
	for _, x := range expired {
		// With a transaction store, another instance may have continued the transaction and
		// confirmed the certificate: this copy is stale, and the confirmation store decides
		// (sweepStore below).
		if x.issued != nil && s.opts.Transactions == nil {
			s.revokeUnconfirmed(ctx, x, "no certConf within confirmWaitTime")
		}
	}
	if _, err := s.sweepStore(ctx, now); err != nil {
		s.log.Error("cmp: cannot revoke unconfirmed certificates from the store", "err", err)
	}
	if s.opts.Transactions != nil {
		// Their unconfirmed certificates are the confirmation store's (sweepStore).
		if _, err := s.opts.Transactions.DeleteExpiredCMPTransactions(ctx, now); err != nil {
			s.log.Error("cmp: cannot remove expired transactions from the store", "err", err)
		}
	}
}

// sweepBatch bounds the due certificates one sweep of the store revokes.
const sweepBatch = 100

// sweepStore revokes the certificates of the confirmation store whose deadline has passed and
// that no open transaction of this process holds (those are the in-memory sweep's): they were
// issued before a restart, or by another server instance that stopped (RFC 9810 §5.1.1.2).
// It returns how many it revoked.
func (s *Service) sweepStore(ctx context.Context, now time.Time) (int, error) {
	if s.opts.Confirmations == nil {
		return 0, nil
	}
	s.mu.Lock()
	if s.sweeping {
		s.mu.Unlock()
		return 0, nil
	}
	s.sweeping = true
	held := map[string]bool{}
	for _, x := range s.txns {
		if x.issued != nil {
			held[x.issued.Serial] = true
		}
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.sweeping = false
		s.mu.Unlock()
	}()
	due, err := s.opts.Confirmations.DueUnconfirmed(ctx, now, sweepBatch)
	if err != nil {
		return 0, errs.Wrap(errs.Internal, err, "unconfirmed certificates")
	}
	n := 0
	for _, u := range due {
		if held[u.Serial] {
			continue
		}
		err := s.auth.Revoke(ctx, u.Serial, cessationOfOperation)
		switch k := errs.KindOf(err); {
		case err == nil:
			n++
			s.log.Info("cmp: revoked an unconfirmed certificate", "serial", u.Serial,
				"why", "no certConf before the deadline (found in the store)", "deadline", u.Deadline)
		case k == errs.Conflict || k == errs.NotFound:
			// Already revoked (e.g. by another instance) or gone: only the entry is left.
		default:
			return n, err
		}
		if err := s.opts.Confirmations.DeleteUnconfirmed(ctx, u.Serial); err != nil && errs.KindOf(err) != errs.NotFound {
			return n, errs.Wrap(errs.Internal, err, "unconfirmed certificate %s", u.Serial)
		}
	}
	return n, nil
}

// cessationOfOperation is the CRL reason for certificates that were never accepted.
const cessationOfOperation = authority.ReasonCessationOfOperation

func (s *Service) revokeUnconfirmed(ctx context.Context, x *txn, why string) {
	err := s.auth.Revoke(ctx, x.issued.Serial, cessationOfOperation)
	s.log.Info("cmp: revoked an unconfirmed certificate", "serial", x.issued.Serial, "why", why, "err", err)
	if err != nil && errs.KindOf(err) != errs.Conflict {
		return // the entry stays: a later sweep tries again
	}
	s.forgetUnconfirmed(ctx, x.issued.Serial)
}

// rememberUnconfirmed records that serial waits for certConf until deadline.
func (s *Service) rememberUnconfirmed(ctx context.Context, x *txn) error {
	if s.opts.Confirmations == nil {
		return nil
	}
	err := s.opts.Confirmations.AddUnconfirmed(ctx, authority.Unconfirmed{Serial: x.issued.Serial,
		TransactionID: []byte(x.id), Deadline: x.expires, CreatedAt: s.now()})
	if err != nil {
		return errs.Wrap(errs.Internal, err, "cannot record the confirmation deadline")
	}
	return nil
}

// forgetUnconfirmed removes serial from the confirmation store (confirmed or revoked).
func (s *Service) forgetUnconfirmed(ctx context.Context, serial string) error {
	if s.opts.Confirmations == nil {
		return nil
	}
	if err := s.opts.Confirmations.DeleteUnconfirmed(ctx, serial); err != nil && errs.KindOf(err) != errs.NotFound {
		s.log.Error("cmp: cannot update the confirmation store", "serial", serial, "err", err)
		return errs.Wrap(errs.Internal, err, "cannot record the confirmation")
	}
	return nil
}

// Sweep ends expired transactions now and revokes the certificates whose confirmation
// deadline passed, including those found in the store after a restart (the service also
// sweeps on requests, at most once a second; a server calls Sweep at start and periodically).
func (s *Service) Sweep(ctx context.Context) { s.sweepAt(ctx, true) }

// OpenTransactions returns the number of open transactions.
func (s *Service) OpenTransactions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.txns)
}
