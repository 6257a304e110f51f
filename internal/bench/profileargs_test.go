package bench

import (
	"slices"
	"testing"
)

// TestServerProfileArgs: each profile or trace asked of a spawned server becomes its serve flag.
func TestServerProfileArgs(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    ESTOptions
		want []string
	}{
		{"none", ESTOptions{}, nil},
		{"cpu", ESTOptions{ServerCPUProfile: "c"}, []string{"--cpuprofile", "c"}},
		{"trace", ESTOptions{ServerTrace: "t"}, []string{"--trace", "t"}},
		{"all", ESTOptions{ServerCPUProfile: "c", ServerMemProfile: "m", ServerTrace: "t"},
			[]string{"--cpuprofile", "c", "--memprofile", "m", "--trace", "t"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.o.ServerProfileArgs(); !slices.Equal(got, tc.want) {
				t.Errorf("ServerProfileArgs() = %q, want %q", got, tc.want)
			}
		})
	}
}
