package est

import (
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"coapca/est/cms"
)

// Symmetric key packages (RFC 6031) as /symmetrickeys delivers them (RFC 8295 §5.1), and the
// key-package-identifier-and-receipt-request attribute (RFC 7191 §5) that asks for a receipt.
var (
	// OIDSymmetricKeyPackage is id-ct-KP-sKeyPackage (RFC 6031 §1.1).
	OIDSymmetricKeyPackage = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 1, 25}
	// OIDPSKCKeyID is id-pskc-keyId (RFC 6031 §3.2.1): a UTF8String naming the key.
	OIDPSKCKeyID = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 12, 9}
	// OIDPSKCAlgorithm is id-pskc-algorithm (RFC 6031 §3.2.2): a UTF8String URI.
	OIDPSKCAlgorithm = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 12, 10}
	// OIDKeyPkgIDAndReceiptReq is id-aa-KP-keyPkgIdAndReceiptReq (RFC 7191 §5).
	OIDKeyPkgIDAndReceiptReq = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 2, 1, 5, 65}
)

// MediaSymmetricKeyPackage is the Content-Type of /symmetrickeys (RFC 8295 §5.1.2, RFC 7193):
// application/cms holding a SignedData that encapsulates an EnvelopedData that encapsulates a
// SignedData that encapsulates a SymmetricKeyPackage — "additional encryption and origin
// authentication" — with the encapsulatingContent and innerContent parameters §5.1.2 says
// SHOULD be included (outermost first).
const MediaSymmetricKeyPackage = `application/cms; encapsulatingContent="signedData, envelopedData, signedData"; innerContent=sKeyPackage`

// Bounds of what ParseSymmetricKeyPackage accepts.
const (
	MaxSymmetricKeys     = 64
	MaxSymmetricKeyBytes = 512 // a key (RFC 6031 sKey): far above any symmetric algorithm's
	MaxPkgIDBytes        = 64  // a KeyPkgID coapca reads
)

// SymmetricKey is one OneSymmetricKey (RFC 6031 §2) with the attributes coapca writes.
type SymmetricKey struct {
	ID        string // id-pskc-keyId; required by coapca
	Algorithm string // id-pskc-algorithm, a URI ("" = absent)
	Key       []byte // sKey
}

// MarshalSymmetricKeyPackage returns the DER SymmetricKeyPackage (RFC 6031 §2) holding keys;
// version v1 is the DEFAULT and so omitted, sKeyPkgAttrs are absent.
func MarshalSymmetricKeyPackage(keys []SymmetricKey) ([]byte, error) {
	if len(keys) == 0 || len(keys) > MaxSymmetricKeys {
		return nil, fmt.Errorf("symmetric key package: %d keys (1..%d)", len(keys), MaxSymmetricKeys)
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // sKeys
			for _, k := range keys {
				if err := k.check(); err != nil {
					b.SetError(err)
					return
				}
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // OneSymmetricKey
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // sKeyAttrs
						utf8Attr(b, OIDPSKCKeyID, k.ID)
						if k.Algorithm != "" {
							utf8Attr(b, OIDPSKCAlgorithm, k.Algorithm)
						}
					})
					b.AddASN1OctetString(k.Key)
				})
			}
		})
	})
	return b.Bytes()
}

func (k SymmetricKey) check() error {
	switch {
	case k.ID == "" || !utf8.ValidString(k.ID):
		return errors.New("symmetric key package: a key needs a UTF-8 key identifier (id-pskc-keyId)")
	case !utf8.ValidString(k.Algorithm):
		return errors.New("symmetric key package: the algorithm is not UTF-8")
	case len(k.Key) == 0 || len(k.Key) > MaxSymmetricKeyBytes:
		return fmt.Errorf("symmetric key package: key %q has %d bytes (1..%d)", k.ID, len(k.Key), MaxSymmetricKeyBytes)
	}
	return nil
}

func utf8Attr(b *cryptobyte.Builder, oid asn1.ObjectIdentifier, v string) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oid)
		b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.UTF8String, func(b *cryptobyte.Builder) { b.AddBytes([]byte(v)) })
		})
	})
}

