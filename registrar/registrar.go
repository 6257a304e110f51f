package registrar

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"coapca/authority"
	"coapca/errs"
	"coapca/est"
	"coapca/est/estserver"
)

// Authority is what the registrar needs from the local authority (implemented by
// *authority.Authority): the decision before relaying, the labels it knows, and where to put
// the upstream CA's certificates.
type Authority interface {
	Authorize(ctx context.Context, r authority.CertRequest) (*authority.Authorization, error)
	Profile(label string) (*authority.Profile, error)
	SetUpstreamCAs(certs []*x509.Certificate)
}

var _ Authority = (*authority.Authority)(nil)

// Options configures a registrar.
type Options struct {
	// URL is the upstream EST server: https://host[:port][/prefix]; requests go to
	// URL/.well-known/est[/label]/<operation> (RFC 7030 §3.2.2).
	URL string
	// TLS is the client configuration toward the upstream: RootCAs (its anchors, required),
	// Certificates (the registrar's identity, with id-kp-cmcRA so the upstream sees an RA).
	TLS *tls.Config
	// User and Password are HTTP Basic credentials for the upstream (RFC 7030 §3.2.3).
	User, Password string
	// Timeout bounds one upstream request (connect, TLS, answer). Default 30 s.
	Timeout time.Duration
	// RetryAfter is the Max-Age a device gets with 5.03 when the upstream is unreachable or
	// the concurrency limit stays full. Default 60 s.
	RetryAfter time.Duration
	// MaxConcurrent caps the upstream requests in flight; a request waits for a slot at most
	// Timeout, then gets 5.03 + Max-Age. Default 16.
	MaxConcurrent int
	// CACertsRefresh is how long a fetched /cacerts answer is served before it is checked
	// again (with If-None-Match). Default 1 h.
	CACertsRefresh time.Duration
	// Labels maps a downstream EST label to the upstream's ("" is the default label); a label
	// not listed keeps its name.
	Labels map[string]string
	// LocalKeyGen lets the registrar generate the key itself when the upstream has no
	// /serverkeygen (RFC 9148 §5), of KeyType (kms.GenerateKeyFrom names; "" = P-256).
	LocalKeyGen bool
	KeyType     string
	// Authority authorizes every request before it is relayed (required).
	Authority Authority
	// Observer, when set, is told every upstream request: the EST operation, the result
	// ("ok", "pending", or an errs.Kind's name in snake case) and the time it took.
	Observer func(operation, result string, d time.Duration)
	// OnLocalKey, when set, is called for every key the registrar generated itself.
	OnLocalKey func(label string)
	Logger     *slog.Logger
	// Rand is the randomness for locally generated keys; nil = crypto/rand.
	Rand io.Reader
	// Now replaces time.Now (tests).
	Now func() time.Time
}

// Service relays EST to the upstream. It implements estcoap.Service and is safe for
// concurrent use.
type Service struct {
	opts   Options
	base   *url.URL
	client *http.Client
	slots  chan struct{}
	log    *slog.Logger
	auth   Authority

	mu   sync.Mutex
	crts map[string]*crtsEntry // by upstream label

	localKeys atomic.Uint64
}

// New returns a registrar for opts. It does not contact the upstream (Refresh does).
func New(opts Options) (*Service, error) {
	u, err := url.Parse(opts.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("registrar: upstream %q: want https://host[:port][/prefix]", opts.URL)
	}
	if opts.Authority == nil {
		return nil, errors.New("registrar: no authority")
	}
	if opts.TLS == nil || opts.TLS.RootCAs == nil {
		return nil, errors.New("registrar: no trust anchors for the upstream's TLS certificate")
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.RetryAfter <= 0 {
		opts.RetryAfter = time.Minute
	}
	if opts.MaxConcurrent <= 0 {
		opts.MaxConcurrent = 16
	}
	if opts.CACertsRefresh <= 0 {
		opts.CACertsRefresh = time.Hour
	}
	if opts.Rand == nil {
		opts.Rand = rand.Reader
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for down, up := range opts.Labels {
		if strings.Contains(down, "/") || strings.Contains(up, "/") {
			return nil, fmt.Errorf("registrar: label mapping %q → %q: a label is one path segment", down, up)
		}
	}
	u.Path = strings.TrimRight(u.Path, "/")
	tc := opts.TLS.Clone()
	if tc.MinVersion == 0 {
		tc.MinVersion = tls.VersionTLS12
	}
	if len(tc.Certificates) > 0 && tc.GetClientCertificate == nil {
		// Present the RA identity whenever the upstream asks, whatever CA names it lists
		// (crypto/tls would otherwise send none when its chain names none of them).
		id := tc.Certificates[0]
		tc.Certificates = nil
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &id, nil }
	}
	tr := &http.Transport{
		TLSClientConfig:     tc,
		MaxConnsPerHost:     opts.MaxConcurrent,
		MaxIdleConnsPerHost: opts.MaxConcurrent,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: opts.Timeout,
		// An upstream with a proxy in between is configured by its URL, not the environment.
		Proxy: nil,
	}
	return &Service{
		opts: opts, base: u, log: log, auth: opts.Authority,
		client: &http.Client{Transport: tr, Timeout: opts.Timeout,
			// EST has no redirects a registrar should follow with a device's CSR.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		slots: make(chan struct{}, opts.MaxConcurrent),
		crts:  map[string]*crtsEntry{},
	}, nil
}

// Close releases idle upstream connections.
func (s *Service) Close() { s.client.CloseIdleConnections() }

// Upstream is the upstream's URL (for logs and metrics).
func (s *Service) Upstream() string { return s.base.String() }

// LocalKeys is the number of keys the registrar generated itself.
func (s *Service) LocalKeys() uint64 { return s.localKeys.Load() }

// upstreamLabel maps a downstream label.
func (s *Service) upstreamLabel(label string) string {
	if up, ok := s.opts.Labels[label]; ok {
		return up
	}
	return label
}

// knownLabel refuses labels the local authority has no profile for: the registrar authorizes
// against that profile, so a label unknown here is unknown (4.04), whatever the upstream has.
func (s *Service) knownLabel(label string) error {
	if _, err := s.auth.Profile(label); err != nil {
		if errs.As(err) != nil {
			return err
		}
		return errs.Wrap(errs.Internal, err, "profile lookup failed")
	}
	return nil
}

// CACerts answers /crts from the cache of the upstream's /cacerts (RFC 7030 §4.1).
func (s *Service) CACerts(ctx context.Context, r *estserver.Request) ([]*x509.Certificate, error) {
	if err := s.knownLabel(r.Label); err != nil {
		return nil, err
	}
	return s.cacerts(ctx, s.upstreamLabel(r.Label))
}

// CSRAttrs relays /att to /csrattrs (RFC 7030 §4.5). A 204 or 404 upstream is an empty set.
func (s *Service) CSRAttrs(ctx context.Context, r *estserver.Request) (*est.CsrAttrs, error) {
	if err := s.knownLabel(r.Label); err != nil {
		return nil, err
	}
	a, err := s.do(ctx, "csrattrs", s.upstreamLabel(r.Label), http.MethodGet, "", nil, nil)
	if err != nil {
		if k := errs.KindOf(err); k == errs.NotFound {
			return est.ParseCsrAttrs([]byte{0x30, 0x00})
		}
		return nil, err
	}
	if a.status == http.StatusNoContent {
		return est.ParseCsrAttrs([]byte{0x30, 0x00})
	}
	if err := a.mediaType("csrattrs", "application/csrattrs"); err != nil {
		return nil, err
	}
	der, err := decodeBase64(a.body)
	if err != nil {
		return nil, s.badAnswer("csrattrs", err)
	}
	attrs, err := est.ParseCsrAttrs(der)
	if err != nil {
		return nil, s.badAnswer("csrattrs", err)
	}
	return attrs, nil
}

// Enroll relays /sen to /simpleenroll (RFC 7030 §4.2.1) after the local decision.
func (s *Service) Enroll(ctx context.Context, r *estserver.Request) (*authority.Issued, error) {
	return s.enroll(ctx, r, authority.OpEnroll)
}

// Reenroll relays /sren to /simplereenroll (RFC 7030 §4.2.2) after the local decision.
func (s *Service) Reenroll(ctx context.Context, r *estserver.Request) (*authority.Issued, error) {
	return s.enroll(ctx, r, authority.OpReenroll)
}

func (s *Service) enroll(ctx context.Context, r *estserver.Request, op authority.Op) (*authority.Issued, error) {
	csr, err := est.ParseCSR(r.Body, true)
	if err != nil {
		return nil, err
	}
	if err := s.authorize(ctx, r, op, csr); err != nil {
		return nil, err
	}
	name := "simpleenroll"
	if op == authority.OpReenroll {
		name = "simplereenroll"
	}
	return s.relayEnroll(ctx, name, s.upstreamLabel(r.Label), csr)
}

// relayEnroll posts csr to the upstream's simpleenroll or simplereenroll and checks that the
// answer certifies the CSR's key.
func (s *Service) relayEnroll(ctx context.Context, name, label string, csr *x509.CertificateRequest) (*authority.Issued, error) {
	a, err := s.do(ctx, name, label, http.MethodPost, "application/pkcs10", csr.Raw, nil)
	if err != nil {
		return nil, err
	}
	certs, err := a.certs(name)
	if err != nil {
		return nil, s.badAnswer(name, err)
	}
	if !samePublicKey(certs[0].PublicKey, csr.PublicKey) {
		return nil, s.badAnswer(name, errors.New("the issued certificate does not certify the CSR's key"))
	}
	return &authority.Issued{Cert: certs[0], Chain: certs[1:], Serial: authority.FormatSerial(certs[0].SerialNumber)}, nil
}

// authorize checks PoP linking against the device's own session (RFC 9148 §5: the upstream
// cannot) and asks the local authority.
func (s *Service) authorize(ctx context.Context, r *estserver.Request, op authority.Op, csr *x509.CertificateRequest) error {
	if err := s.knownLabel(r.Label); err != nil {
		return err
	}
	link, err := linking(csr, r)
	if err != nil {
		return err
	}
	az, err := s.auth.Authorize(ctx, authority.CertRequest{Op: op, Label: r.Label, CSR: csr, Requester: r.Requester, Link: link})
	if err != nil {
		return err
	}
	s.log.Debug("registrar: relaying", "op", op, "label", r.Label, "requester", az.Requester, "kind", az.Kind.String())
	return nil
}

// linking is RFC 7030 §3.5 / RFC 9148 §3 PoP linking, found on the device's own session (as
// est/estserver does for the local CA): tls-unique, tls-exporter or EST-oscore's edhoc-unique.
func linking(csr *x509.CertificateRequest, r *estserver.Request) (authority.Linking, error) {
	pw, present, err := est.ChallengePassword(csr)
	if err != nil {
		return 0, err
	}
	if !present {
		return authority.LinkAbsent, nil
	}
	var bindings [][]byte
	if r.TLS != nil {
		bindings = append(bindings, r.TLS.TLSUnique(), r.TLS.TLSExporter())
	}
	bindings = append(bindings, r.ChannelBinding)
	if est.MatchesChannelBinding(pw, bindings...) {
		return authority.LinkMatched, nil
	}
	return authority.LinkMismatched, nil
}

func samePublicKey(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(x crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}
