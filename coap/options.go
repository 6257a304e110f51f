package coap

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// Option numbers beyond those go-coap names.
const (
	optOSCORE     message.OptionID = 9   // RFC 8613
	optEDHOC      message.OptionID = 21  // RFC 9668
	optEcho       message.OptionID = 252 // RFC 9175
	optRequestTag message.OptionID = 292 // RFC 9175
	optNoResponse message.OptionID = 258 // RFC 7967
	optQBlock1    message.OptionID = 19  // RFC 9177 (recognised, ignored)
	optHopLimit   message.OptionID = 16  // RFC 8768
)

// knownOptions are the options this endpoint recognises (RFC 7252 §5.4.1: any
// other critical option makes a request 4.02 and a response be rejected).
var knownOptions = [...]message.OptionID{
	message.IfMatch, message.URIHost, message.ETag, message.IfNoneMatch, message.Observe,
	message.URIPort, message.LocationPath, optOSCORE, message.URIPath, message.ContentFormat,
	message.MaxAge, message.URIQuery, optHopLimit, message.Accept, optEDHOC, message.LocationQuery,
	message.Block2, message.Block1, message.Size2, message.ProxyURI, message.ProxyScheme,
	message.Size1, optEcho, optNoResponse, optRequestTag,
}

func isKnownOption(id message.OptionID) bool {
	for _, k := range knownOptions {
		if k == id {
			return true
		}
	}
	return false
}

// unknownCritical returns the first unrecognised critical option (odd number,
// RFC 7252 §5.4.6), or 0.
func unknownCritical(opts message.Options) message.OptionID {
	for _, o := range opts {
		if o.ID&1 == 1 && !isKnownOption(o.ID) {
			return o.ID
		}
	}
	return 0
}

func encodeUint(v uint32) []byte {
	switch {
	case v == 0:
		return nil
	case v < 1<<8:
		return []byte{byte(v)}
	case v < 1<<16:
		return []byte{byte(v >> 8), byte(v)}
	case v < 1<<24:
		return []byte{byte(v >> 16), byte(v >> 8), byte(v)}
	}
	return []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
}

func decodeUint(b []byte) (uint32, bool) {
	if len(b) > 4 {
		return 0, false
	}
	var v uint32
	for _, c := range b {
		v = v<<8 | uint32(c)
	}
	return v, true
}

// optUint returns the value of the first option id, or -1 when absent or malformed.
func optUint(opts message.Options, id message.OptionID) int64 {
	for _, o := range opts {
		if o.ID == id {
			v, ok := decodeUint(o.Value)
			if !ok {
				return -1
			}
			return int64(v)
		}
	}
	return -1
}

func optBytes(opts message.Options, id message.OptionID) ([]byte, bool) {
	for _, o := range opts {
		if o.ID == id {
			return o.Value, true
		}
	}
	return nil, false
}

func addUint(opts message.Options, id message.OptionID, v uint32) message.Options {
	return opts.Add(message.Option{ID: id, Value: encodeUint(v)})
}

// block is a decoded Block1/Block2 option value (RFC 7959 §2.2).
type block struct {
	Num  uint32
	More bool
	SZX  uint8 // 0..6; 7 (BERT) is rejected on UDP
}

func (b block) size() int      { return 1 << (b.SZX + 4) }
func (b block) offset() int    { return int(b.Num) << (b.SZX + 4) }
func (b block) encode() []byte { return encodeUint(b.Num<<4 | boolBit(b.More)<<3 | uint32(b.SZX)) }
func (b block) String() string { return fmt.Sprintf("%d/%t/%d", b.Num, b.More, b.size()) }
func boolBit(v bool) uint32 {
	if v {
		return 1
	}
	return 0
}

var errBadBlock = errors.New("coap: malformed block option")

// getBlock returns the Block1 or Block2 option; ok false when absent.
func getBlock(opts message.Options, id message.OptionID) (block, bool, error) {
	v, present := optBytes(opts, id)
	if !present {
		return block{}, false, nil
	}
	u, ok := decodeUint(v)
	if !ok || len(v) > 3 {
		return block{}, true, errBadBlock
	}
	b := block{Num: u >> 4, More: u&8 != 0, SZX: uint8(u & 7)}
	if b.SZX == 7 { // BERT is for reliable transports only (RFC 8323 §6)
		return b, true, errBadBlock
	}
	return b, true, nil
}

// szxFor returns the largest SZX whose block size is <= n (16..1024).
func szxFor(n int) uint8 {
	var s uint8
	for s < 6 && 1<<(s+5) <= n {
		s++
	}
	return s
}

func pathOf(opts message.Options) string {
	var sb strings.Builder
	for _, o := range opts {
		if o.ID == message.URIPath {
			sb.WriteByte('/')
			sb.Write(o.Value)
		}
	}
	if sb.Len() == 0 {
		return "/"
	}
	return sb.String()
}

func queriesOf(opts message.Options) []string {
	var q []string
	for _, o := range opts {
		if o.ID == message.URIQuery {
			q = append(q, string(o.Value))
		}
	}
	return q
}

// setPath appends Uri-Path options for p ("/a/b").
func setPath(opts message.Options, p string) message.Options {
	for _, seg := range strings.Split(strings.Trim(p, "/"), "/") {
		if seg != "" {
			opts = opts.Add(message.Option{ID: message.URIPath, Value: []byte(seg)})
		}
	}
	return opts
}

func codeString(c codes.Code) string {
	return strconv.Itoa(int(c>>5)) + "." + fmt.Sprintf("%02d", int(c&0x1f))
}
