package cms

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"slices"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Sign returns the DER of a SignedData (RFC 5652 §5.1; the content, not a ContentInfo: callers
// nest it in an EnvelopedData or wrap it with ContentInfo) encapsulating content of type
// contentType, signed by signer, whose certificate is certs[0]; all of certs are included.
// Signed attributes carry contentType, messageDigest and signingTime (RFC 5652 §5.3: they MUST
// be present when the content type is not id-data). The digest is SHA-256 (SHA-512 with
// Ed25519, RFC 8419 §3).
func Sign(rnd io.Reader, contentType asn1.ObjectIdentifier, content []byte, signer crypto.Signer, certs []*x509.Certificate, now time.Time) ([]byte, error) {
	return SignWithAttributes(rnd, contentType, content, signer, certs, now)
}

// Attribute is a signed attribute other than contentType, messageDigest and signingTime: its
// type and the DER of its one value (RFC 5652 §5.3, SignedAttributes).
type Attribute struct {
	Type  asn1.ObjectIdentifier
	Value []byte
}

// SignWithAttributes is Sign with further signed attributes (e.g. RFC 7191 §5's
// key-package-identifier-and-receipt-request).
func SignWithAttributes(rnd io.Reader, contentType asn1.ObjectIdentifier, content []byte, signer crypto.Signer, certs []*x509.Certificate,
	now time.Time, extra ...Attribute) ([]byte, error) {
	if len(certs) == 0 {
		return nil, errors.New("cms: sign: no signer certificate")
	}
	var digestOID, sigOID asn1.ObjectIdentifier
	var h crypto.Hash
	switch signer.Public().(type) {
	case *ecdsa.PublicKey:
		digestOID, sigOID, h = oidSHA256, oidECDSASHA256, crypto.SHA256
	case *rsa.PublicKey:
		digestOID, sigOID, h = oidSHA256, oidSHA256WithRSA, crypto.SHA256
	case ed25519.PublicKey:
		digestOID, sigOID, h = oidSHA512, oidEd25519, crypto.SHA512
	default:
		return nil, fmt.Errorf("cms: sign: unsupported key type %T", signer.Public())
	}
	hh := h.New()
	hh.Write(content)
	md := hh.Sum(nil)
	list := []func() ([]byte, error){
		attr(oidAttrContentType, func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(contentType) }),
		attr(oidAttrMessageDigest, func(b *cryptobyte.Builder) { b.AddASN1OctetString(md) }),
		attr(oidAttrSigningTime, func(b *cryptobyte.Builder) { b.AddASN1UTCTime(now.UTC().Truncate(time.Second)) }),
	}
	for _, a := range extra {
		if a.Type.Equal(oidAttrContentType) || a.Type.Equal(oidAttrMessageDigest) || a.Type.Equal(oidAttrSigningTime) {
			return nil, fmt.Errorf("cms: sign: attribute %v is set by Sign itself", a.Type)
		}
		list = append(list, attr(a.Type, func(b *cryptobyte.Builder) { b.AddBytes(a.Value) }))
	}
	attrs, err := attrSet(list...)
	if err != nil {
		return nil, fmt.Errorf("cms: signed attributes: %w", err)
	}
	// RFC 5652 §5.4: the signature is over the DER of the SET OF attributes (tag 0x31).
	var sig []byte
	if h == crypto.SHA512 {
		sig, err = signer.Sign(rnd, attrs, crypto.Hash(0))
	} else {
		d := sha256.Sum256(attrs)
		sig, err = signer.Sign(rnd, d[:], h)
	}
	if err != nil {
		return nil, fmt.Errorf("cms: sign: %w", err)
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		// RFC 5652 §5.1: version 3 when eContentType is not id-data.
		version := int64(3)
		if contentType.Equal(OIDData) {
			version = 1
		}
		b.AddASN1Int64(version)
		b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) { addAlgAbsent(b, digestOID) })
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(contentType)
			b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { b.AddASN1OctetString(content) })
		})
		b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			for _, c := range certs {
				b.AddBytes(c.Raw)
			}
		})
		b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // SignerInfo
				b.AddASN1Int64(1) // sid = issuerAndSerialNumber
				addIssuerAndSerial(b, certs[0])
				addAlgAbsent(b, digestOID)
				b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
					b.AddBytes(setContents(attrs)) // the SET's contents, under the IMPLICIT [0]
				})
				addAlgAbsent(b, sigOID)
				b.AddASN1OctetString(sig)
			})
		})
	})
	return b.Bytes()
}

