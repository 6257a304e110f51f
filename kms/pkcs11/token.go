//go:build pkcs11 && cgo

package pkcs11

import (
	"context"
	"crypto"
	"crypto/elliptic"
	"fmt"
	"io"
	"sync"

	"github.com/ThalesGroup/crypto11"
)

// Built reports whether this binary can talk to PKCS#11 tokens.
const Built = true

// Key is a private key in a token. It signs in the token; the private key never leaves it.
// Close releases the module's session (the key object stays in the token).
type Key struct {
	ctx    *crypto11.Context
	signer crypto11.Signer
	once   sync.Once // crypto11 panics on a second Close
	err    error
}

var _ crypto.Signer = (*Key)(nil)

// Public returns the key's public half (read from the token).
func (k *Key) Public() crypto.PublicKey { return k.signer.Public() }

// Sign signs digest in the token.
func (k *Key) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	sig, err := k.signer.Sign(rand, digest, opts)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: sign: %w", err)
	}
	return sig, nil
}

// Close closes the token session; later calls do nothing.
func (k *Key) Close() error {
	k.once.Do(func() { k.err = k.ctx.Close() })
	return k.err
}

// Attribute reads one attribute of the private key object (tests: CKA_EXTRACTABLE,
// CKA_SENSITIVE; CKA_VALUE of a sensitive key is refused by the token).
func (k *Key) Attribute(typ uint) ([]byte, error) {
	a, err := k.ctx.GetAttribute(k.signer, crypto11.AttributeType(typ))
	if err != nil {
		return nil, fmt.Errorf("pkcs11: attribute %#x: %w", typ, err)
	}
	if a == nil {
		return nil, fmt.Errorf("pkcs11: attribute %#x not returned", typ)
	}
	return a.Value, nil
}

// connect parses uri, checks that it names one key and opens the token.
func connect(uri string) (*URI, *crypto11.Context, error) {
	u, err := ParseURI(uri)
	if err != nil {
		return nil, nil, err
	}
	if err := u.KeyRef(); err != nil {
		return nil, nil, err
	}
	pin, err := u.PIN()
	if err != nil {
		return nil, nil, err
	}
	cfg := &crypto11.Config{Path: u.ModulePath, TokenLabel: u.Token, TokenSerial: u.Serial, Pin: pin,
		LoginNotSupported: pin == ""}
	if u.SlotID != nil {
		n := int(*u.SlotID)
		cfg.SlotNumber = &n
	}
	c, err := crypto11.Configure(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("pkcs11: open %s: %w", Redact(uri), err)
	}
	return u, c, nil
}

func labelOrNil(s string) []byte {
	if s == "" {
		return nil
	}
	return []byte(s)
}

// Open returns the private key that uri names. It is an error when the token holds no such
// key or more than one.
func Open(_ context.Context, uri string) (*Key, error) {
	u, c, err := connect(uri)
	if err != nil {
		return nil, err
	}
	keys, err := c.FindKeyPairs(u.ID, labelOrNil(u.Object))
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("pkcs11: find %s: %w", Redact(uri), err)
	}
	switch len(keys) {
	case 0:
		c.Close()
		return nil, fmt.Errorf("pkcs11: no key pair %s in the token", Redact(uri))
	case 1:
		return &Key{ctx: c, signer: keys[0]}, nil
	}
	c.Close()
	return nil, fmt.Errorf("pkcs11: %d key pairs match %s; name one (object and id)", len(keys), Redact(uri))
}

// Generate makes a new key pair of keyType ("P-256" (also ""), "P-384", "RSA-2048",
// "RSA-3072") in the token, labelled and identified as uri says, with CKA_SENSITIVE true and
// CKA_EXTRACTABLE false: the private key can sign but never be read out of the token. A key
// that uri already names is not replaced (an error).
func Generate(_ context.Context, uri, keyType string) (*Key, error) {
	u, c, err := connect(uri)
	if err != nil {
		return nil, err
	}
	existing, err := c.FindKeyPairs(u.ID, labelOrNil(u.Object))
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("pkcs11: find %s: %w", Redact(uri), err)
	}
	if len(existing) > 0 {
		c.Close()
		return nil, fmt.Errorf("pkcs11: the token already holds a key %s; not replaced: %w", Redact(uri), ErrKeyExists)
	}
	id := u.ID
	if len(id) == 0 {
		id = []byte(u.Object) // crypto11 needs an id; the label doubles as one
	}
	var s crypto11.Signer
	switch keyType {
	case "", "P-256":
		s, err = c.GenerateECDSAKeyPairWithLabel(id, labelOrNil(u.Object), elliptic.P256())
	case "P-384":
		s, err = c.GenerateECDSAKeyPairWithLabel(id, labelOrNil(u.Object), elliptic.P384())
	case "RSA-2048":
		s, err = c.GenerateRSAKeyPairWithLabel(id, labelOrNil(u.Object), 2048)
	case "RSA-3072":
		s, err = c.GenerateRSAKeyPairWithLabel(id, labelOrNil(u.Object), 3072)
	default:
		err = fmt.Errorf("key type %q cannot be generated in a token (P-256, P-384, RSA-2048, RSA-3072)", keyType)
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("pkcs11: generate %s: %w", Redact(uri), err)
	}
	return &Key{ctx: c, signer: s}, nil
}
