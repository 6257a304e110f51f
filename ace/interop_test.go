package ace

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"
)

// coseJS finds the cose-js installation that scripts/test.sh makes (npm install --prefix
// $COAPCA_COSEJS_DIR cose-js). In CI a missing peer fails the test; elsewhere it skips.
func coseJS(t *testing.T) (node, nodePath string) {
	t.Helper()
	dir := os.Getenv("COAPCA_COSEJS_DIR")
	if dir == "" {
		dir = "/var/cache/coapca/cose-js"
	}
	node, err := exec.LookPath("node")
	_, serr := os.Stat(filepath.Join(dir, "node_modules", "cose-js", "package.json"))
	if err != nil || serr != nil {
		msg := "cose-js (npm) is not installed in " + dir + " or node is missing: run scripts/test.sh, which installs it"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return node, filepath.Join(dir, "node_modules")
}

// TestCOSEInteropCoseJS: the access tokens' COSE layer against an independent implementation,
// both ways: cose-js verifies (and decrypts) what coapca's AS makes — COSE_Encrypt0
// AES-CCM-16-64-128, COSE_Mac0 HMAC 256/64 and 256/256, COSE_Sign1 ES256 — and coapca's
// resource server verifies what cose-js makes with the same keys, down to the CWT claims.
func TestCOSEInteropCoseJS(t *testing.T) {
	node, nodePath := coseJS(t)
	keys := testKeys(t)
	names := make([]string, 0, len(keys))
	for n := range keys {
		names = append(names, n)
	}
	sort.Strings(names)
	claims := &Claims{Issuer: "as1", Subject: "client-1", Audience: []string{"coapca-rs"}, CTI: []byte{1, 2},
		Expires: time.Unix(1893456000, 0).UTC(), Scope: "est",
		OSCORE: &InputMaterial{ID: []byte{1}, MasterSecret: bytes.Repeat([]byte{7}, 16), Salt: []byte{1, 2, 3}}}
	payload := claims.Marshal()
	type tcase struct {
		Alg     int    `json:"alg"`
		KID     string `json:"kid"`
		Key     string `json:"key,omitempty"`
		D       string `json:"d,omitempty"`
		X       string `json:"x,omitempty"`
		Y       string `json:"y,omitempty"`
		Payload string `json:"payload"`
		Token   string `json:"token"`
	}
	var in struct {
		Cases []tcase `json:"cases"`
	}
	for _, n := range names {
		k := keys[n]
		tok, err := Protect(payload, k, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		c := tcase{Alg: k.Alg, KID: string(k.KID), Payload: hex.EncodeToString(payload), Token: hex.EncodeToString(tok)}
		if k.Alg == AlgES256 {
			d, err := k.PrivateKey.Bytes()
			if err != nil {
				t.Fatal(err)
			}
			pub, err := k.PublicKey.Bytes() // 0x04 | X | Y
			if err != nil {
				t.Fatal(err)
			}
			c.D, c.X, c.Y = hex.EncodeToString(d), hex.EncodeToString(pub[1:33]), hex.EncodeToString(pub[33:])
		} else {
			c.Key = hex.EncodeToString(k.Secret)
		}
		in.Cases = append(in.Cases, c)
	}
	b, _ := json.Marshal(in)
	cmd := exec.Command(node, filepath.Join("testdata", "cosejs_interop.js"))
	cmd.Env = append(os.Environ(), "NODE_PATH="+nodePath)
	cmd.Stdin = bytes.NewReader(b)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cose-js: %v\n%s", err, stderr.String())
	}
	var res []struct{ Made, Read string }
	if err := json.Unmarshal(out, &res); err != nil || len(res) != len(names) {
		t.Fatalf("cose-js output %s: %v", out, err)
	}
	for i, n := range names {
		t.Run(n, func(t *testing.T) {
			if res[i].Read != hex.EncodeToString(payload) {
				t.Fatalf("cose-js read %s from coapca's token, want the claims", res[i].Read)
			}
			made, err := hex.DecodeString(res[i].Made)
			if err != nil {
				t.Fatal(err)
			}
			verify := keys[n]
			verify.PrivateKey = nil
			got, _, err := Open(made, []Key{verify})
			if err != nil {
				t.Fatalf("coapca cannot open cose-js's token %x: %v", made, err)
			}
			c, err := ParseClaims(got)
			if err != nil || c.Subject != "client-1" || !bytes.Equal(c.OSCORE.MasterSecret, claims.OSCORE.MasterSecret) {
				t.Fatalf("claims from cose-js's token: %+v %v", c, err)
			}
		})
	}
}
