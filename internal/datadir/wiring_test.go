package datadir_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"testing"

	"coapca/authority"
	"coapca/internal/datadir"
	"coapca/kms"
	"coapca/store/sqlite"
)

// TestWiresIntoAuthority is how `coapca serve` puts the house together: the data directory,
// the SQLite store at DIR/coapca.db, the issuing key through kms, the demo manufacturer CA as a
// trust store and the demo CMP secret; then the demo device enrolls.
func TestWiresIntoAuthority(t *testing.T) {
	ctx := context.Background()
	d, err := datadir.Open(datadir.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(ctx, d.Paths.DB, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	signer, err := kms.Open(ctx, d.IssuingKeyURI())
	if err != nil {
		t.Fatal(err)
	}
	a, err := authority.New(authority.Policy{
		TrustStores: []authority.TrustStore{{Name: "demo", Roots: []*x509.Certificate{d.ManufacturerCA}, AllowExpired: true}},
		MACSecrets:  []authority.MACSecret{{Reference: d.CMPSecretRef, Secret: d.CMPSecret}},
	}, authority.Options{Store: st, Signer: signer, Chain: d.IssuingChain()})
	if err != nil {
		t.Fatal(err)
	}
	chain, err := a.VerifyClient([][]byte{d.Device.Raw})
	if err != nil {
		t.Fatal(err)
	}
	csrDER, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "demo-device-0001"}}, d.DeviceKey)
	csr, _ := x509.ParseCertificateRequest(csrDER)
	iss, err := a.Issue(ctx, authority.CertRequest{Op: authority.OpEnroll, CSR: csr,
		Requester: authority.Requester{Chain: chain, Transport: authority.TransportCoAPS, Protocol: authority.ProtocolEST}})
	if err != nil {
		t.Fatal(err)
	}
	if iss.Cert.Subject.SerialNumber != datadir.DeviceSerialNumber {
		t.Errorf("issued subject %s lacks the IDevID's serialNumber", iss.Cert.Subject)
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(d.Root)
	inter.AddCert(d.IssuingCA)
	if _, err := iss.Cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("issued certificate does not chain to ca.pem: %v", err)
	}
	if sec, err := a.MACSecret("demo"); err != nil || string(sec) != string(d.CMPSecret) {
		t.Errorf("MACSecret = %q, %v", sec, err)
	}
}
