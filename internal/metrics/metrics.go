// Package metrics publishes coapca's Prometheus metrics and health check.
//
// Services report through the small Recorder methods; the endpoint's counters (CoAP, DTLS) are
// read on scrape through functions the server wiring registers, so the coap package needs no
// dependency on Prometheus.
package metrics

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds coapca's registry and the enrollment instruments.
type Metrics struct {
	reg         *prometheus.Registry
	enrollments *prometheus.CounterVec
	latency     *prometheus.HistogramVec
}

// New returns a registry with Go runtime and process collectors and the enrollment metrics.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &Metrics{
		reg: reg,
		enrollments: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "coapca", Name: "requests_total",
			Help: "Enrollment-service requests by protocol, function (cacerts, enroll, reenroll, serverkeygen, csrattrs, ...) and result (ok, pending, or the error kind).",
		}, []string{"protocol", "function", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "coapca", Name: "request_duration_seconds",
			Help:    "Time to answer an enrollment-service request, by protocol and function.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"protocol", "function"}),
	}
	reg.MustRegister(m.enrollments, m.latency)
	return m
}

// Observe records one service request.
func (m *Metrics) Observe(protocol, function, result string, d time.Duration) {
	if m == nil {
		return
	}
	m.enrollments.WithLabelValues(protocol, function, result).Inc()
	m.latency.WithLabelValues(protocol, function).Observe(d.Seconds())
}

// CounterFunc registers a monotonically increasing value read on every scrape.
func (m *Metrics) CounterFunc(name, help string, f func() float64) {
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "coapca", Name: name, Help: help}, f))
}

// GaugeFunc registers a value read on every scrape.
func (m *Metrics) GaugeFunc(name, help string, f func() float64) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "coapca", Name: name, Help: help}, f))
}

// Collector registers an arbitrary collector (e.g. counters labelled by response code).
func (m *Metrics) Collector(c prometheus.Collector) { m.reg.MustRegister(c) }

// Handler serves /metrics and /healthz. health returns nil when the server can serve.
func (m *Metrics) Handler(health func(context.Context) error) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := health(ctx); err != nil {
			http.Error(w, "unhealthy: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

// Serve runs the metrics HTTP server on addr until ctx ends.
func (m *Metrics) Serve(ctx context.Context, addr string, health func(context.Context) error, log *slog.Logger) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	// Scrapes are small GETs: short timeouts keep idle or slow connections from piling up.
	srv := &http.Server{Handler: m.Handler(health), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 60 * time.Second, MaxHeaderBytes: 16 << 10}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "err", err)
		}
	}()
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
	}()
	return ln.Addr(), nil
}
