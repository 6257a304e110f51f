package cms

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rsa"
	_ "crypto/sha1" // SHA-1 is the RFC 8017 default OAEP hash, accepted when a sender names it
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/big"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// MaxMessageSize bounds the CMS messages Decrypt and Verify accept: an encrypted key package is a
// few kilobytes (an RSA-4096 key with the server's chain stays under 16 KiB).
const MaxMessageSize = 256 << 10

// Recipient is who an EnvelopedData is encrypted for. Exactly one of KEK, Cert or PublicKey is set.
type Recipient struct {
	// KEK is a pre-shared AES key (16, 24 or 32 bytes) identified by KEKID: a KEKRecipientInfo
	// (RFC 5652 §6.2.3) with the matching AES Key Wrap (RFC 3565 §2.3.1).
	KEK, KEKID []byte
	// Cert is the recipient's certificate: an EC key gets a KeyAgreeRecipientInfo (RFC 5753),
	// an RSA key a KeyTransRecipientInfo with RSAES-OAEP (RFC 3560). The recipient is named by
	// issuerAndSerialNumber.
	Cert *x509.Certificate
	// PublicKey (an *ecdsa.PublicKey or *rsa.PublicKey) with SubjectKeyID names the recipient by
	// subjectKeyIdentifier when no certificate is at hand.
	PublicKey    crypto.PublicKey
	SubjectKeyID []byte
}

// EncryptOptions choose the algorithms; the zero value means AES-256-CBC and, for ECDH, the AES
// Key Wrap of the same strength.
type EncryptOptions struct {
	ContentCipher asn1.ObjectIdentifier // OIDAES128CBC, OIDAES192CBC or OIDAES256CBC
	KeyWrap       asn1.ObjectIdentifier // for KeyAgreeRecipientInfo: OIDAES{128,192,256}Wrap
}

// Encrypt returns the DER ContentInfo of an EnvelopedData (RFC 5652 §6.1) holding content of
// type contentType, readable by r alone.
func Encrypt(rnd io.Reader, contentType asn1.ObjectIdentifier, content []byte, r Recipient, opts *EncryptOptions) ([]byte, error) {
	var o EncryptOptions
	if opts != nil {
		o = *opts
	}
	if o.ContentCipher == nil {
		o.ContentCipher = OIDAES256CBC
	}
	keyLen := aesKeyLen(o.ContentCipher, OIDAES128CBC, OIDAES192CBC, OIDAES256CBC)
	if keyLen == 0 {
		return nil, fmt.Errorf("cms: unsupported content-encryption algorithm %v", o.ContentCipher)
	}
	cek := make([]byte, keyLen)
	iv := make([]byte, aes.BlockSize)
	if _, err := io.ReadFull(rnd, cek); err != nil {
		return nil, fmt.Errorf("cms: content-encryption key: %w", err)
	}
	if _, err := io.ReadFull(rnd, iv); err != nil {
		return nil, fmt.Errorf("cms: iv: %w", err)
	}
	ri, version, err := recipientInfo(rnd, r, cek, o)
	if err != nil {
		return nil, err
	}
	ct := encryptCBC(cek, iv, content)
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // ContentInfo
		b.AddASN1ObjectIdentifier(OIDEnvelopedData)
		b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // EnvelopedData
				b.AddASN1Int64(version)
				b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) { b.AddBytes(ri) })
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // EncryptedContentInfo
					b.AddASN1ObjectIdentifier(contentType)
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1ObjectIdentifier(o.ContentCipher)
						b.AddASN1OctetString(iv) // RFC 3565 §4.1: AES-IV
					})
					b.AddASN1(cbasn1.Tag(0).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(ct) })
				})
			})
		})
	})
	return b.Bytes()
}

