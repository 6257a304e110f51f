package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"coapca/coap"
	"coapca/coap/dtlsconn"
	"coapca/est/esttest"
)

// TestCMPOverCoAPSResendsWhatTheServerDidNotTake is the attack of a server restart under a CMP
// client over coaps://: the stopping server ends the DTLS session (close_notify) and a new
// server comes up on the same address. The old transport failed ("endpoint closed" or a
// minute of retransmissions into the dead session). The message, which the server did not take,
// must go again over a new session with the restarted server, and be handled once.
func TestCMPOverCoAPSResendsWhatTheServerDidNotTake(t *testing.T) {
	fa := esttest.New(t)
	var served atomic.Int32
	answer := func(tag string) *coap.Mux {
		mux := coap.NewMux()
		mux.Handle(coap.Resource{Path: cmpDefaultPath, Handler: coap.HandlerFunc(func(ctx context.Context, r *coap.Request) *coap.Response {
			served.Add(1)
			resp := coap.NewResponse(codes.Changed, append([]byte(tag+":"), r.Payload...))
			resp.ContentFormat = coap.CF(cmpContentFormat)
			return resp
		})})
		return mux
	}
	first := fa.StartDTLS(t, answer("first"))
	tr, err := DialCMP(context.Background(), "coaps://"+first.Addr, CMPTransportOptions{DTLS: &dtlsconn.ClientConfig{
		Certificates: []tls.Certificate{first.Device}, RootCAs: Pool([]*x509.Certificate{fa.Root}), ServerName: "localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	tr.(*coapCMP).sleep = func(ctx context.Context, d time.Duration) error { return ctx.Err() } // no backoff waits
	if got, err := tr.RoundTrip(context.Background(), []byte("ir")); err != nil || string(got) != "first:ir" {
		t.Fatalf("before the restart: %q %v", got, err)
	}

	// The server stops (its session ends with close_notify) before the next message.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := first.Server.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	// The restarted server, on the same address, with a certificate of the same CA.
	l, err := dtlsconn.Listen("udp", first.Addr, dtlsconn.ServerConfig{
		Certificates: []tls.Certificate{fa.PKI.Server(t).TLS()}, ClientAuth: dtlsconn.RequireClientCert,
		VerifyPeer: ParseChain,
	})
	if err != nil {
		t.Fatal(err)
	}
	second := coap.NewServer(answer("second"), coap.Config{})
	done := make(chan error, 1)
	go func() { done <- second.ServeDTLS(l) }()
	defer func() { second.Close(); <-done }()

	got, err := tr.RoundTrip(context.Background(), []byte("pollReq"))
	if err != nil || string(got) != "second:pollReq" {
		t.Fatalf("after the restart: %q %v", got, err)
	}
	if n := served.Load(); n != 2 {
		t.Fatalf("%d messages handled, want 2 (each once)", n)
	}
}

// TestCMPOverCoAPWaitsOut503: a 5.03 with Max-Age (a server that is stopping, RFC 7252
// §5.9.3.4) makes the transport wait Max-Age and send the message again.
func TestCMPOverCoAPWaitsOut503(t *testing.T) {
	fa := esttest.New(t)
	var calls atomic.Int32
	mux := coap.NewMux()
	mux.Handle(coap.Resource{Path: cmpDefaultPath, Handler: coap.HandlerFunc(func(ctx context.Context, r *coap.Request) *coap.Response {
		if calls.Add(1) == 1 {
			resp := coap.NewResponse(codes.ServiceUnavailable, []byte("server shutting down"))
			resp.MaxAge = coap.MaxAge(5)
			return resp
		}
		resp := coap.NewResponse(codes.Changed, r.Payload)
		resp.ContentFormat = coap.CF(cmpContentFormat)
		return resp
	})})
	srv := fa.StartDTLS(t, mux)
	tr, err := DialCMP(context.Background(), "coaps://"+srv.Addr, CMPTransportOptions{DTLS: &dtlsconn.ClientConfig{
		Certificates: []tls.Certificate{srv.Device}, RootCAs: Pool([]*x509.Certificate{fa.Root}), ServerName: "localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	var slept []time.Duration
	tr.(*coapCMP).sleep = func(ctx context.Context, d time.Duration) error { slept = append(slept, d); return nil }
	got, err := tr.RoundTrip(context.Background(), []byte("ir"))
	if err != nil || string(got) != "ir" {
		t.Fatalf("RoundTrip: %q %v", got, err)
	}
	if len(slept) != 1 || slept[0] != 5*time.Second {
		t.Fatalf("waited %v, want once 5s (Max-Age)", slept)
	}
}
