package est

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"coapca/errs"
	"coapca/internal/testpki"
)

func readVector(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// RFC 9148 A.1: the /crts response parses, and re-encoding its certificate gives the same bytes.
func TestCertsOnlyVectors(t *testing.T) {
	for _, tc := range []struct {
		file    string
		n       int
		subject string
	}{
		{"a1-crts-response-281.der", 1, ""},
		{"a3-skg-cert-281.der", 1, "skg example"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			der := readVector(t, tc.file)
			certs, err := ParseCertsOnly(der)
			if err != nil {
				t.Fatal(err)
			}
			if len(certs) != tc.n {
				t.Fatalf("got %d certs, want %d", len(certs), tc.n)
			}
			if tc.subject != "" && !strings.Contains(certs[0].Subject.String(), tc.subject) {
				t.Errorf("subject %q lacks %q", certs[0].Subject, tc.subject)
			}
			again, err := EncodeCertsOnly(certs)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(again, der) {
				t.Errorf("re-encoding differs:\n got %x\nwant %x", again, der)
			}
		})
	}
}

func TestCertsOnlyRoundTripOrder(t *testing.T) {
	a, b := testpki.NewCA(t, "a").Cert, testpki.NewCA(t, "b").Cert
	der, err := EncodeCertsOnly([]*x509.Certificate{a, b})
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseCertsOnly(der)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !got[0].Equal(a) || !got[1].Equal(b) {
		t.Fatal("order or content not preserved")
	}
	if _, err := EncodeCertsOnly(nil); err == nil {
		t.Error("encoding no certificates should fail")
	}
}

func TestCertsOnlyRejects(t *testing.T) {
	good := readVector(t, "a1-crts-response-281.der")
	for name, in := range map[string][]byte{
		"empty":     nil,
		"garbage":   []byte("hello"),
		"truncated": good[:len(good)-3],
		"trailing":  append(append([]byte{}, good...), 0),
		"wrongtype": mustHex(t, "300f06092a864886f70d010701a0020400"),
	} {
		if _, err := ParseCertsOnly(in); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// RFC 9148 §4.3 and A.3: byte-exact multipart-core layout.
func TestMultipartVectors(t *testing.T) {
	t.Run("sec5.3", func(t *testing.T) {
		want := readVector(t, "sec5.3-multipart-example-62.cbor")
		got, err := EncodeMultipart([]Part{
			{ContentFormat: 284, Body: mustHex(t, "0123456789abcdef")},
			{ContentFormat: 281, Body: mustHex(t, "fedcba9876543210")},
		})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("got %x want %x", got, want)
		}
	})
	t.Run("a3", func(t *testing.T) {
		want := readVector(t, "a3-skg-response-62.cbor")
		key := readVector(t, "a3-skg-private-key-284.der")
		cert := readVector(t, "a3-skg-cert-281.der")
		got, err := EncodeMultipart([]Part{{ContentFormat: CFPKCS8, Body: key}, {ContentFormat: CFPKCS7CertsOnly, Body: cert}})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatal("A.3 re-encoding differs")
		}
		parts, err := ParseMultipart(want)
		if err != nil {
			t.Fatal(err)
		}
		if len(parts) != 2 || parts[0].ContentFormat != 284 || !bytes.Equal(parts[0].Body, key) ||
			parts[1].ContentFormat != 281 || !bytes.Equal(parts[1].Body, cert) {
			t.Fatalf("parsed %+v", parts)
		}
		if _, err := x509.ParsePKCS8PrivateKey(parts[0].Body); err != nil {
			t.Errorf("A.3 key: %v", err)
		}
	})
}

