// Package bench measures coapca's throughput against an in-process server, next to floors
// measured in the same run on the same machine (ECDSA P-256 signatures, raw pion/dtls
// handshakes), so that a result reads as a ratio rather than a bare number: EST-coaps
// enrollments and re-enrollments (RFC 9148), EST-oscore with pre-shared and EDHOC-keyed
// contexts (RFC 8613, RFC 9528, RFC 9668), CMP transactions over CoAP and HTTP (RFC 9482,
// RFC 9811), and the CoAP endpoint alone. `coapca bench` is its command line.
package bench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/big"
	"net"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pion/dtls/v3"
	pionelliptic "github.com/pion/dtls/v3/pkg/crypto/elliptic"

	"coapca/client"
	"coapca/coap"
	"coapca/coap/dtlsconn"
	"coapca/internal/config"
	"coapca/internal/datadir"
	"coapca/internal/gcpace"
	"coapca/internal/server"
)

// startServer starts the server that `coapca serve` runs, without logs, so that the
// benchmarks measure the real house: on dataDir, or on a temporary data directory when it is
// "" (removed by the returned stop), with the listeners and limits tweak sets.
func startServer(ctx context.Context, dataDir string, tweak func(*config.Config)) (s *server.Server, stop func(), err error) {
	cleanup := func() {}
	if dataDir == "" {
		tmp, err := os.MkdirTemp("", "coapca-bench-")
		if err != nil {
			return nil, nil, err
		}
		dataDir, cleanup = tmp, func() { os.RemoveAll(tmp) }
	}
	cfg := config.Default()
	cfg.Data = dataDir
	cfg.Listen = config.Listen{}
	tweak(&cfg)
	if s, err = server.Start(ctx, cfg, slog.New(slog.DiscardHandler)); err != nil {
		cleanup()
		return nil, nil, err
	}
	return s, func() { s.Close(); cleanup() }, nil
}

// ESTOptions configure EST and FrontDoors.
type ESTOptions struct {
	Devices, Concurrency int
	Duration             time.Duration
	BlockSize            int
	DataDir              string // "" = a temporary directory, removed afterwards
	CPUProfile           string // write a CPU profile of the enrollment phases here
	// ServerCPUProfile and ServerMemProfile (with Spawn) make the child server write a CPU and
	// an allocation profile of its whole run (floors against it included) at its shutdown.
	ServerCPUProfile, ServerMemProfile string
	ServerTrace                        string // with Spawn: the child server writes a runtime trace here
	// FrontDoors: compare EST-oscore with pre-shared contexts (OSCORE) and/or keyed by EDHOC
	// to EST-coaps, counting bytes on the wire over WireSamples sequential enrollments.
	OSCORE, EDHOC bool
	// ACE adds EST-oscore keyed by an ACE access token (RFC 9203): a token from an in-process
	// `coapca as` over OSCORE, posted to /authz-info, then /sen; its bytes include the AS's.
	ACE         bool
	WireSamples int
	// HTTPS measures EST over HTTPS (RFC 7030) instead (ESTHTTPS).
	HTTPS bool
	// Server loads a running server at this EST-coaps address (host:port) in its own process
	// instead of starting one in-process; DataDir must then be that server's data directory
	// (the bench mints device identities from its demo manufacturer CA). Spawn starts
	// `coapca serve` as a child process on a temporary data directory and loads it the same
	// way, so that client and server CPU are not mixed and the server's CPU is reported.
	Server string
	Spawn  bool
	// JSON, when set, also writes the results to this file for `coapca bench plot`.
	JSON string
	// Runs repeats the whole measurement (floors included) this many times and ends with a
	// summary of the series (printSeries); 0 or 1: one run. With --spawn and no DataDir,
	// each run starts its own server on a fresh data directory.
	Runs int
}

// EST measures EST-coaps enrollments (a new DTLS session each, /sen) and re-enrollments over
// kept sessions (/sren) beside floors measured in the same run, and prints the results to w;
// progress gets what it is doing.
func EST(ctx context.Context, o ESTOptions, w, progress io.Writer) error {
	// The simulated devices' process paces its collector as `coapca serve` paces the server's
	// (unless GOGC is set). The devices are not what is measured, and their collections are
	// not free for the server: their mark workers also run on a P this process has idle,
	// taking a CPU the server would use (12 % of this process's CPU in a profile under Go's
	// default pacing, half of it in idle-time mark workers). The floors measured from this
	// process (its ends of the raw handshakes, the ECDSA signs) run under the same pacing.
	defer gcpace.Start(config.DefaultGCHeadroomMiB<<20, os.Getenv("GOGC"), nil).Stop()
	runs := max(o.Runs, 1)
	var series []seriesRun
	for i := range runs {
		start := time.Now().UTC()
		if runs > 1 {
			fmt.Fprintf(progress, "bench: run %d of %d\n", i+1, runs)
			fmt.Fprintf(w, "=== run %d of %d, started %s\n\n", i+1, runs, start.Format("2006-01-02 15:04:05 UTC"))
		}
		res, err := benchEST(ctx, o, progress)
		if err != nil {
			if runs > 1 {
				// The runs done so far still make a series (an interrupted long series, a
				// server that stopped): their summary, then the error.
				if len(series) > 0 {
					printSeries(w, o, series, runs)
				}
				if ctx.Err() != nil { // interrupted: what failed first is only a consequence
					return fmt.Errorf("run %d of %d: interrupted: %w", i+1, runs, ctx.Err())
				}
				return fmt.Errorf("run %d of %d: %w", i+1, runs, err)
			}
			return err
		}
		res.print(w, o)
		if o.JSON != "" {
			if err := writeJSON(o.JSON, res.report(o)); err != nil {
				return err
			}
		}
		series = append(series, res.seriesRun(start))
		if runs > 1 {
			fmt.Fprintln(w)
		}
	}
	if runs > 1 {
		printSeries(w, o, series, runs)
	}
	return nil
}

