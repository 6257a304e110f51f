package registrar

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"coapca/coap"
	"coapca/coap/oscorelayer"
	"coapca/edhoc"
	"coapca/errs"
	"coapca/est/estcoap"
	"coapca/oscore"
)

// LocalLayer is the registrar's own OSCORE layer (its pre-shared contexts): requests it holds a
// context for are verified here, every other OSCORE request is forwarded.
type LocalLayer interface {
	coap.Layer
	HoldsContext(req *message.Message) bool
}

// OSCOREProxy forwards EST-oscore (OSCORE-protected requests and the EDHOC messages that key
// them) from coap:// to an HTTP(S) upstream without any security processing, as the
// CoAP-to-HTTP proxy of RFC 8613 §11 and draft-ietf-ace-coap-est-oscore: the registrar never
// holds or derives the keys, and sees only ciphertext. It is a coap.Layer (install with
// Mux.SetLayer) and serves the EDHOC resource (EDHOCResource).
//
// What it refuses, since it cannot authenticate the device: a request with Proxy-Uri or
// Proxy-Scheme (the coap endpoint answers 5.05 before the layer: no open proxy; the upstream
// is the configured URL, whatever the outer Uri-Host says), an outer Uri-Path or Uri-Query
// (RFC 8613 §4.1: they are Class E, so an OSCORE request that carries them outside is not
// EST-oscore), an outer method other than POST (RFC 8613 §11.1: only POST maps to HTTP),
// a body larger than the configured limit (4.13), and a source whose address is unproven
// (the coap endpoint sends an Echo challenge first, RFC 9175 §2.4). Concurrency is bounded by
// the registrar's upstream slots (5.03 + Max-Age when they stay busy).
type OSCOREProxy struct {
	s        *Service
	base     *url.URL
	local    LocalLayer
	maxBody  int64
	onResult func(op, result string, d time.Duration)
}

// OSCOREProxy returns the forwarding layer toward rawURL (http:// or https://host[:port][/prefix];
// OSCORE requests are POSTed to it, EDHOC messages to …/.well-known/edhoc). maxBody caps a forwarded
// body in both directions (default 64 KiB). observe, when set, is told every forwarded request:
// "oscore" or "edhoc", the result ("ok" or an errs.Kind in snake case) and the time it took.
func (s *Service) OSCOREProxy(rawURL string, maxBody int64, observe func(op, result string, d time.Duration)) (*OSCOREProxy, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("registrar: oscore upstream %q: want http(s)://host[:port][/prefix]", rawURL)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	if maxBody <= 0 {
		maxBody = 64 << 10
	}
	return &OSCOREProxy{s: s, base: u, maxBody: maxBody, onResult: observe}, nil
}

// WithLocal makes local (the registrar's own OSCORE layer) verify the requests of the contexts
// it holds; every other OSCORE request is forwarded. Call it before the layer is installed.
func (p *OSCOREProxy) WithLocal(local LocalLayer) *OSCOREProxy {
	p.local = local
	return p
}

// Unprotect implements coap.Layer.
func (p *OSCOREProxy) Unprotect(req *message.Message, peer coap.Peer) coap.LayerResult {
	if !oscore.IsProtected(req) {
		if req.Options.HasOption(oscore.OptionEDHOC) {
			return coap.LayerResult{Reply: &message.Message{Code: codes.BadRequest,
				Payload: []byte("EDHOC option without OSCORE option (RFC 9668 §3.1)")}}
		}
		return coap.LayerResult{} // plain CoAP: the resource table (EST-oscore resources answer 4.01)
	}
	if p.local != nil && !req.Options.HasOption(oscore.OptionEDHOC) && p.local.HoldsContext(req) {
		return p.local.Unprotect(req, peer)
	}
	if reply := p.refuse(req); reply != nil {
		return coap.LayerResult{Reply: reply}
	}
	return coap.LayerResult{Forward: coap.HandlerFunc(p.serveOSCORE)}
}

// refuse is the check of a request before it is forwarded (nil = forward it).
func (p *OSCOREProxy) refuse(req *message.Message) *message.Message {
	diag := func(c codes.Code, s string) *message.Message { return &message.Message{Code: c, Payload: []byte(s)} }
	switch {
	case req.Options.HasOption(message.ProxyURI) || req.Options.HasOption(message.ProxyScheme):
		return diag(codes.ProxyingNotSupported, "this registrar forwards only to its configured upstream") // RFC 7252 §5.7.2
	case req.Code != codes.POST:
		// RFC 8613 §11.1: the OSCORE header field is used in POST requests only; an outer FETCH
		// (Observe) has no HTTP mapping.
		return diag(codes.MethodNotAllowed, "only POST OSCORE requests are forwarded over HTTP (RFC 8613 §11.1)")
	case req.Options.HasOption(message.URIPath) || req.Options.HasOption(message.URIQuery):
		// RFC 8613 §4.1: Uri-Path and Uri-Query are Class E (inside the ciphertext).
		return diag(codes.BadRequest, "outer Uri-Path or Uri-Query on an OSCORE request")
	case int64(len(req.Payload)) > p.maxBody:
		return diag(codes.RequestEntityTooLarge, "request too large to forward")
	}
	return nil
}

