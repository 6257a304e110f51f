package est

import (
	"crypto"
	"crypto/sha1"
	"crypto/x509"
	"encoding/asn1"
	"fmt"

	"coapca/est/cms"
)

// SubjectKeyID returns the subjectKeyIdentifier of cert: its extension, or else the SHA-1 of
// its subjectPublicKey (RFC 5280 §4.2.1.2 method 1). A client puts it in
// AsymmetricDecryptKeyIdentifier to ask for a key encrypted to its own certificate.
func SubjectKeyID(cert *x509.Certificate) []byte {
	if len(cert.SubjectKeyId) > 0 {
		return cert.SubjectKeyId
	}
	var spki struct {
		Algorithm asn1.RawValue
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(cert.RawSubjectPublicKeyInfo, &spki); err != nil {
		return nil
	}
	sum := sha1.Sum(spki.PublicKey.Bytes)
	return sum[:]
}

// DecryptedKey is a server-generated key recovered from a Content-Format 280 answer.
type DecryptedKey struct {
	PKCS8 []byte            // the OneAsymmetricKey (PKCS#8) DER
	Key   crypto.PrivateKey // parsed
	// Signer is the certificate that signed the key package and Certs all the certificates the
	// SignedData carried: the caller checks that Signer chains to its trust anchors.
	Signer *x509.Certificate
	Certs  []*x509.Certificate
}

// DecryptServerKey opens an encrypted server-generated key (RFC 7030 §4.4.2): EnvelopedData,
// then the SignedData inside it (signature checked; the signer's trust is the caller's
// decision), then the AsymmetricKeyPackage with exactly one key.
func DecryptServerKey(der []byte, d cms.Decrypter) (*DecryptedKey, error) {
	ctype, inner, err := cms.Decrypt(der, d)
	if err != nil {
		return nil, err
	}
	if !ctype.Equal(cms.OIDSignedData) {
		return nil, fmt.Errorf("server-generated key: the EnvelopedData holds %v, not a SignedData (RFC 7030 §4.4.2)", ctype)
	}
	sd, err := cms.Verify(inner)
	if err != nil {
		return nil, fmt.Errorf("server-generated key: %w", err)
	}
	if !sd.ContentType.Equal(cms.OIDAsymmetricKeyPackage) {
		return nil, fmt.Errorf("server-generated key: the SignedData holds %v, not an AsymmetricKeyPackage", sd.ContentType)
	}
	keys, err := cms.ParseAsymmetricKeyPackage(sd.Content)
	if err != nil {
		return nil, fmt.Errorf("server-generated key: %w", err)
	}
	if len(keys) != 1 {
		return nil, fmt.Errorf("server-generated key: the package holds %d keys, want 1", len(keys))
	}
	k, err := x509.ParsePKCS8PrivateKey(keys[0])
	if err != nil {
		return nil, fmt.Errorf("server-generated key: %w", err)
	}
	return &DecryptedKey{PKCS8: keys[0], Key: k, Signer: sd.Signer, Certs: sd.Certs}, nil
}

// MediaKeyPackage is the media type of a server-generated key in the encapsulation of RFC 8295
// §8.1 without CCC, with additional encryption and origin authentication: application/cms
// (RFC 7193) holding a SignedData that encapsulates an EnvelopedData that encapsulates a
// SignedData that encapsulates an AsymmetricKeyPackage (RFC 5958). RFC 8295 §8.1: the
// encapsulatingContent and innerContent parameters SHOULD be included; the encapsulating
// content types are listed outermost first.
const MediaKeyPackage = `application/cms; encapsulatingContent="signedData, envelopedData, signedData"; innerContent=aKeyPackage`

// KeyPackage is a server-generated key recovered from the RFC 8295 §8.1 encapsulation.
type KeyPackage struct {
	*DecryptedKey
	// OuterSigner is the certificate that signed the outer SignedData and OuterCerts all the
	// certificates it carried: the caller checks that OuterSigner chains to its trust anchors
	// (RFC 8295 §8.1: the client MUST reject a package whose signature does not validate back
	// to an authorized TA), as it does for DecryptedKey.Signer.
	OuterSigner *x509.Certificate
	OuterCerts  []*x509.Certificate
}

// DecryptKeyPackage opens the RFC 8295 §8.1 encapsulation (MediaKeyPackage): the DER
// ContentInfo of a SignedData (signature checked) holding an EnvelopedData, which is opened as
// DecryptServerKey opens the RFC 7030 §4.4.2 form.
func DecryptKeyPackage(der []byte, d cms.Decrypter) (*KeyPackage, error) {
	sdDER, err := cms.ContentOf(der, cms.OIDSignedData)
	if err != nil {
		return nil, fmt.Errorf("key package: %w", err)
	}
	outer, err := cms.Verify(sdDER)
	if err != nil {
		return nil, fmt.Errorf("key package: outer SignedData: %w", err)
	}
	if !outer.ContentType.Equal(cms.OIDEnvelopedData) {
		return nil, fmt.Errorf("key package: the outer SignedData holds %v, not an EnvelopedData (RFC 8295 §8.1)", outer.ContentType)
	}
	ci, err := cms.ContentInfo(cms.OIDEnvelopedData, outer.Content)
	if err != nil {
		return nil, fmt.Errorf("key package: %w", err)
	}
	k, err := DecryptServerKey(ci, d)
	if err != nil {
		return nil, err
	}
	return &KeyPackage{DecryptedKey: k, OuterSigner: outer.Signer, OuterCerts: outer.Certs}, nil
}

// DecryptKeyIdentifierAttribute is the CSR attribute asking for the key encrypted under the
// pre-shared key-encryption key id (RFC 7030 §4.4.1.1).
func DecryptKeyIdentifierAttribute(id []byte) Attribute {
	return Attribute{Type: OIDDecryptKeyIdentifier, Values: []asn1.RawValue{{Tag: asn1.TagOctetString, Bytes: id}}}
}

// AsymmetricDecryptKeyIdentifierAttribute is the CSR attribute asking for the key encrypted to
// the key with this subjectKeyIdentifier (RFC 7030 §4.4.1.2; see SubjectKeyID).
func AsymmetricDecryptKeyIdentifierAttribute(ski []byte) Attribute {
	return Attribute{Type: OIDAsymmetricDecryptKeyIdentifier, Values: []asn1.RawValue{{Tag: asn1.TagOctetString, Bytes: ski}}}
}

// SMIMECapabilitiesAttribute lists the algorithms the client can decrypt with (RFC 8551
// §2.5.2), in order of preference, parameters absent.
func SMIMECapabilitiesAttribute(algs ...asn1.ObjectIdentifier) (Attribute, error) {
	type capability struct{ ID asn1.ObjectIdentifier }
	caps := make([]capability, len(algs))
	for i, a := range algs {
		caps[i] = capability{a}
	}
	der, err := asn1.Marshal(caps)
	if err != nil {
		return Attribute{}, err
	}
	return Attribute{Type: OIDSMIMECapabilities, Values: []asn1.RawValue{{FullBytes: der}}}, nil
}
