package edhoc

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"math/big"

	"github.com/pion/dtls/v3/pkg/crypto/ccm"
	"golang.org/x/crypto/chacha20poly1305"
)

// Suite is an EDHOC cipher suite number (RFC 9528 §3.6, §10.2).
type Suite int

// The cipher suites this package implements. RFC 9528 §7 makes 2 and 3 mandatory for
// constrained devices; RFC 9529 trace 1 uses 0 and trace 2 uses 2 (and offers 6).
const (
	Suite0 Suite = 0 // AES-CCM-16-64-128, SHA-256, 8, X25519, EdDSA, AES-CCM-16-64-128, SHA-256
	Suite1 Suite = 1 // AES-CCM-16-128-128, SHA-256, 16, X25519, EdDSA, AES-CCM-16-64-128, SHA-256
	Suite2 Suite = 2 // AES-CCM-16-64-128, SHA-256, 8, P-256, ES256, AES-CCM-16-64-128, SHA-256
	Suite3 Suite = 3 // AES-CCM-16-128-128, SHA-256, 16, P-256, ES256, AES-CCM-16-64-128, SHA-256
	Suite4 Suite = 4 // ChaCha20/Poly1305, SHA-256, 16, X25519, EdDSA, ChaCha20/Poly1305, SHA-256
	Suite5 Suite = 5 // ChaCha20/Poly1305, SHA-256, 16, P-256, ES256, ChaCha20/Poly1305, SHA-256
	Suite6 Suite = 6 // A128GCM, SHA-256, 16, X25519, ES256, A128GCM, SHA-256
)

// COSE algorithm identifiers used in the suites.
const (
	AlgAESCCM16_64_128  = 10
	AlgAESCCM16_128_128 = 30
	AlgA128GCM          = 1
	AlgChaCha20Poly1305 = 24
	AlgSHA256           = -16
	AlgEdDSA            = -8
	AlgES256            = -7
)

type curveID int

const (
	curveX25519 curveID = iota + 1
	curveP256
)

type sigAlg int

const (
	sigEdDSA sigAlg = iota + 1
	sigES256
)

// suiteParams holds the algorithms of one cipher suite.
type suiteParams struct {
	id        Suite
	aeadAlg   int
	keyLen    int // EDHOC AEAD key length
	ivLen     int // EDHOC AEAD nonce length
	tagLen    int
	hashLen   int
	macLen    int // EDHOC MAC length for static DH
	curve     curveID
	sig       sigAlg
	appAEAD   int // application AEAD (OSCORE)
	appKeyLen int
	appHash   int
}

var suiteTable = map[Suite]suiteParams{
	Suite0: {Suite0, AlgAESCCM16_64_128, 16, 13, 8, 32, 8, curveX25519, sigEdDSA, AlgAESCCM16_64_128, 16, AlgSHA256},
	Suite1: {Suite1, AlgAESCCM16_128_128, 16, 13, 16, 32, 16, curveX25519, sigEdDSA, AlgAESCCM16_64_128, 16, AlgSHA256},
	Suite2: {Suite2, AlgAESCCM16_64_128, 16, 13, 8, 32, 8, curveP256, sigES256, AlgAESCCM16_64_128, 16, AlgSHA256},
	Suite3: {Suite3, AlgAESCCM16_128_128, 16, 13, 16, 32, 16, curveP256, sigES256, AlgAESCCM16_64_128, 16, AlgSHA256},
	Suite4: {Suite4, AlgChaCha20Poly1305, 32, 12, 16, 32, 16, curveX25519, sigEdDSA, AlgChaCha20Poly1305, 32, AlgSHA256},
	Suite5: {Suite5, AlgChaCha20Poly1305, 32, 12, 16, 32, 16, curveP256, sigES256, AlgChaCha20Poly1305, 32, AlgSHA256},
	Suite6: {Suite6, AlgA128GCM, 16, 12, 16, 32, 16, curveX25519, sigES256, AlgA128GCM, 16, AlgSHA256},
}

// ephemeralKeyLen gives the G_X / G_Y length of registered suites, also those not implemented,
// so that a wrong length is diagnosed as such (RFC 9528 §3.7; RFC 9529 §4).
func ephemeralKeyLen(s Suite) (int, bool) {
	switch s {
	case 0, 1, 2, 3, 4, 5, 6:
		return 32, true
	case 24:
		return 48, true
	case 25:
		return 56, true
	}
	return 0, false
}

// Supported reports whether this package implements the suite.
func (s Suite) Supported() bool { _, ok := suiteTable[s]; return ok }

// SupportedSuites lists the implemented suites.
func SupportedSuites() []Suite {
	return []Suite{Suite0, Suite1, Suite2, Suite3, Suite4, Suite5, Suite6}
}

func params(s Suite) (*suiteParams, error) {
	p, ok := suiteTable[s]
	if !ok {
		return nil, fmt.Errorf("edhoc: cipher suite %d not supported", s)
	}
	return &p, nil
}

func (p *suiteParams) newHash() hash.Hash { return sha256.New() }

func (p *suiteParams) hash(parts ...[]byte) []byte {
	h := p.newHash()
	for _, b := range parts {
		h.Write(b)
	}
	return h.Sum(nil)
}

// extract is EDHOC_Extract (RFC 9528 §4.1.1): HKDF-Extract(salt, IKM).
func (p *suiteParams) extract(salt, ikm []byte) ([]byte, error) {
	return hkdf.Extract(sha256.New, ikm, salt)
}

// kdfInfo builds info = (label: uint, context: bstr, length: uint) as a CBOR sequence (§4.1.2).
func kdfInfo(label int, context []byte, length int) []byte {
	b := appendInt(nil, int64(label))
	b = appendBstr(b, context)
	return appendInt(b, int64(length))
}

