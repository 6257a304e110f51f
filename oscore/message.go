package oscore

import (
	"bytes"
	"fmt"
	"sync"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// RequestState binds a response to its request (RFC 8613 §7.1, §8): the request's kid, Partial IV
// and nonce, plus what the Observe and single-response rules need. Keep it with the token until
// the exchange ends; for an Observe registration, as long as the observation lives.
type RequestState struct {
	ctx     *Context
	client  bool
	kid     []byte
	piv     []byte
	nonce   []byte
	observe bool // the request was an Observe registration (Observe: 0)
	fresh   bool // server: verified against a synchronized replay window

	mu        sync.Mutex
	nonceUsed bool // the request nonce protected (server) / verified (client) a response
	final     bool // client: a non-notification response was accepted
	haveNotif bool
	notifNum  uint64 // client: Notification Number (§4.1.3.5.2)
}

// Context returns the security context of the exchange.
func (s *RequestState) Context() *Context { return s.ctx }

// KID returns the request's kid (the client's Sender ID).
func (s *RequestState) KID() []byte { return clone(s.kid) }

// PartialIV returns the request's Partial IV.
func (s *RequestState) PartialIV() []byte { return clone(s.piv) }

// Observe reports whether the request was an Observe registration.
func (s *RequestState) Observe() bool { return s.observe }

// Fresh reports whether the server verified the request against its replay window.
func (s *RequestState) Fresh() bool { return s.fresh }

func isRequestCode(c codes.Code) bool  { return c >= 1 && c <= 31 }
func isResponseCode(c codes.Code) bool { return c >= 64 && c <= 191 }

func observeValue(v []byte) uint64 { return decodePIV(v) }

func getOSCORE(msg *message.Message) ([]byte, error) {
	var v []byte
	n := 0
	for _, o := range msg.Options {
		if o.ID == OptionNumber {
			v = o.Value
			n++
		}
	}
	switch n {
	case 0:
		return nil, &Error{Kind: KindNotProtected}
	case 1:
		return v, nil
	}
	return nil, newErr(KindDecode, "%d OSCORE options", n)
}

// ParseMessage returns the decoded OSCORE option of msg: KindNotProtected when there is none,
// KindDecode when it is malformed. Servers use it to pick a context by kid / kid context.
func ParseMessage(msg *message.Message) (OptionValue, error) {
	v, err := getOSCORE(msg)
	if err != nil {
		return OptionValue{}, err
	}
	ov, err := ParseOptionValue(v)
	if err != nil {
		return OptionValue{}, &Error{Kind: KindDecode, Err: err}
	}
	return ov, nil
}

// IsProtected reports whether msg carries an OSCORE option.
func IsProtected(msg *message.Message) bool { return msg.Options.HasOption(OptionNumber) }

// build assembles the OSCORE message (RFC 8613 §4, §6): header fields of the original, the Outer
// Code, the Outer options plus the OSCORE option, and the ciphertext as payload.
func build(orig *message.Message, code codes.Code, outer message.Options, ov OptionValue, ct []byte) (*message.Message, error) {
	v, err := ov.Marshal()
	if err != nil {
		return nil, &Error{Kind: KindInternal, Err: err}
	}
	outer = append(outer, message.Option{ID: OptionNumber, Value: v})
	return &message.Message{
		Token:     orig.Token,
		MessageID: orig.MessageID,
		Type:      orig.Type,
		Code:      code,
		Options:   sortOptions(outer),
		Payload:   ct,
	}, nil
}

// ProtectRequest turns a CoAP request into an OSCORE request (RFC 8613 §8.1): it writes Code, Class
// E options and payload into the plaintext, takes a new Partial IV, encrypts with the Sender Key and
// returns the message with Outer Code POST (FETCH for Observe, §4.1.3.5), the Outer options and the
// OSCORE option carrying Partial IV, kid and, unless omitted, kid context.
func (c *Context) ProtectRequest(req *message.Message) (*message.Message, *RequestState, error) {
	if !isRequestCode(req.Code) {
		return nil, nil, newErr(KindInternal, "code %v is not a request code", req.Code)
	}
	inner, outer, obs, err := splitOptions(req.Options)
	if err != nil {
		return nil, nil, &Error{Kind: KindInternal, Err: err}
	}
	outerCode := codes.POST
	st := &RequestState{ctx: c, client: true, kid: c.senderID}
	if obs != nil {
		// §4.1.3.5.1: Inner and Outer Observe carry the value of the original request.
		inner = append(inner, *obs)
		outer = append(outer, *obs)
		outerCode = codeFETCH
		st.observe = observeValue(obs.Value) == 0
	}
	pt, err := encodePlaintext(byte(req.Code), inner, req.Payload)
	if err != nil {
		return nil, nil, &Error{Kind: KindInternal, Err: err}
	}
	seq, err := c.nextSequence()
	if err != nil {
		return nil, nil, err
	}
	st.piv = encodePIV(seq)
	st.nonce = c.nonce(c.senderID, st.piv)
	aad, err := requestAAD(c.alg.ID(), st.kid, st.piv)
	if err != nil {
		return nil, nil, &Error{Kind: KindInternal, Err: err}
	}
	ct, err := seal(c.sender, st.nonce, pt, aad)
	if err != nil {
		return nil, nil, err
	}
	ov := OptionValue{PartialIV: st.piv, KID: c.senderID, HasKID: true}
	if c.sendKIDContext {
		ov.KIDContext, ov.HasKIDContext = c.idContext, true
	}
	out, err := build(req, outerCode, outer, ov, ct)
	if err != nil {
		return nil, nil, err
	}
	return out, st, nil
}

// UnprotectRequest verifies an OSCORE request with this context (RFC 8613 §8.2) and returns the
// decrypted request. Errors are *Error values: KindNotProtected, KindDecode (4.02),
// KindContextNotFound (4.01, kid or kid context not this context's), KindReplay (4.01),
// KindDecrypt (4.00) and KindEchoRequired (answer with ErrorResponse / EchoChallenge). The result
// aliases msg's option values. Outer block-wise must be reassembled before (§8.2.1).
func (c *Context) UnprotectRequest(msg *message.Message) (*message.Message, *RequestState, error) {
	ov, err := ParseMessage(msg)
	if err != nil {
		return nil, nil, err
	}
	if err := checkRequestOption(ov); err != nil {
		return nil, nil, err
	}
	if !c.matches(ov) {
		return nil, nil, newErr(KindContextNotFound, "kid %x / kid context %x", ov.KID, ov.KIDContext)
	}
	return c.unprotectRequest(msg, ov)
}

func checkRequestOption(ov OptionValue) error {
	// §5: Partial IV and kid SHALL be present in requests.
	if ov.PartialIV == nil || !ov.HasKID {
		return newErr(KindDecode, "request without Partial IV or kid")
	}
	return nil
}

// matches reports whether a request's kid and kid context select this context (§8.2 step 2, §5.1).
func (c *Context) matches(ov OptionValue) bool {
	if !bytes.Equal(ov.KID, c.recipientID) {
		return false
	}
	return !ov.HasKIDContext || bytes.Equal(ov.KIDContext, c.idContext)
}

func (c *Context) unprotectRequest(msg *message.Message, ov OptionValue) (*message.Message, *RequestState, error) {
	if c.maxUnfrag > 0 && len(msg.Payload) > c.maxUnfrag {
		return nil, nil, newErr(KindTooLarge, "%d-byte OSCORE payload exceeds MAX_UNFRAGMENTED_SIZE %d", len(msg.Payload), c.maxUnfrag)
	}
	seq := decodePIV(ov.PartialIV)
	// §8.2 step 3 (checked again atomically with the update below, §7.4).
	c.mu.Lock()
	synced := c.synced
	fresh := !synced || c.window.fresh(seq)
	c.mu.Unlock()
	if !fresh {
		return nil, nil, newErr(KindReplay, "Partial IV %d", seq)
	}
	st := &RequestState{ctx: c, kid: clone(ov.KID), piv: clone(ov.PartialIV)}
	st.nonce = c.nonce(st.kid, st.piv)
	aad, err := requestAAD(c.alg.ID(), st.kid, st.piv)
	if err != nil {
		return nil, nil, &Error{Kind: KindInternal, Err: err}
	}
	pt, err := c.recipient.Open(nil, st.nonce, msg.Payload, aad)
	if err != nil {
		c.log.Debug("oscore: request decryption failed", "kid", st.kid, "piv", seq)
		return nil, nil, &Error{Kind: KindDecrypt, Err: err}
	}
	code, inner, payload, derr := decodePlaintext(pt)
	if derr == nil && !isRequestCode(codes.Code(code)) {
		derr = newErr(KindDecode, "inner code %v is not a request", codes.Code(code))
	}
	var echo []byte
	for _, o := range inner {
		switch o.ID {
		case OptionNumber:
			derr = newErr(KindDecode, "nested OSCORE option (§4.1.3.7)")
		case OptionEcho:
			echo = o.Value
		case message.Observe:
			st.observe = observeValue(o.Value) == 0
		}
	}
	consumedEcho := false
	c.mu.Lock()
	switch {
	case c.synced:
		// §7.4: validating and updating the window is atomic.
		if !c.window.fresh(seq) {
			c.mu.Unlock()
			return nil, nil, newErr(KindReplay, "Partial IV %d", seq)
		}
		c.window.mark(seq)
		st.fresh = true
	case echo != nil && c.echo != nil && bytes.Equal(echo, c.echo) && c.now().Sub(c.echoAt) < c.echoLifetime:
		// Appendix B.1.2: the request is proven fresh; its Partial IV becomes the window's lower limit.
		c.window.resync(seq)
		c.synced, c.echo = true, nil
		st.fresh, consumedEcho = true, true
		c.log.Info("oscore: replay window resynchronised with Echo", "kid", st.kid, "piv", seq)
	}
	c.mu.Unlock()
	if derr != nil {
		return nil, nil, &Error{Kind: KindDecode, Err: derr}
	}
	if !st.fresh {
		return nil, nil, &Error{Kind: KindEchoRequired, Err: errNoWindow, state: st}
	}
	if c.shared != nil {
		// §7.4: a Partial IV received before is refused, also when another process holding
		// this context received it.
		ok, err := c.shared.Accept(seq)
		if err != nil {
			return nil, nil, &Error{Kind: KindInternal, Err: fmt.Errorf("shared replay window: %w", err)}
		}
		if !ok {
			return nil, nil, newErr(KindReplay, "Partial IV %d (received before, possibly by another instance)", seq)
		}
	}
	out := &message.Message{
		Token:     msg.Token,
		MessageID: msg.MessageID,
		Type:      msg.Type,
		Code:      codes.Code(code),
		Options:   sortOptions(append(outerKept(msg.Options), withoutEcho(inner, consumedEcho)...)),
		Payload:   payload,
	}
	return out, st, nil
}

var errNoWindow = errorString("replay window not synchronized (Appendix B.1.2)")

type errorString string

func (e errorString) Error() string { return string(e) }

// withoutEcho drops the Echo option the OSCORE layer consumed for its own resynchronisation;
// an Echo in a request to a synchronized context is left for the application (RFC 9175 freshness).
func withoutEcho(o message.Options, has bool) message.Options {
	if !has {
		return o
	}
	out := o[:0:0]
	for _, x := range o {
		if x.ID != OptionEcho {
			out = append(out, x)
		}
	}
	return out
}

// ProtectResponse turns a CoAP response to a verified request into an OSCORE response (RFC 8613
// §8.3). It reuses the request's nonce (no Partial IV) for the first response to a fresh request and
// takes a new Partial IV otherwise: for Observe notifications (§4.1.3.5.2, §8.3.1), for every further
// response to the same request, and when the request's freshness was not established (B.1.2). The
// Outer Code is 2.04, or 2.05 for a response with Observe, whose Inner Observe is empty and Outer
// Observe the original value.
func (c *Context) ProtectResponse(st *RequestState, resp *message.Message) (*message.Message, error) {
	return c.protectResponse(st, resp, false)
}

// ProtectResponseWithPIV is ProtectResponse that always includes a new Partial IV.
func (c *Context) ProtectResponseWithPIV(st *RequestState, resp *message.Message) (*message.Message, error) {
	return c.protectResponse(st, resp, true)
}

func (c *Context) protectResponse(st *RequestState, resp *message.Message, forcePIV bool) (*message.Message, error) {
	if st == nil || st.client || st.ctx != c {
		return nil, newErr(KindInternal, "request state does not belong to a request verified by this context")
	}
	if !isResponseCode(resp.Code) {
		return nil, newErr(KindInternal, "code %v is not a response code", resp.Code)
	}
	inner, outer, obs, err := splitOptions(resp.Options)
	if err != nil {
		return nil, &Error{Kind: KindInternal, Err: err}
	}
	outerCode := codes.Changed
	if obs != nil {
		// §4.1.3.5.2: Inner Observe empty, Outer Observe = original value, Outer Code 2.05.
		inner = append(inner, message.Option{ID: message.Observe, Value: []byte{}})
		outer = append(outer, *obs)
		outerCode = codes.Content
		forcePIV = true
	}
	pt, err := encodePlaintext(byte(resp.Code), inner, resp.Payload)
	if err != nil {
		return nil, &Error{Kind: KindInternal, Err: err}
	}
	st.mu.Lock()
	reuse := !forcePIV && st.fresh && !st.nonceUsed
	if reuse {
		st.nonceUsed = true
	}
	st.mu.Unlock()
	var ov OptionValue
	nonce := st.nonce
	if !reuse {
		seq, err := c.nextSequence()
		if err != nil {
			return nil, err
		}
		ov.PartialIV = encodePIV(seq)
		nonce = c.nonce(c.senderID, ov.PartialIV)
	}
	aad, err := requestAAD(c.alg.ID(), st.kid, st.piv)
	if err != nil {
		return nil, &Error{Kind: KindInternal, Err: err}
	}
	ct, err := seal(c.sender, nonce, pt, aad)
	if err != nil {
		return nil, err
	}
	return build(resp, outerCode, outer, ov, ct)
}

// UnprotectResponse verifies an OSCORE response to a request protected with ProtectRequest (RFC 8613
// §8.4). A notification (Inner Observe) must carry a Partial IV greater than the last one accepted
// for the registration (§7.4.1); its Observe option is set to the three low bytes of the Partial IV
// (§4.1.3.5.2). A second non-notification response, or a notification to a request that was not a
// registration, is rejected (KindResponse). A response without an OSCORE option gives
// KindNotProtected (e.g. an unprotected 4.01 "Security context not found" from the server).
func (c *Context) UnprotectResponse(st *RequestState, msg *message.Message) (*message.Message, error) {
	if st == nil || !st.client || st.ctx != c {
		return nil, newErr(KindInternal, "request state does not belong to a request protected by this context")
	}
	ov, err := ParseMessage(msg)
	if err != nil {
		return nil, err
	}
	if c.maxUnfrag > 0 && len(msg.Payload) > c.maxUnfrag {
		return nil, newErr(KindTooLarge, "%d-byte OSCORE payload exceeds MAX_UNFRAGMENTED_SIZE %d", len(msg.Payload), c.maxUnfrag)
	}
	nonce := st.nonce
	if ov.PartialIV != nil {
		nonce = c.nonce(c.recipientID, ov.PartialIV)
	}
	aad, err := requestAAD(c.alg.ID(), st.kid, st.piv)
	if err != nil {
		return nil, &Error{Kind: KindInternal, Err: err}
	}
	pt, err := c.recipient.Open(nil, nonce, msg.Payload, aad)
	if err != nil {
		return nil, &Error{Kind: KindDecrypt, Err: err}
	}
	code, inner, payload, err := decodePlaintext(pt)
	if err != nil {
		return nil, &Error{Kind: KindDecode, Err: err}
	}
	if !isResponseCode(codes.Code(code)) {
		return nil, newErr(KindDecode, "inner code %v is not a response", codes.Code(code))
	}
	obsIdx := -1
	for i, o := range inner {
		switch o.ID {
		case OptionNumber:
			return nil, newErr(KindDecode, "nested OSCORE option (§4.1.3.7)")
		case message.Observe:
			obsIdx = i
		}
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if ov.PartialIV == nil {
		// §8.4.2: the request nonce protects at most one response.
		if st.nonceUsed {
			return nil, newErr(KindResponse, "second response without Partial IV")
		}
	}
	if obsIdx >= 0 {
		if !st.observe {
			return nil, newErr(KindResponse, "notification to a request that was not an Observe registration (§4.1.3.5.2)")
		}
		var obsVal []byte
		if ov.PartialIV != nil {
			seq := decodePIV(ov.PartialIV)
			// §7.4.1: only notifications newer than the Notification Number are processed.
			if st.haveNotif && seq <= st.notifNum {
				return nil, newErr(KindReplay, "notification Partial IV %d not above %d", seq, st.notifNum)
			}
			st.haveNotif, st.notifNum = true, seq
			obsVal = encodeUint(seq & 0xffffff)
		} else {
			st.nonceUsed = true
			obsVal = []byte{} // the notification without Partial IV is the oldest
		}
		inner[obsIdx].Value = obsVal
	} else {
		if st.final {
			return nil, newErr(KindResponse, "second response to the same request")
		}
		st.final = true
		if ov.PartialIV == nil {
			st.nonceUsed = true
		}
	}
	return &message.Message{
		Token:     msg.Token,
		MessageID: msg.MessageID,
		Type:      msg.Type,
		Code:      codes.Code(code),
		Options:   sortOptions(append(outerKept(msg.Options), inner...)),
		Payload:   payload,
	}, nil
}

// codeFETCH is 0.05 FETCH (RFC 8132), the Outer Code of Observe requests (§4.1.3.5).
const codeFETCH codes.Code = 5
