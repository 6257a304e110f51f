//go:build pkcs11 && cgo

package pkcs11

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"strings"
	"testing"

	mp "github.com/miekg/pkcs11"

	"coapca/internal/testtool"
)

// TestTokenKeyNeverLeaves generates a CA key in a SoftHSM2 token and then tries, as an
// attacker with the PIN would, to read the private key out: CKA_VALUE must be refused, the
// key must be CKA_SENSITIVE and not CKA_EXTRACTABLE. It still signs, and a second Generate for
// the same label does not replace it.
func TestTokenKeyNeverLeaves(t *testing.T) {
	mod := testtool.SoftHSMToken(t, "coapca", "1234")
	uri := "pkcs11:token=coapca;object=issuing-ca?module-path=" + mod + "&pin-value=1234"
	ctx := context.Background()
	k, err := Generate(ctx, uri, "P-256")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = k.Close() }()

	if _, err := k.Attribute(mp.CKA_VALUE); err == nil {
		t.Fatal("CKA_VALUE of the private key was read out of the token")
	}
	for _, tt := range []struct {
		attr uint
		name string
		want byte
	}{{mp.CKA_EXTRACTABLE, "CKA_EXTRACTABLE", 0}, {mp.CKA_SENSITIVE, "CKA_SENSITIVE", 1},
		{mp.CKA_NEVER_EXTRACTABLE, "CKA_NEVER_EXTRACTABLE", 1}, {mp.CKA_ALWAYS_SENSITIVE, "CKA_ALWAYS_SENSITIVE", 1}} {
		v, err := k.Attribute(tt.attr)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if len(v) != 1 || v[0] != tt.want {
			t.Errorf("%s = %x, want %d", tt.name, v, tt.want)
		}
	}

	if _, err := Generate(ctx, uri, "P-256"); err == nil || !strings.Contains(err.Error(), "not replaced") {
		t.Fatalf("second Generate: %v", err)
	}

	// A second process (here: a second Open) finds the same key and signs with it.
	k2, err := Open(ctx, uri)
	if err != nil {
		t.Fatal(err)
	}
	if !k2.Public().(*ecdsa.PublicKey).Equal(k.Public()) {
		t.Fatal("Open found another key")
	}
	h := sha256.Sum256([]byte("tbs"))
	sig, err := k2.Sign(rand.Reader, h[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if !ecdsa.VerifyASN1(k.Public().(*ecdsa.PublicKey), h[:], sig) {
		t.Fatal("token signature does not verify")
	}
	// PKCS#11 login state is per process: close every session, so that the wrong PIN below
	// meets a logged-out token.
	if err := k2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}

	for _, bad := range []struct{ name, uri string }{
		{"wrong PIN", "pkcs11:token=coapca;object=issuing-ca?module-path=" + mod + "&pin-value=0000"},
		{"no such key", "pkcs11:token=coapca;object=other?module-path=" + mod + "&pin-value=1234"},
		{"no such token", "pkcs11:token=nope;object=issuing-ca?module-path=" + mod + "&pin-value=1234"},
		{"no such module", "pkcs11:token=coapca;object=issuing-ca?module-path=/nonexistent.so&pin-value=1234"},
	} {
		t.Run(bad.name, func(t *testing.T) {
			k, err := Open(ctx, bad.uri)
			if err == nil {
				k.Close()
				t.Fatal("Open succeeded")
			}
			if strings.Contains(err.Error(), "pin-value=") && !strings.Contains(err.Error(), "REDACTED") {
				t.Errorf("error shows the PIN: %v", err)
			}
		})
	}
}