// kdf is EDHOC_KDF(PRK, label, context, length) = EDHOC_Expand(PRK, info, length) (§4.1.2).
func (p *suiteParams) kdf(prk []byte, label int, context []byte, length int) ([]byte, error) {
	out, err := hkdf.Expand(sha256.New, prk, string(kdfInfo(label, context, length)), length)
	if err != nil {
		return nil, fmt.Errorf("edhoc: EDHOC_KDF label %d: %w", label, err)
	}
	return out, nil
}

func (p *suiteParams) aead(key []byte) (cipher.AEAD, error) {
	switch p.aeadAlg {
	case AlgAESCCM16_64_128, AlgAESCCM16_128_128:
		blk, err := aes.NewCipher(key)
		if err != nil {
			return nil, err
		}
		c, err := ccm.NewCCM(blk, p.tagLen, p.ivLen)
		if err != nil {
			return nil, err
		}
		return c, nil
	case AlgA128GCM:
		blk, err := aes.NewCipher(key)
		if err != nil {
			return nil, err
		}
		return cipher.NewGCM(blk)
	case AlgChaCha20Poly1305:
		return chacha20poly1305.New(key)
	}
	return nil, fmt.Errorf("edhoc: AEAD %d not supported", p.aeadAlg)
}

func (p *suiteParams) ecdhCurve() ecdh.Curve {
	if p.curve == curveX25519 {
		return ecdh.X25519()
	}
	return ecdh.P256()
}

// encodePublic returns the EDHOC encoding of an ephemeral public key: the X25519 u-coordinate
// or the P-256 x-coordinate only (RFC 9528 §3.7, RFC 9053 §7.1.1).
func (p *suiteParams) encodePublic(pub *ecdh.PublicKey) []byte {
	b := pub.Bytes()
	if p.curve == curveP256 {
		return append([]byte(nil), b[1:33]...)
	}
	return append([]byte(nil), b...)
}

var errInvalidPoint = errors.New("edhoc: invalid public key")

// decodePublic validates and decodes an ephemeral public key (RFC 9528 §9.2: the recipient
// checks that the point is valid; for P-256 x < p and on the curve; X25519 low-order points are
// rejected, here when probe is set, else when computing the shared secret, where crypto/ecdh
// refuses the all-zero result).
func (p *suiteParams) decodePublic(b []byte, probe bool) (*ecdh.PublicKey, error) {
	if len(b) != 32 {
		return nil, fmt.Errorf("%w: length %d, want 32", errInvalidPoint, len(b))
	}
	if p.curve == curveX25519 {
		pub, err := ecdh.X25519().NewPublicKey(b)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errInvalidPoint, err)
		}
		if probe && isLowOrderX25519(pub) {
			return nil, fmt.Errorf("%w: X25519 point of low order", errInvalidPoint)
		}
		return pub, nil
	}
	return decompressP256(b)
}

// p256 constants for the point decompression (x-coordinate only, either y is fine because the
// ECDH result only depends on x: RFC 9528 §3.7).
var (
	p256P, _ = new(big.Int).SetString("ffffffff00000001000000000000000000000000ffffffffffffffffffffffff", 16)
	p256B, _ = new(big.Int).SetString("5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b", 16)
)

func decompressP256(xb []byte) (*ecdh.PublicKey, error) {
	x := new(big.Int).SetBytes(xb)
	if x.Cmp(p256P) >= 0 {
		return nil, fmt.Errorf("%w: P-256 x-coordinate not below p", errInvalidPoint)
	}
	// y² = x³ - 3x + b mod p
	rhs := new(big.Int).Mul(x, x)
	rhs.Mul(rhs, x)
	t := new(big.Int).Lsh(x, 1)
	t.Add(t, x)
	rhs.Sub(rhs, t)
	rhs.Add(rhs, p256B)
	rhs.Mod(rhs, p256P)
	// p ≡ 3 mod 4: y = rhs^((p+1)/4)
	e := new(big.Int).Add(p256P, big.NewInt(1))
	e.Rsh(e, 2)
	y := new(big.Int).Exp(rhs, e, p256P)
	chk := new(big.Int).Mul(y, y)
	chk.Mod(chk, p256P)
	if chk.Cmp(rhs) != 0 {
		return nil, fmt.Errorf("%w: x-coordinate is not on P-256", errInvalidPoint)
	}
	enc := make([]byte, 65)
	enc[0] = 4
	copy(enc[1:33], xb)
	y.FillBytes(enc[33:])
	pub, err := ecdh.P256().NewPublicKey(enc)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errInvalidPoint, err)
	}
	return pub, nil
}

// lowOrderProbe is a fixed X25519 scalar; every point of small order gives the all-zero shared
// secret with any clamped scalar, which crypto/ecdh reports as an error.
const lowOrderProbe = "EDHOC X25519 low-order probe key"

func isLowOrderX25519(pub *ecdh.PublicKey) bool {
	k, err := ecdh.X25519().NewPrivateKey([]byte(lowOrderProbe))
	if err != nil {
		return true
	}
	_, err = k.ECDH(pub)
	return err != nil
}

// dh computes the shared secret; for P-256 the x-coordinate (RFC 9528 §3.7).
func dh(priv *ecdh.PrivateKey, pub *ecdh.PublicKey) ([]byte, error) {
	if priv.Curve() != pub.Curve() {
		return nil, errors.New("edhoc: DH keys on different curves")
	}
	s, err := priv.ECDH(pub)
	if err != nil {
		return nil, fmt.Errorf("edhoc: ECDH: %w", err)
	}
	return s, nil
}
