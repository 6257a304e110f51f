package estcoap_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"coapca/coap"
	"coapca/errs"
	"coapca/est"
	"coapca/est/estcoap"
	"coapca/est/estserver"
	"coapca/est/esttest"
)

// syncBuffer is a log sink the server goroutines write while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestInternalErrorTextStaysInTheLog is the attack of issue 8 (requirement 9): a device
// enrolls over coaps:// on loopback while the authority fails with an internal error whose
// text names a secret (a database URL with its password, a key path). The device must see
// only 5.00 "internal error"; the operator's log must have the detail.
func TestInternalErrorTextStaysInTheLog(t *testing.T) {
	const secret = "postgres://coapca:hunter2@db.internal:5432/ca"
	fa := esttest.New(t, "lbl")
	var logs syncBuffer
	mux := coap.NewMux()
	estcoap.New(estserver.New(fa, nil), estcoap.Options{Labels: []string{"lbl"},
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}).Register(mux)
	srv := fa.StartDTLS(t, mux)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	roots := x509.NewCertPool()
	roots.AddCert(fa.Root)
	c, err := coap.Dial(ctx, "coaps://"+srv.Addr, coap.ClientOptions{DTLS: &coap.DTLSClientConfig{
		Certificates: []tls.Certificate{srv.Device}, RootCAs: roots, ServerName: "localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, err := est.CreateCSR(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "device-1"}}, key, "")
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		fail error
	}{
		{"typed internal with the secret in its message", errs.Wrap(errs.Internal, errors.New("connection refused"), "store %s unreachable", secret)},
		{"typed internal with the secret in its cause", errs.Wrap(errs.Internal, fmt.Errorf("dial %s: connection refused", secret), "recording failed")},
		{"untyped error", fmt.Errorf("pkcs11: token at %s: CKR_PIN_INCORRECT", secret)},
		{"wrapped typed internal", fmt.Errorf("issue: %w", errs.New(errs.Internal, "signing with %s failed", secret))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fa.SetError("lbl", tc.fail)
			before := len(logs.String())
			resp, err := c.Do(ctx, &coap.ClientRequest{Method: codes.POST, Path: estcoap.DefaultRoot + "/lbl/sen",
				ContentFormat: coap.CF(est.CFPKCS10), Payload: csr})
			if err != nil {
				t.Fatal(err)
			}
			if resp.Code != codes.InternalServerError {
				t.Fatalf("code %v, want 5.00", resp.Code)
			}
			if got := string(resp.Payload); got != "internal error" {
				t.Errorf("diagnostic %q, want only the kind", got)
			}
			if strings.Contains(string(resp.Payload), "hunter2") {
				t.Errorf("the peer saw the secret: %q", resp.Payload)
			}
			if l := logs.String()[before:]; !strings.Contains(l, "hunter2") || !strings.Contains(l, "level=ERROR") {
				t.Errorf("the log lacks the detail at error level:\n%s", l)
			}
		})
	}
	fa.SetError("lbl", nil)
}

// TestMalformedCSRDiagnosticOverDTLS: a CSR that is DER but not PKCS#10 (the asn1 package
// answers with a Go struct dump of its field parameters) gets a short one-line 4.00
// diagnostic over the wire.
func TestMalformedCSRDiagnosticOverDTLS(t *testing.T) {
	fa := esttest.New(t)
	mux := coap.NewMux()
	estcoap.New(estserver.New(fa, nil), estcoap.Options{}).Register(mux)
	srv := fa.StartDTLS(t, mux)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	roots := x509.NewCertPool()
	roots.AddCert(fa.Root)
	c, err := coap.Dial(ctx, "coaps://"+srv.Addr, coap.ClientOptions{DTLS: &coap.DTLSClientConfig{
		Certificates: []tls.Certificate{srv.Device}, RootCAs: roots, ServerName: "localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, body := range [][]byte{
		{0x30, 0x03, 0x02, 0x01, 0x00},             // SEQUENCE { INTEGER 0 }: tags don't match
		{0x30, 0x05, 0x30, 0x03, 0x02, 0x01, 0x00}, // nested, still not a CertificationRequest
		srv.DeviceCert.Raw,                         // a certificate, not a request
		[]byte("not a csr"),
	} {
		resp, err := c.Do(ctx, &coap.ClientRequest{Method: codes.POST, Path: estcoap.DefaultRoot + "/sen",
			ContentFormat: coap.CF(est.CFPKCS10), Payload: body})
		if err != nil {
			t.Fatal(err)
		}
		d := string(resp.Payload)
		if resp.Code != codes.BadRequest || !strings.HasPrefix(d, "malformed CSR: not a DER PKCS#10 request") ||
			strings.ContainsAny(d, "{}\n") || len(d) > 120 {
			t.Errorf("% x: %v %q", body[:min(len(body), 8)], resp.Code, d)
		}
	}
}
