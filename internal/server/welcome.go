package server

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
)

// PrintWelcome tells the operator what was created and how to enroll the demo device over
// each listener; self is how the operator runs coapca ("coapca", "go run ./cmd/coapca").
func (s *Server) PrintWelcome(w io.Writer, self string) {
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
		fmt.Fprintln(w, "coapca: demo credentials are off (ca.no_demo, or the configuration defines trust stores or MAC secrets)")
	}
	if s.metricsAddr != nil {
		fmt.Fprintf(w, "coapca: metrics on http://%s/metrics, health on /healthz\n", s.metricsAddr)
	}
	cmpRelayed := s.cfg.CMPUpstream.URL != ""
	if cmpRelayed {
		fmt.Fprintf(w, "coapca: CMP registrar mode: CMP over CoAP is relayed to %s, not answered here (docs/registrar.md)\n", s.cfg.CMPUpstream.URL)
	}
	if s.dtls == nil && s.udp == nil && s.http == nil && s.https == nil {
		fmt.Fprintln(w, "coapca: no listener enabled")
		return
	}
	root, dev, devKey := rel(d.Paths.Root), rel(d.Paths.Device), rel(d.Paths.DeviceKey)
	// estTrust is what an EST client gives --trust: this CA's root (the DTLS server
	// certificate; with EDHOC's x5chain-leaf the issuing CA too), and in registrar mode the
	// upstream's root, which the issued certificates chain to (RFC 9148 §5).
	estTrust := root
	if s.registrar != nil {
		estTrust = "registrar-trust.pem"
		fmt.Fprintf(w, `coapca: registrar mode: EST-coaps and EST-oscore are relayed to %s (docs/registrar.md).
  Issued certificates chain to the upstream's CA: a device trusts this registrar's root and
  issuing CA and the upstream's root (upstream.trust here; use the upstream CA's root if that differs):
  cat %s %s %s > %s
`, s.registrar.Upstream(), root, rel(d.Paths.IssuingCA), rel(s.cfg.Upstream.Trust), estTrust)
	}
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

`, self, url, estTrust, dev, devKey, dev, devKey, root, url)
	}
	if s.udp != nil {
		url := "coap://" + connectHost(s.udp.LocalAddr(), "5683")
		fmt.Fprintf(w, "coapca: EST-oscore and CMP over CoAP on %s (listening on %s)\n\n", url, s.udp.LocalAddr())
	}
	if s.udp != nil && s.demo {
		url := "coap://" + connectHost(s.udp.LocalAddr(), "5683")
		// EDHOC's message_2 carries the server's certificate alone by default
		// (edhoc.credential x5chain-leaf): the device needs the issuing CA as well as the root.
		edhocTrust := rel(d.Paths.IssuingCA)
		switch {
		case s.registrar != nil:
			edhocTrust = estTrust // holds the issuing CA and the upstream's root
		case s.cfg.EDHOC.Credential == "x5chain":
			edhocTrust = root
		}
		fmt.Fprintf(w, `EST-oscore (EDHOC with the demo device's certificate, then OSCORE):
  %s est enroll --server %s --edhoc \
      --trust %s --cert %s --key %s \
      --subject CN=demo-device-0001 --key-out ldevid.key --out ldevid.pem

`, self, url, edhocTrust, dev, devKey)
	}
	if s.udp != nil && s.demo && !cmpRelayed {
		// The demo secret and device are this CA's: CMP demo commands only where this CA
		// answers CMP (not relayed by a cmp_upstream).
		url := "coap://" + connectHost(s.udp.LocalAddr(), "5683")
		fmt.Fprintf(w, `CMP over CoAP (RFC 9482), MAC-protected with the demo secret, or signed by the demo device:
  %s cmp ir --server %s --ref %s --secret-file %s \
      --trust %s --subject CN=demo-device-0002 --key-out cmp.key --out cmp.pem
  %s cmp ir --server %s --cert %s --key %s \
      --trust %s --subject CN=demo-device-0001 --key-out cmp.key --out cmp.pem
  (observe %s/.well-known/cmp/ann for CA announcements)

`, self, url, d.CMPSecretRef, rel(d.Paths.CMPSecret), root,
			self, url, dev, devKey, root, url)
	}
	if s.http != nil && !cmpRelayed {
		host := connectHost(s.http.Addr(), "")
		fmt.Fprintf(w, "coapca: CMP over HTTP on http://%s/.well-known/cmp\n\n", host)
	}
	if s.http != nil && s.demo && !cmpRelayed {
		host := connectHost(s.http.Addr(), "")
		fmt.Fprintf(w, `CMP over HTTP (RFC 9811) with OpenSSL:
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out cmp-openssl.key
  openssl cmp -cmd ir -server %s -path /.well-known/cmp -ref %s -secret file:%s \
      -newkey cmp-openssl.key -subject /CN=demo-device-0003 -certout cmp-openssl.pem

`, host, d.CMPSecretRef, rel(d.Paths.CMPSecret))
	}
	s.printESTHTTPSWelcome(w, self, rel)
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
