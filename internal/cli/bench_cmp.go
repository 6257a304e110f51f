package cli

import (
	"context"
	"crypto"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/pprof"
	"sync"
	"time"

	"coapca/client"
	"coapca/cmp"
	"coapca/internal/config"
	"coapca/kms"
)

const benchCMPDescription = `Measure CMP enrollment throughput against an in-process server.

Workers run complete Lightweight CMP transactions (ir, ip, certConf, pkiConf; RFC 9483 §4.1)
for --duration over coap:// (RFC 9482) and then over http:// (RFC 9811), each worker with its
own connection. Requests are MAC-protected with the demo secret (PasswordBasedMac,
--iterations, HMAC-SHA256) or signed by per-worker device certificates (--protection
signature); every answer is checked by the client. Each certificate is signed by the CA and
recorded in the real SQLite database (fsync'd) before the answer goes out. Beside the results it
prints the ECDSA P-256 floor measured in the same run on the same machine.`

type benchCMPOpts struct {
	concurrency int
	duration    time.Duration
	protection  string
	iterations  int
	dataDir     string
	cpuProfile  string
}

func benchCMP(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o benchCMPOpts
	fs := newFlagSet("bench cmp", "coapca bench cmp [flags]", benchCMPDescription, stderr)
	fs.IntVar(&o.concurrency, "concurrency", 8, "transactions in flight at once (one client each)")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "how long each transport and the floor measurement run")
	fs.StringVar(&o.protection, "protection", "mac", "request protection: mac (PasswordBasedMac) or signature (device certificates)")
	fs.IntVar(&o.iterations, "iterations", 500, "PasswordBasedMac iteration count (OpenSSL's default is 500)")
	fs.StringVar(&o.dataDir, "data", "", "data directory for the server (default: a temporary one, removed afterwards)")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the transaction phases to this file (go tool pprof)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.concurrency < 1 || o.duration <= 0 || o.iterations < cmp.MinIterations {
		return usagef("--concurrency and --duration must be positive, --iterations at least %d", cmp.MinIterations)
	}
	if o.protection != "mac" && o.protection != "signature" {
		return usagef("--protection must be mac or signature")
	}
	say := func(format string, a ...any) { fmt.Fprintf(stderr, "bench: "+format+"\n", a...) }

	say("measuring ECDSA P-256 (%v each)", o.duration/2)
	signs, verifies := ecdsaFloor(o.duration / 2)

	dir := o.dataDir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "coapca-bench-cmp-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	cfg := config.Default()
	cfg.Data = dir
	cfg.Listen.CoAPS = ""
	cfg.Listen.CoAP = "127.0.0.1:0"
	cfg.Listen.HTTP = "127.0.0.1:0"
	s, err := startServer(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer s.Close()

	// Per-worker protection: the demo secret, or a device certificate from the demo
	// manufacturer CA (an IDevID the authority trusts).
	prots := make([]cmp.Protector, o.concurrency)
	if o.protection == "signature" {
		devs, err := makeDevices(s, o.concurrency)
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
			prots[i] = &cmp.PBMProtection{Secret: s.data.CMPSecret, Reference: []byte(s.data.CMPSecretRef), Iterations: o.iterations}
		}
	}

	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
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
	for _, tr := range []struct{ name, url string }{{"coap", s.coapURL}, {"http", s.httpURL}} {
		say("%s: ir+certConf transactions, %d at a time, for %v", tr.name, o.concurrency, o.duration)
		var (
			mu  sync.Mutex
			res = result{name: tr.name}
			wg  sync.WaitGroup
		)
		deadline := time.Now().Add(o.duration)
		start := time.Now()
		for w := range o.concurrency {
			t, err := client.DialCMP(ctx, tr.url, client.CMPTransportOptions{})
			if err != nil {
				return err
			}
			defer t.Close()
			c := client.NewCMP(t, client.CMPOptions{Protection: prots[w], Secret: s.data.CMPSecret, Trust: s.data.IssuingChain()})
			key, err := kms.GenerateKey("P-256")
			if err != nil {
				return err
			}
			var tmpl cmp.CertTemplate
			if err := tmpl.SetSubject(pkix.Name{CommonName: fmt.Sprintf("bench-cmp-%d", w)}); err != nil {
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

	prot := fmt.Sprintf("PasswordBasedMac, %d iterations", o.iterations)
	if o.protection == "signature" {
		prot = "signed by device certificates (ECDSA P-256)"
	}
	fmt.Fprintf(stdout, "coapca bench cmp: ir+certConf transactions, %d at a time, %s, SQLite fsync'd\n\n", o.concurrency, prot)
	fmt.Fprintf(stdout, "floor (same run)   ECDSA P-256 sign %8.0f/s   verify %8.0f/s   (one goroutine)\n\n", signs, verifies)
	for _, r := range results {
		fmt.Fprintf(stdout, "%-5s ir+certConf  %8.1f/s  = %5.1f%% of ECDSA signs   p50 %v  p99 %v  errors %d\n",
			r.name, r.rate, 100*r.rate/signs, r.lat.pct(.5).Round(10*time.Microsecond), r.lat.pct(.99).Round(10*time.Microsecond), r.errs)
	}
	return ctx.Err()
}
