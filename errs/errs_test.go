package errs

import (
	"encoding/asn1"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
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
		{"nil", nil, Internal, "internal error"},
		{"typed", New(BadRequest, "bad CSR: %s", "x"), BadRequest, "bad CSR: x"},
		{"wrapped twice", fmt.Errorf("outer: %w", Wrap(Forbidden, cause, "no")), Forbidden, "no"},
		{"pending", NewPending("abc", time.Minute), Pending, "request abc is pending"},
		{"bare kind", NotFound, NotFound, "not found"},
		{"wrapped bare kind", fmt.Errorf("label x: %w", Conflict), Conflict, "conflict"},
		{"no message", &Error{Kind: TooLarge}, TooLarge, "request too large"},
		{"unknown kind", &Error{Kind: NumKinds + 3, Msg: "secret detail"}, NumKinds + 3, "internal error"},
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

// The attack: a back end fails with a text that names its secrets, and a binding sends
// errs.Message(err) to the peer. Only the kind may leave; the text stays in err.Error() for
// the log.
func TestMessageNeverLeaksInternalText(t *testing.T) {
	const secret = "postgres://ca:hunter2@db.internal/coapca"
	cause := errors.New("dial " + secret + ": connection refused")
	for _, err := range []error{
		cause,
		Wrap(Internal, cause, "store %s unreachable", secret),
		New(Internal, "opening %s", secret),
		fmt.Errorf("issue: %w", Wrap(Internal, cause, "record %s", secret)),
		&Error{Kind: Kind(-1), Msg: secret},
		&Error{Kind: NumKinds, Msg: secret},
	} {
		if got := Message(err); got != "internal error" {
			t.Errorf("Message(%v) = %q, want only the kind", err, got)
		}
		if !strings.Contains(err.Error(), secret) {
			t.Errorf("the detail must stay in Error() for the log: %q", err.Error())
		}
	}
}

func TestIsKind(t *testing.T) {
	cause := errors.New("boom")
	for _, tt := range []struct {
		name string
		err  error
		kind Kind
		want bool
	}{
		{"new", New(NotFound, "label %q", "x"), NotFound, true},
		{"other kind", New(NotFound, "x"), Forbidden, false},
		{"wrapped", fmt.Errorf("outer: %w", Wrap(Forbidden, cause, "no")), Forbidden, true},
		{"joined", errors.Join(cause, New(Conflict, "revoked")), Conflict, true},
		{"internal typed", Wrap(Internal, cause, "x"), Internal, true},
		{"untyped is not Internal by Is", cause, Internal, false},
		{"bare kind", Pending, Pending, true},
		{"pending", NewPending("id", time.Second), Pending, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := errors.Is(tt.err, tt.kind); got != tt.want {
				t.Errorf("errors.Is(%v, %v) = %v, want %v", tt.err, tt.kind, got, tt.want)
			}
		})
	}
	// Is must not break matching of the cause itself.
	if !errors.Is(Wrap(BadRequest, cause, "x"), cause) {
		t.Error("errors.Is no longer finds the cause")
	}
}

func TestKindNamesComplete(t *testing.T) {
	seen := map[string]Kind{}
	for k := Kind(0); k < NumKinds; k++ {
		name := k.String()
		if name == "" || strings.HasPrefix(name, "kind(") {
			t.Errorf("kind %d has no name", int(k))
		}
		if other, dup := seen[name]; dup {
			t.Errorf("kinds %d and %d share the name %q", int(other), int(k), name)
		}
		seen[name] = k
		if k.Error() != name || !k.Valid() {
			t.Errorf("kind %d: Error() = %q, Valid = %v", int(k), k.Error(), k.Valid())
		}
	}
	if NumKinds.Valid() || Kind(-1).Valid() {
		t.Error("NumKinds and negative kinds are not valid kinds")
	}
	if got := NumKinds.String(); got != fmt.Sprintf("kind(%d)", int(NumKinds)) {
		t.Errorf("NumKinds.String() = %q", got)
	}
}

