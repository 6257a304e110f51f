package server

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"coapca/authority"
	"coapca/cmp"
	"coapca/cmp/cmpcoap"
	"coapca/cmp/cmphttp"
	"coapca/cmp/cmpserver"
	"coapca/coap"
)

// registerCMP registers the CMP front doors: RFC 9482 on s.secureMux (coaps://) and
// s.plainMux (coap://, where the PKIMessage protection is the security), RFC 9811 on
// s.httpMux. Announcements go to the observers of …/ann on both CoAP servers: certificates
// accepted and revoked through CMP at once, and what happened elsewhere — revocations by
// another process (`coapca ca revoke`, another instance, EST) and, on PostgreSQL, certificates
// accepted by another instance — as soon as the store's events tell (LISTEN/NOTIFY), or, on a
// store without events (SQLite), when the store is next polled (every RevocationPoll).
func (s *Server) registerCMP(ctx context.Context) error {
	if s.cfg.CMPUpstream.URL != "" {
		return s.registerCMPProxy(ctx) // cmpproxy.go: CMP is relayed, not answered here
	}
	d := s.data
	var bind *cmpcoap.Binding
	ann := &announcer{s: s}
	if err := ann.init(); err != nil {
		return err
	}
	svc, err := cmpserver.New(s.auth, cmpserver.Options{
		Signer: d.CMPSignerKey, Cert: d.CMPSigner, Chain: d.CMPSignerChain()[1:],
		ConfirmWait: s.cfg.CMP.ConfirmWait, NoImplicitConfirm: s.cfg.CMP.NoImplicitConfirm,
		MaxTransactions:      s.cfg.CMP.MaxTransactions,
		MessageTimeTolerance: s.cfg.CMP.MessageTimeTolerance,
		MACLimits:            cmp.MACLimits{MaxIterations: s.cfg.CMP.MaxMACIterations},
		Confirmations:        s.auth,
		Transactions:         s.auth,
		Announce: func(der []byte, body cmp.BodyType, label string) {
			bind.Announce(der, body, label)
			ann.published(ctx, der, body, label)
		},
		Observe: func(bodyType, transport, result string, dur time.Duration) {
			s.metrics.Observe("cmp-"+transport, bodyType, result, dur)
		},
		Logger: s.log,
	})
	if err != nil {
		return err
	}
	bind = cmpcoap.New(svc, cmpcoap.Options{Labels: s.auth.Labels(), Logger: s.log,
		// The CoAP servers start after the front doors register: look them up per notification.
		Notify: func(path string, r *coap.Response) {
			for _, c := range s.coapServers() {
				c.Notify(path, r)
			}
		}})
	bind.Register(s.secureMux)
	bind.Register(s.plainMux)
	cmphttp.New(svc, s.log).Register(s.httpMux)

	ann.svc = svc
	// Events first, so that nothing revoked after the look at the store below is missed.
	// ann.events is set before the listener starts (its handler reads it) and cleared only
	// when none started.
	ann.events = true
	if err := s.auth.Events(ctx, func(e authority.Event) { ann.event(ctx, e) }); err != nil {
		ann.events = false
		if !errors.Is(err, authority.ErrNoEvents) {
			return fmt.Errorf("cmp announcements: %w", err)
		}
	}
	// Revocations already in the store when the server starts are old news.
	old, err := s.auth.RevokedSerials(ctx)
	if err != nil {
		return fmt.Errorf("cmp announcements: %w", err)
	}
	svc.MarkAnnounced(old)
	// Certificates left unconfirmed by a previous run are revoked once their certConf deadline
	// passes: now, and on every tick below (RFC 9810 §5.1.1.2).
	svc.Sweep(ctx)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(RevocationPoll)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			svc.Sweep(ctx)
			if !ann.events {
				ann.poll(ctx)
			}
		}
	}()
	return nil
}

// announcer brings what happened elsewhere to this instance's announcement observers.
type announcer struct {
	s      *Server
	svc    *cmpserver.Service
	id     string // this instance, in the events it publishes
	events bool   // the store delivers events: no polling

	mu     sync.Mutex
	remote map[string]bool // serials of acceptances announced here on another instance's word
}

func (a *announcer) init() error {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Errorf("cmp announcements: %w", err)
	}
	a.id, a.remote = hex.EncodeToString(b[:]), map[string]bool{}
	return nil
}

// published is called for every announcement this instance sends: a certificate accepted
// here is told to the other instances (an acceptance heard from another one is not told back).
func (a *announcer) published(ctx context.Context, der []byte, body cmp.BodyType, label string) {
	if !a.events || body != cmp.TypeCAnn {
		return
	}
	m, err := cmp.Parse(der)
	if err != nil {
		return
	}
	c, ok := m.Body.(*cmp.CertAnn)
	if !ok || c.Cert == nil {
		return
	}
	sn := c.Cert.SerialNumber.Text(16)
	a.mu.Lock()
	heard := a.remote[sn]
	delete(a.remote, sn)
	a.mu.Unlock()
	if heard {
		return
	}
	if err := a.s.auth.PublishAccepted(ctx, a.id, sn, label); err != nil && ctx.Err() == nil {
		a.s.log.Warn("cmp: cannot tell the other instances about an accepted certificate", "serial", sn, "err", err)
	}
}

// event handles one store event.
func (a *announcer) event(ctx context.Context, e authority.Event) {
	var err error
	switch e.Kind {
	case authority.EventResync:
		a.poll(ctx)
	case authority.EventRevoked:
		if a.s.hasAnnouncementObservers() {
			_, err = a.svc.AnnounceRevocations(ctx, []string{e.Serial})
		} else {
			a.svc.MarkAnnounced([]string{e.Serial})
		}
	case authority.EventAccepted:
		if e.Origin == a.id || !a.s.hasAnnouncementObservers() {
			return
		}
		var rec *authority.CertRecord
		if rec, err = a.s.auth.Certificate(ctx, e.Serial); err != nil {
			break
		}
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(rec.DER); err != nil {
			break
		}
		a.mu.Lock()
		a.remote[e.Serial] = true
		a.mu.Unlock()
		err = a.svc.Announce(&cmp.CertAnn{Cert: cert}, e.Label)
	}
	if err != nil && ctx.Err() == nil {
		a.s.log.Warn("cmp: announcement of a store event", "serial", e.Serial, "err", err)
	}
}

// poll announces the revocations of the store not announced yet.
func (a *announcer) poll(ctx context.Context) {
	rev, err := a.s.auth.RevokedSerials(ctx)
	switch {
	case err != nil:
	case a.s.hasAnnouncementObservers():
		_, err = a.svc.AnnounceRevocations(ctx, rev)
	default:
		// Nobody listens: a later observer should not get these as news.
		a.svc.MarkAnnounced(rev)
	}
	if err != nil && ctx.Err() == nil {
		a.s.log.Warn("cmp: revocation announcements", "err", err)
	}
}

// RevocationPoll is how often certificates past their certConf deadline are revoked and, when
// the store delivers no events (SQLite), how often it is checked for revocations to announce.
const RevocationPoll = 2 * time.Second

// hasAnnouncementObservers reports whether any CoAP client observes a CMP …/ann resource.
func (s *Server) hasAnnouncementObservers() bool {
	if s.Observers(cmpcoap.DefaultRoot+"/ann") > 0 {
		return true
	}
	for _, l := range s.auth.Labels() {
		if s.Observers(cmpcoap.DefaultRoot+"/p/"+l+"/ann") > 0 {
			return true
		}
	}
	return false
}
