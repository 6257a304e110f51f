// Package pkcs11 opens CA keys held in a PKCS#11 token (an HSM; SoftHSM2 in tests), named by
// PKCS#11 URIs (RFC 7512), as crypto.Signers.
//
// The URI parser is pure Go and in every build, so a configuration naming a token is checked
// also by a binary built without PKCS#11. Talking to a token needs cgo and the build tag
// `pkcs11` (github.com/ThalesGroup/crypto11 over github.com/miekg/pkcs11); without it Open,
// Generate and Import return ErrNotBuilt.
//
// A URI names the module (module-path), the token (one of token, serial or slot-id),
// the key (object = CKA_LABEL and/or id = CKA_ID) and the user PIN (pin-value, or
// pin-source: a file holding it):
//
//	pkcs11:token=coapca;object=issuing-ca?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/etc/coapca/pin
package pkcs11

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
)

// ErrNotBuilt is returned by Open and Generate in a binary built without the pkcs11 tag (or
// without cgo, which the PKCS#11 module interface needs).
var ErrNotBuilt = errors.New("this binary was built without PKCS#11 support (rebuild with: CGO_ENABLED=1 go build -tags pkcs11)")

// ErrKeyExists is returned by Generate and Import when the token already holds the key the URI names.
var ErrKeyExists = errors.New("key exists")

// URI is a parsed PKCS#11 URI (RFC 7512 §2.3). Values are percent-decoded.
type URI struct {
	// Token (CKA label of the token) or Serial selects the token.
	Token, Serial string
	// SlotID selects the slot by number (slot-id); nil when absent.
	SlotID *uint
	// Object is the key's CKA_LABEL; ID its CKA_ID (raw bytes).
	Object string
	ID     []byte
	// Type is the object class (private, public, cert, secret-key, data); "" when absent.
	Type string

	// Query attributes.
	ModulePath string // the PKCS#11 library to load
	PINValue   string // the user PIN itself
	PINSource  string // where to read the user PIN from (a file path or file: URI)

	// Vendor holds vendor-specific path attributes (x-…, RFC 7512 §2.3).
	Vendor map[string]string
}

// known path and query attributes, RFC 7512 §2.3.
var pathAttrs = map[string]bool{
	"token": true, "manufacturer": true, "serial": true, "model": true,
	"library-manufacturer": true, "library-description": true, "library-version": true,
	"object": true, "type": true, "id": true,
	"slot-description": true, "slot-manufacturer": true, "slot-id": true,
}

// maxURI bounds the input: a URI from a configuration file, never megabytes.
const maxURI = 4096

// ParseURI parses a PKCS#11 URI such as
// "pkcs11:token=coapca;object=issuing-ca?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=1234".
// It refuses what it cannot honour rather than ignore it: duplicate attributes, unknown
// attributes, module-name (a library search path is the platform's business; name the
// module-path), both pin-value and pin-source, and library/slot attributes it cannot match.
func ParseURI(s string) (*URI, error) {
	if len(s) > maxURI {
		return nil, fmt.Errorf("pkcs11 URI longer than %d bytes", maxURI)
	}
	scheme, rest, ok := strings.Cut(s, ":")
	if !ok || !strings.EqualFold(scheme, "pkcs11") {
		return nil, fmt.Errorf("%q is not a pkcs11: URI", redact(s))
	}
	path, query, _ := strings.Cut(rest, "?")
	u := &URI{}
	seen := map[string]bool{}
	if path != "" {
		for _, attr := range strings.Split(path, ";") {
			name, raw, ok := strings.Cut(attr, "=")
			if !ok || name == "" {
				return nil, fmt.Errorf("pkcs11 URI path attribute %q is not name=value", attr)
			}
			name = strings.ToLower(name)
			// RFC 7512 §2.3: a PKCS #11 URI must not contain duplicate attributes of the
			// same name in the URI path component.
			if seen[name] {
				return nil, fmt.Errorf("pkcs11 URI: path attribute %q appears twice (RFC 7512 §2.3)", name)
			}
			seen[name] = true
			val, err := url.PathUnescape(raw)
			if err != nil {
				return nil, fmt.Errorf("pkcs11 URI: attribute %s: %w", name, err)
			}
			if err := u.setPath(name, val); err != nil {
				return nil, err
			}
		}
	}
	if query != "" {
		qseen := map[string]bool{}
		for _, attr := range strings.Split(query, "&") {
			name, raw, ok := strings.Cut(attr, "=")
			if !ok || name == "" {
				return nil, fmt.Errorf("pkcs11 URI query attribute %q is not name=value", redact(attr))
			}
			name = strings.ToLower(name)
			if qseen[name] {
				return nil, fmt.Errorf("pkcs11 URI: query attribute %q appears twice", name)
			}
			qseen[name] = true
			val, err := url.PathUnescape(raw)
			if err != nil {
				return nil, fmt.Errorf("pkcs11 URI: attribute %s: %w", name, err)
			}
			switch name {
			case "module-path":
				u.ModulePath = val
			case "pin-value":
				u.PINValue = val
			case "pin-source":
				u.PINSource = val
			case "module-name":
				return nil, errors.New("pkcs11 URI: module-name is not supported; name the library with module-path")
			default:
				return nil, fmt.Errorf("pkcs11 URI: unknown query attribute %q", name)
			}
		}
	}
	if u.PINValue != "" && u.PINSource != "" {
		return nil, errors.New("pkcs11 URI: both pin-value and pin-source are given; use one")
	}
	return u, nil
}

