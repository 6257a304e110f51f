package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"coapca/client"
	"coapca/coap"
	"coapca/coap/dtlsconn"
	"coapca/internal/config"
	"coapca/internal/datadir"
)

// Registrar is `coapca bench registrar`: EST-coaps enrollments (a new DTLS session and /sen
// each) through a registrar (RFC 9148 §5) to an in-process EST over HTTPS CA, next to direct
// EST-coaps enrollments at that same CA in the same run. The ratio is what the registrar's
// local authorization, the HTTPS hop and the upstream's own TLS handshake cost.
func Registrar(ctx context.Context, o ESTOptions, stdout, progress io.Writer) error {
	say := func(format string, a ...any) { fmt.Fprintf(progress, "bench: "+format+"\n", a...) }
	tmp, err := os.MkdirTemp("", "coapca-bench-registrar-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	caDir, regDir := filepath.Join(tmp, "ca"), filepath.Join(tmp, "registrar")
	// Both data directories first: the CA trusts the registrar's CA (RAs) and its own demo
	// manufacturer (direct devices); the registrar trusts the CA's TLS certificate.
	caData, err := datadir.Open(datadir.Options{Dir: caDir})
	if err != nil {
		return err
	}
	if _, err := datadir.Open(datadir.Options{Dir: regDir, Registrar: true}); err != nil {
		return err
	}
	noFlood := func(cfg *config.Config) {
		cfg.DTLS.HandshakesPerSourcePerSecond = -1 // every simulated device shares 127.0.0.1
		cfg.DTLS.MaxHalfOpen = 4 * o.Concurrency
	}
	ca, stopCA, err := startServer(ctx, caDir, func(cfg *config.Config) {
		cfg.Listen.CoAPS, cfg.Listen.HTTPS = "127.0.0.1:0", "127.0.0.1:0"
		noFlood(cfg)
		cfg.Authority.TrustStores = []config.TrustStore{
			{Name: "registrars", CertsFile: filepath.Join(regDir, "ca.pem")},
			{Name: "demo", CertsFile: caData.Paths.ManufacturerCA, AllowExpired: true},
		}
		cfg.Authority.Profiles = []config.Profile{{Label: "", Requesters: []config.RequesterRule{
			{Kind: "ra", From: []string{"registrars"}}, {Kind: "idevid", From: []string{"demo"}}}}}
	})
	if err != nil {
		return err
	}
	defer stopCA()
	reg, stopReg, err := startServer(ctx, regDir, func(cfg *config.Config) {
		cfg.Listen.CoAPS = "127.0.0.1:0"
		noFlood(cfg)
		cfg.Upstream = config.Upstream{URL: ca.HTTPSURL(), Trust: caData.Paths.Root, MaxConcurrent: max(16, o.Concurrency)}
	})
	if err != nil {
		return err
	}
	defer stopReg()

	say("preparing 2 × %d device identities and CSRs", o.Devices)
	direct, err := makeDevices(ca.Data(), o.Devices)
	if err != nil {
		return err
	}
	relayed, err := makeDevices(reg.Data(), o.Devices)
	if err != nil {
		return err
	}
	say("direct: %d enrollments at the CA over EST-coaps", o.Devices)
	d, err := enrollPhase(ctx, ca.CoAPSURL(), ca.Data().Root, direct, o)
	if err != nil {
		return fmt.Errorf("direct: %w", err)
	}
	say("registrar: %d enrollments through the registrar", o.Devices)
	r, err := enrollPhase(ctx, reg.CoAPSURL(), reg.Data().Root, relayed, o)
	if err != nil {
		return fmt.Errorf("registrar: %w", err)
	}
	fmt.Fprintf(stdout, "coapca bench registrar: %d devices per path, %d at a time, block size %d, SQLite fsync'd at the CA\n\n",
		o.Devices, o.Concurrency, o.BlockSize)
	fmt.Fprintf(stdout, "direct    (device → CA, EST-coaps)                    %8.0f/s                      p50 %v  p99 %v  errors %d\n",
		d.rate, d.lat.pct(.5).Round(10*time.Microsecond), d.lat.pct(.99).Round(10*time.Microsecond), d.errs)
	fmt.Fprintf(stdout, "registrar (device → registrar → CA over EST/HTTPS)   %8.0f/s  = %5.1f%% of direct   p50 %v  p99 %v  errors %d\n",
		r.rate, 100*r.rate/d.rate, r.lat.pct(.5).Round(10*time.Microsecond), r.lat.pct(.99).Round(10*time.Microsecond), r.errs)
	return nil
}

type phaseResult struct {
	rate float64
	lat  latencies
	errs int64
}

// enrollPhase enrolls every device over a new DTLS session to url (/sen), o.Concurrency at a
// time, and returns enrollments per second.
func enrollPhase(ctx context.Context, url string, root *x509.Certificate, devs []*benchDevice, o ESTOptions) (*phaseResult, error) {
	roots := x509.NewCertPool()
	roots.AddCert(root)
	res := &phaseResult{}
	var mu sync.Mutex
	var next atomic.Int64
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now()
	for range o.Concurrency {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(devs) || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				err := func() error {
					c, err := coap.Dial(ctx, url, coap.ClientOptions{BlockSize: o.BlockSize, DTLS: &dtlsconn.ClientConfig{
						Certificates: []tls.Certificate{devs[i].idevid}, RootCAs: roots, ServerName: "127.0.0.1"}})
					if err != nil {
						return err
					}
					defer c.Close()
					_, err = client.NewEST(c, client.ESTOptions{}).Enroll(ctx, devs[i].csr)
					return err
				}()
				mu.Lock()
				if err != nil {
					res.errs++
					if firstErr == nil {
						firstErr = err
					}
				} else {
					res.lat = append(res.lat, time.Since(t0))
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	res.rate = float64(len(res.lat)) / time.Since(start).Seconds()
	if len(res.lat) == 0 {
		return nil, errors.Join(errors.New("no enrollment succeeded"), firstErr)
	}
	return res, ctx.Err()
}
