package cmp

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse feeds arbitrary bytes to the PKIMessage decoder. Whatever parses must re-encode,
// re-parse and re-encode to the same bytes, and the helpers that run on decoded network
// input must not panic.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "openssl", "*.der"))
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		m, err := Parse(der)
		if err != nil {
			return
		}
		out, err := m.Marshal(nil)
		if err != nil {
			return // e.g. a body the encoder refuses (POP kinds it cannot write)
		}
		m2, err := Parse(out)
		if err != nil {
			t.Fatalf("re-encoded message does not parse: %v", err)
		}
		out2, err := m2.Marshal(nil)
		if err != nil || !bytes.Equal(out, out2) {
			t.Fatalf("encoding not stable: %v", err)
		}
		_ = m.ProtectionKind()
		_ = m.Failed()
		_ = m.Header.ImplicitConfirm()
		_, _ = m.Header.ConfirmWaitTime()
		_ = m.Header.CertProfile()
		_ = m.Header.Sender.String()
		_ = CheckRequest(&m.Header)
		if m.ProtectionKind() == ProtectionSignature {
			_ = m.VerifySignature(m.ProtectionCert())
		}
		switch b := m.Body.(type) {
		case *CertReqMessages:
			for i := range b.Requests {
				_, _ = b.Requests[i].VerifyPOP(POPAuth{Secret: []byte("pw")})
				_, _ = b.Requests[i].OldCertID()
				_, _ = b.Requests[i].Template.SubjectName()
			}
		case *CertRepMessage:
			_, _ = ParseEnrollResponse(m, 0)
		case *RevReqContent:
			for i := range b.Requests {
				_ = b.Requests[i].Reason()
			}
		case *GenContent:
			for _, it := range b.ITAVs {
				_, _ = ParseCerts(it.Value)
				_, _ = ParseRootCAKeyUpdate(it.Value)
				_, _ = ParseCertReqTemplate(it.Value)
				_, _ = ParseCRLStatusList(it.Value)
				_, _ = ParseCRLs(it.Value)
				_, _ = ParseCertProfile(it.Value)
			}
		}
	})
}
