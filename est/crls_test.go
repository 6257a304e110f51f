package est

import (
	"bytes"
	"strings"
	"testing"
)

func TestEncodeCRLsOnly(t *testing.T) {
	if _, err := EncodeCRLsOnly(nil); err == nil {
		t.Error("no CRLs encoded without error")
	}
	crl := []byte{0x30, 0x03, 0x02, 0x01, 0x07} // stands in for a DER CRL: copied as it is
	der, err := EncodeCRLsOnly([][]byte{crl, crl})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(der, append([]byte{0xa1, 0x0a}, append(crl, crl...)...)) {
		t.Errorf("crls [1] does not hold the CRLs: %x", der)
	}
	// The ContentInfo and SignedData head parse; there are no certificates.
	if _, err := ParseCertsOnly(der); err == nil || !strings.Contains(err.Error(), "carries no certificates") {
		t.Errorf("ParseCertsOnly of a crls-only message: %v", err)
	}
}