// recipientInfo builds the RecipientInfo for r and returns the EnvelopedData version it implies
// (RFC 5652 §6.1: 0 when every RecipientInfo is version 0, else 2).
func recipientInfo(rnd io.Reader, r Recipient, cek []byte, o EncryptOptions) ([]byte, int64, error) {
	var b cryptobyte.Builder
	pub := r.PublicKey
	if r.Cert != nil {
		pub = r.Cert.PublicKey
	}
	switch {
	case r.KEK != nil:
		wrapOID := aesWrapOID(len(r.KEK))
		if wrapOID == nil {
			return nil, 0, fmt.Errorf("cms: key-encryption key of %d bytes (want 16, 24 or 32)", len(r.KEK))
		}
		if len(r.KEKID) == 0 {
			return nil, 0, errors.New("cms: key-encryption key without an identifier")
		}
		wrapped, err := Wrap(r.KEK, cek)
		if err != nil {
			return nil, 0, err
		}
		// RFC 5652 §6.2.3: kekri, version 4.
		b.AddASN1(cbasn1.Tag(2).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1Int64(4)
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddASN1OctetString(r.KEKID) })
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(wrapOID) })
			b.AddASN1OctetString(wrapped)
		})
		out, err := b.Bytes()
		return out, 2, err
	case pub == nil:
		return nil, 0, errors.New("cms: recipient has neither a key-encryption key nor a public key")
	}
	if r.Cert == nil && len(r.SubjectKeyID) == 0 {
		return nil, 0, errors.New("cms: a recipient public key needs a certificate or a subjectKeyIdentifier")
	}
	switch k := pub.(type) {
	case *rsa.PublicKey:
		// RFC 3560 §3.2: RSAES-OAEP; SHA-256 and MGF1-SHA-256 as RFC 4055 §4 allows.
		ek, err := rsa.EncryptOAEP(sha256.New(), rnd, k, cek, nil)
		if err != nil {
			return nil, 0, fmt.Errorf("cms: RSAES-OAEP: %w", err)
		}
		version := int64(0) // RFC 5652 §6.2.1: 0 with issuerAndSerialNumber, 2 with subjectKeyIdentifier
		if r.Cert == nil {
			version = 2
		}
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1Int64(version)
			if r.Cert != nil {
				addIssuerAndSerial(b, r.Cert)
			} else {
				b.AddASN1(cbasn1.Tag(0).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(r.SubjectKeyID) })
			}
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1ObjectIdentifier(OIDRSAESOAEP)
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // RSAES-OAEP-params
					b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { addAlgNULL(b, oidSHA256) })
					b.AddASN1(cbasn1.Tag(1).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
						b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
							b.AddASN1ObjectIdentifier(oidMGF1)
							addAlgNULL(b, oidSHA256)
						})
					})
				})
			})
			b.AddASN1OctetString(ek)
		})
		out, err := b.Bytes()
		if version == 0 {
			return out, 0, err
		}
		return out, 2, err
	case *ecdsa.PublicKey:
		return kariInfo(rnd, r, k, cek, o)
	}
	return nil, 0, fmt.Errorf("cms: cannot encrypt for a %T recipient key (EC and RSA keys only)", pub)
}

// kariInfo is the KeyAgreeRecipientInfo of RFC 5753 §3.1.1: an ephemeral key on the
// recipient's curve, the X9.63 KDF with SHA-256 over ECC-CMS-SharedInfo, AES Key Wrap.
func kariInfo(rnd io.Reader, r Recipient, k *ecdsa.PublicKey, cek []byte, o EncryptOptions) ([]byte, int64, error) {
	wrapOID := o.KeyWrap
	if wrapOID == nil {
		wrapOID = aesWrapOID(len(cek))
	}
	wrapLen := aesKeyLen(wrapOID, OIDAES128Wrap, OIDAES192Wrap, OIDAES256Wrap)
	if wrapLen == 0 {
		return nil, 0, fmt.Errorf("cms: unsupported key-wrap algorithm %v for key agreement", wrapOID)
	}
	rpub, err := k.ECDH()
	if err != nil {
		return nil, 0, fmt.Errorf("cms: recipient key: %w", err)
	}
	eph, err := rpub.Curve().GenerateKey(rnd)
	if err != nil {
		return nil, 0, fmt.Errorf("cms: ephemeral key: %w", err)
	}
	z, err := eph.ECDH(rpub)
	if err != nil {
		return nil, 0, fmt.Errorf("cms: ECDH: %w", err)
	}
	var wa cryptobyte.Builder
	wa.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(wrapOID) })
	wrapAlg, err := wa.Bytes()
	if err != nil {
		return nil, 0, err
	}
	kek, err := x963KDF(sha256.New, z, wrapAlg, nil, wrapLen)
	if err != nil {
		return nil, 0, err
	}
	wrapped, err := Wrap(kek, cek)
	if err != nil {
		return nil, 0, err
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.Tag(1).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
		b.AddASN1Int64(3)                                                                      // RFC 5652 §6.2.2: version is always 3
		b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { // originator
			b.AddASN1(cbasn1.Tag(1).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { // originatorKey
				// RFC 5753 §3.1.1: id-ecPublicKey with parameters absent (the recipient's curve).
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(oidECPublicKey) })
				b.AddASN1BitString(eph.PublicKey().Bytes())
			})
		})
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(OIDECDHSHA256KDF)
			b.AddBytes(wrapAlg) // KeyWrapAlgorithm
		})
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // recipientEncryptedKeys
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				if r.Cert != nil {
					addIssuerAndSerial(b, r.Cert)
				} else {
					b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { // rKeyId
						b.AddASN1OctetString(r.SubjectKeyID)
					})
				}
				b.AddASN1OctetString(wrapped)
			})
		})
	})
	out, err := b.Bytes()
	return out, 2, err
}

