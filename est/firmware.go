package est

import (
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"coapca/est/cms"
)

// Firmware packages (RFC 4108) as /firmware delivers them (RFC 8295 §6.1), and the firmware
// package load receipts and errors /firmware/return takes (RFC 8295 §6.2, RFC 4108 §3, §4).
var (
	// OIDFirmwarePackage is id-ct-firmwarePackage (RFC 4108 §2.1.2).
	OIDFirmwarePackage = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 1, 16}
	// OIDFirmwareLoadReceipt is id-ct-firmwareLoadReceipt (RFC 4108 §3).
	OIDFirmwareLoadReceipt = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 1, 17}
	// OIDFirmwareLoadError is id-ct-firmwareLoadError (RFC 4108 §4).
	OIDFirmwareLoadError = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 1, 18}
	// OIDFirmwarePackageID is id-aa-firmwarePackageID (RFC 4108 §2.2.1).
	OIDFirmwarePackageID = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 2, 35}
	// OIDTargetHardwareIDs is id-aa-targetHardwareIDs (RFC 4108 §2.2.2).
	OIDTargetHardwareIDs = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 2, 36}
	// OIDDecryptKeyID is id-aa-decryptKeyID (RFC 4108 §2.2.5): names the symmetric key that
	// decrypts an encrypted firmware package.
	OIDDecryptKeyID = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 2, 37}
)

// Media types of RFC 8295 §6 with RFC 7193's parameters.
const (
	MediaFirmwarePackage       = `application/cms; encapsulatingContent=signedData; innerContent=firmwarePackage`
	MediaFirmwarePackageEnc    = `application/cms; encapsulatingContent="signedData, encryptedData"; innerContent=firmwarePackage`
	MediaFirmwareReceipt       = `application/cms; encapsulatingContent=signedData; innerContent=firmwarePackageLoadReceipt`
	MediaFirmwareError         = `application/cms; encapsulatingContent=signedData; innerContent=firmwarePackageLoadError`
	MediaFirmwareReceiptPlain  = `application/cms; innerContent=firmwarePackageLoadReceipt`
	MediaFirmwareErrorUnsigned = `application/cms; innerContent=firmwarePackageLoadError`
)

// Bounds of what the firmware parsers accept.
const (
	MaxFirmwareImage  = 16 << 20
	MaxFirmwareReturn = 16 << 10
	maxHWTypes        = 16
	maxLegacyName     = 256
	maxHWSerial       = 256
)

// FirmwareName is a PreferredOrLegacyPackageIdentifier (RFC 4108 §2.2.1): the preferred form
// (an OID and a version number) or a legacy octet string.
type FirmwareName struct {
	ID      asn1.ObjectIdentifier // preferred: fwPkgID
	Version int64                 // preferred: verNum (0..MAX)
	Legacy  []byte                // legacy (when ID is nil)
}

// String renders the name: "OID:VERSION" or "legacy:HEX".
func (n FirmwareName) String() string {
	if n.ID != nil {
		return n.ID.String() + ":" + strconv.FormatInt(n.Version, 10)
	}
	return fmt.Sprintf("legacy:%x", n.Legacy)
}

// ParseFirmwareName reads the preferred form "OID:VERSION" (e.g. 1.3.6.1.4.1.99999.1:3).
func ParseFirmwareName(s string) (FirmwareName, error) {
	oidText, verText, ok := strings.Cut(s, ":")
	ver, err := strconv.ParseInt(verText, 10, 64)
	if !ok || err != nil || ver < 0 {
		return FirmwareName{}, fmt.Errorf("firmware name %q: want OID:VERSION", s)
	}
	var oid asn1.ObjectIdentifier
	for _, part := range strings.Split(oidText, ".") {
		v, err := strconv.Atoi(part)
		if err != nil || v < 0 {
			return FirmwareName{}, fmt.Errorf("firmware name %q: %q is not an OID", s, oidText)
		}
		oid = append(oid, v)
	}
	if len(oid) < 2 || oid[0] > 2 || (oid[0] < 2 && oid[1] > 39) {
		return FirmwareName{}, fmt.Errorf("firmware name %q: %q is not an OID", s, oidText)
	}
	return FirmwareName{ID: oid, Version: ver}, nil
}

