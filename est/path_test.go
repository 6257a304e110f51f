package est

import "testing"

func TestSplitPath(t *testing.T) {
	tests := []struct {
		root, path, label, op string
		ok                    bool
	}{
		{"/.well-known/est", "/.well-known/est/cacerts", "", "cacerts", true},
		{"/.well-known/est", "/.well-known/est/lbl/simpleenroll", "lbl", "simpleenroll", true},
		{"/e", "/e/lbl/sen", "lbl", "sen", true},
		{"/.well-known/est", "/.well-known/est/", "", "", false},
		{"/.well-known/est", "/.well-known/est", "", "", false},
		{"/.well-known/est", "/.well-known/est//cacerts", "", "", false},
		{"/.well-known/est", "/.well-known/est/lbl/", "", "", false},
		{"/.well-known/est", "/.well-known/est/a/b/cacerts", "", "", false},
		{"/.well-known/est", "/.well-known/estcacerts", "", "", false},
		{"/e", "/.well-known/est/cacerts", "", "", false},
	}
	for _, tc := range tests {
		l, o, ok := SplitPath(tc.root, tc.path)
		if ok != tc.ok || ok && (l != tc.label || o != tc.op) {
			t.Errorf("SplitPath(%q, %q) = %q %q %v", tc.root, tc.path, l, o, ok)
		}
	}
}
