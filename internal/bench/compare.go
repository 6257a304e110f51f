package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"coapca/coap"
	"coapca/coap/dtlsconn"
	"coapca/internal/datadir"
)

// CompareOptions configure Compare.
type CompareOptions struct {
	Concurrency int
	Duration    time.Duration
	// Devices enroll per EST front door (EST-coaps, EST-oscore pre-shared, EST-oscore+EDHOC);
	// WireSamples sequential sessions or enrollments are counted for bytes on the wire.
	Devices, WireSamples, BlockSize int
	// LibCoAP is libcoap's example server (Debian libcoap3-bin); "" looks up coap-server-openssl.
	LibCoAP string
	JSON    string
}

// ErrNoPeer is returned when the external peer of the comparison is missing and CI=true
// (outside CI the comparison goes on without it and says so).
var ErrNoPeer = errors.New("bench: peer program not installed")

// Compare measures, on loopback in one run: the floors (ECDSA P-256 signs, raw pion/dtls and
// crypto/tls handshakes), coapca's CoAP-over-DTLS endpoint next to libcoap's
// coap-server-openssl (a DTLS handshake and one GET per session; GETs over kept sessions; bytes
// and datagrams per session), all driven by the same client; and the EST front doors
// (EST-coaps RFC 9148, EST-oscore with a pre-shared context and keyed by EDHOC, RFC 8613/9528/
// 9668): enrollments/s, bytes and datagrams on the wire per enrollment.
func Compare(ctx context.Context, o CompareOptions, w, progress io.Writer) error {
	say := func(format string, a ...any) { fmt.Fprintf(progress, "bench: "+format+"\n", a...) }
	dir, err := os.MkdirTemp("", "coapca-bench-compare-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	d, err := datadir.Open(datadir.Options{Dir: filepath.Join(dir, "data"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	rep := Report{Kind: "compare", Time: time.Now().UTC(), Machine: thisMachine(), Devices: o.Devices, Concurrency: o.Concurrency,
		Server: "in-process (coapca), child process (libcoap)", Floors: map[string]float64{}}

	say("floor: ECDSA P-256 (%v each)", o.Duration/2)
	rep.Floors["ecdsa_p256_sign"], rep.Floors["ecdsa_p256_verify"] = ecdsaFloor(o.Duration / 2)
	say("floor: raw pion DTLS handshakes (%d concurrent, %v)", o.Concurrency, o.Duration)
	if rep.Floors["pion_dtls_handshake"], err = rawHandshakeFloor(ctx, d.ServerCertificate(), d.DeviceCertificate(), d.ManufacturerCA, d.Root, o.Concurrency, o.Duration); err != nil {
		return fmt.Errorf("raw pion floor: %w", err)
	}
	say("floor: raw crypto/tls handshakes (%d concurrent, %v)", o.Concurrency, o.Duration)
	if rep.Floors["crypto_tls_handshake"], err = rawTLSHandshakeFloor(ctx, d.ServerCertificate(), d.DeviceCertificate(), d.ManufacturerCA, d.Root, o.Concurrency, o.Duration); err != nil {
		return fmt.Errorf("raw crypto/tls floor: %w", err)
	}

	// coapca's CoAP endpoint over DTLS, /ping answering 2.05 (the EST resources are measured
	// below, through the whole server).
	srv, l, err := pingServer(d, 4*o.Concurrency, []dtls.CipherSuiteID{dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256})
	if err != nil {
		return err
	}
	defer srv.Close()

	peers := []struct{ name, addr, path string }{{"coapca", l.Addr().String(), "/ping"}}
	lib, stopLib, err := startLibCoAP(ctx, o.LibCoAP, dir, d, say)
	switch {
	case err == nil:
		defer stopLib()
		peers = append(peers, struct{ name, addr, path string }{"libcoap", lib, "/"})
	case errors.Is(err, ErrNoPeer) && os.Getenv("CI") != "true":
		say("SKIPPING libcoap: %v", err)
	default:
		return err
	}

	// libcoap sends the leaf alone (it loads the first certificate of -c): the client trusts
	// the issuing CA directly, for both servers alike.
	roots := x509.NewCertPool()
	roots.AddCert(d.Root)
	roots.AddCert(d.IssuingCA)
	// AES-128-GCM first: OpenSSL leaves the CCM_8 suites out of its default list, so libcoap
	// would not take CCM_8; both servers negotiate the same suite.
	dtlsCfg := &dtlsconn.ClientConfig{Certificates: []tls.Certificate{d.DeviceCertificate()}, RootCAs: roots, ServerName: "127.0.0.1",
		CipherSuites: []dtls.CipherSuiteID{dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}}
	get := func(c *coap.Client, path string) error {
		resp, err := c.Do(ctx, &coap.ClientRequest{Method: codes.GET, Path: path})
		if err != nil {
			return err
		}
		if resp.Code != codes.Content {
			return fmt.Errorf("GET %s: %v", path, resp.Code)
		}
		return nil
	}
	session := func(addr, path string) error {
		c, err := coap.Dial(ctx, "coaps://"+addr, coap.ClientOptions{DTLS: dtlsCfg})
		if err != nil {
			return err
		}
		defer c.Close()
		return get(c, path)
	}
	for _, p := range peers {
		say("%s: DTLS handshake + one GET per session (%d concurrent, %v)", p.name, o.Concurrency, o.Duration)
		hs, err := loop(ctx, o.Concurrency, o.Duration, func(int) error { return session(p.addr, p.path) })
		if err != nil {
			return fmt.Errorf("%s handshake+GET: %w", p.name, err)
		}
		bytes, dgrams, err := countWire(p.addr, max(o.WireSamples, 1), func(addr string) error { return session(addr, p.path) })
		if err != nil {
			return fmt.Errorf("%s wire: %w", p.name, err)
		}
		rep.Results = append(rep.Results, Result{Name: p.name + " handshake+GET", PerSecond: hs, Floor: "pion_dtls_handshake",
			Ratio: ratio(hs, rep.Floors["pion_dtls_handshake"]), Bytes: bytes, Datagrams: dgrams})

		say("%s: GETs over %d kept DTLS sessions (%v)", p.name, o.Concurrency, o.Duration)
		cs := make([]*coap.Client, o.Concurrency)
		for i := range cs {
			if cs[i], err = coap.Dial(ctx, "coaps://"+p.addr, coap.ClientOptions{DTLS: dtlsCfg}); err != nil {
				return fmt.Errorf("%s session: %w", p.name, err)
			}
		}
		gets, err := loop(ctx, o.Concurrency, o.Duration, func(i int) error { return get(cs[i], p.path) })
		for _, c := range cs {
			c.Close()
		}
		if err != nil {
			return fmt.Errorf("%s GETs: %w", p.name, err)
		}
		rep.Results = append(rep.Results, Result{Name: p.name + " GET (kept session)", PerSecond: gets, Floor: "ecdsa_p256_sign",
			Ratio: ratio(gets, rep.Floors["ecdsa_p256_sign"])})
	}

	say("EST front doors: %d enrollments each (%d concurrent), %d counted on the wire", o.Devices, o.Concurrency, o.WireSamples)
	fd, _, err := frontDoors(ctx, ESTOptions{Devices: o.Devices, Concurrency: o.Concurrency, BlockSize: o.BlockSize,
		OSCORE: true, EDHOC: true, WireSamples: o.WireSamples}, progress)
	if err != nil {
		return fmt.Errorf("EST front doors: %w", err)
	}
	for _, r := range fd {
		rep.Results = append(rep.Results, Result{Name: "enroll " + r.mode, PerSecond: r.perSec, Floor: "pion_dtls_handshake",
			Ratio: ratio(r.perSec, rep.Floors["pion_dtls_handshake"]), P50: ms(r.lat.pct(.5)), P90: ms(r.lat.pct(.9)), P99: ms(r.lat.pct(.99)),
			Errors: int64(r.errs), Bytes: r.bytes, Datagrams: r.datagrams})
	}

	printReport(w, rep)
	if o.JSON != "" {
		return writeJSON(o.JSON, rep)
	}
	return nil
}

