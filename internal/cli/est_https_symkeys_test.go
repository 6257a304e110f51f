package cli

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"coapca/authority"
	"coapca/est"
	"coapca/est/cms"
)

// ldevidFor enrolls a certificate of this CA for key (through /simpleenroll, authenticated by
// the demo IDevID) and returns it as a TLS client identity with its issuing CA.
func ldevidFor(t *testing.T, s *served, key crypto.Signer, cn string) *tls.Certificate {
	t.Helper()
	csr, err := est.CreateCSR(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key, "")
	if err != nil {
		t.Fatal(err)
	}
	cert := issuedCert(t, estDo(t, s, demoDevice(t, s), 0, "POST", s.estURL("")+"/simpleenroll", "application/pkcs10", b64(csr)))
	chain := [][]byte{cert.Raw}
	for _, c := range s.data.IssuingChain() {
		chain = append(chain, c.Raw)
	}
	return &tls.Certificate{Certificate: chain, PrivateKey: key}
}

// palTypes fetches /pal as who and returns its entry types in order ("status N" otherwise).
func palTypes(t *testing.T, s *served, who *tls.Certificate, label string) []string {
	t.Helper()
	r := estDo(t, s, who, 0, "GET", s.estURL(label)+"/pal", "", nil)
	if r.status != http.StatusOK {
		return []string{"status " + http.StatusText(r.status)}
	}
	if ct := r.header.Get("Content-Type"); ct != est.MediaPAL {
		t.Errorf("PAL Content-Type %q, want %s (RFC 8295 §2.2)", ct, est.MediaPAL)
	}
	entries, err := est.ParsePAL(bytes.NewReader(r.body))
	if err != nil {
		t.Fatalf("PAL: %v\n%s", err, r.body)
	}
	var out []string
	for _, e := range entries {
		if !strings.HasPrefix(e.URI, s.estURL(label)+"/") {
			t.Errorf("PAL entry URI %q is not under %s", e.URI, s.estURL(label))
		}
		typ := string(e.Type)
		if !e.Date.IsZero() {
			typ += "@"
		}
		out = append(out, typ)
	}
	return out
}

