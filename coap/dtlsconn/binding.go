package dtlsconn

// Channel bindings of a DTLS 1.2 session: RFC 5929 §3 tls-unique and RFC 9266 tls-exporter.
// Everything that derives them is in this file, because half of it leans on pion/dtls beyond
// its documented API and must be re-verified whenever pion is upgraded.
//
// What is read from pion, and why:
//
//   - tls-exporter: dtls.State.ExportKeyingMaterial("EXPORTER-Channel-Binding", nil, 32)
//     (RFC 9266 §2 on RFC 5705). Documented public API.
//   - tls-unique: RFC 5929 §3.1 asks for the verify_data of the first Finished message of the
//     handshake — on a full handshake, the client's. pion computes it and drops it, so it is
//     recomputed (RFC 5246 §7.4.9):
//     verify_data = PRF(master_secret, "client finished", Hash(handshake_messages))[0..11].
//     Its inputs come from three places:
//     1. handshake_messages: the plaintext epoch-0 handshake messages this package sees on the
//     wire in both directions (the transcript below: RFC 6347 §4.2.6, each message hashed with
//     its DTLS header as if unfragmented; the first ClientHello and the HelloVerifyRequest
//     excluded). This depends on the protocol only, not on pion.
//     2. master_secret: pion exposes it only inside the gob stream of State.MarshalBinary
//     (meant for session resumption), under the field name MasterSecret, next to
//     HandshakeComplete, CipherSuiteID and the RFC 9146 LocalConnectionID/RemoteConnectionID
//     read for Conn.ConnectionID. That field layout is pion's internal serializedState: a
//     release may rename or drop a field, and gob would then silently leave it empty. bind
//     therefore refuses a master secret that is not 48 bytes (RFC 5246 §8.1), a state that
//     is not HandshakeComplete or names another suite than the session's (Conn.TLSUnique is
//     then nil, which binding callers refuse), and TestPionStateLayout fails on any change of
//     the layout.
//     3. The PRF hash: SHA-384 for suites named …SHA384 by pion's CipherSuiteID.String(),
//     SHA-256 otherwise (RFC 5246 §5); P_hash is pion's prf.PHash.
//
// Verified against github.com/pion/dtls/v3 pionVerified: TestReferenceTLSUnique shows, for the
// same handshake, tls-unique equal to OpenSSL's SSL_get_finished() and GnuTLS's
// gnutls_session_channel_binding(GNUTLS_CB_TLS_UNIQUE), and tls-exporter equal to both
// libraries' exporters, for CCM_8, GCM-SHA256 and GCM-SHA384 suites. TestPionStateLayout pins
// that version: after a pion upgrade, run TestReferenceTLSUnique (it needs gcc, libssl-dev and
// libgnutls28-dev), check the fields above in pion's state.go, then update pionVerified.

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"encoding/gob"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"strings"

	"github.com/pion/dtls/v3"
	"github.com/pion/dtls/v3/pkg/crypto/prf"
)

const (
	// pionModule and pionVerified name the pion/dtls release this file was verified against.
	pionModule   = "github.com/pion/dtls/v3"
	pionVerified = "v3.1.15"
	// bindingFile is where a failed check points to.
	bindingFile = "coap/dtlsconn/binding.go"
	// exporterLabel is RFC 9266 §2.
	exporterLabel = "EXPORTER-Channel-Binding"
	// masterSecretLen is RFC 5246 §8.1: the master secret is always 48 bytes.
	masterSecretLen = 48
)

// exportedState is the subset of pion's gob-encoded State (State.MarshalBinary) that channel
// binding needs; gob matches fields by name.
type exportedState struct {
	HandshakeComplete  bool
	CipherSuiteID      uint16
	MasterSecret       []byte
	LocalConnectionID  []byte
	RemoteConnectionID []byte
}

// readState reads exportedState from pion's serialized state.
func readState(st *dtls.State) (exportedState, error) {
	raw, err := st.MarshalBinary()
	if err != nil {
		return exportedState{}, fmt.Errorf("dtlsconn: serialize pion state: %w", err)
	}
	return decodeState(raw, st.CipherSuiteID)
}

