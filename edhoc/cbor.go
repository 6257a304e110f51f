package edhoc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"
)

// This file holds a small, strict CBOR reader and writer for the EDHOC message layer.
//
// RFC 9528 §3.1: EDHOC messages are CBOR sequences of deterministically encoded items
// (RFC 8949 §4.2.1). The reader therefore rejects what a general decoder would accept:
// indefinite lengths, non-shortest integer and length arguments, reserved additional
// information values, unsorted or duplicate map keys and invalid UTF-8 text.

const (
	majUint  = 0
	majNint  = 1
	majBstr  = 2
	majTstr  = 3
	majArray = 4
	majMap   = 5
	majTag   = 6
	majOther = 7

	maxDepth = 16
)

var errCBOR = errors.New("malformed CBOR")

// reader walks a CBOR sequence.
type reader struct {
	b   []byte
	off int
}

func (r *reader) empty() bool { return r.off >= len(r.b) }

// peekMajor returns the major type of the next item, or -1 at the end.
func (r *reader) peekMajor() int {
	if r.empty() {
		return -1
	}
	return int(r.b[r.off] >> 5)
}

// head reads an item head; it rejects indefinite lengths and non-shortest arguments.
func (r *reader) head() (major int, arg uint64, err error) {
	if r.empty() {
		return 0, 0, fmt.Errorf("%w: unexpected end of data", errCBOR)
	}
	ib := r.b[r.off]
	major, ai := int(ib>>5), ib&0x1f
	r.off++
	switch {
	case ai < 24:
		return major, uint64(ai), nil
	case ai <= 27:
		n := 1 << (ai - 24)
		if len(r.b)-r.off < n {
			return 0, 0, fmt.Errorf("%w: truncated argument", errCBOR)
		}
		p := r.b[r.off : r.off+n]
		r.off += n
		switch n {
		case 1:
			arg = uint64(p[0])
		case 2:
			arg = uint64(binary.BigEndian.Uint16(p))
		case 4:
			arg = uint64(binary.BigEndian.Uint32(p))
		case 8:
			arg = binary.BigEndian.Uint64(p)
		}
		if major == majOther {
			// Simple values and floats: the argument is the value itself.
			if n == 1 && arg < 32 {
				return 0, 0, fmt.Errorf("%w: invalid simple value encoding", errCBOR)
			}
			return major, arg, nil
		}
		// RFC 8949 §4.2.1: arguments as short as possible.
		if (n == 1 && arg < 24) || (n == 2 && arg <= 0xff) || (n == 4 && arg <= 0xffff) || (n == 8 && arg <= 0xffffffff) {
			return 0, 0, fmt.Errorf("%w: non-deterministic (not shortest) encoding", errCBOR)
		}
		return major, arg, nil
	case ai == 31:
		return 0, 0, fmt.Errorf("%w: indefinite-length encoding not allowed", errCBOR)
	default:
		return 0, 0, fmt.Errorf("%w: reserved additional information %d", errCBOR, ai)
	}
}

// readInt reads a major type 0 or 1 integer that fits into an int64.
func (r *reader) readInt() (int64, error) {
	m, arg, err := r.head()
	if err != nil {
		return 0, err
	}
	if m != majUint && m != majNint {
		return 0, fmt.Errorf("%w: expected integer, got major type %d", errCBOR, m)
	}
	if arg > 1<<62 {
		return 0, fmt.Errorf("%w: integer out of range", errCBOR)
	}
	if m == majNint {
		return -1 - int64(arg), nil
	}
	return int64(arg), nil
}

func (r *reader) readString(want int) ([]byte, error) {
	m, arg, err := r.head()
	if err != nil {
		return nil, err
	}
	if m != want {
		return nil, fmt.Errorf("%w: expected major type %d, got %d", errCBOR, want, m)
	}
	if arg > uint64(len(r.b)-r.off) {
		return nil, fmt.Errorf("%w: string longer than data", errCBOR)
	}
	s := r.b[r.off : r.off+int(arg)]
	r.off += int(arg)
	if m == majTstr && !utf8.Valid(s) {
		return nil, fmt.Errorf("%w: invalid UTF-8 in text string", errCBOR)
	}
	return s, nil
}

func (r *reader) readBstr() ([]byte, error) { return r.readString(majBstr) }
func (r *reader) readTstr() ([]byte, error) { return r.readString(majTstr) }

// readArray reads an array head and returns the number of elements.
func (r *reader) readArray() (int, error) {
	m, arg, err := r.head()
	if err != nil {
		return 0, err
	}
	if m != majArray {
		return 0, fmt.Errorf("%w: expected array, got major type %d", errCBOR, m)
	}
	if arg > uint64(len(r.b)-r.off) {
		return 0, fmt.Errorf("%w: array longer than data", errCBOR)
	}
	return int(arg), nil
}

