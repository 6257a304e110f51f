package cmpserver

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"net"
	"net/url"
	"reflect"
	"testing"
	"time"

	"coapca/authority"
	"coapca/cmp"
)

// TestTxnStateRoundTrip: what another instance rebuilds from the store is the request the
// authority saw: the proven key, subject and SANs of a CertTemplate, or the PKCS#10 request of
// a p10cr; and a damaged state is an error, not a panic or a different request.
func TestTxnStateRoundTrip(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	subject := pkix.Name{CommonName: "dev-1", Organization: []string{"Acme"}, SerialNumber: "42"}
	rawSubject, err := asn1.Marshal(subject.ToRDNSequence())
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("urn:dev:1")
	tmplCSR := &x509.CertificateRequest{PublicKey: &key.PublicKey, RawSubject: rawSubject, DNSNames: []string{"dev-1.example"},
		EmailAddresses: []string{"ops@example"}, IPAddresses: []net.IP{net.ParseIP("192.0.2.7").To4()}, URIs: []*url.URL{u}}
	p10Raw, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: subject}, key)
	if err != nil {
		t.Fatal(err)
	}
	p10, _ := x509.ParseCertificateRequest(p10Raw)
	s := &Service{}
	exp := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name string
		x    *txn
	}{
		{"ir with template", &txn{who: "ref:demo", bodyType: cmp.TypeIR, label: "sensors", certReqID: 0, pendingID: "p1",
			lastNonce: []byte("nonce"), creq: authority.CertRequest{Op: authority.OpEnroll, Label: "sensors", CSR: tmplCSR,
				PublicKey: &key.PublicKey, RequestKey: []byte{1, 2, 3}, RAVerified: true}}},
		{"p10cr", &txn{who: "cert:ab", bodyType: cmp.TypeP10CR, certReqID: -1, pendingID: "p2",
			creq: authority.CertRequest{Op: authority.OpEnroll, CSR: p10}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.x.encode()
			if err != nil {
				t.Fatal(err)
			}
			got, err := s.decodeTxn(context.Background(), "id", b, exp)
			if err != nil {
				t.Fatal(err)
			}
			if got.who != tt.x.who || got.bodyType != tt.x.bodyType || got.label != tt.x.label || got.certReqID != tt.x.certReqID ||
				got.pendingID != tt.x.pendingID || string(got.lastNonce) != string(tt.x.lastNonce) || !got.expires.Equal(exp) ||
				got.creq.Op != tt.x.creq.Op || string(got.creq.RequestKey) != string(tt.x.creq.RequestKey) || got.creq.RAVerified != tt.x.creq.RAVerified {
				t.Errorf("transaction: got %+v\nwant %+v", got, tt.x)
			}
			w, g := tt.x.creq.CSR, got.creq.CSR
			if tt.x.bodyType == cmp.TypeP10CR {
				if string(g.Raw) != string(w.Raw) {
					t.Error("PKCS#10 request differs")
				}
				return
			}
			if !key.PublicKey.Equal(g.PublicKey) || !key.PublicKey.Equal(got.creq.PublicKey) || string(g.RawSubject) != string(w.RawSubject) ||
				g.Subject.String() != subject.String() || !reflect.DeepEqual(g.DNSNames, w.DNSNames) ||
				!reflect.DeepEqual(g.EmailAddresses, w.EmailAddresses) || len(g.IPAddresses) != 1 || !g.IPAddresses[0].Equal(w.IPAddresses[0]) ||
				len(g.URIs) != 1 || g.URIs[0].String() != "urn:dev:1" {
				t.Errorf("request: got %+v\nwant %+v", g, w)
			}
		})
	}
	for _, bad := range []string{``, `{`, `{"spki":"AAEC"}`, `{"p10cr":"AAEC"}`, `{"spki":"` + spki64(t, key) + `","subject":"AAEC"}`} {
		if _, err := s.decodeTxn(context.Background(), "id", []byte(bad), exp); err == nil {
			t.Errorf("damaged state %q decoded", bad)
		}
	}
}

func spki64(t *testing.T, k *ecdsa.PrivateKey) string {
	b, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}
