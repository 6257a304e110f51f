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
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"coapca/client"
	"coapca/internal/config"
	"coapca/internal/testpki"
)

// hasRAUsages reports whether c carries id-kp-cmcRA (RFC 6402 §2.10) with serverAuth and
// clientAuth: the registrar's identity toward devices and toward its upstream.
func hasRAUsages(c *x509.Certificate) bool {
	return slices.ContainsFunc(c.UnknownExtKeyUsage, testpki.OIDCmcRA.Equal) &&
		slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageServerAuth) && slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
}

// TestCAIssueRA: `coapca ca issue-ra` certifies a separate registrar host (RFC 9148 §5) — for
// a new key or from the registrar's CSR — and the upstream CA then accepts it as an RA: it
// relays a CSR the device linked to its own session (RFC 7030 §3.7). The attack it must not
// open: an ordinary certificate of the same CA (no id-kp-cmcRA) relaying the same CSR is
// refused (403), as authority/authz_test.go ("a certificate without cmcRA claims to be an
// RA") and TestESTHTTPSRAExemption check below the front door; here through the command's
// output. Bad input (a CSR whose signature does not verify, no name, an existing file) is
// refused and writes nothing.
func TestCAIssueRA(t *testing.T) {
	s := httpsServer(t, func(c *config.Config) {
		c.Authority.Profiles = append(c.Authority.Profiles, config.Profile{Label: "via-ra", RequirePoP: true,
			Requesters: append(config.DefaultRequesters(), config.RequesterRule{Kind: "ra", From: []string{"ca"}})})
	})
	ctx := context.Background()
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	issue := func(args ...string) (string, string, int) {
		return cli(ctx, append([]string{"ca", "issue-ra", "--data", s.cfg.Data}, args...)...)
	}

	// For a new key.
	if out, errOut, code := issue("--name", "registrar.example", "--name", "192.0.2.7", "--key-out", p("new.key"), "--out", p("new.pem")); code != 0 {
		t.Fatalf("issue-ra --key-out: exit %d %s %s", code, out, errOut)
	}
	newRA, err := tls.LoadX509KeyPair(p("new.pem"), p("new.key"))
	if err != nil {
		t.Fatal(err)
	}
	// From the registrar's CSR (its key never leaves the registrar host).
	csrKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "edge-7"}}, csrKey)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(p("ra.csr"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER}), 0o600)
	if out, errOut, code := issue("--csr", p("ra.csr"), "--name", "edge-7.example", "--out", p("csr.pem")); code != 0 {
		t.Fatalf("issue-ra --csr: exit %d %s %s", code, out, errOut)
	}
	chain := readCerts(t, p("csr.pem"))
	csrRA := tls.Certificate{Certificate: [][]byte{chain[0].Raw, chain[1].Raw}, PrivateKey: csrKey, Leaf: chain[0]}

	for name, c := range map[string]*x509.Certificate{"new key": readCert(t, p("new.pem")), "from CSR": chain[0]} {
		if !hasRAUsages(c) {
			t.Errorf("%s: usages %v %v, want cmcRA, serverAuth, clientAuth", name, c.ExtKeyUsage, c.UnknownExtKeyUsage)
		}
		if _, err := c.Verify(x509.VerifyOptions{Roots: client.Pool([]*x509.Certificate{s.data.Root}),
			Intermediates: client.Pool([]*x509.Certificate{s.data.IssuingCA}), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Errorf("%s: does not chain to the CA's root: %v", name, err)
		}
	}
	if c := readCert(t, p("new.pem")); !slices.Contains(c.DNSNames, "registrar.example") || len(c.IPAddresses) != 1 {
		t.Errorf("names %v %v", c.DNSNames, c.IPAddresses)
	}

	// Bad input: refused with a clear error, nothing written.
	bad := slices.Clone(csrDER)
	bad[len(bad)-3] ^= 0xff // the signature
	os.WriteFile(p("bad.csr"), bad, 0o600)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"attack: a CSR whose signature does not verify (no proof of possession)", []string{"--csr", p("bad.csr"), "--name", "x.example", "--out", p("x.pem")}, "signature"},
		{"no name", []string{"--key-out", p("x.key"), "--out", p("x.pem")}, "--name"},
		{"both --csr and --key-out", []string{"--csr", p("ra.csr"), "--key-out", p("x.key"), "--name", "x.example", "--out", p("x.pem")}, "either"},
		{"an existing output", []string{"--key-out", p("x.key"), "--name", "x.example", "--out", p("new.pem")}, "exists"},
		{"not a name", []string{"--key-out", p("x.key"), "--name", "evil.example/path", "--out", p("x.pem")}, "neither a DNS name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, errOut, code := issue(tc.args...)
			if code == 0 || !strings.Contains(errOut, tc.want) {
				t.Fatalf("exit %d %q, want an error with %q", code, errOut, tc.want)
			}
			for _, f := range []string{p("x.pem"), p("x.key")} {
				if fileExists(f) {
					t.Fatalf("%s written", f)
				}
			}
		})
	}

	// The upstream's view: the device's CSR linked to its own session (not the RA's).
	devSession, err := client.NewHTTPS(s.estURL("via-ra"), client.HTTPSOptions{VerifyServer: client.ServerVerifier([]*x509.Certificate{s.data.Root}, "127.0.0.1", nil),
		Certificates: []tls.Certificate{*demoDevice(t, s)}})
	if err != nil {
		t.Fatal(err)
	}
	defer devSession.Close()
	cb, err := devSession.ChannelBinding(ctx)
	if err != nil {
		t.Fatal(err)
	}
	linked := b64(newCSR(t, "relayed-device", base64.StdEncoding.EncodeToString(cb)))
	_, _, notRA := issueFromDataDir(t, s.data, &x509.Certificate{Subject: pkix.Name{CommonName: "registrar.example"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}})
	for _, tc := range []struct {
		name string
		who  *tls.Certificate
		want int
	}{
		{"issue-ra for a new key relays the device's linked CSR", &newRA, 200},
		{"issue-ra from a CSR relays the device's linked CSR", &csrRA, 200},
		{"attack: an ordinary certificate of this CA (no id-kp-cmcRA) relays it as an RA", &notRA, 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := estDo(t, s, tc.who, 0, "POST", s.estURL("via-ra")+"/simpleenroll", "application/pkcs10", linked)
			if r.status != tc.want {
				t.Errorf("status %d, want %d: %s", r.status, tc.want, r.body)
			}
		})
	}
}

