// Package testtool runs the external programs that interop tests use as peers and checkers
// (libcoap's coap-client and coap-server, openssl): LookPath skips a test when its program is
// missing (and fails it in CI), Run and MustRun run one with a hard deadline, so that a hanging peer fails the test
// instead of stalling the run, and OpenSSLCMP runs `openssl cmp`.
package testtool

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// LookPath returns the path of the program name. When it is not installed, the test is
// skipped — or fails when the environment variable CI is set: scripts/test.sh installs every
// peer, so in CI a missing one is a broken setup, not a reason to pass.
func LookPath(tb testing.TB, name string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			tb.Fatalf("%s is required in CI (scripts/test.sh installs it)", name)
		}
		tb.Skipf("%s not installed", name)
	}
	return p
}

// Run runs bin with args, killed after timeout, and returns its stdout. A failure's error
// names the program and its arguments and carries its stderr.
func Run(tb testing.TB, timeout time.Duration, bin string, args ...string) ([]byte, error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("%s %s: %w\nstdout: %s\nstderr: %s", filepath.Base(bin), strings.Join(args, " "), err, out.Bytes(), errb.Bytes())
	}
	return out.Bytes(), nil
}

// MustRun is Run that ends the test on failure.
func MustRun(tb testing.TB, timeout time.Duration, bin string, args ...string) []byte {
	tb.Helper()
	out, err := Run(tb, timeout, bin, args...)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// NeedOpenSSLCMP skips the test unless openssl is installed and has the cmp command (OpenSSL
// 3.0 or later).
func NeedOpenSSLCMP(tb testing.TB) {
	tb.Helper()
	LookPath(tb, "openssl")
	if out, err := exec.Command("openssl", "cmp", "-help").CombinedOutput(); err != nil && !strings.Contains(string(out), "-rspin") {
		tb.Skip("openssl has no cmp command (OpenSSL 3.0 or later is needed)")
	}
}

// OpenSSLCMP runs `openssl cmp -config "" args...` in dir, killed after timeout, and returns
// its combined output.
func OpenSSLCMP(tb testing.TB, timeout time.Duration, dir string, args ...string) (string, error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "openssl", append([]string{"cmp", "-config", ""}, args...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// SoftHSMModule is the PKCS#11 module of Debian's softhsm2.
const SoftHSMModule = "/usr/lib/softhsm/libsofthsm2.so"

// SoftHSMToken initialises a fresh SoftHSM2 token labelled label with user PIN pin in a
// temporary directory (SOFTHSM2_CONF is set for the test, so the test must not run in
// parallel with another SoftHSM2 test) and returns the module path. It skips (fails in CI)
// when softhsm2 is not installed.
func SoftHSMToken(tb testing.TB, label, pin string) string {
	tb.Helper()
	util := LookPath(tb, "softhsm2-util")
	if _, err := os.Stat(SoftHSMModule); err != nil {
		if os.Getenv("CI") != "" {
			tb.Fatalf("%s is required in CI (scripts/test.sh installs softhsm2)", SoftHSMModule)
		}
		tb.Skipf("%s not installed", SoftHSMModule)
	}
	dir := tb.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		tb.Fatal(err)
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	if err := os.WriteFile(conf, []byte("directories.tokendir = "+tokens+"\nobjectstore.backend = file\nlog.level = ERROR\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	tb.Setenv("SOFTHSM2_CONF", conf)
	MustRun(tb, time.Minute, util, "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", "5678"+pin)
	return SoftHSMModule
}