// ParseSymmetricKeyPackage reads a DER SymmetricKeyPackage (RFC 6031 §2). Package attributes
// and key attributes other than keyId and algorithm are skipped; a key without sKey (RFC 6031
// allows one that only names a key by its attributes) or without a keyId is refused, since
// coapca has nothing to write for it.
func ParseSymmetricKeyPackage(der []byte) ([]SymmetricKey, error) {
	in := cryptobyte.String(der)
	var pkg, skeys cryptobyte.String
	if !in.ReadASN1(&pkg, cbasn1.SEQUENCE) || !in.Empty() {
		return nil, errors.New("symmetric key package: not a DER SEQUENCE")
	}
	if pkg.PeekASN1Tag(cbasn1.INTEGER) {
		var v int64
		// KeyPkgVersion ::= INTEGER { v1(1) } (v1, ...)
		if !pkg.ReadASN1Int64WithTag(&v, cbasn1.INTEGER) || v != 1 {
			return nil, errors.New("symmetric key package: unsupported version")
		}
	}
	// sKeyPkgAttrs [0] IMPLICIT SEQUENCE OF Attribute OPTIONAL.
	if !pkg.SkipOptionalASN1(cbasn1.Tag(0).Constructed().ContextSpecific()) {
		return nil, errors.New("symmetric key package: malformed sKeyPkgAttrs")
	}
	if !pkg.ReadASN1(&skeys, cbasn1.SEQUENCE) || !pkg.Empty() {
		return nil, errors.New("symmetric key package: malformed sKeys")
	}
	var out []SymmetricKey
	for !skeys.Empty() {
		if len(out) == MaxSymmetricKeys {
			return nil, fmt.Errorf("symmetric key package: more than %d keys", MaxSymmetricKeys)
		}
		var one, attrs, key cryptobyte.String
		var hasAttrs, hasKey bool
		if !skeys.ReadASN1(&one, cbasn1.SEQUENCE) ||
			!one.ReadOptionalASN1(&attrs, &hasAttrs, cbasn1.SEQUENCE) ||
			!one.ReadOptionalASN1(&key, &hasKey, cbasn1.OCTET_STRING) || !one.Empty() {
			return nil, errors.New("symmetric key package: malformed OneSymmetricKey")
		}
		var k SymmetricKey
		for hasAttrs && !attrs.Empty() {
			var a, set cryptobyte.String
			var oid asn1.ObjectIdentifier
			if !attrs.ReadASN1(&a, cbasn1.SEQUENCE) || !a.ReadASN1ObjectIdentifier(&oid) || !a.ReadASN1(&set, cbasn1.SET) || !a.Empty() {
				return nil, errors.New("symmetric key package: malformed key attribute")
			}
			var dst *string
			switch {
			case oid.Equal(OIDPSKCKeyID):
				dst = &k.ID
			case oid.Equal(OIDPSKCAlgorithm):
				dst = &k.Algorithm
			default:
				continue
			}
			var v cryptobyte.String
			if *dst != "" || !set.ReadASN1(&v, cbasn1.UTF8String) || !set.Empty() || !utf8.Valid(v) {
				return nil, fmt.Errorf("symmetric key package: attribute %v must have exactly one UTF8String value", oid)
			}
			*dst = string(v)
		}
		if !hasKey {
			return nil, fmt.Errorf("symmetric key package: key %q carries no sKey", k.ID)
		}
		k.Key = append([]byte{}, key...)
		if err := k.check(); err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	if len(out) == 0 {
		return nil, errors.New("symmetric key package: no keys (SIZE (1..MAX))")
	}
	return out, nil
}

// MarshalKeyPkgIDAndReceiptReq returns the DER KeyPkgIdentifierAndReceiptReq (RFC 7191 §5)
// naming pkgID and asking for a receipt to be sent to receiptsTo (the SIREntityName id-dn of
// that certificate's subject).
func MarshalKeyPkgIDAndReceiptReq(pkgID []byte, receiptsTo *x509.Certificate) ([]byte, error) {
	if len(pkgID) == 0 || len(pkgID) > MaxPkgIDBytes {
		return nil, fmt.Errorf("key package identifier of %d bytes (1..%d)", len(pkgID), MaxPkgIDBytes)
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1OctetString(pkgID)
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // receiptReq
			// encryptReceipt DEFAULT FALSE: omitted; receiptsFrom absent (every recipient).
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { sirenDN(b, receiptsTo) }) // receiptsTo
		})
	})
	return b.Bytes()
}

// ParseKeyPkgIDAndReceiptReq reads KeyPkgIdentifierAndReceiptReq (RFC 7191 §5): the package
// identifier and whether a receipt is requested.
func ParseKeyPkgIDAndReceiptReq(der []byte) (pkgID []byte, receipt bool, err error) {
	in := cryptobyte.String(der)
	var s, id cryptobyte.String
	if !in.ReadASN1(&s, cbasn1.SEQUENCE) || !in.Empty() || !s.ReadASN1(&id, cbasn1.OCTET_STRING) {
		return nil, false, errors.New("key package identifier attribute: malformed")
	}
	if len(id) == 0 || len(id) > MaxPkgIDBytes {
		return nil, false, fmt.Errorf("key package identifier of %d bytes (1..%d)", len(id), MaxPkgIDBytes)
	}
	if s.PeekASN1Tag(cbasn1.SEQUENCE) {
		var req cryptobyte.String
		if !s.ReadASN1(&req, cbasn1.SEQUENCE) {
			return nil, false, errors.New("key package identifier attribute: malformed receiptReq")
		}
		receipt = true
	}
	if !s.Empty() {
		return nil, false, errors.New("key package identifier attribute: trailing data")
	}
	return append([]byte{}, id...), receipt, nil
}

