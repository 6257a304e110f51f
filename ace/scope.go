package ace

import (
	"fmt"
	"strings"
)

// Scope is one entry of a token's scope: operations under one EST label.
type Scope struct {
	Label string   // "" = the default label
	Ops   []string // "enroll", "serverkeygen"; empty = both
}

// MaxScopeEntries bounds a scope string.
const MaxScopeEntries = 32

// ParseScope reads the text scope this server defines (RFC 9200 §5.8.1 leaves the format to
// the application): space-separated entries, each OP or OP/LABEL, where OP is "est" (enroll
// and serverkeygen), "enroll" or "serverkeygen", and no LABEL is the default label.
// "est/sensors enroll" grants both operations under "sensors" and enrollment under the default
// label.
func ParseScope(s string) ([]Scope, error) {
	fields := strings.Fields(s)
	if len(fields) == 0 {
		return nil, fmt.Errorf("ace: empty scope")
	}
	if len(fields) > MaxScopeEntries {
		return nil, fmt.Errorf("ace: scope of %d entries (at most %d)", len(fields), MaxScopeEntries)
	}
	var out []Scope
	for _, f := range fields {
		op, label, _ := strings.Cut(f, "/")
		var ops []string
		switch op {
		case "est":
		case "enroll", "serverkeygen":
			ops = []string{op}
		default:
			return nil, fmt.Errorf("ace: scope entry %q: unknown operation %q (want est, enroll or serverkeygen)", f, op)
		}
		if strings.Contains(label, "/") {
			return nil, fmt.Errorf("ace: scope entry %q: a label has no '/'", f)
		}
		out = append(out, Scope{Label: label, Ops: ops})
	}
	return out, nil
}

// Covers reports whether granted (a scope string) includes every entry of wanted: the AS
// issues a token only for a scope the client is registered for.
func Covers(granted []Scope, wanted []Scope) bool {
	for _, w := range wanted {
		ok := false
		for _, g := range granted {
			if g.Label != w.Label {
				continue
			}
			if len(g.Ops) == 0 || len(w.Ops) != 0 && subset(w.Ops, g.Ops) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func subset(a, b []string) bool {
	for _, x := range a {
		found := false
		for _, y := range b {
			found = found || x == y
		}
		if !found {
			return false
		}
	}
	return true
}
