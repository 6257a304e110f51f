package cmpproxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"coapca/cmp"
	"coapca/coap"
)

// failureKind classifies what went wrong on the way to the upstream and back.
type failureKind uint8

const (
	failNone        failureKind = iota
	failUnreachable             // connection refused, no route, DNS: 5.03 + Max-Age
	failBusy                    // our concurrency limit, or the upstream's 503/429: 5.03 + Max-Age
	failTLS                     // handshake or certificate failure: 5.02
	failTimeout                 // no answer within Options.Timeout: 5.04
	failStatus                  // an HTTP error status: 5.02 (its body is dropped)
	failBadResponse             // not an RFC 9811 answer (content type, size, not DER): 5.02
	failRefused                 // RA mode: the requester failed the RA's checks (a CMP error answer)
	failBadRequest              // the device's payload is not a PKIMessage: 4.00
	numFailureKinds
)

// failureTable is the one table from failure kinds to CoAP answers (RFC 8075 §7: 5.02 Bad
// Gateway, 5.03 Service Unavailable, 5.04 Gateway Timeout). The diagnostics are short and
// fixed: nothing the upstream said reaches the device. TestFailureTableComplete checks that
// every kind has an entry.
var failureTable = [numFailureKinds]struct {
	name   string
	code   codes.Code
	diag   string
	maxAge bool
}{
	failNone:        {"ok", codes.Changed, "", false},
	failUnreachable: {"unreachable", codes.ServiceUnavailable, "CMP upstream unreachable", true},
	failBusy:        {"busy", codes.ServiceUnavailable, "CMP upstream busy", true},
	failTLS:         {"tls", codes.BadGateway, "CMP upstream TLS failure", false},
	failTimeout:     {"timeout", codes.GatewayTimeout, "CMP upstream timeout", false},
	failStatus:      {"status", codes.BadGateway, "CMP upstream error", false},
	failBadResponse: {"bad_response", codes.BadGateway, "CMP upstream sent no CMP answer", false},
	failRefused:     {"refused", codes.Changed, "", false},
	failBadRequest:  {"bad_request", codes.BadRequest, "", false},
}

// failure is the outcome of a relay: kind, plus the diagnostic for the device (failBadRequest
// only), the Max-Age for 5.03, and the cause for the log.
type failure struct {
	kind       failureKind
	msg        string
	retryAfter time.Duration
	cause      error
}

func (f failure) String() string { return failureTable[f.kind].name }

// failureResponse is the CoAP answer of a failure other than failNone and failRefused.
func (p *Proxy) failureResponse(f failure) *coap.Response {
	e := failureTable[f.kind]
	msg := e.diag
	if f.kind == failStatus && f.msg != "" {
		msg += " (" + f.msg + ")" // the HTTP status code only
	}
	if f.kind == failBadRequest {
		msg = f.msg
	}
	rsp := diag(e.code, msg)
	if e.maxAge {
		ra := f.retryAfter
		if ra <= 0 {
			ra = p.opts.RetryAfter
		}
		rsp.MaxAge = coap.MaxAge(uint32(min(math.Ceil(ra.Seconds()), math.MaxUint32)))
	}
	p.log.Info("cmp upstream failure", "upstream", p.name, "kind", f.String(), "err", f.cause)
	return rsp
}

// post sends one PKIMessage to url (RFC 9811 §3) and returns the answer's DER.
func (p *Proxy) post(ctx context.Context, url string, body []byte) ([]byte, failure) {
	select {
	case p.sem <- struct{}{}:
		defer func() { <-p.sem }()
	default:
		return nil, failure{kind: failBusy, cause: errors.New("concurrency limit reached")}
	}
	ctx, cancel := context.WithTimeout(ctx, p.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, failure{kind: failUnreachable, cause: err}
	}
	req.Header.Set("Content-Type", "application/pkixcmp")
	req.Header.Set("Accept", "application/pkixcmp")
	rsp, err := p.client.Do(req)
	if err != nil {
		return nil, classify(ctx, err)
	}
	defer rsp.Body.Close()
	switch {
	case rsp.StatusCode == http.StatusServiceUnavailable || rsp.StatusCode == http.StatusTooManyRequests:
		_, _ = io.Copy(io.Discard, io.LimitReader(rsp.Body, 64<<10))
		return nil, failure{kind: failBusy, retryAfter: retryAfter(rsp.Header.Get("Retry-After")),
			cause: fmt.Errorf("HTTP %d", rsp.StatusCode)}
	case rsp.StatusCode != http.StatusOK:
		// The body may describe the upstream's internals: it is read off and dropped.
		_, _ = io.Copy(io.Discard, io.LimitReader(rsp.Body, 64<<10))
		return nil, failure{kind: failStatus, msg: "HTTP " + strconv.Itoa(rsp.StatusCode), cause: fmt.Errorf("HTTP %d", rsp.StatusCode)}
	}
	// RFC 9811 §3: every CMP answer is an HTTP 200 with application/pkixcmp.
	if mt, _, err := mime.ParseMediaType(rsp.Header.Get("Content-Type")); err != nil || !strings.EqualFold(mt, "application/pkixcmp") {
		return nil, failure{kind: failBadResponse, cause: fmt.Errorf("content type %q", rsp.Header.Get("Content-Type"))}
	}
	der, err := io.ReadAll(io.LimitReader(rsp.Body, cmp.MaxMessageSize+1))
	if err != nil {
		return nil, classify(ctx, err)
	}
	if len(der) > cmp.MaxMessageSize || !isDERSequence(der) {
		return nil, failure{kind: failBadResponse, cause: fmt.Errorf("%d bytes that are not one DER SEQUENCE within %d bytes", len(der), cmp.MaxMessageSize)}
	}
	return der, failure{}
}

// classify names the failure of an HTTP exchange.
func classify(ctx context.Context, err error) failure {
	var (
		rh    tls.RecordHeaderError
		alert tls.AlertError
		cv    *tls.CertificateVerificationError
		ua    x509.UnknownAuthorityError
		hn    x509.HostnameError
		ci    x509.CertificateInvalidError
		ne    net.Error
	)
	switch {
	case errors.As(err, &rh), errors.As(err, &alert), errors.As(err, &cv), errors.As(err, &ua), errors.As(err, &hn), errors.As(err, &ci),
		// net/http replaces the tls.RecordHeaderError of a plain-HTTP answer by this untyped error.
		strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return failure{kind: failTLS, cause: err}
	case errors.Is(ctx.Err(), context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return failure{kind: failTimeout, cause: err}
	}
	return failure{kind: failUnreachable, cause: err}
}

// retryAfter parses an HTTP Retry-After in seconds (RFC 9110 §10.2.3); 0 when absent, a date,
// or unreasonable (then the configured default applies).
func retryAfter(v string) time.Duration {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n <= 0 || n > 86400 {
		return 0
	}
	return time.Duration(n) * time.Second
}

// isDERSequence reports whether b is exactly one DER SEQUENCE (the shape of a PKIMessage).
func isDERSequence(b []byte) bool {
	s := cryptobyte.String(b)
	var seq cryptobyte.String
	return s.ReadASN1(&seq, cbasn1.SEQUENCE) && s.Empty()
}
