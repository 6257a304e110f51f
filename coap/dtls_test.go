package coap

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"coapca/coap/dtlsconn"
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
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "coap test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	must(err)
	ca, _ := x509.ParseCertificate(caDER)
	p := &testPKI{pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	write := func(name, typ string, der []byte) string {
		f := filepath.Join(dir, name)
		must(os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
		return f
	}
	p.caPEM = write("ca.pem", "CERTIFICATE", caDER)
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage, certName, keyName string) (tls.Certificate, string, string) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		must(err)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		must(err)
		kder, err := x509.MarshalECPrivateKey(k)
		must(err)
		leafCert, _ := x509.ParseCertificate(der)
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k, Leaf: leafCert},
			write(certName, "CERTIFICATE", der), write(keyName, "EC PRIVATE KEY", kder)
	}
	p.server, p.serverCertPEM, p.serverKeyPEM = leaf(2, "127.0.0.1", x509.ExtKeyUsageServerAuth, "server.pem", "server.key")
	p.client, p.certPEM, p.keyPEM = leaf(3, "device-1", x509.ExtKeyUsageClientAuth, "client.pem", "client.key")
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
			bin := libcoapBin(t, name)
			ts, _ := startDTLSServer(t, p, Config{})
			base := fmt.Sprintf("coaps://%s", ts.addr)
			pkiArgs := []string{"-c", p.certPEM, "-j", p.keyPEM, "-C", p.caPEM}
			libcoapBlockMatrix(t, ts, bin, base, pkiArgs, []string{"16", "64", "256", "1024"}, "")
			out, err := runLibcoap(t, 10*time.Second, bin, append(pkiArgs, "-B", "5", base+"/peer")...)
			if err != nil || !bytes.HasPrefix(out, []byte("device-1|")) {
				t.Fatalf("/peer: %q %v", out, err)
			}
		})
	}
}
