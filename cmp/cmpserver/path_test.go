package cmpserver_test

import (
	"testing"

	"coapca/cmp/cmpserver"
)

func TestSplitPath(t *testing.T) {
	const root = "/.well-known/cmp"
	tests := []struct {
		path, label, segment string
		ok                   bool
	}{
		{root, "", "", true},
		{root + "/", "", "", true},
		{root + "/ir", "", "ir", true},
		{root + "/p/sensors", "sensors", "", true},
		{root + "/p/sensors/", "sensors", "", true},
		{root + "/p/sensors/initialization", "sensors", "initialization", true},
		{root + "/p/sensors/ann", "sensors", "ann", true},
		{root + "/p", "", "p", true}, // one segment: the binding finds no operation "p"
		{root + "/p/", "", "p", true},
		{root + "//p/x/", "x", "", true}, // slashes around the rest are ignored
		{root + "/p//ir", "", "", false},
		{root + "/a/b", "", "", false},
		{root + "/p/x/y/z", "", "", false},
		// A path that only begins with the root's characters is not below it.
		{root + "ir", "", "", false},
		{root + "x/p/sensors/ir", "", "", false},
		{"/other", "", "", false},
		{"", "", "", false},
	}
	for _, tc := range tests {
		label, seg, ok := cmpserver.SplitPath(root, tc.path)
		if ok != tc.ok || ok && (label != tc.label || seg != tc.segment) {
			t.Errorf("SplitPath(%q) = %q %q %v, want %q %q %v", tc.path, label, seg, ok, tc.label, tc.segment, tc.ok)
		}
	}
}
