package client

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestWriteTrustAnchorsKeepsLinks is the attack of an explicit trust anchor database that is a
// symbolic link (to a file managed elsewhere): the old writer renamed a temporary file over the
// link, replacing it. The link must stay and its target get the anchors.
func TestWriteTrustAnchorsKeepsLinks(t *testing.T) {
	p := newTestPKI(t, "ta", time.Now().Add(time.Hour))
	dir := t.TempDir()
	target := filepath.Join(dir, "managed.pem")
	if err := os.WriteFile(target, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "explicit-ta.pem")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if err := WriteTrustAnchors(link, []*x509.Certificate{p.root, p.ca}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the link was replaced: %v %v", fi.Mode(), err)
	}
	got, err := ReadTrustAnchors(target)
	if err != nil || len(got) != 2 || !got[0].Equal(p.root) {
		t.Fatalf("target holds %d certificates: %v", len(got), err)
	}
}
