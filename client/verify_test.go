package client

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"coapca/cmp"
	"coapca/internal/testpki"
)

// testPKI is a root (with a chosen expiry: roots are told apart by it), an issuing CA under
// it, and leaves issued by the issuing CA.
type testPKI struct {
	t        *testing.T
	rootCA   *testpki.CA
	issuing  *testpki.CA
	root, ca *x509.Certificate
}

func newTestPKI(t *testing.T, name string, rootNotAfter time.Time) *testPKI {
	rootCA := testpki.NewRoot(t, &x509.Certificate{Subject: pkix.Name{CommonName: name + " root"}, NotAfter: rootNotAfter,
		KeyUsage: x509.KeyUsageCertSign}, testpki.NewKey(t))
	issuing := rootCA.SubCA(t, name+" issuing CA")
	return &testPKI{t: t, rootCA: rootCA, issuing: issuing, root: rootCA.Cert, ca: issuing.Cert}
}

// leaf issues an end-entity certificate from the issuing CA.
func (p *testPKI) leaf(tmpl *x509.Certificate) *x509.Certificate {
	p.t.Helper()
	return p.issuing.NewLeaf(p.t, tmpl).Cert
}

var loopbackIP = []net.IP{net.IPv4(127, 0, 0, 1)}

// TestVerifyServer: the server check shared by EST-coaps, EDHOC and CMP over coaps. Each
// refused case is a certificate that chains to the trust anchors — the attacks of a device
// key or a certificate for another name impersonating the server.
func TestVerifyServer(t *testing.T) {
	p := newTestPKI(t, "real", time.Now().Add(48*time.Hour))
	other := newTestPKI(t, "other", time.Now().Add(48*time.Hour))
	anchors := []*x509.Certificate{p.root}
	serverAuth := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	tests := []struct {
		name    string
		chain   []*x509.Certificate
		anchors []*x509.Certificate
		dial    string
		wantErr string
	}{
		{"serverAuth for localhost", []*x509.Certificate{p.leaf(&x509.Certificate{ExtKeyUsage: serverAuth, DNSNames: []string{"localhost"}}), p.ca}, anchors, "localhost", ""},
		{"serverAuth for the IP dialed", []*x509.Certificate{p.leaf(&x509.Certificate{ExtKeyUsage: serverAuth, IPAddresses: loopbackIP}), p.ca}, anchors, "127.0.0.1", ""},
		{"cmcRA (an EST registrar)", []*x509.Certificate{p.leaf(&x509.Certificate{UnknownExtKeyUsage: []asn1.ObjectIdentifier{OIDKPCmcRA}, DNSNames: []string{"localhost"}}), p.ca}, anchors, "localhost", ""},
		{"issuing CA among the anchors, no chain sent", []*x509.Certificate{p.leaf(&x509.Certificate{ExtKeyUsage: serverAuth, DNSNames: []string{"localhost"}})}, []*x509.Certificate{p.ca, p.root}, "localhost", ""},
		{"device certificate (clientAuth) naming localhost", []*x509.Certificate{p.leaf(&x509.Certificate{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, DNSNames: []string{"localhost"}}), p.ca}, anchors, "localhost", "not a server certificate"},
		{"no extendedKeyUsage", []*x509.Certificate{p.leaf(&x509.Certificate{DNSNames: []string{"localhost"}}), p.ca}, anchors, "localhost", "not a server certificate"},
		{"anyExtendedKeyUsage only", []*x509.Certificate{p.leaf(&x509.Certificate{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}, DNSNames: []string{"localhost"}}), p.ca}, anchors, "localhost", "not a server certificate"},
		{"cmcCA is not a server role", []*x509.Certificate{p.leaf(&x509.Certificate{UnknownExtKeyUsage: []asn1.ObjectIdentifier{OIDKPCmcCA}, DNSNames: []string{"localhost"}}), p.ca}, anchors, "localhost", "not a server certificate"},
		{"serverAuth for another name", []*x509.Certificate{p.leaf(&x509.Certificate{ExtKeyUsage: serverAuth, DNSNames: []string{"www.bank.example"}}), p.ca}, anchors, "localhost", "not for"},
		{"name only in the common name", []*x509.Certificate{p.leaf(&x509.Certificate{Subject: pkix.Name{CommonName: "localhost"}, ExtKeyUsage: serverAuth, DNSNames: []string{"x.example"}}), p.ca}, anchors, "localhost", "not for"},
		{"DNS name for an IP dialed", []*x509.Certificate{p.leaf(&x509.Certificate{ExtKeyUsage: serverAuth, DNSNames: []string{"127.0.0.1"}}), p.ca}, anchors, "127.0.0.1", "not for"},
		{"serverAuth from another PKI", []*x509.Certificate{other.leaf(&x509.Certificate{ExtKeyUsage: serverAuth, DNSNames: []string{"localhost"}}), other.ca}, anchors, "localhost", "does not chain"},
		{"the issuing CA itself with serverAuth", []*x509.Certificate{p.rootCA.Issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "sub"}, IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, ExtKeyUsage: serverAuth, DNSNames: []string{"localhost"}}, p.issuing.Key.Public())}, anchors, "localhost", "CA certificate"},
		{"no name to check", []*x509.Certificate{p.leaf(&x509.Certificate{ExtKeyUsage: serverAuth, DNSNames: []string{"localhost"}}), p.ca}, anchors, "", "no server name"},
		{"no certificate", nil, anchors, "localhost", "no certificate"},
		{"no anchors", []*x509.Certificate{p.leaf(&x509.Certificate{ExtKeyUsage: serverAuth, DNSNames: []string{"localhost"}}), p.ca}, nil, "localhost", "no trust anchors"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifyServer(tc.chain, tc.anchors, tc.dial, time.Now())
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
			} else if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
			// The callback form gives the same answer.
			raw := make([][]byte, len(tc.chain))
			for i, c := range tc.chain {
				raw[i] = c.Raw
			}
			chain, cerr := ServerVerifier(tc.anchors, tc.dial, nil)(raw)
			if (cerr == nil) != (err == nil) || (cerr == nil && len(chain) != len(tc.chain)) {
				t.Fatalf("ServerVerifier: %v, VerifyServer: %v", cerr, err)
			}
		})
	}
}

