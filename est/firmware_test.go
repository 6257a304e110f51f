package est

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"reflect"
	"testing"
	"time"

	"coapca/est/cms"
)

var (
	testFWName = FirmwareName{ID: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, Version: 3}
	testHWType = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 2, 1}
)

// TestFirmwarePackageRoundTrip: a signed firmware package (RFC 4108 §2) opens to its image, name
// and target hardware; a tampered one is refused.
func TestFirmwarePackageRoundTrip(t *testing.T) {
	key, cert := returnFixture(t)
	image := bytes.Repeat([]byte("firmware"), 100)
	der, err := SignFirmwarePackage(rand.Reader, image, testFWName, []asn1.ObjectIdentifier{testHWType}, key, []*x509.Certificate{cert}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	fw, err := OpenFirmwarePackage(der)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fw.Image, image) || !reflect.DeepEqual(fw.Name, testFWName) || len(fw.HWTypes) != 1 || !fw.HWTypes[0].Equal(testHWType) ||
		!fw.Signer.Equal(cert) {
		t.Fatalf("opened %+v", fw)
	}
	bad := bytes.Clone(der)
	bad[len(bad)/2] ^= 1
	if _, err := OpenFirmwarePackage(bad); err == nil {
		t.Fatal("opened a tampered package")
	}
	// A SignedData of something else is not a firmware package.
	sd, _ := cms.Sign(rand.Reader, OIDSymmetricKeyPackage, []byte{0x04, 0x01, 0x00}, key, []*x509.Certificate{cert}, time.Now())
	other, _ := cms.ContentInfo(cms.OIDSignedData, sd)
	if _, err := OpenFirmwarePackage(other); err == nil {
		t.Fatal("opened a package of another content type")
	}
	// Without the firmware-package-identifier attribute (RFC 4108 §2.2.1: MUST).
	sd, _ = cms.Sign(rand.Reader, OIDFirmwarePackage, []byte{0x04, 0x01, 0x00}, key, []*x509.Certificate{cert}, time.Now())
	noID, _ := cms.ContentInfo(cms.OIDSignedData, sd)
	if _, err := OpenFirmwarePackage(noID); err == nil {
		t.Fatal("opened a package without its identifier")
	}
}

