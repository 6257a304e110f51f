package cli

import (
	"context"
	"crypto"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"coapca/internal/config"
	"coapca/kms"
)

// TestOutputsToDevicesStdoutAndLinks is the attack the suite used to make on its own machine:
// `--out /dev/null --key-out /dev/null` run as root renamed a temporary file over the null
// device and left a regular file there (after which every other user's program writing to
// /dev/null failed). Devices are written through and stay devices; "-" is stdout; a symbolic
// link is followed and stays a link; no state file is made next to a device.
func TestOutputsToDevicesStdoutAndLinks(t *testing.T) {
	s := testServer(t)
	d := s.data.Paths
	ctx := context.Background()
	work := t.TempDir()
	target := filepath.Join(work, "target.pem")
	if err := os.WriteFile(target, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(work, "link.pem")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	estArgs := func(out, keyOut string) []string {
		return []string{"est", "enroll", "--server", s.url(""), "--trust", d.Root, "--cert", d.Device, "--key", d.DeviceKey,
			"--subject", "CN=demo-device-0001", "--out", out, "--key-out", keyOut}
	}
	cmpArgs := func(out, keyOut string) []string {
		return []string{"cmp", "ir", "--server", s.coapURL, "--ref", s.data.CMPSecretRef, "--secret-file", d.CMPSecret,
			"--trust", d.Root, "--subject", "CN=demo-device-0002", "--out", out, "--key-out", keyOut}
	}
	for _, tc := range []struct {
		name       string
		args       []string
		wantStdout []string // PEM block types that must be on stdout
	}{
		{"est to /dev/null", estArgs(os.DevNull, os.DevNull), nil},
		{"cmp to /dev/null", cmpArgs(os.DevNull, os.DevNull), nil},
		{"est to stdout", estArgs("-", "-"), []string{"CERTIFICATE", "PRIVATE KEY"}},
		{"est through a link", estArgs(link, filepath.Join(work, "k.pem")), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := cli(ctx, tc.args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			if fi, err := os.Stat(os.DevNull); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
				t.Fatalf("%s is no longer a character device (%v, %v): repair with 'rm -f /dev/null && mknod -m 666 /dev/null c 1 3'", os.DevNull, fi.Mode(), err)
			}
			for _, typ := range tc.wantStdout {
				if !strings.Contains(out, "-----BEGIN "+typ+"-----") {
					t.Errorf("stdout lacks a %s:\n%s", typ, out)
				}
			}
			if _, err := os.Stat(os.DevNull + pendingSuffix); err == nil {
				t.Errorf("a state file was made next to %s", os.DevNull)
			}
		})
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("--out replaced the symbolic link: %v %v", fi.Mode(), err)
	}
	readCert(t, target)
}

