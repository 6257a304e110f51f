package cli

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"

	"coapca/authority"
	"coapca/internal/config"
	"coapca/internal/datadir"
	"coapca/kms"
	"coapca/store/sqlite"
)

// house is the enrollment core that every front door and the `ca` commands share: the data
// directory, the store and the authority.
type house struct {
	cfg   config.Config
	data  *datadir.Data
	store *sqlite.Store
	auth  *authority.Authority
	// demo is true when the demo manufacturer CA and the demo CMP secret are live: the
	// configuration defines neither trust stores nor MAC secrets.
	demo bool
}

type houseOptions struct {
	// create the data directory if missing (serve); the ca commands refuse a missing one.
	create bool
}

func openHouse(ctx context.Context, cfg config.Config, log *slog.Logger, o houseOptions) (*house, error) {
	dir, err := filepath.Abs(cfg.Data)
	if err != nil {
		return nil, err
	}
	if !o.create && !fileExists(filepath.Join(dir, "ca.pem")) {
		return nil, fmt.Errorf("no data directory at %s (run 'coapca serve --data %s' first, or pass --data)", dir, cfg.Data)
	}
	data, err := datadir.Open(datadir.Options{Dir: dir, ServerNames: cfg.ServerNames, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	st, err := sqlite.Open(ctx, data.Paths.DB, sqlite.Options{Logger: log})
	if err != nil {
		return nil, err
	}
	h := &house{cfg: cfg, data: data, store: st}
	acfg := cfg.Authority
	if len(acfg.TrustStores) == 0 && len(acfg.MACSecrets) == 0 {
		// Development default: trust the demo manufacturer CA and the demo CMP secret so the
		// demo device can enroll. A configuration that defines either trust stores or MAC
		// secrets is a real deployment: then neither demo credential is live (printWelcome
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

func (h *house) Close() error { return h.store.Close() }

// loadConfig reads --config (or the defaults) and applies --data when given.
func loadConfig(path, data string) (config.Config, error) {
	cfg := config.Default()
	if path != "" {
		var err error
		if cfg, err = config.Load(path); err != nil {
			return cfg, err
		}
	}
	if data != "" {
		cfg.Data = data
	}
	return cfg, nil
}
