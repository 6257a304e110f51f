package bench

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"testing"

	"coapca/internal/testpki"
)

// TestEDHOCMessageSizes: the sizes `coapca bench est --edhoc` prints cover every choice of
// the server's ID_CRED_R and the device's ID_CRED_I, and naming a certificate by reference
// (x5t, kid; RFC 9528 §3.5.3) makes the message that would carry it smaller.
func TestEDHOCMessageSizes(t *testing.T) {
	ca := testpki.NewCA(t, "Issuing CA")
	srv := ca.NewLeaf(t, &x509.Certificate{Subject: pkix.Name{CommonName: "server"}, DNSNames: []string{"localhost"}})
	dev := ca.NewLeaf(t, &x509.Certificate{Subject: pkix.Name{CommonName: "device"}, SubjectKeyId: []byte("device-kid-0123456789")})
	sizes, err := edhocMessageSizes(
		tls.Certificate{Certificate: [][]byte{srv.Cert.Raw, ca.Cert.Raw}, PrivateKey: srv.Key},
		tls.Certificate{Certificate: [][]byte{dev.Cert.Raw}, PrivateKey: dev.Key})
	if err != nil {
		t.Fatal(err)
	}
	got := map[[2]string]edhocSizes{}
	for _, z := range sizes {
		got[[2]string{z.credential, z.initiator}] = z
		t.Logf("ID_CRED_R %-12s ID_CRED_I %-8s message_1 %4d message_2 %4d message_3 %4d", z.credential, z.initiator, z.m1, z.m2, z.m3)
	}
	byValue := got[[2]string{"x5chain-leaf", "x5chain"}]
	for _, ref := range []string{"x5t", "kid"} {
		z, ok := got[[2]string{"x5chain-leaf", ref}]
		if !ok || z.m3 >= byValue.m3 {
			t.Errorf("message_3 with ID_CRED_I %s: %d bytes (present %v), want fewer than by value (%d)", ref, z.m3, ok, byValue.m3)
		}
	}
	if z := got[[2]string{"x5t", "x5chain"}]; z.m2 >= byValue.m2 {
		t.Errorf("message_2 with ID_CRED_R x5t: %d bytes, want fewer than x5chain-leaf (%d)", z.m2, byValue.m2)
	}
}
