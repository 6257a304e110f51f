package pkcs11

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestParseURI: RFC 7512 URIs are read attribute by attribute, percent-decoded; anything the
// parser cannot honour is refused with an error, never ignored (a misspelt attribute that
// was ignored would select another key).
func TestParseURI(t *testing.T) {
	pinFile := filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(pinFile, []byte("4321\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const mod = "?module-path=/usr/lib/softhsm/libsofthsm2.so"
	tests := []struct {
		name, uri string
		want      URI
		wantPIN   string
		wantErr   string // substring; "" = valid key reference
	}{
		{name: "label and pin-value", uri: "pkcs11:token=coapca;object=issuing-ca" + mod + "&pin-value=1234",
			want: URI{Token: "coapca", Object: "issuing-ca", ModulePath: "/usr/lib/softhsm/libsofthsm2.so", PINValue: "1234"}, wantPIN: "1234"},
		{name: "percent-encoded id and label", uri: "pkcs11:token=My%20CA;id=%01%02%ff;object=a%3Bb" + mod,
			want: URI{Token: "My CA", ID: []byte{1, 2, 0xff}, Object: "a;b", ModulePath: "/usr/lib/softhsm/libsofthsm2.so"}},
		{name: "pin-source file path", uri: "pkcs11:serial=abc;object=k;type=private" + mod + "&pin-source=" + pinFile,
			want: URI{Serial: "abc", Object: "k", Type: "private", ModulePath: "/usr/lib/softhsm/libsofthsm2.so", PINSource: pinFile}, wantPIN: "4321"},
		{name: "pin-source file URI", uri: "pkcs11:slot-id=3;object=k" + mod + "&pin-source=file://" + pinFile,
			want: URI{SlotID: ptr(3), Object: "k", ModulePath: "/usr/lib/softhsm/libsofthsm2.so", PINSource: "file://" + pinFile}, wantPIN: "4321"},
		{name: "scheme case-insensitive", uri: "PKCS11:token=t;object=k" + mod,
			want: URI{Token: "t", Object: "k", ModulePath: "/usr/lib/softhsm/libsofthsm2.so"}},

		{name: "not pkcs11", uri: "file:/etc/key.pem", wantErr: "not a pkcs11: URI"},
		{name: "duplicate path attribute", uri: "pkcs11:token=a;token=b;object=k" + mod, wantErr: "appears twice"},
		{name: "duplicate query attribute", uri: "pkcs11:token=a;object=k" + mod + "&module-path=/tmp/evil.so", wantErr: "appears twice"},
		{name: "unknown path attribute", uri: "pkcs11:token=a;objekt=k" + mod, wantErr: "unknown path attribute"},
		{name: "unknown query attribute", uri: "pkcs11:token=a;object=k" + mod + "&pin=1", wantErr: "unknown query attribute"},
		{name: "bad percent", uri: "pkcs11:token=a%zz;object=k" + mod, wantErr: "token"},
		{name: "no value", uri: "pkcs11:token;object=k" + mod, wantErr: "not name=value"},
		{name: "module-name", uri: "pkcs11:token=a;object=k?module-name=softhsm2", wantErr: "module-name"},
		{name: "both pins", uri: "pkcs11:token=a;object=k" + mod + "&pin-value=1&pin-source=/x", wantErr: "both pin-value and pin-source"},
		{name: "no module", uri: "pkcs11:token=a;object=k", wantErr: "no module"},
		{name: "no token", uri: "pkcs11:object=k" + mod, wantErr: "no token"},
		{name: "two token selectors", uri: "pkcs11:token=a;serial=1;object=k" + mod, wantErr: "one of token, serial and slot-id"},
		{name: "no key", uri: "pkcs11:token=a" + mod, wantErr: "no key"},
		{name: "public key", uri: "pkcs11:token=a;object=k;type=public" + mod, wantErr: "type=private"},
		{name: "bad type", uri: "pkcs11:token=a;object=k;type=secret" + mod, wantErr: "unknown object type"},
		{name: "bad slot-id", uri: "pkcs11:slot-id=-1;object=k" + mod, wantErr: "slot-id"},
		{name: "unsupported standard attribute", uri: "pkcs11:token=a;object=k;manufacturer=x" + mod, wantErr: "not supported"},
		{name: "vendor attribute", uri: "pkcs11:token=a;object=k;x-foo=1" + mod, wantErr: "vendor-specific"},
		{name: "too long", uri: "pkcs11:token=" + strings.Repeat("a", maxURI) + mod, wantErr: "longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := ParseURI(tt.uri)
			if err == nil {
				err = u.KeyRef()
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "pin-value=1") {
					t.Errorf("error shows the PIN: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if u.Token != tt.want.Token || u.Serial != tt.want.Serial || u.Object != tt.want.Object ||
				!bytes.Equal(u.ID, tt.want.ID) || u.Type != tt.want.Type || u.ModulePath != tt.want.ModulePath ||
				u.PINValue != tt.want.PINValue || u.PINSource != tt.want.PINSource ||
				(u.SlotID == nil) != (tt.want.SlotID == nil) || (u.SlotID != nil && *u.SlotID != *tt.want.SlotID) {
				t.Fatalf("got %+v, want %+v", *u, tt.want)
			}
			pin, err := u.PIN()
			if err != nil || pin != tt.wantPIN {
				t.Fatalf("PIN() = %q, %v; want %q", pin, err, tt.wantPIN)
			}
		})
	}
}

// TestPINSourceRefusals: a pin-source that is a command or an empty or missing file is an
// error, not an empty PIN.
func TestPINSourceRefusals(t *testing.T) {
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, src := range []string{"|/bin/echo 1234", empty, "/nonexistent/pin", "file://evil.example/pin"} {
		u := &URI{PINSource: src}
		if pin, err := u.PIN(); err == nil {
			t.Errorf("pin-source %q gave PIN %q", src, pin)
		}
	}
}

// TestOpenWithoutPKCS11: the default build names what is missing instead of failing obscurely,
// and still reports a malformed URI as such.
func TestOpenWithoutPKCS11(t *testing.T) {
	if Built {
		t.Skip("built with -tags pkcs11: token_test.go covers Open")
	}
	_, err := Open(context.Background(), "pkcs11:token=a;object=k?module-path=/x.so&pin-value=1234")
	if !errors.Is(err, ErrNotBuilt) || !strings.Contains(err.Error(), "-tags pkcs11") {
		t.Fatalf("err = %v, want ErrNotBuilt", err)
	}
	if strings.Contains(err.Error(), "1234") {
		t.Errorf("error shows the PIN: %v", err)
	}
	if _, err := Open(context.Background(), "pkcs11:tokn=a"); err == nil || errors.Is(err, ErrNotBuilt) {
		t.Fatalf("malformed URI: err = %v", err)
	}
}

func ptr(n uint) *uint { return &n }

func FuzzParseURI(f *testing.F) {
	f.Add("pkcs11:token=coapca;object=issuing-ca;id=%01?module-path=/m.so&pin-value=1")
	f.Add("pkcs11:slot-id=1;x-a=b?pin-source=file:///p")
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseURI(s)
		if err != nil {
			return
		}
		_ = u.KeyRef()
	})
}

// TestRedactNonASCII is the attack of a URI whose non-ASCII characters change length when
// lower-cased (U+0130 'İ' grows from 2 to 3 bytes, an invalid byte becomes U+FFFD): the
// position of pin-value found in the lower-cased copy must not be used to cut the original,
// or the PIN reaches logs and errors in the clear, or the cut runs past the end and panics.
func TestRedactNonASCII(t *testing.T) {
	const pin = "s3cr3t-PIN-0000"
	for _, tt := range []struct{ name, uri string }{
		{"dotted capital I", "pkcs11:token=" + strings.Repeat("İ", 40) + "?module-path=/m.so&pin-value=" + pin},
		{"invalid UTF-8", "pkcs11:token=" + strings.Repeat("\xff", 20) + "?pin-value=" + pin + "&module-path=/m.so"},
		{"past the end", "pkcs11:token=" + strings.Repeat("\xff", 200) + "?pin-value=" + pin},
		{"upper-case name", "pkcs11:token=t?PIN-VALUE=" + pin},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := Redact(tt.uri)
			if strings.Contains(got, pin) || strings.Contains(got, pin[:6]) {
				t.Fatalf("PIN in %q", got)
			}
			if !strings.Contains(got, "REDACTED") {
				t.Fatalf("nothing redacted in %q", got)
			}
			_, err := ParseURI(tt.uri)
			if err != nil && strings.Contains(err.Error(), pin[:6]) {
				t.Fatalf("PIN in the parse error %v", err)
			}
		})
	}
}