type latencies []time.Duration

func (l latencies) pct(p float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := slices.Clone(l)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

type benchResult struct {
	signs, verifies, rawHS float64 // mean of the measurements before and after the phases
	signsAfter, rawHSAfter float64 // the measurements after (before = 2×mean − after)
	// srvHS is the handshake-only rate against the server under test (mean of before and
	// after, srvHSAfter the one after): the enrollments' own placement, without EST.
	srvHS, srvHSAfter float64
	// childHS is the raw pion floor with its server in a child process (`coapca bench
	// pion-server`), the placement of the server under test when that runs in its own process
	// (mean of before and after; 0 when the server under test runs in the bench process).
	childHS, childHSAfter    float64
	enrolls, reenrolls       float64
	enrollLat, reenrollLat   latencies
	enrollErrs, reenrollErrs int64
	// mode says where the server ran; the server CPU per operation is known only when it ran
	// in its own process (0 otherwise).
	mode                               string
	devices                            int // devices that enrolled in phase 1 (ESTOptions.Devices, or the automatic count)
	enrollServerCPU, reenrollServerCPU time.Duration
	// CPU per operation (means over the before and after measurements for the floors): the
	// bench process's own (the clients, and both ends of the raw floor) and the server's when it
	// runs in its own process. On a shared machine these move less than the rates.
	rawHSCPU                           time.Duration // bench process per raw handshake (client and server)
	srvHSClientCPU, srvHSServerCPU     time.Duration // per handshake with the server under test
	childHSClientCPU, childHSServerCPU time.Duration // per raw handshake with the pion child
	// ilHS is the raw handshake floor measured in the slices between phase 1's slices of
	// enrollments, in the placement of the server under test (the pion child, or in-process),
	// with its CPU per handshake (bench process; the child's, 0 in-process).
	ilHS                         float64
	ilHSClientCPU, ilHSServerCPU time.Duration
	// ilSigns is the ECDSA sign floor measured between phase 2's slices of re-enrollments.
	ilSigns                            float64
	enrollClientCPU, reenrollClientCPU time.Duration
}

func (r *benchResult) print(w io.Writer, o ESTOptions) {
	fmt.Fprintf(w, "coapca bench est: %d devices, %d at a time, block size %d, SQLite fsync'd, server %s\n\n", r.devices, o.Concurrency, o.BlockSize, r.mode)
	fmt.Fprintf(w, "floor (same run)      ECDSA P-256 sign %8.0f/s   verify %8.0f/s   (one goroutine)\n", r.signs, r.verifies)
	fmt.Fprintf(w, "                      raw pion DTLS handshakes %8.0f/s   (%d concurrent, both chains verified, CCM_8; both ends in the bench process)\n", r.rawHS, o.Concurrency)
	if r.childHS > 0 {
		fmt.Fprintf(w, "                      raw pion DTLS handshakes %8.0f/s   (the same, the pion server in a child process: the placement of the server under test)\n", r.childHS)
	}
	fmt.Fprintf(w, "                      (before/after: signs %.0f/%.0f, handshakes %.0f/%.0f", 2*r.signs-r.signsAfter, r.signsAfter, 2*r.rawHS-r.rawHSAfter, r.rawHSAfter)
	if r.childHS > 0 {
		fmt.Fprintf(w, ", child %.0f/%.0f", 2*r.childHS-r.childHSAfter, r.childHSAfter)
	}
	fmt.Fprintf(w, ")\n")
	if r.ilHS > 0 {
		fmt.Fprintf(w, "                      raw pion DTLS handshakes %8.0f/s   (%s, in slices between phase 1's slices of enrollments)\n", r.ilHS, r.ilPlacement())
	}
	if r.ilSigns > 0 {
		fmt.Fprintf(w, "                      ECDSA P-256 sign %8.0f/s   (one goroutine, in slices between phase 2's slices of re-enrollments)\n", r.ilSigns)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "not a floor           handshakes only with the server under test %8.0f/s (before/after %.0f/%.0f; %s)\n",
		r.srvHS, 2*r.srvHS-r.srvHSAfter, r.srvHSAfter, r.mode)
	fmt.Fprintf(w, "                      enroll ÷ these handshakes %5.1f%%: the share EST costs on top of coapca's own handshake\n\n",
		100*r.enrolls/r.srvHS)
	fmt.Fprintf(w, "enroll   (new DTLS session + /sen)  %8.0f/s  = %5.1f%% of raw handshakes", r.enrolls, 100*r.enrolls/r.rawHS)
	if r.childHS > 0 {
		fmt.Fprintf(w, " (%5.1f%% of those with the server in a child process)", 100*r.enrolls/r.childHS)
	}
	if r.ilHS > 0 {
		fmt.Fprintf(w, "\n                                              = %5.1f%% of the raw handshakes between its slices", 100*r.enrolls/r.ilHS)
	}
	fmt.Fprintf(w, "   p50 %v  p99 %v  errors %d\n", r.enrollLat.pct(.5).Round(10*time.Microsecond), r.enrollLat.pct(.99).Round(10*time.Microsecond), r.enrollErrs)
	fmt.Fprintf(w, "reenroll (kept session, /sren)      %8.0f/s  = %5.1f%% of ECDSA signs", r.reenrolls, 100*r.reenrolls/r.signs)
	if r.ilSigns > 0 {
		fmt.Fprintf(w, "\n                                              = %5.1f%% of the ECDSA signs between its slices", 100*r.reenrolls/r.ilSigns)
	}
	fmt.Fprintf(w, "   p50 %v  p99 %v  errors %d\n", r.reenrollLat.pct(.5).Round(10*time.Microsecond), r.reenrollLat.pct(.99).Round(10*time.Microsecond), r.reenrollErrs)
	us := func(d time.Duration) time.Duration { return d.Round(time.Microsecond) }
	fmt.Fprintf(w, "\nCPU per operation     bench process (clients)   server\n")
	fmt.Fprintf(w, "  raw pion handshake  %-25v (both ends in the bench process)\n", us(r.rawHSCPU))
	if r.childHS > 0 {
		fmt.Fprintf(w, "  raw pion, child     %-25v %v\n", us(r.childHSClientCPU), us(r.childHSServerCPU))
	}
	switch {
	case r.ilHS > 0 && r.childHS > 0:
		fmt.Fprintf(w, "  raw pion, between   %-25v %v\n", us(r.ilHSClientCPU), us(r.ilHSServerCPU))
	case r.ilHS > 0:
		fmt.Fprintf(w, "  raw pion, between   %-25v (both ends in the bench process)\n", us(r.ilHSClientCPU))
	}
	if r.enrollServerCPU > 0 {
		fmt.Fprintf(w, "  server handshake    %-25v %v\n", us(r.srvHSClientCPU), us(r.srvHSServerCPU))
		fmt.Fprintf(w, "  enroll              %-25v %v   (sum ÷ raw handshake %.2f)\n", us(r.enrollClientCPU), us(r.enrollServerCPU),
			float64(r.enrollClientCPU+r.enrollServerCPU)/float64(max(r.rawHSCPU, 1)))
		fmt.Fprintf(w, "  reenroll            %-25v %v\n", us(r.reenrollClientCPU), us(r.reenrollServerCPU))
		r.printCPUUse(w, thisMachine())
	} else {
		note := "(server in the bench process: included)"
		if r.mode != modeInProcess {
			note = "(server in another process: its CPU is not known here)"
		}
		fmt.Fprintf(w, "  server handshake    %-25v %s\n", us(r.srvHSClientCPU), note)
		fmt.Fprintf(w, "  enroll              %-25v %s\n", us(r.enrollClientCPU), note)
		fmt.Fprintf(w, "  reenroll            %-25v %s\n", us(r.reenrollClientCPU), note)
	}
}

// cpuUse relates a measured rate to the CPUs it kept busy: busy is the share of the machine's
// CPUs the rate used (rate × CPU per operation of both processes ÷ CPUs), ceiling the rate the
// same CPU per operation would allow if the CPUs were never idle (CPUs ÷ CPU per operation).
// A phase whose busy share is well below 1 was bound by latency (round trips, fsync, waiting
// for a peer), not by CPU; one near 1 can only go faster by spending less CPU per operation.
type cpuUse struct{ busy, ceiling float64 }

func cpuUseAt(rate float64, perOp time.Duration, cpus int) cpuUse {
	if perOp <= 0 || cpus <= 0 {
		return cpuUse{}
	}
	return cpuUse{busy: rate * perOp.Seconds() / float64(cpus), ceiling: float64(cpus) / perOp.Seconds()}
}

// cpuUses is cpuUseAt for every phase whose CPU per operation is known on both sides, by
// the names of Report.CPU.
func (r *benchResult) cpuUses(cpus int) map[string]cpuUse {
	u := map[string]cpuUse{"pion_dtls_handshake": cpuUseAt(r.rawHS, r.rawHSCPU, cpus)}
	if r.childHS > 0 {
		u["pion_dtls_handshake_child"] = cpuUseAt(r.childHS, r.childHSClientCPU+r.childHSServerCPU, cpus)
	}
	if r.ilHS > 0 {
		u["pion_dtls_handshake_interleaved"] = cpuUseAt(r.ilHS, r.ilHSClientCPU+r.ilHSServerCPU, cpus)
	}
	if r.enrollServerCPU > 0 {
		u["server_dtls_handshake"] = cpuUseAt(r.srvHS, r.srvHSClientCPU+r.srvHSServerCPU, cpus)
		u["enroll"] = cpuUseAt(r.enrolls, r.enrollClientCPU+r.enrollServerCPU, cpus)
		u["reenroll"] = cpuUseAt(r.reenrolls, r.reenrollClientCPU+r.reenrollServerCPU, cpus)
	}
	return u
}

// printCPUUse says, per phase, how busy the CPUs were and what rate they would allow if never
// idle, with that ceiling as a share of the phase's floor: a ratio below its aim only because
// the CPUs idled can be raised by concurrency, one whose ceiling is below the aim only by
// spending less CPU per operation.
func (r *benchResult) printCPUUse(w io.Writer, m Machine) {
	u := r.cpuUses(m.NumCPU)
	fmt.Fprintf(w, "\nCPUs (%d × %s)\n", m.NumCPU, m.CPU)
	fmt.Fprintf(w, "  phase              busy      rate if never idle (CPUs ÷ CPU per operation)\n")
	line := func(label, name, floorName string, floor float64) {
		c, ok := u[name]
		if !ok || c.ceiling == 0 {
			return
		}
		fmt.Fprintf(w, "  %-18s %5.1f%%   %8.0f/s", label, 100*c.busy, c.ceiling)
		if floorName != "" && floor > 0 {
			fmt.Fprintf(w, "  = %5.1f%% of %s", 100*c.ceiling/floor, floorName)
		}
		fmt.Fprintln(w)
	}
	line("raw pion handshake", "pion_dtls_handshake", "", 0)
	line("raw pion, child", "pion_dtls_handshake_child", "", 0)
	line("raw pion, between", "pion_dtls_handshake_interleaved", "", 0)
	line("server handshake", "server_dtls_handshake", "", 0)
	floor, floorName := r.enrollFloor()
	line("enroll", "enroll", floorName, floor)
	signs, signsName := r.reenrollFloor()
	line("reenroll", "reenroll", signsName, signs)
}

// ilPlacement says where the interleaved floor's pion server ran.
func (r *benchResult) ilPlacement() string {
	if r.childHS > 0 {
		return "the pion server in a child process"
	}
	return "both ends in the bench process"
}

func benchEST(ctx context.Context, o ESTOptions, progress io.Writer) (*benchResult, error) {
	res := &benchResult{}
	say := func(format string, a ...any) { fmt.Fprintf(progress, "bench: "+format+"\n", a...) }

	t, err := openTarget(ctx, o, say)
	if err != nil {
		return nil, err
	}
	defer t.stop()
	res.mode = t.mode

	// Every floor is measured with the server up and idle (a child or external server is a
	// process beside the floors), before and after the phases alike.
	say("measuring ECDSA P-256 (%v each)", o.Duration/2)
	res.signs, res.verifies = ecdsaFloor(o.Duration / 2)

	say("measuring raw pion DTLS handshakes (%d concurrent, %v)", o.Concurrency, o.Duration/2)
	device0 := t.data.DeviceCertificate()
	var rawCPU, srvCPUc, srvCPUs [2]time.Duration
	m := startMeter(t)
	res.rawHS, err = rawHandshakeFloor(ctx, t.data.ServerCertificate(), device0, t.data.ManufacturerCA, t.data.Root, o.Concurrency, o.Duration/2)
	if err != nil {
		return nil, fmt.Errorf("raw handshake floor: %w", err)
	}
	rawCPU[0], _ = m.perOp(res.rawHS)
	var child *pionChild
	var childCPUc, childCPUs [2]time.Duration
	if t.mode != modeInProcess {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("raw handshake floor in a child process: %w", err)
		}
		if child, err = spawnPionServer(exe, t.data.Dir); err != nil {
			return nil, err
		}
		defer child.stop()
		say("measuring raw pion DTLS handshakes with the pion server in a child process (%d concurrent, %v)", o.Concurrency, o.Duration/2)
		if res.childHS, childCPUc[0], childCPUs[0], err = childFloor(ctx, child, device0, t.data.Root, o.Concurrency, o.Duration/2); err != nil {
			return nil, err
		}
	}
	say("measuring DTLS handshakes with the server under test (%d concurrent, %v)", o.Concurrency, o.Duration/2)
	m = startMeter(t)
	res.srvHS, err = serverHandshakeRate(ctx, t.url, device0, t.data.Root, o.Concurrency, o.Duration/2)
	if err != nil {
		return nil, fmt.Errorf("handshakes with the server under test: %w", err)
	}
	srvCPUc[0], srvCPUs[0] = m.perOp(res.srvHS)

	res.devices = o.Devices
	if res.devices == 0 {
		res.devices = autoDevices(res.srvHS, o.Duration, o.Concurrency)
		say("preparing %d device identities and CSRs (--devices 0: as many as the server completed handshakes in --duration, so that phase 1 measures the steady state)", res.devices)
	} else {
		say("preparing %d device identities and CSRs", res.devices)
	}
	devs, err := makeDevices(t.data, res.devices)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AddCert(t.data.Root)
	dial := func(ctx context.Context, id tls.Certificate) (*coap.Client, error) {
		return coap.Dial(ctx, t.url, coap.ClientOptions{BlockSize: o.BlockSize, DTLS: &dtlsconn.ClientConfig{
			Certificates: []tls.Certificate{id}, RootCAs: roots, ServerName: "127.0.0.1"}})
	}

	if o.CPUProfile != "" {
		f, err := os.Create(o.CPUProfile)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, err
		}
		defer pprof.StopCPUProfile() // on early returns; stopped before the second floors below
	}
	// Phase 1 alternates slices of enrollments with slices of the raw handshake floor in the
	// placement of the server under test (the pion child with --spawn/--server, in-process
	// otherwise): on a shared machine the floor measured seconds before or after the phase may
	// have run at another speed, the slices beside it ran at the same one.
	slice := interleaveSlice(o.Duration)
	say("phase 1: %d enrollments, each over a new DTLS session, in slices of %v alternating with the raw handshake floor", res.devices, slice)
	var self0, cpu0 time.Duration // CPU of the enrollment slices: bench process, server
	var enrollTime time.Duration
	var il interleaved
	var mu sync.Mutex
	var next atomic.Int64
	var wg sync.WaitGroup
	enrollUntil := func(until time.Time) {
		eachDevice(ctx, o.Concurrency, len(devs), &next, until, func(i int) {
			d := devs[i]
			t0 := time.Now()
			err := func() error {
				c, err := dial(ctx, d.idevid)
				if err != nil {
					return err
				}
				defer c.Close()
				cert, err := client.NewEST(c, client.ESTOptions{}).Enroll(ctx, d.csr)
				if err != nil {
					return err
				}
				d.ldevid = tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: d.key, Leaf: cert}
				return nil
			}()
			outcome(&mu, &res.enrollErrs, &res.enrollLat, err, t0, func(err error) { say("first enroll error: %v", err) })
		})
	}
	// A floor slice before the first slice of enrollments and after every one: the floor is
	// measured around the enrollments, however few slices they take.
	if err := il.floorSlice(ctx, t, child, device0, o.Concurrency, slice); err != nil {
		return nil, err
	}
	for int(next.Load()) < len(devs) && ctx.Err() == nil {
		s0, c0, t0 := selfCPU(), t.cpu(), time.Now()
		enrollUntil(t0.Add(slice))
		enrollTime += time.Since(t0)
		self0, cpu0 = self0+selfCPU()-s0, cpu0+t.cpu()-c0
		if err := il.floorSlice(ctx, t, child, device0, o.Concurrency, slice); err != nil {
			return nil, err
		}
	}
	if len(res.enrollLat) == 0 {
		return nil, errors.New("no enrollment succeeded")
	}
	res.enrolls = float64(len(res.enrollLat)) / enrollTime.Seconds()
	if cpu0 > 0 {
		res.enrollServerCPU = cpu0 / time.Duration(len(res.enrollLat))
	}
	res.enrollClientCPU = self0 / time.Duration(len(res.enrollLat))
	res.ilHS, res.ilHSClientCPU, res.ilHSServerCPU = il.result()

	say("phase 2: re-enrollments over %d kept sessions for %v, in slices of %v alternating with the ECDSA sign floor", o.Concurrency, o.Duration, slice)
	var ready []*benchDevice
	for _, d := range devs {
		if d.ldevid.Leaf != nil {
			ready = append(ready, d)
		}
		if len(ready) == o.Concurrency {
			break
		}
	}
	sessions := make([]*client.EST, len(ready))
	for i, d := range ready {
		c, err := dial(ctx, d.ldevid)
		if err != nil {
			return nil, fmt.Errorf("session with the new certificate: %w", err)
		}
		defer c.Close()
		sessions[i] = client.NewEST(c, client.ESTOptions{})
	}
	// Like phase 1, phase 2 runs in slices, with the single-goroutine ECDSA sign floor measured
	// for half a slice before the first and after each (the server idle meanwhile).
	var signFloor signSlices
	signFloor.measure(slice / 2)
	var reenrollTime time.Duration
	self0, cpu0 = 0, 0
	for reenrollTime < o.Duration && ctx.Err() == nil {
		s0, c0, t0 := selfCPU(), t.cpu(), time.Now()
		until := t0.Add(min(slice, o.Duration-reenrollTime))
		for i, e := range sessions {
			csr := ready[i].csr
			wg.Go(func() {
				for time.Now().Before(until) && ctx.Err() == nil {
					t0 := time.Now()
					_, err := e.Reenroll(ctx, csr)
					outcome(&mu, &res.reenrollErrs, &res.reenrollLat, err, t0, func(err error) { say("first reenroll error: %v", err) })
				}
			})
		}
		wg.Wait()
		reenrollTime += time.Since(t0)
		self0, cpu0 = self0+selfCPU()-s0, cpu0+t.cpu()-c0
		signFloor.measure(slice / 2)
	}
	res.reenrolls = float64(len(res.reenrollLat)) / reenrollTime.Seconds()
	if cpu0 > 0 && len(res.reenrollLat) > 0 {
		res.reenrollServerCPU = cpu0 / time.Duration(len(res.reenrollLat))
	}
	if len(res.reenrollLat) > 0 {
		res.reenrollClientCPU = self0 / time.Duration(len(res.reenrollLat))
	}
	res.ilSigns = signFloor.rate()

	// The machine may be shared: the floors are measured again after the phases, and the
	// ratios divide by the mean of both measurements (both are printed).
	if o.CPUProfile != "" {
		pprof.StopCPUProfile() // the profile covers the enrollment phases only
	}
	say("measuring the floors again")
	signs, verifies := ecdsaFloor(o.Duration / 2)
	m = startMeter(t)
	rawHS, err := rawHandshakeFloor(ctx, t.data.ServerCertificate(), device0, t.data.ManufacturerCA, t.data.Root, o.Concurrency, o.Duration/2)
	if err != nil {
		return nil, fmt.Errorf("raw handshake floor: %w", err)
	}
	rawCPU[1], _ = m.perOp(rawHS)
	if child != nil {
		childHS, c, sv, err := childFloor(ctx, child, device0, t.data.Root, o.Concurrency, o.Duration/2)
		if err != nil {
			return nil, err
		}
		childCPUc[1], childCPUs[1] = c, sv
		res.childHS, res.childHSAfter = (res.childHS+childHS)/2, childHS
		res.childHSClientCPU, res.childHSServerCPU = (childCPUc[0]+childCPUc[1])/2, (childCPUs[0]+childCPUs[1])/2
	}
	m = startMeter(t)
	srvHS, err := serverHandshakeRate(ctx, t.url, device0, t.data.Root, o.Concurrency, o.Duration/2)
	if err != nil {
		return nil, fmt.Errorf("handshakes with the server under test: %w", err)
	}
	srvCPUc[1], srvCPUs[1] = m.perOp(srvHS)
	res.rawHSCPU = (rawCPU[0] + rawCPU[1]) / 2
	res.srvHSClientCPU, res.srvHSServerCPU = (srvCPUc[0]+srvCPUc[1])/2, (srvCPUs[0]+srvCPUs[1])/2
	res.srvHS, res.srvHSAfter = (res.srvHS+srvHS)/2, srvHS
	res.signsAfter, res.rawHSAfter = signs, rawHS
	res.signs, res.verifies, res.rawHS = (res.signs+signs)/2, (res.verifies+verifies)/2, (res.rawHS+rawHS)/2
	return res, ctx.Err()
}

