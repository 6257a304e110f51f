package kms

import (
	"context"
	"crypto"
	"errors"
	"fmt"

	"coapca/kms/pkcs11"
)

// openPKCS11 opens a key in a PKCS#11 token (RFC 7512 URI). A binary built without the
// pkcs11 tag still parses the URI (a typo is reported as such) and then says it cannot open
// tokens, wrapping ErrNotBuilt.
func openPKCS11(ctx context.Context, uri string) (crypto.Signer, error) {
	k, err := pkcs11.Open(ctx, uri)
	if errors.Is(err, pkcs11.ErrNotBuilt) {
		return nil, fmt.Errorf("%w: %w", ErrNotBuilt, err)
	}
	if err != nil {
		return nil, fmt.Errorf("kms: %w", err)
	}
	return k, nil
}
