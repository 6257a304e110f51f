package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/pion/dtls/v3"
	pionelliptic "github.com/pion/dtls/v3/pkg/crypto/elliptic"

	"coapca/internal/datadir"
)

// rawPionListener is the bare pion/dtls server of the raw handshake floors: the same suite
// (CCM_8), curve, extended master secret and mutual certificate authentication as coapca, the
// client's chain verified against clientCA as the real server does, no CoAP and no EST. Each
// accepted session completes its handshake, waits for one read (the client closes) and ends.
func rawPionListener(ctx context.Context, addr *net.UDPAddr, srvCert tls.Certificate, clientCA *x509.Certificate) (net.Listener, error) {
	clientRoots := x509.NewCertPool()
	clientRoots.AddCert(clientCA)
	ln, err := dtls.ListenWithOptions("udp", addr,
		dtls.WithCipherSuites(dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8),
		dtls.WithExtendedMasterSecret(dtls.RequireExtendedMasterSecret),
		dtls.WithEllipticCurves(pionelliptic.P256),
		dtls.WithCertificates(srvCert), dtls.WithClientAuth(dtls.RequireAnyClientCert),
		dtls.WithVerifyPeerCertificate(func(raw [][]byte, _ [][]*x509.Certificate) error {
			leaf, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return err
			}
			_, err = leaf.Verify(x509.VerifyOptions{Roots: clientRoots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
			return err
		}))
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if dc, ok := c.(*dtls.Conn); ok {
					_ = dc.HandshakeContext(ctx)
				}
				_, _ = c.Read(make([]byte, 64))
			}()
		}
	}()
	return ln, nil
}

// ServeRawPion runs the raw pion/dtls floor server (rawPionListener) on a free loopback port
// with the server certificate and demo manufacturer CA of the data directory dataDir, writes
// its address as one line to stdout, and serves until ctx ends. `coapca bench est --spawn`
// runs it as a child process (`coapca bench pion-server`) so that the floor has the same
// placement as the server under test: client and server in two processes.
func ServeRawPion(ctx context.Context, dataDir string, stdout io.Writer) error {
	d, err := datadir.Open(datadir.Options{Dir: dataDir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return fmt.Errorf("bench: data directory: %w", err)
	}
	ln, err := rawPionListener(ctx, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, d.ServerCertificate(), d.ManufacturerCA)
	if err != nil {
		return fmt.Errorf("bench: raw pion listener: %w", err)
	}
	defer ln.Close()
	fmt.Fprintln(stdout, ln.Addr().String())
	<-ctx.Done()
	return nil
}

// pionChild is a `coapca bench pion-server` child process.
type pionChild struct {
	addr *net.UDPAddr
	pid  int
	stop func()
}

// spawnPionServer starts `exe bench pion-server --data dataDir` and reads its address.
func spawnPionServer(exe, dataDir string) (*pionChild, error) {
	cmd := exec.Command(exe, "bench", "pion-server", "--data", dataDir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: starting %s bench pion-server: %w", exe, err)
	}
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		stop()
		return nil, fmt.Errorf("bench: pion-server child gave no address: %v %s", err, stderr.String())
	}
	addr, err := net.ResolveUDPAddr("udp", strings.TrimSpace(line))
	if err != nil {
		stop()
		return nil, fmt.Errorf("bench: pion-server child address %q: %w", line, err)
	}
	return &pionChild{addr: addr, pid: cmd.Process.Pid, stop: stop}, nil
}

// cpu is procCPU for the child (0 when it is gone).
func (c *pionChild) cpu() time.Duration { return procCPU(c.pid) }
