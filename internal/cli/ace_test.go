package cli

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"coapca/ace"
	"coapca/client"
	"coapca/coap"
	"coapca/internal/config"
	"coapca/internal/pemfile"
	"coapca/internal/server"
)

// The OSCORE contexts of two clients with the AS (server's side for the AS, client's side for
// the device).
const (
	asClient1Server = "name: client-1\nmaster_secret: 11111111111111111111111111111111\nsender_id: \"a1\"\nrecipient_id: \"c1\"\n"
	asClient1Client = "master_secret: 11111111111111111111111111111111\nsender_id: \"c1\"\nrecipient_id: \"a1\"\n"
	asClient2Server = "name: client-2\nmaster_secret: 22222222222222222222222222222222\nsender_id: \"a2\"\nrecipient_id: \"c2\"\n"
	asClient2Client = "master_secret: 22222222222222222222222222222222\nsender_id: \"c2\"\nrecipient_id: \"a2\"\n"
)

// aceSetup starts `coapca as` (client-1: scope est; client-2: enroll/sensors only) and a coapca
// server that trusts its key, and returns the server, the AS URL and the clients' context files.
func aceSetup(t *testing.T) (s *served, asURL, c1, c2 string) {
	t.Helper()
	dir := t.TempDir()
	keyFile := writeFile(t, filepath.Join(dir, "rs.key"), "000102030405060708090a0b0c0d0e0f\n")
	asCfg := server.ASConfig{Listen: "127.0.0.1:0", Name: "as1", Lifetime: time.Hour,
		Audiences: []server.ASAudienceCfg{{Name: "coapca-rs", KID: "6b31", Alg: ace.AlgAESCCM16_64_128, KeyFile: keyFile}},
		Clients: []server.ASClientCfg{
			{Name: "client-1", Scope: "est", Audiences: []string{"coapca-rs"},
				OSCOREContext: writeFile(t, filepath.Join(dir, "as-c1.yaml"), asClient1Server)},
			{Name: "client-2", Scope: "enroll/sensors", Audiences: []string{"coapca-rs"},
				OSCOREContext: writeFile(t, filepath.Join(dir, "as-c2.yaml"), asClient2Server)},
		}}
	as, err := server.StartAS(context.Background(), asCfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { as.Close() })
	asURL = "coap://" + as.Addr().String() + "/token"
	s = testServerAt(t, filepath.Join(dir, "data"), func(c *config.Config) {
		c.ACE = config.ACE{Audiences: []string{"coapca-rs"}, ASURI: asURL,
			Keys: []config.ACEKey{{KID: "6b31", Alg: ace.AlgAESCCM16_64_128, KeyFile: keyFile}}}
	})
	return s, asURL, writeFile(t, filepath.Join(dir, "c1.yaml"), asClient1Client), writeFile(t, filepath.Join(dir, "c2.yaml"), asClient2Client)
}

// TestESTOSCOREACE runs the TTP picture of EST-oscore with coapca alone: the client gets a token
// from `coapca as` over OSCORE, posts it to the server's /authz-info, derives the context and
// enrolls; the audience and scope come from the AS Request Creation Hints (RFC 9200 §5.3).
// A client whose token's scope does not cover the label is refused with 4.03.
func TestESTOSCOREACE(t *testing.T) {
	s, asURL, c1, c2 := aceSetup(t)
	dir := t.TempDir()
	base := []string{"--server", s.coapURL, "--ace", asURL, "--ace-context", c1}

	if out := mustCLI(t, append([]string{"est", "cacerts"}, base...)...); strings.Count(out, "BEGIN CERTIFICATE") != 2 {
		t.Fatalf("cacerts: %s", out)
	}
	certOut := filepath.Join(dir, "c.pem")
	mustCLI(t, append([]string{"est", "enroll", "--subject", "CN=ace-device", "--key-out", filepath.Join(dir, "k.pem"), "--out", certOut}, base...)...)
	chain, err := pemfile.ReadCerts(certOut)
	if err != nil || chain[0].Subject.CommonName != "ace-device" {
		t.Fatalf("enrolled certificate: %v %v", chain, err)
	}
	out := mustCLI(t, append([]string{"est", "serverkeygen", "--subject", "CN=ace-skg", "--key-out", filepath.Join(dir, "skg.key")}, base...)...)
	if !strings.Contains(out, "BEGIN CERTIFICATE") {
		t.Fatalf("serverkeygen: %s", out)
	}

	// Attack: client-2's token grants enroll/sensors only; the default label is refused by the
	// authority (4.03), serverkeygen under sensors too, enroll under sensors is granted.
	for _, tt := range []struct {
		name string
		args []string
		ok   bool
	}{
		{"attack: label outside the scope", []string{"est", "enroll", "--server", s.coapURL, "--subject", "CN=x"}, false},
		{"attack: operation outside the scope", []string{"est", "serverkeygen", "--server", s.coapURL + "/sensors", "--subject", "CN=x",
			"--key-out", filepath.Join(dir, "x.key")}, false},
		{"in scope", []string{"est", "enroll", "--server", s.coapURL + "/sensors", "--subject", "CN=sensor-ace",
			"--key-out", filepath.Join(dir, "s.key")}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			args := append(tt.args, "--ace", asURL, "--ace-context", c2, "--audience", "coapca-rs", "--scope", "enroll/sensors")
			out, errOut, code := cli(context.Background(), args...)
			if tt.ok != (code == 0) {
				t.Fatalf("exit %d: %s%s", code, out, errOut)
			}
			if !tt.ok && !strings.Contains(errOut, "4.03") {
				t.Fatalf("want 4.03: %s", errOut)
			}
		})
	}
	// Attack: a client asking the AS for more than it is registered for gets no token.
	_, errOut, code := cli(context.Background(), "est", "enroll", "--server", s.coapURL, "--subject", "CN=y",
		"--ace", asURL, "--ace-context", c2, "--audience", "coapca-rs", "--scope", "est")
	if code == 0 || !strings.Contains(errOut, "refused the token request") {
		t.Fatalf("wider scope than registered: exit %d: %s", code, errOut)
	}
}

