// Package esttest provides a small in-memory Authority for tests of the EST service, its
// bindings and its clients: a two-level CA (root and issuing CA, ECDSA P-256) that signs
// whatever it is asked, with switches for the policy outcomes the bindings must map
// (pending, forbidden, ...). It is not a policy engine; package authority is.
package esttest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"coapca/authority"
	"coapca/coap"
	"coapca/coap/dtlsconn"
	"coapca/errs"
)

// Authority is a fake est.Authority.
type Authority struct {
	Root, CA   *x509.Certificate
	RootKey    crypto.Signer
	CAKey      crypto.Signer
	mu         sync.Mutex
	profiles   map[string]*authority.Profile
	pending    map[string]time.Duration // label → answer errs.Pending with this retry
	fail       map[string]error         // label → Issue returns this error
	requests   []authority.CertRequest
	serial     int64
	pendingFor map[string]int // label → number of remaining pending answers (-1 = always)
}

// New returns an Authority with a default profile ("") and the given extra labels, all with
// P-256 keys and client-auth certificates.
func New(labels ...string) (*Authority, error) {
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	rootT := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "esttest root"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootT, rootT, rootKey.Public(), rootKey)
	if err != nil {
		return nil, err
	}
	root, _ := x509.ParseCertificate(rootDER)
	caT := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "esttest issuing CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caT, root, caKey.Public(), rootKey)
	if err != nil {
		return nil, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	a := &Authority{Root: root, CA: ca, RootKey: rootKey, CAKey: caKey,
		profiles: map[string]*authority.Profile{}, pending: map[string]time.Duration{},
		fail: map[string]error{}, pendingFor: map[string]int{}, serial: 100}
	for _, l := range append([]string{""}, labels...) {
		a.profiles[l] = &authority.Profile{Label: l, Validity: time.Hour, KeyType: "P-256",
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			RetryAfter: 2 * time.Second}
	}
	return a, nil
}

// SetProfile replaces (or adds) the profile of p.Label.
func (a *Authority) SetProfile(p authority.Profile) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.profiles[p.Label] = &p
}

// SetPending makes the next n Issue calls for label answer errs.Pending with retry d
// (n < 0: always).
func (a *Authority) SetPending(label string, n int, d time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.pending[label], a.pendingFor[label] = d, n
}

// SetError makes Issue for label return err (nil clears it).
func (a *Authority) SetError(label string, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.fail[label] = err
}

// Requests returns the requests Issue received.
func (a *Authority) Requests() []authority.CertRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]authority.CertRequest(nil), a.requests...)
}

// Profile implements est.Authority.
func (a *Authority) Profile(label string) (*authority.Profile, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := a.profiles[label]
	if !ok {
		return nil, errs.New(errs.NotFound, "unknown label %q", label)
	}
	cp := *p
	return &cp, nil
}

// CACerts implements est.Authority: issuing CA, then root.
func (a *Authority) CACerts(string) []*x509.Certificate {
	return []*x509.Certificate{a.CA, a.Root}
}

