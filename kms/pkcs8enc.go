package kms

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"hash"
	"io"
)

// Encrypted private keys at rest: PKCS#8 EncryptedPrivateKeyInfo (RFC 5958 §3) with PBES2
// (RFC 8018 §6.2): PBKDF2 (§5.2) with HMAC-SHA-256 and AES-CBC — what
// `openssl pkcs8 -topk8 -v2 aes-256-cbc` writes and reads.

// ErrPassphrase is returned for an encrypted key without a passphrase or with a wrong one.
var ErrPassphrase = errors.New("kms: encrypted private key: missing or wrong passphrase")

// DefaultPBKDF2Iterations is the PBKDF2 iteration count of keys this package encrypts
// (OWASP's 2023 figure for PBKDF2-HMAC-SHA256).
const DefaultPBKDF2Iterations = 600_000

// MaxPBKDF2Iterations bounds the work a key file may ask for (and that this package writes).
const MaxPBKDF2Iterations = 10_000_000

var (
	oidPBES2      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 13}
	oidPBKDF2     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 12}
	oidHMACSHA1   = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 7}
	oidHMACSHA256 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 9}
	oidHMACSHA384 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 10}
	oidHMACSHA512 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 11}
	oidAES128CBC  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 2}
	oidAES192CBC  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 22}
	oidAES256CBC  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
)

// RFC 5958 §3.
type encryptedPrivateKeyInfo struct {
	Algo          pkix.AlgorithmIdentifier
	EncryptedData []byte
}

// RFC 8018 Appendix A.4.
type pbes2Params struct {
	KeyDerivationFunc pkix.AlgorithmIdentifier
	EncryptionScheme  pkix.AlgorithmIdentifier
}

// RFC 8018 Appendix A.2. The salt is the "specified" OCTET STRING choice; otherSource is not
// supported (nobody writes it).
type pbkdf2Params struct {
	Salt           []byte
	IterationCount int
	KeyLength      int                      `asn1:"optional"`
	PRF            pkix.AlgorithmIdentifier `asn1:"optional"`
}

// MarshalEncryptedPrivateKeyPEM encodes key as an "ENCRYPTED PRIVATE KEY" PEM block under
// passphrase (PBES2, PBKDF2-HMAC-SHA256, AES-256-CBC) with iterations of PBKDF2
// (0 = DefaultPBKDF2Iterations; at most 10,000,000, what the reader accepts).
func MarshalEncryptedPrivateKeyPEM(key crypto.Signer, passphrase []byte, iterations int) ([]byte, error) {
	if iterations == 0 {
		iterations = DefaultPBKDF2Iterations
	}
	if iterations < 1 || iterations > MaxPBKDF2Iterations {
		return nil, fmt.Errorf("kms: PBKDF2 iteration count %d outside 1..%d", iterations, MaxPBKDF2Iterations)
	}
	return marshalEncrypted(rand.Reader, key, passphrase, iterations)
}

func marshalEncrypted(rnd io.Reader, key crypto.Signer, passphrase []byte, iterations int) ([]byte, error) {
	if len(passphrase) == 0 {
		return nil, errors.New("kms: empty passphrase")
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("kms: marshal key: %w", err)
	}
	enc, err := encryptPKCS8(rnd, der, passphrase, iterations)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: enc}), nil
}

// encryptPKCS8 wraps a PKCS#8 PrivateKeyInfo into an EncryptedPrivateKeyInfo.
func encryptPKCS8(rnd io.Reader, der, passphrase []byte, iterations int) ([]byte, error) {
	salt := make([]byte, 16)
	iv := make([]byte, aes.BlockSize)
	if _, err := io.ReadFull(rnd, salt); err != nil {
		return nil, fmt.Errorf("kms: salt: %w", err)
	}
	if _, err := io.ReadFull(rnd, iv); err != nil {
		return nil, fmt.Errorf("kms: iv: %w", err)
	}
	k, err := pbkdf2.Key(sha256.New, string(passphrase), salt, iterations, 32)
	if err != nil {
		return nil, fmt.Errorf("kms: pbkdf2: %w", err)
	}
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, fmt.Errorf("kms: %w", err)
	}
	// RFC 8018 §6.2.1 step 4 / RFC 1423 padding: 1 to 8 (here 16) octets of the pad length.
	pad := aes.BlockSize - len(der)%aes.BlockSize
	data := make([]byte, len(der)+pad)
	copy(data, der)
	for i := len(der); i < len(data); i++ {
		data[i] = byte(pad)
	}
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(data, data)

	ivDER, _ := asn1.Marshal(iv)
	kdf, err := asn1.Marshal(pbkdf2Params{Salt: salt, IterationCount: iterations,
		PRF: pkix.AlgorithmIdentifier{Algorithm: oidHMACSHA256, Parameters: asn1.NullRawValue}})
	if err != nil {
		return nil, fmt.Errorf("kms: %w", err)
	}
	params, err := asn1.Marshal(pbes2Params{
		KeyDerivationFunc: pkix.AlgorithmIdentifier{Algorithm: oidPBKDF2, Parameters: asn1.RawValue{FullBytes: kdf}},
		EncryptionScheme:  pkix.AlgorithmIdentifier{Algorithm: oidAES256CBC, Parameters: asn1.RawValue{FullBytes: ivDER}},
	})
	if err != nil {
		return nil, fmt.Errorf("kms: %w", err)
	}
	out, err := asn1.Marshal(encryptedPrivateKeyInfo{
		Algo:          pkix.AlgorithmIdentifier{Algorithm: oidPBES2, Parameters: asn1.RawValue{FullBytes: params}},
		EncryptedData: data,
	})
	if err != nil {
		return nil, fmt.Errorf("kms: %w", err)
	}
	return out, nil
}

