package cmp

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// Failed returns a *StatusError when m is an error message (RFC 9810 §5.3.21) or reports
// rejection in its first status (ip/cp/kup/rp), and nil otherwise.
func (m *Message) Failed() error {
	switch b := m.Body.(type) {
	case *ErrorContent:
		return &StatusError{Status: b.Status}
	case *CertRepMessage:
		for _, r := range b.Responses {
			if r.Status.Status == StatusRejection {
				return &StatusError{Status: r.Status}
			}
		}
	case *RevRepContent:
		for _, s := range b.Status {
			if s.Status == StatusRejection {
				return &StatusError{Status: s}
			}
		}
	}
	return nil
}

// EnrollResult is what a client takes from an ip/cp/kup (or pollRep) answer.
type EnrollResult struct {
	Cert       *x509.Certificate // nil while waiting
	CAPubs     []*x509.Certificate
	ExtraCerts []*x509.Certificate
	Status     StatusInfo
	// Waiting is true for status waiting (RFC 9483 §4.4) or a pollRep; CheckAfter then says
	// when to send pollReq.
	Waiting    bool
	CheckAfter time.Duration
	// ImplicitConfirm is true when the server granted implicit confirmation: no certConf.
	ImplicitConfirm bool
}

// ParseEnrollResponse interprets the answer to an ir/cr/kur/p10cr (or to a pollReq) for
// certReqID. Rejections and error messages return a *StatusError.
func ParseEnrollResponse(rsp *Message, certReqID int64) (*EnrollResult, error) {
	if err := rsp.Failed(); err != nil {
		return nil, err
	}
	switch b := rsp.Body.(type) {
	case *PollRepContent:
		for _, e := range b.Entries {
			if e.CertReqID == certReqID {
				return &EnrollResult{Waiting: true, CheckAfter: time.Duration(e.CheckAfter) * time.Second,
					Status: StatusInfo{Status: StatusWaiting, StatusString: e.Reason}}, nil
			}
		}
		return nil, fmt.Errorf("cmp: pollRep has no entry for certReqId %d", certReqID)
	case *CertRepMessage:
		r, ok := b.Response(certReqID)
		if !ok {
			return nil, fmt.Errorf("cmp: %s has no response for certReqId %d", b.BodyType, certReqID)
		}
		res := &EnrollResult{CAPubs: b.CAPubs, ExtraCerts: rsp.ExtraCerts, Status: r.Status,
			ImplicitConfirm: rsp.Header.ImplicitConfirm()}
		switch r.Status.Status {
		case StatusWaiting:
			res.Waiting = true
			return res, nil
		case StatusAccepted, StatusGrantedWithMods:
		default:
			return nil, &StatusError{Status: r.Status}
		}
		if r.Cert == nil {
			return nil, errors.New("cmp: accepted response without a (plain) certificate")
		}
		res.Cert = r.Cert
		return res, nil
	}
	return nil, fmt.Errorf("cmp: unexpected %s answer to a certificate request", rsp.Body.Type())
}
