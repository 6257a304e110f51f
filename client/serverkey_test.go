package client

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"strings"
	"testing"
	"time"

	"coapca/coap"
	"coapca/est"
	"coapca/est/cms"
	"coapca/est/estcoap"
	"coapca/est/estserver"
	"coapca/est/esttest"
	"coapca/internal/testpki"
)

// TestServerKeyGenEncryptedOverDTLS runs /skg and /skc with Content-Format 280 over a real
// DTLS loopback association: the client asks for its key encrypted under a pre-shared KEK or
// to its own certificate, decrypts it, and refuses what it must not use.
func TestServerKeyGenEncryptedOverDTLS(t *testing.T) {
	fa := esttest.New(t)
	kek := bytes.Repeat([]byte{0x5a}, 32)
	newServer := func(signer crypto.Signer, chain []*x509.Certificate) *testServer {
		svc := estserver.New(fa, nil)
		if err := svc.SetKeyEncryption(estserver.KeyEncryption{KEKs: map[string][]byte{"factory-kek": kek}, Signer: signer, Chain: chain}); err != nil {
			t.Fatal(err)
		}
		mux := coap.NewMux()
		estcoap.New(svc, estcoap.Options{}).Register(mux)
		return &testServer{fa: fa, srv: fa.StartDTLS(t, mux)}
	}
	signer := fa.ClientCert(t, "est key signer")
	srvCert, srvKey := signer.Cert, signer.Key
	good := newServer(srvKey, []*x509.Certificate{srvCert, fa.CA})
	// A signer the client's trust anchors do not know (self-signed).
	rogueKey := testpki.NewKey(t)
	rogueCert := testpki.SelfSigned(t, &x509.Certificate{Subject: pkix.Name{CommonName: "rogue"}}, rogueKey)
	rogue := newServer(rogueKey, []*x509.Certificate{rogueCert})

	kekDec := &cms.Decrypter{KEK: func(id []byte) []byte {
		if string(id) == "factory-kek" {
			return kek
		}
		return nil
	}}
	csr := func(attrs ...est.Attribute) []byte {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, err := est.CreateCSRWithAttributes(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "device-1"}}, key, attrs)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	for _, tc := range []struct {
		name    string
		srv     *testServer
		accept  CertFormat
		csr     func(s *testServer) []byte
		dec     func(s *testServer) *cms.Decrypter
		wantErr string
	}{
		{"KEK /skg", good, PKCS7, func(*testServer) []byte { return csr(est.DecryptKeyIdentifierAttribute([]byte("factory-kek"))) },
			func(*testServer) *cms.Decrypter { return kekDec }, ""},
		{"own certificate key /skc", good, Cert,
			func(s *testServer) []byte {
				return csr(est.AsymmetricDecryptKeyIdentifierAttribute(est.SubjectKeyID(s.srv.DeviceCert)))
			},
			func(s *testServer) *cms.Decrypter {
				return &cms.Decrypter{Key: s.srv.DeviceKey, Cert: s.srv.DeviceCert}
			}, ""},
		{"key package signed by an untrusted signer", rogue, PKCS7, func(*testServer) []byte { return csr(est.DecryptKeyIdentifierAttribute([]byte("factory-kek"))) },
			func(*testServer) *cms.Decrypter { return kekDec }, "does not chain to the trust anchors"},
		{"key asked encrypted, sent in the clear (284)", good, PKCS7, func(*testServer) []byte { return csr() },
			func(*testServer) *cms.Decrypter { return kekDec }, "returned it unencrypted"},
		{"wrong KEK", good, PKCS7, func(*testServer) []byte { return csr(est.DecryptKeyIdentifierAttribute([]byte("factory-kek"))) },
			func(*testServer) *cms.Decrypter {
				return &cms.Decrypter{KEK: func([]byte) []byte { return make([]byte, 32) }}
			}, "integrity check failed"},
		{"encrypted key without a decrypter", good, PKCS7, func(*testServer) []byte { return csr(est.DecryptKeyIdentifierAttribute([]byte("factory-kek"))) },
			func(*testServer) *cms.Decrypter { return nil }, "no key to decrypt it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			ec := NewEST(tc.srv.dial(t, 1024), ESTOptions{Accept: tc.accept, Trust: []*x509.Certificate{fa.Root},
				KeyDecrypter: tc.dec(tc.srv)})
			sk, err := ec.ServerKeyGen(ctx, tc.csr(tc.srv))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !sk.Encrypted || !sk.KeySigner.Equal(srvCert) {
				t.Fatalf("Encrypted %v, signer %v", sk.Encrypted, sk.KeySigner)
			}
			if !sk.Cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(sk.Key.(crypto.Signer).Public()) {
				t.Fatal("decrypted key is not the certified key")
			}
			if _, err := x509.ParsePKCS8PrivateKey(sk.PKCS8); err != nil {
				t.Fatal(err)
			}
		})
	}
}
