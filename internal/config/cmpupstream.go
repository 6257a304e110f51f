package config

import (
	"crypto/x509"
	"fmt"
	"net/url"
	"os"
	"time"

	"coapca/internal/pemfile"
)

// CMPUpstream makes coapca a CMP registrar: CMP over CoAP (RFC 9482) relayed to an HTTP CMP
// server (RFC 9811), as a transparent proxy or, per profile, as an RA (RFC 9483 §5). Empty URL
// = off (this CA answers CMP itself). docs/registrar.md describes the deployment.
type CMPUpstream struct {
	// URL is the upstream's CMP URL, http:// or https://, e.g.
	// https://ca.example/.well-known/cmp. Also `coapca serve --cmp-upstream URL`.
	URL string `yaml:"url"`
	// Name names the upstream in metrics and logs. Default the URL's host.
	Name string `yaml:"name"`
	// Mode of the default profile (/.well-known/cmp): transparent or ra. Default transparent.
	Mode string `yaml:"mode"`
	// Profiles are the downstream profile labels served as /.well-known/cmp/p/<label>.
	Profiles []CMPUpstreamProfile `yaml:"profiles"`
	// TrustFile holds PEM anchors for the upstream's TLS certificate (https). Default the
	// system roots.
	TrustFile string `yaml:"trust_file"`
	// CertFile and KeyFile are the registrar's TLS client identity toward an https upstream
	// (optional).
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// RACertFile and RAKeyFile are the RA's CMP protection credential (RA mode and
	// announcements): a PEM certificate (with its chain after it), ideally with id-kp-cmcRA,
	// and its PEM private key.
	RACertFile string `yaml:"ra_cert_file"`
	RAKeyFile  string `yaml:"ra_key_file"`
	// ResponseTrustFile holds PEM anchors for the upstream's CMP signer (RA mode: needed to
	// relay MAC-protected requests and for announcements).
	ResponseTrustFile string `yaml:"response_trust_file"`
	// Timeout bounds one upstream exchange (5.04 beyond it). Default 30s.
	Timeout time.Duration `yaml:"timeout"`
	// MaxConcurrent caps upstream requests in flight (5.03 + Max-Age beyond it). Default 32.
	MaxConcurrent int `yaml:"max_concurrent"`
	// RetryAfter is the Max-Age of a 5.03 when the upstream is unreachable or busy. Default 10s.
	RetryAfter time.Duration `yaml:"retry_after"`
	// AnnouncePoll asks the upstream this often for a root CA key update and announces it on
	// …/ann (RFC 9482 §2.6). Default 0 (off); needs the RA credential and response_trust_file.
	AnnouncePoll time.Duration `yaml:"announce_poll"`
}

// CMPUpstreamProfile is one downstream profile label of the CMP registrar.
type CMPUpstreamProfile struct {
	// Label is the downstream label (/.well-known/cmp/p/<label>).
	Label string `yaml:"label"`
	// Mode is transparent or ra. Default transparent.
	Mode string `yaml:"mode"`
	// UpstreamLabel is the upstream's label (/p/<upstream_label> after the URL). Default the
	// same label; "-" = the upstream URL itself.
	UpstreamLabel string `yaml:"upstream_label"`
	// RAVerified (RA mode): replace a signature POP the RA verified by raVerified
	// (RFC 9483 §5.2.3.2). Default false.
	RAVerified bool `yaml:"ra_verified"`
}

// Validate checks c without touching the network: the URL and the labels.
func (c CMPUpstream) Validate() error {
	if c.URL == "" {
		return nil
	}
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("config: cmp_upstream.url %q: want an http:// or https:// URL", c.URL)
	}
	seen := map[string]bool{}
	for i, p := range c.Profiles {
		if p.Label == "" || seen[p.Label] {
			return fmt.Errorf("config: cmp_upstream.profiles[%d]: empty or repeated label %q", i, p.Label)
		}
		seen[p.Label] = true
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return fmt.Errorf("config: cmp_upstream: cert_file and key_file go together")
	}
	if (c.RACertFile == "") != (c.RAKeyFile == "") {
		return fmt.Errorf("config: cmp_upstream: ra_cert_file and ra_key_file go together")
	}
	return nil
}

// LoadPool reads a PEM file of certificates into a pool; "" = nil.
func LoadPool(path string) (*x509.CertPool, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	certs, err := pemfile.ParseCerts(b)
	if err != nil || len(certs) == 0 {
		return nil, fmt.Errorf("config: %s: no PEM certificates (%v)", path, err)
	}
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p, nil
}
