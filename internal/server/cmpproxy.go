package server

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"coapca/cmp"
	"coapca/cmp/cmpproxy"
	"coapca/coap"
	"coapca/internal/config"
	"coapca/internal/pemfile"
	"coapca/kms"
)

// registerCMPProxy makes this server a CMP registrar (cfg.CMPUpstream, docs/registrar.md):
// the CMP resources of RFC 9482 on s.secureMux and s.plainMux relay to the upstream RFC 9811
// server instead of this CA's CMP service, which then serves no CMP over CoAP or HTTP.
// Metrics per upstream: coapca_cmp_upstream_duration_seconds{upstream} and
// coapca_cmp_upstream_requests_total{upstream,result}.
func (s *Server) registerCMPProxy(ctx context.Context) error {
	uc := s.cfg.CMPUpstream
	if err := uc.Validate(); err != nil {
		return err
	}
	opts := cmpproxy.Options{Upstream: uc.URL, Name: uc.Name, Timeout: uc.Timeout, MaxConcurrent: uc.MaxConcurrent,
		RetryAfter: uc.RetryAfter, AnnouncePoll: uc.AnnouncePoll, Logger: s.log,
		MACLimits: cmp.MACLimits{MaxIterations: s.cfg.CMP.MaxMACIterations},
		Notify: func(path string, r *coap.Response) {
			for _, c := range s.coapServers() {
				c.Notify(path, r)
			}
		}}
	var err error
	if opts.Default, err = upstreamProfile(uc.Mode, "-", false); err != nil {
		return err
	}
	opts.Profiles = map[string]cmpproxy.Profile{}
	for _, p := range uc.Profiles {
		ul := p.UpstreamLabel
		if ul == "" {
			ul = p.Label
		}
		if opts.Profiles[p.Label], err = upstreamProfile(p.Mode, ul, p.RAVerified); err != nil {
			return fmt.Errorf("config: cmp_upstream.profiles %q: %w", p.Label, err)
		}
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if tlsCfg.RootCAs, err = config.LoadPool(uc.TrustFile); err != nil {
		return fmt.Errorf("cmp_upstream.trust_file: %w", err)
	}
	if uc.CertFile != "" {
		c, err := tls.LoadX509KeyPair(uc.CertFile, uc.KeyFile)
		if err != nil {
			return fmt.Errorf("cmp_upstream.cert_file: %w", err)
		}
		tlsCfg.Certificates = []tls.Certificate{c}
	}
	opts.Client = &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg, Proxy: http.ProxyFromEnvironment,
		MaxIdleConnsPerHost: 16, IdleConnTimeout: 90 * time.Second, TLSHandshakeTimeout: 10 * time.Second}}
	if uc.RACertFile != "" {
		certs, err := pemfile.ReadCerts(uc.RACertFile)
		if err != nil || len(certs) == 0 {
			return fmt.Errorf("cmp_upstream.ra_cert_file %s: no certificate (%v)", uc.RACertFile, err)
		}
		key, err := kms.LoadKeyFile(uc.RAKeyFile)
		if err != nil {
			return fmt.Errorf("cmp_upstream.ra_key_file: %w", err)
		}
		if !samePublicKey(certs[0], key) {
			return fmt.Errorf("cmp_upstream: ra_key_file is not the key of ra_cert_file")
		}
		opts.Signer, opts.Cert, opts.Chain = key, certs[0], certs[1:]
	}
	if opts.ResponseTrust, err = config.LoadPool(uc.ResponseTrustFile); err != nil {
		return fmt.Errorf("cmp_upstream.response_trust_file: %w", err)
	}
	opts.Authority = s.auth

	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "coapca", Name: "cmp_upstream_duration_seconds",
		Help:    "Time from a CMP request relayed by the registrar to its answer, by upstream.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}}, []string{"upstream"})
	results := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "coapca", Name: "cmp_upstream_requests_total",
		Help: "CMP requests relayed by the registrar, by upstream and result (ok, unreachable, busy, tls, timeout, status, bad_response, refused, bad_request)."},
		[]string{"upstream", "result"})
	s.metrics.Collector(latency)
	s.metrics.Collector(results)
	opts.Observe = func(up, result string, d time.Duration) {
		latency.WithLabelValues(up).Observe(d.Seconds())
		results.WithLabelValues(up, result).Inc()
	}

	p, err := cmpproxy.New(opts)
	if err != nil {
		return err
	}
	p.Register(s.secureMux)
	p.Register(s.plainMux)
	s.log.Info("cmp registrar", "upstream", p.Name(), "url", uc.URL, "mode", opts.Default.Mode.String(), "profiles", p.Labels())
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		p.Run(ctx)
	}()
	return nil
}

func upstreamProfile(mode, upstreamLabel string, raVerified bool) (cmpproxy.Profile, error) {
	m, err := cmpproxy.ParseMode(mode)
	if err != nil {
		return cmpproxy.Profile{}, err
	}
	if upstreamLabel == "-" {
		upstreamLabel = ""
	}
	return cmpproxy.Profile{Mode: m, UpstreamLabel: upstreamLabel, RAVerified: raVerified}, nil
}

func samePublicKey(c *x509.Certificate, key crypto.Signer) bool {
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(c.PublicKey)
}
