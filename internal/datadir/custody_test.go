package datadir

import (
	"crypto"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"coapca/kms"
)

// testIterations keeps PBKDF2 cheap in tests (the count is read from each file).
const testIterations = 1000

// TestKeysEncryptedAtRest: with a passphrase, every CA and server key that Open writes to
// DIR/private is an encrypted PKCS#8 file; a thief who copies the directory without the
// passphrase cannot open it (the next Open without it fails instead of making new keys), and
// the right passphrase opens the same CA.
func TestKeysEncryptedAtRest(t *testing.T) {
	dir := t.TempDir()
	pass := []byte("operator passphrase")
	d, err := Open(Options{Dir: dir, Passphrase: pass, PBKDF2Iterations: testIterations})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{d.Paths.RootKey, d.Paths.IssuingKey, d.Paths.ServerKey, d.Paths.CMPSignerKey} {
		b, err := os.ReadFile(k)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(b), "-----BEGIN ENCRYPTED PRIVATE KEY-----") {
			t.Errorf("%s is not encrypted", k)
		}
		if _, err := kms.LoadKeyFile(k); !errors.Is(err, kms.ErrPassphrase) {
			t.Errorf("%s opened without the passphrase: %v", k, err)
		}
	}
	// The demo device key is a device's, not the CA's: plaintext as a device holds it.
	if _, err := kms.LoadKeyFile(d.Paths.DeviceKey); err != nil {
		t.Errorf("demo device key: %v", err)
	}
	for _, wrong := range [][]byte{nil, []byte("guess")} {
		if _, err := Open(Options{Dir: dir, Passphrase: wrong}); !errors.Is(err, kms.ErrPassphrase) {
			t.Fatalf("Open with passphrase %q: %v", wrong, err)
		}
	}
	again, err := Open(Options{Dir: dir, Passphrase: pass})
	if err != nil {
		t.Fatal(err)
	}
	if !again.IssuingCA.Equal(d.IssuingCA) || len(again.Created) != 0 {
		t.Fatalf("reopening changed the CA (created %v)", again.Created)
	}
}

// TestOfflineRoot: RootKeyOut puts the new root key outside the data directory (the operator
// moves it off line); the directory never holds it, later starts run without it, and an
// existing file is never overwritten with a new root key.
func TestOfflineRoot(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	out := filepath.Join(t.TempDir(), "root.key")
	pass := []byte("root passphrase")
	d, err := Open(Options{Dir: dir, RootKeyOut: out, Passphrase: pass, PBKDF2Iterations: testIterations})
	if err != nil {
		t.Fatal(err)
	}
	if fileExists(d.Paths.RootKey) {
		t.Fatal("the root key was written into the data directory")
	}
	rk, err := kms.LoadKeyFileWithPassphrase(out, pass)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.IssuingCA.CheckSignatureFrom(d.Root); err != nil || !d.Root.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(rk.Public()) {
		t.Fatalf("the offline key is not the root's: %v", err)
	}
	again, err := Open(Options{Dir: dir, Passphrase: pass})
	if err != nil {
		t.Fatal(err)
	}
	if again.RootKey != nil || !again.Root.Equal(d.Root) || !again.IssuingCA.Equal(d.IssuingCA) {
		t.Fatal("second start changed the CA or found a root key")
	}
	// A new directory must not overwrite an existing key file with a new root key.
	before, _ := os.ReadFile(out)
	if _, err := Open(Options{Dir: filepath.Join(t.TempDir(), "other"), RootKeyOut: out}); err == nil {
		t.Fatal("an existing root key file was overwritten")
	}
	if after, _ := os.ReadFile(out); string(after) != string(before) {
		t.Fatal("the root key file changed")
	}
}

// TestNoDemo: a production directory holds no demo manufacturer, device or CMP secret.
func TestNoDemo(t *testing.T) {
	dir := t.TempDir()
	d, err := Open(Options{Dir: dir, NoDemo: true})
	if err != nil {
		t.Fatal(err)
	}
	if fileExists(d.Paths.Demo) || d.ManufacturerCA != nil || d.Device != nil || d.CMPSecret != nil {
		t.Fatalf("demo credentials created: %v", d.Created)
	}
	if d.IssuingCA == nil || d.Server == nil || d.CMPSigner == nil {
		t.Fatal("CA incomplete")
	}
}

// TestExternalIssuingKey: an issuing key held elsewhere (a token) is certified on first
// start; a later start with another key is refused, not re-certified.
func TestExternalIssuingKey(t *testing.T) {
	dir := t.TempDir()
	key, _ := kms.GenerateP256()
	d, err := Open(Options{Dir: dir, IssuingKey: key})
	if err != nil {
		t.Fatal(err)
	}
	if fileExists(d.Paths.IssuingKey) || d.IssuingKey != key || !d.IssuingCA.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(key.Public()) {
		t.Fatal("the issuing CA does not certify the external key, or a key file was written")
	}
	if err := d.Server.CheckSignatureFrom(d.IssuingCA); err != nil {
		t.Fatal(err)
	}
	other, _ := kms.GenerateP256()
	if _, err := Open(Options{Dir: dir, IssuingKey: other}); err == nil || !strings.Contains(err.Error(), "does not certify") {
		t.Fatalf("another issuing key: %v", err)
	}
}
