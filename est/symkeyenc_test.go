package est

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"reflect"
	"slices"
	"testing"
	"time"

	"coapca/est/cms"
)

// TestSymKeyEncapsulations: every form of RFC 8295 §5.1.2 opens to the keys, reports its form,
// carries the receipt request in the signed forms, refuses another recipient's key where it is
// encrypted, and a tampered package is refused.
func TestSymKeyEncapsulations(t *testing.T) {
	serverKey, serverCert := returnFixture(t)
	ecKey, ecCert := returnFixture(t)
	otherKey, otherCert := returnFixture(t)
	pkg, _ := MarshalSymmetricKeyPackage(testKeys)
	pkgID := []byte("coapca:symmetrickeys:9")
	for _, name := range SymKeyEncapsulationNames() {
		enc, ok := SymKeyEncapsulationByName(name)
		if !ok || enc.String() != name {
			t.Fatalf("%s: by name %v %v", name, enc, ok)
		}
		t.Run(name, func(t *testing.T) {
			der, err := SealSymmetricKeyPackageAs(rand.Reader, enc, pkg, pkgID, serverKey, []*x509.Certificate{serverCert},
				cms.Recipient{Cert: ecCert}, nil, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			got, err := OpenSymmetricKeyPackage(der, cms.Decrypter{Key: ecKey, Cert: ecCert})
			if err != nil {
				t.Fatal(err)
			}
			if got.Encapsulation != enc || !reflect.DeepEqual(got.Keys, testKeys) {
				t.Fatalf("opened %v %+v", got.Encapsulation, got.Keys)
			}
			signed, encrypted := enc != SymKeyPlain, enc != SymKeyPlain && enc != SymKeySigned
			outer := enc == SymKeySignedEnvelopedSigned || enc == SymKeyEncryptedKeyPackage
			if (got.InnerSigner != nil) != signed || (got.OuterSigner != nil) != outer || (signed && !bytes.Equal(got.PkgID, pkgID)) {
				t.Fatalf("signers inner %v outer %v, pkgID %q", got.InnerSigner != nil, got.OuterSigner != nil, got.PkgID)
			}
			if encrypted {
				if bytes.Contains(der, testKeys[0].Key) {
					t.Fatal("the key is in the clear")
				}
				if _, err := OpenSymmetricKeyPackage(der, cms.Decrypter{Key: otherKey, Cert: otherCert}); err == nil {
					t.Fatal("attack: opened with another client's key")
				}
			}
			bad := bytes.Clone(der)
			bad[len(bad)-5] ^= 1
			if got, err := OpenSymmetricKeyPackage(bad, cms.Decrypter{Key: ecKey, Cert: ecCert}); err == nil && signed {
				t.Fatalf("attack: a tampered package opened (%v)", got.Encapsulation)
			}
		})
	}
}

// TestSymKeyEncapsulationOfAccept: the form a client names in Accept (RFC 7193 parameters);
// none named is the default; a form coapca does not produce is not acceptable.
func TestSymKeyEncapsulationOfAccept(t *testing.T) {
	for _, tc := range []struct {
		name   string
		accept []string
		enc    SymKeyEncapsulation
		asked  bool
		ok     bool
	}{
		{"no Accept", nil, SymKeySignedEnvelopedSigned, false, true},
		{"anything", []string{"*/*"}, SymKeySignedEnvelopedSigned, false, true},
		{"bare application/cms", []string{"application/cms"}, SymKeySignedEnvelopedSigned, false, true},
		{"plain", []string{"application/cms; innerContent=sKeyPackage"}, SymKeyPlain, true, true},
		{"signed", []string{"application/cms; encapsulatingContent=signedData; innerContent=sKeyPackage"}, SymKeySigned, true, true},
		{"enveloped, spaces differ", []string{`application/cms; encapsulatingContent="envelopedData,signedData"; innerContent=sKeyPackage`}, SymKeyEnveloped, true, true},
		{"encrypted key package after an unknown one", []string{`application/cms; encapsulatingContent="x, y"; innerContent=sKeyPackage, ` +
			`application/cms; encapsulatingContent="signedData, encryptedKeyPkg, signedData"; innerContent=sKeyPackage`}, SymKeyEncryptedKeyPackage, true, true},
		{"every form's own media type", []string{SymKeyEncryptedKeyPackage.MediaType()}, SymKeyEncryptedKeyPackage, true, true},
		{"attack: a form not produced", []string{`application/cms; encapsulatingContent="authEnvelopedData"; innerContent=sKeyPackage`}, 0, true, false},
		{"attack: another inner content", []string{"application/cms; encapsulatingContent=signedData; innerContent=aKeyPackage"}, 0, true, false},
	} {
		enc, asked, ok := SymKeyEncapsulationOfAccept(tc.accept)
		if asked != tc.asked || ok != tc.ok || (ok && enc != tc.enc) {
			t.Errorf("%s: %v asked %v ok %v, want %v %v %v", tc.name, enc, asked, ok, tc.enc, tc.asked, tc.ok)
		}
	}
	for _, name := range SymKeyEncapsulationNames() {
		enc, _ := SymKeyEncapsulationByName(name)
		if got, _, ok := SymKeyEncapsulationOfAccept([]string{enc.MediaType()}); !ok || got != enc {
			t.Errorf("%s: its media type %q reads back as %v", name, enc.MediaType(), got)
		}
	}
	if SymKeySignedEnvelopedSigned.MediaType() != MediaSymmetricKeyPackage {
		t.Errorf("default media type %q", SymKeySignedEnvelopedSigned.MediaType())
	}
}

// TestEncryptedKeyPackageChoices: RFC 6032 §2 EncryptedKeyPackage: the enveloped choice ([0]
// IMPLICIT) round-trips; the encrypted and authEnveloped choices and garbage are refused.
func TestEncryptedKeyPackageChoices(t *testing.T) {
	ed := []byte{0x30, 0x03, 0x02, 0x01, 0x00}
	ekp, err := MarshalEncryptedKeyPackage(ed)
	if err != nil || !bytes.Equal(ekp, []byte{0xa0, 0x03, 0x02, 0x01, 0x00}) {
		t.Fatalf("marshal: %x %v", ekp, err)
	}
	if back, err := ParseEncryptedKeyPackage(ekp); err != nil || !bytes.Equal(back, ed) {
		t.Fatalf("parse: %x %v", back, err)
	}
	for name, der := range map[string][]byte{
		"encrypted (EncryptedData)":         ed,
		"authEnveloped (AuthEnvelopedData)": {0xa1, 0x03, 0x02, 0x01, 0x00},
		"trailing bytes":                    append(bytes.Clone(ekp), 0),
		"empty":                             nil,
		"[2]":                               {0xa2, 0x00},
	} {
		if _, err := ParseEncryptedKeyPackage(der); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := MarshalEncryptedKeyPackage([]byte{0x04, 0x00}); err == nil {
		t.Error("marshalled a non-SEQUENCE")
	}
}

func FuzzParseEncryptedKeyPackage(f *testing.F) {
	f.Add([]byte{0xa0, 0x03, 0x02, 0x01, 0x00})
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		ed, err := ParseEncryptedKeyPackage(b)
		if err != nil {
			return
		}
		again, err := MarshalEncryptedKeyPackage(ed)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("%x parsed to %x, which re-encodes to %x (%v)", b, ed, again, err)
		}
	})
}