// x963KDF is the ANSI X9.63 KDF as RFC 5753 §7.2 uses it: Hash(Z || counter || SharedInfo),
// SharedInfo being the DER ECC-CMS-SharedInfo with keyInfo, the optional ukm as entityUInfo
// and the key length in bits as suppPubInfo.
func x963KDF(h func() hash.Hash, z, keyInfo, ukm []byte, keyLen int) ([]byte, error) {
	var sb cryptobyte.Builder
	sb.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(keyInfo)
		if ukm != nil {
			b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { b.AddASN1OctetString(ukm) })
		}
		b.AddASN1(cbasn1.Tag(2).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			var bits [4]byte
			binary.BigEndian.PutUint32(bits[:], uint32(keyLen*8))
			b.AddASN1OctetString(bits[:])
		})
	})
	shared, err := sb.Bytes()
	if err != nil {
		return nil, fmt.Errorf("cms: ECC-CMS-SharedInfo: %w", err)
	}
	var out []byte
	for counter := uint32(1); len(out) < keyLen; counter++ {
		hh := h()
		hh.Write(z)
		var c [4]byte
		binary.BigEndian.PutUint32(c[:], counter)
		hh.Write(c[:])
		hh.Write(shared)
		out = hh.Sum(out)
	}
	return out[:keyLen], nil
}

// Decrypter holds what a recipient can open an EnvelopedData with.
type Decrypter struct {
	// KEK returns the key-encryption key with this identifier, or nil.
	KEK func(id []byte) []byte
	// Key is the recipient's private key (*ecdsa.PrivateKey or *rsa.PrivateKey, or any
	// crypto.Decrypter with an RSA key for key transport).
	Key crypto.PrivateKey
	// Cert, when set, is Key's certificate: only RecipientInfos naming it (issuerAndSerialNumber
	// or subjectKeyIdentifier) are tried. Without it, every RecipientInfo of Key's kind is.
	Cert *x509.Certificate
}

