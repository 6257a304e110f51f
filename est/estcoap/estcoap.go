// Package estcoap is the EST-coaps binding (RFC 9148): it registers the EST resources in a
// coap.Mux and translates CoAP requests to calls on the EST service and the service's results
// and typed errors back to CoAP responses. It decides no policy and touches no store.
//
// Implemented: the resources and link attributes of RFC 9148 §4.1 (/crts, /sen, /sren, /att,
// /skg, /skc under /.well-known/est and under /.well-known/est/<label>), the Content-Formats of
// §4.3 (requests 286; responses 281 by default, 287 on Accept, 285, and 62 multipart-core for
// server-side key generation, §4.8, with the key as 284 or CMS-encrypted as 280), the response
// codes of §4.5 (Table 4) mapped from errs.Kind in one table, and delayed responses as 5.03 +
// Max-Age (§4.7).
//
// EST-oscore (draft-ietf-ace-coap-est-oscore): with Options.OSCORE the resources carry `osc`
// and are registered on a table whose coap.Layer verifies OSCORE; a request's
// Peer.OSCORE becomes transport "oscore", its edhoc-unique the channel binding checked against
// the challengePassword, and a pre-shared context's name the requester's identity.
//
// Beyond RFC 9148, for constrained BRSKI (draft-ietf-anima-constrained-voucher) /crts answers
// Accept 62 with a multipart-core of 287 parts, one per CA certificate, and carries an ETag
// (a matching ETag in the request gets 2.03 Valid, RFC 7252 §5.10.6).
package estcoap

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"log/slog"
	"math"
	"strconv"
	"strings"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"coapca/authority"
	"coapca/coap"
	"coapca/errs"
	"coapca/est"
	"coapca/est/estserver"
)

// DefaultRoot is the EST root every EST-coaps server MUST support (RFC 9148 §4.1).
const DefaultRoot = "/.well-known/est"

// Service is the EST service the binding calls; *estserver.Service implements it (a registrar can
// implement it too).
type Service interface {
	CACerts(ctx context.Context, r *estserver.Request) ([]*x509.Certificate, error)
	Enroll(ctx context.Context, r *estserver.Request) (*authority.Issued, error)
	Reenroll(ctx context.Context, r *estserver.Request) (*authority.Issued, error)
	ServerKeyGen(ctx context.Context, r *estserver.Request) (*estserver.ServerKey, error)
	CSRAttrs(ctx context.Context, r *estserver.Request) (*est.CsrAttrs, error)
}

// Options configures the binding.
type Options struct {
	// Labels are the non-default labels listed in /.well-known/core. Requests for other labels
	// still reach the service, which answers errs.NotFound (4.04) for labels it does not know.
	Labels []string
	// Root is the EST root; "" = DefaultRoot.
	Root string
	// OSCORE marks the resources with `osc` (EST-oscore).
	OSCORE bool
	Logger *slog.Logger
}

// Binding serves the EST-coaps resources. It is a coap.Handler for every path under its root.
type Binding struct {
	svc  Service
	opts Options
	log  *slog.Logger
}

// New returns the binding of svc.
func New(svc Service, opts Options) *Binding {
	if opts.Root == "" {
		opts.Root = DefaultRoot
	}
	opts.Root = "/" + strings.Trim(opts.Root, "/")
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Binding{svc: svc, opts: opts, log: log}
}

// function describes one EST-coaps resource (RFC 9148 §4.1 Table 1 and the §4.1 discovery
// example).
type function struct {
	name   string
	rt     string
	ct     []int
	method codes.Code
}

var functions = []function{
	{"crts", "ace.est.crts", []int{est.CFPKCS7CertsOnly, est.CFPKIXCert}, codes.GET},
	{"sen", "ace.est.sen", []int{est.CFPKCS7CertsOnly, est.CFPKIXCert}, codes.POST},
	{"sren", "ace.est.sren", []int{est.CFPKCS7CertsOnly, est.CFPKIXCert}, codes.POST},
	{"att", "ace.est.att", []int{est.CFCSRAttrs}, codes.GET},
	{"skg", "ace.est.skg", []int{est.CFMultipartCore}, codes.POST},
	{"skc", "ace.est.skc", []int{est.CFMultipartCore}, codes.POST},
}

// Register adds the resources to m: every function under the root and under each label, plus
// a hidden prefix resource on the root so that other labels and unknown functions get an
// answer from the binding (4.04 with a diagnostic).
func (b *Binding) Register(m *coap.Mux) {
	bases := []string{b.opts.Root}
	for _, l := range b.opts.Labels {
		if l = strings.Trim(l, "/"); l != "" {
			bases = append(bases, b.opts.Root+"/"+l)
		}
	}
	for _, base := range bases {
		for _, f := range functions {
			m.Handle(coap.Resource{
				Path:    base + "/" + f.name,
				RT:      []string{f.rt},
				CT:      f.ct,
				OSCORE:  b.opts.OSCORE,
				Handler: b,
			})
		}
	}
	m.Handle(coap.Resource{Path: b.opts.Root, Prefix: true, Hidden: true, Handler: b})
}

// ServeCoAP dispatches a request under the root to its EST function.
func (b *Binding) ServeCoAP(ctx context.Context, r *coap.Request) *coap.Response {
	label, fn, ok := est.SplitPath(b.opts.Root, r.Path)
	if !ok {
		return ErrorResponse(errs.New(errs.NotFound, "no EST function at %s (expected %s[/<label>]/{crts,sen,sren,att,skg,skc})", r.Path, b.opts.Root))
	}
	var f *function
	for i := range functions {
		if functions[i].name == fn {
			f = &functions[i]
		}
	}
	if f == nil {
		return ErrorResponse(errs.New(errs.NotFound, "unknown EST function %q", fn))
	}
	if r.Method != f.method {
		// A CoAP-level error with no errs.Kind: the service is never called.
		return diag(codes.MethodNotAllowed, "/"+fn+" takes "+f.method.String()+" only (RFC 9148 §4.5)")
	}
	req := b.estRequest(r, label)
	switch fn {
	case "crts":
		return b.crts(ctx, r, req)
	case "att":
		return b.att(ctx, r, req)
	case "sen", "sren":
		return b.enroll(ctx, r, req, fn == "sren")
	default:
		return b.serverKeyGen(ctx, r, req, fn == "skc")
	}
}

func (b *Binding) estRequest(r *coap.Request, label string) *estserver.Request {
	req := &estserver.Request{Label: label, Body: r.Payload, TLS: r.Peer.TLS}
	who := authority.Requester{Protocol: authority.ProtocolEST, Chain: r.Peer.Certificates, Transport: authority.TransportCoAP}
	switch {
	case r.Peer.OSCORE != nil:
		// EST-oscore: the EDHOC peer's certificate (Peer.Certificates) or the pre-shared
		// context's name, or the ACE access token that keyed the context (RFC 9203), and
		// edhoc-unique as the channel binding.
		who.Transport, who.PreShared = authority.TransportOSCORE, r.Peer.OSCORE.Identity
		who.Token = r.Peer.OSCORE.Token
		req.ChannelBinding = r.Peer.OSCORE.ChannelBinding
	case r.Peer.Secure && (len(r.Peer.Certificates) > 0 || r.Peer.TLS != nil):
		who.Transport = authority.TransportCoAPS
	case r.Peer.Secure:
		who.Transport = authority.TransportOSCORE
	}
	if r.Peer.Addr != nil {
		who.Addr = r.Peer.Addr.String()
	}
	req.Requester = who
	return req
}

func (b *Binding) crts(ctx context.Context, r *coap.Request, req *estserver.Request) *coap.Response {
	switch r.Accept {
	case coap.Format{}, coap.CF(est.CFPKCS7CertsOnly), coap.CF(est.CFPKIXCert), coap.CF(est.CFMultipartCore):
	default:
		return notAcceptable(r.Accept, est.CFPKCS7CertsOnly, est.CFPKIXCert, est.CFMultipartCore)
	}
	certs, err := b.svc.CACerts(ctx, req)
	if err != nil {
		return b.fail(ctx, r, err)
	}
	resp := &coap.Response{Code: codes.Content}
	switch r.Accept {
	case coap.CF(est.CFPKIXCert):
		// One certificate only: the root, the trust anchor a client stores (RFC 7030 §4.1.3).
		resp.ContentFormat, resp.Payload = coap.CF(est.CFPKIXCert), certs[len(certs)-1].Raw
	case coap.CF(est.CFMultipartCore):
		parts := make([]est.Part, len(certs))
		for i, c := range certs {
			parts[i] = est.Part{ContentFormat: est.CFPKIXCert, Body: c.Raw}
		}
		p, err := est.EncodeMultipart(parts)
		if err != nil {
			return b.fail(ctx, r, errs.Wrap(errs.Internal, err, "encoding failed"))
		}
		resp.ContentFormat, resp.Payload = coap.CF(est.CFMultipartCore), p
	default:
		p, err := est.EncodeCertsOnly(certs)
		if err != nil {
			return b.fail(ctx, r, errs.Wrap(errs.Internal, err, "encoding failed"))
		}
		resp.ContentFormat, resp.Payload = coap.CF(est.CFPKCS7CertsOnly), p
	}
	cf, _ := resp.ContentFormat.Get()
	sum := sha256.Sum256(append([]byte{byte(cf >> 8), byte(cf)}, resp.Payload...))
	resp.ETag = sum[:8]
	for _, o := range r.Options {
		if o.ID == message.ETag && bytes.Equal(o.Value, resp.ETag) {
			// RFC 7252 §5.10.6.2: the client's stored representation is still current.
			return &coap.Response{Code: codes.Valid, ETag: resp.ETag}
		}
	}
	return resp
}

