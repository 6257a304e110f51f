package est

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"unicode/utf16"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// PKCS #12 (RFC 7292) for RFC 8295 §8.3: a server-generated private key and its certificate
// in one PFX, the key shrouded with PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC, RFC 8018) and the
// whole protected by an HMAC-SHA256 MAC with the PKCS #12 key derivation (RFC 7292 Appendix
// B) — what OpenSSL 3 writes by default and what `openssl pkcs12` reads.

var (
	oidPKCS12CertBag        = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 10, 1, 3}
	oidPKCS12ShroudedKeyBag = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 10, 1, 2}
	oidPKCS9X509Certificate = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 22, 1}
	oidPKCS9LocalKeyID      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 21}
	oidPBES2                = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 13}
	oidPBKDF2               = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 12}
	oidHMACWithSHA256       = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 9}
	oidAES256CBC            = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
	oidSHA256               = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
)

const (
	pkcs12Iterations = 100000 // PBKDF2 and MAC iterations (OpenSSL 3's pkcs12 -export uses 2048)
	pkcs12SaltLen    = 16
)

// EncodePKCS12 returns a DER PFX (RFC 7292 §4) holding cert and the private key pkcs8
// (PKCS #8 DER), both marked with the same localKeyId, protected with password.
func EncodePKCS12(rnd io.Reader, pkcs8 []byte, cert *x509.Certificate, password string) ([]byte, error) {
	if password == "" {
		return nil, errors.New("pkcs12: empty password")
	}
	keyID := sha1.Sum(cert.Raw) // the localKeyId OpenSSL uses: SHA-1 of the certificate
	shrouded, err := pbes2Encrypt(rnd, pkcs8, password)
	if err != nil {
		return nil, err
	}
	certBag := safeBag(oidPKCS12CertBag, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(cb *cryptobyte.Builder) { // CertBag
			cb.AddASN1ObjectIdentifier(oidPKCS9X509Certificate)
			cb.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(v *cryptobyte.Builder) {
				v.AddASN1OctetString(cert.Raw)
			})
		})
	}, keyID[:])
	keyBag := safeBag(oidPKCS12ShroudedKeyBag, func(b *cryptobyte.Builder) { b.AddBytes(shrouded) }, keyID[:])
	var authSafe cryptobyte.Builder
	authSafe.AddASN1(cbasn1.SEQUENCE, func(as *cryptobyte.Builder) { // AuthenticatedSafe
		for _, bag := range [][]byte{certBag, keyBag} {
			as.AddASN1(cbasn1.SEQUENCE, func(ci *cryptobyte.Builder) { // ContentInfo, data
				ci.AddASN1ObjectIdentifier(oidData)
				ci.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(ex *cryptobyte.Builder) {
					ex.AddASN1(cbasn1.OCTET_STRING, func(os *cryptobyte.Builder) {
						os.AddASN1(cbasn1.SEQUENCE, func(sc *cryptobyte.Builder) { sc.AddBytes(bag) }) // SafeContents
					})
				})
			})
		}
	})
	authSafeDER, err := authSafe.Bytes()
	if err != nil {
		return nil, fmt.Errorf("pkcs12: %w", err)
	}
	macSalt := make([]byte, pkcs12SaltLen)
	if _, err := io.ReadFull(rnd, macSalt); err != nil {
		return nil, fmt.Errorf("pkcs12: %w", err)
	}
	// RFC 7292 §4, Appendix B.4: the MAC key comes from the PKCS #12 KDF with ID 3 over the
	// BMPString password; the MAC covers the authSafe content octets.
	macKey := pkcs12KDF(bmpPassword(password), macSalt, 3, pkcs12Iterations, sha256.Size)
	mac := hmac.New(sha256.New, macKey)
	mac.Write(authSafeDER)
	var pfx cryptobyte.Builder
	pfx.AddASN1(cbasn1.SEQUENCE, func(p *cryptobyte.Builder) {
		p.AddASN1Int64(3)
		p.AddASN1(cbasn1.SEQUENCE, func(ci *cryptobyte.Builder) {
			ci.AddASN1ObjectIdentifier(oidData)
			ci.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(ex *cryptobyte.Builder) {
				ex.AddASN1OctetString(authSafeDER)
			})
		})
		p.AddASN1(cbasn1.SEQUENCE, func(md *cryptobyte.Builder) { // MacData
			md.AddASN1(cbasn1.SEQUENCE, func(di *cryptobyte.Builder) { // DigestInfo
				di.AddASN1(cbasn1.SEQUENCE, func(alg *cryptobyte.Builder) {
					alg.AddASN1ObjectIdentifier(oidSHA256)
					alg.AddASN1NULL()
				})
				di.AddASN1OctetString(mac.Sum(nil))
			})
			md.AddASN1OctetString(macSalt)
			md.AddASN1Int64(pkcs12Iterations)
		})
	})
	return pfx.Bytes()
}

