package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/pion/dtls/v3"

	"coapca/coap"
	"coapca/coap/dtlsconn"
	"coapca/est"
	"coapca/est/estcoap"
	"coapca/internal/config"
	"coapca/internal/metrics"
	"coapca/store"
)

// server is a running coapca: the house and its front doors. serve, the end-to-end tests and
// `coapca bench` all start it the same way.
type server struct {
	*house
	log      *slog.Logger
	metrics  *metrics.Metrics
	coap     *coap.Server
	dtls     *dtlsconn.Listener
	coapsURL string // coaps://host:port of the DTLS listener
	metrics2 net.Addr
	wg       sync.WaitGroup
	cancel   context.CancelFunc
}

// defaultMaxBody caps EST request bodies: a CSR is a few hundred bytes.
const defaultMaxBody = 64 << 10

func startServer(ctx context.Context, cfg config.Config, log *slog.Logger) (*server, error) {
	m := metrics.New()
	h, err := openHouse(ctx, cfg, log, houseOptions{create: true})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &server{house: h, log: log, metrics: m, cancel: cancel}
	fail := func(err error) (*server, error) {
		s.Close()
		return nil, err
	}

	mux := coap.NewMux()
	svc := est.NewService(h.auth, log)
	svc.SetObserver(func(function, transport, result string, d time.Duration) {
		m.Observe("est-"+transport, function, result, d)
	})
	estcoap.New(svc, estcoap.Options{Labels: h.auth.Labels(), Logger: log}).Register(mux)

	cc := cfg.CoAP
	if cc.MaxBodySize == 0 {
		cc.MaxBodySize = defaultMaxBody
	}
	s.coap = coap.NewServer(mux, coap.Config{
		ACKTimeout: cc.ACKTimeout, ACKRandomFactor: cc.ACKRandomFactor, MaxRetransmit: cc.MaxRetransmit,
		NStart: cc.NStart, SeparateAfter: cc.SeparateAfter, MaxBodySize: cc.MaxBodySize,
		BlockTimeout: cc.BlockTimeout, MaxExchangesPerPeer: cc.MaxExchangesPerPeer, Logger: log,
	})

	if cfg.Listen.CoAPS != "" {
		suites, err := cipherSuites(cfg.DTLS.CipherSuites)
		if err != nil {
			return fail(err)
		}
		l, err := dtlsconn.Listen("udp", cfg.Listen.CoAPS, dtlsconn.ServerConfig{
			Certificates: []tls.Certificate{h.data.ServerCertificate()},
			// RFC 9148 §3: the client MUST authenticate with a certificate; the authority
			// decides which chains it accepts (manufacturer trust stores or this CA).
			ClientAuth:                   dtlsconn.RequireClientCert,
			VerifyPeer:                   h.auth.VerifyClient,
			CipherSuites:                 suites,
			HandshakeTimeout:             cfg.DTLS.HandshakeTimeout,
			IdleTimeout:                  cfg.DTLS.IdleTimeout,
			HandshakesPerSourcePerSecond: cfg.DTLS.HandshakesPerSourcePerSecond,
			MaxHalfOpen:                  cfg.DTLS.MaxHalfOpen,
			MaxSessions:                  cfg.DTLS.MaxSessions,
			ConnectionID:                 true,
			Logger:                       log,
		})
		if err != nil {
			return fail(fmt.Errorf("coaps listener %s: %w", cfg.Listen.CoAPS, err))
		}
		s.dtls = l
		s.coapsURL = "coaps://" + l.Addr().String()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.coap.ServeDTLS(l); err != nil && ctx.Err() == nil {
				log.Error("coaps listener stopped", "err", err)
			}
		}()
	}
	s.registerMetrics()
	if cfg.Listen.Metrics != "" {
		addr, err := m.Serve(ctx, cfg.Listen.Metrics, s.health, log)
		if err != nil {
			return fail(fmt.Errorf("metrics listener %s: %w", cfg.Listen.Metrics, err))
		}
		s.metrics2 = addr
	}
	return s, nil
}

// health reports whether the store answers.
func (s *server) health(ctx context.Context) error {
	_, err := s.store.ListCerts(ctx, store.CertFilter{Limit: 1})
	return err
}

