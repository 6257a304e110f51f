package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"coapca/coap"
	"coapca/coap/dtlsconn"
	"coapca/internal/config"
	"coapca/internal/datadir"
)

// modeInProcess is estTarget.mode for a server in the bench process.
const modeInProcess = "in-process"

// estTarget is the EST-coaps server a benchmark loads: in this process, in a child process
// the bench started, or an already running one.
type estTarget struct {
	url  string        // coaps://host:port
	data *datadir.Data // its data directory (the bench mints IDevIDs from its demo manufacturer CA)
	mode string        // "in-process", "child process pid N", "external ADDR"
	stop func()        // release everything
	pid  int           // the server's process when the bench knows it (0 otherwise)
}

// cpu is the user+system CPU time the server process has used so far, read from
// /proc/PID/stat; 0 when the server runs in this process, is not known, or on error.
func (t *estTarget) cpu() time.Duration {
	if t.pid == 0 {
		return 0
	}
	return procCPU(t.pid)
}

// procCPU reads utime+stime of pid from /proc (Linux; clock ticks of 1/100 s, USER_HZ); 0 when
// it cannot.
func procCPU(pid int) time.Duration {
	d, _ := procStatCPU(pid)
	return d
}

// procStatCPU is procCPU with the reason when /proc/PID/stat cannot be read or parsed.
func procStatCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: fields are counted after its ")".
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return time.Duration(utime+stime) * (time.Second / 100), nil
}

// openTarget picks the server of o: the running one at o.Server (with its data directory
// o.DataDir), a child `coapca serve` (o.Spawn), or one in this process.
func openTarget(ctx context.Context, o ESTOptions, say func(string, ...any)) (*estTarget, error) {
	switch {
	case o.Server != "":
		if o.DataDir == "" {
			return nil, errors.New("bench: --server needs --data, the data directory of that server")
		}
		if _, _, err := net.SplitHostPort(o.Server); err != nil {
			return nil, fmt.Errorf("bench: --server %q: %w", o.Server, err)
		}
		d, err := datadir.Open(datadir.Options{Dir: o.DataDir, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			return nil, fmt.Errorf("bench: data directory of the server: %w", err)
		}
		say("loading the running server at %s (its data directory %s)", o.Server, o.DataDir)
		t := &estTarget{url: "coaps://" + o.Server, data: d, mode: "external " + o.Server, stop: func() {}}
		// The server holds its data directory's lock and wrote its PID there: on this machine,
		// its CPU time can be read beside the bench's own.
		switch pid, err := datadir.LockHolder(o.DataDir); {
		case err != nil:
			say("the server's CPU will not be measured: %v", err)
		case pid == 0:
			say("the server's CPU will not be measured: no process holds %s (is the server running on it?)", o.DataDir)
		default:
			if _, err := procStatCPU(pid); err != nil {
				say("the server's CPU will not be measured: process %d holds %s, but: %v", pid, o.DataDir, err)
				break
			}
			t.pid = pid
			t.mode = fmt.Sprintf("external %s, pid %d", o.Server, pid)
			say("the server is process %d (it holds %s): its CPU time is read from /proc", pid, o.DataDir)
		}
		return t, nil
	case o.Spawn:
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("bench: --spawn: %w", err)
		}
		return spawnServer(ctx, exe, o.DataDir, o.Concurrency, say, o.ServerProfileArgs()...)
	}
	s, stop, err := startServer(ctx, o.DataDir, func(cfg *config.Config) {
		cfg.Listen.CoAPS = "127.0.0.1:0"           // EST-coaps only
		cfg.DTLS.HandshakesPerSourcePerSecond = -1 // every simulated device shares 127.0.0.1
		cfg.DTLS.MaxHalfOpen = 4 * concurrencyOf(o)
	})
	if err != nil {
		return nil, err
	}
	return &estTarget{url: s.CoAPSURL(), data: s.Data(), mode: modeInProcess, stop: stop}, nil
}

func concurrencyOf(o ESTOptions) int { return max(o.Concurrency, 1) }

