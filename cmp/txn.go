package cmp

import (
	"bytes"
	"crypto"
	"crypto/subtle"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"time"

	"coapca/errs"

	"golang.org/x/crypto/cryptobyte"
)

// NonceLen is the length of generated transactionIDs and nonces: 128 bits, as RFC 9810
// §5.1.1 recommends.
const NonceLen = 16

// NewTransactionID returns a fresh random transactionID.
func NewTransactionID() ([]byte, error) { return randomBytes(NonceLen) }

// NewNonce returns a fresh random senderNonce.
func NewNonce() ([]byte, error) { return randomBytes(NonceLen) }

// NewRequestHeader returns a header for the first message of a transaction (or, with
// transactionID non-nil, a later one such as certConf or pollReq): pvno 2, messageTime now,
// fresh senderNonce.
func NewRequestHeader(sender, recipient GeneralName, transactionID, recipNonce []byte) (Header, error) {
	var err error
	if transactionID == nil {
		if transactionID, err = NewTransactionID(); err != nil {
			return Header{}, err
		}
	}
	nonce, err := NewNonce()
	if err != nil {
		return Header{}, err
	}
	return Header{PVNO: PVNO2000, Sender: sender, Recipient: recipient, MessageTime: time.Now(),
		TransactionID: transactionID, SenderNonce: nonce, RecipNonce: recipNonce}, nil
}

// NewResponseHeader returns the header answering req (RFC 9810 §5.1.1): same pvno (at most
// cmp2021) and transactionID, recipNonce = req.senderNonce, a fresh senderNonce, messageTime
// now, recipient = req.sender, recipKID = req.senderKID.
func NewResponseHeader(req *Header, sender GeneralName) (Header, error) {
	nonce, err := NewNonce()
	if err != nil {
		return Header{}, err
	}
	pvno := req.PVNO
	if pvno < PVNO2000 || pvno > PVNO2021 {
		pvno = PVNO2000
	}
	return Header{PVNO: pvno, Sender: sender, Recipient: req.Sender, MessageTime: time.Now(),
		RecipKID: req.SenderKID, TransactionID: req.TransactionID, SenderNonce: nonce,
		RecipNonce: req.SenderNonce}, nil
}

// CheckResponse checks that rsp answers req (RFC 9810 §5.1.1, RFC 9483 §3.5): the same
// transactionID and recipNonce equal to the request's senderNonce. Errors carry the failure
// bits (badRecipientNonce, badRequest) and errs.BadRequest.
func CheckResponse(req, rsp *Header) error {
	if len(rsp.TransactionID) == 0 || !bytes.Equal(req.TransactionID, rsp.TransactionID) {
		return failure(errs.BadRequest, FailBadRequest, errors.New("cmp: response transactionID does not match the request"))
	}
	if len(req.SenderNonce) > 0 && subtle.ConstantTimeCompare(req.SenderNonce, rsp.RecipNonce) != 1 {
		return failure(errs.BadRequest, FailBadRecipientNonce, errors.New("cmp: response recipNonce does not match the request senderNonce"))
	}
	return nil
}

// CheckRequest checks what a server must see in a request header (RFC 9483 §3.1): a pvno it
// supports, a transactionID and a senderNonce of at least 128 bits.
func CheckRequest(h *Header) error {
	if h.PVNO != PVNO2000 && h.PVNO != PVNO2021 {
		return failure(errs.BadRequest, FailUnsupportedVersion, fmt.Errorf("cmp: unsupported pvno %d", h.PVNO))
	}
	if len(h.TransactionID) < NonceLen {
		return failure(errs.BadRequest, FailBadDataFormat, errors.New("cmp: transactionID missing or shorter than 128 bits"))
	}
	if len(h.SenderNonce) < NonceLen {
		return failure(errs.BadRequest, FailBadSenderNonce, errors.New("cmp: senderNonce missing or shorter than 128 bits"))
	}
	return nil
}