// TestEnrollResumesSavedKey is the attack of an interruption between sending the CSR and
// saving the answer: the old client generated the key, sent the CSR and wrote the key only with
// the certificate, so a request left pending (or a client that died) lost its key, and the run
// after approval made a new key and a new request. Now the key and the CSR are saved next to
// --key-out before the CSR goes out; the same command run again resends the identical CSR (the
// approved request is found again) and the certificate certifies the saved key.
func TestEnrollResumesSavedKey(t *testing.T) {
	dir := t.TempDir()
	s := testServerAt(t, dir)
	d := s.data.Paths
	ctx := context.Background()
	work := t.TempDir()
	keyOut, certOut := filepath.Join(work, "ldevid.key"), filepath.Join(work, "ldevid.pem")
	enroll := func(subject string) (string, int) {
		_, errOut, code := cli(ctx, "est", "enroll", "--server", s.url("manual"), "--trust", d.Root,
			"--cert", d.Device, "--key", d.DeviceKey, "--subject", subject, "--wait", "0s",
			"--key-out", keyOut, "--out", certOut)
		return errOut, code
	}
	errOut, code := enroll("CN=demo-device-0001")
	if code == 0 || !strings.Contains(errOut, "pending") {
		t.Fatalf("first run: exit %d %s", code, errOut)
	}
	state := keyOut + pendingSuffix
	saved, err := loadEnrollState(state)
	if err != nil || saved == nil || saved.csr == nil {
		t.Fatalf("no key and CSR saved before the CSR was sent: %v", err)
	}
	if fi, err := os.Stat(state); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode: %v %v", fi, err)
	}
	if _, err := os.Stat(keyOut); err == nil {
		t.Fatal("--key-out written before there is a certificate")
	}
	// Another subject on the same --key-out is refused, the saved request untouched.
	if errOut, code := enroll("CN=someone-else"); code == 0 || !strings.Contains(errOut, "is for") {
		t.Fatalf("resume with another subject: exit %d %s", code, errOut)
	}
	pend := listPending(t, dir)
	if len(pend) != 1 {
		t.Fatalf("%d pending requests, want 1", len(pend))
	}
	if _, errOut, code := cli(ctx, "ca", "approve", pend[0], "--data", dir); code != 0 {
		t.Fatalf("ca approve: %s", errOut)
	}
	if errOut, code := enroll("CN=demo-device-0001"); code != 0 || !strings.Contains(errOut, "resuming") {
		t.Fatalf("resumed run: exit %d %s", code, errOut)
	}
	cert := readCert(t, certOut)
	key, err := kms.LoadKeyFile(keyOut)
	if err != nil {
		t.Fatal(err)
	}
	if !key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(cert.PublicKey) {
		t.Fatal("the certificate does not certify the key in --key-out")
	}
	if !key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(saved.key.Public()) {
		t.Fatal("the resumed run did not use the saved key")
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Fatalf("state file left after success: %v", err)
	}
	if p := listPending(t, dir); len(p) != 0 {
		t.Fatalf("the resumed run made another request: %v", p)
	}
}

// TestEnrollWaitsAcrossServerRestart is the attack of a server restart while a device waits for
// approval: the old client kept retransmitting on its dead DTLS session until it failed (and
// its key was lost). Now the client sees the session end (close_notify), makes a new one when
// the server is back, and gets its certificate within --wait.
func TestEnrollWaitsAcrossServerRestart(t *testing.T) {
	dir := t.TempDir()
	s := testServerAt(t, dir)
	d := s.data.Paths
	addr := strings.TrimPrefix(s.coapsURL, "coaps://")
	work := t.TempDir()
	certOut := filepath.Join(work, "ldevid.pem")
	done := make(chan string, 1)
	told := s.CoAPSStats().Responses["5.03"]
	go func() {
		_, errOut, code := cli(context.Background(), "est", "enroll", "--server", "coaps://"+addr+"/manual", "--trust", d.Root,
			"--cert", d.Device, "--key", d.DeviceKey, "--subject", "CN=demo-device-0001", "--wait", "2m",
			"--key-out", filepath.Join(work, "ldevid.key"), "--out", certOut)
		done <- fmt.Sprintf("%d %s", code, errOut)
	}()
	waitUntil(t, time.Minute, "the device to be told its request is pending", func() bool {
		return s.CoAPSStats().Responses["5.03"] > told
	})
	shut, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.Shutdown(shut); err != nil {
		t.Fatal(err)
	}
	pend := listPending(t, dir)
	if len(pend) != 1 {
		t.Fatalf("%d pending requests, want 1", len(pend))
	}
	if _, errOut, code := cli(context.Background(), "ca", "approve", pend[0], "--data", dir); code != 0 {
		t.Fatalf("ca approve: %s", errOut)
	}
	testServerAt(t, dir, func(c *config.Config) { c.Listen.CoAPS = addr })
	res := <-done
	if !strings.HasPrefix(res, "0 ") || !strings.Contains(res, "reconnected") {
		t.Fatalf("enroll across the restart: %s", res)
	}
	readCert(t, certOut)
}
