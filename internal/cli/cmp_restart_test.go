package cli

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509/pkix"
	"io"
	"net/http"
	"testing"
	"time"

	"coapca/authority"
	"coapca/cmp"
	"coapca/internal/config"
	"coapca/internal/server"
)

// TestCMPUnconfirmedRevokedAfterRestart: over HTTP on loopback, a device gets a certificate
// without implicitConfirm and never sends certConf; the server stops, the confirmation
// deadline passes while it is down, and the server that starts on the same data directory
// revokes the certificate (RFC 9810 §5.1.1.2). Before the fix the transaction lived only in
// memory and the certificate stayed valid for ever.
func TestCMPUnconfirmedRevokedAfterRestart(t *testing.T) {
	dir := t.TempDir()
	tweak := func(c *config.Config) {
		c.Listen.HTTP = "127.0.0.1:0"
		c.CMP.ConfirmWait = time.Hour
	}
	s := testServerAt(t, dir, tweak)

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var tmpl cmp.CertTemplate
	if err := tmpl.SetSubject(pkix.Name{CommonName: "never-confirmed"}); err != nil {
		t.Fatal(err)
	}
	crm, err := cmp.NewCertReqMsg(0, tmpl, nil, key)
	if err != nil {
		t.Fatal(err)
	}
	hdr, err := cmp.NewRequestHeader(cmp.NullDN(), cmp.NullDN(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	prot := &cmp.PBMProtection{Secret: s.data.CMPSecret, Reference: []byte(s.data.CMPSecretRef), Iterations: 1000}
	der, err := (&cmp.Message{Header: hdr, Body: &cmp.CertReqMessages{BodyType: cmp.TypeIR, Requests: []cmp.CertReqMsg{crm}}}).Marshal(prot)
	if err != nil {
		t.Fatal(err)
	}
	rsp, err := http.Post(s.httpURL+"/.well-known/cmp", "application/pkixcmp", bytes.NewReader(der))
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(rsp.Body)
	rsp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	m, err := cmp.Parse(body)
	if err != nil {
		t.Fatal(err)
	}
	res, err := cmp.ParseEnrollResponse(m, 0)
	if err != nil || res.Cert == nil {
		t.Fatalf("ir: %v", err)
	}
	serial := authority.FormatSerial(res.Cert.SerialNumber)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// While the server is down, the deadline passes: move it into the past in the store (what
	// an hour of downtime would do).
	ctx := context.Background()
	h, err := server.OpenHouse(ctx, s.cfg, s.log)
	if err != nil {
		t.Fatal(err)
	}
	due, err := h.Authority().DueUnconfirmed(ctx, time.Now().Add(2*time.Hour), 0)
	if err != nil || len(due) != 1 || due[0].Serial != serial {
		t.Fatalf("the unconfirmed certificate is not in the store: %v, %v", due, err)
	}
	due[0].Deadline = time.Now().Add(-time.Minute)
	if err := h.Authority().AddUnconfirmed(ctx, due[0]); err != nil {
		t.Fatal(err)
	}
	if rec, err := h.Authority().Certificate(ctx, serial); err != nil || rec.Revoked() {
		t.Fatalf("revoked before the restart: %v", err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := testServerAt(t, dir, tweak) // sweeps the store at start
	rec, err := s2.auth.Certificate(ctx, serial)
	if err != nil {
		t.Fatal(err)
	}
	if !rec.Revoked() {
		t.Fatal("the certificate never confirmed is still valid after the restart")
	}
	if due, err := s2.auth.DueUnconfirmed(ctx, time.Now().Add(2*time.Hour), 0); err != nil || len(due) != 0 {
		t.Errorf("entries left: %v, %v", due, err)
	}
}
