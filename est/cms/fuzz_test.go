package cms

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"testing"
	"time"
)

// FuzzDecrypt feeds arbitrary bytes to the EnvelopedData parser with keys of every kind: it
// must never panic, and what it opens must be what was sealed (round trip of the seeds).
func FuzzDecrypt(f *testing.F) {
	kek := bytes.Repeat([]byte{7}, 32)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 1024)
	content := []byte("sealed")
	seeds := map[string]bool{}
	for _, r := range []Recipient{
		{KEK: kek, KEKID: []byte("id")},
		{PublicKey: &ecKey.PublicKey, SubjectKeyID: []byte{1}},
		{PublicKey: &rsaKey.PublicKey, SubjectKeyID: []byte{2}},
	} {
		env, err := Encrypt(rand.Reader, OIDData, content, r, nil)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(env)
		seeds[string(env)] = true
	}
	decs := []Decrypter{
		{KEK: func(id []byte) []byte { return kek }},
		{Key: ecKey},
		{Key: rsaKey},
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		opened := false
		for _, d := range decs {
			ct, got, err := Decrypt(b, d)
			if err != nil {
				continue
			}
			opened = true
			if ct == nil {
				t.Fatal("opened without a content type")
			}
			if seeds[string(b)] && !bytes.Equal(got, content) {
				t.Fatalf("a sealed seed opened to %q", got)
			}
		}
		if seeds[string(b)] && !opened {
			t.Fatal("a sealed seed did not open")
		}
	})
}

// FuzzVerify feeds arbitrary bytes to the SignedData parser: never a panic, and a signature
// it accepts is over the content it returns.
func FuzzVerify(f *testing.F) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cert := testCert(f, key, "fuzz signer", 1)
	pkg, _ := MarshalAsymmetricKeyPackage([]byte{0x30, 0x00})
	sd, err := Sign(rand.Reader, OIDAsymmetricKeyPackage, pkg, key, []*x509.Certificate{cert}, time.Now())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(sd)
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Verify(b)
		if err != nil {
			return
		}
		if s.Signer == nil {
			t.Fatal("verified without a signer")
		}
		if k, err := ParseAsymmetricKeyPackage(s.Content); err == nil && len(k) == 0 {
			t.Fatal("empty key package accepted")
		}
	})
}

// FuzzDecryptData feeds arbitrary bytes to the EncryptedData parser (RFC 5652 §8): it must never
// panic, and the seeds (every AES key length) must open to what was sealed.
func FuzzDecryptData(f *testing.F) {
	for _, n := range []int{16, 24, 32} {
		der, err := EncryptData(rand.Reader, OIDData, []byte("sealed"), bytes.Repeat([]byte{byte(n)}, n))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(der, n)
	}
	f.Fuzz(func(t *testing.T, b []byte, n int) {
		if n != 16 && n != 24 && n != 32 {
			return
		}
		ctype, content, err := DecryptData(b, bytes.Repeat([]byte{byte(n)}, n))
		if err != nil {
			return
		}
		if ctype == nil {
			t.Fatalf("opened %x without a content type", b)
		}
		again, err := EncryptData(rand.Reader, ctype, content, bytes.Repeat([]byte{byte(n)}, n))
		if err != nil {
			t.Fatal(err)
		}
		if c2, p2, err := DecryptData(again, bytes.Repeat([]byte{byte(n)}, n)); err != nil || !c2.Equal(ctype) || !bytes.Equal(p2, content) {
			t.Fatalf("re-encryption of %x does not open to the same content: %v", b, err)
		}
	})
}