// Decrypt opens the DER ContentInfo of an EnvelopedData and returns the type and the bytes of the
// content it carries.
func Decrypt(der []byte, d Decrypter) (asn1.ObjectIdentifier, []byte, error) {
	if len(der) > MaxMessageSize {
		return nil, nil, fmt.Errorf("cms: message of %d bytes is larger than %d", len(der), MaxMessageSize)
	}
	content, err := parseContentInfo(der, OIDEnvelopedData)
	if err != nil {
		return nil, nil, err
	}
	var ed, ris, eci cryptobyte.String
	var version int64
	if !content.ReadASN1(&ed, cbasn1.SEQUENCE) || !content.Empty() || !ed.ReadASN1Integer(&version) {
		return nil, nil, errors.New("cms: malformed EnvelopedData")
	}
	if version < 0 || version > 4 {
		return nil, nil, fmt.Errorf("cms: EnvelopedData version %d", version)
	}
	// originatorInfo [0] is optional and carries nothing needed here.
	if !ed.SkipOptionalASN1(cbasn1.Tag(0).Constructed().ContextSpecific()) || !ed.ReadASN1(&ris, cbasn1.SET) ||
		!ed.ReadASN1(&eci, cbasn1.SEQUENCE) {
		return nil, nil, errors.New("cms: malformed EnvelopedData")
	}
	var ctype, calg asn1.ObjectIdentifier
	var algID, iv, ct cryptobyte.String
	var hasCT bool
	if !eci.ReadASN1ObjectIdentifier(&ctype) || !eci.ReadASN1(&algID, cbasn1.SEQUENCE) ||
		!algID.ReadASN1ObjectIdentifier(&calg) || !eci.ReadOptionalASN1(&ct, &hasCT, cbasn1.Tag(0).ContextSpecific()) || !eci.Empty() {
		return nil, nil, errors.New("cms: malformed EncryptedContentInfo (DER with a primitive [0] encryptedContent expected)")
	}
	if !hasCT {
		return nil, nil, errors.New("cms: EnvelopedData without encryptedContent (detached content is not supported)")
	}
	keyLen := aesKeyLen(calg, OIDAES128CBC, OIDAES192CBC, OIDAES256CBC)
	if keyLen == 0 {
		return nil, nil, fmt.Errorf("cms: unsupported content-encryption algorithm %v (AES-CBC only)", calg)
	}
	if !algID.ReadASN1(&iv, cbasn1.OCTET_STRING) || len(iv) != aes.BlockSize || !algID.Empty() {
		return nil, nil, errors.New("cms: AES-CBC parameters are not a 16-byte IV")
	}
	var tried []string
	for !ris.Empty() {
		var ri cryptobyte.String
		var tag cbasn1.Tag
		if !ris.ReadAnyASN1(&ri, &tag) {
			return nil, nil, errors.New("cms: malformed RecipientInfo")
		}
		cek, why, err := openRecipient(tag, ri, d)
		if err != nil {
			return nil, nil, err
		}
		if cek == nil {
			tried = append(tried, why)
			continue
		}
		if len(cek) != keyLen {
			return nil, nil, fmt.Errorf("cms: content-encryption key of %d bytes for %v", len(cek), calg)
		}
		pt, err := decryptCBC(cek, iv, ct)
		if err != nil {
			return nil, nil, err
		}
		return ctype, pt, nil
	}
	if len(tried) == 0 {
		return nil, nil, errors.New("cms: EnvelopedData has no RecipientInfo")
	}
	return nil, nil, fmt.Errorf("cms: no RecipientInfo could be opened with the given keys (%v)", tried)
}

// openRecipient returns the content-encryption key from one RecipientInfo, or nil and why it
// was not for d. An error means a RecipientInfo addressed to d is malformed or does not open.
func openRecipient(tag cbasn1.Tag, ri cryptobyte.String, d Decrypter) ([]byte, string, error) {
	var version int64
	if !ri.ReadASN1Integer(&version) {
		return nil, "", errors.New("cms: malformed RecipientInfo version")
	}
	switch tag {
	case cbasn1.SEQUENCE: // ktri
		return openKTRI(ri, d)
	case cbasn1.Tag(1).Constructed().ContextSpecific(): // kari
		return openKARI(ri, d)
	case cbasn1.Tag(2).Constructed().ContextSpecific(): // kekri
		var kekid, keyID, alg, ek cryptobyte.String
		var algOID asn1.ObjectIdentifier
		if !ri.ReadASN1(&kekid, cbasn1.SEQUENCE) || !kekid.ReadASN1(&keyID, cbasn1.OCTET_STRING) ||
			!ri.ReadASN1(&alg, cbasn1.SEQUENCE) || !alg.ReadASN1ObjectIdentifier(&algOID) ||
			!ri.ReadASN1(&ek, cbasn1.OCTET_STRING) || !ri.Empty() {
			return nil, "", errors.New("cms: malformed KEKRecipientInfo")
		}
		if d.KEK == nil {
			return nil, "kekri: no key-encryption keys", nil
		}
		kek := d.KEK(keyID)
		if kek == nil {
			return nil, fmt.Sprintf("kekri: no key-encryption key with identifier %x", []byte(keyID)), nil
		}
		if n := aesKeyLen(algOID, OIDAES128Wrap, OIDAES192Wrap, OIDAES256Wrap); n != 0 {
			if n != len(kek) {
				return nil, "", fmt.Errorf("cms: key-encryption key %x has %d bytes, %v wants %d", []byte(keyID), len(kek), algOID, n)
			}
			cek, err := Unwrap(kek, ek)
			return cek, "", err
		}
		if n := aesKeyLen(algOID, OIDAES128WrapPad, OIDAES192WrapPad, OIDAES256WrapPad); n != 0 {
			if n != len(kek) {
				return nil, "", fmt.Errorf("cms: key-encryption key %x has %d bytes, %v wants %d", []byte(keyID), len(kek), algOID, n)
			}
			cek, err := UnwrapPad(kek, ek)
			return cek, "", err
		}
		return nil, "", fmt.Errorf("cms: unsupported key-encryption algorithm %v", algOID)
	}
	return nil, fmt.Sprintf("unsupported RecipientInfo kind (tag %d)", tag&0x1f), nil
}

