package cli

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"coapca/authority"
	"coapca/est"
	"coapca/est/cms"
)

// TestESTHTTPSSymmetricKeyForms: every encapsulation of RFC 8295 §5.1.2 over real loopback
// HTTPS, asked for in Accept with the RFC 7193 parameters: plain, signed, enveloped,
// signed-enveloped-signed and the RFC 6032 encrypted key package (signed, enveloped choice,
// signed). Each answer carries the form's Content-Type and opens with openssl (`cms -verify` for
// every SignedData, `cms -decrypt` for every EnvelopedData, for an EC and an RSA client; the
// EncryptedKeyPackage's [0] tag is undone by est.ParseEncryptedKeyPackage, which openssl does not
// know) down to the SymmetricKeyPackage holding the queued key. Refused with 406 and nothing
// recorded: a form this server does not produce. Our client asks for each form, takes only that
// one, and returns its receipt (none for the plain form, which carries no identifier).
func TestESTHTTPSSymmetricKeyForms(t *testing.T) {
	openssl := "openssl"
	need(t, openssl)
	s := httpsServer(t)
	ctx := context.Background()
	dir := t.TempDir()
	d := s.data.Paths
	ecA, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaR, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	devA, devR := ldevidFor(t, s, ecA, "forms-a"), ldevidFor(t, s, rsaR, "forms-r")
	forms := est.SymKeyEncapsulationNames()
	keyOf := func(i int) []byte { return bytes.Repeat([]byte{byte(0xb0 + i)}, 16) }
	for i := range forms {
		kf := filepath.Join(dir, fmt.Sprintf("k%d.hex", i))
		if err := os.WriteFile(kf, []byte(hex.EncodeToString(keyOf(i))), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, who := range []*tls.Certificate{devA, devR} {
			if out, errOut, code := cli(ctx, "ca", "symkey", "add", "--data", s.data.Dir, "--to", "serial:"+mustLeaf(t, who).SerialNumber.Text(16),
				"--key-id", fmt.Sprintf("k%d", i), "--key-file", kf); code != 0 {
				t.Fatalf("ca symkey add: exit %d: %s%s", code, out, errOut)
			}
		}
	}
	deliveries := func() string {
		pkgs, err := s.auth.ListPackages(ctx, authority.PackageSymmetricKeys, 0)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for _, p := range pkgs {
			ds, err := s.auth.PackageDeliveries(ctx, p.ID)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range ds {
				fmt.Fprintf(&b, "%d:%s:%d:%s;", p.ID, d.ClientSerial, d.Fetches, d.ReturnKind)
			}
		}
		return b.String()
	}

	// Refused before anything is delivered: a form this server does not produce.
	for _, accept := range []string{
		`application/cms; encapsulatingContent="authEnvelopedData, signedData"; innerContent=sKeyPackage`,
		`application/cms; encapsulatingContent=signedData; innerContent=aKeyPackage`,
	} {
		t.Run("attack: asks for "+accept, func(t *testing.T) {
			before := deliveries()
			if r := estDo(t, s, devA, 0, "GET", s.estURL("")+"/symmetrickeys", "", nil, "Accept", accept); r.status != http.StatusNotAcceptable {
				t.Fatalf("status %d (%s), want 406", r.status, r.body)
			}
			if after := deliveries(); after != before {
				t.Fatalf("deliveries changed: %s → %s", before, after)
			}
		})
	}

	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	read := func(p string) []byte {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	verify := func(name string, der []byte) []byte { // openssl cms -verify: the signed content
		out := filepath.Join(dir, name+".out")
		mustRun(t, openssl, "cms", "-verify", "-binary", "-inform", "DER", "-in", write(name, der), "-CAfile", d.Root, "-purpose", "any", "-out", out)
		return read(out)
	}
	for _, who := range []struct {
		name string
		dev  *tls.Certificate
	}{{"EC", devA}, {"RSA", devR}} {
		pk, err := x509.MarshalPKCS8PrivateKey(who.dev.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		certFile := write(who.name+".crt", pemBlock("CERTIFICATE", who.dev.Certificate[0]))
		keyFile := write(who.name+".key", pemBlock("PRIVATE KEY", pk))
		decrypt := func(name string, envelopedData []byte) []byte { // openssl cms -decrypt: the content
			ci, err := cms.ContentInfo(cms.OIDEnvelopedData, envelopedData)
			if err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(dir, name+".out")
			mustRun(t, openssl, "cms", "-decrypt", "-binary", "-inform", "DER", "-in", write(name, ci), "-recip", certFile, "-inkey", keyFile, "-out", out)
			return read(out)
		}
		signedData := func(der []byte) []byte { // a SignedData as openssl's input
			ci, err := cms.ContentInfo(cms.OIDSignedData, der)
			if err != nil {
				t.Fatal(err)
			}
			return ci
		}
		for _, name := range forms {
			enc, _ := est.SymKeyEncapsulationByName(name)
			t.Run("openssl/"+who.name+"/"+name, func(t *testing.T) {
				r := estDo(t, s, who.dev, 0, "GET", s.estURL("")+"/symmetrickeys", "", nil, "Accept", enc.MediaType())
				if r.status != http.StatusOK || r.header.Get("Content-Type") != enc.MediaType() {
					t.Fatalf("status %d, Content-Type %q: %s", r.status, r.header.Get("Content-Type"), r.body)
				}
				der, err := base64.StdEncoding.DecodeString(string(r.body))
				if err != nil {
					t.Fatal(err)
				}
				p := who.name + "-" + name
				var skp []byte
				switch enc {
				case est.SymKeyPlain:
					out := mustRun(t, openssl, "asn1parse", "-inform", "DER", "-in", write(p, der))
					if !strings.Contains(out, "1.2.840.113549.1.9.16.1.25") && !strings.Contains(out, "KP-sKeyPackage") {
						t.Fatalf("openssl asn1parse: no sKeyPackage content type:\n%s", out)
					}
					skp, err = cms.ContentOf(der, est.OIDSymmetricKeyPackage)
					if err != nil {
						t.Fatal(err)
					}
				case est.SymKeySigned:
					skp = verify(p, der)
				case est.SymKeyEnveloped:
					ed, err := cms.ContentOf(der, cms.OIDEnvelopedData)
					if err != nil {
						t.Fatal(err)
					}
					skp = verify(p+"-inner", signedData(decrypt(p, ed)))
				case est.SymKeySignedEnvelopedSigned:
					skp = verify(p+"-inner", signedData(decrypt(p+"-env", verify(p, der))))
				case est.SymKeyEncryptedKeyPackage:
					ed, err := est.ParseEncryptedKeyPackage(verify(p, der))
					if err != nil {
						t.Fatal(err)
					}
					skp = verify(p+"-inner", signedData(decrypt(p+"-env", ed)))
				}
				keys, err := est.ParseSymmetricKeyPackage(skp)
				if err != nil || len(keys) != 1 || keys[0].ID != "k0" || !bytes.Equal(keys[0].Key, keyOf(0)) {
					t.Fatalf("the package holds %+v (%v), want k0", keys, err)
				}
			})
		}
	}

	// Our client asks for each form and takes only that one: the plain form last, since it
	// carries no identifier to name in a receipt (RFC 8295 §5.2) and so stays unacknowledged.
	sub := filepath.Join(dir, "client")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	certA, keyA := writePair(t, sub, devA), filepath.Join(sub, "b.key")
	order := append(append([]string{}, forms[0]), forms[2:]...)
	order = append(order, "plain")
	for i, name := range order {
		t.Run("client/"+name, func(t *testing.T) {
			out := filepath.Join(dir, "keys-"+name+".txt")
			_, errOut, code := cli(ctx, "est", "symmetrickeys", "--server", s.estURL(""), "--trust", d.Root, "--cert", certA, "--key", keyA,
				"--encapsulation", name, "--out", out)
			wantMsg := "the server took the receipt"
			if name == "plain" {
				wantMsg = "no receipt returned"
			}
			if code != 0 || !strings.Contains(errOut, wantMsg) {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			want := fmt.Sprintf("k%d - %s\n", i, hex.EncodeToString(keyOf(i)))
			if got := string(read(out)); got != want {
				t.Fatalf("keys written %q, want %q", got, want)
			}
		})
	}
	if _, errOut, code := cli(ctx, "est", "symmetrickeys", "--server", s.estURL(""), "--trust", d.Root, "--cert", certA, "--key", keyA,
		"--encapsulation", "sealed"); code == 0 || !strings.Contains(errOut, "--encapsulation") {
		t.Fatalf("an unknown form: exit %d: %s", code, errOut)
	}
}
