package cmpserver

import (
	"bytes"
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"

	"coapca/cmp"
	"coapca/errs"
)

var (
	// OIDITCurrentCRL is id-it-currentCRL (RFC 9810 §5.3.19.6), still asked for by older
	// clients (OpenSSL 3.0 knows it by name).
	OIDITCurrentCRL = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 4, 6}
	// id-regCtrl-algId and id-regCtrl-rsaKeyLen (RFC 9483 §4.3.3) for the keySpec of a
	// certificate request template.
	oidRegCtrlAlgID     = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 5, 1, 11}
	oidRegCtrlRSAKeyLen = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 5, 1, 12}
	oidECPublicKey      = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}
	oidEd25519          = asn1.ObjectIdentifier{1, 3, 101, 112}
	curveOIDs           = map[string]asn1.ObjectIdentifier{
		"P-256": {1, 2, 840, 10045, 3, 1, 7}, "P-384": {1, 3, 132, 0, 34}, "P-521": {1, 3, 132, 0, 35},
	}
	oidReasonCode = asn1.ObjectIdentifier{2, 5, 29, 21}
)

// Bounds of one genm: RFC 9483 §4.3 asks one question per genm (one ITAV, one crlStatusList);
// a few are answered together, more are refused with badRequest, so that one message cannot
// buy unbounded work.
const (
	maxGenMItems  = 8 // InfoTypeAndValues in one genm
	maxCRLStatus  = 4 // CRLStatus entries in one crlStatusList
	maxCRLQueries = 2 // crlStatusList and currentCRL items in one genm
)

// genm answers the support messages of RFC 9483 §4.3. ITAV types it does not know are left
// out of the genp (RFC 9810 §5.3.19: the receiver may ignore them). The CRL is fetched at
// most once per genm (and the authority reuses it while nothing was revoked).
func (s *Service) genm(ctx context.Context, ses *session, b *cmp.GenContent) (cmp.Body, error) {
	if len(b.ITAVs) > maxGenMItems {
		return nil, cmp.WithFailInfo(errs.New(errs.BadRequest, "genm with %d items; at most %d are answered", len(b.ITAVs), maxGenMItems), cmp.FailBadRequest)
	}
	crlQueries := 0
	for _, it := range b.ITAVs {
		if it.Type.Equal(cmp.OIDITCRLStatusList) || it.Type.Equal(OIDITCurrentCRL) {
			crlQueries++
		}
		if it.Type.Equal(cmp.OIDITCRLStatusList) {
			if list, err := cmp.ParseCRLStatusList(it.Value); err == nil && len(list) > maxCRLStatus {
				return nil, cmp.WithFailInfo(errs.New(errs.BadRequest, "crlStatusList with %d entries; at most %d are answered", len(list), maxCRLStatus), cmp.FailBadRequest)
			}
		}
	}
	if crlQueries > maxCRLQueries {
		return nil, cmp.WithFailInfo(errs.New(errs.BadRequest, "genm with %d CRL requests; at most %d are answered", crlQueries, maxCRLQueries), cmp.FailBadRequest)
	}
	var crlDER []byte
	currentCRL := func() ([]byte, error) {
		if crlDER != nil {
			return crlDER, nil
		}
		var err error
		crlDER, err = s.auth.CRL(ctx)
		return crlDER, err
	}
	rep := &cmp.GenContent{BodyType: cmp.TypeGenP}
	for _, it := range b.ITAVs {
		switch {
		case it.Type.Equal(cmp.OIDITCACerts):
			// §4.3.1: the CA certificates, issuing CA first.
			rep.ITAVs = append(rep.ITAVs, cmp.CACertsITAV(s.auth.CACerts(ses.label)))
		case it.Type.Equal(cmp.OIDITRootCAKeyUpdate):
			// §4.3.2: no root CA key update is available: infoValue absent.
			rep.ITAVs = append(rep.ITAVs, cmp.InfoTypeAndValue{Type: cmp.OIDITRootCAKeyUpdate})
		case it.Type.Equal(cmp.OIDITCertReqTemplate):
			v, err := s.template(ses.label)
			if err != nil {
				return nil, err
			}
			rep.ITAVs = append(rep.ITAVs, cmp.InfoTypeAndValue{Type: cmp.OIDITCertReqTemplate, Value: v})
		case it.Type.Equal(cmp.OIDITCRLStatusList):
			// §4.3.4: the current CRL, unless the client's is as new.
			crl, err := currentCRL()
			if err != nil {
				return nil, err
			}
			if newer(crl, it.Value) {
				rep.ITAVs = append(rep.ITAVs, cmp.InfoTypeAndValue{Type: cmp.OIDITCRLs, Value: cmp.MarshalCRLs([][]byte{crl})})
			} else {
				rep.ITAVs = append(rep.ITAVs, cmp.InfoTypeAndValue{Type: cmp.OIDITCRLs})
			}
		case it.Type.Equal(OIDITCurrentCRL):
			crl, err := currentCRL()
			if err != nil {
				return nil, err
			}
			rep.ITAVs = append(rep.ITAVs, cmp.InfoTypeAndValue{Type: OIDITCurrentCRL, Value: crl})
		}
	}
	return rep, nil
}

