package est

import (
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"coapca/est/cms"
)

// Key package receipts and errors (RFC 7191), returned by a client to /serverkeygen/return
// (RFC 8295 §8.2, processed as §5.2.1 and §5.2.2 say).
var (
	// OIDKeyPackageReceipt is id-ct-KP-keyPackageReceipt (RFC 7191 §3).
	OIDKeyPackageReceipt = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 2, 1, 2, 78, 3}
	// OIDKeyPackageError is id-ct-KP-keyPackageError (RFC 7191 §4).
	OIDKeyPackageError = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 2, 1, 2, 78, 6}
	// OIDSIRENDistinguishedName is id-dn (RFC 7191 §2.2.1): a SIREntityName whose value is a
	// DER DistinguishedName.
	OIDSIRENDistinguishedName = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 2, 1, 16, 0}
)

// MediaKeyPackageReceipt and MediaKeyPackageError are the Content-Types of a signed receipt and
// of a signed error (RFC 8295 §5.2.1 with RFC 7193's parameters); an unsigned error is
// MediaKeyPackageErrorUnsigned.
const (
	MediaKeyPackageReceipt       = `application/cms; encapsulatingContent=signedData; innerContent=keyPackageReceipt`
	MediaKeyPackageError         = `application/cms; encapsulatingContent=signedData; innerContent=keyPackageError`
	MediaKeyPackageErrorUnsigned = `application/cms; innerContent=keyPackageError`
)

// MaxKeyPackageReturn bounds a receipt or error (with its signature and certificates).
const MaxKeyPackageReturn = 16 << 10

// KeyPackageReturn is a parsed receipt or error.
type KeyPackageReturn struct {
	Receipt bool // a KeyPackageReceipt; otherwise a KeyPackageError
	// PkgID is the key package identifier it names (receiptOf, errorOf); nil when the error
	// names none or names it by an attribute.
	PkgID []byte
	// ByType and ByValue are the SIREntityName of who received it (receivedBy, errorBy).
	ByType  asn1.ObjectIdentifier
	ByValue []byte
	// ErrorCode is an error's code: its RFC 7191 name, "enum N" for another number, or the OID.
	ErrorCode string
	// Signed is the verified SignedData around it (nil for an unsigned error): its Signer is
	// the certificate whose key signed; who may sign is the caller's decision.
	Signed *cms.Signed
}

// By renders the SIREntityName: the distinguished name for id-dn, else "OID:hex".
func (r *KeyPackageReturn) By() string {
	if r.ByType.Equal(OIDSIRENDistinguishedName) {
		var rdn pkix.RDNSequence
		if rest, err := asn1.Unmarshal(r.ByValue, &rdn); err == nil && len(rest) == 0 {
			var n pkix.Name
			n.FillFromRDNSequence(&rdn)
			return n.String()
		}
	}
	return r.ByType.String() + ":" + hex.EncodeToString(r.ByValue)
}

// errorNames are RFC 7191 §4's EnumeratedErrorCode values that a key package recipient reports
// about a server-generated key most often; other numbers are shown as "enum N".
var errorNames = map[int]string{
	1: "decodeFailure", 2: "badContentInfo", 3: "badSignedData", 4: "badEncapContent", 5: "badCertificate",
	6: "badSignerInfo", 9: "missingContent", 10: "noTrustAnchor", 11: "notAuthorized", 16: "signatureFailure",
	33: "revokedCertificate", 60: "ambiguousDecrypt", 61: "noDecryptKey", 62: "badEncryptedData", 63: "badEnvelopedData",
	66: "badKeyAgreeRecipientInfo", 67: "badKEKRecipientInfo", 68: "badEncryptContent", 69: "badEncryptAlgorithm",
	71: "decryptFailure", 83: "badMessageDigest", 84: "badKeyPackage", 88: "unsupportedAsymmetricKeyPackage",
	91: "noMatchingRecipientInfo", 92: "unsupportedKeyWrapAlgorithm", 93: "badKeyTransRecipientInfo", 127: "other",
}

