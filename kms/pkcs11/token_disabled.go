//go:build !pkcs11 || !cgo

package pkcs11

import (
	"context"
	"crypto"
	"fmt"
	"io"
)

// Built reports whether this binary can talk to PKCS#11 tokens.
const Built = false

// Key is a private key in a token; this binary has none.
type Key struct{}

// Public is never reached: Open and Generate return no Key in this build.
func (*Key) Public() crypto.PublicKey { return nil }

// Sign is never reached: Open and Generate return no Key in this build.
func (*Key) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) { return nil, ErrNotBuilt }

// Close is never reached: Open and Generate return no Key in this build.
func (*Key) Close() error { return nil }

// Open checks uri and reports that this binary cannot open tokens.
func Open(_ context.Context, uri string) (*Key, error) {
	if u, err := ParseURI(uri); err != nil {
		return nil, err
	} else if err := u.KeyRef(); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("pkcs11: %s: %w", Redact(uri), ErrNotBuilt)
}

// Generate checks uri and reports that this binary cannot open tokens.
func Generate(ctx context.Context, uri, _ string) (*Key, error) { return Open(ctx, uri) }

// Import checks uri and reports that this binary cannot open tokens.
func Import(ctx context.Context, uri string, _ crypto.Signer) (*Key, error) { return Open(ctx, uri) }
