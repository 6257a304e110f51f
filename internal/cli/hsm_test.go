//go:build pkcs11 && cgo

package cli

import (
	"context"
	"crypto"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	mp "github.com/miekg/pkcs11"

	"coapca/internal/config"
	"coapca/internal/testtool"
	"coapca/kms"
	"coapca/kms/pkcs11"
)

// TestHSMIssuingKey: `coapca init --issuing-key pkcs11:…` generates the issuing CA key in a
// SoftHSM2 token; the server signs an EST-coaps and a CMP enrollment with it (both verified
// against the issuing CA certificate, whose key is the token's), the data directory holds no
// issuing key file, and an attempt to read the private key out of the token fails.
func TestHSMIssuingKey(t *testing.T) {
	mod := testtool.SoftHSMToken(t, "coapca", "1234")
	ctx := context.Background()
	work := t.TempDir()
	pinFile := filepath.Join(work, "pin")
	if err := os.WriteFile(pinFile, []byte("1234\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	uri := "pkcs11:token=coapca;object=issuing-ca;id=%01?module-path=" + mod + "&pin-source=" + pinFile
	cfgPath, data := filepath.Join(work, "coapca.yaml"), filepath.Join(work, "data")
	if _, errOut, code := cli(ctx, "init", "--config", cfgPath, "--data", data, "--issuing-key", uri); code != 0 {
		t.Fatalf("init: %s", errOut)
	}
	if fileExists(filepath.Join(data, "private", "issuing-ca.key")) {
		t.Fatal("an issuing key file was written beside the HSM key")
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.CA.IssuingKey != uri {
		t.Fatalf("ca.issuing_key = %q", cfg.CA.IssuingKey)
	}

	// The demo credentials stand in for a manufacturer here (init turned them off).
	s := testServerAt(t, data, func(c *config.Config) { c.CA = cfg.CA; c.CA.NoDemo = false })
	key, err := pkcs11.Open(ctx, uri)
	if err != nil {
		t.Fatal(err)
	}
	defer key.Close()
	if !key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(s.data.IssuingCA.PublicKey) {
		t.Fatal("the issuing CA certificate does not certify the token's key")
	}

	d := s.data.Paths
	o := t.TempDir()
	if _, errOut, code := cli(ctx, "est", "enroll", "--server", s.coapsURL, "--trust", d.Root, "--cert", d.Device, "--key", d.DeviceKey,
		"--subject", "CN=demo-device-0001", "--key-out", filepath.Join(o, "est.key"), "--out", filepath.Join(o, "est.pem")); code != 0 {
		t.Fatalf("est enroll: %s", errOut)
	}
	verifyIssued(t, filepath.Join(o, "est.pem"), s.data.IssuingCA, s.data.Root)
	if _, errOut, code := cli(ctx, "cmp", "ir", "--server", s.coapURL, "--ref", "demo", "--secret-file", d.CMPSecret,
		"--subject", "CN=cmp-device", "--trust", d.Root, "--key-out", filepath.Join(o, "cmp.key"), "--out", filepath.Join(o, "cmp.pem")); code != 0 {
		t.Fatalf("cmp ir: %s", errOut)
	}
	verifyIssued(t, filepath.Join(o, "cmp.pem"), s.data.IssuingCA, s.data.Root)

	// The attack: read the CA key out of the token with the PIN in hand.
	if v, err := key.Attribute(mp.CKA_VALUE); err == nil {
		t.Fatalf("the private key was extracted (%d bytes)", len(v))
	}
	if v, err := key.Attribute(mp.CKA_EXTRACTABLE); err != nil || len(v) != 1 || v[0] != 0 {
		t.Fatalf("CKA_EXTRACTABLE = %x, %v", v, err)
	}
	if v, err := key.Attribute(mp.CKA_SENSITIVE); err != nil || len(v) != 1 || v[0] != 1 {
		t.Fatalf("CKA_SENSITIVE = %x, %v", v, err)
	}
	// And a second init refuses to touch the CA; a key of the same name is never replaced.
	if _, errOut, code := cli(ctx, "init", "--config", filepath.Join(work, "b.yaml"), "--data", filepath.Join(work, "b"), "--issuing-key", uri); code != 0 {
		t.Fatalf("init on a key already in the token: %s", errOut)
	} else if !strings.Contains(errOut, "already in the token") {
		t.Errorf("init did not say it used the existing key: %s", errOut)
	}
}

// TestHSMImportIssuingKey: `coapca init --issuing-key pkcs11:… --import-key FILE` imports an
// existing issuing key file (encrypted at rest with the init passphrase) into a SoftHSM2 token:
// the issuing CA certificate certifies that key, the server signs an enrollment with it in the
// token, no key file is written into the data directory, and the key cannot be read out of the
// token. The attacks and mistakes refused, each before anything is created: importing over a
// key already in the token under that name (it would be replaced, or another key certified in
// its place), an unreadable or wrong-passphrase key file, and --import-key without a token.
func TestHSMImportIssuingKey(t *testing.T) {
	mod := testtool.SoftHSMToken(t, "coapca", "1234")
	ctx := context.Background()
	work := t.TempDir()
	pass := filepath.Join(work, "pass")
	if err := os.WriteFile(pass, []byte("correct horse\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	orig, err := kms.GenerateKey("P-384")
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(work, "issuing-ca.key")
	if err := kms.WriteEncryptedKeyFile(keyFile, orig, []byte("correct horse"), 1000); err != nil {
		t.Fatal(err)
	}
	uri := "pkcs11:token=coapca;object=imported-ca;id=%02?module-path=" + mod + "&pin-value=1234"
	cfgPath, data := filepath.Join(work, "coapca.yaml"), filepath.Join(work, "data")
	out, errOut, code := cli(ctx, "init", "--config", cfgPath, "--data", data, "--issuing-key", uri,
		"--import-key", keyFile, "--passphrase-file", pass, "--pbkdf2-iterations", "1000")
	if code != 0 {
		t.Fatalf("init --import-key: %s", errOut)
	}
	if !strings.Contains(out, "destroy that file") {
		t.Errorf("init did not tell to destroy the imported key file: %s", out)
	}
	if fileExists(filepath.Join(data, "private", "issuing-ca.key")) {
		t.Fatal("an issuing key file was written beside the HSM key")
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	s := testServerAt(t, data, func(c *config.Config) { c.CA = cfg.CA; c.CA.NoDemo = false })
	if !orig.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(s.data.IssuingCA.PublicKey) {
		t.Fatal("the issuing CA certificate does not certify the imported key")
	}
	d := s.data.Paths
	o := t.TempDir()
	if _, errOut, code := cli(ctx, "est", "enroll", "--server", s.coapsURL, "--trust", d.Root, "--cert", d.Device, "--key", d.DeviceKey,
		"--subject", "CN=demo-device-0001", "--key-out", filepath.Join(o, "est.key"), "--out", filepath.Join(o, "est.pem")); code != 0 {
		t.Fatalf("est enroll: %s", errOut)
	}
	verifyIssued(t, filepath.Join(o, "est.pem"), s.data.IssuingCA, s.data.Root)

	key, err := pkcs11.Open(ctx, uri)
	if err != nil {
		t.Fatal(err)
	}
	defer key.Close()
	if v, err := key.Attribute(mp.CKA_VALUE); err == nil && len(v) > 0 {
		t.Fatalf("the imported private key was read out of the token (%d bytes)", len(v))
	}
	if v, err := key.Attribute(mp.CKA_EXTRACTABLE); err != nil || len(v) != 1 || v[0] != 0 {
		t.Fatalf("CKA_EXTRACTABLE = %x, %v", v, err)
	}
	if v, err := key.Attribute(mp.CKA_SENSITIVE); err != nil || len(v) != 1 || v[0] != 1 {
		t.Fatalf("CKA_SENSITIVE = %x, %v", v, err)
	}

	otherKey, err := kms.GenerateKey("P-256")
	if err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(work, "other.key")
	if err := kms.WriteKeyFile(other, otherKey); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(work, "garbage.key")
	if err := os.WriteFile(garbage, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	wrongPass := filepath.Join(work, "wrong-pass")
	if err := os.WriteFile(wrongPass, []byte("wrong\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for i, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"over the key already in the token", []string{"--issuing-key", uri, "--import-key", other}, "not replaced"},
		{"garbage key file", []string{"--issuing-key", strings.Replace(uri, "imported-ca;id=%02", "fresh;id=%03", 1), "--import-key", garbage}, "issuing key to import"},
		{"wrong passphrase", []string{"--issuing-key", strings.Replace(uri, "imported-ca;id=%02", "fresh;id=%03", 1), "--import-key", keyFile,
			"--passphrase-file", wrongPass}, "issuing key to import"},
		{"no token", []string{"--import-key", keyFile}, "--import-key needs --issuing-key"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cp, dd := filepath.Join(work, fmt.Sprintf("bad-%d.yaml", i)), filepath.Join(work, fmt.Sprintf("bad-%d", i))
			_, errOut, code := cli(ctx, append([]string{"init", "--config", cp, "--data", dd, "--pbkdf2-iterations", "1000"}, tt.args...)...)
			if code == 0 {
				t.Fatal("init succeeded")
			}
			if !strings.Contains(errOut, tt.want) {
				t.Errorf("error %q does not say %q", errOut, tt.want)
			}
			if fileExists(cp) || fileExists(filepath.Join(dd, "ca.pem")) {
				t.Error("a refused init left a configuration or a CA behind")
			}
		})
	}
	// The key in the token is still the first import's.
	again, err := pkcs11.Open(ctx, uri)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if !again.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(orig.Public()) {
		t.Fatal("the token's key was replaced")
	}
	if k, err := pkcs11.Open(ctx, strings.Replace(uri, "imported-ca;id=%02", "fresh;id=%03", 1)); err == nil {
		k.Close()
		t.Fatal("a refused import left a key in the token")
	}
}
