package estserver

import (
	"context"
	"crypto/x509"
	"time"

	"coapca/authority"
	"coapca/errs"
)

// EECertSource is what the /eecerts operation of RFC 8295 §3 needs from the authority
// (implemented by *authority.Authority): the end-entity certificates a requester may see under
// a label. The authority decides (docs/security.md); an Authority without it answers /eecerts
// with errs.NotFound.
type EECertSource interface {
	EECertificates(ctx context.Context, req authority.Requester, label string) ([]*x509.Certificate, error)
}

var _ EECertSource = (*authority.Authority)(nil)

// EECerts returns the end-entity certificates the authority lets the requester have under the
// label (RFC 8295 §3, /eecerts): its own and, where the profile allows, its peers'.
func (s *Service) EECerts(ctx context.Context, r *Request) (certs []*x509.Certificate, err error) {
	defer func(start time.Time) { s.report("eecerts", r, start, err, false) }(time.Now())
	src, ok := s.auth.(EECertSource)
	if !ok {
		return nil, errs.New(errs.NotFound, "this server distributes no end-entity certificates")
	}
	certs, err = src.EECertificates(ctx, r.Requester, r.Label)
	if err != nil {
		return nil, typed(err, "end-entity certificates")
	}
	return certs, nil
}
