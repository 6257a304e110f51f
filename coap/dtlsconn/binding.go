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
	"sort"
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
	msgs, err := tr.clientFinishedInput()
	if err != nil {
		return nil, err
	}
	h := prfHash(suite)()
	h.Write(msgs)
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
	typ    uint8
	length int
	body   []byte
	// While the fragments arrive in order (each starting within what came before: whole
	// messages, pion's MTU-sized pieces, retransmissions), bytes [0, prefix) are received and
	// have is nil. An out-of-order fragment switches to have, a mark per byte (messages are
	// small, ≤ maxHandshakeMsgLen).
	prefix   int
	have     []bool
	missing  int
	conflict bool
}

func (m *hsMessage) add(f hsFragment) {
	if m.have == nil {
		if f.Offset <= m.prefix {
			end := f.Offset + len(f.Data)
			// Bytes received before must be repeated unchanged.
			seen := min(end, m.prefix)
			if !bytes.Equal(m.body[f.Offset:seen], f.Data[:seen-f.Offset]) {
				m.conflict = true
			}
			if end > m.prefix {
				copy(m.body[m.prefix:end], f.Data[m.prefix-f.Offset:])
				m.missing -= end - m.prefix
				m.prefix = end
			}
			return
		}
		m.have = make([]bool, m.length)
		for i := range m.prefix {
			m.have[i] = true
		}
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
		m = &hsMessage{typ: f.Type, length: f.Length, body: make([]byte, f.Length), missing: f.Length}
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
	out := make([]byte, 0, t.bytes+maxTranscriptMessages*handshakeHeaderLen)
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
