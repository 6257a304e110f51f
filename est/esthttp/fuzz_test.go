package esthttp

import (
	"bytes"
	"encoding/base64"
	"testing"
)

// FuzzDecodeBody: any body decodes to DER or a typed error, never a panic, and what the
// server sends (EncodeBody), in any line wrapping, decodes back to the same bytes.
func FuzzDecodeBody(f *testing.F) {
	f.Add([]byte("MIIBAA=="))
	f.Add([]byte("MIIB\r\nAA==\r\n"))
	f.Add([]byte{0x30, 0x82, 0x00, 0x01, 0x00})
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := DecodeBody(b); err != nil && err.Error() == "" {
			t.Fatal("error without text")
		}
		if len(b) == 0 {
			return
		}
		enc := EncodeBody(b)
		got, err := DecodeBody([]byte(enc))
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("round trip of %x: %x, %v", b, got, err)
		}
		mime := base64.StdEncoding.EncodeToString(b)
		var wrapped []byte
		for len(mime) > 64 {
			wrapped = append(wrapped, mime[:64]+"\r\n"...)
			mime = mime[64:]
		}
		wrapped = append(wrapped, mime...)
		if got, err := DecodeBody(wrapped); err != nil || !bytes.Equal(got, b) {
			t.Fatalf("wrapped round trip of %x: %x, %v", b, got, err)
		}
	})
}
