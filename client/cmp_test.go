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
	"coapca/internal/testpki"
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
	// Keep the answer's certificates (the issued certificate's chain); the new protection's
	// certificate goes first.
	extra := msg.ExtraCerts
	if msg.ProtectionKind() == cmp.ProtectionSignature && len(extra) > 0 {
		extra = extra[1:]
	}
	out := &cmp.Message{Header: msg.Header, Body: msg.Body, ExtraCerts: extra}
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
	auth, err := authority.New(authority.Policy{
		Profiles:   []authority.ProfileOptions{{Label: "manual", ManualApproval: true, RetryAfter: time.Second, Requesters: authority.DefaultProfile().Requesters}},
		MACSecrets: []authority.MACSecret{{Reference: d.CMPSecretRef, Secret: d.CMPSecret}},
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

// foreignCert is a certificate for pub from a CA outside the trust anchors.
func foreignCert(t *testing.T, pub any) (*x509.Certificate, *x509.Certificate) {
	t.Helper()
	root := testpki.NewCA(t, "foreign root")
	ca := root.SubCA(t, "foreign issuing CA")
	c := ca.Issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "client-test"}, KeyUsage: x509.KeyUsageDigitalSignature}, pub)
	return c, root.Cert
}

// replaceIssued swaps the issued certificate of an ip/cp (and, when roots is not nil, caPubs).
func replaceIssued(cert *x509.Certificate, roots []*x509.Certificate, extra ...*x509.Certificate) func(*cmp.Message) {
	return func(m *cmp.Message) {
		rep, ok := m.Body.(*cmp.CertRepMessage)
		if !ok {
			return
		}
		for i := range rep.Responses {
			if rep.Responses[i].Cert != nil {
				rep.Responses[i].Cert = cert
			}
		}
		if roots != nil {
			rep.CAPubs = roots
		}
		m.ExtraCerts = append(m.ExtraCerts, extra...)
	}
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
	// Certificates that chain to the anchors but are not the CA's CMP signer: the DTLS server
	// certificate (serverAuth) and a manufacturer-issued device identity (clientAuth).
	asServer := &cmp.SignatureProtection{Signer: d.ServerKey, Cert: d.Server, Chain: []*x509.Certificate{d.IssuingCA}}
	asDevice := &cmp.SignatureProtection{Signer: d.DeviceKey, Cert: d.Device}
	foreign, foreignRoot := foreignCert(t, key.Public())
	tests := []struct {
		name     string
		opts     client.CMPOptions
		tamper   func(*cmp.Message)
		resign   cmp.Protector
		wantErr  string
		progress bool
		check    func(t *testing.T, res *client.CMPEnrollment)
	}{
		{name: "MAC ok", opts: client.CMPOptions{Protection: mac, Secret: d.CMPSecret, Trust: []*x509.Certificate{d.Root}}},
		// RFC 9483 §4.1.5: the caPubs of an answer MAC-protected with our secret are anchors.
		{name: "MAC ok, caPubs as the anchor", opts: client.CMPOptions{Protection: mac, Secret: d.CMPSecret},
			check: func(t *testing.T, res *client.CMPEnrollment) {
				if len(res.Chain) != 3 || !res.Chain[2].Equal(d.Root) {
					t.Errorf("validated chain %d certificates, want cert, issuing CA, root", len(res.Chain))
				}
			}},
		{name: "MAC answer, wrong secret", opts: client.CMPOptions{Protection: mac, Secret: []byte("other")}, wantErr: "protection does not verify"},
		{name: "signed answer, untrusted", opts: client.CMPOptions{Protection: mac, Secret: d.CMPSecret, Trust: []*x509.Certificate{d.ManufacturerCA}},
			tamper: func(*cmp.Message) {}, resign: signer, wantErr: "not trusted"},
		{name: "signed answer, trusted", opts: client.CMPOptions{Protection: mac, Secret: d.CMPSecret, Trust: []*x509.Certificate{d.Root}},
			tamper: func(*cmp.Message) {}, resign: signer},
		// Attack: a MAC-protected request answered with a signature by a certificate that
		// merely chains to the anchors.
		{name: "MAC request, answer signed by the DTLS server certificate", opts: client.CMPOptions{Protection: mac, Secret: d.CMPSecret, Trust: []*x509.Certificate{d.Root}},
			tamper: func(*cmp.Message) {}, resign: asServer, wantErr: "neither id-kp-cmcCA nor id-kp-cmcRA"},
		{name: "answer signed by a device whose manufacturer is a trust anchor", opts: client.CMPOptions{Protection: mac, Secret: d.CMPSecret,
			Trust: []*x509.Certificate{d.Root, d.ManufacturerCA}}, tamper: func(*cmp.Message) {}, resign: asDevice, wantErr: "neither id-kp-cmcCA nor id-kp-cmcRA"},
		{name: "pinned signer", opts: client.CMPOptions{Protection: mac, Secret: d.CMPSecret, Trust: []*x509.Certificate{d.Root}, ServerCert: d.CMPSigner},
			tamper: func(*cmp.Message) {}, resign: signer},
		{name: "pinned signer, answer by another authorized signer", opts: client.CMPOptions{Protection: mac, Secret: d.CMPSecret,
			Trust: []*x509.Certificate{d.Root}, ServerCert: d.Server}, tamper: func(*cmp.Message) {}, resign: signer, wantErr: "not by the expected CMP signer"},
		// Attack: an authenticated answer whose certificate comes from another CA is rejected
		// in certConf, not saved.
		{name: "issued certificate from a CA outside the anchors", opts: client.CMPOptions{Protection: mac, Secret: d.CMPSecret, Trust: []*x509.Certificate{d.Root}},
			tamper: replaceIssued(foreign, nil), resign: signer, wantErr: "does not chain to the trust anchors"},
		// Attack: caPubs of a signed answer are not trust anchors (only a MAC with our secret
		// authenticates them).
		{name: "signed answer with its own caPubs", opts: client.CMPOptions{Protection: mac, Secret: d.CMPSecret, Trust: []*x509.Certificate{d.Root}},
			tamper: replaceIssued(foreign, []*x509.Certificate{foreignRoot}), resign: signer, wantErr: "does not chain to the trust anchors"},
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
				if res != nil {
					t.Fatalf("refused enrollment returned a certificate")
				}
			} else if err != nil || res.Cert == nil {
				t.Fatalf("enroll: %v", err)
			} else if len(res.Chain) < 2 || !res.Chain[0].Equal(res.Cert) {
				t.Fatalf("no validated chain for the issued certificate")
			}
			if tc.check != nil && res != nil {
				tc.check(t, res)
			}
			if tc.progress && polls == 0 {
				t.Error("no progress reported while polling")
			}
		})
	}
}

