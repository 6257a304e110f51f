package cmp

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const fixtureSecret = "s3cret"

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "openssl", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func fixtureCert(t testing.TB, name string) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode(fixture(t, name))
	if blk == nil {
		t.Fatalf("%s: no PEM", name)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func parseFixture(t *testing.T, name string) *Message {
	t.Helper()
	der := fixture(t, name)
	m, err := Parse(der)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	// Our encoder re-creates OpenSSL's DER byte for byte.
	again, err := m.Marshal(nil)
	if err != nil {
		t.Fatalf("%s: re-marshal: %v", name, err)
	}
	if !bytes.Equal(again, der) {
		t.Errorf("%s: re-encoding differs from the original DER", name)
	}
	return m
}

// verifyFixture checks the protection of m: PBM with the fixture secret, or a signature by
// the first extraCert, which must chain to the fixture root.
func verifyFixture(t *testing.T, name string, m *Message) {
	t.Helper()
	switch k := m.ProtectionKind(); k {
	case ProtectionPBM:
		if err := m.VerifyMAC([]byte(fixtureSecret)); err != nil {
			t.Errorf("%s: VerifyMAC: %v", name, err)
		}
		if err := m.VerifyMAC([]byte("wrong")); err == nil {
			t.Errorf("%s: VerifyMAC accepted a wrong secret", name)
		}
	case ProtectionSignature:
		cert := m.ProtectionCert()
		if err := m.VerifySignature(cert); err != nil {
			t.Errorf("%s: VerifySignature: %v", name, err)
		}
		roots := x509.NewCertPool()
		roots.AddCert(fixtureCert(t, "ca.pem"))
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Errorf("%s: protection cert does not chain: %v", name, err)
		}
		if m.Header.SenderKID != nil && !bytes.Equal(m.Header.SenderKID, cert.SubjectKeyId) {
			t.Errorf("%s: senderKID is not the protection cert's SKI", name)
		}
		// Flip one protected byte: the signature must fail.
		m2 := *m
		m2.RawBody = append([]byte{}, m.RawBody...)
		m2.RawBody[len(m2.RawBody)-1] ^= 1
		if err := m2.VerifySignature(cert); err == nil {
			t.Errorf("%s: tampered message verified", name)
		}
	default:
		t.Errorf("%s: protection %s", name, k)
	}
}