func attr(oid asn1.ObjectIdentifier, value func(*cryptobyte.Builder)) func() ([]byte, error) {
	return func() ([]byte, error) {
		var b cryptobyte.Builder
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(oid)
			b.AddASN1(cbasn1.SET, value)
		})
		return b.Bytes()
	}
}

// attrSet encodes the attributes as a DER SET OF: sorted by their encodings (X.690 §11.6), or
// a verifier that re-encodes them (OpenSSL does) computes another signature input.
func attrSet(attrs ...func() ([]byte, error)) ([]byte, error) {
	enc := make([][]byte, len(attrs))
	for i, a := range attrs {
		var err error
		if enc[i], err = a(); err != nil {
			return nil, err
		}
	}
	slices.SortFunc(enc, bytes.Compare)
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
		for _, e := range enc {
			b.AddBytes(e)
		}
	})
	return b.Bytes()
}

func addAlgAbsent(b *cryptobyte.Builder, oid asn1.ObjectIdentifier) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(oid) })
}

// Signed is a verified SignedData.
type Signed struct {
	ContentType asn1.ObjectIdentifier
	Content     []byte
	Signer      *x509.Certificate   // the certificate whose key made the signature
	Certs       []*x509.Certificate // every certificate the SignedData carries
	// Attributes are the signed attributes other than contentType and messageDigest, each
	// with the DER of its first value (signed, so covered by the verified signature).
	Attributes []Attribute
}

// Attribute returns the value of the signed attribute of type oid, or nil.
func (s *Signed) Attribute(oid asn1.ObjectIdentifier) []byte {
	for _, a := range s.Attributes {
		if a.Type.Equal(oid) {
			return a.Value
		}
	}
	return nil
}