// safeBag encodes a SafeBag (RFC 7292 §4.2) with a localKeyId attribute.
func safeBag(id asn1.ObjectIdentifier, value func(*cryptobyte.Builder), keyID []byte) []byte {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(sb *cryptobyte.Builder) {
		sb.AddASN1ObjectIdentifier(id)
		sb.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), value)
		sb.AddASN1(cbasn1.SET, func(attrs *cryptobyte.Builder) {
			attrs.AddASN1(cbasn1.SEQUENCE, func(a *cryptobyte.Builder) {
				a.AddASN1ObjectIdentifier(oidPKCS9LocalKeyID)
				a.AddASN1(cbasn1.SET, func(v *cryptobyte.Builder) { v.AddASN1OctetString(keyID) })
			})
		})
	})
	return b.BytesOrPanic()
}

// pbes2Encrypt returns an EncryptedPrivateKeyInfo (RFC 5958 §3) of pkcs8 under PBES2 with
// PBKDF2-HMAC-SHA256 and AES-256-CBC (RFC 8018 §6.2, Appendix A.2, A.4).
func pbes2Encrypt(rnd io.Reader, pkcs8 []byte, password string) ([]byte, error) {
	salt, iv := make([]byte, pkcs12SaltLen), make([]byte, aes.BlockSize)
	if _, err := io.ReadFull(rnd, salt); err != nil {
		return nil, fmt.Errorf("pkcs12: %w", err)
	}
	if _, err := io.ReadFull(rnd, iv); err != nil {
		return nil, fmt.Errorf("pkcs12: %w", err)
	}
	key, err := pbkdf2.Key(sha256.New, password, salt, pkcs12Iterations, 32)
	if err != nil {
		return nil, fmt.Errorf("pkcs12: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("pkcs12: %w", err)
	}
	pad := aes.BlockSize - len(pkcs8)%aes.BlockSize // RFC 8018 §6.1.1 padding
	plain := append(append([]byte{}, pkcs8...), make([]byte, pad)...)
	for i := len(pkcs8); i < len(plain); i++ {
		plain[i] = byte(pad)
	}
	ct := make([]byte, len(plain))
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(ct, plain)
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(epki *cryptobyte.Builder) {
		epki.AddASN1(cbasn1.SEQUENCE, func(alg *cryptobyte.Builder) {
			alg.AddASN1ObjectIdentifier(oidPBES2)
			alg.AddASN1(cbasn1.SEQUENCE, func(params *cryptobyte.Builder) {
				params.AddASN1(cbasn1.SEQUENCE, func(kdf *cryptobyte.Builder) {
					kdf.AddASN1ObjectIdentifier(oidPBKDF2)
					kdf.AddASN1(cbasn1.SEQUENCE, func(p *cryptobyte.Builder) {
						p.AddASN1OctetString(salt)
						p.AddASN1Int64(pkcs12Iterations)
						p.AddASN1Int64(32)
						p.AddASN1(cbasn1.SEQUENCE, func(prf *cryptobyte.Builder) {
							prf.AddASN1ObjectIdentifier(oidHMACWithSHA256)
							prf.AddASN1NULL()
						})
					})
				})
				params.AddASN1(cbasn1.SEQUENCE, func(enc *cryptobyte.Builder) {
					enc.AddASN1ObjectIdentifier(oidAES256CBC)
					enc.AddASN1OctetString(iv)
				})
			})
		})
		epki.AddASN1OctetString(ct)
	})
	return b.Bytes()
}

// bmpPassword is the password as a BMPString with two zero bytes at the end (RFC 7292
// Appendix B.1).
func bmpPassword(s string) []byte {
	u := utf16.Encode([]rune(s))
	out := make([]byte, 0, 2*len(u)+2)
	for _, c := range u {
		out = append(out, byte(c>>8), byte(c))
	}
	return append(out, 0, 0)
}

// pkcs12KDF is the key derivation of RFC 7292 Appendix B.2 with SHA-256 (u = 32, v = 64).
func pkcs12KDF(password, salt []byte, id byte, iterations, n int) []byte {
	const v = 64 // SHA-256's block size; u, its output size, is len(A)
	fill := func(b []byte) []byte {
		if len(b) == 0 {
			return nil
		}
		out := make([]byte, v*((len(b)+v-1)/v))
		for i := range out {
			out[i] = b[i%len(b)]
		}
		return out
	}
	D := make([]byte, v)
	for i := range D {
		D[i] = id
	}
	I := append(fill(salt), fill(password)...)
	var out []byte
	one := big.NewInt(1)
	mod := new(big.Int).Lsh(one, v*8)
	for len(out) < n {
		h := sha256.New()
		h.Write(D)
		h.Write(I)
		A := h.Sum(nil)
		for r := 1; r < iterations; r++ {
			s := sha256.Sum256(A)
			A = s[:]
		}
		out = append(out, A...)
		if len(out) >= n {
			break
		}
		B := new(big.Int).SetBytes(fill(A)[:v])
		B.Add(B, one)
		for j := 0; j < len(I); j += v {
			Ij := new(big.Int).SetBytes(I[j : j+v])
			Ij.Add(Ij, B).Mod(Ij, mod)
			b := Ij.Bytes()
			clear(I[j : j+v])
			copy(I[j+v-len(b):j+v], b)
		}
	}
	return out[:n]
}
