package edhoc

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/big"

	"github.com/fxamacker/cbor/v2"
)

// This file is the CBOR layer of the EDHOC message codec, built on github.com/fxamacker/cbor/v2.
//
// RFC 9528 §3.1: EDHOC messages are CBOR sequences (RFC 8742) of deterministically encoded
// items (RFC 8949 §4.2.1). Encoding uses the library's core deterministic options. Decoding
// reads one item at a time and refuses what a general decoder would accept: indefinite
// lengths, duplicate map keys, invalid UTF-8, nesting deeper than maxDepth, more than
// maxItems array elements or map pairs, tags and undefined (EDHOC uses neither); and, since
// the library does not check it, every decoded item is encoded again and must give back the
// very same bytes, which refuses non-shortest arguments and unsorted map keys.

const (
	maxDepth = 16  // nesting levels of one item
	maxItems = 128 // elements of one array, pairs of one map
)

var errCBOR = errors.New("malformed CBOR")

// cborModes holds the encoding and decoding modes. Both are immutable and safe for
// concurrent use; they are built once from constant options.
type cborModes struct {
	enc cbor.UserBufferEncMode
	dec cbor.DecMode
}

var wire = newCBORModes()

func newCBORModes() cborModes {
	eo := cbor.CoreDetEncOptions() // RFC 8949 §4.2.1
	// A nil []byte is an empty bstr (h''), never null: EDHOC has no optional bstr that a nil
	// could stand for, and e.g. an empty C_I or context must still be encoded.
	eo.NilContainers = cbor.NilContainerAsEmpty
	enc, err := eo.UserBufferEncMode()
	if err != nil {
		panic(fmt.Sprintf("edhoc: CBOR encoding options: %v", err)) // constant options
	}
	// undefined (simple value 23) would decode as nil and re-encode as null: refuse it plainly.
	simple, err := cbor.NewSimpleValueRegistryFromDefaults(cbor.WithRejectedSimpleValue(23))
	if err != nil {
		panic(fmt.Sprintf("edhoc: CBOR simple values: %v", err)) // constant options
	}
	dec, err := cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		MaxNestedLevels:  maxDepth,
		MaxArrayElements: maxItems,
		MaxMapPairs:      maxItems,
		IndefLength:      cbor.IndefLengthForbidden, // RFC 8949 §4.2.1: definite lengths only
		TagsMd:           cbor.TagsForbidden,
		IntDec:           cbor.IntDecConvertNone,
		MapKeyByteString: cbor.MapKeyByteStringAllowed,
		UTF8:             cbor.UTF8RejectInvalid,
		SimpleValues:     simple,
	}.DecMode()
	if err != nil {
		panic(fmt.Sprintf("edhoc: CBOR decoding options: %v", err)) // constant options
	}
	return cborModes{enc: enc, dec: dec}
}

// ---- writer ----

// appendCBOR appends the deterministic encoding of each value, i.e. a CBOR sequence. The
// values are built by this package from integers, strings, byte strings and arrays, maps and
// toarray structs of them, which always encode; an error is a bug in this package.
func appendCBOR(b []byte, vs ...any) []byte {
	buf := bytes.NewBuffer(b)
	for _, v := range vs {
		if err := wire.enc.MarshalToBuffer(v, buf); err != nil {
			panic(fmt.Sprintf("edhoc: encoding %T: %v", v, err))
		}
	}
	return buf.Bytes()
}

func appendInt(b []byte, v int64) []byte   { return appendCBOR(b, v) }
func appendBstr(b, s []byte) []byte        { return appendCBOR(b, s) }
func appendTstr(b []byte, s string) []byte { return appendCBOR(b, s) }
func encodeCBOR(v any) []byte              { return appendCBOR(nil, v) }

// isOneByteInt reports whether the single byte c is the complete CBOR encoding of an
// integer in -24..23 (RFC 9528 §3.3.2): major type 0 or 1 with the value in the initial byte.
func isOneByteInt(c byte) bool { return c <= 0x17 || (c >= 0x20 && c <= 0x37) }

// appendIDBytes encodes a connection identifier or a kid in compact form (RFC 9528 §3.3.2,
// §3.5.3.2): a one-byte string whose byte is itself a one-byte CBOR integer is sent as that
// integer, every other byte string as a bstr.
func appendIDBytes(b, id []byte) []byte {
	if len(id) == 1 && isOneByteInt(id[0]) {
		return append(b, id[0])
	}
	return appendBstr(b, id)
}

// ---- reader ----

// reader walks a CBOR sequence one item at a time.
type reader struct{ rest []byte }

func (r *reader) empty() bool { return len(r.rest) == 0 }

