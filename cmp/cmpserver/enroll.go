package cmpserver

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"net"
	"net/url"
	"slices"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"coapca/authority"
	"coapca/cmp"
	"coapca/errs"
)

var oidSAN = asn1.ObjectIdentifier{2, 5, 29, 17}

func repType(t cmp.BodyType) cmp.BodyType {
	switch t {
	case cmp.TypeIR:
		return cmp.TypeIP
	case cmp.TypeKUR:
		return cmp.TypeKUP
	}
	return cmp.TypeCP // cr, p10cr
}

// enroll handles ir, cr and kur (RFC 9483 §4.1.1-4.1.3, §4.1.5).
func (s *Service) enroll(ctx context.Context, ses *session, b *cmp.CertReqMessages) (cmp.Body, error) {
	// RFC 9483 §4.1.1: exactly one CertReqMsg.
	if len(b.Requests) != 1 {
		return nil, cmp.WithFailInfo(errs.New(errs.BadRequest, "exactly one certificate request per message is supported, got %d", len(b.Requests)), cmp.FailBadRequest)
	}
	crm := b.Requests[0]
	op := authority.OpEnroll
	var old *x509.Certificate
	if b.BodyType == cmp.TypeKUR {
		op = authority.OpReenroll
		var err error
		if old, err = s.oldCert(ctx, ses, &crm); err != nil {
			return nil, err
		}
	}
	spki, err := s.provenKey(ses, &crm)
	if err != nil {
		return nil, err
	}
	csr, err := templateCSR(&crm.Template, spki, old)
	if err != nil {
		return nil, err
	}
	x, err := s.newTxn(ctx, ses, b.BodyType)
	if err != nil {
		return nil, err
	}
	x.certReqID = crm.CertReqID
	reqKey := crm.RawCertReq
	if crm.Template.PublicKey == nil {
		// The key travelled in poposkInput: it is part of what identifies the request.
		reqKey = append(slices.Clone(crm.RawCertReq), spki...)
	}
	x.creq = authority.CertRequest{Op: op, Label: ses.label, CSR: csr, PublicKey: csr.PublicKey,
		RequestKey: reqKey, Requester: s.requester(ses), RAVerified: crm.POPKind == cmp.POPRAVerified}
	return s.issue(ctx, ses, x)
}

// p10cr handles a PKCS#10 request (RFC 9483 §4.1.4).
func (s *Service) p10cr(ctx context.Context, ses *session, b *cmp.P10CR) (cmp.Body, error) {
	if err := b.CSR.CheckSignature(); err != nil {
		return nil, cmp.WithFailInfo(errs.Wrap(errs.BadRequest, err, "the PKCS#10 signature does not verify"), cmp.FailBadPOP)
	}
	x, err := s.newTxn(ctx, ses, cmp.TypeP10CR)
	if err != nil {
		return nil, err
	}
	// RFC 9810 §5.3.4: the response to a p10cr uses certReqId -1.
	x.certReqID = -1
	x.creq = authority.CertRequest{Op: authority.OpEnroll, Label: ses.label, CSR: b.CSR, Requester: s.requester(ses)}
	return s.issue(ctx, ses, x)
}

// provenKey checks the proof of possession of crm (RFC 4211 §4, RFC 9483 §4.1.1) and returns
// the DER SubjectPublicKeyInfo it proved: the only key a certificate may be issued for.
func (s *Service) provenKey(ses *session, crm *cmp.CertReqMsg) ([]byte, error) {
	if crm.POPKind == cmp.POPRAVerified {
		// RFC 4211 §4.3, RFC 9483 §5.2: whether the requester is an RA that may say so is the
		// authority's decision (CertRequest.RAVerified).
		if crm.Template.PublicKey == nil {
			return nil, cmp.WithFailInfo(errs.New(errs.BadRequest, "raVerified POP without a publicKey in the template"), cmp.FailBadCertTemplate)
		}
		return crm.Template.PublicKey, nil
	}
	a := cmp.POPAuth{Secret: ses.secret, Limits: s.opts.MACLimits}
	if len(ses.chain) > 0 {
		a.Sender = ses.chain[0].RawSubject
	}
	if ses.ref == "" {
		a.Secret = nil // only a verified MAC protection makes the secret the requester's
	}
	return crm.VerifyPOP(a)
}

