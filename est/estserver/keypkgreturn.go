package estserver

import (
	"context"
	"crypto/x509"
	"time"

	"coapca/authority"
	"coapca/errs"
	"coapca/est"
	"coapca/est/cms"
)

// KeyPackageReturnSink is what /serverkeygen/return (RFC 8295 §8.2) needs from the authority
// (implemented by *authority.Authority): the decision on a receipt or error, and its record.
// An Authority without it answers errs.NotFound.
type KeyPackageReturnSink interface {
	RecordKeyPackageReturn(ctx context.Context, req authority.Requester, r authority.KeyPackageReturn) (*authority.KeyPackageReturn, error)
}

var _ KeyPackageReturnSink = (*authority.Authority)(nil)

// ReturnKeyPackage takes a key package receipt or error (RFC 7191) for a server-generated key
// (RFC 8295 §8.2, /serverkeygen/return; processing as §5.2.1 and §5.2.2): r.Body is the DER
// ContentInfo. A malformed or wrongly signed one is errs.BadRequest; who may return what, and
// whether the signer validates to an authorized trust anchor, is the authority's decision.
// Nothing is recorded when it fails.
func (s *Service) ReturnKeyPackage(ctx context.Context, r *Request) (rec *authority.KeyPackageReturn, err error) {
	defer func(start time.Time) { s.report("serverkeygen_return", r, start, err, false) }(time.Now())
	sink, ok := s.auth.(KeyPackageReturnSink)
	if !ok {
		return nil, errs.New(errs.NotFound, "this server takes no key package receipts")
	}
	if _, err := s.auth.Profile(r.Label); err != nil {
		return nil, typed(err, "profile lookup")
	}
	p, err := est.ParseKeyPackageReturn(r.Body)
	if err != nil {
		return nil, errs.Wrap(errs.BadRequest, err, "malformed key package receipt or error")
	}
	in := authority.KeyPackageReturn{Kind: "error", PkgID: p.PkgID, By: p.By(), ErrorCode: p.ErrorCode, DER: r.Body}
	if p.Receipt {
		in.Kind = "receipt"
	}
	in.Signer, in.SignerCerts = signerAndCerts(p.Signed)
	rec, err = sink.RecordKeyPackageReturn(ctx, r.Requester, in)
	if err != nil {
		return nil, typed(err, "key package return")
	}
	s.log.Debug("key package return", "kind", rec.Kind, "serial", rec.CertSerial, "label", r.Label)
	return rec, nil
}

// signerAndCerts splits the certificates of a verified SignedData into its signer and the
// others (the chain the authority validates); nil, nil for an unsigned return.
func signerAndCerts(sd *cms.Signed) (signer *x509.Certificate, others []*x509.Certificate) {
	if sd == nil {
		return nil, nil
	}
	for _, c := range sd.Certs {
		if c != sd.Signer {
			others = append(others, c)
		}
	}
	return sd.Signer, others
}