func TestMultipartParseErrors(t *testing.T) {
	for _, tc := range []struct{ name, hex string }{
		{"empty", ""},
		{"not array", "a0"},
		{"odd", "8119011c"},
		{"negative ct", "822040"},
		{"text part", "82011c60"},
		{"ct too big", "821a0001000040"},
		{"trailing", "8000"},
		{"truncated", "8219011c48"},
	} {
		if _, err := ParseMultipart(mustHex(t, tc.hex)); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	parts, err := ParseMultipart(mustHex(t, "82183cf6")) // [60, null]
	if err != nil || len(parts) != 1 || !parts[0].Null {
		t.Errorf("null part: %v %+v", err, parts)
	}
	parts, err = ParseMultipart(mustHex(t, "80"))
	if err != nil || len(parts) != 0 {
		t.Errorf("empty array: %v %+v", err, parts)
	}
}

// Every CsrAttrs published with RFC 9908 and the RFC 9148 A.4 example parse and render, and
// re-encode to the same bytes.
func TestCsrAttrsVectors(t *testing.T) {
	for _, tc := range []struct {
		file     string
		items    int
		pw       bool
		keyType  string
		sigAlg   x509.SignatureAlgorithm
		contains []string
	}{
		{"a4-att-response-285.der", 6, true, "", x509.UnknownSignatureAlgorithm,
			[]string{"macAddress", "2.999.1", `"Parse SET as 2.999.1 data"`, "2.999.3", "brainpoolP384r1", "sha384"}},
		{"rfc7030-example01.csrattr.der", 4, true, "P-384", x509.ECDSAWithSHA384, []string{"macAddress", "secp384r1"}},
		{"harkins01.csrattr.der", 3, true, "RSA-4096", x509.SHA256WithRSA, []string{"rsaEncryption", "4096"}},
		{"harkins02.csrattr.der", 4, true, "P-384", x509.ECDSAWithSHA384, []string{"serialNumber"}},
		{"harkins03.csrattr.der", 6, true, "P-521", x509.ECDSAWithSHA512, []string{"friendlyName", "0.9.2342.19200300.100.1.5"}},
		{"potato-example.csrattr.der", 6, true, "P-521", x509.ECDSAWithSHA512, []string{"secp521r1"}},
		{"realistic-acp.csrattr.der", 1, false, "", x509.UnknownSignatureAlgorithm,
			[]string{"extensionRequest", "subjectAltName", "[critical]", "id-on-AcpNodeName", "rfc8994+fd739fc23c34401122334455" + "00000000+@acp.example.com"}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			der := readVector(t, tc.file)
			a, err := ParseCsrAttrs(der)
			if err != nil {
				t.Fatal(err)
			}
			if len(a.Items) != tc.items {
				t.Errorf("items = %d, want %d", len(a.Items), tc.items)
			}
			if a.WantsChallengePassword() != tc.pw {
				t.Errorf("WantsChallengePassword = %v", !tc.pw)
			}
			if a.KeyType() != tc.keyType {
				t.Errorf("KeyType = %q, want %q", a.KeyType(), tc.keyType)
			}
			if a.SignatureAlgorithm() != tc.sigAlg {
				t.Errorf("SignatureAlgorithm = %v, want %v", a.SignatureAlgorithm(), tc.sigAlg)
			}
			s := a.String()
			for _, c := range tc.contains {
				if !strings.Contains(s, c) {
					t.Errorf("String() lacks %q:\n%s", c, s)
				}
			}
			again, err := a.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(again, der) {
				t.Errorf("re-encoding differs:\n got %x\nwant %x", again, der)
			}
		})
	}
}

func TestCsrAttrsEncodeRFC9908Style(t *testing.T) {
	ku, _ := asn1.Marshal(asn1.BitString{Bytes: []byte{0x80}, BitLength: 1})
	a, err := NewCsrAttrs(CsrAttrsTemplate{
		ChallengePassword: true, KeyType: "P-256", SignatureAlgorithm: x509.ECDSAWithSHA256,
		Extensions: []pkix.Extension{{Id: oidKeyUsage, Critical: true, Value: ku}},
	})
	if err != nil {
		t.Fatal(err)
	}
	der, err := a.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseCsrAttrs(der)
	if err != nil {
		t.Fatal(err)
	}
	if !b.WantsChallengePassword() || b.KeyType() != "P-256" || b.SignatureAlgorithm() != x509.ECDSAWithSHA256 {
		t.Fatalf("round trip lost data:\n%s", b)
	}
	if exts := b.Extensions(); len(exts) != 1 || !exts[0].Id.Equal(oidKeyUsage) || !exts[0].Critical {
		t.Fatalf("extensions: %+v", exts)
	}
	if !strings.Contains(b.String(), "digitalSignature") {
		t.Errorf("String():\n%s", b)
	}
	if _, err := NewCsrAttrs(CsrAttrsTemplate{KeyType: "P-999"}); err == nil {
		t.Error("unknown key type accepted")
	}
}

