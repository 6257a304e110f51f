package client

import (
	"context"
	"crypto/x509"
	"strings"
	"testing"

	"coapca/oscore"
)

// TestDialESTRefusesIncompleteOptions: an association that would leave the server
// unauthenticated or the transport ambiguous is refused before any datagram is sent.
func TestDialESTRefusesIncompleteOptions(t *testing.T) {
	octx, err := oscore.NewContext(oscore.Params{MasterSecret: []byte("0123456789abcdef"), SenderID: []byte{1}, RecipientID: []byte{}})
	if err != nil {
		t.Fatal(err)
	}
	verify := func([][]byte) ([]*x509.Certificate, error) { return nil, nil }
	for _, tt := range []struct {
		name, url string
		o         ESTDialOptions
		want      string
	}{
		{"no host", "coaps://", ESTDialOptions{VerifyServer: verify}, "bad server URL"},
		{"https without OSCORE (EST over HTTPS has its own client)", "https://127.0.0.1", ESTDialOptions{VerifyServer: verify}, "needs a pre-shared OSCORE context"},
		{"http with EDHOC", "http://127.0.0.1:1", ESTDialOptions{EDHOC: true, VerifyServer: verify}, "needs a pre-shared OSCORE context"},
		{"ftp", "ftp://127.0.0.1", ESTDialOptions{VerifyServer: verify}, "unsupported scheme"},
		{"coaps without a server check", "coaps://127.0.0.1:1", ESTDialOptions{}, "check of the server's chain"},
		{"coap with neither OSCORE nor EDHOC", "coap://127.0.0.1:1", ESTDialOptions{VerifyServer: verify}, "exactly one"},
		{"coap with both", "coap://127.0.0.1:1", ESTDialOptions{OSCORE: octx, EDHOC: true, VerifyServer: verify}, "exactly one"},
		{"EDHOC without identity", "coap://127.0.0.1:1", ESTDialOptions{EDHOC: true, VerifyServer: verify}, "client identity"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := DialEST(context.Background(), tt.url, tt.o)
			if err == nil {
				c.Close()
				t.Fatal("dialed")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want it to mention %q", err, tt.want)
			}
		})
	}
}
