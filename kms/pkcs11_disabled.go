//go:build !pkcs11

package kms

import (
	"context"
	"crypto"
	"fmt"
)

// openPKCS11 is the seam for PKCS#11 (RFC 7512 URIs) keys. This binary was built without
// them; a file with the build constraint `pkcs11` provides the real implementation
// (e.g. through github.com/ThalesGroup/crypto11, SoftHSM2 in tests).
// TODO(pkcs11): write kms/pkcs11.go (//go:build pkcs11).
func openPKCS11(_ context.Context, uri string) (crypto.Signer, error) {
	return nil, fmt.Errorf("%w: %q needs PKCS#11 support (build with -tags pkcs11)", ErrNotBuilt, uri)
}
