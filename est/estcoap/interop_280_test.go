package estcoap_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"coapca/coap"
	"coapca/est"
	"coapca/est/cms"
	"coapca/est/estcoap"
	"coapca/est/estserver"
	"coapca/est/esttest"
)

// TestLibcoapEncryptedKey posts CSRs asking for encrypted keys to /skg over DTLS with libcoap's
// coap-client as the device, and opens the 280 part with `openssl cms -decrypt` (pre-shared
// KEK, and the device's own certificate key) and `openssl cms -verify`; the recovered key must
// be the one the returned certificate certifies.
func TestLibcoapEncryptedKey(t *testing.T) {
	openssl := tool(t, "openssl")
	bin := tool(t, "coap-client-openssl")
	fa := esttest.New(t)
	signer := fa.ClientCert(t, "est key signer")
	signerCert, signerKey := signer.Cert, signer.Key
	kek := bytes.Repeat([]byte{0xa5}, 32)
	svc := estserver.New(fa, nil)
	if err := svc.SetKeyEncryption(estserver.KeyEncryption{KEKs: map[string][]byte{"kek-1": kek}, Signer: signerKey,
		Chain: []*x509.Certificate{signerCert, fa.CA}}); err != nil {
		t.Fatal(err)
	}
	mux := coap.NewMux()
	estcoap.New(svc, estcoap.Options{}).Register(mux)
	srv := fa.StartDTLS(t, mux)
	dir := t.TempDir()
	rootPEM, _, certPEM, keyPEM := srv.WritePEM(t, fa, dir)
	pki := []string{"-c", certPEM, "-j", keyPEM, "-C", rootPEM, "-B", "20"}
	for _, tc := range []struct {
		name    string
		attr    est.Attribute
		decrypt []string
	}{
		{"KEK", est.DecryptKeyIdentifierAttribute([]byte("kek-1")),
			[]string{"-secretkey", hex.EncodeToString(kek), "-secretkeyid", hex.EncodeToString([]byte("kek-1"))}},
		{"own certificate", est.AsymmetricDecryptKeyIdentifierAttribute(est.SubjectKeyID(srv.DeviceCert)),
			[]string{"-recip", certPEM, "-inkey", keyPEM}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			der, err := est.CreateCSRWithAttributes(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "device-1"}}, key, []est.Attribute{tc.attr})
			if err != nil {
				t.Fatal(err)
			}
			csr, out := filepath.Join(dir, "csr.der"), filepath.Join(dir, "skg.cbor")
			os.WriteFile(csr, der, 0o600)
			run(t, bin, append(append([]string{}, pki...), "-m", "post", "-b", "64", "-t", "286", "-f", csr, "-o", out,
				"coaps://"+srv.Addr+"/.well-known/est/skg")...)
			body, _ := os.ReadFile(out)
			parts, err := est.ParseMultipart(body)
			if err != nil || len(parts) != 2 || parts[0].ContentFormat != est.CFPKCS7ServerKey || parts[1].ContentFormat != est.CFPKCS7CertsOnly {
				t.Fatalf("skg response: %v %+v", err, parts)
			}
			p7m, signed, p7 := filepath.Join(dir, "key.p7m"), filepath.Join(dir, "signed.der"), filepath.Join(dir, "signed.p7")
			os.WriteFile(p7m, parts[0].Body, 0o600)
			run(t, openssl, append([]string{"cms", "-decrypt", "-binary", "-inform", "DER", "-in", p7m, "-out", signed}, tc.decrypt...)...)
			sd, _ := os.ReadFile(signed)
			ci, err := cms.ContentInfo(cms.OIDSignedData, sd)
			if err != nil {
				t.Fatal(err)
			}
			os.WriteFile(p7, ci, 0o600)
			pkgFile := filepath.Join(dir, "pkg.der")
			run(t, openssl, "cms", "-verify", "-binary", "-inform", "DER", "-in", p7, "-CAfile", rootPEM,
				"-purpose", "any", "-out", pkgFile)
			pkg, _ := os.ReadFile(pkgFile)
			keys, err := cms.ParseAsymmetricKeyPackage(pkg)
			if err != nil || len(keys) != 1 {
				t.Fatalf("key package: %v", err)
			}
			keyDER, certP7 := filepath.Join(dir, "k.der"), filepath.Join(dir, "c.p7")
			os.WriteFile(keyDER, keys[0], 0o600)
			os.WriteFile(certP7, parts[1].Body, 0o600)
			pub1 := run(t, openssl, "pkey", "-inform", "DER", "-in", keyDER, "-pubout")
			leaf := filepath.Join(dir, "leaf.pem")
			run(t, openssl, "pkcs7", "-inform", "DER", "-in", certP7, "-print_certs", "-out", leaf)
			pub2 := run(t, openssl, "x509", "-in", leaf, "-noout", "-pubkey")
			if !bytes.Equal(pub1, pub2) {
				t.Fatalf("decrypted key and certificate differ:\n%s\n%s", pub1, pub2)
			}
		})
	}
}
