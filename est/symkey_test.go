package est

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"reflect"
	"strings"
	"testing"
	"time"

	"coapca/est/cms"
)

var testKeys = []SymmetricKey{
	{ID: "peer-a", Algorithm: "http://www.w3.org/2001/04/xmlenc#aes128-cbc", Key: bytes.Repeat([]byte{0xa5}, 16)},
	{ID: "peer-b", Key: bytes.Repeat([]byte{0x5a}, 32)},
}

// TestSymmetricKeyPackageRoundTrip: the RFC 6031 package coapca writes reads back identically.
func TestSymmetricKeyPackageRoundTrip(t *testing.T) {
	der, err := MarshalSymmetricKeyPackage(testKeys)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseSymmetricKeyPackage(der)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, testKeys) {
		t.Fatalf("round trip: %+v", got)
	}
}

// TestSymmetricKeyPackageRefuses: malformed or unusable packages are refused in both directions.
func TestSymmetricKeyPackageRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		keys []SymmetricKey
	}{
		{"no keys", nil},
		{"no key id", []SymmetricKey{{Key: []byte{1}}}},
		{"empty key", []SymmetricKey{{ID: "k"}}},
		{"key too long", []SymmetricKey{{ID: "k", Key: make([]byte, MaxSymmetricKeyBytes+1)}}},
		{"not UTF-8", []SymmetricKey{{ID: "\xff", Key: []byte{1}}}},
	} {
		if _, err := MarshalSymmetricKeyPackage(tc.keys); err == nil {
			t.Errorf("%s: marshalled", tc.name)
		}
	}
	good, _ := MarshalSymmetricKeyPackage(testKeys)
	for _, tc := range []struct {
		name string
		der  []byte
	}{
		{"empty", nil},
		{"trailing byte", append(append([]byte{}, good...), 0)},
		{"truncated", good[:len(good)-1]},
		{"empty sKeys", []byte{0x30, 0x02, 0x30, 0x00}},
		{"version 2", []byte{0x30, 0x05, 0x02, 0x01, 0x02, 0x30, 0x00}},
		{"key without sKey", []byte{0x30, 0x04, 0x30, 0x02, 0x30, 0x00}},
	} {
		if _, err := ParseSymmetricKeyPackage(tc.der); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}

func rsaFixture(tb testing.TB) (*rsa.PrivateKey, *x509.Certificate) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(0x5253), Subject: pkix.Name{CommonName: "rsa-client"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return key, cert
}

// TestSealSymmetricKeyPackage: the signed-enveloped-signed encapsulation of RFC 8295 §5.1.2
// opens with the recipient's key (ECDH for EC, RSA-OAEP for RSA), carries the package
// identifier and receipt request (RFC 7191 §5), and refuses other keys and tampering.
func TestSealSymmetricKeyPackage(t *testing.T) {
	serverKey, serverCert := returnFixture(t)
	ecKey, ecCert := returnFixture(t)
	rsaKey, rsaCert := rsaFixture(t)
	pkg, _ := MarshalSymmetricKeyPackage(testKeys)
	pkgID := []byte("coapca:symmetrickeys:7")
	for _, tc := range []struct {
		name string
		key  crypto.PrivateKey
		cert *x509.Certificate
	}{{"ECDH", ecKey, ecCert}, {"RSA-OAEP", rsaKey, rsaCert}} {
		t.Run(tc.name, func(t *testing.T) {
			der, err := SealSymmetricKeyPackage(rand.Reader, pkg, pkgID, serverKey, []*x509.Certificate{serverCert},
				cms.Recipient{Cert: tc.cert}, nil, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			got, err := OpenSymmetricKeyPackage(der, cms.Decrypter{Key: tc.key, Cert: tc.cert})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.Keys, testKeys) || !bytes.Equal(got.PkgID, pkgID) || !got.ReceiptRequested ||
				!got.OuterSigner.Equal(serverCert) || !got.InnerSigner.Equal(serverCert) {
				t.Fatalf("opened: %+v", got)
			}
			// Another client's key opens nothing.
			otherKey, otherCert := returnFixture(t)
			if _, err := OpenSymmetricKeyPackage(der, cms.Decrypter{Key: otherKey, Cert: otherCert}); err == nil {
				t.Fatal("opened with another client's key")
			}
			// A flipped byte in the outer signature's content breaks a signature.
			bad := bytes.Clone(der)
			bad[len(bad)/2] ^= 1
			if _, err := OpenSymmetricKeyPackage(bad, cms.Decrypter{Key: tc.key, Cert: tc.cert}); err == nil {
				t.Fatal("opened a tampered package")
			}
		})
	}
}