func openKTRI(ri cryptobyte.String, d Decrypter) ([]byte, string, error) {
	var rid, alg, ek cryptobyte.String
	var ridTag cbasn1.Tag
	var algOID asn1.ObjectIdentifier
	if !ri.ReadAnyASN1Element(&rid, &ridTag) || !ri.ReadASN1(&alg, cbasn1.SEQUENCE) ||
		!alg.ReadASN1ObjectIdentifier(&algOID) || !ri.ReadASN1(&ek, cbasn1.OCTET_STRING) || !ri.Empty() {
		return nil, "", errors.New("cms: malformed KeyTransRecipientInfo")
	}
	dec, ok := d.Key.(crypto.Decrypter)
	if !ok {
		return nil, "ktri: no private key", nil
	}
	if _, isRSA := dec.Public().(*rsa.PublicKey); !isRSA {
		return nil, "ktri: the private key is not RSA", nil
	}
	if d.Cert != nil && !matchRID(rid, ridTag, d.Cert, false) {
		return nil, "ktri: addressed to another certificate", nil
	}
	if !algOID.Equal(OIDRSAESOAEP) {
		return nil, "", fmt.Errorf("cms: key transport algorithm %v not supported (RSAES-OAEP only)", algOID)
	}
	h, err := oaepHash(alg)
	if err != nil {
		return nil, "", err
	}
	cek, err := dec.Decrypt(nil, ek, &rsa.OAEPOptions{Hash: h})
	if err != nil {
		if d.Cert == nil {
			return nil, "ktri: RSAES-OAEP decryption failed", nil
		}
		return nil, "", fmt.Errorf("cms: RSAES-OAEP: %w", err)
	}
	return cek, "", nil
}

// oaepHash reads RSAES-OAEP-params (RFC 8017 A.2.1, RFC 4055 §4.1): the hash and MGF1's hash
// must agree; the label must be empty.
func oaepHash(params cryptobyte.String) (crypto.Hash, error) {
	h, mgfH := crypto.SHA1, crypto.SHA1
	if params.Empty() {
		return h, nil
	}
	var seq cryptobyte.String
	if !params.ReadASN1(&seq, cbasn1.SEQUENCE) || !params.Empty() {
		return 0, errors.New("cms: malformed RSAES-OAEP-params")
	}
	var f cryptobyte.String
	var present bool
	if !seq.ReadOptionalASN1(&f, &present, cbasn1.Tag(0).Constructed().ContextSpecific()) {
		return 0, errors.New("cms: malformed RSAES-OAEP-params hashAlgorithm")
	}
	if present {
		var err error
		if h, err = hashAlg(f); err != nil {
			return 0, err
		}
	}
	if !seq.ReadOptionalASN1(&f, &present, cbasn1.Tag(1).Constructed().ContextSpecific()) {
		return 0, errors.New("cms: malformed RSAES-OAEP-params maskGenAlgorithm")
	}
	if present {
		var mgf cryptobyte.String
		var oid asn1.ObjectIdentifier
		if !f.ReadASN1(&mgf, cbasn1.SEQUENCE) || !mgf.ReadASN1ObjectIdentifier(&oid) || !oid.Equal(oidMGF1) {
			return 0, errors.New("cms: RSAES-OAEP mask generation is not MGF1")
		}
		var err error
		if mgfH, err = hashAlg(mgf); err != nil {
			return 0, err
		}
	}
	if seq.PeekASN1Tag(cbasn1.Tag(2).Constructed().ContextSpecific()) {
		return 0, errors.New("cms: RSAES-OAEP with a label is not supported")
	}
	if h != mgfH {
		return 0, errors.New("cms: RSAES-OAEP with different hash and MGF1 hash is not supported")
	}
	return h, nil
}

