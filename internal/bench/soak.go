package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"coapca/client"
	"coapca/coap"
	"coapca/coap/dtlsconn"
	"coapca/internal/datadir"
)

// SoakOptions configure Soak.
type SoakOptions struct {
	// Devices enroll (/sen over a new DTLS session with their IDevID) and then re-enroll
	// (/sren over a new session with the certificate they got).
	Devices     int
	Concurrency int
	// Abandon is how many devices leave their re-enrollment session open and silent (no
	// close_notify): the server must evict them after IdleTimeout.
	Abandon int
	// IdleTimeout is the server's DTLS idle timeout (dtls.idle_timeout).
	IdleTimeout time.Duration
	// Interval between two samples of the server; Settle is how long sampling goes on after
	// the last device finished (default 2×IdleTimeout + 15 s).
	Interval, Settle time.Duration
	// DataDir is the server's data directory ("" = a temporary one).
	DataDir string
	// Exe is the coapca executable for the child server (default: this program).
	Exe string
}

// Soak enrolls and re-enrolls o.Devices devices through the real server, run as a child
// process (SQLite, fsync'd), and prints the server's memory, goroutines, file descriptors,
// database size and sessions every o.Interval, during the load and for o.Settle after it:
// they must come back flat (nothing leaks), and the abandoned sessions must be evicted by the
// idle timeout.
func Soak(ctx context.Context, o SoakOptions, w, progress io.Writer) error {
	say := func(format string, a ...any) { fmt.Fprintf(progress, "bench: "+format+"\n", a...) }
	o.Concurrency = max(o.Concurrency, 1)
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 30 * time.Second
	}
	if o.Interval <= 0 {
		o.Interval = 5 * time.Second
	}
	if o.Settle <= 0 {
		o.Settle = 2*o.IdleTimeout + 15*time.Second
	}
	dataDir := o.DataDir
	if dataDir == "" {
		tmp, err := os.MkdirTemp("", "coapca-bench-soak-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dataDir = tmp
	}
	ch, err := startChildServer(ctx, SessionsOptions{Sessions: o.Concurrency + o.Abandon, Exe: o.Exe}, dataDir,
		"--idle-timeout", o.IdleTimeout.String())
	if err != nil {
		return err
	}
	defer ch.stop()
	d, err := datadir.Open(datadir.Options{Dir: dataDir})
	if err != nil {
		return fmt.Errorf("bench soak: data directory: %w", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(d.Root)
	url := "coaps://" + ch.addr
	dial := func(ctx context.Context, id tls.Certificate) (*coap.Client, error) {
		return coap.Dial(ctx, url, coap.ClientOptions{BlockSize: 1024, DTLS: &dtlsconn.ClientConfig{
			Certificates: []tls.Certificate{id}, RootCAs: roots, ServerName: "127.0.0.1"}})
	}

	fmt.Fprintf(w, "coapca bench soak: %d devices enroll (new DTLS session, /sen) then re-enroll (new session with the new certificate, /sren), %d at a time;\n", o.Devices, o.Concurrency)
	fmt.Fprintf(w, "%d of them leave their last session open and silent; server: SQLite fsync'd, dtls.idle_timeout %v\n\n", min(o.Abandon, o.Devices), o.IdleTimeout)
	fmt.Fprintf(w, "%8s %8s %8s %6s %11s %11s %11s %6s %5s %10s %8s\n", "time", "enrolled", "renewed", "errors", "live heap", "heap inuse", "RSS", "gorout", "fds", "db", "sessions")
	var enrolled, renewed, failed atomic.Int64
	start := time.Now()
	sample := func() (memSample, error) {
		m, err := ch.measure()
		if err != nil {
			return m, err
		}
		fmt.Fprintf(w, "%8s %8d %8d %6d %11s %11s %11s %6d %5d %10s %8d\n", time.Since(start).Round(time.Second), enrolled.Load(), renewed.Load(),
			failed.Load(), kb(m.HeapAlloc), kb(m.HeapInuse), kb(m.RSS), m.Goroutines, m.FDs, kb(uint64(m.DBBytes)), m.Sessions)
		return m, nil
	}
	if _, err := sample(); err != nil {
		return err
	}

	var (
		next      atomic.Int64
		abandonMu sync.Mutex
		abandoned []*coap.Client
		firstErr  sync.Once
		wg        sync.WaitGroup
	)
	defer func() {
		for _, c := range abandoned {
			_ = c.Close()
		}
	}()
	loadDone := make(chan struct{})
	for range o.Concurrency {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= o.Devices {
					return
				}
				keep, err := soakDevice(ctx, d, i, dial, i < o.Abandon, &enrolled, &renewed)
				if err != nil {
					failed.Add(1)
					firstErr.Do(func() { say("first error (device %d): %v", i, err) })
					continue
				}
				if keep != nil {
					abandonMu.Lock()
					abandoned = append(abandoned, keep)
					abandonMu.Unlock()
				}
			}
		})
	}
	go func() { wg.Wait(); close(loadDone) }()

	tick := time.NewTicker(o.Interval)
	defer tick.Stop()
	var atEnd memSample
	var settleEnd <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-loadDone:
			loadDone = nil
			say("load finished after %v; sampling for %v more", time.Since(start).Round(time.Second), o.Settle)
			if atEnd, err = sample(); err != nil {
				return err
			}
			settleEnd = time.After(o.Settle)
		case <-tick.C:
			if _, err := sample(); err != nil {
				return err
			}
		case <-settleEnd:
			final, err := sample()
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "\nafter the load → %v later: live heap %s → %s, goroutines %d → %d, fds %d → %d, sessions %d → %d (abandoned sessions evicted by the idle timeout: %v)\n",
				o.Settle, kb(atEnd.HeapAlloc), kb(final.HeapAlloc), atEnd.Goroutines, final.Goroutines, atEnd.FDs, final.FDs,
				atEnd.Sessions, final.Sessions, final.Sessions == 0)
			fmt.Fprintf(w, "%d devices in %v: %d enrolled, %d re-enrolled, %d errors\n", o.Devices, time.Since(start).Round(time.Second),
				enrolled.Load(), renewed.Load(), failed.Load())
			if failed.Load() > 0 {
				return errors.New("bench soak: some enrollments failed")
			}
			return nil
		}
	}
}

// soakDevice enrolls device i with a fresh IDevID and re-enrolls it with the certificate it
// got, each over a new DTLS session. With keep, the re-enrollment session is returned open
// (the caller abandons it); otherwise it is closed.
func soakDevice(ctx context.Context, d *datadir.Data, i int, dial func(context.Context, tls.Certificate) (*coap.Client, error),
	keep bool, enrolled, renewed *atomic.Int64) (*coap.Client, error) {
	// A device that gets no answer is an error of the run, not a stall of it.
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	dev, err := makeDevice(d, i)
	if err != nil {
		return nil, err
	}
	c, err := dial(ctx, dev.idevid)
	if err != nil {
		return nil, fmt.Errorf("dial with the IDevID: %w", err)
	}
	cert, err := client.NewEST(c, client.ESTOptions{}).Enroll(ctx, dev.csr)
	_ = c.Close()
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	enrolled.Add(1)
	ldevid := tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: dev.key, Leaf: cert}
	c, err = dial(ctx, ldevid)
	if err != nil {
		return nil, fmt.Errorf("dial with the new certificate: %w", err)
	}
	if _, err := client.NewEST(c, client.ESTOptions{}).Reenroll(ctx, dev.csr); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("re-enroll: %w", err)
	}
	renewed.Add(1)
	if keep {
		return c, nil
	}
	return nil, c.Close()
}