// readRaw reads one complete, well-formed, deterministically encoded item and returns its bytes.
func (r *reader) readRaw() ([]byte, error) {
	start := r.off
	if err := r.skip(0); err != nil {
		return nil, err
	}
	return r.b[start:r.off], nil
}

func (r *reader) skip(depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("%w: nesting too deep", errCBOR)
	}
	m, arg, err := r.head()
	if err != nil {
		return err
	}
	switch m {
	case majUint, majNint:
		return nil
	case majBstr, majTstr:
		if arg > uint64(len(r.b)-r.off) {
			return fmt.Errorf("%w: string longer than data", errCBOR)
		}
		s := r.b[r.off : r.off+int(arg)]
		r.off += int(arg)
		if m == majTstr && !utf8.Valid(s) {
			return fmt.Errorf("%w: invalid UTF-8 in text string", errCBOR)
		}
		return nil
	case majArray:
		if arg > uint64(len(r.b)-r.off) {
			return fmt.Errorf("%w: array longer than data", errCBOR)
		}
		for i := uint64(0); i < arg; i++ {
			if err := r.skip(depth + 1); err != nil {
				return err
			}
		}
		return nil
	case majMap:
		if arg > uint64(len(r.b)-r.off)/2 {
			return fmt.Errorf("%w: map longer than data", errCBOR)
		}
		var prev []byte
		for i := uint64(0); i < arg; i++ {
			ks := r.off
			if err := r.skip(depth + 1); err != nil {
				return err
			}
			key := r.b[ks:r.off]
			// RFC 8949 §4.2.1: keys sorted bytewise lexicographically, no duplicates.
			if prev != nil && bytes.Compare(prev, key) >= 0 {
				return fmt.Errorf("%w: map keys not in deterministic order or duplicated", errCBOR)
			}
			prev = key
			if err := r.skip(depth + 1); err != nil {
				return err
			}
		}
		return nil
	case majTag:
		return r.skip(depth + 1)
	default: // major 7: simple values and floats, already consumed by head
		return nil
	}
}

// readMap reads a map and returns its entries as raw key/value encodings in order.
func (r *reader) readMap() ([][2][]byte, error) {
	start := r.off
	if err := r.skip(0); err != nil {
		return nil, err
	}
	sub := &reader{b: r.b[start:r.off]}
	m, n, err := sub.head()
	if err != nil {
		return nil, err
	}
	if m != majMap {
		r.off = start
		return nil, fmt.Errorf("%w: expected map, got major type %d", errCBOR, m)
	}
	out := make([][2][]byte, 0, n)
	for i := uint64(0); i < n; i++ {
		k, err := sub.readRaw()
		if err != nil {
			return nil, err
		}
		v, err := sub.readRaw()
		if err != nil {
			return nil, err
		}
		out = append(out, [2][]byte{k, v})
	}
	return out, nil
}

// ---- writer helpers (deterministic encoding, RFC 8949 §4.2.1) ----

func appendHead(b []byte, major int, arg uint64) []byte {
	mb := byte(major << 5)
	switch {
	case arg < 24:
		return append(b, mb|byte(arg))
	case arg <= 0xff:
		return append(b, mb|24, byte(arg))
	case arg <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, mb|25), uint16(arg))
	case arg <= 0xffffffff:
		return binary.BigEndian.AppendUint32(append(b, mb|26), uint32(arg))
	default:
		return binary.BigEndian.AppendUint64(append(b, mb|27), arg)
	}
}

func appendInt(b []byte, v int64) []byte {
	if v < 0 {
		return appendHead(b, majNint, uint64(-1-v))
	}
	return appendHead(b, majUint, uint64(v))
}

func appendBstr(b, s []byte) []byte {
	return append(appendHead(b, majBstr, uint64(len(s))), s...)
}

func appendTstr(b []byte, s string) []byte {
	return append(appendHead(b, majTstr, uint64(len(s))), s...)
}

// isOneByteInt reports whether the single byte c is the complete CBOR encoding of an
// integer in -24..23 (RFC 9528 §3.3.2).
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

// readIDBytes is the inverse of appendIDBytes and rejects the non-compact forms
// (RFC 9529 §4: "41 0e" for C_I = 0x0e is invalid).
func (r *reader) readIDBytes() ([]byte, error) {
	switch r.peekMajor() {
	case majUint, majNint:
		start := r.off
		v, err := r.readInt()
		if err != nil {
			return nil, err
		}
		if v < -24 || v > 23 {
			return nil, fmt.Errorf("%w: integer identifier %d outside -24..23", errCBOR, v)
		}
		return []byte{r.b[start]}, nil
	case majBstr:
		s, err := r.readBstr()
		if err != nil {
			return nil, err
		}
		if len(s) == 1 && isOneByteInt(s[0]) {
			return nil, fmt.Errorf("%w: identifier 0x%02x must be encoded as an integer", errCBOR, s[0])
		}
		return s, nil
	default:
		return nil, fmt.Errorf("%w: identifier is neither bstr nor int", errCBOR)
	}
}
