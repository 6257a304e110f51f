package ace

import (
	"bytes"
	"crypto/aes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/big"

	"github.com/fxamacker/cbor/v2"
	"github.com/pion/dtls/v3/pkg/crypto/ccm"
)

// COSE algorithms (RFC 9053) usable to protect access tokens.
const (
	AlgAESCCM16_64_128 = 10 // COSE_Encrypt0, 16-byte key, 13-byte IV, 8-byte tag (RFC 9053 §4.2)
	AlgHMAC256_64      = 4  // COSE_Mac0, HMAC-SHA-256 truncated to 64 bits (RFC 9053 §3.1)
	AlgHMAC256_256     = 5  // COSE_Mac0, HMAC-SHA-256
	AlgES256           = -7 // COSE_Sign1, ECDSA P-256 with SHA-256 (RFC 9053 §2.1)
)

// COSE and CWT CBOR tags (RFC 9052 §2, RFC 8392 §6).
const (
	tagEncrypt0 = 16
	tagMac0     = 17
	tagSign1    = 18
	tagCWT      = 61
)

// COSE header labels (RFC 9052 §3.1).
const (
	hdrAlg = 1
	hdrKID = 4
	hdrIV  = 5
)

// Errors of token verification; the resource server answers all of them with 4.01.
var (
	ErrMalformed     = errors.New("ace: malformed token")
	ErrUnknownKey    = errors.New("ace: token protected with an unknown key")
	ErrVerify        = errors.New("ace: token MAC, signature or encryption does not verify")
	ErrExpired       = errors.New("ace: token expired")
	ErrAudience      = errors.New("ace: token is for another audience")
	ErrIssuer        = errors.New("ace: token from an unknown issuer")
	ErrReplay        = errors.New("ace: token already used")
	ErrNoOSCORE      = errors.New("ace: token carries no OSCORE input material")
	ErrPlaintextKey  = errors.New("ace: token carries the OSCORE Master Secret unencrypted")
	ErrTooManyTokens = errors.New("ace: too many tokens held")
)

// Key is a key shared with (or published by) an authorization server: the AS protects tokens
// with it, the resource server verifies them.
type Key struct {
	// KID names the key in the COSE kid header; empty = no kid (then a verifier must hold
	// only this key).
	KID []byte
	// Alg is the COSE algorithm: AlgAESCCM16_64_128 (Secret of 16 bytes), AlgHMAC256_64 or
	// AlgHMAC256_256 (Secret of at least 16 bytes), AlgES256 (PrivateKey to sign, PublicKey to
	// verify).
	Alg        int
	Secret     []byte
	PrivateKey *ecdsa.PrivateKey
	PublicKey  *ecdsa.PublicKey
	// Issuer is the AS this key speaks for: a resource server accepts a token authenticated
	// by the key only with this iss (empty: the key's tokens name their own issuer, allowed
	// when the resource server holds this key alone).
	Issuer string
}

// Validate checks that the key material fits the algorithm.
func (k *Key) Validate() error {
	switch k.Alg {
	case AlgAESCCM16_64_128:
		if len(k.Secret) != 16 {
			return fmt.Errorf("ace: AES-CCM-16-64-128 needs a 16-byte key, got %d", len(k.Secret))
		}
	case AlgHMAC256_64, AlgHMAC256_256:
		if len(k.Secret) < 16 {
			return fmt.Errorf("ace: HMAC key of %d bytes is too short (at least 16)", len(k.Secret))
		}
	case AlgES256:
		if k.PublicKey == nil && k.PrivateKey != nil {
			k.PublicKey = &k.PrivateKey.PublicKey
		}
		if k.PublicKey == nil || k.PublicKey.Curve != elliptic.P256() {
			return errors.New("ace: ES256 needs a P-256 key")
		}
	default:
		return fmt.Errorf("ace: unsupported COSE algorithm %d (want 10, 4, 5 or -7)", k.Alg)
	}
	return nil
}

// cborModes are the package's CBOR modes: immutable, built once from constant options.
type cborModes struct {
	enc cbor.EncMode
	dec cbor.DecMode
}

var wire = newCBORModes()