// SealSymmetricKeyPackage wraps a DER SymmetricKeyPackage as /symmetrickeys delivers it
// (MediaSymmetricKeyPackage, RFC 8295 §5.1.2): a SignedData by signer (whose certificate is
// chain[0]) carrying the key-package-identifier-and-receipt-request attribute for pkgID (RFC
// 8295 §5.2: "this attribute only appears when additional encryption is employed"), inside an
// EnvelopedData for to, inside a SignedData by signer again. The result is a ContentInfo.
func SealSymmetricKeyPackage(rnd io.Reader, pkg, pkgID []byte, signer crypto.Signer, chain []*x509.Certificate,
	to cms.Recipient, opts *cms.EncryptOptions, now time.Time) ([]byte, error) {
	if len(chain) == 0 {
		return nil, errors.New("symmetric key package: no signer certificate")
	}
	req, err := MarshalKeyPkgIDAndReceiptReq(pkgID, chain[0])
	if err != nil {
		return nil, err
	}
	inner, err := cms.SignWithAttributes(rnd, OIDSymmetricKeyPackage, pkg, signer, chain, now,
		cms.Attribute{Type: OIDKeyPkgIDAndReceiptReq, Value: req})
	if err != nil {
		return nil, fmt.Errorf("symmetric key package: %w", err)
	}
	env, err := cms.Encrypt(rnd, cms.OIDSignedData, inner, to, opts)
	if err != nil {
		return nil, fmt.Errorf("symmetric key package: %w", err)
	}
	ed, err := cms.ContentOf(env, cms.OIDEnvelopedData)
	if err != nil {
		return nil, err
	}
	outer, err := cms.Sign(rnd, cms.OIDEnvelopedData, ed, signer, chain, now)
	if err != nil {
		return nil, fmt.Errorf("symmetric key package: %w", err)
	}
	return cms.ContentInfo(cms.OIDSignedData, outer)
}

// OpenedSymmetricKeys is what OpenSymmetricKeyPackage recovered.
type OpenedSymmetricKeys struct {
	Keys []SymmetricKey
	// PkgID is the key package identifier of the inner SignedData's
	// key-package-identifier-and-receipt-request attribute (nil without one), and
	// ReceiptRequested whether it asks for a receipt (RFC 7191 §5).
	PkgID            []byte
	ReceiptRequested bool
	// Signers of the outer and inner SignedData with the certificates each carried: the caller
	// checks that they validate to an authorized trust anchor (RFC 8295 §5.1.2: "the client
	// MUST reject it if the digital signature does not validate back to an authorized TA").
	// OuterSigner is nil in the forms without an outer SignedData (plain, signed, enveloped),
	// InnerSigner in the plain form.
	OuterSigner, InnerSigner *x509.Certificate
	OuterCerts, InnerCerts   []*x509.Certificate
	// Encapsulation is the form the package came in (RFC 8295 §5.1.2).
	Encapsulation SymKeyEncapsulation
}

