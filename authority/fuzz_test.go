package authority

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"testing"
)

// FuzzSubject feeds arbitrary subject bytes (a CSR's RawSubject comes from the network)
// through the profile's subject rules: they must return a result or an error, never panic.
func FuzzSubject(f *testing.F) {
	for _, n := range []pkix.Name{
		{CommonName: "dev-1"},
		{CommonName: "dev-1", SerialNumber: "0001", Organization: []string{"A", "B"}},
		{ExtraNames: []pkix.AttributeTypeAndValue{{Type: asn1.ObjectIdentifier{1, 2, 3}, Value: "x"}}},
	} {
		raw, _ := asn1.Marshal(n.ToRDNSequence())
		f.Add(raw)
	}
	f.Add([]byte{0x30, 0x00})
	f.Add([]byte{0x30, 0x03, 0x31, 0x01, 0x30})
	pc := DefaultProfile()
	pc.Subject = SubjectRules{CopySerialNumber: true, RequireCommonName: true, CommonNamePattern: "dev-.*",
		Organization: []string{"Acme"}, OrganizationalUnit: []string{"U"}}
	p, err := pc.compile()
	if err != nil {
		f.Fatal(err)
	}
	leaf := &x509.Certificate{Subject: pkix.Name{Names: []pkix.AttributeTypeAndValue{{Type: oidSerialNumber, Value: "0001"}}}}
	a := &Authority{}
	f.Fuzz(func(t *testing.T, raw []byte) {
		out, seq, err := a.subject(p, p.names, &x509.CertificateRequest{RawSubject: raw}, identity{leaf: leaf, kind: KindIDevID})
		if err != nil {
			return
		}
		if _, err := parseRDN(out); err != nil {
			t.Fatalf("subject %v re-encodes to unparsable bytes: %v", seq, err)
		}
	})
}