// TestKeyPkgIDAndReceiptReqRoundTrip: the RFC 7191 §5 attribute reads back.
func TestKeyPkgIDAndReceiptReqRoundTrip(t *testing.T) {
	_, cert := returnFixture(t)
	der, err := MarshalKeyPkgIDAndReceiptReq([]byte("id-1"), cert)
	if err != nil {
		t.Fatal(err)
	}
	id, receipt, err := ParseKeyPkgIDAndReceiptReq(der)
	if err != nil || string(id) != "id-1" || !receipt {
		t.Fatalf("%q %v %v", id, receipt, err)
	}
	if _, err := MarshalKeyPkgIDAndReceiptReq(nil, cert); err == nil {
		t.Fatal("empty identifier marshalled")
	}
}

// TestReceiptForPackageID: a receipt and an error naming a package identifier are read back by
// the server's parser with that identifier.
func TestReceiptForPackageID(t *testing.T) {
	key, cert := returnFixture(t)
	pkgID := []byte("coapca:symmetrickeys:3")
	rc, err := SignKeyPackageReceiptFor(rand.Reader, pkgID, key, cert, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseKeyPackageReturn(rc)
	if err != nil || !r.Receipt || !bytes.Equal(r.PkgID, pkgID) || !r.Signed.Signer.Equal(cert) {
		t.Fatalf("receipt: %+v %v", r, err)
	}
	ed, err := SignKeyPackageErrorFor(rand.Reader, 71, pkgID, key, cert, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	r, err = ParseKeyPackageReturn(ed)
	if err != nil || r.Receipt || !bytes.Equal(r.PkgID, pkgID) || r.ErrorCode != "decryptFailure" {
		t.Fatalf("error: %+v %v", r, err)
	}
}

// TestPALRoundTrip: the XML PAL of RFC 8295 §2.1 (schema §2.1.2: type, date, size, info with
// exactly one of uri, dn, ski, iasn) reads back, and documents that break the schema are refused.
func TestPALRoundTrip(t *testing.T) {
	in := []PALEntry{
		{Type: PALCACert, URI: "https://ca.example/.well-known/est/cacerts"},
		{Type: PALSymmetricKeyPackage, URI: "https://ca.example/.well-known/est/symmetrickeys",
			Date: time.Date(2026, 12, 3, 11, 40, 5, 0, time.UTC), Size: 512},
		{Type: "0010", DN: "CN=peer"},
		{Type: "0017", SKI: "0a1b"},
		{Type: PALSymmetricKeyReturn, IASN: &PALIssuerSerial{Issuer: "CN=CA", Serial: "31"}},
	}
	doc, err := MarshalPAL(in)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`<pal xmlns="urn:ietf:params:xml:ns:pal">`, "<date>2026-12-03T11:40:05Z</date>",
		"<size>0</size>", "<info>\n      <uri>https://ca.example/.well-known/est/cacerts</uri>\n    </info>"} {
		if !strings.Contains(string(doc), want) {
			t.Fatalf("document lacks %q:\n%s", want, doc)
		}
	}
	got, err := ParsePAL(bytes.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, in) {
		t.Fatalf("round trip:\n%+v\n%+v", got, in)
	}
	const ns = `<pal xmlns="urn:ietf:params:xml:ns:pal">`
	for _, tc := range []struct{ name, doc string }{
		{"not XML", "pal"},
		{"other namespace", `<pal xmlns="urn:x"><message><type>0002</type><size>0</size><info><uri>u</uri></info></message></pal>`},
		{"reserved type", ns + `<message><type>0000</type><size>0</size><info><uri>u</uri></info></message></pal>`},
		{"three digits", ns + `<message><type>002</type><size>0</size><info><uri>u</uri></info></message></pal>`},
		{"no info", ns + `<message><type>0002</type><size>0</size></message></pal>`},
		{"uri outside info (not the schema)", ns + `<message><type>0002</type><size>0</size><uri>u</uri></message></pal>`},
		{"empty info", ns + `<message><type>0002</type><size>0</size><info></info></message></pal>`},
		{"info with uri and dn", ns + `<message><type>0002</type><size>0</size><info><uri>u</uri><dn>CN=x</dn></info></message></pal>`},
		{"no size", ns + `<message><type>0002</type><info><uri>u</uri></info></message></pal>`},
		{"bad date", ns + `<message><type>0002</type><date>yesterday</date><size>0</size><info><uri>u</uri></info></message></pal>`},
		{"negative size", ns + `<message><type>0002</type><size>-1</size><info><uri>u</uri></info></message></pal>`},
		{"URI over 1024", ns + `<message><type>0002</type><size>0</size><info><uri>` + strings.Repeat("u", 1025) + `</uri></info></message></pal>`},
	} {
		if _, err := ParsePAL(strings.NewReader(tc.doc)); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	if _, err := MarshalPAL([]PALEntry{{Type: PALCACert}}); err == nil {
		t.Error("entry without info marshalled")
	}
}

func FuzzParseSymmetricKeyPackage(f *testing.F) {
	good, _ := MarshalSymmetricKeyPackage(testKeys)
	f.Add(good)
	f.Add([]byte{0x30, 0x02, 0x30, 0x00})
	f.Add([]byte{0x30, 0x07, 0x02, 0x01, 0x01, 0xa0, 0x00, 0x30, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		keys, err := ParseSymmetricKeyPackage(b)
		if err != nil {
			return
		}
		der, err := MarshalSymmetricKeyPackage(keys)
		if err != nil {
			t.Fatalf("accepted %x but cannot re-encode: %v", b, err)
		}
		again, err := ParseSymmetricKeyPackage(der)
		if err != nil || !reflect.DeepEqual(again, keys) {
			t.Fatalf("re-encoding of %x does not read back: %v", b, err)
		}
	})
}

func FuzzParseKeyPkgIDAndReceiptReq(f *testing.F) {
	_, cert := returnFixture(f)
	good, _ := MarshalKeyPkgIDAndReceiptReq([]byte("coapca:symmetrickeys:1"), cert)
	f.Add(good)
	f.Add([]byte{0x30, 0x03, 0x04, 0x01, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		id, _, err := ParseKeyPkgIDAndReceiptReq(b)
		if err != nil {
			return
		}
		der, err := MarshalKeyPkgIDAndReceiptReq(id, cert)
		if err != nil {
			t.Fatalf("accepted %x but cannot re-encode: %v", b, err)
		}
		again, receipt, err := ParseKeyPkgIDAndReceiptReq(der)
		if err != nil || !bytes.Equal(again, id) || !receipt {
			t.Fatalf("re-encoding of %x does not read back: %v", b, err)
		}
	})
}

func FuzzParsePAL(f *testing.F) {
	doc, _ := MarshalPAL([]PALEntry{{Type: PALCACert, URI: "https://h/.well-known/est/cacerts"},
		{Type: PALSymmetricKeyPackage, URI: "https://h/.well-known/est/symmetrickeys", Date: time.Unix(0, 0), Size: 9},
		{Type: "0010", DN: "CN=x"}})
	f.Add(doc)
	f.Add([]byte(`<pal xmlns="urn:ietf:params:xml:ns:pal"></pal>`))
	f.Fuzz(func(t *testing.T, b []byte) {
		entries, err := ParsePAL(bytes.NewReader(b))
		if err != nil {
			return
		}
		doc, err := MarshalPAL(entries)
		if err != nil {
			t.Fatalf("accepted %q but cannot re-encode: %v", b, err)
		}
		again, err := ParsePAL(bytes.NewReader(doc))
		if err != nil || !reflect.DeepEqual(again, entries) {
			t.Fatalf("re-encoding of %q does not read back: %v\n%+v\n%+v", b, err, entries, again)
		}
	})
}