// Verify parses the DER of a SignedData (the content, not a ContentInfo) with exactly one
// signer, checks the signed attributes (contentType and messageDigest, RFC 5652 §5.4, §11) and
// the signature with the signer's certificate found among the SignedData's certificates. It does
// not judge that certificate: the caller checks that it chains to its trust anchors and may
// speak for the content.
func Verify(der []byte) (*Signed, error) {
	if len(der) > MaxMessageSize {
		return nil, fmt.Errorf("cms: message of %d bytes is larger than %d", len(der), MaxMessageSize)
	}
	in := cryptobyte.String(der)
	var sd, digests, eci, certsField, signers cryptobyte.String
	var version int64
	var hasCerts bool
	if !in.ReadASN1(&sd, cbasn1.SEQUENCE) || !in.Empty() || !sd.ReadASN1Integer(&version) ||
		!sd.ReadASN1(&digests, cbasn1.SET) || !sd.ReadASN1(&eci, cbasn1.SEQUENCE) ||
		!sd.ReadOptionalASN1(&certsField, &hasCerts, cbasn1.Tag(0).Constructed().ContextSpecific()) ||
		!sd.SkipOptionalASN1(cbasn1.Tag(1).Constructed().ContextSpecific()) || !sd.ReadASN1(&signers, cbasn1.SET) || !sd.Empty() {
		return nil, errors.New("cms: malformed SignedData (DER expected)")
	}
	out := &Signed{}
	var ec, content cryptobyte.String
	var hasContent bool
	if !eci.ReadASN1ObjectIdentifier(&out.ContentType) ||
		!eci.ReadOptionalASN1(&ec, &hasContent, cbasn1.Tag(0).Constructed().ContextSpecific()) || !eci.Empty() {
		return nil, errors.New("cms: malformed EncapsulatedContentInfo")
	}
	if !hasContent || !ec.ReadASN1(&content, cbasn1.OCTET_STRING) || !ec.Empty() {
		return nil, errors.New("cms: SignedData without encapsulated content (detached signatures are not supported)")
	}
	out.Content = append([]byte{}, content...)
	for hasCerts && !certsField.Empty() {
		var raw cryptobyte.String
		var tag cbasn1.Tag
		if !certsField.ReadAnyASN1Element(&raw, &tag) {
			return nil, errors.New("cms: malformed CertificateSet")
		}
		if tag != cbasn1.SEQUENCE {
			continue
		}
		c, err := x509.ParseCertificate(raw)
		if err != nil {
			return nil, fmt.Errorf("cms: certificate %d: %w", len(out.Certs), err)
		}
		out.Certs = append(out.Certs, c)
	}
	var si cryptobyte.String
	if !signers.ReadASN1(&si, cbasn1.SEQUENCE) {
		return nil, errors.New("cms: SignedData has no SignerInfo")
	}
	if !signers.Empty() {
		return nil, errors.New("cms: SignedData has more than one SignerInfo")
	}
	var siVersion int64
	var sid, digestAlg, attrsField, sigAlg, sig cryptobyte.String
	var sidTag cbasn1.Tag
	var hasAttrs bool
	var digestOID, sigOID asn1.ObjectIdentifier
	if !si.ReadASN1Integer(&siVersion) || !si.ReadAnyASN1Element(&sid, &sidTag) ||
		!si.ReadASN1(&digestAlg, cbasn1.SEQUENCE) || !digestAlg.ReadASN1ObjectIdentifier(&digestOID) ||
		!si.ReadOptionalASN1(&attrsField, &hasAttrs, cbasn1.Tag(0).Constructed().ContextSpecific()) ||
		!si.ReadASN1(&sigAlg, cbasn1.SEQUENCE) || !sigAlg.ReadASN1ObjectIdentifier(&sigOID) ||
		!si.ReadASN1(&sig, cbasn1.OCTET_STRING) {
		return nil, errors.New("cms: malformed SignerInfo")
	}
	if !hasAttrs {
		// RFC 5652 §5.3: signedAttrs MUST be present for content other than id-data; EST's
		// key packages always need them.
		return nil, errors.New("cms: SignerInfo without signed attributes")
	}
	for _, c := range out.Certs {
		if matchSID(sid, sidTag, c) {
			out.Signer = c
			break
		}
	}
	if out.Signer == nil {
		return nil, errors.New("cms: the signer's certificate is not in the SignedData")
	}
	h, err := digestHash(digestOID)
	if err != nil {
		return nil, err
	}
	// Check contentType and messageDigest (RFC 5652 §11.1, §11.2).
	var gotType, gotDigest bool
	attrs := attrsField
	for !attrs.Empty() {
		var a, set cryptobyte.String
		var oid asn1.ObjectIdentifier
		if !attrs.ReadASN1(&a, cbasn1.SEQUENCE) || !a.ReadASN1ObjectIdentifier(&oid) || !a.ReadASN1(&set, cbasn1.SET) {
			return nil, errors.New("cms: malformed signed attribute")
		}
		switch {
		case oid.Equal(oidAttrContentType):
			var ct asn1.ObjectIdentifier
			if gotType || !set.ReadASN1ObjectIdentifier(&ct) || !set.Empty() || !ct.Equal(out.ContentType) {
				return nil, errors.New("cms: the contentType attribute does not match the content")
			}
			gotType = true
		case oid.Equal(oidAttrMessageDigest):
			var md cryptobyte.String
			if gotDigest || !set.ReadASN1(&md, cbasn1.OCTET_STRING) || !set.Empty() {
				return nil, errors.New("cms: malformed messageDigest attribute")
			}
			hh := h.New()
			hh.Write(out.Content)
			if !bytes.Equal(md, hh.Sum(nil)) {
				return nil, errors.New("cms: messageDigest does not match the content")
			}
			gotDigest = true
		default:
			var v cryptobyte.String
			var tag cbasn1.Tag
			if !set.ReadAnyASN1Element(&v, &tag) {
				return nil, fmt.Errorf("cms: signed attribute %v has no value", oid)
			}
			out.Attributes = append(out.Attributes, Attribute{Type: oid, Value: append([]byte{}, v...)})
		}
	}
	if !gotType || !gotDigest {
		return nil, errors.New("cms: signed attributes lack contentType or messageDigest")
	}
	// The signature covers the attributes re-encoded with the SET OF tag (RFC 5652 §5.4).
	var ab cryptobyte.Builder
	ab.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) { b.AddBytes(attrsField) })
	signed, err := ab.Bytes()
	if err != nil {
		return nil, fmt.Errorf("cms: %w", err)
	}
	alg, err := x509SigAlg(sigOID, h, out.Signer.PublicKey)
	if err != nil {
		return nil, err
	}
	if err := out.Signer.CheckSignature(alg, signed, sig); err != nil {
		return nil, fmt.Errorf("cms: signature does not verify: %w", err)
	}
	return out, nil
}

