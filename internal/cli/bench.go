package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"coapca/cmp"
	"coapca/internal/bench"
)

const benchUsage = `Usage: coapca bench est|cmp|coap|registrar|sessions|soak|compare [flags]

  est        EST-coaps enrollments and re-enrollments
  registrar  EST-coaps enrollments through a registrar to an HTTPS CA, next to direct ones
  cmp        CMP ir+certConf transactions over CoAP and HTTP
  coap       the CoAP endpoint alone: DTLS handshakes, GETs over DTLS and UDP
  sessions   server memory per idle DTLS session (server in its own process)
  soak       enroll and re-enroll many devices, sampling the server's memory, goroutines,
             file descriptors and database size during and after the load
  compare    coapca next to libcoap, raw pion/crypto/tls floors, EST-oscore/EDHOC next to EST-coaps

Run 'coapca bench est -h' (etc.) for the flags.`

const benchDescription = `Measure EST-coaps enrollment throughput against an in-process server.

With --spawn the bench starts 'coapca serve' as a child process, and with --server ADDR it loads
one already running in its own process (coapca serve --data DIR, with --data DIR here too), so
that its CPU and the clients' are not mixed. The server's CPU is read from /proc: the PID of a
spawned server is known, that of a running one is in DIR/coapca.lock (the lock it holds).

N simulated devices (each with its own IDevID from the demo manufacturer CA) enroll
concurrently, each with a fresh DTLS handshake (/sen). By default N is as many as the server
completes handshakes in --duration, measured just before: the enrollment phase then lasts about as
long as the floors and measures the steady state, not the server warming up (a few hundred
enrollments take a fraction of a second). The enrollments run in slices (a quarter of
--duration, 0.5-1 s) that alternate with slices of the raw pion handshake floor in the server's
placement, so that the two are compared at the same speed of a shared machine. Then
--concurrency of the enrolled devices each open one session with the new certificate and
re-enroll over it (/sren) for --duration, in slices alternating with half-slices of the ECDSA
sign floor. Storage is the real SQLite
database, fsync'd. Beside the results it prints floors measured in the same run on the same
machine: ECDSA P-256 sign/verify per second and raw pion/dtls handshakes per second at the same
concurrency (both ends in the bench process; with --spawn or --server also with the pion server
in a child process, the placement of the server under test), and each result as a ratio to them,
then the CPU per operation of the bench process (the clients) and of the server. When both are
known it also prints how busy the machine's CPUs were in each phase and the rate the same CPU
per operation would allow if they never idled: a phase near 100 % busy can only go faster by
spending less CPU per operation, one well below it was bound by latency. The share counts the
two processes' CPU only, not the kernel's work for the loopback datagrams, so it reads low.

On a shared machine the floors and the server move with the neighbours' load from one run to the
next; --runs N repeats the whole measurement and ends with a table of the runs and, for each
ratio, its minimum, mean and maximum and how many runs reached the target (enrollments 0.70 of
the raw handshake rate, re-enrollments 0.10 of the ECDSA sign rate, both between the run's slices).`

const benchCMPDescription = `Measure CMP enrollment throughput against an in-process server.

Workers run complete Lightweight CMP transactions (ir, ip, certConf, pkiConf; RFC 9483 §4.1)
for --duration over coap:// (RFC 9482) and then over http:// (RFC 9811), each worker with its
own connection. Requests are MAC-protected with the demo secret (PasswordBasedMac,
--iterations, HMAC-SHA256) or signed by per-worker device certificates (--protection
signature); every answer is checked by the client. Each certificate is signed by the CA and
recorded in the real SQLite database (fsync'd) before the answer goes out. Beside the results it
prints the ECDSA P-256 floor measured in the same run on the same machine.`

const benchRegistrarDescription = `Measure EST-coaps enrollments through a registrar (RFC 9148 §5) against direct ones.

Two in-process servers: a CA serving EST-coaps and EST over HTTPS, and a registrar (serve
--upstream) relaying to the CA over HTTPS with its id-kp-cmcRA identity. N devices enroll
directly at the CA (a new DTLS session and /sen each), then N other devices enroll through the
registrar, --concurrency at a time; it prints both rates and the registrar's as a share of the
direct one, measured in the same run on the same machine.`