// decryptPKCS8 unwraps an EncryptedPrivateKeyInfo (PBES2 with PBKDF2 and AES-CBC) into the
// PKCS#8 PrivateKeyInfo DER. A wrong passphrase is ErrPassphrase.
func decryptPKCS8(der, passphrase []byte) ([]byte, error) {
	var epki encryptedPrivateKeyInfo
	if rest, err := asn1.Unmarshal(der, &epki); err != nil || len(rest) != 0 {
		return nil, fmt.Errorf("kms: EncryptedPrivateKeyInfo: malformed (%v)", err)
	}
	if !epki.Algo.Algorithm.Equal(oidPBES2) {
		return nil, fmt.Errorf("kms: encrypted key uses %v; only PBES2 (openssl pkcs8 -v2) is supported", epki.Algo.Algorithm)
	}
	var p pbes2Params
	if rest, err := asn1.Unmarshal(epki.Algo.Parameters.FullBytes, &p); err != nil || len(rest) != 0 {
		return nil, fmt.Errorf("kms: PBES2 parameters: malformed (%v)", err)
	}
	if !p.KeyDerivationFunc.Algorithm.Equal(oidPBKDF2) {
		return nil, fmt.Errorf("kms: PBES2 key derivation %v; only PBKDF2 is supported", p.KeyDerivationFunc.Algorithm)
	}
	var kp pbkdf2Params
	if rest, err := asn1.Unmarshal(p.KeyDerivationFunc.Parameters.FullBytes, &kp); err != nil || len(rest) != 0 {
		return nil, fmt.Errorf("kms: PBKDF2 parameters: malformed (%v)", err)
	}
	if kp.IterationCount < 1 || kp.IterationCount > MaxPBKDF2Iterations {
		return nil, fmt.Errorf("kms: PBKDF2 iteration count %d outside 1..%d", kp.IterationCount, MaxPBKDF2Iterations)
	}
	var prf func() hash.Hash
	switch a := kp.PRF.Algorithm; {
	case len(a) == 0 || a.Equal(oidHMACSHA1): // RFC 8018 A.2: DEFAULT algid-hmacWithSHA1
		prf = sha1.New
	case a.Equal(oidHMACSHA256):
		prf = sha256.New
	case a.Equal(oidHMACSHA384):
		prf = sha512.New384
	case a.Equal(oidHMACSHA512):
		prf = sha512.New
	default:
		return nil, fmt.Errorf("kms: PBKDF2 PRF %v not supported", a)
	}
	var keyLen int
	switch a := p.EncryptionScheme.Algorithm; {
	case a.Equal(oidAES128CBC):
		keyLen = 16
	case a.Equal(oidAES192CBC):
		keyLen = 24
	case a.Equal(oidAES256CBC):
		keyLen = 32
	default:
		return nil, fmt.Errorf("kms: PBES2 cipher %v not supported (AES-CBC only)", a)
	}
	if kp.KeyLength != 0 && kp.KeyLength != keyLen {
		return nil, fmt.Errorf("kms: PBKDF2 keyLength %d does not fit the cipher (%d)", kp.KeyLength, keyLen)
	}
	var iv []byte
	if rest, err := asn1.Unmarshal(p.EncryptionScheme.Parameters.FullBytes, &iv); err != nil || len(rest) != 0 || len(iv) != aes.BlockSize {
		return nil, errors.New("kms: AES-CBC parameters: not a 16-byte IV")
	}
	ct := epki.EncryptedData
	if len(ct) == 0 || len(ct)%aes.BlockSize != 0 {
		return nil, errors.New("kms: encrypted key data is not a whole number of AES blocks")
	}
	k, err := pbkdf2.Key(prf, string(passphrase), kp.Salt, kp.IterationCount, keyLen)
	if err != nil {
		return nil, fmt.Errorf("kms: pbkdf2: %w", err)
	}
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, fmt.Errorf("kms: %w", err)
	}
	pt := make([]byte, len(ct))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(pt, ct)
	pad := int(pt[len(pt)-1])
	ok := pad >= 1 && pad <= aes.BlockSize
	if ok {
		want := make([]byte, pad)
		for i := range want {
			want[i] = byte(pad)
		}
		ok = hmac.Equal(pt[len(pt)-pad:], want)
	}
	if !ok {
		return nil, ErrPassphrase
	}
	return pt[:len(pt)-pad], nil
}
