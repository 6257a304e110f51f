package archtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"testing"
)

// module is the module path; package paths below are relative to it.
const module = "coapca"

// layer is a package's place in the house (DESIGN.md, "The shape" and "Suggested layout").
type layer uint8

const (
	layerNone        layer = iota
	layerNeutral           // helpers any package may use; they import nothing of coapca but each other
	layerProtocol          // protocol libraries, usable on their own
	layerStore             // the store interface and its back ends
	layerAuthority         // policy, issuance, revocation
	layerService           // transport-independent services (EST, CMP)
	layerBinding           // front doors: wire ↔ service call
	layerClient            // the client library (the device side)
	layerTestKit           // helpers for tests only
	layerComposition       // configuration, data directory, wiring, the binary
	numLayers
)

var layerNames = [numLayers]string{"none", "neutral helper", "protocol library", "store", "authority",
	"service", "binding", "client", "test kit", "composition"}

func (l layer) String() string { return layerNames[l] }

// rank orders the layers for "dependencies point down": a package may import packages of a
// lower or equal rank. Bindings, the client and the test kits share a rank (none of them may
// import another's package by that rule alone; the rules below say more).
var rank = [numLayers]int{
	layerNone: 99, layerNeutral: 0, layerProtocol: 1, layerStore: 2, layerAuthority: 3, layerService: 4,
	layerBinding: 5, layerClient: 5, layerTestKit: 5, layerComposition: 6,
}

// layers puts every package of the module in a layer. A package missing here fails the test:
// decide where it belongs (and which rules apply) when you add it.
var layers = map[string]layer{
	"errs":             layerNeutral, // typed errors; every binding maps them to its own codes
	"kms":              layerNeutral, // key URIs → crypto.Signer, for the CA and the client alike
	"kms/pkcs11":       layerNeutral, // PKCS#11 (RFC 7512) keys; the token code only with -tags pkcs11
	"internal/pemfile": layerNeutral, // PEM certificate files

	"coap":             layerProtocol,
	"coap/dtlsconn":    layerProtocol,
	"coap/oscorelayer": layerProtocol,
	"oscore":           layerProtocol,
	"ace":              layerProtocol, // ACE framework (RFC 9200) and its OSCORE profile (RFC 9203): tokens, /authz-info, /token
	"edhoc":            layerProtocol,
	"cmp":              layerProtocol, // the CMP codec: PKIMessage ASN.1 and protection
	"est/cms":          layerProtocol, // CMS for server-generated keys, an EST wire format

	"store":                 layerStore,
	"store/sqlite":          layerStore,
	"store/postgres":        layerStore,
	"store/postgres/pgtest": layerStore, // a fresh database per test on the cluster of COAPCA_TEST_POSTGRES
	"store/storetest":       layerStore, // the conformance suite of the back ends

	"authority": layerAuthority,

	"est":           layerProtocol, // the EST wire formats (PKCS#7, CsrAttrs, multipart-core, CSR attributes)
	"est/estserver": layerService,  // the EST service
	"cmp/cmpserver": layerService,

	"est/estcoap":       layerBinding,
	"est/esthttp":       layerBinding,
	"cmp/cmpcoap":       layerBinding,
	"cmp/cmphttp":       layerBinding,
	"cmp/cmpproxy":      layerBinding, // the CMP registrar: CoAP front door relaying to an RFC 9811 upstream
	"registrar":         layerBinding,
	"client":            layerClient,
	"est/esttest":       layerTestKit,
	"coap/coaptest":     layerTestKit,
	"internal/testpki":  layerTestKit,
	"internal/testtool": layerTestKit,
	"internal/archtest": layerTestKit,

	"internal/config":          layerComposition,
	"internal/datadir":         layerComposition,
	"internal/metrics":         layerComposition,
	"internal/gcpace":          layerComposition, // GC pacing of the serve process
	"internal/server":          layerComposition, // the composition root: wires front doors, services, authority and store
	"internal/cli":             layerComposition,
	"internal/bench":           layerComposition, // `coapca bench`: runs a server and its clients
	"internal/bench/plot":      layerComposition, // draws docs/benchmarks from the JSON of `coapca bench`
	"internal/bench/tracewait": layerComposition, // reads a server's runtime trace: CPUs used, where goroutines block
	"cmd/coapca":               layerComposition,
}

