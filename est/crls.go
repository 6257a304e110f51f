package est

import (
	"errors"
)

// EncodeCRLsOnly returns the DER of a crls-only CMS SignedData (RFC 8295 §4.2, the
// degenerate SignedData of RFC 7030 §4.1.3 with CRLs instead of certificates): version 1, no
// digest algorithms, id-data without eContent, no certificates, the CRLs in crls [1], no
// signers (RFC 5652 §5.1).
func EncodeCRLsOnly(crls [][]byte) ([]byte, error) {
	if len(crls) == 0 {
		return nil, errors.New("pkcs7: no CRLs to encode")
	}
	return degenerateSignedData(nil, crls)
}