func (n FirmwareName) add(b *cryptobyte.Builder) {
	if n.ID != nil {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(n.ID)
			b.AddASN1Int64(n.Version)
		})
		return
	}
	b.AddASN1OctetString(n.Legacy)
}

func (n FirmwareName) check() error {
	switch {
	case n.ID != nil && n.Version < 0:
		return errors.New("firmware name: negative version")
	case n.ID == nil && (len(n.Legacy) == 0 || len(n.Legacy) > maxLegacyName):
		return errors.New("firmware name: neither a preferred nor a legacy name")
	}
	return nil
}

func readFirmwareName(s *cryptobyte.String) (FirmwareName, error) {
	var n FirmwareName
	switch {
	case s.PeekASN1Tag(cbasn1.SEQUENCE):
		var p cryptobyte.String
		if !s.ReadASN1(&p, cbasn1.SEQUENCE) || !p.ReadASN1ObjectIdentifier(&n.ID) || !p.ReadASN1Integer(&n.Version) || !p.Empty() || n.Version < 0 {
			return n, errors.New("malformed preferred firmware package identifier")
		}
	case s.PeekASN1Tag(cbasn1.OCTET_STRING):
		var l cryptobyte.String
		if !s.ReadASN1(&l, cbasn1.OCTET_STRING) {
			return n, errors.New("malformed legacy firmware package identifier")
		}
		n.Legacy = append([]byte{}, l...)
	default:
		return n, errors.New("missing firmware package identifier")
	}
	return n, n.check()
}

// SignFirmwarePackage returns a firmware package (RFC 4108 §2): the ContentInfo of a SignedData
// by signer (certificate chain[0]) whose content is FirmwarePkgData (the image), with the
// signed attributes RFC 4108 §2.2 requires: content-type, message-digest, the
// firmware-package-identifier name, and the target-hardware-module-identifiers hwTypes (RFC
// 4108 §2.2.2: required unless community identifiers are used, which coapca does not write).
func SignFirmwarePackage(rnd io.Reader, image []byte, name FirmwareName, hwTypes []asn1.ObjectIdentifier, signer crypto.Signer,
	chain []*x509.Certificate, now time.Time) ([]byte, error) {
	return signFirmware(rnd, image, name, hwTypes, nil, nil, signer, chain, now)
}

// SignEncryptedFirmwarePackage is SignFirmwarePackage with the firmware encrypted (RFC 4108
// §2.1.3, RFC 8295 §6.1.2 "encrypted ... prior to signature"): the SignedData holds an
// EncryptedData (AES-CBC under key) of the FirmwarePkgData, and the decrypt-key-identifier
// attribute keyID names key, which RFC 4108 §2.2.5 requires ("MUST be present" when the package
// is encrypted) and which the caller delivers to the clients by other means (coapca: a
// symmetric key package, RFC 8295 §5, encrypted for each client).
func SignEncryptedFirmwarePackage(rnd io.Reader, image []byte, name FirmwareName, hwTypes []asn1.ObjectIdentifier, key, keyID []byte,
	signer crypto.Signer, chain []*x509.Certificate, now time.Time) ([]byte, error) {
	if len(keyID) == 0 || len(keyID) > maxLegacyName {
		return nil, fmt.Errorf("firmware package: decrypt key identifier of %d bytes (1..%d)", len(keyID), maxLegacyName)
	}
	return signFirmware(rnd, image, name, hwTypes, key, keyID, signer, chain, now)
}

