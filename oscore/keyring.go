package oscore

import (
	"bytes"
	"errors"
	"sync"

	"github.com/plgd-dev/go-coap/v3/message"
)

// Keyring holds a server's security contexts and finds the one a request belongs to by its kid
// and kid context (RFC 8613 §8.2 step 2). Several contexts may share a Recipient ID (different ID
// Contexts); then each candidate is tried until one verifies (§3.3). It is safe for concurrent use.
type Keyring struct {
	mu    sync.RWMutex
	byKID map[string][]*Context
}

// NewKeyring returns an empty keyring.
func NewKeyring() *Keyring { return &Keyring{byKID: map[string][]*Context{}} }

// Add registers a context under its Recipient ID. A context with the same Recipient ID and ID
// Context replaces the earlier one.
func (k *Keyring) Add(c *Context) {
	k.mu.Lock()
	defer k.mu.Unlock()
	key := string(c.recipientID)
	list := k.byKID[key]
	for i, o := range list {
		if bytes.Equal(o.idContext, c.idContext) {
			list[i] = c
			return
		}
	}
	k.byKID[key] = append(list, c)
}

// Remove drops a context (e.g. when its EDHOC session is abandoned or it is re-keyed).
func (k *Keyring) Remove(c *Context) {
	k.mu.Lock()
	defer k.mu.Unlock()
	key := string(c.recipientID)
	list := k.byKID[key]
	for i, o := range list {
		if o == c {
			list = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(k.byKID, key)
	} else {
		k.byKID[key] = list
	}
}

// Len returns the number of contexts.
func (k *Keyring) Len() int {
	k.mu.RLock()
	defer k.mu.RUnlock()
	n := 0
	for _, l := range k.byKID {
		n += len(l)
	}
	return n
}

// Lookup returns the contexts a request with this option value may belong to.
func (k *Keyring) Lookup(ov OptionValue) []*Context {
	k.mu.RLock()
	defer k.mu.RUnlock()
	var out []*Context
	for _, c := range k.byKID[string(ov.KID)] {
		if c.matches(ov) {
			out = append(out, c)
		}
	}
	return out
}

// UnprotectRequest finds the context of an OSCORE request and verifies it (RFC 8613 §8.2); see
// Context.UnprotectRequest for the errors. RequestState.Context() is the context to protect the
// response with.
func (k *Keyring) UnprotectRequest(msg *message.Message) (*message.Message, *RequestState, error) {
	ov, err := ParseMessage(msg)
	if err != nil {
		return nil, nil, err
	}
	if err := checkRequestOption(ov); err != nil {
		return nil, nil, err
	}
	cands := k.Lookup(ov)
	if len(cands) == 0 {
		return nil, nil, newErr(KindContextNotFound, "kid %x / kid context %x", ov.KID, ov.KIDContext)
	}
	// A wrong candidate fails its replay check or decryption: try the next one, and report a
	// replay if any candidate saw one.
	var last, replay error
	for _, c := range cands {
		out, st, err := c.unprotectRequest(msg, ov)
		switch {
		case errors.Is(err, ErrReplay):
			replay = err
		case errors.Is(err, ErrDecrypt):
			last = err
		default:
			return out, st, err
		}
	}
	if replay != nil {
		return nil, nil, replay
	}
	return nil, nil, last
}

// ProtectResponse protects a response with the context that verified the request.
func (k *Keyring) ProtectResponse(st *RequestState, resp *message.Message) (*message.Message, error) {
	if st == nil || st.ctx == nil {
		return nil, newErr(KindInternal, "no request state")
	}
	return st.ctx.ProtectResponse(st, resp)
}

// Handler answers a decrypted request; st identifies the exchange (keep it for Observe
// notifications). Returning nil sends nothing.
type Handler func(req *message.Message, st *RequestState) *message.Message

// Serve runs one server exchange: it verifies msg (RFC 8613 §8.2), calls h with the decrypted
// request and protects h's answer (§8.3). A request that fails verification is answered as
// ErrorResponse says (unprotected 4.02/4.01/4.00, or the protected Echo challenge) and h is not
// called. It returns nil when there is nothing to send.
func (k *Keyring) Serve(msg *message.Message, h Handler) (*message.Message, error) {
	req, st, err := k.UnprotectRequest(msg)
	if err != nil {
		return ErrorResponse(msg, err)
	}
	resp := h(req, st)
	if resp == nil {
		return nil, nil
	}
	return st.ctx.ProtectResponse(st, resp)
}
