package cli

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"coapca/est"
	"coapca/est/cms"
)

// TestESTHTTPSEncryptedFirmware: `coapca ca firmware add --encrypt` (RFC 8295 §6.1.2 "encrypted
// ... prior to signature", RFC 4108 §2.1.3) over real loopback HTTPS. The package is a
// SignedData of an EncryptedData that `openssl cms -verify` opens and `openssl cms
// -EncryptedData_decrypt` decrypts, with the key the client received as a symmetric key package
// (RFC 8295 §5, encrypted for its certificate) named by the decrypt-key-identifier (RFC 4108
// §2.2.5). Our client refuses to write the image without that key or with a wrong one, and
// writes it and returns the receipt with it.
func TestESTHTTPSEncryptedFirmware(t *testing.T) {
	openssl := "openssl"
	need(t, openssl)
	s := httpsServer(t)
	ctx := context.Background()
	dir := t.TempDir()
	d := s.data.Paths
	ecA, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	devA := ldevidFor(t, s, ecA, "fwenc-a")
	serialA := mustLeaf(t, devA).SerialNumber.Text(16)
	image := bytes.Repeat([]byte("\x7fELF secret firmware "), 100)
	imageFile := filepath.Join(dir, "fw.bin")
	if err := os.WriteFile(imageFile, image, 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := cli(ctx, "ca", "firmware", "add", "--data", s.data.Dir, "--to", "serial:"+serialA, "--image", imageFile,
		"--name", "1.3.6.1.4.1.99999.1:4", "--hw-type", "1.3.6.1.4.1.99999.2.1", "--encrypt")
	m := regexp.MustCompile(`its key (coapca-firmware-key-[0-9a-f]+) as symmetric key package`).FindStringSubmatch(out)
	if code != 0 || m == nil {
		t.Fatalf("ca firmware add --encrypt: exit %d: %s%s", code, out, errOut)
	}
	keyID := m[1]
	if got := strings.Join(palTypes(t, s, devA, ""), " "); got != "0002 0005 0003 0024 0026" {
		t.Fatalf("A's PAL: %q, want the key package and the firmware", got)
	}
	// RFC 8295 §2.1: every entry has a size; the packages' are theirs, the certificate
	// operations' (built per request) 0.
	pal := estDo(t, s, devA, 0, "GET", s.estURL("")+"/pal", "", nil)
	entries, err := est.ParsePAL(bytes.NewReader(pal.body))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if (e.Size > 0) != (e.Type == est.PALSymmetricKeyPackage || e.Type == est.PALFirmwarePackage) {
			t.Errorf("PAL entry %s of size %d", e.Type, e.Size)
		}
	}

	r := estDo(t, s, devA, 0, "GET", s.estURL("")+"/firmware", "", nil)
	if r.status != http.StatusOK || r.header.Get("Content-Type") != est.MediaFirmwarePackageEnc {
		t.Fatalf("firmware: status %d, Content-Type %q: %s", r.status, r.header.Get("Content-Type"), r.body)
	}
	der, err := base64.StdEncoding.DecodeString(string(r.body))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(der, image[:40]) {
		t.Fatal("the image travels in the clear")
	}
	pkgFile, edFile := filepath.Join(dir, "fw.p7"), filepath.Join(dir, "ed.der")
	if err := os.WriteFile(pkgFile, der, 0o600); err != nil {
		t.Fatal(err)
	}
	mustRun(t, openssl, "cms", "-verify", "-binary", "-inform", "DER", "-in", pkgFile, "-CAfile", d.Root, "-purpose", "any", "-out", edFile)

	// Our client, without the key, and with a wrong one: nothing is written.
	sub := filepath.Join(dir, "a")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	certA, keyA := writePair(t, sub, devA), filepath.Join(sub, "b.key")
	fwOut := filepath.Join(dir, "written.bin")
	wrongKeys := filepath.Join(dir, "wrong.txt")
	if err := os.WriteFile(wrongKeys, []byte(keyID+" - "+strings.Repeat("11", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, keys, want string }{
		{"attack: no key for the encrypted package", "", "is encrypted with key " + `"` + keyID},
		{"attack: a wrong key under the right name", wrongKeys, "firmware package: key"},
	} {
		t.Run("client/"+tc.name, func(t *testing.T) {
			args := []string{"est", "firmware", "--server", s.estURL(""), "--trust", d.Root, "--cert", certA, "--key", keyA, "--out", fwOut}
			if tc.keys != "" {
				args = append(args, "--firmware-keys", tc.keys)
			}
			if _, errOut, code := cli(ctx, args...); code == 0 || !strings.Contains(errOut, tc.want) {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			if _, err := os.Stat(fwOut); !os.IsNotExist(err) {
				t.Fatalf("an image was written: %v", err)
			}
		})
	}

	// The key arrives as a symmetric key package, encrypted for A's certificate.
	keysFile := filepath.Join(dir, "keys.txt")
	if _, errOut, code := cli(ctx, "est", "symmetrickeys", "--server", s.estURL(""), "--trust", d.Root, "--cert", certA, "--key", keyA,
		"--out", keysFile); code != 0 {
		t.Fatalf("est symmetrickeys: exit %d: %s", code, errOut)
	}
	keys, _ := os.ReadFile(keysFile)
	f := strings.Fields(string(keys))
	if len(f) != 3 || f[0] != keyID || f[1] != "http://www.w3.org/2001/04/xmlenc#aes256-cbc" || len(f[2]) != 64 {
		t.Fatalf("keys received: %q", keys)
	}
	ed, _ := os.ReadFile(edFile)
	edCI, err := cms.ContentInfo(cms.OIDEncryptedData, ed)
	if err != nil {
		t.Fatal(err)
	}
	edCIFile, pkgData := filepath.Join(dir, "ed.p7"), filepath.Join(dir, "pkgdata.der")
	if err := os.WriteFile(edCIFile, edCI, 0o600); err != nil {
		t.Fatal(err)
	}
	mustRun(t, openssl, "cms", "-EncryptedData_decrypt", "-binary", "-inform", "DER", "-in", edCIFile, "-secretkey", f[2], "-out", pkgData)
	got, _ := os.ReadFile(pkgData)
	if want := append([]byte{0x04, 0x82, byte(len(image) >> 8), byte(len(image))}, image...); !bytes.Equal(got, want) {
		t.Fatalf("openssl decrypted %d bytes, not FirmwarePkgData holding the image", len(got))
	}

	if _, errOut, code := cli(ctx, "est", "firmware", "--server", s.estURL(""), "--trust", d.Root, "--cert", certA, "--key", keyA,
		"--out", fwOut, "--firmware-keys", keysFile); code != 0 || !strings.Contains(errOut, "the server took the receipt") {
		t.Fatalf("est firmware: exit %d: %s", code, errOut)
	}
	if written, err := os.ReadFile(fwOut); err != nil || !bytes.Equal(written, image) {
		t.Fatalf("image written: %d bytes, %v", len(written), err)
	}
	if got := strings.Join(palTypes(t, s, devA, ""), " "); got != "0002 0005 0003 0024@ 0026@" {
		t.Fatalf("A's PAL after both receipts: %q", got)
	}
}
