package server

import (
	"context"
	"fmt"
	"time"

	"coapca/cmp"
	"coapca/cmp/cmpcoap"
	"coapca/cmp/cmphttp"
	"coapca/cmp/cmpserver"
	"coapca/coap"
)

// registerCMP registers the CMP front doors: RFC 9482 on s.secureMux (coaps://) and
// s.plainMux (coap://, where the PKIMessage protection is the security), RFC 9811 on
// s.httpMux. Announcements go to the observers of …/ann on both CoAP servers: certificates
// accepted and revoked through CMP at once, and revocations made elsewhere (`coapca ca revoke`
// in another process, EST) when the store is next polled (every RevocationPoll).
func (s *Server) registerCMP(ctx context.Context) error {
	if s.cfg.CMPUpstream.URL != "" {
		return s.registerCMPProxy(ctx) // cmpproxy.go: CMP is relayed, not answered here
	}
	d := s.data
	var bind *cmpcoap.Binding
	svc, err := cmpserver.New(s.auth, cmpserver.Options{
		Signer: d.CMPSignerKey, Cert: d.CMPSigner, Chain: d.CMPSignerChain()[1:],
		ConfirmWait: s.cfg.CMP.ConfirmWait, NoImplicitConfirm: s.cfg.CMP.NoImplicitConfirm,
		MaxTransactions:      s.cfg.CMP.MaxTransactions,
		MessageTimeTolerance: s.cfg.CMP.MessageTimeTolerance,
		MACLimits:            cmp.MACLimits{MaxIterations: s.cfg.CMP.MaxMACIterations},
		Confirmations:        s.auth,
		Announce:             func(der []byte, body cmp.BodyType, label string) { bind.Announce(der, body, label) },
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

	// Revocations already in the store when the server starts are old news.
	old, err := s.auth.RevokedSerials(ctx)
	if err != nil {
		return fmt.Errorf("cmp announcements: %w", err)
	}
	svc.MarkAnnounced(old)
	// Certificates left unconfirmed by a previous run are revoked once their certConf deadline
	// passes: now, and on every poll below (RFC 9810 §5.1.1.2).
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
			rev, err := s.auth.RevokedSerials(ctx)
			switch {
			case err != nil:
			case s.hasAnnouncementObservers():
				_, err = svc.AnnounceRevocations(ctx, rev)
			default:
				// Nobody listens: a later observer should not get these as news.
				svc.MarkAnnounced(rev)
			}
			if err != nil && ctx.Err() == nil {
				s.log.Warn("cmp: revocation announcements", "err", err)
			}
		}
	}()
	return nil
}

// RevocationPoll is how often the store is checked for revocations to announce.
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
