package oscorelayer

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"strconv"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"coapca/coap"
	"coapca/oscore"
)

// OSCORE over HTTP (RFC 8613 §11): the OSCORE message travels in a POST whose OSCORE header
// field carries the OSCORE option and whose body (Content-Type application/oscore) is the
// ciphertext; the answer is 200 with the same two fields. Nothing else of the HTTP message has
// meaning, so a CoAP↔HTTP proxy can forward it without security processing (§11.2–§11.4).
const (
	// HTTPHeader is the HTTP OSCORE header field (RFC 8613 §11.1).
	HTTPHeader = "OSCORE"
	// MediaType is application/oscore (RFC 8613 §13.5).
	MediaType = "application/oscore"
)

// EncodeHTTPHeader maps an OSCORE option value to the header field (RFC 8613 §11.2): "AA" for
// the empty option, else base64url without padding.
func EncodeHTTPHeader(opt []byte) string {
	if len(opt) == 0 {
		return "AA"
	}
	return base64.RawURLEncoding.EncodeToString(opt)
}

// DecodeHTTPHeader maps the header field back to the option value (RFC 8613 §11.3): "AA" (a
// single zero byte) is the empty option.
func DecodeHTTPHeader(v string) ([]byte, error) {
	b, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil {
		return nil, fmt.Errorf("OSCORE header field is not base64url without padding: %w", err)
	}
	if len(b) == 1 && b[0] == 0 {
		return []byte{}, nil
	}
	if len(b) == 0 {
		return nil, errors.New("empty OSCORE header field (the empty option is AA)")
	}
	return b, nil
}

// toHTTPStatus maps an unprotected CoAP answer (an OSCORE error, RFC 8613 §8.2) to HTTP as
// RFC 8075 §7 does.
func toHTTPStatus(c codes.Code) int {
	switch c {
	case codes.BadRequest, codes.BadOption:
		return http.StatusBadRequest
	case codes.Unauthorized:
		return http.StatusUnauthorized
	case codes.Forbidden:
		return http.StatusForbidden
	case codes.NotFound:
		return http.StatusNotFound
	case codes.MethodNotAllowed:
		return http.StatusMethodNotAllowed
	case codes.RequestEntityTooLarge:
		return http.StatusRequestEntityTooLarge
	case codes.ServiceUnavailable:
		return http.StatusServiceUnavailable
	}
	if c >= codes.InternalServerError {
		return http.StatusInternalServerError
	}
	return http.StatusBadRequest
}

// writeMessage sends a CoAP message over HTTP: a protected one as 200 + OSCORE header +
// application/oscore (RFC 8613 §11.2), an unprotected error with its RFC 8075 status.
func writeMessage(w http.ResponseWriter, m *message.Message) {
	if opt, ok := optionValue(m, oscore.OptionNumber); ok {
		w.Header().Set(HTTPHeader, EncodeHTTPHeader(opt))
		w.Header().Set("Content-Type", MediaType)
		w.Header().Set("Content-Length", strconv.Itoa(len(m.Payload)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(m.Payload)
		return
	}
	if age, ok := optionValue(m, message.MaxAge); ok && m.Code == codes.ServiceUnavailable {
		var n uint64
		for _, b := range age {
			n = n<<8 | uint64(b)
		}
		w.Header().Set("Retry-After", strconv.FormatUint(n, 10))
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(toHTTPStatus(m.Code))
	_, _ = w.Write(m.Payload)
}

// IsHTTPRequest reports whether r carries an OSCORE message (the OSCORE header field or the
// application/oscore media type).
func IsHTTPRequest(r *http.Request) bool {
	if _, ok := r.Header[http.CanonicalHeaderKey(HTTPHeader)]; ok {
		return true
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return mt == MediaType
}

// HTTPHandler serves OSCORE-protected requests carried over HTTP (RFC 8613 §11) with the same
// contexts, replay windows and sequence numbers as the CoAP transport: the request is mapped to
// a CoAP OSCORE message, verified by the layer (§8.2), served by mux's resources, and the
// protected answer mapped back. Requests that carry no OSCORE message go to next. maxBody caps
// the body (413 beyond it).
func (s *Server) HTTPHandler(mux *coap.Mux, next http.Handler, maxBody int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !IsHTTPRequest(r) {
			next.ServeHTTP(w, r)
			return
		}
		// RFC 8613 §11.1: the OSCORE header field is only used in POST requests, with
		// Content-Type application/oscore.
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "OSCORE messages are carried in POST (RFC 8613 §11.1)", http.StatusMethodNotAllowed)
			return
		}
		mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
		hv := r.Header.Values(HTTPHeader)
		if mt != MediaType || len(hv) != 1 {
			http.Error(w, "an OSCORE request needs one OSCORE header field and Content-Type application/oscore (RFC 8613 §11.1)", http.StatusBadRequest)
			return
		}
		opt, err := DecodeHTTPHeader(hv[0])
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
		if err != nil {
			http.Error(w, "cannot read the body", http.StatusBadRequest)
			return
		}
		if int64(len(body)) > maxBody {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		// RFC 8613 §11.3: the CoAP request is a POST with the OSCORE option and no
		// Content-Format.
		msg := &message.Message{Code: codes.POST, Payload: body,
			Options: message.Options{{ID: oscore.OptionNumber, Value: opt}}}
		peer := coap.Peer{Addr: tcpAddr(r.RemoteAddr), AddressVerified: true}
		res := s.Unprotect(msg, peer)
		switch {
		case res.Reply != nil:
			writeMessage(w, res.Reply)
			return
		case res.Request == nil:
			http.Error(w, "not an OSCORE request", http.StatusBadRequest)
			return
		}
		answer := mux.ServeMessage(r.Context(), res.Request, res.Peer)
		out, err := res.Protect(answer)
		if err != nil {
			s.log.Error("oscore over http: protect response", "err", err)
			http.Error(w, "cannot protect the response", http.StatusInternalServerError)
			return
		}
		writeMessage(w, out)
	})
}

func tcpAddr(remote string) net.Addr {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return &net.TCPAddr{}
	}
	return net.TCPAddrFromAddrPort(ap)
}