// TestEncryptedFirmwarePackage: an encrypted firmware package (RFC 4108 §2.1.3) verifies, names
// its key by the decrypt-key-identifier (§2.2.5), and decrypts to the image with that key only;
// an encrypted package without the identifier is refused.
func TestEncryptedFirmwarePackage(t *testing.T) {
	key, cert := returnFixture(t)
	image := bytes.Repeat([]byte("secret firmware"), 50)
	fwKey := bytes.Repeat([]byte{0x5a}, 32)
	der, err := SignEncryptedFirmwarePackage(rand.Reader, image, testFWName, []asn1.ObjectIdentifier{testHWType}, fwKey, []byte("fw-key-1"),
		key, []*x509.Certificate{cert}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if FirmwareMediaType(der) != MediaFirmwarePackageEnc {
		t.Fatalf("media type %q", FirmwareMediaType(der))
	}
	if bytes.Contains(der, image[:32]) {
		t.Fatal("the image is in the clear")
	}
	fw, err := OpenFirmwarePackage(der)
	if err != nil {
		t.Fatal(err)
	}
	if !fw.Encrypted() || fw.Image != nil || string(fw.DecryptKeyID) != "fw-key-1" || !reflect.DeepEqual(fw.Name, testFWName) {
		t.Fatalf("opened %+v", fw)
	}
	if err := fw.Decrypt(bytes.Repeat([]byte{0x5b}, 32)); err == nil && bytes.Equal(fw.Image, image) {
		t.Fatal("attack: decrypted with another key")
	}
	if err := fw.Decrypt(fwKey); err != nil || !bytes.Equal(fw.Image, image) || fw.Encrypted() {
		t.Fatalf("decrypt: %v", err)
	}
	if _, err := SignEncryptedFirmwarePackage(rand.Reader, image, testFWName, []asn1.ObjectIdentifier{testHWType}, fwKey, nil,
		key, []*x509.Certificate{cert}, time.Now()); err == nil {
		t.Fatal("encrypted without a key identifier")
	}
	// RFC 4108 §2.2.5: an encrypted package MUST carry the decrypt-key-identifier.
	ed, _ := cms.EncryptData(rand.Reader, OIDFirmwarePackage, []byte{0x04, 0x01, 0x00}, fwKey)
	idAttr := []byte{0x30, 0x0e, 0x06, 0x09, 0x2b, 0x06, 0x01, 0x04, 0x01, 0x86, 0x8d, 0x1f, 0x01, 0x02, 0x01, 0x03}
	sd, err := cms.SignWithAttributes(rand.Reader, cms.OIDEncryptedData, ed, key, []*x509.Certificate{cert}, time.Now(),
		cms.Attribute{Type: OIDFirmwarePackageID, Value: idAttr})
	if err != nil {
		t.Fatal(err)
	}
	noKID, _ := cms.ContentInfo(cms.OIDSignedData, sd)
	if _, err := OpenFirmwarePackage(noKID); err == nil {
		t.Fatal("opened an encrypted package without a decrypt-key-identifier")
	}
}

// TestFirmwareReturnRoundTrip: receipts and errors (RFC 4108 §3, §4), signed and unsigned, read
// back; unknown content types and malformed bodies are refused.
func TestFirmwareReturnRoundTrip(t *testing.T) {
	key, cert := returnFixture(t)
	serial := []byte{0x01, 0x02}
	receipt, _ := MarshalFirmwareReceipt(testHWType, serial, testFWName)
	errBody, _ := MarshalFirmwareError(testHWType, serial, 34, &testFWName)
	legacy := FirmwareName{Legacy: []byte("fw-7")}
	legacyErr, _ := MarshalFirmwareError(testHWType, serial, 27, &legacy)
	signedReceipt, err := SignFirmwareReturn(rand.Reader, true, receipt, key, cert, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	plainErr, _ := cms.ContentInfo(OIDFirmwareLoadError, errBody)
	plainLegacy, _ := cms.ContentInfo(OIDFirmwareLoadError, legacyErr)
	for _, tc := range []struct {
		name    string
		der     []byte
		receipt bool
		code    string
		fwName  FirmwareName
		signed  bool
	}{
		{"signed receipt", signedReceipt, true, "", testFWName, true},
		{"unsigned error", plainErr, false, "badFirmware", testFWName, false},
		{"legacy name", plainLegacy, false, "wrongHardware", legacy, false},
	} {
		r, err := ParseFirmwareReturn(tc.der)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if r.Receipt != tc.receipt || r.ErrorCode != tc.code || r.Name == nil || !reflect.DeepEqual(*r.Name, tc.fwName) ||
			!r.HWType.Equal(testHWType) || !bytes.Equal(r.HWSerial, serial) || (r.Signed != nil) != tc.signed {
			t.Fatalf("%s: %+v", tc.name, r)
		}
	}
	wrong, _ := cms.ContentInfo(OIDKeyPackageReceipt, receipt)
	for _, bad := range [][]byte{nil, {0x30, 0x00}, wrong, append(bytes.Clone(plainErr), 0)} {
		if _, err := ParseFirmwareReturn(bad); err == nil {
			t.Errorf("accepted %x", bad)
		}
	}
	if n, ok := FirmwareErrorCodeByName("badFirmware"); !ok || n != 34 {
		t.Fatal("badFirmware")
	}
	if n, err := ParseFirmwareName("1.3.6.1.4.1.99999.1:3"); err != nil || !reflect.DeepEqual(n, testFWName) || n.String() != "1.3.6.1.4.1.99999.1:3" {
		t.Fatalf("ParseFirmwareName: %v %v", n, err)
	}
	for _, bad := range []string{"", "1.3", "x.y:1", "1.3:-1", "3.1:1"} {
		if _, err := ParseFirmwareName(bad); err == nil {
			t.Errorf("ParseFirmwareName(%q) accepted", bad)
		}
	}
}

func FuzzParseFirmwareReturn(f *testing.F) {
	receipt, _ := MarshalFirmwareReceipt(testHWType, []byte{1}, testFWName)
	errBody, _ := MarshalFirmwareError(testHWType, []byte{1}, 34, nil)
	r1, _ := cms.ContentInfo(OIDFirmwareLoadReceipt, receipt)
	e1, _ := cms.ContentInfo(OIDFirmwareLoadError, errBody)
	f.Add(r1)
	f.Add(e1)
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseFirmwareReturn(b)
		if err != nil || r.Signed != nil {
			return
		}
		// What was accepted re-encodes (without the optional fields coapca does not keep) to
		// something that reads back the same.
		var body []byte
		if r.Receipt {
			body, err = MarshalFirmwareReceipt(r.HWType, r.HWSerial, *r.Name)
		} else {
			code, ok := FirmwareErrorCodeByName(r.ErrorCode)
			if !ok {
				return // "enum N" beyond 127 is kept as text only
			}
			body, err = MarshalFirmwareError(r.HWType, r.HWSerial, code, r.Name)
		}
		if err != nil {
			t.Fatalf("accepted %x but cannot re-encode: %v", b, err)
		}
		ctype := OIDFirmwareLoadError
		if r.Receipt {
			ctype = OIDFirmwareLoadReceipt
		}
		ci, _ := cms.ContentInfo(ctype, body)
		again, err := ParseFirmwareReturn(ci)
		if err != nil || !reflect.DeepEqual(again, r) {
			t.Fatalf("re-encoding of %x does not read back: %v\n%+v\n%+v", b, err, r, again)
		}
	})
}

func FuzzOpenFirmwarePackage(f *testing.F) {
	key, cert := returnFixture(f)
	der, _ := SignFirmwarePackage(rand.Reader, []byte("image"), testFWName, []asn1.ObjectIdentifier{testHWType}, key, []*x509.Certificate{cert}, time.Now())
	f.Add(der)
	enc, _ := SignEncryptedFirmwarePackage(rand.Reader, []byte("image"), testFWName, []asn1.ObjectIdentifier{testHWType}, bytes.Repeat([]byte{1}, 16),
		[]byte("k"), key, []*x509.Certificate{cert}, time.Now())
	f.Add(enc)
	f.Fuzz(func(t *testing.T, b []byte) {
		fw, err := OpenFirmwarePackage(b)
		if err != nil {
			return
		}
		if fw.Signer == nil || fw.Name.check() != nil {
			t.Fatalf("accepted %x without a signer or name", b)
		}
		if fw.Encrypted() != (fw.Image == nil) || (fw.Encrypted() && len(fw.DecryptKeyID) == 0) {
			t.Fatalf("accepted %x: encrypted %v, image %d bytes, key id %q", b, fw.Encrypted(), len(fw.Image), fw.DecryptKeyID)
		}
		_ = fw.Decrypt(bytes.Repeat([]byte{1}, 16)) // must not panic
	})
}
