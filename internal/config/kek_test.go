package config

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadKEKs(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	raw := bytes.Repeat([]byte{0xfe}, 16)
	hexFile := write("hex", []byte("  000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n"))
	rawFile := write("raw", raw)
	short := write("short", []byte("0011"))
	for _, tc := range []struct {
		name string
		keks []KEK
		want map[string][]byte
		err  string
	}{
		{"hex and raw", []KEK{{ID: "6b31", KeyFile: hexFile}, {ID: "02", KeyFile: rawFile}}, map[string][]byte{
			"k1":   {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31},
			"\x02": raw}, ""},
		{"id not hex", []KEK{{ID: "k1", KeyFile: rawFile}}, nil, "not a non-empty hex string"},
		{"duplicate id", []KEK{{ID: "01", KeyFile: rawFile}, {ID: "01", KeyFile: hexFile}}, nil, "appears twice"},
		{"not an AES key", []KEK{{ID: "01", KeyFile: short}}, nil, "not an AES key"},
		{"missing file", []KEK{{ID: "01", KeyFile: filepath.Join(dir, "none")}}, nil, "no such file"},
		{"no file", []KEK{{ID: "01"}}, nil, "has no key_file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := EST{ServerKeygenKEKs: tc.keks}.LoadKEKs()
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || len(got) != len(tc.want) {
				t.Fatalf("%v %v", got, err)
			}
			for id, k := range tc.want {
				if !bytes.Equal(got[id], k) {
					t.Errorf("%q = %x, want %x", id, got[id], k)
				}
			}
		})
	}
}
