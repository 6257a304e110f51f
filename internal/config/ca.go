package config

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"

	"coapca/authority"
	"coapca/kms/pkcs11"
)

// CA says where the CA's keys are and how they are protected (key custody).
type CA struct {
	// IssuingKey is the key URI of the issuing CA's private key: "" (default) is the file
	// DATA/private/issuing-ca.key; a pkcs11: URI (RFC 7512) names a key in an HSM, e.g.
	// pkcs11:token=coapca;object=issuing-ca?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/etc/coapca/pin
	// (binaries built with -tags pkcs11; `coapca init --issuing-key URI` generates it).
	IssuingKey string `yaml:"issuing_key"`
	// KeyPassphraseFile holds the passphrase that encrypts the key files in DATA/private at
	// rest (PKCS#8 with PBES2): keys created on first start are written encrypted, encrypted
	// keys are read with it. Default "" (keys are not encrypted).
	KeyPassphraseFile string `yaml:"key_passphrase_file"`
	// KeyPassphraseEnv names an environment variable holding that passphrase instead.
	KeyPassphraseEnv string `yaml:"key_passphrase_env"`
	// NoDemo turns the demo credentials off for good: the demo manufacturer CA, device and
	// CMP secret are neither created in the data directory nor trusted. Default false (they
	// are created, and trusted while no trust store and no MAC secret is configured).
	NoDemo bool `yaml:"no_demo"`
}

// Passphrase returns the key passphrase: the content of key_passphrase_file without a
// trailing newline, or the value of the variable key_passphrase_env; nil when neither is set.
func (c CA) Passphrase() ([]byte, error) {
	switch {
	case c.KeyPassphraseFile != "" && c.KeyPassphraseEnv != "":
		return nil, errors.New("config: ca.key_passphrase_file and ca.key_passphrase_env are both set; use one")
	case c.KeyPassphraseFile != "":
		b, err := os.ReadFile(c.KeyPassphraseFile)
		if err != nil {
			return nil, fmt.Errorf("config: ca.key_passphrase_file: %w", err)
		}
		b = bytes.TrimRight(b, "\r\n")
		if len(b) == 0 {
			return nil, fmt.Errorf("config: ca.key_passphrase_file %s is empty", c.KeyPassphraseFile)
		}
		return b, nil
	case c.KeyPassphraseEnv != "":
		v, ok := os.LookupEnv(c.KeyPassphraseEnv)
		if !ok || v == "" {
			return nil, fmt.Errorf("config: ca.key_passphrase_env: the environment variable %s is not set or empty", c.KeyPassphraseEnv)
		}
		return []byte(v), nil
	}
	return nil, nil
}

// validate checks the key URI's syntax (a pkcs11: URI must name one key of one token) and
// that the passphrase can be read. It opens no key: a token may be slow or need the PIN
// from a file only root can read at start.
func (c CA) validate() error {
	if _, err := c.Passphrase(); err != nil {
		return err
	}
	switch scheme, _, _ := strings.Cut(c.IssuingKey, ":"); {
	case c.IssuingKey == "":
	case strings.EqualFold(scheme, "pkcs11"):
		u, err := pkcs11.ParseURI(c.IssuingKey)
		if err != nil {
			return fmt.Errorf("config: ca.issuing_key: %w", err)
		}
		if err := u.KeyRef(); err != nil {
			return fmt.Errorf("config: ca.issuing_key: %w", err)
		}
		if _, err := u.PIN(); err != nil {
			return fmt.Errorf("config: ca.issuing_key: %w", err)
		}
	case strings.EqualFold(scheme, "file"):
		return errors.New("config: ca.issuing_key: a key file is DATA/private/issuing-ca.key (leave issuing_key empty); name a pkcs11: URI for a key in an HSM")
	default:
		return fmt.Errorf("config: ca.issuing_key %q: want a pkcs11: URI", pkcs11.Redact(c.IssuingKey))
	}
	return nil
}

// Validate checks the whole configuration — every field and every file it names (trust
// stores, MAC secrets, key-encryption keys, the key passphrase) and the authority's rules,
// exactly as the server will apply them — without creating or changing anything. `coapca
// serve` runs it before it touches the data directory, so a typo never leaves a half-made
// data directory behind. Files the server itself reads later (OSCORE contexts) are checked by
// the server's own validation.
func (c Config) Validate() error {
	if c.Data == "" {
		return errors.New("config: data: no data directory")
	}
	if st, err := os.Stat(c.Data); err == nil && !st.IsDir() {
		return fmt.Errorf("config: data: %s exists and is not a directory", c.Data)
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.Log.Level)); err != nil && c.Log.Level != "" {
		return fmt.Errorf("config: log.level %q: want debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "", "text", "json":
	default:
		return fmt.Errorf("config: log.format %q: want text or json", c.Log.Format)
	}
	for _, l := range []struct{ name, addr string }{
		{"coaps", c.Listen.CoAPS}, {"coap", c.Listen.CoAP}, {"http", c.Listen.HTTP},
		{"https", c.Listen.HTTPS}, {"metrics", c.Listen.Metrics},
	} {
		if l.addr == "" {
			continue
		}
		_, port, err := net.SplitHostPort(l.addr)
		if err != nil {
			return fmt.Errorf("config: listen.%s %q: %w", l.name, l.addr, err)
		}
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			_, uerr := net.LookupPort("udp", port)
			_, terr := net.LookupPort("tcp", port)
			if uerr != nil && terr != nil {
				return fmt.Errorf("config: listen.%s %q: the port is neither a number from 0 to 65535 nor a service name", l.name, l.addr)
			}
		}
	}
	for i, n := range c.ServerNames {
		if strings.TrimSpace(n) == "" || strings.ContainsAny(n, " /\\") {
			return fmt.Errorf("config: server_names[%d] %q is not a DNS name or IP address", i, n)
		}
	}
	if err := c.Store.Validate(); err != nil {
		return err
	}
	if err := c.CMPUpstream.Validate(); err != nil {
		return err
	}
	if err := c.Upstream.Validate(); err != nil {
		return err
	}
	if err := c.ACE.validate(); err != nil {
		return err
	}
	if err := c.CA.validate(); err != nil {
		return err
	}
	if _, err := c.EST.LoadKEKs(); err != nil {
		return err
	}
	pol, err := c.Authority.Policy()
	if err != nil {
		return err
	}
	if len(c.Authority.TrustStores) == 0 && len(c.Authority.MACSecrets) == 0 && !c.CA.NoDemo {
		// The server adds the demo credentials under these names (internal/server); rules
		// may name them.
		pol.TrustStores = append(pol.TrustStores, authority.TrustStore{Name: "demo", Roots: []*x509.Certificate{{}}})
		pol.MACSecrets = append(pol.MACSecrets, authority.MACSecret{Reference: "demo", Secret: []byte("placeholder")})
	}
	if err := authority.CheckPolicy(pol); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return nil
}
