package authority

import "testing"

// TestParseEvent: only well-formed events with canonical serials pass; anything another
// database client could NOTIFY on the channel otherwise is dropped.
func TestParseEvent(t *testing.T) {
	tests := []struct {
		raw  string
		want Event
		ok   bool
	}{
		{"", Event{Kind: EventResync}, true},
		{"revoked 1a2b", Event{Kind: EventRevoked, Serial: "1a2b"}, true},
		{"accepted inst-1 ff sensors", Event{Kind: EventAccepted, Origin: "inst-1", Serial: "ff", Label: "sensors"}, true},
		{"accepted inst-1 ff ", Event{Kind: EventAccepted, Origin: "inst-1", Serial: "ff"}, true},
		{"revoked", Event{}, false},
		{"revoked 1A2B", Event{}, false},
		{"revoked 0x1a", Event{}, false},
		{"revoked zz", Event{}, false},
		{"revoked 1a extra", Event{}, false},
		{"accepted inst-1 ff", Event{}, false},
		{"accepted  ff sensors", Event{}, false},
		{"issued 1a", Event{}, false},
	}
	for _, tt := range tests {
		got, ok := parseEvent(tt.raw)
		if ok != tt.ok || got != tt.want {
			t.Errorf("parseEvent(%q) = %+v, %v; want %+v, %v", tt.raw, got, ok, tt.want, tt.ok)
		}
	}
}
