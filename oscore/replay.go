package oscore

// SharedReplayWindow is a replay check that several processes holding the same Recipient
// Context share (a store every server instance uses). Accept atomically records seq as
// received and reports true, or reports false when seq, or a higher number, was accepted
// before by any of them; a refusal changes nothing. It is a window of one: a request overtaken
// by a later one of the same sender is refused, so a sender must not have two requests of one
// context in flight at once (CoAP's NSTART of 1, RFC 7252 §4.7, gives that).
type SharedReplayWindow interface {
	Accept(seq uint64) (bool, error)
}

// replayWindow is the sliding anti-replay window of a Recipient Context (RFC 8613 §3.2.2, §7.4;
// the RFC 4303 §3.4.3 style window, default size 32). Bit d of bits records whether sequence number
// highest-d was received. floor is the lowest acceptable number: after an Echo resynchronisation
// (Appendix B.1.2) it is the Partial IV of the verified request. Callers hold the Context lock.
type replayWindow struct {
	size    uint64
	bits    []uint64
	highest uint64
	any     bool
	floor   uint64
}

func newReplayWindow(size int) *replayWindow {
	return &replayWindow{size: uint64(size), bits: make([]uint64, (size+63)/64)}
}

// fresh reports whether seq was not received before and is inside the window.
func (w *replayWindow) fresh(seq uint64) bool {
	if seq < w.floor {
		return false
	}
	if !w.any || seq > w.highest {
		return true
	}
	d := w.highest - seq
	if d >= w.size {
		return false
	}
	return w.bits[d/64]&(1<<(d%64)) == 0
}

// mark records seq as received (call only after fresh(seq) under the same lock).
func (w *replayWindow) mark(seq uint64) {
	if !w.any {
		w.any, w.highest = true, seq
		clear(w.bits)
		w.bits[0] = 1
		return
	}
	if seq > w.highest {
		w.shift(seq - w.highest)
		w.highest = seq
		w.bits[0] |= 1
		return
	}
	d := w.highest - seq
	w.bits[d/64] |= 1 << (d % 64)
}

// shift moves every bit k positions towards older sequence numbers.
func (w *replayWindow) shift(k uint64) {
	if k >= uint64(len(w.bits))*64 {
		clear(w.bits)
		return
	}
	ws, bs := int(k/64), k%64
	for i := len(w.bits) - 1; i >= 0; i-- {
		var v uint64
		if src := i - ws; src >= 0 {
			v = w.bits[src] << bs
			if bs > 0 && src > 0 {
				v |= w.bits[src-1] >> (64 - bs)
			}
		}
		w.bits[i] = v
	}
}

// resync starts the window over with seq as its lower limit (Appendix B.1.2).
func (w *replayWindow) resync(seq uint64) {
	clear(w.bits)
	w.any, w.highest, w.floor = true, seq, seq
	w.bits[0] = 1
}
