package estcoap

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"net"
	"strings"
	"testing"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"coapca/coap"
	"coapca/est"
	"coapca/est/cms"
	"coapca/est/estserver"
	"coapca/est/esttest"
)

// TestServerKeyGenEncrypted280 checks the 62 multipart of /skg and /skc when the CSR asks for an
// encrypted key: part 280 (never 284) beside 281/287, openable by the requester only.
func TestServerKeyGenEncrypted280(t *testing.T) {
	fa := esttest.New(t)
	srvLeaf, devLeaf := fa.ClientCert(t, "est server"), fa.ClientCert(t, "device-1")
	srvCert, srvKey, dev, devKey := srvLeaf.Cert, srvLeaf.Key, devLeaf.Cert, devLeaf.Key
	kek := bytes.Repeat([]byte{9}, 16)
	svc := estserver.New(fa, nil)
	if err := svc.SetKeyEncryption(estserver.KeyEncryption{KEKs: map[string][]byte{"k1": kek}, Signer: srvKey,
		Chain: []*x509.Certificate{srvCert, fa.CA}}); err != nil {
		t.Fatal(err)
	}
	b := New(svc, Options{})
	csr := func(a est.Attribute) []byte {
		der, err := est.CreateCSRWithAttributes(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "device-1"}}, devKey, []est.Attribute{a})
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	for _, tc := range []struct {
		name   string
		path   string
		accept coap.Format
		csr    []byte
		dec    cms.Decrypter
		certCF uint16
	}{
		{"skg KEK", root + "/skg", coap.Format{}, csr(est.DecryptKeyIdentifierAttribute([]byte("k1"))),
			cms.Decrypter{KEK: func(id []byte) []byte { return map[string][]byte{"k1": kek}[string(id)] }}, est.CFPKCS7CertsOnly},
		{"skc own key, Accept 280", root + "/skc", coap.CF(est.CFPKCS7ServerKey), csr(est.AsymmetricDecryptKeyIdentifierAttribute(est.SubjectKeyID(dev))),
			cms.Decrypter{Key: devKey, Cert: dev}, est.CFPKIXCert},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := b.ServeCoAP(context.Background(), &coap.Request{Method: codes.POST, Path: tc.path, ContentFormat: coap.CF(est.CFPKCS10),
				Accept: tc.accept, Payload: tc.csr,
				Peer: coap.Peer{Addr: &net.UDPAddr{IP: net.IPv6loopback, Port: 40000}, Secure: true,
					Certificates: []*x509.Certificate{dev}, TLS: estserver.StaticTLS{Unique: []byte("unique")}}})
			if resp.Code != codes.Changed || resp.ContentFormat != coap.CF(est.CFMultipartCore) {
				t.Fatalf("%v %s", resp.Code, resp.Payload)
			}
			parts, err := est.ParseMultipart(resp.Payload)
			if err != nil || len(parts) != 2 || parts[0].ContentFormat != est.CFPKCS7ServerKey || parts[1].ContentFormat != tc.certCF {
				t.Fatalf("parts %+v, %v: want [280, %d]", parts, err, tc.certCF)
			}
			dk, err := est.DecryptServerKey(parts[0].Body, tc.dec)
			if err != nil {
				t.Fatal(err)
			}
			var cert *x509.Certificate
			if tc.certCF == est.CFPKIXCert {
				cert, err = x509.ParseCertificate(parts[1].Body)
			} else {
				var cs []*x509.Certificate
				if cs, err = est.ParseCertsOnly(parts[1].Body); err == nil {
					cert = cs[0]
				}
			}
			if err != nil || !cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(dk.Key.(crypto.Signer).Public()) {
				t.Fatalf("the decrypted key is not the certified one (%v)", err)
			}
		})
	}
	// A request that names a KEK the server does not have: 4.00 with a diagnostic, nothing issued.
	before := len(fa.Requests())
	resp := b.ServeCoAP(context.Background(), &coap.Request{Method: codes.POST, Path: root + "/skg", ContentFormat: coap.CF(est.CFPKCS10),
		Payload: csr(est.DecryptKeyIdentifierAttribute([]byte("guess"))),
		Peer:    coap.Peer{Secure: true, Certificates: []*x509.Certificate{dev}, TLS: estserver.StaticTLS{Unique: []byte("u")}}})
	if resp.Code != codes.BadRequest || !strings.Contains(string(resp.Payload), "names no key-encryption key") || len(fa.Requests()) != before {
		t.Fatalf("unknown KEK: %v %s (%d issued)", resp.Code, resp.Payload, len(fa.Requests())-before)
	}
}