func signFirmware(rnd io.Reader, image []byte, name FirmwareName, hwTypes []asn1.ObjectIdentifier, key, keyID []byte, signer crypto.Signer,
	chain []*x509.Certificate, now time.Time) ([]byte, error) {
	if len(image) == 0 || len(image) > MaxFirmwareImage {
		return nil, fmt.Errorf("firmware package: image of %d bytes (1..%d)", len(image), MaxFirmwareImage)
	}
	if len(hwTypes) == 0 || len(hwTypes) > maxHWTypes {
		return nil, fmt.Errorf("firmware package: %d target hardware types (1..%d)", len(hwTypes), maxHWTypes)
	}
	if err := name.check(); err != nil {
		return nil, err
	}
	var id, targets, content cryptobyte.Builder
	id.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { name.add(b) }) // stale absent
	targets.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		for _, t := range hwTypes {
			b.AddASN1ObjectIdentifier(t)
		}
	})
	content.AddASN1OctetString(image) // FirmwarePkgData ::= OCTET STRING
	idDER, err := id.Bytes()
	if err != nil {
		return nil, err
	}
	targetsDER, err := targets.Bytes()
	if err != nil {
		return nil, err
	}
	contentDER, err := content.Bytes()
	if err != nil {
		return nil, err
	}
	attrs := []cms.Attribute{{Type: OIDFirmwarePackageID, Value: idDER}, {Type: OIDTargetHardwareIDs, Value: targetsDER}}
	ctype := OIDFirmwarePackage
	if key != nil {
		// RFC 4108 §2.1.3: the encrypted content type is id-ct-firmwarePackage inside an
		// EncryptedData, which the SignedData encapsulates (eContentType id-encryptedData).
		if contentDER, err = cms.EncryptData(rnd, OIDFirmwarePackage, contentDER, key); err != nil {
			return nil, fmt.Errorf("firmware package: %w", err)
		}
		var kid cryptobyte.Builder
		kid.AddASN1OctetString(keyID) // DecryptKeyIdentifier ::= OCTET STRING
		kidDER, err := kid.Bytes()
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, cms.Attribute{Type: OIDDecryptKeyID, Value: kidDER})
		ctype = cms.OIDEncryptedData
	}
	sd, err := cms.SignWithAttributes(rnd, ctype, contentDER, signer, chain, now, attrs...)
	if err != nil {
		return nil, fmt.Errorf("firmware package: %w", err)
	}
	return cms.ContentInfo(cms.OIDSignedData, sd)
}

// Firmware is an opened firmware package.
type Firmware struct {
	Image   []byte
	Name    FirmwareName
	HWTypes []asn1.ObjectIdentifier
	// Signer and Certs of the SignedData: the caller checks that Signer validates to an
	// authorized trust anchor (RFC 8295 §6.1.2).
	Signer *x509.Certificate
	Certs  []*x509.Certificate
	// DecryptKeyID names the key of an encrypted package (RFC 4108 §2.2.5); Image is nil
	// until Decrypt succeeds.
	DecryptKeyID []byte
	encrypted    []byte
}

// Encrypted tells whether the package's firmware is encrypted and not yet decrypted.
func (fw *Firmware) Encrypted() bool { return fw.encrypted != nil }

// Decrypt opens the EncryptedData of an encrypted package with key, the symmetric key named by
// DecryptKeyID, and sets Image.
func (fw *Firmware) Decrypt(key []byte) error {
	if fw.encrypted == nil {
		return errors.New("firmware package: not encrypted")
	}
	ctype, content, err := cms.DecryptData(fw.encrypted, key)
	if err != nil {
		return fmt.Errorf("firmware package: %w", err)
	}
	if !ctype.Equal(OIDFirmwarePackage) {
		return fmt.Errorf("firmware package: the EncryptedData holds %v, not a firmware package (RFC 4108 §2.1.3)", ctype)
	}
	image, err := readFirmwarePkgData(content)
	if err != nil {
		return err
	}
	fw.Image, fw.encrypted = image, nil
	return nil
}

func readFirmwarePkgData(der []byte) ([]byte, error) {
	in := cryptobyte.String(der)
	var image cryptobyte.String
	if !in.ReadASN1(&image, cbasn1.OCTET_STRING) || !in.Empty() {
		return nil, errors.New("firmware package: FirmwarePkgData is not an OCTET STRING")
	}
	return append([]byte{}, image...), nil
}

// FirmwareMediaType returns the RFC 8295 §6.1.2 Content-Type of a signed firmware package
// (der): with encryptedData among the encapsulations when the firmware is encrypted.
func FirmwareMediaType(der []byte) string {
	if sdDER, err := cms.ContentOf(der, cms.OIDSignedData); err == nil {
		if sd, err := cms.Verify(sdDER); err == nil && sd.ContentType.Equal(cms.OIDEncryptedData) {
			return MediaFirmwarePackageEnc
		}
	}
	return MediaFirmwarePackage
}

// OpenFirmwarePackage verifies a signed firmware package (RFC 4108 §2: ContentInfo of a
// SignedData of FirmwarePkgData) and reads its identifier and target hardware. A package
// without the firmware-package-identifier attribute is refused (RFC 4108 §2.2.1: it MUST be
// present).
func OpenFirmwarePackage(der []byte) (*Firmware, error) {
	sdDER, err := cms.ContentOf(der, cms.OIDSignedData)
	if err != nil {
		return nil, fmt.Errorf("firmware package: %w", err)
	}
	sd, err := cms.Verify(sdDER)
	if err != nil {
		return nil, fmt.Errorf("firmware package: %w", err)
	}
	fw := &Firmware{Signer: sd.Signer, Certs: sd.Certs}
	switch {
	case sd.ContentType.Equal(OIDFirmwarePackage):
		if fw.Image, err = readFirmwarePkgData(sd.Content); err != nil {
			return nil, err
		}
	case sd.ContentType.Equal(cms.OIDEncryptedData):
		// RFC 4108 §2.2.5: the decrypt-key-identifier MUST be present in an encrypted package.
		kid := cryptobyte.String(sd.Attribute(OIDDecryptKeyID))
		var id cryptobyte.String
		if !kid.ReadASN1(&id, cbasn1.OCTET_STRING) || !kid.Empty() || len(id) == 0 {
			return nil, errors.New("firmware package: encrypted, but no decrypt-key-identifier attribute (RFC 4108 §2.2.5)")
		}
		fw.DecryptKeyID, fw.encrypted = append([]byte{}, id...), append([]byte{}, sd.Content...)
	default:
		return nil, fmt.Errorf("firmware package: the SignedData holds %v, not a firmware package (RFC 4108)", sd.ContentType)
	}
	idDER := sd.Attribute(OIDFirmwarePackageID)
	if idDER == nil {
		return nil, errors.New("firmware package: no firmware-package-identifier attribute (RFC 4108 §2.2.1)")
	}
	id := cryptobyte.String(idDER)
	var idSeq cryptobyte.String
	if !id.ReadASN1(&idSeq, cbasn1.SEQUENCE) || !id.Empty() {
		return nil, errors.New("firmware package: malformed firmware-package-identifier")
	}
	if fw.Name, err = readFirmwareName(&idSeq); err != nil {
		return nil, fmt.Errorf("firmware package: %w", err)
	}
	if v := sd.Attribute(OIDTargetHardwareIDs); v != nil {
		t := cryptobyte.String(v)
		var seq cryptobyte.String
		if !t.ReadASN1(&seq, cbasn1.SEQUENCE) || !t.Empty() {
			return nil, errors.New("firmware package: malformed target-hardware-module-identifiers")
		}
		for !seq.Empty() {
			var oid asn1.ObjectIdentifier
			if len(fw.HWTypes) == maxHWTypes || !seq.ReadASN1ObjectIdentifier(&oid) {
				return nil, errors.New("firmware package: malformed target-hardware-module-identifiers")
			}
			fw.HWTypes = append(fw.HWTypes, oid)
		}
	}
	return fw, nil
}

