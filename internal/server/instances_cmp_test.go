package server

import (
	"context"
	"crypto/x509/pkix"
	"testing"
	"time"

	"coapca/authority"
	"coapca/client"
	"coapca/cmp"
	"coapca/kms"
)

// switching sends the first message of a transaction to one instance and every later one
// (pollReq, certConf) to another, as a load balancer without affinity, or a restart behind
// one, would.
type switching struct {
	first, rest client.CMPTransport
	sent        int
	where       []int // which instance got each message
}

func (s *switching) RoundTrip(ctx context.Context, req []byte) ([]byte, error) {
	s.sent++
	if s.sent == 1 {
		s.where = append(s.where, 0)
		return s.first.RoundTrip(ctx, req)
	}
	s.where = append(s.where, 1)
	return s.rest.RoundTrip(ctx, req)
}

func (s *switching) Close() error { s.first.Close(); return s.rest.Close() }

// TestCMPTransactionAcrossInstances: the certConf, and the pollReq after an approval, of a
// CMP transaction reach another instance than its first message. The transaction is kept in
// the database, so that instance continues it: the certificate is confirmed (and not revoked
// at the certConf deadline), or delivered after the approval. Kept in one instance's memory,
// the other instance would answer "no open transaction with this transactionID".
func TestCMPTransactionAcrossInstances(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	inst, _ := startInstances(t, 2, nil)
	d := inst[0].Data()
	tests := []struct {
		name    string
		profile string
	}{
		{"certConf on the other instance", ""},
		{"pollReq after approval on the other instance, then certConf there", "manual"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tr switching
			var err error
			if tr.first, err = client.DialCMP(ctx, inst[0].HTTPURL(), client.CMPTransportOptions{}); err != nil {
				t.Fatal(err)
			}
			if tr.rest, err = client.DialCMP(ctx, inst[1].HTTPURL(), client.CMPTransportOptions{}); err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			approved := 0
			c := client.NewCMP(&tr, client.CMPOptions{
				Protection: &cmp.PBMProtection{Secret: d.CMPSecret, Reference: []byte(d.CMPSecretRef), Iterations: 1000},
				Secret:     d.CMPSecret, Trust: d.IssuingChain(), Profile: tt.profile, Wait: time.Minute,
				// Before the first pollReq, the operator approves on instance 1.
				OnProgress: func(client.CMPProgress) {
					if approved > 0 {
						return
					}
					pend, err := inst[1].Authority().ListPending(ctx, authority.PendingFilter{Status: authority.StatusPending, Label: "manual"})
					if err != nil || len(pend) != 1 {
						t.Errorf("instance 1 sees %d pending requests, %v", len(pend), err)
						return
					}
					if err := inst[1].Authority().Approve(ctx, pend[0].ID); err != nil {
						t.Error(err)
					}
					approved++
				}})
			key, err := kms.GenerateKey("P-256")
			if err != nil {
				t.Fatal(err)
			}
			var tmpl cmp.CertTemplate
			if err := tmpl.SetSubject(pkix.Name{CommonName: "switching-" + tt.profile}); err != nil {
				t.Fatal(err)
			}
			e, err := c.Enroll(ctx, cmp.TypeIR, tmpl, key)
			if err != nil {
				t.Fatalf("enrollment (messages to instances %v): %v", tr.where, err)
			}
			if e.ImplicitConfirm || tr.sent < 2 {
				t.Fatalf("%d messages, implicitConfirm %v: the transaction did not continue on instance 1", tr.sent, e.ImplicitConfirm)
			}
			if (tt.profile == "manual") != (approved == 1) {
				t.Fatalf("approved %d times", approved)
			}
			sn := e.Cert.SerialNumber.Text(16)
			for i, s := range inst {
				rec, err := s.Authority().Certificate(ctx, sn)
				if err != nil || rec.Revoked() {
					t.Errorf("instance %d: certificate %s = %+v, %v; want recorded and not revoked", i, sn, rec, err)
				}
			}
			// Confirmed: nothing waits for certConf any more, so no sweep revokes it.
			due, err := inst[0].Authority().DueUnconfirmed(ctx, time.Now().Add(24*time.Hour), 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, u := range due {
				if u.Serial == sn {
					t.Errorf("certificate %s still waits for certConf after instance 1 confirmed it", sn)
				}
			}
		})
	}
}
