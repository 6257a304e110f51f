package oscore

import (
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"

	"github.com/plgd-dev/go-coap/v3/message"
)

// CoAP option numbers this package treats specially, beyond those go-coap names.
const (
	OptionEcho       message.OptionID = 252 // RFC 9175 §2.2; class E (§2.3)
	OptionRequestTag message.OptionID = 292 // RFC 9175 §3.2; class E
	OptionHopLimit   message.OptionID = 16  // RFC 8768; class U
	OptionQBlock1    message.OptionID = 19  // RFC 9177; class E and U like Block1
	OptionQBlock2    message.OptionID = 31  // RFC 9177; class E and U like Block2
	OptionEDHOC      message.OptionID = 21  // RFC 9668 §3.1; class U
)

// Class says how OSCORE protects a CoAP option (RFC 8613 §4.1, Figure 5).
type Class uint8

const (
	// ClassE options are encrypted and integrity protected (Inner).
	ClassE Class = 1 << iota
	// ClassU options are unprotected (Outer), readable by proxies.
	ClassU
)

// OptionClass returns the class of an option number: E, U, or E|U for options that may have
// both an Inner and an Outer instance. Unknown options are class E (RFC 8613 §4.1).
func OptionClass(id message.OptionID) Class {
	switch id {
	case message.URIHost, message.URIPort, OptionNumber, message.ProxyURI, message.ProxyScheme,
		OptionHopLimit, OptionEDHOC:
		return ClassU
	case message.Observe, message.MaxAge, message.Block1, message.Block2, message.Size1, message.Size2,
		message.NoResponse, OptionQBlock1, OptionQBlock2:
		return ClassE | ClassU
	}
	return ClassE
}

// splitOptions sorts the original message's options into Inner (plaintext) and Outer ones for a
// sender (RFC 8613 §4.1.1, §4.1.2). Every option with an E column goes Inner (the Outer instance of
// Max-Age, Block and Size options belongs to proxies and to the transport, which add it to the
// protected message); Observe goes both ways and is returned separately; Proxy-Uri is decomposed
// (§4.1.3.3). A nested OSCORE option is refused (§4.1.3.7).
func splitOptions(opts message.Options) (inner, outer message.Options, observe *message.Option, err error) {
	for _, o := range opts {
		switch {
		case o.ID == OptionNumber:
			return nil, nil, nil, errors.New("message already carries an OSCORE option (nested OSCORE is not supported, RFC 8613 §4.1.3.7)")
		case o.ID == message.ProxyURI:
			pin, pout, err := decomposeProxyURI(string(o.Value))
			if err != nil {
				return nil, nil, nil, err
			}
			inner = append(inner, pin...)
			outer = append(outer, pout)
		case o.ID == message.Observe:
			ob := o
			observe = &ob
		case OptionClass(o.ID)&ClassE != 0:
			inner = append(inner, o)
		default:
			outer = append(outer, o)
		}
	}
	return inner, outer, observe, nil
}

// decomposeProxyURI splits a Proxy-Uri into Inner Uri-Path/Uri-Query options and an Outer
// Proxy-Uri holding only scheme and authority (RFC 8613 §4.1.3.3, RFC 7252 §6.4).
func decomposeProxyURI(v string) (message.Options, message.Option, error) {
	u, err := url.Parse(v)
	if err != nil || !u.IsAbs() || u.Host == "" || u.Fragment != "" || u.User != nil {
		return nil, message.Option{}, fmt.Errorf("Proxy-Uri %q is not an absolute URI without fragment or userinfo", v)
	}
	var inner message.Options
	if p := u.EscapedPath(); p != "" && p != "/" {
		for _, seg := range strings.Split(strings.TrimPrefix(p, "/"), "/") {
			s, err := url.PathUnescape(seg)
			if err != nil {
				return nil, message.Option{}, fmt.Errorf("Proxy-Uri path: %w", err)
			}
			inner = append(inner, message.Option{ID: message.URIPath, Value: []byte(s)})
		}
	}
	if u.RawQuery != "" {
		for _, q := range strings.Split(u.RawQuery, "&") {
			s, err := url.PathUnescape(q)
			if err != nil {
				return nil, message.Option{}, fmt.Errorf("Proxy-Uri query: %w", err)
			}
			inner = append(inner, message.Option{ID: message.URIQuery, Value: []byte(s)})
		}
	}
	outer := message.Option{ID: message.ProxyURI, Value: []byte(strings.ToLower(u.Scheme) + "://" + u.Host)}
	return inner, outer, nil
}