// hashAlg reads an AlgorithmIdentifier of a hash (parameters absent or NULL).
func hashAlg(s cryptobyte.String) (crypto.Hash, error) {
	var alg cryptobyte.String
	var oid asn1.ObjectIdentifier
	if !s.ReadASN1(&alg, cbasn1.SEQUENCE) || !alg.ReadASN1ObjectIdentifier(&oid) {
		return 0, errors.New("cms: malformed hash AlgorithmIdentifier")
	}
	switch {
	case oid.Equal(oidSHA1):
		return crypto.SHA1, nil
	case oid.Equal(oidSHA256):
		return crypto.SHA256, nil
	case oid.Equal(oidSHA384):
		return crypto.SHA384, nil
	case oid.Equal(oidSHA512):
		return crypto.SHA512, nil
	}
	return 0, fmt.Errorf("cms: unsupported hash %v", oid)
}

func openKARI(ri cryptobyte.String, d Decrypter) ([]byte, string, error) {
	var orig, origKey, alg, rks, spki cryptobyte.String
	var algOID, spkiOID asn1.ObjectIdentifier
	var pubBits asn1.BitString
	if !ri.ReadASN1(&orig, cbasn1.Tag(0).Constructed().ContextSpecific()) ||
		!orig.ReadASN1(&origKey, cbasn1.Tag(1).Constructed().ContextSpecific()) || !orig.Empty() {
		return nil, "", errors.New("cms: KeyAgreeRecipientInfo without an originatorKey (only ephemeral-static ECDH is supported)")
	}
	if !origKey.ReadASN1(&spki, cbasn1.SEQUENCE) || !spki.ReadASN1ObjectIdentifier(&spkiOID) ||
		!origKey.ReadASN1BitString(&pubBits) || !origKey.Empty() || pubBits.BitLength%8 != 0 {
		return nil, "", errors.New("cms: malformed originatorKey")
	}
	var ukm []byte
	var ukmField cryptobyte.String
	var hasUKM bool
	if !ri.ReadOptionalASN1(&ukmField, &hasUKM, cbasn1.Tag(1).Constructed().ContextSpecific()) {
		return nil, "", errors.New("cms: malformed ukm")
	}
	if hasUKM {
		var u cryptobyte.String
		if !ukmField.ReadASN1(&u, cbasn1.OCTET_STRING) {
			return nil, "", errors.New("cms: malformed ukm")
		}
		ukm = append([]byte{}, u...)
	}
	var wrapAlg cryptobyte.String
	var wrapOID asn1.ObjectIdentifier
	if !ri.ReadASN1(&alg, cbasn1.SEQUENCE) || !alg.ReadASN1ObjectIdentifier(&algOID) ||
		!alg.ReadASN1Element(&wrapAlg, cbasn1.SEQUENCE) || !ri.ReadASN1(&rks, cbasn1.SEQUENCE) || !ri.Empty() {
		return nil, "", errors.New("cms: malformed KeyAgreeRecipientInfo")
	}
	wa := wrapAlg
	var waBody cryptobyte.String
	if !wa.ReadASN1(&waBody, cbasn1.SEQUENCE) || !waBody.ReadASN1ObjectIdentifier(&wrapOID) {
		return nil, "", errors.New("cms: malformed KeyWrapAlgorithm")
	}
	priv, ok := d.Key.(*ecdsa.PrivateKey)
	if !ok {
		return nil, "kari: the private key is not EC", nil
	}
	var kdfHash func() hash.Hash
	switch {
	case algOID.Equal(OIDECDHSHA256KDF):
		kdfHash = sha256.New
	case algOID.Equal(OIDECDHSHA384KDF):
		kdfHash = sha512.New384
	case algOID.Equal(OIDECDHSHA512KDF):
		kdfHash = sha512.New
	default:
		return nil, "", fmt.Errorf("cms: key agreement algorithm %v not supported (dhSinglePass-stdDH-sha*kdf-scheme only)", algOID)
	}
	wrapLen := aesKeyLen(wrapOID, OIDAES128Wrap, OIDAES192Wrap, OIDAES256Wrap)
	if wrapLen == 0 {
		return nil, "", fmt.Errorf("cms: key wrap %v not supported for key agreement", wrapOID)
	}
	if !spkiOID.Equal(oidECPublicKey) {
		return nil, "", fmt.Errorf("cms: originatorKey algorithm %v is not id-ecPublicKey", spkiOID)
	}
	var curveOID asn1.ObjectIdentifier
	if spki.PeekASN1Tag(cbasn1.OBJECT_IDENTIFIER) {
		if !spki.ReadASN1ObjectIdentifier(&curveOID) || !curveOID.Equal(curveOIDOf(priv)) {
			return nil, "kari: originator key on another curve", nil
		}
	}
	epriv, err := priv.ECDH()
	if err != nil {
		return nil, "", fmt.Errorf("cms: recipient key: %w", err)
	}
	opub, err := epriv.Curve().NewPublicKey(pubBits.Bytes)
	if err != nil {
		return nil, "", fmt.Errorf("cms: originatorKey is not a point on the recipient's curve: %w", err)
	}
	for !rks.Empty() {
		var rek, rid, ek cryptobyte.String
		var ridTag cbasn1.Tag
		if !rks.ReadASN1(&rek, cbasn1.SEQUENCE) || !rek.ReadAnyASN1Element(&rid, &ridTag) ||
			!rek.ReadASN1(&ek, cbasn1.OCTET_STRING) || !rek.Empty() {
			return nil, "", errors.New("cms: malformed RecipientEncryptedKey")
		}
		if d.Cert != nil && !matchRID(rid, ridTag, d.Cert, true) {
			continue
		}
		kek, err := ecdhKEK(epriv, opub, kdfHash, wrapAlg, ukm, wrapLen)
		if err != nil {
			return nil, "", err
		}
		cek, err := Unwrap(kek, ek)
		if err != nil {
			if d.Cert == nil {
				continue // addressed to another key of the same curve
			}
			return nil, "", err
		}
		return cek, "", nil
	}
	return nil, "kari: addressed to another key", nil
}