type benchDevice struct {
	idevid tls.Certificate
	key    *ecdsa.PrivateKey
	csr    []byte
	ldevid tls.Certificate
}

// eachDevice runs conc workers that take the next device index from next and call do with
// it, until n indices are taken, ctx ends or until passes (the zero time: no bound); it
// returns when every worker has. next is shared, so later calls go on where this one stopped.
func eachDevice(ctx context.Context, conc, n int, next *atomic.Int64, until time.Time, do func(i int)) {
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for until.IsZero() || time.Now().Before(until) {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				do(i)
			}
		})
	}
	wg.Wait()
}

// outcome counts one operation started at t0, under mu: its latency, or its error (first
// is told about the first one).
func outcome(mu *sync.Mutex, errs *int64, lat *latencies, err error, t0 time.Time, first func(error)) {
	mu.Lock()
	defer mu.Unlock()
	if err != nil {
		if *errs++; *errs == 1 {
			first(err)
		}
		return
	}
	*lat = append(*lat, time.Since(t0))
}

// signSlices sums the ECDSA sign floor measured between phase 2's slices.
type signSlices struct {
	n       int
	elapsed time.Duration
}

// measure signs with one goroutine for d (the floor of ecdsaFloor) and adds to the sums.
func (s *signSlices) measure(d time.Duration) {
	n, el, _ := signFor(d)
	s.n += n
	s.elapsed += el
}

