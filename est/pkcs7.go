package est

import (
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

var (
	oidSignedData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}
	oidData       = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
)

// EncodeCertsOnly returns the DER of a certs-only CMS SignedData (the "degenerate" PKCS#7 of
// RFC 7030 §4.1.3 / §4.2.3, RFC 5652 §5): version 1, no digest algorithms, an id-data
// encapsulated content without eContent, the certificates, an empty CRL set and no signers.
// Certificates are emitted in the order given (the set carries no order in CMS, but some
// clients read the first certificate as "the" certificate, so callers put the leaf or the
// issuing CA first).
func EncodeCertsOnly(certs []*x509.Certificate) ([]byte, error) {
	if len(certs) == 0 {
		return nil, errors.New("pkcs7: no certificates to encode")
	}
	raw := make([][]byte, len(certs))
	for i, c := range certs {
		raw[i] = c.Raw
	}
	return degenerateSignedData(raw, nil)
}

// degenerateSignedData is the DER of a ContentInfo with a SignedData that has no signers
// (RFC 5652 §5.1): version 1, no digest algorithms, id-data without eContent, the certificates
// in certificates [0] when there are any, the CRLs in crls [1] — present even when empty, as
// OpenSSL writes certs-only answers and the RFC 9148 Appendix A examples show — and no
// signerInfos. certs-only (RFC 7030 §4.1.3) and crls-only (RFC 8295 §4.2) are both this.
func degenerateSignedData(certs, crls [][]byte) ([]byte, error) {
	// One buffer for the whole answer: the framing is under 64 bytes besides the length
	// octets, so the builder never grows it (the answer to every enrollment).
	size := 64
	for _, c := range certs {
		size += len(c)
	}
	for _, c := range crls {
		size += len(c)
	}
	b := cryptobyte.NewBuilder(make([]byte, 0, size))
	b.AddASN1(cbasn1.SEQUENCE, func(ci *cryptobyte.Builder) { // ContentInfo
		ci.AddASN1ObjectIdentifier(oidSignedData)
		ci.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(ex *cryptobyte.Builder) {
			ex.AddASN1(cbasn1.SEQUENCE, func(sd *cryptobyte.Builder) { // SignedData
				sd.AddASN1Int64(1)
				sd.AddASN1(cbasn1.SET, func(*cryptobyte.Builder) {}) // digestAlgorithms
				sd.AddASN1(cbasn1.SEQUENCE, func(eci *cryptobyte.Builder) {
					eci.AddASN1ObjectIdentifier(oidData)
				})
				if len(certs) > 0 {
					sd.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(cs *cryptobyte.Builder) {
						for _, c := range certs {
							cs.AddBytes(c)
						}
					})
				}
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

// ParseCertsOnly parses a CMS ContentInfo holding SignedData and returns its certificates in
// the order they appear. It accepts any SignedData (signers and CRLs are skipped, not
// verified); EST uses only the certificates. Input must be DER (BER indefinite lengths are
// rejected with a clear error).
func ParseCertsOnly(der []byte) ([]*x509.Certificate, error) {
	in := cryptobyte.String(der)
	var ci, content, sd cryptobyte.String
	var ctype asn1.ObjectIdentifier
	if !in.ReadASN1(&ci, cbasn1.SEQUENCE) {
		return nil, errors.New("pkcs7: not a DER ContentInfo SEQUENCE")
	}
	if !in.Empty() {
		return nil, errors.New("pkcs7: trailing data after ContentInfo")
	}
	if !ci.ReadASN1ObjectIdentifier(&ctype) {
		return nil, errors.New("pkcs7: malformed contentType")
	}
	if !ctype.Equal(oidSignedData) {
		return nil, fmt.Errorf("pkcs7: contentType %v is not signedData", ctype)
	}
	if !ci.ReadASN1(&content, cbasn1.Tag(0).Constructed().ContextSpecific()) || !ci.Empty() {
		return nil, errors.New("pkcs7: malformed [0] content")
	}
	if !content.ReadASN1(&sd, cbasn1.SEQUENCE) || !content.Empty() {
		return nil, errors.New("pkcs7: malformed SignedData")
	}
	var version int64
	if !sd.ReadASN1Integer(&version) {
		return nil, errors.New("pkcs7: malformed SignedData version")
	}
	if !sd.SkipASN1(cbasn1.SET) {
		return nil, errors.New("pkcs7: malformed digestAlgorithms")
	}
	if !sd.SkipASN1(cbasn1.SEQUENCE) {
		return nil, errors.New("pkcs7: malformed encapContentInfo")
	}
	var certsField cryptobyte.String
	var present bool
	if !sd.ReadOptionalASN1(&certsField, &present, cbasn1.Tag(0).Constructed().ContextSpecific()) {
		return nil, errors.New("pkcs7: malformed certificates field")
	}
	if !present {
		return nil, errors.New("pkcs7: SignedData carries no certificates")
	}
	var certs []*x509.Certificate
	for !certsField.Empty() {
		var raw cryptobyte.String
		var tag cbasn1.Tag
		if !certsField.ReadAnyASN1Element(&raw, &tag) {
			return nil, errors.New("pkcs7: malformed CertificateChoices")
		}
		if tag != cbasn1.SEQUENCE {
			continue // other certificate formats (attribute certificates, ...): not used by EST
		}
		c, err := x509.ParseCertificate(raw)
		if err != nil {
			return nil, fmt.Errorf("pkcs7: certificate %d: %w", len(certs), err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("pkcs7: SignedData carries no X.509 certificates")
	}
	return certs, nil
}