func ecdhKEK(priv *ecdh.PrivateKey, pub *ecdh.PublicKey, h func() hash.Hash, wrapAlg, ukm []byte, n int) ([]byte, error) {
	z, err := priv.ECDH(pub)
	if err != nil {
		return nil, fmt.Errorf("cms: ECDH: %w", err)
	}
	return x963KDF(h, z, wrapAlg, ukm, n)
}

func curveOIDOf(k *ecdsa.PrivateKey) asn1.ObjectIdentifier {
	switch k.Curve.Params().Name {
	case "P-256":
		return oidP256
	case "P-384":
		return oidP384
	case "P-521":
		return oidP521
	}
	return nil
}

// matchRID reports whether a RecipientIdentifier (ktri) or KeyAgreeRecipientIdentifier (kari,
// whose SKI form is rKeyId [0] RecipientKeyIdentifier) names cert.
func matchRID(rid cryptobyte.String, tag cbasn1.Tag, cert *x509.Certificate, kari bool) bool {
	switch {
	case tag == cbasn1.SEQUENCE:
		var ias, issuer cryptobyte.String
		serial := new(big.Int)
		return rid.ReadASN1(&ias, cbasn1.SEQUENCE) && ias.ReadASN1Element(&issuer, cbasn1.SEQUENCE) &&
			ias.ReadASN1Integer(serial) && bytes.Equal(issuer, cert.RawIssuer) && serial.Cmp(cert.SerialNumber) == 0
	case !kari && tag == cbasn1.Tag(0).ContextSpecific():
		var ski cryptobyte.String
		return rid.ReadASN1(&ski, tag) && len(cert.SubjectKeyId) > 0 && bytes.Equal(ski, cert.SubjectKeyId)
	case kari && tag == cbasn1.Tag(0).Constructed().ContextSpecific():
		var rkid, ski cryptobyte.String
		return rid.ReadASN1(&rkid, tag) && rkid.ReadASN1(&ski, cbasn1.OCTET_STRING) && len(cert.SubjectKeyId) > 0 &&
			bytes.Equal(ski, cert.SubjectKeyId)
	}
	return false
}

