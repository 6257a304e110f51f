package oscore

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseOptionValueRejects(t *testing.T) {
	tests := []struct{ name, hex string }{
		{"all-zero flags as one byte", "00"},
		{"reserved bit 5", "2914"},
		{"reserved bit 7", "8914"},
		{"piv length 6", "06010203040506"},
		{"piv length 7", "0701020304050607"},
		{"piv truncated", "0314"},
		{"piv leading zero", "020014"},
		{"kid context length missing", "1114"},
		{"kid context truncated", "111403aabb"},
		{"trailing bytes without kid flag", "011400"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if ov, err := ParseOptionValue(unhex(t, tc.hex)); err == nil {
				t.Fatalf("%s accepted as %+v", tc.hex, ov)
			}
		})
	}
}

func TestPartialIVEncoding(t *testing.T) {
	tests := []struct {
		seq  uint64
		want string
	}{{0, "00"}, {1, "01"}, {20, "14"}, {255, "ff"}, {256, "0100"}, {MaxSequenceNumber, "ffffffffff"}}
	for _, tc := range tests {
		checkHex(t, "piv", encodePIV(tc.seq), tc.want)
		if got := decodePIV(unhex(t, tc.want)); got != tc.seq {
			t.Errorf("decode %s = %d", tc.want, got)
		}
	}
}

func TestFileSequenceStore(t *testing.T) {
	p := filepath.Join(t.TempDir(), "ssn")
	s := NewFileSequenceStore(p, 5)
	if n, err := s.Load(); err != nil || n != 5 {
		t.Fatalf("fresh store: %d %v", n, err)
	}
	if err := s.Reserve(1234); err != nil {
		t.Fatal(err)
	}
	if n, err := NewFileSequenceStore(p, 0).Load(); err != nil || n != 1234 {
		t.Fatalf("reload: %d %v", n, err)
	}
	if err := os.WriteFile(p, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(); err == nil {
		t.Fatal("corrupt store accepted")
	}
	// A context must not start on a store it cannot read.
	if _, err := NewContext(Params{MasterSecret: []byte{1}, SenderID: []byte{1}, SequenceStore: s}); err == nil {
		t.Fatal("context created over a corrupt store")
	}
	if err := NewFileSequenceStore(filepath.Join(t.TempDir(), "missing", "ssn"), 0).Reserve(1); err == nil {
		t.Fatal("reserve in a missing directory succeeded")
	}
}

// TestCOSEEncodingEdges checks the deterministic encoding (RFC 8949 §4.2.1) of the HKDF info
// (RFC 8613 §3.2.1) and aad_array (§5.4) where the Appendix C vectors do not reach: integer
// arguments at every length boundary, negative algorithm identifiers, an
// ID Context that is present but empty (h”) versus absent (null), and an absent kid (h”).
func TestCOSEEncodingEdges(t *testing.T) {
	tests := []struct {
		name string
		got  func() ([]byte, error)
		want string
	}{
		{"info L 23", func() ([]byte, error) { return hkdfInfo(nil, nil, false, 10, "IV", 23) }, "8540f60a624956" + "17"},
		{"info L 24", func() ([]byte, error) { return hkdfInfo(nil, nil, false, 10, "IV", 24) }, "8540f60a624956" + "1818"},
		{"info L 256", func() ([]byte, error) { return hkdfInfo(nil, nil, false, 10, "IV", 256) }, "8540f60a624956" + "190100"},
		{"info L 65536", func() ([]byte, error) { return hkdfInfo(nil, nil, false, 10, "IV", 65536) }, "8540f60a624956" + "1a00010000"},
		{"info L 2^32", func() ([]byte, error) { return hkdfInfo(nil, nil, false, 10, "IV", 1<<32) }, "8540f60a624956" + "1b0000000100000000"},
		{"info alg -25", func() ([]byte, error) { return hkdfInfo([]byte{1}, nil, false, -25, "Key", 16) }, "854101f6" + "3818" + "634b6579" + "10"},
		{"info alg 255 (one-byte argument)", func() ([]byte, error) { return hkdfInfo(nil, nil, false, 255, "Key", 16) }, "8540f6" + "18ff" + "634b6579" + "10"},
		{"info empty ID Context", func() ([]byte, error) { return hkdfInfo(nil, nil, true, 10, "Key", 16) }, "854040" + "0a" + "634b6579" + "10"},
		{"info ID Context", func() ([]byte, error) { return hkdfInfo(nil, []byte{0x37, 0xcb}, true, 10, "Key", 16) }, "854042" + "37cb" + "0a634b657910"},
		{"aad_array absent kid", func() ([]byte, error) { return aadArray(10, nil, []byte{0x14}) }, "8501810a" + "40" + "4114" + "40"},
		{"aad_array alg -1", func() ([]byte, error) { return aadArray(-1, []byte{0}, []byte{0}) }, "850181" + "20" + "4100410040"},
		{"Enc_structure 24-byte aad_array", func() ([]byte, error) { return encStructure(make([]byte, 24)) }, "8368456e6372797074304058" + "18" + strings.Repeat("00", 24)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkHex(t, tc.name, encoded(t)(tc.got()), tc.want)
		})
	}
}
