package oscore

import (
	"errors"
	"fmt"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// EchoChallenge builds the server's answer to a request that verified while the replay window was
// not synchronized (KindEchoRequired; RFC 8613 Appendix B.1.2, RFC 9175 §2.4): an OSCORE-protected
// 4.01 (Unauthorized) carrying only the Echo option, no diagnostic payload, protected with the
// server's own Partial IV. Token, Message ID and type come from req (ACK to a CON).
func (c *Context) EchoChallenge(st *RequestState, req *message.Message) (*message.Message, error) {
	echo, err := c.currentEcho()
	if err != nil {
		return nil, &Error{Kind: KindInternal, Err: err}
	}
	resp := &message.Message{
		Token:     req.Token,
		MessageID: req.MessageID,
		Type:      responseType(req.Type),
		Code:      codes.Unauthorized,
		Options:   message.Options{{ID: OptionEcho, Value: echo}},
	}
	return c.protectResponse(st, resp, true)
}

// EchoValue returns the Echo value of a decrypted 4.01 response (RFC 9175 §2.3): the client must
// repeat its request with this value in an Echo option.
func EchoValue(resp *message.Message) ([]byte, bool) {
	if resp == nil || resp.Code != codes.Unauthorized {
		return nil, false
	}
	for _, o := range resp.Options {
		if o.ID == OptionEcho && len(o.Value) > 0 && len(o.Value) <= 40 {
			return o.Value, true
		}
	}
	return nil, false
}

// WithEcho returns a copy of req carrying the Echo option value (replacing any earlier one).
func WithEcho(req *message.Message, echo []byte) *message.Message {
	out := *req
	opts := make(message.Options, 0, len(req.Options)+1)
	for _, o := range req.Options {
		if o.ID != OptionEcho {
			opts = append(opts, o)
		}
	}
	out.Options = sortOptions(append(opts, message.Option{ID: OptionEcho, Value: append([]byte{}, echo...)}))
	return &out
}

// RoundTripper sends a protected request and returns the (protected) response.
type RoundTripper func(protected *message.Message) (*message.Message, error)

// Exchange runs one client request: it protects req, sends it with send, verifies the answer and,
// when the server challenges with 4.01 + Echo (Appendix B.1.2, RFC 9175), repeats the request once
// with the Echo value under a new Partial IV. It returns the decrypted response. When the server
// answers without OSCORE (its §8.2 errors: 4.02, 4.01, 4.00), it returns that raw response together
// with a KindNotProtected error. A binding that reuses the token should give the repeated request a
// new Message ID inside send.
func (c *Context) Exchange(req *message.Message, send RoundTripper) (*message.Message, error) {
	for attempt := 0; ; attempt++ {
		p, st, err := c.ProtectRequest(req)
		if err != nil {
			return nil, err
		}
		raw, err := send(p)
		if err != nil {
			return nil, fmt.Errorf("oscore: send: %w", err)
		}
		resp, err := c.UnprotectResponse(st, raw)
		if err != nil {
			if errors.Is(err, ErrNotProtected) {
				// An OSCORE error from the server (§8.2) comes back unprotected: hand it over as is.
				return raw, fmt.Errorf("oscore: unprotected %v response: %w", raw.Code, err)
			}
			return nil, err
		}
		echo, ok := EchoValue(resp)
		if !ok || attempt > 0 {
			return resp, nil
		}
		c.log.Debug("oscore: repeating request with Echo", "echo", echo)
		req = WithEcho(req, echo)
	}
}