// CheckMessageTime checks messageTime against now within skew (RFC 9483 §3.5 MAY); an absent
// messageTime passes.
func CheckMessageTime(h *Header, now time.Time, skew time.Duration) error {
	if h.MessageTime.IsZero() {
		return nil
	}
	if d := h.MessageTime.Sub(now); d > skew || d < -skew {
		return failure(errs.BadRequest, FailBadTime, fmt.Errorf("cmp: messageTime %s off by %s", h.MessageTime.UTC().Format(time.RFC3339), d))
	}
	return nil
}

// GeneralInfoValue returns the first generalInfo ITAV of type oid.
func (h *Header) GeneralInfoValue(oid []int) (InfoTypeAndValue, bool) {
	for _, it := range h.GeneralInfo {
		if it.Type.Equal(oid) {
			return it, true
		}
	}
	return InfoTypeAndValue{}, false
}

// ImplicitConfirm reports whether generalInfo holds implicitConfirm (RFC 9810 §5.1.1.1).
func (h *Header) ImplicitConfirm() bool {
	_, ok := h.GeneralInfoValue(OIDITImplicitConfirm)
	return ok
}

// SetImplicitConfirm adds implicitConfirm (value NULL) to generalInfo.
func (h *Header) SetImplicitConfirm() {
	if !h.ImplicitConfirm() {
		h.GeneralInfo = append(h.GeneralInfo, InfoTypeAndValue{Type: OIDITImplicitConfirm, Value: []byte{0x05, 0x00}})
	}
}

// ConfirmWaitTime returns the confirmWaitTime of generalInfo (RFC 9810 §5.1.1.2).
func (h *Header) ConfirmWaitTime() (time.Time, bool) {
	it, ok := h.GeneralInfoValue(OIDITConfirmWaitTime)
	if !ok {
		return time.Time{}, false
	}
	s := cryptobyte.String(it.Value)
	var t time.Time
	if !s.ReadASN1GeneralizedTime(&t) || !s.Empty() {
		return time.Time{}, false
	}
	return t, true
}

// SetConfirmWaitTime sets confirmWaitTime in generalInfo.
func (h *Header) SetConfirmWaitTime(t time.Time) {
	var b cryptobyte.Builder
	b.AddASN1GeneralizedTime(t.UTC().Truncate(time.Second))
	h.setInfo(InfoTypeAndValue{Type: OIDITConfirmWaitTime, Value: b.BytesOrPanic()})
}

// CertProfile returns the certProfile names of generalInfo (RFC 9810 §5.1.1.4).
func (h *Header) CertProfile() []string {
	it, ok := h.GeneralInfoValue(OIDITCertProfile)
	if !ok {
		return nil
	}
	p, _ := ParseCertProfile(it.Value)
	return p
}

// SetCertProfile sets certProfile in generalInfo.
func (h *Header) SetCertProfile(names ...string) {
	h.setInfo(InfoTypeAndValue{Type: OIDITCertProfile, Value: MarshalCertProfile(names)})
}

func (h *Header) setInfo(it InfoTypeAndValue) {
	for i := range h.GeneralInfo {
		if h.GeneralInfo[i].Type.Equal(it.Type) {
			h.GeneralInfo[i] = it
			return
		}
	}
	h.GeneralInfo = append(h.GeneralInfo, it)
}

// CertHashAlgorithm returns the hash for certHash (RFC 9810 §5.3.18): the hash of cert's
// signature algorithm; SHA-512 for Ed25519, whose signature has no separate hash (RFC 9481 §3.3).
func CertHashAlgorithm(cert *x509.Certificate) (crypto.Hash, error) {
	switch cert.SignatureAlgorithm {
	case x509.SHA256WithRSA, x509.SHA256WithRSAPSS, x509.ECDSAWithSHA256:
		return crypto.SHA256, nil
	case x509.SHA384WithRSA, x509.SHA384WithRSAPSS, x509.ECDSAWithSHA384:
		return crypto.SHA384, nil
	case x509.SHA512WithRSA, x509.SHA512WithRSAPSS, x509.ECDSAWithSHA512, x509.PureEd25519:
		return crypto.SHA512, nil
	}
	return 0, fmt.Errorf("cmp: no certHash algorithm for signature %v (give hashAlg)", cert.SignatureAlgorithm)
}

