package cmpserver

import (
	"coapca/errs"
)

// FailInfoTableMissing lists the kinds missing from the kind table (Pending maps to no
// failure on purpose).
func FailInfoTableMissing() []errs.Kind { return errs.TableComplete(failInfoByKind, errs.Pending) }

// StatusFromError exposes statusFromError to the external tests.
var StatusFromError = statusFromError
