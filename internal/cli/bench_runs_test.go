package cli

import (
	"context"
	"strings"
	"testing"
)

// TestBenchRunsRefusesBadInput: `bench est --runs` takes a count of at least one, and a series
// is refused with the flags that describe one run (its JSON report, profiles, trace) and with
// the other front doors, each with a usage error (exit code 2) that names the problem.
func TestBenchRunsRefusesBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--runs", "0"}, "--runs must be at least 1"},
		{[]string{"--runs", "-3"}, "--runs must be at least 1"},
		{[]string{"--runs", "2", "--json", "x.json"}, "describe one run"},
		{[]string{"--runs", "2", "--cpuprofile", "x.prof"}, "describe one run"},
		{[]string{"--runs", "2", "--spawn", "--server-trace", "x.trace"}, "describe one run"},
		{[]string{"--runs", "2", "--https"}, "EST-coaps measurement only"},
		{[]string{"--runs", "2", "--oscore"}, "EST-coaps measurement only"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, errOut, code := cli(context.Background(), append([]string{"bench", "est"}, tc.args...)...)
			if code != 2 || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, stderr %q; want 2 and %q", code, errOut, tc.want)
			}
		})
	}
}
