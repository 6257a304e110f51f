package bench

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v3"
	pionelliptic "github.com/pion/dtls/v3/pkg/crypto/elliptic"
	"github.com/pion/logging"

	"coapca/internal/config"
	"coapca/internal/datadir"
	"coapca/internal/gcpace"
)

// SessionsOptions configure Sessions.
type SessionsOptions struct {
	// Sessions is how many DTLS sessions are opened and left idle.
	Sessions int
	// Steps: memory is measured after every Sessions/Steps sessions (at least once, at the end).
	Steps int
	// Server is the coaps address of a running server ("host:port"); "" starts the server
	// as a child process of this program (Exe) and measures it exactly (GC, then heap and
	// /proc RSS).
	Server string
	// Metrics is the Prometheus endpoint (URL) of the running server in Server mode; "" = no
	// server memory figures.
	Metrics string
	// DataDir is the server's data directory: its demo device certificate is the client
	// identity. "" = a temporary one (child mode only).
	DataDir string
	// Sources is the number of source addresses (127.1.x.y) the sessions come from.
	Sources int
	// RatePerSource paces handshakes per source address (per second); 0 = unpaced (the
	// child server's per-source limit is then raised explicitly).
	RatePerSource float64
	// Concurrency is the number of handshakes in flight.
	Concurrency int
	// HeapProfile, in child mode, is where the server's heap profile is written once every
	// session is open (go tool pprof).
	HeapProfile string
	// Idle is how long the sessions are left idle before each measurement (the server
	// parks a session after 10 s without a record).
	Idle time.Duration
	// ParkAfter, in child mode, is the server's dtls.park_after (0 = its default; negative =
	// never park, to measure what parking saves).
	ParkAfter time.Duration
	// Exe is the coapca executable for the child server (default: this program).
	Exe string
	// JSON, when set, also writes the per-session figures to this file for the plot program
	// (internal/bench/plot): {"kind":"sessions","points":[{sessions, heap_per_session,
	// rss_per_session}]}.
	JSON string
}

// sessionsPoint is one measurement of `bench sessions --json`.
type sessionsPoint struct {
	Sessions       int     `json:"sessions"`
	HeapPerSession float64 `json:"heap_per_session"`
	RSSPerSession  float64 `json:"rss_per_session"`
}

// memSample is what the child server reports after a forced GC.
type memSample struct {
	HeapInuse  uint64 `json:"heap_inuse"`
	HeapAlloc  uint64 `json:"heap_alloc"`
	StackInuse uint64 `json:"stack_inuse"`
	Sys        uint64 `json:"sys"`
	RSS        uint64 `json:"rss"`
	// RSSReleased is the RSS once the runtime returned every free page to the OS
	// (debug.FreeOSMemory): what the process needs, without the peak it went through.
	RSSReleased uint64 `json:"rss_released"`
	Goroutines  int    `json:"goroutines"`
	Sessions    int    `json:"sessions"` // CoAP sessions over DTLS held by the server
	FDs         int    `json:"fds"`      // open file descriptors (/proc/self/fd)
	DBBytes     int64  `json:"db_bytes"` // the SQLite database with its WAL and shared memory files
}

