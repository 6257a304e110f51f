package cli

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"coapca/est"
	"coapca/est/cms"
	"coapca/kms"
)

// TestESTHTTPSKeyPackageReturn: /serverkeygen/return (RFC 8295 §8.2, RFC 7191) over real
// loopback HTTPS. A device returns a receipt signed with the key it received (204, recorded,
// shown by `coapca ca receipts`) and a signed error; the attacks are refused with a 4xx and
// record nothing: anonymous, a signer no authorized trust anchor vouches for, another device's
// key package, a receipt signed with somebody else's key, unsigned, tampered, malformed, a
// wrong media type, a certificate that held no server-generated key, an unknown package.
func TestESTHTTPSKeyPackageReturn(t *testing.T) {
	s := httpsServer(t)
	ctx := context.Background()
	dir := t.TempDir()
	d := s.data.Paths
	devA, devB := demoDevice(t, s), secondDevice(t, s, "device-b")

	// Each device gets a server-generated key: our client for A, the wire for B.
	kpCert, kpKey := filepath.Join(dir, "kp.pem"), filepath.Join(dir, "kp.key")
	if _, errOut, code := cli(ctx, "est", "serverkeygen", "--server", s.estURL(""), "--trust", d.Root, "--cert", d.Device,
		"--key", d.DeviceKey, "--subject", "CN=kp-a", "--key-out", kpKey, "--out", kpCert); code != 0 {
		t.Fatalf("serverkeygen: exit %d: %s", code, errOut)
	}
	pkgA := readCert(t, kpCert)
	keyA, err := kms.LoadKeyFile(kpKey)
	if err != nil {
		t.Fatal(err)
	}
	typesB, partsB := keyPackageParts(t, estDo(t, s, devB, 0, "POST", s.estURL("")+"/serverkeygen", "application/pkcs10", b64(newCSR(t, "kp-b", ""))))
	if len(partsB) != 2 || typesB[0] != "application/pkcs8" {
		t.Fatalf("device B's serverkeygen: %q", typesB)
	}
	keyBAny, err := x509.ParsePKCS8PrivateKey(partsB[0])
	if err != nil {
		t.Fatal(err)
	}
	keyB := keyBAny.(*ecdsa.PrivateKey)
	certsB, err := est.ParseCertsOnly(partsB[1])
	if err != nil {
		t.Fatal(err)
	}
	pkgB := certsB[0]
	// A certificate from simple enrollment: no key package was delivered for it.
	enrolledKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := est.CreateCSR(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "enrolled"}}, enrolledKey, "")
	enrolled := issuedCert(t, estDo(t, s, devA, 0, "POST", s.estURL("")+"/simpleenroll", "application/pkcs10", b64(csr)))
	// A key and certificate nobody trusts.
	rogueKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rogueTmpl := &x509.Certificate{SerialNumber: pkgA.SerialNumber, Subject: pkgA.Subject,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	rogueDER, _ := x509.CreateCertificate(rand.Reader, rogueTmpl, rogueTmpl, rogueKey.Public(), rogueKey)
	rogue, _ := x509.ParseCertificate(rogueDER)

	now := time.Now()
	receipt := func(key *ecdsa.PrivateKey, cert *x509.Certificate) []byte {
		der, err := est.SignKeyPackageReceipt(rand.Reader, key, cert, nil, now)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	goodA := receipt(keyA.(*ecdsa.PrivateKey), pkgA)
	// A receipt naming A's package, signed with B's package key.
	foreignSigned := func() []byte {
		sd, err := cms.Sign(rand.Reader, est.OIDKeyPackageReceipt, mustReceiptBody(t, pkgA), keyB, []*x509.Certificate{pkgB}, now)
		if err != nil {
			t.Fatal(err)
		}
		ci, _ := cms.ContentInfo(cms.OIDSignedData, sd)
		return ci
	}()
	unsigned, _ := cms.ContentInfo(est.OIDKeyPackageReceipt, mustReceiptBody(t, pkgA))
	tampered := append([]byte{}, goodA...)
	tampered[len(tampered)-3] ^= 0x40 // inside the signature
	errorByIDevID, err := est.SignKeyPackageError(rand.Reader, 71, pkgA, devA.PrivateKey.(*ecdsa.PrivateKey), mustLeaf(t, devA), nil, now)
	if err != nil {
		t.Fatal(err)
	}
	unknown := *pkgA
	unknown.SerialNumber = big.NewInt(0x7eadbeef)
	unknownBody := mustReceiptBody(t, &unknown)
	sdu, _ := cms.Sign(rand.Reader, est.OIDKeyPackageReceipt, unknownBody, keyA.(*ecdsa.PrivateKey), []*x509.Certificate{pkgA}, now)
	unknownPkg, _ := cms.ContentInfo(cms.OIDSignedData, sdu)

	const cmsType = "application/cms"
	tests := []struct {
		name string
		who  *tls.Certificate
		ct   string
		body []byte
		want int
	}{
		{"device A: receipt signed with the key it received", devA, est.MediaKeyPackageReceipt, goodA, http.StatusNoContent},
		{"device A: error signed with its own IDevID", devA, est.MediaKeyPackageError, errorByIDevID, http.StatusNoContent},
		{"anonymous", nil, cmsType, goodA, http.StatusUnauthorized},
		{"signer no trust anchor vouches for", devA, cmsType, receipt(rogueKey, rogue), http.StatusForbidden},
		{"device B returns device A's key package", devB, cmsType, goodA, http.StatusForbidden},
		{"device A's package, signed with device B's key", devA, cmsType, foreignSigned, http.StatusForbidden},
		{"unsigned receipt", devA, cmsType, unsigned, http.StatusBadRequest},
		{"tampered signature", devA, cmsType, tampered, http.StatusBadRequest},
		{"malformed", devA, cmsType, []byte{0x30, 0x03, 0x06, 0x01, 0x00}, http.StatusBadRequest},
		{"wrong media type", devA, "application/pkcs10", goodA, http.StatusUnsupportedMediaType},
		{"certificate without a server-generated key", devA, cmsType, receiptFor(t, enrolledKey, enrolled), http.StatusBadRequest},
		{"unknown key package", devA, cmsType, unknownPkg, http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, err := s.auth.KeyPackageReturns(ctx, "", 0)
			if err != nil {
				t.Fatal(err)
			}
			r := estDo(t, s, tt.who, 0, "POST", s.estURL("")+"/serverkeygen/return", tt.ct, b64(tt.body))
			if r.status != tt.want {
				t.Fatalf("status %d (%s), want %d", r.status, strings.TrimSpace(string(r.body)), tt.want)
			}
			after, _ := s.auth.KeyPackageReturns(ctx, "", 0)
			if added := len(after) - len(before); (tt.want == http.StatusNoContent) != (added == 1) || added > 1 {
				t.Fatalf("%d records added", added)
			}
		})
	}
	got, err := s.auth.KeyPackageReturns(ctx, pkgA.SerialNumber.Text(16), 0)
	if err != nil || len(got) != 2 || got[0].Kind != "error" || got[0].ErrorCode != "decryptFailure" || got[1].Kind != "receipt" ||
		got[1].SignerSerial != pkgA.SerialNumber.Text(16) || got[1].By != pkgA.Subject.String() {
		t.Fatalf("recorded: %+v, %v", got, err)
	}

	// Our client: `coapca est return --receipt`, then `coapca ca receipts` shows it.
	if _, errOut, code := cli(ctx, "est", "return", "--server", s.estURL(""), "--trust", d.Root, "--cert", d.Device, "--key", d.DeviceKey,
		"--receipt", "--package-cert", kpCert, "--package-key", kpKey); code != 0 {
		t.Fatalf("est return --receipt: exit %d: %s", code, errOut)
	}
	if _, errOut, code := cli(ctx, "est", "return", "--server", s.estURL(""), "--trust", d.Root, "--cert", d.Device, "--key", d.DeviceKey,
		"--error", "badKeyPackage", "--package-cert", kpCert); code != 0 {
		t.Fatalf("est return --error: exit %d: %s", code, errOut)
	}
	out, errOut, code := cli(ctx, "ca", "receipts", pkgA.SerialNumber.Text(16), "--data", s.data.Dir)
	if lines := strings.Split(strings.TrimSpace(out), "\n"); code != 0 || len(lines) != 5 || !strings.Contains(out, "badKeyPackage") ||
		strings.Count(out, "receipt") != 2 || strings.Count(out, "decryptFailure") != 1 {
		t.Fatalf("ca receipts: exit %d:\n%s%s", code, out, errOut)
	}
	// Another device's package through our client: refused, nothing recorded.
	if _, errOut, code := cli(ctx, "est", "return", "--server", s.estURL(""), "--trust", d.Root, "--cert", writePair(t, dir, devB),
		"--key", filepath.Join(dir, "b.key"), "--receipt", "--package-cert", kpCert, "--package-key", kpKey); code == 0 || !strings.Contains(errOut, "403") {
		t.Fatalf("device B returning A's receipt: exit %d: %s", code, errOut)
	}
	if all, _ := s.auth.KeyPackageReturns(ctx, "", 0); len(all) != 4 {
		t.Fatalf("%d records, want 4", len(all))
	}
}

func mustLeaf(t *testing.T, c *tls.Certificate) *x509.Certificate {
	t.Helper()
	l, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// mustReceiptBody is the DER KeyPackageReceipt (RFC 7191 §3) for cert's key package.
func mustReceiptBody(t *testing.T, cert *x509.Certificate) []byte {
	t.Helper()
	b, err := est.MarshalKeyPackageReceipt(cert)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func receiptFor(t *testing.T, key *ecdsa.PrivateKey, cert *x509.Certificate) []byte {
	t.Helper()
	der, err := est.SignKeyPackageReceipt(rand.Reader, key, cert, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// writePair writes c's certificate chain and key as PEM (dir/b.pem, dir/b.key).
func writePair(t *testing.T, dir string, c *tls.Certificate) string {
	t.Helper()
	var chain []byte
	for _, der := range c.Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	k, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "b.pem")
	if err := os.WriteFile(p, chain, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "b.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: k}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
