// Command plot draws the figures of docs/benchmarks.md from the JSON files that
// `coapca bench est --json` and `coapca bench compare --json` write (and, when given, the
// output of `coapca bench sessions`), with gonum.org/v1/plot, so that the published plots come
// from the benchmark output and nothing else:
//
//	go run ./internal/bench/plot -out docs/benchmarks est-c*.json compare.json [sessions.json]
//
// It writes enroll-vs-concurrency.png (EST-coaps enrollments and re-enrollments per second,
// with the raw pion handshake and ECDSA floors of the same runs), latency.png (p50/p90/p99 per
// concurrency), wire-bytes.png (UDP payload bytes per enrollment or session, per protocol)
// and, from a sessions file, memory-per-session.png.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"coapca/internal/bench"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "plot:", err)
		os.Exit(1)
	}
}

// sessionsFile is the hook for the memory figure: the JSON of `coapca bench sessions`
// (issue 13 item 1, another branch). Until its format is settled this program reads
// {"kind":"sessions","points":[{"sessions":N,"heap_per_session":BYTES,"rss_per_session":BYTES}]}
// and skips a sessions file of any other shape with a message.
type sessionsFile struct {
	Kind   string `json:"kind"`
	Points []struct {
		Sessions       float64 `json:"sessions"`
		HeapPerSession float64 `json:"heap_per_session"`
		RSSPerSession  float64 `json:"rss_per_session"`
	} `json:"points"`
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("plot", flag.ContinueOnError)
	out := fs.String("out", "docs/benchmarks", "directory for the PNG files")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errors.New("usage: plot -out DIR FILE.json... (output of coapca bench est/compare --json)")
	}
	var ests, compares []bench.Report
	var sessions []sessionsFile
	for _, f := range fs.Args() {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		var kind struct{ Kind string }
		if err := json.Unmarshal(b, &kind); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		switch kind.Kind {
		case "est":
			r, err := bench.ReadReport(f)
			if err != nil {
				return err
			}
			ests = append(ests, r)
		case "compare":
			r, err := bench.ReadReport(f)
			if err != nil {
				return err
			}
			compares = append(compares, r)
		case "sessions":
			var s sessionsFile
			if err := json.Unmarshal(b, &s); err != nil || len(s.Points) == 0 {
				fmt.Fprintf(stdout, "%s: sessions file of an unknown shape, memory figure skipped\n", f)
				continue
			}
			sessions = append(sessions, s)
		default:
			return fmt.Errorf("%s: unknown kind %q", f, kind.Kind)
		}
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	save := func(p *plot.Plot, name string) error {
		path := filepath.Join(*out, name)
		if err := p.Save(20*vg.Centimeter, 11*vg.Centimeter, path); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		fmt.Fprintln(stdout, "wrote", path)
		return nil
	}
	if len(ests) > 0 {
		slices.SortFunc(ests, func(a, b bench.Report) int { return a.Concurrency - b.Concurrency })
		p, err := throughput(ests)
		if err != nil {
			return err
		}
		if err := save(p, "enroll-vs-concurrency.png"); err != nil {
			return err
		}
		if p, err = latency(ests); err != nil {
			return err
		}
		if err := save(p, "latency.png"); err != nil {
			return err
		}
	}
	for _, c := range compares {
		p, err := wire(c)
		if err != nil {
			return err
		}
		if err := save(p, "wire-bytes.png"); err != nil {
			return err
		}
	}
	for _, s := range sessions {
		p, err := memory(s)
		if err != nil {
			return err
		}
		if err := save(p, "memory-per-session.png"); err != nil {
			return err
		}
	}
	return nil
}

// placedFloor is the raw handshake floor in the placement of the server under test that a
// run measured most closely to its enrollments: the one between phase 1's slices, else the
// pion child's (before and after), else the in-process one.
func placedFloor(r bench.Report) float64 {
	for _, k := range []string{"pion_dtls_handshake_interleaved", "pion_dtls_handshake_child", "pion_dtls_handshake"} {
		if v := r.Floors[k]; v > 0 {
			return v
		}
	}
	return 0
}

// signFloor is the ECDSA sign floor a run measured most closely to its re-enrollments: the
// one between phase 2's slices, else the mean of the ones before and after.
func signFloor(r bench.Report) float64 {
	if v := r.Floors["ecdsa_p256_sign_interleaved"]; v > 0 {
		return v
	}
	return r.Floors["ecdsa_p256_sign"]
}

func result(r bench.Report, name string) bench.Result {
	for _, x := range r.Results {
		if x.Name == name {
			return x
		}
	}
	return bench.Result{}
}