// Sessions opens o.Sessions real DTLS sessions (full handshake with the demo device
// certificate, then one confirmable GET) from this process against a server in another
// process, leaves them idle, and prints the server's heap and RSS per session.
func Sessions(ctx context.Context, o SessionsOptions, w, progress io.Writer) error {
	say := func(format string, a ...any) { fmt.Fprintf(progress, "bench: "+format+"\n", a...) }
	if o.Steps < 1 {
		o.Steps = 1
	}
	if o.Sources < 1 {
		o.Sources = 1
	}
	if o.Concurrency < 1 {
		o.Concurrency = 1
	}
	var (
		measure     func() (memSample, error)
		heapProfile func(string) error
		addr        = o.Server
		dataDir     = o.DataDir
	)
	if addr == "" {
		if dataDir == "" {
			tmp, err := os.MkdirTemp("", "coapca-bench-sessions-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(tmp)
			dataDir = tmp
		}
		child, err := startChildServer(ctx, o, dataDir)
		if err != nil {
			return err
		}
		defer child.stop()
		addr, measure, heapProfile = child.addr, child.measure, child.heapProfile
		if o.RatePerSource == 0 {
			say("child server: per-source handshake limit raised to unlimited (dtls.handshakes_per_source_per_second: -1), idle timeout 1h")
		}
	} else {
		if dataDir == "" {
			return errors.New("bench sessions: --server needs --data (the server's data directory, for the demo device certificate)")
		}
		if o.Metrics != "" {
			measure = func() (memSample, error) { return scrapeMetrics(ctx, o.Metrics) }
		}
	}
	d, err := datadir.Open(datadir.Options{Dir: dataDir})
	if err != nil {
		return fmt.Errorf("bench sessions: data directory: %w", err)
	}
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return fmt.Errorf("bench sessions: server address: %w", err)
	}
	dev := d.DeviceCertificate()

	var base memSample
	if measure != nil {
		if base, err = measure(); err != nil {
			return fmt.Errorf("bench sessions: baseline: %w", err)
		}
	}
	park := "server default"
	if o.ParkAfter < 0 {
		park = "never (dtls.park_after < 0)"
	} else if o.ParkAfter > 0 {
		park = o.ParkAfter.String()
	}
	fmt.Fprintf(w, "coapca bench sessions: %d DTLS sessions (full handshake, ECDHE-ECDSA P-256, client certificate, CCM_8, one CON GET each, then idle) from %d source addresses, %d handshakes at a time; parking: %s\n\n",
		o.Sessions, o.Sources, o.Concurrency, park)
	if measure != nil {
		fmt.Fprintf(w, "baseline (no session): live heap %s  heap in use %s  stacks %s  RSS %s  goroutines %d\n", kb(base.HeapAlloc), kb(base.HeapInuse), kb(base.StackInuse), kb(base.RSS), base.Goroutines)
		fmt.Fprintf(w, "per session: (measure − baseline) ÷ sessions held; live heap = bytes of live objects after GC, heap in use = their spans (with fragmentation)\n\n")
		fmt.Fprintf(w, "RSS = as the process stands (with the peak of the handshakes it went through); RSS rel. = after returning free pages to the OS (debug.FreeOSMemory)\n\n")
		fmt.Fprintf(w, "%9s %9s %10s %10s %10s %10s %12s %12s %12s %12s %10s\n", "sessions", "held", "live/sess", "inuse/sess", "stack/sess", "RSS/sess", "RSS rel/sess", "live heap", "RSS", "RSS rel.", "goroutines")
	}
	ports := newPortAllocator(o.Sources)
	var opened, failed atomic.Int64
	start := time.Now()
	done := 0
	var points []sessionsPoint
	for step := 1; step <= o.Steps; step++ {
		target := o.Sessions * step / o.Steps
		n := target - done
		if err := openSessions(ctx, n, o, raddr, dev, ports, &opened, &failed, say); err != nil {
			return err
		}
		done = target
		say("%d sessions open (%d failed) after %v", opened.Load(), failed.Load(), time.Since(start).Round(time.Millisecond))
		if measure == nil {
			continue
		}
		if o.Idle > 0 {
			say("idle for %v", o.Idle)
			select {
			case <-time.After(o.Idle):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		m, err := measure()
		if err != nil {
			return fmt.Errorf("bench sessions: measure: %w", err)
		}
		held := m.Sessions
		if held <= 0 {
			held = int(opened.Load())
		}
		if held > 0 && m.HeapAlloc > 0 {
			points = append(points, sessionsPoint{Sessions: held,
				HeapPerSession: (float64(m.HeapAlloc) - float64(base.HeapAlloc)) / float64(held),
				RSSPerSession:  (float64(m.RSS) - float64(base.RSS)) / float64(held)})
		}
		per := func(a, b uint64) string {
			if held == 0 || a == 0 { // a == 0: not measured (the metrics endpoint has no released RSS)
				return "-"
			}
			return fmt.Sprintf("%.0f B", (float64(a)-float64(b))/float64(held))
		}
		fmt.Fprintf(w, "%9d %9d %10s %10s %10s %10s %12s %12s %12s %12s %10d\n", opened.Load(), m.Sessions, per(m.HeapAlloc, base.HeapAlloc),
			per(m.HeapInuse, base.HeapInuse), per(m.StackInuse, base.StackInuse), per(m.RSS, base.RSS), per(m.RSSReleased, base.RSSReleased),
			kb(m.HeapAlloc), kb(m.RSS), orDash(m.RSSReleased), m.Goroutines)
	}
	if heapProfile != nil && o.HeapProfile != "" {
		abs, err := filepath.Abs(o.HeapProfile)
		if err != nil {
			return err
		}
		if err := heapProfile(abs); err != nil {
			return err
		}
		say("server heap profile written to %s", abs)
	}
	if o.JSON != "" {
		b, err := json.MarshalIndent(struct {
			Kind   string          `json:"kind"`
			Points []sessionsPoint `json:"points"`
		}{"sessions", points}, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(o.JSON, append(b, '\n'), 0o644); err != nil {
			return fmt.Errorf("bench sessions: %w", err)
		}
	}
	fmt.Fprintf(w, "\nopened %d sessions in %v (%.0f/s), %d failed\n", opened.Load(), time.Since(start).Round(time.Millisecond),
		float64(opened.Load())/time.Since(start).Seconds(), failed.Load())
	if measure == nil {
		fmt.Fprintln(w, "(no server memory figures: give --metrics with --server)")
	}
	return nil
}

func orDash(b uint64) string {
	if b == 0 {
		return "-"
	}
	return kb(b)
}

func kb(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// portAllocator hands out source address:port pairs that are never reused in a run: the
// server keeps a session per address:port, and a reused pair would replace the idle session
// with a new handshake (RFC 6347 §4.2.8) instead of adding one.
type portAllocator struct {
	mu   sync.Mutex
	ips  []netip.Addr
	next []uint16
	turn int
}

func newPortAllocator(n int) *portAllocator {
	p := &portAllocator{}
	for i := range n {
		p.ips = append(p.ips, netip.AddrFrom4([4]byte{127, 1, byte((i + 1) >> 8), byte(i + 1)}))
		p.next = append(p.next, 10000)
	}
	return p
}

func (p *portAllocator) get() (netip.AddrPort, int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for range len(p.ips) {
		i := p.turn % len(p.ips)
		p.turn++
		if p.next[i] < 65000 {
			port := p.next[i]
			p.next[i]++
			return netip.AddrPortFrom(p.ips[i], port), i, nil
		}
	}
	return netip.AddrPort{}, 0, errors.New("bench sessions: out of source ports: raise --sources")
}

// openSessions opens n sessions with o.Concurrency in flight and leaves each idle on the
// server: the client socket is closed without close_notify, so only the server keeps state.
func openSessions(ctx context.Context, n int, o SessionsOptions, raddr *net.UDPAddr, dev tls.Certificate,
	ports *portAllocator, opened, failed *atomic.Int64, say func(string, ...any)) error {
	var left atomic.Int64
	left.Store(int64(n))
	var pace []*pacer
	if o.RatePerSource > 0 {
		for range o.Sources {
			pace = append(pace, &pacer{every: time.Duration(float64(time.Second) / o.RatePerSource)})
		}
	}
	var firstErr sync.Once
	var wg sync.WaitGroup
	for range o.Concurrency {
		wg.Go(func() {
			for left.Add(-1) >= 0 && ctx.Err() == nil {
				src, idx, err := ports.get()
				if err != nil {
					firstErr.Do(func() { say("%v", err) })
					failed.Add(1)
					continue
				}
				if pace != nil {
					pace[idx].wait(ctx)
				}
				if err := oneSession(ctx, src, raddr, dev); err != nil {
					failed.Add(1)
					if errors.Is(err, errBind) {
						continue // port taken by someone else on this machine: skip it
					}
					firstErr.Do(func() { say("first session error: %v", err) })
					continue
				}
				opened.Add(1)
			}
		})
	}
	wg.Wait()
	return ctx.Err()
}

type pacer struct {
	mu   sync.Mutex
	next time.Time
	// every is the interval between two handshakes from one source.
	every time.Duration
}

func (p *pacer) wait(ctx context.Context) {
	p.mu.Lock()
	now := time.Now()
	at := now
	if p.next.After(now) {
		at = p.next
	}
	p.next = at.Add(p.every)
	p.mu.Unlock()
	if d := at.Sub(now); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}
}

var errBind = errors.New("bind source address")

// wellKnownGET is a confirmable GET /.well-known/core?rt=bench (RFC 7252 §3, RFC 6690 §4.1)
// with a 4-byte token; the MID and token are filled in per session.
func wellKnownGET() []byte {
	b := []byte{0x44, 0x01, 0, 0, 0, 0, 0, 0}
	b = append(b, 0xbb)
	b = append(b, ".well-known"...)
	b = append(b, 0x04)
	b = append(b, "core"...)
	b = append(b, 0x48) // Uri-Query (15 = 11 + 4), length 8
	b = append(b, "rt=bench"...)
	return b
}

func oneSession(ctx context.Context, src netip.AddrPort, raddr *net.UDPAddr, dev tls.Certificate) error {
	uc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(src))
	if err != nil {
		return fmt.Errorf("%w %v: %w", errBind, src, err)
	}
	// Closing the socket first makes pion's close_notify go nowhere: the server keeps the
	// session until its idle timeout, which is what is measured.
	defer uc.Close()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	dc, err := dtls.ClientWithOptions(uc, raddr,
		dtls.WithCertificates(dev),
		dtls.WithInsecureSkipVerify(true), // the load generator measures the server, not its own trust
		dtls.WithCipherSuites(dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8),
		dtls.WithExtendedMasterSecret(dtls.RequireExtendedMasterSecret),
		dtls.WithEllipticCurves(pionelliptic.P256),
		dtls.WithLoggerFactory(quietPion()),
	)
	if err != nil {
		return fmt.Errorf("dtls client: %w", err)
	}
	defer func() { uc.Close(); _ = dc.Close() }()
	if err := dc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	req := wellKnownGET()
	_, _ = rand.Read(req[2:8])
	if _, err := dc.Write(req); err != nil {
		return fmt.Errorf("GET: %w", err)
	}
	buf := make([]byte, 2048)
	for {
		_ = dc.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := dc.Read(buf)
		if err != nil {
			return fmt.Errorf("GET response: %w", err)
		}
		// The piggybacked answer: an ACK (type 2) with our MID.
		if n >= 4 && buf[0]>>4&3 == 2 && binary.BigEndian.Uint16(buf[2:4]) == binary.BigEndian.Uint16(req[2:4]) {
			if buf[1]>>5 >= 4 {
				return fmt.Errorf("GET /.well-known/core: code %d.%02d", buf[1]>>5, buf[1]&0x1f)
			}
			return nil
		}
	}
}

// child is the server started by Sessions in its own process.
type child struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	out   *bufio.Reader
	addr  string
	mu    sync.Mutex
	stopO sync.Once
}

func startChildServer(ctx context.Context, o SessionsOptions, dataDir string, extra ...string) (*child, error) {
	exe := o.Exe
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("bench sessions: %w", err)
		}
	}
	args := []string{"bench", "sessions-server", "--data", dataDir, "--max-sessions", strconv.Itoa(o.Sessions + 1000)}
	if o.RatePerSource > 0 {
		args = append(args, "--rate-per-source", "20") // the server's default limit, kept
	}
	if o.ParkAfter != 0 {
		args = append(args, "--park-after", o.ParkAfter.String())
	}
	args = append(args, extra...)
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	outp, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench sessions: start server: %w", err)
	}
	c := &child{cmd: cmd, in: in, out: bufio.NewReader(outp)}
	line, err := c.out.ReadString('\n')
	if err != nil {
		c.stop()
		return nil, fmt.Errorf("bench sessions: server did not start: %w", err)
	}
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "ready ")
	if !ok {
		c.stop()
		return nil, fmt.Errorf("bench sessions: server said %q", line)
	}
	c.addr = addr
	return c, nil
}

