package registrar

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"coapca/errs"
	"coapca/est"
)

// maxAnswer caps what is read of one upstream answer.
const maxAnswer = 1 << 20

// answer is a successful (2xx) upstream answer.
type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a *answer) mediaType(op, want string) error {
	mt, _, err := mime.ParseMediaType(a.header.Get("Content-Type"))
	if err != nil || !strings.EqualFold(mt, want) {
		return errs.New(errs.BadGateway, "the upstream CA answered /%s with an unexpected media type", op)
	}
	return nil
}

// certs decodes a certs-only answer (RFC 7030 §4.1.3, §4.2.3: base64 PKCS#7, RFC 8951 §3).
func (a *answer) certs(op string) ([]*x509.Certificate, error) {
	if err := a.mediaType(op, "application/pkcs7-mime"); err != nil {
		return nil, err
	}
	der, err := decodeBase64(a.body)
	if err != nil {
		return nil, err
	}
	certs, err := est.ParseCertsOnly(der)
	if err != nil {
		return nil, err
	}
	if len(certs) == 0 {
		return nil, errors.New("the answer holds no certificate")
	}
	return certs, nil
}

// decodeBase64 removes the base64 of an EST body (RFC 7030 §4, RFC 8951 §3: with or without
// line breaks, whatever Content-Transfer-Encoding says): RFC 9148 §5 "a conversion from CBOR
// major type 2 to Base64 encoding MUST take place at the Registrar" — this is its HTTPS half.
func decodeBase64(b []byte) ([]byte, error) {
	clean := bytes.Map(func(r rune) rune {
		switch r {
		case '\r', '\n', ' ', '\t':
			return -1
		}
		return r
	}, b)
	enc := base64.StdEncoding
	if len(clean)%4 != 0 {
		enc = base64.RawStdEncoding
	}
	der, err := enc.DecodeString(string(clean))
	if err != nil {
		return nil, fmt.Errorf("malformed base64 body: %w", err)
	}
	return der, nil
}

// badAnswer is an upstream answer the registrar cannot relay: 5.02 downstream, the detail in
// the log only.
func (s *Service) badAnswer(op string, err error) error {
	if errs.As(err) != nil {
		return err
	}
	return errs.Wrap(errs.BadGateway, err, "the upstream CA's answer to /%s is malformed", op)
}

// do sends one request to the upstream (op under label; body is DER, sent base64 with the
// EST media type) within the concurrency limit and the timeout, and maps every failure to a
// typed error: a non-2xx status by httpKind (the upstream's text is logged, never relayed),
// a transport failure by transportKind.
func (s *Service) do(ctx context.Context, op, label, method, contentType string, body []byte, hdr http.Header) (a *answer, err error) {
	start := s.opts.Now()
	defer func() {
		if s.opts.Observer == nil {
			return
		}
		result := "ok"
		switch {
		case errs.KindOf(err) == errs.Pending:
			result = "pending"
		case err != nil:
			result = strings.ReplaceAll(errs.KindOf(err).String(), " ", "_")
		}
		s.opts.Observer(op, result, s.opts.Now().Sub(start))
	}()
	// The limit on concurrent upstream requests: wait for a slot at most Timeout.
	wait := time.NewTimer(s.opts.Timeout)
	select {
	case s.slots <- struct{}{}:
		wait.Stop()
	case <-wait.C:
		return nil, &errs.Error{Kind: errs.Unavailable, Msg: "the registrar is busy; retry later", RetryAfter: s.opts.RetryAfter}
	case <-ctx.Done():
		wait.Stop()
		return nil, errs.Wrap(errs.Unavailable, ctx.Err(), "request abandoned")
	}
	defer func() { <-s.slots }()

	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	var connected atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { connected.Store(true) }})

	path := s.base.Path + "/.well-known/est"
	if label != "" {
		path += "/" + label
	}
	u := *s.base
	u.Path = path + "/" + op
	var rd io.Reader
	if body != nil {
		rd = strings.NewReader(base64.StdEncoding.EncodeToString(body))
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "building the upstream request failed")
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	req.Header.Set("User-Agent", "coapca-registrar")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
		// RFC 8951 §3 has receivers ignore it; servers written to RFC 7030 want it.
		req.Header.Set("Content-Transfer-Encoding", "base64")
	}
	if s.opts.User != "" {
		req.SetBasicAuth(s.opts.User, s.opts.Password)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, s.transportError(op, err, connected.Load())
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return nil, s.transportError(op, err, true)
	}
	if len(b) > maxAnswer {
		return nil, errs.New(errs.BadGateway, "the upstream CA's answer to /%s is too large", op)
	}
	switch {
	case resp.StatusCode == http.StatusAccepted:
		// RFC 7030 §4.2.3 → RFC 9148 §4.7: 202 + Retry-After becomes 5.03 + Max-Age.
		return nil, &errs.Error{Kind: errs.Pending, Msg: "the upstream CA holds the request; retry later",
			RetryAfter: retryAfter(resp.Header.Get("Retry-After"), s.opts.Now(), s.opts.RetryAfter)}
	case resp.StatusCode >= 200 && resp.StatusCode < 300 || resp.StatusCode == http.StatusNotModified:
		return &answer{status: resp.StatusCode, header: resp.Header, body: b}, nil
	}
	k := httpKind(resp.StatusCode)
	// The upstream's text may name its internals: it goes to the log, the device gets the
	// status alone.
	s.log.Info("registrar: upstream refused", "op", op, "upstream", s.base.Host, "status", resp.StatusCode, "text", oneLine(b))
	e := &errs.Error{Kind: k, Msg: fmt.Sprintf("the upstream CA answered /%s with %d %s", op, resp.StatusCode, http.StatusText(resp.StatusCode)),
		Err: &upstreamStatus{code: resp.StatusCode}}
	if k == errs.Unavailable {
		e.RetryAfter = retryAfter(resp.Header.Get("Retry-After"), s.opts.Now(), s.opts.RetryAfter)
	}
	return nil, e
}

