// Package cms is the part of the Cryptographic Message Syntax (RFC 5652) that EST needs to
// return a server-generated private key encrypted (RFC 7030 §4.4.2, RFC 9148 §4.8, Content-Format
// 280): EnvelopedData (§6) with three kinds of recipient, SignedData (§5) with one signer, and
// the AsymmetricKeyPackage of RFC 5958 §2. It is a wire-format library: it imports nothing of
// the server.
//
//   - KEKRecipientInfo (RFC 5652 §6.2.3): a pre-shared symmetric key, AES Key Wrap (RFC 3394,
//     and with padding RFC 5649 §4, both in RFC 3565 §2.3);
//   - KeyAgreeRecipientInfo (RFC 5652 §6.2.2): ephemeral-static ECDH, the
//     dhSinglePass-stdDH-sha256kdf-scheme of RFC 5753 §3.1 (X9.63 KDF with SHA-256, AES Key Wrap);
//   - KeyTransRecipientInfo (RFC 5652 §6.2.1): RSAES-OAEP with SHA-256 and MGF1-SHA-256
//     (RFC 8017 §7.1, RFC 3560 §3, RFC 4055 §4).
//
// EncryptedData (§8; EncryptData, DecryptData) holds content under a symmetric key managed
// elsewhere: RFC 4108's encrypted firmware packages.
//
// Content is encrypted with AES-CBC (RFC 3565 §2.1; AES-256-CBC by default), the choice that
// `openssl cms -decrypt`, Bouncy Castle and RFC 5958 §5 implementations all read.
//
// Parsers take DER only and are bounded by their input: every length is checked against the
// bytes that remain (golang.org/x/crypto/cryptobyte).
package cms

import "encoding/asn1"

// Object identifiers of the structures and algorithms this package reads and writes.
var (
	OIDData          = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	OIDSignedData    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}
	OIDEnvelopedData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 3}
	// OIDAsymmetricKeyPackage is id-ct-KP-aKeyPackage (RFC 5958 §2).
	OIDAsymmetricKeyPackage = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 2, 1, 2, 78, 5}

	OIDAES128CBC = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 2}
	OIDAES192CBC = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 22}
	OIDAES256CBC = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}

	OIDAES128Wrap    = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 5}
	OIDAES192Wrap    = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 25}
	OIDAES256Wrap    = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 45}
	OIDAES128WrapPad = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 8}
	OIDAES192WrapPad = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 28}
	OIDAES256WrapPad = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 48}

	// RFC 5753 §7.1.4 / RFC 8418: ephemeral-static ECDH with the X9.63 KDF.
	OIDECDHSHA256KDF = asn1.ObjectIdentifier{1, 3, 132, 1, 11, 1}
	OIDECDHSHA384KDF = asn1.ObjectIdentifier{1, 3, 132, 1, 11, 2}
	OIDECDHSHA512KDF = asn1.ObjectIdentifier{1, 3, 132, 1, 11, 3}

	OIDRSAESOAEP = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 7}

	oidMGF1          = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 8}
	oidSHA1          = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}
	oidSHA256        = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidSHA384        = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 2}
	oidSHA512        = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 3}
	oidECPublicKey   = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}
	oidRSAEncryption = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	oidSHA256WithRSA = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}
	oidSHA384WithRSA = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 12}
	oidSHA512WithRSA = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 13}
	oidECDSASHA256   = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidECDSASHA384   = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
	oidECDSASHA512   = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 4}
	oidEd25519       = asn1.ObjectIdentifier{1, 3, 101, 112}
	oidP256          = asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}
	oidP384          = asn1.ObjectIdentifier{1, 3, 132, 0, 34}
	oidP521          = asn1.ObjectIdentifier{1, 3, 132, 0, 35}

	oidAttrContentType   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 3}
	oidAttrMessageDigest = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 4}
	oidAttrSigningTime   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 5}
)