// TestACEDiscoveryAndHints: discovery lists /authz-info, and an unprotected request for an
// EST-oscore resource gets 4.01 with the AS Request Creation Hints (RFC 9200 §5.3).
func TestACEDiscoveryAndHints(t *testing.T) {
	s, asURL, _, _ := aceSetup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := coap.Dial(ctx, s.coapURL, coap.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, err := c.Do(ctx, &coap.ClientRequest{Method: codes.GET, Path: "/.well-known/core"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(resp.Payload), "</authz-info>") {
		t.Fatalf("discovery lacks /authz-info: %s", resp.Payload)
	}
	resp, err = c.Do(ctx, &coap.ClientRequest{Method: codes.POST, Path: "/.well-known/est/sen", Payload: []byte("csr")})
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := resp.ContentFormat.Get()
	h, herr := ace.ParseCreationHints(resp.Payload)
	if resp.Code != codes.Unauthorized || cf != ace.ContentFormatACECBOR || herr != nil ||
		h.AS != asURL || h.Audience != "coapca-rs" || h.Scope != "est" {
		t.Fatalf("unprotected /sen: %v cf %d %+v %v", resp.Code, cf, h, herr)
	}
	// Attack: a garbage token at /authz-info is 4.01, a malformed body 4.00.
	for _, tt := range []struct {
		body []byte
		want codes.Code
	}{
		{(&ace.AuthzInfoRequest{AccessToken: []byte{0xd0, 0x83, 0x40, 0xa0, 0x40}, Nonce1: []byte{1}, ClientRecipientID: []byte{1}}).Marshal(), codes.Unauthorized},
		{[]byte{0xa0}, codes.BadRequest},
	} {
		resp, err := c.Do(ctx, &coap.ClientRequest{Method: codes.POST, Path: "/authz-info",
			ContentFormat: coap.CF(ace.ContentFormatACECBOR), Payload: tt.body})
		if err != nil || resp.Code != tt.want {
			t.Fatalf("/authz-info %x: %v %v, want %v", tt.body, resp, err, tt.want)
		}
	}
}

// TestACEReRequestOn401: when the server drops the client's context (here: the same client
// posted a newer token from elsewhere, which supersedes the old one), the next request gets
// 4.01 and the client gets a new token and repeats it.
func TestACEReRequestOn401(t *testing.T) {
	s, asURL, c1, _ := aceSetup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// One OSCORE context with the AS, shared: two instances of one sender context would reuse
	// sequence numbers.
	asCtx, err := loadClientOSCORE(c1)
	if err != nil {
		t.Fatal(err)
	}
	dial := func() (*client.ACEClient, *client.EST) {
		ac, err := client.NewACEClient(client.ACEConfig{AS: asURL, ASContext: asCtx})
		if err != nil {
			t.Fatal(err)
		}
		conn, err := client.DialEST(ctx, s.coapURL, client.ESTDialOptions{ACE: ac})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return ac, client.NewEST(conn.Client, client.ESTOptions{})
	}
	enroll := func(e *client.EST, cn string) {
		t.Helper()
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.Enroll(ctx, csr); err != nil {
			t.Fatal(err)
		}
	}
	first, e1 := dial()
	enroll(e1, "first")
	second, e2 := dial()
	enroll(e2, "second") // supersedes first's context at the server
	enroll(e1, "first-again")
	if w := first.Wire(); w.Tokens != 2 {
		t.Fatalf("first client fetched %d tokens, want 2 (a new one after the 4.01)", w.Tokens)
	}
	if w := second.Wire(); w.Tokens != 1 {
		t.Fatalf("second client fetched %d tokens", w.Tokens)
	}
}

// TestESTOSCOREACESigned: tokens signed by the AS (COSE_Sign1, ES256) and encrypted for the
// resource server (nested in COSE_Encrypt0): the server holds the AS's public key and the
// encryption key, and the whole flow enrolls.
func TestESTOSCOREACESigned(t *testing.T) {
	dir := t.TempDir()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p8, _ := x509.MarshalPKCS8PrivateKey(priv)
	pub, _ := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	privFile := writeFile(t, filepath.Join(dir, "as-sign.pem"), string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8})))
	pubFile := writeFile(t, filepath.Join(dir, "as-sign.pub"), string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})))
	encFile := writeFile(t, filepath.Join(dir, "rs-enc.key"), "0f0e0d0c0b0a09080706050403020100\n")
	asCfg := server.ASConfig{Listen: "127.0.0.1:0", Name: "as1",
		Audiences: []server.ASAudienceCfg{{Name: "coapca-rs", KID: "7331", Alg: ace.AlgES256, KeyFile: privFile,
			EncKID: "6532", EncKeyFile: encFile}},
		Clients: []server.ASClientCfg{{Name: "client-1", Scope: "est", Audiences: []string{"coapca-rs"},
			OSCOREContext: writeFile(t, filepath.Join(dir, "as-c1.yaml"), asClient1Server)}}}
	as, err := server.StartAS(context.Background(), asCfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { as.Close() })
	s := testServerAt(t, filepath.Join(dir, "data"), func(c *config.Config) {
		c.ACE = config.ACE{Audiences: []string{"coapca-rs"}, Keys: []config.ACEKey{
			{KID: "7331", Alg: ace.AlgES256, KeyFile: pubFile, Issuer: "as1"},
			{KID: "6532", Alg: ace.AlgAESCCM16_64_128, KeyFile: encFile, Issuer: "as1"}}}
	})
	c1 := writeFile(t, filepath.Join(dir, "c1.yaml"), asClient1Client)
	mustCLI(t, "est", "enroll", "--server", s.coapURL, "--ace", "coap://"+as.Addr().String()+"/token", "--ace-context", c1,
		"--audience", "coapca-rs", "--subject", "CN=signed-token")
}

