package cli

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"coapca/est"
	"coapca/internal/config"
)

// secondDevice makes another IDevID of the demo manufacturer: a second device with the same
// standing as the demo device.
func secondDevice(t *testing.T, s *served, cn string) *tls.Certificate {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn, SerialNumber: cn},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.data.ManufacturerCA, k.Public(), s.data.ManufacturerKey)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der, s.data.ManufacturerCA.Raw}, PrivateKey: k}
}

// eeSubjects decodes a 200 /eecerts answer into the sorted common names it holds; another
// status is returned as "status N".
func eeSubjects(t *testing.T, r httpResult) []string {
	t.Helper()
	if r.status != http.StatusOK {
		return []string{"status " + http.StatusText(r.status)}
	}
	if mt := r.header.Get("Content-Type"); mt != "application/pkcs7-mime" {
		t.Errorf("Content-Type %q, want application/pkcs7-mime (RFC 8295 §3.2, RFC 7030 §4.1.3)", mt)
	}
	der, err := base64.StdEncoding.DecodeString(string(r.body))
	if err != nil {
		t.Fatalf("answer is not base64: %v", err)
	}
	certs, err := est.ParseCertsOnly(der)
	if err != nil {
		t.Fatalf("answer is not a certs-only PKCS#7: %v", err)
	}
	var cns []string
	for _, c := range certs {
		cns = append(cns, c.Subject.CommonName)
	}
	slices.Sort(cns)
	return cns
}

// TestESTHTTPSEECerts: /eecerts (RFC 8295 §3) over real loopback HTTPS, with the attacks the
// authority refuses: nobody sees another device's certificates unless the label's profile has
// eecerts_peers, anonymous and wrongly authenticated requests get nothing, a requester without
// standing under a label gets nothing of it, and revoked certificates are never handed out.
func TestESTHTTPSEECerts(t *testing.T) {
	s := httpsServer(t, func(c *config.Config) {
		withUser := append(config.DefaultRequesters(), config.RequesterRule{Kind: "user", From: []string{testUser}})
		c.Authority.Profiles = append(c.Authority.Profiles, config.Profile{Label: "peers", EECertsPeers: true, Requesters: withUser})
	})
	ctx := context.Background()
	devA, devB := demoDevice(t, s), secondDevice(t, s, "device-b")
	alice := []string{"basic", testUser + ":" + testPassword}
	enroll := func(who *tls.Certificate, label, cn string, hdr ...string) (*x509.Certificate, *tls.Certificate) {
		t.Helper()
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		csr, err := est.CreateCSR(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, k, "")
		if err != nil {
			t.Fatal(err)
		}
		c := issuedCert(t, estDo(t, s, who, 0, "POST", s.estURL(label)+"/simpleenroll", "application/pkcs10", b64(csr), hdr...))
		return c, &tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: k}
	}
	_, ldevidA := enroll(devA, "", "a-1")
	_, ldevidB := enroll(devB, "", "b-1")
	enroll(nil, "", "alice-1", alice...)
	enroll(devA, "peers", "a-peer")
	bPeer, _ := enroll(devB, "peers", "b-peer")
	enroll(nil, "peers", "alice-peer", alice...)
	revokedA, _ := enroll(devA, "peers", "a-revoked")
	if err := s.auth.Revoke(ctx, revokedA.SerialNumber.Text(16), 1); err != nil {
		t.Fatal(err)
	}

	get := func(who *tls.Certificate, label string, hdr ...string) []string {
		return eeSubjects(t, estDo(t, s, who, 0, "GET", s.estURL(label)+"/eecerts", "", nil, hdr...))
	}
	unauthorized, forbidden, notFound := []string{"status Unauthorized"}, []string{"status Forbidden"}, []string{"status Not Found"}
	tests := []struct {
		name string
		who  *tls.Certificate
		hdr  []string
		lbl  string
		want []string
	}{
		// Without eecerts_peers: only one's own certificates.
		{"device A sees only what it enrolled, not device B's nor alice's", devA, nil, "", []string{"a-1"}},
		{"device B sees only what it enrolled, not device A's", devB, nil, "", []string{"b-1"}},
		{"alice sees only what she enrolled, not the devices'", nil, alice, "", []string{"alice-1"}},
		{"device A's LDevID sees itself, not device B's", ldevidA, nil, "", []string{"a-1"}},
		{"device B's LDevID sees itself, not device A's", ldevidB, nil, "", []string{"b-1"}},
		// With eecerts_peers: every current certificate of the label, never a revoked one.
		{"peers label: device A sees its peers, not the revoked one", devA, nil, "peers", []string{"a-peer", "alice-peer", "b-peer"}},
		{"peers label: alice sees her peers", nil, alice, "peers", []string{"a-peer", "alice-peer", "b-peer"}},
		// Refused.
		{"anonymous", nil, nil, "", unauthorized},
		{"anonymous at the peers label", nil, nil, "peers", unauthorized},
		{"wrong Basic password", nil, []string{"basic", testUser + ":guess"}, "peers", unauthorized},
		{"alice at a label whose profile admits no users", nil, alice, "devices", forbidden},
		{"an LDevID of the default label at a label that admits only IDevIDs", ldevidA, nil, "peers", forbidden},
		{"standing but nothing issued there", devA, nil, "other", notFound},
		{"unknown label", devA, nil, "nosuch", notFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := get(tt.who, tt.lbl, tt.hdr...); !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}

	// After B's peer certificate is revoked, nobody gets it any more.
	if err := s.auth.Revoke(ctx, bPeer.SerialNumber.Text(16), 1); err != nil {
		t.Fatal(err)
	}
	if got, want := get(devA, "peers"), []string{"a-peer", "alice-peer"}; !slices.Equal(got, want) {
		t.Errorf("after revoking b-peer: got %v, want %v", got, want)
	}
	// POST is not the method of /eecerts (RFC 8295 §3.1: GET).
	if r := estDo(t, s, devA, 0, "POST", s.estURL("")+"/eecerts", "application/pkcs10", b64(newCSR(t, "x", ""))); r.status != http.StatusMethodNotAllowed {
		t.Errorf("POST /eecerts: status %d, want 405", r.status)
	}

	// Our client: `coapca est eecerts`, each certificate checked against the trust anchors
	// (RFC 8295 §3.2).
	dir := t.TempDir()
	out := filepath.Join(dir, "ee.pem")
	if _, errOut, code := cli(ctx, "est", "eecerts", "--server", s.estURL("peers"), "--trust", s.data.Paths.Root,
		"--cert", s.data.Paths.Device, "--key", s.data.Paths.DeviceKey, "--out", out); code != 0 {
		t.Fatalf("est eecerts: exit %d: %s", code, errOut)
	}
	pem, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(pem), "BEGIN CERTIFICATE"); n != 2 {
		t.Errorf("est eecerts wrote %d certificates, want 2 (a-peer, alice-peer)", n)
	}
	// Over EST-coaps there is no /eecerts: a usage error, not a request.
	if _, errOut, code := cli(ctx, "est", "eecerts", "--server", "coaps://127.0.0.1:1", "--insecure"); code == 0 || !strings.Contains(errOut, "https://") {
		t.Errorf("est eecerts over coaps: exit %d: %s", code, errOut)
	}
}
