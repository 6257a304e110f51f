package coap

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Link is one link of an RFC 6690 link-format document.
type Link struct {
	Href  string
	Attrs []LinkAttr // in document order; a flag attribute (obs) has an empty Value and HasValue false
}

// LinkAttr is one target attribute of a link.
type LinkAttr struct {
	Name     string
	Value    string
	HasValue bool
}

// Attr returns the value of the first attribute called name.
func (l Link) Attr(name string) (string, bool) {
	for _, a := range l.Attrs {
		if a.Name == name {
			return a.Value, true
		}
	}
	return "", false
}

// Values returns the space-separated values of every attribute called name
// (RFC 6690 §3.1 relation types; RFC 7252 §7.2.1 ct lists).
func (l Link) Values(name string) []string {
	var out []string
	for _, a := range l.Attrs {
		if a.Name == name {
			out = append(out, strings.Fields(a.Value)...)
		}
	}
	return out
}

var errLinkFormat = errors.New("coap: malformed link-format")

// ParseLinkFormat parses an application/link-format (Content-Format 40)
// document (RFC 6690 §2).
func ParseLinkFormat(b []byte) ([]Link, error) {
	s := string(b)
	var links []Link
	i := 0
	skipWS := func() {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n') {
			i++
		}
	}
	for {
		skipWS()
		if i >= len(s) {
			break
		}
		if s[i] != '<' {
			return nil, fmt.Errorf("%w: expected '<' at %d", errLinkFormat, i)
		}
		end := strings.IndexByte(s[i+1:], '>')
		if end < 0 {
			return nil, fmt.Errorf("%w: unterminated URI at %d", errLinkFormat, i)
		}
		l := Link{Href: s[i+1 : i+1+end]}
		i += end + 2
		for {
			skipWS()
			if i >= len(s) || s[i] == ',' {
				break
			}
			if s[i] != ';' {
				return nil, fmt.Errorf("%w: expected ';' or ',' at %d", errLinkFormat, i)
			}
			i++
			skipWS()
			st := i
			for i < len(s) && isParmChar(s[i]) {
				i++
			}
			if i == st {
				return nil, fmt.Errorf("%w: empty parameter name at %d", errLinkFormat, i)
			}
			a := LinkAttr{Name: s[st:i]}
			skipWS()
			if i < len(s) && s[i] == '=' {
				i++
				skipWS()
				a.HasValue = true
				if i < len(s) && s[i] == '"' {
					i++
					var sb strings.Builder
					closed := false
					for i < len(s) {
						c := s[i]
						if c == '\\' && i+1 < len(s) {
							sb.WriteByte(s[i+1])
							i += 2
							continue
						}
						i++
						if c == '"' {
							closed = true
							break
						}
						sb.WriteByte(c)
					}
					if !closed {
						return nil, fmt.Errorf("%w: unterminated quoted string", errLinkFormat)
					}
					a.Value = sb.String()
				} else {
					st := i
					for i < len(s) && s[i] != ';' && s[i] != ',' && s[i] != ' ' {
						i++
					}
					a.Value = s[st:i]
				}
			}
			l.Attrs = append(l.Attrs, a)
		}
		links = append(links, l)
		if i < len(s) && s[i] == ',' {
			i++
			continue
		}
	}
	return links, nil
}

func isParmChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		strings.IndexByte("!#$&+-.^_`|~*", c) >= 0
}

// FormatLinks serialises links as application/link-format.
func FormatLinks(links []Link) []byte {
	var sb strings.Builder
	for i, l := range links {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteByte('<')
		sb.WriteString(l.Href)
		sb.WriteByte('>')
		for _, a := range l.Attrs {
			sb.WriteByte(';')
			sb.WriteString(a.Name)
			if !a.HasValue {
				continue
			}
			sb.WriteByte('=')
			if a.Value != "" && strings.IndexFunc(a.Value, func(r rune) bool {
				return !(r >= '0' && r <= '9')
			}) < 0 {
				sb.WriteString(a.Value) // ct=40
				continue
			}
			sb.WriteByte('"')
			sb.WriteString(strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(a.Value))
			sb.WriteByte('"')
		}
	}
	return []byte(sb.String())
}

// FilterLinks applies RFC 6690 §4.1 query filtering: every query "name=value"
// must match; value may end in '*' for a prefix match; "href" matches the
// link target; attributes with space-separated values (rt, if, ct) match when
// any of their values does. Queries without '=' are ignored.
func FilterLinks(links []Link, query []string) []Link {
	out := links[:0:0]
	for _, l := range links {
		if linkMatches(l, query) {
			out = append(out, l)
		}
	}
	return out
}

func linkMatches(l Link, query []string) bool {
	for _, q := range query {
		name, pat, ok := strings.Cut(q, "=")
		if !ok {
			continue
		}
		var vals []string
		if name == "href" {
			vals = []string{l.Href}
		} else {
			vals = l.Values(name)
			if v, ok := l.Attr(name); ok && len(vals) == 0 {
				vals = []string{v}
			}
		}
		if !anyMatch(vals, pat) {
			return false
		}
	}
	return true
}

func anyMatch(vals []string, pat string) bool {
	prefix, isPrefix := strings.CutSuffix(pat, "*")
	for _, v := range vals {
		if isPrefix && strings.HasPrefix(v, prefix) || !isPrefix && v == pat {
			return true
		}
	}
	return false
}

// resourceLinks builds the /.well-known/core links of the table (RFC 6690 §4).
func resourceLinks(rs []Resource) []Link {
	var links []Link
	for _, r := range rs {
		if r.Hidden {
			continue
		}
		l := Link{Href: r.Path}
		if len(r.RT) > 0 {
			l.Attrs = append(l.Attrs, LinkAttr{Name: "rt", Value: strings.Join(r.RT, " "), HasValue: true})
		}
		if len(r.IF) > 0 {
			l.Attrs = append(l.Attrs, LinkAttr{Name: "if", Value: strings.Join(r.IF, " "), HasValue: true})
		}
		if len(r.CT) > 0 {
			cts := make([]string, len(r.CT))
			for i, c := range r.CT {
				cts[i] = strconv.Itoa(c)
			}
			l.Attrs = append(l.Attrs, LinkAttr{Name: "ct", Value: strings.Join(cts, " "), HasValue: true})
		}
		if r.Title != "" {
			l.Attrs = append(l.Attrs, LinkAttr{Name: "title", Value: r.Title, HasValue: true})
		}
		if r.Observable {
			l.Attrs = append(l.Attrs, LinkAttr{Name: "obs"})
		}
		if r.OSCORE {
			l.Attrs = append(l.Attrs, LinkAttr{Name: "osc"})
		}
		links = append(links, l)
	}
	return links
}
