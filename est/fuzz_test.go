package est

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"

	"coapca/errs"
)

// The parsers below read bytes straight from the network: they must never panic, and what
// they accept must re-encode to something they accept again.

func FuzzParseCSR(f *testing.F) {
	f.Add(readVector(f, "a2-sen-request-286.der"))
	f.Add(readVector(f, "a3-skg-request-286.der"))
	f.Add([]byte{0x30, 0x00})
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		csr, err := ParseCSR(b, true)
		if err != nil {
			checkCSRDiagnostic(t, b, err)
			csr, err = ParseCSR(b, false)
			if err != nil {
				checkCSRDiagnostic(t, b, err)
				return
			}
		}
		_, _, _ = ChallengePassword(csr)
		_, _ = EncryptedKeyRequest(csr)
		_, _ = HardwareModuleNames(csr.Extensions)
	})
}

// checkCSRDiagnostic: whatever the bytes, a refused CSR is a client error with a one-line,
// bounded diagnostic that carries no Go value dump.
func checkCSRDiagnostic(t *testing.T, b []byte, err error) {
	t.Helper()
	if k := errs.KindOf(err); k != errs.BadRequest && k != errs.TooLarge {
		t.Fatalf("% x: kind %v: %v", b, k, err)
	}
	if m := errs.Message(err); strings.ContainsAny(m, "{}\r\n") || len(m) > maxCSRDiagnostic || !utf8.ValidString(m) {
		t.Fatalf("% x: diagnostic %q", b, m)
	}
}

func FuzzParseMultipart(f *testing.F) {
	f.Add(readVector(f, "a3-skg-response-62.cbor"))
	f.Add(readVector(f, "sec5.3-multipart-example-62.cbor"))
	f.Add([]byte{0x80})
	f.Add([]byte{0x82, 0x18, 0x3c, 0xf6})
	f.Fuzz(func(t *testing.T, b []byte) {
		parts, err := ParseMultipart(b)
		if err != nil {
			return
		}
		enc, err := EncodeMultipart(parts)
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseMultipart(enc)
		if err != nil || len(again) != len(parts) {
			t.Fatalf("re-parse: %v", err)
		}
		for i := range parts {
			if again[i].ContentFormat != parts[i].ContentFormat || again[i].Null != parts[i].Null || !bytes.Equal(again[i].Body, parts[i].Body) {
				t.Fatalf("part %d changed", i)
			}
		}
	})
}

func FuzzParseCsrAttrs(f *testing.F) {
	for _, n := range []string{"a4-att-response-285.der", "realistic-acp.csrattr.der", "harkins01.csrattr.der",
		"harkins02.csrattr.der", "harkins03.csrattr.der", "potato-example.csrattr.der", "rfc7030-example01.csrattr.der"} {
		f.Add(readVector(f, n))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ParseCsrAttrs(b)
		if err != nil {
			return
		}
		_ = a.String()
		_ = a.KeyType()
		_ = a.SignatureAlgorithm()
		_ = a.Extensions()
		enc, err := a.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseCsrAttrs(enc); err != nil {
			t.Fatalf("re-parse: %v", err)
		}
	})
}

func FuzzParseCertsOnly(f *testing.F) {
	f.Add(readVector(f, "a1-crts-response-281.der"))
	f.Add(readVector(f, "a3-skg-cert-281.der"))
	f.Fuzz(func(t *testing.T, b []byte) {
		certs, err := ParseCertsOnly(b)
		if err != nil {
			return
		}
		if _, err := EncodeCertsOnly(certs); err != nil {
			t.Fatal(err)
		}
	})
}
