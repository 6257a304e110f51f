package cli

import (
	"path/filepath"
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
	var cmds [][]string
	var cur string
	flush := func() {
		if cur != "" {
			cmds = append(cmds, strings.Fields(cur))
			cur = ""
		}
	}
	for _, l := range strings.Split(b.String(), "\n") {
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
	var edhoc bool
	for _, c := range cmds {
		edhoc = edhoc || strings.Contains(strings.Join(c, " "), "--edhoc")
	}
	if len(cmds) < 4 || !edhoc {
		t.Fatalf("%d coapca commands in the welcome text (want est over coaps, est --edhoc, two cmp ir):\n%s", len(cmds), b.String())
	}
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