func newCBORModes() cborModes {
	enc, err := cbor.CoreDetEncOptions().EncMode() // RFC 8949 §4.2.1
	if err != nil {
		panic(fmt.Sprintf("ace: CBOR encoding options: %v", err)) // constant options
	}
	// Bounded by construction: every message this package reads comes from the network.
	dec, err := cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IndefLength:      cbor.IndefLengthForbidden,
		MaxNestedLevels:  8,
		MaxArrayElements: 64,
		MaxMapPairs:      64,
		IntDec:           cbor.IntDecConvertNone,
		UTF8:             cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		panic(fmt.Sprintf("ace: CBOR decoding options: %v", err)) // constant options
	}
	return cborModes{enc: enc, dec: dec}
}

func marshal(v any) []byte {
	b, err := wire.enc.Marshal(v)
	if err != nil {
		// Only integers, strings, byte strings, arrays and maps of them are encoded here.
		panic(fmt.Sprintf("ace: CBOR encoding: %v", err))
	}
	return b
}

// Protect wraps payload (a CWT claims set) in the COSE structure of k's algorithm: a tagged
// COSE_Encrypt0, COSE_Mac0 or COSE_Sign1 (RFC 9052 §4.2, §5.2, §6.2) with the algorithm in the
// protected header and the kid (and IV) in the unprotected one.
func Protect(payload []byte, k Key, rnd io.Reader) ([]byte, error) {
	if err := k.Validate(); err != nil {
		return nil, err
	}
	prot := marshal(map[int]int{hdrAlg: k.Alg})
	unprot := map[int][]byte{}
	if len(k.KID) > 0 {
		unprot[hdrKID] = k.KID
	}
	switch k.Alg {
	case AlgAESCCM16_64_128:
		iv := make([]byte, 13)
		if _, err := io.ReadFull(rnd, iv); err != nil {
			return nil, fmt.Errorf("ace: IV: %w", err)
		}
		unprot[hdrIV] = iv
		a, err := newCCM(k.Secret)
		if err != nil {
			return nil, err
		}
		// RFC 9052 §5.3: the AAD is Enc_structure ["Encrypt0", protected, external_aad].
		ct := a.Seal(nil, iv, payload, encStructure(prot))
		return marshal(cbor.Tag{Number: tagEncrypt0, Content: []any{prot, unprot, ct}}), nil
	case AlgHMAC256_64, AlgHMAC256_256:
		tag := macTag(k, prot, payload)
		return marshal(cbor.Tag{Number: tagMac0, Content: []any{prot, unprot, payload, tag}}), nil
	default: // AlgES256
		if k.PrivateKey == nil {
			return nil, errors.New("ace: ES256 signing needs the private key")
		}
		h := sha256.Sum256(sigStructure(prot, payload))
		r, s, err := ecdsa.Sign(rnd, k.PrivateKey, h[:])
		if err != nil {
			return nil, fmt.Errorf("ace: ES256: %w", err)
		}
		// RFC 9053 §2.1: the signature is r | s, each left-padded to 32 bytes.
		sig := make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
		return marshal(cbor.Tag{Number: tagSign1, Content: []any{prot, unprot, payload, sig}}), nil
	}
}

func newCCM(key []byte) (interface {
	Seal(dst, nonce, plaintext, aad []byte) []byte
	Open(dst, nonce, ciphertext, aad []byte) ([]byte, error)
}, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("ace: AES: %w", err)
	}
	c, err := ccm.NewCCM(b, 8, 13)
	if err != nil {
		return nil, fmt.Errorf("ace: CCM: %w", err)
	}
	return c, nil
}

func encStructure(prot []byte) []byte {
	return marshal([]any{"Encrypt0", prot, []byte{}})
}

func sigStructure(prot, payload []byte) []byte {
	return marshal([]any{"Signature1", prot, []byte{}, payload})
}

// macTag computes the COSE_Mac0 tag over MAC_structure ["MAC0", protected, external_aad,
// payload] (RFC 9052 §6.3), truncated to 64 bits for HMAC 256/64 (RFC 9053 §3.1).
func macTag(k Key, prot, payload []byte) []byte {
	m := hmac.New(sha256.New, k.Secret)
	m.Write(marshal([]any{"MAC0", prot, []byte{}, payload}))
	t := m.Sum(nil)
	if k.Alg == AlgHMAC256_64 {
		t = t[:8]
	}
	return t
}

// MaxTokenSize bounds an access token (the whole COSE object).
const MaxTokenSize = 2048

