package bench

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"strings"
	"testing"
	"time"
)

// TestSeriesSummary checks the ratios each run is summarised by (against the floors measured
// between its slices, else the others), their minimum, mean and maximum, and the count of runs
// that reached each target and both.
func TestSeriesSummary(t *testing.T) {
	start := time.Date(2026, 12, 5, 6, 33, 0, 0, time.UTC)
	results := []*benchResult{
		// Both targets: 840/1200 = 0.70, 4000/40000 = 0.10 (the floors between the slices;
		// the others would give other ratios).
		{ilHS: 1200, childHS: 2000, rawHS: 3000, ilSigns: 40000, signs: 20000, enrolls: 840, reenrolls: 4000,
			enrollServerCPU: 906 * time.Microsecond, reenrollServerCPU: 251 * time.Microsecond},
		// Neither: 0.60 and 0.09.
		{ilHS: 1000, ilSigns: 30000, enrolls: 600, reenrolls: 2700, enrollErrs: 1, reenrollErrs: 2},
		// No floor between the slices: the child floor (0.80) and the signs before and after
		// (0.05).
		{childHS: 1000, rawHS: 3000, signs: 40000, enrolls: 800, reenrolls: 2000},
	}
	var runs []seriesRun
	for i, r := range results {
		runs = append(runs, r.seriesRun(start.Add(time.Duration(i)*time.Minute)))
	}
	wantEnroll := []float64{0.70, 0.60, 0.80}
	wantReenroll := []float64{0.10, 0.09, 0.05}
	for i, r := range runs {
		if math.Abs(r.enrollRatio-wantEnroll[i]) > 1e-9 || math.Abs(r.reenrollRatio-wantReenroll[i]) > 1e-9 {
			t.Errorf("run %d: ratios %v / %v, want %v / %v", i+1, r.enrollRatio, r.reenrollRatio, wantEnroll[i], wantReenroll[i])
		}
	}
	if runs[1].errors != 3 {
		t.Errorf("run 2: %d errors, want 3", runs[1].errors)
	}
	e := statsOf(runs, func(r seriesRun) float64 { return r.enrollRatio }, TargetEnrollRatio)
	if math.Abs(e.min-0.60) > 1e-9 || math.Abs(e.mean-0.70) > 1e-9 || math.Abs(e.max-0.80) > 1e-9 || e.reached != 2 {
		t.Errorf("enroll stats = %+v, want min 0.60 mean 0.70 max 0.80 reached 2", e)
	}
	var out bytes.Buffer
	printSeries(&out, ESTOptions{Concurrency: 8, Duration: 5 * time.Second}, runs, 3)
	for _, want := range []string{
		"=== series: 3 runs, 8 at a time, --duration 5s",
		"  1  06:33:00",
		"0.700   ",       // run 1's enrollment ratio, then its busy share and server CPU
		"906  ",          // run 1's server µs per enrollment
		"251       0\n",  // run 1's server µs per re-enrollment, no errors
		"      -       ", // run 2: the server's CPU was not read
		"  3  06:35:00",
		"enroll ÷ raw handshakes:  min 0.600  mean 0.700  max 0.800   ≥ 0.70 in 2 of 3 runs",
		"reenroll ÷ ECDSA signs:   min 0.050  mean 0.080  max 0.100   ≥ 0.10 in 1 of 3 runs",
		"both targets in 1 of 3 runs",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("series printout lacks %q:\n%s", want, out.String())
		}
	}
}

// TestESTRuns: `coapca bench est --runs 2` measures twice, each run with its own floors and its
// own in-process server, and ends with the summary of both.
func TestESTRuns(t *testing.T) {
	o := ESTOptions{Devices: 16, Concurrency: 2, Duration: 200 * time.Millisecond, BlockSize: 1024, Runs: 2}
	var out bytes.Buffer
	if err := EST(t.Context(), o, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	if strings.Count(s, "coapca bench est: 16 devices") != 2 || !strings.Contains(s, "=== run 1 of 2") || !strings.Contains(s, "=== run 2 of 2") {
		t.Fatalf("want two complete runs, each headed:\n%s", s)
	}
	i := strings.Index(s, "=== series: 2 runs")
	if i < 0 {
		t.Fatalf("no series summary:\n%s", s)
	}
	summary := s[i:]
	for _, want := range []string{"\n  1  ", "\n  2  ", "enroll ÷ raw handshakes:", "reenroll ÷ ECDSA signs:", "both targets in "} {
		if !strings.Contains(summary, want) {
			t.Errorf("summary lacks %q:\n%s", want, summary)
		}
	}
	// Every run enrolled and re-enrolled without errors: the last column of both rows is 0.
	for _, line := range strings.Split(summary, "\n")[3:5] {
		f := strings.Fields(line)
		if len(f) == 0 || f[len(f)-1] != "0" {
			t.Errorf("run row %q: want no errors", line)
		}
	}
}

// cancelAt is a writer that cancels a context once what was written contains marker.
type cancelAt struct {
	bytes.Buffer
	marker string
	cancel context.CancelFunc
}

func (c *cancelAt) Write(p []byte) (int, error) {
	n, err := c.Buffer.Write(p)
	if strings.Contains(c.String(), c.marker) {
		c.cancel()
	}
	return n, err
}

// TestESTRunsInterrupted: a series interrupted after its first run (the context ends, as on
// Ctrl-C) returns the error and still prints the summary of the run it completed.
func TestESTRunsInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	out := &cancelAt{marker: "=== run 2 of 3", cancel: cancel}
	o := ESTOptions{Devices: 16, Concurrency: 2, Duration: 200 * time.Millisecond, BlockSize: 1024, Runs: 3}
	err := EST(ctx, o, out, io.Discard)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "run 2 of 3: interrupted") {
		t.Fatalf("EST = %v, want run 2 of 3 interrupted", err)
	}
	s := out.String()
	if !strings.Contains(s, "=== series: 1 of 3 runs (the series stopped early)") || !strings.Contains(s, "\n  1  ") {
		t.Errorf("no summary of the completed run:\n%s", s)
	}
}
