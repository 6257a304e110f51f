package bench

import (
	"context"
	"crypto"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"sync"
	"time"

	"coapca/client"
	"coapca/cmp"
	"coapca/internal/config"
	"coapca/kms"
)

// CMPOptions configure CMP.
type CMPOptions struct {
	Concurrency int
	Duration    time.Duration
	Protection  string // "mac" (PasswordBasedMac with the demo secret) or "signature" (device certificates)
	Iterations  int    // PasswordBasedMac iteration count
	DataDir     string // "" = a temporary directory, removed afterwards
	CPUProfile  string // write a CPU profile of the transaction phases here
}

// CMP measures complete Lightweight CMP transactions (ir, ip, certConf, pkiConf; RFC 9483
// §4.1) over coap:// (RFC 9482) and then http:// (RFC 9811) beside the ECDSA P-256 floor, and
// prints the results to w; progress gets what it is doing.
func CMP(ctx context.Context, o CMPOptions, w, progress io.Writer) error {
	say := func(format string, a ...any) { fmt.Fprintf(progress, "bench: "+format+"\n", a...) }

	say("measuring ECDSA P-256 (%v each)", o.Duration/2)
	signs, verifies := ecdsaFloor(o.Duration / 2)

	s, stop, err := startServer(ctx, o.DataDir, func(cfg *config.Config) {
		cfg.Listen.CoAP, cfg.Listen.HTTP = "127.0.0.1:0", "127.0.0.1:0"
	})
	if err != nil {
		return err
	}
	defer stop()

	// Per-worker protection: the demo secret, or a device certificate from the demo
	// manufacturer CA (an IDevID the authority trusts).
	prots := make([]cmp.Protector, o.Concurrency)
	if o.Protection == "signature" {
		devs, err := makeDevices(s.Data(), o.Concurrency)
		if err != nil {
			return err
		}
		for i, d := range devs {
			leaf, err := client.ParseChain(d.idevid.Certificate)
			if err != nil {
				return err
			}
			prots[i] = &cmp.SignatureProtection{Signer: d.idevid.PrivateKey.(crypto.Signer), Cert: leaf[0]}
		}
	} else {
		for i := range prots {
			prots[i] = &cmp.PBMProtection{Secret: s.Data().CMPSecret, Reference: []byte(s.Data().CMPSecretRef), Iterations: o.Iterations}
		}
	}

	if o.CPUProfile != "" {
		f, err := os.Create(o.CPUProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	type result struct {
		name     string
		rate     float64
		lat      latencies
		errs     int64
		firstErr error
	}
	var results []result
	for _, tr := range []struct{ name, url string }{{"coap", s.CoAPURL()}, {"http", s.HTTPURL()}} {
		say("%s: ir+certConf transactions, %d at a time, for %v", tr.name, o.Concurrency, o.Duration)
		var (
			mu  sync.Mutex
			res = result{name: tr.name}
			wg  sync.WaitGroup
		)
		deadline := time.Now().Add(o.Duration)
		start := time.Now()
		for i := range o.Concurrency {
			t, err := client.DialCMP(ctx, tr.url, client.CMPTransportOptions{})
			if err != nil {
				return err
			}
			defer t.Close()
			c := client.NewCMP(t, client.CMPOptions{Protection: prots[i], Secret: s.Data().CMPSecret, Trust: s.Data().IssuingChain()})
			key, err := kms.GenerateKey("P-256")
			if err != nil {
				return err
			}
			var tmpl cmp.CertTemplate
			if err := tmpl.SetSubject(pkix.Name{CommonName: fmt.Sprintf("bench-cmp-%d", i)}); err != nil {
				return err
			}
			wg.Go(func() {
				for time.Now().Before(deadline) && ctx.Err() == nil {
					t0 := time.Now()
					_, err := c.Enroll(ctx, cmp.TypeIR, tmpl, key)
					mu.Lock()
					if err != nil {
						res.errs++
						if res.firstErr == nil {
							res.firstErr = err
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
		if res.firstErr != nil {
			say("%s: first error: %v", tr.name, res.firstErr)
		}
		if len(res.lat) == 0 {
			return errors.Join(errors.New("no CMP transaction succeeded"), res.firstErr)
		}
		results = append(results, res)
	}

	prot := fmt.Sprintf("PasswordBasedMac, %d iterations", o.Iterations)
	if o.Protection == "signature" {
		prot = "signed by device certificates (ECDSA P-256)"
	}
	fmt.Fprintf(w, "coapca bench cmp: ir+certConf transactions, %d at a time, %s, SQLite fsync'd\n\n", o.Concurrency, prot)
	fmt.Fprintf(w, "floor (same run)   ECDSA P-256 sign %8.0f/s   verify %8.0f/s   (one goroutine)\n\n", signs, verifies)
	for _, r := range results {
		fmt.Fprintf(w, "%-5s ir+certConf  %8.1f/s  = %5.1f%% of ECDSA signs   p50 %v  p99 %v  errors %d\n",
			r.name, r.rate, 100*r.rate/signs, r.lat.pct(.5).Round(10*time.Microsecond), r.lat.pct(.99).Round(10*time.Microsecond), r.errs)
	}
	return ctx.Err()
}
