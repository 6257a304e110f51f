package registrar

import (
	"context"
	"crypto/x509"
	"net/http"
	"slices"
	"time"

	"coapca/errs"
)

// crtsEntry is the cached /cacerts answer of one upstream label.
type crtsEntry struct {
	certs   []*x509.Certificate
	etag    string
	fetched time.Time
}

// cacerts returns the upstream's CA certificates for label: from the cache while it is
// younger than CACertsRefresh, else fetched again with If-None-Match (304 keeps the cached
// answer). When the upstream cannot be reached a stale cache is served (and the failure
// logged): devices keep getting their trust anchors while the CA is down.
func (s *Service) cacerts(ctx context.Context, label string) ([]*x509.Certificate, error) {
	now := s.opts.Now()
	s.mu.Lock()
	e := s.crts[label]
	s.mu.Unlock()
	if e != nil && now.Sub(e.fetched) < s.opts.CACertsRefresh {
		return slices.Clone(e.certs), nil
	}
	certs, err := s.fetchCACerts(ctx, label, e)
	if err != nil {
		if e != nil && errs.KindOf(err) != errs.NotFound {
			s.log.Warn("registrar: serving cached /cacerts", "label", label, "age", now.Sub(e.fetched).Round(time.Second), "error", err)
			return slices.Clone(e.certs), nil
		}
		return nil, err
	}
	return certs, nil
}

func (s *Service) fetchCACerts(ctx context.Context, label string, old *crtsEntry) ([]*x509.Certificate, error) {
	var hdr http.Header
	if old != nil && old.etag != "" {
		hdr = http.Header{"If-None-Match": {old.etag}}
	}
	a, err := s.do(ctx, "cacerts", label, http.MethodGet, "", nil, hdr)
	if err != nil {
		return nil, err
	}
	e := &crtsEntry{fetched: s.opts.Now()}
	if a.status == http.StatusNotModified && old != nil {
		e.certs, e.etag = old.certs, old.etag
	} else {
		certs, err := a.certs("cacerts")
		if err != nil {
			return nil, s.badAnswer("cacerts", err)
		}
		e.certs, e.etag = certs, a.header.Get("ETag")
	}
	s.mu.Lock()
	s.crts[label] = e
	all := s.allCACerts()
	s.mu.Unlock()
	// RFC 9148 §5 with RFC 7030 §4.2.2: certificates the upstream issued may re-enroll here.
	s.auth.SetUpstreamCAs(all)
	return slices.Clone(e.certs), nil
}

// allCACerts is every cached upstream CA certificate (s.mu held).
func (s *Service) allCACerts() []*x509.Certificate {
	var out []*x509.Certificate
	for _, e := range s.crts {
		for _, c := range e.certs {
			if !slices.ContainsFunc(out, c.Equal) {
				out = append(out, c)
			}
		}
	}
	return out
}

// Refresh fetches /cacerts of the default label and of every mapped label, so that the
// upstream's certificates are known (for re-enrollment, Authority.SetUpstreamCAs) before the
// first device asks. It returns the first failure; the others are logged.
func (s *Service) Refresh(ctx context.Context) error {
	labels := []string{s.upstreamLabel("")}
	for _, up := range s.opts.Labels {
		if !slices.Contains(labels, up) {
			labels = append(labels, up)
		}
	}
	var first error
	for _, l := range labels {
		s.mu.Lock()
		old := s.crts[l]
		s.mu.Unlock()
		if _, err := s.fetchCACerts(ctx, l, old); err != nil {
			s.log.Warn("registrar: fetching the upstream's /cacerts failed", "label", l, "error", err)
			if first == nil {
				first = err
			}
		}
	}
	return first
}

// Run refreshes the /cacerts cache every CACertsRefresh until ctx ends; after a failure
// (also the caller's first Refresh, lastErr) it tries again after RetryAfter.
func (s *Service) Run(ctx context.Context, lastErr error) {
	for {
		d := s.opts.CACertsRefresh
		if lastErr != nil {
			d = min(d, s.opts.RetryAfter)
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		lastErr = s.Refresh(ctx)
	}
}
