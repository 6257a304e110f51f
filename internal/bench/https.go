package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"coapca/client"
	"coapca/internal/config"
)

// ESTHTTPS is `coapca bench est --https`: EST over HTTPS enrollments with a fresh TLS
// handshake each (/simpleenroll), then re-enrollments over kept connections
// (/simplereenroll), beside the ECDSA P-256 rate and the raw crypto/tls handshake rate (same
// certificates, client certificate verified, TLS 1.3) measured in the same run.
func ESTHTTPS(ctx context.Context, o ESTOptions, stdout, progress io.Writer) error {
	say := func(format string, a ...any) { fmt.Fprintf(progress, "bench: "+format+"\n", a...) }
	say("measuring ECDSA P-256 (%v each)", o.Duration/2)
	signs, verifies := ecdsaFloor(o.Duration / 2)

	s, stop, err := startServer(ctx, o.DataDir, func(cfg *config.Config) { cfg.Listen.HTTPS = "127.0.0.1:0" })
	if err != nil {
		return err
	}
	defer stop()

	say("measuring raw crypto/tls handshakes (%d concurrent, %v)", o.Concurrency, o.Duration/2)
	rawHS, err := rawTLSHandshakeFloor(ctx, s.Data().ServerCertificate(), s.Data().DeviceCertificate(), s.Data().ManufacturerCA, s.Data().Root, o.Concurrency, o.Duration/2)
	if err != nil {
		return fmt.Errorf("raw handshake floor: %w", err)
	}

	say("preparing %d device identities and CSRs", o.Devices)
	devs, err := makeDevices(s.Data(), o.Devices)
	if err != nil {
		return err
	}
	anchors := []*x509.Certificate{s.Data().Root}
	url := s.HTTPSURL()
	newClient := func(id tls.Certificate) (*client.HTTPS, error) {
		return client.NewHTTPS(url, client.HTTPSOptions{VerifyServer: client.ServerVerifier(anchors, "127.0.0.1", nil),
			Certificates: []tls.Certificate{id}})
	}

	say("phase 1: %d enrollments, each over a new TLS connection", o.Devices)
	var mu sync.Mutex
	var enrollLat, reenrollLat latencies
	var enrollErrs, reenrollErrs int64
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	eachDevice(ctx, o.Concurrency, len(devs), &next, time.Time{}, func(i int) {
		d := devs[i]
		t0 := time.Now()
		err := func() error {
			c, err := newClient(d.idevid)
			if err != nil {
				return err
			}
			defer c.Close()
			cert, err := c.Enroll(ctx, d.csr)
			if err != nil {
				return err
			}
			d.ldevid = tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: d.key, Leaf: cert}
			return nil
		}()
		outcome(&mu, &enrollErrs, &enrollLat, err, t0, func(err error) { say("first enroll error: %v", err) })
	})
	enrolls := float64(len(enrollLat)) / time.Since(start).Seconds()
	if len(enrollLat) == 0 {
		return errors.New("no enrollment succeeded")
	}

	say("phase 2: re-enrollments over %d kept connections for %v", o.Concurrency, o.Duration)
	var clients []*client.HTTPS
	var csrs [][]byte
	for _, d := range devs {
		if len(clients) == o.Concurrency {
			break
		}
		if d.ldevid.Leaf == nil {
			continue
		}
		c, err := newClient(d.ldevid)
		if err != nil {
			return err
		}
		defer c.Close()
		clients, csrs = append(clients, c), append(csrs, d.csr)
	}
	deadline := time.Now().Add(o.Duration)
	start = time.Now()
	for i, c := range clients {
		wg.Go(func() {
			for time.Now().Before(deadline) && ctx.Err() == nil {
				t0 := time.Now()
				_, err := c.Reenroll(ctx, csrs[i])
				outcome(&mu, &reenrollErrs, &reenrollLat, err, t0, func(err error) { say("first reenroll error: %v", err) })
			}
		})
	}
	wg.Wait()
	reenrolls := float64(len(reenrollLat)) / time.Since(start).Seconds()

	fmt.Fprintf(stdout, "coapca bench est --https: %d devices, %d at a time, SQLite fsync'd\n\n", o.Devices, o.Concurrency)
	fmt.Fprintf(stdout, "floor (same run)      ECDSA P-256 sign %8.0f/s   verify %8.0f/s   (one goroutine)\n", signs, verifies)
	fmt.Fprintf(stdout, "                      raw crypto/tls handshakes %8.0f/s   (%d concurrent, TLS 1.3, client certificate verified)\n\n", rawHS, o.Concurrency)
	fmt.Fprintf(stdout, "enroll   (new TLS connection + /simpleenroll)  %8.0f/s  = %5.1f%% of raw handshakes   p50 %v  p99 %v  errors %d\n",
		enrolls, 100*enrolls/rawHS, enrollLat.pct(.5).Round(10*time.Microsecond), enrollLat.pct(.99).Round(10*time.Microsecond), enrollErrs)
	fmt.Fprintf(stdout, "reenroll (kept connection, /simplereenroll)    %8.0f/s  = %5.1f%% of ECDSA signs       p50 %v  p99 %v  errors %d\n",
		reenrolls, 100*reenrolls/signs, reenrollLat.pct(.5).Round(10*time.Microsecond), reenrollLat.pct(.99).Round(10*time.Microsecond), reenrollErrs)
	return ctx.Err()
}

// rawTLSHandshakeFloor runs full crypto/tls handshakes (TLS 1.3, the server's certificate and
// a client certificate verified against clientCA, as the EST listener does) for d with conc
// clients over loopback and returns handshakes/s.
func rawTLSHandshakeFloor(ctx context.Context, srvCert, cliCert tls.Certificate, clientCA, serverRoot *x509.Certificate, conc int, d time.Duration) (float64, error) {
	clientRoots, serverRoots := x509.NewCertPool(), x509.NewCertPool()
	clientRoots.AddCert(clientCA)
	serverRoots.AddCert(serverRoot)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{srvCert},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clientRoots, SessionTicketsDisabled: true})
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.(*tls.Conn).HandshakeContext(ctx)
				_, _ = c.Write([]byte{1})
			}()
		}
	}()
	cfg := &tls.Config{Certificates: []tls.Certificate{cliCert}, RootCAs: serverRoots, ServerName: "127.0.0.1"}
	return loop(ctx, conc, d, func(int) error {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", ln.Addr().String(), cfg)
		if err != nil {
			return err
		}
		defer c.Close()
		var b [1]byte
		_, err = c.Read(b[:])
		return err
	})
}
