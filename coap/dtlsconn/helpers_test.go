package dtlsconn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"

	"coapca/internal/testpki"
)

// pki is a throw-away CA with a server and a client certificate, also written
// as PEM files for the external test peers.
type pki struct {
	caCert             *x509.Certificate
	pool               *x509.CertPool
	server, client     tls.Certificate
	caPEM              string
	clientPEM, keyPEM  string
	serverPEM, skeyPEM string
}

// testPKI makes the test's PKI (testpki); its PEM files live in the test's TempDir.
func testPKI(t testing.TB) *pki {
	t.Helper()
	dir := t.TempDir()
	ca := testpki.NewCA(t, "test CA")
	srv, dev := ca.Server(t, "localhost", "127.0.0.1"), ca.Device(t, "device-1", "")
	p := &pki{caCert: ca.Cert, pool: ca.Pool(), server: srv.TLS(), client: dev.TLS()}
	// The peers send their CA certificate too, as the external test peers are told to.
	p.server.Certificate = append(p.server.Certificate, ca.Cert.Raw)
	p.client.Certificate = append(p.client.Certificate, ca.Cert.Raw)
	p.caPEM = testpki.WriteCerts(t, filepath.Join(dir, "ca.pem"), ca.Cert)
	p.serverPEM, p.skeyPEM = srv.WritePEM(t, dir, "server")
	p.clientPEM, p.keyPEM = dev.WritePEM(t, dir, "client")
	return p
}

func serverConfig(p *pki) ServerConfig {
	return ServerConfig{
		Certificates:     []tls.Certificate{p.server},
		ClientAuth:       RequireClientCert,
		VerifyPeer:       poolVerifier(p.pool, x509.ExtKeyUsageClientAuth),
		HandshakeTimeout: 5 * time.Second,
	}
}

func clientConfig(p *pki) ClientConfig {
	return ClientConfig{Certificates: []tls.Certificate{p.client}, RootCAs: p.pool, ServerName: "localhost",
		HandshakeTimeout: 5 * time.Second}
}

// echoCoAP answers one CoAP request per datagram with a hand-built piggybacked
// 2.05 Content "ok" (RFC 7252 §3: ACK, same Message ID and token); anything
// that is not CoAP is echoed back verbatim.
func echoCoAP(c *Conn) {
	buf := make([]byte, 2048)
	for {
		n, err := c.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			return
		}
		req := buf[:n]
		if n >= 4 && req[0]>>6 == 1 && int(req[0]&0x0f) <= n-4 && req[1] != 0 {
			tkl := int(req[0] & 0x0f)
			resp := []byte{0x60 | byte(tkl), 0x45, req[2], req[3]}
			resp = append(resp, req[4:4+tkl]...)
			resp = append(resp, 0xff, 'o', 'k')
			_, _ = c.Write(resp)
			continue
		}
		_, _ = c.Write(req)
	}
}

// serve runs l's accept loop; every accepted Conn is echoed and sent on the
// returned channel (non-blocking, buffered).
func serve(t testing.TB, l *Listener) <-chan *Conn {
	t.Helper()
	ch := make(chan *Conn, 64)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			select {
			case ch <- c:
			default:
			}
			go echoCoAP(c)
		}
	}()
	return ch
}

func listen(t testing.TB, cfg ServerConfig) *Listener {
	t.Helper()
	l, err := Listen("udp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// waitUntil polls cond until it holds, failing the test with what after d. The listener's
// state changes on pion's goroutines over real sockets, with no event a test can wait on;
// the poll is bounded by d instead of being a fixed sleep that a loaded machine outlasts.
func waitUntil(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting after %v for %s", d, what)
		}
	}
}
