package dtlsconn

import (
	"encoding/binary"
	"errors"
)

// DTLS 1.2 record and handshake framing (RFC 6347 §4.1, §4.2.2), as far as the
// transcript sniffer and the demultiplexer need it.
const (
	recordHeaderLen    = 13 // type(1) version(2) epoch(2) sequence_number(6) length(2)
	handshakeHeaderLen = 12 // msg_type(1) length(3) message_seq(2) fragment_offset(3) fragment_length(3)

	contentTypeHandshake = 22
	contentTypeCID       = 25 // RFC 9146 tls12_cid

	hsClientHello        = 1
	hsServerHello        = 2
	hsHelloVerifyRequest = 3
	hsCertificate        = 11
	hsServerKeyExchange  = 12
	hsCertificateRequest = 13
	hsServerHelloDone    = 14
	hsCertificateVerify  = 15
	hsClientKeyExchange  = 16
	hsFinished           = 20

	// Bounds on what one handshake may make us keep (certificate chains included).
	maxTranscriptBytes    = 64 << 10
	maxTranscriptMessages = 32
	maxHandshakeMsgLen    = 32 << 10
)

var (
	errShortRecord    = errors.New("dtls: truncated record")
	errShortHandshake = errors.New("dtls: truncated handshake fragment")
	errBadFragment    = errors.New("dtls: fragment outside message")
)

// recordHeader is the parsed DTLSPlaintext header.
type recordHeader struct {
	Type    uint8
	Version uint16
	Epoch   uint16
	Seq     uint64
	Length  int
}

// hsFragment is one parsed handshake fragment header plus its bytes.
type hsFragment struct {
	Type   uint8
	Length int
	Seq    uint16
	Offset int
	Data   []byte
}

// splitRecords calls fn for each record of a datagram (RFC 6347 §4.1.1:
// several records may share one datagram). Records of type tls12_cid have a
// variable-length header that this parser cannot delimit without knowing the
// CID length; they are never plaintext handshake records, so parsing stops
// there.
func splitRecords(b []byte, fn func(h recordHeader, body []byte) error) error {
	for len(b) > 0 {
		if len(b) < recordHeaderLen {
			return errShortRecord
		}
		h := recordHeader{
			Type:    b[0],
			Version: binary.BigEndian.Uint16(b[1:3]),
			Epoch:   binary.BigEndian.Uint16(b[3:5]),
			Seq:     uint64(b[5])<<40 | uint64(b[6])<<32 | uint64(binary.BigEndian.Uint32(b[7:11])),
			Length:  int(binary.BigEndian.Uint16(b[11:13])),
		}
		if h.Type == contentTypeCID {
			return nil
		}
		if len(b) < recordHeaderLen+h.Length {
			return errShortRecord
		}
		if err := fn(h, b[recordHeaderLen:recordHeaderLen+h.Length]); err != nil {
			return err
		}
		b = b[recordHeaderLen+h.Length:]
	}
	return nil
}

// splitFragments parses the handshake fragments of one epoch-0 handshake record
// (RFC 6347 §4.2.2 handshake header).
func splitFragments(b []byte, fn func(f hsFragment) error) error {
	for len(b) > 0 {
		if len(b) < handshakeHeaderLen {
			return errShortHandshake
		}
		f := hsFragment{
			Type:   b[0],
			Length: int(uint24(b[1:4])),
			Seq:    binary.BigEndian.Uint16(b[4:6]),
			Offset: int(uint24(b[6:9])),
		}
		fl := int(uint24(b[9:12]))
		if len(b) < handshakeHeaderLen+fl {
			return errShortHandshake
		}
		if f.Offset > f.Length || fl > f.Length-f.Offset {
			return errBadFragment
		}
		f.Data = b[handshakeHeaderLen : handshakeHeaderLen+fl]
		if err := fn(f); err != nil {
			return err
		}
		b = b[handshakeHeaderLen+fl:]
	}
	return nil
}

func uint24(b []byte) uint32 { return uint32(b[0])<<16 | uint32(b[1])<<8 | uint32(b[2]) }

// firstClientHello reports whether datagram b starts with an epoch-0 handshake
// record carrying the first fragment of a ClientHello, and whether that
// ClientHello carries a (non-empty) cookie (RFC 6347 §4.2.1). It is the only
// kind of datagram that may create state for an unknown source address.
func firstClientHello(b []byte) (ok, hasCookie bool) {
	if len(b) < recordHeaderLen+handshakeHeaderLen || b[0] != contentTypeHandshake ||
		binary.BigEndian.Uint16(b[3:5]) != 0 {
		return false, false
	}
	if v := binary.BigEndian.Uint16(b[1:3]); v != 0xfefd && v != 0xfeff { // DTLS 1.2 / 1.0 record version
		return false, false
	}
	rl := int(binary.BigEndian.Uint16(b[11:13]))
	if len(b) < recordHeaderLen+rl || rl < handshakeHeaderLen {
		return false, false
	}
	h := b[recordHeaderLen : recordHeaderLen+rl]
	if h[0] != hsClientHello || uint24(h[6:9]) != 0 {
		return false, false
	}
	fl := int(uint24(h[9:12]))
	if fl > len(h)-handshakeHeaderLen || fl > int(uint24(h[1:4])) {
		return false, false
	}
	body := h[handshakeHeaderLen : handshakeHeaderLen+fl]
	// client_version(2) random(32) session_id<0..32> cookie<0..255>
	if len(body) < 2+32+1 {
		return true, false
	}
	sl := int(body[34])
	if len(body) < 35+sl+1 {
		return true, false
	}
	return true, body[35+sl] != 0
}

// pionInboundBuffer is the datagram buffer pion/dtls v3 reads into; a longer
// datagram would be truncated and its records lost.
const pionInboundBuffer = 8192

// splitDatagram cuts a datagram longer than limit into chunks of whole records
// (RFC 6347 §4.1.1 lets records be processed independently). A single record
// longer than limit, or an unparsable tail, stays in one chunk (which pion then
// drops as it would any undecodable record, without ending the session).
func splitDatagram(b []byte, limit int) [][]byte {
	if len(b) <= limit {
		return [][]byte{b}
	}
	var out [][]byte
	start, pos := 0, 0
	for pos < len(b) {
		if len(b)-pos < recordHeaderLen || b[pos] == contentTypeCID {
			break // CID records: length field position unknown here; keep the rest whole
		}
		end := pos + recordHeaderLen + int(binary.BigEndian.Uint16(b[pos+11:pos+13]))
		if end > len(b) {
			break
		}
		if end-start > limit && pos > start {
			out = append(out, b[start:pos])
			start = pos
		}
		pos = end
	}
	return append(out, b[start:])
}