// TestCMPGenMAuthenticated: genm answers (caCerts, RFC 9483 §4.3.1) are believed only from the
// CA: an answer signed by another certificate under the trust anchors returns nothing.
func TestCMPGenMAuthenticated(t *testing.T) {
	svc, d := cmpService(t)
	ctx := context.Background()
	mac := &cmp.PBMProtection{Secret: d.CMPSecret, Reference: []byte(d.CMPSecretRef), Iterations: 1000}
	asServer := &cmp.SignatureProtection{Signer: d.ServerKey, Cert: d.Server, Chain: []*x509.Certificate{d.IssuingCA}}
	tests := []struct {
		name    string
		resign  cmp.Protector
		wantErr string
	}{
		{"MAC answer", nil, ""},
		{"signed by the DTLS server certificate", asServer, "neither id-kp-cmcCA nor id-kp-cmcRA"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := &memTransport{svc: svc}
			if tc.resign != nil {
				tr.tamper, tr.resign = func(*cmp.Message) {}, tc.resign
			}
			c := client.NewCMP(tr, client.CMPOptions{Protection: mac, Secret: d.CMPSecret, Trust: []*x509.Certificate{d.Root}})
			itavs, err := c.GenM(ctx, cmp.InfoTypeAndValue{Type: cmp.OIDITCACerts})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || itavs != nil {
					t.Fatalf("genm: %d ITAVs, error %v, want %q", len(itavs), err, tc.wantErr)
				}
				return
			}
			if err != nil || len(itavs) != 1 {
				t.Fatalf("genm: %d ITAVs, %v", len(itavs), err)
			}
		})
	}
}