func TestCsrAttrsRejects(t *testing.T) {
	for name, h := range map[string]string{
		"not a sequence":  "0400",
		"integer element": "3003020101",
		"attr no set":     "300d300b06092a864886f70d010907",
		"attr empty set":  "300f300d06092a864886f70d0109073100",
		"trailing":        "300000",
		"truncated":       "3005060103",
	} {
		if _, err := ParseCsrAttrs(mustHex(t, h)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if a, err := ParseCsrAttrs(nil); err != nil || len(a.Items) != 0 {
		t.Errorf("empty payload: %v", err)
	}
}

// RFC 9148 A.2: the CSR parses, verifies, carries a challengePassword and an
// id-on-hardwareModuleName SAN.
func TestCSRVectorA2(t *testing.T) {
	csr, err := ParseCSR(readVector(t, "a2-sen-request-286.der"), true)
	if err != nil {
		t.Fatal(err)
	}
	pw, ok, err := ChallengePassword(csr)
	if err != nil || !ok {
		t.Fatalf("challengePassword: %v %v", ok, err)
	}
	if len(pw) != 37 || !strings.HasPrefix(string(pw), "vCv0)*&JKJ;") {
		t.Errorf("challengePassword = %q", pw)
	}
	var found bool
	for _, e := range csr.Extensions {
		if e.Id.Equal(oidSubjectAltName) {
			s, err := describeGeneralNames(e.Value)
			if err != nil {
				t.Fatal(err)
			}
			found = strings.Contains(s, "id-on-hardwareModuleName")
		}
	}
	if !found {
		t.Error("no hardwareModuleName SAN")
	}
	hw, err := HardwareModuleNames(csr.Extensions)
	if err != nil || len(hw) != 1 || hw[0].Type.String() != "1.3.6.1.4.1.6715.10.1" || hex.EncodeToString(hw[0].Serial) != "01020304" {
		t.Errorf("hardwareModuleName: %v %+v", err, hw)
	}
	if !strings.Contains(csr.Subject.String(), "SERIALNUMBER=Wt1234") {
		t.Errorf("subject %s", csr.Subject)
	}
	if _, enc := EncryptedKeyRequest(csr); enc {
		t.Error("A.2 does not ask for an encrypted key")
	}
}

func TestCSRVectorA3(t *testing.T) {
	csr, err := ParseCSR(readVector(t, "a3-skg-request-286.der"), false)
	if err != nil {
		t.Fatal(err)
	}
	if csr.Subject.Organization[0] != "skg example" {
		t.Errorf("subject %s", csr.Subject)
	}
	if _, ok, _ := ChallengePassword(csr); ok {
		t.Error("A.3 has no challengePassword")
	}
}

// maxCSRDiagnostic bounds what ParseCSR's diagnostics may grow to (the longest is the
// signature message with two algorithm names and a reason).
const maxCSRDiagnostic = 160

func TestParseCSRDiagnostics(t *testing.T) {
	good := readVector(t, "a2-sen-request-286.der")
	bad := append([]byte{}, good...)
	bad[len(bad)-5] ^= 0xff // corrupt the signature
	for _, tc := range []struct {
		name string
		in   []byte
		kind errs.Kind
		msg  string
	}{
		{"empty", nil, errs.BadRequest, "empty"},
		{"pem", []byte("-----BEGIN CERTIFICATE REQUEST-----"), errs.BadRequest, "PEM"},
		{"garbage", []byte{0x30, 0x03, 1, 2, 3}, errs.BadRequest, "malformed CSR: not a DER PKCS#10 request (ASN.1 structure error: tags don't match)"},
		// DER, but an INTEGER where the CertificationRequestInfo SEQUENCE belongs: encoding/asn1
		// answers "tags don't match (16 vs {class:0 tag:2 ...}) {optional:false ...}".
		{"struct dump", []byte{0x30, 0x03, 0x02, 0x01, 0x00}, errs.BadRequest, "malformed CSR: not a DER PKCS#10 request (ASN.1 structure error: tags don't match)"},
		{"truncated", []byte{0x30, 0x05, 0x30, 0x03, 0x02, 0x01}, errs.BadRequest, "(ASN.1 syntax error: "},
		{"BER", []byte{0x30, 0x80, 0, 0}, errs.BadRequest, "(ASN.1 syntax error: indefinite length found (not DER))"},
		{"certificate", readVector(t, "a3-skg-cert-281.der"), errs.BadRequest, "malformed CSR: not a DER PKCS#10 request"},
		{"bad signature", bad, errs.BadRequest, "signature"},
		{"huge", make([]byte, MaxCSRSize+1), errs.TooLarge, "more than"},
	} {
		_, err := ParseCSR(tc.in, true)
		m := errs.Message(err)
		if errs.KindOf(err) != tc.kind || !strings.Contains(m, tc.msg) {
			t.Errorf("%s: %v (kind %v)", tc.name, err, errs.KindOf(err))
		}
		// One short line, no Go value dump: the detail is in err (the log), not the diagnostic.
		if strings.ContainsAny(m, "{}\n") || len(m) > maxCSRDiagnostic {
			t.Errorf("%s: diagnostic is not a short line: %q", tc.name, m)
		}
	}
	if _, err := ParseCSR(bad, false); err != nil {
		t.Errorf("signature must be ignored when asked: %v", err)
	}
}

func TestCreateCSRWithChallengePassword(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tlsUnique := []byte("0123456789ab")
	pw := base64.StdEncoding.EncodeToString(tlsUnique)
	der, err := CreateCSR(rand.Reader, &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: "dev1"},
		DNSNames: []string{"dev1.example"},
	}, key, pw)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := ParseCSR(der, true)
	if err != nil {
		t.Fatal(err)
	}
	got, ok, err := ChallengePassword(csr)
	if err != nil || !ok || string(got) != pw {
		t.Fatalf("challengePassword %q %v %v", got, ok, err)
	}
	if len(csr.DNSNames) != 1 || csr.DNSNames[0] != "dev1.example" {
		t.Errorf("SAN lost: %v", csr.DNSNames)
	}
	if !MatchesChannelBinding(got, tlsUnique) {
		t.Error("base64 tls-unique does not match")
	}
	if !MatchesChannelBinding(tlsUnique, nil, tlsUnique) {
		t.Error("raw tls-unique does not match")
	}
	if MatchesChannelBinding(got, []byte("other value!")) || MatchesChannelBinding(got) {
		t.Error("wrong binding matched")
	}
	// UTF-8 fallback.
	der, err = CreateCSR(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}, key, "pässword_")
	if err != nil {
		t.Fatal(err)
	}
	csr, _ = ParseCSR(der, true)
	if got, _, _ := ChallengePassword(csr); string(got) != "pässword_" {
		t.Errorf("utf8 password %q", got)
	}
}

func TestEncryptedKeyRequest(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	// A CSR whose attributes include AsymmetricDecryptKeyIdentifier (RFC 7030 §4.4.1.2).
	der, err := CreateCSRWithAttributes(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "enc"}}, key,
		[]Attribute{{Type: OIDAsymmetricDecryptKeyIdentifier, Values: []asn1.RawValue{{Tag: asn1.TagOctetString, Bytes: []byte("kid")}}}})
	if err != nil {
		t.Fatal(err)
	}
	csr, err := ParseCSR(der, true)
	if err != nil {
		t.Fatal(err)
	}
	name, ok := EncryptedKeyRequest(csr)
	if !ok || name != "AsymmetricDecryptKeyIdentifier" {
		t.Fatalf("got %q %v", name, ok)
	}
}

func TestMarshalPKCS8(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := MarshalPKCS8(key)
	if err != nil {
		t.Fatal(err)
	}
	back, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil || !key.Equal(back) {
		t.Fatalf("round trip: %v", err)
	}
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
