package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"strings"

	"coapca/internal/config"
	"coapca/internal/gcpace"
	"coapca/internal/server"
)

const serveDescription = `Run the coapca server.

On first start it creates the data directory (--data, default ./coapca-data) with a root and an
issuing CA, the server's DTLS certificate, a SQLite database, a demo manufacturer CA that the
server trusts for initial enrollment and a demo device identity; later starts reuse everything.
It then serves EST-coaps (RFC 9148) on --coaps (:5684), EST-oscore and CMP over CoAP
(RFC 9482) on --coap (:5683), CMP over HTTP (RFC 9811) on --http and EST over HTTPS (RFC 7030)
on --https when given (with --upstream, EST-coaps and EST-oscore relay to an upstream EST
server over HTTPS instead: the registrar of RFC 9148 §5, docs/registrar.md), and prints the commands that enroll the demo device over each. Everything else is set in the YAML file given
with --config (docs/configuration.md); flags override the file.`

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve", "coapca serve [flags]", serveDescription, stderr)
	cfgPath := fs.String("config", "", "YAML configuration file (docs/configuration.md)")
	dataDir := fs.String("data", "", "data directory (default ./coapca-data)")
	coaps := fs.String("coaps", "", "EST-coaps (CoAP over DTLS) listen address (default :5684; \"off\" disables)")
	coapAddr := fs.String("coap", "", "plain CoAP (UDP) listen address for EST-oscore and CMP over CoAP (default :5683; \"off\" disables)")
	httpAddr := fs.String("http", "", "HTTP listen address for CMP over HTTP, e.g. :8080 (default off; \"off\" disables)")
	httpsAddr := fs.String("https", "", "HTTPS listen address for EST over HTTPS (RFC 7030), e.g. :8443 (default off; \"off\" disables)")
	metricsAddr := fs.String("metrics", "", "serve Prometheus /metrics and /healthz on this HTTP address (default off)")
	logLevel := fs.String("log-level", "", "debug, info, warn or error (default info)")
	cmpUpstream := fs.String("cmp-upstream", "", "relay CMP over CoAP to this RFC 9811 server (http:// or https:// URL) instead of answering it: the CMP registrar (cmp_upstream in the config, docs/registrar.md)")
	shutdownTimeout := fs.Duration("shutdown-timeout", 0, "on SIGINT/SIGTERM, finish and answer requests already taken for at most this long (default 30s)")
	storeFlag := fs.String("store", "", storeFlagHelp)
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the server's whole run to this file at shutdown (go tool pprof)")
	traceFile := fs.String("trace", "", "write a runtime execution trace of the server's whole run to this file, complete at shutdown (go tool trace)")
	gcHeadroom := fs.Int("gc-headroom-mib", 0, fmt.Sprintf("let the Go heap grow by at least this many MiB between garbage collections (less GC CPU while the live heap is smaller; Go's own pacing above it); negative: Go's default pacing; ignored when GOGC is set (default %d)", config.DefaultGCHeadroomMiB))
	memProfile := fs.String("memprofile", "", "write an allocation profile of the server's whole run to this file at shutdown (go tool pprof)")
	var names, oscoreCtx stringList
	fs.Var(&oscoreCtx, "oscore-context", "pre-shared OSCORE context file (YAML, server's side) for EST-oscore on --coap (repeatable)")
	fs.Var(&names, "server-name", "extra DNS name or IP address for the server certificate created on first start (repeatable)")
	applyUpstream := upstreamFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	cfg, err := loadConfig(*cfgPath, *dataDir)
	if err != nil {
		return err
	}
	if err := applyStoreFlag(&cfg, *storeFlag); err != nil {
		return err
	}
	for _, o := range []struct {
		flag string
		dst  *string
	}{{*coaps, &cfg.Listen.CoAPS}, {*coapAddr, &cfg.Listen.CoAP}, {*httpAddr, &cfg.Listen.HTTP}, {*httpsAddr, &cfg.Listen.HTTPS}} {
		switch o.flag {
		case "":
		case "off":
			*o.dst = ""
		default:
			*o.dst = o.flag
		}
	}
	if *metricsAddr != "" {
		cfg.Listen.Metrics = *metricsAddr
	}
	if *logLevel != "" {
		cfg.Log.Level = *logLevel
	}
	if *cmpUpstream != "" {
		cfg.CMPUpstream.URL = *cmpUpstream
	}
	if *shutdownTimeout != 0 {
		cfg.ShutdownTimeout = *shutdownTimeout
	}
	switch {
	case cfg.ShutdownTimeout < 0:
		return usagef("shutdown timeout %v is negative", cfg.ShutdownTimeout)
	case cfg.ShutdownTimeout == 0:
		cfg.ShutdownTimeout = config.DefaultShutdownTimeout
	}
	if *gcHeadroom != 0 {
		cfg.GCHeadroomMiB = *gcHeadroom
	}
	if cfg.GCHeadroomMiB == 0 {
		cfg.GCHeadroomMiB = config.DefaultGCHeadroomMiB
	}
	applyUpstream(&cfg)
	cfg.ServerNames = append(cfg.ServerNames, names...)
	cfg.OSCOREContexts = append(cfg.OSCOREContexts, oscoreCtx...)
	log, err := newLoggerFormat(stderr, cfg.Log.Level, cfg.Log.Format)
	if err != nil {
		return err
	}

	if *cpuProfile != "" {
		stop, err := startCPUProfile(*cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	if *traceFile != "" {
		stop, err := startTrace(*traceFile)
		if err != nil {
			return err
		}
		defer stop()
	}
	if *memProfile != "" {
		runtime.MemProfileRate = 64 << 10 // a sample every 64 KiB allocated (the default 512 KiB sees too little)
		defer writeAllocProfile(*memProfile, stderr)
	}

	if cfg.GCHeadroomMiB > 0 {
		pacer := gcpace.Start(uint64(cfg.GCHeadroomMiB)<<20, os.Getenv("GOGC"), log)
		defer pacer.Stop()
	}

	// The server outlives ctx (the signal): it must keep answering what it took after SIGINT.
	s, err := server.Start(context.WithoutCancel(ctx), cfg, log)
	if err != nil {
		return err
	}
	s.PrintWelcome(stdout, selfCommand())
	<-ctx.Done()
	fmt.Fprintf(stdout, "coapca: shutting down (finishing requests in progress, at most %v)\n", cfg.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := s.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	fmt.Fprintln(stdout, "coapca: stopped")
	return nil
}

// startCPUProfile starts the CPU profile into path; stop ends it and closes the file.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// startTrace starts the runtime execution trace into path; stop ends it and closes the file.
func startTrace(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("trace: %w", err)
	}
	if err := trace.Start(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("trace: %w", err)
	}
	return func() { trace.Stop(); f.Close() }, nil
}

// writeAllocProfile writes the allocation profile (allocs: everything allocated since start)
// to path, reporting a failure on stderr (the server has stopped by then).
func writeAllocProfile(path string, stderr io.Writer) {
	f, err := os.Create(path)
	if err == nil {
		err = pprof.Lookup("allocs").WriteTo(f, 0)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "coapca: memory profile: %v\n", err)
	}
}

// selfCommand is how the user ran us: "coapca", or "go run ./cmd/coapca" for a go run binary.
func selfCommand() string {
	exe, err := os.Executable()
	if err == nil && strings.Contains(exe, "go-build") {
		return "go run ./cmd/coapca"
	}
	return "coapca"
}