func (s *server) registerMetrics() {
	m := s.metrics
	cs := func(f func(coap.Stats) float64) func() float64 {
		return func() float64 { return f(s.coap.Stats()) }
	}
	m.Collector(newCoAPResponsesCollector(s.coap))
	m.CounterFunc("coap_retransmissions_total", "Confirmable messages retransmitted.", cs(func(st coap.Stats) float64 { return float64(st.Retransmissions) }))
	m.CounterFunc("coap_duplicates_total", "Duplicate messages detected (RFC 7252 §4.5).", cs(func(st coap.Stats) float64 { return float64(st.Duplicates) }))
	m.CounterFunc("coap_malformed_total", "Datagrams that did not parse as CoAP.", cs(func(st coap.Stats) float64 { return float64(st.Malformed) }))
	m.CounterFunc("coap_resets_total", "Reset messages received.", cs(func(st coap.Stats) float64 { return float64(st.Resets) }))
	m.CounterFunc("coap_blockwise_transfers_total", "Block-wise transfers (Block1 reassemblies and Block2 bodies).", cs(func(st coap.Stats) float64 { return float64(st.Blockwise) }))
	m.CounterFunc("coap_busy_total", "Requests refused because the peer had too many in progress.", cs(func(st coap.Stats) float64 { return float64(st.Busy) }))
	m.GaugeFunc("coap_sessions", "Active CoAP sessions (UDP peers and DTLS sessions).", cs(func(st coap.Stats) float64 { return float64(st.ActiveSessions) }))
	m.GaugeFunc("coap_observers", "Registered observers.", cs(func(st coap.Stats) float64 { return float64(st.Observers) }))
	m.GaugeFunc("coap_cache_bytes", "Bytes held by response caches.", cs(func(st coap.Stats) float64 { return float64(st.CacheBytes) }))
	if s.dtls != nil {
		ds := func(f func(dtlsconn.Stats) float64) func() float64 {
			return func() float64 { return f(s.dtls.Stats()) }
		}
		m.CounterFunc("dtls_handshakes_ok_total", "Completed DTLS handshakes.", ds(func(st dtlsconn.Stats) float64 { return float64(st.HandshakesOK) }))
		m.CounterFunc("dtls_handshakes_failed_total", "Failed DTLS handshakes.", ds(func(st dtlsconn.Stats) float64 { return float64(st.HandshakesFailed) }))
		m.CounterFunc("dtls_dropped_total", "ClientHellos and datagrams dropped by rate limits and caps.", ds(func(st dtlsconn.Stats) float64 {
			return float64(st.DroppedRateLimit + st.DroppedCaps + st.DroppedGarbage + st.DroppedQueue)
		}))
		m.GaugeFunc("dtls_sessions", "Established DTLS sessions.", ds(func(st dtlsconn.Stats) float64 { return float64(st.ActiveSessions) }))
		m.GaugeFunc("dtls_half_open", "DTLS handshakes in progress.", ds(func(st dtlsconn.Stats) float64 { return float64(st.HalfOpen) }))
	}
}

// Close stops the listeners and closes the store.
func (s *server) Close() error {
	if s.cancel != nil {
		s.cancel()
	}
	var err error
	if s.coap != nil {
		err = s.coap.Close()
	}
	s.wg.Wait()
	return errors.Join(err, s.house.Close())
}

// cipherSuites maps configured suite names to pion IDs.
func cipherSuites(names []string) ([]dtls.CipherSuiteID, error) {
	known := map[string]dtls.CipherSuiteID{
		"TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8":      dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8,
		"TLS_ECDHE_ECDSA_WITH_AES_128_CCM":        dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM,
		"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
		"TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": dtls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	}
	if len(names) == 0 {
		names = []string{"TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"}
	}
	var out []dtls.CipherSuiteID
	for _, n := range names {
		id, ok := known[strings.ToUpper(n)]
		if !ok {
			return nil, fmt.Errorf("dtls: unknown or unsupported cipher suite %q", n)
		}
		out = append(out, id)
	}
	return out, nil
}
