//go:build pkcs11 && cgo

package pkcs11_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"testing"
	"time"

	mp "github.com/miekg/pkcs11"

	"coapca/internal/testtool"
	"coapca/kms"
	"coapca/kms/pkcs11"
)

// TestImportedKeyNeverLeaves imports existing CA keys (as from an issuing key file) into a
// SoftHSM2 token and then, as an attacker with the PIN, tries to read them back out: CKA_VALUE
// (and for RSA CKA_PRIVATE_EXPONENT) must be refused, each key must be CKA_SENSITIVE and not
// CKA_EXTRACTABLE, and the token must not claim it was always sensitive (it was imported). The
// imported key signs as the original, and importing over it is refused.
func TestImportedKeyNeverLeaves(t *testing.T) {
	mod := testtool.SoftHSMToken(t, "coapca", "1234")
	ctx := context.Background()
	for i, keyType := range []string{"P-256", "P-384", "RSA-2048"} {
		t.Run(keyType, func(t *testing.T) {
			orig, err := kms.GenerateKey(keyType)
			if err != nil {
				t.Fatal(err)
			}
			uri := fmt.Sprintf("pkcs11:token=coapca;object=imported-%d;id=%%%02x?module-path=%s&pin-value=1234", i, i+1, mod)
			k, err := pkcs11.Import(ctx, uri, orig)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = k.Close() }()
			if !k.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(orig.Public()) {
				t.Fatal("the token's key is not the imported one")
			}
			for _, attr := range []uint{mp.CKA_VALUE, mp.CKA_PRIVATE_EXPONENT, mp.CKA_PRIME_1} {
				if v, err := k.Attribute(attr); err == nil && len(v) > 0 {
					t.Errorf("attribute %#x of the private key read out of the token (%d bytes)", attr, len(v))
				}
			}
			for _, tt := range []struct {
				attr uint
				name string
				want byte
			}{{mp.CKA_EXTRACTABLE, "CKA_EXTRACTABLE", 0}, {mp.CKA_SENSITIVE, "CKA_SENSITIVE", 1},
				{mp.CKA_ALWAYS_SENSITIVE, "CKA_ALWAYS_SENSITIVE", 0}, {mp.CKA_TOKEN, "CKA_TOKEN", 1}, {mp.CKA_PRIVATE, "CKA_PRIVATE", 1}} {
				v, err := k.Attribute(tt.attr)
				if err != nil {
					t.Fatalf("%s: %v", tt.name, err)
				}
				if len(v) != 1 || v[0] != tt.want {
					t.Errorf("%s = %x, want %d", tt.name, v, tt.want)
				}
			}
			// It signs as the original key: a self-signed certificate made in the token
			// verifies under the original public key.
			h := sha256.Sum256([]byte("tbs"))
			if _, err := k.Sign(rand.Reader, h[:], crypto.SHA256); err != nil {
				t.Fatal(err)
			}
			der, err := x509.CreateCertificate(rand.Reader, testTemplate(), testTemplate(), orig.Public(), k)
			if err != nil {
				t.Fatal(err)
			}
			c, err := x509.ParseCertificate(der)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.CheckSignatureFrom(c); err != nil {
				t.Fatalf("the token's signature does not verify under the imported key: %v", err)
			}
			// Importing another key under the same name replaces nothing.
			other, err := kms.GenerateKey(keyType)
			if err != nil {
				t.Fatal(err)
			}
			if k2, err := pkcs11.Import(ctx, uri, other); !errors.Is(err, pkcs11.ErrKeyExists) {
				if k2 != nil {
					k2.Close()
				}
				t.Fatalf("second import under the same name: %v, want ErrKeyExists", err)
			}
			k3, err := pkcs11.Open(ctx, uri)
			if err != nil {
				t.Fatal(err)
			}
			defer k3.Close()
			if !k3.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(orig.Public()) {
				t.Fatal("the second import replaced the key")
			}
		})
	}
	// Bad input: nothing is created.
	t.Run("unsupported key", func(t *testing.T) {
		ed, err := kms.GenerateKey("Ed25519")
		if err != nil {
			t.Fatal(err)
		}
		uri := "pkcs11:token=coapca;object=ed?module-path=" + mod + "&pin-value=1234"
		if k, err := pkcs11.Import(ctx, uri, ed); err == nil {
			k.Close()
			t.Fatal("an Ed25519 key was imported")
		}
		if k, err := pkcs11.Open(ctx, uri); err == nil {
			k.Close()
			t.Fatal("a refused import left a key in the token")
		}
	})
}

func testTemplate() *x509.Certificate {
	return &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Unix(0, 0), NotAfter: time.Unix(1<<32, 0),
		BasicConstraintsValid: true, IsCA: true, KeyUsage: x509.KeyUsageCertSign}
}
