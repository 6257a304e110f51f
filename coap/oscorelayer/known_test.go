package oscorelayer

import (
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"coapca/coap"
	"coapca/edhoc"
	"coapca/internal/testpki"
)

// handshake runs EDHOC with cred/key against f and one protected GET; it reports whether the
// server accepted the Initiator, and which certificate the resource saw.
func handshake(t *testing.T, f *fixture, cred *edhoc.Credential, key crypto.PrivateKey) (*x509.Certificate, error) {
	t.Helper()
	ec, err := NewEDHOCClient(EDHOCConfig{Credential: cred, PrivateKey: key, VerifyPeer: f.pki.verify})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := coap.Dial(ctx, f.url, coap.ClientOptions{Layer: ec, BlockSize: 256})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, err := c.Do(ctx, &coap.ClientRequest{Method: codes.GET, Path: "/r"})
	if err != nil {
		return nil, err
	}
	if resp.Code != codes.Content {
		return nil, fmt.Errorf("answered %v", resp.Code)
	}
	f.seen.mu.Lock()
	defer f.seen.mu.Unlock()
	if len(f.seen.peer.Certificates) == 0 {
		return nil, errors.New("no certificate reached the resource")
	}
	return f.seen.peer.Certificates[0], nil
}

// byRef is an X.509 credential of leaf identified by x5t, or by kid when kid is set.
func byRef(t *testing.T, leaf *x509.Certificate, kid []byte) *edhoc.Credential {
	t.Helper()
	cred, err := edhoc.NewX509Credential([]*x509.Certificate{leaf}, edhoc.ByX5T)
	if err != nil {
		t.Fatal(err)
	}
	if kid != nil {
		cred.ID = edhoc.IDCredKid(kid)
	}
	return cred
}

func byValue(t *testing.T, leaf *x509.Certificate) *edhoc.Credential {
	t.Helper()
	cred, err := edhoc.NewX509Credential([]*x509.Certificate{leaf}, edhoc.ByX5Chain)
	if err != nil {
		t.Fatal(err)
	}
	return cred
}