// upstreamStatus is the upstream's HTTP status of a refusal, kept as the error's cause.
type upstreamStatus struct{ code int }

func (u *upstreamStatus) Error() string { return "upstream status " + strconv.Itoa(u.code) }

// httpKind is RFC 8075 §7's HTTP → CoAP response code mapping, expressed as the error kinds
// the EST-coaps binding maps to those codes (RFC 9148 §4.5, §5: "Section 5.5 of this
// specification and Section 7 of [RFC8075] define the mappings ... that determine how the
// Registrar MUST translate CoAP response codes from/to HTTP status codes").
func httpKind(status int) errs.Kind {
	switch status {
	case http.StatusBadRequest:
		return errs.BadRequest // 4.00
	case http.StatusUnauthorized:
		return errs.Unauthorized // 4.01
	case http.StatusForbidden:
		return errs.Forbidden // 4.03
	case http.StatusNotFound:
		return errs.NotFound // 4.04
	case http.StatusNotAcceptable:
		return errs.NotAcceptable // 4.06
	case http.StatusConflict:
		return errs.Conflict // 4.09
	case http.StatusRequestEntityTooLarge:
		return errs.TooLarge // 4.13
	case http.StatusUnsupportedMediaType:
		return errs.UnsupportedFormat // 4.15
	case http.StatusBadGateway:
		return errs.BadGateway // 5.02
	case http.StatusServiceUnavailable, http.StatusTooManyRequests:
		return errs.Unavailable // 5.03
	case http.StatusGatewayTimeout:
		return errs.GatewayTimeout // 5.04
	}
	if status >= 400 && status < 500 {
		return errs.BadRequest // RFC 8075 §7: other 4xx → 4.00
	}
	if status >= 300 && status < 400 {
		return errs.BadGateway // a redirect is nothing a registrar relays
	}
	return errs.Internal // 5.00
}

// transportError maps a failed exchange: RFC 9148 §5 leaves it to the registrar; the issue's
// rule is unreachable → 5.03 + Max-Age (retry later, not a hang), a failed TLS handshake →
// 5.02 with a short diagnostic, no answer in time → 5.04.
func (s *Service) transportError(op string, err error, connected bool) error {
	var (
		verr  *tls.CertificateVerificationError
		uaerr x509.UnknownAuthorityError
		herr  x509.HostnameError
		cierr x509.CertificateInvalidError
		alert tls.AlertError
		rherr tls.RecordHeaderError
		nerr  net.Error
	)
	s.log.Warn("registrar: upstream request failed", "op", op, "upstream", s.base.Host, "error", err)
	switch {
	case errors.As(err, &verr) || errors.As(err, &uaerr) || errors.As(err, &herr) || errors.As(err, &cierr):
		return errs.Wrap(errs.BadGateway, err, "the upstream CA's TLS certificate is not trusted")
	case errors.As(err, &alert) || errors.As(err, &rherr) ||
		// net/http's text for a TLS record that turned out to be plain HTTP.
		strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return errs.Wrap(errs.BadGateway, err, "the TLS handshake with the upstream CA failed")
	case connected && (errors.Is(err, context.DeadlineExceeded) || errors.As(err, &nerr) && nerr.Timeout()):
		return errs.Wrap(errs.GatewayTimeout, err, "the upstream CA did not answer in time")
	case connected:
		return errs.Wrap(errs.BadGateway, err, "the upstream CA closed the connection")
	}
	return &errs.Error{Kind: errs.Unavailable, Msg: "the upstream CA is unreachable; retry later", Err: err, RetryAfter: s.opts.RetryAfter}
}

// retryAfter reads Retry-After (RFC 9110 §10.2.3: seconds or an HTTP date).
func retryAfter(v string, now time.Time, def time.Duration) time.Duration {
	v = strings.TrimSpace(v)
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d.Round(time.Second)
		}
		return time.Second
	}
	return def
}

func oneLine(b []byte) string {
	s := string(b)
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 {
		s = s[:200]
	}
	return strings.ToValidUTF8(strings.TrimSpace(s), "?")
}
