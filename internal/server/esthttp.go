package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"coapca/cmp/cmphttp"
	"coapca/est/esthttp"
)

// estHTTPSRealm is the realm of the HTTP Basic challenge (RFC 7030 §3.2.3).
const estHTTPSRealm = "coapca EST"

// startESTHTTPS serves EST over HTTPS (RFC 7030) on addr: TLS 1.2 and 1.3 with the server
// certificate of the data directory; client certificates are requested, not required (RFC 7030
// §3.3: a client may authenticate with HTTP Basic instead, and /cacerts needs no
// authentication, §4.1.1), and a certificate that is sent must pass the authority's
// VerifyClient, as on the DTLS listener. The timeouts and size caps are those of the CMP HTTP
// listener (http.* in the configuration).
func (s *Server) startESTHTTPS(ctx context.Context, addr string) error {
	tlsCfg := &tls.Config{
		Certificates: []tls.Certificate{s.data.ServerCertificate()},
		MinVersion:   tls.VersionTLS12,
		ClientAuth:   tls.RequestClientCert,
		// VerifyConnection, unlike VerifyPeerCertificate, runs on resumed sessions too.
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return nil // Basic credentials or none: the authority decides per request
			}
			raw := make([][]byte, len(cs.PeerCertificates))
			for i, c := range cs.PeerCertificates {
				raw[i] = c.Raw
			}
			_, err := s.auth.VerifyClient(raw)
			return err
		},
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("https listener %s: %w", addr, err)
	}
	s.https = ln
	hc := s.cfg.HTTP
	maxBody := hc.MaxBodySize
	if maxBody <= 0 {
		maxBody = defaultMaxBody
	}
	opts := esthttp.Options{MaxBody: maxBody, Logger: s.log}
	if len(s.cfg.Authority.Users) > 0 {
		opts.BasicRealm = estHTTPSRealm
	}
	mux := http.NewServeMux()
	esthttp.New(s.est, opts).Register(mux)
	hs := cmphttp.NewServer(http.MaxBytesHandler(s.withOSCORE(mux, maxBody), maxBody), cmphttp.Limits{
		ReadHeaderTimeout: hc.ReadHeaderTimeout, ReadTimeout: hc.ReadTimeout, WriteTimeout: hc.WriteTimeout,
		IdleTimeout: hc.IdleTimeout, MaxHeaderBytes: hc.MaxHeaderBytes}, s.log)
	s.httpServers = append(s.httpServers, hs)
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		if err := hs.Serve(tls.NewListener(ln, tlsCfg)); err != nil && !errors.Is(err, http.ErrServerClosed) && ctx.Err() == nil {
			s.log.Error("https listener stopped", "err", err)
		}
	}()
	go func() {
		defer s.wg.Done()
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = hs.Shutdown(shut)
		_ = hs.Close()
	}()
	return nil
}

// HTTPSURL is https://host:port of the EST over HTTPS listener, for a local client ("" when
// listen.https is off).
func (s *Server) HTTPSURL() string {
	if s.https == nil {
		return ""
	}
	return s.httpsURL()
}

// httpsURL is https://host:port of the EST listener, for a local client.
func (s *Server) httpsURL() string { return "https://" + connectHost(s.https.Addr(), "443") }

// printESTHTTPSWelcome prints the commands that use the EST over HTTPS listener.
func (s *Server) printESTHTTPSWelcome(w io.Writer, self string, rel func(string) string) {
	if s.https == nil {
		return
	}
	url := s.httpsURL()
	d := s.data
	fmt.Fprintf(w, "coapca: EST over HTTPS on %s/.well-known/est (listening on %s)\n\n", url, s.https.Addr())
	root, dev, devKey := rel(d.Paths.Root), rel(d.Paths.Device), rel(d.Paths.DeviceKey)
	fmt.Fprintf(w, `EST over HTTPS (RFC 7030) with curl and openssl:
  curl -s --cacert %s %s/.well-known/est/cacerts | openssl base64 -d -A | openssl pkcs7 -inform DER -print_certs
`, root, url)
	if s.demo {
		fmt.Fprintf(w, `  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout https.key \
      -subj /CN=demo-device-0001 -outform DER | openssl base64 -A > csr.b64
  curl -s --cacert %s --cert %s --key %s -H 'Content-Type: application/pkcs10' \
      --data-binary @csr.b64 %s/.well-known/est/simpleenroll | openssl base64 -d -A | openssl pkcs7 -inform DER -print_certs

and with coapca:
  %s est enroll --server %s --trust %s --cert %s --key %s \
      --subject CN=demo-device-0001 --key-out https.key --out https.pem
`, root, dev, devKey, url, self, url, root, dev, devKey)
	}
	if len(s.cfg.Authority.Users) > 0 {
		fmt.Fprintf(w, "  (HTTP Basic users of authority.users: curl --user NAME, %s est … --user NAME --password-file FILE)\n", self)
	}
	fmt.Fprintln(w)
}

// PrintESTHTTPSWelcome prints only the EST over HTTPS part of the welcome text, with paths as
// they are (tests run its commands).
func (s *Server) PrintESTHTTPSWelcome(w io.Writer, self string) {
	s.printESTHTTPSWelcome(w, self, func(p string) string { return p })
}