func (s *Service) requester(ses *session) authority.Requester {
	return authority.Requester{Chain: ses.chain, SecretRef: ses.ref, Transport: ses.r.Transport,
		Protocol: authority.ProtocolCMP, Addr: ses.r.Addr}
}

// oldCert checks a kur (RFC 9483 §4.1.3): signature-protected by the certificate to be
// updated, which this CA issued, named by the oldCertID control when present.
func (s *Service) oldCert(ctx context.Context, ses *session, crm *cmp.CertReqMsg) (*x509.Certificate, error) {
	if len(ses.chain) == 0 {
		return nil, cmp.WithFailInfo(errs.New(errs.Forbidden, "kur must be signed with the certificate to be updated"), cmp.FailNotAuthorized)
	}
	old := ses.chain[0]
	if id, ok := crm.OldCertID(); ok {
		issuer, isDN := id.Issuer.Directory()
		if id.Serial.Cmp(old.SerialNumber) != 0 || (isDN && !bytes.Equal(issuer, old.RawIssuer)) {
			return nil, cmp.WithFailInfo(errs.New(errs.BadRequest, "oldCertID does not name the protection certificate"), cmp.FailBadCertID)
		}
	}
	rec, err := s.auth.Certificate(ctx, old.SerialNumber.Text(16))
	if err != nil || !bytes.Equal(rec.DER, old.Raw) {
		return nil, cmp.WithFailInfo(errs.New(errs.Forbidden, "kur: the certificate to update was not issued by this CA"), cmp.FailNotAuthorized)
	}
	if rec.Revoked() {
		return nil, cmp.WithFailInfo(errs.New(errs.Forbidden, "kur: the certificate to update is revoked"), cmp.FailCertRevoked)
	}
	return old, nil
}

// templateCSR turns a CertTemplate into the CertificateRequest the authority takes (subject,
// public key and SANs). The public key is spki, the key whose possession was proven (the
// template's, or poposkInput's when the template has none). For kur, an absent subject or SAN
// means "as in the old certificate".
func templateCSR(t *cmp.CertTemplate, spki []byte, old *x509.Certificate) (*x509.CertificateRequest, error) {
	pub, err := x509.ParsePKIXPublicKey(spki)
	if err != nil {
		return nil, cmp.WithFailInfo(errs.Wrap(errs.BadRequest, err, "the proven public key is not usable"), cmp.FailBadCertTemplate)
	}
	csr := &x509.CertificateRequest{PublicKey: pub, RawSubject: t.Subject}
	if t.Subject != nil {
		if csr.Subject, err = t.SubjectName(); err != nil {
			return nil, cmp.WithFailInfo(errs.Wrap(errs.BadRequest, err, "bad subject in the template"), cmp.FailBadCertTemplate)
		}
	}
	hasSAN := false
	for _, e := range t.Extensions {
		if e.Id.Equal(oidSAN) {
			hasSAN = true
			if err := parseSAN(e.Value, csr); err != nil {
				return nil, cmp.WithFailInfo(errs.Wrap(errs.BadRequest, err, "bad subjectAltName in the template"), cmp.FailBadCertTemplate)
			}
		}
	}
	if old != nil {
		if t.Subject == nil {
			csr.RawSubject, csr.Subject = old.RawSubject, old.Subject
		}
		if !hasSAN {
			csr.DNSNames, csr.IPAddresses = slices.Clone(old.DNSNames), slices.Clone(old.IPAddresses)
			csr.EmailAddresses, csr.URIs = slices.Clone(old.EmailAddresses), slices.Clone(old.URIs)
		}
	}
	return csr, nil
}

