package dtlsconn

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
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

// hsMessage reassembles one handshake message from its fragments.
type hsMessage struct {
	typ      uint8
	length   int
	body     []byte
	have     []bool // per byte; messages are small (≤ maxHandshakeMsgLen)
	missing  int
	conflict bool
}

func (m *hsMessage) add(f hsFragment) {
	for i, c := range f.Data {
		p := f.Offset + i
		if m.have[p] {
			if m.body[p] != c {
				m.conflict = true
			}
			continue
		}
		m.have[p] = true
		m.body[p] = c
		m.missing--
	}
}

// transcript records the plaintext epoch-0 handshake messages of one DTLS 1.2
// handshake as seen on the wire, in both directions, so that the Finished
// verify_data can be recomputed (RFC 5246 §7.4.9 with RFC 6347 §4.2.6: each
// message hashed with its 12-byte DTLS header as if unfragmented, the initial
// ClientHello and the HelloVerifyRequest excluded).
type transcript struct {
	msgs  [2]map[uint16]*hsMessage // [0] sent by client, [1] sent by server
	bytes int
	err   error
}

func newTranscript() *transcript {
	return &transcript{msgs: [2]map[uint16]*hsMessage{{}, {}}}
}

// addDatagram feeds one datagram; fromClient tells its direction. Errors in the
// datagram are ignored (the DTLS stack drops such records too); exceeding the
// transcript bounds poisons the transcript.
func (t *transcript) addDatagram(b []byte, fromClient bool) {
	if t.err != nil {
		return
	}
	dir := 1
	if fromClient {
		dir = 0
	}
	_ = splitRecords(b, func(h recordHeader, body []byte) error {
		if h.Type != contentTypeHandshake || h.Epoch != 0 {
			return nil
		}
		return splitFragments(body, func(f hsFragment) error {
			return t.addFragment(dir, f)
		})
	})
}

func (t *transcript) addFragment(dir int, f hsFragment) error {
	m := t.msgs[dir][f.Seq]
	if m == nil {
		if f.Length > maxHandshakeMsgLen || len(t.msgs[0])+len(t.msgs[1]) >= maxTranscriptMessages ||
			t.bytes+f.Length > maxTranscriptBytes {
			t.err = fmt.Errorf("dtlsconn: handshake transcript exceeds bounds (%d bytes)", t.bytes+f.Length)
			return t.err
		}
		m = &hsMessage{typ: f.Type, length: f.Length, body: make([]byte, f.Length),
			have: make([]bool, f.Length), missing: f.Length}
		t.msgs[dir][f.Seq] = m
		t.bytes += f.Length
	} else if m.typ != f.Type || m.length != f.Length {
		m.conflict = true
		return nil
	}
	m.add(f)
	return nil
}

// clientFinishedInput returns handshake_messages for the client's Finished of a
// full handshake: the last ClientHello, the server's flight (ServerHello …
// ServerHelloDone) and the client's Certificate, ClientKeyExchange and
// CertificateVerify, each with its DTLS header rewritten to fragment_offset 0,
// fragment_length = length (RFC 6347 §4.2.6).
func (t *transcript) clientFinishedInput() ([]byte, error) {
	if t.err != nil {
		return nil, t.err
	}
	// The ClientHello that counts is the one with the highest message_seq (the
	// one answering the HelloVerifyRequest, RFC 6347 §4.2.1).
	chSeq, found := uint16(0), false
	for seq, m := range t.msgs[0] {
		if m.typ == hsClientHello && (!found || seq > chSeq) {
			chSeq, found = seq, true
		}
	}
	if !found {
		return nil, errors.New("dtlsconn: no ClientHello seen")
	}
	var out []byte
	appendMsg := func(seq uint16, m *hsMessage) error {
		if m.missing != 0 || m.conflict {
			return fmt.Errorf("dtlsconn: handshake message type %d seq %d incomplete or conflicting", m.typ, seq)
		}
		var h [handshakeHeaderLen]byte
		h[0] = m.typ
		put24(h[1:4], m.length)
		binary.BigEndian.PutUint16(h[4:6], seq)
		put24(h[9:12], m.length)
		out = append(append(out, h[:]...), m.body...)
		return nil
	}
	if err := appendMsg(chSeq, t.msgs[0][chSeq]); err != nil {
		return nil, err
	}
	for _, part := range []struct {
		dir   int
		types map[uint8]bool
		after int
	}{
		{1, map[uint8]bool{hsServerHello: true, hsCertificate: true, hsServerKeyExchange: true,
			hsCertificateRequest: true, hsServerHelloDone: true}, -1},
		{0, map[uint8]bool{hsCertificate: true, hsClientKeyExchange: true, hsCertificateVerify: true}, int(chSeq)},
	} {
		seqs := make([]int, 0, len(t.msgs[part.dir]))
		for seq, m := range t.msgs[part.dir] {
			if part.types[m.typ] && int(seq) > part.after {
				seqs = append(seqs, int(seq))
			}
		}
		sort.Ints(seqs)
		for _, s := range seqs {
			if err := appendMsg(uint16(s), t.msgs[part.dir][uint16(s)]); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

func put24(b []byte, v int) { b[0], b[1], b[2] = byte(v>>16), byte(v>>8), byte(v) }

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
