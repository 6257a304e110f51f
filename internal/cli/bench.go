package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"coapca/cmp"
	"coapca/internal/bench"
)

const benchUsage = `Usage: coapca bench est|cmp|coap|compare [flags]

  est   EST-coaps enrollments and re-enrollments
  cmp   CMP ir+certConf transactions over CoAP and HTTP
  coap  the CoAP endpoint alone: DTLS handshakes, GETs over DTLS and UDP
  compare  coapca next to libcoap, raw pion/crypto/tls floors, EST-oscore/EDHOC next to EST-coaps

Run 'coapca bench est -h' (etc.) for the flags.`

const benchDescription = `Measure EST-coaps enrollment throughput against an in-process server.

N simulated devices (each with its own IDevID from the demo manufacturer CA) enroll
concurrently, each with a fresh DTLS handshake (/sen); then every device opens one session with
its new certificate and re-enrolls over it (/sren) for --duration. Storage is the real SQLite
database, fsync'd. Beside the results it prints floors measured in the same run on the same
machine: ECDSA P-256 sign/verify per second and raw pion/dtls handshakes per second at the same
concurrency, and each result as a ratio to them.`

const benchCMPDescription = `Measure CMP enrollment throughput against an in-process server.

Workers run complete Lightweight CMP transactions (ir, ip, certConf, pkiConf; RFC 9483 §4.1)
for --duration over coap:// (RFC 9482) and then over http:// (RFC 9811), each worker with its
own connection. Requests are MAC-protected with the demo secret (PasswordBasedMac,
--iterations, HMAC-SHA256) or signed by per-worker device certificates (--protection
signature); every answer is checked by the client. Each certificate is signed by the CA and
recorded in the real SQLite database (fsync'd) before the answer goes out. Beside the results it
prints the ECDSA P-256 floor measured in the same run on the same machine.`

const benchCoAPDescription = `Measure the CoAP endpoint alone: full DTLS handshakes per second through coapca's
listener, and small GETs per second over established DTLS sessions and over plain UDP, with
--clients concurrent clients on this machine. Beside them it prints floors measured in the same
run: raw pion/dtls handshakes per second at the same concurrency and ECDSA P-256 sign/verify per
second, and each result as a ratio to them.`

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
		return usagef("usage: coapca bench est|cmp|coap|compare [flags] (see 'coapca bench help')")
	}
	switch args[0] {
	case "est":
		var o bench.ESTOptions
		fs := newFlagSet("bench est", "coapca bench est [flags]", benchDescription, stderr)
		fs.IntVar(&o.Devices, "devices", 200, "number of devices that enroll (each with a fresh DTLS handshake)")
		fs.IntVar(&o.Concurrency, "concurrency", 8, "devices working at once")
		fs.DurationVar(&o.Duration, "duration", 5*time.Second, "how long the re-enrollment phase and each floor measurement run")
		fs.IntVar(&o.BlockSize, "block-size", 1024, "CoAP block size the devices use")
		fs.StringVar(&o.DataDir, "data", "", "data directory for the server (default: a temporary one, removed afterwards)")
		fs.StringVar(&o.CPUProfile, "cpuprofile", "", "write a CPU profile of the enrollment phases to this file (go tool pprof)")
		fs.BoolVar(&o.OSCORE, "oscore", false, "compare EST-oscore with pre-shared contexts to EST-coaps: enrollments/s and bytes on the wire")
		fs.BoolVar(&o.EDHOC, "edhoc", false, "compare EST-oscore keyed by EDHOC (combined request) to EST-coaps: enrollments/s and bytes on the wire")
		fs.IntVar(&o.WireSamples, "wire-samples", 20, "with --oscore/--edhoc: sequential enrollments per front door counted for bytes on the wire")
		fs.BoolVar(&o.HTTPS, "https", false, "benchmark EST over HTTPS (RFC 7030) instead, next to raw crypto/tls handshakes")
		fs.StringVar(&o.Server, "server", "", "load the running server at this EST-coaps address (host:port) in its own process; --data must be its data directory")
		fs.BoolVar(&o.Spawn, "spawn", false, "start 'coapca serve' as a child process on --data (default a temporary directory) and load it, so client and server CPU are not mixed")
		fs.StringVar(&o.JSON, "json", "", "also write the results to this JSON file (for 'coapca bench plot')")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if o.Devices < 1 || o.Concurrency < 1 || o.Duration <= 0 {
			return usagef("--devices, --concurrency and --duration must be positive")
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
		if o.OSCORE || o.EDHOC {
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
	}
	return usagef("usage: coapca bench est|cmp|coap|compare [flags] (see 'coapca bench help')")
}
