package cms

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"coapca/internal/testpki"
)

func unhex(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

// TestKeyWrapVectors reproduces RFC 3394 §4 and RFC 5649 §6.
func TestKeyWrapVectors(t *testing.T) {
	for _, tc := range []struct {
		name          string
		pad           bool
		kek, key, out string
	}{
		{"3394 4.1", false, "000102030405060708090A0B0C0D0E0F", "00112233445566778899AABBCCDDEEFF", "1FA68B0A8112B447 AEF34BD8FB5A7B82 9D3E862371D2CFE5"},
		{"3394 4.6", false, "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
			"00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F",
			"28C9F404C4B810F4 CBCCB35CFB87F826 3F5786E2D80ED326 CBC7F0E71A99F43B FB988B9B7A02DD21"},
		{"5649 20 bytes", true, "5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8", "c37b7e6492584340bed12207808941155068f738",
			"138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a"},
		{"5649 7 bytes", true, "5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8", "466f7250617369", "afbeb0f07dfbf5419200f2ccb50bb24f"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wrap, unwrap := Wrap, Unwrap
			if tc.pad {
				wrap, unwrap = WrapPad, UnwrapPad
			}
			got, err := wrap(unhex(tc.kek), unhex(tc.key))
			if err != nil || !bytes.Equal(got, unhex(tc.out)) {
				t.Fatalf("wrap = %x, %v; want %s", got, err, tc.out)
			}
			back, err := unwrap(unhex(tc.kek), got)
			if err != nil || !bytes.Equal(back, unhex(tc.key)) {
				t.Fatalf("unwrap = %x, %v", back, err)
			}
			// A flipped bit must fail the integrity check, never return a key.
			got[len(got)-1] ^= 1
			if k, err := unwrap(unhex(tc.kek), got); err == nil {
				t.Fatalf("tampered wrap unwrapped to %x", k)
			}
		})
	}
}

// testCert is a self-signed certificate for key that may sign and be a CMS recipient.
func testCert(t testing.TB, key crypto.Signer, cn string, serial int64) *x509.Certificate {
	t.Helper()
	return testpki.SelfSigned(t, &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageKeyAgreement}, key)
}

