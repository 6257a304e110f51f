package cmpserver

import (
	"coapca/cmp"
	"coapca/errs"
)

// FailInfoForKind exposes the kind table to the external tests.
func FailInfoForKind(k errs.Kind) (cmp.FailureInfo, bool) {
	f, ok := failInfoByKind[k]
	return f, ok
}

// StatusFromError exposes statusFromError to the external tests.
var StatusFromError = statusFromError
