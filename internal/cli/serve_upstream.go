package cli

import (
	"flag"

	"coapca/internal/config"
)

// upstreamFlags defines the registrar flags of `coapca serve` (RFC 9148 §5, docs/registrar.md)
// and returns what applies them over the configuration file's upstream section.
func upstreamFlags(fs *flag.FlagSet) func(*config.Config) {
	url := fs.String("upstream", "", "registrar mode: relay EST-coaps and EST-oscore to this upstream EST server, https://host[:port][/prefix]")
	trust := fs.String("upstream-trust", "", "PEM anchors for the upstream's TLS certificate (required with --upstream)")
	cert := fs.String("upstream-cert", "", "the registrar's TLS client certificate toward the upstream, PEM (default DATA/registrar.pem, with id-kp-cmcRA)")
	key := fs.String("upstream-key", "", "the key of --upstream-cert, PEM")
	oscoreURL := fs.String("upstream-oscore", "", "with --upstream: forward EST-oscore and EDHOC the registrar holds no context for, ciphertext only, to this EST-oscore server over HTTP, http(s)://host[:port][/prefix] (RFC 8613 §11)")
	return func(c *config.Config) {
		for _, o := range []struct {
			flag string
			dst  *string
		}{{*url, &c.Upstream.URL}, {*trust, &c.Upstream.Trust}, {*cert, &c.Upstream.Cert}, {*key, &c.Upstream.Key}, {*oscoreURL, &c.Upstream.OSCOREURL}} {
			if o.flag != "" {
				*o.dst = o.flag
			}
		}
	}
}