// throughput: enrollments and re-enrollments per second against concurrency, with the floors
// of each run.
func throughput(rs []bench.Report) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "EST-coaps throughput vs concurrency (floors from the same runs)"
	p.X.Label.Text = "devices at once"
	p.Y.Label.Text = "operations per second"
	series := []struct {
		name string
		y    func(bench.Report) float64
	}{
		{"enroll (handshake + /sen)", func(r bench.Report) float64 { return result(r, "enroll").PerSecond }},
		{"raw pion handshakes (floor)", func(r bench.Report) float64 { return r.Floors["pion_dtls_handshake"] }},
		{"raw pion, server in a child process (floor)", func(r bench.Report) float64 { return r.Floors["pion_dtls_handshake_child"] }},
		{"0.70 × raw pion in the server's placement (aim)", func(r bench.Report) float64 { return 0.7 * placedFloor(r) }},
		{"re-enroll (kept session)", func(r bench.Report) float64 { return result(r, "reenroll").PerSecond }},
		{"0.10 × ECDSA signs (aim)", func(r bench.Report) float64 { return 0.1 * signFloor(r) }},
	}
	if !slices.ContainsFunc(rs, func(r bench.Report) bool { return r.Floors["pion_dtls_handshake_interleaved"] == 0 }) {
		series = slices.Insert(series, 3, struct {
			name string
			y    func(bench.Report) float64
		}{"raw pion between the enrollment slices (floor)", func(r bench.Report) float64 { return r.Floors["pion_dtls_handshake_interleaved"] }})
	}
	// What each phase would reach if the CPUs never idled (CPUs ÷ both sides' CPU per
	// operation): drawn only when every run knows both sides' CPU (a server in its own process).
	for _, c := range []struct{ name, op string }{
		{"enroll if the CPUs never idled", "enroll"},
		{"re-enroll if the CPUs never idled", "reenroll"},
	} {
		y := func(r bench.Report) float64 { return r.RateIfNeverIdle(c.op) }
		if !slices.ContainsFunc(rs, func(r bench.Report) bool { return y(r) == 0 }) {
			series = append(series, struct {
				name string
				y    func(bench.Report) float64
			}{c.name, y})
		}
	}
	var args []any
	for _, s := range series {
		xys := make(plotter.XYs, len(rs))
		for i, r := range rs {
			xys[i].X, xys[i].Y = float64(r.Concurrency), s.y(r)
		}
		args = append(args, s.name, xys)
	}
	return p, addLines(p, args)
}

// latency: p50, p90 and p99 of enrollments and re-enrollments against concurrency.
func latency(rs []bench.Report) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "EST-coaps latency percentiles"
	p.X.Label.Text = "devices at once"
	p.Y.Label.Text = "milliseconds"
	var args []any
	for _, op := range []string{"enroll", "reenroll"} {
		for _, pc := range []struct {
			name string
			v    func(bench.Result) float64
		}{{"p50", func(x bench.Result) float64 { return x.P50 }}, {"p90", func(x bench.Result) float64 { return x.P90 }}, {"p99", func(x bench.Result) float64 { return x.P99 }}} {
			xys := make(plotter.XYs, len(rs))
			for i, r := range rs {
				xys[i].X, xys[i].Y = float64(r.Concurrency), pc.v(result(r, op))
			}
			args = append(args, op+" "+pc.name, xys)
		}
	}
	return p, addLines(p, args)
}

// addLines draws the named series and leaves the top third of the plot to the legend, so that
// it covers no point.
func addLines(p *plot.Plot, args []any) error {
	if err := plotutil.AddLinePoints(p, args...); err != nil {
		return err
	}
	p.Legend.Top = true
	p.Y.Min = 0
	p.Y.Max *= 1.6
	return nil
}

// wire: UDP payload bytes per operation for every result of a compare run that counted them.
func wire(r bench.Report) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "Bytes on the wire per operation (UDP payloads, both directions)"
	p.Y.Label.Text = "bytes"
	var vals plotter.Values
	var names []string
	for _, x := range r.Results {
		if x.Bytes > 0 {
			vals = append(vals, x.Bytes)
			names = append(names, fmt.Sprintf("%s\n%.1f datagrams", barLabel(x.Name), x.Datagrams))
		}
	}
	if len(vals) == 0 {
		return nil, errors.New("compare report without bytes on the wire")
	}
	bars, err := plotter.NewBarChart(vals, vg.Points(28))
	if err != nil {
		return nil, err
	}
	p.Add(bars)
	p.NominalX(names...)
	return p, nil
}

// barLabel puts the names of a compare run on two lines.
func barLabel(name string) string {
	switch name {
	case "enroll coaps":
		return "EST-coaps\nenroll"
	case "enroll oscore":
		return "EST-oscore PSK\nenroll"
	case "enroll edhoc":
		return "EST-oscore+EDHOC\nenroll"
	}
	return strings.Replace(name, " ", "\n", 1)
}

// memory: server heap and RSS per idle session against the number of sessions.
func memory(s sessionsFile) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "Server memory per idle DTLS session"
	p.X.Label.Text = "sessions"
	p.Y.Label.Text = "bytes per session"
	heap, rss := make(plotter.XYs, len(s.Points)), make(plotter.XYs, len(s.Points))
	for i, pt := range s.Points {
		heap[i].X, heap[i].Y = pt.Sessions, pt.HeapPerSession
		rss[i].X, rss[i].Y = pt.Sessions, pt.RSSPerSession
	}
	return p, plotutil.AddLinePoints(p, "Go heap", heap, "RSS", rss)
}