// HTTPTransport is a coap.ClientLayer that carries a coap.Client's requests over HTTP instead
// of its own transport (RFC 8613 §11, an HTTP endpoint originating OSCORE): each request is
// protected with ctx, POSTed to url with the OSCORE header field and an application/oscore
// body, and the 200 answer verified. Requests must fit one message (set a block size of 1024;
// inner block-wise is not carried over HTTP).
type HTTPTransport struct {
	ctx    *oscore.Context
	url    string
	client *http.Client
}

var _ coap.ClientLayer = (*HTTPTransport)(nil)

// NewHTTPTransport returns the layer; hc nil = http.DefaultClient.
func NewHTTPTransport(ctx *oscore.Context, url string, hc *http.Client) *HTTPTransport {
	if hc == nil {
		hc = http.DefaultClient
	}
	return &HTTPTransport{ctx: ctx, url: url, client: hc}
}

// RoundTrip implements coap.ClientLayer; send (the CoAP transport) is not used.
func (t *HTTPTransport) RoundTrip(req *message.Message, _ func(*message.Message) (*message.Message, error)) (*message.Message, error) {
	return exchange(t.ctx, req, t.post)
}

// post sends one OSCORE message over HTTP and maps the answer back to CoAP (RFC 8613 §11.2,
// §11.3): 200 + OSCORE header → 2.04 with the OSCORE option; another status → its CoAP code.
func (t *HTTPTransport) post(m *message.Message) (*message.Message, error) {
	opt, _ := optionValue(m, oscore.OptionNumber)
	hr, err := http.NewRequestWithContext(context.Background(), http.MethodPost, t.url, bytes.NewReader(m.Payload))
	if err != nil {
		return nil, err
	}
	hr.Header.Set(HTTPHeader, EncodeHTTPHeader(opt))
	hr.Header.Set("Content-Type", MediaType)
	resp, err := t.client.Do(hr)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusOK && resp.Header.Get(HTTPHeader) != "" {
		v, err := DecodeHTTPHeader(resp.Header.Get(HTTPHeader))
		if err != nil {
			return nil, err
		}
		return &message.Message{Code: codes.Changed, Payload: body,
			Options: message.Options{{ID: oscore.OptionNumber, Value: v}}}, nil
	}
	code := codes.BadRequest
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		code = codes.Unauthorized
	case http.StatusForbidden:
		code = codes.Forbidden
	case http.StatusNotFound:
		code = codes.NotFound
	case http.StatusServiceUnavailable:
		code = codes.ServiceUnavailable
	case http.StatusInternalServerError:
		code = codes.InternalServerError
	}
	return &message.Message{Code: code, Payload: body}, nil
}
