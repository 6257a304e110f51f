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
	"slices"
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
// know) down to the SymmetricKeyPackage holding the queued key (queued with --forms all: the
// operator allows the TLS-only forms). Refused with 406 and nothing recorded: a form this server
// does not produce. Our client asks for each form, takes only that one, and returns its receipt
// (none for the plain form, which carries no identifier, and ends the package's delivery).
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
	for i := range len(forms) + 1 {
		kf := filepath.Join(dir, fmt.Sprintf("k%d.hex", i))
		if err := os.WriteFile(kf, []byte(hex.EncodeToString(keyOf(i))), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, who := range []*tls.Certificate{devA, devR} {
			if out, errOut, code := cli(ctx, "ca", "symkey", "add", "--data", s.data.Dir, "--to", "serial:"+mustLeaf(t, who).SerialNumber.Text(16),
				"--key-id", fmt.Sprintf("k%d", i), "--key-file", kf, "--forms", "all"); code != 0 {
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
		// The plain form last: a package delivered plain is done (nothing can acknowledge it).
		for _, name := range append(slices.DeleteFunc(slices.Clone(forms), func(f string) bool { return f == "plain" }), "plain") {
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
	// carries no identifier to name in a receipt (RFC 8295 §5.2). k0 was delivered plain above,
	// so it is not offered again: the client gets k1, k2, ...
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
			want := fmt.Sprintf("k%d - %s\n", i+1, hex.EncodeToString(keyOf(i+1)))
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

// TestESTHTTPSSymmetricKeyFormsRestricted: the operator's say over the forms (ca symkey add
// --forms; by default only the forms that encrypt for the client), over real loopback HTTPS,
// written as the attacks it refuses with nothing recorded as fetched: a client asking for the
// TLS-only forms (plain, signed) of a package the operator kept to encrypted forms (406: the
// package exists, in representations the client excluded — RFC 9110 §15.5.7; 403 would say it
// may not have the package at all), and anonymous requests with an Accept naming a form we do
// not produce, or plain (401: authenticated before the Accept is looked at). Then a package
// the operator allows plain: delivered plain, it leaves the PAL and is not offered again (it
// carries no identifier a receipt could name, RFC 8295 §5.2).
func TestESTHTTPSSymmetricKeyFormsRestricted(t *testing.T) {
	s := httpsServer(t)
	ctx := context.Background()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	dev := ldevidFor(t, s, key, "forms-restricted")
	serial := mustLeaf(t, dev).SerialNumber.Text(16)
	add := func(keyID string, extra ...string) (string, int) {
		out, errOut, code := cli(ctx, append([]string{"ca", "symkey", "add", "--data", s.data.Dir, "--to", "serial:" + serial,
			"--key-id", keyID, "--random", "16"}, extra...)...)
		return out + errOut, code
	}
	if out, code := add("restricted"); code != 0 || !strings.Contains(out, "delivered as signed-enveloped-signed, enveloped, encrypted-key-package") {
		t.Fatalf("ca symkey add: exit %d: %s", code, out)
	}
	for _, bad := range [][]string{{"--forms", "cleartext"}, {"--forms", "plain,rot13"}} {
		if out, code := add("bad", bad...); code == 0 {
			t.Fatalf("ca symkey add %v: exit 0: %s", bad, out)
		}
	}
	fetches := func() string {
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
			fmt.Fprintf(&b, "%s:%d;", p.Name, len(ds))
			for _, d := range ds {
				fmt.Fprintf(&b, "%d×%s;", d.Fetches, d.Form)
			}
		}
		return b.String()
	}
	if got := fetches(); got != "restricted:0;" {
		t.Fatalf("stored: %s (a refused add stores nothing)", got)
	}
	get := func(cert *tls.Certificate, accept string) httpResult {
		if accept == "" {
			return estDo(t, s, cert, 0, "GET", s.estURL("")+"/symmetrickeys", "", nil)
		}
		return estDo(t, s, cert, 0, "GET", s.estURL("")+"/symmetrickeys", "", nil, "Accept", accept)
	}
	unknown := `application/cms; encapsulatingContent="authEnvelopedData"; innerContent=sKeyPackage`
	for _, tc := range []struct {
		name   string
		cert   *tls.Certificate
		accept string
		want   int
	}{
		{"attack: plain for a package kept to encrypted forms", dev, est.SymKeyPlain.MediaType(), http.StatusNotAcceptable},
		{"attack: signed for it", dev, est.SymKeySigned.MediaType(), http.StatusNotAcceptable},
		{"attack: plain or signed", dev, est.SymKeyPlain.MediaType() + ", " + est.SymKeySigned.MediaType(), http.StatusNotAcceptable},
		{"attack: anonymous with an Accept naming no form we produce", nil, unknown, http.StatusUnauthorized},
		{"attack: anonymous asking for plain", nil, est.SymKeyPlain.MediaType(), http.StatusUnauthorized},
		{"attack: anonymous without Accept", nil, "", http.StatusUnauthorized},
		{"authenticated, naming no form we produce", dev, unknown, http.StatusNotAcceptable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if r := get(tc.cert, tc.accept); r.status != tc.want {
				t.Fatalf("status %d (%s), want %d", r.status, r.body, tc.want)
			}
			if got := fetches(); got != "restricted:0;" {
				t.Fatalf("recorded: %s", got)
			}
		})
	}
	// Plain or enveloped: the client gets the form the operator allows.
	if r := get(dev, est.SymKeyPlain.MediaType()+", "+est.SymKeyEnveloped.MediaType()); r.status != http.StatusOK ||
		r.header.Get("Content-Type") != est.SymKeyEnveloped.MediaType() {
		t.Fatalf("plain or enveloped: %d %q %s", r.status, r.header.Get("Content-Type"), r.body)
	}
	if got := fetches(); got != "restricted:1;1×enveloped;" {
		t.Fatalf("recorded: %s", got)
	}

	// A package the operator allows plain.
	if out, code := add("tls-only", "--forms", "plain"); code != 0 || !strings.Contains(out, "delivered as plain") {
		t.Fatalf("ca symkey add --forms plain: exit %d: %s", code, out)
	}
	pal := func() (fetch, ret int) {
		t.Helper()
		r := estDo(t, s, dev, 0, "GET", s.estURL("")+"/pal", "", nil)
		if r.status != http.StatusOK {
			t.Fatalf("pal: %d %s", r.status, r.body)
		}
		es, err := est.ParsePAL(bytes.NewReader(r.body))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			switch e.Type {
			case est.PALSymmetricKeyPackage:
				fetch++
			case est.PALSymmetricKeyReturn:
				ret++
			}
		}
		return fetch, ret
	}
	// Listed: the restricted package (fetched, its receipt asked for) and the plain one.
	if f, r := pal(); f != 2 || r != 1 {
		t.Fatalf("PAL before the plain delivery: %d key entries, %d receipt requests; want 2, 1", f, r)
	}
	if r := get(dev, est.SymKeyPlain.MediaType()); r.status != http.StatusOK || r.header.Get("Content-Type") != est.SymKeyPlain.MediaType() {
		t.Fatalf("plain: %d %q %s", r.status, r.header.Get("Content-Type"), r.body)
	}
	if got := fetches(); got != "restricted:1;1×enveloped;tls-only:1;1×plain;" {
		t.Fatalf("recorded: %s", got)
	}
	// Delivered plain: gone from the PAL (no entry to fetch it, no receipt asked for), and
	// never delivered again; the restricted package is still refused plain.
	if f, r := pal(); f != 1 || r != 1 {
		t.Fatalf("PAL after the plain delivery: %d key entries, %d receipt requests; want 1, 1", f, r)
	}
	if r := get(dev, est.SymKeyPlain.MediaType()); r.status != http.StatusNotAcceptable {
		t.Fatalf("plain again: %d %s, want 406", r.status, r.body)
	}
	if got := fetches(); got != "restricted:1;1×enveloped;tls-only:1;1×plain;" {
		t.Fatalf("recorded: %s", got)
	}
}
