package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"coapca/internal/config"
	"coapca/internal/datadir"
)

// TestDemoCredentialsOnlyWithoutConfiguration replays audit item 3's root cause: the demo CMP
// secret stayed live in a configuration that set its own trust stores, and the demo
// manufacturer CA in one that set its own MAC secrets. Demo credentials are live only while the
// configuration defines neither, and the server says so loudly (issue 8, requirement 5).
func TestDemoCredentialsOnlyWithoutConfiguration(t *testing.T) {
	need(t, "openssl")
	ctx := context.Background()
	secret := filepath.Join(t.TempDir(), "line-secret")
	if err := os.WriteFile(secret, []byte("factory line secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name         string
		tweak        func(dir string) func(*config.Config)
		demo         bool
		demoDevice   bool // the demo device (demo manufacturer CA) may enroll
		demoSecretOK bool
	}{
		{"no trust stores, no MAC secrets: demo live", func(string) func(*config.Config) { return func(*config.Config) {} }, true, true, true},
		{"attack: own trust store, demo secret must be off", func(dir string) func(*config.Config) {
			return func(c *config.Config) {
				c.Authority.TrustStores = []config.TrustStore{{Name: "acme", CertsFile: filepath.Join(dir, "demo", "manufacturer-ca.pem")}}
			}
		}, false, true, false},
		{"attack: own MAC secret, demo manufacturer must be off", func(string) func(*config.Config) {
			return func(c *config.Config) {
				c.Authority.MACSecrets = []config.MACSecret{{Reference: "line-1", SecretFile: secret}}
			}
		}, false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			// The trust store below names a file of the data directory; serve validates the
			// configuration before it creates the directory, so the file must exist first.
			if _, err := datadir.Open(datadir.Options{Dir: dir}); err != nil {
				t.Fatal(err)
			}
			s := testServerAt(t, dir, tc.tweak(dir))
			var w bytes.Buffer
			s.PrintWelcome(&w, "coapca")
			if live := strings.Contains(w.String(), "DEMO CREDENTIALS ARE LIVE"); live != tc.demo {
				t.Errorf("welcome says demo live = %v, want %v:\n%s", live, tc.demo, w.String())
			}
			d := s.data.Paths
			work := t.TempDir()
			_, errOut, code := cli(ctx, "cmp", "ir", "--server", s.coapURL, "--ref", "demo", "--secret-file", d.CMPSecret,
				"--subject", "CN=demo-secret", "--trust", d.Root, "--key-out", filepath.Join(work, "k1"), "--out", filepath.Join(work, "c1"))
			if (code == 0) != tc.demoSecretOK {
				t.Errorf("enrollment with the demo secret: exit %d, want success %v: %s", code, tc.demoSecretOK, errOut)
			}
			_, errOut, code = cli(ctx, "est", "enroll", "--server", s.coapsURL, "--trust", d.Root, "--cert", d.Device, "--key", d.DeviceKey,
				"--subject", "CN=demo-device-0001", "--key-out", filepath.Join(work, "k2"), "--out", filepath.Join(work, "c2"))
			if (code == 0) != tc.demoDevice {
				t.Errorf("enrollment of the demo device: exit %d, want success %v: %s", code, tc.demoDevice, errOut)
			}
		})
	}
}
