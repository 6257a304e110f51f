package client

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"coapca/authority"
	"coapca/coap"
	"coapca/est"
	"coapca/est/estcoap"
	"coapca/est/estserver"
	"coapca/est/esttest"
)

// testServer runs the EST-coaps binding on a real DTLS loopback listener, over the fake
// authority of esttest (the real authority has its own tests; this checks the wire).
type testServer struct {
	fa  *esttest.Authority
	srv *esttest.DTLSServer
}

func startServer(t *testing.T) *testServer {
	t.Helper()
	fa := esttest.New(t, "pop", "manual")
	fa.SetProfile(authority.Profile{Label: "pop", RequirePoP: true, KeyType: "P-256", Validity: time.Hour})
	mux := coap.NewMux()
	estcoap.New(estserver.New(fa, nil), estcoap.Options{Labels: []string{"pop", "manual"}}).Register(mux)
	return &testServer{fa: fa, srv: fa.StartDTLS(t, mux)}
}

func (s *testServer) dial(t *testing.T, blockSize int) *coap.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := coap.Dial(ctx, "coaps://"+s.srv.Addr, coap.ClientOptions{BlockSize: blockSize, DTLS: &coap.DTLSClientConfig{
		Certificates: []tls.Certificate{s.srv.Device}, RootCAs: Pool([]*x509.Certificate{s.fa.Root}), ServerName: "localhost",
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func newCSR(t *testing.T, cn, pw string) (crypto.Signer, []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := est.CreateCSR(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key, pw)
	if err != nil {
		t.Fatal(err)
	}
	return key, der
}

func TestESTOverDTLS(t *testing.T) {
	s := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := s.dial(t, 64) // small blocks: Block1 and Block2 on every request

	e := NewEST(c, ESTOptions{})
	cas, err := e.CACerts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(cas) != 2 || !cas[1].Equal(s.fa.Root) {
		t.Fatalf("cacerts: %d", len(cas))
	}
	mp, err := e.CACertsMultipart(ctx)
	if err != nil || len(mp) != 2 || !mp[0].Equal(cas[0]) {
		t.Fatalf("cacerts multipart: %v", err)
	}
	// Explicit TA database (RFC 7030 §4.1.3).
	taPath := filepath.Join(t.TempDir(), "explicit-ta.pem")
	if _, _, err := UpdateTrustAnchors(taPath, cas, c.Peer().Certificates, "localhost", time.Now()); err != nil {
		t.Fatal(err)
	}
	tas, err := ReadTrustAnchors(taPath)
	if err != nil || len(tas) != 2 {
		t.Fatalf("read TA: %v", err)
	}
	other := esttest.New(t)
	if _, _, err := UpdateTrustAnchors(taPath, []*x509.Certificate{other.Root}, c.Peer().Certificates, "localhost", time.Now()); err == nil {
		t.Error("trust anchors that do not validate the server were accepted")
	}

	key, csr := newCSR(t, "device-1", "")
	cert, err := e.Enroll(ctx, csr)
	if err != nil {
		t.Fatal(err)
	}
	if !key.Public().(*ecdsa.PublicKey).Equal(cert.PublicKey) {
		t.Error("enrolled certificate is for another key")
	}

	// PoP linking with the real tls-unique of this DTLS session.
	if len(e.TLSUnique()) == 0 {
		t.Fatal("no tls-unique on a DTLS session")
	}
	pop := NewEST(c, ESTOptions{Label: "pop", Accept: Cert})
	att, err := pop.CSRAttrs(ctx)
	if err != nil || !att.WantsChallengePassword() {
		t.Fatalf("csrattrs: %v", err)
	}
	_, csr = newCSR(t, "device-1", base64.StdEncoding.EncodeToString(pop.TLSUnique()))
	if _, err := pop.Reenroll(ctx, csr); err != nil {
		t.Fatalf("PoP-linked reenroll: %v", err)
	}
	_, csr = newCSR(t, "device-1", base64.StdEncoding.EncodeToString([]byte("another session")))
	var se *StatusError
	if _, err := pop.Enroll(ctx, csr); !errors.As(err, &se) || se.Code != codes.BadRequest {
		t.Fatalf("PoP mismatch: %v", err)
	}

	// Server-side key generation, both resources.
	for _, acc := range []CertFormat{PKCS7, Cert} {
		_, csr = newCSR(t, "device-1", "")
		sk, err := NewEST(c, ESTOptions{Accept: acc}).ServerKeyGen(ctx, csr)
		if err != nil {
			t.Fatal(err)
		}
		want := est.CFPKCS7CertsOnly
		if acc == Cert {
			want = est.CFPKIXCert
		}
		if sk.Format != want || sk.Key == nil {
			t.Errorf("skg accept %v: format %d", acc, sk.Format)
		}
	}

	links, err := Discover(ctx, c)
	if err != nil || len(links) != 18 {
		t.Fatalf("discovery: %d links, %v", len(links), err)
	}

	// Unknown label: 4.04 with the server's diagnostic.
	if _, err := NewEST(c, ESTOptions{Label: "nope"}).CACerts(ctx); !errors.As(err, &se) || se.Code != codes.NotFound || se.Diagnostic == "" {
		t.Fatalf("unknown label: %v", err)
	}
}

func TestESTFollowsDelayedResponses(t *testing.T) {
	s := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := s.dial(t, 0)
	s.fa.SetPending("manual", 2, 7*time.Second)
	var progress []Progress
	var slept []time.Duration
	e := NewEST(c, ESTOptions{Label: "manual", Wait: time.Minute, OnProgress: func(p Progress) { progress = append(progress, p) }})
	e.sleep = func(_ context.Context, d time.Duration) error { slept = append(slept, d); return nil }
	_, csr := newCSR(t, "device-1", "")
	if _, err := e.Enroll(ctx, csr); err != nil {
		t.Fatal(err)
	}
	if len(progress) != 2 || progress[1].Attempt != 2 || progress[0].RetryAfter != 7*time.Second || len(slept) != 2 {
		t.Fatalf("progress %+v slept %v", progress, slept)
	}
	reqs := s.fa.Requests()
	if len(reqs) != 3 || !bytes.Equal(reqs[0].CSR.Raw, reqs[2].CSR.Raw) {
		t.Errorf("the identical CSR must be resent: %d requests", len(reqs))
	}

	// Deadline shorter than Max-Age: give up with a PendingError.
	s.fa.SetPending("manual", -1, 30*time.Second)
	e = NewEST(c, ESTOptions{Label: "manual", Wait: 10 * time.Second})
	var pe *PendingError
	if _, err := e.Enroll(ctx, csr); !errors.As(err, &pe) || pe.RetryAfter != 30*time.Second {
		t.Fatalf("pending: %v", err)
	}
}

func TestTrustAnchorFiles(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "ta.pem")
	if tas, err := ReadTrustAnchors(p); err != nil || tas != nil {
		t.Fatalf("missing file: %v %v", tas, err)
	}
	if err := WriteTrustAnchors(p, nil); err == nil {
		t.Error("empty set written")
	}
	fa := esttest.New(t)
	if err := WriteTrustAnchors(p, []*x509.Certificate{fa.CA, fa.Root}); err != nil {
		t.Fatal(err)
	}
	tas, err := ReadTrustAnchors(p)
	if err != nil || len(tas) != 2 || !tas[0].Equal(fa.CA) {
		t.Fatalf("read: %v", err)
	}
	leaf := fa.ClientCert(t, "x").Cert
	if _, err := verifyChain(leaf, nil, tas, time.Now()); err != nil {
		t.Errorf("verify: %v", err)
	}
	if _, err := verifyChain(leaf, nil, []*x509.Certificate{fa.Root}, time.Now()); err == nil {
		t.Error("verified without the intermediate")
	}
}

func TestParseCertFormat(t *testing.T) {
	for in, want := range map[string]CertFormat{"pkcs7": PKCS7, "": PKCS7, "cert": Cert, "287": Cert} {
		if got, err := ParseCertFormat(in); err != nil || got != want {
			t.Errorf("%q: %v %v", in, got, err)
		}
	}
	if _, err := ParseCertFormat("der"); err == nil {
		t.Error("accepted der")
	}
}

func TestSplitServerURL(t *testing.T) {
	for _, tc := range []struct{ in, url, label string }{
		{"coaps://localhost", "coaps://localhost", ""},
		{"coaps://[::1]:5684/", "coaps://[::1]:5684", ""},
		{"coaps://h:1/lbl", "coaps://h:1", "lbl"},
		{"coaps://h/.well-known/est/lbl", "coaps://h", "lbl"},
		{"coaps://h/.well-known/est", "coaps://h", ""},
	} {
		u, l, err := SplitServerURL(tc.in)
		if err != nil || u != tc.url || l != tc.label {
			t.Errorf("%s: %q %q %v", tc.in, u, l, err)
		}
	}
	for _, bad := range []string{"https://h", "coaps://", "coaps://h/a/b", "h:5684"} {
		if _, _, err := SplitServerURL(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

// TestESTIssuedCertificateChecked: the client saves an issued certificate only when it
// certifies the requested key and chains to the trust anchors (issue 8, requirement 6) — here
// an authenticated session whose CA answers with a certificate that does not chain to the
// anchors the client was given.
func TestESTIssuedCertificateChecked(t *testing.T) {
	s := startServer(t)
	foreign := esttest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := s.dial(t, 256)
	for _, tc := range []struct {
		name  string
		trust []*x509.Certificate
		ok    bool
	}{
		{"chains to the anchors (issuing CA fetched from /crts)", []*x509.Certificate{s.fa.Root}, true},
		{"attack: issued under a CA the client does not trust", []*x509.Certificate{foreign.Root}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := NewEST(c, ESTOptions{Trust: tc.trust})
			_, csr := newCSR(t, "dev-chain", "")
			cert, err := e.Enroll(ctx, csr)
			if tc.ok != (err == nil) || !tc.ok && cert != nil {
				t.Fatalf("Enroll: %v, %v", cert, err)
			}
			_, csr = newCSR(t, "dev-chain", "")
			sk, err := e.ServerKeyGen(ctx, csr)
			if tc.ok != (err == nil) || !tc.ok && sk != nil {
				t.Fatalf("ServerKeyGen: %v, %v", sk, err)
			}
		})
	}
}