// rate is signs/s over all slices (0 before any).
func (s *signSlices) rate() float64 {
	if s.elapsed <= 0 {
		return 0
	}
	return float64(s.n) / s.elapsed.Seconds()
}

// interleaveSlice is the length of the phases' slices: a quarter of d, between 500 ms and 1 s.
// A slice starts a fresh set of clients (and, for the in-process floor, a fresh pion
// listener) and ends by letting the enrollments or handshakes in flight finish with no new
// one started: long slices make that share small, short ones follow the machine's changes of
// speed more closely. (At 100 ms slices the in-process floor read half its usual rate.)
func interleaveSlice(d time.Duration) time.Duration {
	return min(max(d/4, 500*time.Millisecond), time.Second)
}

// interleaved sums the floor slices of phase 1.
type interleaved struct {
	handshakes float64       // completed, over all slices
	elapsed    time.Duration // wall time of the slices
	self, srv  time.Duration // CPU of the bench process and of the pion child (0 without one) in the slices
}

// floorSlice measures the raw handshake floor for d in the placement of the server under
// test: against the pion child when there is one, else both ends in this process.
func (il *interleaved) floorSlice(ctx context.Context, t *estTarget, child *pionChild, device tls.Certificate, conc int, d time.Duration) error {
	s0, t0 := selfCPU(), time.Now()
	var rate float64
	var err error
	if child != nil {
		c0 := child.cpu()
		if rate, _, _, err = childFloor(ctx, child, device, t.data.Root, conc, d); err != nil {
			return err
		}
		il.srv += child.cpu() - c0
	} else if rate, err = rawHandshakeFloor(ctx, t.data.ServerCertificate(), device, t.data.ManufacturerCA, t.data.Root, conc, d); err != nil {
		return fmt.Errorf("raw handshake floor: %w", err)
	}
	el := time.Since(t0)
	il.handshakes += rate * el.Seconds()
	il.elapsed += el
	il.self += selfCPU() - s0
	return nil
}