// CertHash computes certHash of cert: with hashAlg non-nil (cmp2021) by that algorithm,
// else by CertHashAlgorithm.
func CertHash(cert *x509.Certificate, hashAlg *pkix.AlgorithmIdentifier) ([]byte, error) {
	var h crypto.Hash
	if hashAlg != nil {
		var ok bool
		if h, ok = hashByOID(hashAlg.Algorithm); !ok {
			return nil, fmt.Errorf("cmp: unsupported hashAlg %v", hashAlg.Algorithm)
		}
	} else {
		var err error
		if h, err = CertHashAlgorithm(cert); err != nil {
			return nil, err
		}
	}
	d := h.New()
	d.Write(cert.Raw)
	return d.Sum(nil), nil
}

// NewCertStatus returns the certConf entry accepting cert (status nil = accepted) or rejecting
// it (pass a StatusInfo with StatusRejection).
func NewCertStatus(certReqID int64, cert *x509.Certificate, status *StatusInfo) (CertStatus, error) {
	h, err := CertHash(cert, nil)
	if err != nil {
		return CertStatus{}, err
	}
	return CertStatus{CertHash: h, CertReqID: certReqID, StatusInfo: status}, nil
}

// Verify checks that s confirms cert (certHash by the rule of RFC 9810 §5.3.18). It returns an
// error carrying badCertId when the hash does not match.
func (s *CertStatus) Verify(cert *x509.Certificate) error {
	want, err := CertHash(cert, s.HashAlg)
	if err != nil {
		return failure(errs.BadRequest, FailBadAlg, err)
	}
	if subtle.ConstantTimeCompare(want, s.CertHash) != 1 {
		return failure(errs.BadRequest, FailBadCertID, errors.New("cmp: certConf certHash does not match the issued certificate"))
	}
	return nil
}

// Accepted reports whether the entry accepts the certificate.
func (s *CertStatus) Accepted() bool {
	return s.StatusInfo == nil || s.StatusInfo.Status == StatusAccepted || s.StatusInfo.Status == StatusGrantedWithMods
}

// NewOldCertIDControl returns the oldCertID control naming cert (for kur, RFC 9483 §4.1.3).
func NewOldCertIDControl(cert *x509.Certificate) AttributeTypeAndValue {
	var b cryptobyte.Builder
	CertID{Issuer: DirectoryName(cert.RawIssuer), Serial: cert.SerialNumber}.marshal(&b)
	return AttributeTypeAndValue{Type: OIDRegCtrlOldCertID, Value: b.BytesOrPanic()}
}

// NewRevDetails returns the RevDetails revoking cert (RFC 9483 §4.2): issuer and serial in
// the template, and a reasonCode entry extension when reason >= 0.
func NewRevDetails(cert *x509.Certificate, reason int) RevDetails {
	d := RevDetails{CertDetails: CertTemplate{SerialNumber: cert.SerialNumber, Issuer: cert.RawIssuer}}
	if reason >= 0 {
		var b cryptobyte.Builder
		b.AddASN1Enum(int64(reason))
		d.CRLEntryDetails = []pkix.Extension{{Id: oidReasonCode, Value: b.BytesOrPanic()}}
	}
	return d
}

var oidReasonCode = []int{2, 5, 29, 21}

// Reason returns the CRL reasonCode of d, or -1.
func (d *RevDetails) Reason() int {
	for _, e := range d.CRLEntryDetails {
		if e.Id.Equal(oidReasonCode) {
			s := cryptobyte.String(e.Value)
			var r int
			if s.ReadASN1Enum(&r) && s.Empty() {
				return r
			}
		}
	}
	return -1
}

// Response returns the CertResponse for certReqID.
func (c *CertRepMessage) Response(certReqID int64) (*CertResponse, bool) {
	for i := range c.Responses {
		if c.Responses[i].CertReqID == certReqID {
			return &c.Responses[i], true
		}
	}
	return nil, false
}