// compositionRoot is the one package that wires a store back end into the house; the command
// line (internal/cli) and the benchmarks (internal/bench) get the house from it.
const compositionRoot = "internal/server"

// clientVia are the server-side packages the client may reach, each with the reason; the
// client rule does not follow imports through them. None today: the EST wire formats (est)
// are a protocol package of their own, apart from the EST service (est/estserver).
var clientVia = map[string]string{}

// pkg is what the rules need of `go list -json`.
type pkg struct {
	ImportPath   string
	Imports      []string
	TestImports  []string
	XTestImports []string
}

// violation is one broken rule.
type violation struct {
	rule, pkg, detail string
}

func (v violation) String() string { return v.pkg + ": " + v.detail + "\n\trule: " + v.rule }

// The rules, each with why (DESIGN.md).
const (
	ruleClassified = "every package has a layer in internal/archtest (so that the rules below apply to it)"
	ruleDown       = "dependencies point down: cli → bindings → services → authority → store; a package never imports one above it (DESIGN.md)"
	ruleSealed     = "the core is sealed: outside authority and store/*, nothing imports store; the authority's own records, filters and list operations are the way in (DESIGN.md: one store, decisions in the authority)"
	ruleBackend    = "a store back end is opened only by the composition root (" + compositionRoot + ") and by tests; everything else gets an authority"
	ruleProtocol   = "protocol libraries are usable on their own: they import nothing of the server, only each other and the neutral helpers (DESIGN.md: coap/, oscore/, edhoc/ and the wire-format code import nothing of the server)"
	ruleBinding    = "a front door only translates: a binding never touches the store and takes no configuration or data directory (DESIGN.md, rule 4)"
	ruleClient     = "the client mirrors the server but does not contain it: the client library depends on no server package (authority, store, services, bindings, composition)"
	ruleNoFiles    = "the authority reads no files: the composition layer reads trust-store PEM and secret files and passes plain values (authority.Policy)"
	ruleTestKit    = "test kits are for tests: no production package imports one"
	ruleNeutral    = "neutral helpers import nothing of coapca but each other, so that every layer may use them"
)

func rel(path string) (string, bool) {
	if path == module {
		return "", true
	}
	r, ok := strings.CutPrefix(path, module+"/")
	return r, ok
}

func isStore(p string) bool { return p == "store" || strings.HasPrefix(p, "store/") }

// check applies every rule to the module's packages (import paths relative to the module).
func check(pkgs map[string]pkg) []violation {
	var out []violation
	add := func(rule, p, format string, args ...any) {
		out = append(out, violation{rule: rule, pkg: p, detail: fmt.Sprintf(format, args...)})
	}
	names := make([]string, 0, len(pkgs))
	for n := range pkgs {
		names = append(names, n)
	}
	sort.Strings(names)
	local := func(imps []string) []string {
		var r []string
		for _, i := range imps {
			if p, ok := rel(i); ok {
				r = append(r, p)
			}
		}
		return r
	}
	for _, n := range names {
		p := pkgs[n]
		l, ok := layers[n]
		if !ok {
			add(ruleClassified, n, "package has no layer")
			continue
		}
		imps := local(p.Imports)
		for _, i := range imps {
			il, ok := layers[i]
			if !ok {
				continue // reported for i itself
			}
			if rank[il] > rank[l] {
				add(ruleDown, n, "%s (%s) imports %s (%s)", n, l, i, il)
			}
			if i == "store" && !isStore(n) && n != "authority" {
				add(ruleSealed, n, "imports store")
			}
			if isStore(i) && i != "store" && !isStore(n) && n != compositionRoot {
				add(ruleBackend, n, "imports %s", i)
			}
			if il == layerTestKit && l != layerTestKit {
				add(ruleTestKit, n, "imports %s outside its tests", i)
			}
			if l == layerBinding && (isStore(i) || il == layerComposition) {
				add(ruleBinding, n, "imports %s", i)
			}
		}
		// Tests may open a store back end to build a real authority, but they too reach the
		// store's records only through the authority.
		for _, i := range local(append(slices.Clone(p.TestImports), p.XTestImports...)) {
			if i == "store" && !isStore(n) && n != "authority" {
				add(ruleSealed, n, "a test imports store")
			}
		}
		if n == "authority" {
			for _, i := range p.Imports {
				if i == "os" || i == "io/fs" || i == "io/ioutil" {
					add(ruleNoFiles, n, "imports %s", i)
				}
			}
		}
		switch l {
		case layerProtocol, layerNeutral:
			// Transitively: a protocol library that imports a helper that imports the server
			// is no better.
			for _, d := range reach(pkgs, n, nil) {
				dl := layers[d]
				switch {
				case l == layerProtocol && dl != layerProtocol && dl != layerNeutral:
					add(ruleProtocol, n, "depends on %s (%s)%s", d, dl, via(pkgs, n, d, nil))
				case l == layerNeutral && dl != layerNeutral:
					add(ruleNeutral, n, "depends on %s (%s)%s", d, dl, via(pkgs, n, d, nil))
				}
			}
		case layerClient:
			for _, d := range reach(pkgs, n, clientVia) {
				switch layers[d] {
				case layerStore, layerAuthority, layerService, layerBinding, layerComposition, layerTestKit:
					if _, ok := clientVia[d]; ok {
						continue
					}
					add(ruleClient, n, "depends on %s (%s)%s", d, layers[d], via(pkgs, n, d, clientVia))
				}
			}
		}
	}
	return out
}

