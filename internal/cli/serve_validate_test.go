package cli

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeValidatesBeforeDataDir replays issue 12's report: "a config typo is reported only
// after a whole new data directory with CA keys was created". Each configuration below loads
// (its YAML is well-formed, every field name exists) but is wrong; `coapca serve` must refuse
// it naming the mistake, and leave no data directory behind — nor change an existing one.
func TestServeValidatesBeforeDataDir(t *testing.T) {
	files := t.TempDir()
	secret := filepath.Join(files, "secret")
	if err := os.WriteFile(secret, []byte("line secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	listen := "listen: {coaps: \"127.0.0.1:0\", coap: \"127.0.0.1:0\"}\n"
	tests := []struct {
		name, yaml, wantErr string
	}{
		{"trust store file misspelt", "authority:\n  trust_stores: [{name: acme, certs_file: /nonexistent/acme-ca.pem}]\n", "acme"},
		{"requester names a trust store that does not exist",
			"authority:\n  mac_secrets: [{reference: line-1, secret_file: " + secret + "}]\n" +
				"  profiles: [{label: sensors, requesters: [{kind: idevid, from: [acmee]}]}]\n", "acmee"},
		{"MAC secret file missing", "authority:\n  mac_secrets: [{reference: line-1, secret_file: /nonexistent/secret}]\n", "line-1"},
		{"key usage misspelt", "authority:\n  profiles: [{label: x, key_usage: [digitalSignatur]}]\n", "digitalSignatur"},
		{"listen port out of range", "listen: {coaps: \"127.0.0.1:56840\", coap: \"127.0.0.1:99999\"}\n", "listen.coap"},
		{"KEK id not hex", listen + "est:\n  server_keygen_keks: [{id: zz, key_file: " + secret + "}]\n", "server_keygen_keks"},
		{"OSCORE context file missing", listen + "oscore_contexts: [/nonexistent/ctx.yaml]\n", "ctx.yaml"},
		{"HSM key URI misspelt", listen + "ca:\n  issuing_key: \"pkcs11:tokn=coapca;object=issuing-ca?module-path=/usr/lib/softhsm/libsofthsm2.so\"\n", "tokn"},
		{"HSM key URI names no key", listen + "ca:\n  issuing_key: \"pkcs11:token=coapca?module-path=/usr/lib/softhsm/libsofthsm2.so\"\n", "no key"},
		// Without -tags pkcs11 the binary cannot open tokens; with it, the module is missing.
		// Either way the key is opened before the data directory is created.
		{"HSM key that cannot be opened", listen + "ca:\n  issuing_key: \"pkcs11:token=coapca;object=issuing-ca?module-path=/nonexistent/module.so&pin-value=1234\"\n", "ca.issuing_key"},
		{"passphrase variable not set", listen + "ca:\n  key_passphrase_env: COAPCA_TEST_NO_SUCH_VARIABLE\n", "COAPCA_TEST_NO_SUCH_VARIABLE"},
		{"passphrase file missing", listen + "ca:\n  key_passphrase_file: /nonexistent/passphrase\n", "key_passphrase_file"},
		{"DTLS cipher suite misspelt", listen + "dtls:\n  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA265]\n", "SHA265"},
	}
	// A cancelled context: a configuration that got past validation would start and stop at
	// once rather than serve forever.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := filepath.Join(t.TempDir(), "coapca.yaml")
			if err := os.WriteFile(cfg, []byte(tt.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			data := filepath.Join(t.TempDir(), "data")
			_, errOut, code := cli(ctx, "serve", "--config", cfg, "--data", data)
			if code == 0 || !strings.Contains(errOut, tt.wantErr) {
				t.Errorf("exit %d, stderr %q; want a failure naming %q", code, errOut, tt.wantErr)
			}
			if strings.Contains(errOut, "1234") {
				t.Errorf("the error shows the token PIN: %s", errOut)
			}
			if _, err := os.Stat(data); !os.IsNotExist(err) {
				entries, _ := os.ReadDir(data)
				t.Errorf("the refused configuration left a data directory behind (%d entries)", len(entries))
			}
		})
	}

	t.Run("existing directory is not changed", func(t *testing.T) {
		data := filepath.Join(t.TempDir(), "data")
		s := testServerAt(t, data)
		s.Close()
		// The next start would re-issue a missing server certificate.
		server := s.data.Paths.Server
		if err := os.Remove(server); err != nil {
			t.Fatal(err)
		}
		cfg := filepath.Join(t.TempDir(), "coapca.yaml")
		if err := os.WriteFile(cfg, []byte(tests[0].yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, errOut, code := cli(ctx, "serve", "--config", cfg, "--data", data); code == 0 {
			t.Fatalf("serve accepted a bad configuration: %s", errOut)
		}
		if _, err := os.Stat(server); !os.IsNotExist(err) {
			t.Fatal("a refused configuration re-issued the server certificate")
		}
	})
}