func (c *child) measure() (memSample, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var m memSample
	if _, err := io.WriteString(c.in, "measure\n"); err != nil {
		return m, err
	}
	line, err := c.out.ReadString('\n')
	if err != nil {
		return m, err
	}
	return m, json.Unmarshal([]byte(line), &m)
}

func (c *child) heapProfile(path string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := fmt.Fprintf(c.in, "heap %s\n", path); err != nil {
		return err
	}
	line, err := c.out.ReadString('\n')
	if err != nil {
		return err
	}
	if msg, _ := strconv.Unquote(strings.TrimSpace(line)); msg != "<nil>" {
		return fmt.Errorf("heap profile: %s", msg)
	}
	return nil
}

func (c *child) stop() {
	c.stopO.Do(func() {
		_ = c.in.Close() // the server exits at the end of its input
		_ = c.cmd.Wait()
	})
}

// SessionsServerOptions configure SessionsServer.
type SessionsServerOptions struct {
	DataDir       string
	MaxSessions   int
	RatePerSource float64       // 0 = unlimited
	IdleTimeout   time.Duration // DTLS idle timeout; 0 = 1 h
	ParkAfter     time.Duration // dtls.park_after; 0 = default
}

// SessionsServer is the child process of Sessions: the server that `coapca serve` runs
// (EST-coaps listener only, on 127.0.0.1, its garbage collector paced as `coapca serve`
// paces it by default), with the session caps raised to MaxSessions and the idle timeout at
// 1 h. It prints "ready ADDR", then answers every "measure" line on in with a JSON memSample
// taken after a forced GC; it stops at the end of in.
func SessionsServer(ctx context.Context, o SessionsServerOptions, in io.Reader, out io.Writer) error {
	defer gcpace.Start(config.DefaultGCHeadroomMiB<<20, os.Getenv("GOGC"), nil).Stop()
	s, stop, err := startServer(ctx, o.DataDir, func(cfg *config.Config) {
		cfg.Listen.CoAPS = "127.0.0.1:0"
		cfg.DTLS.HandshakesPerSourcePerSecond = -1
		if o.RatePerSource > 0 {
			cfg.DTLS.HandshakesPerSourcePerSecond = o.RatePerSource
		}
		cfg.DTLS.MaxSessions = o.MaxSessions
		cfg.CoAP.MaxSessions = o.MaxSessions
		cfg.DTLS.IdleTimeout = time.Hour
		if o.IdleTimeout > 0 {
			cfg.DTLS.IdleTimeout = o.IdleTimeout
		}
		cfg.DTLS.ParkAfter = o.ParkAfter
	})
	if err != nil {
		return err
	}
	defer stop()
	fmt.Fprintf(out, "ready %s\n", strings.TrimPrefix(s.CoAPSURL(), "coaps://"))
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		if path, ok := strings.CutPrefix(sc.Text(), "heap "); ok {
			err := writeHeapProfile(path)
			fmt.Fprintf(out, "%q\n", fmt.Sprint(err))
			continue
		}
		if sc.Text() != "measure" {
			continue
		}
		m := sampleSelf()
		debug.FreeOSMemory()
		m.RSSReleased = procRSS()
		m.Sessions = s.CoAPSStats().ActiveSessions
		m.FDs = countFDs()
		m.DBBytes = dbBytes(s.Data().Paths.DB)
		b, _ := json.Marshal(m)
		fmt.Fprintf(out, "%s\n", b)
	}
	return sc.Err()
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// sampleSelf forces two GCs (the second frees what the first's finalizers released) and
// reads the Go heap and the process RSS (/proc/self/status, Linux; 0 elsewhere).
func sampleSelf() memSample {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memSample{HeapInuse: ms.HeapInuse, HeapAlloc: ms.HeapAlloc, StackInuse: ms.StackInuse, Sys: ms.Sys,
		RSS: procRSS(), Goroutines: runtime.NumGoroutine()}
}

