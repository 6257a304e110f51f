package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// childEnv makes the test binary act as the child server of Sessions and Soak ('coapca bench
// sessions-server'), so that the tests run the real two-process setup without building coapca.
const childEnv = "COAPCA_BENCH_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(runTestChild(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func runTestChild(args []string) int {
	if len(args) == 4 && args[0] == "bench" && args[1] == "pion-server" && args[2] == "--data" {
		// SIGTERM (the bench's stop) ends the process.
		if err := ServeRawPion(context.Background(), args[3], os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	}
	if len(args) < 2 || args[0] != "bench" || args[1] != "sessions-server" {
		fmt.Fprintf(os.Stderr, "test child: unexpected arguments %q\n", args)
		return 2
	}
	var o SessionsServerOptions
	fs := flag.NewFlagSet("sessions-server", flag.ContinueOnError)
	fs.StringVar(&o.DataDir, "data", "", "")
	fs.IntVar(&o.MaxSessions, "max-sessions", 10000, "")
	fs.Float64Var(&o.RatePerSource, "rate-per-source", 0, "")
	fs.DurationVar(&o.IdleTimeout, "idle-timeout", 0, "")
	fs.DurationVar(&o.ParkAfter, "park-after", 0, "")
	if err := fs.Parse(args[2:]); err != nil {
		return 2
	}
	if err := SessionsServer(context.Background(), o, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// TestSessions: the load generator opens every session from its several source addresses
// against the server in another process, which holds them all and reports its memory.
func TestSessions(t *testing.T) {
	if testing.Short() {
		t.Skip("two processes and 40 DTLS handshakes")
	}
	t.Setenv(childEnv, "1")
	var out, progress bytes.Buffer
	jsonFile := filepath.Join(t.TempDir(), "sessions.json")
	err := Sessions(context.Background(), SessionsOptions{Sessions: 40, Steps: 2, Sources: 4, Concurrency: 4, Exe: os.Args[0], JSON: jsonFile}, &out, &progress)
	if err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	// The --json file the plot program reads: one point per measurement.
	var rep struct {
		Kind   string
		Points []sessionsPoint
	}
	if b, err := os.ReadFile(jsonFile); err != nil || json.Unmarshal(b, &rep) != nil || rep.Kind != "sessions" || len(rep.Points) != 2 || rep.Points[1].Sessions != 40 {
		t.Errorf("--json: %+v, %v", rep, err)
	}
	// Each measurement line starts with the sessions opened and the sessions the server holds.
	for _, want := range []string{"       20        20 ", "       40        40 ", "opened 40 sessions", ", 0 failed"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// TestSoak: devices enroll and re-enroll through the child server; the sessions they abandon
// are evicted by the idle timeout, and the goroutines come back to where they started.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("two processes and 24 enrollments")
	}
	t.Setenv(childEnv, "1")
	var out, progress bytes.Buffer
	err := Soak(context.Background(), SoakOptions{Devices: 12, Concurrency: 3, Abandon: 3, IdleTimeout: time.Second,
		Interval: 500 * time.Millisecond, Settle: 4 * time.Second, Exe: os.Args[0]}, &out, &progress)
	if err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	for _, want := range []string{"sessions 3 → 0", "evicted by the idle timeout: true", "12 enrolled, 12 re-enrolled, 0 errors"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// TestPortAllocatorNeverReuses: a reused source address and port would replace an idle
// session instead of adding one (RFC 6347 §4.2.8), so every pair is handed out once, spread
// over the sources, until they run out.
func TestPortAllocatorNeverReuses(t *testing.T) {
	for _, sources := range []int{1, 3, 300} {
		t.Run(fmt.Sprint(sources), func(t *testing.T) {
			p := newPortAllocator(sources)
			seen := map[string]bool{}
			ips := map[string]bool{}
			for range 2000 {
				ap, _, err := p.get()
				if err != nil {
					t.Fatal(err)
				}
				if seen[ap.String()] {
					t.Fatalf("%v handed out twice", ap)
				}
				seen[ap.String()] = true
				ips[ap.Addr().String()] = true
				if !ap.Addr().IsLoopback() {
					t.Fatalf("%v is not a loopback address", ap)
				}
			}
			if len(ips) != min(sources, 2000) {
				t.Fatalf("%d source addresses used, want %d", len(ips), min(sources, 2000))
			}
		})
	}
	p := newPortAllocator(1)
	for {
		if _, _, err := p.get(); err != nil {
			if !strings.Contains(err.Error(), "--sources") {
				t.Fatalf("error %q does not say what to do", err)
			}
			return
		}
	}
}
