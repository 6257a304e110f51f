package kms

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"coapca/internal/testtool"
)

// testIterations keeps the tests fast; the iteration count is read from the file.
const testIterations = 2048

func samePublic(a, b crypto.PublicKey) bool {
	return a.(interface{ Equal(crypto.PublicKey) bool }).Equal(b)
}

// TestEncryptedKeyRefusals: an encrypted CA key is refused — with a clear error, never a
// panic — without its passphrase, with a wrong one, when tampered with, and when its
// parameters ask for unbounded work.
func TestEncryptedKeyRefusals(t *testing.T) {
	key, err := GenerateP256()
	if err != nil {
		t.Fatal(err)
	}
	pass := []byte("correct horse")
	good, err := marshalEncrypted(rand.Reader, key, pass, testIterations)
	if err != nil {
		t.Fatal(err)
	}
	if k, err := ParsePrivateKeyPEMWithPassphrase(good, pass); err != nil || !samePublic(k.Public(), key.Public()) {
		t.Fatalf("round trip: %v", err)
	}
	blk, _ := pem.Decode(good)
	reencode := func(der []byte) []byte {
		return pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: der})
	}
	flipped := append([]byte(nil), blk.Bytes...)
	flipped[len(flipped)-1] ^= 1
	// Same structure, iteration count raised to 2^31-1.
	var epki encryptedPrivateKeyInfo
	asn1.Unmarshal(blk.Bytes, &epki)
	var p pbes2Params
	asn1.Unmarshal(epki.Algo.Parameters.FullBytes, &p)
	var kp pbkdf2Params
	asn1.Unmarshal(p.KeyDerivationFunc.Parameters.FullBytes, &kp)
	kp.IterationCount = 1<<31 - 1
	kdf, _ := asn1.Marshal(kp)
	p.KeyDerivationFunc.Parameters = asn1.RawValue{FullBytes: kdf}
	pd, _ := asn1.Marshal(p)
	epki.Algo.Parameters = asn1.RawValue{FullBytes: pd}
	huge, _ := asn1.Marshal(epki)

	tests := []struct {
		name    string
		pem     []byte
		pass    []byte
		wantErr error
		wantMsg string
	}{
		{"no passphrase", good, nil, ErrPassphrase, "give its passphrase"},
		{"wrong passphrase", good, []byte("battery staple"), ErrPassphrase, ""},
		{"tampered ciphertext", reencode(flipped), pass, ErrPassphrase, ""},
		{"truncated", reencode(blk.Bytes[:len(blk.Bytes)-16]), pass, nil, "malformed"},
		{"unbounded iterations", reencode(huge), pass, nil, "iteration count"},
		{"garbage", reencode([]byte{0x30, 0x03, 0x02, 0x01, 0x01}), pass, nil, "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := ParsePrivateKeyPEMWithPassphrase(tt.pem, tt.pass)
			if err == nil {
				t.Fatalf("accepted (%T)", k)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.wantMsg != "" && !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("err = %v, want %q", err, tt.wantMsg)
			}
		})
	}
}

