package config

import (
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"
)

// Upstream is the registrar mode of the EST front doors (RFC 9148 §5): EST-coaps and
// EST-oscore requests are authorized locally and relayed to an upstream EST server over HTTPS.
// Also `coapca serve --upstream URL --upstream-trust FILE [--upstream-cert FILE --upstream-key FILE]`.
type Upstream struct {
	// URL is the upstream EST server, https://host[:port][/prefix]. Default "" (registrar off).
	URL string `yaml:"url"`
	// Trust is a PEM file of the anchors for the upstream's TLS certificate (required with url).
	Trust string `yaml:"trust"`
	// Cert and Key are PEM files of the registrar's TLS client identity toward the upstream.
	// Default: DATA/registrar.pem and DATA/private/registrar.key, a certificate with
	// id-kp-cmcRA that the data directory makes in registrar mode.
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// User and PasswordFile are HTTP Basic credentials for the upstream (RFC 7030 §3.2.3); the
	// file holds the password (trailing newline ignored). Default none.
	User         string `yaml:"user"`
	PasswordFile string `yaml:"password_file"`
	// Timeout bounds one upstream request. Default 30s.
	Timeout time.Duration `yaml:"timeout"`
	// RetryAfter is the Max-Age of the 5.03 a device gets while the upstream is unreachable.
	// Default 60s.
	RetryAfter time.Duration `yaml:"retry_after"`
	// MaxConcurrent caps upstream requests in flight. Default 16.
	MaxConcurrent int `yaml:"max_concurrent"`
	// CACertsRefresh is how long the upstream's /cacerts is cached before it is asked again
	// (with If-None-Match). Default 1h.
	CACertsRefresh time.Duration `yaml:"cacerts_refresh"`
	// Labels maps a local EST label (a profile of this configuration) to the upstream's label;
	// unlisted labels keep their name. Default none.
	Labels map[string]string `yaml:"labels"`
	// LocalKeygen lets the registrar generate keys for /skg and /skc itself when the upstream
	// has no /serverkeygen (RFC 9148 §5), logged and counted. Default false.
	LocalKeygen bool `yaml:"local_keygen"`
	// KeyType is the type of such keys (P-256, P-384, P-521, RSA-2048, ...). Default P-256.
	KeyType string `yaml:"key_type"`
	// OSCOREURL is the HTTP(S) EST-oscore server that OSCORE-protected requests the registrar
	// holds no context for, and the EDHOC messages on /.well-known/edhoc, are forwarded to
	// without security processing (RFC 8613 §11): http(s)://host[:port][/prefix]. Default ""
	// (the registrar terminates EST-oscore itself).
	OSCOREURL string `yaml:"oscore_url"`
}

// Enabled reports whether registrar mode is on.
func (u Upstream) Enabled() bool { return u.URL != "" }

// Validate checks the section without touching the network (files are read by the server).
func (u Upstream) Validate() error {
	if !u.Enabled() {
		if u.Trust != "" || u.Cert != "" || u.Key != "" || u.User != "" || len(u.Labels) > 0 || u.LocalKeygen || u.OSCOREURL != "" {
			return fmt.Errorf("config: upstream: settings without upstream.url")
		}
		return nil
	}
	p, err := url.Parse(u.URL)
	if err != nil || p.Scheme != "https" || p.Host == "" {
		return fmt.Errorf("config: upstream.url %q: want https://host[:port][/prefix]", u.URL)
	}
	if u.Trust == "" {
		return fmt.Errorf("config: upstream.trust: the upstream's TLS anchors are required (--upstream-trust)")
	}
	if (u.Cert == "") != (u.Key == "") {
		return fmt.Errorf("config: upstream.cert and upstream.key go together")
	}
	if u.PasswordFile != "" && u.User == "" {
		return fmt.Errorf("config: upstream.password_file without upstream.user")
	}
	if u.Timeout < 0 || u.RetryAfter < 0 || u.CACertsRefresh < 0 || u.MaxConcurrent < 0 {
		return fmt.Errorf("config: upstream: negative timeout, retry_after, cacerts_refresh or max_concurrent")
	}
	if u.OSCOREURL != "" {
		p, err := url.Parse(u.OSCOREURL)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" || p.RawQuery != "" || p.User != nil {
			return fmt.Errorf("config: upstream.oscore_url %q: want http(s)://host[:port][/prefix]", u.OSCOREURL)
		}
	}
	for down, up := range u.Labels {
		if strings.Contains(down, "/") || strings.Contains(up, "/") {
			return fmt.Errorf("config: upstream.labels %q: %q: a label is one path segment", down, up)
		}
	}
	return nil
}

// Password reads PasswordFile ("" when none).
func (u Upstream) Password() (string, error) {
	if u.PasswordFile == "" {
		return "", nil
	}
	b, err := os.ReadFile(u.PasswordFile)
	if err != nil {
		return "", fmt.Errorf("config: upstream.password_file: %w", err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}
