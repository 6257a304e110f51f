package esttest

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"path/filepath"
	"testing"

	"coapca/coap"
	"coapca/coap/dtlsconn"
	"coapca/internal/testpki"
)

// DTLSServer is a mux served over DTLS on loopback with a certificate from the fake CA, and a
// device identity the server accepts (any chain to the fake root).
type DTLSServer struct {
	Addr       string // host:port
	Device     tls.Certificate
	DeviceCert *x509.Certificate
	DeviceKey  crypto.Signer
	Server     *coap.Server
}

// StartDTLS serves mux on 127.0.0.1 (random port) until the test ends. The server's
// certificate names localhost, 127.0.0.1 and ::1; clients are required to present a
// client-auth certificate chaining to a.Root.
func (a *Authority) StartDTLS(tb testing.TB, mux *coap.Mux) *DTLSServer {
	tb.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(a.Root)
	return a.StartDTLSWith(tb, mux, func(raw [][]byte) ([]*x509.Certificate, error) {
		var chain []*x509.Certificate
		for _, r := range raw {
			c, err := x509.ParseCertificate(r)
			if err != nil {
				return nil, err
			}
			chain = append(chain, c)
		}
		if len(chain) == 0 {
			return nil, errors.New("no client certificate")
		}
		ip := x509.NewCertPool()
		ip.AddCert(a.CA)
		for _, c := range chain[1:] {
			ip.AddCert(c)
		}
		if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: ip,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			return nil, err
		}
		return chain, nil
	})
}

// StartDTLSWith is StartDTLS with the client-chain check verify (e.g. the real
// authority.VerifyClient).
func (a *Authority) StartDTLSWith(tb testing.TB, mux *coap.Mux, verify func(raw [][]byte) ([]*x509.Certificate, error)) *DTLSServer {
	tb.Helper()
	srvCert := a.PKI.Server(tb)
	dev := a.PKI.Device(tb, "device-1", "")
	l, err := dtlsconn.Listen("udp", "127.0.0.1:0", dtlsconn.ServerConfig{
		Certificates: []tls.Certificate{srvCert.TLS()},
		ClientAuth:   dtlsconn.RequireClientCert,
		VerifyPeer:   verify,
	})
	if err != nil {
		tb.Fatal(err)
	}
	srv := coap.NewServer(mux, coap.Config{})
	done := make(chan error, 1)
	go func() { done <- srv.ServeDTLS(l) }()
	tb.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	devTLS := dev.TLS()
	devTLS.Certificate = devTLS.Certificate[:1] // the device sends its certificate alone
	return &DTLSServer{Addr: l.Addr().String(), Server: srv, DeviceCert: dev.Cert, DeviceKey: dev.Key, Device: devTLS}
}

// WritePEM writes the root (root.pem), the issuing CA (ca.pem), and the device identity
// (device.pem, device.key, PKCS#8) into dir, for external tools such as coap-client and openssl.
func (s *DTLSServer) WritePEM(tb testing.TB, a *Authority, dir string) (root, ca, cert, key string) {
	tb.Helper()
	return testpki.WriteCerts(tb, filepath.Join(dir, "root.pem"), a.Root),
		testpki.WriteCerts(tb, filepath.Join(dir, "ca.pem"), a.CA),
		testpki.WriteCerts(tb, filepath.Join(dir, "device.pem"), s.DeviceCert),
		testpki.WriteKey(tb, filepath.Join(dir, "device.key"), s.DeviceKey)
}