// countFDs counts this process's open file descriptors (Linux; -1 elsewhere).
func countFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

// dbBytes is the size of the SQLite database at path with its -wal and -shm files.
func dbBytes(path string) int64 {
	var n int64
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if fi, err := os.Stat(p); err == nil {
			n += fi.Size()
		}
	}
	return n
}

func procRSS() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) >= 1 {
				n, _ := strconv.ParseUint(f[0], 10, 64)
				return n * 1024
			}
		}
	}
	return 0
}

// scrapeMetrics reads a running server's memory from its Prometheus endpoint. The Go heap
// there includes garbage not yet collected, so it is an upper bound.
func scrapeMetrics(ctx context.Context, url string) (memSample, error) {
	var m memSample
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return m, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return m, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return m, fmt.Errorf("metrics: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "go_memstats_heap_inuse_bytes":
			m.HeapInuse = uint64(v)
		case "go_memstats_heap_alloc_bytes":
			m.HeapAlloc = uint64(v)
		case "go_memstats_stack_inuse_bytes":
			m.StackInuse = uint64(v)
		case "process_resident_memory_bytes":
			m.RSS = uint64(v)
		case "go_goroutines":
			m.Goroutines = int(v)
		case "coapca_dtls_sessions":
			m.Sessions = int(v)
		}
	}
	return m, sc.Err()
}

func quietPion() logging.LoggerFactory {
	f := logging.NewDefaultLoggerFactory()
	f.DefaultLogLevel = logging.LogLevelDisabled
	f.ScopeLevels = nil
	return f
}
