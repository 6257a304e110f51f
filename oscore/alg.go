package oscore

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/sha512"
	"fmt"

	"github.com/pion/dtls/v3/pkg/crypto/ccm"
	"golang.org/x/crypto/chacha20poly1305"
)

// COSE algorithm identifiers (RFC 9053 §4, §5.1) usable as the OSCORE AEAD Algorithm.
const (
	AlgA128GCM          = 1
	AlgA192GCM          = 2
	AlgA256GCM          = 3
	AlgAESCCM16_64_128  = 10 // the mandatory-to-implement default (RFC 8613 §3.2, §5)
	AlgAESCCM16_64_256  = 11
	AlgAESCCM64_64_128  = 12
	AlgAESCCM64_64_256  = 13
	AlgChaCha20Poly1305 = 24
	AlgAESCCM16_128_128 = 30
	AlgAESCCM16_128_256 = 31
	AlgAESCCM64_128_128 = 32
	AlgAESCCM64_128_256 = 33
)

// COSE algorithm identifiers for the OSCORE HKDF Algorithm ("direct+HKDF-SHA-256/-512",
// RFC 9053 §6.1.2); HKDF SHA-256 is the default (RFC 8613 §3.2).
const (
	HKDFSHA256 = -10
	HKDFSHA512 = -11
)

// AEADAlgorithm is a COSE AEAD algorithm usable with OSCORE (RFC 8613 §5: nonces of at least 7 bytes).
type AEADAlgorithm interface {
	ID() int        // COSE algorithm identifier, written into the HKDF info and the AAD
	KeySize() int   // Sender/Recipient Key length in bytes
	NonceSize() int // AEAD nonce (and Common IV) length in bytes
	New(key []byte) (cipher.AEAD, error)
}

// HKDFAlgorithm is the HKDF used to derive the security context (RFC 8613 §3.2.1).
type HKDFAlgorithm interface {
	ID() int
	// Derive returns HKDF(salt, secret, info, length): Extract then Expand (RFC 5869).
	Derive(secret, salt, info []byte, length int) ([]byte, error)
}

// Registry holds extra algorithms beyond the built-in ones. A nil *Registry means built-ins only.
// Register everything before creating contexts; a Registry is not safe for concurrent registration.
type Registry struct {
	aeads map[int]AEADAlgorithm
	hkdfs map[int]HKDFAlgorithm
}

// NewRegistry returns an empty registry (the built-in algorithms are always available).
func NewRegistry() *Registry {
	return &Registry{aeads: map[int]AEADAlgorithm{}, hkdfs: map[int]HKDFAlgorithm{}}
}

// RegisterAEAD adds or replaces an AEAD algorithm.
func (r *Registry) RegisterAEAD(a AEADAlgorithm) { r.aeads[a.ID()] = a }

// RegisterHKDF adds or replaces an HKDF algorithm.
func (r *Registry) RegisterHKDF(h HKDFAlgorithm) { r.hkdfs[h.ID()] = h }

// AEAD returns the AEAD algorithm for a COSE identifier (registered ones first, then built-ins).
func (r *Registry) AEAD(id int) (AEADAlgorithm, error) {
	if r != nil {
		if a, ok := r.aeads[id]; ok {
			return a, nil
		}
	}
	if a := builtinAEAD(id); a != nil {
		return a, nil
	}
	return nil, fmt.Errorf("oscore: unsupported AEAD algorithm %d", id)
}

// HKDF returns the HKDF algorithm for a COSE identifier.
func (r *Registry) HKDF(id int) (HKDFAlgorithm, error) {
	if r != nil {
		if h, ok := r.hkdfs[id]; ok {
			return h, nil
		}
	}
	switch id {
	case HKDFSHA256:
		return hkdfSHA256{}, nil
	case HKDFSHA512:
		return hkdfSHA512{}, nil
	}
	return nil, fmt.Errorf("oscore: unsupported HKDF algorithm %d", id)
}

type ccmAlg struct{ id, key, tag, nonce int }

func (a ccmAlg) ID() int        { return a.id }
func (a ccmAlg) KeySize() int   { return a.key }
func (a ccmAlg) NonceSize() int { return a.nonce }
func (a ccmAlg) New(key []byte) (cipher.AEAD, error) {
	if len(key) != a.key {
		return nil, fmt.Errorf("oscore: AES-CCM key is %d bytes, want %d", len(key), a.key)
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("oscore: AES: %w", err)
	}
	c, err := ccm.NewCCM(b, a.tag, a.nonce)
	if err != nil {
		return nil, fmt.Errorf("oscore: CCM: %w", err)
	}
	return c, nil
}

type gcmAlg struct{ id, key int }

func (a gcmAlg) ID() int        { return a.id }
func (a gcmAlg) KeySize() int   { return a.key }
func (a gcmAlg) NonceSize() int { return 12 }
func (a gcmAlg) New(key []byte) (cipher.AEAD, error) {
	if len(key) != a.key {
		return nil, fmt.Errorf("oscore: AES-GCM key is %d bytes, want %d", len(key), a.key)
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("oscore: AES: %w", err)
	}
	return cipher.NewGCM(b)
}

type chachaAlg struct{}

func (chachaAlg) ID() int        { return AlgChaCha20Poly1305 }
func (chachaAlg) KeySize() int   { return chacha20poly1305.KeySize }
func (chachaAlg) NonceSize() int { return chacha20poly1305.NonceSize }
func (chachaAlg) New(key []byte) (cipher.AEAD, error) {
	a, err := chacha20poly1305.New(key)
	if err != nil {
		return nil, fmt.Errorf("oscore: ChaCha20/Poly1305: %w", err)
	}
	return a, nil
}

func builtinAEAD(id int) AEADAlgorithm {
	switch id {
	case AlgAESCCM16_64_128:
		return ccmAlg{id, 16, 8, 13}
	case AlgAESCCM16_64_256:
		return ccmAlg{id, 32, 8, 13}
	case AlgAESCCM64_64_128:
		return ccmAlg{id, 16, 8, 7}
	case AlgAESCCM64_64_256:
		return ccmAlg{id, 32, 8, 7}
	case AlgAESCCM16_128_128:
		return ccmAlg{id, 16, 16, 13}
	case AlgAESCCM16_128_256:
		return ccmAlg{id, 32, 16, 13}
	case AlgAESCCM64_128_128:
		return ccmAlg{id, 16, 16, 7}
	case AlgAESCCM64_128_256:
		return ccmAlg{id, 32, 16, 7}
	case AlgA128GCM:
		return gcmAlg{id, 16}
	case AlgA192GCM:
		return gcmAlg{id, 24}
	case AlgA256GCM:
		return gcmAlg{id, 32}
	case AlgChaCha20Poly1305:
		return chachaAlg{}
	}
	return nil
}

type hkdfSHA256 struct{}

func (hkdfSHA256) ID() int { return HKDFSHA256 }
func (hkdfSHA256) Derive(secret, salt, info []byte, length int) ([]byte, error) {
	return hkdf.Key(sha256.New, secret, salt, string(info), length)
}

type hkdfSHA512 struct{}

func (hkdfSHA512) ID() int { return HKDFSHA512 }
func (hkdfSHA512) Derive(secret, salt, info []byte, length int) ([]byte, error) {
	return hkdf.Key(sha512.New, secret, salt, string(info), length)
}
