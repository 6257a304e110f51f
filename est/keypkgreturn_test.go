package est

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"coapca/est/cms"
)

func returnFixture(tb testing.TB) (*ecdsa.PrivateKey, *x509.Certificate) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(0x4e43), Subject: pkix.Name{CommonName: "kp-1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return key, cert
}

// unsignedError is a KeyPackageError ContentInfo without a signature (RFC 8295 §5.2.1 allows
// it), with an OID error code and no errorOf.
func unsignedError(tb testing.TB, cert *x509.Certificate) []byte {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		sirenDN(b, cert)
		b.AddASN1ObjectIdentifier(OIDKeyPackageError)
	})
	body, err := b.Bytes()
	if err != nil {
		tb.Fatal(err)
	}
	ci, err := cms.ContentInfo(OIDKeyPackageError, body)
	if err != nil {
		tb.Fatal(err)
	}
	return ci
}

// TestKeyPackageReturnRoundTrip: what the client builds, the server reads back (RFC 7191 §3,
// §4); an unsigned receipt is refused (RFC 8295 §5.2.1).
func TestKeyPackageReturnRoundTrip(t *testing.T) {
	key, cert := returnFixture(t)
	now := time.Now()
	receipt, err := SignKeyPackageReceipt(rand.Reader, key, cert, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	errDER, err := SignKeyPackageError(rand.Reader, 71, cert, key, cert, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := MarshalKeyPackageReceipt(cert)
	unsignedReceipt, _ := cms.ContentInfo(OIDKeyPackageReceipt, body)
	for _, tc := range []struct {
		name                string
		der                 []byte
		receipt, signed, ok bool
		code                string
	}{
		{"signed receipt", receipt, true, true, true, ""},
		{"signed error", errDER, false, true, true, "decryptFailure"},
		{"unsigned error", unsignedError(t, cert), false, false, true, OIDKeyPackageError.String()},
		{"unsigned receipt", unsignedReceipt, false, false, false, ""},
		{"empty", nil, false, false, false, ""},
		{"trailing byte", append(bytes.Clone(receipt), 0), false, false, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseKeyPackageReturn(tc.der)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
			if !tc.ok {
				return
			}
			if r.Receipt != tc.receipt || (r.Signed != nil) != tc.signed || r.ErrorCode != tc.code || r.By() != "CN=kp-1" {
				t.Fatalf("got receipt=%v signed=%v code=%q by=%q", r.Receipt, r.Signed != nil, r.ErrorCode, r.By())
			}
			if tc.name != "unsigned error" && !bytes.Equal(r.PkgID, KeyPackageID(cert)) {
				t.Fatalf("pkgID %x", r.PkgID)
			}
		})
	}
}

// FuzzParseKeyPackageReturn: what a client POSTs to /serverkeygen/return never panics, and an
// accepted receipt is always signed.
func FuzzParseKeyPackageReturn(f *testing.F) {
	key, cert := returnFixture(f)
	now := time.Now()
	receipt, _ := SignKeyPackageReceipt(rand.Reader, key, cert, nil, now)
	errDER, _ := SignKeyPackageError(rand.Reader, 84, cert, key, cert, nil, now)
	f.Add(receipt)
	f.Add(errDER)
	f.Add(unsignedError(f, cert))
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseKeyPackageReturn(b)
		if err != nil {
			return
		}
		if r.Receipt && r.Signed == nil {
			t.Fatal("accepted an unsigned receipt")
		}
		_ = r.By()
	})
}
