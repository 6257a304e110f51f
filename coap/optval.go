package coap

import (
	"strconv"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
)

// Format is the value of a Content-Format or Accept option (RFC 7252 §5.10.3, §5.10.4): a
// number of the CoAP Content-Formats registry (§12.3), or no option at all. The zero Format
// is "no option", so Response{Code: codes.Content, Payload: b} carries no Content-Format;
// CF(0) is present and means text/plain;charset=utf-8. Formats compare with ==.
type Format struct {
	n   uint16
	set bool
}

// CF returns the Format with Content-Format number n.
func CF(n uint16) Format { return Format{n: n, set: true} }

// Get returns the Content-Format number and whether the option is present.
func (f Format) Get() (uint16, bool) { return f.n, f.set }

// IsSet reports whether the option is present.
func (f Format) IsSet() bool { return f.set }

// String returns the number in decimal, or "none" when the option is absent.
func (f Format) String() string {
	if !f.set {
		return "none"
	}
	return strconv.Itoa(int(f.n))
}

// Age is the value of a Max-Age option (RFC 7252 §5.10.5) in seconds, or no option at all.
// The zero Age is "no option", which a recipient reads as 60 seconds; MaxAge(0) is present and
// means the response must not be reused. Ages compare with ==.
type Age struct {
	s   uint32
	set bool
}

// MaxAge returns the Age of the given number of seconds.
func MaxAge(seconds uint32) Age { return Age{s: seconds, set: true} }

// Get returns the number of seconds and whether the option is present.
func (a Age) Get() (uint32, bool) { return a.s, a.set }

// IsSet reports whether the option is present.
func (a Age) IsSet() bool { return a.set }

// Duration is the freshness the option gives: its value, or 60 seconds when it is absent
// (RFC 7252 §5.10.5 default).
func (a Age) Duration() time.Duration {
	if !a.set {
		return 60 * time.Second
	}
	return time.Duration(a.s) * time.Second
}

// String returns the seconds in decimal, or "none" when the option is absent.
func (a Age) String() string {
	if !a.set {
		return "none"
	}
	return strconv.FormatUint(uint64(a.s), 10)
}

// Observe is the Observe option of a request (RFC 7641 §2). The zero value is "no option".
type Observe uint8

// Observe options of a request.
const (
	ObserveNone       Observe = iota // no Observe option
	ObserveRegister                  // Observe: 0, register (RFC 7641 §3.1)
	ObserveDeregister                // Observe: 1 (or any other value): deregister (RFC 7641 §3.6)
)

// optFormat reads a Content-Format or Accept option; a value that does not fit the
// option's two bytes (RFC 7252 §5.10) counts as absent.
func optFormat(opts message.Options, id message.OptionID) Format {
	v := optUint(opts, id)
	if v < 0 || v > 0xffff {
		return Format{}
	}
	return CF(uint16(v))
}

// optAge reads a Max-Age option.
func optAge(opts message.Options) Age {
	v := optUint(opts, message.MaxAge)
	if v < 0 {
		return Age{}
	}
	return MaxAge(uint32(v))
}

// optObserve reads the Observe option of a request.
func optObserve(opts message.Options) Observe {
	switch optUint(opts, message.Observe) {
	case -1:
		return ObserveNone
	case 0:
		return ObserveRegister
	}
	return ObserveDeregister
}