const benchCoAPDescription = `Measure the CoAP endpoint alone: full DTLS handshakes per second through coapca's
listener, and small GETs per second over established DTLS sessions and over plain UDP, with
--clients concurrent clients on this machine. Beside them it prints floors measured in the same
run: raw pion/dtls handshakes per second at the same concurrency and ECDSA P-256 sign/verify per
second, and each result as a ratio to them.`

const benchSessionsDescription = `Measure what idle DTLS sessions cost the server.

This process opens --sessions real DTLS sessions (full handshake with the demo device
certificate, ECDHE-ECDSA P-256, CCM_8, then one confirmable GET /.well-known/core each) from
--sources local addresses 127.1.x.y, and leaves them idle: the client side forgets each
session (no close_notify), so only the server holds state. By default the server that
'coapca serve' runs is started as a child process (EST-coaps listener only, session caps
raised to fit, idle timeout 1h, per-source handshake limit raised to unlimited unless
--rate-per-source is set); after every --steps share of the sessions it is made to collect
garbage and report its Go heap, goroutine stacks and RSS (/proc), printed per session
against a baseline taken before the first session. With --server ADDR a running server is
loaded instead (give --data, its data directory, for the device certificate, and
--metrics URL, its Prometheus endpoint, for memory figures; the heap read there includes
uncollected garbage). Respect the server's per-source handshake limit with
--rate-per-source (default limit 20/s per address).`

const benchSoakDescription = `Enroll and re-enroll --devices devices through the real server and watch it.

The server that 'coapca serve' runs is started as a child process (EST-coaps only, SQLite
fsync'd, dtls.idle_timeout --idle-timeout). Each device gets a fresh IDevID from the demo
manufacturer CA, enrolls over a new DTLS session (/sen) and re-enrolls over another one with
the certificate it got (/sren); --abandon of them leave that last session open and silent.
Every --interval, and for --settle after the last device, the server reports (after a forced
GC) its live heap, heap in use, RSS, goroutines, file descriptors, database size and CoAP
sessions: after the load they must come back flat, and the abandoned sessions must be evicted
by the idle timeout (sessions 0).`

const benchCompareDescription = `Anchor coapca's figures to other implementations measured in the same run on loopback:
the floors (ECDSA P-256 signs, raw pion/dtls and crypto/tls handshakes), coapca's CoAP-over-DTLS
endpoint next to libcoap's coap-server-openssl (Debian libcoap3-bin; same client, same
certificates: a DTLS handshake and one GET per session, and GETs over kept sessions, with bytes
and datagrams per session counted by a UDP relay), and the EST front doors: EST-coaps next to
EST-oscore with a pre-shared context and keyed by EDHOC (enrollments/s, bytes and datagrams on
the wire per enrollment). Without libcoap the comparison skips it and says so, except with CI=true.`

