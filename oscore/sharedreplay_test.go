package oscore

import (
	"errors"
	"sync"
	"testing"

	"github.com/plgd-dev/go-coap/v3/message"
)

// memShared is a SharedReplayWindow in memory: what a store shared by instances does.
type memShared struct {
	mu   sync.Mutex
	next uint64 // lowest acceptable sequence number
	fail error
}

func (m *memShared) Accept(seq uint64) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return false, m.fail
	}
	if seq < m.next {
		return false, nil
	}
	m.next = seq + 1
	return true, nil
}

// TestSharedReplayAcrossContexts is the replay of a request accepted by one holder of a
// context (instance A) to another holder (instance B), whose own window never saw it: with a
// shared replay window, B refuses it (RFC 8613 §7.4), the refusal does not hold back the
// sender's next request, and a failing shared window refuses rather than accepts.
func TestSharedReplayAcrossContexts(t *testing.T) {
	shared := &memShared{}
	cli, a := pair(t, func(_, sp *Params) { sp.SharedReplay = shared })
	_, b := pair(t, func(_, sp *Params) { sp.SharedReplay = shared })
	send := func() *message.Message {
		t.Helper()
		prot, _, err := cli.ProtectRequest(get("x"))
		if err != nil {
			t.Fatal(err)
		}
		return prot
	}
	first := send()
	tests := []struct {
		name    string
		at      *Context
		msg     *message.Message
		wantErr error
	}{
		{"accepted by A", a, first, nil},
		{"replayed to B", b, first, ErrReplay},
		{"replayed to A", a, first, ErrReplay},
		{"the sender's next request at B", b, send(), nil},
	}
	for _, tt := range tests {
		_, _, err := tt.at.UnprotectRequest(tt.msg)
		if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.wantErr)
		}
	}
	shared.fail = errors.New("database down")
	if _, _, err := b.UnprotectRequest(send()); err == nil || KindOf(err) != KindInternal {
		t.Errorf("with the shared window failing: %v, want an internal error (refused)", err)
	}
}
