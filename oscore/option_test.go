package oscore

import (
	"os"
	"path/filepath"
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

func TestCBORInts(t *testing.T) {
	tests := []struct {
		v    int
		want string
	}{{0, "00"}, {23, "17"}, {24, "1818"}, {255, "18ff"}, {256, "190100"}, {65536, "1a00010000"},
		{1 << 32, "1b0000000100000000"}, {-1, "20"}, {-10, "29"}, {-25, "3818"}}
	for _, tc := range tests {
		checkHex(t, "cbor int", cborInt(nil, tc.v), tc.want)
	}
}
