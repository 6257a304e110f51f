// Package cmpcoap is the CoAP transfer of CMP (RFC 9482): it registers the CMP resources in a
// coap.Mux, hands each POSTed PKIMessage to the CMP service and returns its answer, and
// publishes announcements to observers of `…/ann`. It decides no policy.
//
// Implemented (RFC 9482 section in brackets):
//   - §2.1 URIs: /.well-known/cmp, /.well-known/cmp/p/<profileLabel> and, below both, the
//     operation labels of RFC 9483 §6.2 (ir, cr, kur, p10, rr, crts, rcu, att, crls).
//   - §2.2 discovery: every resource carries ct=259, so GET /.well-known/core?ct=259 lists them.
//   - §2.3 POST with Content-Format 259 (application/pkixcmp); 42 and an absent
//     Content-Format are accepted on requests for existing devices; every CMP answer, error
//     messages included, is a 2.04 with Content-Format 259; transfer-level problems (method,
//     Content-Format, path) are 4.xx with a diagnostic payload.
//   - §2.4 block-wise transfer is done by the coap endpoint (Block1 requests, Block2 answers).
//   - §2.6 announcements: GET with Observe on …/ann registers; [Binding.Announce] notifies
//     every observer with the PKIMessage (ckuann, cann, rann, crlann).
//
// Multicast (§2.5) is not served: the endpoint only listens on unicast sockets.
package cmpcoap

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"coapca/authority"
	"coapca/cmp"
	"coapca/cmp/cmpserver"
	"coapca/coap"
)

// Content-Formats (RFC 9482 §5; 42 is application/octet-stream).
const (
	CFPKIXCMP     = 259
	CFOctetStream = 42
)

// DefaultRoot is the well-known CMP path (RFC 9482 §2.1).
const DefaultRoot = "/.well-known/cmp"

// Service is the CMP service; *cmpserver.Service implements it.
type Service interface {
	Handle(ctx context.Context, r *cmpserver.Request) *cmpserver.Response
}

// Options configure the binding.
type Options struct {
	// Labels are the profile labels served as /p/<label> (listed in /.well-known/core).
	Labels []string
	// Notify sends an Observe notification for path to its observers; the server wiring
	// passes a function that calls coap.Server.Notify on each running server.
	Notify func(path string, r *coap.Response)
	Logger *slog.Logger
}

// Binding serves the CMP resources.
type Binding struct {
	svc  Service
	opts Options
	log  *slog.Logger

	mu   sync.Mutex
	last map[string][]byte // latest announcement per …/ann path (answer to a plain GET)
}

// New returns the binding of svc.
func New(svc Service, opts Options) *Binding {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Binding{svc: svc, opts: opts, log: log, last: map[string][]byte{}}
}

// Operations returns the CoAP operation labels of RFC 9483 §6.2, in the order they are listed.
func Operations() []string { return slices.Clone(operations) }

var operations = []string{"ir", "cr", "kur", "p10", "rr", "crts", "rcu", "att", "crls"}

func (b *Binding) bases() []string { return Bases(DefaultRoot, b.opts.Labels) }

// Bases are the resource bases of RFC 9482 §2.1 under root: root itself and root/p/LABEL for
// each non-empty label.
func Bases(root string, labels []string) []string {
	out := []string{root}
	for _, l := range labels {
		if l = strings.Trim(l, "/"); l != "" {
			out = append(out, root+"/p/"+l)
		}
	}
	return out
}

// Register adds the resources to m.
func (b *Binding) Register(m *coap.Mux) {
	RegisterResources(m, DefaultRoot, b.opts.Labels, b, coap.HandlerFunc(b.serveAnn))
}

