// Package cmphttp is the HTTP transfer of CMP (RFC 9811, which replaces RFC 6712): POST of a
// DER PKIMessage with Content-Type application/pkixcmp to /.well-known/cmp,
// /.well-known/cmp/p/<profileLabel> and, below both, the operation labels of RFC 9483 §6.1.
// It decides no policy: the CMP service answers.
//
// Implemented (RFC 9811 §3): POST only, application/pkixcmp both ways, every CMP answer (CMP
// error messages included) as HTTP 200, no caching (Cache-Control no-store), and persistent connections for HTTP/1.0 clients that ask for keep-alive (net/http
// keeps them). Transfer-level problems are HTTP 4xx with a text diagnostic.
package cmphttp

import (
	"context"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"

	"coapca/authority"
	"coapca/cmp"
	"coapca/cmp/cmpserver"
)

// ContentType is the media type of CMP messages (RFC 9811 §3).
const ContentType = "application/pkixcmp"

// DefaultRoot is the well-known CMP path.
const DefaultRoot = "/.well-known/cmp"

// Service is the CMP service; *cmpserver.Service implements it.
type Service interface {
	Handle(ctx context.Context, r *cmpserver.Request) *cmpserver.Response
}

// Handler serves CMP over HTTP.
type Handler struct {
	svc Service
	log *slog.Logger
	// Secure marks the listener as TLS (transport "https").
	Secure bool
}

// New returns the handler of svc.
func New(svc Service, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Handler{svc: svc, log: log}
}

// Register adds the handler to mux at DefaultRoot and below it.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.Handle(DefaultRoot, h)
	mux.Handle(DefaultRoot+"/", h)
}

// split parses /.well-known/cmp[/p/<label>][/<operation>].
func split(path string) (label, op string, ok bool) {
	rest, found := strings.CutPrefix(path, DefaultRoot)
	if !found {
		return "", "", false
	}
	segs := strings.Split(strings.Trim(rest, "/"), "/")
	if len(segs) == 1 && segs[0] == "" {
		segs = nil
	}
	if len(segs) >= 2 && segs[0] == "p" {
		label, segs = segs[1], segs[2:]
		if label == "" {
			return "", "", false
		}
	}
	switch len(segs) {
	case 0:
		return label, "", true
	case 1:
		op, ok := cmpserver.HTTPOperation(segs[0])
		return label, op, ok
	}
	return "", "", false
}

// ServeHTTP handles one CMP POST.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	label, op, ok := split(r.URL.Path)
	if !ok {
		http.Error(w, "no CMP resource at "+r.URL.Path+" (expected "+DefaultRoot+"[/p/<label>][/<operation>])", http.StatusNotFound)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "CMP messages are POSTed (RFC 9811 §3)", http.StatusMethodNotAllowed)
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || !strings.EqualFold(mt, ContentType) {
		http.Error(w, "the Content-Type of CMP requests is "+ContentType+" (RFC 9811 §3)", http.StatusUnsupportedMediaType)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, cmp.MaxMessageSize+1))
	if err != nil {
		http.Error(w, "cannot read the request body", http.StatusBadRequest)
		return
	}
	if len(body) > cmp.MaxMessageSize {
		http.Error(w, "CMP message too large", http.StatusRequestEntityTooLarge)
		return
	}
	transport := authority.TransportHTTP
	if h.Secure || r.TLS != nil {
		transport = authority.TransportHTTPS
	}
	rsp := h.svc.Handle(r.Context(), &cmpserver.Request{Body: body, Label: label, Operation: op, Transport: transport, Addr: r.RemoteAddr})
	w.Header().Set("Content-Type", ContentType)
	w.Header().Set("Cache-Control", "no-store")
	// RFC 9811 §3: HTTP 200 for every CMP answer, error messages included.
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(rsp.Body)
}