func (b *Binding) att(ctx context.Context, r *coap.Request, req *estserver.Request) *coap.Response {
	if r.Accept.IsSet() && r.Accept != coap.CF(est.CFCSRAttrs) {
		return notAcceptable(r.Accept, est.CFCSRAttrs)
	}
	a, err := b.svc.CSRAttrs(ctx, req)
	if err != nil {
		return b.fail(ctx, r, err)
	}
	p, err := a.Marshal()
	if err != nil {
		return b.fail(ctx, r, errs.Wrap(errs.Internal, err, "encoding failed"))
	}
	return &coap.Response{Code: codes.Content, ContentFormat: coap.CF(est.CFCSRAttrs), Payload: p}
}

// checkRequestFormat enforces Content-Format 286 on the CSR-carrying requests (RFC 9148
// §4.3). A request without Content-Format is taken as 286 (the body is checked as a CSR anyway).
func checkRequestFormat(r *coap.Request) *coap.Response {
	if r.ContentFormat.IsSet() && r.ContentFormat != coap.CF(est.CFPKCS10) {
		return ErrorResponse(errs.New(errs.UnsupportedFormat,
			"request Content-Format must be 286 (application/pkcs10), got %s (RFC 9148 §4.3)", r.ContentFormat))
	}
	return nil
}

func (b *Binding) enroll(ctx context.Context, r *coap.Request, req *estserver.Request, re bool) *coap.Response {
	if resp := checkRequestFormat(r); resp != nil {
		return resp
	}
	// RFC 9148 §4.3: 281 unless the client's Accept asks for 287.
	switch r.Accept {
	case coap.Format{}, coap.CF(est.CFPKCS7CertsOnly), coap.CF(est.CFPKIXCert):
	default:
		return notAcceptable(r.Accept, est.CFPKCS7CertsOnly, est.CFPKIXCert)
	}
	var iss *authority.Issued
	var err error
	if re {
		iss, err = b.svc.Reenroll(ctx, req)
	} else {
		iss, err = b.svc.Enroll(ctx, req)
	}
	if err != nil {
		return b.fail(ctx, r, err)
	}
	if r.Accept == coap.CF(est.CFPKIXCert) {
		return &coap.Response{Code: codes.Changed, ContentFormat: coap.CF(est.CFPKIXCert), Payload: iss.Cert.Raw}
	}
	// RFC 7030 §4.2.3: a certs-only response holding only the issued certificate.
	p, err := est.EncodeCertsOnly([]*x509.Certificate{iss.Cert})
	if err != nil {
		return b.fail(ctx, r, errs.Wrap(errs.Internal, err, "encoding failed"))
	}
	return &coap.Response{Code: codes.Changed, ContentFormat: coap.CF(est.CFPKCS7CertsOnly), Payload: p}
}

// serverKeyGen answers /skg (certificate as 281) and /skc (certificate as 287) with a
// multipart-core [key, 281|287 certificate] (RFC 9148 §4.3 Table 3, §4.8). The key part is
// 284 (PKCS#8) or, when the CSR carries DecryptKeyIdentifier or AsymmetricDecryptKeyIdentifier,
// 280 (CMS-encrypted, RFC 7030 §4.4.2): RFC 9148 §4.8 has the CSR, not the Accept option, say
// which. The Accept of the whole response is 62; Accept 281/287 selects the certificate's format
// (RFC 9148 §4.3 lets 287 replace 281 in an /skg response); Accept 280 insists on an encrypted
// key (the service refuses a CSR that does not ask for one, before anything is issued).
func (b *Binding) serverKeyGen(ctx context.Context, r *coap.Request, req *estserver.Request, skc bool) *coap.Response {
	if resp := checkRequestFormat(r); resp != nil {
		return resp
	}
	certCF := uint16(est.CFPKCS7CertsOnly)
	if skc {
		certCF = est.CFPKIXCert
	}
	switch r.Accept {
	case coap.Format{}, coap.CF(est.CFMultipartCore), coap.CF(est.CFPKCS8):
	case coap.CF(est.CFPKCS7CertsOnly), coap.CF(est.CFPKIXCert):
		certCF, _ = r.Accept.Get()
	case coap.CF(est.CFPKCS7ServerKey):
		req.RequireEncryptedKey = true
	default:
		return notAcceptable(r.Accept, est.CFMultipartCore)
	}
	sk, err := b.svc.ServerKeyGen(ctx, req)
	if err != nil {
		return b.fail(ctx, r, err)
	}
	certBody := sk.Issued.Cert.Raw
	if certCF == est.CFPKCS7CertsOnly {
		if certBody, err = est.EncodeCertsOnly([]*x509.Certificate{sk.Issued.Cert}); err != nil {
			return b.fail(ctx, r, errs.Wrap(errs.Internal, err, "encoding failed"))
		}
	}
	key := est.Part{ContentFormat: est.CFPKCS8, Body: sk.PKCS8}
	if sk.Encrypted != nil {
		key = est.Part{ContentFormat: est.CFPKCS7ServerKey, Body: sk.Encrypted}
	}
	p, err := est.EncodeMultipart([]est.Part{key, {ContentFormat: certCF, Body: certBody}})
	if err != nil {
		return b.fail(ctx, r, errs.Wrap(errs.Internal, err, "encoding failed"))
	}
	return &coap.Response{Code: codes.Changed, ContentFormat: coap.CF(est.CFMultipartCore), Payload: p}
}

