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

// WriteHTTPResponse sends a CoAP answer over HTTP: a protected one as 200 + OSCORE header +
// application/oscore (RFC 8613 §11.2), an unprotected error with its RFC 8075 status.
func WriteHTTPResponse(w http.ResponseWriter, m *message.Message) {
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
		if r.URL.Path == WellKnownEDHOC && mux != nil {
			s.serveEDHOCOverHTTP(w, r, maxBody)
			return
		}
		if !IsHTTPRequest(r) {
			next.ServeHTTP(w, r)
			return
		}
		msg, status, err := MessageFromHTTPRequest(r, maxBody)
		if err != nil {
			if status == http.StatusMethodNotAllowed {
				w.Header().Set("Allow", http.MethodPost)
			}
			http.Error(w, err.Error(), status)
			return
		}
		peer := coap.Peer{Addr: tcpAddr(r.RemoteAddr), AddressVerified: true}
		res := s.Unprotect(msg, peer)
		switch {
		case res.Reply != nil:
			WriteHTTPResponse(w, res.Reply)
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
		WriteHTTPResponse(w, out)
	})
}

// serveEDHOCOverHTTP answers the EDHOC resource over HTTP, mapped as RFC 8075 maps a CoAP POST:
// a CoAP→HTTP proxy (coapca's registrar) forwards message_1 and message_3 this way so that
// EDHOC runs end to end between the device and this server. The body is the CoAP payload
// (true ‖ message_1, or C_R ‖ message_3, RFC 9528 Appendix A.2), Content-Type
// application/cid-edhoc+cbor-seq; the answer is 200 with message_2 (or 204 after message_3),
// an EDHOC error with its RFC 8075 status and Content-Type application/edhoc+cbor-seq.
func (s *Server) serveEDHOCOverHTTP(w http.ResponseWriter, r *http.Request, maxBody int64) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "EDHOC requests are POST (RFC 9528 Appendix A.2)", http.StatusMethodNotAllowed)
		return
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != EDHOCMediaTypeCID && mt != EDHOCMediaType {
		http.Error(w, "EDHOC requests are application/cid-edhoc+cbor-seq", http.StatusUnsupportedMediaType)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil || int64(len(body)) > maxBody {
		http.Error(w, "body unreadable or too large", http.StatusRequestEntityTooLarge)
		return
	}
	peer := coap.Peer{Addr: tcpAddr(r.RemoteAddr), AddressVerified: true}
	resp := s.serveEDHOC(r.Context(), &coap.Request{Method: codes.POST, Path: WellKnownEDHOC,
		ContentFormat: coap.CF(CFCIDEDHOC), Payload: body, Peer: peer})
	status := http.StatusOK
	if resp.Code != codes.Changed {
		status = toHTTPStatus(resp.Code)
	} else if len(resp.Payload) == 0 {
		status = http.StatusNoContent
	}
	if len(resp.Payload) > 0 {
		ct := EDHOCMediaType
		if resp.Code == codes.Changed {
			ct = EDHOCMediaTypeCID
		}
		w.Header().Set("Content-Type", ct)
	}
	w.WriteHeader(status)
	_, _ = w.Write(resp.Payload)
}

// EDHOC media types (RFC 9528 §10.9): Content-Formats 64 and 65.
const (
	EDHOCMediaType    = "application/edhoc+cbor-seq"
	EDHOCMediaTypeCID = "application/cid-edhoc+cbor-seq"
)

// MessageFromHTTPRequest maps an HTTP request carrying an OSCORE message to the CoAP OSCORE
// request (RFC 8613 §11.3): it must be a POST with one OSCORE header field and Content-Type
// application/oscore; the CoAP message is a POST with the OSCORE option and the body as
// payload, without Content-Format. On error the HTTP status to answer is returned.
func MessageFromHTTPRequest(r *http.Request, maxBody int64) (*message.Message, int, error) {
	// RFC 8613 §11.1: the OSCORE header field is only used in POST requests, with
	// Content-Type application/oscore.
	if r.Method != http.MethodPost {
		return nil, http.StatusMethodNotAllowed, errors.New("OSCORE messages are carried in POST (RFC 8613 §11.1)")
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	hv := r.Header.Values(HTTPHeader)
	if mt != MediaType || len(hv) != 1 {
		return nil, http.StatusBadRequest, errors.New("an OSCORE request needs one OSCORE header field and Content-Type application/oscore (RFC 8613 §11.1)")
	}
	opt, err := DecodeHTTPHeader(hv[0])
	if err != nil {
		return nil, http.StatusBadRequest, err
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return nil, http.StatusBadRequest, errors.New("cannot read the body")
	}
	if int64(len(body)) > maxBody {
		return nil, http.StatusRequestEntityTooLarge, errors.New("body too large")
	}
	return &message.Message{Code: codes.POST, Payload: body,
		Options: message.Options{{ID: oscore.OptionNumber, Value: opt}}}, 0, nil
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

// post sends one OSCORE message over HTTP and maps the answer back to CoAP.
func (t *HTTPTransport) post(m *message.Message) (*message.Message, error) {
	hr, err := NewHTTPRequest(context.Background(), t.url, m)
	if err != nil {
		return nil, err
	}
	resp, err := t.client.Do(hr)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return MessageFromHTTPResponse(resp, 1<<20)
}

// NewHTTPRequest maps a CoAP OSCORE request to HTTP (RFC 8613 §11.2, the mapping a CoAP→HTTP
// proxy applies without security processing): POST to url, the OSCORE option in the OSCORE
// header field, Content-Type application/oscore, the ciphertext as the body. A message without
// the OSCORE option is refused (it is not for this mapping).
func NewHTTPRequest(ctx context.Context, url string, m *message.Message) (*http.Request, error) {
	opt, ok := optionValue(m, oscore.OptionNumber)
	if !ok {
		return nil, errors.New("oscore over http: the message has no OSCORE option")
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(m.Payload))
	if err != nil {
		return nil, err
	}
	hr.Header.Set(HTTPHeader, EncodeHTTPHeader(opt))
	hr.Header.Set("Content-Type", MediaType)
	return hr, nil
}

// MessageFromHTTPResponse maps an HTTP answer back to CoAP (RFC 8613 §11.3): 200 with the
// OSCORE header field is 2.04 Changed with the OSCORE option and the body as payload (no
// Content-Format); another status becomes its RFC 8075 CoAP code with the body as diagnostic.
// The body is read up to max bytes.
func MessageFromHTTPResponse(resp *http.Response, max int64) (*message.Message, error) {
	body, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(body)) > max {
		return nil, fmt.Errorf("oscore over http: answer larger than %d bytes", max)
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
	case http.StatusMethodNotAllowed:
		code = codes.MethodNotAllowed
	case http.StatusRequestEntityTooLarge:
		code = codes.RequestEntityTooLarge
	case http.StatusServiceUnavailable:
		code = codes.ServiceUnavailable
	case http.StatusInternalServerError:
		code = codes.InternalServerError
	}
	return &message.Message{Code: code, Payload: body}, nil
}
