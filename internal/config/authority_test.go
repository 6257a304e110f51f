package config

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"coapca/authority"
	"coapca/internal/datadir"
	"coapca/kms"
	"coapca/store/sqlite"
)

// demoData is a fresh data directory: a real CA, a manufacturer CA and a secret file to point
// the configuration at.
func demoData(t *testing.T) *datadir.Data {
	t.Helper()
	d, err := datadir.Open(datadir.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestAuthorityYAML loads the sample authority section, translates it into the authority's
// policy (reading the files it names) and builds a real authority from it.
func TestAuthorityYAML(t *testing.T) {
	d := demoData(t)
	data, err := os.ReadFile("testdata/authority.yaml")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.NewReplacer("MFR_A", d.Paths.ManufacturerCA, "MFR_B", d.Paths.Root, "SECRET", d.Paths.CMPSecret).Replace(string(data))
	var c Authority
	dec := yaml.NewDecoder(strings.NewReader(text))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatal(err)
	}
	if c.CRLValidity != 24*time.Hour || c.Backdate != 30*time.Second || !c.TrustStores[1].AllowExpired ||
		c.Profiles[2].RetryAfter != 10*time.Second || c.Profiles[2].SAN.DNSPattern != `.*\.example\.com` {
		t.Errorf("decoded %+v", c)
	}
	hash, err := authority.HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	c.Users = []User{{Name: "line-7", PasswordHash: hash}}
	p, err := c.Policy()
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Users) != 1 || p.Users[0] != (authority.User{Name: "line-7", PasswordHash: hash}) {
		t.Errorf("users %+v", p.Users)
	}
	if len(p.TrustStores) != 2 || !p.TrustStores[0].Roots[0].Equal(d.ManufacturerCA) || !p.TrustStores[1].Roots[0].Equal(d.Root) ||
		!p.TrustStores[1].AllowExpired || p.CRLValidity != 24*time.Hour || p.Backdate != 30*time.Second {
		t.Errorf("trust stores %+v", p.TrustStores)
	}
	// The secret file ends in a newline, which is not part of the secret.
	if len(p.MACSecrets) != 1 || p.MACSecrets[0].Reference != "demo" || !bytes.Equal(p.MACSecrets[0].Secret, d.CMPSecret) {
		t.Errorf("MAC secrets %+v", p.MACSecrets)
	}
	cmpRule := p.Profiles[1].Requesters[0]
	if cmpRule.Kind != "mac" || !cmpRule.MayRevoke || !cmpRule.BindCommonName || cmpRule.SAN == nil || cmpRule.SAN.Allow[0] != "none" || cmpRule.Subject != nil {
		t.Errorf("cmp-devices rule %+v", cmpRule)
	}
	m := p.Profiles[2]
	if m.Subject.Organization[0] != "Acme" || m.SAN.Allow[1] != "ip" || m.ReenrollFrom[0] != "" || m.Requesters[1].Kind != "ldevid" {
		t.Errorf("manual profile options %+v", m)
	}

	st, err := sqlite.Open(context.Background(), filepath.Join(d.Dir, "coapca.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	signer, err := kms.Open(context.Background(), d.IssuingKeyURI())
	if err != nil {
		t.Fatal(err)
	}
	a, err := authority.New(p, authority.Options{Store: st, Signer: signer, Chain: d.IssuingChain()})
	if err != nil {
		t.Fatal(err)
	}
	mp, err := a.Profile("manual")
	if err != nil || !mp.ManualApproval || mp.Validity != 365*24*time.Hour || mp.RetryAfter != 10*time.Second {
		t.Errorf("manual profile %+v, %v", mp, err)
	}
	cp, _ := a.Profile("cmp-devices")
	if cp == nil || cp.KeyType != "P-384" || len(cp.AcceptKeyTypes) != 2 || cp.Validity != 720*time.Hour {
		t.Errorf("cmp-devices profile %+v", cp)
	}
}

// TestAuthorityPolicyFiles: files that do not hold what the configuration says (missing,
// without a certificate, an empty secret) are refused with the name of the store or secret,
// and no partial policy comes back.
func TestAuthorityPolicyFiles(t *testing.T) {
	d := demoData(t)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	keyOnly := write("key.pem", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
	empty := write("empty", "\n\r\n")
	good := TrustStore{Name: "ok", CertsFile: d.Paths.ManufacturerCA}
	tests := []struct {
		name string
		c    Authority
		err  string
	}{
		{"missing certs file", Authority{TrustStores: []TrustStore{good, {Name: "mfr", CertsFile: filepath.Join(dir, "nope.pem")}}}, `trust store "mfr"`},
		{"no certs_file", Authority{TrustStores: []TrustStore{{Name: "mfr"}}}, "certs_file is required"},
		{"a key, no certificate", Authority{TrustStores: []TrustStore{{Name: "mfr", CertsFile: keyOnly}}}, "no PEM certificate"},
		{"empty secret", Authority{TrustStores: []TrustStore{good}, MACSecrets: []MACSecret{{Reference: "r", SecretFile: empty}}}, `MAC secret "r"`},
		{"missing secret file", Authority{MACSecrets: []MACSecret{{Reference: "r", SecretFile: filepath.Join(dir, "nope")}}}, `MAC secret "r"`},
		{"no secret_file", Authority{MACSecrets: []MACSecret{{Reference: "r"}}}, "secret_file is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := tt.c.Policy()
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("err = %v, want %q", err, tt.err)
			}
			if !reflect.DeepEqual(p, authority.Policy{}) {
				t.Errorf("partial policy returned: %+v", p)
			}
		})
	}
}

// TestAuthorityFieldsTranslated: every field of the YAML profile and requester rule has its
// counterpart in the authority's options and is carried over (Subject and SAN are checked by
// the compiler: they are converted, not copied).
func TestAuthorityFieldsTranslated(t *testing.T) {
	for _, pair := range [][2]reflect.Type{
		{reflect.TypeOf(Profile{}), reflect.TypeOf(authority.ProfileOptions{})},
		{reflect.TypeOf(RequesterRule{}), reflect.TypeOf(authority.RequesterRule{})},
	} {
		yamlT, authT := pair[0], pair[1]
		if yamlT.NumField() != authT.NumField() {
			t.Errorf("%v has %d fields, %v has %d", yamlT, yamlT.NumField(), authT, authT.NumField())
		}
		for i := range yamlT.NumField() {
			if _, ok := authT.FieldByName(yamlT.Field(i).Name); !ok {
				t.Errorf("%v.%s has no counterpart in %v", yamlT, yamlT.Field(i).Name, authT)
			}
		}
	}
	// A profile with every field set comes out with every field set.
	sub := Subject{CopySerialNumber: true, RequireCommonName: true, CommonNamePattern: "x", AllowAttributes: []string{"CN"},
		Organization: []string{"O"}, OrganizationalUnit: []string{"OU"}}
	san := SAN{Allow: []string{"dns"}, DNSPattern: "x", AllowWildcard: true}
	pc := Profile{Label: "l", Validity: time.Hour, KeyUsage: []string{"a"}, ExtKeyUsage: []string{"b"}, KeyType: "P-256",
		AcceptKeyTypes: []string{"P-256"}, RequirePoP: true, ManualApproval: true, RetryAfter: time.Second,
		Requesters: []RequesterRule{{Kind: "mac", From: []string{"*"}, Transports: []string{"coap"}, MayRevoke: true,
			BindCommonName: true, Subject: &sub, SAN: &san}},
		ReenrollFrom: []string{""}, EECertsPeers: true, SymmetricKeyForms: []string{"enveloped"}, Subject: sub, SAN: san}
	checkAllSet(t, "ProfileOptions", reflect.ValueOf(pc.options()))

	// DefaultRequesters says in the file's terms what the authority's default profile admits.
	back := Profile{Requesters: DefaultRequesters()}.options().Requesters
	if want := authority.DefaultProfile().Requesters; !reflect.DeepEqual(back, want) {
		t.Errorf("DefaultRequesters translate to %+v, want %+v", back, want)
	}
}

func checkAllSet(t *testing.T, path string, v reflect.Value) {
	t.Helper()
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			checkAllSet(t, path+"."+v.Type().Field(i).Name, v.Field(i))
		}
	case reflect.Slice:
		if v.Len() == 0 {
			t.Errorf("%s is empty after translation", path)
		}
		for i := range v.Len() {
			checkAllSet(t, path, v.Index(i))
		}
	case reflect.Pointer:
		if v.IsNil() {
			t.Errorf("%s is nil after translation", path)
			return
		}
		checkAllSet(t, path, v.Elem())
	default:
		// "" is a legitimate element (the default label in ReenrollFrom).
		if v.IsZero() && !(v.Kind() == reflect.String && strings.HasSuffix(path, "ReenrollFrom")) {
			t.Errorf("%s is zero after translation", path)
		}
	}
}
