package client

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"mime/multipart"
	"net/textproto"
	"strings"
	"testing"

	"coapca/est"
	"coapca/internal/testpki"
)

// serverKeyGenAnswer builds a /serverkeygen answer from (Content-Type, DER) parts.
func serverKeyGenAnswer(t testing.TB, parts ...[2]any) (string, []byte) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range parts {
		h := textproto.MIMEHeader{}
		h.Set("Content-Type", p[0].(string))
		h.Set("Content-Transfer-Encoding", "base64")
		w, err := mw.CreatePart(h)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(base64.StdEncoding.EncodeToString(p[1].([]byte))))
	}
	mw.Close()
	return "multipart/mixed; boundary=" + mw.Boundary(), buf.Bytes()
}

func keyAndCert(t testing.TB) (p8, certsOnly []byte) {
	k := testpki.NewKey(t)
	c := testpki.SelfSigned(t, &x509.Certificate{Subject: pkix.Name{CommonName: "skg"}}, k)
	p8, _ = x509.MarshalPKCS8PrivateKey(k)
	certsOnly, _ = est.EncodeCertsOnly([]*x509.Certificate{c})
	return p8, certsOnly
}

func TestParseServerKeyGen(t *testing.T) {
	p8, co := keyAndCert(t)
	key := [2]any{"application/pkcs8", p8}
	cert := [2]any{"application/pkcs7-mime; smime-type=certs-only", co}
	tests := []struct {
		name    string
		parts   [][2]any
		ct      string // overrides the Content-Type
		wantErr string
	}{
		{"key then certificate", [][2]any{key, cert}, "", ""},
		{"certificate then key", [][2]any{cert, key}, "", ""},
		{"encrypted key", [][2]any{{"application/pkcs7-mime; smime-type=server-generated-key", []byte{0x30, 0}}, cert}, "", "CMS-encrypted"},
		{"no key", [][2]any{cert}, "", "lacks"},
		{"garbage key", [][2]any{{"application/pkcs8", []byte{1, 2, 3}}, cert}, "", "private key"},
		{"too many parts", [][2]any{key, cert, cert, cert, cert}, "", "more than"},
		{"not multipart", [][2]any{key, cert}, "application/pkcs7-mime", "want multipart/mixed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ct, body := serverKeyGenAnswer(t, tc.parts...)
			if tc.ct != "" {
				ct = tc.ct
			}
			sk, err := ParseServerKeyGen(ct, body, nil)
			if tc.wantErr == "" {
				if err != nil || sk.Cert == nil || !bytes.Equal(sk.PKCS8, p8) {
					t.Fatalf("%v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// FuzzParseServerKeyGen: whatever a server answers, the parser returns a result or an
// error, never panics, and a result always has both the key and the certificate.
func FuzzParseServerKeyGen(f *testing.F) {
	p8, co := keyAndCert(f)
	ct, body := serverKeyGenAnswer(f, [2]any{"application/pkcs8", p8}, [2]any{"application/pkcs7-mime; smime-type=certs-only", co})
	boundary := strings.TrimPrefix(ct, "multipart/mixed; boundary=")
	f.Add(boundary, body)
	f.Add("x", []byte("--x\r\nContent-Type: application/pkcs8\r\n\r\nAAAA\r\n--x--\r\n"))
	f.Fuzz(func(t *testing.T, boundary string, body []byte) {
		sk, err := ParseServerKeyGen("multipart/mixed; boundary=\""+boundary+"\"", body, nil)
		if err == nil && (sk.Key == nil || sk.Cert == nil) {
			t.Fatal("a result without key or certificate")
		}
	})
}