// result is the floor's rate over all slices and its CPU per handshake (bench process, child).
func (il *interleaved) result() (rate float64, self, srv time.Duration) {
	if il.elapsed <= 0 || il.handshakes < 1 {
		return 0, 0, 0
	}
	rate = il.handshakes / il.elapsed.Seconds()
	return rate, time.Duration(float64(il.self) / il.handshakes), time.Duration(float64(il.srv) / il.handshakes)
}

// autoDevices is the number of devices for an enrollment phase of about d (somewhat longer,
// as an enrollment costs more than a handshake): hsRate, the server's handshakes/s measured
// just before, times d, with at least four devices per concurrent one and at most 100,000.
// A phase of a few hundred enrollments lasts a fraction of a second and measures the server
// warming up (heap growth, first GC cycles, cold database pages) more than its steady state,
// while the floors beside it run for seconds.
func autoDevices(hsRate float64, d time.Duration, concurrency int) int {
	n := int(math.Ceil(hsRate * d.Seconds()))
	return min(max(n, 4*concurrency), 100000)
}

// makeDevices issues n IDevIDs from the demo manufacturer CA and a CSR for each.
func makeDevices(d *datadir.Data, n int) ([]*benchDevice, error) {
	out := make([]*benchDevice, n)
	for i := range out {
		dev, err := makeDevice(d, i)
		if err != nil {
			return nil, err
		}
		out[i] = dev
	}
	return out, nil
}

