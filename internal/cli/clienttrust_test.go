package cli

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"coapca/client"
	"coapca/coap"
	"coapca/coap/dtlsconn"
	"coapca/est/estcoap"
	"coapca/est/estserver"
	"coapca/est/esttest"
	"coapca/internal/config"
	"coapca/internal/datadir"
	"coapca/internal/testpki"
	"coapca/kms"
)

// The attacks of issue 8 items 7 and 8, tried with the real CLI against real loopback servers:
// a certificate that merely chains to --trust must not make its holder the EST server, the
// EDHOC responder, the CMP server over coaps:// or the CMP signer.

// issueFromDataDir signs tmpl with the data directory's issuing CA — the CA under --trust —
// for a new key, as a mis-issued certificate or a stolen device key would give an attacker.
func issueFromDataDir(t *testing.T, d *datadir.Data, tmpl *x509.Certificate) (*x509.Certificate, crypto.Signer, tls.Certificate) {
	t.Helper()
	ca := &testpki.CA{Cert: d.IssuingCA, Key: d.IssuingKey, Chain: []*x509.Certificate{d.IssuingCA}}
	tmpl.NotAfter = time.Now().AddDate(1, 0, 0)
	leaf := ca.NewLeaf(t, tmpl)
	return leaf.Cert, leaf.Key, tls.Certificate{Certificate: [][]byte{leaf.Cert.Raw, d.IssuingCA.Raw}, PrivateKey: leaf.Key, Leaf: leaf.Cert}
}

// hostileHouse starts coapca (coaps, coap with EST-oscore, HTTP) on a data directory whose
// server certificate (target "server": DTLS and EDHOC) or CMP signer (target "cmp-signer") was
// replaced by tmpl, issued by the issuing CA. It returns the server and the replaced
// certificate's PEM file.
func hostileHouse(t *testing.T, target string, tmpl *x509.Certificate) (*served, string) {
	t.Helper()
	dir := t.TempDir()
	d, err := datadir.Open(datadir.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath := d.Paths.Server, d.Paths.ServerKey
	if target == "server" {
		// The data directory keeps a server certificate only when it names every host name.
		tmpl.DNSNames, tmpl.IPAddresses = d.Server.DNSNames, d.Server.IPAddresses
	} else {
		certPath, keyPath = d.Paths.CMPSigner, d.Paths.CMPSignerKey
	}
	cert, key, _ := issueFromDataDir(t, d, tmpl)
	if err := kms.WriteKeyFile(keyPath, key); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	s := testServerAt(t, dir, func(c *config.Config) { c.Listen.HTTP = "127.0.0.1:0" })
	if got := s.data.Server; target == "server" && !got.Equal(cert) {
		t.Fatal("the data directory replaced the planted server certificate")
	}
	if got := s.data.CMPSigner; target != "server" && !got.Equal(cert) {
		t.Fatal("the data directory replaced the planted CMP signer")
	}
	return s, certPath
}

// crtsAuthority is the fake server's authority with the /crts answer it chooses.
type crtsAuthority struct {
	*esttest.Authority
	crts []*x509.Certificate
}

func (a crtsAuthority) CACerts(string) []*x509.Certificate { return a.crts }

// fakeESTServer serves EST-coaps on 127.0.0.1 with the DTLS identity id and crts at /crts; it
// accepts any client certificate.
func fakeESTServer(t *testing.T, id tls.Certificate, crts []*x509.Certificate) string {
	t.Helper()
	fa := esttest.New(t)
	mux := coap.NewMux()
	estcoap.New(estserver.New(crtsAuthority{fa, crts}, nil), estcoap.Options{}).Register(mux)
	l, err := dtlsconn.Listen("udp", "127.0.0.1:0", dtlsconn.ServerConfig{Certificates: []tls.Certificate{id},
		ClientAuth: dtlsconn.RequestClientCert, VerifyPeer: client.ParseChain})
	if err != nil {
		t.Fatal(err)
	}
	srv := coap.NewServer(mux, coap.Config{})
	done := make(chan error, 1)
	go func() { done <- srv.ServeDTLS(l) }()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return "coaps://" + l.Addr().String()
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// mustNotExist fails when one of paths exists.
func mustNotExist(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s was written (%v)", filepath.Base(p), err)
		}
	}
}

