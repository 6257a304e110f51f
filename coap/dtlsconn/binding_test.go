package dtlsconn

import (
	"bytes"
	"encoding/gob"
	"os/exec"
	"reflect"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/pion/dtls/v3"
)

// reverify is what a failed pin check tells the engineer who upgraded pion.
const reverify = "re-verify channel bindings in " + bindingFile + " against OpenSSL/GnuTLS " +
	"(go test -run TestReferenceTLSUnique ./coap/dtlsconn, with gcc, libssl-dev and libgnutls28-dev), " +
	"then update the pinned version pionVerified"

// pionVersion returns the pion/dtls version this package is built with ("v3.1.15", or
// "v3.1.15 => path version" when replaced).
func pionVersion(t *testing.T) string {
	t.Helper()
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == pionModule {
				if d.Replace != nil {
					return d.Version + " => " + d.Replace.Path + " " + d.Replace.Version
				}
				return d.Version
			}
		}
	}
	// Test binaries carry no dependency list: ask the go command, which resolved the build.
	gocmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("cannot tell the %s version (no go command: %v); %s", pionModule, err, reverify)
	}
	out, err := exec.Command(gocmd, "list", "-m", "-f",
		"{{.Version}}{{with .Replace}} => {{.Path}} {{.Version}}{{end}}", pionModule).CombinedOutput()
	if err != nil {
		t.Fatalf("go list -m %s: %v\n%s", pionModule, err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestPionStateLayout pins the pion/dtls release the channel bindings were verified against
// and proves, on a real handshake, that pion's serialized State still carries every field the
// derivation in binding.go reads, with the type it reads it as and a plausible value. A pion
// upgrade that changes the layout (gob would silently leave a renamed field empty) fails here
// with a pointer to that file, instead of yielding wrong tls-unique values in production.
func TestPionStateLayout(t *testing.T) {
	if v := pionVersion(t); v != pionVerified {
		t.Fatalf("%s is %s, but the channel bindings were verified against %s: %s", pionModule, v, pionVerified, reverify)
	}
	p := testPKI(t)
	scfg := serverConfig(p)
	scfg.ConnectionID = true
	l := listen(t, scfg)
	acc := serve(t, l)
	ccfg := clientConfig(p)
	ccfg.ConnectionID = true
	c, err := dialOnly(t, l, ccfg, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := acceptOne(t, acc)

	states := map[string]exportedState{}
	for _, side := range []struct {
		name string
		conn *Conn
	}{{"client", c}, {"server", s}} {
		st, ok := side.conn.live().ConnectionState()
		if !ok {
			t.Fatalf("%s: pion gives no connection state; %s", side.name, reverify)
		}
		raw, err := st.MarshalBinary()
		if err != nil {
			t.Fatalf("%s: pion State.MarshalBinary: %v; %s", side.name, err, reverify)
		}
		// Each field alone: gob fails to decode into a struct none of whose fields is in the
		// stream, and on a field whose type changed.
		for _, f := range reflect.VisibleFields(reflect.TypeFor[exportedState]()) {
			one := reflect.New(reflect.StructOf([]reflect.StructField{{Name: f.Name, Type: f.Type}}))
			if err := gob.NewDecoder(bytes.NewReader(raw)).Decode(one.Interface()); err != nil {
				t.Fatalf("%s: pion's serialized State has no field %s of type %v (%v); %s", side.name, f.Name, f.Type, err, reverify)
			}
			// Connection IDs are checked in pairs below: our client only sends one (RFC 9146 §3).
			if one.Elem().Field(0).IsZero() && !strings.HasSuffix(f.Name, "ConnectionID") {
				t.Fatalf("%s: pion's serialized State carries %s empty after a handshake; %s", side.name, f.Name, reverify)
			}
		}
		es, err := readState(&st)
		if err != nil {
			t.Fatalf("%s: %v; %s", side.name, err, reverify)
		}
		states[side.name] = es
	}
	cs, ss := states["client"], states["server"]
	if !bytes.Equal(cs.MasterSecret, ss.MasterSecret) {
		t.Fatalf("client and server read different master secrets from pion's state; %s", reverify)
	}
	if len(ss.LocalConnectionID) != cidLength || !bytes.Equal(cs.LocalConnectionID, ss.RemoteConnectionID) ||
		!bytes.Equal(cs.RemoteConnectionID, ss.LocalConnectionID) {
		t.Fatalf("connection IDs read from pion's state do not pair up (client %x/%x, server %x/%x); %s",
			cs.LocalConnectionID, cs.RemoteConnectionID, ss.LocalConnectionID, ss.RemoteConnectionID, reverify)
	}
	if len(s.TLSUnique()) != 12 || !bytes.Equal(c.TLSUnique(), s.TLSUnique()) || len(s.TLSExporter()) != 32 ||
		!bytes.Equal(c.TLSExporter(), s.TLSExporter()) {
		t.Fatalf("channel bindings disagree: tls-unique %x / %x, tls-exporter %x / %x; %s",
			c.TLSUnique(), s.TLSUnique(), c.TLSExporter(), s.TLSExporter(), reverify)
	}
}

// TestDecodeStateRefusesChangedLayout is the attack of a pion upgrade that changes its
// serialized State: gob decodes what it can and leaves the rest empty, and the old code then
// derived a tls-unique from an empty master secret — a wrong binding every peer would refuse,
// or worse, one nobody checks. Each changed layout must be refused.
func TestDecodeStateRefusesChangedLayout(t *testing.T) {
	const suite = dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8
	ms := bytes.Repeat([]byte{0x5a}, masterSecretLen)
	type current struct {
		HandshakeComplete bool
		CipherSuiteID     uint16
		MasterSecret      []byte
		LocalConnectionID []byte
	}
	for _, tc := range []struct {
		name  string
		state any
		ok    bool
	}{
		{"current layout", current{true, uint16(suite), ms, []byte{1}}, true},
		{"master secret renamed", struct {
			HandshakeComplete bool
			CipherSuiteID     uint16
			Secret            []byte
		}{true, uint16(suite), ms}, false},
		{"master secret retyped", struct {
			HandshakeComplete bool
			CipherSuiteID     uint16
			MasterSecret      string
		}{true, uint16(suite), string(ms)}, false},
		{"handshake flag gone", struct {
			CipherSuiteID uint16
			MasterSecret  []byte
		}{uint16(suite), ms}, false},
		{"suite renamed", struct {
			HandshakeComplete bool
			CipherSuite       uint16
			MasterSecret      []byte
		}{true, uint16(suite), ms}, false},
		{"short master secret", current{true, uint16(suite), ms[:32], nil}, false},
		{"handshake incomplete", current{false, uint16(suite), ms, nil}, false},
		{"no field in common", struct{ Epoch uint16 }{1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := gob.NewEncoder(&buf).Encode(tc.state); err != nil {
				t.Fatal(err)
			}
			es, err := decodeState(buf.Bytes(), suite)
			if tc.ok {
				if err != nil || !bytes.Equal(es.MasterSecret, ms) {
					t.Fatalf("current layout refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("changed layout accepted: %+v", es)
			}
			if !strings.Contains(err.Error(), bindingFile) {
				t.Errorf("error does not point to %s: %v", bindingFile, err)
			}
		})
	}
}
