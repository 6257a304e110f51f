package coap

import (
	"crypto/hmac"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// Address validation on plain UDP (RFC 9175 §2.4 item 3, RFC 7252 §11.3): a source address
// that has not proven it receives what is sent to it gets no more than a small answer — a
// 4.01 Unauthorized carrying an Echo option (RFC 9175 §2.3) — and holds no state. The Echo
// value is stateless: a timestamp and a MAC over it and the claimed address, under a key only
// this server knows, so that a challenge costs the server no memory and a spoofer, who never
// sees the challenge, cannot answer it.

const (
	echoTimeLen = 4
	echoMACLen  = 8
	echoLen     = echoTimeLen + echoMACLen // RFC 9175 §2.2.1: at most 40 bytes
	// maxAmplification is the factor by which an answer to an address that has not proven
	// itself may exceed the request (RFC 9175 §2.4 item 3 recommends 3, as QUIC does).
	maxAmplification = 3
)

// echoMinter makes and checks Echo values bound to one source address.
type echoMinter struct {
	key    [32]byte
	window time.Duration
	now    func() time.Time
}

func newEchoMinter(window time.Duration) *echoMinter {
	e := &echoMinter{window: window, now: time.Now}
	_, _ = crand.Read(e.key[:])
	return e
}

func (e *echoMinter) mac(t uint32, ap netip.AddrPort) []byte {
	h := hmac.New(sha256.New, e.key[:])
	var b [4 + 16 + 2]byte
	binary.BigEndian.PutUint32(b[:4], t)
	a16 := ap.Addr().Unmap().As16()
	copy(b[4:20], a16[:])
	binary.BigEndian.PutUint16(b[20:], ap.Port())
	h.Write(b[:])
	return h.Sum(nil)[:echoMACLen]
}

// value returns a fresh Echo value for ap.
func (e *echoMinter) value(ap netip.AddrPort) []byte {
	t := uint32(e.now().Unix())
	out := make([]byte, echoTimeLen, echoLen)
	binary.BigEndian.PutUint32(out, t)
	return append(out, e.mac(t, ap)...)
}

// valid reports whether v is an Echo value this server gave to ap within the window.
func (e *echoMinter) valid(v []byte, ap netip.AddrPort) bool {
	if len(v) != echoLen {
		return false
	}
	t := binary.BigEndian.Uint32(v[:echoTimeLen])
	now := e.now().Unix()
	age := now - int64(t)
	if age < 0 || time.Duration(age)*time.Second > e.window {
		return false
	}
	return hmac.Equal(v[echoTimeLen:], e.mac(t, ap))
}

// encodedLen is the size of m on the wire.
func encodedLen(m *message.Message) int {
	n, err := coder.DefaultCoder.Size(*m)
	if err != nil {
		return 0
	}
	return n
}

// echoOf returns the request's Echo option value, if any.
func echoOf(opts message.Options) ([]byte, bool) {
	return optBytes(opts, optEcho)
}

// challenge builds the 4.01 + Echo answer (RFC 9175 §2.3) to the request in b (header and
// token already read); nil when even the challenge would be more than maxAmplification times
// the request (a request that small carries no URI a legitimate client would send).
func (e *echoMinter) challenge(typ message.Type, mid uint16, token []byte, reqLen int, ap netip.AddrPort) []byte {
	m := &message.Message{Code: codes.Unauthorized, Token: token, MessageID: int32(mid),
		Options: message.Options{{ID: optEcho, Value: e.value(ap)}}}
	if typ == message.Confirmable {
		m.Type = message.Acknowledgement
	} else {
		m.Type = message.NonConfirmable
	}
	b := encode(m)
	if b == nil || len(b) > maxAmplification*reqLen {
		return nil
	}
	return b
}