// FirmwareReturn is a firmware package load receipt or error (RFC 4108 §3, §4).
type FirmwareReturn struct {
	Receipt  bool // a FirmwarePackageLoadReceipt; otherwise a FirmwarePackageLoadError
	HWType   asn1.ObjectIdentifier
	HWSerial []byte
	// Name is the package it is about (always in a receipt; optional in an error).
	Name *FirmwareName
	// ErrorCode is an error's FirmwarePackageLoadErrorCode, by name where RFC 4108 §4 gives
	// one, else "enum N".
	ErrorCode string
	// Signed is the verified SignedData around it (nil when unsigned, which RFC 8295 §6.2.1
	// allows for receipts and errors alike).
	Signed *cms.Signed
}

// firmwareErrorNames are RFC 4108 §4's FirmwarePackageLoadErrorCode values.
var firmwareErrorNames = map[int]string{
	1: "decodeFailure", 2: "badContentInfo", 3: "badSignedData", 4: "badEncapContent", 5: "badCertificate", 6: "badSignerInfo",
	7: "badSignedAttrs", 8: "badUnsignedAttrs", 9: "missingContent", 10: "noTrustAnchor", 11: "notAuthorized",
	12: "badDigestAlgorithm", 13: "badSignatureAlgorithm", 14: "unsupportedKeySize", 15: "signatureFailure",
	16: "contentTypeMismatch", 17: "badEncryptedData", 18: "unprotectedAttrsPresent", 19: "badEncryptContent",
	20: "badEncryptAlgorithm", 21: "missingCiphertext", 22: "noDecryptKey", 23: "decryptFailure", 24: "badCompressAlgorithm",
	25: "missingCompressedContent", 26: "decompressFailure", 27: "wrongHardware", 28: "stalePackage", 29: "notInCommunity",
	30: "unsupportedPackageType", 31: "missingDependency", 32: "wrongDependencyVersion", 33: "insufficientMemory",
	34: "badFirmware", 35: "unsupportedParameters", 36: "breaksDependency", 99: "otherError",
}

// FirmwareErrorCodeByName returns the RFC 4108 §4 number of an error name (or of "N").
func FirmwareErrorCodeByName(name string) (int, bool) {
	for n, s := range firmwareErrorNames {
		if s == name {
			return n, true
		}
	}
	if n, err := strconv.Atoi(name); err == nil && n >= 0 && n <= 127 {
		return n, true
	}
	return 0, false
}

// MarshalFirmwareReceipt returns the DER FirmwarePackageLoadReceipt (RFC 4108 §3) for the
// package name loaded into hardware hwType/hwSerial; version v1 is the DEFAULT and omitted.
func MarshalFirmwareReceipt(hwType asn1.ObjectIdentifier, hwSerial []byte, name FirmwareName) ([]byte, error) {
	if err := name.check(); err != nil {
		return nil, err
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(hwType)
		b.AddASN1OctetString(hwSerial)
		name.add(b)
	})
	return b.Bytes()
}

// MarshalFirmwareError returns the DER FirmwarePackageLoadError (RFC 4108 §4) with errorCode
// code about the package name (nil: none named).
func MarshalFirmwareError(hwType asn1.ObjectIdentifier, hwSerial []byte, code int, name *FirmwareName) ([]byte, error) {
	if name != nil {
		if err := name.check(); err != nil {
			return nil, err
		}
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(hwType)
		b.AddASN1OctetString(hwSerial)
		b.AddASN1Enum(int64(code))
		if name != nil {
			name.add(b)
		}
	})
	return b.Bytes()
}

