package store

import (
	"bytes"
	"testing"
)

func TestNormalizeSerial(t *testing.T) {
	tests := []struct{ in, want string }{
		{"0x01:AB", "1ab"}, {"01ab", "1ab"}, {"1AB", "1ab"}, {" 00 ", "0"},
	}
	for _, tt := range tests {
		if got, err := NormalizeSerial(tt.in); err != nil || got != tt.want {
			t.Errorf("NormalizeSerial(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "xyz", "0x", "-1"} {
		if _, err := NormalizeSerial(bad); err == nil {
			t.Errorf("NormalizeSerial(%q) accepted", bad)
		}
	}
}

// TestPrefixEnd: the range [prefix, PrefixEnd(prefix)) holds exactly the strings with that
// prefix, also when its last bytes are 0xff (a hash prefix may be).
func TestPrefixEnd(t *testing.T) {
	tests := []struct {
		in, want []byte
	}{
		{[]byte{1, 2}, []byte{1, 3}},
		{[]byte{1, 0xff}, []byte{2}},
		{[]byte{0xfe, 0xff, 0xff}, []byte{0xff}},
		{[]byte{0xff, 0xff}, nil},
		{nil, nil},
	}
	for _, tt := range tests {
		if got := PrefixEnd(tt.in); !bytes.Equal(got, tt.want) || (got == nil) != (tt.want == nil) {
			t.Errorf("PrefixEnd(%x) = %x, want %x", tt.in, got, tt.want)
		}
	}
}
