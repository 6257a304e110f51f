package cmpserver_test

import (
	"context"
	"testing"
	"time"

	"coapca/cmp"
	"coapca/cmp/cmpserver"
	"coapca/internal/testpki"
)

// TestTransactionOnTwoInstances: two services (server instances) share one store. The ir of a
// transaction reaches instance A, its certConf instance B, which continues the transaction
// from the store and confirms the certificate. When the confirmation deadline has passed, A's
// sweep must not revoke it: A's own copy of the transaction (issued, never confirmed there)
// is stale, and the store says the certificate was confirmed.
func TestTransactionOnTwoInstances(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, cmpserver.Options{})
	opts := func() cmpserver.Options {
		return cmpserver.Options{Signer: e.data.CMPSignerKey, Cert: e.data.CMPSigner, Chain: e.data.CMPSignerChain()[1:],
			ConfirmWait: time.Minute, Confirmations: e.auth, Transactions: e.auth, Now: e.clock}
	}
	a, err := cmpserver.New(e.auth, opts())
	if err != nil {
		t.Fatal(err)
	}
	b, err := cmpserver.New(e.auth, opts())
	if err != nil {
		t.Fatal(err)
	}

	e.svc = a
	req := &cmp.Message{Header: e.hdr(nil, nil), Body: e.certReq(cmp.TypeIR, "two-instances", testpki.NewKey(t))}
	rsp := e.send(req, e.mac(), "", "")
	res, err := cmp.ParseEnrollResponse(rsp, 0)
	if err != nil || res.Cert == nil {
		t.Fatalf("ir on A: %v", err)
	}
	e.svc = b
	cs, _ := cmp.NewCertStatus(0, res.Cert, nil)
	conf := e.send(&cmp.Message{Header: e.hdr(req.Header.TransactionID, rsp.Header.SenderNonce),
		Body: &cmp.CertConfirmContent{Statuses: []cmp.CertStatus{cs}}}, e.mac(), "", "")
	if conf.Body.Type() != cmp.TypePKIConf {
		t.Fatalf("certConf on B answered %s: %v", conf.Body.Type(), conf.Failed())
	}
	e.advance(2 * time.Minute)
	a.Sweep(ctx)
	b.Sweep(ctx)
	rec, err := e.auth.Certificate(ctx, res.Cert.SerialNumber.Text(16))
	if err != nil || rec.Revoked() {
		t.Fatalf("certificate confirmed on B: revoked %v, %v; want not revoked after A's sweep", rec != nil && rec.Revoked(), err)
	}
	// A second certConf (to either instance) finds the transaction over.
	e.svc = a
	again := e.send(&cmp.Message{Header: e.hdr(req.Header.TransactionID, conf.Header.SenderNonce),
		Body: &cmp.CertConfirmContent{Statuses: []cmp.CertStatus{cs}}}, e.mac(), "", "")
	if again.Body.Type() != cmp.TypeError {
		t.Fatalf("second certConf on A answered %s, want an error: the transaction ended on B", again.Body.Type())
	}
}

// TestUnconfirmedOnTwoInstances: a certificate issued on A and never confirmed anywhere is
// revoked at its deadline, whichever instance sweeps.
func TestUnconfirmedOnTwoInstances(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, cmpserver.Options{})
	mk := func() *cmpserver.Service {
		s, err := cmpserver.New(e.auth, cmpserver.Options{Signer: e.data.CMPSignerKey, Cert: e.data.CMPSigner,
			Chain: e.data.CMPSignerChain()[1:], ConfirmWait: time.Minute, Confirmations: e.auth, Transactions: e.auth, Now: e.clock})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, sweeper := range []string{"A", "B"} {
		t.Run("swept by "+sweeper, func(t *testing.T) {
			a, b := mk(), mk()
			e.svc = a
			rsp := e.send(&cmp.Message{Header: e.hdr(nil, nil), Body: e.certReq(cmp.TypeIR, "never-confirmed", testpki.NewKey(t))}, e.mac(), "", "")
			res, err := cmp.ParseEnrollResponse(rsp, 0)
			if err != nil || res.Cert == nil {
				t.Fatalf("ir: %v", err)
			}
			e.advance(2 * time.Minute)
			map[string]*cmpserver.Service{"A": a, "B": b}[sweeper].Sweep(ctx)
			rec, err := e.auth.Certificate(ctx, res.Cert.SerialNumber.Text(16))
			if err != nil || !rec.Revoked() {
				t.Fatalf("unconfirmed certificate after the deadline: revoked %v, %v; want revoked", rec != nil && rec.Revoked(), err)
			}
		})
	}
}