// gcmFirst makes a client offer TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 first and trust the
// issuing CA directly (libcoap sends its leaf alone).
func gcmFirst(issuing *x509.Certificate) func(*dtlsconn.ClientConfig) {
	return func(c *dtlsconn.ClientConfig) {
		c.CipherSuites = []dtls.CipherSuiteID{dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}
		c.RootCAs.AddCert(issuing)
	}
}

// countWire runs n sequential sessions f through a counting UDP relay in front of target and
// returns UDP payload bytes and datagrams per session (both directions).
func countWire(target string, n int, f func(addr string) error) (bytes, datagrams float64, err error) {
	relay, err := newUDPRelay(target)
	if err != nil {
		return 0, 0, err
	}
	ok := 0
	for range n {
		if err := f(relay.addr()); err == nil {
			ok++
		}
	}
	relay.close()
	if ok == 0 {
		return 0, 0, errors.New("no session through the relay succeeded")
	}
	return float64(relay.bytes.Load()) / float64(ok), float64(relay.datagrams.Load()) / float64(ok), nil
}

// startLibCoAP runs libcoap's coap-server-openssl on loopback with the server certificate of d
// (leaf and issuing CA) and client certificates verified against the demo manufacturer CA,
// as coapca's listener does, and returns its DTLS address. libcoap listens for DTLS on the
// UDP port + 1.
func startLibCoAP(ctx context.Context, prog, dir string, d *datadir.Data, say func(string, ...any)) (addr string, stop func(), err error) {
	if prog == "" {
		prog = "coap-server-openssl"
	}
	path, err := exec.LookPath(prog)
	if err != nil {
		return "", nil, fmt.Errorf("%w: %s (Debian package libcoap3-bin): %v", ErrNoPeer, prog, err)
	}
	certFile, keyFile, caFile := filepath.Join(dir, "libcoap-cert.pem"), filepath.Join(dir, "libcoap-key.pem"), filepath.Join(dir, "libcoap-ca.pem")
	var chain []byte
	for _, der := range d.ServerCertificate().Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(d.ServerKey)
	if err != nil {
		return "", nil, fmt.Errorf("libcoap: server key: %w", err)
	}
	for _, f := range []struct {
		name string
		b    []byte
	}{
		{certFile, chain},
		{keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})},
		{caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: d.ManufacturerCA.Raw})},
	} {
		if err := os.WriteFile(f.name, f.b, 0o600); err != nil {
			return "", nil, err
		}
	}
	// Two free consecutive ports: CoAP on p, DTLS on p+1.
	var port int
	for range 20 {
		a, err := freeUDPPort()
		if err != nil {
			return "", nil, err
		}
		_, ps, _ := net.SplitHostPort(a)
		p, _ := strconv.Atoi(ps)
		if p >= 65535 {
			continue
		}
		if pc, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+1))); err == nil {
			pc.Close()
			port = p
			break
		}
	}
	if port == 0 {
		return "", nil, errors.New("libcoap: no two consecutive free UDP ports")
	}
	cmd := exec.Command(path, "-A", "127.0.0.1", "-p", strconv.Itoa(port), "-c", certFile, "-j", keyFile, "-R", caFile, "-v", "4")
	logPath := filepath.Join(dir, "libcoap.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return "", nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return "", nil, fmt.Errorf("libcoap: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop = func() {
		_ = cmd.Process.Kill()
		<-exited
		logf.Close()
	}
	addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port+1))
	say("started %s as pid %d, DTLS on %s", path, cmd.Process.Pid, addr)
	t := &estTarget{url: "coaps://" + addr, data: d}
	if err := waitReady(ctx, t, exited, gcmFirst(d.IssuingCA)); err != nil {
		stop()
		out, _ := os.ReadFile(logPath)
		return "", nil, fmt.Errorf("libcoap did not come up: %w\n%s", err, out)
	}
	return addr, stop, nil
}