// TestEDHOCInitiatorByReference: an Initiator may identify its certificate by x5t or kid
// (RFC 9528 §3.5.3, RFC 9360 §2) once the server knows it (an earlier handshake by value, or
// LookupCredential); every attempt to pass a reference off as a credential it is not, or to
// use one whose trust was withdrawn, is refused.
func TestEDHOCInitiatorByReference(t *testing.T) {
	ski := []byte{0x5e, 0x11, 0x50, 0x17}
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, f *fixture, dev *testpki.Leaf, other *testpki.Leaf, lookup *atomic.Pointer[[]byte]) (*x509.Certificate, error)
		ok   bool
	}{
		{"x5t after a handshake by value", func(t *testing.T, f *fixture, dev, _ *testpki.Leaf, lookup *atomic.Pointer[[]byte]) (*x509.Certificate, error) {
			if _, err := handshake(t, f, byValue(t, dev.Cert), dev.Key); err != nil {
				t.Fatalf("by value: %v", err)
			}
			return handshake(t, f, byRef(t, dev.Cert, nil), dev.Key)
		}, true},
		{"kid (Subject Key Identifier) after a handshake by value", func(t *testing.T, f *fixture, dev, _ *testpki.Leaf, lookup *atomic.Pointer[[]byte]) (*x509.Certificate, error) {
			if _, err := handshake(t, f, byValue(t, dev.Cert), dev.Key); err != nil {
				t.Fatalf("by value: %v", err)
			}
			return handshake(t, f, byRef(t, dev.Cert, ski), dev.Key)
		}, true},
		{"x5t found by LookupCredential", func(t *testing.T, f *fixture, dev, _ *testpki.Leaf, lookup *atomic.Pointer[[]byte]) (*x509.Certificate, error) {
			lookup.Store(&dev.Cert.Raw)
			return handshake(t, f, byRef(t, dev.Cert, nil), dev.Key)
		}, true},
		{"x5t never seen", func(t *testing.T, f *fixture, dev, _ *testpki.Leaf, lookup *atomic.Pointer[[]byte]) (*x509.Certificate, error) {
			return handshake(t, f, byRef(t, dev.Cert, nil), dev.Key)
		}, false},
		{"LookupCredential returns a certificate the x5t does not name", func(t *testing.T, f *fixture, dev, other *testpki.Leaf, lookup *atomic.Pointer[[]byte]) (*x509.Certificate, error) {
			lookup.Store(&other.Cert.Raw)
			return handshake(t, f, byRef(t, dev.Cert, nil), other.Key)
		}, false},
		{"LookupCredential returns a certificate the kid does not name", func(t *testing.T, f *fixture, _, _ *testpki.Leaf, lookup *atomic.Pointer[[]byte]) (*x509.Certificate, error) {
			ca := &testpki.CA{Cert: f.pki.ca, Key: f.pki.caKey, Chain: []*x509.Certificate{f.pki.ca}}
			third := ca.NewLeaf(t, &x509.Certificate{Subject: pkix.Name{CommonName: "third"}, SubjectKeyId: []byte{3}})
			lookup.Store(&third.Cert.Raw)
			return handshake(t, f, byRef(t, third.Cert, ski), third.Key)
		}, false},
		{"x5t of a certificate revoked since", func(t *testing.T, f *fixture, dev, _ *testpki.Leaf, lookup *atomic.Pointer[[]byte]) (*x509.Certificate, error) {
			if _, err := handshake(t, f, byValue(t, dev.Cert), dev.Key); err != nil {
				t.Fatalf("by value: %v", err)
			}
			f.pki.revoked.Store(string(dev.Cert.Raw), true)
			return handshake(t, f, byRef(t, dev.Cert, nil), dev.Key)
		}, false},
		{"another device's x5t with its own key (impersonation)", func(t *testing.T, f *fixture, dev, other *testpki.Leaf, lookup *atomic.Pointer[[]byte]) (*x509.Certificate, error) {
			if _, err := handshake(t, f, byValue(t, dev.Cert), dev.Key); err != nil {
				t.Fatalf("by value: %v", err)
			}
			return handshake(t, f, byRef(t, dev.Cert, nil), other.Key)
		}, false},
		{"kid claimed by two certificates", func(t *testing.T, f *fixture, dev, other *testpki.Leaf, lookup *atomic.Pointer[[]byte]) (*x509.Certificate, error) {
			for _, l := range []*testpki.Leaf{dev, other} {
				if _, err := handshake(t, f, byValue(t, l.Cert), l.Key); err != nil {
					t.Fatalf("by value: %v", err)
				}
			}
			return handshake(t, f, byRef(t, dev.Cert, ski), dev.Key)
		}, false},
		{"kid not known", func(t *testing.T, f *fixture, dev, _ *testpki.Leaf, lookup *atomic.Pointer[[]byte]) (*x509.Certificate, error) {
			return handshake(t, f, byRef(t, dev.Cert, ski), dev.Key)
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var lookup atomic.Pointer[[]byte]
			f := newFixture(t, ServerConfig{LookupCredential: func(*edhoc.IDCred) ([][]byte, error) {
				if der := lookup.Load(); der != nil {
					return [][]byte{*der}, nil
				}
				return nil, nil
			}}, nil)
			ca := &testpki.CA{Cert: f.pki.ca, Key: f.pki.caKey, Chain: []*x509.Certificate{f.pki.ca}}
			dev := ca.NewLeaf(t, &x509.Certificate{Subject: pkix.Name{CommonName: "device-ref"}, SubjectKeyId: ski})
			other := ca.NewLeaf(t, &x509.Certificate{Subject: pkix.Name{CommonName: "other"}, SubjectKeyId: ski})
			got, err := tc.run(t, f, dev, other, &lookup)
			if tc.ok != (err == nil) {
				t.Fatalf("accepted = %v (%v), want %v", err == nil, err, tc.ok)
			}
			if tc.ok && got.Subject.CommonName != "device-ref" {
				t.Fatalf("the resource saw %v", got.Subject)
			}
		})
	}
}

// TestKnownCredentialsBounded: the index of chains keeps at most its bound, dropping the
// least recently used.
func TestKnownCredentialsBounded(t *testing.T) {
	ca := testpki.NewCA(t, "ca")
	k := newKnownCreds(3)
	var leaves []*x509.Certificate
	for i := range 5 {
		l := ca.NewLeaf(t, &x509.Certificate{Subject: pkix.Name{CommonName: fmt.Sprint("d", i)}})
		leaves = append(leaves, l.Cert)
		k.add([][]byte{l.Cert.Raw})
		if i == 2 {
			x := edhoc.IDCredX5T(leaves[0].Raw) // used: leaves[0] becomes the most recent
			if k.lookup(&x) == nil {
				t.Fatal("d0 not found")
			}
		}
	}
	for i, want := range []bool{true, false, false, true, true} {
		x := edhoc.IDCredX5T(leaves[i].Raw)
		if got := k.lookup(&x) != nil; got != want {
			t.Errorf("d%d known = %v, want %v", i, got, want)
		}
	}
	if k.order.Len() != 3 || len(k.byX5T) != 3 {
		t.Fatalf("index holds %d/%d entries, want 3", k.order.Len(), len(k.byX5T))
	}
}
