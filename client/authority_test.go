package client

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"coapca/authority"
	"coapca/coap"
	"coapca/est"
	"coapca/est/estcoap"
	"coapca/est/estserver"
	"coapca/est/esttest"
	"coapca/internal/testpki"
	"coapca/store/sqlite"
)

// TestESTWithRealAuthority runs the whole house over loopback DTLS: the EST-coaps binding, the
// EST service, the real authority (policy, pending approval) and the SQLite store. A device
// with a manufacturer IDevID enrolls, re-enrolls with its new certificate, and waits out a
// manual approval.
func TestESTWithRealAuthority(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	ca := esttest.New(t)

	// Manufacturer CA and an IDevID with a serialNumber.
	mfg := testpki.NewCA(t, "mfg CA")
	idev := mfg.Device(t, "device-7", "SN-0007")

	st, err := sqlite.Open(ctx, filepath.Join(dir, "ca.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	auth, err := authority.New(authority.Policy{
		TrustStores: []authority.TrustStore{{Name: "mfg", Roots: []*x509.Certificate{mfg.Cert}}},
		Profiles: []authority.ProfileOptions{
			{Label: "manual", ManualApproval: true, RetryAfter: 3 * time.Second, Requesters: authority.DefaultProfile().Requesters},
			{Label: "pop", RequirePoP: true, Requesters: authority.DefaultProfile().Requesters},
		},
	}, authority.Options{Store: st, Signer: ca.CAKey, Chain: []*x509.Certificate{ca.CA, ca.Root}})
	if err != nil {
		t.Fatal(err)
	}
	mux := coap.NewMux()
	estcoap.New(estserver.New(auth, nil), estcoap.Options{Labels: auth.Labels()}).Register(mux)
	srv := ca.StartDTLSWith(t, mux, auth.VerifyClient)

	dial := func(id tls.Certificate) *coap.Client {
		c, err := coap.Dial(ctx, "coaps://"+srv.Addr, coap.ClientOptions{DTLS: &coap.DTLSClientConfig{
			Certificates: []tls.Certificate{id}, RootCAs: Pool([]*x509.Certificate{ca.Root}), ServerName: "localhost"}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	newCSRFor := func(pw string) []byte {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, err := est.CreateCSR(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "device-7"}}, key, pw)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}

	// Initial enrollment with the IDevID; the profile copies its serialNumber.
	c := dial(tls.Certificate{Certificate: [][]byte{idev.Cert.Raw}, PrivateKey: idev.Key})
	e := NewEST(c, ESTOptions{})
	ldevKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := est.CreateCSR(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "device-7"}}, ldevKey, "")
	ldev, err := e.Enroll(ctx, csr)
	if err != nil {
		t.Fatal(err)
	}
	if ldev.Subject.SerialNumber != "SN-0007" {
		t.Errorf("serialNumber not copied: %s", ldev.Subject)
	}
	// PoP-linked enrollment under the "pop" label with this session's tls-unique.
	pop := NewEST(c, ESTOptions{Label: "pop"})
	if _, err := pop.Enroll(ctx, newCSRFor(base64.StdEncoding.EncodeToString(pop.TLSUnique()))); err != nil {
		t.Fatalf("PoP enrollment: %v", err)
	}
	var se *StatusError
	if _, err := pop.Enroll(ctx, newCSRFor("")); !errors.As(err, &se) || se.Code != codes.BadRequest {
		t.Fatalf("PoP required: %v", err)
	}
	// The IDevID cannot re-enroll (RFC 7030 §4.2.2: a certificate we issued is required).
	if _, err := e.Reenroll(ctx, newCSRFor("")); !errors.As(err, &se) || se.Code>>5 != 4 {
		t.Fatalf("reenroll with the IDevID: %v", err)
	}

	// Re-enrollment over a new session authenticated with the LDevID.
	c2 := dial(tls.Certificate{Certificate: [][]byte{ldev.Raw}, PrivateKey: ldevKey})
	re, err := NewEST(c2, ESTOptions{Accept: Cert}).Reenroll(ctx, newCSRFor(""))
	if err != nil {
		t.Fatal(err)
	}
	if re.Subject.String() != ldev.Subject.String() {
		t.Errorf("reenrolled subject %s, want %s", re.Subject, ldev.Subject)
	}

	// Manual approval: 5.03 + Max-Age until approved, then the identical CSR gets the cert.
	manual := NewEST(c, ESTOptions{Label: "manual"})
	mcsr := newCSRFor("")
	var pe *PendingError
	if _, err := manual.Enroll(ctx, mcsr); !errors.As(err, &pe) || pe.RetryAfter != 3*time.Second {
		t.Fatalf("manual: %v", err)
	}
	id := strings.Fields(strings.TrimPrefix(pe.Diagnostic, "request "))[0]
	if _, err := manual.Enroll(ctx, mcsr); !errors.As(err, &pe) || !strings.Contains(pe.Diagnostic, id) {
		t.Fatalf("resend must hit the same pending entry %s: %v", id, err)
	}
	if err := auth.Approve(ctx, id); err != nil {
		t.Fatal(err)
	}
	manual = NewEST(c, ESTOptions{Label: "manual", Wait: time.Minute})
	manual.sleep = func(context.Context, time.Duration) error { return nil }
	if _, err := manual.Enroll(ctx, mcsr); err != nil {
		t.Fatalf("after approval: %v", err)
	}

	// CSR attributes and server-side key generation through the real profile.
	att, err := pop.CSRAttrs(ctx)
	if err != nil || !att.WantsChallengePassword() || att.KeyType() != "P-256" {
		t.Fatalf("att: %v", err)
	}
	sk, err := e.ServerKeyGen(ctx, newCSRFor(""))
	if err != nil {
		t.Fatal(err)
	}
	if !sk.Key.(*ecdsa.PrivateKey).PublicKey.Equal(sk.Cert.PublicKey) {
		t.Error("server keygen: key and certificate differ")
	}
}
