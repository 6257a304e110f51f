package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"coapca/est/estcoap"
	"coapca/internal/pemfile"
	"coapca/registrar"
)

// startRegistrar turns the EST-coaps and EST-oscore front doors into a registrar (RFC 9148 §5)
// when upstream.url is set: it builds the relaying service from the upstream section, registers
// its metrics (per upstream: latency histogram, results by kind, keys it generated itself), learns
// the upstream's /cacerts once (a failure is logged; Run keeps trying) and keeps them fresh.
func (s *Server) startRegistrar(ctx context.Context) error {
	u := s.cfg.Upstream // validated by Start before anything touched the disk
	if !u.Enabled() {
		return nil
	}
	if s.cfg.Listen.HTTPS != "" {
		// The EST over HTTPS front door issues from the local CA; beside a registrar it would be
		// a second, unrelated CA. Devices on HTTPS talk to the upstream directly.
		return errors.New("registrar mode (upstream.url) and listen.https exclude each other: EST over HTTPS clients talk to the upstream CA directly")
	}
	anchors, err := pemfile.ReadCerts(u.Trust)
	if err != nil {
		return fmt.Errorf("upstream.trust: %w", err)
	}
	roots := x509.NewCertPool()
	for _, c := range anchors {
		roots.AddCert(c)
	}
	id := s.data.RegistrarCertificate()
	if u.Cert != "" {
		if id, err = tls.LoadX509KeyPair(u.Cert, u.Key); err != nil {
			return fmt.Errorf("upstream.cert/key: %w", err)
		}
	}
	password, err := u.Password()
	if err != nil {
		return err
	}
	host := u.URL
	if p, err := url.Parse(u.URL); err == nil {
		host = p.Host
	}
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "coapca", Name: "upstream_request_duration_seconds",
		Help:    "Time of a registrar's upstream EST request (RFC 9148 §5), by upstream and operation.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"upstream", "operation"})
	results := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "coapca", Name: "upstream_requests_total",
		Help: "A registrar's upstream EST requests by upstream, operation and result (ok, pending, or the error kind: unavailable, bad_gateway, gateway_timeout, ...).",
	}, []string{"upstream", "operation", "result"})
	localKeys := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "coapca", Name: "registrar_local_keys_total",
		Help: "Keys the registrar generated itself because the upstream has no /serverkeygen (RFC 9148 §5), by label.",
	}, []string{"label"})
	s.metrics.Collector(latency)
	s.metrics.Collector(results)
	s.metrics.Collector(localKeys)

	reg, err := registrar.New(registrar.Options{
		URL:            u.URL,
		TLS:            &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{id}},
		User:           u.User,
		Password:       password,
		Timeout:        u.Timeout,
		RetryAfter:     u.RetryAfter,
		MaxConcurrent:  u.MaxConcurrent,
		CACertsRefresh: u.CACertsRefresh,
		Labels:         u.Labels,
		LocalKeyGen:    u.LocalKeygen,
		KeyType:        u.KeyType,
		Authority:      s.auth,
		Logger:         s.log,
		Observer: func(op, result string, d time.Duration) {
			latency.WithLabelValues(host, op).Observe(d.Seconds())
			results.WithLabelValues(host, op, result).Inc()
		},
		OnLocalKey: func(label string) { localKeys.WithLabelValues(label).Inc() },
	})
	if err != nil {
		return err
	}
	s.registrar = reg
	if u.OSCOREURL != "" {
		oscoreHost := u.OSCOREURL
		if p, err := url.Parse(u.OSCOREURL); err == nil {
			oscoreHost = p.Host
		}
		maxBody := int64(s.cfg.CoAP.MaxBodySize)
		proxy, err := reg.OSCOREProxy(u.OSCOREURL, maxBody, func(op, result string, d time.Duration) {
			latency.WithLabelValues(oscoreHost, op).Observe(d.Seconds())
			results.WithLabelValues(oscoreHost, op, result).Inc()
		})
		if err != nil {
			return err
		}
		s.oscoreProxy = proxy
		s.log.Info("registrar: EST-oscore and EDHOC without a context here are forwarded to the upstream, ciphertext only (RFC 8613 §11)",
			"oscore_upstream", u.OSCOREURL)
	}
	first, cancel := context.WithTimeout(ctx, min(5*time.Second, max(u.Timeout, time.Second)))
	err = reg.Refresh(first)
	cancel()
	if err != nil {
		s.log.Warn("registrar: the upstream's /cacerts could not be fetched at start; retrying", "upstream", u.URL, "error", err)
	}
	s.log.Info("registrar mode: EST-coaps and EST-oscore relay to the upstream EST server", "upstream", u.URL,
		"identity", id.Leaf.Subject.String())
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		reg.Run(ctx, err)
		reg.Close()
	}()
	return nil
}

// estFront is the EST service of the CoAP front doors: the registrar in registrar mode, the
// local EST service otherwise.
func (s *Server) estFront() estcoap.Service {
	if s.registrar != nil {
		return s.registrar
	}
	return s.est
}

// dtlsCertificate is the DTLS server certificate: in registrar mode the registrar identity,
// whose id-kp-cmcRA tells devices using the implicit TA database that they talk to an RA
// (RFC 9148 §10.2 / draft §10.2).
func (s *Server) dtlsCertificate() tls.Certificate {
	if s.cfg.Upstream.Enabled() && s.data.Registrar != nil {
		return s.data.RegistrarCertificate()
	}
	return s.data.ServerCertificate()
}