// parseSAN reads the GeneralNames of a subjectAltName extension (RFC 5280 §4.2.1.6): DNS
// names, email addresses, URIs and IP addresses; other name forms are refused.
func parseSAN(der []byte, csr *x509.CertificateRequest) error {
	s := cryptobyte.String(der)
	var seq cryptobyte.String
	if !s.ReadASN1(&seq, cbasn1.SEQUENCE) || !s.Empty() {
		return errors.New("not a SEQUENCE of GeneralName")
	}
	for !seq.Empty() {
		var v cryptobyte.String
		var tag cbasn1.Tag
		if !seq.ReadAnyASN1(&v, &tag) {
			return errors.New("bad GeneralName")
		}
		switch tag {
		case cbasn1.Tag(1).ContextSpecific():
			csr.EmailAddresses = append(csr.EmailAddresses, string(v))
		case cbasn1.Tag(2).ContextSpecific():
			csr.DNSNames = append(csr.DNSNames, string(v))
		case cbasn1.Tag(6).ContextSpecific():
			u, err := url.Parse(string(v))
			if err != nil {
				return err
			}
			csr.URIs = append(csr.URIs, u)
		case cbasn1.Tag(7).ContextSpecific():
			if len(v) != 4 && len(v) != 16 {
				return errors.New("bad iPAddress")
			}
			csr.IPAddresses = append(csr.IPAddresses, net.IP(slices.Clone([]byte(v))))
		default:
			return errors.New("unsupported GeneralName type in subjectAltName")
		}
	}
	return nil
}

// issue asks the authority for the certificate of x and builds the ip/cp/kup (or waiting).
func (s *Service) issue(ctx context.Context, ses *session, x *txn) (cmp.Body, error) {
	keep := false
	defer func() { s.release(ctx, x, keep) }()
	rep := &cmp.CertRepMessage{BodyType: repType(x.bodyType)}
	iss, err := s.auth.Issue(ctx, x.creq)
	if err != nil {
		if errors.Is(err, authority.ErrRAVerifiedNotRA) {
			err = cmp.WithFailInfo(err, cmp.FailBadPOP)
		}
		st := statusFromError(err)
		if e := errs.As(err); e != nil && e.Kind == errs.Pending {
			// RFC 9483 §4.4: status waiting; the EE polls with pollReq.
			x.pendingID = e.ID
			x.expires = s.now().Add(s.opts.ConfirmWait + e.RetryAfter)
			keep = true
			st.StatusString = append(st.StatusString, "check again after "+e.RetryAfter.String())
		}
		rep.Responses = []cmp.CertResponse{{CertReqID: x.certReqID, Status: st}}
		return rep, nil
	}
	keep, err = s.deliver(ctx, ses, x, iss, rep)
	if err != nil {
		return nil, err
	}
	return rep, nil
}

// deliver fills rep with the issued certificate and decides about confirmation; it returns
// whether the transaction stays open for certConf. A certificate that waits for certConf is
// recorded in the confirmation store with its deadline before it leaves the server; when that
// fails it is revoked and not delivered.
func (s *Service) deliver(ctx context.Context, ses *session, x *txn, iss *authority.Issued, rep *cmp.CertRepMessage) (bool, error) {
	x.issued = iss
	rep.Responses = []cmp.CertResponse{{CertReqID: x.certReqID, Status: cmp.StatusInfo{Status: cmp.StatusAccepted}, Cert: iss.Cert}}
	if x.bodyType == cmp.TypeIR && len(iss.Chain) > 0 {
		// RFC 9483 §4.1.1: caPubs, if used, holds only the root of the issued certificate.
		rep.CAPubs = []*x509.Certificate{iss.Chain[len(iss.Chain)-1]}
	}
	// RFC 9483 §4.1.1: extraCerts SHOULD hold the chain of the issued certificate.
	ses.extra = iss.Chain
	if ses.req.Header.ImplicitConfirm() && !s.opts.NoImplicitConfirm {
		// RFC 9810 §5.1.1.1: implicitConfirm granted: the certificate is accepted now.
		ses.implicit = true
		s.accepted(x)
		return false, nil
	}
	x.expires = s.now().Add(s.opts.ConfirmWait)
	if err := s.rememberUnconfirmed(ctx, x); err != nil {
		s.revokeUnconfirmed(ctx, x, "its confirmation deadline could not be recorded")
		return false, err
	}
	ses.cwt = x.expires
	return true, nil
}

