package registrar

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"mime/multipart"
	"net/textproto"
	"testing"

	"coapca/est"
	"coapca/internal/testpki"
	"coapca/kms"
)

// FuzzParseServerKey feeds the /serverkeygen answer parser (bytes from the upstream, RFC 7030
// §4.4.2) arbitrary Content-Types and bodies: it never panics, and what it accepts has exactly
// one key form and a certificate, which re-encode to the Content-Formats the binding sends.
func FuzzParseServerKey(f *testing.F) {
	ca := testpki.NewCA(f, "fuzz CA")
	key, _ := kms.GenerateP256()
	p8, _ := est.MarshalPKCS8(key)
	leaf := ca.Issue(f, &x509.Certificate{Subject: pkix.Name{CommonName: "dev"}}, key.Public())
	certsOnly, _ := est.EncodeCertsOnly(append(ca.Chain[:0:0], leaf))
	for _, keyPart := range []struct{ ct, der string }{
		{"application/pkcs8", string(p8)},
		{"application/pkcs7-mime; smime-type=server-generated-key", "opaque"},
	} {
		var body bytes.Buffer
		mw := multipart.NewWriter(&body)
		pw, _ := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {keyPart.ct}})
		pw.Write([]byte(base64.StdEncoding.EncodeToString([]byte(keyPart.der))))
		pw, _ = mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/pkcs7-mime; smime-type=certs-only"}})
		pw.Write([]byte(base64.StdEncoding.EncodeToString(certsOnly)))
		mw.Close()
		f.Add("multipart/mixed; boundary="+mw.Boundary(), body.Bytes())
	}
	f.Add("multipart/mixed; boundary=x", []byte("--x\r\nContent-Type: application/pkcs8\r\n\r\n!!\r\n--x--\r\n"))
	f.Add("text/plain", []byte("hello"))
	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		sk, err := parseServerKey(contentType, body)
		if err != nil {
			return
		}
		if sk.Issued == nil || sk.Issued.Cert == nil || (sk.PKCS8 == nil) == (sk.Encrypted == nil) {
			t.Fatalf("accepted an answer without exactly one key and a certificate: %+v", sk)
		}
		keyPart := est.Part{ContentFormat: est.CFPKCS8, Body: sk.PKCS8}
		if sk.Encrypted != nil {
			keyPart = est.Part{ContentFormat: est.CFPKCS7ServerKey, Body: sk.Encrypted}
		}
		enc, err := est.EncodeMultipart([]est.Part{keyPart, {ContentFormat: est.CFPKIXCert, Body: sk.Issued.Cert.Raw}})
		if err != nil {
			t.Fatal(err)
		}
		parts, err := est.ParseMultipart(enc)
		if err != nil || len(parts) != 2 || !bytes.Equal(parts[0].Body, keyPart.Body) {
			t.Fatalf("re-encoding does not round-trip: %v", err)
		}
	})
}
