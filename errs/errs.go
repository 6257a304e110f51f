// Package errs defines the typed errors that every coapca service returns.
//
// The services (est, cmp) and the authority decide what went wrong; the front doors only map
// the Kind to their wire form (CoAP response code, HTTP status, CMP PKIFailureInfo), each in one
// table of their own: an array [NumKinds]T indexed by Kind, so that adding a Kind without
// extending every table is caught by the table's completeness test (see TableComplete).
//
// What reaches a peer is Message: the Kind's name for an internal error (its detail belongs in
// the log, never on the wire), and otherwise the service's message made into one short line
// without Go value dumps (Diagnostic).
package errs

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Kind classifies an error for the front doors. A Kind is itself an error, so that
// errors.Is(err, errs.NotFound) reports whether err is (or wraps) an *Error of that kind.
type Kind int

const (
	// Internal is any failure that is not the client's fault (the zero Kind). Its message
	// never reaches a peer.
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
	// BadGateway: an upstream server (a registrar's or proxy's CA) could not be talked to
	// properly: its TLS identity failed verification, or its answer was malformed.
	BadGateway
	// GatewayTimeout: an upstream server did not answer in time.
	GatewayTimeout

	// NumKinds is the number of kinds: tables are [NumKinds]T arrays indexed by Kind, and
	// completeness tests loop from 0 to NumKinds. A new Kind goes before this line.
	NumKinds
)

var kindNames = [NumKinds]string{
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
	BadGateway:        "bad gateway",
	GatewayTimeout:    "gateway timeout",
}

// Valid reports whether k is one of the defined kinds.
func (k Kind) Valid() bool { return k >= 0 && k < NumKinds }

func (k Kind) String() string {
	if k.Valid() {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Error makes a Kind an error (its name), the target of errors.Is.
func (k Kind) Error() string { return k.String() }

// TableComplete returns the kinds whose entry in a [NumKinds]T table is T's zero value and
// is not listed in zeroOK: the completeness test of a binding's table is
//
//	if missing := errs.TableComplete(table, zeroOK...); len(missing) > 0 { t.Errorf(...) }
//
// The array type already fails to compile when the table is longer than NumKinds; this
// catches a kind that was added but not given an entry (a shorter composite literal).
func TableComplete[T comparable](table [NumKinds]T, zeroOK ...Kind) []Kind {
	var zero T
	var missing []Kind
	for k := Kind(0); k < NumKinds; k++ {
		if table[k] == zero && !slices.Contains(zeroOK, k) {
			missing = append(missing, k)
		}
	}
	return missing
}

// Error is a typed error. Msg is meant for the client (a diagnostic payload, a CMP
// statusString) unless Kind is Internal; Err is the internal cause, logged but never sent.
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

// Is reports whether target is e's Kind, so that errors.Is(err, errs.Forbidden) holds for
// every *Error of kind Forbidden anywhere in err's chain.
func (e *Error) Is(target error) bool {
	k, ok := target.(Kind)
	return ok && k == e.Kind
}

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

// KindOf returns the Kind of err: that of the first *Error (or bare Kind) in its chain,
// Internal when err carries none.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	var k Kind
	if errors.As(err, &k) {
		return k
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

// Message returns the client-visible diagnostic of err. An internal error (typed Internal,
// untyped, or of an unknown kind) is only its kind, "internal error": its text may name files,
// hosts, SQL or key material and goes to the log, never to a peer (boulder's rule; RFC 7252
// §5.5.2 diagnostic payloads are for humans, not for internals). Any other kind's message is
// passed through Diagnostic, so that a parser's error text that slipped into a message
// becomes one short line rather than a Go struct dump.
func Message(err error) string {
	e := As(err)
	if e == nil {
		if k := KindOf(err); k != Internal && k.Valid() {
			return k.String()
		}
		return Internal.String()
	}
	if e.Kind == Internal || !e.Kind.Valid() {
		return Internal.String()
	}
	if d := Diagnostic(e.Msg); d != "" {
		return d
	}
	return e.Kind.String()
}

// MaxDiagnostic bounds the length in bytes of what Diagnostic returns. CoAP diagnostic
// payloads travel in one datagram to constrained devices; a message is a sentence, not a
// report.
const MaxDiagnostic = 240

// Reason returns a short, one-line reason for err fit for a client-visible message, such as
// the cause of a parser's failure: Diagnostic(err.Error()), or "" for nil.
//
//	errs.New(errs.BadRequest, "malformed CSR: not a DER PKCS#10 request (%s)", errs.Reason(err))
func Reason(err error) string {
	if err == nil {
		return ""
	}
	return Diagnostic(err.Error())
}

// Diagnostic makes s fit for a peer: its first line only, cut before the first Go value dump
// (a "{name:value ...}" as encoding/asn1's structure errors print their field parameters,
// together with an unclosed parenthesis that opened it), invalid UTF-8 replaced (RFC 7252
// §5.5.2: the diagnostic payload is UTF-8), surrounding space trimmed, and at most
// MaxDiagnostic bytes (cut on a rune boundary, marked with "…").
func Diagnostic(s string) string {
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i]
	}
	if i := goDump(s); i >= 0 {
		s = s[:i]
		// Drop a parenthesis left open by the cut: "tags don't match (16 vs {class:…" →
		// "tags don't match".
		if j := strings.LastIndexByte(s, '('); j >= 0 && !strings.Contains(s[j:], ")") {
			s = s[:j]
		}
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	// Trailing blanks and the punctuation a cut leaves, in any order (so a second pass changes
	// nothing: "x\t(" → "x", not "x\t").
	s = strings.TrimRightFunc(strings.TrimLeftFunc(s, unicode.IsSpace), func(r rune) bool {
		return unicode.IsSpace(r) || strings.ContainsRune(":,;(", r)
	})
	if len(s) > MaxDiagnostic {
		const ell = "…"
		cut := MaxDiagnostic - len(ell)
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = strings.TrimRight(s[:cut], " ") + ell
	}
	return s
}

// goDump returns the index of the first "{" that opens a Go %+v dump ("{ident:" — a field
// name followed by a colon), or -1.
func goDump(s string) int {
	for i := 0; i < len(s); i++ {
		if s[i] != '{' {
			continue
		}
		j := i + 1
		for j < len(s) && (s[j] == '_' || 'a' <= s[j] && s[j] <= 'z' || 'A' <= s[j] && s[j] <= 'Z' || j > i+1 && '0' <= s[j] && s[j] <= '9') {
			j++
		}
		if j > i+1 && j < len(s) && s[j] == ':' {
			return i
		}
	}
	return -1
}
