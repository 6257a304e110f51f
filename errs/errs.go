// Package errs defines the typed errors that every coapca service returns.
//
// The services (est, cmp) and the authority decide what went wrong; the front doors only map
// the Kind to their wire form (CoAP response code, HTTP status, CMP PKIFailureInfo), each in one
// table of their own. No handler invents a code ad hoc.
package errs

import (
	"errors"
	"fmt"
	"time"
)

// Kind classifies an error for the front doors.
type Kind int

const (
	// Internal is any failure that is not the client's fault (the zero Kind).
	Internal Kind = iota
	// BadRequest: the request is malformed (bad CSR, bad CBOR, bad PKIMessage).
	BadRequest
	// Unauthorized: the client is not authenticated (no or untrusted identity).
	Unauthorized
	// Forbidden: the client is authenticated but not allowed to do this.
	Forbidden
	// NotFound: the resource or label does not exist.
	NotFound
	// NotAcceptable: no representation matches the client's Accept.
	NotAcceptable
	// UnsupportedFormat: the request's Content-Format / Content-Type is wrong.
	UnsupportedFormat
	// TooLarge: the request body exceeds a limit.
	TooLarge
	// Pending: the request was accepted but is waiting (manual approval, slow CA);
	// the client should retry after RetryAfter.
	Pending
	// Unavailable: the service cannot answer now (overload, shutting down).
	Unavailable
	// Conflict: the request conflicts with the state (e.g. certificate already revoked).
	Conflict
)

var kindNames = [...]string{
	Internal:          "internal error",
	BadRequest:        "bad request",
	Unauthorized:      "unauthorized",
	Forbidden:         "forbidden",
	NotFound:          "not found",
	NotAcceptable:     "not acceptable",
	UnsupportedFormat: "unsupported format",
	TooLarge:          "request too large",
	Pending:           "pending",
	Unavailable:       "unavailable",
	Conflict:          "conflict",
}

func (k Kind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Error is a typed error. Msg is safe to show to the client (a diagnostic payload);
// Err is the internal cause, logged but never sent.
type Error struct {
	Kind Kind
	Msg  string
	Err  error
	// RetryAfter is set for Pending and Unavailable.
	RetryAfter time.Duration
	// ID identifies the pending request (for Pending), e.g. for `coapca ca approve ID`.
	ID string
}

func (e *Error) Error() string {
	s := e.Kind.String()
	if e.Msg != "" {
		s += ": " + e.Msg
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// New returns an Error of kind k with a client-visible message.
func New(k Kind, format string, args ...any) *Error {
	return &Error{Kind: k, Msg: fmt.Sprintf(format, args...)}
}

// Wrap returns an Error of kind k with a client-visible message and an internal cause.
func Wrap(k Kind, err error, format string, args ...any) *Error {
	return &Error{Kind: k, Msg: fmt.Sprintf(format, args...), Err: err}
}

// NewPending returns a Pending error for request id, to be retried after d.
func NewPending(id string, d time.Duration) *Error {
	return &Error{Kind: Pending, Msg: "request " + id + " is pending", ID: id, RetryAfter: d}
}

// KindOf returns the Kind of err (Internal when err carries none).
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return Internal
}

// As returns the *Error inside err, or nil.
func As(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}

// Message returns the client-visible diagnostic of err ("internal error" for untyped errors,
// so internals never leak).
func Message(err error) string {
	if e := As(err); e != nil {
		if e.Msg != "" {
			return e.Msg
		}
		return e.Kind.String()
	}
	return Internal.String()
}