// sortOptions orders options by number, keeping the order of repeated options (RFC 7252 §3.1).
func sortOptions(o message.Options) message.Options {
	sort.SliceStable(o, func(i, j int) bool { return o[i].ID < o[j].ID })
	return o
}

// encodePlaintext builds Code || Class E options || 0xff Payload (RFC 8613 §5.3, Figure 9).
func encodePlaintext(code byte, inner message.Options, payload []byte) ([]byte, error) {
	inner = sortOptions(inner)
	n, err := inner.Marshal(nil)
	if err != nil && !errors.Is(err, message.ErrTooSmall) {
		return nil, fmt.Errorf("encode inner options: %w", err)
	}
	size := 1 + n
	if len(payload) > 0 {
		size += 1 + len(payload)
	}
	b := make([]byte, size)
	b[0] = code
	if _, err := inner.Marshal(b[1 : 1+n]); err != nil {
		return nil, fmt.Errorf("encode inner options: %w", err)
	}
	if len(payload) > 0 {
		b[1+n] = 0xff
		copy(b[2+n:], payload)
	}
	return b, nil
}

var errPlaintextFormat = errors.New("malformed plaintext")

// decodePlaintext parses the plaintext of a COSE object (RFC 8613 §5.3) with the option encoding of
// RFC 7252 §3.1. It rejects the reserved nibble 15, truncated options, option numbers above 65535 and
// a payload marker followed by an empty payload.
func decodePlaintext(b []byte) (code byte, opts message.Options, payload []byte, err error) {
	if len(b) == 0 {
		return 0, nil, nil, fmt.Errorf("%w: empty", errPlaintextFormat)
	}
	code, b = b[0], b[1:]
	prev := 0
	for len(b) > 0 {
		if b[0] == 0xff {
			if len(b) == 1 {
				return 0, nil, nil, fmt.Errorf("%w: payload marker without payload", errPlaintextFormat)
			}
			return code, opts, b[1:], nil
		}
		delta, length := int(b[0]>>4), int(b[0]&0x0f)
		b = b[1:]
		if delta, b, err = optionExt(delta, b); err != nil {
			return 0, nil, nil, err
		}
		if length, b, err = optionExt(length, b); err != nil {
			return 0, nil, nil, err
		}
		if len(b) < length {
			return 0, nil, nil, fmt.Errorf("%w: option value truncated", errPlaintextFormat)
		}
		id := prev + delta
		if id > 0xffff {
			return 0, nil, nil, fmt.Errorf("%w: option number %d", errPlaintextFormat, id)
		}
		opts = append(opts, message.Option{ID: message.OptionID(id), Value: b[:length:length]})
		b = b[length:]
		prev = id
	}
	return code, opts, nil, nil
}

func optionExt(v int, b []byte) (int, []byte, error) {
	switch v {
	case 13:
		if len(b) < 1 {
			return 0, nil, fmt.Errorf("%w: option header truncated", errPlaintextFormat)
		}
		return int(b[0]) + 13, b[1:], nil
	case 14:
		if len(b) < 2 {
			return 0, nil, fmt.Errorf("%w: option header truncated", errPlaintextFormat)
		}
		return int(b[0])<<8 | int(b[1]) + 269, b[2:], nil
	case 15:
		return 0, nil, fmt.Errorf("%w: reserved option nibble 15", errPlaintextFormat)
	}
	return v, b, nil
}

// outerKept returns the options of a received OSCORE message that survive verification: Code and
// every option with an E column are discarded (RFC 8613 §8.2 step 1, §8.4 step 1); the OSCORE option
// is removed (§8.2 step 7).
func outerKept(opts message.Options) message.Options {
	var out message.Options
	for _, o := range opts {
		if o.ID != OptionNumber && OptionClass(o.ID)&ClassE == 0 {
			out = append(out, o)
		}
	}
	return out
}

func encodeUint(v uint64) []byte {
	if v == 0 {
		return []byte{}
	}
	b := encodePIV(v)
	return b
}