// reach returns the module packages n depends on (non-test imports, transitively), not
// following imports through the packages in stop (which are themselves included).
func reach(pkgs map[string]pkg, n string, stop map[string]string) []string {
	seen := map[string]bool{n: true}
	queue := []string{n}
	var out []string
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		if _, ok := stop[cur]; ok && cur != n {
			continue
		}
		for _, i := range pkgs[cur].Imports {
			r, ok := rel(i)
			if !ok || seen[r] {
				continue
			}
			seen[r] = true
			out = append(out, r)
			queue = append(queue, r)
		}
	}
	sort.Strings(out)
	return out
}

// via describes the import path from n to d, for the message.
func via(pkgs map[string]pkg, n, d string, stop map[string]string) string {
	prev := map[string]string{n: ""}
	queue := []string{n}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		if cur == d {
			break
		}
		if _, ok := stop[cur]; ok && cur != n {
			continue
		}
		for _, i := range pkgs[cur].Imports {
			r, ok := rel(i)
			if _, seen := prev[r]; !ok || seen {
				continue
			}
			prev[r] = cur
			queue = append(queue, r)
		}
	}
	var path []string
	for cur := d; cur != ""; cur = prev[cur] {
		path = append([]string{cur}, path...)
	}
	if len(path) <= 2 {
		return ""
	}
	return " via " + strings.Join(path, " → ")
}

// listModule reads the module's packages with `go list -json ./...`.
func listModule(t *testing.T) map[string]pkg {
	t.Helper()
	gocmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the import rules need the go command: %v", err)
	}
	cmd := exec.Command(gocmd, "list", "-e", "-json=ImportPath,Imports,TestImports,XTestImports", module+"/...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	pkgs := map[string]pkg{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		if r, ok := rel(p.ImportPath); ok {
			pkgs[r] = p
		}
	}
	if len(pkgs) == 0 {
		t.Fatal("go list found no package")
	}
	return pkgs
}

// TestImportRules checks the module as it is.
func TestImportRules(t *testing.T) {
	pkgs := listModule(t)
	for _, v := range check(pkgs) {
		t.Error(v)
	}
	// The rules must have something to bite on: the packages they name exist.
	for _, n := range []string{"authority", "store", "client", "coap", "cmp", "est/estcoap", compositionRoot} {
		if _, ok := pkgs[n]; !ok {
			t.Errorf("package %s not found: is the module path still %q?", n, module)
		}
	}
}