// ErrorCodeByName returns the RFC 7191 §4 number of an error name (or of "N").
func ErrorCodeByName(name string) (int, bool) {
	for n, s := range errorNames {
		if s == name {
			return n, true
		}
	}
	if n, err := strconv.Atoi(name); err == nil && n >= 0 && n <= 127 {
		return n, true
	}
	return 0, false
}

// ParseKeyPackageReturn parses what a client POSTs to /serverkeygen/return: the DER
// ContentInfo of a SignedData holding a KeyPackageReceipt or KeyPackageError (signature and
// signed attributes verified, RFC 5652 §5.4), or of an unsigned KeyPackageError. RFC 8295
// §5.2.1: "The key package receipt is digitally signed" — an unsigned receipt is refused.
func ParseKeyPackageReturn(der []byte) (*KeyPackageReturn, error) {
	ctype, content, sd, err := openContentInfo(der, MaxKeyPackageReturn, "key package return")
	if err != nil {
		return nil, err
	}
	out := &KeyPackageReturn{Signed: sd}
	switch {
	case sd != nil:
		switch {
		case ctype.Equal(OIDKeyPackageReceipt):
			out.Receipt = true
		case ctype.Equal(OIDKeyPackageError):
		default:
			return nil, fmt.Errorf("key package return: the SignedData holds %v, not a key package receipt or error (RFC 7191)", ctype)
		}
	case ctype.Equal(OIDKeyPackageError):
	case ctype.Equal(OIDKeyPackageReceipt):
		return nil, errors.New("key package return: an unsigned receipt (RFC 8295 §5.2.1: the receipt is digitally signed)")
	default:
		return nil, fmt.Errorf("key package return: content type %v is neither a SignedData nor a key package error", ctype)
	}
	if err := out.parseBody(content); err != nil {
		return nil, fmt.Errorf("key package return: %w", err)
	}
	return out, nil
}

// parseBody reads KeyPackageReceipt or KeyPackageError (RFC 7191 §3, §4).
func (r *KeyPackageReturn) parseBody(der []byte) error {
	in := cryptobyte.String(der)
	var body cryptobyte.String
	if !in.ReadASN1(&body, cbasn1.SEQUENCE) || !in.Empty() {
		return errors.New("malformed (DER SEQUENCE expected)")
	}
	if body.PeekASN1Tag(cbasn1.INTEGER) {
		var v int64
		// KeyPkgVersion DEFAULT v2: DER omits it, but a v1 or an explicit v2 is readable.
		if !body.ReadASN1Int64WithTag(&v, cbasn1.INTEGER) || v < 1 || v > 2 {
			return errors.New("bad version")
		}
	}
	if r.Receipt {
		id, err := readKeyPkgIdentifier(&body)
		if err != nil {
			return fmt.Errorf("receiptOf: %w", err)
		}
		r.PkgID = id
	} else if body.PeekASN1Tag(cbasn1.Tag(0).Constructed().ContextSpecific()) {
		// errorOf [0] KeyPkgIdentifier: a tagged CHOICE is explicitly tagged (X.680 §31.2.7).
		var wrapped cryptobyte.String
		if !body.ReadASN1(&wrapped, cbasn1.Tag(0).Constructed().ContextSpecific()) {
			return errors.New("malformed errorOf")
		}
		id, err := readKeyPkgIdentifier(&wrapped)
		if err != nil || !wrapped.Empty() {
			return fmt.Errorf("errorOf: malformed (%v)", err)
		}
		r.PkgID = id
	}
	var siren, value cryptobyte.String
	if !body.ReadASN1(&siren, cbasn1.SEQUENCE) || !siren.ReadASN1ObjectIdentifier(&r.ByType) ||
		!siren.ReadASN1(&value, cbasn1.OCTET_STRING) || !siren.Empty() {
		return errors.New("malformed SIREntityName")
	}
	r.ByValue = append([]byte{}, value...)
	if !r.Receipt {
		switch {
		case body.PeekASN1Tag(cbasn1.ENUM):
			var n int
			if !body.ReadASN1Enum(&n) {
				return errors.New("malformed errorCode")
			}
			if name, ok := errorNames[n]; ok {
				r.ErrorCode = name
			} else {
				r.ErrorCode = "enum " + strconv.Itoa(n)
			}
		case body.PeekASN1Tag(cbasn1.OBJECT_IDENTIFIER):
			var oid asn1.ObjectIdentifier
			if !body.ReadASN1ObjectIdentifier(&oid) {
				return errors.New("malformed errorCode")
			}
			r.ErrorCode = oid.String()
		default:
			return errors.New("missing errorCode")
		}
	}
	if !body.Empty() {
		return errors.New("trailing data")
	}
	return nil
}