// OpenSymmetricKeyPackage opens a symmetric key package in any encapsulation of RFC 8295
// §5.1.2 (SymKeyEncapsulation, reported in Encapsulation): every SignedData's signature is
// checked, an EnvelopedData (also inside an RFC 6032 encrypted key package) is decrypted with d,
// and the SymmetricKeyPackage is parsed. Whether the signers are trusted, and whether the
// encapsulation is the one the client accepts, is the caller's check.
func OpenSymmetricKeyPackage(der []byte, d cms.Decrypter) (*OpenedSymmetricKeys, error) {
	ctype, content, err := cms.ParseContentInfo(der)
	if err != nil {
		return nil, fmt.Errorf("symmetric key package: %w", err)
	}
	out := &OpenedSymmetricKeys{}
	switch {
	case ctype.Equal(OIDSymmetricKeyPackage):
		out.Encapsulation = SymKeyPlain
		if out.Keys, err = ParseSymmetricKeyPackage(content); err != nil {
			return nil, err
		}
		return out, nil
	case ctype.Equal(cms.OIDEnvelopedData):
		out.Encapsulation = SymKeyEnveloped
		return out, out.openEnveloped(der, d)
	case !ctype.Equal(cms.OIDSignedData):
		return nil, fmt.Errorf("symmetric key package: a ContentInfo of %v is none of the forms of RFC 8295 §5.1.2", ctype)
	}
	outer, err := cms.Verify(content)
	if err != nil {
		return nil, fmt.Errorf("symmetric key package: outer SignedData: %w", err)
	}
	switch {
	case outer.ContentType.Equal(OIDSymmetricKeyPackage):
		out.Encapsulation = SymKeySigned
		return out, out.readInner(outer)
	case outer.ContentType.Equal(cms.OIDEnvelopedData):
		out.Encapsulation = SymKeySignedEnvelopedSigned
		out.OuterSigner, out.OuterCerts = outer.Signer, outer.Certs
		env, err := cms.ContentInfo(cms.OIDEnvelopedData, outer.Content)
		if err != nil {
			return nil, err
		}
		return out, out.openEnveloped(env, d)
	case outer.ContentType.Equal(OIDEncryptedKeyPackage):
		out.Encapsulation = SymKeyEncryptedKeyPackage
		out.OuterSigner, out.OuterCerts = outer.Signer, outer.Certs
		ed, err := ParseEncryptedKeyPackage(outer.Content)
		if err != nil {
			return nil, err
		}
		env, err := cms.ContentInfo(cms.OIDEnvelopedData, ed)
		if err != nil {
			return nil, err
		}
		return out, out.openEnveloped(env, d)
	}
	return nil, fmt.Errorf("symmetric key package: the outer SignedData holds %v, none of the forms of RFC 8295 §5.1.2", outer.ContentType)
}

// openEnveloped decrypts the EnvelopedData env (a ContentInfo) with d and reads the SignedData
// of the SymmetricKeyPackage in it (RFC 8295 §5.1.2, RFC 6032 §2).
func (o *OpenedSymmetricKeys) openEnveloped(env []byte, d cms.Decrypter) error {
	ctype, innerDER, err := cms.Decrypt(env, d)
	if err != nil {
		return fmt.Errorf("symmetric key package: %w", err)
	}
	if !ctype.Equal(cms.OIDSignedData) {
		return fmt.Errorf("symmetric key package: the EnvelopedData holds %v, not a SignedData (RFC 8295 §5.1.2)", ctype)
	}
	inner, err := cms.Verify(innerDER)
	if err != nil {
		return fmt.Errorf("symmetric key package: inner SignedData: %w", err)
	}
	return o.readInner(inner)
}

// readInner reads the SignedData next to the SymmetricKeyPackage: the keys, its signer and the
// key-package-identifier-and-receipt-request attribute.
func (o *OpenedSymmetricKeys) readInner(inner *cms.Signed) error {
	if !inner.ContentType.Equal(OIDSymmetricKeyPackage) {
		return fmt.Errorf("symmetric key package: the inner SignedData holds %v, not a SymmetricKeyPackage (RFC 6031)", inner.ContentType)
	}
	keys, err := ParseSymmetricKeyPackage(inner.Content)
	if err != nil {
		return err
	}
	o.Keys, o.InnerSigner, o.InnerCerts = keys, inner.Signer, inner.Certs
	if v := inner.Attribute(OIDKeyPkgIDAndReceiptReq); v != nil {
		if o.PkgID, o.ReceiptRequested, err = ParseKeyPkgIDAndReceiptReq(v); err != nil {
			return fmt.Errorf("symmetric key package: %w", err)
		}
	}
	return nil
}

// SignKeyPackageReceiptFor builds the signed receipt (RFC 7191 §3, RFC 8295 §5.2.1) of the key
// package pkgID, received by cert's subject and signed with key (cert's).
func SignKeyPackageReceiptFor(rnd io.Reader, pkgID []byte, key crypto.Signer, cert *x509.Certificate, chain []*x509.Certificate,
	now time.Time) ([]byte, error) {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1OctetString(pkgID) // receiptOf pkgID
		sirenDN(b, cert)
	})
	body, err := b.Bytes()
	if err != nil {
		return nil, err
	}
	return signReturn(rnd, OIDKeyPackageReceipt, body, key, cert, chain, now)
}

// SignKeyPackageErrorFor builds the signed error (RFC 7191 §4) about the key package pkgID
// with an EnumeratedErrorCode, signed with key (cert's).
func SignKeyPackageErrorFor(rnd io.Reader, code int, pkgID []byte, key crypto.Signer, cert *x509.Certificate,
	chain []*x509.Certificate, now time.Time) ([]byte, error) {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1OctetString(pkgID)
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
