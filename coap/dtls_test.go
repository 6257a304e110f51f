package coap

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"coapca/coap/dtlsconn"
	"coapca/internal/testpki"
	"coapca/internal/testtool"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// testPKI is a throw-away CA with server and client certificates, also as PEM
// files for libcoap.
type testPKI struct {
	pool                        *x509.CertPool
	server, client              tls.Certificate
	caPEM, certPEM, keyPEM      string
	serverCertPEM, serverKeyPEM string
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	dir := t.TempDir()
	ca := testpki.NewCA(t, "coap test CA")
	srv := ca.Server(t, "127.0.0.1", "localhost")
	dev := ca.Device(t, "device-1", "")
	p := &testPKI{pool: ca.Pool(), server: srv.TLS(), client: dev.TLS()}
	p.caPEM = testpki.WriteCerts(t, filepath.Join(dir, "ca.pem"), ca.Cert)
	p.serverCertPEM, p.serverKeyPEM = srv.WritePEM(t, dir, "server")
	p.certPEM, p.keyPEM = dev.WritePEM(t, dir, "client")
	return p
}

// startDTLSServer serves the test mux over coaps:// requiring client certificates.
func startDTLSServer(t testing.TB, p *testPKI, cfg Config) (*testSrv, *dtlsconn.Listener) {
	t.Helper()
	ts := &testSrv{}
	mux := newTestMux(ts, 300*time.Millisecond)
	mux.Handle(Resource{Path: "/peer", Handler: HandlerFunc(func(ctx context.Context, r *Request) *Response {
		if !r.Peer.Secure || len(r.Peer.Certificates) == 0 {
			return NewResponse(codes.Unauthorized, nil)
		}
		body := fmt.Sprintf("%s|%x|%x", r.Peer.Certificates[0].Subject.CommonName, r.Peer.TLSUnique(), r.Peer.TLSExporter())
		return NewResponse(codes.Content, []byte(body))
	})})
	ts.srv = NewServer(mux, cfg)
	l, err := dtlsconn.Listen("udp", "127.0.0.1:0", dtlsconn.ServerConfig{
		Certificates: []tls.Certificate{p.server}, ClientAuth: dtlsconn.RequireClientCert, ClientCAs: p.pool,
		HandshakesPerSourcePerSecond: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	ts.addr = l.Addr().(*net.UDPAddr)
	done := make(chan error, 1)
	go func() { done <- ts.srv.ServeDTLS(l) }()
	t.Cleanup(func() {
		_ = ts.srv.Close()
		if err := <-done; err != nil {
			t.Errorf("ServeDTLS: %v", err)
		}
	})
	return ts, l
}

func dialDTLSTest(t testing.TB, p *testPKI, ts *testSrv, bs int) *Client {
	t.Helper()
	c, err := Dial(context.Background(), "coaps://"+ts.addr.String(), ClientOptions{BlockSize: bs, Config: fastConfig(),
		DTLS: &DTLSClientConfig{Certificates: []tls.Certificate{p.client}, RootCAs: p.pool}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestDTLSLoopback(t *testing.T) {
	p := newTestPKI(t)
	ts, l := startDTLSServer(t, p, fastConfig())
	ctx := context.Background()
	for _, bs := range []int{16, 1024} {
		c := dialDTLSTest(t, p, ts, bs)
		r, err := c.Do(ctx, &ClientRequest{Method: codes.GET, Path: "/big"})
		if err != nil || !bytes.Equal(r.Payload, testBody(3000, 0x5a)) {
			t.Fatalf("bs %d GET: %v", bs, err)
		}
		body := testBody(2000, 0x33)
		r, err = c.Do(ctx, &ClientRequest{Method: codes.POST, Path: "/echo", ContentFormat: CF(42), Payload: body})
		if err != nil || !bytes.Equal(r.Payload, echoBody(body)) {
			t.Fatalf("bs %d POST: %v", bs, err)
		}
		// The handler sees the client's chain and the same channel bindings as the client.
		r, err = c.Do(ctx, &ClientRequest{Method: codes.GET, Path: "/peer"})
		if err != nil || r.Code != codes.Content {
			t.Fatalf("/peer: %v %v", r, err)
		}
		pe := c.Peer()
		want := fmt.Sprintf("device-1|%x|%x", pe.TLSUnique(), pe.TLSExporter())
		if string(r.Payload) != want || len(pe.TLSExporter()) != 32 || len(pe.TLSUnique()) != 12 {
			t.Errorf("peer view %q, client view %q", r.Payload, want)
		}
		if len(pe.Certificates) == 0 || pe.Certificates[0].Subject.CommonName != "127.0.0.1" {
			t.Errorf("client does not see the server chain")
		}
	}
	if st := l.Stats(); st.HandshakesOK < 2 {
		t.Errorf("dtls stats: %+v", st)
	}
}

// TestDTLSGarbageKeepsSession: a record that is not CoAP is dropped and the
// session keeps serving.
func TestDTLSGarbageKeepsSession(t *testing.T) {
	p := newTestPKI(t)
	ts, l := startDTLSServer(t, p, fastConfig())
	conn, err := dtlsconn.Dial(context.Background(), "udp", ts.addr.String(), dtlsconn.ClientConfig{Certificates: []tls.Certificate{p.client}, RootCAs: p.pool})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, g := range [][]byte{{0xff}, {0x40, 0x01}, {0x41, 0x01, 0, 1, 0xaa, 0xbf}, testBody(300, 9), {0x70, 0, 0, 9}} {
		if _, err := conn.Write(g); err != nil {
			t.Fatal(err)
		}
	}
	req := encode(getReq(77, "ok", "/small"))
	buf := make([]byte, 2048)
	// Like any CoAP client, retransmit the CON until its answer arrives.
	for try := 0; ; try++ {
		if try == 10 {
			t.Fatalf("no answer after garbage: coap %+v dtls %+v", ts.srv.Stats(), l.Stats())
		}
		if _, err := conn.Write(req); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, err := conn.Read(buf)
		if err != nil {
			t.Logf("try %d: %v; coap malformed %d; dtls %+v", try, err, ts.srv.Stats().Malformed, l.Stats())
			continue
		}
		var m message.Message
		if err := decode(buf[:n], &m); err != nil {
			t.Fatal(err)
		}
		if m.MessageID == 77 {
			if string(m.Payload) != "hello" {
				t.Fatalf("got %v", m)
			}
			break
		}
	}
	if ts.srv.Stats().Malformed == 0 {
		t.Error("garbage not counted")
	}
}

func TestLibcoapDTLS(t *testing.T) {
	p := newTestPKI(t)
	for _, name := range libcoapClients {
		t.Run(name, func(t *testing.T) {
			bin := testtool.LookPath(t, name)
			ts, _ := startDTLSServer(t, p, Config{})
			base := fmt.Sprintf("coaps://%s", ts.addr)
			pkiArgs := []string{"-c", p.certPEM, "-j", p.keyPEM, "-C", p.caPEM}
			libcoapBlockMatrix(t, ts, bin, base, pkiArgs, []string{"16", "64", "256", "1024"}, "")
			out, err := testtool.Run(t, 10*time.Second, bin, append(pkiArgs, "-B", "5", base+"/peer")...)
			if err != nil || !bytes.HasPrefix(out, []byte("device-1|")) {
				t.Fatalf("/peer: %q %v", out, err)
			}
		})
	}
}

// TestDTLSSessionEndFailsSeparateWait: a server that ACKs a request (separate response,
// RFC 7252 §5.2.2) and then ends the DTLS session (here its idle timeout, while the handler
// is still at work) must not leave the client waiting for ever: Do returns ErrSessionClosed (it
// used to block until its context ended, and a background context never does).
func TestDTLSSessionEndFailsSeparateWait(t *testing.T) {
	p := newTestPKI(t)
	entered, release := make(chan struct{}), make(chan struct{})
	defer close(release)
	mux := NewMux()
	mux.Handle(Resource{Path: "/hold", Handler: HandlerFunc(func(context.Context, *Request) *Response {
		close(entered)
		<-release
		return NewResponse(codes.Content, nil)
	})})
	cfg := fastConfig()
	cfg.SeparateAfter = -1 // the empty ACK goes out before the handler runs
	srv := NewServer(mux, cfg)
	l, err := dtlsconn.Listen("udp", "127.0.0.1:0", dtlsconn.ServerConfig{
		Certificates: []tls.Certificate{p.server}, ClientAuth: dtlsconn.RequireClientCert, ClientCAs: p.pool,
		HandshakesPerSourcePerSecond: -1, IdleTimeout: 300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.ServeDTLS(l) }()
	defer srv.Close()
	c, err := Dial(context.Background(), "coaps://"+l.Addr().String(), ClientOptions{Config: fastConfig(),
		DTLS: &DTLSClientConfig{Certificates: []tls.Certificate{p.client}, RootCAs: p.pool}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := c.Do(ctx, &ClientRequest{Method: codes.GET, Path: "/hold"})
		done <- err
	}()
	<-entered // the empty ACK is out; the session now goes idle and is closed (close_notify)
	if err := <-done; !errors.Is(err, ErrSessionClosed) {
		t.Fatalf("Do after the server ended the session: %v, want ErrSessionClosed", err)
	}
}