func TestOpenSSLRequests(t *testing.T) {
	newCert := fixtureCert(t, "new.pem")
	newEd := fixtureCert(t, "newed.pem")
	tests := []struct {
		file  string
		typ   BodyType
		check func(t *testing.T, m *Message)
	}{
		{"ir_pbm_req1.der", TypeIR, nil},
		{"ir_pbm256_req1.der", TypeIR, nil},
		{"ir_sig_req1.der", TypeIR, nil},
		{"ir_sig384_req1.der", TypeIR, nil},
		{"ir_sigrsa_req1.der", TypeIR, nil},
		{"ir_edpop_req1.der", TypeIR, nil},
		{"ir_implicit_req1.der", TypeIR, func(t *testing.T, m *Message) {
			if !m.Header.ImplicitConfirm() {
				t.Error("implicitConfirm not seen")
			}
		}},
		{"cr_req1.der", TypeCR, nil},
		{"kur_req1.der", TypeKUR, func(t *testing.T, m *Message) {
			id, ok := m.Body.(*CertReqMessages).Requests[0].OldCertID()
			if !ok || id.Serial.Cmp(newCert.SerialNumber) != 0 {
				t.Fatalf("oldCertID = %v, %v", id, ok)
			}
			if d, _ := id.Issuer.Directory(); !bytes.Equal(d, newCert.RawIssuer) {
				t.Error("oldCertID issuer mismatch")
			}
		}},
		{"p10cr_req1.der", TypeP10CR, func(t *testing.T, m *Message) {
			csr := m.Body.(*P10CR).CSR
			if err := csr.CheckSignature(); err != nil {
				t.Error(err)
			}
			if csr.Subject.CommonName != "Device 1" {
				t.Errorf("CSR subject %v", csr.Subject)
			}
		}},
		{"rr_req1.der", TypeRR, func(t *testing.T, m *Message) {
			rr := m.Body.(*RevReqContent)
			d := rr.Requests[0]
			if d.CertDetails.SerialNumber.Cmp(newCert.SerialNumber) != 0 || !bytes.Equal(d.CertDetails.Issuer, newCert.RawIssuer) {
				t.Error("rr names the wrong certificate")
			}
			if d.Reason() != 1 {
				t.Errorf("reason = %d", d.Reason())
			}
		}},
		{"genm_req1.der", TypeGenM, func(t *testing.T, m *Message) {
			g := m.Body.(*GenContent)
			if len(g.ITAVs) != 1 || g.ITAVs[0].Type.String() != "1.3.6.1.5.5.7.4.2" {
				t.Errorf("genm ITAVs %v", g.ITAVs)
			}
		}},
		{"ir_pbm_req2.der", TypeCertConf, func(t *testing.T, m *Message) {
			cs := m.Body.(*CertConfirmContent).Statuses[0]
			if err := cs.Verify(newCert); err != nil || !cs.Accepted() {
				t.Errorf("certConf: %v accepted=%v", err, cs.Accepted())
			}
			if err := cs.Verify(newEd); err == nil {
				t.Error("certConf verified against the wrong certificate")
			}
			if FailInfoOf(cs.Verify(newEd)) != FailBadCertID {
				t.Error("wrong failInfo for certHash mismatch")
			}
		}},
		{"ir_edpop_req2.der", TypeCertConf, func(t *testing.T, m *Message) {
			cs := m.Body.(*CertConfirmContent).Statuses[0]
			if err := cs.Verify(newEd); err != nil {
				t.Error(err)
			}
		}},
		{"ir_poll_req2.der", TypePollReq, func(t *testing.T, m *Message) {
			if ids := m.Body.(*PollReqContent).CertReqIDs; len(ids) != 1 || ids[0] != 0 {
				t.Errorf("pollReq ids %v", ids)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			m := parseFixture(t, tt.file)
			if m.Body.Type() != tt.typ {
				t.Fatalf("body %s, want %s", m.Body.Type(), tt.typ)
			}
			if err := CheckRequest(&m.Header); err != nil {
				t.Error(err)
			}
			verifyFixture(t, tt.file, m)
			if crm, ok := m.Body.(*CertReqMessages); ok {
				r := &crm.Requests[0]
				if r.POPKind != POPSignature {
					t.Fatalf("POP kind %d", r.POPKind)
				}
				if _, err := r.VerifyPOP(POPAuth{}); err != nil {
					t.Errorf("VerifyPOP: %v", err)
				}
				r.RawCertReq[len(r.RawCertReq)-1] ^= 1
				if _, err := r.VerifyPOP(POPAuth{}); err == nil {
					t.Error("VerifyPOP accepted a modified request")
				}
				if !strings.HasPrefix(func() string { n, _ := r.Template.SubjectName(); return n.CommonName }(), "Device") {
					t.Error("template subject missing")
				}
				if _, err := r.Template.ParsePublicKey(); err != nil {
					t.Error(err)
				}
			}
			if tt.check != nil {
				tt.check(t, m)
			}
		})
	}
}

func TestOpenSSLResponses(t *testing.T) {
	newCert := fixtureCert(t, "new.pem")
	tests := []struct {
		req, rsp string
		typ      BodyType
		check    func(t *testing.T, m *Message)
	}{
		{"ir_pbm_req1.der", "ir_pbm_rsp1.der", TypeIP, func(t *testing.T, m *Message) {
			res, err := ParseEnrollResponse(m, 0)
			if err != nil || !res.Cert.Equal(newCert) {
				t.Fatalf("ip: %v", err)
			}
		}},
		{"ir_pbm_req2.der", "ir_pbm_rsp2.der", TypePKIConf, nil},
		{"ir_sig_req1.der", "ir_sig_rsp1.der", TypeIP, func(t *testing.T, m *Message) {
			if len(m.Body.(*CertRepMessage).CAPubs) != 1 {
				t.Error("caPubs missing")
			}
		}},
		{"ir_sig384_req1.der", "ir_sig384_rsp1.der", TypeIP, nil},
		{"ir_sigrsa_req1.der", "ir_sigrsa_rsp1.der", TypeIP, nil},
		{"cr_req1.der", "cr_rsp1.der", TypeCP, nil},
		{"p10cr_req1.der", "p10cr_rsp1.der", TypeCP, nil},
		{"kur_req1.der", "kur_rsp1.der", TypeKUP, nil},
		{"rr_req1.der", "rr_rsp1.der", TypeRP, func(t *testing.T, m *Message) {
			if rp := m.Body.(*RevRepContent); rp.Status[0].Status != StatusAccepted {
				t.Errorf("rp status %v", rp.Status)
			}
		}},
		{"genm_req1.der", "genm_rsp1.der", TypeGenP, nil},
		{"ir_implicit_req1.der", "ir_implicit_rsp1.der", TypeIP, func(t *testing.T, m *Message) {
			res, err := ParseEnrollResponse(m, 0)
			if err != nil || !res.ImplicitConfirm {
				t.Errorf("implicit confirm not granted: %v", err)
			}
		}},
		{"ir_poll_req1.der", "ir_poll_rsp1.der", TypeIP, func(t *testing.T, m *Message) {
			res, err := ParseEnrollResponse(m, 0)
			if err != nil || !res.Waiting {
				t.Errorf("want waiting: %+v %v", res, err)
			}
		}},
		{"ir_poll_req2.der", "ir_poll_rsp2.der", TypePollRep, func(t *testing.T, m *Message) {
			e := m.Body.(*PollRepContent).Entries
			if len(e) != 1 || e[0].CertReqID != 0 || e[0].CheckAfter != 0 {
				t.Errorf("pollRep %+v", e)
			}
		}},
		{"ir_poll_req3.der", "ir_poll_rsp3.der", TypeIP, nil},
		{"ir_poll_req4.der", "ir_poll_rsp4.der", TypePKIConf, nil},
		{"ir_reject_req1.der", "ir_reject_rsp1.der", TypeIP, func(t *testing.T, m *Message) {
			st := m.Body.(*CertRepMessage).Responses[0].Status
			if st.Status != StatusRejection || st.FailInfo != FailBadPOP || st.StatusString[0] != "bad POP" {
				t.Errorf("status %v", st)
			}
			if _, err := ParseEnrollResponse(m, 0); err == nil {
				t.Error("rejection not reported")
			}
		}},
		{"ir_error_req1.der", "ir_error_rsp1.der", TypeError, func(t *testing.T, m *Message) {
			e := m.Body.(*ErrorContent)
			if e.Status.Status != StatusRejection || e.Status.FailInfo != FailBadRequest || e.ErrorCode == nil || len(e.ErrorDetails) == 0 {
				t.Errorf("error %+v", e)
			}
			if m.Failed() == nil {
				t.Error("Failed() = nil")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.rsp, func(t *testing.T) {
			req := parseFixture(t, tt.req)
			m := parseFixture(t, tt.rsp)
			if m.Body.Type() != tt.typ {
				t.Fatalf("body %s, want %s", m.Body.Type(), tt.typ)
			}
			if err := CheckResponse(&req.Header, &m.Header); err != nil {
				t.Error(err)
			}
			verifyFixture(t, tt.rsp, m)
			if tt.check != nil {
				tt.check(t, m)
			}
		})
	}
}
