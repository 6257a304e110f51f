package store

import "testing"

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