// TestUpdateTrustAnchors: what a /crts answer may put into the explicit TA database (RFC 7030
// §4.1.3, RFC 9148 §9.1). Each refusal leaves the existing file unchanged.
func TestUpdateTrustAnchors(t *testing.T) {
	p := newTestPKI(t, "real", time.Now().Add(48*time.Hour))
	older := newTestPKI(t, "attacker-older", time.Now().Add(36*time.Hour))
	newer := newTestPKI(t, "attacker-newer", time.Now().Add(72*time.Hour))
	srv := []*x509.Certificate{p.leaf(&x509.Certificate{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, DNSNames: []string{"localhost"}}), p.ca}
	device := []*x509.Certificate{p.leaf(&x509.Certificate{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, DNSNames: []string{"localhost"}}), p.ca}
	endEntity := p.leaf(&x509.Certificate{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	tests := []struct {
		name        string
		crts        []*x509.Certificate
		server      []*x509.Certificate
		dial        string
		wantWritten []*x509.Certificate
		wantDropped int
		wantErr     string
	}{
		{"issuing CA and root", []*x509.Certificate{p.ca, p.root}, srv, "localhost", []*x509.Certificate{p.root, p.ca}, 0, ""},
		{"an unrelated older root is dropped", []*x509.Certificate{p.ca, p.root, older.root, older.ca, endEntity}, srv, "localhost", []*x509.Certificate{p.root, p.ca}, 3, ""},
		{"a newer unrelated root does not authenticate the server", []*x509.Certificate{p.ca, p.root, newer.root}, srv, "localhost", nil, 0, "do not authenticate this server"},
		{"only the attacker's PKI", []*x509.Certificate{older.ca, older.root}, srv, "localhost", nil, 0, "do not authenticate this server"},
		{"no self-signed root", []*x509.Certificate{p.ca}, srv, "localhost", nil, 0, "no self-signed CA certificate"},
		{"a device certificate as the server", []*x509.Certificate{p.ca, p.root}, device, "localhost", nil, 0, "not a server certificate"},
		{"the server's certificate is for another name", []*x509.Certificate{p.ca, p.root}, srv, "127.0.0.1", nil, 0, "not for"},
		{"empty answer", nil, srv, "localhost", nil, 0, "no certificate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ta.pem")
			before := []byte("previous explicit trust anchors\n")
			if err := os.WriteFile(path, before, 0o600); err != nil {
				t.Fatal(err)
			}
			written, dropped, err := UpdateTrustAnchors(path, tc.crts, tc.server, tc.dial, time.Now())
			after, rerr := os.ReadFile(path)
			if rerr != nil {
				t.Fatal(rerr)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				if !bytes.Equal(after, before) {
					t.Fatal("the explicit TA database changed although the update was refused")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(dropped) != tc.wantDropped {
				t.Errorf("dropped %d certificates, want %d", len(dropped), tc.wantDropped)
			}
			got, err := ReadTrustAnchors(path)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.wantWritten) || len(written) != len(tc.wantWritten) {
				t.Fatalf("stored %d certificates, want %d", len(got), len(tc.wantWritten))
			}
			for i := range got {
				if !got[i].Equal(tc.wantWritten[i]) || !written[i].Equal(tc.wantWritten[i]) {
					t.Errorf("certificate %d is %s, want %s", i, got[i].Subject, tc.wantWritten[i].Subject)
				}
			}
		})
	}
}

// TestVerifyRootCAKeyUpdate: a genp rootCaKeyUpdate (RFC 9483 §4.3.2) names a new root only
// when the current root certified its key (newWithOld).
func TestVerifyRootCAKeyUpdate(t *testing.T) {
	old := newTestPKI(t, "old", time.Now().Add(48*time.Hour))
	foreign := newTestPKI(t, "foreign", time.Now().Add(48*time.Hour))
	newKey := testpki.NewKey(t)
	rootT := func() *x509.Certificate {
		return &x509.Certificate{Subject: pkix.Name{CommonName: "new root"}, NotAfter: time.Now().Add(96 * time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	}
	newWithNew := testpki.SelfSigned(t, rootT(), newKey)
	newWithOld := old.rootCA.Issue(t, rootT(), newKey.Public())
	forged := foreign.rootCA.Issue(t, rootT(), newKey.Public())
	notCA := testpki.SelfSigned(t, &x509.Certificate{Subject: pkix.Name{CommonName: "new root"}}, newKey)
	anchors := []*x509.Certificate{old.root}
	tests := []struct {
		name    string
		u       *cmp.RootCAKeyUpdate
		anchors []*x509.Certificate
		wantErr string
	}{
		{"certified by the current root", &cmp.RootCAKeyUpdate{NewWithNew: newWithNew, NewWithOld: newWithOld}, anchors, ""},
		{"no newWithOld", &cmp.RootCAKeyUpdate{NewWithNew: newWithNew}, anchors, "not certified"},
		{"newWithOld from another root", &cmp.RootCAKeyUpdate{NewWithNew: newWithNew, NewWithOld: forged}, anchors, "not certified"},
		{"newWithNew not a CA", &cmp.RootCAKeyUpdate{NewWithNew: notCA, NewWithOld: newWithOld}, anchors, "not a self-signed CA"},
		{"no anchors: the protection vouches", &cmp.RootCAKeyUpdate{NewWithNew: newWithNew}, nil, ""},
		{"empty", &cmp.RootCAKeyUpdate{}, anchors, "without newWithNew"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifyRootCAKeyUpdate(tc.u, tc.anchors, time.Now())
			if tc.wantErr == "" && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
		})
	}
}