// Open verifies a protected token with the key its kid names (or the only key, when the
// token has no kid) and returns the payload and the key used. The algorithm in the protected
// header must be the key's: a token cannot choose a weaker algorithm than the AS's key has.
func Open(token []byte, keys []Key) ([]byte, *Key, error) {
	if len(token) > MaxTokenSize {
		return nil, nil, fmt.Errorf("%w: %d bytes (at most %d)", ErrMalformed, len(token), MaxTokenSize)
	}
	body, tag, tagged := token, uint64(0), false
	for range 2 { // an optional CWT tag (RFC 8392 §6), then the COSE tag
		if len(body) == 0 || body[0]>>5 != 6 {
			break
		}
		var rt cbor.RawTag
		if err := wire.dec.Unmarshal(body, &rt); err != nil {
			return nil, nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		if rt.Number == tagCWT && !tagged && len(rt.Content) > 0 && rt.Content[0]>>5 == 6 {
			body = rt.Content
			continue
		}
		tag, tagged, body = rt.Number, true, rt.Content
		break
	}
	var arr []cbor.RawMessage
	if err := wire.dec.Unmarshal(body, &arr); err != nil {
		return nil, nil, fmt.Errorf("%w: not a COSE array: %v", ErrMalformed, err)
	}
	if len(arr) != 3 && len(arr) != 4 {
		return nil, nil, fmt.Errorf("%w: COSE array of %d items", ErrMalformed, len(arr))
	}
	var prot []byte
	if err := wire.dec.Unmarshal(arr[0], &prot); err != nil {
		return nil, nil, fmt.Errorf("%w: protected header: %v", ErrMalformed, err)
	}
	ph := map[int]cbor.RawMessage{}
	if len(prot) > 0 {
		if err := wire.dec.Unmarshal(prot, &ph); err != nil {
			return nil, nil, fmt.Errorf("%w: protected header: %v", ErrMalformed, err)
		}
	}
	uh := map[int]cbor.RawMessage{}
	if err := wire.dec.Unmarshal(arr[1], &uh); err != nil {
		return nil, nil, fmt.Errorf("%w: unprotected header: %v", ErrMalformed, err)
	}
	var alg int
	if raw, ok := ph[hdrAlg]; !ok {
		return nil, nil, fmt.Errorf("%w: no algorithm in the protected header", ErrMalformed)
	} else if err := wire.dec.Unmarshal(raw, &alg); err != nil {
		return nil, nil, fmt.Errorf("%w: algorithm: %v", ErrMalformed, err)
	}
	if _, dup := uh[hdrAlg]; dup {
		// RFC 9052 §3: a label MUST NOT occur in both buckets.
		return nil, nil, fmt.Errorf("%w: algorithm in both headers", ErrMalformed)
	}
	var kid []byte
	for _, h := range []map[int]cbor.RawMessage{ph, uh} {
		if raw, ok := h[hdrKID]; ok {
			if kid != nil {
				return nil, nil, fmt.Errorf("%w: kid in both headers", ErrMalformed)
			}
			if err := wire.dec.Unmarshal(raw, &kid); err != nil || kid == nil {
				return nil, nil, fmt.Errorf("%w: kid is not a byte string", ErrMalformed)
			}
		}
	}
	k, err := pickKey(keys, kid)
	if err != nil {
		return nil, nil, err
	}
	if alg != k.Alg {
		return nil, nil, fmt.Errorf("%w: algorithm %d, the key is for %d", ErrVerify, alg, k.Alg)
	}
	wantTag, wantLen := map[int]uint64{AlgAESCCM16_64_128: tagEncrypt0, AlgHMAC256_64: tagMac0,
		AlgHMAC256_256: tagMac0, AlgES256: tagSign1}[alg], 4
	if alg == AlgAESCCM16_64_128 {
		wantLen = 3
	}
	if (tagged && tag != wantTag) || len(arr) != wantLen {
		return nil, nil, fmt.Errorf("%w: COSE structure does not match algorithm %d", ErrMalformed, alg)
	}
	var third []byte
	if err := wire.dec.Unmarshal(arr[2], &third); err != nil || third == nil {
		return nil, nil, fmt.Errorf("%w: payload is not a byte string", ErrMalformed)
	}
	switch alg {
	case AlgAESCCM16_64_128:
		var iv []byte
		if raw, ok := uh[hdrIV]; !ok {
			return nil, nil, fmt.Errorf("%w: no IV", ErrMalformed)
		} else if err := wire.dec.Unmarshal(raw, &iv); err != nil || len(iv) != 13 {
			return nil, nil, fmt.Errorf("%w: IV is not 13 bytes", ErrMalformed)
		}
		a, err := newCCM(k.Secret)
		if err != nil {
			return nil, nil, err
		}
		pt, err := a.Open(nil, iv, third, encStructure(prot))
		if err != nil {
			return nil, nil, ErrVerify
		}
		return pt, k, nil
	case AlgHMAC256_64, AlgHMAC256_256:
		var tagv []byte
		if err := wire.dec.Unmarshal(arr[3], &tagv); err != nil {
			return nil, nil, fmt.Errorf("%w: MAC tag: %v", ErrMalformed, err)
		}
		if !hmac.Equal(tagv, macTag(*k, prot, third)) {
			return nil, nil, ErrVerify
		}
		return third, k, nil
	default:
		var sig []byte
		if err := wire.dec.Unmarshal(arr[3], &sig); err != nil || len(sig) != 64 {
			return nil, nil, fmt.Errorf("%w: ES256 signature is not 64 bytes", ErrMalformed)
		}
		h := sha256.Sum256(sigStructure(prot, third))
		r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
		if !ecdsa.Verify(k.PublicKey, h[:], r, s) {
			return nil, nil, ErrVerify
		}
		return third, k, nil
	}
}

// ProtectToken protects a CWT claims set: with an Encrypt0 key alone, or signed/MACed with
// inner (COSE_Sign1 or COSE_Mac0) and then encrypted with enc (a nested CWT, RFC 8392 §7.1). A
// token for the OSCORE profile carries the Master Secret (RFC 9203 §3.2.1) and travels to
// /authz-info unprotected, so it is always encrypted: enc must be an Encrypt0 key.
func ProtectToken(claims []byte, inner *Key, enc Key, rnd io.Reader) ([]byte, error) {
	if enc.Alg != AlgAESCCM16_64_128 {
		return nil, fmt.Errorf("ace: a token is encrypted with COSE_Encrypt0 (alg 10), not alg %d", enc.Alg)
	}
	if inner != nil {
		if inner.Alg == AlgAESCCM16_64_128 {
			return nil, errors.New("ace: the inner layer of a nested token is COSE_Mac0 or COSE_Sign1")
		}
		signed, err := Protect(claims, *inner, rnd)
		if err != nil {
			return nil, err
		}
		claims = signed
	}
	return Protect(claims, enc, rnd)
}

// OpenToken opens a token with keys: a COSE_Encrypt0, COSE_Mac0 or COSE_Sign1 whose payload
// is the claims set, or a COSE_Encrypt0 whose plaintext is a COSE_Mac0 or COSE_Sign1 (nested,
// RFC 8392 §7.1; one level). encrypted reports whether the claims were encrypted on the way.
func OpenToken(token []byte, keys []Key) (claims []byte, encrypted bool, err error) {
	claims, encrypted, _, err = openToken(token, keys)
	return claims, encrypted, err
}

// openToken is OpenToken that also returns the key that authenticated the claims: for a
// nested token the inner (MAC or signature) key, whose AS vouches for the claims.
func openToken(token []byte, keys []Key) (claims []byte, encrypted bool, by *Key, err error) {
	payload, k, err := Open(token, keys)
	if err != nil {
		return nil, false, nil, err
	}
	if k.Alg != AlgAESCCM16_64_128 {
		return payload, false, k, nil
	}
	if len(payload) == 0 || payload[0]>>5 != 6 {
		return payload, true, k, nil // the claims map itself
	}
	inner, ik, err := Open(payload, keys)
	if err != nil {
		return nil, false, nil, err
	}
	if ik.Alg == AlgAESCCM16_64_128 {
		return nil, false, nil, fmt.Errorf("%w: an encrypted token nested in an encrypted token", ErrMalformed)
	}
	return inner, true, ik, nil
}

func pickKey(keys []Key, kid []byte) (*Key, error) {
	if kid == nil {
		if len(keys) == 1 {
			return &keys[0], nil
		}
		return nil, fmt.Errorf("%w: the token has no kid", ErrUnknownKey)
	}
	for i := range keys {
		if bytes.Equal(keys[i].KID, kid) {
			return &keys[i], nil
		}
	}
	return nil, fmt.Errorf("%w: kid %x", ErrUnknownKey, kid)
}
