package cms

import (
	"crypto/aes"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
)

// defaultIV is the integrity check value of RFC 3394 §2.2.3.1.
var defaultIV = [8]byte{0xA6, 0xA6, 0xA6, 0xA6, 0xA6, 0xA6, 0xA6, 0xA6}

// aivPrefix is the first half of the RFC 5649 §3 alternative initial value.
var aivPrefix = [4]byte{0xA6, 0x59, 0x59, 0xA6}

// maxWrapInput bounds what the key-wrap functions process: they wrap content-encryption keys,
// never more than a few dozen bytes.
const maxWrapInput = 1 << 10

// Wrap wraps key (a multiple of 8 bytes, at least 16) under kek with the AES Key Wrap of
// RFC 3394 §2.2.1.
func Wrap(kek, key []byte) ([]byte, error) {
	if len(key) < 16 || len(key)%8 != 0 || len(key) > maxWrapInput {
		return nil, fmt.Errorf("cms: key wrap: key of %d bytes (want a multiple of 8, at least 16)", len(key))
	}
	return wrapWithIV(kek, defaultIV, key)
}

// Unwrap unwraps an RFC 3394 wrapped key and checks its integrity value (RFC 3394 §2.2.3).
func Unwrap(kek, wrapped []byte) ([]byte, error) {
	if len(wrapped) < 24 || len(wrapped)%8 != 0 || len(wrapped) > maxWrapInput {
		return nil, fmt.Errorf("cms: key unwrap: %d bytes is not a wrapped key", len(wrapped))
	}
	a, key, err := unwrapRaw(kek, wrapped)
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare(a[:], defaultIV[:]) != 1 {
		return nil, errors.New("cms: key unwrap: integrity check failed (wrong key-encryption key?)")
	}
	return key, nil
}

// WrapPad wraps key of any length (1 to 1 KiB) with AES Key Wrap with Padding (RFC 5649 §4.1).
func WrapPad(kek, key []byte) ([]byte, error) {
	if len(key) == 0 || len(key) > maxWrapInput {
		return nil, fmt.Errorf("cms: key wrap with padding: key of %d bytes", len(key))
	}
	var aiv [8]byte
	copy(aiv[:4], aivPrefix[:])
	binary.BigEndian.PutUint32(aiv[4:], uint32(len(key)))
	padded := make([]byte, (len(key)+7)/8*8)
	copy(padded, key)
	if len(padded) == 8 {
		// RFC 5649 §4.1: a single block is encrypted in ECB mode with the AIV.
		b, err := aes.NewCipher(kek)
		if err != nil {
			return nil, fmt.Errorf("cms: key wrap: %w", err)
		}
		out := make([]byte, 16)
		copy(out, aiv[:])
		copy(out[8:], padded)
		b.Encrypt(out, out)
		return out, nil
	}
	return wrapWithIV(kek, aiv, padded)
}

// UnwrapPad unwraps an RFC 5649 wrapped key and checks the AIV, the length and the padding
// (RFC 5649 §3).
func UnwrapPad(kek, wrapped []byte) ([]byte, error) {
	if len(wrapped) < 16 || len(wrapped)%8 != 0 || len(wrapped) > maxWrapInput+8 {
		return nil, fmt.Errorf("cms: key unwrap with padding: %d bytes is not a wrapped key", len(wrapped))
	}
	var a [8]byte
	var p []byte
	if len(wrapped) == 16 {
		b, err := aes.NewCipher(kek)
		if err != nil {
			return nil, fmt.Errorf("cms: key unwrap: %w", err)
		}
		out := make([]byte, 16)
		b.Decrypt(out, wrapped)
		copy(a[:], out[:8])
		p = out[8:]
	} else {
		var err error
		if a, p, err = unwrapRaw(kek, wrapped); err != nil {
			return nil, err
		}
	}
	mli := int(binary.BigEndian.Uint32(a[4:]))
	ok := subtle.ConstantTimeCompare(a[:4], aivPrefix[:]) == 1 && mli > len(p)-8 && mli <= len(p)
	if ok {
		for _, c := range p[mli:] {
			ok = ok && c == 0
		}
	}
	if !ok {
		return nil, errors.New("cms: key unwrap with padding: integrity check failed (wrong key-encryption key?)")
	}
	return p[:mli], nil
}

// wrapWithIV is the wrapping process of RFC 3394 §2.2.1 (index-based form) with initial value iv.
func wrapWithIV(kek []byte, iv [8]byte, p []byte) ([]byte, error) {
	b, err := aes.NewCipher(kek)
	if err != nil {
		return nil, fmt.Errorf("cms: key wrap: %w", err)
	}
	n := len(p) / 8
	out := make([]byte, 8+len(p))
	copy(out[8:], p)
	a := iv
	var blk [16]byte
	for j := range 6 {
		for i := 1; i <= n; i++ {
			copy(blk[:8], a[:])
			copy(blk[8:], out[8*i:8*i+8])
			b.Encrypt(blk[:], blk[:])
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(a[:], binary.BigEndian.Uint64(blk[:8])^t)
			copy(out[8*i:], blk[8:])
		}
	}
	copy(out, a[:])
	return out, nil
}

// unwrapRaw is the unwrapping process of RFC 3394 §2.2.2; it returns the recovered initial
// value for the caller to check.
func unwrapRaw(kek, c []byte) ([8]byte, []byte, error) {
	var a [8]byte
	b, err := aes.NewCipher(kek)
	if err != nil {
		return a, nil, fmt.Errorf("cms: key unwrap: %w", err)
	}
	n := len(c)/8 - 1
	r := make([]byte, 8*n)
	copy(r, c[8:])
	copy(a[:], c[:8])
	var blk [16]byte
	for j := 5; j >= 0; j-- {
		for i := n; i >= 1; i-- {
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(blk[:8], binary.BigEndian.Uint64(a[:])^t)
			copy(blk[8:], r[8*(i-1):8*i])
			b.Decrypt(blk[:], blk[:])
			copy(a[:], blk[:8])
			copy(r[8*(i-1):], blk[8:])
		}
	}
	return a, r, nil
}