// newer reports whether crl is newer than every thisUpdate of the crlStatusList value.
func newer(crl, statusList []byte) bool {
	list, err := cmp.ParseCRLStatusList(statusList)
	if err != nil || len(list) == 0 {
		return true
	}
	rl, err := x509.ParseRevocationList(crl)
	if err != nil {
		return true
	}
	for _, st := range list {
		if !st.ThisUpdate.IsZero() && !rl.ThisUpdate.After(st.ThisUpdate) {
			return false
		}
	}
	return true
}

// template returns the CertReqTemplateContent of a profile (§4.3.3): no fixed fields, and the
// key type the profile asks for as keySpec.
func (s *Service) template(label string) ([]byte, error) {
	p, err := s.auth.Profile(label)
	if err != nil {
		return nil, err
	}
	c := &cmp.CertReqTemplateContent{}
	switch kt := p.KeyType; {
	case curveOIDs[kt] != nil:
		params, _ := asn1.Marshal(curveOIDs[kt])
		v, _ := asn1.Marshal(pkix.AlgorithmIdentifier{Algorithm: oidECPublicKey, Parameters: asn1.RawValue{FullBytes: params}})
		c.KeySpec = []cmp.AttributeTypeAndValue{{Type: oidRegCtrlAlgID, Value: v}}
	case kt == "Ed25519":
		v, _ := asn1.Marshal(pkix.AlgorithmIdentifier{Algorithm: oidEd25519})
		c.KeySpec = []cmp.AttributeTypeAndValue{{Type: oidRegCtrlAlgID, Value: v}}
	case len(kt) > 4 && kt[:4] == "RSA-":
		var n int
		for _, ch := range kt[4:] {
			n = n*10 + int(ch-'0')
		}
		v, _ := asn1.Marshal(n)
		c.KeySpec = []cmp.AttributeTypeAndValue{{Type: oidRegCtrlRSAKeyLen, Value: v}}
	}
	v, err := c.Marshal()
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "certificate request template")
	}
	return v, nil
}

// revoke handles rr (RFC 9483 §4.2). Whether the requester may revoke the certificate is the
// authority's decision (Authority.RevokeAs).
func (s *Service) revoke(ctx context.Context, ses *session, b *cmp.RevReqContent) (cmp.Body, error) {
	if len(b.Requests) != 1 {
		return nil, cmp.WithFailInfo(errs.New(errs.BadRequest, "exactly one RevDetails is supported"), cmp.FailBadRequest)
	}
	d := b.Requests[0]
	t := d.CertDetails
	if t.SerialNumber == nil || t.Issuer == nil {
		return nil, cmp.WithFailInfo(errs.New(errs.BadRequest, "certDetails must hold issuer and serialNumber"), cmp.FailBadCertTemplate)
	}
	ca := s.auth.CACerts(ses.label)
	rep := &cmp.RevRepContent{}
	reject := func(err error) (cmp.Body, error) {
		rep.Status = []cmp.StatusInfo{statusFromError(err)}
		return rep, nil
	}
	if len(ca) == 0 || !bytes.Equal(t.Issuer, ca[0].RawSubject) {
		return reject(cmp.WithFailInfo(errs.New(errs.NotFound, "the certificate was not issued by this CA"), cmp.FailBadCertID))
	}
	serial := t.SerialNumber.Text(16)
	rec, err := s.auth.Certificate(ctx, serial)
	if err != nil {
		return reject(cmp.WithFailInfo(err, cmp.FailBadCertID))
	}
	cert, err := x509.ParseCertificate(rec.DER)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "stored certificate %s", serial)
	}
	reason := d.Reason()
	if reason < 0 {
		reason = 0
	}
	// The authority decides who may revoke (RFC 9483 §4.2, docs/security.md); only then does
	// the answer say whether the certificate was revoked already.
	if err := s.auth.RevokeAs(ctx, s.requester(ses), serial, reason); err != nil {
		switch errs.KindOf(err) {
		case errs.Forbidden, errs.Unauthorized:
			err = cmp.WithFailInfo(err, cmp.FailNotAuthorized)
		case errs.Conflict:
			err = cmp.WithFailInfo(err, cmp.FailCertRevoked)
		}
		return reject(err)
	}
	s.log.Info("cmp: revoked", "serial", serial, "reason", reason, "addr", ses.r.Addr)
	rep.Status = []cmp.StatusInfo{{Status: cmp.StatusAccepted}}
	rep.RevCerts = []cmp.CertID{{Issuer: cmp.DirectoryName(cert.RawIssuer), Serial: cert.SerialNumber}}
	s.announceRevocation(ctx, cert, rec.Label, reason)
	return rep, nil
}