// SignFirmwareReturn wraps a receipt or error body (MarshalFirmwareReceipt, MarshalFirmwareError)
// in a SignedData by key (cert's) and returns its ContentInfo.
func SignFirmwareReturn(rnd io.Reader, receipt bool, body []byte, key crypto.Signer, cert *x509.Certificate, chain []*x509.Certificate,
	now time.Time) ([]byte, error) {
	ctype := OIDFirmwareLoadError
	if receipt {
		ctype = OIDFirmwareLoadReceipt
	}
	return signReturn(rnd, ctype, body, key, cert, chain, now)
}

// ParseFirmwareReturn parses what a client POSTs to /firmware/return (RFC 8295 §6.2.1): the
// DER ContentInfo of a FirmwarePackageLoadReceipt or FirmwarePackageLoadError, signed (a
// SignedData, signature verified) or not.
func ParseFirmwareReturn(der []byte) (*FirmwareReturn, error) {
	ctype, content, sd, err := openContentInfo(der, MaxFirmwareReturn, "firmware return")
	if err != nil {
		return nil, err
	}
	out := &FirmwareReturn{Signed: sd}
	switch {
	case ctype.Equal(OIDFirmwareLoadReceipt):
		out.Receipt = true
	case ctype.Equal(OIDFirmwareLoadError):
	default:
		return nil, fmt.Errorf("firmware return: content type %v is neither a firmware load receipt nor error (RFC 4108)", ctype)
	}
	if err := out.parseBody(content); err != nil {
		return nil, fmt.Errorf("firmware return: %w", err)
	}
	return out, nil
}

func (r *FirmwareReturn) parseBody(der []byte) error {
	in := cryptobyte.String(der)
	var body, serial cryptobyte.String
	if !in.ReadASN1(&body, cbasn1.SEQUENCE) || !in.Empty() {
		return errors.New("malformed (DER SEQUENCE expected)")
	}
	if body.PeekASN1Tag(cbasn1.INTEGER) {
		var v int64
		if !body.ReadASN1Int64WithTag(&v, cbasn1.INTEGER) || v != 1 {
			return errors.New("unsupported version")
		}
	}
	if !body.ReadASN1ObjectIdentifier(&r.HWType) || !body.ReadASN1(&serial, cbasn1.OCTET_STRING) || len(serial) > maxHWSerial {
		return errors.New("malformed hwType or hwSerialNum")
	}
	r.HWSerial = append([]byte{}, serial...)
	if r.Receipt {
		n, err := readFirmwareName(&body)
		if err != nil {
			return err
		}
		r.Name = &n
		// trustAnchorKeyID OCTET STRING OPTIONAL, decryptKeyID [1] IMPLICIT OCTET STRING OPTIONAL
		if !body.SkipOptionalASN1(cbasn1.OCTET_STRING) || !body.SkipOptionalASN1(cbasn1.Tag(1).ContextSpecific()) {
			return errors.New("malformed trustAnchorKeyID or decryptKeyID")
		}
	} else {
		var code int
		if !body.ReadASN1Enum(&code) {
			return errors.New("malformed errorCode")
		}
		if name, ok := firmwareErrorNames[code]; ok {
			r.ErrorCode = name
		} else {
			r.ErrorCode = "enum " + strconv.Itoa(code)
		}
		// vendorErrorCode INTEGER OPTIONAL
		if !body.SkipOptionalASN1(cbasn1.INTEGER) {
			return errors.New("malformed vendorErrorCode")
		}
		if body.PeekASN1Tag(cbasn1.SEQUENCE) || body.PeekASN1Tag(cbasn1.OCTET_STRING) {
			n, err := readFirmwareName(&body)
			if err != nil {
				return err
			}
			r.Name = &n
		}
		// config [1] IMPLICIT SEQUENCE OF CurrentFWConfig OPTIONAL
		if !body.SkipOptionalASN1(cbasn1.Tag(1).Constructed().ContextSpecific()) {
			return errors.New("malformed config")
		}
	}
	if !body.Empty() {
		return errors.New("trailing data")
	}
	return nil
}
