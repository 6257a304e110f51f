package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"coapca/authority"
	"coapca/internal/config"
	"coapca/internal/datadir"
	"coapca/kms"
	"coapca/store/postgres"
	"coapca/store/sqlite"
)

// House is the enrollment core that every front door and the `ca` commands share: the data
// directory, the store and the authority.
type House struct {
	cfg   config.Config
	data  *datadir.Data
	store io.Closer // the store.Store of auth (the composition root does not import store)
	auth  *authority.Authority
	// hsmKey is the issuing key's token session (ca.issuing_key), closed with the house.
	hsmKey io.Closer
	// demo is true when the demo manufacturer CA and the demo CMP secret are live: the
	// configuration defines neither trust stores nor MAC secrets.
	demo bool
	// lock is the server's exclusive lock on the data directory (nil for `coapca ca`).
	lock *datadir.DirLock
}

// OpenHouse opens the existing data directory of cfg, its store and the authority, without
// listeners (for `coapca ca`, beside a running server or without one). A missing data directory
// is an error: only Start creates one.
func OpenHouse(ctx context.Context, cfg config.Config, log *slog.Logger) (*House, error) {
	return openHouse(ctx, cfg, log, false)
}

// openHouse opens the house of cfg; create makes the data directory if it is missing (serve).
func openHouse(ctx context.Context, cfg config.Config, log *slog.Logger, create bool) (*House, error) {
	dir, err := filepath.Abs(cfg.Data)
	if err != nil {
		return nil, err
	}
	// The store's configuration is checked (and a DSN file read) before the data directory is
	// created or changed.
	var dsn string
	if cfg.Store.Driver == config.DriverPostgres {
		if dsn, err = cfg.Store.PostgresDSN(); err != nil {
			return nil, err
		}
	} else if err := cfg.Store.Validate(); err != nil {
		return nil, err
	}
	if !create && !fileExists(filepath.Join(dir, "ca.pem")) {
		return nil, fmt.Errorf("no data directory at %s (run 'coapca serve --data %s' first, or pass --data)", dir, cfg.Data)
	}
	pass, err := cfg.CA.Passphrase()
	if err != nil {
		return nil, err
	}
	opts := datadir.Options{Dir: dir, ServerNames: cfg.ServerNames, Registrar: cfg.Upstream.Enabled(), Logger: log, Passphrase: pass, NoDemo: cfg.CA.NoDemo}
	if cfg.CA.IssuingKey != "" {
		// The issuing key lives in an HSM (ca.issuing_key): opened before the directory, so a
		// token that is missing or refuses the PIN changes nothing.
		if opts.IssuingKey, err = kms.Open(ctx, cfg.CA.IssuingKey); err != nil {
			return nil, fmt.Errorf("ca.issuing_key: %w", err)
		}
	}
	closeKey := func() {
		if c, ok := opts.IssuingKey.(io.Closer); ok {
			c.Close()
		}
	}
	var lock *datadir.DirLock
	if create {
		// A second server on the same directory is refused before it changes anything.
		if lock, err = datadir.Lock(dir); err != nil {
			closeKey()
			return nil, err
		}
	}
	data, err := datadir.Open(opts)
	if err != nil {
		closeKey()
		lock.Unlock()
		if errors.Is(err, kms.ErrPassphrase) && pass == nil {
			return nil, fmt.Errorf("data directory: %w (set ca.key_passphrase_file or ca.key_passphrase_env)", err)
		}
		return nil, fmt.Errorf("data directory: %w", err)
	}
	aopts := authority.Options{Chain: data.IssuingChain(), Logger: log}
	if err := openStore(ctx, cfg.Store.Driver, dsn, data.Paths.DB, log, &aopts); err != nil {
		closeKey()
		lock.Unlock()
		return nil, err
	}
	st := aopts.Store
	h := &House{cfg: cfg, data: data, store: st, lock: lock}
	if c, ok := opts.IssuingKey.(io.Closer); ok {
		h.hsmKey = c
	}
	acfg := cfg.Authority
	if len(acfg.TrustStores) == 0 && len(acfg.MACSecrets) == 0 && !cfg.CA.NoDemo {
		// Development default: trust the demo manufacturer CA and the demo CMP secret so the
		// demo device can enroll. A configuration that defines either trust stores or MAC
		// secrets is a real deployment: then neither demo credential is live (PrintWelcome
		// says loudly which are).
		acfg.TrustStores = []config.TrustStore{{Name: "demo", CertsFile: data.Paths.ManufacturerCA, AllowExpired: true}}
		if fileExists(data.Paths.CMPSecret) {
			acfg.MACSecrets = []config.MACSecret{{Reference: datadir.DemoSecretRef, SecretFile: data.Paths.CMPSecret}}
		}
		h.demo = true
		log.Warn("demo credentials are live: the configuration defines no trust_stores and no mac_secrets",
			"manufacturer_ca", data.Paths.ManufacturerCA, "cmp_secret", data.Paths.CMPSecret)
	}
	// The composition layer reads the trust-store and secret files; the authority reads none.
	policy, err := acfg.Policy()
	if err != nil {
		h.Close()
		return nil, err
	}
	// The issuing key as the data directory loaded it (a decrypted file or the HSM key).
	aopts.Signer = data.IssuingKey
	h.auth, err = authority.New(policy, aopts)
	if err != nil {
		h.Close()
		return nil, err
	}
	return h, nil
}

// openStore opens the configured back end into opts.Store: PostgreSQL at dsn, or SQLite at path.
func openStore(ctx context.Context, driver, dsn, path string, log *slog.Logger, opts *authority.Options) error {
	if driver == config.DriverPostgres {
		st, err := postgres.Open(ctx, dsn, postgres.Options{Logger: log})
		if err != nil {
			return fmt.Errorf("store: %w", err)
		}
		opts.Store = st
		return nil
	}
	st, err := sqlite.Open(ctx, path, sqlite.Options{Logger: log})
	if err != nil {
		return err
	}
	opts.Store = st
	return nil
}

// Data is the data directory: the CA, the server's certificates, the demo credentials.
func (h *House) Data() *datadir.Data { return h.data }

// Authority is the authority every front door decides through.
func (h *House) Authority() *authority.Authority { return h.auth }

// Close closes the store and the issuing key's token session, and releases the data directory.
func (h *House) Close() error {
	if h.hsmKey != nil {
		h.hsmKey.Close()
	}
	err := h.store.Close()
	return errors.Join(err, h.lock.Unlock())
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }
