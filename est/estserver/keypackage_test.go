package estserver

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"testing"
	"time"

	"coapca/est"
	"coapca/est/cms"
)

// TestKeyPackageRefusesTampering: a client opening an RFC 8295 §8.1 key package refuses one
// whose layers were swapped, stripped or altered (the outer signature covers the EnvelopedData:
// a man in the middle cannot swap in an envelope of its own), and opens the genuine one.
func TestKeyPackageRefusesTampering(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "signer"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	cert, _ := x509.ParseCertificate(der)
	kek := bytes.Repeat([]byte{7}, 32)
	s := New(nil, nil)
	if err := s.SetKeyEncryption(KeyEncryption{KEKs: map[string][]byte{"k": kek}, Signer: key, Chain: []*x509.Certificate{cert}}); err != nil {
		t.Fatal(err)
	}
	p8, _ := est.MarshalPKCS8(key)
	now := time.Now()
	kr := &keyRecipient{r: cms.Recipient{KEK: kek, KEKID: []byte("k")}}
	env, err := s.encryptKey(rand.Reader, kr, p8, now)
	if err != nil {
		t.Fatal(err)
	}
	good, err := s.signEnvelope(rand.Reader, env, now)
	if err != nil {
		t.Fatal(err)
	}
	// Another genuine envelope of the same size spliced under the first one's outer signature.
	env2, _ := s.encryptKey(rand.Reader, kr, p8, now)
	ed2, _ := cms.ContentOf(env2, cms.OIDEnvelopedData)
	ed1, _ := cms.ContentOf(env, cms.OIDEnvelopedData)
	spliced := bytes.Replace(good, ed1, ed2, 1)
	if len(ed1) != len(ed2) || bytes.Equal(spliced, good) {
		t.Fatal("the splice did not take")
	}
	flipped := bytes.Clone(good)
	flipped[len(flipped)/2] ^= 0x01
	innerSD, _ := cms.Sign(rand.Reader, cms.OIDAsymmetricKeyPackage, []byte{0x30, 0x00}, key, []*x509.Certificate{cert}, now)
	wrongInner, _ := cms.Sign(rand.Reader, cms.OIDData, innerSD, key, []*x509.Certificate{cert}, now)
	wrongInnerCI, _ := cms.ContentInfo(cms.OIDSignedData, wrongInner)

	d := cms.Decrypter{KEK: func(id []byte) []byte {
		if string(id) == "k" {
			return kek
		}
		return nil
	}}
	for _, tc := range []struct {
		name    string
		b       []byte
		wantErr string
	}{
		{"genuine", good, ""},
		{"RFC 7030 envelope without the outer signature", env, "contentType"},
		{"another envelope spliced under the outer signature", spliced, "messageDigest"},
		{"one bit flipped", flipped, "key package"},
		{"outer SignedData holding something else", wrongInnerCI, "not an EnvelopedData"},
		{"empty", nil, "key package"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kp, err := est.DecryptKeyPackage(tc.b, d)
			if tc.wantErr == "" {
				if err != nil || !bytes.Equal(kp.PKCS8, p8) || kp.OuterSigner == nil || !kp.OuterSigner.Equal(cert) {
					t.Fatalf("genuine package: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want one with %q", err, tc.wantErr)
			}
		})
	}
}
