package cli

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"coapca/internal/config"
	"coapca/internal/pemfile"
	"coapca/kms"
	"coapca/kms/pkcs11"
)

// TestInitProduction: `coapca init` writes a commented production configuration without
// demo credentials, creates the CA with its keys encrypted and the root key outside the data
// directory, and the server then runs on it — without the root key, and only with the
// passphrase: a start without it or with a wrong one is refused and changes nothing.
func TestInitProduction(t *testing.T) {
	ctx := context.Background()
	work := t.TempDir()
	cfgPath, data := filepath.Join(work, "coapca.yaml"), filepath.Join(work, "data")
	rootOut := filepath.Join(t.TempDir(), "offline", "root.key")
	t.Setenv("COAPCA_TEST_PASSPHRASE", "correct horse battery staple")

	out, errOut, code := cli(ctx, "init", "--config", cfgPath, "--data", data, "--passphrase-env", "COAPCA_TEST_PASSPHRASE",
		"--root-key-out", rootOut, "--server-name", "ca.example.net", "--pbkdf2-iterations", "1000")
	if code != 0 {
		t.Fatalf("init: exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "move it off line") {
		t.Errorf("init output does not tell where the root key went:\n%s", out)
	}

	text, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(text), "\n#") + strings.Count(string(text), "  #"); n < 10 {
		t.Errorf("the configuration has %d comment lines; want it commented", n)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.CA.NoDemo || len(cfg.Authority.TrustStores) != 0 || len(cfg.Authority.MACSecrets) != 0 || cfg.CA.KeyPassphraseEnv != "COAPCA_TEST_PASSPHRASE" {
		t.Fatalf("configuration: %+v", cfg.CA)
	}
	if fileExists(filepath.Join(data, "demo")) {
		t.Error("init created demo credentials")
	}
	if fileExists(filepath.Join(data, "private", "ca.key")) {
		t.Error("the root key is in the data directory")
	}
	pass := []byte("correct horse battery staple")
	for _, k := range []string{rootOut, filepath.Join(data, "private", "issuing-ca.key")} {
		if _, err := kms.LoadKeyFile(k); !errors.Is(err, kms.ErrPassphrase) {
			t.Errorf("%s is not encrypted: %v", k, err)
		}
	}
	root, err := pemfile.ReadCerts(filepath.Join(data, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	rk, err := kms.LoadKeyFileWithPassphrase(rootOut, pass)
	if err != nil {
		t.Fatal(err)
	}
	if !rk.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(root[0].PublicKey) {
		t.Fatal("the offline key is not the root's")
	}

	// init never replaces: neither the configuration nor the CA.
	if _, errOut, code := cli(ctx, "init", "--config", cfgPath, "--data", data); code == 0 || !strings.Contains(errOut, "exists") {
		t.Errorf("second init over the configuration: exit %d %s", code, errOut)
	}
	if _, errOut, code := cli(ctx, "init", "--config", filepath.Join(work, "other.yaml"), "--data", data); code == 0 || !strings.Contains(errOut, "already holds a CA") {
		t.Errorf("second init over the data directory: exit %d %s", code, errOut)
	}
	if fileExists(filepath.Join(work, "other.yaml")) {
		t.Error("a refused init wrote its configuration")
	}

	// serve needs the passphrase: without it (or with a wrong one) it refuses, and the
	// directory is unchanged.
	before := listFiles(t, data)
	for _, p := range []string{"", "wrong passphrase"} {
		t.Setenv("COAPCA_TEST_PASSPHRASE", p)
		cancelled, cancel := context.WithCancel(ctx)
		cancel()
		if _, errOut, code := cli(cancelled, "serve", "--config", cfgPath, "--coaps", "127.0.0.1:0", "--coap", "127.0.0.1:0"); code == 0 {
			t.Fatalf("serve ran with passphrase %q", p)
		} else if !strings.Contains(errOut, "passphrase") && !strings.Contains(errOut, "COAPCA_TEST_PASSPHRASE") {
			t.Errorf("serve with passphrase %q: %s", p, errOut)
		}
		if after := listFiles(t, data); after != before {
			t.Fatalf("a refused start changed the data directory:\n%s\n---\n%s", before, after)
		}
	}

	// With the passphrase the server runs on the CA init made, root key off line, and
	// issues under it (a MAC secret the operator added).
	t.Setenv("COAPCA_TEST_PASSPHRASE", string(pass))
	secret := filepath.Join(work, "line-1.secret")
	if err := os.WriteFile(secret, []byte("factory line 1"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := testServerAt(t, data, func(c *config.Config) {
		c.CA = cfg.CA
		c.ServerNames = cfg.ServerNames
		c.Authority.MACSecrets = []config.MACSecret{{Reference: "line-1", SecretFile: secret}}
	})
	if s.data.RootKey != nil || !s.data.Root.Equal(root[0]) {
		t.Fatal("the server found a root key, or another root")
	}
	o := t.TempDir()
	if _, errOut, code := cli(ctx, "cmp", "ir", "--server", s.coapURL, "--ref", "line-1", "--secret-file", secret,
		"--subject", "CN=line-1-device", "--trust", filepath.Join(data, "ca.pem"),
		"--key-out", filepath.Join(o, "k"), "--out", filepath.Join(o, "c")); code != 0 {
		t.Fatalf("cmp ir: %s", errOut)
	}
	verifyIssued(t, filepath.Join(o, "c"), s.data.IssuingCA, root[0])
}

// TestInitRefusesBadInput: init checks its configuration before it creates anything — a
// passphrase file that does not exist, an HSM URI that is wrong (or, in a binary without
// PKCS#11, any HSM URI) leave neither a configuration nor a data directory.
func TestInitRefusesBadInput(t *testing.T) {
	ctx := context.Background()
	passFile := filepath.Join(t.TempDir(), "pass")
	if err := os.WriteFile(passFile, []byte("passphrase\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"passphrase file missing", []string{"--passphrase-file", "/nonexistent/pass"}, "key_passphrase_file"},
		{"passphrase file and variable", []string{"--passphrase-file", passFile, "--passphrase-env", "HOME"}, "both"},
		{"PBKDF2 work beyond what a reader accepts", []string{"--passphrase-file", passFile, "--pbkdf2-iterations", "20000000"}, "PBKDF2"},
		{"issuing key not pkcs11", []string{"--issuing-key", "file:/tmp/k.pem"}, "pkcs11: URI"},
		{"HSM URI without module", []string{"--issuing-key", "pkcs11:token=coapca;object=issuing-ca"}, "module"},
		{"HSM URI with unknown attribute", []string{"--issuing-key", "pkcs11:token=coapca;objet=issuing-ca?module-path=/x.so"}, "objet"},
	}
	if !pkcs11.Built {
		tests = append(tests, struct {
			name    string
			args    []string
			wantErr string
		}{"binary built without PKCS#11", []string{"--issuing-key", "pkcs11:token=coapca;object=issuing-ca?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=1234"}, "built without PKCS#11"})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			work := t.TempDir()
			cfgPath, data := filepath.Join(work, "coapca.yaml"), filepath.Join(work, "data")
			_, errOut, code := cli(ctx, append([]string{"init", "--config", cfgPath, "--data", data}, tt.args...)...)
			if code == 0 || !strings.Contains(errOut, tt.wantErr) {
				t.Errorf("exit %d, stderr %q; want an error naming %q", code, errOut, tt.wantErr)
			}
			if strings.Contains(errOut, "1234") {
				t.Errorf("the error shows the PIN: %s", errOut)
			}
			if fileExists(cfgPath) || fileExists(data) {
				t.Error("a refused init left files behind")
			}
		})
	}
}

// listFiles lists every file under dir with its size and modification time.
func listFiles(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		// The data directory lock (DIR/coapca.lock, docs/operations.md) is taken before the
		// keys are opened, so a refused start may leave it: it holds only the last PID. A
		// directory's own mtime changes with it; any other added or removed entry still shows.
		if d.Name() == "coapca.lock" {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			b.WriteString(p + " " + fi.Mode().String() + "\n")
			return nil
		}
		b.WriteString(p + " " + fi.Mode().String() + " " + fi.ModTime().String() + "\n")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// verifyIssued checks that the certificate in path was signed by issuer, which chains to root.
func verifyIssued(t *testing.T, path string, issuer, root *x509.Certificate) *x509.Certificate {
	t.Helper()
	certs, err := pemfile.ReadCerts(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := certs[0].CheckSignatureFrom(issuer); err != nil {
		t.Fatalf("%s is not signed by the issuing CA: %v", path, err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	inter := x509.NewCertPool()
	inter.AddCert(issuer)
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("%s does not chain to the root: %v", path, err)
	}
	return certs[0]
}
