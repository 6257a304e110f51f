package server

import (
	"crypto/x509"
	"fmt"
	"time"

	"coapca/est/estcoap"
	"coapca/est/estserver"
	"coapca/internal/config"
	"coapca/internal/datadir"
)

// registerEST creates the EST service, which every EST front door calls, and registers
// EST-coaps (RFC 9148) on s.secureMux (coaps://). EST-oscore registers the same service on
// s.plainMux in registerOSCORE.
func (s *Server) registerEST() error {
	s.est = estserver.New(s.auth, s.log)
	if err := estKeyEncryption(s.est, s.cfg.EST, s.data); err != nil {
		return err
	}
	s.est.SetObserver(func(function, transport, result string, d time.Duration) {
		s.metrics.Observe("est-"+transport, function, result, d)
	})
	estcoap.New(s.estFront(), estcoap.Options{Labels: s.auth.Labels(), Logger: s.log}).Register(s.secureMux)
	return nil
}

// estKeyEncryption lets the EST service return server-generated keys CMS-encrypted: signed with
// the server's certificate, under the configured pre-shared KEKs or to the requester's own
// certificate key.
func estKeyEncryption(svc *estserver.Service, c config.EST, d *datadir.Data) error {
	keks, err := c.LoadKEKs()
	if err != nil {
		return err
	}
	chain := []*x509.Certificate{d.Server, d.IssuingCA}
	if err := svc.SetKeyEncryption(estserver.KeyEncryption{KEKs: keks, Signer: d.ServerKey, Chain: chain}); err != nil {
		return fmt.Errorf("est key encryption: %w", err)
	}
	return nil
}
