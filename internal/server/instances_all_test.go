package server

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"coapca/authority"
	"coapca/client"
	"coapca/cmp"
	"coapca/coap"
	"coapca/internal/config"
	"coapca/kms"
	"coapca/oscore"
)

// annWatch observes the CMP announcements (RFC 9482 §2.6) of one instance.
type annWatch struct {
	who  string
	msgs chan *cmp.Message
	bad  chan error
}

// watchAnnouncements registers an observer of s's …/ann and returns once the registration
// is answered (the server registers before it answers).
func watchAnnouncements(t *testing.T, ctx context.Context, s *Server, who string) *annWatch {
	t.Helper()
	c, err := coap.Dial(ctx, s.CoAPURL(), coap.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	octx, cancel := context.WithCancel(ctx)
	w := &annWatch{who: who, msgs: make(chan *cmp.Message, 256), bad: make(chan error, 1)}
	first := make(chan struct{})
	var once sync.Once
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Observe(octx, "/.well-known/cmp/ann", func(r *coap.Response) {
			once.Do(func() { close(first) })
			if len(r.Payload) == 0 {
				return // the registration's first answer
			}
			m, err := cmp.Parse(r.Payload)
			if err != nil {
				select {
				case w.bad <- fmt.Errorf("%s: announcement: %w", who, err):
				default:
				}
				return
			}
			w.msgs <- m
		})
	}()
	t.Cleanup(func() { cancel(); <-done; c.Close() })
	select {
	case <-first:
	case <-ctx.Done():
		t.Fatalf("%s: no answer to the observation", who)
	}
	return w
}

// until reads announcements until one satisfies pred; every certificate announcement read on
// the way is passed to cann.
func (w *annWatch) until(t *testing.T, what string, pred func(*cmp.Message) bool, cann func(*cmp.CertAnn)) {
	t.Helper()
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
	for {
		select {
		case err := <-w.bad:
			t.Fatal(err)
		case m := <-w.msgs:
			if ca, ok := m.Body.(*cmp.CertAnn); ok && cann != nil {
				cann(ca)
			}
			if pred(m) {
				return
			}
		case <-timeout.C:
			t.Fatalf("%s's observer got no %s within 30 s", w.who, what)
		}
	}
}

// drain passes every certificate announcement already received to cann.
func (w *annWatch) drain(cann func(*cmp.CertAnn)) {
	for {
		select {
		case m := <-w.msgs:
			if ca, ok := m.Body.(*cmp.CertAnn); ok {
				cann(ca)
			}
		default:
			return
		}
	}
}