// TestESTClientRefusesImpostorServer: `est cacerts --explicit-ta` against EST-coaps servers
// whose DTLS certificate chains to --trust but is not a server certificate for the host dialed
// (127.0.0.1), or whose /crts mixes in an attacker's root. A refused server gets nothing
// printed, the explicit TA database is neither created nor changed and --out is not written;
// an attacker's root never enters the explicit TA database.
func TestESTClientRefusesImpostorServer(t *testing.T) {
	ctx := context.Background()
	d, err := datadir.Open(datadir.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	foreign := esttest.New(t)
	// The real CA certificates plus an attacker's root: what the impostor answers at /crts.
	mixed := []*x509.Certificate{d.IssuingCA, d.Root, foreign.Root}
	foreignOnly := []*x509.Certificate{foreign.CA, foreign.Root}
	dev := []string{"--cert", d.Paths.Device, "--key", d.Paths.DeviceKey, "--timeout", "20s"}
	ip := []net.IP{net.IPv4(127, 0, 0, 1)}
	tests := []struct {
		name    string
		tmpl    *x509.Certificate
		crts    []*x509.Certificate
		wantErr string // "" = the update succeeds with the real root and issuing CA only
	}{
		{"device certificate (clientAuth) naming the host", &x509.Certificate{Subject: pkix.Name{CommonName: "demo-device-0002"},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, DNSNames: []string{"localhost"}, IPAddresses: ip}, mixed, "not a server certificate"},
		{"no extendedKeyUsage", &x509.Certificate{Subject: pkix.Name{CommonName: "no-eku"}, IPAddresses: ip}, mixed, "not a server certificate"},
		{"serverAuth for another name", &x509.Certificate{Subject: pkix.Name{CommonName: "www.bank.example"},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, DNSNames: []string{"www.bank.example"}}, mixed, "not for"},
		// A real server role for the host whose /crts offers only a root its own chain does not
		// lead to: refused (RFC 7030 §4.1.3, RFC 9148 §9.1).
		{"serverAuth, only a foreign root at /crts", &x509.Certificate{Subject: pkix.Name{CommonName: "est"},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IPAddresses: ip}, foreignOnly, "do not authenticate this server"},
		{"cmcRA, only a foreign root at /crts", &x509.Certificate{Subject: pkix.Name{CommonName: "registrar"},
			UnknownExtKeyUsage: []asn1.ObjectIdentifier{client.OIDKPCmcRA}, IPAddresses: ip}, foreignOnly, "do not authenticate this server"},
		// ... and with the foreign root mixed in: the real root and issuing CA are stored, the
		// foreign root is not.
		{"serverAuth, a foreign root mixed into /crts", &x509.Certificate{Subject: pkix.Name{CommonName: "est"},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IPAddresses: ip}, mixed, ""},
		{"cmcRA, a foreign root mixed into /crts", &x509.Certificate{Subject: pkix.Name{CommonName: "registrar"},
			UnknownExtKeyUsage: []asn1.ObjectIdentifier{client.OIDKPCmcRA}, IPAddresses: ip}, mixed, ""},
	}
	for _, tc := range tests {
		_, _, id := issueFromDataDir(t, d, tc.tmpl)
		url := fakeESTServer(t, id, tc.crts)
		for _, existing := range []bool{false, true} {
			name := tc.name + ", no explicit TA yet"
			if existing {
				name = tc.name + ", explicit TA database exists"
			}
			t.Run(name, func(t *testing.T) {
				dir := t.TempDir()
				ta, out := filepath.Join(dir, "ta.pem"), filepath.Join(dir, "cacerts.pem")
				before := certPEM(d.Root)
				if existing {
					if err := os.WriteFile(ta, before, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				stdout, errOut, code := cli(ctx, append([]string{"est", "cacerts", "--server", url, "--trust", d.Paths.Root,
					"--explicit-ta", ta, "--out", out}, dev...)...)
				if tc.wantErr == "" {
					if code != 0 || !strings.Contains(errOut, "not stored as a trust anchor") {
						t.Fatalf("exit %d:\n%s", code, errOut)
					}
					if got, err := os.ReadFile(ta); err != nil || !bytes.Equal(got, append(certPEM(d.Root), certPEM(d.IssuingCA)...)) {
						t.Fatalf("explicit TA database holds\n%s\nwant only the real root and issuing CA (%v)", got, err)
					}
					return
				}
				if code == 0 || !strings.Contains(errOut, tc.wantErr) {
					t.Fatalf("exit %d, want a refusal with %q:\n%s", code, tc.wantErr, errOut)
				}
				if stdout != "" {
					t.Errorf("printed %q", stdout)
				}
				mustNotExist(t, out)
				if !existing {
					mustNotExist(t, ta)
				} else if after, err := os.ReadFile(ta); err != nil || !bytes.Equal(after, before) {
					t.Errorf("the explicit TA database changed (%v)", err)
				}
			})
		}
	}

	// An unauthenticated connection (--insecure) never fills the explicit TA database
	// (RFC 7030 §4.1.1: its answer needs an out-of-band check first).
	_, _, id := issueFromDataDir(t, d, &x509.Certificate{Subject: pkix.Name{CommonName: "est"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IPAddresses: ip})
	url := fakeESTServer(t, id, mixed)
	ta := filepath.Join(t.TempDir(), "ta.pem")
	if _, errOut, code := cli(ctx, append([]string{"est", "cacerts", "--server", url, "--insecure", "--explicit-ta", ta}, dev...)...); code == 0 ||
		!strings.Contains(errOut, "does not authenticate the server") {
		t.Errorf("--insecure --explicit-ta: exit %d: %s", code, errOut)
	}
	mustNotExist(t, ta)
	// The same connection without --explicit-ta prints the fingerprints to compare.
	if out, errOut, code := cli(ctx, append([]string{"est", "cacerts", "--server", url, "--insecure"}, dev...)...); code != 0 ||
		!strings.Contains(errOut, "SHA-256") || !strings.Contains(out, "BEGIN CERTIFICATE") {
		t.Errorf("--insecure cacerts: exit %d: %s", code, errOut)
	}
}

// TestClientsRefuseDeviceAsServer: the real server runs with a device certificate (clientAuth
// only, naming every host name, issued by the CA under --trust) as its DTLS and EDHOC
// identity. EST-coaps, EST-oscore with EDHOC and CMP over coaps:// all refuse it and write
// nothing; the control with --insecure shows the server itself answers.
func TestClientsRefuseDeviceAsServer(t *testing.T) {
	ctx := context.Background()
	s, _ := hostileHouse(t, "server", &x509.Certificate{Subject: pkix.Name{CommonName: "demo-device-0002"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	d := s.data.Paths
	dev := []string{"--cert", d.Device, "--key", d.DeviceKey, "--timeout", "20s"}
	tests := []struct {
		name string
		args func(ta, out, keyOut, caOut string) []string
	}{
		{"EST-coaps cacerts into the explicit TA database", func(ta, out, _, _ string) []string {
			return []string{"est", "cacerts", "--server", s.coapsURL, "--trust", d.Root, "--explicit-ta", ta, "--out", out}
		}},
		{"EST-coaps enroll", func(_, out, keyOut, _ string) []string {
			return []string{"est", "enroll", "--server", s.coapsURL, "--trust", d.Root, "--subject", "CN=demo-device-0001", "--key-out", keyOut, "--out", out}
		}},
		// EDHOC: the server sends its certificate alone (edhoc.credential x5chain-leaf), so the
		// client trusts the issuing CA; the impostor's chain then verifies and its role does not.
		{"EST-oscore (EDHOC) cacerts into the explicit TA database", func(ta, out, _, _ string) []string {
			return []string{"est", "cacerts", "--server", s.coapURL, "--edhoc", "--trust", d.IssuingCA, "--explicit-ta", ta, "--out", out}
		}},
		{"EST-oscore (EDHOC) enroll", func(_, out, keyOut, _ string) []string {
			return []string{"est", "enroll", "--server", s.coapURL, "--edhoc", "--trust", d.IssuingCA, "--subject", "CN=demo-device-0001", "--key-out", keyOut, "--out", out}
		}},
		{"CMP over coaps ir", func(_, out, keyOut, caOut string) []string {
			return []string{"cmp", "ir", "--server", s.coapsURL, "--ref", "demo", "--secret-file", d.CMPSecret, "--trust", d.Root,
				"--subject", "CN=demo-device-0002", "--key-out", keyOut, "--out", out, "--ca-out", caOut}
		}},
		{"CMP over coaps genm cacerts", func(_, out, _, _ string) []string {
			return []string{"cmp", "genm", "--server", s.coapsURL, "--ref", "demo", "--secret-file", d.CMPSecret, "--trust", d.Root, "--out", out}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ta, out, keyOut, caOut := filepath.Join(dir, "ta.pem"), filepath.Join(dir, "out.pem"), filepath.Join(dir, "new.key"), filepath.Join(dir, "ca.pem")
			stdout, errOut, code := cli(ctx, append(tc.args(ta, out, keyOut, caOut), dev...)...)
			if code == 0 || !strings.Contains(errOut, "not a server certificate") {
				t.Fatalf("exit %d, want the impostor refused:\n%s", code, errOut)
			}
			if stdout != "" {
				t.Errorf("printed %q", stdout)
			}
			mustNotExist(t, ta, out, keyOut, caOut)
		})
	}
	if _, errOut, code := cli(ctx, append([]string{"est", "cacerts", "--server", s.coapsURL, "--insecure"}, dev...)...); code != 0 {
		t.Fatalf("control: the server does not answer at all: %s", errOut)
	}
}

// TestCMPClientRefusesNonRASigner: the real server signs its CMP answers with a certificate
// that chains to --trust but has neither id-kp-cmcCA nor id-kp-cmcRA (here: serverAuth). The
// CLI refuses genm cacerts and ir over coap:// and http:// and writes and prints nothing;
// pinning that very certificate with --srvcert (the operator's explicit choice) is accepted.
func TestCMPClientRefusesNonRASigner(t *testing.T) {
	ctx := context.Background()
	s, signer := hostileHouse(t, "cmp-signer", &x509.Certificate{Subject: pkix.Name{CommonName: "coapca CMP Signer"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	d := s.data.Paths
	sig := []string{"--cert", d.Device, "--key", d.DeviceKey, "--trust", d.Root, "--timeout", "20s"}
	for _, srv := range []string{s.coapURL, s.httpURL} {
		for _, tc := range []struct {
			name string
			args func(out, keyOut, caOut string) []string
		}{
			{"genm cacerts", func(out, _, _ string) []string { return []string{"cmp", "genm", "--server", srv, "--out", out} }},
			{"ir", func(out, keyOut, caOut string) []string {
				return []string{"cmp", "ir", "--server", srv, "--subject", "CN=demo-device-0001", "--key-out", keyOut, "--out", out, "--ca-out", caOut}
			}},
		} {
			t.Run(strings.SplitN(srv, ":", 2)[0]+" "+tc.name, func(t *testing.T) {
				dir := t.TempDir()
				out, keyOut, caOut := filepath.Join(dir, "out.pem"), filepath.Join(dir, "new.key"), filepath.Join(dir, "ca.pem")
				stdout, errOut, code := cli(ctx, append(tc.args(out, keyOut, caOut), sig...)...)
				if code == 0 || !strings.Contains(errOut, "neither id-kp-cmcCA nor id-kp-cmcRA") {
					t.Fatalf("exit %d, want the signer refused:\n%s", code, errOut)
				}
				if stdout != "" {
					t.Errorf("printed %q", stdout)
				}
				mustNotExist(t, out, keyOut, caOut)
			})
		}
	}
	out := filepath.Join(t.TempDir(), "cacerts.pem")
	if _, errOut, code := cli(ctx, append([]string{"cmp", "genm", "--server", s.coapURL, "--srvcert", signer, "--out", out}, sig...)...); code != 0 {
		t.Fatalf("genm with the signer pinned by --srvcert: exit %d: %s", code, errOut)
	}
	if certs, err := os.ReadFile(out); err != nil || !bytes.Contains(certs, []byte("BEGIN CERTIFICATE")) {
		t.Errorf("genm cacerts with --srvcert wrote nothing: %v", err)
	}
}

// TestCMPCAOut: --ca-out writes the validated chain of the new certificate — here anchored by
// the caPubs of an answer MAC-protected with the shared secret (RFC 9483 §4.1.5) — and is
// refused outright with --insecure, which authenticates nothing.
func TestCMPCAOut(t *testing.T) {
	ctx := context.Background()
	s := cmpTestServer(t)
	d := s.data.Paths
	dir := t.TempDir()
	mac := []string{"--server", s.coapURL, "--ref", "demo", "--secret-file", d.CMPSecret, "--subject", "CN=demo-device-0002", "--timeout", "20s"}
	caOut := filepath.Join(dir, "ca.pem")
	if _, errOut, code := cli(ctx, append([]string{"cmp", "ir", "--key-out", filepath.Join(dir, "k"), "--out", filepath.Join(dir, "c"), "--ca-out", caOut}, mac...)...); code != 0 {
		t.Fatalf("ir: exit %d: %s", code, errOut)
	}
	got, err := os.ReadFile(caOut)
	if err != nil {
		t.Fatal(err)
	}
	if want := append(certPEM(s.data.IssuingCA), certPEM(s.data.Root)...); !bytes.Equal(got, want) {
		t.Errorf("--ca-out wrote\n%s\nwant the issuing CA and the root", got)
	}
	insecureOut := filepath.Join(dir, "insecure-ca.pem")
	if _, errOut, code := cli(ctx, append([]string{"cmp", "ir", "--insecure", "--ca-out", insecureOut}, mac...)...); code == 0 || !strings.Contains(errOut, "--ca-out") {
		t.Errorf("--insecure --ca-out: exit %d: %s", code, errOut)
	}
	mustNotExist(t, insecureOut)
}

// TestExplicitTAOverEDHOC: EST-oscore with EDHOC authenticates the server with the same check
// as DTLS, so its /crts may fill the explicit TA database, which then authenticates the
// EDHOC responder on its own. The server sends its certificate alone (edhoc.credential
// x5chain-leaf, the default), so the first trust is the issuing CA.
func TestExplicitTAOverEDHOC(t *testing.T) {
	ctx := context.Background()
	s := testServer(t)
	d := s.data.Paths
	ta := filepath.Join(t.TempDir(), "ta.pem")
	dev := []string{"--server", s.coapURL, "--edhoc", "--cert", d.Device, "--key", d.DeviceKey, "--timeout", "20s"}
	if _, errOut, code := cli(ctx, append([]string{"est", "cacerts", "--trust", d.IssuingCA, "--explicit-ta", ta}, dev...)...); code != 0 {
		t.Fatalf("cacerts: exit %d: %s", code, errOut)
	}
	if got, err := os.ReadFile(ta); err != nil || !bytes.Equal(got, append(certPEM(s.data.Root), certPEM(s.data.IssuingCA)...)) {
		t.Fatalf("explicit TA database:\n%s (%v)", got, err)
	}
	if _, errOut, code := cli(ctx, append([]string{"est", "csrattrs", "--explicit-ta", ta}, dev...)...); code != 0 {
		t.Fatalf("csrattrs with the explicit TA database: exit %d: %s", code, errOut)
	}
}

// TestExplicitTABootstrapByFingerprint: RFC 7030 §4.1.1 provisional trust. Over an
// unauthenticated connection (--insecure) the explicit TA database is filled only with the root
// whose SHA-256 was compared out of band (--ta-fingerprint), and only when the server's chain
// then authenticates the server under that root — a device certificate in the server's place
// is refused although the fingerprint matches.
func TestExplicitTABootstrapByFingerprint(t *testing.T) {
	ctx := context.Background()
	d, err := datadir.Open(datadir.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	foreign := esttest.New(t)
	fp := func(c *x509.Certificate) string { sum := sha256.Sum256(c.Raw); return hex.EncodeToString(sum[:]) }
	ip := []net.IP{net.IPv4(127, 0, 0, 1)}
	mixed := []*x509.Certificate{d.IssuingCA, d.Root, foreign.Root}
	_, _, srvID := issueFromDataDir(t, d, &x509.Certificate{Subject: pkix.Name{CommonName: "est"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IPAddresses: ip})
	_, _, devID := issueFromDataDir(t, d, &x509.Certificate{Subject: pkix.Name{CommonName: "demo-device-0002"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, IPAddresses: ip})
	server, impostor := fakeESTServer(t, srvID, mixed), fakeESTServer(t, devID, mixed)
	tests := []struct {
		name, url, fingerprint, wantErr string
	}{
		{"the root compared out of band", server, fp(d.Root), ""},
		{"colons and capitals", server, strings.ToUpper(fp(d.Root)[:2] + ":" + fp(d.Root)[2:]), ""},
		{"the fingerprint of another root", server, fp(foreign.Root), "not the --ta-fingerprint"},
		{"a device certificate in the server's place", impostor, fp(d.Root), "not a server certificate"},
		{"not a fingerprint", server, "abcd", "not a SHA-256 fingerprint"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ta := filepath.Join(t.TempDir(), "ta.pem")
			_, errOut, code := cli(ctx, "est", "cacerts", "--server", tc.url, "--insecure", "--explicit-ta", ta, "--ta-fingerprint", tc.fingerprint,
				"--cert", d.Paths.Device, "--key", d.Paths.DeviceKey, "--timeout", "20s")
			if tc.wantErr == "" {
				if code != 0 {
					t.Fatalf("exit %d: %s", code, errOut)
				}
				if got, err := os.ReadFile(ta); err != nil || !bytes.Equal(got, append(certPEM(d.Root), certPEM(d.IssuingCA)...)) {
					t.Fatalf("explicit TA database:\n%s (%v)", got, err)
				}
				return
			}
			if code == 0 || !strings.Contains(errOut, tc.wantErr) {
				t.Fatalf("exit %d, want %q: %s", code, tc.wantErr, errOut)
			}
			mustNotExist(t, ta)
		})
	}
}
