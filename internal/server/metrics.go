package server

import (
	"github.com/prometheus/client_golang/prometheus"

	"coapca/coap"
)

// coapResponses exports the endpoint's responses-by-code counters.
type coapResponses struct {
	servers func() []*coap.Server
	desc    *prometheus.Desc
}

func newCoAPResponsesCollector(servers func() []*coap.Server) prometheus.Collector {
	return &coapResponses{servers: servers, desc: prometheus.NewDesc("coapca_coap_responses_total",
		"CoAP responses sent, by response code.", []string{"code"}, nil)}
}

func (c *coapResponses) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *coapResponses) Collect(ch chan<- prometheus.Metric) {
	sum := map[string]uint64{}
	for _, srv := range c.servers() {
		for code, n := range srv.Stats().Responses {
			sum[code] += n
		}
	}
	for code, n := range sum {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(n), code)
	}
}
