package oscore

import (
	"bytes"
	"errors"
	"fmt"
)

// OptionNumber is the CoAP option number of the OSCORE option (RFC 8613 §2, class U).
const OptionNumber = 9

// MaxPartialIVLen is the longest Partial IV: 5 bytes, so sequence numbers stay below 2^40 (RFC 8613 §6.1, §7.2.1).
const MaxPartialIVLen = 5

// OptionValue is the decoded OSCORE option: the compressed COSE_Encrypt0 header (RFC 8613 §6.1).
type OptionValue struct {
	PartialIV     []byte // nil when absent (n = 0)
	KID           []byte // the 'kid' parameter; meaningful when HasKID
	HasKID        bool   // flag k
	KIDContext    []byte // the 'kid context' parameter; meaningful when HasKIDContext
	HasKIDContext bool   // flag h
}

// Flag bits of the first byte (RFC 8613 §6.1, Figure 10).
const (
	flagPIVLen     = 0x07
	flagKID        = 0x08
	flagKIDContext = 0x10
	flagReserved   = 0xe0
)

var errOptionFormat = errors.New("malformed OSCORE option")

// ParseOptionValue decodes an OSCORE option value (RFC 8613 §6.1). It rejects reserved flag
// bits, reserved Partial IV lengths 6 and 7, truncated fields, a non-minimal Partial IV, trailing
// bytes without the kid flag, and the 1-byte value 0x00 (all-zero flags SHALL be sent as an empty option).
func ParseOptionValue(v []byte) (OptionValue, error) {
	var o OptionValue
	if len(v) == 0 {
		return o, nil
	}
	flags := v[0]
	if flags&flagReserved != 0 {
		return o, fmt.Errorf("%w: reserved flag bits %#02x set", errOptionFormat, flags&flagReserved)
	}
	if flags == 0 {
		return o, fmt.Errorf("%w: all-zero flags must be encoded as an empty option", errOptionFormat)
	}
	rest := v[1:]
	n := int(flags & flagPIVLen)
	if n > MaxPartialIVLen {
		return o, fmt.Errorf("%w: reserved Partial IV length %d", errOptionFormat, n)
	}
	if len(rest) < n {
		return o, fmt.Errorf("%w: Partial IV truncated", errOptionFormat)
	}
	if n > 0 {
		o.PartialIV = rest[:n:n]
		// RFC 8613 §5: leading zero bytes SHALL be removed (0 is encoded as 0x00).
		if n > 1 && o.PartialIV[0] == 0 {
			return o, fmt.Errorf("%w: Partial IV has a leading zero byte", errOptionFormat)
		}
		rest = rest[n:]
	}
	if flags&flagKIDContext != 0 {
		if len(rest) < 1 {
			return o, fmt.Errorf("%w: kid context length missing", errOptionFormat)
		}
		s := int(rest[0])
		rest = rest[1:]
		if len(rest) < s {
			return o, fmt.Errorf("%w: kid context truncated", errOptionFormat)
		}
		o.KIDContext, o.HasKIDContext = rest[:s:s], true
		rest = rest[s:]
	}
	if flags&flagKID != 0 {
		o.KID, o.HasKID = rest[:len(rest):len(rest)], true
	} else if len(rest) > 0 {
		return o, fmt.Errorf("%w: %d trailing bytes without kid flag", errOptionFormat, len(rest))
	}
	return o, nil
}

// Marshal encodes the option value (RFC 8613 §6.1); all-zero flags give the empty value.
func (o OptionValue) Marshal() ([]byte, error) {
	if len(o.PartialIV) > MaxPartialIVLen {
		return nil, fmt.Errorf("oscore: Partial IV of %d bytes", len(o.PartialIV))
	}
	if len(o.KIDContext) > 255 {
		return nil, fmt.Errorf("oscore: kid context of %d bytes (max 255)", len(o.KIDContext))
	}
	flags := byte(len(o.PartialIV))
	if o.HasKID {
		flags |= flagKID
	}
	if o.HasKIDContext {
		flags |= flagKIDContext
	}
	if flags == 0 {
		return []byte{}, nil
	}
	b := make([]byte, 0, 2+len(o.PartialIV)+len(o.KIDContext)+len(o.KID))
	b = append(b, flags)
	b = append(b, o.PartialIV...)
	if o.HasKIDContext {
		b = append(b, byte(len(o.KIDContext)))
		b = append(b, o.KIDContext...)
	}
	if o.HasKID {
		b = append(b, o.KID...)
	}
	return b, nil
}

// Equal reports whether two option values are the same.
func (o OptionValue) Equal(p OptionValue) bool {
	return bytes.Equal(o.PartialIV, p.PartialIV) && o.HasKID == p.HasKID && bytes.Equal(o.KID, p.KID) &&
		o.HasKIDContext == p.HasKIDContext && bytes.Equal(o.KIDContext, p.KIDContext)
}

// encodePIV encodes a sequence number as a Partial IV: big-endian, leading zero bytes removed,
// 0 → 0x00 (RFC 8613 §5).
func encodePIV(seq uint64) []byte {
	var b [8]byte
	for i := 7; i >= 0; i-- {
		b[i] = byte(seq)
		seq >>= 8
	}
	i := 0
	for i < 7 && b[i] == 0 {
		i++
	}
	return append([]byte(nil), b[i:]...)
}

// decodePIV returns the sequence number carried in a Partial IV.
func decodePIV(p []byte) uint64 {
	var v uint64
	for _, c := range p {
		v = v<<8 | uint64(c)
	}
	return v
}
