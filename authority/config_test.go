package authority

import (
	"os"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestConfigYAML(t *testing.T) {
	p := newPKI(t)
	data, err := os.ReadFile("testdata/config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.NewReplacer("MFR_A", p.mfrAFile, "MFR_B", p.mfrBFile, "SECRET", p.secretFile).Replace(string(data))
	var cfg Config
	dec := yaml.NewDecoder(strings.NewReader(text))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.CRLValidity != 24*time.Hour || cfg.Backdate != 30*time.Second || !cfg.TrustStores[1].AllowExpired ||
		cfg.Profiles[2].RetryAfter != 10*time.Second || cfg.Profiles[2].SAN.DNSPattern != `.*\.example\.com` {
		t.Errorf("decoded %+v", cfg)
	}
	a := p.authority(t, p.openStore(t), cfg)
	m, err := a.Profile("manual")
	if err != nil {
		t.Fatal(err)
	}
	if !m.ManualApproval || m.names.allowEmail || !m.names.allowDNS || m.names.organization[0] != "Acme" || m.Validity != 365*24*time.Hour ||
		len(m.rules) != 2 || m.rules[1].kind != KindLDevID {
		t.Errorf("manual profile %+v", m)
	}
	c, _ := a.Profile("cmp-devices")
	if c.KeyType != "P-384" || len(c.AcceptKeyTypes) != 2 || c.Validity != 720*time.Hour {
		t.Errorf("cmp-devices profile %+v", c)
	}
}