// TestEncryptedKeyOpenSSLInterop: keys encrypted here are read by `openssl pkcs8`, and keys
// that `openssl pkcs8 -topk8 -v2 …` encrypted are read here, for every PBES2 variant the
// parser accepts.
func TestEncryptedKeyOpenSSLInterop(t *testing.T) {
	openssl := testtool.LookPath(t, "openssl")
	dir := t.TempDir()
	passFile := filepath.Join(dir, "pass")
	if err := os.WriteFile(passFile, []byte("s3cret pass\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pass := []byte("s3cret pass")

	t.Run("ours to openssl", func(t *testing.T) {
		for _, kt := range []string{"P-256", "Ed25519", "RSA-2048"} {
			key, err := GenerateKey(kt)
			if err != nil {
				t.Fatal(err)
			}
			enc := filepath.Join(dir, "ours-"+kt+".pem")
			if err := WriteEncryptedKeyFile(enc, key, pass, testIterations); err != nil {
				t.Fatal(err)
			}
			plain := filepath.Join(dir, "ours-"+kt+".plain.pem")
			testtool.MustRun(t, time.Minute, openssl, "pkcs8", "-in", enc, "-passin", "file:"+passFile, "-out", plain)
			k, err := LoadKeyFile(plain)
			if err != nil {
				t.Fatal(err)
			}
			if !samePublic(k.Public(), key.Public()) {
				t.Fatalf("%s: openssl decrypted another key", kt)
			}
			if _, err := testtool.Run(t, time.Minute, openssl, "pkcs8", "-in", enc, "-passin", "pass:wrong", "-out", filepath.Join(dir, "x")); err == nil {
				t.Fatalf("%s: openssl decrypted with a wrong passphrase", kt)
			}
		}
	})

	t.Run("openssl to ours", func(t *testing.T) {
		plain := filepath.Join(dir, "openssl.pem")
		testtool.MustRun(t, time.Minute, openssl, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", plain)
		want, err := LoadKeyFile(plain)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range [][]string{
			{"-v2", "aes-256-cbc"},
			{"-v2", "aes-128-cbc"},
			{"-v2", "aes-192-cbc", "-v2prf", "hmacWithSHA512"},
			{"-v2", "aes-256-cbc", "-v2prf", "hmacWithSHA1", "-iter", "100000"},
		} {
			t.Run(strings.Join(v, " "), func(t *testing.T) {
				enc := filepath.Join(dir, "openssl-enc.pem")
				args := append([]string{"pkcs8", "-topk8", "-in", plain, "-out", enc, "-passout", "file:" + passFile}, v...)
				testtool.MustRun(t, time.Minute, openssl, args...)
				k, err := LoadKeyFileWithPassphrase(enc, pass)
				if err != nil {
					t.Fatal(err)
				}
				if !samePublic(k.Public(), want.Public()) {
					t.Fatal("decrypted another key")
				}
				if _, err := LoadKeyFileWithPassphrase(enc, []byte("wrong")); !errors.Is(err, ErrPassphrase) {
					t.Fatalf("wrong passphrase: %v", err)
				}
			})
		}
		// PBES1 (openssl's -v1) is refused by name, not misread.
		enc := filepath.Join(dir, "openssl-v1.pem")
		testtool.MustRun(t, time.Minute, openssl, "pkcs8", "-topk8", "-in", plain, "-out", enc, "-passout", "file:"+passFile, "-v1", "PBE-SHA1-3DES")
		if _, err := LoadKeyFileWithPassphrase(enc, pass); err == nil || !strings.Contains(err.Error(), "PBES2") {
			t.Fatalf("PBES1 key: %v", err)
		}
	})
}

// TestWriteEncryptedKeyFile writes a CA key encrypted at rest: the file holds no plaintext
// PKCS#8 and only the passphrase opens it (kms.OpenWithPassphrase with a file: URI).
func TestWriteEncryptedKeyFile(t *testing.T) {
	key, _ := GenerateP256()
	p := filepath.Join(t.TempDir(), "private", "ca.key")
	if err := WriteEncryptedKeyFile(p, key, []byte("pw"), 0); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	if !strings.HasPrefix(string(b), "-----BEGIN ENCRYPTED PRIVATE KEY-----") || strings.Contains(string(b), string(der[len(der)-40:])) {
		t.Fatalf("not encrypted:\n%s", b)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", st.Mode().Perm())
	}
	if _, err := Open(t.Context(), "file:"+p); !errors.Is(err, ErrPassphrase) {
		t.Fatalf("Open without passphrase: %v", err)
	}
	k, err := OpenWithPassphrase(t.Context(), "file:"+p, []byte("pw"))
	if err != nil || !samePublic(k.Public(), key.Public()) {
		t.Fatalf("OpenWithPassphrase: %v", err)
	}
}
