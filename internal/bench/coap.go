package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v3"
	pionelliptic "github.com/pion/dtls/v3/pkg/crypto/elliptic"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"coapca/coap"
	"coapca/coap/dtlsconn"
	"coapca/internal/datadir"
)

// CoAPOptions configure CoAP.
type CoAPOptions struct {
	Clients  int
	Duration time.Duration
}

// CoAP measures the CoAP endpoint alone: full DTLS handshakes per second through coapca's
// listener, and small GETs per second over established DTLS sessions and over plain UDP,
// beside the raw pion/dtls and ECDSA P-256 floors; it prints the results to w and its progress
// to progress.
func CoAP(ctx context.Context, o CoAPOptions, w, progress io.Writer) error {
	say := func(format string, a ...any) { fmt.Fprintf(progress, "bench: "+format+"\n", a...) }
	dir, err := os.MkdirTemp("", "coapca-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	d, err := datadir.Open(datadir.Options{Dir: dir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	roots.AddCert(d.Root)

	say("measuring ECDSA P-256 (%v each)", o.Duration/2)
	signs, verifies := ecdsaFloor(o.Duration / 2)
	say("measuring raw pion DTLS handshakes (%d concurrent, %v)", o.Clients, o.Duration)
	raw, err := rawHandshakeFloor(ctx, d.ServerCertificate(), d.DeviceCertificate(), d.ManufacturerCA, d.Root, o.Clients, o.Duration)
	if err != nil {
		return fmt.Errorf("raw handshakes: %w", err)
	}

	srv, l, err := pingServer(d, 4*o.Clients, nil)
	if err != nil {
		return err
	}
	defer srv.Close()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go func() { _ = srv.ServeUDP(pc) }()
	dtlsCfg := &dtlsconn.ClientConfig{Certificates: []tls.Certificate{d.DeviceCertificate()}, RootCAs: roots, ServerName: "127.0.0.1"}
	coapsURL, coapURL := "coaps://"+l.Addr().String(), "coap://"+pc.LocalAddr().String()

	// The listener's rate is measured with the same pion client as the floor, so that the
	// ratio isolates the server; coapca's own client (which also recomputes tls-unique) next.
	say("measuring handshakes through coapca's listener (pion client, %d concurrent, %v)", o.Clients, o.Duration)
	laddr := l.Addr().(*net.UDPAddr)
	hs, err := loop(ctx, o.Clients, o.Duration, func(int) error {
		c, err := dtls.DialWithOptions("udp", laddr, dtls.WithCipherSuites(dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8),
			dtls.WithExtendedMasterSecret(dtls.RequireExtendedMasterSecret), dtls.WithEllipticCurves(pionelliptic.P256),
			dtls.WithCertificates(d.DeviceCertificate()), dtls.WithRootCAs(roots), dtls.WithServerName("127.0.0.1"))
		if err != nil {
			return err
		}
		hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := c.HandshakeContext(hctx); err != nil {
			c.Close()
			return err
		}
		return c.Close()
	})
	if err != nil {
		return fmt.Errorf("handshakes: %w", err)
	}
	say("measuring handshakes of coapca's client with coapca's listener (%d concurrent, %v)", o.Clients, o.Duration)
	hsOurs, err := loop(ctx, o.Clients, o.Duration, func(int) error {
		c, err := dtlsconn.Dial(ctx, "udp", l.Addr().String(), *dtlsCfg)
		if err != nil {
			return err
		}
		return c.Close()
	})
	if err != nil {
		return fmt.Errorf("handshakes: %w", err)
	}

	gets := func(url string, opts coap.ClientOptions) (float64, error) {
		cs := make([]*coap.Client, o.Clients)
		for i := range cs {
			c, err := coap.Dial(ctx, url, opts)
			if err != nil {
				return 0, err
			}
			defer c.Close()
			cs[i] = c
		}
		return loop(ctx, o.Clients, o.Duration, func(i int) error {
			_, err := cs[i].Do(ctx, &coap.ClientRequest{Method: codes.GET, Path: "/ping"})
			return err
		})
	}
	say("measuring GETs over %d established DTLS sessions (%v)", o.Clients, o.Duration)
	dtlsGets, err := gets(coapsURL, coap.ClientOptions{DTLS: dtlsCfg})
	if err != nil {
		return fmt.Errorf("GETs over DTLS: %w", err)
	}
	say("measuring GETs from %d plain UDP clients (%v)", o.Clients, o.Duration)
	udpGets, err := gets(coapURL, coap.ClientOptions{})
	if err != nil {
		return fmt.Errorf("GETs over UDP: %w", err)
	}

	fmt.Fprintf(w, "coapca bench coap: %d concurrent clients, client and server on this machine\n\n", o.Clients)
	fmt.Fprintf(w, "floor (same run)   ECDSA P-256 sign %8.0f/s  verify %8.0f/s (one goroutine)\n", signs, verifies)
	fmt.Fprintf(w, "                   raw pion DTLS handshakes %8.0f/s (both chains verified, CCM_8)\n\n", raw)
	fmt.Fprintf(w, "DTLS handshakes, pion client → coapca listener    %8.0f/s  = %5.1f%% of raw pion\n", hs, 100*hs/raw)
	fmt.Fprintf(w, "DTLS handshakes, coapca client → coapca listener  %8.0f/s  = %5.1f%% of raw pion\n", hsOurs, 100*hsOurs/raw)
	fmt.Fprintf(w, "GET over established DTLS sessions                %8.0f/s  = %5.2f per ECDSA sign\n", dtlsGets, dtlsGets/signs)
	fmt.Fprintf(w, "GET over plain UDP                                %8.0f/s  = %5.2f per ECDSA sign (%.2f× DTLS)\n", udpGets, udpGets/signs, udpGets/dtlsGets)
	return nil
}

// loop runs f on n workers (worker index as argument) for d and returns successful calls per
// second; it fails when no call succeeded.
func loop(ctx context.Context, n int, d time.Duration, f func(worker int) error) (float64, error) {
	var ok atomic.Int64
	var firstErr atomic.Value
	deadline := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if err := f(i); err != nil {
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	if ok.Load() == 0 {
		if e, is := firstErr.Load().(error); is {
			return 0, e
		}
		return 0, fmt.Errorf("nothing completed")
	}
	return float64(ok.Load()) / time.Since(start).Seconds(), nil
}

// pingServer starts coapca's CoAP endpoint alone, with /ping answering 2.05 "pong", on a DTLS
// listener at a free loopback port with the data directory's server certificate, devices
// authenticated by its demo manufacturer CA, no per-source handshake limit (every simulated
// device shares 127.0.0.1), maxHalfOpen half-open handshakes and the given cipher suites (nil:
// the default). Closing srv stops both.
func pingServer(d *datadir.Data, maxHalfOpen int, suites []dtls.CipherSuiteID) (*coap.Server, *dtlsconn.Listener, error) {
	mux := coap.NewMux()
	mux.Handle(coap.Resource{Path: "/ping", Handler: coap.HandlerFunc(func(context.Context, *coap.Request) *coap.Response {
		return coap.NewResponse(codes.Content, []byte("pong"))
	})})
	srv := coap.NewServer(mux, coap.Config{MaxExchangesPerPeer: 64})
	mfr := x509.NewCertPool()
	mfr.AddCert(d.ManufacturerCA)
	l, err := dtlsconn.Listen("udp", "127.0.0.1:0", dtlsconn.ServerConfig{
		Certificates: []tls.Certificate{d.ServerCertificate()}, ClientAuth: dtlsconn.RequireClientCert,
		ClientCAs: mfr, HandshakesPerSourcePerSecond: -1, MaxHalfOpen: maxHalfOpen, CipherSuites: suites,
	})
	if err != nil {
		srv.Close()
		return nil, nil, err
	}
	go func() { _ = srv.ServeDTLS(l) }()
	return srv, l, nil
}
