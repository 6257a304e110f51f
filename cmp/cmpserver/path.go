package cmpserver

import "strings"

// SplitPath splits the path of a CMP request under root (e.g. "/.well-known/cmp") into the
// profile label of /p/<label> and the one path segment after root or label: root,
// root/<segment>, root/p/<label> or root/p/<label>/<segment> (RFC 9482 §2.1 for CoAP, RFC 9811
// for HTTP; the segment is an operation label of RFC 9483 §6.1 or §6.2, which the binding maps
// with HTTPOperation or CoAPOperation, or "ann" on CoAP). Leading and trailing slashes after
// root are ignored. ok is false for any other shape, an empty label, or a path that merely
// starts with root's characters (root+"x").
func SplitPath(root, path string) (label, segment string, ok bool) {
	rest, found := strings.CutPrefix(path, root)
	if !found || rest != "" && rest[0] != '/' {
		return "", "", false
	}
	segs := strings.Split(strings.Trim(rest, "/"), "/")
	if len(segs) == 1 && segs[0] == "" {
		segs = nil
	}
	if len(segs) >= 2 && segs[0] == "p" {
		label, segs = segs[1], segs[2:]
		if label == "" {
			return "", "", false
		}
	}
	switch len(segs) {
	case 0:
		return label, "", true
	case 1:
		return label, segs[0], segs[0] != ""
	}
	return "", "", false
}