// TestInitRegistrar: `coapca init --registrar` creates the registrar identity up front
// (DATA/registrar.pem with id-kp-cmcRA, RFC 9148 §5), its key encrypted like the CA's, and the
// configuration it writes still loads; without --registrar there is none.
func TestInitRegistrar(t *testing.T) {
	ctx := context.Background()
	for _, withRA := range []bool{true, false} {
		work := t.TempDir()
		cfgPath, data := filepath.Join(work, "coapca.yaml"), filepath.Join(work, "data")
		args := []string{"init", "--config", cfgPath, "--data", data, "--server-name", "edge.example", "--pbkdf2-iterations", "1000"}
		if withRA {
			args = append(args, "--registrar")
		}
		out, errOut, code := cli(ctx, args...)
		if code != 0 {
			t.Fatalf("init %v: exit %d %s", args, code, errOut)
		}
		if _, err := config.Load(cfgPath); err != nil {
			t.Fatalf("the written configuration: %v", err)
		}
		reg := filepath.Join(data, "registrar.pem")
		if !withRA {
			if fileExists(reg) {
				t.Error("init without --registrar made registrar.pem")
			}
			continue
		}
		if !strings.Contains(out, reg) {
			t.Errorf("init does not name %s:\n%s", reg, out)
		}
		c := readCerts(t, reg)
		if !hasRAUsages(c[0]) || !slices.Contains(c[0].DNSNames, "edge.example") {
			t.Errorf("registrar.pem: %v %v %v", c[0].ExtKeyUsage, c[0].UnknownExtKeyUsage, c[0].DNSNames)
		}
		if !fileExists(filepath.Join(data, "private", "registrar.key")) {
			t.Error("no registrar key")
		}
	}
}