// TestTwoInstancesEverythingAtOnce is the test of issue 12 item 2 in one piece: two
// instances on one PostgreSQL database, each with an observer of its CMP announcements, under
// concurrent load of every kind at once — EST-coaps enrollments, CMP enrollments implicitly
// confirmed and confirmed by a certConf sent to the other instance, a CMP enrollment under
// manual approval whose pollReq and certConf go to the other instance (approved there), and
// EST-oscore enrollments of one device whose one pre-shared context both instances hold,
// alternating between them. Then, together:
//
//   - every delivered serial is unique, recorded, not revoked, and known to both instances;
//   - no OSCORE sequence number is sent twice by the two instances (RFC 8613 §7.2.1: the
//     same nonce under the same key), and both did send with numbers of their own;
//   - nothing waits for a certConf that was sent (no sweep would revoke a confirmed
//     certificate);
//   - each observer heard only certificates that were delivered, and, once the load is over,
//     a certificate accepted on the other instance (store events, LISTEN/NOTIFY);
//   - revocations made one by one on alternating instances reach both observers (rann, or a
//     crlann listing them),
//     and the CRL fetched from the other instance has a number larger than every earlier one
//     and lists every revocation made so far on either instance.
//
// An attack this refuses, among others: a load balancer sends a device's certConf, pollReq or
// OSCORE request to whichever instance it likes while both are busy; an instance that kept
// transactions, sequence numbers, approvals or serials for itself would answer wrongly,
// reuse a nonce, or deliver a serial twice.
func TestTwoInstancesEverythingAtOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	srvFile, cliFile := filepath.Join(dir, "sensor-17.yaml"), filepath.Join(dir, "client.yaml")
	for f, body := range map[string]string{srvFile: sharedServerContext, cliFile: sharedClientContext} {
		if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	inst, _ := startInstances(t, 2, func(c *config.Config) { c.OSCOREContexts = []string{srvFile} })
	names := []string{"instance 0", "instance 1"}
	watch := []*annWatch{watchAnnouncements(t, ctx, inst[0], names[0]), watchAnnouncements(t, ctx, inst[1], names[1])}

	// The OSCORE device: one context, its sequence numbers in memory; a relay in front of
	// each instance records the sequence numbers the instances send.
	_, p, err := LoadOSCOREContext(cliFile)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := oscore.NewContext(p)
	if err != nil {
		t.Fatal(err)
	}
	rec := &pivRecorder{pivs: map[uint64]string{}}
	oscoreAddr := []string{
		relay(t, inst[0].CoAPURL()[len("coap://"):], names[0], rec),
		relay(t, inst[1].CoAPURL()[len("coap://"):], names[1], rec),
	}

	type delivered struct {
		what  string
		where int // the instance that got the first message
		cmp   bool
		cert  *x509.Certificate
		err   error
	}
	const perKind = 4
	results := make(chan delivered, 5*perKind+1)
	var wg sync.WaitGroup
	for i := range perKind {
		s, other := inst[i%2], inst[(i+1)%2]
		wg.Go(func() {
			cn := fmt.Sprintf("est-%d", i)
			c, err := estEnroll(ctx, s, "", cn, newCSR(t, cn))
			results <- delivered{cn, i % 2, false, c, err}
		})
		wg.Go(func() {
			cn := fmt.Sprintf("cmp-implicit-%d", i)
			c, err := cmpEnroll(ctx, s, cn, true)
			results <- delivered{cn, i % 2, true, c, err}
		})
		wg.Go(func() {
			cn := fmt.Sprintf("cmp-certconf-%d", i)
			c, err := cmpEnrollAt(ctx, s, other, cn, false)
			results <- delivered{cn, i % 2, true, c, err}
		})
	}
	// EST-oscore: one device, one context, its requests alternating between the instances
	// while the rest of the load runs.
	wg.Go(func() {
		for i := range 2 * perKind {
			cn := fmt.Sprintf("oscore-%d", i)
			c, err := func() (*x509.Certificate, error) {
				conn, err := client.DialEST(ctx, "coap://"+oscoreAddr[i%2], client.ESTDialOptions{OSCORE: dev})
				if err != nil {
					return nil, err
				}
				defer conn.Close()
				return client.NewEST(conn.Client, client.ESTOptions{Trust: inst[i%2].Data().IssuingChain()}).Enroll(ctx, newCSR(t, cn))
			}()
			results <- delivered{cn, i % 2, false, c, err}
		}
	})
	// A CMP enrollment under manual approval: the ir reaches instance 0, the operator approves
	// on instance 1, the pollReq and the certConf reach instance 1.
	wg.Go(func() {
		cn := "cmp-approved-elsewhere"
		c, err := func() (*x509.Certificate, error) {
			d := inst[0].Data()
			var tr switching
			var err error
			if tr.first, err = client.DialCMP(ctx, inst[0].HTTPURL(), client.CMPTransportOptions{}); err != nil {
				return nil, err
			}
			if tr.rest, err = client.DialCMP(ctx, inst[1].HTTPURL(), client.CMPTransportOptions{}); err != nil {
				tr.first.Close()
				return nil, err
			}
			defer tr.Close()
			var approveErr error
			approved := false
			cl := client.NewCMP(&tr, client.CMPOptions{
				Protection: &cmp.PBMProtection{Secret: d.CMPSecret, Reference: []byte(d.CMPSecretRef), Iterations: 1000},
				Secret:     d.CMPSecret, Trust: d.IssuingChain(), Profile: "manual", Wait: time.Minute,
				OnProgress: func(client.CMPProgress) {
					if approved {
						return
					}
					approved = true
					pend, err := inst[1].Authority().ListPending(ctx, authority.PendingFilter{Status: authority.StatusPending, Label: "manual"})
					if err != nil || len(pend) != 1 {
						approveErr = fmt.Errorf("instance 1 sees %d pending requests (%v), want the one made on instance 0", len(pend), err)
						return
					}
					approveErr = inst[1].Authority().Approve(ctx, pend[0].ID)
				}})
			key, err := kms.GenerateKey("P-256")
			if err != nil {
				return nil, err
			}
			var tmpl cmp.CertTemplate
			if err := tmpl.SetSubject(pkix.Name{CommonName: cn}); err != nil {
				return nil, err
			}
			e, err := cl.Enroll(ctx, cmp.TypeIR, tmpl, key)
			if err != nil {
				return nil, fmt.Errorf("messages to instances %v: %w", tr.where, err)
			}
			if approveErr != nil {
				return nil, approveErr
			}
			if !approved || e.ImplicitConfirm || tr.sent < 3 {
				return nil, fmt.Errorf("approved %v, implicitConfirm %v, %d messages: the transaction did not continue on instance 1", approved, e.ImplicitConfirm, tr.sent)
			}
			return e.Cert, nil
		}()
		results <- delivered{cn, 0, true, c, err}
	})
	wg.Wait()
	close(results)

	serials := map[string]delivered{}
	for r := range results {
		if r.err != nil {
			t.Errorf("%s (first message to instance %d): %v", r.what, r.where, r.err)
			continue
		}
		sn := r.cert.SerialNumber.Text(16)
		if other, dup := serials[sn]; dup {
			t.Errorf("serial %s delivered twice: to %s and %s", sn, other.what, r.what)
		}
		serials[sn] = r
	}
	if t.Failed() {
		t.FailNow()
	}
	if len(serials) != 5*perKind+1 {
		t.Fatalf("%d certificates delivered, want %d", len(serials), 5*perKind+1)
	}

	// Every serial recorded, known to both, not revoked; nothing waits for a certConf.
	for sn, d := range serials {
		for i, s := range inst {
			rec, err := s.Authority().Certificate(ctx, sn)
			if err != nil || rec.Revoked() {
				t.Errorf("%s: instance %d has certificate %s as %+v, %v; want recorded and not revoked", d.what, i, sn, rec, err)
			}
		}
	}
	due, err := inst[1].Authority().DueUnconfirmed(ctx, time.Now().Add(24*time.Hour), 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range due {
		if d, ok := serials[u.Serial]; ok {
			t.Errorf("%s's certificate %s still waits for certConf", d.what, u.Serial)
		}
	}

	// OSCORE: no sequence number sent twice, both instances sent with their own.
	rec.mu.Lock()
	for _, d := range rec.dups {
		t.Error(d + ": the same nonce under the same key")
	}
	senders := map[string]bool{}
	for _, who := range rec.pivs {
		senders[who] = true
	}
	rec.mu.Unlock()
	if len(senders) != 2 {
		t.Errorf("OSCORE sequence numbers seen first from %v; both instances must have sent with their own", senders)
	}

	// Announcements heard during the load are only of delivered CMP certificates (under load
	// a server may send only the newest of several notifications, RFC 7641 §4.5.2, so not
	// every one need arrive). Then, with the load over, a certificate accepted on the other
	// instance is the newest state, and must reach each observer (store events).
	notes := make([]func(*cmp.CertAnn), len(watch))
	for i, w := range watch {
		notes[i] = func(ca *cmp.CertAnn) {
			sn := ca.Cert.SerialNumber.Text(16)
			if d, ok := serials[sn]; !ok || !d.cmp {
				t.Errorf("%s announced certificate %s, which is no delivered CMP certificate", w.who, sn)
			}
		}
		w.drain(notes[i])
	}
	for i, w := range watch {
		other := (i + 1) % 2
		cn := fmt.Sprintf("announced-to-%d", i)
		c, err := cmpEnroll(ctx, inst[other], cn, true)
		if err != nil {
			t.Fatal(err)
		}
		sn := c.SerialNumber.Text(16)
		serials[sn] = delivered{cn, other, true, c, nil}
		w.until(t, "cann of "+cn+", accepted on "+names[other], func(m *cmp.Message) bool {
			ca, ok := m.Body.(*cmp.CertAnn)
			return ok && ca.Cert.SerialNumber.Text(16) == sn
		}, notes[i])
	}

	// Revocations one at a time, alternating instances: each reaches both observers (rann),
	// and the other instance's CRL lists it and every earlier one under a larger number.
	last := big.NewInt(0)
	var revoked []string
	n := 0
	for sn := range serials {
		if n == 4 {
			break
		}
		by, other := n%2, (n+1)%2
		if err := inst[by].Authority().Revoke(ctx, sn, authority.ReasonSuperseded); err != nil {
			t.Fatal(err)
		}
		revoked = append(revoked, sn)
		// The revocation is announced as rann and as a crlann; under load a server may send
		// only the newer of two notifications (RFC 7641 §4.5.2), so either tells the observer.
		for _, w := range watch {
			w.until(t, "rann or crlann of "+sn, func(m *cmp.Message) bool {
				switch b := m.Body.(type) {
				case *cmp.RevAnn:
					return b.CertID.Serial.Text(16) == sn
				case *cmp.CRLAnn:
					for _, der := range b.CRLs {
						crl, err := x509.ParseRevocationList(der)
						if err != nil {
							t.Errorf("%s: crlann: %v", w.who, err)
							continue
						}
						for _, e := range crl.RevokedCertificateEntries {
							if e.SerialNumber.Text(16) == sn {
								return true
							}
						}
					}
				}
				return false
			}, nil)
		}
		der, err := inst[other].Authority().CRL(ctx)
		if err != nil {
			t.Fatal(err)
		}
		crl, err := x509.ParseRevocationList(der)
		if err != nil {
			t.Fatal(err)
		}
		if crl.Number.Cmp(last) <= 0 {
			t.Errorf("CRL number %v after %v: not increasing across instances", crl.Number, last)
		}
		last = crl.Number
		listed := map[string]bool{}
		for _, e := range crl.RevokedCertificateEntries {
			listed[e.SerialNumber.Text(16)] = true
		}
		for _, r := range revoked {
			if !listed[r] {
				t.Errorf("CRL %v of %s misses %s", crl.Number, names[other], r)
			}
		}
		n++
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatal("the test ran out of time")
	}
}
