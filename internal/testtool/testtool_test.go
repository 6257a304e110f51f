package testtool

import (
	"strings"
	"testing"
	"time"
)

func TestLookPathSkipsMissing(t *testing.T) {
	t.Setenv("CI", "")
	var sub *testing.T
	t.Run("missing", func(t *testing.T) {
		sub = t
		LookPath(t, "coapca-no-such-program")
		t.Error("LookPath returned for a missing program")
	})
	if !sub.Skipped() {
		t.Fatal("a missing program did not skip the test")
	}
	if p := LookPath(t, "sh"); !strings.HasSuffix(p, "/sh") {
		t.Fatalf("LookPath(sh) = %q", p)
	}
}

func TestRun(t *testing.T) {
	sh := LookPath(t, "sh")
	tests := []struct {
		name    string
		timeout time.Duration
		script  string
		out     string
		errHas  []string // empty: no error
	}{
		{"success", time.Minute, "echo out; echo err >&2", "out\n", nil},
		{"failure carries stderr", time.Minute, "echo out; echo oops >&2; exit 3", "out\n", []string{"exit status 3", "oops", "sh -c"}},
		// The peer hangs: the deadline kills it and the run fails instead of stalling.
		{"hang killed at the deadline", 100 * time.Millisecond, "exec sleep 600", "", []string{"killed"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := Run(t, tc.timeout, sh, "-c", tc.script)
			if string(out) != tc.out {
				t.Errorf("stdout %q, want %q", out, tc.out)
			}
			if len(tc.errHas) == 0 {
				if err != nil {
					t.Fatalf("error %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, s := range tc.errHas {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q lacks %q", err, s)
				}
			}
		})
	}
	if out := MustRun(t, time.Minute, sh, "-c", "printf ok"); string(out) != "ok" {
		t.Fatalf("MustRun = %q", out)
	}
}

// In CI a missing peer fails the test instead of skipping it.
func TestLookPathFailsMissingInCI(t *testing.T) {
	t.Setenv("CI", "true")
	ft := &fatalRecorder{TB: t}
	func() {
		defer func() { _ = recover() }()
		LookPath(ft, "coapca-no-such-program")
	}()
	if !ft.fatal || ft.skipped {
		t.Fatalf("fatal %v, skipped %v: a missing program in CI must fail", ft.fatal, ft.skipped)
	}
}

// fatalRecorder records Fatalf and Skipf instead of ending the test (it panics to stop the
// caller, as FailNow would).
type fatalRecorder struct {
	testing.TB
	fatal, skipped bool
}

func (f *fatalRecorder) Helper() {}
func (f *fatalRecorder) Fatalf(string, ...any) {
	f.fatal = true
	panic("fatal")
}
func (f *fatalRecorder) Skipf(string, ...any) {
	f.skipped = true
	panic("skip")
}