// announceRevocation sends rann for cert and crlann with the new CRL (RFC 9810 §5.3.15-16).
func (s *Service) announceRevocation(ctx context.Context, cert *x509.Certificate, label string, reason int) {
	if s.opts.Announce == nil || !s.firstAnnouncement(cert.SerialNumber.Text(16)) {
		return
	}
	s.rann(cert, label, reason)
	if crl, err := s.auth.CRL(ctx); err == nil {
		s.announce(&cmp.CRLAnn{CRLs: [][]byte{crl}}, "")
	}
}

// firstAnnouncement records that serial's revocation is announced; false when it already was.
func (s *Service) firstAnnouncement(serial string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.announced[serial] {
		return false
	}
	s.announced[serial] = true
	return true
}

// AnnounceRevocations announces certificates revoked outside this service (for example by
// `coapca ca revoke` in another process, found by polling the store): a rann for each serial
// not announced yet, then one crlann. It returns how many were announced.
func (s *Service) AnnounceRevocations(ctx context.Context, serials []string) (int, error) {
	if s.opts.Announce == nil {
		return 0, nil
	}
	n := 0
	for _, sn := range serials {
		if !s.firstAnnouncement(sn) {
			continue
		}
		rec, err := s.auth.Certificate(ctx, sn)
		if err != nil {
			return n, err
		}
		cert, err := x509.ParseCertificate(rec.DER)
		if err != nil {
			return n, errs.Wrap(errs.Internal, err, "stored certificate %s", sn)
		}
		s.rann(cert, rec.Label, rec.RevocationReason)
		n++
	}
	if n > 0 {
		return n, s.AnnounceCRL(ctx)
	}
	return 0, nil
}

// MarkAnnounced records serials as announced without announcing them (revocations that
// happened before the server started).
func (s *Service) MarkAnnounced(serials []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sn := range serials {
		s.announced[sn] = true
	}
}

func (s *Service) rann(cert *x509.Certificate, label string, reason int) {
	now := s.now()
	ann := &cmp.RevAnn{Status: cmp.StatusRevocationNotification,
		CertID:          cmp.CertID{Issuer: cmp.DirectoryName(cert.RawIssuer), Serial: cert.SerialNumber},
		WillBeRevokedAt: now, BadSinceDate: now}
	if v, err := asn1.Marshal(asn1.Enumerated(reason)); err == nil {
		ann.CRLDetails = []pkix.Extension{{Id: oidReasonCode, Value: v}}
	}
	s.announce(ann, label)
}

// Announce sends an announcement body (ckuann, cann, rann, crlann) to the Announce hook, as a
// PKIMessage signed by the CMP signer. label "" reaches every observer.
func (s *Service) Announce(body cmp.Body, label string) error {
	if s.opts.Announce == nil {
		return nil
	}
	tid, err := cmp.NewTransactionID()
	if err != nil {
		return err
	}
	nonce, err := cmp.NewNonce()
	if err != nil {
		return err
	}
	m := &cmp.Message{Header: cmp.Header{PVNO: cmp.PVNO2000, Sender: s.name, Recipient: cmp.NullDN(),
		MessageTime: s.now(), TransactionID: tid, SenderNonce: nonce}, Body: body}
	der, err := m.Marshal(s.sign)
	if err != nil {
		return err
	}
	s.opts.Announce(der, body.Type(), label)
	return nil
}

func (s *Service) announce(body cmp.Body, label string) {
	if err := s.Announce(body, label); err != nil {
		s.log.Warn("cmp: announcement failed", "body", body.Type(), "err", err)
	}
}

// AnnounceCRL sends the current CRL as a crlann (e.g. after `coapca ca revoke`).
func (s *Service) AnnounceCRL(ctx context.Context) error {
	crl, err := s.auth.CRL(ctx)
	if err != nil {
		return err
	}
	return s.Announce(&cmp.CRLAnn{CRLs: [][]byte{crl}}, "")
}
