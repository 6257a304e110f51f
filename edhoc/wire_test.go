package edhoc

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

// gx32 is a 32-byte G_X placeholder: these cases are refused before any curve check.
const gx32 = "5820741a13d7ba048fbb615e94386aa3b61bea5b3d8f65f32620b749bee8d278efa9"

// TestDecoderRefusesNonDeterministicCBOR sends, in place of a real message, CBOR that a
// general decoder accepts but RFC 9528 §3.1 (deterministic encoding, RFC 8949 §4.2.1) does
// not, and CBOR built to make the parser allocate or recurse without bound. Each must be
// refused as malformed, for the stated reason, without a panic.
func TestDecoderRefusesNonDeterministicCBOR(t *testing.T) {
	cases := []struct {
		name  string
		parse func([]byte) error
		hex   string
		why   string
	}{
		// message_1 = (METHOD, SUITES_I, G_X, C_I)
		{"METHOD with a one-byte argument for 3", msg1, "1803" + "02" + gx32 + "0e", "not shortest"},
		{"METHOD as an 8-byte argument", msg1, "1b0000000000000003" + "02" + gx32 + "0e", "not shortest"},
		{"METHOD beyond int64", msg1, "1bffffffffffffffff" + "02" + gx32 + "0e", "out of range"},
		{"METHOD below int64", msg1, "3bffffffffffffffff" + "02" + gx32 + "0e", "out of range"},
		{"G_X length with a two-byte argument", msg1, "0302" + "590020" + gx32[4:] + "0e", "not shortest"},
		{"G_X as an indefinite-length bstr", msg1, "0302" + "5f" + gx32 + "ff" + "0e", "indefinite-length"},
		{"SUITES_I as an indefinite-length array", msg1, "03" + "9f0602ff" + gx32 + "0e", "indefinite-length"},
		{"SUITES_I claiming 2^32 elements", msg1, "03" + "9affffffff" + gx32 + "0e", "CBOR"},
		{"C_I as a tagged bstr", msg1, "0302" + gx32 + "c2410e", "tag"},
		{"truncated G_X", msg1, "0302" + gx32[:20], "CBOR"},
		{"EAD_1 label with a one-byte argument", msg1, "0302" + gx32 + "0e" + "1801", "not shortest"},
		// error = (ERR_CODE, ERR_INFO)
		{"diagnostic with invalid UTF-8", errMsg, "01" + "62c328", "UTF-8"},
		{"ERR_INFO nested 17 levels deep", errMsg, "04" + strings.Repeat("81", 17) + "00", "nested"},
		{"ERR_INFO map claiming 2^32 pairs", errMsg, "04" + "baffffffff", "CBOR"},
		{"ERR_INFO map with unsorted keys", errMsg, "04" + "a2" + "0201" + "0101", "map keys not sorted"},
		{"ERR_INFO map with a duplicate key", errMsg, "04" + "a2" + "0101" + "0102", "duplicate"},
		{"ERR_INFO float not in its shortest form", errMsg, "04" + "fa3f800000", "not shortest"},
		{"ERR_INFO undefined", errMsg, "04" + "f7", "simple value 23"},
		{"ERR_INFO tag", errMsg, "04" + "c100", "tag"},
		{"ERR_INFO indefinite-length map", errMsg, "04" + "bf0101ff", "indefinite-length"},
		{"code 3 with a two-byte encoding of true", errMsg, "03" + "f815", "must be true"},
		// ID_CRED_x maps, in PLAINTEXT_2 (C_R, ID_CRED_R, MAC_2) and alone
		{"ID_CRED_R with unsorted labels", plain2, "27" + "a2" + "182241ff" + "044132" + "48fa5efa2ebf920bf3", "map keys not sorted"},
		{"ID_CRED_R with kid twice", plain2, "27" + "a2" + "044132" + "044133" + "48fa5efa2ebf920bf3", "duplicate"},
		{"ID_CRED with trailing bytes", idCred, "a1044132" + "00", "trailing"},
		{"ID_CRED kid with a one-byte length", idCred, "a104" + "580132", "not shortest"},
		{"CCS with unsorted claims", ccsCred, "a2" + "08a101a0" + "026161", "map keys not sorted"},
		{"CCS that is an array", ccsCred, "80", "map"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := hex.DecodeString(tc.hex)
			if err != nil {
				t.Fatal(err)
			}
			err = tc.parse(b)
			if err == nil {
				t.Fatalf("accepted %x", b)
			}
			if !strings.Contains(err.Error(), tc.why) {
				t.Errorf("refused for another reason: %v (want %q)", err, tc.why)
			}
		})
	}
}

func msg1(b []byte) error {
	_, err := ParseMessage1(b)
	return wantMalformed(err)
}

func errMsg(b []byte) error {
	_, err := ParseErrorMessage(b)
	return wantMalformed(err)
}

func plain2(b []byte) error {
	_, err := ParsePlaintext2(b, 8)
	return wantMalformed(err)
}

func idCred(b []byte) error {
	_, err := ParseIDCred(b)
	return err
}

func ccsCred(b []byte) error {
	_, err := NewCCSCredential(b, nil)
	return err
}

// wantMalformed makes a decoder error that does not wrap ErrMalformed fail the case.
func wantMalformed(err error) error {
	if err != nil && !errors.Is(err, ErrMalformed) {
		return errors.New("error does not wrap ErrMalformed: " + err.Error())
	}
	return err
}

// TestEncoderByteExact checks encoders that no trace test reaches as a whole against the
// bytes of RFC 9529 trace 2: the CCS of §3.5.2 built from a public key (labels in
// deterministic order) and ID_CRED_x = {4: kid}.
func TestEncoderByteExact(t *testing.T) {
	tf := loadTrace(t, "edhoc-rfc9529-trace2.json")
	for _, who := range []struct{ party, sub, kid string }{{"r", "example.edu", "32"}, {"i", "42-50-31-FF-EF-37-32-39", "2b"}} {
		t.Run(who.party, func(t *testing.T) {
			kid, _ := hex.DecodeString(who.kid)
			enc := append(append([]byte{4}, tf.hex(t, "pk_"+who.party+"_x")...), tf.hex(t, "pk_"+who.party+"_y")...)
			pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), enc)
			if err != nil {
				t.Fatal(err)
			}
			ccs, err := CCSFromPublicKey(who.sub, kid, pub)
			if err != nil {
				t.Fatal(err)
			}
			if want := tf.hex(t, "cred_"+who.party); !bytes.Equal(ccs, want) {
				t.Errorf("CCS\n got %x\nwant %x", ccs, want)
			}
			if got, want := IDCredKid(kid).Raw, tf.hex(t, "id_cred_"+who.party); !bytes.Equal(got, want) {
				t.Errorf("ID_CRED\n got %x\nwant %x", got, want)
			}
			// A CCS transported by value is embedded byte for byte.
			id, err := IDCredKCCS(ccs)
			if err != nil {
				t.Fatal(err)
			}
			if want := append([]byte{0xa1, 0x0e}, ccs...); !bytes.Equal(id.Raw, want) {
				t.Errorf("kccs ID_CRED\n got %x\nwant %x", id.Raw, want)
			}
		})
	}
}
