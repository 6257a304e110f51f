package est

import (
	"errors"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

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
