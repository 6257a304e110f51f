package errs

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestKindOf(t *testing.T) {
	cause := errors.New("disk on fire")
	tests := []struct {
		name string
		err  error
		kind Kind
		msg  string
	}{
		{"plain", cause, Internal, "internal error"},
		{"typed", New(BadRequest, "bad CSR: %s", "x"), BadRequest, "bad CSR: x"},
		{"wrapped twice", fmt.Errorf("outer: %w", Wrap(Forbidden, cause, "no")), Forbidden, "no"},
		{"pending", NewPending("abc", time.Minute), Pending, "request abc is pending"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := KindOf(tt.err); got != tt.kind {
				t.Errorf("KindOf = %v, want %v", got, tt.kind)
			}
			if got := Message(tt.err); got != tt.msg {
				t.Errorf("Message = %q, want %q", got, tt.msg)
			}
		})
	}
	if !errors.Is(Wrap(Internal, cause, "x"), cause) {
		t.Error("Wrap does not unwrap to its cause")
	}
}
