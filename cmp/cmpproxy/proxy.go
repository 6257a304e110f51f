// Package cmpproxy is coapca's CMP registrar: it serves the CMP resources of RFC 9482 on a
// coap.Mux and relays every PKIMessage to an HTTP CMP server (RFC 9811), as the CoAP-to-HTTP
// proxy of RFC 9482 §3 or, per profile label, as a registration authority in the sense of
// RFC 9483 §5.
//
// Implemented:
//   - RFC 9482 §2.1-§2.3 downstream (as cmp/cmpcoap): /.well-known/cmp, /p/<profileLabel>, the
//     operation labels of RFC 9483 §6.2, POST with Content-Format 259 (42 and none accepted),
//     every CMP answer a 2.04 with Content-Format 259, discovery with ct=259.
//   - RFC 9482 §3: the message is relayed unchanged to the upstream URL (the profile label
//     mapped per configuration, the operation label to its RFC 9483 §6.1 HTTP name); the
//     upstream's CMP answer (HTTP 200, application/pkixcmp, RFC 9811 §3) goes back unchanged.
//   - RFC 9483 §5.2.3.1 (RA mode): the RA validates the original protection (signature with
//     the requester's chain, or MAC with the shared secret), asks the authority whether the
//     requester may send under the label, verifies every signature POP and refuses a
//     downstream raVerified, then replaces the protection with its own signature, keeping
//     transactionID, senderNonce and recipNonce. §5.2.3.2: with the profile's RAVerified the RA
//     replaces a POP it verified by raVerified. A response to a MAC-protected request is
//     verified against Options.ResponseTrust and re-protected with the requester's secret
//     (RFC 9483 §3.2); a response to a signature-protected request is relayed unchanged.
//     §5.2.2: a kur or rr signed with the certificate it renews or revokes goes upstream with
//     its protection unchanged (the upstream must see that certificate), and so do the
//     certConf and pollReq of its transaction. Nested messages (§5.2.2.1) are neither sent
//     nor forwarded.
//   - RFC 8075 §7 failure codes: upstream unreachable or busy → 5.03 + Max-Age, TLS failure
//     or a malformed answer → 5.02 with a short diagnostic, timeout → 5.04; an upstream's HTTP
//     error body never reaches the device. A slow upstream gets a separate response from the
//     coap endpoint (coap.Config.SeparateAfter).
//   - RFC 9482 §2.6 announcements: with Options.AnnouncePoll the RA asks the upstream for a
//     root CA key update (genm id-it-rootCaKeyUpdate, RFC 9483 §4.3.2) and publishes each new
//     one as a ckuann, signed by the RA, to the observers of …/ann.
package cmpproxy

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"coapca/authority"
	"coapca/cmp"
	"coapca/cmp/cmpcoap"
	"coapca/cmp/cmpserver"
	"coapca/coap"
)

// Content-Formats (RFC 9482 §5; 42 is application/octet-stream).
const (
	CFPKIXCMP     = 259
	CFOctetStream = 42
)

// Root is the well-known CMP path (RFC 9482 §2.1).
const Root = "/.well-known/cmp"

// Mode is how a profile's messages are relayed.
type Mode uint8

// The modes.
const (
	// ModeTransparent relays the PKIMessage bytes unchanged both ways (RFC 9482 §3).
	ModeTransparent Mode = iota
	// ModeRA checks the requester and forwards with the RA's protection (RFC 9483 §5.2.3).
	ModeRA
	numModes
)

var modeNames = [numModes]string{"transparent", "ra"}

func (m Mode) String() string {
	if m < numModes {
		return modeNames[m]
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// ParseMode is the inverse of Mode.String; "" is ModeTransparent.
func ParseMode(s string) (Mode, error) {
	if s == "" {
		return ModeTransparent, nil
	}
	for i, n := range modeNames {
		if strings.EqualFold(n, s) {
			return Mode(i), nil
		}
	}
	return 0, fmt.Errorf("unknown CMP relay mode %q (transparent or ra)", s)
}

// Profile is how the messages of one downstream profile label are relayed.
type Profile struct {
	Mode Mode
	// UpstreamLabel is the upstream's profile label (/p/<label> appended to the upstream URL);
	// "" relays to the upstream URL itself.
	UpstreamLabel string
	// RAVerified (RA mode): replace a signature POP that the RA verified by raVerified
	// (RFC 9483 §5.2.3.2), for an upstream that trusts this RA's checks.
	RAVerified bool
}

// Authority is what RA mode needs from the local authority; *authority.Authority implements it.
type Authority interface {
	VerifyClient(rawCerts [][]byte) ([]*x509.Certificate, error)
	MACSecret(ref string) ([]byte, error)
	AuthorizeRelay(ctx context.Context, req authority.Requester, label string) error
}

// Options configure the proxy.
type Options struct {
	// Upstream is the RFC 9811 server's URL: the default profile's messages are POSTed to
	// it, a profile's to Upstream + "/p/" + UpstreamLabel (required; http or https).
	Upstream string
	// Name names the upstream in metrics and logs; default the URL's host.
	Name string
	// Client sends the HTTP requests (its Transport carries the TLS trust and client
	// identity); nil = a client with a default transport. Its Timeout is not used: Timeout is.
	Client *http.Client
	// Timeout bounds one upstream exchange (5.04 beyond it). Default 30 s.
	Timeout time.Duration
	// MaxConcurrent caps upstream requests in flight; beyond it a request gets 5.03 with
	// Max-Age at once. Default 32.
	MaxConcurrent int
	// RetryAfter is the Max-Age of a 5.03 when the upstream is unreachable or busy (unless
	// its own Retry-After says otherwise). Default 10 s.
	RetryAfter time.Duration
	// Default is the profile of /.well-known/cmp; Profiles are served as /p/<label>.
	Default  Profile
	Profiles map[string]Profile
	// Authority, Signer, Cert and Chain are needed when a profile is in RA mode: the local
	// authorization model and the RA's protection credential (a certificate for CMP
	// signature protection, ideally with id-kp-cmcRA, RFC 6402, so that the upstream
	// recognises the RA).
	Authority Authority
	Signer    crypto.Signer
	Cert      *x509.Certificate
	Chain     []*x509.Certificate
	// ResponseTrust are the anchors of the upstream's CMP signer: in RA mode a response to a
	// MAC-protected request is verified against them before the RA re-protects it with the
	// requester's secret. nil = MAC-protected requests are refused in RA mode.
	ResponseTrust *x509.CertPool
	// MACLimits bound the MAC parameters a requester may choose (RA mode).
	MACLimits cmp.MACLimits
	// AnnouncePoll, when positive (RA mode credential required), asks the upstream this often
	// for a root CA key update and announces a new one on …/ann (RFC 9482 §2.6).
	AnnouncePoll time.Duration
	// Observe is called after every upstream exchange (metrics): the upstream's name, the
	// result ("ok" or a failure kind: unreachable, tls, timeout, status, bad_response, busy,
	// refused, bad_request) and the time from the device's request to the answer.
	Observe func(upstream, result string, d time.Duration)
	// Notify sends an Observe notification for path to its observers.
	Notify func(path string, r *coap.Response)
	Logger *slog.Logger
	// Now replaces time.Now (tests).
	Now func() time.Time
}

// Proxy relays CMP over CoAP to an HTTP CMP server. It is safe for concurrent use.
type Proxy struct {
	opts     Options
	upstream *url.URL
	name     string
	client   *http.Client
	sem      chan struct{}
	log      *slog.Logger
	ra       *cmp.SignatureProtection // nil without an RA credential
	raName   cmp.GeneralName

	mu   sync.Mutex
	last map[string][]byte    // latest announcement per …/ann path
	ann  map[string]bool      // root CA key updates already announced (newWithNew DER)
	kept map[string]time.Time // transactions forwarded with unchanged protection (ra.go)
}

// New checks opts and returns the proxy.
func New(opts Options) (*Proxy, error) {
	u, err := url.Parse(opts.Upstream)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("cmp upstream %q: want an http:// or https:// URL", opts.Upstream)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("cmp upstream %q: no query or fragment", opts.Upstream)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.MaxConcurrent <= 0 {
		opts.MaxConcurrent = 32
	}
	if opts.RetryAfter <= 0 {
		opts.RetryAfter = 10 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	p := &Proxy{opts: opts, upstream: u, name: opts.Name, client: opts.Client,
		sem: make(chan struct{}, opts.MaxConcurrent), log: opts.Logger,
		last: map[string][]byte{}, ann: map[string]bool{}, kept: map[string]time.Time{}}
	if p.name == "" {
		p.name = u.Host
	}
	if p.client == nil {
		p.client = &http.Client{}
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	for l := range opts.Profiles {
		if l == "" || strings.Contains(l, "/") {
			return nil, fmt.Errorf("cmp upstream: bad profile label %q", l)
		}
	}
	if opts.Signer != nil || opts.Cert != nil {
		if opts.Signer == nil || opts.Cert == nil {
			return nil, errors.New("cmp upstream: the RA credential needs both a certificate and a key")
		}
		p.ra = &cmp.SignatureProtection{Signer: opts.Signer, Cert: opts.Cert, Chain: opts.Chain}
		p.raName = cmp.DirectoryName(opts.Cert.RawSubject)
	}
	for _, pr := range p.profiles() {
		if pr.Mode >= numModes {
			return nil, fmt.Errorf("cmp upstream: bad mode %v", pr.Mode)
		}
		if pr.Mode == ModeRA && (p.ra == nil || opts.Authority == nil) {
			return nil, errors.New("cmp upstream: RA mode needs the RA's certificate and key and the authority")
		}
	}
	if opts.AnnouncePoll > 0 && (p.ra == nil || opts.ResponseTrust == nil) {
		return nil, errors.New("cmp upstream: announcements from upstream need the RA's certificate and key (they are re-signed by the RA) and the trust for the upstream's CMP signer")
	}
	return p, nil
}

func (p *Proxy) profiles() []Profile {
	out := []Profile{p.opts.Default}
	for _, pr := range p.opts.Profiles {
		out = append(out, pr)
	}
	return out
}

// Name is the upstream's name in metrics and logs.
func (p *Proxy) Name() string { return p.name }

// Labels returns the downstream profile labels, sorted.
func (p *Proxy) Labels() []string {
	out := make([]string, 0, len(p.opts.Profiles))
	for l := range p.opts.Profiles {
		out = append(out, l)
	}
	slices.Sort(out)
	return out
}

// httpSegment maps an operation (cmpserver.Op*) to its HTTP path label (RFC 9483 §6.1).
var httpSegment = map[string]string{
	cmpserver.OpIR: "initialization", cmpserver.OpCR: "certification", cmpserver.OpKUR: "keyupdate",
	cmpserver.OpP10CR: "pkcs10", cmpserver.OpRR: "revocation", cmpserver.OpGenCACerts: "getcacerts",
	cmpserver.OpGenRoot: "getrootupdate", cmpserver.OpGenTemplate: "getcertreqtemplate", cmpserver.OpGenCRLs: "getcrls",
}

func (p *Proxy) bases() []string { return cmpcoap.Bases(Root, p.Labels()) }

// Register adds the CMP resources to m: the ones the CMP-over-CoAP binding serves
// (cmpcoap.RegisterResources), relayed by p.
func (p *Proxy) Register(m *coap.Mux) {
	cmpcoap.RegisterResources(m, Root, p.Labels(), p, coap.HandlerFunc(p.serveAnn))
}

// route is a parsed downstream path.
type route struct {
	label   string
	profile Profile
	op      string // cmpserver.Op*, "" = none
	ann     bool
}

func (p *Proxy) route(path string) (route, bool) {
	label, seg, ok := cmpserver.SplitPath(Root, path)
	if !ok {
		return route{}, false
	}
	r := route{label: label, profile: p.opts.Default}
	if label != "" {
		pr, found := p.opts.Profiles[label]
		if !found {
			return route{}, false
		}
		r.profile = pr
	}
	switch seg {
	case "":
	case "ann":
		r.ann = true
	default:
		if r.op, ok = cmpserver.CoAPOperation(seg); !ok {
			return route{}, false
		}
	}
	return r, true
}

// upstreamURL is where a message of r goes.
func (p *Proxy) upstreamURL(r route) string {
	u := *p.upstream
	if r.profile.UpstreamLabel == "" && r.op == "" {
		return u.String()
	}
	path := strings.TrimSuffix(u.Path, "/")
	if r.profile.UpstreamLabel != "" {
		path += "/p/" + url.PathEscape(r.profile.UpstreamLabel)
	}
	if r.op != "" {
		path += "/" + httpSegment[r.op]
	}
	u.Path, u.RawPath = path, ""
	return u.String()
}

// ServeCoAP relays one CMP POST (RFC 9482 §2.3, §3).
func (p *Proxy) ServeCoAP(ctx context.Context, r *coap.Request) *coap.Response {
	rt, ok := p.route(r.Path)
	if !ok {
		return diag(codes.NotFound, "no CMP resource at "+r.Path+" (expected "+Root+"[/p/<label>][/<operation>|/ann])")
	}
	if rt.ann {
		return p.serveAnn(ctx, r)
	}
	if r.Method != codes.POST {
		return diag(codes.MethodNotAllowed, "CMP messages are POSTed (RFC 9482 §2.3)")
	}
	switch r.ContentFormat {
	case coap.CF(CFPKIXCMP), coap.CF(CFOctetStream), coap.Format{}:
	default:
		return diag(codes.UnsupportedMediaType, "CMP requests use Content-Format 259 application/pkixcmp")
	}
	if r.Accept.IsSet() && r.Accept != coap.CF(CFPKIXCMP) {
		return diag(codes.NotAcceptable, "CMP answers are Content-Format 259 application/pkixcmp")
	}
	start := p.opts.Now()
	var (
		body []byte
		f    failure
	)
	if rt.profile.Mode == ModeRA {
		body, f = p.relayRA(ctx, r, rt)
	} else {
		body, f = p.relayTransparent(ctx, r.Payload, rt)
	}
	if p.opts.Observe != nil {
		p.opts.Observe(p.name, f.String(), p.opts.Now().Sub(start))
	}
	switch f.kind {
	case failNone:
	case failRefused:
		// A CMP error message is a CMP answer (RFC 9482 §2.3): 2.04 like any other.
		p.log.Info("cmp relay refused", "upstream", p.name, "label", rt.label, "err", f.cause)
	default:
		return p.failureResponse(f)
	}
	return &coap.Response{Code: codes.Changed, ContentFormat: coap.CF(CFPKIXCMP), Payload: body}
}

// relayTransparent sends the request bytes unchanged and returns the answer unchanged.
func (p *Proxy) relayTransparent(ctx context.Context, body []byte, rt route) ([]byte, failure) {
	if !isDERSequence(body) {
		return nil, failure{kind: failBadRequest, msg: "the payload is not a DER PKIMessage"}
	}
	return p.post(ctx, p.upstreamURL(rt), body)
}

// serveAnn answers GET …/ann (RFC 9482 §2.6).
func (p *Proxy) serveAnn(_ context.Context, r *coap.Request) *coap.Response {
	if r.Method != codes.GET {
		return diag(codes.MethodNotAllowed, "GET (with Observe) registers for announcements (RFC 9482 §2.6)")
	}
	if rt, ok := p.route(r.Path); !ok || !rt.ann {
		return diag(codes.NotFound, "no announcement resource at "+r.Path)
	}
	p.mu.Lock()
	last := p.last[r.Path]
	p.mu.Unlock()
	if last == nil {
		return &coap.Response{Code: codes.Content}
	}
	return &coap.Response{Code: codes.Content, ContentFormat: coap.CF(CFPKIXCMP), Payload: last}
}

// announce publishes der to the observers of every …/ann resource.
func (p *Proxy) announce(der []byte) {
	paths := make([]string, 0, len(p.opts.Profiles)+1)
	for _, base := range p.bases() {
		paths = append(paths, base+"/ann")
	}
	p.mu.Lock()
	for _, path := range paths {
		p.last[path] = der
	}
	p.mu.Unlock()
	if p.opts.Notify == nil {
		return
	}
	for _, path := range paths {
		p.opts.Notify(path, &coap.Response{Code: codes.Content, ContentFormat: coap.CF(CFPKIXCMP), Payload: der})
	}
}

func diag(code codes.Code, msg string) *coap.Response {
	return &coap.Response{Code: code, Payload: []byte(msg)}
}