// RegisterResources adds the CMP-over-CoAP resources (RFC 9482 §2.1) under root and its labels to
// m: each base and every operation under it served by h — the root also as a prefix resource,
// so that other labels and unknown segments get an answer from h (4.04 with a diagnostic) —
// and each base's observable /ann served by ann. The CMP registrar (cmp/cmpproxy) registers the
// same resources with its own handlers.
func RegisterResources(m *coap.Mux, root string, labels []string, h, ann coap.Handler) {
	for _, base := range Bases(root, labels) {
		m.Handle(coap.Resource{Path: base, Prefix: base == root, CT: []int{CFPKIXCMP}, Handler: h})
		for _, op := range operations {
			m.Handle(coap.Resource{Path: base + "/" + op, CT: []int{CFPKIXCMP}, Handler: h})
		}
		m.Handle(coap.Resource{Path: base + "/ann", CT: []int{CFPKIXCMP}, Observable: true, Handler: ann})
	}
}

// split parses /.well-known/cmp[/p/<label>][/<op>].
func split(path string) (label, op string, ann, ok bool) {
	label, seg, ok := cmpserver.SplitPath(DefaultRoot, path)
	switch {
	case !ok:
		return "", "", false, false
	case seg == "":
		return label, "", false, true
	case seg == "ann":
		return label, "", true, true
	}
	op, ok = cmpserver.CoAPOperation(seg)
	return label, op, false, ok
}

// ServeCoAP handles a CMP POST (RFC 9482 §2.3).
func (b *Binding) ServeCoAP(ctx context.Context, r *coap.Request) *coap.Response {
	label, op, ann, ok := split(r.Path)
	if !ok {
		return diag(codes.NotFound, "no CMP resource at "+r.Path+" (expected "+DefaultRoot+"[/p/<label>][/<operation>|/ann])")
	}
	if ann {
		return b.serveAnn(ctx, r)
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
	transport := authority.TransportCoAP
	if r.Peer.Secure {
		transport = authority.TransportCoAPS
	}
	addr := ""
	if r.Peer.Addr != nil {
		addr = r.Peer.Addr.String()
	}
	rsp := b.svc.Handle(ctx, &cmpserver.Request{Body: r.Payload, Label: label, Operation: op, Transport: transport, Addr: addr})
	return &coap.Response{Code: codes.Changed, ContentFormat: coap.CF(CFPKIXCMP), Payload: rsp.Body}
}

// serveAnn answers GET …/ann (RFC 9482 §2.6): with Observe the endpoint registers the client;
// the answer is the latest announcement, or an empty 2.05 when there was none yet.
func (b *Binding) serveAnn(_ context.Context, r *coap.Request) *coap.Response {
	if r.Method != codes.GET {
		return diag(codes.MethodNotAllowed, "GET (with Observe) registers for announcements (RFC 9482 §2.6)")
	}
	if _, _, ann, ok := split(r.Path); !ok || !ann {
		return diag(codes.NotFound, "no announcement resource at "+r.Path)
	}
	b.mu.Lock()
	last := b.last[r.Path]
	b.mu.Unlock()
	if last == nil {
		return &coap.Response{Code: codes.Content}
	}
	return &coap.Response{Code: codes.Content, ContentFormat: coap.CF(CFPKIXCMP), Payload: last}
}

// Announce publishes an announcement PKIMessage (RFC 9482 §2.6) to the observers of
// /.well-known/cmp/ann and, for label "" every /p/<label>/ann, else /p/<label>/ann.
// Its signature fits cmpserver.Options.Announce.
func (b *Binding) Announce(der []byte, body cmp.BodyType, label string) {
	var paths []string
	for _, base := range b.bases() {
		if label == "" || base == DefaultRoot || base == DefaultRoot+"/p/"+label {
			paths = append(paths, base+"/ann")
		}
	}
	b.mu.Lock()
	for _, p := range paths {
		b.last[p] = der
	}
	b.mu.Unlock()
	b.log.Debug("cmp announcement", "body", body, "label", label, "paths", len(paths))
	if b.opts.Notify == nil {
		return
	}
	for _, p := range paths {
		b.opts.Notify(p, &coap.Response{Code: codes.Content, ContentFormat: coap.CF(CFPKIXCMP), Payload: der})
	}
}

func diag(code codes.Code, msg string) *coap.Response {
	return &coap.Response{Code: code, Payload: []byte(msg)}
}
