package kms

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"coapca/kms/pkcs11"
)

func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	ec, _ := GenerateP256()
	sec1, _ := x509.MarshalECPrivateKey(ec)
	pk8, _ := x509.MarshalPKCS8PrivateKey(ec)
	rk, _ := rsa.GenerateKey(rand.Reader, 1024) //nolint:gosec // test only
	pk1 := x509.MarshalPKCS1PrivateKey(rk)
	p8 := writePEM(t, dir, "p8.pem", "PRIVATE KEY", pk8)
	s1 := writePEM(t, dir, "sec1.pem", "EC PRIVATE KEY", sec1)
	r1 := writePEM(t, dir, "rsa.pem", "RSA PRIVATE KEY", pk1)
	enc := writePEM(t, dir, "enc.pem", "ENCRYPTED PRIVATE KEY", []byte{1})
	junk := filepath.Join(dir, "junk.pem")
	os.WriteFile(junk, []byte("hello"), 0o600)

	tests := []struct {
		uri     string
		wantPub crypto.PublicKey
		wantErr error
	}{
		{"file:" + p8, &ec.PublicKey, nil},
		{"file://" + p8, &ec.PublicKey, nil},
		{p8, &ec.PublicKey, nil},
		{"file:" + s1, &ec.PublicKey, nil},
		{"file:" + r1, &rk.PublicKey, nil},
		{"file:" + enc, nil, ErrPassphrase}, // encrypted, no passphrase
		{"file:" + junk, nil, nil},
		{"file:" + filepath.Join(dir, "missing.pem"), nil, os.ErrNotExist},
		{"file:", nil, nil},
		{"pkcs11:token=ca;object=issuing?module-path=/nonexistent/module.so", nil, notBuilt()},
		{"pkcs11:token=ca", nil, nil}, // names no key: a clear error in both builds
		{"vault:secret/ca", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.uri, func(t *testing.T) {
			s, err := Open(context.Background(), tt.uri)
			if tt.wantPub == nil {
				if err == nil {
					t.Fatal("Open succeeded, want an error")
				}
				if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !s.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(tt.wantPub) {
				t.Error("wrong public key")
			}
		})
	}
}

// notBuilt is the error a pkcs11: URI gives in this build: ErrNotBuilt without the pkcs11
// tag; with it, the missing module fails the open (any error).
func notBuilt() error {
	if pkcs11.Built {
		return nil
	}
	return ErrNotBuilt
}

func TestWriteKeyFileRoundTrip(t *testing.T) {
	for _, kt := range []string{"P-256", "P-384", "Ed25519"} {
		t.Run(kt, func(t *testing.T) {
			k, err := GenerateKey(kt)
			if err != nil {
				t.Fatal(err)
			}
			if got := KeyType(k.Public()); got != kt {
				t.Errorf("KeyType = %q", got)
			}
			p := filepath.Join(t.TempDir(), "private", "k.pem")
			if err := WriteKeyFile(p, k); err != nil {
				t.Fatal(err)
			}
			st, _ := os.Stat(p)
			if st.Mode().Perm() != 0o600 {
				t.Errorf("mode %v, want 0600", st.Mode().Perm())
			}
			if st, _ := os.Stat(filepath.Dir(p)); st.Mode().Perm() != 0o700 {
				t.Errorf("dir mode %v, want 0700", st.Mode().Perm())
			}
			s, err := Open(context.Background(), "file:"+p)
			if err != nil {
				t.Fatal(err)
			}
			if !s.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(k.Public()) {
				t.Error("round trip changed the key")
			}
		})
	}
	if _, err := GenerateKey("DSA"); err == nil {
		t.Error("GenerateKey(DSA) succeeded")
	}
}

// TestGenerateKeyFrom covers every key type the EST profiles name (server-generated keys,
// RFC 9148 §4.8 /skg) and the CLI's --key-type, from the injected source, and refuses others.
func TestGenerateKeyFrom(t *testing.T) {
	for _, tt := range []struct {
		keyType, want string
	}{
		{"", "P-256"}, {"P-256", "P-256"}, {"ec", "P-256"}, {"P-384", "P-384"}, {"P-521", "P-521"},
		{"Ed25519", "Ed25519"}, {"RSA-2048", "RSA-2048"},
		{"DSA", ""}, {"P-192", ""}, {"RSA-1024", ""},
	} {
		t.Run(tt.keyType, func(t *testing.T) {
			k, err := GenerateKeyFrom(rand.Reader, tt.keyType)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("key type %q accepted", tt.keyType)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := KeyType(k.Public()); got != tt.want {
				t.Errorf("KeyType = %q, want %q", got, tt.want)
			}
			if _, err := x509.MarshalPKCS8PrivateKey(k); err != nil {
				t.Errorf("PKCS#8: %v", err)
			}
		})
	}
}

func BenchmarkECDSASign(b *testing.B) {
	k, _ := GenerateP256()
	h := sha256.Sum256([]byte("x"))
	for b.Loop() {
		if _, err := ecdsa.SignASN1(rand.Reader, k, h[:]); err != nil {
			b.Fatal(err)
		}
	}
}

// TestWriteFileAtomicSpecialFiles: --out /dev/null must write through the device, never rename
// a regular file over it (as root that replaced the null device and broke every other user's
// programs); a symbolic link is followed and kept; a directory is refused.
func TestWriteFileAtomicSpecialFiles(t *testing.T) {
	if err := WriteFileAtomic(os.DevNull, []byte("discarded"), 0o644); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(os.DevNull); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		t.Fatalf("%s is no longer a character device: %v %v", os.DevNull, fi.Mode(), err)
	}
	dir := t.TempDir()
	target := filepath.Join(dir, "target.pem")
	link := filepath.Join(dir, "link.pem")
	if err := os.WriteFile(target, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(link, []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the link was replaced: %v %v", fi.Mode(), err)
	}
	if b, _ := os.ReadFile(target); string(b) != "new" {
		t.Fatalf("target holds %q", b)
	}
	if err := WriteFileAtomic(dir, []byte("x"), 0o644); err == nil {
		t.Fatal("a directory was accepted")
	}
}

// TestWriteFileAtomicDanglingSymlink is the attack of a link planted where --out will write:
// a link that leads nowhere (or loops) is refused with an error and stays a link — renaming over
// it would replace the link with a regular file.
func TestWriteFileAtomicDanglingSymlink(t *testing.T) {
	for _, tc := range []struct {
		name   string
		target func(dir string) string
	}{
		{"dangling", func(dir string) string { return filepath.Join(dir, "missing", "x.pem") }},
		{"loop", func(dir string) string { return filepath.Join(dir, "link.pem") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			link := filepath.Join(dir, "link.pem")
			if err := os.Symlink(tc.target(dir), link); err != nil {
				t.Fatal(err)
			}
			if err := WriteFileAtomic(link, []byte("new"), 0o644); err == nil {
				t.Fatal("a link that cannot be followed was written")
			}
			if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
				t.Fatalf("the link was replaced: %v %v", fi.Mode(), err)
			}
		})
	}
}
