package cms

import (
	"crypto/aes"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// OIDEncryptedData is id-encryptedData (RFC 5652 §8).
var OIDEncryptedData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 6}

// EncryptData returns the DER EncryptedData (RFC 5652 §8; not wrapped in a ContentInfo) of
// content of contentType under key, a 16-, 24- or 32-byte AES key used in CBC mode with a fresh
// IV (RFC 3565 §2.3). The key is managed by the caller, e.g. named by a decrypt-key-identifier
// (RFC 4108 §2.2.5) and delivered separately.
func EncryptData(rnd io.Reader, contentType asn1.ObjectIdentifier, content, key []byte) ([]byte, error) {
	alg := map[int]asn1.ObjectIdentifier{16: OIDAES128CBC, 24: OIDAES192CBC, 32: OIDAES256CBC}[len(key)]
	if alg == nil {
		return nil, fmt.Errorf("cms: an AES key of %d bytes (16, 24 or 32)", len(key))
	}
	iv := make([]byte, aes.BlockSize)
	if _, err := io.ReadFull(rnd, iv); err != nil {
		return nil, fmt.Errorf("cms: iv: %w", err)
	}
	ct := encryptCBC(key, iv, content)
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // EncryptedData
		b.AddASN1Int64(0)                                        // RFC 5652 §8: version 0 when there are no unprotectedAttrs
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // EncryptedContentInfo
			b.AddASN1ObjectIdentifier(contentType)
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1ObjectIdentifier(alg)
				b.AddASN1OctetString(iv)
			})
			b.AddASN1(cbasn1.Tag(0).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(ct) })
		})
	})
	return b.Bytes()
}

// DecryptData opens the DER EncryptedData der (RFC 5652 §8) with key and returns the content
// type and content. Unprotected attributes are ignored; the content must be present.
func DecryptData(der, key []byte) (asn1.ObjectIdentifier, []byte, error) {
	if len(der) > MaxMessageSize {
		return nil, nil, fmt.Errorf("cms: message of %d bytes is larger than %d", len(der), MaxMessageSize)
	}
	in := cryptobyte.String(der)
	var ed, eci, algID, iv, ct cryptobyte.String
	var version int64
	var ctype, calg asn1.ObjectIdentifier
	var hasCT bool
	if !in.ReadASN1(&ed, cbasn1.SEQUENCE) || !in.Empty() || !ed.ReadASN1Integer(&version) || (version != 0 && version != 2) ||
		!ed.ReadASN1(&eci, cbasn1.SEQUENCE) || !ed.SkipOptionalASN1(cbasn1.Tag(1).Constructed().ContextSpecific()) || !ed.Empty() {
		return nil, nil, errors.New("cms: malformed EncryptedData")
	}
	if !eci.ReadASN1ObjectIdentifier(&ctype) || !eci.ReadASN1(&algID, cbasn1.SEQUENCE) || !algID.ReadASN1ObjectIdentifier(&calg) ||
		!eci.ReadOptionalASN1(&ct, &hasCT, cbasn1.Tag(0).ContextSpecific()) || !eci.Empty() {
		return nil, nil, errors.New("cms: malformed EncryptedContentInfo (DER with a primitive [0] encryptedContent expected)")
	}
	if !hasCT {
		return nil, nil, errors.New("cms: EncryptedData without encryptedContent")
	}
	if n := aesKeyLen(calg, OIDAES128CBC, OIDAES192CBC, OIDAES256CBC); n == 0 || n != len(key) {
		return nil, nil, fmt.Errorf("cms: content-encryption algorithm %v does not take a key of %d bytes (AES-CBC only)", calg, len(key))
	}
	if !algID.ReadASN1(&iv, cbasn1.OCTET_STRING) || len(iv) != aes.BlockSize || !algID.Empty() {
		return nil, nil, errors.New("cms: AES-CBC parameters are not a 16-byte IV")
	}
	pt, err := decryptCBC(key, iv, ct)
	if err != nil {
		return nil, nil, err
	}
	return ctype, pt, nil
}

// ParseContentInfo reads a DER ContentInfo of any type (RFC 5652 §3) and returns its content
// type and content.
func ParseContentInfo(der []byte) (asn1.ObjectIdentifier, []byte, error) {
	if len(der) > MaxMessageSize {
		return nil, nil, fmt.Errorf("cms: message of %d bytes is larger than %d", len(der), MaxMessageSize)
	}
	in := cryptobyte.String(der)
	var ci, content cryptobyte.String
	var ctype asn1.ObjectIdentifier
	if !in.ReadASN1(&ci, cbasn1.SEQUENCE) || !in.Empty() || !ci.ReadASN1ObjectIdentifier(&ctype) ||
		!ci.ReadASN1(&content, cbasn1.Tag(0).Constructed().ContextSpecific()) || !ci.Empty() {
		return nil, nil, errors.New("cms: not a DER ContentInfo")
	}
	return ctype, []byte(content), nil
}