func TestTableComplete(t *testing.T) {
	var full [NumKinds]int
	for k := range full {
		full[k] = k + 1
	}
	if m := TableComplete(full); len(m) != 0 {
		t.Errorf("full table reported missing %v", m)
	}
	// A kind added at the end without an entry: the keyed literal leaves it zero.
	short := full
	short[NumKinds-1] = 0
	short[BadRequest] = 0
	if m := TableComplete(short); len(m) != 2 || m[0] != BadRequest || m[1] != NumKinds-1 {
		t.Errorf("missing = %v, want [%v %v]", m, BadRequest, NumKinds-1)
	}
	if m := TableComplete(short, BadRequest, NumKinds-1); len(m) != 0 {
		t.Errorf("zeroOK ignored: %v", m)
	}
}

// asn1Dump is the text encoding/asn1 gives a DER SEQUENCE where an INTEGER is expected: the
// error that reached peers as a CoAP diagnostic and a CMP statusString.
func asn1Dump(t *testing.T) error {
	t.Helper()
	var v struct{ N int }
	_, err := asn1.Unmarshal([]byte{0x30, 0x03, 0x30, 0x01, 0x00}, &v)
	var se asn1.StructuralError
	if !errors.As(err, &se) || !strings.Contains(err.Error(), "{") {
		t.Fatalf("expected an asn1 structure error with a struct dump, got %v", err)
	}
	return err
}

func TestDiagnostic(t *testing.T) {
	long := strings.Repeat("é", MaxDiagnostic) // 2 bytes each
	for _, tt := range []struct {
		name, in, want string
	}{
		{"plain", "bad CSR: no subject", "bad CSR: no subject"},
		{"asn1 dump", "asn1: structure error: tags don't match (16 vs {class:0 tag:2 length:1 isCompound:false}) {optional:false explicit:false application:false private:false defaultValue:<nil> tag:<nil> stringType:0 timeType:0 set:false omitEmpty:false} tbsCertificate @2",
			"asn1: structure error: tags don't match"},
		{"dump without parenthesis", "unexpected value {Kind:3 Name:x}", "unexpected value"},
		{"closed parenthesis kept", "bad key (P-224) {curve:x}", "bad key (P-224)"},
		{"braces that are not a dump", `label "{x}" unknown`, `label "{x}" unknown`},
		{"second line dropped", "first line\nstack: main.go:12", "first line"},
		{"invalid UTF-8", "bad \xff byte", "bad \uFFFD byte"},
		{"only a dump", "{a:1}", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := Diagnostic(tt.in); got != tt.want {
				t.Errorf("Diagnostic(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
	got := Diagnostic(long)
	if len(got) > MaxDiagnostic || !utf8.ValidString(got) || !strings.HasSuffix(got, "…") {
		t.Errorf("long input: %d bytes, valid %v: %q", len(got), utf8.ValidString(got), got)
	}

	// A parser's error that slipped into a client-visible message (as CMP's codec and the
	// authority do with %v) reaches the peer without its struct dump.
	perr := asn1Dump(t)
	for _, err := range []error{
		New(BadRequest, "malformed PKIMessage: %v", perr),
		Wrap(BadRequest, perr, "unacceptable public key: %v", perr),
	} {
		m := Message(err)
		if strings.ContainsAny(m, "{}\n") || len(m) > MaxDiagnostic || !strings.Contains(m, "asn1: structure error") {
			t.Errorf("Message = %q", m)
		}
	}
	if r := Reason(perr); strings.ContainsAny(r, "{}") || r == "" {
		t.Errorf("Reason = %q", r)
	}
	if Reason(nil) != "" {
		t.Error("Reason(nil) is not empty")
	}
	// The empty result of a message that was only a dump falls back to the kind.
	if m := Message(New(BadRequest, "{a:1}")); m != "bad request" {
		t.Errorf("Message of a dump-only message = %q", m)
	}
}

func FuzzDiagnostic(f *testing.F) {
	f.Add("asn1: structure error: tags don't match (16 vs {class:0 tag:2 length:1 isCompound:false}) {optional:false}")
	f.Add("plain")
	f.Add("a\nb")
	f.Add(strings.Repeat("日本", 200))
	f.Fuzz(func(t *testing.T, s string) {
		d := Diagnostic(s)
		if len(d) > MaxDiagnostic || !utf8.ValidString(d) || strings.ContainsAny(d, "\r\n") || goDump(d) >= 0 {
			t.Fatalf("Diagnostic(%q) = %q", s, d)
		}
		if Diagnostic(d) != d && !strings.HasSuffix(d, "…") {
			t.Fatalf("not idempotent: %q → %q → %q", s, d, Diagnostic(d))
		}
	})
}
