package cli

import (
	"os/exec"
	"path/filepath"
	"slices"

	"coapca/internal/config"
	"strings"
	"testing"
)

// TestWelcomeCommands runs the coapca commands that `coapca serve` prints for the demo device
// (EST-coaps, EST-oscore with EDHOC, CMP over CoAP with the demo secret and signed), as printed
// but for the output files, which go to a temporary directory: each must enroll. The EDHOC
// command is the one a default configuration breaks first (message_2 carries the leaf alone, so
// the printed --trust must hold the issuing CA).
func TestWelcomeCommands(t *testing.T) {
	s := testServer(t)
	var b strings.Builder
	s.PrintWelcome(&b, "coapca")
	cmds := welcomeCommands(b.String())
	var edhoc bool
	for _, c := range cmds {
		edhoc = edhoc || strings.Contains(strings.Join(c, " "), "--edhoc")
	}
	if len(cmds) < 4 || !edhoc {
		t.Fatalf("%d coapca commands in the welcome text (want est over coaps, est --edhoc, two cmp ir):\n%s", len(cmds), b.String())
	}
	runWelcomeCommands(t, cmds)
}

// welcomeCommands returns the coapca commands of a welcome text, continuation lines joined.
func welcomeCommands(text string) [][]string {
	var cmds [][]string
	var cur string
	flush := func() {
		if cur != "" {
			cmds = append(cmds, strings.Fields(cur))
			cur = ""
		}
	}
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case cur != "":
			cur += " " + strings.TrimSuffix(l, "\\")
		case strings.HasPrefix(l, "coapca est ") || strings.HasPrefix(l, "coapca cmp "):
			cur = strings.TrimSuffix(l, "\\")
		default:
			continue
		}
		if !strings.HasSuffix(l, "\\") {
			flush()
		}
	}
	flush()
	return cmds
}

// runWelcomeCommands runs each command as printed but for --out and --key-out, which go to a
// temporary directory; each must succeed.
func runWelcomeCommands(t *testing.T, cmds [][]string) {
	t.Helper()
	for i, c := range cmds {
		dir := t.TempDir()
		args := append([]string(nil), c[1:]...)
		for j := 1; j < len(args); j++ {
			if args[j-1] == "--out" || args[j-1] == "--key-out" {
				args[j] = filepath.Join(dir, args[j])
			}
		}
		if _, errOut, code := cli(t.Context(), args...); code != 0 {
			t.Errorf("command %d as printed: %s\n%s", i, strings.Join(c, " "), errOut)
		}
	}
}

// TestWelcomeRegistrar: in registrar mode the welcome text's commands work as printed (run in
// the working directory the text assumes): the trust bundle it tells the operator to make
// (the registrar's root and issuing CA and the upstream's root, RFC 9148 §5: the issued
// certificates chain to the upstream), EST-coaps and EST-oscore with EDHOC through the
// registrar, and CMP over CoAP only where this server answers it. The old text gave --trust
// the registrar's root alone, which cannot verify what the upstream issued; with a CMP
// upstream it printed demo CMP commands whose secret the upstream does not know.
func TestWelcomeRegistrar(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cmpUp   bool
		wantCMP int
	}{
		{"EST upstream, CMP answered here", false, 2},
		{"EST and CMP upstreams", true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var regTweak []func(*config.Config)
			if tc.cmpUp {
				regTweak = append(regTweak, func(c *config.Config) {
					c.CMPUpstream = config.CMPUpstream{URL: "http://127.0.0.1:9/.well-known/cmp", Mode: "transparent"}
				})
			}
			_, reg, _ := registrarPair(t, nil, regTweak...)
			t.Chdir(t.TempDir())
			var b strings.Builder
			reg.PrintWelcome(&b, "coapca")
			text := b.String()
			var bundle string
			for _, l := range strings.Split(text, "\n") {
				if l = strings.TrimSpace(l); strings.HasPrefix(l, "cat ") {
					bundle = l
				}
			}
			if bundle == "" {
				t.Fatalf("no trust bundle command in the registrar's welcome:\n%s", text)
			}
			if out, err := exec.Command("sh", "-c", bundle).CombinedOutput(); err != nil {
				t.Fatalf("%s: %v %s", bundle, err, out)
			}
			cmds := welcomeCommands(text)
			var est, edhoc, cmpCmds int
			for _, c := range cmds {
				switch {
				case c[1] == "cmp":
					cmpCmds++
				case slices.Contains(c, "--edhoc"):
					edhoc++
				default:
					est++
				}
			}
			if est != 1 || edhoc != 1 || cmpCmds != tc.wantCMP || tc.cmpUp && strings.Contains(text, "openssl cmp") {
				t.Fatalf("%d est, %d edhoc, %d cmp commands (want 1, 1, %d):\n%s", est, edhoc, cmpCmds, tc.wantCMP, text)
			}
			runWelcomeCommands(t, cmds)
		})
	}
}