func writePEM(t testing.TB, path, typ string, der []byte) string {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestEnvelopeOpenSSL encrypts for each recipient kind, opens the result with `openssl cms
// -decrypt` and with Decrypt, and checks that another key cannot open it.
func TestEnvelopeOpenSSL(t *testing.T) {
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ec384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	otherEC, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherRSA, _ := rsa.GenerateKey(rand.Reader, 2048)
	kek := unhex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	kek128 := unhex("00112233445566778899aabbccddeeff")
	content := []byte("the server-generated key package")
	dir := t.TempDir()
	for _, tc := range []struct {
		name    string
		r       Recipient
		opts    *EncryptOptions
		dec     Decrypter
		wrong   Decrypter
		openssl func(in string) []string
	}{
		{"kekri aes256", Recipient{KEK: kek, KEKID: []byte("kek-1")}, nil,
			Decrypter{KEK: func(id []byte) []byte { return map[string][]byte{"kek-1": kek}[string(id)] }},
			Decrypter{KEK: func(id []byte) []byte { return map[string][]byte{"kek-1": kek128[:16]}[string(id)] }},
			func(in string) []string {
				return []string{"-secretkey", hex.EncodeToString(kek), "-secretkeyid", hex.EncodeToString([]byte("kek-1"))}
			}},
		{"kekri aes128 content", Recipient{KEK: kek128, KEKID: []byte{1, 2}}, &EncryptOptions{ContentCipher: OIDAES128CBC},
			Decrypter{KEK: func([]byte) []byte { return kek128 }},
			Decrypter{KEK: func([]byte) []byte { return nil }},
			func(in string) []string {
				return []string{"-secretkey", hex.EncodeToString(kek128), "-secretkeyid", "0102"}
			}},
		{"kari P-256", Recipient{Cert: testCert(t, ecKey, "ec", 7)}, nil,
			Decrypter{Key: ecKey}, Decrypter{Key: otherEC},
			func(in string) []string {
				k, _ := x509.MarshalPKCS8PrivateKey(ecKey)
				return []string{"-inkey", writePEM(t, filepath.Join(dir, "ec.key"), "PRIVATE KEY", k)}
			}},
		{"kari P-384 by SKI", Recipient{PublicKey: &ec384.PublicKey, SubjectKeyID: []byte{9, 9, 9}}, &EncryptOptions{KeyWrap: OIDAES128Wrap},
			Decrypter{Key: ec384}, Decrypter{Key: otherEC},
			func(in string) []string {
				k, _ := x509.MarshalPKCS8PrivateKey(ec384)
				return []string{"-inkey", writePEM(t, filepath.Join(dir, "ec384.key"), "PRIVATE KEY", k)}
			}},
		{"ktri RSA-OAEP", Recipient{Cert: testCert(t, rsaKey, "rsa", 8)}, nil,
			Decrypter{Key: rsaKey}, Decrypter{Key: otherRSA},
			func(in string) []string {
				k, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
				return []string{"-inkey", writePEM(t, filepath.Join(dir, "rsa.key"), "PRIVATE KEY", k)}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, err := Encrypt(rand.Reader, OIDData, content, tc.r, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			ctype, got, err := Decrypt(env, tc.dec)
			if err != nil || !ctype.Equal(OIDData) || !bytes.Equal(got, content) {
				t.Fatalf("Decrypt = %v %q %v", ctype, got, err)
			}
			if _, got, err := Decrypt(env, tc.wrong); err == nil {
				t.Fatalf("opened with the wrong key: %q", got)
			}
			if _, err := exec.LookPath("openssl"); err != nil {
				t.Skip("openssl not installed")
			}
			in := filepath.Join(dir, "env.der")
			out := filepath.Join(dir, "out.bin")
			if err := os.WriteFile(in, env, 0o600); err != nil {
				t.Fatal(err)
			}
			args := append([]string{"cms", "-decrypt", "-binary", "-inform", "DER", "-in", in, "-out", out}, tc.openssl(in)...)
			if b, err := exec.Command("openssl", args...).CombinedOutput(); err != nil {
				t.Fatalf("openssl %v: %v\n%s", args, err, b)
			}
			if b, _ := os.ReadFile(out); !bytes.Equal(b, content) {
				t.Fatalf("openssl decrypted %q", b)
			}
		})
	}
}

// TestSignVerifyOpenSSL signs a key package and checks it with `openssl cms -verify` and Verify;
// a changed content must not verify.
func TestSignVerifyOpenSSL(t *testing.T) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := testCert(t, caKey, "signer", 3)
	pkg, _ := MarshalAsymmetricKeyPackage([]byte{0x30, 0x03, 0x02, 0x01, 0x00})
	sd, err := Sign(rand.Reader, OIDAsymmetricKeyPackage, pkg, caKey, []*x509.Certificate{ca}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	v, err := Verify(sd)
	if err != nil || !bytes.Equal(v.Content, pkg) || v.Signer != v.Certs[0] || !v.ContentType.Equal(OIDAsymmetricKeyPackage) {
		t.Fatalf("Verify = %+v, %v", v, err)
	}
	bad := bytes.Clone(sd)
	i := bytes.Index(bad, pkg)
	bad[i+len(pkg)-1] ^= 1
	if _, err := Verify(bad); err == nil {
		t.Fatal("a changed content verified")
	}
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	dir := t.TempDir()
	ci, _ := ContentInfo(OIDSignedData, sd)
	in := filepath.Join(dir, "sd.der")
	os.WriteFile(in, ci, 0o600)
	caFile := writePEM(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", ca.Raw)
	out := filepath.Join(dir, "out.der")
	if b, err := exec.Command("openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", in, "-CAfile", caFile,
		"-purpose", "any", "-out", out).CombinedOutput(); err != nil {
		t.Fatalf("openssl cms -verify: %v\n%s", err, b)
	}
	if b, _ := os.ReadFile(out); !bytes.Equal(b, pkg) {
		t.Fatalf("openssl verified content %x", b)
	}
}

// TestEncryptedData: an EncryptedData (RFC 5652 §8) opens with its key only; a key of the wrong
// length, a tampered IV or trailing bytes are refused.
func TestEncryptedData(t *testing.T) {
	key := bytes.Repeat([]byte{0x42}, 32)
	der, err := EncryptData(rand.Reader, OIDData, []byte("firmware"), key)
	if err != nil {
		t.Fatal(err)
	}
	if ctype, pt, err := DecryptData(der, key); err != nil || !ctype.Equal(OIDData) || string(pt) != "firmware" {
		t.Fatalf("opened %v %q %v", ctype, pt, err)
	}
	for _, tc := range []struct {
		name string
		der  []byte
		key  []byte
	}{
		{"attack: another key", der, bytes.Repeat([]byte{0x43}, 32)},
		{"attack: a key of another length", der, key[:16]},
		{"attack: trailing bytes", append(bytes.Clone(der), 0), key},
		{"attack: truncated", der[:len(der)-1], key},
	} {
		if _, pt, err := DecryptData(tc.der, tc.key); err == nil && string(pt) == "firmware" {
			t.Errorf("%s: opened", tc.name)
		}
	}
	if _, err := EncryptData(rand.Reader, OIDData, []byte("x"), key[:7]); err == nil {
		t.Error("encrypted under a 7-byte key")
	}
}
