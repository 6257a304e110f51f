package dtlsconn

import (
	"bytes"
	"crypto/x509"
	"errors"
	"testing"

	"coapca/internal/testpki"
)

// TestDialServerChain: Dial still refuses a server whose chain does not verify (pion's check,
// which the chain reuse of parsedChain must not bypass), and reports the chain the server sent,
// whichever way it was obtained (pion's parsed certificates, VerifyPeer, or parsed in newConn).
func TestDialServerChain(t *testing.T) {
	p := testPKI(t)
	l := listen(t, serverConfig(p))
	serve(t, l)
	other := testpki.NewCA(t, "other CA")
	refuse := errors.New("refused by VerifyPeer")
	for _, tc := range []struct {
		name string
		cfg  func(*ClientConfig)
		ok   bool
	}{
		{"chain verified against RootCAs", func(*ClientConfig) {}, true},
		{"InsecureSkipVerify: no verified chain, parsed in newConn", func(c *ClientConfig) {
			c.RootCAs, c.InsecureSkipVerify = nil, true
		}, true},
		{"VerifyPeer's chain", func(c *ClientConfig) {
			c.VerifyPeer = poolVerifier(p.pool, x509.ExtKeyUsageServerAuth)
		}, true},
		{"attack: server chain under a CA the client does not trust", func(c *ClientConfig) {
			c.RootCAs = other.Pool()
		}, false},
		{"attack: server certificate for another name", func(c *ClientConfig) {
			c.ServerName = "evil.example"
		}, false},
		{"attack: trusted chain that VerifyPeer refuses", func(c *ClientConfig) {
			c.VerifyPeer = func([][]byte) ([]*x509.Certificate, error) { return nil, refuse }
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := clientConfig(p)
			tc.cfg(&cfg)
			c, err := dialOnly(t, l, cfg, 0)
			if !tc.ok {
				if err == nil {
					_ = c.Close()
					t.Fatal("handshake succeeded")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			got := c.PeerCertificates()
			if len(got) != len(p.server.Certificate) {
				t.Fatalf("%d peer certificates, the server sent %d", len(got), len(p.server.Certificate))
			}
			for i, der := range p.server.Certificate {
				if !bytes.Equal(got[i].Raw, der) {
					t.Fatalf("peer certificate %d is not the one the server sent", i)
				}
			}
		})
	}
}

// TestParsedChain: a certificate is reused only when its DER is the one received; anything
// else leaves the parsing to newConn.
func TestParsedChain(t *testing.T) {
	ca := testpki.NewCA(t, "chain CA")
	leaf := ca.Server(t, "localhost").Cert
	other := testpki.NewCA(t, "other CA").Cert
	raw := [][]byte{leaf.Raw, ca.Cert.Raw}
	for _, tc := range []struct {
		name   string
		raw    [][]byte
		chains [][]*x509.Certificate
		want   []*x509.Certificate // nil: parse in newConn
	}{
		{"leaf and anchor from the verified chain", raw, [][]*x509.Certificate{{leaf, ca.Cert}}, []*x509.Certificate{leaf, ca.Cert}},
		{"found across chains", raw, [][]*x509.Certificate{{leaf, other}, {leaf, ca.Cert}}, []*x509.Certificate{leaf, ca.Cert}},
		{"no verified chains (InsecureSkipVerify)", raw, nil, nil},
		{"a received certificate not in the chains", raw, [][]*x509.Certificate{{leaf, other}}, nil},
		{"nothing received", nil, [][]*x509.Certificate{{leaf}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := parsedChain(tc.raw, tc.chains)
			if len(got) != len(tc.want) {
				t.Fatalf("got %d certificates, want %d", len(got), len(tc.want))
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("certificate %d: got %s, want %s", i, got[i].Subject, tc.want[i].Subject)
				}
			}
		})
	}
}
