package estserver

import (
	"slices"
	"testing"

	"coapca/authority"
	"coapca/est"
)

// TestSymKeyFormNames: the forms the authority decides about (authority.SymKeyForms, stored with
// each package by `coapca ca symkey add --forms`) are exactly the encapsulations this service
// produces (est.SymKeyEncapsulationNames), and the default excludes the TLS-only ones (RFC 8295
// §5.1: "strongly RECOMMENDED that servers always return encrypted symmetric keys"). A name
// drifting on one side would make the service refuse what the authority chose, or the reverse.
func TestSymKeyFormNames(t *testing.T) {
	got, want := slices.Sorted(slices.Values(authority.SymKeyForms())), slices.Sorted(slices.Values(est.SymKeyEncapsulationNames()))
	if !slices.Equal(got, want) {
		t.Fatalf("authority forms %v, est forms %v", got, want)
	}
	for _, f := range authority.DefaultSymKeyForms() {
		e, ok := est.SymKeyEncapsulationByName(f)
		if !ok || e == est.SymKeyPlain || e == est.SymKeySigned {
			t.Errorf("default form %q (%v): not one that encrypts for the client", f, e)
		}
	}
}
