package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"coapca/internal/bench"
)

func writeFile(t *testing.T, dir, name string, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPlotsFromBenchmarkOutput: the figures of docs/benchmarks.md are drawn from the JSON
// that bench est/compare (and bench sessions) write, one PNG per figure.
func TestPlotsFromBenchmarkOutput(t *testing.T) {
	in, out := t.TempDir(), t.TempDir()
	var files []string
	for _, c := range []int{1, 4} {
		files = append(files, writeFile(t, in, fmt.Sprintf("est-%d.json", c), bench.Report{Kind: "est", Concurrency: c,
			Floors:  map[string]float64{"pion_dtls_handshake": 200, "ecdsa_p256_sign": 9000},
			Results: []bench.Result{{Name: "enroll", PerSecond: 100, P50: 10, P90: 20, P99: 30}, {Name: "reenroll", PerSecond: 500, P50: 2, P90: 3, P99: 4}}}))
	}
	files = append(files, writeFile(t, in, "compare.json", bench.Report{Kind: "compare", Concurrency: 8,
		Results: []bench.Result{{Name: "enroll coaps", PerSecond: 100, Bytes: 3300, Datagrams: 10.6}, {Name: "enroll oscore", PerSecond: 1000, Bytes: 800, Datagrams: 2}}}))
	files = append(files, writeFile(t, in, "sessions.json", map[string]any{"kind": "sessions",
		"points": []map[string]float64{{"sessions": 1000, "heap_per_session": 7000, "rss_per_session": 9000}, {"sessions": 3000, "heap_per_session": 6500, "rss_per_session": 8800}}}))
	var stdout bytes.Buffer
	if err := run(append([]string{"-out", out}, files...), &stdout); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"enroll-vs-concurrency.png", "latency.png", "wire-bytes.png", "memory-per-session.png"} {
		b, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, []byte("\x89PNG")) {
			t.Errorf("%s is not a PNG", name)
		}
	}
}

func TestPlotRefusesBadInput(t *testing.T) {
	in := t.TempDir()
	garbage := filepath.Join(in, "garbage.json")
	if err := os.WriteFile(garbage, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"no input", nil, "usage"},
		{"not JSON", []string{garbage}, "garbage.json"},
		{"unknown kind", []string{writeFile(t, in, "x.json", map[string]string{"kind": "weather"})}, "unknown kind"},
		{"missing file", []string{filepath.Join(in, "nope.json")}, "nope.json"},
		{"compare without wire counts", []string{writeFile(t, in, "c.json", bench.Report{Kind: "compare", Results: []bench.Result{{Name: "x", PerSecond: 1}}})}, "without bytes"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := run(append([]string{"-out", t.TempDir()}, tt.args...), &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("run = %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
}

// TestPlotSkipsSessionsOfAnotherShape: the memory hook tells, rather than failing or drawing an
// empty figure, when bench sessions wrote a format it does not know.
func TestPlotSkipsSessionsOfAnotherShape(t *testing.T) {
	in, out := t.TempDir(), t.TempDir()
	f := writeFile(t, in, "s.json", map[string]any{"kind": "sessions", "heap": 123})
	var stdout bytes.Buffer
	if err := run([]string{"-out", out, f}, &stdout); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout.String(), "memory figure skipped") {
		t.Errorf("output = %q", stdout.String())
	}
	if _, err := os.Stat(filepath.Join(out, "memory-per-session.png")); !os.IsNotExist(err) {
		t.Errorf("a memory figure was drawn from nothing: %v", err)
	}
}

// TestThroughputCeilings: the throughput plot draws what each phase would reach if the CPUs
// never idled (CPUs ÷ both sides' CPU per operation) only when every run knows both sides.
func TestThroughputCeilings(t *testing.T) {
	run := func(c int, serverCPU bool) bench.Report {
		r := bench.Report{Kind: "est", Concurrency: c, Machine: bench.Machine{NumCPU: 2},
			Floors:  map[string]float64{"pion_dtls_handshake": 200, "pion_dtls_handshake_child": 180, "ecdsa_p256_sign": 9000},
			Results: []bench.Result{{Name: "enroll", PerSecond: 100}, {Name: "reenroll", PerSecond: 500}},
			CPU:     map[string]float64{"enroll_client": 1, "reenroll_client": 0.1}}
		if serverCPU {
			r.CPU["enroll_server"], r.CPU["reenroll_server"] = 1.5, 0.4
		}
		return r
	}
	tests := []struct {
		name    string
		runs    []bench.Report
		wantMax float64 // the highest line: 0.10 × signs (900), or the re-enrollment ceiling 2 ÷ 0.5 ms
	}{
		{"both sides known in every run", []bench.Report{run(1, true), run(8, true)}, 4000},
		{"no server CPU", []bench.Report{run(1, false), run(8, false)}, 900},
		{"one run without server CPU", []bench.Report{run(1, true), run(8, false)}, 900},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := throughput(tt.runs)
			if err != nil {
				t.Fatal(err)
			}
			if got := p.Y.Max / 1.6; math.Abs(got-tt.wantMax) > 1e-9 { // addLines leaves 60 % above for the legend
				t.Errorf("highest line = %v, want %v", got, tt.wantMax)
			}
		})
	}
}

// TestAimFloors: the aim lines follow the floor measured closest to the phase in the server's
// placement — for enrollments the raw handshakes between the slices, else the pion child's,
// else in-process; for re-enrollments the signs between the slices, else before and after.
func TestAimFloors(t *testing.T) {
	for _, tt := range []struct {
		name   string
		floor  func(bench.Report) float64
		floors map[string]float64
		want   float64
	}{
		{"handshakes between the slices", placedFloor, map[string]float64{"pion_dtls_handshake": 300, "pion_dtls_handshake_child": 200, "pion_dtls_handshake_interleaved": 210}, 210},
		{"handshakes, child", placedFloor, map[string]float64{"pion_dtls_handshake": 300, "pion_dtls_handshake_child": 200}, 200},
		{"handshakes, in-process", placedFloor, map[string]float64{"pion_dtls_handshake": 300}, 300},
		{"no handshakes", placedFloor, nil, 0},
		{"signs between the slices", signFloor, map[string]float64{"ecdsa_p256_sign": 30000, "ecdsa_p256_sign_interleaved": 28000}, 28000},
		{"signs before and after", signFloor, map[string]float64{"ecdsa_p256_sign": 30000}, 30000},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.floor(bench.Report{Floors: tt.floors}); got != tt.want {
				t.Errorf("floor = %v, want %v", got, tt.want)
			}
		})
	}
}
