package cli

import (
	"github.com/prometheus/client_golang/prometheus"

	"coapca/coap"
)

// coapResponses exports the endpoint's responses-by-code counters.
type coapResponses struct {
	srv  *coap.Server
	desc *prometheus.Desc
}

func newCoAPResponsesCollector(srv *coap.Server) prometheus.Collector {
	return &coapResponses{srv: srv, desc: prometheus.NewDesc("coapca_coap_responses_total",
		"CoAP responses sent, by response code.", []string{"code"}, nil)}
}

func (c *coapResponses) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *coapResponses) Collect(ch chan<- prometheus.Metric) {
	for code, n := range c.srv.Stats().Responses {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(n), code)
	}
}
