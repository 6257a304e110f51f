package oscore

import (
	"errors"
	"fmt"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// ErrorKind classifies OSCORE processing failures (RFC 8613 §8) so that a CoAP binding can answer
// with the right code from one table (see Error.Code and ErrorResponse).
type ErrorKind int

const (
	// KindInternal: the local endpoint could not protect a message (bad input, storage failure).
	KindInternal ErrorKind = iota
	// KindNotProtected: the message has no OSCORE option. 4.01 for a resource that requires OSCORE.
	KindNotProtected
	// KindDecode: the OSCORE option or COSE object failed to decode. 4.02 "Failed to decode COSE" (§8.2 step 2).
	KindDecode
	// KindContextNotFound: no Recipient Context matches kid / kid context. 4.01 "Security context not found" (§8.2 step 2).
	KindContextNotFound
	// KindReplay: the Partial IV was received before or is outside the window. 4.01 "Replay detected" (§7.4).
	KindReplay
	// KindDecrypt: AEAD verification failed. 4.00 "Decryption failed" (§8.2 step 6).
	KindDecrypt
	// KindEchoRequired: the request verified but its freshness is unknown (no synchronized replay
	// window after a restart). Answer with the OSCORE-protected 4.01 + Echo of Appendix B.1.2;
	// ErrorResponse builds it.
	KindEchoRequired
	// KindTooLarge: the reassembled OSCORE message exceeds MAX_UNFRAGMENTED_SIZE (§4.1.3.4.2). 4.13.
	KindTooLarge
	// KindSequenceExhausted: the Sender Sequence Number reached its maximum; a new context is needed (§7.2.1).
	KindSequenceExhausted
	// KindResponse: a response was rejected by the client (not bound to the request, replayed
	// notification, Observe misuse; §8.4, §7.4.1). The client stops processing it; nothing is sent.
	KindResponse
)

var kindText = [...]string{
	KindInternal:          "OSCORE processing failed",
	KindNotProtected:      "OSCORE required",
	KindDecode:            "Failed to decode COSE",
	KindContextNotFound:   "Security context not found",
	KindReplay:            "Replay detected",
	KindDecrypt:           "Decryption failed",
	KindEchoRequired:      "Echo required",
	KindTooLarge:          "Message too large",
	KindSequenceExhausted: "Sender sequence number exhausted",
	KindResponse:          "Response rejected",
}

func (k ErrorKind) String() string {
	if k >= 0 && int(k) < len(kindText) {
		return kindText[k]
	}
	return fmt.Sprintf("oscore kind %d", int(k))
}

// Code is the CoAP response code a server sends for this kind (RFC 8613 §7.4, §8.2).
func (k ErrorKind) Code() codes.Code {
	switch k {
	case KindNotProtected, KindContextNotFound, KindReplay, KindEchoRequired:
		return codes.Unauthorized
	case KindDecode:
		return codes.BadOption
	case KindDecrypt:
		return codes.BadRequest
	case KindTooLarge:
		return codes.RequestEntityTooLarge
	case KindSequenceExhausted:
		return codes.ServiceUnavailable
	}
	return codes.InternalServerError
}

// Error is an OSCORE processing error. errors.Is(err, ErrReplay) etc. match on Kind.
type Error struct {
	Kind ErrorKind
	Err  error // internal cause (never sent)

	state *RequestState // KindEchoRequired: the verified request, to protect the challenge
}

// Sentinels for errors.Is.
var (
	ErrNotProtected      = &Error{Kind: KindNotProtected}
	ErrDecode            = &Error{Kind: KindDecode}
	ErrContextNotFound   = &Error{Kind: KindContextNotFound}
	ErrReplay            = &Error{Kind: KindReplay}
	ErrDecrypt           = &Error{Kind: KindDecrypt}
	ErrEchoRequired      = &Error{Kind: KindEchoRequired}
	ErrTooLarge          = &Error{Kind: KindTooLarge}
	ErrSequenceExhausted = &Error{Kind: KindSequenceExhausted}
	ErrResponse          = &Error{Kind: KindResponse}
)

func (e *Error) Error() string {
	if e.Err != nil {
		return "oscore: " + e.Kind.String() + ": " + e.Err.Error()
	}
	return "oscore: " + e.Kind.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Is matches any *Error of the same Kind.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Kind == e.Kind
}

// Code is the CoAP code a server answers with.
func (e *Error) Code() codes.Code { return e.Kind.Code() }

// Diagnostic is the diagnostic payload the RFC suggests ("Replay detected", ...).
func (e *Error) Diagnostic() string { return e.Kind.String() }

// State returns the request state of a KindEchoRequired error (nil otherwise).
func (e *Error) State() *RequestState { return e.state }

func newErr(k ErrorKind, format string, args ...any) *Error {
	return &Error{Kind: k, Err: fmt.Errorf(format, args...)}
}

// KindOf returns the ErrorKind of err (KindInternal when err is not an *Error).
func KindOf(err error) ErrorKind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindInternal
}

// ErrorResponse builds the server's answer to a request whose verification failed with err
// (RFC 8613 §8.2, §7.4): an unprotected response with the mapped code, an Outer Max-Age of 0 and
// the diagnostic payload. For KindEchoRequired it returns the OSCORE-protected 4.01 + Echo
// challenge of Appendix B.1.2 instead. Token, Message ID and type (ACK to a CON, NON to a NON)
// are taken from req; a binding may override them. It returns nil for KindResponse (nothing is sent).
func ErrorResponse(req *message.Message, err error) (*message.Message, error) {
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Kind: KindInternal, Err: err}
	}
	if e.Kind == KindResponse {
		return nil, nil
	}
	if e.Kind == KindEchoRequired && e.state != nil {
		return e.state.ctx.EchoChallenge(e.state, req)
	}
	resp := &message.Message{
		Token:     req.Token,
		Code:      e.Code(),
		MessageID: req.MessageID,
		Type:      responseType(req.Type),
		Payload:   []byte(e.Diagnostic()),
	}
	// RFC 8613 §4.1.3.1: an Outer Max-Age of 0 keeps intermediaries from caching OSCORE errors.
	resp.Options = resp.Options.Add(message.Option{ID: message.MaxAge, Value: []byte{}})
	return resp, nil
}

func responseType(t message.Type) message.Type {
	if t == message.Confirmable {
		return message.Acknowledgement
	}
	return message.NonConfirmable
}