// TestESTHTTPSSymmetricKeys: /pal, /symmetrickeys and /symmetrickeys/return (RFC 8295 §2, §5)
// over real loopback HTTPS. The operator queues keys with `coapca ca symkey add`; each package
// is opened layer by layer with `openssl cms -verify` and `openssl cms -decrypt` — for an EC
// client (ECDH key agreement) and an RSA client (RSA-OAEP) — and its SymmetricKeyPackage holds
// the queued key. The PAL follows the package from queued to fetched to acknowledged. Refused,
// with a 4xx and nothing recorded: anonymous, a manufacturer certificate, the wrong label,
// another client's package, a receipt for another client's package, one signed by another
// client or a rogue key, unsigned, tampered or malformed. Our client (`coapca est pal`,
// `coapca est symmetrickeys`) fetches, verifies, decrypts, writes and returns the receipt.
func TestESTHTTPSSymmetricKeys(t *testing.T) {
	openssl := "openssl"
	need(t, openssl)
	s := httpsServer(t)
	ctx := context.Background()
	dir := t.TempDir()
	d := s.data.Paths
	ecA, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecB, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaR, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	devA, devB, devR := ldevidFor(t, s, ecA, "sym-a"), ldevidFor(t, s, ecB, "sym-b"), ldevidFor(t, s, rsaR, "sym-r")
	leaf := func(c *tls.Certificate) *x509.Certificate { return mustLeaf(t, c) }
	serialOf := func(c *tls.Certificate) string { return leaf(c).SerialNumber.Text(16) }
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	keyA := bytes.Repeat([]byte{0xa1}, 16)
	keyFile := write("key-a.hex", []byte(hex.EncodeToString(keyA)+"\n"))

	// The operator queues a key for A and one for R (`coapca ca symkey add`).
	for _, args := range [][]string{
		{"--to", "serial:" + serialOf(devA), "--key-id", "peer-a", "--key-file", keyFile, "--algorithm", "http://www.w3.org/2001/04/xmlenc#aes128-cbc"},
		{"--to", "subject:CN=sym-r", "--key-id", "peer-r", "--random", "32"},
	} {
		if out, errOut, code := cli(ctx, append([]string{"ca", "symkey", "add", "--data", s.data.Dir}, args...)...); code != 0 ||
			!strings.Contains(out, "queued symmetric key package") {
			t.Fatalf("ca symkey add %v: exit %d: %s%s", args, code, out, errOut)
		}
	}
	if _, _, code := cli(ctx, "ca", "symkey", "add", "--data", s.data.Dir, "--to", "serial:7e57", "--key-id", "x", "--random", "16"); code == 0 {
		t.Fatal("ca symkey add for an unknown certificate succeeded")
	}
	pkgs, err := s.auth.ListPackages(ctx, authority.PackageSymmetricKeys, 0)
	if err != nil || len(pkgs) != 2 {
		t.Fatalf("queued: %v, %v", pkgs, err)
	}
	pkgA := pkgs[0]
	deliveries := func() string {
		var b strings.Builder
		for _, p := range pkgs {
			ds, err := s.auth.PackageDeliveries(ctx, p.ID)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range ds {
				b.WriteString(d.ClientSerial + ":" + d.ReturnKind + ";")
			}
		}
		return b.String()
	}

	// PAL and fetch authorization (docs/security.md), before anything is fetched.
	for _, tc := range []struct {
		name  string
		who   *tls.Certificate
		label string
		want  string
	}{
		{"attack: anonymous", nil, "", "status Unauthorized"},
		{"attack: a manufacturer certificate (IDevID)", demoDevice(t, s), "", "status Forbidden"},
		{"attack: the wrong label", devA, "devices", "status Forbidden"},
		{"unknown label", devA, "nope", "status Not Found"},
		{"A: its package waits", devA, "", "0002 0005 0003 0024"},
		{"B: nothing of A's", devB, "", "0002 0005 0003"},
	} {
		t.Run("pal/"+tc.name, func(t *testing.T) {
			if got := strings.Join(palTypes(t, s, tc.who, tc.label), " "); got != tc.want {
				t.Fatalf("PAL %q, want %q", got, tc.want)
			}
		})
	}
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	devE := ldevidFor(t, s, edKey, "sym-e")
	if _, errOut, code := cli(ctx, "ca", "symkey", "add", "--data", s.data.Dir, "--to", "subject:CN=sym-e", "--key-id", "peer-e", "--random", "16"); code != 0 {
		t.Fatalf("ca symkey add for E: %s", errOut)
	}
	pkgs, err = s.auth.ListPackages(ctx, authority.PackageSymmetricKeys, 0)
	if err != nil || len(pkgs) != 3 {
		t.Fatalf("queued: %v, %v", pkgs, err)
	}
	for _, tc := range []struct {
		name   string
		who    *tls.Certificate
		label  string
		method string
		want   int
	}{
		{"attack: anonymous", nil, "", "GET", http.StatusUnauthorized},
		{"attack: a manufacturer certificate", demoDevice(t, s), "", "GET", http.StatusForbidden},
		{"attack: A under the wrong label", devA, "other", "GET", http.StatusForbidden},
		{"attack: B asks, only A's and R's are queued", devB, "", "GET", http.StatusNotFound},
		{"attack: HEAD would record a delivery", devA, "", "HEAD", http.StatusMethodNotAllowed},
		{"an Ed25519 certificate cannot receive encrypted keys", devE, "", "GET", http.StatusNotAcceptable},
	} {
		t.Run("symmetrickeys/"+tc.name, func(t *testing.T) {
			if r := estDo(t, s, tc.who, 0, tc.method, s.estURL(tc.label)+"/symmetrickeys", "", nil); r.status != tc.want {
				t.Fatalf("status %d (%s), want %d", r.status, strings.TrimSpace(string(r.body)), tc.want)
			}
			if got := deliveries(); got != "" {
				t.Fatalf("deliveries recorded: %s", got)
			}
		})
	}

	// Each package, opened with openssl: outer SignedData → EnvelopedData → inner SignedData →
	// SymmetricKeyPackage.
	var fetchedA []byte
	for _, tc := range []struct {
		name  string
		who   *tls.Certificate
		keyID string
	}{{"EC client, ECDH key agreement", devA, "peer-a"}, {"RSA client, RSA-OAEP", devR, "peer-r"}} {
		t.Run("openssl/"+tc.name, func(t *testing.T) {
			r := estDo(t, s, tc.who, 0, "GET", s.estURL("")+"/symmetrickeys", "", nil)
			if r.status != http.StatusOK {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			if ct := r.header.Get("Content-Type"); ct != est.MediaSymmetricKeyPackage {
				t.Fatalf("Content-Type %q, want %q (RFC 8295 §5.1.2)", ct, est.MediaSymmetricKeyPackage)
			}
			der, err := base64.StdEncoding.DecodeString(string(r.body))
			if err != nil {
				t.Fatal(err)
			}
			if tc.who == devA {
				fetchedA = der
			}
			envelope := filepath.Join(dir, "env.der")
			mustRun(t, openssl, "cms", "-verify", "-binary", "-inform", "DER", "-in", write("outer.p7", der), "-CAfile", d.Root,
				"-purpose", "any", "-out", envelope)
			ed, _ := os.ReadFile(envelope)
			ci, err := cms.ContentInfo(cms.OIDEnvelopedData, ed)
			if err != nil {
				t.Fatal(err)
			}
			k, err := x509.MarshalPKCS8PrivateKey(tc.who.PrivateKey)
			if err != nil {
				t.Fatal(err)
			}
			keyPEM := write("client.key", pemBlock("PRIVATE KEY", k))
			certPEM := write("client.pem", pemBlock("CERTIFICATE", tc.who.Certificate[0]))
			signed := filepath.Join(dir, "signed.der")
			mustRun(t, openssl, "cms", "-decrypt", "-binary", "-inform", "DER", "-in", write("env.p7m", ci), "-recip", certPEM,
				"-inkey", keyPEM, "-out", signed)
			sd, _ := os.ReadFile(signed)
			ci, err = cms.ContentInfo(cms.OIDSignedData, sd)
			if err != nil {
				t.Fatal(err)
			}
			pkgFile := filepath.Join(dir, "skp.der")
			mustRun(t, openssl, "cms", "-verify", "-binary", "-inform", "DER", "-in", write("inner.p7", ci), "-CAfile", d.Root,
				"-purpose", "any", "-out", pkgFile)
			raw, _ := os.ReadFile(pkgFile)
			keys, err := est.ParseSymmetricKeyPackage(raw)
			if err != nil || len(keys) != 1 || keys[0].ID != tc.keyID {
				t.Fatalf("symmetric key package: %+v, %v", keys, err)
			}
			if tc.keyID == "peer-a" && !bytes.Equal(keys[0].Key, keyA) {
				t.Fatalf("key %x, want the queued %x", keys[0].Key, keyA)
			}
		})
	}
	if got := strings.Join(palTypes(t, s, devA, ""), " "); got != "0002 0005 0003 0024 0025" {
		t.Fatalf("A's PAL after the fetch: %q, want the receipt asked for (0025)", got)
	}

	// Receipts and errors: the attacks change nothing.
	opened, err := est.OpenSymmetricKeyPackage(fetchedA, cms.Decrypter{Key: ecA, Cert: leaf(devA)})
	if err != nil || !bytes.Equal(opened.PkgID, authority.PackageID(authority.PackageSymmetricKeys, pkgA.ID)) || !opened.ReceiptRequested {
		t.Fatalf("opened: %+v, %v", opened, err)
	}
	now := time.Now()
	sign := func(key crypto.Signer, c *tls.Certificate) []byte {
		der, err := est.SignKeyPackageReceiptFor(rand.Reader, opened.PkgID, key, leaf(c), nil, now)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	goodA := sign(ecA, devA)
	rogueKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rogueTmpl := &x509.Certificate{SerialNumber: leaf(devA).SerialNumber, Subject: leaf(devA).Subject,
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}
	rogueDER, _ := x509.CreateCertificate(rand.Reader, rogueTmpl, rogueTmpl, rogueKey.Public(), rogueKey)
	rogue := &tls.Certificate{Certificate: [][]byte{rogueDER}, PrivateKey: rogueKey}
	unsignedBody := func() []byte {
		sd, _ := cms.Sign(rand.Reader, est.OIDKeyPackageReceipt, []byte{0x30, 0x00}, ecA, []*x509.Certificate{leaf(devA)}, now)
		inner, _ := cms.Verify(sd)
		ci, _ := cms.ContentInfo(est.OIDKeyPackageReceipt, inner.Content)
		return ci
	}()
	tampered := bytes.Clone(goodA)
	tampered[len(tampered)-3] ^= 0x40
	const cmsType = "application/cms"
	for _, tc := range []struct {
		name string
		who  *tls.Certificate
		ct   string
		body []byte
		want int
	}{
		{"attack: anonymous", nil, cmsType, goodA, http.StatusUnauthorized},
		{"attack: B returns A's receipt", devB, cmsType, goodA, http.StatusForbidden},
		{"attack: B's own receipt for A's package", devB, cmsType, sign(ecB, devB), http.StatusForbidden},
		{"attack: A's receipt signed with B's certificate", devA, cmsType, sign(ecB, devB), http.StatusForbidden},
		{"attack: signed by a rogue key with A's name", devA, cmsType, sign(rogueKey, rogue), http.StatusForbidden},
		{"attack: unsigned receipt", devA, cmsType, unsignedBody, http.StatusBadRequest},
		{"attack: tampered signature", devA, cmsType, tampered, http.StatusBadRequest},
		{"attack: malformed", devA, cmsType, []byte{0x30, 0x03, 0x06, 0x01, 0x00}, http.StatusBadRequest},
		{"attack: wrong media type", devA, "application/pkcs10", goodA, http.StatusUnsupportedMediaType},
		{"attack: the wrong label", devA, cmsType, goodA, http.StatusForbidden},
	} {
		t.Run("return/"+tc.name, func(t *testing.T) {
			before := deliveries()
			label := ""
			if strings.Contains(tc.name, "label") {
				label = "devices"
			}
			r := estDo(t, s, tc.who, 0, "POST", s.estURL(label)+"/symmetrickeys/return", tc.ct, b64(tc.body))
			if r.status != tc.want {
				t.Fatalf("status %d (%s), want %d", r.status, strings.TrimSpace(string(r.body)), tc.want)
			}
			if after := deliveries(); after != before {
				t.Fatalf("deliveries changed: %s → %s", before, after)
			}
		})
	}

	// Our client: the PAL, then fetch, verify, decrypt, write and return the receipt.
	sub := filepath.Join(dir, "a")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	certA := writePair(t, sub, devA)
	keyAPath := filepath.Join(sub, "b.key")
	out, errOut, code := cli(ctx, "est", "pal", "--server", s.estURL(""), "--trust", d.Root, "--cert", certA, "--key", keyAPath)
	if code != 0 || !strings.Contains(out, "0024 symmetric key package") || !strings.Contains(out, "0025") {
		t.Fatalf("est pal: exit %d:\n%s%s", code, out, errOut)
	}
	keysOut := filepath.Join(dir, "keys.txt")
	// The client refuses the package (`--error`, RFC 8295 §5.2, RFC 7191): a code RFC 7191 does
	// not define is refused before anything is fetched; a real code writes no keys, the server
	// stores the signed key package error and offers the package again.
	for _, tc := range []struct{ name, code, want, deliveries string }{
		{"attack: a code RFC 7191 does not define", "noSuchError", "not an RFC 7191", deliveries()},
		{"the key package is bad", "badKeyPackage", "the server took the error badKeyPackage",
			strings.Replace(deliveries(), serialOf(devA)+":;", serialOf(devA)+":error;", 1)},
	} {
		t.Run("client-error/"+tc.name, func(t *testing.T) {
			_, errOut, code := cli(ctx, "est", "symmetrickeys", "--server", s.estURL(""), "--trust", d.Root, "--cert", certA, "--key", keyAPath,
				"--out", keysOut, "--error", tc.code)
			if ok := code == 0; ok != !strings.HasPrefix(tc.name, "attack") || !strings.Contains(errOut, tc.want) {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			if _, err := os.Stat(keysOut); !os.IsNotExist(err) {
				t.Fatalf("keys were written: %v", err)
			}
			if got := deliveries(); got != tc.deliveries {
				t.Fatalf("deliveries: %s, want %s", got, tc.deliveries)
			}
		})
	}
	if got := strings.Join(palTypes(t, s, devA, ""), " "); got != "0002 0005 0003 0024" {
		t.Fatalf("A's PAL after its error: %q, want the package offered again, undated", got)
	}
	// Attack: a keys file already there and readable by everyone (left over, or planted to
	// catch the keys): the keys must not land in it at its old mode.
	if err := os.WriteFile(keysOut, []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(keysOut, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := cli(ctx, "est", "symmetrickeys", "--server", s.estURL(""), "--trust", d.Root, "--cert", certA, "--key", keyAPath,
		"--out", keysOut); code != 0 || !strings.Contains(errOut, "the server took the receipt") {
		t.Fatalf("est symmetrickeys: exit %d: %s", code, errOut)
	}
	got, err := os.ReadFile(keysOut)
	if err != nil || string(got) != "peer-a http://www.w3.org/2001/04/xmlenc#aes128-cbc "+hex.EncodeToString(keyA)+"\n" {
		t.Fatalf("keys written: %q, %v", got, err)
	}
	if st, err := os.Stat(keysOut); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("keys file mode: %v, %v", st.Mode(), err)
	}
	if got := strings.Join(palTypes(t, s, devA, ""), " "); got != "0002 0005 0003 0024@" {
		t.Fatalf("A's PAL after the receipt: %q, want the package dated and no receipt asked for", got)
	}
	// Acknowledged: nothing more waits for A; R's package was never A's.
	if r := estDo(t, s, devA, 0, "GET", s.estURL("")+"/symmetrickeys", "", nil); r.status != http.StatusNotFound {
		t.Fatalf("after the receipt: status %d, want 404", r.status)
	}
	list, errOut, code := cli(ctx, "ca", "symkey", "list", "--data", s.data.Dir)
	if code != 0 || !strings.Contains(list, serialOf(devA)) || !strings.Contains(list, "receipt") || !strings.Contains(list, serialOf(devR)) {
		t.Fatalf("ca symkey list: exit %d:\n%s%s", code, list, errOut)
	}
	// A client without trust anchors refuses to take keys (RFC 8295 §5.1.2).
	if _, errOut, code := cli(ctx, "est", "symmetrickeys", "--server", s.estURL(""), "--insecure", "--cert", certA, "--key", keyAPath); code == 0 ||
		!strings.Contains(errOut, "trust anchors") {
		t.Fatalf("symmetrickeys without trust anchors: exit %d: %s", code, errOut)
	}
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// TestESTHTTPSFirmware: /firmware and /firmware/return (RFC 8295 §6, RFC 4108) over real
// loopback HTTPS. The operator queues an image for a label (`coapca ca firmware add`); the
// package a client of that label fetches verifies with `openssl cms -verify` to the root and
// holds the image; the PAL lists it (0026), asks for the receipt (0027) and dates it once
// acknowledged. Refused, with a 4xx and nothing recorded: anonymous, a client of another label,
// the wrong label, a receipt for a package the client never fetched, one signed by another
// client or a rogue key, malformed, an error naming no package. Our client (`coapca est
// firmware`) fetches, verifies, writes and returns a signed load receipt.
func TestESTHTTPSFirmware(t *testing.T) {
	openssl := "openssl"
	need(t, openssl)
	s := httpsServer(t)
	ctx := context.Background()
	dir := t.TempDir()
	d := s.data.Paths
	ecA, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecC, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecB, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	devA, devC := ldevidFor(t, s, ecA, "fw-a"), ldevidFor(t, s, ecC, "fw-c")
	// B holds a certificate of the label "devices".
	csrB, _ := est.CreateCSR(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "fw-b"}}, ecB, "")
	certB := issuedCert(t, estDo(t, s, demoDevice(t, s), 0, "POST", s.estURL("devices")+"/simpleenroll", "application/pkcs10", b64(csrB)))
	devB := &tls.Certificate{Certificate: [][]byte{certB.Raw, s.data.IssuingChain()[0].Raw}, PrivateKey: ecB}
	leaf := func(c *tls.Certificate) *x509.Certificate { return mustLeaf(t, c) }
	image := bytes.Repeat([]byte("\x7fELF firmware "), 200)
	imageFile := filepath.Join(dir, "fw.bin")
	if err := os.WriteFile(imageFile, image, 0o600); err != nil {
		t.Fatal(err)
	}
	const fwName, hwType = "1.3.6.1.4.1.99999.1:3", "1.3.6.1.4.1.99999.2.1"
	if out, errOut, code := cli(ctx, "ca", "firmware", "add", "--data", s.data.Dir, "--to", "label:", "--image", imageFile,
		"--name", fwName, "--hw-type", hwType); code != 0 || !strings.Contains(out, "queued firmware package") {
		t.Fatalf("ca firmware add: exit %d: %s%s", code, out, errOut)
	}
	pkgs, err := s.auth.ListPackages(ctx, authority.PackageFirmware, 0)
	if err != nil || len(pkgs) != 1 || pkgs[0].Name != fwName {
		t.Fatalf("queued: %+v, %v", pkgs, err)
	}
	deliveries := func() string {
		ds, err := s.auth.PackageDeliveries(ctx, pkgs[0].ID)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for _, d := range ds {
			b.WriteString(d.ClientSerial + ":" + d.ReturnKind + ";")
		}
		return b.String()
	}

	if got := strings.Join(palTypes(t, s, devA, ""), " "); got != "0002 0005 0003 0026" {
		t.Fatalf("A's PAL: %q", got)
	}
	if got := strings.Join(palTypes(t, s, devB, "devices"), " "); got != "0002 0005 0003" {
		t.Fatalf("B's PAL lists another label's firmware: %q", got)
	}
	for _, tc := range []struct {
		name  string
		who   *tls.Certificate
		label string
		want  int
	}{
		{"attack: anonymous", nil, "", http.StatusUnauthorized},
		{"attack: a client of another label", devB, "devices", http.StatusNotFound},
		{"attack: that client under this label", devB, "", http.StatusForbidden},
	} {
		t.Run("firmware/"+tc.name, func(t *testing.T) {
			if r := estDo(t, s, tc.who, 0, "GET", s.estURL(tc.label)+"/firmware", "", nil); r.status != tc.want {
				t.Fatalf("status %d (%s), want %d", r.status, strings.TrimSpace(string(r.body)), tc.want)
			}
			if got := deliveries(); got != "" {
				t.Fatalf("deliveries recorded: %s", got)
			}
		})
	}

	r := estDo(t, s, devA, 0, "GET", s.estURL("")+"/firmware", "", nil)
	if r.status != http.StatusOK || r.header.Get("Content-Type") != est.MediaFirmwarePackage {
		t.Fatalf("firmware: status %d, Content-Type %q: %s", r.status, r.header.Get("Content-Type"), r.body)
	}
	der, err := base64.StdEncoding.DecodeString(string(r.body))
	if err != nil {
		t.Fatal(err)
	}
	pkgFile := filepath.Join(dir, "fw.p7")
	if err := os.WriteFile(pkgFile, der, 0o600); err != nil {
		t.Fatal(err)
	}
	content := filepath.Join(dir, "content.der")
	mustRun(t, openssl, "cms", "-verify", "-binary", "-inform", "DER", "-in", pkgFile, "-CAfile", d.Root, "-purpose", "any", "-out", content)
	got, _ := os.ReadFile(content)
	if want := append([]byte{0x04, 0x82, byte(len(image) >> 8), byte(len(image))}, image...); !bytes.Equal(got, want) {
		t.Fatalf("the verified content is not FirmwarePkgData holding the image (%d bytes)", len(got))
	}
	if got := strings.Join(palTypes(t, s, devA, ""), " "); got != "0002 0005 0003 0026 0027" {
		t.Fatalf("A's PAL after the fetch: %q", got)
	}

	name, _ := est.ParseFirmwareName(fwName)
	hw, _ := est.ParseFirmwareName(hwType + ":0")
	now := time.Now()
	receiptBy := func(key crypto.Signer, c *x509.Certificate) []byte {
		body, err := est.MarshalFirmwareReceipt(hw.ID, c.SerialNumber.Bytes(), name)
		if err != nil {
			t.Fatal(err)
		}
		der, err := est.SignFirmwareReturn(rand.Reader, true, body, key, c, nil, now)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	rogueKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rogueTmpl := &x509.Certificate{SerialNumber: leaf(devA).SerialNumber, Subject: leaf(devA).Subject,
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}
	rogueDER, _ := x509.CreateCertificate(rand.Reader, rogueTmpl, rogueTmpl, rogueKey.Public(), rogueKey)
	rogue, _ := x509.ParseCertificate(rogueDER)
	noName, _ := est.MarshalFirmwareError(hw.ID, []byte{1}, 34, nil)
	noNameCI, _ := cms.ContentInfo(est.OIDFirmwareLoadError, noName)
	const cmsType = "application/cms"
	for _, tc := range []struct {
		name  string
		who   *tls.Certificate
		label string
		body  []byte
		want  int
	}{
		{"attack: anonymous", nil, "", receiptBy(ecA, leaf(devA)), http.StatusUnauthorized},
		{"attack: C never fetched it", devC, "", receiptBy(ecC, leaf(devC)), http.StatusConflict},
		{"attack: B of another label", devB, "devices", receiptBy(ecB, leaf(devB)), http.StatusNotFound},
		{"attack: A's receipt signed with C's certificate", devA, "", receiptBy(ecC, leaf(devC)), http.StatusForbidden},
		{"attack: signed by a rogue key with A's name", devA, "", receiptBy(rogueKey, rogue), http.StatusForbidden},
		{"attack: malformed", devA, "", []byte{0x30, 0x03, 0x06, 0x01, 0x00}, http.StatusBadRequest},
		{"attack: an error naming no package", devA, "", noNameCI, http.StatusBadRequest},
	} {
		t.Run("return/"+tc.name, func(t *testing.T) {
			before := deliveries()
			r := estDo(t, s, tc.who, 0, "POST", s.estURL(tc.label)+"/firmware/return", cmsType, b64(tc.body))
			if r.status != tc.want {
				t.Fatalf("status %d (%s), want %d", r.status, strings.TrimSpace(string(r.body)), tc.want)
			}
			if after := deliveries(); after != before {
				t.Fatalf("deliveries changed: %s → %s", before, after)
			}
		})
	}

	// Our client refuses the package (`--error`, RFC 8295 §6.2, RFC 4108 §4): a code RFC 4108
	// does not define is refused before anything is fetched; a real code writes no image, the
	// server stores the signed load error and offers the package again.
	sub := filepath.Join(dir, "a")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	certA := writePair(t, sub, devA)
	out := filepath.Join(dir, "written.bin")
	serialA := leaf(devA).SerialNumber.Text(16)
	for _, tc := range []struct{ name, code, want, deliveries string }{
		{"attack: a code RFC 4108 does not define", "noSuchError", "not an RFC 4108", serialA + ":;"},
		{"attack: --error with --no-receipt", "badFirmware --no-receipt", "exclude each other", serialA + ":;"},
		{"the image is bad", "badFirmware", "the server took the error badFirmware", serialA + ":error;"},
	} {
		t.Run("client-error/"+tc.name, func(t *testing.T) {
			args := append([]string{"est", "firmware", "--server", s.estURL(""), "--trust", d.Root, "--cert", certA,
				"--key", filepath.Join(sub, "b.key"), "--out", out, "--error"}, strings.Fields(tc.code)...)
			_, errOut, code := cli(ctx, args...)
			if ok := code == 0; ok != !strings.HasPrefix(tc.name, "attack") || !strings.Contains(errOut, tc.want) {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Fatalf("an image was written: %v", err)
			}
			if got := deliveries(); got != tc.deliveries {
				t.Fatalf("deliveries: %s, want %s", got, tc.deliveries)
			}
		})
	}
	if got := strings.Join(palTypes(t, s, devA, ""), " "); got != "0002 0005 0003 0026" {
		t.Fatalf("A's PAL after its error: %q, want the package offered again, undated", got)
	}

	// Our client: fetch, verify, write, return the signed receipt.
	if _, errOut, code := cli(ctx, "est", "firmware", "--server", s.estURL(""), "--trust", d.Root, "--cert", certA,
		"--key", filepath.Join(sub, "b.key"), "--out", out); code != 0 || !strings.Contains(errOut, "the server took the receipt") {
		t.Fatalf("est firmware: exit %d: %s", code, errOut)
	}
	if written, err := os.ReadFile(out); err != nil || !bytes.Equal(written, image) {
		t.Fatalf("image written: %d bytes, %v", len(written), err)
	}
	if got := strings.Join(palTypes(t, s, devA, ""), " "); got != "0002 0005 0003 0026@" {
		t.Fatalf("A's PAL after the receipt: %q", got)
	}
	if got := deliveries(); got != leaf(devA).SerialNumber.Text(16)+":receipt;" {
		t.Fatalf("deliveries: %s", got)
	}
	if list, errOut, code := cli(ctx, "ca", "firmware", "list", "--data", s.data.Dir); code != 0 || !strings.Contains(list, fwName) ||
		!strings.Contains(list, "receipt") {
		t.Fatalf("ca firmware list: exit %d:\n%s%s", code, list, errOut)
	}
}

// TestESTHTTPSTAMP: /tamp and /tamp/return (RFC 8295 §7, RFC 5934) over real loopback HTTPS.
// The operator issues a status query for one client and a trust anchor update for a label
// (`coapca ca tamp`), each signed with the server's key and a fresh sequence number; each
// message verifies with `openssl cms -verify` to the root, is served under its
// application/tamp-* media type and parses as that kind; the PAL lists them (0028, 0030), asks
// for the answers (0029, 0031) and dates them once confirmed. Refused, with a 4xx and nothing
// recorded: anonymous, another label, a wrong media type, a body of another kind than its
// media type, a confirm for a message never fetched, responses signed by another client or a
// rogue key, an error naming no message. Our client (`coapca est tamp`) answers both.
func TestESTHTTPSTAMP(t *testing.T) {
	openssl := "openssl"
	need(t, openssl)
	s := httpsServer(t)
	ctx := context.Background()
	dir := t.TempDir()
	d := s.data.Paths
	ecA, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecB, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	devA, devC := ldevidFor(t, s, ecA, "tamp-a"), ldevidFor(t, s, ecB, "tamp-c")
	csrB, _ := est.CreateCSR(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "tamp-b"}}, ecB, "")
	certB := issuedCert(t, estDo(t, s, demoDevice(t, s), 0, "POST", s.estURL("devices")+"/simpleenroll", "application/pkcs10", b64(csrB)))
	devB := &tls.Certificate{Certificate: [][]byte{certB.Raw, s.data.IssuingChain()[0].Raw}, PrivateKey: ecB}
	leaf := func(c *tls.Certificate) *x509.Certificate { return mustLeaf(t, c) }
	// A new trust anchor to distribute.
	taKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	taTmpl := &x509.Certificate{SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: "New Root"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(1, 0, 0)}
	taDER, _ := x509.CreateCertificate(rand.Reader, taTmpl, taTmpl, taKey.Public(), taKey)
	taFile := filepath.Join(dir, "new-root.pem")
	if err := os.WriteFile(taFile, pemBlock("CERTIFICATE", taDER), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"status-query", "--to", "serial:" + leaf(devA).SerialNumber.Text(16), "--terse"},
		{"update", "--to", "label:", "--add-ta", taFile},
	} {
		if out, errOut, code := cli(ctx, append([]string{"ca", "tamp", "--data", s.data.Dir}, args...)...); code != 0 || !strings.Contains(out, "queued TAMP") {
			t.Fatalf("ca tamp %v: exit %d: %s%s", args, code, out, errOut)
		}
	}
	pkgs, err := s.auth.ListPackages(ctx, authority.PackageTAMP, 0)
	if err != nil || len(pkgs) != 2 || pkgs[0].Name != "status-query#1" || pkgs[1].Name != "update#2" {
		t.Fatalf("queued: %+v, %v", pkgs, err)
	}
	deliveries := func() string {
		var b strings.Builder
		for _, p := range pkgs {
			ds, _ := s.auth.PackageDeliveries(ctx, p.ID)
			for _, d := range ds {
				b.WriteString(p.Name + "/" + d.ClientSerial + ":" + d.ReturnKind + ";")
			}
		}
		return b.String()
	}
	if got := strings.Join(palTypes(t, s, devA, ""), " "); got != "0002 0005 0003 0028 0030" {
		t.Fatalf("A's PAL: %q", got)
	}
	if got := strings.Join(palTypes(t, s, devB, "devices"), " "); got != "0002 0005 0003" {
		t.Fatalf("B's PAL: %q", got)
	}
	if r := estDo(t, s, nil, 0, "GET", s.estURL("")+"/tamp", "", nil); r.status != http.StatusUnauthorized {
		t.Fatalf("anonymous /tamp: %d", r.status)
	}
	if r := estDo(t, s, devB, 0, "GET", s.estURL("devices")+"/tamp", "", nil); r.status != http.StatusNotFound {
		t.Fatalf("B's /tamp: %d", r.status)
	}

	// A fetches the status query: signed, verified by openssl, of the announced kind.
	r := estDo(t, s, devA, 0, "GET", s.estURL("")+"/tamp", "", nil)
	if r.status != http.StatusOK || r.header.Get("Content-Type") != "application/tamp-status-query" {
		t.Fatalf("/tamp: status %d, Content-Type %q: %s", r.status, r.header.Get("Content-Type"), r.body)
	}
	der, _ := base64.StdEncoding.DecodeString(string(r.body))
	msgFile, content := filepath.Join(dir, "tamp.p7"), filepath.Join(dir, "tamp.der")
	if err := os.WriteFile(msgFile, der, 0o600); err != nil {
		t.Fatal(err)
	}
	mustRun(t, openssl, "cms", "-verify", "-binary", "-inform", "DER", "-in", msgFile, "-CAfile", d.Root, "-purpose", "any", "-out", content)
	raw, _ := os.ReadFile(content)
	q, err := est.ParseTAMP(est.TAMPStatusQuery, raw)
	if err != nil || q.SeqNum != 1 || !q.Terse || q.Target != nil {
		t.Fatalf("status query: %+v, %v", q, err)
	}
	if got := strings.Join(palTypes(t, s, devA, ""), " "); got != "0002 0005 0003 0028 0029 0030" {
		t.Fatalf("A's PAL after the fetch: %q", got)
	}

	now := time.Now()
	signed := func(m *est.TAMPMessage, key crypto.Signer, c *x509.Certificate) []byte {
		der, err := est.SignTAMP(rand.Reader, m, key, []*x509.Certificate{c}, now)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	statusResp := &est.TAMPMessage{Kind: est.TAMPStatusResponse, SeqNum: 1, HasRef: true, KeyIDs: [][]byte{{1, 2, 3}}}
	confirm2 := &est.TAMPMessage{Kind: est.TAMPUpdateConfirm, SeqNum: 2, HasRef: true, Status: []int{0}}
	noRef := &est.TAMPMessage{Kind: est.TAMPError, MsgType: est.OIDTAMPStatusQuery, Status: []int{1}}
	rogueKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rogueTmpl := &x509.Certificate{SerialNumber: leaf(devA).SerialNumber, Subject: leaf(devA).Subject, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}
	rogueDER, _ := x509.CreateCertificate(rand.Reader, rogueTmpl, rogueTmpl, rogueKey.Public(), rogueKey)
	rogue, _ := x509.ParseCertificate(rogueDER)
	const respType, confirmType = "application/tamp-status-response", "application/tamp-update-confirm"
	for _, tc := range []struct {
		name, ct string
		who      *tls.Certificate
		label    string
		body     []byte
		want     int
	}{
		{"attack: anonymous", respType, nil, "", signed(statusResp, ecA, leaf(devA)), http.StatusUnauthorized},
		{"attack: a wrong media type", "application/cms", devA, "", signed(statusResp, ecA, leaf(devA)), http.StatusUnsupportedMediaType},
		{"attack: a request media type", "application/tamp-update", devA, "", signed(statusResp, ecA, leaf(devA)), http.StatusUnsupportedMediaType},
		{"attack: a body of another kind than its media type", confirmType, devA, "", signed(statusResp, ecA, leaf(devA)), http.StatusBadRequest},
		{"attack: confirm of an update never fetched", confirmType, devA, "", signed(confirm2, ecA, leaf(devA)), http.StatusConflict},
		{"attack: C's signature on A's response", respType, devA, "", signed(statusResp, ecB, leaf(devC)), http.StatusForbidden},
		{"attack: a rogue key with A's name", respType, devA, "", signed(statusResp, rogueKey, rogue), http.StatusForbidden},
		{"attack: C answers A's status query", respType, devC, "", signed(statusResp, ecB, leaf(devC)), http.StatusNotFound},
		{"attack: B of another label", respType, devB, "devices", signed(statusResp, ecB, leaf(devB)), http.StatusNotFound},
		{"attack: an error naming no message", "application/tamp-error", devA, "", signed(noRef, ecA, leaf(devA)), http.StatusBadRequest},
		{"attack: malformed", respType, devA, "", []byte{0x30, 0x03, 0x06, 0x01, 0x00}, http.StatusBadRequest},
	} {
		t.Run("return/"+tc.name, func(t *testing.T) {
			before := deliveries()
			r := estDo(t, s, tc.who, 0, "POST", s.estURL(tc.label)+"/tamp/return", tc.ct, b64(tc.body))
			if r.status != tc.want {
				t.Fatalf("status %d (%s), want %d", r.status, strings.TrimSpace(string(r.body)), tc.want)
			}
			if after := deliveries(); after != before {
				t.Fatalf("deliveries changed: %s → %s", before, after)
			}
		})
	}

	// Our client answers the status query, then the update (writing the new trust anchor).
	sub := filepath.Join(dir, "a")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	certA, keyA := writePair(t, sub, devA), filepath.Join(sub, "b.key")
	tamp := func(extra ...string) (string, string, int) {
		return cli(ctx, append([]string{"est", "tamp", "--server", s.estURL(""), "--trust", d.Root, "--cert", certA, "--key", keyA}, extra...)...)
	}
	if out, errOut, code := tamp(); code != 0 || !strings.Contains(out, "status-query, sequence number 1") ||
		!strings.Contains(errOut, "took the TAMP status-response") {
		t.Fatalf("est tamp (status query): exit %d:\n%s%s", code, out, errOut)
	}
	newTA := filepath.Join(dir, "added.pem")
	if out, errOut, code := tamp("--out", newTA); code != 0 || !strings.Contains(out, "add trust anchor CN=New Root") ||
		!strings.Contains(errOut, "took the TAMP update-confirm") {
		t.Fatalf("est tamp (update): exit %d:\n%s%s", code, out, errOut)
	}
	if got := readCert(t, newTA); !bytes.Equal(got.Raw, taDER) {
		t.Fatal("the written trust anchor is not the distributed one")
	}
	if got := strings.Join(palTypes(t, s, devA, ""), " "); got != "0002 0005 0003 0028@ 0030@" {
		t.Fatalf("A's PAL after the confirms: %q", got)
	}
	if _, errOut, code := tamp(); code == 0 || !strings.Contains(errOut, "404") {
		t.Fatalf("est tamp with nothing waiting: exit %d: %s", code, errOut)
	}
	// C answers the update with a TAMP error: recorded as an error with its status.
	certC := writePair(t, t.TempDir(), devC)
	if _, errOut, code := cli(ctx, "est", "tamp", "--server", s.estURL(""), "--trust", d.Root, "--cert", certC,
		"--key", filepath.Join(filepath.Dir(certC), "b.key"), "--error", "seqNumFailure"); code != 0 || !strings.Contains(errOut, "took the TAMP error") {
		t.Fatalf("est tamp --error: exit %d: %s", code, errOut)
	}
	if list, errOut, code := cli(ctx, "ca", "tamp", "list", "--data", s.data.Dir); code != 0 || !strings.Contains(list, "seqNumFailure") ||
		strings.Count(list, "receipt") != 2 {
		t.Fatalf("ca tamp list: exit %d:\n%s%s", code, list, errOut)
	}

	// Every other kind the operator can issue verifies with openssl to the root as stored (and
	// so as served) and parses as its kind, with a fresh sequence number.
	for _, args := range [][]string{
		{"apex-update", "--apex", taFile, "--clear-tas"},
		{"community-update", "--add-community", "1.3.6.1.4.1.99999.7", "--remove-community", "1.3.6.1.4.1.99999.8"},
		{"sequence-adjust"},
	} {
		if out, errOut, code := cli(ctx, append([]string{"ca", "tamp", "--data", s.data.Dir, "--to", "serial:" + certB.SerialNumber.Text(16)}, args...)...); code != 0 {
			t.Fatalf("ca tamp %v: exit %d: %s%s", args, code, out, errOut)
		}
	}
	all, err := s.auth.ListPackages(ctx, authority.PackageTAMP, 0)
	if err != nil || len(all) != 5 {
		t.Fatalf("queued: %d, %v", len(all), err)
	}
	for i, p := range all {
		kindName, _, _ := strings.Cut(p.Name, "#")
		kind, _ := est.TAMPKindByName(kindName)
		in, out := filepath.Join(dir, "m.p7"), filepath.Join(dir, "m.der")
		if err := os.WriteFile(in, p.Content, 0o600); err != nil {
			t.Fatal(err)
		}
		mustRun(t, openssl, "cms", "-verify", "-binary", "-inform", "DER", "-in", in, "-CAfile", d.Root, "-purpose", "any", "-out", out)
		raw, _ := os.ReadFile(out)
		m, err := est.ParseTAMP(kind, raw)
		if err != nil || m.SeqNum != int64(i+1) {
			t.Fatalf("%s: %+v, %v", p.Name, m, err)
		}
	}
}