// codeFor is THE table from error kinds to EST-coaps response codes (RFC 9148 §4.5 Table 4,
// RFC 8075 §7 for the HTTP statuses EST uses), indexed by kind; TestErrorTableCoversEveryKind
// fails when a kind has no entry.
var codeFor = [errs.NumKinds]codes.Code{
	errs.BadRequest:        codes.BadRequest,            // 4.00
	errs.Unauthorized:      codes.Unauthorized,          // 4.01
	errs.Forbidden:         codes.Forbidden,             // 4.03
	errs.NotFound:          codes.NotFound,              // 4.04
	errs.NotAcceptable:     codes.NotAcceptable,         // 4.06
	errs.Conflict:          codes.Code(137),             // 4.09 Conflict (RFC 8132)
	errs.TooLarge:          codes.RequestEntityTooLarge, // 4.13
	errs.UnsupportedFormat: codes.UnsupportedMediaType,  // 4.15
	errs.Internal:          codes.InternalServerError,   // 5.00
	errs.Pending:           codes.ServiceUnavailable,    // 5.03 + Max-Age (RFC 9148 §4.7)
	errs.Unavailable:       codes.ServiceUnavailable,    // 5.03
	errs.BadGateway:        codes.BadGateway,            // 5.02 (RFC 8075 §7: 502)
	errs.GatewayTimeout:    codes.GatewayTimeout,        // 5.04 (RFC 8075 §7: 504)
}

// ErrorResponse maps err to its CoAP response: the code from the table, the client-visible
// message (errs.Message: only "internal error" for an internal error, whose detail the caller
// logs) as diagnostic payload (RFC 7252 §5.5.2: no Content-Format), and Max-Age for a pending
// or unavailable service (RFC 9148 §4.7: retry after Max-Age seconds).
func ErrorResponse(err error) *coap.Response {
	code := codes.InternalServerError
	if k := errs.KindOf(err); k.Valid() {
		code = codeFor[k]
	}
	resp := diag(code, errs.Message(err))
	if e := errs.As(err); e != nil {
		switch {
		case e.RetryAfter > 0:
			resp.MaxAge = coap.MaxAge(uint32(min(math.Ceil(e.RetryAfter.Seconds()), math.MaxUint32)))
		case e.Kind == errs.Pending:
			// RFC 9148 §4.7 needs a Max-Age on the 5.03; 60 s is the RFC 7252 §5.10.5 default.
			resp.MaxAge = coap.MaxAge(60)
		}
	}
	return resp
}

func (b *Binding) fail(ctx context.Context, r *coap.Request, err error) *coap.Response {
	resp := ErrorResponse(err)
	level := slog.LevelDebug
	if errs.KindOf(err) == errs.Internal {
		level = slog.LevelError
	}
	b.log.Log(ctx, level, "est-coaps request failed", "path", r.Path, "code", resp.Code.String(), "error", err)
	return resp
}

func diag(code codes.Code, msg string) *coap.Response {
	return &coap.Response{Code: code, Payload: []byte(msg)}
}

func notAcceptable(got coap.Format, can ...int) *coap.Response {
	s := make([]string, len(can))
	for i, c := range can {
		s[i] = strconv.Itoa(c)
	}
	return ErrorResponse(errs.New(errs.NotAcceptable, "cannot produce Content-Format %s; this resource offers %s",
		got, strings.Join(s, ", ")))
}
