package est

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

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

// EncodeCRLsOnly returns the DER of a crls-only CMS SignedData (RFC 8295 §4.2, the
// degenerate SignedData of RFC 7030 §4.1.3 with CRLs instead of certificates): version 1, no
// digest algorithms, id-data without eContent, no certificates, the CRLs in crls [1], no
// signers (RFC 5652 §5.1).
func EncodeCRLsOnly(crls [][]byte) ([]byte, error) {
	if len(crls) == 0 {
		return nil, errors.New("pkcs7: no CRLs to encode")
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(ci *cryptobyte.Builder) { // ContentInfo
		ci.AddASN1ObjectIdentifier(oidSignedData)
		ci.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(ex *cryptobyte.Builder) {
			ex.AddASN1(cbasn1.SEQUENCE, func(sd *cryptobyte.Builder) { // SignedData
				sd.AddASN1Int64(1)
				sd.AddASN1(cbasn1.SET, func(*cryptobyte.Builder) {}) // digestAlgorithms
				sd.AddASN1(cbasn1.SEQUENCE, func(eci *cryptobyte.Builder) {
					eci.AddASN1ObjectIdentifier(oidData)
				})
				sd.AddASN1(cbasn1.Tag(1).Constructed().ContextSpecific(), func(cs *cryptobyte.Builder) {
					for _, c := range crls {
						cs.AddBytes(c)
					}
				})
				sd.AddASN1(cbasn1.SET, func(*cryptobyte.Builder) {}) // signerInfos
			})
		})
	})
	out, err := b.Bytes()
	if err != nil {
		return nil, fmt.Errorf("pkcs7: encode: %w", err)
	}
	return out, nil
}
