package client_test

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"coapca/authority"
	"coapca/client"
	"coapca/cmp"
	"coapca/cmp/cmpserver"
	"coapca/internal/datadir"
	"coapca/kms"
	"coapca/store/sqlite"
)

// memTransport hands requests straight to the CMP service, optionally tampering with answers.
type memTransport struct {
	svc    *cmpserver.Service
	tamper func(m *cmp.Message)
	resign cmp.Protector
}

func (m *memTransport) RoundTrip(ctx context.Context, req []byte) ([]byte, error) {
	rsp := m.svc.Handle(ctx, &cmpserver.Request{Body: req, Transport: authority.TransportCoAP})
	if m.tamper == nil {
		return rsp.Body, nil
	}
	msg, err := cmp.Parse(rsp.Body)
	if err != nil {
		return nil, err
	}
	m.tamper(msg)
	out := &cmp.Message{Header: msg.Header, Body: msg.Body}
	return out.Marshal(m.resign)
}

func (m *memTransport) Close() error { return nil }

func cmpService(t *testing.T) (*cmpserver.Service, *datadir.Data) {
	t.Helper()
	dir := t.TempDir()
	d, err := datadir.Open(datadir.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "coapca.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	auth, err := authority.New(authority.Config{
		Profiles:   []authority.ProfileConfig{{Label: "manual", ManualApproval: true, RetryAfter: time.Second, Requesters: authority.DefaultProfile().Requesters}},
		MACSecrets: []authority.MACSecretConfig{{Reference: d.CMPSecretRef, SecretFile: d.Paths.CMPSecret}},
	}, authority.Options{Store: st, Signer: d.IssuingKey, Chain: d.IssuingChain()})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := cmpserver.New(auth, cmpserver.Options{Signer: d.CMPSignerKey, Cert: d.CMPSigner, Chain: d.CMPSignerChain()[1:]})
	if err != nil {
		t.Fatal(err)
	}
	return svc, d
}

func TestCMPClientChecks(t *testing.T) {
	svc, d := cmpService(t)
	ctx := context.Background()
	mac := &cmp.PBMProtection{Secret: d.CMPSecret, Reference: []byte(d.CMPSecretRef), Iterations: 1000}
	var tmpl cmp.CertTemplate
	if err := tmpl.SetSubject(pkix.Name{CommonName: "client-test"}); err != nil {
		t.Fatal(err)
	}
	key, _ := kms.GenerateKey("P-256")
	signer := &cmp.SignatureProtection{Signer: d.CMPSignerKey, Cert: d.CMPSigner, Chain: d.CMPSignerChain()[1:]}
	tests := []struct {
		name     string
		opts     client.CMPOptions
		tamper   func(*cmp.Message)
		resign   cmp.Protector
		wantErr  string
		progress bool
	}{
		{name: "MAC ok", opts: client.CMPOptions{Protection: mac, Secret: d.CMPSecret}},
		{name: "MAC answer, wrong secret", opts: client.CMPOptions{Protection: mac, Secret: []byte("other")}, wantErr: "protection does not verify"},
		{name: "signed answer, untrusted", opts: client.CMPOptions{Protection: mac, Secret: d.CMPSecret, Trust: []*x509.Certificate{d.ManufacturerCA}},
			tamper: func(*cmp.Message) {}, resign: signer, wantErr: "not trusted"},
		{name: "signed answer, trusted", opts: client.CMPOptions{Protection: mac, Secret: d.CMPSecret, Trust: []*x509.Certificate{d.Root}},
			tamper: func(*cmp.Message) {}, resign: signer},
		{name: "recipNonce replaced", opts: client.CMPOptions{Protection: mac, Secret: d.CMPSecret},
			tamper: func(m *cmp.Message) { m.Header.RecipNonce = []byte("0123456789abcdef") }, resign: mac, wantErr: "recipNonce"},
		{name: "polling gives up", opts: client.CMPOptions{Protection: mac, Secret: d.CMPSecret, Profile: "manual", Wait: 1500 * time.Millisecond},
			wantErr: "still waiting", progress: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			polls := 0
			tc.opts.OnProgress = func(client.CMPProgress) { polls++ }
			c := client.NewCMP(&memTransport{svc: svc, tamper: tc.tamper, resign: tc.resign}, tc.opts)
			res, err := c.Enroll(ctx, cmp.TypeIR, tmpl, key)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
			} else if err != nil || res.Cert == nil {
				t.Fatalf("enroll: %v", err)
			}
			if tc.progress && polls == 0 {
				t.Error("no progress reported while polling")
			}
		})
	}
}
