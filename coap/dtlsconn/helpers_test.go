package dtlsconn

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
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

var (
	pkiOnce sync.Once
	pkiVal  *pki
	pkiDir  string
)

func testPKI(t testing.TB) *pki {
	t.Helper()
	pkiOnce.Do(func() {
		dir, err := os.MkdirTemp("", "dtlsconn-pki")
		if err != nil {
			panic(err)
		}
		pkiDir = dir
		pkiVal = makePKI(dir)
	})
	return pkiVal
}

func TestMain(m *testing.M) {
	code := m.Run()
	if pkiDir != "" {
		_ = os.RemoveAll(pkiDir)
	}
	os.Exit(code)
}

func makePKI(dir string) *pki {
	must := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	must(err)
	caCert, err := x509.ParseCertificate(caDER)
	must(err)
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage) (tls.Certificate, []byte, []byte) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		must(err)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
		must(err)
		kder, err := x509.MarshalPKCS8PrivateKey(k)
		must(err)
		c, err := x509.ParseCertificate(der)
		must(err)
		return tls.Certificate{Certificate: [][]byte{der, caDER}, PrivateKey: k, Leaf: c},
			pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
	}
	p := &pki{caCert: caCert, pool: x509.NewCertPool()}
	p.pool.AddCert(caCert)
	var sc, sk, cc, ck []byte
	p.server, sc, sk = leaf(2, "localhost", x509.ExtKeyUsageServerAuth)
	p.client, cc, ck = leaf(3, "device-1", x509.ExtKeyUsageClientAuth)
	write := func(name string, b []byte) string {
		f := filepath.Join(dir, name)
		must(os.WriteFile(f, b, 0o600))
		return f
	}
	p.caPEM = write("ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
	p.serverPEM, p.skeyPEM = write("server.pem", sc), write("server.key", sk)
	p.clientPEM, p.keyPEM = write("client.pem", cc), write("client.key", ck)
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
