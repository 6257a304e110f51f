package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"coapca/authority"
	"coapca/client"
	"coapca/est"
	"coapca/est/cms"
	"coapca/internal/config"
	"coapca/internal/datadir"
	"coapca/internal/testpki"
)

// registrarPair starts two coapca processes' worth of servers on loopback: an upstream CA with
// EST over HTTPS (`serve --https`) that trusts the registrar's CA as a store of RAs (an ra rule
// in every profile, so it accepts the registrar's relayed PoP, RFC 7030 §3.7), and a registrar
// (`serve --upstream https://… --upstream-trust CA.pem`) whose identity DATA/registrar.pem
// carries id-kp-cmcRA. trust is a PEM file with both roots: the registrar's (its DTLS and, with its issuing CA, EDHOC
// certificate) and the upstream's (the issued certificates).
func registrarPair(t *testing.T, caTweak func(*config.Config), regTweak ...func(*config.Config)) (ca, reg *served, trust string) {
	t.Helper()
	regDir := t.TempDir()
	// The registrar's data directory first: the upstream must trust its CA.
	if _, err := datadir.Open(datadir.Options{Dir: regDir, Registrar: true}); err != nil {
		t.Fatal(err)
	}
	ra := []config.RequesterRule{{Kind: "ra", From: []string{"registrars"}}}
	ca = testServerAt(t, t.TempDir(), func(c *config.Config) {
		c.Listen.HTTPS = "127.0.0.1:0"
		c.Listen.CoAPS, c.Listen.CoAP = "", ""
		c.Authority.TrustStores = []config.TrustStore{{Name: "registrars", CertsFile: filepath.Join(regDir, "ca.pem")}}
		c.Authority.Profiles = []config.Profile{
			{Label: "", Requesters: ra},
			{Label: "manual", ManualApproval: true, RetryAfter: time.Second, Requesters: ra},
			{Label: "pop", RequirePoP: true, Requesters: ra},
			{Label: "sensors", Requesters: ra},
		}
		if caTweak != nil {
			caTweak(c)
		}
	})
	reg = testServerAt(t, regDir, append([]func(*config.Config){func(c *config.Config) {
		c.Upstream = config.Upstream{URL: "https://" + ca.httpsAddr, Trust: ca.data.Paths.Root}
	}}, regTweak...)...)
	trust = filepath.Join(t.TempDir(), "trust.pem")
	// The registrar's issuing CA too: its EDHOC message_2 carries the leaf alone
	// (edhoc.credential x5chain-leaf, the default).
	b := append(append(certPEM(reg.data.Root), certPEM(reg.data.IssuingCA)...), certPEM(ca.data.Root)...)
	if err := os.WriteFile(trust, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return ca, reg, trust
}

// TestRegistrarOurClient: our EST-coaps client (and EST-oscore, EDHOC and pre-shared) → coapca registrar
// → coapca EST over HTTPS CA: enroll with PoP linking, re-enroll with the certificate the
// upstream issued, server-generated keys plain and CMS-encrypted (280, opened only by the
// device), a request the registrar refuses, pending with approval on the upstream.
func TestRegistrarOurClient(t *testing.T) {
	dir := t.TempDir()
	kekFile := filepath.Join(dir, "factory.kek")
	if err := os.WriteFile(kekFile, []byte("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srvCtx := writeFile(t, filepath.Join(dir, "sensor-17.yaml"), pskServerYAML)
	cliCtx := writeFile(t, filepath.Join(dir, "client.yaml"), pskClientYAML)
	ca, reg, trust := registrarPair(t, func(c *config.Config) {
		c.EST.ServerKeygenKEKs = []config.KEK{{ID: "6b656b2d31", KeyFile: kekFile}} // "kek-1"
	}, func(c *config.Config) { c.OSCOREContexts = []string{srvCtx} })
	ctx := context.Background()
	d := reg.data.Paths
	idevid := []string{"--cert", d.Device, "--key", d.DeviceKey, "--trust", trust}
	est := func(args ...string) string {
		t.Helper()
		out, errOut, code := cli(ctx, append([]string{"est"}, args...)...)
		if code != 0 {
			t.Fatalf("coapca est %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
		return errOut
	}

	// RFC 9148 §10.2: a device using its implicit TA database sees id-kp-cmcRA in the
	// registrar's DTLS server certificate.
	devID := reg.data.DeviceCertificate()
	conn, err := client.DialEST(ctx, reg.coapsURL, client.ESTDialOptions{Identity: &devID, VerifyServer: client.ParseChain})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ChannelBinding(ctx); err != nil {
		t.Fatal(err)
	}
	if sc := conn.ServerChain(); len(sc) == 0 || !slices.ContainsFunc(sc[0].UnknownExtKeyUsage, func(o asn1.ObjectIdentifier) bool {
		return o.Equal(testpki.OIDCmcRA)
	}) {
		t.Fatalf("the registrar's DTLS certificate lacks id-kp-cmcRA")
	}
	conn.Close()

	// /crts answers the upstream's CA certificates, not the registrar's.
	caOut := filepath.Join(dir, "crts.pem")
	est(append([]string{"cacerts", "--server", reg.url(""), "--out", caOut}, idevid...)...)
	if got := readCerts(t, caOut); len(got) != 2 || !got[1].Equal(ca.data.Root) {
		t.Fatalf("/crts through the registrar: %d certificates, want the upstream's chain", len(got))
	}

	// Enrollment with PoP linking: the registrar checks the device's tls-unique, the upstream
	// (which sees the registrar's session) accepts it from an RA.
	ldevid, ldevidKey := filepath.Join(dir, "ldevid.pem"), filepath.Join(dir, "ldevid.key")
	est(append([]string{"enroll", "--server", reg.url("pop"), "--pop", "--subject", "CN=demo-device-0001",
		"--key-out", ldevidKey, "--out", ldevid}, idevid...)...)
	cert := readCert(t, ldevid)
	if !bytes.Equal(cert.RawIssuer, ca.data.IssuingCA.RawSubject) {
		t.Fatalf("issued by %v, want the upstream CA", cert.Issuer)
	}
	// The upstream recorded it as an RA's request over HTTPS; the registrar's store has nothing.
	recs, err := ca.auth.ListCertificates(ctx, authority.CertFilter{})
	if err != nil || len(recs) != 1 || recs[0].Transport != authority.TransportHTTPS || !strings.HasPrefix(recs[0].RequesterRef, "ra:") {
		t.Fatalf("upstream records %+v %v", recs, err)
	}
	if local, _ := reg.auth.ListCertificates(ctx, authority.CertFilter{}); len(local) != 0 {
		t.Fatalf("the registrar issued %d certificates itself", len(local))
	}

	// Re-enrollment with the upstream's certificate (the registrar learned the upstream CA).
	renewed, renewedKey := filepath.Join(dir, "renewed.pem"), filepath.Join(dir, "renewed.key")
	est("reenroll", "--server", reg.url(""), "--trust", trust, "--cert", ldevid, "--key", ldevidKey,
		"--block-size", "64", "--key-out", renewedKey, "--out", renewed)
	if rc := readCert(t, renewed); rc.Subject.String() != cert.Subject.String() || rc.SerialNumber.Cmp(cert.SerialNumber) == 0 {
		t.Fatalf("renewed %v from %v", rc.Subject, cert.Subject)
	}
	// Attack: the upstream's certificate renewing into another name is refused by the registrar
	// (4.03) and never relayed.
	if _, errOut, code := cli(ctx, "est", "reenroll", "--server", reg.url(""), "--trust", trust, "--cert", renewed,
		"--key", renewedKey, "--subject", "CN=someone-else"); code == 0 || !strings.Contains(errOut, "4.03") {
		t.Fatalf("re-enrollment into another name: exit %d %s", code, errOut)
	}

	// Server-generated keys: PKCS#8 (284), and CMS-encrypted under a KEK the device and the CA
	// share (280): the registrar relays a blob it cannot open.
	for _, extra := range [][]string{nil, {"--encrypt-key", kekFile, "--encrypt-key-id", "6b656b2d31"}} {
		keyOut, certOut := filepath.Join(dir, "sk.key"), filepath.Join(dir, "sk.pem")
		errOut := est(append(append([]string{"serverkeygen", "--server", reg.url("sensors"), "--subject", "CN=sensor-7",
			"--key-out", keyOut, "--out", certOut}, idevid...), extra...)...)
		if extra != nil && !strings.Contains(errOut, "CMS-encrypted (280)") {
			t.Errorf("encrypted serverkeygen: %s", errOut)
		}
		os.Remove(keyOut)
	}

	// EST-oscore with EDHOC (the device's certificate) through the same registrar.
	oscOut := filepath.Join(dir, "osc.pem")
	est(append([]string{"enroll", "--server", reg.coapURL, "--edhoc", "--subject", "CN=demo-device-0001",
		"--key-out", filepath.Join(dir, "osc.key"), "--out", oscOut}, idevid...)...)
	if c := readCert(t, oscOut); !bytes.Equal(c.RawIssuer, ca.data.IssuingCA.RawSubject) {
		t.Fatalf("EST-oscore through the registrar: issued by %v", c.Issuer)
	}

	// EST-oscore with a pre-shared context, at block size 64.
	pskOut := filepath.Join(dir, "psk.pem")
	est("enroll", "--server", reg.coapURL+"/sensors", "--oscore", cliCtx, "--trust", trust, "--subject", "CN=psk-device",
		"--block-size", "64", "--key-out", filepath.Join(dir, "psk.key"), "--out", pskOut)
	if c := readCert(t, pskOut); !bytes.Equal(c.RawIssuer, ca.data.IssuingCA.RawSubject) || c.Subject.CommonName != "psk-device" {
		t.Fatalf("pre-shared EST-oscore through the registrar: %v from %v", c.Subject, c.Issuer)
	}

	// Pending on the upstream (manual approval): 5.03 + Max-Age, then approved on the upstream.
	csr := filepath.Join(dir, "csr.der")
	makeCSR(t, csr, "CN=demo-device-0001")
	enroll := func(wait string) (string, int) {
		_, errOut, code := cli(ctx, append([]string{"est", "enroll", "--server", reg.url("manual"), "--csr", csr,
			"--wait", wait, "--out", filepath.Join(dir, "manual.pem")}, idevid...)...)
		return errOut, code
	}
	if errOut, code := enroll("0s"); code == 0 || !strings.Contains(errOut, "pending") {
		t.Fatalf("enroll under manual: exit %d %s", code, errOut)
	}
	pend := listPending(t, ca.cfg.Data)
	if len(pend) != 1 {
		t.Fatalf("%d pending requests on the upstream, want 1", len(pend))
	}
	if out, errOut, code := cli(ctx, "ca", "approve", pend[0], "--data", ca.cfg.Data); code != 0 {
		t.Fatalf("ca approve: %s %s", out, errOut)
	}
	if errOut, code := enroll("30s"); code != 0 {
		t.Fatalf("enroll after approval: %s", errOut)
	}

	// The registrar's metrics per upstream.
	resp, err := http.Get("http://" + reg.metricsAddr.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`coapca_upstream_requests_total{operation="simpleenroll",result="ok",upstream="` + ca.httpsAddr + `"}`,
		`coapca_upstream_requests_total{operation="simpleenroll",result="pending"`,
		`coapca_upstream_request_duration_seconds_bucket{operation="serverkeygen"`} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("registrar metrics lack %s", want)
		}
	}
}

// TestRegistrarLibcoap: libcoap's coap-client (OpenSSL and GnuTLS builds) as the device →
// coapca registrar → coapca EST over HTTPS CA, at block sizes 64 and 1024: discovery answered
// by the registrar, /crts, /sen, /sren (with the upstream's certificate as the DTLS client
// identity), /skg (284, and 280 relayed unopened), /att, pending with approval, and one run
// with datagrams lost.
func TestRegistrarLibcoap(t *testing.T) {
	need(t, "coap-client-openssl", "coap-client-gnutls", "openssl")
	dir := t.TempDir()
	kek := bytes.Repeat([]byte{7}, 32)
	kekFile := filepath.Join(dir, "kek")
	if err := os.WriteFile(kekFile, kek, 0o600); err != nil {
		t.Fatal(err)
	}
	ca, reg, _ := registrarPair(t, func(c *config.Config) {
		c.EST.ServerKeygenKEKs = []config.KEK{{ID: "6b656b2d31", KeyFile: kekFile}}
	})
	d := reg.data.Paths
	for _, bin := range []string{"coap-client-openssl", "coap-client-gnutls"} {
		for _, bs := range []string{"64", "1024"} {
			t.Run(bin+"/block-"+bs, func(t *testing.T) {
				work := t.TempDir()
				coap := func(cert, key string, args ...string) string {
					base := []string{"-B", "30", "-b", bs, "-c", cert, "-j", key, "-C", d.Root}
					return mustRun(t, bin, append(base, args...)...)
				}
				dev := func(args ...string) string { return coap(d.Device, d.DeviceKey, args...) }

				links := dev("-m", "get", reg.coapsURL+"/.well-known/core?rt=ace.est*")
				for _, fn := range []string{"crts", "sen", "sren", "att", "skg", "skc"} {
					if !strings.Contains(links, fmt.Sprintf(`</.well-known/est/%s>;rt="ace.est.%s"`, fn, fn)) {
						t.Errorf("the registrar's discovery lacks /%s: %s", fn, links)
					}
				}

				crts := filepath.Join(work, "crts.p7")
				dev("-m", "get", "-A", "281", "-o", crts, reg.coapsURL+"/.well-known/est/crts")
				chain := filepath.Join(work, "chain.pem")
				printed := mustRun(t, "openssl", "pkcs7", "-inform", "DER", "-in", crts, "-print_certs", "-out", chain)
				_ = printed
				if got := readCerts(t, chain); len(got) != 2 || !got[1].Equal(ca.data.Root) {
					t.Fatalf("/crts: %d certificates, not the upstream's chain", len(got))
				}

				key, csr := filepath.Join(work, "dev.key"), filepath.Join(work, "csr.der")
				mustRun(t, "openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
					"-keyout", key, "-subj", "/CN=demo-device-0001", "-outform", "DER", "-out", csr)
				p7, certFile := filepath.Join(work, "cert.p7"), filepath.Join(work, "cert.pem")
				dev("-m", "post", "-t", "286", "-f", csr, "-o", p7, reg.coapsURL+"/.well-known/est/sen")
				mustRun(t, "openssl", "pkcs7", "-inform", "DER", "-in", p7, "-print_certs", "-out", certFile)
				if out := mustRun(t, "openssl", "verify", "-CAfile", ca.data.Paths.Root, "-untrusted", chain, certFile); !strings.Contains(out, "OK") {
					t.Fatalf("openssl verify: %s", out)
				}

				// /sren: the upstream's certificate is now the device's DTLS identity.
				key2, csr2 := filepath.Join(work, "dev2.key"), filepath.Join(work, "csr2.der")
				mustRun(t, "openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
					"-keyout", key2, "-subj", "/CN=demo-device-0001", "-outform", "DER", "-out", csr2)
				p7b := filepath.Join(work, "renewed.p7")
				coap(certFile, key, "-m", "post", "-t", "286", "-f", csr2, "-o", p7b, reg.coapsURL+"/.well-known/est/sren")
				mustRun(t, "openssl", "pkcs7", "-inform", "DER", "-in", p7b, "-print_certs")

				// /skg with 284.
				mp := filepath.Join(work, "skg.cbor")
				dev("-m", "post", "-t", "286", "-A", "62", "-f", csr, "-o", mp, reg.coapsURL+"/.well-known/est/skg")
				raw, _ := os.ReadFile(mp)
				parts, err := est.ParseMultipart(raw)
				if err != nil || len(parts) != 2 || parts[0].ContentFormat != est.CFPKCS8 || parts[1].ContentFormat != est.CFPKCS7CertsOnly {
					t.Fatalf("/skg through the registrar: %v %+v", err, parts)
				}
				// /skg with 280: a CSR naming the shared KEK; the answer opens with it.
				encCSR := filepath.Join(work, "enc.der")
				der, err := est.CreateCSRWithAttributes(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "demo-device-0001"}},
					testpki.NewKey(t), []est.Attribute{est.DecryptKeyIdentifierAttribute([]byte("kek-1"))})
				if err != nil {
					t.Fatal(err)
				}
				os.WriteFile(encCSR, der, 0o600)
				dev("-m", "post", "-t", "286", "-A", "62", "-f", encCSR, "-o", mp, reg.coapsURL+"/.well-known/est/skg")
				raw, _ = os.ReadFile(mp)
				parts, err = est.ParseMultipart(raw)
				if err != nil || len(parts) != 2 || parts[0].ContentFormat != est.CFPKCS7ServerKey {
					t.Fatalf("/skg 280 through the registrar: %v %+v", err, parts)
				}
				if _, err := est.DecryptServerKey(parts[0].Body, cms.Decrypter{KEK: func(id []byte) []byte {
					if string(id) == "kek-1" {
						return kek
					}
					return nil
				}}); err != nil {
					t.Fatalf("the relayed 280 key does not open with the device's KEK: %v", err)
				}

				att := filepath.Join(work, "att.der")
				dev("-m", "get", "-A", "285", "-o", att, reg.coapsURL+"/.well-known/est/att")
				if b, _ := os.ReadFile(att); len(b) == 0 {
					t.Error("/att through the registrar is empty")
				}

				// Pending on the upstream: 5.03 (Max-Age) until approved there.
				mcsr := filepath.Join(work, "m.der")
				mustRun(t, "openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
					"-keyout", filepath.Join(work, "m.key"), "-subj", "/CN=demo-device-0001/OU="+bs+bin, "-outform", "DER", "-out", mcsr)
				if out, _ := run(t, 60*time.Second, bin, "-B", "10", "-b", bs, "-c", d.Device, "-j", d.DeviceKey, "-C", d.Root,
					"-m", "post", "-t", "286", "-f", mcsr, reg.coapsURL+"/.well-known/est/manual/sen"); !strings.Contains(out, "5.03") {
					t.Fatalf("pending through the registrar: %q, want 5.03", out)
				}
				pend := listPending(t, ca.cfg.Data)
				for _, id := range pend {
					cli(context.Background(), "ca", "approve", id, "--data", ca.cfg.Data)
				}
				mp7 := filepath.Join(work, "m.p7")
				dev("-m", "post", "-t", "286", "-f", mcsr, "-o", mp7, reg.coapsURL+"/.well-known/est/manual/sen")
				mustRun(t, "openssl", "pkcs7", "-inform", "DER", "-in", mp7, "-print_certs")
			})
		}
	}
	// Loss: libcoap drops datagrams it sends (RFC 7252 retransmission and DTLS flight resends
	// recover). A fixed list (the 2nd, 4th and 7th datagram) rather than `-l 20%`, so the run
	// cannot fail by chance.
	t.Run("loss", func(t *testing.T) {
		work := t.TempDir()
		key, csr, p7 := filepath.Join(work, "k"), filepath.Join(work, "csr.der"), filepath.Join(work, "c.p7")
		mustRun(t, "openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
			"-keyout", key, "-subj", "/CN=demo-device-0001", "-outform", "DER", "-out", csr)
		mustRun(t, "coap-client-openssl", "-B", "90", "-b", "64", "-l", "2,4,7", "-c", d.Device, "-j", d.DeviceKey, "-C", d.Root,
			"-m", "post", "-t", "286", "-f", csr, "-o", p7, reg.coapsURL+"/.well-known/est/sen")
		mustRun(t, "openssl", "pkcs7", "-inform", "DER", "-in", p7, "-print_certs")
	})
	// Random loss, `-l 20%` (issue 11 item 6): libcoap drops each datagram it sends with
	// probability 0.2, DTLS flights and CoAP messages alike (the server's datagrams arrive).
	// libcoap 4.3.1's coap-client has no flag for its retransmission budget (-r means TCP), and
	// it spends that budget (MAX_RETRANSMIT = 4, RFC 7252 §4.8) twice:
	//   - the DTLS handshake fails after more than 4 timeouts in all (coap_dtls_handle_timeout
	//     counts session->dtls_timeout_count over the whole handshake, not per flight). The
	//     client sends three flights (ClientHello, ClientHello with the cookie of the server's
	//     HelloVerifyRequest, RFC 6347 §4.2.1, and certificate..Finished in at most 3
	//     datagrams); the number of lost flight transmissions is a sum of geometric variables
	//     and P(≥5) ≤ 0.050 (0.0047 when the last flight is one datagram);
	//   - a confirmable message is given up after 5 transmissions lost: 0.2^5 = 3.2e-4 per
	//     exchange, here ≤ 3 (block size 1024: the CSR in one, the answer in ≤ 2).
	// What the server does keeps it to that: duplicates are answered from its exchange cache
	// and a slow upstream answer goes as a separate response (empty ACK first), so no
	// retransmission is spent waiting. No deadline adds a failure: -B 240 exceeds the slowest
	// run that still succeeds (DTLS timers 1+2+4+8 = 15 s, then each of ≤ 3 exchanges at most
	// 45 s of RFC 7252 backoff, ACK_TIMEOUT 2 s × ACK_RANDOM_FACTOR 1.5 × (1+2+4+8): 150 s).
	// So one coap-client run fails with P ≤ 0.050 + 3 × 3.2e-4 < 0.052 — which is why a single
	// run is luck — and the device retries, as a device does when its CoAP layer gives up:
	// with 4 independent runs (each a new DTLS session) the test fails with
	// P < 0.052^4 ≈ 7.3e-6.
	t.Run("loss-20%", func(t *testing.T) {
		work := t.TempDir()
		key, csr, p7 := filepath.Join(work, "k"), filepath.Join(work, "csr.der"), filepath.Join(work, "c.p7")
		mustRun(t, "openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
			"-keyout", key, "-subj", "/CN=demo-device-0001", "-outform", "DER", "-out", csr)
		const attempts = 4
		for i := 1; ; i++ {
			os.Remove(p7)
			out, err := run(t, 270*time.Second, "coap-client-openssl", "-B", "240", "-b", "1024", "-l", "20%", "-c", d.Device, "-j", d.DeviceKey,
				"-C", d.Root, "-m", "post", "-t", "286", "-f", csr, "-o", p7, reg.coapsURL+"/.well-known/est/sen")
			if b, _ := os.ReadFile(p7); err == nil && len(b) > 0 {
				break
			}
			if i == attempts {
				t.Fatalf("%d runs of coap-client with 20%% loss failed; the last: %v\n%s", attempts, err, out)
			}
			t.Logf("run %d of coap-client with 20%% loss failed (P < 0.052): %v\n%s", i, err, out)
		}
		mustRun(t, "openssl", "pkcs7", "-inform", "DER", "-in", p7, "-print_certs")
	})
}

// TestRegistrarGlobalSignUpstream: libcoap (OpenSSL and GnuTLS builds, blocks 64 and 1024) →
// coapca registrar → globalsign/est v1.0.6 `estserver` (a third-party EST server with a mock
// CA, built in a throwaway module) that authenticates the registrar by its TLS client
// certificate: /crts, /sen, /skg (284), /att, and /sren refused by globalsign (no RA
// policy there) reaching the device as 4.03 without globalsign's text. Pending has no counterpart there (its mock CA
// answers at once).
func TestRegistrarGlobalSignUpstream(t *testing.T) {
	need(t, "coap-client-openssl", "coap-client-gnutls", "openssl")
	if testing.Short() {
		t.Skip("-short: builds globalsign/est")
	}
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	_, estserver := globalsignTools(t, p("gs"))
	regDir := t.TempDir()
	regData, err := datadir.Open(datadir.Options{Dir: regDir, Registrar: true})
	if err != nil {
		t.Fatal(err)
	}
	// The upstream's CA and TLS certificate, made by openssl.
	mustRun(t, "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", p("gsca.key"),
		"-subj", "/CN=gs upstream CA", "-days", "2", "-out", p("gsca.pem"), "-addext", "basicConstraints=critical,CA:TRUE",
		"-addext", "keyUsage=critical,keyCertSign,cRLSign")
	mustRun(t, "openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", p("gssrv.key"),
		"-subj", "/CN=127.0.0.1", "-out", p("gssrv.csr"))
	os.WriteFile(p("srv.ext"), []byte("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n"), 0o644)
	mustRun(t, "openssl", "x509", "-req", "-in", p("gssrv.csr"), "-CA", p("gsca.pem"), "-CAkey", p("gsca.key"), "-CAcreateserial",
		"-days", "2", "-extfile", p("srv.ext"), "-out", p("gssrv.pem"))
	port := freeTCPPort(t)
	cfg := fmt.Sprintf(`{"mock_ca":{"certificates":%q,"private_key":%q},"tls":{"listen_address":"127.0.0.1:%d","certificates":%q,"private_key":%q,"client_cas":[%q]},"allowed_hosts":["127.0.0.1"],"rate_limit":0,"timeout":30}`,
		p("gsca.pem"), p("gsca.key"), port, p("gssrv.pem"), p("gssrv.key"), regData.Paths.Root)
	os.WriteFile(p("gs.json"), []byte(cfg), 0o644)
	srv := exec.Command(estserver, "-config", p("gs.json"))
	var srvLog strings.Builder
	srv.Stdout, srv.Stderr = &srvLog, &srvLog
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	waitUntil(t, 30*time.Second, "estserver to listen", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	reg := testServerAt(t, regDir, func(c *config.Config) {
		c.Upstream = config.Upstream{URL: "https://" + addr, Trust: p("gsca.pem")}
	})
	d := reg.data.Paths
	gsRoot := readCert(t, p("gsca.pem"))
	for _, bin := range []string{"coap-client-openssl", "coap-client-gnutls"} {
		for _, bs := range []string{"64", "1024"} {
			t.Run(bin+"/block-"+bs, func(t *testing.T) {
				work := t.TempDir()
				dev := func(args ...string) string {
					out, err := run(t, 60*time.Second, bin, append([]string{"-B", "30", "-b", bs, "-c", d.Device, "-j", d.DeviceKey, "-C", d.Root}, args...)...)
					if err != nil {
						t.Fatalf("%s %v: %v\n%s\nestserver log:\n%s", bin, args, err, out, srvLog.String())
					}
					return out
				}
				crts := filepath.Join(work, "crts.p7")
				dev("-m", "get", "-A", "281", "-o", crts, reg.coapsURL+"/.well-known/est/crts")
				mustRun(t, "openssl", "pkcs7", "-inform", "DER", "-in", crts, "-print_certs", "-out", filepath.Join(work, "crts.pem"))
				if got := readCerts(t, filepath.Join(work, "crts.pem")); len(got) != 1 || !got[0].Equal(gsRoot) {
					t.Fatalf("/crts: not globalsign's CA (%d certificates)", len(got))
				}
				key, csr, p7 := filepath.Join(work, "k"), filepath.Join(work, "csr.der"), filepath.Join(work, "c.p7")
				mustRun(t, "openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
					"-keyout", key, "-subj", "/CN=demo-device-0001", "-outform", "DER", "-out", csr)
				dev("-m", "post", "-t", "286", "-f", csr, "-o", p7, reg.coapsURL+"/.well-known/est/sen")
				certFile := filepath.Join(work, "c.pem")
				mustRun(t, "openssl", "pkcs7", "-inform", "DER", "-in", p7, "-print_certs", "-out", certFile)
				if out := mustRun(t, "openssl", "verify", "-CAfile", p("gsca.pem"), certFile); !strings.Contains(out, "OK") {
					t.Fatalf("openssl verify: %s", out)
				}
				// /sren with globalsign's certificate as the device's DTLS identity: the registrar
				// admits it (globalsign's CA, learned from /cacerts) and relays; globalsign's server
				// has no RA policy and compares the CSR with the registrar's own TLS certificate,
				// so it refuses. The device gets 4.03 (RFC 8075 §7) without globalsign's text.
				out, _ := run(t, 60*time.Second, bin, "-B", "30", "-b", bs, "-c", certFile, "-j", key, "-C", d.Root,
					"-m", "post", "-t", "286", "-f", csr, reg.coapsURL+"/.well-known/est/sren")
				if !strings.Contains(out, "4.03") || !strings.Contains(out, "upstream CA answered /simplereenroll with 403") ||
					strings.Contains(out, "SubjectAltName") {
					t.Fatalf("/sren through the registrar to globalsign: %q", out)
				}
				mp := filepath.Join(work, "skg.cbor")
				dev("-m", "post", "-t", "286", "-A", "62", "-f", csr, "-o", mp, reg.coapsURL+"/.well-known/est/skg")
				raw, _ := os.ReadFile(mp)
				parts, err := est.ParseMultipart(raw)
				if err != nil || len(parts) != 2 || parts[0].ContentFormat != est.CFPKCS8 {
					t.Fatalf("/skg via globalsign: %v %+v", err, parts)
				}
				dev("-m", "get", "-A", "285", "-o", filepath.Join(work, "att.der"), reg.coapsURL+"/.well-known/est/att")
			})
		}
	}
}

// TestRegistrarSeparateResponse: a request that waits on the upstream gets an empty ACK at
// once and the answer as a separate confirmable response (RFC 7252 §5.2.2), so a slow upstream
// never holds the device's exchange open (separate_after negative: every request counts as
// slow, deterministically).
func TestRegistrarSeparateResponse(t *testing.T) {
	need(t, "coap-client-openssl", "openssl")
	_, reg, _ := registrarPair(t, nil, func(c *config.Config) { c.CoAP.SeparateAfter = -1 })
	d := reg.data.Paths
	dir := t.TempDir()
	csr, p7 := filepath.Join(dir, "csr.der"), filepath.Join(dir, "cert.p7")
	makeCSR(t, csr, "CN=demo-device-0001")
	out := mustRun(t, "coap-client-openssl", "-v", "7", "-B", "20", "-m", "post", "-t", "286", "-f", csr, "-o", p7,
		"-c", d.Device, "-j", d.DeviceKey, "-C", d.Root, reg.coapsURL+"/.well-known/est/sen")
	var sawEmptyACK, sawCON bool
	for _, l := range strings.Split(out, "\n") {
		sawEmptyACK = sawEmptyACK || strings.Contains(l, "t:ACK c:0.00") && !sawCON
		sawCON = sawCON || strings.Contains(l, "t:CON c:2.04")
	}
	if !sawEmptyACK || !sawCON {
		t.Fatalf("no empty ACK followed by a CON 2.04 in libcoap's log:\n%s", out)
	}
	mustRun(t, "openssl", "pkcs7", "-inform", "DER", "-in", p7, "-print_certs")
}

// TestRegistrarUpstreamFailures: a registrar whose upstream is down still starts, and a device
// gets 5.03 (with Max-Age) instead of a hang or 5.00; one whose upstream presents a certificate
// it does not trust gets 5.02; neither sees more than a short diagnostic, and the metrics count
// the failures by kind.
func TestRegistrarUpstreamFailures(t *testing.T) {
	need(t, "coap-client-openssl", "openssl")
	closed := freeTCPPort(t)
	stranger := testpki.NewCA(t, "not the upstream's root")
	strangerFile := filepath.Join(t.TempDir(), "stranger.pem")
	os.WriteFile(strangerFile, certPEM(stranger.Cert), 0o600)
	ca := testServerAt(t, t.TempDir(), func(c *config.Config) { c.Listen.HTTPS = "127.0.0.1:0"; c.Listen.CoAPS, c.Listen.CoAP = "", "" })
	for _, tc := range []struct {
		name, url, trust, code, diag, kind string
	}{
		{"unreachable", fmt.Sprintf("https://127.0.0.1:%d", closed), ca.data.Paths.Root, "5.03", "unreachable", "unavailable"},
		{"untrusted TLS certificate", "https://" + ca.httpsAddr, strangerFile, "5.02", "not trusted", "bad_gateway"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := testServerAt(t, t.TempDir(), func(c *config.Config) {
				c.Upstream = config.Upstream{URL: tc.url, Trust: tc.trust, RetryAfter: 17 * time.Second}
			})
			d := reg.data.Paths
			csr := filepath.Join(t.TempDir(), "csr.der")
			makeCSR(t, csr, "CN=demo-device-0001")
			out, _ := run(t, 60*time.Second, "coap-client-openssl", "-v", "7", "-B", "20", "-m", "post", "-t", "286", "-f", csr,
				"-c", d.Device, "-j", d.DeviceKey, "-C", d.Root, reg.coapsURL+"/.well-known/est/sen")
			if !strings.Contains(out, tc.code+" ") || !strings.Contains(out, tc.diag) {
				t.Fatalf("device saw %q, want %s with %q", out, tc.code, tc.diag)
			}
			if tc.code == "5.03" && !strings.Contains(out, "Max-Age:17") {
				t.Errorf("5.03 without Max-Age 17: %s", out)
			}
			if strings.Contains(out, "x509") || strings.Contains(out, "connection refused") {
				t.Errorf("the device saw internal detail: %s", out)
			}
			resp, err := http.Get("http://" + reg.metricsAddr.String() + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if want := `operation="simpleenroll",result="` + tc.kind + `"`; !bytes.Contains(body, []byte(want)) {
				t.Errorf("metrics lack %s", want)
			}
		})
	}
}

// TestServeUpstreamFlags: `coapca serve --upstream` with what cannot work is refused before the
// data directory is created.
func TestServeUpstreamFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"plain http upstream", []string{"--upstream", "http://ca.example", "--upstream-trust", "x.pem"}, "https://"},
		{"no anchors for the upstream", []string{"--upstream", "https://ca.example"}, "upstream.trust"},
		{"certificate without key", []string{"--upstream", "https://ca.example", "--upstream-trust", "x.pem", "--upstream-cert", "c.pem"}, "go together"},
		{"trust without upstream", []string{"--upstream-trust", "x.pem"}, "without upstream.url"},
		{"oscore forwarding without upstream", []string{"--upstream-oscore", "http://ca.example"}, "without upstream.url"},
		{"oscore forwarding to a coap URL", []string{"--upstream", "https://ca.example", "--upstream-trust", "x.pem", "--upstream-oscore", "coap://evil.example"}, "upstream.oscore_url"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			_, errOut, code := cli(context.Background(), append([]string{"serve", "--data", dir, "--coaps", "off", "--coap", "off"}, tc.args...)...)
			if code == 0 || !strings.Contains(errOut, tc.want) {
				t.Fatalf("exit %d, stderr %q; want an error with %q", code, errOut, tc.want)
			}
			if _, err := os.Stat(dir); err == nil {
				t.Fatal("the data directory was created")
			}
		})
	}
}