// readKeyPkgIdentifier reads KeyPkgIdentifier ::= CHOICE { pkgID OCTET STRING, attribute
// SingleAttribute }; an attribute gives a nil identifier.
func readKeyPkgIdentifier(s *cryptobyte.String) ([]byte, error) {
	switch {
	case s.PeekASN1Tag(cbasn1.OCTET_STRING):
		var id cryptobyte.String
		if !s.ReadASN1(&id, cbasn1.OCTET_STRING) {
			return nil, errors.New("malformed pkgID")
		}
		return append([]byte{}, id...), nil
	case s.PeekASN1Tag(cbasn1.SEQUENCE):
		if !s.SkipASN1(cbasn1.SEQUENCE) {
			return nil, errors.New("malformed attribute")
		}
		return nil, nil
	}
	return nil, errors.New("neither a pkgID nor an attribute")
}

// sirenDN is the SIREntityName of cert's subject (id-dn).
func sirenDN(b *cryptobyte.Builder, cert *x509.Certificate) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(OIDSIRENDistinguishedName)
		b.AddASN1OctetString(cert.RawSubject)
	})
}

// KeyPackageID is the key package identifier coapca uses for a server-generated key: the
// serial number of the certificate issued for it (big-endian bytes). coapca's key packages
// carry no key-package-identifier-and-receipt-request attribute (RFC 7191 §5), so client and
// server agree on this one.
func KeyPackageID(cert *x509.Certificate) []byte { return cert.SerialNumber.Bytes() }

// SignKeyPackageReceipt builds the signed receipt (RFC 7191 §3, RFC 8295 §5.2.1) for the key
// of cert, received by cert's subject and signed with that very key: the ContentInfo of a
// SignedData holding the KeyPackageReceipt.
func SignKeyPackageReceipt(rnd io.Reader, key crypto.Signer, cert *x509.Certificate, chain []*x509.Certificate, now time.Time) ([]byte, error) {
	body, err := MarshalKeyPackageReceipt(cert)
	if err != nil {
		return nil, err
	}
	return signReturn(rnd, OIDKeyPackageReceipt, body, key, cert, chain, now)
}

// MarshalKeyPackageReceipt is the DER KeyPackageReceipt (RFC 7191 §3) for the key package of
// cert (KeyPackageID), received by cert's subject; version v2 is the DEFAULT and so omitted.
func MarshalKeyPackageReceipt(cert *x509.Certificate) ([]byte, error) {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1OctetString(KeyPackageID(cert)) // receiptOf pkgID
		sirenDN(b, cert)
	})
	return b.Bytes()
}

// SignKeyPackageError builds the signed error (RFC 7191 §4) about the key package of cert
// with an EnumeratedErrorCode; key signs it with cert (e.g. the client's own certificate when
// the delivered key could not be recovered).
func SignKeyPackageError(rnd io.Reader, code int, about *x509.Certificate, key crypto.Signer, cert *x509.Certificate,
	chain []*x509.Certificate, now time.Time) ([]byte, error) {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1OctetString(KeyPackageID(about))
		})
		sirenDN(b, cert)
		b.AddASN1Enum(int64(code))
	})
	body, err := b.Bytes()
	if err != nil {
		return nil, err
	}
	return signReturn(rnd, OIDKeyPackageError, body, key, cert, chain, now)
}

func signReturn(rnd io.Reader, ctype asn1.ObjectIdentifier, body []byte, key crypto.Signer, cert *x509.Certificate,
	chain []*x509.Certificate, now time.Time) ([]byte, error) {
	sd, err := cms.Sign(rnd, ctype, body, key, append([]*x509.Certificate{cert}, chain...), now)
	if err != nil {
		return nil, err
	}
	return cms.ContentInfo(cms.OIDSignedData, sd)
}