func addIssuerAndSerial(b *cryptobyte.Builder, c *x509.Certificate) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(c.RawIssuer)
		b.AddASN1BigInt(c.SerialNumber)
	})
}

func addAlgNULL(b *cryptobyte.Builder, oid asn1.ObjectIdentifier) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oid)
		b.AddASN1NULL()
	})
}

// parseContentInfo reads a DER ContentInfo of type want and returns its [0] content.
func parseContentInfo(der []byte, want asn1.ObjectIdentifier) (cryptobyte.String, error) {
	in := cryptobyte.String(der)
	var ci, content cryptobyte.String
	var ctype asn1.ObjectIdentifier
	if !in.ReadASN1(&ci, cbasn1.SEQUENCE) || !in.Empty() {
		return nil, errors.New("cms: not a DER ContentInfo")
	}
	if !ci.ReadASN1ObjectIdentifier(&ctype) {
		return nil, errors.New("cms: malformed contentType")
	}
	if !ctype.Equal(want) {
		return nil, fmt.Errorf("cms: contentType %v, want %v", ctype, want)
	}
	if !ci.ReadASN1(&content, cbasn1.Tag(0).Constructed().ContextSpecific()) || !ci.Empty() {
		return nil, errors.New("cms: malformed ContentInfo content")
	}
	return content, nil
}

// ContentOf reads a DER ContentInfo of type want (RFC 5652 §3) and returns its content (the DER
// of a SignedData, EnvelopedData, ...): the inverse of ContentInfo.
func ContentOf(der []byte, want asn1.ObjectIdentifier) ([]byte, error) {
	if len(der) > MaxMessageSize {
		return nil, fmt.Errorf("cms: message of %d bytes is larger than %d", len(der), MaxMessageSize)
	}
	c, err := parseContentInfo(der, want)
	if err != nil {
		return nil, err
	}
	return []byte(c), nil
}

// ContentInfo wraps content (the DER of a SignedData, EnvelopedData, ...) in a ContentInfo of
// type contentType (RFC 5652 §3).
func ContentInfo(contentType asn1.ObjectIdentifier, content []byte) ([]byte, error) {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(contentType)
		b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(content) })
	})
	return b.Bytes()
}

func aesKeyLen(oid asn1.ObjectIdentifier, o128, o192, o256 asn1.ObjectIdentifier) int {
	switch {
	case oid.Equal(o128):
		return 16
	case oid.Equal(o192):
		return 24
	case oid.Equal(o256):
		return 32
	}
	return 0
}

func aesWrapOID(n int) asn1.ObjectIdentifier {
	switch n {
	case 16:
		return OIDAES128Wrap
	case 24:
		return OIDAES192Wrap
	case 32:
		return OIDAES256Wrap
	}
	return nil
}

func encryptCBC(key, iv, pt []byte) []byte {
	b, _ := aes.NewCipher(key) // key length checked by the caller
	pad := aes.BlockSize - len(pt)%aes.BlockSize
	buf := make([]byte, len(pt)+pad)
	copy(buf, pt)
	for i := len(pt); i < len(buf); i++ {
		buf[i] = byte(pad)
	}
	cipher.NewCBCEncrypter(b, iv).CryptBlocks(buf, buf)
	return buf
}

func decryptCBC(key, iv, ct []byte) ([]byte, error) {
	if len(ct) == 0 || len(ct)%aes.BlockSize != 0 {
		return nil, errors.New("cms: encrypted content is not a whole number of AES blocks")
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("cms: %w", err)
	}
	pt := make([]byte, len(ct))
	cipher.NewCBCDecrypter(b, iv).CryptBlocks(pt, ct)
	pad := int(pt[len(pt)-1])
	ok := pad >= 1 && pad <= aes.BlockSize
	if ok {
		ok = subtle.ConstantTimeCompare(pt[len(pt)-pad:], bytes.Repeat([]byte{byte(pad)}, pad)) == 1
	}
	if !ok {
		return nil, errors.New("cms: bad padding in decrypted content (wrong key?)")
	}
	return pt[:len(pt)-pad], nil
}
