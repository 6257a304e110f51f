package est

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"coapca/internal/testpki"
)

// TestPKCS12KDF: the BMPString encoding of RFC 7292 Appendix B.1, and the derivation is
// deterministic, separates IDs and yields a prefix-stable stream. That it is the derivation
// OpenSSL computes is shown by TestPKCS12OpenSSL: openssl verifies the MAC keyed with it.
func TestPKCS12KDF(t *testing.T) {
	pw := bmpPassword("pw")
	if hex.EncodeToString(pw) != "007000770000" {
		t.Fatalf("BMPString password %x", pw)
	}
	a := pkcs12KDF(pw, []byte("saltsalt"), 3, 10, 32)
	b := pkcs12KDF(pw, []byte("saltsalt"), 3, 10, 32)
	c := pkcs12KDF(pw, []byte("saltsalt"), 1, 10, 32)
	if !bytes.Equal(a, b) || bytes.Equal(a, c) || len(a) != 32 {
		t.Fatalf("kdf: %x %x %x", a, b, c)
	}
	if long := pkcs12KDF(pw, []byte("saltsalt"), 1, 1, 80); !bytes.Equal(long[:32], pkcs12KDF(pw, []byte("saltsalt"), 1, 1, 32)) {
		t.Fatal("kdf output is not a prefix-stable stream")
	}
}

// TestPKCS12OpenSSL: `openssl pkcs12` verifies the MAC, decrypts the key and finds the
// certificate, and refuses a wrong password.
func TestPKCS12OpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	k := testpki.NewKey(t)
	cert := testpki.SelfSigned(t, &x509.Certificate{Subject: pkix.Name{CommonName: "p12-device"}}, k)
	p8, _ := x509.MarshalPKCS8PrivateKey(k)
	pfx, err := EncodePKCS12(rand.Reader, p8, cert, "s3cret pässword")
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "k.p12")
	os.WriteFile(f, pfx, 0o600)
	out, err := exec.Command("openssl", "pkcs12", "-in", f, "-passin", "pass:s3cret pässword", "-nodes").CombinedOutput()
	if err != nil {
		t.Fatalf("openssl pkcs12: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "BEGIN PRIVATE KEY") || !strings.Contains(string(out), "CN = p12-device") && !strings.Contains(string(out), "CN=p12-device") {
		t.Errorf("openssl pkcs12 output:\n%s", out)
	}
	if out, err := exec.Command("openssl", "pkcs12", "-in", f, "-passin", "pass:wrong", "-nodes").CombinedOutput(); err == nil {
		t.Errorf("openssl accepted a wrong password:\n%s", out)
	}
	if _, err := EncodePKCS12(rand.Reader, p8, cert, ""); err == nil {
		t.Error("empty password accepted")
	}
}
