package bench

import (
	"fmt"
	"io"
	"time"
)

// The targets a series of `coapca bench est` runs is counted against (docs/benchmarks.md, the
// aims of issue 13): each is a ratio to a floor measured in the same run, between the run's
// slices of enrollments and re-enrollments.
const (
	// TargetEnrollRatio is for full enrollments (a new DTLS session and /sen) ÷ raw pion/dtls
	// handshakes with the same suite, curve and mutual certificate authentication.
	TargetEnrollRatio = 0.70
	// TargetReenrollRatio is for re-enrollments over kept sessions (/sren) ÷ ECDSA P-256
	// signatures on one goroutine.
	TargetReenrollRatio = 0.10
)

// enrollFloor is the raw handshake floor an enrollment rate is compared with: the one measured
// between phase 1's slices, else the one with the pion server in a child process, else both
// ends in the bench process.
func (r *benchResult) enrollFloor() (rate float64, name string) {
	switch {
	case r.ilHS > 0:
		return r.ilHS, "raw handshakes (between)"
	case r.childHS > 0:
		return r.childHS, "raw handshakes (child)"
	}
	return r.rawHS, "raw handshakes"
}

// reenrollFloor is the ECDSA sign floor a re-enrollment rate is compared with: the one measured
// between phase 2's slices, else the mean of the ones before and after the phases.
func (r *benchResult) reenrollFloor() (rate float64, name string) {
	if r.ilSigns > 0 {
		return r.ilSigns, "ECDSA signs (between)"
	}
	return r.signs, "ECDSA signs"
}

// seriesRun is one run of a series, as the summary shows it.
type seriesRun struct {
	start                      time.Time
	hsFloor, signFloor         float64 // the floors the ratios divide by
	enrolls, reenrolls         float64 // per second
	enrollRatio, reenrollRatio float64
	errors                     int64
	busyEnroll, busyReenroll   float64 // share of the CPUs kept busy (0: unknown, server CPU not read)
	// The server's CPU per enrollment and re-enrollment (0: unknown, the server ran in the bench
	// process): the figure that moves least with the machine's speed, to compare builds by.
	enrollCPU, reenrollCPU time.Duration
}

func (r *benchResult) seriesRun(start time.Time) seriesRun {
	hs, _ := r.enrollFloor()
	signs, _ := r.reenrollFloor()
	s := seriesRun{start: start, hsFloor: hs, signFloor: signs, enrolls: r.enrolls, reenrolls: r.reenrolls,
		enrollRatio: ratio(r.enrolls, hs), reenrollRatio: ratio(r.reenrolls, signs),
		errors: r.enrollErrs + r.reenrollErrs}
	if r.enrollServerCPU > 0 {
		u := r.cpuUses(thisMachine().NumCPU)
		s.busyEnroll, s.busyReenroll = u["enroll"].busy, u["reenroll"].busy
		s.enrollCPU, s.reenrollCPU = r.enrollServerCPU, r.reenrollServerCPU
	}
	return s
}

// seriesStats are the minimum, mean and maximum of one ratio over a series, and in how many
// runs it reached its target.
type seriesStats struct {
	min, mean, max float64
	reached        int
}

func statsOf(runs []seriesRun, ratio func(seriesRun) float64, target float64) seriesStats {
	var s seriesStats
	for i, r := range runs {
		x := ratio(r)
		if i == 0 || x < s.min {
			s.min = x
		}
		s.max = max(s.max, x)
		s.mean += x / float64(len(runs))
		if x >= target {
			s.reached++
		}
	}
	return s
}

// printSeries ends a series of runs: one line per run, then each ratio's minimum, mean and
// maximum and how many runs reached the targets. On a shared machine a single run says little
// about whether a target is met: the floors and the server move with the neighbours' load.
// planned is the number of runs asked for: when fewer completed, the heading says so.
func printSeries(w io.Writer, o ESTOptions, runs []seriesRun, planned int) {
	done := fmt.Sprintf("%d runs", len(runs))
	if len(runs) < planned {
		done = fmt.Sprintf("%d of %d runs (the series stopped early)", len(runs), planned)
	}
	fmt.Fprintf(w, "=== series: %s, %d at a time, --duration %v\n\n", done, o.Concurrency, o.Duration)
	fmt.Fprintf(w, "run  started (UTC)  raw handshakes/s  enroll/s  ratio   busy  server µs  ECDSA signs/s  reenroll/s  ratio   busy  server µs  errors\n")
	pct := func(x float64) string {
		if x <= 0 {
			return "    -"
		}
		return fmt.Sprintf("%4.0f%%", 100*x)
	}
	us := func(d time.Duration) string {
		if d <= 0 {
			return "        -"
		}
		return fmt.Sprintf("%9.0f", float64(d)/float64(time.Microsecond))
	}
	for i, r := range runs {
		fmt.Fprintf(w, "%3d  %-13s  %16.0f  %8.0f  %5.3f  %s  %s  %13.0f  %10.0f  %5.3f  %s  %s  %6d\n", i+1, r.start.Format("15:04:05"),
			r.hsFloor, r.enrolls, r.enrollRatio, pct(r.busyEnroll), us(r.enrollCPU),
			r.signFloor, r.reenrolls, r.reenrollRatio, pct(r.busyReenroll), us(r.reenrollCPU), r.errors)
	}
	e := statsOf(runs, func(r seriesRun) float64 { return r.enrollRatio }, TargetEnrollRatio)
	re := statsOf(runs, func(r seriesRun) float64 { return r.reenrollRatio }, TargetReenrollRatio)
	both := 0
	for _, r := range runs {
		if r.enrollRatio >= TargetEnrollRatio && r.reenrollRatio >= TargetReenrollRatio {
			both++
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "enroll ÷ raw handshakes:  min %.3f  mean %.3f  max %.3f   ≥ %.2f in %d of %d runs\n", e.min, e.mean, e.max, TargetEnrollRatio, e.reached, len(runs))
	fmt.Fprintf(w, "reenroll ÷ ECDSA signs:   min %.3f  mean %.3f  max %.3f   ≥ %.2f in %d of %d runs\n", re.min, re.mean, re.max, TargetReenrollRatio, re.reached, len(runs))
	fmt.Fprintf(w, "both targets in %d of %d runs (floors measured between each run's slices)\n", both, len(runs))
}
