package server

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"coapca/authority"
	"coapca/internal/config"
	"coapca/internal/datadir"
	"coapca/kms"
	"coapca/store/sqlite"
)

// House is the enrollment core that every front door and the `ca` commands share: the data
// directory, the store and the authority.
type House struct {
	cfg   config.Config
	data  *datadir.Data
	store *sqlite.Store
	auth  *authority.Authority
	// demo is true when the demo manufacturer CA and the demo CMP secret are live: the
	// configuration defines neither trust stores nor MAC secrets.
	demo bool
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
	if !create && !fileExists(filepath.Join(dir, "ca.pem")) {
		return nil, fmt.Errorf("no data directory at %s (run 'coapca serve --data %s' first, or pass --data)", dir, cfg.Data)
	}
	data, err := datadir.Open(datadir.Options{Dir: dir, ServerNames: cfg.ServerNames, Registrar: cfg.Upstream.Enabled(), Logger: log})
	if err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	st, err := sqlite.Open(ctx, data.Paths.DB, sqlite.Options{Logger: log})
	if err != nil {
		return nil, err
	}
	h := &House{cfg: cfg, data: data, store: st}
	acfg := cfg.Authority
	if len(acfg.TrustStores) == 0 && len(acfg.MACSecrets) == 0 {
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
		st.Close()
		return nil, err
	}
	signer, err := kms.Open(ctx, data.IssuingKeyURI())
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("issuing key: %w", err)
	}
	h.auth, err = authority.New(policy, authority.Options{
		Store: st, Signer: signer, Chain: data.IssuingChain(), Logger: log,
	})
	if err != nil {
		st.Close()
		return nil, err
	}
	return h, nil
}

// Data is the data directory: the CA, the server's certificates, the demo credentials.
func (h *House) Data() *datadir.Data { return h.data }

// Authority is the authority every front door decides through.
func (h *House) Authority() *authority.Authority { return h.auth }

// Close closes the store.
func (h *House) Close() error { return h.store.Close() }

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }
