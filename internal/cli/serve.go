package cli

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
)

const serveDescription = `Run the coapca server.

On first start it creates the data directory (--data, default ./coapca-data) with a root and an
issuing CA, the server's DTLS certificate, a SQLite database, a demo manufacturer CA that the
server trusts for initial enrollment and a demo device identity; later starts reuse everything.
It then serves EST-coaps (RFC 9148) on --coaps (:5684), EST-oscore and CMP over CoAP
(RFC 9482) on --coap (:5683), CMP over HTTP (RFC 9811) on --http and EST over HTTPS (RFC 7030)
on --https when given, and prints the commands that enroll the demo device over each. Everything else is set in the YAML file given
with --config (docs/configuration.md); flags override the file.`

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve", "coapca serve [flags]", serveDescription, stderr)
	cfgPath := fs.String("config", "", "YAML configuration file (docs/configuration.md)")
	dataDir := fs.String("data", "", "data directory (default ./coapca-data)")
	coaps := fs.String("coaps", "", "EST-coaps (CoAP over DTLS) listen address (default :5684; \"off\" disables)")
	coapAddr := fs.String("coap", "", "plain CoAP (UDP) listen address for EST-oscore and CMP over CoAP (default :5683; \"off\" disables)")
	httpAddr := fs.String("http", "", "HTTP listen address for CMP over HTTP, e.g. :8080 (default off; \"off\" disables)")
	httpsAddr := fs.String("https", "", "HTTPS listen address for EST over HTTPS (RFC 7030), e.g. :8443 (default off; \"off\" disables)")
	metricsAddr := fs.String("metrics", "", "serve Prometheus /metrics and /healthz on this HTTP address (default off)")
	logLevel := fs.String("log-level", "", "debug, info, warn or error (default info)")
	var names, oscoreCtx stringList
	fs.Var(&oscoreCtx, "oscore-context", "pre-shared OSCORE context file (YAML, server's side) for EST-oscore on --coap (repeatable)")
	fs.Var(&names, "server-name", "extra DNS name or IP address for the server certificate created on first start (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	cfg, err := loadConfig(*cfgPath, *dataDir)
	if err != nil {
		return err
	}
	switch *coaps {
	case "":
	case "off":
		cfg.Listen.CoAPS = ""
	default:
		cfg.Listen.CoAPS = *coaps
	}
	for _, o := range []struct {
		flag string
		dst  *string
	}{{*coapAddr, &cfg.Listen.CoAP}, {*httpAddr, &cfg.Listen.HTTP}, {*httpsAddr, &cfg.Listen.HTTPS}} {
		switch o.flag {
		case "":
		case "off":
			*o.dst = ""
		default:
			*o.dst = o.flag
		}
	}
	if *metricsAddr != "" {
		cfg.Listen.Metrics = *metricsAddr
	}
	if *logLevel != "" {
		cfg.Log.Level = *logLevel
	}
	cfg.ServerNames = append(cfg.ServerNames, names...)
	cfg.OSCOREContexts = append(cfg.OSCOREContexts, oscoreCtx...)
	log, err := newLoggerFormat(stderr, cfg.Log.Level, cfg.Log.Format)
	if err != nil {
		return err
	}

	s, err := startServer(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer s.Close()
	printWelcome(stdout, s)
	<-ctx.Done()
	fmt.Fprintln(stdout, "coapca: shutting down")
	return nil
}

// printWelcome tells the operator what was created and how to enroll the demo device.
func printWelcome(w io.Writer, s *server) {
	d := s.data
	rel := func(p string) string {
		if wd, err := os.Getwd(); err == nil {
			if r, err := filepath.Rel(wd, p); err == nil && !strings.HasPrefix(r, "..") {
				return r
			}
		}
		return p
	}
	if len(d.Created) > 0 {
		fmt.Fprintf(w, "coapca: created %s:\n", rel(d.Dir))
		for _, f := range d.Created {
			fmt.Fprintf(w, "  %s\n", rel(f))
		}
	} else {
		fmt.Fprintf(w, "coapca: using %s\n", rel(d.Dir))
	}
	if s.demo {
		fmt.Fprintf(w, `
coapca: DEMO CREDENTIALS ARE LIVE (the configuration defines no trust_stores and no mac_secrets):
  - the demo manufacturer CA %s: every device it certified may enroll
  - the demo CMP secret %q (%s): everybody who can read it may enroll
  For production, configure authority.trust_stores and/or authority.mac_secrets: then neither is live.

`, rel(d.Paths.ManufacturerCA), d.CMPSecretRef, rel(d.Paths.CMPSecret))
	} else {
		fmt.Fprintln(w, "coapca: demo credentials are off (the configuration defines trust stores or MAC secrets)")
	}
	if s.metricsAddr != nil {
		fmt.Fprintf(w, "coapca: metrics on http://%s/metrics, health on /healthz\n", s.metricsAddr)
	}
	if s.dtls == nil && s.udp == nil && s.http == nil && s.https == nil {
		fmt.Fprintln(w, "coapca: no listener enabled")
		return
	}
	self := selfCommand()
	root, dev, devKey := rel(d.Paths.Root), rel(d.Paths.Device), rel(d.Paths.DeviceKey)
	if s.dtls != nil {
		url := "coaps://" + connectHost(s.dtls.Addr(), "5684")
		fmt.Fprintf(w, "coapca: EST-coaps on %s (listening on %s), labels: %s\n\n", url, s.dtls.Addr(), labelList(s.auth.Labels()))
	}
	if s.dtls != nil && s.demo {
		url := "coaps://" + connectHost(s.dtls.Addr(), "5684")
		fmt.Fprintf(w, `Enroll the demo device with coapca:
  %s est enroll --server %s \
      --trust %s --cert %s --key %s \
      --subject CN=demo-device-0001 --key-out ldevid.key --out ldevid.pem

or with libcoap (CSR from openssl req):
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ldevid.key \
      -subj /CN=demo-device-0001 -outform DER -out csr.der
  coap-client-openssl -m post -t 286 -b 64 -f csr.der -o ldevid.p7 \
      -c %s -j %s -C %s \
      %s/.well-known/est/sen
  openssl pkcs7 -inform DER -in ldevid.p7 -print_certs

`, self, url, root, dev, devKey, dev, devKey, root, url)
	}
	if s.udp != nil {
		url := "coap://" + connectHost(s.udp.LocalAddr(), "5683")
		fmt.Fprintf(w, "coapca: EST-oscore and CMP over CoAP on %s (listening on %s)\n\n", url, s.udp.LocalAddr())
	}
	if s.udp != nil && s.demo {
		url := "coap://" + connectHost(s.udp.LocalAddr(), "5683")
		fmt.Fprintf(w, `EST-oscore (EDHOC with the demo device's certificate, then OSCORE):
  %s est enroll --server %s --edhoc \
      --trust %s --cert %s --key %s \
      --subject CN=demo-device-0001 --key-out ldevid.key --out ldevid.pem

CMP over CoAP (RFC 9482), MAC-protected with the demo secret, or signed by the demo device:
  %s cmp ir --server %s --ref %s --secret-file %s \
      --trust %s --subject CN=demo-device-0002 --key-out cmp.key --out cmp.pem
  %s cmp ir --server %s --cert %s --key %s \
      --trust %s --subject CN=demo-device-0001 --key-out cmp.key --out cmp.pem
  (observe %s/.well-known/cmp/ann for CA announcements)

`, self, url, root, dev, devKey,
			self, url, d.CMPSecretRef, rel(d.Paths.CMPSecret), root,
			self, url, dev, devKey, root, url)
	}
	if s.http != nil {
		host := connectHost(s.http.Addr(), "")
		fmt.Fprintf(w, "coapca: CMP over HTTP on http://%s/.well-known/cmp\n\n", host)
	}
	if s.http != nil && s.demo {
		host := connectHost(s.http.Addr(), "")
		fmt.Fprintf(w, `CMP over HTTP (RFC 9811) with OpenSSL:
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out cmp-openssl.key
  openssl cmp -cmd ir -server %s -path /.well-known/cmp -ref %s -secret file:%s \
      -newkey cmp-openssl.key -subject /CN=demo-device-0003 -certout cmp-openssl.pem

`, host, d.CMPSecretRef, rel(d.Paths.CMPSecret))
	}
	printESTHTTPSWelcome(w, s, rel)
	fmt.Fprintf(w, "Pending requests and issued certificates: %s ca pending | list --data %s\n", self, rel(d.Dir))
}

// connectHost turns a listen address into one a local client can dial (":5684" → "localhost"
// when 5684 is the scheme's default port, ":8080" → "localhost:8080").
func connectHost(a net.Addr, defaultPort string) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "localhost"
	}
	if port == defaultPort {
		return host
	}
	return net.JoinHostPort(host, port)
}

func labelList(l []string) string {
	if len(l) == 0 {
		return "(default only)"
	}
	return strings.Join(l, ", ")
}

// selfCommand is how the user ran us: "coapca", or "go run ./cmd/coapca" for a go run binary.
func selfCommand() string {
	exe, err := os.Executable()
	if err == nil && strings.Contains(exe, "go-build") {
		return "go run ./cmd/coapca"
	}
	return "coapca"
}
