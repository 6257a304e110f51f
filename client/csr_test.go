package client

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"reflect"
	"testing"

	"coapca/est"
)

func TestParseSubject(t *testing.T) {
	for _, tt := range []struct {
		in      string
		want    pkix.Name
		wantErr bool
	}{
		{in: "CN=dev-1", want: pkix.Name{CommonName: "dev-1"}},
		{in: "CN=dev-1, O=Acme,OU=a,OU=b,C=DE,L=Berlin,ST=BE,serialNumber=42", want: pkix.Name{
			CommonName: "dev-1", Organization: []string{"Acme"}, OrganizationalUnit: []string{"a", "b"},
			Country: []string{"DE"}, Locality: []string{"Berlin"}, Province: []string{"BE"}, SerialNumber: "42"}},
		{in: "cn=x,SERIALNUMBER=7", want: pkix.Name{CommonName: "x", SerialNumber: "7"}},
		{in: "CN=a=b", want: pkix.Name{CommonName: "a=b"}},
		// Malformed or unsupported: refused, never half-parsed.
		{in: "", wantErr: true},
		{in: "CN", wantErr: true},
		{in: "CN=", wantErr: true},
		{in: "CN=x,", wantErr: true},
		{in: "CN=x,DC=example", wantErr: true},
		{in: "CN=a\\,b", wantErr: true}, // no escapes: "b" is not TYPE=value
		{in: "/CN=x", wantErr: true},
	} {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSubject(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("accepted: %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseSANs(t *testing.T) {
	for _, tt := range []struct {
		name    string
		in      []string
		want    []string // DNS, IP, email, URI values in that order
		wantErr bool
	}{
		{name: "typed", in: []string{"dns:a.example", "ip:192.0.2.1", "IP:2001:db8::1", "email:x@example.com", "uri:urn:dev:1"},
			want: []string{"a.example", "192.0.2.1", "2001:db8::1", "x@example.com", "urn:dev:1"}},
		{name: "bare value is a DNS name", in: []string{"b.example"}, want: []string{"b.example"}},
		{name: "bare URL", in: []string{"https://x"}, wantErr: true},
		{name: "none", in: nil, want: nil},
		{name: "bad IP", in: []string{"ip:300.1.1.1"}, wantErr: true},
		{name: "unknown type", in: []string{"rid:1.2.3"}, wantErr: true},
		{name: "bad URI", in: []string{"uri:%zz"}, wantErr: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSANs(tt.in...)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("accepted: %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var flat []string
			flat = append(flat, got.DNSNames...)
			for _, ip := range got.IPAddresses {
				flat = append(flat, ip.String())
			}
			flat = append(flat, got.EmailAddresses...)
			for _, u := range got.URIs {
				flat = append(flat, u.String())
			}
			if !reflect.DeepEqual(flat, tt.want) {
				t.Errorf("got %q, want %q", flat, tt.want)
			}
			if got.Empty() != (len(tt.want) == 0) {
				t.Errorf("Empty() = %v", got.Empty())
			}
		})
	}
}

func testSANs(t *testing.T) SANs {
	t.Helper()
	s, err := ParseSANs("dns:a.example", "ip:192.0.2.1", "email:x@example.com", "uri:urn:dev:1")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func sameSANs(t *testing.T, got, want SANs) {
	t.Helper()
	if !reflect.DeepEqual(got.DNSNames, want.DNSNames) || !reflect.DeepEqual(got.EmailAddresses, want.EmailAddresses) ||
		len(got.IPAddresses) != len(want.IPAddresses) || len(got.URIs) != len(want.URIs) {
		t.Fatalf("SANs %+v, want %+v", got, want)
	}
	for i := range got.IPAddresses {
		if !got.IPAddresses[i].Equal(want.IPAddresses[i]) {
			t.Errorf("IP %v, want %v", got.IPAddresses[i], want.IPAddresses[i])
		}
	}
	for i := range got.URIs {
		if got.URIs[i].String() != want.URIs[i].String() {
			t.Errorf("URI %v, want %v", got.URIs[i], want.URIs[i])
		}
	}
}

func TestNewCSR(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sans := testSANs(t)
	oldSubject, _ := asn1.Marshal(pkix.Name{CommonName: "old", SerialNumber: "9"}.ToRDNSequence())
	for _, tt := range []struct {
		name, pw    string
		req         CertRequest
		wantSubject string
	}{
		{name: "subject and SANs", req: CertRequest{Subject: pkix.Name{CommonName: "dev-1"}, SANs: sans}, wantSubject: "CN=dev-1"},
		{name: "raw subject wins", req: CertRequest{Subject: pkix.Name{CommonName: "ignored"}, RawSubject: oldSubject}, wantSubject: "SERIALNUMBER=9,CN=old"},
		{name: "challengePassword", pw: "dGxzLXVuaXF1ZQ==", req: CertRequest{Subject: pkix.Name{CommonName: "dev-2"}}, wantSubject: "CN=dev-2"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			der, err := NewCSR(key, tt.req, tt.pw)
			if err != nil {
				t.Fatal(err)
			}
			csr, err := x509.ParseCertificateRequest(der)
			if err != nil {
				t.Fatal(err)
			}
			if err := csr.CheckSignature(); err != nil {
				t.Fatal(err)
			}
			if !key.PublicKey.Equal(csr.PublicKey) {
				t.Error("CSR is not for the key")
			}
			if got := csr.Subject.String(); got != tt.wantSubject {
				t.Errorf("subject %q, want %q", got, tt.wantSubject)
			}
			sameSANs(t, SANs{csr.DNSNames, csr.IPAddresses, csr.EmailAddresses, csr.URIs}, tt.req.SANs)
			pw, present, err := est.ChallengePassword(csr)
			if err != nil || string(pw) != tt.pw || present != (tt.pw != "") {
				t.Errorf("challengePassword %q present %v (%v), want %q", pw, present, err, tt.pw)
			}
		})
	}
	// A name crypto/x509 cannot encode as IA5String is refused, not sent mangled.
	if _, err := NewCSR(key, CertRequest{Subject: pkix.Name{CommonName: "x"}, SANs: SANs{EmailAddresses: []string{"ü@example.com"}}}, ""); err == nil {
		t.Error("non-ASCII email address accepted")
	}
}

// TestNewCertTemplate checks that the CRMF template carries the subjectAltName extension
// exactly as crypto/x509 writes and reads it (no hand-made GeneralNames).
func TestNewCertTemplate(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sans := testSANs(t)
	tmpl, err := NewCertTemplate(key, CertRequest{Subject: pkix.Name{CommonName: "dev-1", Organization: []string{"Acme"}}, SANs: sans})
	if err != nil {
		t.Fatal(err)
	}
	name, err := tmpl.SubjectName()
	if err != nil || name.String() != "CN=dev-1,O=Acme" {
		t.Errorf("subject %q (%v)", name.String(), err)
	}
	if len(tmpl.Extensions) != 1 || !tmpl.Extensions[0].Id.Equal(oidSubjectAltName) || tmpl.Extensions[0].Critical {
		t.Fatalf("extensions %+v, want one non-critical subjectAltName", tmpl.Extensions)
	}
	// Read the extension back the way a CA does: crypto/x509 parsing a request that carries it.
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{ExtraExtensions: tmpl.Extensions}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	sameSANs(t, SANs{csr.DNSNames, csr.IPAddresses, csr.EmailAddresses, csr.URIs}, sans)

	// kur without --subject or --san: an empty template (the CA keeps the old certificate's).
	empty, err := NewCertTemplate(key, CertRequest{})
	if err != nil || empty.Subject != nil || len(empty.Extensions) != 0 {
		t.Errorf("empty request: %+v, %v", empty, err)
	}
	if _, err := NewCertTemplate(key, CertRequest{SANs: SANs{EmailAddresses: []string{"ü@x"}}}); err == nil {
		t.Error("non-ASCII email address accepted")
	}
}
