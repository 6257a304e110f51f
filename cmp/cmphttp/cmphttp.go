// Package cmphttp is the HTTP transfer of CMP (RFC 9811, which replaces RFC 6712): POST of a
// DER PKIMessage with Content-Type application/pkixcmp to /.well-known/cmp,
// /.well-known/cmp/p/<profileLabel> and, below both, the operation labels of RFC 9483 §6.1.
// It decides no policy: the CMP service answers.
//
// Implemented (RFC 9811 §3): POST only, application/pkixcmp both ways, every CMP answer (CMP
// error messages included) as HTTP 200, no caching (Cache-Control no-store), and persistent connections for HTTP/1.0 clients that ask for keep-alive (net/http
// keeps them). Transfer-level problems are HTTP 4xx with a text diagnostic.
//
// NewServer bounds what one client can hold: the time to send the header and the whole
// request, the idle time of a kept-alive connection, header and body sizes (a client sending
// one byte every few seconds is disconnected when ReadTimeout runs out).
package cmphttp

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"time"

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
	// MaxBody caps a request body (413 beyond it); 0 means cmp.MaxMessageSize.
	MaxBody int64
}

// Limits are the HTTP listener's timeouts and sizes. Zero values take the defaults.
type Limits struct {
	// ReadHeaderTimeout bounds the time to send the request header. Default 5 s.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds the time to send the whole request, body included. Default 30 s.
	ReadTimeout time.Duration
	// WriteTimeout bounds the time from the end of the request header to the end of the
	// response. Default 60 s.
	WriteTimeout time.Duration
	// IdleTimeout closes a kept-alive connection that sends no next request. Default 60 s.
	IdleTimeout time.Duration
	// MaxHeaderBytes caps the request header. Default 16 KiB.
	MaxHeaderBytes int
}

func (l Limits) withDefaults() Limits {
	if l.ReadHeaderTimeout <= 0 {
		l.ReadHeaderTimeout = 5 * time.Second
	}
	if l.ReadTimeout <= 0 {
		l.ReadTimeout = 30 * time.Second
	}
	if l.WriteTimeout <= 0 {
		l.WriteTimeout = 60 * time.Second
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = 60 * time.Second
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = 16 << 10
	}
	return l
}

// NewServer returns an http.Server for h with the timeouts and header cap of l, so that a
// slow or idle client holds a connection for a bounded time only.
func NewServer(h http.Handler, l Limits, log *slog.Logger) *http.Server {
	l = l.withDefaults()
	srv := &http.Server{Handler: h, ReadHeaderTimeout: l.ReadHeaderTimeout, ReadTimeout: l.ReadTimeout,
		WriteTimeout: l.WriteTimeout, IdleTimeout: l.IdleTimeout, MaxHeaderBytes: l.MaxHeaderBytes}
	if log != nil {
		srv.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelDebug)
	}
	return srv
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
	label, seg, ok := cmpserver.SplitPath(DefaultRoot, path)
	if !ok || seg == "" {
		return label, "", ok
	}
	op, ok = cmpserver.HTTPOperation(seg)
	return label, op, ok
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
	maxBody := h.MaxBody
	if maxBody <= 0 || maxBody > cmp.MaxMessageSize {
		maxBody = cmp.MaxMessageSize
	}
	if r.ContentLength > maxBody {
		http.Error(w, "CMP message too large", http.StatusRequestEntityTooLarge)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			http.Error(w, "CMP message too large", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "cannot read the request body", http.StatusBadRequest)
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
