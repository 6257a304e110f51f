package cli

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"coapca/est"
	"coapca/est/cms"
	"coapca/internal/config"
)

// keyPackageParts splits a 200 multipart /serverkeygen answer into its (Content-Type, DER) parts.
func keyPackageParts(t *testing.T, r httpResult) (types []string, ders [][]byte) {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	mt, params, err := mime.ParseMediaType(r.header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" {
		t.Fatalf("Content-Type %q", r.header.Get("Content-Type"))
	}
	mr := multipart.NewReader(bytes.NewReader(r.body), params["boundary"])
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(p)
		der, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatalf("part is not base64: %v", err)
		}
		types, ders = append(types, p.Header.Get("Content-Type")), append(ders, der)
	}
	return types, ders
}

// TestESTHTTPSKeyPackage: /serverkeygen answering an asymmetric key package as RFC 8295 §8.1
// says (Accept application/cms; SignedData of an EnvelopedData of a SignedData of an
// AsymmetricKeyPackage), opened layer by layer with `openssl cms -verify` and `-decrypt` for a
// pre-shared KEK and for the device's own certificate key; the key must be the certified one.
// Refused: a client that accepts application/cms with a CSR naming no key to encrypt for (406,
// nothing issued). Our client: `coapca est serverkeygen --encrypt-key own --key-package`.
func TestESTHTTPSKeyPackage(t *testing.T) {
	openssl := "openssl"
	need(t, openssl)
	dir := t.TempDir()
	kek := bytes.Repeat([]byte{0x5a}, 32)
	kekFile := filepath.Join(dir, "kek")
	if err := os.WriteFile(kekFile, []byte(strings.Repeat("5a", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := httpsServer(t, func(c *config.Config) {
		c.EST.ServerKeygenKEKs = []config.KEK{{ID: "6b656b2d31", KeyFile: kekFile}} // "kek-1"
	})
	d := s.data.Paths
	dev := demoDevice(t, s)
	devCert, _ := x509.ParseCertificate(dev.Certificate[0])
	csrWith := func(attrs ...est.Attribute) []byte {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, err := est.CreateCSRWithAttributes(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "kp-device"}}, k, attrs)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name    string
		attr    est.Attribute
		decrypt []string
	}{
		{"pre-shared KEK", est.DecryptKeyIdentifierAttribute([]byte("kek-1")),
			[]string{"-secretkey", strings.Repeat("5a", 32), "-secretkeyid", "6b656b2d31"}},
		{"device's own certificate key", est.AsymmetricDecryptKeyIdentifierAttribute(est.SubjectKeyID(devCert)),
			[]string{"-recip", d.Device, "-inkey", d.DeviceKey}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := estDo(t, s, dev, 0, "POST", s.estURL("")+"/serverkeygen", "application/pkcs10", b64(csrWith(tc.attr)),
				"Accept", "multipart/mixed, application/cms")
			types, parts := keyPackageParts(t, r)
			if len(parts) != 2 || types[0] != est.MediaKeyPackage || !strings.HasPrefix(types[1], "application/pkcs7-mime") {
				t.Fatalf("parts %q, want %q then the certificate", types, est.MediaKeyPackage)
			}
			// Outer SignedData: signed by the server, chaining to the root.
			outer := write("outer.p7", parts[0])
			envelope := filepath.Join(dir, "envelope.der")
			mustRun(t, openssl, "cms", "-verify", "-binary", "-inform", "DER", "-in", outer, "-CAfile", d.Root, "-purpose", "any", "-out", envelope)
			ed, _ := os.ReadFile(envelope)
			ci, err := cms.ContentInfo(cms.OIDEnvelopedData, ed)
			if err != nil {
				t.Fatal(err)
			}
			// EnvelopedData: opened with the KEK or the device's key.
			signed := filepath.Join(dir, "signed.der")
			mustRun(t, openssl, append([]string{"cms", "-decrypt", "-binary", "-inform", "DER", "-in", write("env.p7m", ci), "-out", signed}, tc.decrypt...)...)
			sd, _ := os.ReadFile(signed)
			ci, err = cms.ContentInfo(cms.OIDSignedData, sd)
			if err != nil {
				t.Fatal(err)
			}
			// Inner SignedData of the AsymmetricKeyPackage.
			pkgFile := filepath.Join(dir, "pkg.der")
			mustRun(t, openssl, "cms", "-verify", "-binary", "-inform", "DER", "-in", write("inner.p7", ci), "-CAfile", d.Root, "-purpose", "any", "-out", pkgFile)
			pkg, _ := os.ReadFile(pkgFile)
			keys, err := cms.ParseAsymmetricKeyPackage(pkg)
			if err != nil || len(keys) != 1 {
				t.Fatalf("key package: %v (%d keys)", err, len(keys))
			}
			pub1 := mustRun(t, openssl, "pkey", "-inform", "DER", "-in", write("k.der", keys[0]), "-pubout")
			leaf := filepath.Join(dir, "leaf.pem")
			mustRun(t, openssl, "pkcs7", "-inform", "DER", "-in", write("c.p7", parts[1]), "-print_certs", "-out", leaf)
			pub2 := mustRun(t, openssl, "x509", "-in", leaf, "-noout", "-pubkey")
			if pub1 != pub2 {
				t.Fatalf("the key in the package is not the certified one:\n%s\n%s", pub1, pub2)
			}
			// Our own parser agrees.
			kp, err := est.DecryptKeyPackage(parts[0], cms.Decrypter{KEK: func(id []byte) []byte {
				if string(id) == "kek-1" {
					return kek
				}
				return nil
			}, Cert: devCert, Key: dev.PrivateKey})
			if err != nil || kp.OuterSigner == nil || kp.Signer == nil {
				t.Fatalf("DecryptKeyPackage: %v", err)
			}
		})
	}

	t.Run("application/cms with a CSR that names no key to encrypt for", func(t *testing.T) {
		before := certCount(t, s)
		r := estDo(t, s, dev, 0, "POST", s.estURL("")+"/serverkeygen", "application/pkcs10", b64(csrWith()), "Accept", "application/cms")
		if r.status != http.StatusNotAcceptable {
			t.Fatalf("status %d (%s), want 406", r.status, r.body)
		}
		if n := certCount(t, s); n != before {
			t.Fatalf("%d certificates issued", n-before)
		}
	})

	t.Run("our client", func(t *testing.T) {
		keyOut, certOut := filepath.Join(dir, "kp.key"), filepath.Join(dir, "kp.pem")
		_, errOut, code := cli(context.Background(), "est", "serverkeygen", "--server", s.estURL(""), "--trust", d.Root,
			"--cert", d.Device, "--key", d.DeviceKey, "--subject", "CN=kp-cli", "--encrypt-key", "own", "--key-package",
			"--key-out", keyOut, "--out", certOut)
		if code != 0 || !strings.Contains(errOut, "asymmetric key package") {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		if _, err := os.Stat(keyOut); err != nil {
			t.Fatal(err)
		}
		_, errOut, code = cli(context.Background(), "est", "serverkeygen", "--server", s.estURL(""), "--trust", d.Root,
			"--cert", d.Device, "--key", d.DeviceKey, "--subject", "CN=kp-cli", "--key-package")
		if code == 0 || !strings.Contains(errOut, "--encrypt-key") {
			t.Fatalf("--key-package without --encrypt-key: exit %d: %s", code, errOut)
		}
	})
}
