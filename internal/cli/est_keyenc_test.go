package cli

import (
	"context"
	"crypto"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"coapca/internal/config"
	"coapca/kms"
)

// TestServerKeyGenEncryptedCLI runs `coapca est serverkeygen --encrypt-key` against a served
// house over DTLS: with a configured pre-shared KEK and with the device's own certificate key,
// the key comes CMS-encrypted (280), is decrypted and certified; a KEK identifier the server does
// not hold is refused with 4.00.
func TestServerKeyGenEncryptedCLI(t *testing.T) {
	dir := t.TempDir()
	kekFile := filepath.Join(dir, "factory.kek")
	if err := os.WriteFile(kekFile, []byte("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := testServerAt(t, filepath.Join(dir, "data"), func(c *config.Config) {
		c.EST.ServerKeygenKEKs = []config.KEK{{ID: "6b656b2d31", KeyFile: kekFile}} // "kek-1"
		c.Listen.HTTPS = "127.0.0.1:0"
	})
	d := s.data.Paths
	idevid := []string{"--cert", d.Device, "--key", d.DeviceKey, "--trust", d.Root}
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string
		https   bool
	}{
		{"pre-shared KEK", []string{"--encrypt-key", kekFile, "--encrypt-key-id", "6b656b2d31"}, "", false},
		{"own certificate key", []string{"--encrypt-key", "own", "--accept", "cert"}, "", false},
		{"KEK identifier the server does not hold", []string{"--encrypt-key", kekFile, "--encrypt-key-id", "6775657373"}, "4.00", false},
		{"KEK file without an identifier", []string{"--encrypt-key", kekFile}, "--encrypt-key-id", false},
		// The same over EST over HTTPS (RFC 7030 §4.4.2: application/pkcs7-mime;
		// smime-type=server-generated-key in the multipart answer).
		{"https: pre-shared KEK", []string{"--encrypt-key", kekFile, "--encrypt-key-id", "6b656b2d31"}, "", true},
		{"https: own certificate key", []string{"--encrypt-key", "own"}, "", true},
		{"https: KEK identifier the server does not hold", []string{"--encrypt-key", kekFile, "--encrypt-key-id", "6775657373"}, "400", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keyOut, certOut := filepath.Join(dir, "k.pem"), filepath.Join(dir, "c.pem")
			os.Remove(keyOut)
			srv := s.url("sensors")
			if tc.https {
				srv = "https://" + s.httpsAddr + "/sensors"
			}
			args := append([]string{"est", "serverkeygen", "--server", srv, "--subject", "CN=sensor-enc",
				"--key-out", keyOut, "--out", certOut}, append(idevid, tc.args...)...)
			_, errOut, code := cli(context.Background(), args...)
			if tc.wantErr != "" {
				if code == 0 || !strings.Contains(errOut, tc.wantErr) {
					t.Fatalf("exit %d, stderr %s; want an error with %q", code, errOut, tc.wantErr)
				}
				if _, err := os.Stat(keyOut); err == nil {
					t.Fatal("a key was written")
				}
				return
			}
			if code != 0 || !strings.Contains(errOut, "CMS-encrypted (280)") {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			key, err := kms.LoadKeyFile(keyOut)
			if err != nil {
				t.Fatal(err)
			}
			if !readCert(t, certOut).PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(key.Public()) {
				t.Fatal("the decrypted key is not the certified one")
			}
		})
	}
}
