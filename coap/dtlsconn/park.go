package dtlsconn

import (
	"bytes"
	"errors"
	"fmt"
	"net"

	"github.com/pion/dtls/v3"
)

// ErrBusy is returned by Park when the session cannot be parked now: records are queued,
// the peer has not yet sent a record after the handshake, a new handshake from its
// address is under way, or the session is already parked or closed.
var ErrBusy = errors.New("dtlsconn: session busy")

// Park releases what an idle established session holds beyond its keys: pion's
// connection, its goroutines and buffers. The session stays established: pion's state
// (keys, epochs, sequence numbers, replay cutoff) is exported, and the next datagram from
// the peer, or a Write, resumes it transparently; wake is then called (in a new goroutine)
// so that the caller starts reading again. wake is also called when a parked session ends
// (idle timeout, listener closed): Read then returns the error.
//
// Park must not be called while a Read is in progress (the reader parks, then returns).
// Sessions of Dial (client side) cannot be parked.
//
// Safety of the export (pion's ResumeWithOptions contract, and RFC 6347 §4.1: a sequence
// number is never reused within an epoch, which AEAD nonces rely on): the virtual socket
// is frozen before the snapshot, so no record of the parked connection leaves after it
// (its close_notify is dropped), and the snapshot is resumed at most once (the session
// forgets it when resuming). Records the peer sent before parking are refused after it:
// the resumed connection rejects every sequence number below the last one seen (replay
// protection, RFC 6347 §4.1.2.6). A peer that has not sent a record after the handshake
// may still be waiting for our Finished (RFC 6347 §4.2.4 retransmission), which a resumed
// connection could not repeat: such a session is not parked (ErrBusy).
func (c *Conn) Park(wake func()) error {
	s := c.s
	if s == nil {
		return fmt.Errorf("dtlsconn: park a client session: %w", errors.ErrUnsupported)
	}
	if !c.heard.Load() {
		return ErrBusy
	}
	c.bind() // the channel bindings need pion's state: derive them while it is there
	s.mu.Lock()
	defer s.mu.Unlock()
	dc := s.dc
	if dc == nil {
		return ErrBusy
	}
	l := s.l
	l.mu.Lock()
	pc := s.pc.Load()
	if s.phase != phaseEstablished || s.next != nil || pc == nil || len(pc.in) > 0 {
		l.mu.Unlock()
		return ErrBusy
	}
	s.phase = phaseParked // from now on, datagrams are held (dispatch) until resumed
	l.parkedNow++
	s.pc.Store(nil)
	l.mu.Unlock()

	pc.freeze()
	st, ok := dc.ConnectionState()
	pc.detached.Store(true)
	_ = dc.Close() // its close_notify goes nowhere; pion's goroutines end with pc
	if !ok {
		go s.shutdown()
		return errors.New("dtlsconn: park: no connection state")
	}
	st.PeerCertificates = nil // the accepted chain is in Conn.PeerCertificates
	// Serialized, the state is a few hundred bytes; pion's State struct is several KB.
	raw, err := st.MarshalBinary()
	if err != nil {
		go s.shutdown()
		return fmt.Errorf("dtlsconn: park: %w", err)
	}
	s.state, s.dc, s.wake = bytes.Clone(raw), nil, wake // exact size: the encoder's buffer has spare room
	l.parked.Add(1)
	return nil
}

// active returns the session's pion connection, resuming it when parked.
func (s *session) active() (*dtls.Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dc != nil {
		return s.dc, nil
	}
	if s.state == nil {
		return nil, net.ErrClosed
	}
	return s.resumeLocked()
}

// resumeAndWake resumes a parked session for the datagrams dispatch holds for it.
func (s *session) resumeAndWake() {
	if _, err := s.active(); err != nil {
		s.l.log.Debug("dtls: resume", "remote", s.addr, "err", err)
	}
}

// resumeLocked (s.mu held, s.state set) gives the parked session a new pion connection on
// its exported state, hands it the held datagrams and calls the reader's wake.
func (s *session) resumeLocked() (*dtls.Conn, error) {
	l := s.l
	raw := s.state
	s.state = nil // used once (see Park)
	st := &dtls.State{}
	if err := st.UnmarshalBinary(raw); err != nil {
		go s.shutdown()
		return nil, fmt.Errorf("dtlsconn: resume: %w", err)
	}
	l.mu.Lock()
	if s.phase != phaseParked {
		l.mu.Unlock()
		return nil, net.ErrClosed
	}
	addr := s.addr
	l.mu.Unlock()
	pc := newSessionPC(s, addr, nil)
	dc, err := dtls.ResumeWithOptions(st, pc, pc.raddr, l.resumeOpts...)
	if err == nil {
		// The state is established: pion starts its loops and returns at once.
		err = dc.HandshakeContext(l.ctx)
	}
	if err != nil {
		go s.shutdown()
		return nil, fmt.Errorf("dtlsconn: resume: %w", err)
	}
	l.mu.Lock()
	if s.phase != phaseParked { // ended meanwhile
		l.mu.Unlock()
		pc.freeze()
		_ = dc.Close()
		return nil, net.ErrClosed
	}
	s.phase = phaseEstablished
	l.parkedNow--
	s.pc.Store(pc)
	held := s.held
	s.held, s.resuming = nil, false
	l.mu.Unlock()
	s.dc = dc
	for _, d := range held {
		pc.push(d.b, d.from)
	}
	l.resumed.Add(1)
	if w := s.wake; w != nil {
		s.wake = nil
		go w()
	}
	return dc, nil
}
