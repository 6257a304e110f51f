package est

import "strings"

// SplitPath splits the path of an EST request under root (e.g. "/.well-known/est") into its
// label and operation: root/op, or root/label/op where the label is one additional path
// segment chosen by the server (RFC 7030 §3.2.2 "arbitraryLabel"; RFC 9148 §4.1 keeps the
// structure for EST-coaps, whose short operation names are the op). ok is false for any other
// shape: nothing after root, an empty segment, or more than two segments.
func SplitPath(root, p string) (label, op string, ok bool) {
	rest, found := strings.CutPrefix(p, root+"/")
	if !found || rest == "" {
		return "", "", false
	}
	segs := strings.Split(rest, "/")
	switch len(segs) {
	case 1:
		return "", segs[0], segs[0] != ""
	case 2:
		return segs[0], segs[1], segs[0] != "" && segs[1] != ""
	}
	return "", "", false
}