// printReport prints a Report as a table: every result with its ratio to its floor.
func printReport(w io.Writer, r Report) {
	fmt.Fprintf(w, "coapca bench %s: %d concurrent, loopback, %s, %d CPUs (%s)\n\n", r.Kind, r.Concurrency, r.Machine.OS, r.Machine.NumCPU, r.Machine.CPU)
	fmt.Fprintln(w, "floors (same run):")
	for _, k := range []string{"ecdsa_p256_sign", "ecdsa_p256_verify", "pion_dtls_handshake", "crypto_tls_handshake"} {
		if v, ok := r.Floors[k]; ok {
			fmt.Fprintf(w, "  %-24s %10.0f/s\n", k, v)
		}
	}
	fmt.Fprintf(w, "\n%-40s %10s %8s %-22s %9s %9s %10s %7s %7s\n", "measure", "per s", "ratio", "floor", "p50 ms", "p99 ms", "bytes/op", "dgrams", "errors")
	for _, x := range r.Results {
		fmt.Fprintf(w, "%-40s %10.0f %8.3f %-22s %9.2f %9.2f %10.0f %7.1f %7d\n", x.Name, x.PerSecond, x.Ratio, x.Floor, x.P50, x.P99, x.Bytes, x.Datagrams, x.Errors)
	}
}