// spawnServer runs `exe serve` on dataDir (a temporary directory when "", removed by stop)
// with EST-coaps only on a free loopback port, the per-source handshake limit off (every
// simulated device shares 127.0.0.1) and room for 4×conc half-open handshakes, and waits until
// it completes a DTLS handshake. Its output goes to serve.log in a temporary directory, shown
// when it does not come up.
func spawnServer(ctx context.Context, exe, dataDir string, conc int, say func(string, ...any), extra ...string) (*estTarget, error) {
	work, err := os.MkdirTemp("", "coapca-bench-spawn-")
	if err != nil {
		return nil, err
	}
	cleanup := func() { os.RemoveAll(work) }
	if dataDir == "" {
		dataDir = filepath.Join(work, "data")
	}
	// The bench creates the data directory first, so that it holds the demo manufacturer CA
	// before the server starts; the server reuses everything (datadir.Open takes no lock).
	d, err := datadir.Open(datadir.Options{Dir: dataDir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		cleanup()
		return nil, err
	}
	cfgPath := filepath.Join(work, "bench.yaml")
	cfg := fmt.Sprintf("dtls:\n  handshakes_per_source_per_second: -1\n  max_half_open: %d\n", 4*conc)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		cleanup()
		return nil, err
	}
	addr, err := freeUDPPort()
	if err != nil {
		cleanup()
		return nil, err
	}
	logPath := filepath.Join(work, "serve.log")
	logf, err := os.Create(logPath)
	if err != nil {
		cleanup()
		return nil, err
	}
	cmd := exec.Command(exe, append([]string{"serve", "--config", cfgPath, "--data", dataDir, "--coaps", addr, "--coap", "off", "--log-level", "warn"}, extra...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		cleanup()
		return nil, fmt.Errorf("bench: starting %s serve: %w", exe, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		logf.Close()
		cleanup()
	}
	t := &estTarget{url: "coaps://" + addr, data: d, mode: fmt.Sprintf("child process (pid %d)", cmd.Process.Pid), stop: stop, pid: cmd.Process.Pid}
	say("started %s serve as pid %d on %s, waiting for it", exe, cmd.Process.Pid, addr)
	if err := waitReady(ctx, t, exited); err != nil {
		stop()
		out, _ := os.ReadFile(logPath)
		return nil, fmt.Errorf("bench: the child server did not come up: %w\n%s", err, out)
	}
	return t, nil
}

// ServerProfileArgs are the `serve` flags that make a spawned server write the profiles o
// asks for.
func (o ESTOptions) ServerProfileArgs() []string {
	var a []string
	if o.ServerCPUProfile != "" {
		a = append(a, "--cpuprofile", o.ServerCPUProfile)
	}
	if o.ServerMemProfile != "" {
		a = append(a, "--memprofile", o.ServerMemProfile)
	}
	if o.ServerTrace != "" {
		a = append(a, "--trace", o.ServerTrace)
	}
	return a
}

// freeUDPPort returns a loopback UDP address that was free a moment ago.
func freeUDPPort() (string, error) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer pc.Close()
	return pc.LocalAddr().String(), nil
}

// waitReady polls t until a DTLS session with the demo device's certificate is established,
// the child exits, or 60 s pass.
func waitReady(ctx context.Context, t *estTarget, exited chan error, tweak ...func(*dtlsconn.ClientConfig)) error {
	roots := x509.NewCertPool()
	roots.AddCert(t.data.Root)
	cfg := &dtlsconn.ClientConfig{Certificates: []tls.Certificate{t.data.DeviceCertificate()}, RootCAs: roots, ServerName: "127.0.0.1"}
	for _, f := range tweak {
		f(cfg)
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
		c, err := coap.Dial(dctx, t.url, coap.ClientOptions{DTLS: cfg})
		dcancel()
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case werr := <-exited:
			exited <- werr // for stop
			return fmt.Errorf("it exited: %v", werr)
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-tick.C:
		}
	}
}
