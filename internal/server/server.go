package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/pion/dtls/v3"

	"coapca/authority"
	"coapca/cmp/cmphttp"
	"coapca/coap"
	"coapca/coap/dtlsconn"
	"coapca/coap/oscorelayer"
	"coapca/est/estserver"
	"coapca/internal/config"
	"coapca/internal/metrics"
	"coapca/registrar"
)

// Server is a running coapca: the house and its front doors. `coapca serve`, the end-to-end
// tests and `coapca bench` all start it the same way.
//
// Each listener has its own CoAP resource table: coaps:// (DTLS-authenticated: EST-coaps) and
// coap:// (no transport security: only resources that protect themselves, such as CMP
// messages or OSCORE-protected EST). Front doors register into the tables in register*, one
// file each.
type Server struct {
	*House
	log     *slog.Logger
	metrics *metrics.Metrics
	est     *estserver.Service
	// registrar relays EST-coaps and EST-oscore upstream (registrar.go); nil when off.
	registrar *registrar.Service
	// oscoreProxy forwards EST-oscore to upstream.oscore_url (nil = not forwarding).
	oscoreProxy *registrar.OSCOREProxy

	secureMux, plainMux *coap.Mux
	httpMux             *http.ServeMux
	oscoreLayer         *oscorelayer.Server // EST-oscore's contexts, also for OSCORE over HTTP

	coaps       *coap.Server // nil when listen.coaps is off
	coapUDP     *coap.Server // nil when listen.coap is off
	dtls        *dtlsconn.Listener
	udp         net.PacketConn
	http        net.Listener
	coapsURL    string // coaps://host:port of the DTLS listener
	coapURL     string // coap://host:port of the UDP listener
	httpURL     string // http://host:port of the HTTP listener
	metricsAddr net.Addr
	wg          sync.WaitGroup
	cancel      context.CancelFunc

	https net.Listener // EST over HTTPS (esthttp.go); nil when listen.https is off

	httpServers []*http.Server // CMP over HTTP and EST over HTTPS, for a graceful Shutdown
}

// Validate checks cfg as Start will use it — config.Validate, the DTLS cipher suites and the
// OSCORE context files — without creating or changing anything.
func Validate(cfg config.Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if _, err := cipherSuites(cfg.DTLS.CipherSuites); err != nil {
		return err
	}
	for _, path := range cfg.OSCOREContexts {
		if _, _, err := LoadOSCOREContext(path); err != nil {
			return err
		}
	}
	return nil
}

// defaultMaxBody caps request bodies: a CSR or a CMP message is a few kilobytes at most.
const defaultMaxBody = 64 << 10

// coapReadBuffer is the receive buffer asked for the coap:// socket (SO_RCVBUF).
const coapReadBuffer = 4 << 20

// Start opens the house of cfg (creating the data directory on first start), registers the
// front doors and starts the listeners that cfg.Listen enables. Close stops them.
func Start(ctx context.Context, cfg config.Config, log *slog.Logger) (*Server, error) {
	// The whole configuration is checked before the first start creates the data directory
	// or a later one changes it: a typo leaves nothing behind.
	if err := Validate(cfg); err != nil {
		return nil, err
	}
	suites, err := cipherSuites(cfg.DTLS.CipherSuites)
	if err != nil {
		return nil, err
	}
	if err := cfg.CMPUpstream.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.Upstream.Validate(); err != nil {
		return nil, err
	}
	if _, err := EDHOCCredential(nil, cfg.EDHOC.Credential); err != nil { // likewise
		return nil, err
	}
	m := metrics.New()
	h, err := openHouse(ctx, cfg, log, true)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &Server{House: h, log: log, metrics: m, cancel: cancel,
		secureMux: coap.NewMux(), plainMux: coap.NewMux(), httpMux: http.NewServeMux()}
	fail := func(err error) (*Server, error) {
		s.Close()
		return nil, err
	}

	cc := cfg.CoAP
	if cc.MaxBodySize == 0 {
		cc.MaxBodySize = defaultMaxBody
	}
	coapCfg := coap.Config{
		ACKTimeout: cc.ACKTimeout, ACKRandomFactor: cc.ACKRandomFactor, MaxRetransmit: cc.MaxRetransmit,
		NStart: cc.NStart, SeparateAfter: cc.SeparateAfter, MaxBodySize: cc.MaxBodySize,
		BlockTimeout: cc.BlockTimeout, MaxExchangesPerPeer: cc.MaxExchangesPerPeer,
		MaxSessions: cc.MaxSessions, MaxCacheBytes: cc.MaxCacheBytes,
		TrustUDPSources: cc.TrustUDPSources, EchoWindow: cc.EchoWindow, MaxSessionsPerIP: cc.MaxSessionsPerIP,
		MaxObservers: cc.MaxObservers, MaxObserversPerIP: cc.MaxObserversPerIP, MaxTransfersPerIP: cc.MaxTransfersPerIP,
		MaxLayerWorkers: cc.MaxLayerWorkers, Logger: log,
	}
	if cc.TrustUDPSources {
		log.Warn("coap.trust_udp_sources: the coap:// listener answers unproven source addresses in full (no RFC 9175 Echo check)")
	}
	// The CoAP servers exist before the front doors register (their goroutines, such as the
	// CMP announcement poll, look them up) and serve only once every front door is in place:
	// nothing writes these fields after a goroutine may read them.
	if cfg.Listen.CoAPS != "" {
		s.coaps = coap.NewServer(s.secureMux, coapCfg)
	}
	if cfg.Listen.CoAP != "" {
		s.coapUDP = coap.NewServer(s.plainMux, coapCfg)
	}

	// The front doors.
	if err := s.startRegistrar(ctx); err != nil {
		return fail(err)
	}
	if err := s.registerEST(); err != nil {
		return fail(err)
	}
	if err := s.registerCMP(ctx); err != nil {
		return fail(err)
	}
	if err := s.registerOSCORE(ctx, cfg.OSCOREContexts); err != nil {
		return fail(err)
	}

	if cfg.Listen.CoAPS != "" {
		l, err := dtlsconn.Listen("udp", cfg.Listen.CoAPS, dtlsconn.ServerConfig{
			Certificates: []tls.Certificate{s.dtlsCertificate()},
			// RFC 9148 §3: the client MUST authenticate with a certificate; the authority
			// decides which chains it accepts (manufacturer trust stores or this CA).
			ClientAuth:                   dtlsconn.RequireClientCert,
			VerifyPeer:                   h.auth.VerifyClient,
			CipherSuites:                 suites,
			HandshakeTimeout:             cfg.DTLS.HandshakeTimeout,
			IdleTimeout:                  cfg.DTLS.IdleTimeout,
			ParkAfter:                    cfg.DTLS.ParkAfter,
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
			if err := s.coaps.ServeDTLS(l); err != nil && ctx.Err() == nil {
				log.Error("coaps listener stopped", "err", err)
			}
		}()
	}
	if cfg.Listen.CoAP != "" {
		pc, err := net.ListenPacket("udp", cfg.Listen.CoAP)
		if err != nil {
			return fail(fmt.Errorf("coap listener %s: %w", cfg.Listen.CoAP, err))
		}
		if uc, ok := pc.(*net.UDPConn); ok {
			// Many devices at once (a fleet-wide renewal, EST-oscore with hundreds of devices
			// in flight) send bursts that outrun the default socket buffer, about a hundred
			// small datagrams on Linux, whenever the read loop is briefly descheduled: each
			// datagram lost there costs its device an ACK_TIMEOUT, 2 to 3 s (RFC 7252 §4.2).
			// The kernel caps the size at net.core.rmem_max.
			if err := uc.SetReadBuffer(coapReadBuffer); err != nil {
				log.Debug("coap listener: socket receive buffer not enlarged", "err", err)
			}
		}
		s.udp = pc
		s.coapURL = "coap://" + pc.LocalAddr().String()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.coapUDP.ServeUDP(pc); err != nil && ctx.Err() == nil {
				log.Error("coap listener stopped", "err", err)
			}
		}()
	}
	if cfg.Listen.HTTP != "" {
		ln, err := net.Listen("tcp", cfg.Listen.HTTP)
		if err != nil {
			return fail(fmt.Errorf("http listener %s: %w", cfg.Listen.HTTP, err))
		}
		s.http = ln
		s.httpURL = "http://" + ln.Addr().String()
		hc := cfg.HTTP
		maxBody := hc.MaxBodySize
		if maxBody <= 0 {
			maxBody = defaultMaxBody
		}
		// Every request body on this listener is capped (413 beyond it), and slow or idle
		// clients are disconnected by the timeouts.
		hs := cmphttp.NewServer(http.MaxBytesHandler(s.withOSCORE(s.httpMux, maxBody), maxBody), cmphttp.Limits{
			ReadHeaderTimeout: hc.ReadHeaderTimeout, ReadTimeout: hc.ReadTimeout, WriteTimeout: hc.WriteTimeout,
			IdleTimeout: hc.IdleTimeout, MaxHeaderBytes: hc.MaxHeaderBytes}, log)
		s.httpServers = append(s.httpServers, hs)
		s.wg.Add(2)
		go func() {
			defer s.wg.Done()
			if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("http listener stopped", "err", err)
			}
		}()
		go func() {
			defer s.wg.Done()
			<-ctx.Done()
			shut, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = hs.Shutdown(shut)
		}()
	}
	if cfg.Listen.HTTPS != "" {
		if err := s.startESTHTTPS(ctx, cfg.Listen.HTTPS); err != nil {
			return fail(err)
		}
	}
	s.registerMetrics()
	if cfg.Listen.Metrics != "" {
		addr, err := m.Serve(ctx, cfg.Listen.Metrics, s.health, log)
		if err != nil {
			return fail(fmt.Errorf("metrics listener %s: %w", cfg.Listen.Metrics, err))
		}
		s.metricsAddr = addr
	}
	return s, nil
}

// health reports whether the store answers (through the authority).
func (s *Server) health(ctx context.Context) error {
	_, err := s.auth.ListCertificates(ctx, authority.CertFilter{Limit: 1})
	return err
}

func (s *Server) registerMetrics() {
	m := s.metrics
	cs := func(f func(coap.Stats) float64) func() float64 {
		return func() float64 {
			var sum float64
			for _, srv := range s.coapServers() {
				sum += f(srv.Stats())
			}
			return sum
		}
	}
	m.Collector(newCoAPResponsesCollector(s.coapServers))
	m.CounterFunc("coap_retransmissions_total", "Confirmable messages retransmitted.", cs(func(st coap.Stats) float64 { return float64(st.Retransmissions) }))
	m.CounterFunc("coap_duplicates_total", "Duplicate messages detected (RFC 7252 §4.5).", cs(func(st coap.Stats) float64 { return float64(st.Duplicates) }))
	m.CounterFunc("coap_malformed_total", "Datagrams that did not parse as CoAP.", cs(func(st coap.Stats) float64 { return float64(st.Malformed) }))
	m.CounterFunc("coap_resets_total", "Reset messages received.", cs(func(st coap.Stats) float64 { return float64(st.Resets) }))
	m.CounterFunc("coap_blockwise_transfers_total", "Block-wise transfers (Block1 reassemblies and Block2 bodies).", cs(func(st coap.Stats) float64 { return float64(st.Blockwise) }))
	m.CounterFunc("coap_busy_total", "Requests refused because the peer had too many in progress.", cs(func(st coap.Stats) float64 { return float64(st.Busy) }))
	m.CounterFunc("coap_echo_challenges_total", "4.01 + Echo address checks sent to unproven sources (RFC 9175 §2.4).", cs(func(st coap.Stats) float64 { return float64(st.EchoChallenges) }))
	m.CounterFunc("coap_observers_evicted_total", "Observe registrations evicted by max_observers / max_observers_per_ip.", cs(func(st coap.Stats) float64 { return float64(st.ObserversEvicted) }))
	m.CounterFunc("coap_answers_kept_total", "Evicted coap:// sessions whose answers were kept for their retransmissions (RFC 7252 §4.5).", cs(func(st coap.Stats) float64 { return float64(st.AnswersKept) }))
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
		m.GaugeFunc("dtls_parked_sessions", "Idle DTLS sessions parked (pion state exported, connection released); counted in dtls_sessions too.", ds(func(st dtlsconn.Stats) float64 { return float64(st.Parked) }))
		m.CounterFunc("dtls_parks_total", "DTLS sessions parked.", ds(func(st dtlsconn.Stats) float64 { return float64(st.Parks) }))
		m.CounterFunc("dtls_resumes_total", "Parked DTLS sessions resumed by traffic.", ds(func(st dtlsconn.Stats) float64 { return float64(st.Resumes) }))
	}
}

// coapServers returns the running CoAP servers.
func (s *Server) coapServers() []*coap.Server {
	var out []*coap.Server
	for _, c := range []*coap.Server{s.coaps, s.coapUDP} {
		if c != nil {
			out = append(out, c)
		}
	}
	return out
}

// Shutdown stops the server gracefully and closes it: every listener stops taking new work
// (CoAP requests are answered 5.03 + Max-Age, HTTP listeners stop accepting connections), the
// requests already taken are finished and answered — CoAP answers sent, DTLS sessions ended
// with close_notify, HTTP responses written (net/http graceful shutdown) — and then the store
// is closed. When ctx ends first (the shutdown deadline), what is still running is cut off and
// Shutdown returns an error saying so; the store is closed either way.
func (s *Server) Shutdown(ctx context.Context) error {
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	add := func(err error) {
		if err != nil {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}
	}
	for _, c := range s.coapServers() {
		wg.Go(func() { add(c.Shutdown(ctx)) })
	}
	for _, hs := range s.httpServers {
		wg.Go(func() {
			if err := hs.Shutdown(ctx); err != nil {
				add(fmt.Errorf("http shutdown: %w", err))
			}
		})
	}
	wg.Wait()
	return errors.Join(errors.Join(errs...), s.Close())
}

// Close stops the listeners and closes the store.
func (s *Server) Close() error {
	if s.cancel != nil {
		s.cancel()
	}
	var err error
	for _, c := range s.coapServers() {
		err = errors.Join(err, c.Close())
	}
	if s.http != nil {
		s.http.Close()
	}
	s.wg.Wait()
	return errors.Join(err, s.House.Close())
}

// CoAPSURL is coaps://host:port of the DTLS listener ("" when listen.coaps is off).
func (s *Server) CoAPSURL() string { return s.coapsURL }

// CoAPURL is coap://host:port of the UDP listener ("" when listen.coap is off).
func (s *Server) CoAPURL() string { return s.coapURL }

// HTTPURL is http://host:port of the HTTP listener ("" when listen.http is off).
func (s *Server) HTTPURL() string { return s.httpURL }

// MetricsAddr is the address of the metrics listener (nil when listen.metrics is off).
func (s *Server) MetricsAddr() net.Addr { return s.metricsAddr }

// CoAPSStats are the endpoint counters of the EST-coaps (DTLS) listener; zero when it is off.
func (s *Server) CoAPSStats() coap.Stats {
	if s.coaps == nil {
		return coap.Stats{}
	}
	return s.coaps.Stats()
}

// Observers is the number of CoAP clients observing path, over both CoAP listeners.
func (s *Server) Observers(path string) int {
	n := 0
	for _, c := range s.coapServers() {
		n += c.Observers(path)
	}
	return n
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
