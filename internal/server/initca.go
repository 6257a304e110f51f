package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"

	"coapca/internal/config"
	"coapca/internal/datadir"
	"coapca/kms"
	"coapca/kms/pkcs11"
)

// InitOptions are the choices of `coapca init` that are not in the configuration.
type InitOptions struct {
	// IssuingKeyType is the type of an issuing key generated in the token of
	// cfg.CA.IssuingKey ("" = P-256).
	IssuingKeyType string
	// RootKeyOut writes the new root key there instead of DATA/private/ca.key.
	RootKeyOut string
	// PBKDF2Iterations is the work of the key encryption (0 = kms.DefaultPBKDF2Iterations).
	PBKDF2Iterations int
	// ImportKeyFile is an existing issuing key (PEM, encrypted with the CA passphrase or not)
	// to import into the token cfg.CA.IssuingKey names, instead of generating one there.
	ImportKeyFile string
	// Registrar also makes DATA/registrar.pem, the registrar identity with id-kp-cmcRA
	// (RFC 9148 §5), before the first `serve --upstream`.
	Registrar bool
}

// InitCA creates the CA of cfg in a data directory that must not hold one yet: the root, the
// issuing CA (its key generated in the token when cfg.CA.IssuingKey is a pkcs11: URI, or
// used as found there), the server and CMP signer certificates. It validates cfg first and
// creates nothing when it is wrong.
func InitCA(ctx context.Context, cfg config.Config, opts InitOptions, log *slog.Logger) (*datadir.Data, error) {
	if err := Validate(cfg); err != nil {
		return nil, err
	}
	if opts.PBKDF2Iterations < 0 || opts.PBKDF2Iterations > kms.MaxPBKDF2Iterations {
		return nil, fmt.Errorf("PBKDF2 iterations %d outside 1..%d", opts.PBKDF2Iterations, kms.MaxPBKDF2Iterations)
	}
	dir, err := filepath.Abs(cfg.Data)
	if err != nil {
		return nil, err
	}
	if fileExists(filepath.Join(dir, "ca.pem")) {
		return nil, fmt.Errorf("%s already holds a CA (ca.pem); init never replaces one", dir)
	}
	if opts.RootKeyOut != "" && fileExists(opts.RootKeyOut) {
		return nil, fmt.Errorf("--root-key-out %s exists; not overwritten", opts.RootKeyOut)
	}
	pass, err := cfg.CA.Passphrase()
	if err != nil {
		return nil, err
	}
	dopts := datadir.Options{Dir: dir, ServerNames: cfg.ServerNames, Logger: log, Passphrase: pass,
		NoDemo: cfg.CA.NoDemo, RootKeyOut: opts.RootKeyOut, PBKDF2Iterations: opts.PBKDF2Iterations,
		Registrar: opts.Registrar || cfg.Upstream.Enabled()}
	if opts.ImportKeyFile != "" && cfg.CA.IssuingKey == "" {
		return nil, errors.New("a key is imported only into a token: name it with ca.issuing_key (a pkcs11: URI)")
	}
	if uri := cfg.CA.IssuingKey; uri != "" && opts.ImportKeyFile != "" {
		key, err := kms.LoadKeyFileWithPassphrase(opts.ImportKeyFile, pass)
		if err != nil {
			return nil, fmt.Errorf("issuing key to import: %w", err)
		}
		// Imported sensitive and not extractable (kms/pkcs11.Import); a key already in the
		// token under that name is neither replaced nor certified in the imported one's place.
		k, err := pkcs11.Import(ctx, uri, key)
		if err != nil {
			return nil, fmt.Errorf("ca.issuing_key: %w", err)
		}
		defer k.Close()
		log.Warn("init: imported the issuing key into the token; destroy the key file now",
			"uri", pkcs11.Redact(uri), "file", opts.ImportKeyFile)
		dopts.IssuingKey = k
	} else if uri != "" {
		k, err := pkcs11.Generate(ctx, uri, opts.IssuingKeyType)
		switch {
		case err == nil:
			log.Info("init: generated the issuing key in the token", "uri", pkcs11.Redact(uri))
			dopts.IssuingKey = k
		case errors.Is(err, pkcs11.ErrKeyExists):
			// Generated or imported into the token beforehand: certify that key.
			if dopts.IssuingKey, err = kms.Open(ctx, uri); err != nil {
				return nil, fmt.Errorf("ca.issuing_key: %w", err)
			}
			log.Info("init: using the key already in the token", "uri", pkcs11.Redact(uri))
		default:
			return nil, fmt.Errorf("ca.issuing_key: %w", err)
		}
		if c, ok := dopts.IssuingKey.(io.Closer); ok {
			defer c.Close()
		}
	}
	return datadir.Open(dopts)
}