// makeDevice issues device i's IDevID from the demo manufacturer CA and makes its CSR.
func makeDevice(d *datadir.Data, i int) (*benchDevice, error) {
	idKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial := fmt.Sprintf("bench-%05d", i)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(int64(i) + 1000),
		Subject:      pkix.Name{CommonName: "bench-device", SerialNumber: serial, Organization: []string{"Demo Manufacturer"}},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, d.ManufacturerCA, idKey.Public(), d.ManufacturerKey)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	csr, err := client.NewCSR(key, client.CertRequest{Subject: pkix.Name{CommonName: "bench-device"}}, "")
	if err != nil {
		return nil, err
	}
	return &benchDevice{idevid: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: idKey}, key: key, csr: csr}, nil
}

// ecdsaFloor measures P-256 signatures and verifications per second on one goroutine.
func ecdsaFloor(d time.Duration) (signs, verifies float64) {
	n, el, v := signFor(d)
	signs = float64(n) / el.Seconds()
	n, start := 0, time.Now()
	for time.Since(start) < d {
		v.verify()
		n++
	}
	return signs, float64(n) / time.Since(start).Seconds()
}

// signed is one P-256 signature with what verifies it.
type signed struct {
	pub  *ecdsa.PublicKey
	hash []byte
	sig  []byte
}

