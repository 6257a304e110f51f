package datadir

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSecretsArePrivate: on a fresh directory every directory holding keys is 0700 and every
// key and the demo secret 0600; on a later start, a directory restored or copied with wider
// modes (private keys 0644 in a 0755 directory: readable by every local user) is narrowed
// again, with a warning per file, and nothing is re-created.
func TestSecretsArePrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	d, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	p := d.Paths
	dirs := []string{p.Private, p.Demo, p.DemoPrivate}
	secrets := []string{p.RootKey, p.IssuingKey, p.ServerKey, p.CMPSignerKey, p.ManufacturerKey, p.DeviceKey, p.CMPSecret}
	extra := filepath.Join(p.Private, "operator-added.key")
	if err := os.WriteFile(extra, []byte("k"), 0o600); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		for _, f := range dirs {
			if st, err := os.Stat(f); err != nil || st.Mode().Perm() != 0o700 {
				t.Errorf("%s: %s: mode %v, %v; want 0700", when, f, st.Mode().Perm(), err)
			}
		}
		for _, f := range append(secrets, extra) {
			if st, err := os.Stat(f); err != nil || st.Mode().Perm() != 0o600 {
				t.Errorf("%s: %s: mode %v, %v; want 0600", when, f, st.Mode().Perm(), err)
			}
		}
	}
	check("fresh")

	for _, f := range dirs {
		if err := os.Chmod(f, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range append(secrets, extra) {
		if err := os.Chmod(f, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var logs bytes.Buffer
	d2, err := Open(Options{Dir: dir, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if len(d2.Created) != 0 {
		t.Errorf("the restart re-created %v", d2.Created)
	}
	check("after restart")
	if got, want := strings.Count(logs.String(), "mode restricted"), len(dirs)+len(secrets)+1; got != want {
		t.Errorf("%d warnings, want %d:\n%s", got, want, logs.String())
	}
	// Public material stays readable: clients install ca.pem.
	if st, err := os.Stat(p.Root); err != nil || st.Mode().Perm()&0o044 == 0 {
		t.Errorf("ca.pem: %v %v", st.Mode(), err)
	}
}