// TestASCommand: `coapca as` refuses bad configurations before it listens (a MAC-only audience
// would put the Master Secret on the wire in the clear), and runs until cancelled with a good
// one.
func TestASCommand(t *testing.T) {
	dir := t.TempDir()
	key := writeFile(t, filepath.Join(dir, "k"), "000102030405060708090a0b0c0d0e0f\n")
	c1 := writeFile(t, filepath.Join(dir, "c1.yaml"), asClient1Server)
	good := "listen: 127.0.0.1:0\nname: as1\naudiences:\n  - {name: rs, kid: \"01\", alg: 10, key_file: " + key +
		"}\nclients:\n  - {name: client-1, scope: est, audiences: [rs], oscore_context: " + c1 + "}\n"
	for _, tt := range []struct {
		name, yaml, want string
		code             int
	}{
		{"unknown field", good + "bogus: 1\n", "bogus", 1},
		{"MAC audience without encryption key", strings.Replace(good, "alg: 10", "alg: 4", 1), "must be encrypted", 1},
		{"client without context", strings.Replace(good, ", oscore_context: "+c1, "", 1), "oscore_context is required", 1},
		{"unknown audience", strings.Replace(good, "audiences: [rs]", "audiences: [other]", 1), "unknown audience", 1},
		{"bad scope", strings.Replace(good, "scope: est", "scope: revoke", 1), "unknown operation", 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := writeFile(t, filepath.Join(t.TempDir(), "as.yaml"), tt.yaml)
			_, errOut, code := cli(context.Background(), "as", "--config", f)
			if code != tt.code || !strings.Contains(errOut, tt.want) {
				t.Fatalf("exit %d: %s, want %d mentioning %q", code, errOut, tt.code, tt.want)
			}
		})
	}
	if _, errOut, code := cli(context.Background(), "as"); code != 2 {
		t.Fatalf("no --config: exit %d %s", code, errOut)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	var out string
	go func() {
		var code int
		out, _, code = cli(ctx, "as", "--config", writeFile(t, filepath.Join(dir, "as.yaml"), good))
		done <- code
	}()
	cancel()
	if code := <-done; code != 0 || !strings.Contains(out, "token endpoint coap://127.0.0.1:") {
		t.Fatalf("exit %d: %s", code, out)
	}
}