// Issue implements est.Authority: it signs a certificate with the CSR's subject and SANs.
func (a *Authority) Issue(ctx context.Context, r authority.CertRequest) (*authority.Issued, error) {
	a.mu.Lock()
	a.requests = append(a.requests, r)
	p, ok := a.profiles[r.Label]
	failErr := a.fail[r.Label]
	n, pend := a.pendingFor[r.Label]
	retry := a.pending[r.Label]
	if pend && n != 0 {
		if n > 0 {
			a.pendingFor[r.Label] = n - 1
		}
	} else {
		pend = false
	}
	a.serial++
	serial := a.serial
	a.mu.Unlock()
	if !ok {
		return nil, errs.New(errs.NotFound, "unknown label %q", r.Label)
	}
	if failErr != nil {
		return nil, failErr
	}
	if pend {
		return nil, errs.NewPending(fmt.Sprintf("req-%s", r.Label), retry)
	}
	if r.CSR == nil {
		return nil, errs.New(errs.BadRequest, "no CSR")
	}
	// The real authority's PoP-linking decision for a device (RFC 7030 §3.5); RAs are not
	// modelled here (authority tests cover them).
	switch {
	case r.Link == authority.LinkMismatched:
		return nil, errs.New(errs.BadRequest, "the challengePassword does not match this session (fake authority)")
	case r.Link == authority.LinkAbsent && p.RequirePoP:
		return nil, errs.New(errs.BadRequest, "the profile requires proof-of-possession linking (fake authority)")
	}
	pub := r.PublicKey
	if pub == nil {
		pub = r.CSR.PublicKey
	}
	now := time.Now()
	t := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: r.CSR.Subject,
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(p.Validity),
		KeyUsage: p.KeyUsage, ExtKeyUsage: p.ExtKeyUsage,
		DNSNames: r.CSR.DNSNames, IPAddresses: r.CSR.IPAddresses, EmailAddresses: r.CSR.EmailAddresses, URIs: r.CSR.URIs,
	}
	der, err := x509.CreateCertificate(rand.Reader, t, a.CA, pub, a.CAKey)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "signing failed")
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "signing failed")
	}
	return &authority.Issued{Cert: c, Chain: a.CACerts(r.Label), Serial: fmt.Sprintf("%x", serial)}, nil
}

// ClientCert issues a client certificate for cn from the issuing CA (e.g. a device identity
// for Peer chains), with extra extended key usage OIDs (e.g. id-kp-cmcRA for a registrar).
func (a *Authority) ClientCert(cn string, extraEKU ...asn1.ObjectIdentifier) (*x509.Certificate, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	a.mu.Lock()
	a.serial++
	serial := a.serial
	a.mu.Unlock()
	now := time.Now()
	t := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		UnknownExtKeyUsage: extraEKU,
	}
	der, err := x509.CreateCertificate(rand.Reader, t, a.CA, key.Public(), a.CAKey)
	if err != nil {
		return nil, nil, err
	}
	c, err := x509.ParseCertificate(der)
	return c, key, err
}

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
// certificate names localhost and 127.0.0.1; clients are required to present a certificate
// chaining to a.Root.
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
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	a.mu.Lock()
	a.serial++
	serial := a.serial
	a.mu.Unlock()
	srvT := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvT, a.CA, srvKey.Public(), a.CAKey)
	if err != nil {
		tb.Fatal(err)
	}
	devCert, devKey, err := a.ClientCert("device-1")
	if err != nil {
		tb.Fatal(err)
	}
	l, err := dtlsconn.Listen("udp", "127.0.0.1:0", dtlsconn.ServerConfig{
		Certificates: []tls.Certificate{{Certificate: [][]byte{srvDER, a.CA.Raw}, PrivateKey: srvKey}},
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
	return &DTLSServer{Addr: l.Addr().String(), Server: srv, DeviceCert: devCert, DeviceKey: devKey,
		Device: tls.Certificate{Certificate: [][]byte{devCert.Raw}, PrivateKey: devKey, Leaf: devCert}}
}

// WritePEM writes the root (root.pem), the issuing CA (ca.pem), and the device identity
// (device.pem, device.key, PKCS#8) into dir, for external tools such as coap-client and openssl.
func (s *DTLSServer) WritePEM(tb testing.TB, a *Authority, dir string) (root, ca, cert, key string) {
	tb.Helper()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			tb.Fatal(err)
		}
		return p
	}
	k, err := x509.MarshalPKCS8PrivateKey(s.DeviceKey)
	if err != nil {
		tb.Fatal(err)
	}
	return write("root.pem", "CERTIFICATE", a.Root.Raw), write("ca.pem", "CERTIFICATE", a.CA.Raw),
		write("device.pem", "CERTIFICATE", s.DeviceCert.Raw), write("device.key", "PRIVATE KEY", k)
}
