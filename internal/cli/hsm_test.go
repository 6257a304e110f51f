//go:build pkcs11 && cgo

package cli

import (
	"context"
	"crypto"
	"os"
	"path/filepath"
	"strings"
	"testing"

	mp "github.com/miekg/pkcs11"

	"coapca/internal/config"
	"coapca/internal/testtool"
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