func (v signed) verify() bool { return ecdsa.VerifyASN1(v.pub, v.hash, v.sig) }

// signFor signs with one goroutine and a fresh P-256 key for d: the signatures made, the time
// they took, and the last of them.
func signFor(d time.Duration) (n int, elapsed time.Duration, last signed) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	h := sha256.Sum256([]byte("coapca"))
	last = signed{pub: &key.PublicKey, hash: h[:]}
	start := time.Now()
	for time.Since(start) < d {
		last.sig, _ = ecdsa.SignASN1(rand.Reader, key, h[:])
		n++
	}
	return n, time.Since(start), last
}

// rawHandshakeFloor runs full pion/dtls handshakes (the same suite, curve and mutual
// certificate authentication as coapca, rawPionListener) for d with conc clients, both ends in
// this process, and returns handshakes/s.
func rawHandshakeFloor(ctx context.Context, srvCert, cliCert tls.Certificate, clientCA, serverRoot *x509.Certificate, conc int, d time.Duration) (float64, error) {
	serverRoots := x509.NewCertPool()
	serverRoots.AddCert(serverRoot)
	ln, err := rawPionListener(ctx, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, srvCert, clientCA)
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return handshakeRate(ctx, ln.Addr().(*net.UDPAddr), cliCert, serverRoots, conc, d)
}