// serveOSCORE forwards one OSCORE request (RFC 8613 §11.2): a combined request (RFC 9668)
// is split first — message_3 to the upstream's EDHOC resource, then the OSCORE request
// without the EDHOC option — because the EDHOC option has no HTTP mapping.
func (p *OSCOREProxy) serveOSCORE(ctx context.Context, r *coap.Request) *coap.Response {
	m := &message.Message{Code: r.Method, Payload: r.Payload}
	for _, o := range r.Options {
		if o.ID == oscore.OptionNumber {
			m.Options = append(m.Options, o)
		}
	}
	if r.Options.HasOption(oscore.OptionEDHOC) {
		ov, err := oscore.ParseMessage(m)
		if err != nil || !ov.HasKID {
			return &coap.Response{Code: codes.BadRequest, Payload: []byte("combined request without kid (RFC 9668 §3.2.1)")}
		}
		m3, rest, err := splitBstr(r.Payload)
		if err != nil || len(rest) == 0 {
			return &coap.Response{Code: codes.BadRequest, Payload: []byte("combined request: payload is not message_3 followed by the OSCORE ciphertext")}
		}
		// RFC 9668 §3.3.1: the kid is C_R; the EDHOC request is C_R ‖ message_3 (RFC 9528 A.2).
		if resp := p.forwardEDHOC(ctx, edhoc.AppendConnID(nil, ov.KID), m3); resp.Code != codes.Changed {
			return resp
		}
		m.Payload = rest
	}
	start := time.Now()
	hr, err := oscorelayer.NewHTTPRequest(ctx, p.base.String()+"/", m)
	if err != nil {
		return estcoap.ErrorResponse(errs.Wrap(errs.BadRequest, err, "not an OSCORE request"))
	}
	resp, body, err := p.do(ctx, "oscore", hr)
	if err != nil {
		p.observe("oscore", err, start)
		return estcoap.ErrorResponse(err)
	}
	if resp.StatusCode == http.StatusOK && resp.Header.Get(oscorelayer.HTTPHeader) != "" {
		opt, err := oscorelayer.DecodeHTTPHeader(resp.Header.Get(oscorelayer.HTTPHeader))
		if err != nil {
			err = errs.Wrap(errs.BadGateway, err, "the upstream's OSCORE answer is malformed")
			p.observe("oscore", err, start)
			return estcoap.ErrorResponse(err)
		}
		p.observe("oscore", nil, start)
		// RFC 8613 §11.3: 200 with the OSCORE header field is the OSCORE response, outer
		// code 2.04 Changed (§4.2), the body its ciphertext, without Content-Format.
		return &coap.Response{Code: codes.Changed, Payload: body,
			Options: message.Options{{ID: oscore.OptionNumber, Value: opt}}}
	}
	err = p.status("oscore", resp, body)
	p.observe("oscore", err, start)
	return estcoap.ErrorResponse(err)
}

// EDHOCResource is /.well-known/edhoc forwarded to the upstream (RFC 9528 Appendix A.2, mapped
// to HTTP as RFC 8075 maps a CoAP POST): message_1 and message_3 reach the upstream, which is
// the EDHOC Responder; the registrar only relays the bytes.
func (p *OSCOREProxy) EDHOCResource() coap.Resource {
	return coap.Resource{Path: oscorelayer.WellKnownEDHOC, RT: []string{"core.edhoc"},
		CT: []int{oscorelayer.CFEDHOC, oscorelayer.CFCIDEDHOC}, Handler: coap.HandlerFunc(p.serveEDHOC)}
}

func (p *OSCOREProxy) serveEDHOC(ctx context.Context, r *coap.Request) *coap.Response {
	switch {
	case r.Method != codes.POST:
		return &coap.Response{Code: codes.MethodNotAllowed}
	case r.ContentFormat.IsSet() && r.ContentFormat != coap.CF(oscorelayer.CFCIDEDHOC) && r.ContentFormat != coap.CF(oscorelayer.CFEDHOC):
		return &coap.Response{Code: codes.UnsupportedMediaType, Payload: []byte("EDHOC requests are application/cid-edhoc+cbor-seq (65)")}
	case len(r.Payload) == 0:
		return &coap.Response{Code: codes.BadRequest, Payload: []byte("empty EDHOC request")}
	case int64(len(r.Payload)) > p.maxBody:
		return &coap.Response{Code: codes.RequestEntityTooLarge, Payload: []byte("request too large to forward")}
	}
	return p.forwardEDHOC(ctx, nil, r.Payload)
}

