package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"

	"coapca/client"
)

// httpsFlags are the flags of `coapca est` that only EST over HTTPS uses.
type httpsFlags struct {
	user, passwordFile string
	tls12              bool
}

func addHTTPSFlags(fs *flag.FlagSet, h *httpsFlags) {
	fs.StringVar(&h.user, "user", "", "https://: HTTP Basic user name (RFC 7030 §3.2.3); needs --password-file")
	fs.StringVar(&h.passwordFile, "password-file", "", "https://: file holding the HTTP Basic password (first line)")
	fs.BoolVar(&h.tls12, "tls12", false, "https://: use TLS 1.2 (tls-unique for --pop) instead of TLS 1.3 (tls-exporter)")
}

// dialESTHTTPS makes the EST over HTTPS client of --server https://host[:port][/label]: the
// server checked as for EST-coaps (serverVerifier: explicit TAs, else --trust, serverAuth or
// cmcRA, the host's name), the client authenticated by --cert/--key or HTTP Basic.
func dialESTHTTPS(f *estFlags, u *url.URL, stderr io.Writer) (io.Closer, client.ESTClient, error) {
	if f.oscoreFile != "" || f.edhoc || f.aceURL != "" {
		return nil, nil, usagef("--oscore and --edhoc go with coap:// (EST-oscore), not https://")
	}
	if f.accept != "" && f.accept != "pkcs7" {
		return nil, nil, usagef("--accept %s: EST over HTTPS returns certificates as PKCS#7 only (RFC 7030 §4.2.3)", f.accept)
	}
	f.host = u.Hostname()
	opts := client.HTTPSOptions{Wait: f.wait, KeyDecrypter: f.keyDecrypter, KeyPackage: f.keyPackage, SymKeyEncapsulation: f.symKeyEnc}
	if f.cert != "" || f.key != "" {
		if f.cert == "" || f.key == "" {
			return nil, nil, usagef("--cert and --key go together")
		}
		p, err := tls.LoadX509KeyPair(f.cert, f.key)
		if err != nil {
			return nil, nil, fmt.Errorf("client identity: %w", err)
		}
		opts.Certificates = []tls.Certificate{p}
	}
	h := f.https
	switch {
	case h.user != "" && h.passwordFile == "":
		return nil, nil, usagef("--user needs --password-file")
	case h.user == "" && h.passwordFile != "":
		return nil, nil, usagef("--password-file needs --user")
	case h.user != "":
		b, err := os.ReadFile(h.passwordFile)
		if err != nil {
			return nil, nil, fmt.Errorf("--password-file: %w", err)
		}
		pw, _, _ := strings.Cut(string(b), "\n")
		opts.User, opts.Password = h.user, strings.TrimRight(pw, "\r")
	}
	if h.tls12 {
		opts.MaxVersion = tls.VersionTLS12
	}
	verify, err := serverVerifier(f, u.Hostname(), stderr)
	if err != nil {
		return nil, nil, err
	}
	opts.VerifyServer, opts.Trust = verify, f.anchors
	opts.OnProgress = func(p client.Progress) {
		if p.Reconnected {
			fmt.Fprintf(stderr, "the server is not reachable (%s); trying again while --wait lasts\n", p.Diagnostic)
			return
		}
		msg := fmt.Sprintf("pending: /%s not ready, retrying in %v (attempt %d)", p.Function, p.RetryAfter, p.Attempt)
		if p.Diagnostic != "" {
			msg += ": " + p.Diagnostic
		}
		fmt.Fprintln(stderr, msg)
	}
	c, err := client.NewHTTPS(u.String(), opts)
	if err != nil {
		return nil, nil, usagef("--server: %v", err)
	}
	f.serverChain = func() []*x509.Certificate { return c.ServerChain() }
	f.binding = func(ctx context.Context) ([]byte, error) { return c.ChannelBinding(ctx) }
	return c, c, nil
}
