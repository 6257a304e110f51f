package estserver

import (
	"context"
	"time"

	"coapca/errs"
)

// CRLSource is what the /crls operation of RFC 8295 §4 needs from the authority (implemented
// by *authority.Authority): the current DER CRL of the issuing CA. An Authority without it
// answers /crls with errs.NotFound.
type CRLSource interface {
	CRL(ctx context.Context) ([]byte, error)
}

// CRLs returns the current CRLs for the label (RFC 8295 §4, /crls): the issuing CA's CRL.
// RFC 8295 §4 lets the server hand them to anyone (they are signed by the CA); an unknown
// label is errs.NotFound.
func (s *Service) CRLs(ctx context.Context, r *Request) (crls [][]byte, err error) {
	defer func(start time.Time) { s.report("crls", r, start, err, false) }(time.Now())
	if _, err := s.auth.Profile(r.Label); err != nil {
		return nil, typed(err, "profile lookup")
	}
	src, ok := s.auth.(CRLSource)
	if !ok {
		return nil, errs.New(errs.NotFound, "this server distributes no CRLs")
	}
	der, err := src.CRL(ctx)
	if err != nil {
		return nil, typed(err, "CRL")
	}
	return [][]byte{der}, nil
}