// forwardEDHOC POSTs prefix ‖ body to the upstream's EDHOC resource and maps the answer back.
func (p *OSCOREProxy) forwardEDHOC(ctx context.Context, prefix, body []byte) *coap.Response {
	start := time.Now()
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, p.base.String()+oscorelayer.WellKnownEDHOC,
		bytes.NewReader(append(prefix, body...)))
	if err != nil {
		return estcoap.ErrorResponse(errs.Wrap(errs.Internal, err, "building the EDHOC request failed"))
	}
	hr.Header.Set("Content-Type", oscorelayer.EDHOCMediaTypeCID)
	resp, b, err := p.do(ctx, "edhoc", hr)
	if err != nil {
		p.observe("edhoc", err, start)
		return estcoap.ErrorResponse(err)
	}
	switch {
	case resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusNoContent:
		p.observe("edhoc", nil, start)
		out := &coap.Response{Code: codes.Changed, Payload: b}
		if len(b) > 0 {
			out.ContentFormat = coap.CF(oscorelayer.CFCIDEDHOC)
		}
		return out
	case (resp.StatusCode == http.StatusBadRequest || resp.StatusCode == http.StatusInternalServerError) &&
		strings.HasPrefix(resp.Header.Get("Content-Type"), oscorelayer.EDHOCMediaType):
		// An EDHOC error message (RFC 9528 §6, Appendix A.2): end to end, relayed as it is.
		p.observe("edhoc", errs.New(errs.BadRequest, "edhoc error"), start)
		c := codes.BadRequest
		if resp.StatusCode == http.StatusInternalServerError {
			c = codes.InternalServerError
		}
		return &coap.Response{Code: c, ContentFormat: coap.CF(oscorelayer.CFEDHOC), Payload: b}
	}
	err = p.status("edhoc", resp, b)
	p.observe("edhoc", err, start)
	return estcoap.ErrorResponse(err)
}

// do sends hr within the registrar's concurrency limit and timeout, with the same failure
// mapping as EST relaying: unreachable → 5.03 + Max-Age, TLS failure → 5.02, no answer in
// time → 5.04 (Service.transportError).
func (p *OSCOREProxy) do(ctx context.Context, op string, hr *http.Request) (*http.Response, []byte, error) {
	s := p.s
	wait := time.NewTimer(s.opts.Timeout)
	select {
	case s.slots <- struct{}{}:
		wait.Stop()
	case <-wait.C:
		return nil, nil, &errs.Error{Kind: errs.Unavailable, Msg: "the registrar is busy; retry later", RetryAfter: s.opts.RetryAfter}
	case <-ctx.Done():
		wait.Stop()
		return nil, nil, errs.Wrap(errs.Unavailable, ctx.Err(), "request abandoned")
	}
	defer func() { <-s.slots }()
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	var connected atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { connected.Store(true) }})
	hr = hr.WithContext(ctx)
	hr.Header.Set("User-Agent", "coapca-registrar")
	resp, err := s.client.Do(hr)
	if err != nil {
		return nil, nil, s.transportError(op, err, connected.Load())
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, p.maxBody+1))
	if err != nil {
		return nil, nil, s.transportError(op, err, true)
	}
	if int64(len(b)) > p.maxBody {
		return nil, nil, errs.New(errs.BadGateway, "the upstream's answer to %s is too large", op)
	}
	return resp, b, nil
}

// status maps an upstream answer that is not a forwarded message (RFC 8075 §7, httpKind); the
// upstream's text is logged, never relayed.
func (p *OSCOREProxy) status(op string, resp *http.Response, body []byte) error {
	k := httpKind(resp.StatusCode)
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		k = errs.BadGateway // a success that is not an OSCORE / EDHOC answer
	}
	p.s.log.Info("registrar: upstream refused a forwarded request", "op", op, "upstream", p.base.Host,
		"status", resp.StatusCode, "text", oneLine(body))
	e := &errs.Error{Kind: k, Msg: fmt.Sprintf("the upstream answered the forwarded %s request with %d %s", op, resp.StatusCode, http.StatusText(resp.StatusCode)),
		Err: &upstreamStatus{code: resp.StatusCode}}
	if k == errs.Unavailable {
		e.RetryAfter = retryAfter(resp.Header.Get("Retry-After"), p.s.opts.Now(), p.s.opts.RetryAfter)
	}
	return e
}

func (p *OSCOREProxy) observe(op string, err error, start time.Time) {
	if p.onResult == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = strings.ReplaceAll(errs.KindOf(err).String(), " ", "_")
	}
	p.onResult(op, result, time.Since(start))
}

// splitBstr splits a CBOR byte string (message_3) from the front of b.
func splitBstr(b []byte) (item, rest []byte, err error) {
	if len(b) == 0 || b[0]>>5 != 2 {
		return nil, nil, errors.New("not a CBOR byte string")
	}
	n, hdr := uint64(b[0]&0x1f), 1
	switch {
	case n < 24:
	case n == 24 && len(b) >= 2:
		n, hdr = uint64(b[1]), 2
	case n == 25 && len(b) >= 3:
		n, hdr = uint64(b[1])<<8|uint64(b[2]), 3
	default:
		return nil, nil, errors.New("unsupported CBOR byte string length")
	}
	if uint64(len(b)-hdr) < n {
		return nil, nil, errors.New("truncated CBOR byte string")
	}
	return b[:hdr+int(n)], b[hdr+int(n):], nil
}