func FuzzOpenSymmetricKeyPackage(f *testing.F) {
	serverKey, serverCert := returnFixture(f)
	ecKey, ecCert := returnFixture(f)
	pkg, _ := MarshalSymmetricKeyPackage(testKeys)
	for _, name := range SymKeyEncapsulationNames() {
		enc, _ := SymKeyEncapsulationByName(name)
		der, err := SealSymmetricKeyPackageAs(rand.Reader, enc, pkg, []byte("id"), serverKey, []*x509.Certificate{serverCert},
			cms.Recipient{Cert: ecCert}, nil, time.Now())
		if err != nil {
			f.Fatal(err)
		}
		f.Add(der)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := OpenSymmetricKeyPackage(b, cms.Decrypter{Key: ecKey, Cert: ecCert})
		if err != nil {
			return
		}
		if len(got.Keys) == 0 || (got.Encapsulation != SymKeyPlain && got.InnerSigner == nil) {
			t.Fatalf("opened %x as %v with %d keys, inner signer %v", b, got.Encapsulation, len(got.Keys), got.InnerSigner != nil)
		}
	})
}

// TestSymKeyEncapsulationsOfAccept: every form a client takes, in its order, each once; none
// named is "any"; only forms coapca does not produce is asked with nothing to offer.
func TestSymKeyEncapsulationsOfAccept(t *testing.T) {
	for _, tc := range []struct {
		name   string
		accept []string
		want   []SymKeyEncapsulation
		asked  bool
	}{
		{"no Accept", nil, nil, false},
		{"bare application/cms", []string{"application/cms"}, nil, false},
		{"plain then enveloped", []string{SymKeyPlain.MediaType() + ", " + SymKeyEnveloped.MediaType()}, []SymKeyEncapsulation{SymKeyPlain, SymKeyEnveloped}, true},
		{"twice in two headers", []string{SymKeySigned.MediaType(), SymKeySigned.MediaType()}, []SymKeyEncapsulation{SymKeySigned}, true},
		{"attack: only a form not produced", []string{`application/cms; encapsulatingContent="authEnvelopedData"; innerContent=sKeyPackage`}, nil, true},
	} {
		got, asked := SymKeyEncapsulationsOfAccept(tc.accept)
		if asked != tc.asked || !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v asked %v, want %v %v", tc.name, got, asked, tc.want, tc.asked)
		}
	}
}
