// Command tracewait reads a Go runtime execution trace (`coapca bench est --spawn
// --server-trace F`, `coapca serve` under runtime/trace, or `go test -trace`) and prints where
// the process's time went: for each interval of the run, how many CPUs its goroutines used and
// how much of that the goroutines of interest ran; and, for a window of the run, where its
// goroutines were blocked, as the average number of goroutines blocked at each place. It is how
// docs/benchmarks.md found that 8 re-enrolling devices spend a third of their cycle waiting
// for their group commit (issue 13):
//
//	go run ./internal/bench/tracewait -focus 'sqlite\.\(\*Store\)\.committer' F
//	go run ./internal/bench/tracewait -from 16.6s -to 20.7s F
//
// A goroutine counts as of interest (-focus) once any stack it shows in the trace has a frame
// whose function name matches the expression: its start function (at its creation), or where
// it blocked, was preempted or made a syscall. A goroutine that only passes through the
// function while running uninterrupted is not seen there (a trace has no stacks in between
// unless CPU profiling ran with it); the committer of a server blocks often enough. Blocked time is attributed to the first
// frames outside the runtime of the stack at which the goroutine blocked; goroutines blocked
// for the whole window (listeners, timers) are counted like any other.
package main

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"golang.org/x/exp/trace"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "tracewait:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("tracewait", flag.ContinueOnError)
	bucket := fs.Duration("bucket", 100*time.Millisecond, "length of each interval of the timeline")
	from := fs.Duration("from", 0, "start of the window for blocked time, from the start of the trace")
	to := fs.Duration("to", 0, "end of that window (0: no blocked-time table)")
	focus := fs.String("focus", "", "regular expression: goroutines with a frame whose function matches are the ones of interest")
	frames := fs.Int("frames", 3, "frames outside the runtime that name a blocking place")
	top := fs.Int("top", 20, "blocking places listed")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 || *bucket <= 0 || (*to != 0 && *to <= *from) {
		return errors.New("usage: tracewait [-bucket D] [-focus REGEXP] [-from D -to D] TRACEFILE")
	}
	var re *regexp.Regexp
	if *focus != "" {
		var err error
		if re, err = regexp.Compile(*focus); err != nil {
			return fmt.Errorf("-focus: %w", err)
		}
	}
	f, err := os.Open(fs.Arg(0))
	if err != nil {
		return err
	}
	defer f.Close()
	a := analysis{bucket: *bucket, from: *from, to: *to, focus: re, frames: *frames}
	if err := a.read(f); err != nil {
		return fmt.Errorf("%s: %w", fs.Arg(0), err)
	}
	a.print(stdout, *top)
	return nil
}

// analysis accumulates, per goroutine state transition, running time per bucket and blocked
// time per blocking place inside the window.
type analysis struct {
	bucket   time.Duration
	from, to time.Duration
	focus    *regexp.Regexp
	frames   int

	start   trace.Time
	end     time.Duration // of the last event, from start
	gs      map[trace.GoID]*goState
	running []time.Duration // per bucket, all goroutines
	focused []time.Duration // per bucket, goroutines of interest
	blocked map[string]time.Duration
}

type goState struct {
	state   trace.GoState
	since   trace.Time
	place   string // where it blocked, when waiting
	focused bool
}

func (a *analysis) read(r io.Reader) error {
	tr, err := trace.NewReader(r)
	if err != nil {
		return err
	}
	a.gs = map[trace.GoID]*goState{}
	a.blocked = map[string]time.Duration{}
	for {
		ev, err := tr.ReadEvent()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if a.start == 0 {
			a.start = ev.Time()
		}
		a.end = a.rel(ev.Time())
		if ev.Kind() != trace.EventStateTransition {
			continue
		}
		st := ev.StateTransition()
		if st.Resource.Kind != trace.ResourceGoroutine {
			continue
		}
		id := st.Resource.Goroutine()
		old, next := st.Goroutine()
		g := a.gs[id]
		if g == nil {
			g = &goState{state: old, since: ev.Time()}
			a.gs[id] = g
		}
		if a.focus != nil && !g.focused {
			// ev.Stack is the stack of the goroutine that emitted the event, which is not
			// the one changing state when one goroutine wakes another (a channel send).
			g.focused = a.matches(st.Stack) || (ev.Goroutine() == id && a.matches(ev.Stack()))
		}
		switch g.state {
		case trace.GoRunning:
			a.addRunning(g, g.since, ev.Time())
		case trace.GoWaiting:
			a.addBlocked(g.place, g.since, ev.Time())
		}
		g.state, g.since = next, ev.Time()
		if next == trace.GoWaiting {
			g.place = a.placeOf(st.Stack, st.Reason)
		}
	}
}