func (u *URI) setPath(name, val string) error {
	switch name {
	case "token":
		u.Token = val
	case "serial":
		u.Serial = val
	case "object":
		u.Object = val
	case "id":
		u.ID = []byte(val)
	case "type":
		switch val {
		case "private", "public", "cert", "secret-key", "data":
			u.Type = val
		default:
			return fmt.Errorf("pkcs11 URI: unknown object type %q", val)
		}
	case "slot-id":
		n, err := strconv.ParseUint(val, 10, 32)
		if err != nil {
			return fmt.Errorf("pkcs11 URI: slot-id %q is not a decimal number", val)
		}
		id := uint(n)
		u.SlotID = &id
	default:
		if strings.HasPrefix(name, "x-") {
			if u.Vendor == nil {
				u.Vendor = map[string]string{}
			}
			u.Vendor[name] = val
			return nil
		}
		if pathAttrs[name] {
			return fmt.Errorf("pkcs11 URI: attribute %q is not supported for selecting a key", name)
		}
		return fmt.Errorf("pkcs11 URI: unknown path attribute %q", name)
	}
	return nil
}

// KeyRef checks that u names one private key in one token: a token selector and the key's
// label (object) or id. A URI that named any key of any token would sign with whatever the
// module lists first.
func (u *URI) KeyRef() error {
	if u.ModulePath == "" {
		return errors.New("pkcs11 URI names no module: add ?module-path=/path/to/module.so")
	}
	switch n := btoi(u.Token != "") + btoi(u.Serial != "") + btoi(u.SlotID != nil); n {
	case 0:
		return errors.New("pkcs11 URI names no token: add token=LABEL, serial=… or slot-id=…")
	case 1:
	default:
		// crypto11 selects a token by exactly one of them; a second one would be ignored,
		// not matched.
		return errors.New("pkcs11 URI: select the token by one of token, serial and slot-id, not several")
	}
	if u.Object == "" && len(u.ID) == 0 {
		return errors.New("pkcs11 URI names no key: add object=LABEL and/or id=…")
	}
	if u.Type != "" && u.Type != "private" {
		return fmt.Errorf("pkcs11 URI names a %s object; a CA key is type=private", u.Type)
	}
	if len(u.Vendor) > 0 {
		return errors.New("pkcs11 URI: vendor-specific attributes (x-…) are not supported for selecting a key")
	}
	return nil
}

// PIN returns the user PIN: pin-value, or the content of the pin-source file without a
// trailing newline. It is "" when neither is given (a token without login).
func (u *URI) PIN() (string, error) {
	if u.PINValue != "" {
		return u.PINValue, nil
	}
	if u.PINSource == "" {
		return "", nil
	}
	src := u.PINSource
	if strings.HasPrefix(src, "file:") {
		pu, err := url.Parse(src)
		if err != nil {
			return "", fmt.Errorf("pkcs11 URI pin-source %q: %w", src, err)
		}
		if pu.Host != "" && pu.Host != "localhost" {
			return "", fmt.Errorf("pkcs11 URI pin-source %q names a remote host", src)
		}
		src = pu.Path
		if src == "" {
			src = pu.Opaque
		}
	} else if strings.HasPrefix(src, "|") {
		return "", errors.New("pkcs11 URI pin-source: commands (|…) are not run; name a file")
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return "", fmt.Errorf("pkcs11 URI pin-source: %w", err)
	}
	pin := string(bytes.TrimRight(b, "\r\n"))
	if pin == "" {
		return "", fmt.Errorf("pkcs11 URI pin-source %s is empty", src)
	}
	return pin, nil
}

// redact hides a pin-value from error messages. The attribute name is matched without
// case by ASCII folding only: strings.ToLower changes the length of non-ASCII text, and an
// index into the lower-cased copy would cut the original in the wrong place (leaking the PIN,
// or panicking past its end).
func redact(s string) string {
	if i := strings.Index(asciiLower(s), "pin-value="); i >= 0 {
		end := strings.IndexByte(s[i:], '&')
		if end < 0 {
			return s[:i] + "pin-value=REDACTED"
		}
		return s[:i] + "pin-value=REDACTED" + redact(s[i+end:])
	}
	return s
}

// asciiLower lower-cases A–Z only, so the result has the length and byte positions of s.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// Redact returns s with any pin-value replaced, for logs and errors.
func Redact(s string) string { return redact(s) }

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