// accepted is called once a certificate counts as accepted (certConf or implicit confirm).
func (s *Service) accepted(x *txn) {
	s.log.Info("cmp: certificate accepted", "serial", x.issued.Serial, "subject", x.issued.Cert.Subject.String(), "label", x.label)
	s.announce(&cmp.CertAnn{Cert: x.issued.Cert}, x.label)
}

// pollReq answers a poll for a waiting request (RFC 9483 §4.4): pollRep while the authority's
// request is pending, else the original response type with the certificate or the rejection.
func (s *Service) pollReq(ctx context.Context, ses *session, b *cmp.PollReqContent) (cmp.Body, error) {
	x, err := s.followUp(ctx, ses)
	if err != nil {
		return nil, err
	}
	if x.pendingID == "" || x.issued != nil {
		s.release(ctx, x, true)
		return nil, cmp.WithFailInfo(errs.New(errs.BadRequest, "pollReq for a transaction that is not waiting"), cmp.FailBadRequest)
	}
	if len(b.CertReqIDs) != 1 || (b.CertReqIDs[0] != x.certReqID && !(x.certReqID == -1 && b.CertReqIDs[0] == 0)) {
		s.release(ctx, x, true)
		return nil, cmp.WithFailInfo(errs.New(errs.BadRequest, "pollReq names an unknown certReqId"), cmp.FailBadCertID)
	}
	p, err := s.auth.PendingRequest(ctx, x.pendingID)
	if err == nil && p.Status == authority.StatusPending {
		s.release(ctx, x, true)
		prof, _ := s.auth.Profile(x.label)
		after := int64(30)
		if prof != nil && prof.RetryAfter > 0 {
			after = max(1, int64(prof.RetryAfter.Seconds()+0.5))
		}
		return &cmp.PollRepContent{Entries: []cmp.PollRep{{CertReqID: b.CertReqIDs[0], CheckAfter: after,
			Reason: []string{"request " + x.pendingID + " awaits approval"}}}}, nil
	}
	// Decided (or unknown): the resend gets the certificate or the reason.
	x.creq.Requester = s.requester(ses)
	return s.issue(ctx, ses, x)
}

// certConf verifies the confirmation (RFC 9483 §4.1.1, RFC 9810 §5.3.18): the certHash must
// match the issued certificate before it counts as accepted; a rejection revokes it.
func (s *Service) certConf(ctx context.Context, ses *session, b *cmp.CertConfirmContent) (cmp.Body, error) {
	x, err := s.followUp(ctx, ses)
	if err != nil {
		return nil, err
	}
	if x.issued == nil {
		s.release(ctx, x, true)
		return nil, cmp.WithFailInfo(errs.New(errs.BadRequest, "certConf before a certificate was issued"), cmp.FailBadRequest)
	}
	if len(b.Statuses) != 1 {
		s.release(ctx, x, true)
		return nil, cmp.WithFailInfo(errs.New(errs.BadRequest, "certConf must confirm exactly one certificate"), cmp.FailBadRequest)
	}
	st := b.Statuses[0]
	if st.CertReqID != x.certReqID && !(x.certReqID == -1 && st.CertReqID == 0) {
		s.release(ctx, x, true)
		return nil, cmp.WithFailInfo(errs.New(errs.BadRequest, "certConf for certReqId %d, issued %d", st.CertReqID, x.certReqID), cmp.FailBadCertID)
	}
	if err := st.Verify(x.issued.Cert); err != nil {
		// The transaction is over: the certificate was not confirmed.
		s.release(ctx, x, false)
		s.revokeUnconfirmed(ctx, x, "certConf certHash mismatch")
		return nil, err
	}
	s.release(ctx, x, false)
	if !st.Accepted() {
		s.revokeUnconfirmed(ctx, x, "rejected by the requester in certConf: "+st.StatusInfo.String())
		return &cmp.PKIConf{}, nil
	}
	if err := s.forgetUnconfirmed(ctx, x.issued.Serial); err != nil {
		// Not recorded as confirmed: the certificate would be revoked later anyway, so the
		// requester must not count it as accepted.
		s.revokeUnconfirmed(ctx, x, "its confirmation could not be recorded")
		return nil, err
	}
	s.accepted(x)
	return &cmp.PKIConf{}, nil
}
