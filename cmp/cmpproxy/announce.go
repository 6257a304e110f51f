package cmpproxy

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"coapca/cmp"
)

// Run polls the upstream for announcements every Options.AnnouncePoll until ctx ends; it
// returns at once when polling is off. Failures are logged and retried at the next tick.
func (p *Proxy) Run(ctx context.Context) {
	if p.opts.AnnouncePoll <= 0 {
		return
	}
	t := time.NewTicker(p.opts.AnnouncePoll)
	defer t.Stop()
	for {
		if _, err := p.PollAnnouncements(ctx); err != nil && ctx.Err() == nil {
			p.log.Warn("cmp upstream: announcement poll", "upstream", p.name, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// PollAnnouncements asks the upstream once for a root CA key update (genm with
// id-it-rootCaKeyUpdate, RFC 9483 §4.3.2), signed by the RA. An update not seen before is
// published as a ckuann (RFC 9810 §5.3.13), signed by the RA, to the observers of every …/ann
// resource (RFC 9482 §2.6); announced reports whether that happened. The upstream's genp must
// be signed by a certificate that chains to Options.ResponseTrust, since the RA vouches for
// what it re-signs.
func (p *Proxy) PollAnnouncements(ctx context.Context) (announced bool, err error) {
	if p.ra == nil || p.opts.ResponseTrust == nil {
		return false, errors.New("announcements need the RA credential and the upstream's CMP signer trust")
	}
	hdr, err := cmp.NewRequestHeader(p.raName, cmp.NullDN(), nil, nil)
	if err != nil {
		return false, err
	}
	req := &cmp.Message{Header: hdr, Body: &cmp.GenContent{BodyType: cmp.TypeGenM,
		ITAVs: []cmp.InfoTypeAndValue{{Type: cmp.OIDITRootCAKeyUpdate}}}}
	der, err := req.Marshal(p.ra)
	if err != nil {
		return false, fmt.Errorf("genm: %w", err)
	}
	rsp, f := p.post(ctx, p.upstreamURL(route{profile: p.opts.Default}), der)
	if f.kind != failNone {
		return false, fmt.Errorf("genm: upstream %s: %w", f, f.cause)
	}
	m, err := p.verifiedResponse(req, rsp)
	if err != nil {
		return false, fmt.Errorf("genp: %w", err)
	}
	if err := m.Failed(); err != nil {
		return false, fmt.Errorf("genp: %w", err)
	}
	gp, ok := m.Body.(*cmp.GenContent)
	if !ok || gp.BodyType != cmp.TypeGenP {
		return false, fmt.Errorf("genm answered with %s", m.Body.Type())
	}
	for _, it := range gp.ITAVs {
		if !it.Type.Equal(cmp.OIDITRootCAKeyUpdate) || len(it.Value) == 0 {
			continue // RFC 9483 §4.3.2: an absent value means no update
		}
		upd, err := cmp.ParseRootCAKeyUpdate(it.Value)
		if err != nil {
			return false, err
		}
		p.mu.Lock()
		seen := p.ann[string(upd.NewWithNew.Raw)]
		p.ann[string(upd.NewWithNew.Raw)] = true
		p.mu.Unlock()
		if seen {
			continue
		}
		h, err := cmp.NewRequestHeader(p.raName, cmp.NullDN(), nil, nil)
		if err != nil {
			return false, err
		}
		out, err := (&cmp.Message{Header: h, Body: &cmp.CAKeyUpdAnn{RootCAKeyUpdate: *upd}}).Marshal(p.ra)
		if err != nil {
			return false, fmt.Errorf("ckuann: %w", err)
		}
		p.log.Info("cmp upstream: root CA key update announced", "upstream", p.name, "new_root", upd.NewWithNew.Subject.String())
		p.announce(out)
		announced = true
	}
	return announced, nil
}

// verifiedResponse parses the upstream's answer to req and checks that it answers req and is
// signed by a certificate chaining to Options.ResponseTrust.
func (p *Proxy) verifiedResponse(req *cmp.Message, der []byte) (*cmp.Message, error) {
	m, err := cmp.Parse(der)
	if err != nil {
		return nil, err
	}
	if m.ProtectionKind() != cmp.ProtectionSignature {
		return nil, errors.New("the upstream's answer is not signed")
	}
	cert := m.ProtectionCert()
	if cert == nil {
		return nil, errors.New("the upstream's answer has no protection certificate")
	}
	if err := m.VerifySignature(cert); err != nil {
		return nil, err
	}
	inter := x509.NewCertPool()
	for _, c := range m.ExtraCerts[1:] {
		inter.AddCert(c)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: p.opts.ResponseTrust, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}, CurrentTime: p.opts.Now()}); err != nil {
		return nil, fmt.Errorf("the upstream's CMP signer is not trusted: %w", err)
	}
	if err := cmp.CheckResponse(&req.Header, &m.Header); err != nil {
		return nil, err
	}
	return m, nil
}
