package client

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"coapca/est"
	"coapca/est/cms"
)

// TestSymmetricKeysRefusesDowngrade is the attack RFC 8295 §5.1.2's note describes: a server
// (malicious, or misconfigured) strips the signatures and the encryption and answers the keys
// plain, or signed only, to a client that asked for signed-enveloped-signed. The client takes
// only the form it asked for.
func TestSymmetricKeysRefusesDowngrade(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "server"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), BasicConstraintsValid: true, IsCA: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	cert, _ := x509.ParseCertificate(der)
	pkg, err := est.MarshalSymmetricKeyPackage([]est.SymmetricKey{{ID: "k", Key: make([]byte, 16)}})
	if err != nil {
		t.Fatal(err)
	}
	for _, form := range []est.SymKeyEncapsulation{est.SymKeyPlain, est.SymKeySigned} {
		t.Run(form.String(), func(t *testing.T) {
			body, err := est.SealSymmetricKeyPackageAs(rand.Reader, form, pkg, []byte("id"), key, []*x509.Certificate{cert}, cms.Recipient{}, nil, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			var accept string
			srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				accept = r.Header.Get("Accept")
				w.Header().Set("Content-Type", form.MediaType())
				_, _ = w.Write([]byte(base64.StdEncoding.EncodeToString(body)))
			}))
			defer srv.Close()
			c, err := NewHTTPS(srv.URL, HTTPSOptions{VerifyServer: ParseChain, Trust: []*x509.Certificate{cert}})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, err = c.SymmetricKeys(context.Background(), cms.Decrypter{Key: key, Cert: cert})
			if err == nil || !strings.Contains(err.Error(), "not signed-enveloped-signed as asked") {
				t.Fatalf("took a %s package when signed-enveloped-signed was asked: %v", form, err)
			}
			if accept != est.MediaSymmetricKeyPackage {
				t.Fatalf("Accept %q", accept)
			}
		})
	}
}
