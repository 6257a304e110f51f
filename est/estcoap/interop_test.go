package estcoap_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"coapca/coap"
	"coapca/est"
	"coapca/est/estcoap"
	"coapca/est/estserver"
	"coapca/est/esttest"
	"coapca/internal/testtool"
)

// Interop with libcoap's command-line clients (Debian libcoap3-bin) as EST-coaps devices and
// openssl as the checker of what they received. Skipped when the tools are missing.

func tool(t *testing.T, name string) string { return testtool.LookPath(t, name) }

// run runs a tool with a 30 s deadline; a failure ends the test.
func run(t *testing.T, bin string, args ...string) []byte {
	return testtool.MustRun(t, 30*time.Second, bin, args...)
}

func TestLibcoapInterop(t *testing.T) {
	openssl := tool(t, "openssl")
	for _, name := range []string{"coap-client-openssl", "coap-client-gnutls"} {
		t.Run(name, func(t *testing.T) {
			bin := tool(t, name)
			fa := esttest.New(t, "lbl")
			mux := coap.NewMux()
			estcoap.New(estserver.New(fa, nil), estcoap.Options{Labels: []string{"lbl"}}).Register(mux)
			srv := fa.StartDTLS(t, mux)
			dir := t.TempDir()
			rootPEM, caPEM, certPEM, keyPEM := srv.WritePEM(t, fa, dir)
			base := "coaps://" + srv.Addr
			pki := []string{"-c", certPEM, "-j", keyPEM, "-C", rootPEM, "-B", "20"}
			coapc := func(args ...string) []byte { return run(t, bin, append(append([]string{}, pki...), args...)...) }

			// Discovery (RFC 9148 §4.1).
			out := coapc("-m", "get", "-b", "64", base+"/.well-known/core?rt=ace.est*")
			links, err := coap.ParseLinkFormat(bytes.TrimSpace(out))
			if err != nil {
				t.Fatalf("%q: %v", out, err)
			}
			if len(links) != 12 {
				t.Fatalf("want 12 EST links, got %d: %s", len(links), out)
			}
			for _, want := range []string{`</.well-known/est/crts>;rt="ace.est.crts";ct="281 287"`,
				`</.well-known/est/lbl/att>;rt="ace.est.att";ct=285`, `</.well-known/est/skg>;rt="ace.est.skg";ct=62`} {
				if !bytes.Contains(out, []byte(want)) {
					t.Errorf("discovery lacks %s:\n%s", want, out)
				}
			}

			// /crts at block size 64, checked with openssl pkcs7.
			crts := filepath.Join(dir, "crts.p7")
			coapc("-m", "get", "-b", "64", "-A", "281", "-o", crts, base+"/.well-known/est/crts")
			p7 := run(t, openssl, "pkcs7", "-inform", "DER", "-in", crts, "-print_certs", "-noout")
			if !bytes.Contains(p7, []byte("esttest issuing CA")) || !bytes.Contains(p7, []byte("esttest root")) {
				t.Errorf("pkcs7 -print_certs:\n%s", p7)
			}

			// A CSR made by openssl req, posted to /sen and /skg at block size 64.
			csr := filepath.Join(dir, "csr.der")
			run(t, openssl, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
				"-keyout", filepath.Join(dir, "csr.key"), "-subj", "/CN=device-1/serialNumber=A1B2", "-outform", "DER", "-out", csr)
			sen := filepath.Join(dir, "sen.p7")
			coapc("-m", "post", "-b", "64", "-t", "286", "-f", csr, "-o", sen, base+"/.well-known/est/lbl/sen")
			leaf := filepath.Join(dir, "leaf.pem")
			run(t, openssl, "pkcs7", "-inform", "DER", "-in", sen, "-print_certs", "-out", leaf)
			if v := run(t, openssl, "verify", "-CAfile", rootPEM, "-untrusted", caPEM, leaf); !bytes.Contains(v, []byte("OK")) {
				t.Errorf("verify: %s", v)
			}

			skg := filepath.Join(dir, "skg.cbor")
			coapc("-m", "post", "-b", "64", "-t", "286", "-f", csr, "-o", skg, base+"/.well-known/est/skc")
			body, err := os.ReadFile(skg)
			if err != nil {
				t.Fatal(err)
			}
			parts, err := est.ParseMultipart(body)
			if err != nil || len(parts) != 2 || parts[0].ContentFormat != est.CFPKCS8 || parts[1].ContentFormat != est.CFPKIXCert {
				t.Fatalf("skc response: %v %+v", err, parts)
			}
			keyDER, certDER := filepath.Join(dir, "skg.key.der"), filepath.Join(dir, "skg.cert.der")
			if err := os.WriteFile(keyDER, parts[0].Body, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(certDER, parts[1].Body, 0o600); err != nil {
				t.Fatal(err)
			}
			run(t, openssl, "pkey", "-inform", "DER", "-in", keyDER, "-check", "-noout")
			pub1 := run(t, openssl, "pkey", "-inform", "DER", "-in", keyDER, "-pubout")
			pub2 := run(t, openssl, "x509", "-inform", "DER", "-in", certDER, "-noout", "-pubkey")
			if !bytes.Equal(pub1, pub2) {
				t.Errorf("server-generated key and certificate differ:\n%s\n%s", pub1, pub2)
			}
			skgCert := filepath.Join(dir, "skg.cert.pem")
			run(t, openssl, "x509", "-inform", "DER", "-in", certDER, "-out", skgCert)
			run(t, openssl, "verify", "-CAfile", rootPEM, "-untrusted", caPEM, skgCert)

			// An error path as a device sees it: wrong Content-Format.
			// libcoap prints the code and the diagnostic on stderr and may exit non-zero.
			cmd := exec.Command(bin, append(append([]string{}, pki...), "-m", "post", "-t", "0", "-f", csr, base+"/.well-known/est/sen")...)
			all, _ := cmd.CombinedOutput()
			if !bytes.Contains(all, []byte("4.15")) || !bytes.Contains(all, []byte("must be 286")) {
				t.Errorf("4.15 with diagnostic not visible: %q", all)
			}
		})
	}
}