// childFloor measures raw pion handshakes/s against the pion child for d with conc clients,
// and the CPU per handshake of this process (the clients) and of the child.
func childFloor(ctx context.Context, c *pionChild, cliCert tls.Certificate, serverRoot *x509.Certificate, conc int, d time.Duration) (rate float64, cli, srv time.Duration, err error) {
	roots := x509.NewCertPool()
	roots.AddCert(serverRoot)
	self0, child0, start := selfCPU(), c.cpu(), time.Now()
	rate, err = handshakeRate(ctx, c.addr, cliCert, roots, conc, d)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("raw handshake floor with the pion server in a child process: %w", err)
	}
	if n := rate * time.Since(start).Seconds(); n >= 1 {
		cli = time.Duration(float64(selfCPU()-self0) / n)
		srv = time.Duration(float64(c.cpu()-child0) / n)
	}
	return rate, cli, srv, nil
}

// serverHandshakeRate runs full pion/dtls client handshakes (no request) against the server
// under test at url (coaps://host:port) for d with conc clients and returns handshakes/s. With
// the server in its own process, this floor pays what enrollments pay for two processes
// sharing the machine (wake-ups across processes, two Go runtimes), which the raw pion floor,
// both ends in the bench process, does not.
func serverHandshakeRate(ctx context.Context, url string, cliCert tls.Certificate, serverRoot *x509.Certificate, conc int, d time.Duration) (float64, error) {
	addr, err := net.ResolveUDPAddr("udp", strings.TrimPrefix(url, "coaps://"))
	if err != nil {
		return 0, fmt.Errorf("server address %q: %w", url, err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(serverRoot)
	return handshakeRate(ctx, addr, cliCert, roots, conc, d)
}

// handshakeRate dials addr with conc pion/dtls clients (CCM_8, P-256, extended master secret,
// the client's certificate, the server's chain verified against serverRoots) for d and returns
// completed handshakes/s.
func handshakeRate(ctx context.Context, addr *net.UDPAddr, cliCert tls.Certificate, serverRoots *x509.CertPool, conc int, d time.Duration) (float64, error) {
	suite := dtls.WithCipherSuites(dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8)
	ems := dtls.WithExtendedMasterSecret(dtls.RequireExtendedMasterSecret)
	curve := dtls.WithEllipticCurves(pionelliptic.P256)
	var done atomic.Int64
	var firstErr atomic.Value
	deadline := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for time.Now().Before(deadline) && ctx.Err() == nil {
				// The device authenticates the server, as RFC 9148 §3 requires and our client does.
				c, err := dtls.DialWithOptions("udp", addr, suite, ems, curve,
					dtls.WithCertificates(cliCert), dtls.WithRootCAs(serverRoots), dtls.WithServerName("127.0.0.1"))
				if err == nil {
					hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
					err = c.HandshakeContext(hctx)
					cancel()
					c.Close()
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	if done.Load() == 0 {
		if e, ok := firstErr.Load().(error); ok {
			return 0, e
		}
		return 0, errors.New("no handshake completed")
	}
	return float64(done.Load()) / time.Since(start).Seconds(), nil
}

// selfCPU is the user+system CPU time this process has used so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuMeter measures the CPU the bench process and the server use over one measurement.
type cpuMeter struct {
	t         *estTarget
	start     time.Time
	self, srv time.Duration
}

func startMeter(t *estTarget) cpuMeter {
	return cpuMeter{t: t, start: time.Now(), self: selfCPU(), srv: t.cpu()}
}

// perOp divides the CPU used since the start by the operations a rate of rate/s made over the
// elapsed time: (bench process, server); the server's is 0 when it is not in its own process.
func (m cpuMeter) perOp(rate float64) (self, srv time.Duration) {
	n := rate * time.Since(m.start).Seconds()
	if n < 1 {
		return 0, 0
	}
	self = time.Duration(float64(selfCPU()-m.self) / n)
	if s := m.t.cpu(); s > 0 {
		srv = time.Duration(float64(s-m.srv) / n)
	}
	return self, srv
}