func matchSID(sid cryptobyte.String, tag cbasn1.Tag, c *x509.Certificate) bool {
	switch tag {
	case cbasn1.SEQUENCE:
		var ias, issuer cryptobyte.String
		serial := new(big.Int)
		return sid.ReadASN1(&ias, cbasn1.SEQUENCE) && ias.ReadASN1Element(&issuer, cbasn1.SEQUENCE) &&
			ias.ReadASN1Integer(serial) && bytes.Equal(issuer, c.RawIssuer) && serial.Cmp(c.SerialNumber) == 0
	case cbasn1.Tag(0).ContextSpecific():
		var ski cryptobyte.String
		return sid.ReadASN1(&ski, tag) && len(c.SubjectKeyId) > 0 && bytes.Equal(ski, c.SubjectKeyId)
	}
	return false
}

func digestHash(oid asn1.ObjectIdentifier) (crypto.Hash, error) {
	switch {
	case oid.Equal(oidSHA256):
		return crypto.SHA256, nil
	case oid.Equal(oidSHA384):
		return crypto.SHA384, nil
	case oid.Equal(oidSHA512):
		return crypto.SHA512, nil
	}
	return 0, fmt.Errorf("cms: unsupported digest algorithm %v", oid)
}

// x509SigAlg maps a SignerInfo's signatureAlgorithm (and, for rsaEncryption, its digest) to
// crypto/x509's name for it.
func x509SigAlg(oid asn1.ObjectIdentifier, h crypto.Hash, pub crypto.PublicKey) (x509.SignatureAlgorithm, error) {
	switch {
	case oid.Equal(oidECDSASHA256):
		return x509.ECDSAWithSHA256, nil
	case oid.Equal(oidECDSASHA384):
		return x509.ECDSAWithSHA384, nil
	case oid.Equal(oidECDSASHA512):
		return x509.ECDSAWithSHA512, nil
	case oid.Equal(oidSHA256WithRSA):
		return x509.SHA256WithRSA, nil
	case oid.Equal(oidSHA384WithRSA):
		return x509.SHA384WithRSA, nil
	case oid.Equal(oidSHA512WithRSA):
		return x509.SHA512WithRSA, nil
	case oid.Equal(oidEd25519):
		return x509.PureEd25519, nil
	case oid.Equal(oidRSAEncryption):
		// RFC 5754 §3.2: rsaEncryption with the digest named beside it.
		switch h {
		case crypto.SHA256:
			return x509.SHA256WithRSA, nil
		case crypto.SHA384:
			return x509.SHA384WithRSA, nil
		case crypto.SHA512:
			return x509.SHA512WithRSA, nil
		}
	case oid.Equal(oidECPublicKey):
		if _, ok := pub.(*ecdsa.PublicKey); ok {
			switch h {
			case crypto.SHA256:
				return x509.ECDSAWithSHA256, nil
			case crypto.SHA384:
				return x509.ECDSAWithSHA384, nil
			case crypto.SHA512:
				return x509.ECDSAWithSHA512, nil
			}
		}
	}
	return 0, fmt.Errorf("cms: unsupported signature algorithm %v", oid)
}

// MarshalAsymmetricKeyPackage returns the DER AsymmetricKeyPackage (RFC 5958 §2: SEQUENCE OF
// OneAsymmetricKey) holding the given PKCS#8 / OneAsymmetricKey encodings.
func MarshalAsymmetricKeyPackage(keys ...[]byte) ([]byte, error) {
	if len(keys) == 0 {
		return nil, errors.New("cms: empty asymmetric key package")
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		for _, k := range keys {
			b.AddBytes(k)
		}
	})
	return b.Bytes()
}

// ParseAsymmetricKeyPackage returns the OneAsymmetricKey encodings of an AsymmetricKeyPackage.
func ParseAsymmetricKeyPackage(der []byte) ([][]byte, error) {
	in := cryptobyte.String(der)
	var seq cryptobyte.String
	if !in.ReadASN1(&seq, cbasn1.SEQUENCE) || !in.Empty() {
		return nil, errors.New("cms: malformed AsymmetricKeyPackage")
	}
	var out [][]byte
	for !seq.Empty() {
		var k cryptobyte.String
		if !seq.ReadASN1Element(&k, cbasn1.SEQUENCE) {
			return nil, errors.New("cms: malformed OneAsymmetricKey")
		}
		out = append(out, append([]byte{}, k...))
	}
	if len(out) == 0 {
		return nil, errors.New("cms: empty AsymmetricKeyPackage")
	}
	return out, nil
}

// setContents returns the contents of a DER TLV.
func setContents(tlv []byte) []byte {
	s := cryptobyte.String(tlv)
	var c cryptobyte.String
	var tag cbasn1.Tag
	s.ReadAnyASN1(&c, &tag)
	return c
}