// decodeState decodes the fields of exportedState from the gob stream of pion's State and
// checks the ones tls-unique depends on, so that a changed layout is refused instead of
// silently giving a wrong value (gob leaves a field it does not find empty).
func decodeState(raw []byte, suite dtls.CipherSuiteID) (exportedState, error) {
	var es exportedState
	if err := gob.NewDecoder(bytes.NewReader(raw)).Decode(&es); err != nil {
		return es, fmt.Errorf("dtlsconn: decode pion state (layout changed? see %s): %w", bindingFile, err)
	}
	if !es.HandshakeComplete || len(es.MasterSecret) != masterSecretLen || es.CipherSuiteID != uint16(suite) {
		return es, fmt.Errorf("dtlsconn: pion state lacks a complete handshake, a %d-byte master secret "+
			"or suite %v (layout changed? see %s)", masterSecretLen, suite, bindingFile)
	}
	return es, nil
}

// prfHash returns the PRF hash of a DTLS 1.2 suite (RFC 5246 §5: SHA-256 unless the suite
// names SHA-384).
func prfHash(id dtls.CipherSuiteID) func() hash.Hash {
	if strings.Contains(id.String(), "SHA384") {
		return sha512.New384
	}
	return sha256.New
}

// finishedHash returns Hash(handshake_messages) for the client's Finished, from the observed
// transcript; it is all of the transcript a Conn keeps.
func finishedHash(tr *transcript, suite dtls.CipherSuiteID) ([]byte, error) {
	h := prfHash(suite)()
	if err := tr.writeClientFinishedInput(h); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

// bind derives the channel bindings once, on first use: serializing pion's state costs about
// 6 % of a handshake.
func (c *Conn) bind() {
	c.bindOnce.Do(func() {
		defer func() { c.finishedHash = nil }() // not needed any more
		dc, err := c.current()
		if err != nil {
			c.log.Warn("dtls: no connection for channel binding", "remote", c.RemoteAddr(), "err", err)
			return
		}
		st, ok := dc.ConnectionState()
		if !ok {
			c.log.Warn("dtls: no connection state for channel binding", "remote", c.RemoteAddr())
			return
		}
		exp, err := st.ExportKeyingMaterial(exporterLabel, nil, 32)
		if err != nil {
			c.log.Warn("dtls: tls-exporter unavailable", "remote", c.RemoteAddr(), "err", err)
		} else {
			c.tlsExporter = exp
		}
		es, err := readState(&st)
		if err != nil {
			c.log.Error("dtls: tls-unique unavailable", "remote", c.RemoteAddr(), "err", err)
			return
		}
		c.cid = len(es.LocalConnectionID) > 0 || len(es.RemoteConnectionID) > 0
		if c.finishedHash == nil {
			return
		}
		// RFC 5929 §3.1: tls-unique is the first Finished of the most recent handshake; on a
		// full handshake (the only kind we run: no session cache) that is the client's:
		// PRF(master_secret, "client finished", Hash(handshake_messages))[0..11]
		// (RFC 5246 §7.4.9).
		vd, err := prf.PHash(es.MasterSecret, append([]byte("client finished"), c.finishedHash...), 12, prfHash(c.suite))
		if err != nil {
			c.log.Warn("dtls: tls-unique unavailable", "remote", c.RemoteAddr(), "err", err)
			return
		}
		c.tlsUnique = vd
	})
}

// hsMessage reassembles one handshake message from its fragments.
type hsMessage struct {
	dir      uint8 // 0 sent by the client, 1 by the server
	seq      uint16
	typ      uint8
	length   int
	body     []byte
	have     []bool // per byte, made only for a message that arrives in several fragments
	missing  int
	conflict bool
}

func (m *hsMessage) add(f hsFragment) {
	if m.missing == 0 {
		// Complete: a retransmission (or an overlapping fragment) must repeat the same bytes.
		if !bytes.Equal(m.body[f.Offset:f.Offset+len(f.Data)], f.Data) {
			m.conflict = true
		}
		return
	}
	if m.have == nil {
		if f.Offset == 0 && len(f.Data) == m.length { // the usual case: one fragment
			copy(m.body, f.Data)
			m.missing = 0
			return
		}
		m.have = make([]bool, m.length)
	}
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
	msgs  []hsMessage // at most maxTranscriptMessages, looked up by (dir, seq)
	arena []byte      // the messages' bodies are carved from it
	bytes int
	err   error
}

// transcriptArena is the size of the transcript's body arena: a handshake with two
// certificate chains of a certificate or two fits in it, so that the bodies take one allocation.
const transcriptArena = 4096

func newTranscript() *transcript {
	return &transcript{msgs: make([]hsMessage, 0, 12)}
}

// body returns n zero bytes for a message body, carved from the arena.
func (t *transcript) body(n int) []byte {
	if cap(t.arena)-len(t.arena) < n {
		if n > transcriptArena/2 {
			return make([]byte, n)
		}
		t.arena = make([]byte, 0, transcriptArena)
	}
	l := len(t.arena)
	t.arena = t.arena[:l+n]
	return t.arena[l : l+n : l+n]
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

func (t *transcript) find(dir int, seq uint16) *hsMessage {
	for i := range t.msgs {
		if m := &t.msgs[i]; int(m.dir) == dir && m.seq == seq {
			return m
		}
	}
	return nil
}

func (t *transcript) addFragment(dir int, f hsFragment) error {
	if dir == 1 && f.Type == hsHelloVerifyRequest {
		return nil // never part of handshake_messages (RFC 6347 §4.2.6)
	}
	m := t.find(dir, f.Seq)
	if m == nil {
		if f.Length > maxHandshakeMsgLen || len(t.msgs) >= maxTranscriptMessages ||
			t.bytes+f.Length > maxTranscriptBytes {
			t.err = fmt.Errorf("dtlsconn: handshake transcript exceeds bounds (%d bytes)", t.bytes+f.Length)
			return t.err
		}
		t.msgs = append(t.msgs, hsMessage{dir: uint8(dir), seq: f.Seq, typ: f.Type, length: f.Length,
			body: t.body(f.Length), missing: f.Length})
		m = &t.msgs[len(t.msgs)-1]
		t.bytes += f.Length
	} else if m.typ != f.Type || m.length != f.Length {
		m.conflict = true
		return nil
	}
	m.add(f)
	return nil
}

// clientFinishedInput returns handshake_messages for the client's Finished of a
// full handshake (see writeClientFinishedInput).
func (t *transcript) clientFinishedInput() ([]byte, error) {
	var out bytes.Buffer
	if err := t.writeClientFinishedInput(&out); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// writeClientFinishedInput writes handshake_messages for the client's Finished of a
// full handshake to w (a hash): the last ClientHello, the server's flight (ServerHello …
// ServerHelloDone) and the client's Certificate, ClientKeyExchange and
// CertificateVerify, each with its DTLS header rewritten to fragment_offset 0,
// fragment_length = length (RFC 6347 §4.2.6). Nothing is written on error.
func (t *transcript) writeClientFinishedInput(w io.Writer) error {
	if t.err != nil {
		return t.err
	}
	// The ClientHello that counts is the one with the highest message_seq (the
	// one answering the HelloVerifyRequest, RFC 6347 §4.2.1).
	var ch *hsMessage
	for i := range t.msgs {
		if m := &t.msgs[i]; m.dir == 0 && m.typ == hsClientHello && (ch == nil || m.seq > ch.seq) {
			ch = m
		}
	}
	if ch == nil {
		return errors.New("dtlsconn: no ClientHello seen")
	}
	// The messages in hashing order: the ClientHello, then the server's flight by
	// message_seq, then the client's second flight by message_seq.
	var order [maxTranscriptMessages]*hsMessage
	n := 0
	order[n] = ch
	n++
	first := n
	for i := range t.msgs {
		m := &t.msgs[i]
		switch {
		case m.dir == 1 && (m.typ == hsServerHello || m.typ == hsCertificate || m.typ == hsServerKeyExchange ||
			m.typ == hsCertificateRequest || m.typ == hsServerHelloDone):
		case m.dir == 0 && m.seq > ch.seq && (m.typ == hsCertificate || m.typ == hsClientKeyExchange ||
			m.typ == hsCertificateVerify):
		default:
			continue
		}
		order[n] = m
		n++
	}
	slices.SortFunc(order[first:n], func(a, b *hsMessage) int {
		if a.dir != b.dir {
			return int(b.dir) - int(a.dir) // the server's (1) before the client's (0)
		}
		return int(a.seq) - int(b.seq)
	})
	for _, m := range order[:n] {
		if m.missing != 0 || m.conflict {
			return fmt.Errorf("dtlsconn: handshake message type %d seq %d incomplete or conflicting", m.typ, m.seq)
		}
	}
	for _, m := range order[:n] {
		var h [handshakeHeaderLen]byte
		h[0] = m.typ
		put24(h[1:4], m.length)
		binary.BigEndian.PutUint16(h[4:6], m.seq)
		put24(h[9:12], m.length)
		if _, err := w.Write(h[:]); err != nil {
			return fmt.Errorf("dtlsconn: transcript: %w", err)
		}
		if _, err := w.Write(m.body); err != nil {
			return fmt.Errorf("dtlsconn: transcript: %w", err)
		}
	}
	return nil
}

func put24(b []byte, v int) { b[0], b[1], b[2] = byte(v>>16), byte(v>>8), byte(v) }