// TestRulesCatchViolations feeds check a graph with one deliberate violation per rule on top of
// the real module, and expects exactly that rule to fire for that package.
func TestRulesCatchViolations(t *testing.T) {
	real := listModule(t)
	full := func(p string) string { return module + "/" + p }
	tests := []struct {
		name     string
		mutate   func(m map[string]pkg)
		rule     string
		pkg      string
		contains string
	}{
		{"protocol library imports the authority", func(m map[string]pkg) { addImport(m, "coap", full("authority")) },
			ruleProtocol, "coap", "authority"},
		{"protocol library reaches the server through a helper", func(m map[string]pkg) { addImport(m, "errs", full("authority")) },
			ruleProtocol, "cmp", "via cmp → errs → authority"},
		{"cmp codec imports the CMP service", func(m map[string]pkg) { addImport(m, "cmp", full("cmp/cmpserver")) },
			ruleProtocol, "cmp", "cmp/cmpserver"},
		{"oscore imports a test kit", func(m map[string]pkg) { addImport(m, "oscore", full("est/esttest")) },
			ruleTestKit, "oscore", "est/esttest"},
		{"binding imports store", func(m map[string]pkg) { addImport(m, "est/estcoap", full("store")) },
			ruleBinding, "est/estcoap", "store"},
		{"binding imports a store back end", func(m map[string]pkg) { addImport(m, "cmp/cmphttp", full("store/sqlite")) },
			ruleBackend, "cmp/cmphttp", "store/sqlite"},
		{"binding reads the configuration", func(m map[string]pkg) { addImport(m, "cmp/cmpcoap", full("internal/config")) },
			ruleBinding, "cmp/cmpcoap", "internal/config"},
		{"service imports store", func(m map[string]pkg) { addImport(m, "cmp/cmpserver", full("store")) },
			ruleSealed, "cmp/cmpserver", "store"},
		{"composition imports store", func(m map[string]pkg) { addImport(m, "internal/cli", full("store")) },
			ruleSealed, "internal/cli", "store"},
		{"configuration opens a back end", func(m map[string]pkg) { addImport(m, "internal/config", full("store/sqlite")) },
			ruleBackend, "internal/config", "store/sqlite"},
		{"the command line opens a back end", func(m map[string]pkg) { addImport(m, "internal/cli", full("store/sqlite")) },
			ruleBackend, "internal/cli", "store/sqlite"},
		{"the composition root imports store", func(m map[string]pkg) { addImport(m, "internal/server", full("store")) },
			ruleSealed, "internal/server", "store"},
		{"a test outside the core imports store", func(m map[string]pkg) {
			p := m["client"]
			p.XTestImports = append(slices.Clone(p.XTestImports), full("store"))
			m["client"] = p
		}, ruleSealed, "client", "a test imports store"},
		{"client imports the authority", func(m map[string]pkg) { addImport(m, "client", full("authority")) },
			ruleClient, "client", "authority"},
		{"client reaches the CMP service through the cmp codec", func(m map[string]pkg) { addImport(m, "cmp", full("cmp/cmpserver")) },
			ruleClient, "client", "via client → cmp → cmp/cmpserver"},
		{"client reaches the authority through the EST wire formats", func(m map[string]pkg) { addImport(m, "est", full("authority")) },
			ruleClient, "client", "via client → est → authority"},
		{"client imports the CLI", func(m map[string]pkg) { addImport(m, "client", full("internal/cli")) },
			ruleClient, "client", "internal/cli"},
		{"authority imports a service", func(m map[string]pkg) { addImport(m, "authority", full("est/estserver")) },
			ruleDown, "authority", "imports est"},
		{"authority reads files", func(m map[string]pkg) { addImport(m, "authority", "os") },
			ruleNoFiles, "authority", "os"},
		{"neutral helper imports the authority", func(m map[string]pkg) { addImport(m, "errs", full("authority")) },
			ruleNeutral, "errs", "authority"},
		{"unclassified package", func(m map[string]pkg) { m["newpkg"] = pkg{ImportPath: full("newpkg")} },
			ruleClassified, "newpkg", "no layer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := map[string]pkg{}
			for k, v := range real {
				m[k] = v
			}
			tt.mutate(m)
			vs := check(m)
			if !hasViolation(vs, tt.rule, tt.pkg, tt.contains) {
				t.Errorf("rule %q did not fire for %s (%q); got:\n%v", tt.rule, tt.pkg, tt.contains, vs)
			}
		})
	}
}

func addImport(m map[string]pkg, p, imp string) {
	q := m[p]
	q.Imports = append(slices.Clone(q.Imports), imp)
	m[p] = q
}

func hasViolation(vs []violation, rule, p, contains string) bool {
	return slices.ContainsFunc(vs, func(v violation) bool {
		return v.rule == rule && v.pkg == p && strings.Contains(v.detail, contains)
	})
}
