package est

import (
	"encoding/asn1"
	"errors"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"coapca/est/cms"
)

// openContentInfo reads what a client returns (a receipt, confirm or error of RFC 7191, RFC 4108
// or RFC 5934): a DER ContentInfo of at most limit bytes. When it holds a SignedData, that is
// verified (signature and signed attributes, RFC 5652 §5.4) and unwrapped: ctype and content
// are then those inside, and sd is the SignedData (nil when the return is unsigned; whether
// that is allowed is the caller's decision). what names the message in errors.
func openContentInfo(der []byte, limit int, what string) (ctype asn1.ObjectIdentifier, content []byte, sd *cms.Signed, err error) {
	if len(der) > limit {
		return nil, nil, nil, fmt.Errorf("%s: %d bytes is larger than %d", what, len(der), limit)
	}
	in := cryptobyte.String(der)
	var ci cryptobyte.String
	if !in.ReadASN1(&ci, cbasn1.SEQUENCE) || !in.Empty() || !ci.ReadASN1ObjectIdentifier(&ctype) {
		return nil, nil, nil, errors.New(what + ": not a DER ContentInfo")
	}
	if content, err = cms.ContentOf(der, ctype); err != nil {
		return nil, nil, nil, fmt.Errorf("%s: %w", what, err)
	}
	if ctype.Equal(cms.OIDSignedData) {
		if sd, err = cms.Verify(content); err != nil {
			return nil, nil, nil, fmt.Errorf("%s: %w", what, err)
		}
		ctype, content = sd.ContentType, sd.Content
	}
	return ctype, content, sd, nil
}