// peek decodes the next item without consuming it and returns it with its encoded length.
// Integers decode as uint64 (≥ 0), int64 or big.Int (< -2^63); byte strings as []byte, text
// strings as string, arrays as []any, maps as map[any]any (byte-string keys as
// cbor.ByteString), simple values as bool, nil or cbor.SimpleValue, floats as float64.
func (r *reader) peek() (v any, n int, err error) {
	if r.empty() {
		return nil, 0, fmt.Errorf("%w: unexpected end of data", errCBOR)
	}
	rest, err := wire.dec.UnmarshalFirst(r.rest, &v)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %v", errCBOR, err)
	}
	n = len(r.rest) - len(rest)
	// RFC 8949 §4.2.1 (required by RFC 9528 §3.1): shortest arguments, sorted map keys.
	// The deterministic encoding of the decoded value is unique, so it must be the input.
	if again, err := wire.enc.Marshal(v); err != nil || !bytes.Equal(again, r.rest[:n]) {
		return nil, 0, fmt.Errorf("%w: not deterministically encoded (not shortest form, or map keys not sorted)", errCBOR)
	}
	return v, n, nil
}

// next decodes and consumes the next item; raw is its encoding.
func (r *reader) next() (v any, raw []byte, err error) {
	v, n, err := r.peek()
	if err != nil {
		return nil, nil, err
	}
	raw, r.rest = r.rest[:n], r.rest[n:]
	return v, raw, nil
}

// asInt returns v as an int64 if it is a CBOR integer that fits.
func asInt(v any) (int64, bool, error) {
	switch x := v.(type) {
	case uint64:
		if x > math.MaxInt64 {
			return 0, true, fmt.Errorf("%w: integer out of range", errCBOR)
		}
		return int64(x), true, nil
	case int64:
		return x, true, nil
	case big.Int, *big.Int:
		return 0, true, fmt.Errorf("%w: integer out of range", errCBOR)
	}
	return 0, false, nil
}

func isInt(v any) bool { _, ok, _ := asInt(v); return ok }

// kind names the CBOR type of a decoded value for error messages.
func kind(v any) string {
	switch v.(type) {
	case uint64, int64, big.Int, *big.Int:
		return "integer"
	case []byte:
		return "byte string"
	case string:
		return "text string"
	case []any:
		return "array"
	case map[any]any:
		return "map"
	case bool, nil, cbor.SimpleValue:
		return "simple value"
	case float64:
		return "float"
	}
	return fmt.Sprintf("%T", v)
}

func wrongType(want string, v any) error {
	return fmt.Errorf("%w: expected %s, got %s", errCBOR, want, kind(v))
}

// intValue converts a decoded item to an int64.
func intValue(v any) (int64, error) {
	i, ok, err := asInt(v)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, wrongType("integer", v)
	}
	return i, nil
}

// readInt reads an integer that fits into an int64.
func (r *reader) readInt() (int64, error) {
	v, _, err := r.next()
	if err != nil {
		return 0, err
	}
	return intValue(v)
}

// readBstr reads a byte string.
func (r *reader) readBstr() ([]byte, error) {
	v, _, err := r.next()
	if err != nil {
		return nil, err
	}
	s, ok := v.([]byte)
	if !ok {
		return nil, wrongType("byte string", v)
	}
	return s, nil
}

// readTstr reads a text string (valid UTF-8: the decoder refuses anything else).
func (r *reader) readTstr() (string, error) {
	v, _, err := r.next()
	if err != nil {
		return "", err
	}
	s, ok := v.(string)
	if !ok {
		return "", wrongType("text string", v)
	}
	return s, nil
}

// readRaw reads one complete item of any type and returns its encoding.
func (r *reader) readRaw() ([]byte, error) {
	_, raw, err := r.next()
	return raw, err
}

// readIDBytes is the inverse of appendIDBytes and rejects the non-compact forms
// (RFC 9529 §4: "41 0e" for C_I = 0x0e is invalid).
func (r *reader) readIDBytes() ([]byte, error) {
	v, raw, err := r.next()
	if err != nil {
		return nil, err
	}
	if i, ok, err := asInt(v); ok {
		if err != nil {
			return nil, err
		}
		if i < -24 || i > 23 {
			return nil, fmt.Errorf("%w: integer identifier %d outside -24..23", errCBOR, i)
		}
		return []byte{raw[0]}, nil // deterministic: the one byte is the whole item
	}
	s, ok := v.([]byte)
	if !ok {
		return nil, fmt.Errorf("%w: identifier is neither bstr nor int", errCBOR)
	}
	// RFC 9528 §3.3.2: a one-byte identifier that is a one-byte CBOR integer is sent as it.
	if len(s) == 1 && isOneByteInt(s[0]) {
		return nil, fmt.Errorf("%w: identifier 0x%02x must be encoded as an integer", errCBOR, s[0])
	}
	return s, nil
}

// mapLookup returns the value of the integer label in a decoded map.
func mapLookup(m map[any]any, label int64) (any, bool) {
	if label >= 0 {
		v, ok := m[uint64(label)]
		return v, ok
	}
	v, ok := m[label]
	return v, ok
}
