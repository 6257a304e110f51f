package est

import (
	"errors"
	"fmt"

	"github.com/fxamacker/cbor/v2"
)

// Part is one representation of a multipart-core collection (RFC 8710 §2).
type Part struct {
	ContentFormat uint16
	// Body is the representation; nil with Null set encodes CBOR null (a part whose
	// representation is omitted, RFC 8710 §2).
	Body []byte
	Null bool
}

// maxMultipartParts bounds the array a peer can make us allocate.
const maxMultipartParts = 64

// EncodeMultipart serializes parts as application/multipart-core (Content-Format 62):
// a CBOR array alternating Content-Format (uint) and representation (bstr), RFC 8710 §2.
// The encoding is the preferred (shortest) CBOR form, as in RFC 9148 §4.3.
func EncodeMultipart(parts []Part) ([]byte, error) {
	arr := make([]any, 0, 2*len(parts))
	for _, p := range parts {
		arr = append(arr, uint64(p.ContentFormat))
		if p.Null {
			arr = append(arr, nil)
		} else {
			b := p.Body
			if b == nil {
				b = []byte{}
			}
			arr = append(arr, b)
		}
	}
	out, err := multipartEnc.Marshal(arr)
	if err != nil {
		return nil, fmt.Errorf("multipart-core: encode: %w", err)
	}
	return out, nil
}

// multipartEnc is the core deterministic encoding (RFC 8949 §4.2.1), the one EDHOC and OSCORE
// use too; for this array of uints and byte strings it is the preferred (shortest) form.
var multipartEnc = func() cbor.EncMode {
	em, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err) // static options; cannot fail
	}
	return em
}()

var multipartDec = func() cbor.DecMode {
	dm, err := cbor.DecOptions{
		MaxArrayElements: 2 * maxMultipartParts,
		MaxNestedLevels:  4,
	}.DecMode()
	if err != nil {
		panic(err) // static options; cannot fail
	}
	return dm
}()

// ParseMultipart parses application/multipart-core (RFC 8710 §2). It rejects anything but
// an even-length array of (uint ≤ 65535, bstr / null) pairs, and trailing bytes.
func ParseMultipart(data []byte) ([]Part, error) {
	if len(data) == 0 {
		return nil, errors.New("multipart-core: empty payload")
	}
	var items []cbor.RawMessage
	rest, err := multipartDec.UnmarshalFirst(data, &items)
	if err != nil {
		return nil, fmt.Errorf("multipart-core: not a CBOR array: %w", err)
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("multipart-core: %d trailing bytes after the array", len(rest))
	}
	if len(items)%2 != 0 {
		return nil, fmt.Errorf("multipart-core: odd number of items (%d): every representation needs a Content-Format", len(items))
	}
	parts := make([]Part, 0, len(items)/2)
	for i := 0; i < len(items); i += 2 {
		ctRaw, body := items[i], items[i+1]
		if len(ctRaw) == 0 || ctRaw[0]>>5 != 0 {
			return nil, fmt.Errorf("multipart-core: item %d: Content-Format is not an unsigned integer", i)
		}
		var ct uint64
		if err := multipartDec.Unmarshal(ctRaw, &ct); err != nil {
			return nil, fmt.Errorf("multipart-core: item %d: %w", i, err)
		}
		if ct > 0xffff {
			return nil, fmt.Errorf("multipart-core: item %d: Content-Format %d out of range", i, ct)
		}
		p := Part{ContentFormat: uint16(ct)}
		switch {
		case len(body) == 1 && body[0] == 0xf6:
			p.Null = true
		case len(body) > 0 && body[0]>>5 == 2:
			var b []byte
			if err := multipartDec.Unmarshal(body, &b); err != nil {
				return nil, fmt.Errorf("multipart-core: item %d: %w", i+1, err)
			}
			if b == nil {
				b = []byte{}
			}
			p.Body = b
		default:
			return nil, fmt.Errorf("multipart-core: item %d: representation is not a byte string or null", i+1)
		}
		parts = append(parts, p)
	}
	return parts, nil
}