func (a *analysis) rel(t trace.Time) time.Duration { return time.Duration(t - a.start) }

func (a *analysis) matches(s trace.Stack) bool {
	for fr := range s.Frames() {
		if a.focus.MatchString(fr.Func) {
			return true
		}
	}
	return false
}

// placeOf names a blocking place by the first frames of its stack outside the runtime and the
// standard library's synchronisation, innermost first; the runtime's reason when there are none.
func (a *analysis) placeOf(s trace.Stack, reason string) string {
	var names []string
	for fr := range s.Frames() {
		fn := fr.Func
		if strings.HasPrefix(fn, "runtime.") || strings.HasPrefix(fn, "internal/") || strings.HasPrefix(fn, "sync.") {
			continue
		}
		names = append(names, fn)
		if len(names) == a.frames {
			break
		}
	}
	if len(names) == 0 {
		if reason == "" {
			reason = "no stack, no reason"
		}
		return "(" + reason + ")"
	}
	return strings.Join(names, " < ")
}

// addRunning spreads a running interval over the buckets it covers.
func (a *analysis) addRunning(g *goState, t0, t1 trace.Time) {
	for s, e := a.rel(t0), a.rel(t1); s < e; {
		i := int(s / a.bucket)
		end := min(time.Duration(i+1)*a.bucket, e)
		for len(a.running) <= i {
			a.running = append(a.running, 0)
			a.focused = append(a.focused, 0)
		}
		a.running[i] += end - s
		if g.focused {
			a.focused[i] += end - s
		}
		s = end
	}
}

// addBlocked adds the part of a blocked interval that lies inside the window.
func (a *analysis) addBlocked(place string, t0, t1 trace.Time) {
	if a.to == 0 {
		return
	}
	s, e := max(a.rel(t0), a.from), min(a.rel(t1), a.to)
	if e > s {
		a.blocked[place] += e - s
	}
}

func (a *analysis) print(w io.Writer, top int) {
	fmt.Fprintf(w, "trace of %v; per %v: CPUs used by the goroutines", a.end.Round(time.Millisecond), a.bucket)
	if a.focus != nil {
		fmt.Fprintf(w, ", and by those matching /%s/", a.focus)
	}
	fmt.Fprintln(w)
	for i, r := range a.running {
		fmt.Fprintf(w, "%10v  %5.2f", (time.Duration(i) * a.bucket).Round(time.Millisecond), float64(r)/float64(a.bucket))
		if a.focus != nil {
			fmt.Fprintf(w, "  %5.2f", float64(a.focused[i])/float64(a.bucket))
		}
		fmt.Fprintln(w)
	}
	if a.to == 0 {
		return
	}
	window := a.to - a.from
	type place struct {
		name string
		d    time.Duration
	}
	var places []place
	for n, d := range a.blocked {
		places = append(places, place{n, d})
	}
	slices.SortFunc(places, func(x, y place) int { return cmp.Or(cmp.Compare(y.d, x.d), strings.Compare(x.name, y.name)) })
	fmt.Fprintf(w, "\nblocked from %v to %v: goroutines blocked there on average, and where\n", a.from, a.to)
	for i, p := range places {
		if i == top {
			break
		}
		fmt.Fprintf(w, "%8.2f  %s\n", float64(p.d)/float64(window), p.name)
	}
}
