package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestStartTrace: serve --trace writes a runtime trace that go tool trace can read (it starts
// with the trace header), and a path that cannot be created is an error, not a silent no-op.
func TestStartTrace(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name    string
		path    string
		wantErr bool
	}{
		{"writable", filepath.Join(dir, "srv.trace"), false},
		{"missing directory", filepath.Join(dir, "no", "srv.trace"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stop, err := startTrace(tc.path)
			if tc.wantErr {
				if err == nil {
					stop()
					t.Fatal("startTrace succeeded")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			stop()
			b, err := os.ReadFile(tc.path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(b, []byte("go 1.")) {
				t.Errorf("trace starts with %q, want the go trace header", b[:min(len(b), 16)])
			}
		})
	}
}