// runBench is `coapca bench`: flags here, the measurements (against the server that serve
// runs) in internal/bench.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
		fmt.Fprintln(stdout, benchUsage)
		return nil
	}
	if len(args) == 0 {
		return usagef("usage: coapca bench est|cmp|coap|registrar|sessions|soak|compare [flags] (see 'coapca bench help')")
	}
	switch args[0] {
	case "est":
		var o bench.ESTOptions
		fs := newFlagSet("bench est", "coapca bench est [flags]", benchDescription, stderr)
		fs.IntVar(&o.Devices, "devices", 0, "number of devices that enroll (each with a fresh DTLS handshake); 0: as many as the server completes handshakes in --duration, so that the enrollment phase lasts about as long as the floors (200 with --https, --oscore, --edhoc, --ace)")
		fs.IntVar(&o.Concurrency, "concurrency", 8, "devices working at once")
		fs.DurationVar(&o.Duration, "duration", 5*time.Second, "how long the re-enrollment phase and each floor measurement run")
		fs.IntVar(&o.BlockSize, "block-size", 1024, "CoAP block size the devices use")
		fs.StringVar(&o.DataDir, "data", "", "data directory for the server (default: a temporary one, removed afterwards)")
		fs.StringVar(&o.CPUProfile, "cpuprofile", "", "write a CPU profile of the enrollment phases (with phase 1's floor slices) to this file (go tool pprof)")
		fs.BoolVar(&o.OSCORE, "oscore", false, "compare EST-oscore with pre-shared contexts to EST-coaps: enrollments/s and bytes on the wire")
		fs.BoolVar(&o.EDHOC, "edhoc", false, "compare EST-oscore keyed by EDHOC (combined request) to EST-coaps: enrollments/s and bytes on the wire")
		fs.BoolVar(&o.ACE, "ace", false, "compare EST-oscore keyed by an ACE access token (RFC 9203: in-process AS, /authz-info, /sen) to EST-coaps: enrollments/s and bytes on the wire, AS traffic included")
		fs.IntVar(&o.WireSamples, "wire-samples", 20, "with --oscore/--edhoc/--ace: sequential enrollments per front door counted for bytes on the wire")
		fs.BoolVar(&o.HTTPS, "https", false, "benchmark EST over HTTPS (RFC 7030) instead, next to raw crypto/tls handshakes")
		fs.StringVar(&o.Server, "server", "", "load the running server at this EST-coaps address (host:port) in its own process; --data must be its data directory")
		fs.BoolVar(&o.Spawn, "spawn", false, "start 'coapca serve' as a child process on --data (default a temporary directory) and load it, so client and server CPU are not mixed")
		fs.StringVar(&o.JSON, "json", "", "also write the results to this JSON file (for 'coapca bench plot')")
		fs.StringVar(&o.ServerCPUProfile, "server-cpuprofile", "", "with --spawn: the server writes a CPU profile of its whole run (the handshake measurements against it included) to this file")
		fs.StringVar(&o.ServerMemProfile, "server-memprofile", "", "with --spawn: the server writes an allocation profile of its whole run to this file")
		fs.StringVar(&o.ServerTrace, "server-trace", "", "with --spawn: the server writes a runtime execution trace of its whole run to this file (go tool trace)")
		fs.IntVar(&o.Runs, "runs", 1, "repeat the whole measurement (floors included) this many times and end with a summary: per run the ratios to the floors measured between its slices, their min/mean/max, and in how many runs enrollments reached 0.70 of the raw handshake rate and re-enrollments 0.10 of the ECDSA sign rate (on a shared machine one run says little); with --spawn each run starts its own server, on a fresh data directory unless --data")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if o.Runs < 1 {
			return usagef("--runs must be at least 1")
		}
		if o.Runs > 1 && (o.JSON != "" || o.CPUProfile != "" || o.ServerCPUProfile != "" || o.ServerMemProfile != "" || o.ServerTrace != "") {
			return usagef("--json and the profile and trace flags describe one run: not with --runs above 1")
		}
		if o.Runs > 1 && (o.HTTPS || o.OSCORE || o.EDHOC || o.ACE) {
			return usagef("--runs repeats the EST-coaps measurement only: not with --https, --oscore, --edhoc or --ace")
		}
		if (o.ServerCPUProfile != "" || o.ServerMemProfile != "" || o.ServerTrace != "") && !o.Spawn {
			return usagef("--server-cpuprofile, --server-memprofile and --server-trace need --spawn")
		}
		if o.Server != "" && (o.HTTPS || o.OSCORE || o.EDHOC) {
			return usagef("--server loads EST-coaps only: not with --https, --oscore or --edhoc")
		}
		if o.Server != "" && o.DataDir == "" {
			return usagef("--server needs --data, the running server's data directory")
		}
		if o.Devices < 0 || o.Concurrency < 1 || o.Duration <= 0 {
			return usagef("--devices must not be negative, --concurrency and --duration must be positive")
		}
		if o.Devices == 0 && (o.HTTPS || o.OSCORE || o.EDHOC || o.ACE) {
			o.Devices = 200
		}
		if o.Server != "" && o.Spawn {
			return usagef("--server and --spawn exclude each other")
		}
		if (o.Server != "" || o.Spawn) && (o.HTTPS || o.OSCORE || o.EDHOC) {
			return usagef("--server and --spawn apply to EST-coaps only")
		}
		if o.HTTPS {
			return bench.ESTHTTPS(ctx, o, stdout, stderr)
		}
		if o.OSCORE || o.EDHOC || o.ACE {
			return bench.FrontDoors(ctx, o, stdout, stderr)
		}
		return bench.EST(ctx, o, stdout, stderr)
	case "cmp":
		var o bench.CMPOptions
		fs := newFlagSet("bench cmp", "coapca bench cmp [flags]", benchCMPDescription, stderr)
		fs.IntVar(&o.Concurrency, "concurrency", 8, "transactions in flight at once (one client each)")
		fs.DurationVar(&o.Duration, "duration", 5*time.Second, "how long each transport and the floor measurement run")
		fs.StringVar(&o.Protection, "protection", "mac", "request protection: mac (PasswordBasedMac) or signature (device certificates)")
		fs.IntVar(&o.Iterations, "iterations", 500, "PasswordBasedMac iteration count (OpenSSL's default is 500)")
		fs.StringVar(&o.DataDir, "data", "", "data directory for the server (default: a temporary one, removed afterwards)")
		fs.StringVar(&o.CPUProfile, "cpuprofile", "", "write a CPU profile of the transaction phases to this file (go tool pprof)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if o.Concurrency < 1 || o.Duration <= 0 || o.Iterations < cmp.MinIterations {
			return usagef("--concurrency and --duration must be positive, --iterations at least %d", cmp.MinIterations)
		}
		if o.Protection != "mac" && o.Protection != "signature" {
			return usagef("--protection must be mac or signature")
		}
		return bench.CMP(ctx, o, stdout, stderr)
	case "registrar":
		var o bench.ESTOptions
		fs := newFlagSet("bench registrar", "coapca bench registrar [flags]", benchRegistrarDescription, stderr)
		fs.IntVar(&o.Devices, "devices", 200, "devices that enroll on each path (each with a fresh DTLS handshake)")
		fs.IntVar(&o.Concurrency, "concurrency", 8, "devices working at once")
		fs.IntVar(&o.BlockSize, "block-size", 1024, "CoAP block size the devices use")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if o.Devices < 1 || o.Concurrency < 1 {
			return usagef("--devices and --concurrency must be positive")
		}
		return bench.Registrar(ctx, o, stdout, stderr)
	case "compare":
		var o bench.CompareOptions
		fs := newFlagSet("bench compare", "coapca bench compare [flags]", benchCompareDescription, stderr)
		fs.IntVar(&o.Concurrency, "concurrency", 8, "clients working at once")
		fs.DurationVar(&o.Duration, "duration", 3*time.Second, "how long each rate measurement runs")
		fs.IntVar(&o.Devices, "devices", 100, "enrollments per EST front door")
		fs.IntVar(&o.WireSamples, "wire-samples", 20, "sequential sessions/enrollments counted for bytes on the wire")
		fs.IntVar(&o.BlockSize, "block-size", 1024, "CoAP block size the devices use")
		fs.StringVar(&o.LibCoAP, "libcoap", "", "libcoap example server to compare with (default coap-server-openssl from PATH)")
		fs.StringVar(&o.JSON, "json", "", "also write the results to this JSON file (for 'coapca bench plot')")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if o.Concurrency < 1 || o.Duration <= 0 || o.Devices < 1 {
			return usagef("--concurrency, --duration and --devices must be positive")
		}
		return bench.Compare(ctx, o, stdout, stderr)
	case "coap":
		var o bench.CoAPOptions
		fs := newFlagSet("bench coap", "coapca bench coap [flags]", benchCoAPDescription, stderr)
		fs.IntVar(&o.Clients, "clients", 8, "concurrent clients")
		fs.DurationVar(&o.Duration, "duration", 3*time.Second, "how long each measurement runs")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if o.Clients < 1 || o.Duration <= 0 {
			return usagef("--clients and --duration must be positive")
		}
		return bench.CoAP(ctx, o, stdout, stderr)
	case "sessions":
		var o bench.SessionsOptions
		fs := newFlagSet("bench sessions", "coapca bench sessions [flags]", benchSessionsDescription, stderr)
		fs.IntVar(&o.Sessions, "sessions", 3000, "DTLS sessions to open and leave idle")
		fs.IntVar(&o.Steps, "steps", 4, "measure memory after every 1/steps of the sessions")
		fs.StringVar(&o.Server, "server", "", "coaps address (host:port) of a running server (default: start one as a child process)")
		fs.StringVar(&o.Metrics, "metrics", "", "with --server: the server's Prometheus endpoint, e.g. http://127.0.0.1:9100/metrics")
		fs.StringVar(&o.DataDir, "data", "", "the server's data directory (default: a temporary one for the child server)")
		fs.IntVar(&o.Sources, "sources", 16, "source addresses (127.1.x.y) the sessions come from")
		fs.Float64Var(&o.RatePerSource, "rate-per-source", 0, "handshakes per second per source address (0 = unpaced; the child server's limit is then raised)")
		fs.IntVar(&o.Concurrency, "concurrency", 8, "handshakes in flight")
		fs.DurationVar(&o.Idle, "idle", 12*time.Second, "how long the sessions stay idle before each measurement (the server parks a DTLS session after 10s without a record)")
		fs.DurationVar(&o.ParkAfter, "park-after", 0, "child server only: its dtls.park_after (0 = the default 10s; negative = never park, to see what parking saves)")
		fs.StringVar(&o.HeapProfile, "heapprofile", "", "child server only: write its heap profile here once every session is open (go tool pprof)")
		fs.StringVar(&o.JSON, "json", "", "also write the per-session figures to this JSON file (for go run ./internal/bench/plot)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if o.Sessions < 1 || o.Steps < 1 || o.Sources < 1 || o.Sources > 65000 || o.Concurrency < 1 || o.RatePerSource < 0 {
			return usagef("--sessions, --steps, --concurrency must be positive, --sources in 1..65000, --rate-per-source not negative")
		}
		if o.Steps > o.Sessions {
			o.Steps = o.Sessions
		}
		return bench.Sessions(ctx, o, stdout, stderr)
	case "soak":
		var o bench.SoakOptions
		fs := newFlagSet("bench soak", "coapca bench soak [flags]", benchSoakDescription, stderr)
		fs.IntVar(&o.Devices, "devices", 1000, "devices that enroll and re-enroll")
		fs.IntVar(&o.Concurrency, "concurrency", 8, "devices working at once")
		fs.IntVar(&o.Abandon, "abandon", 100, "devices that leave their last DTLS session open and silent")
		fs.DurationVar(&o.IdleTimeout, "idle-timeout", 30*time.Second, "the server's DTLS idle timeout")
		fs.DurationVar(&o.Interval, "interval", 5*time.Second, "time between two samples")
		fs.DurationVar(&o.Settle, "settle", 0, "sampling after the load (default 2×idle-timeout + 15s)")
		fs.StringVar(&o.DataDir, "data", "", "data directory for the server (default: a temporary one, removed afterwards)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if o.Devices < 1 || o.Concurrency < 1 || o.Abandon < 0 || o.IdleTimeout <= 0 || o.Interval <= 0 || o.Settle < 0 {
			return usagef("--devices and --concurrency must be positive, --abandon not negative, --idle-timeout and --interval positive")
		}
		return bench.Soak(ctx, o, stdout, stderr)
	case "pion-server":
		// The child process of 'bench est --spawn' (not for direct use): the raw pion/dtls
		// server of the floor with the placement of a server in its own process.
		fs := newFlagSet("bench pion-server", "coapca bench pion-server --data DIR", "The raw pion/dtls floor server of 'coapca bench est --spawn': prints its address and serves until SIGTERM.", stderr)
		dir := fs.String("data", "", "data directory (its server certificate and demo manufacturer CA)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *dir == "" {
			return usagef("--data is required")
		}
		return bench.ServeRawPion(ctx, *dir, stdout)
	case "sessions-server":
		// The child process of 'bench sessions' (not for direct use): the server, reporting
		// its own memory on request.
		var o bench.SessionsServerOptions
		fs := newFlagSet("bench sessions-server", "coapca bench sessions-server [flags]", "The server process of 'coapca bench sessions'.", stderr)
		fs.StringVar(&o.DataDir, "data", "", "data directory")
		fs.IntVar(&o.MaxSessions, "max-sessions", 10000, "session caps (DTLS and CoAP)")
		fs.Float64Var(&o.RatePerSource, "rate-per-source", 0, "per-source handshake limit (0 = unlimited)")
		fs.DurationVar(&o.IdleTimeout, "idle-timeout", 0, "DTLS idle timeout (0 = 1h)")
		fs.DurationVar(&o.ParkAfter, "park-after", 0, "dtls.park_after (0 = default)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if o.DataDir == "" || o.MaxSessions < 1 {
			return usagef("--data is required and --max-sessions must be positive")
		}
		return bench.SessionsServer(ctx, o, os.Stdin, stdout)
	}
	return usagef("usage: coapca bench est|cmp|coap|registrar|sessions|soak|compare [flags] (see 'coapca bench help')")
}
