package cmpproxy

import (
	"bytes"
	"context"
	"errors"
	"time"

	"coapca/authority"
	"coapca/cmp"
	"coapca/coap"
	"coapca/errs"
)

// relayRA is RA mode (RFC 9483 §5.2.3): check the requester, replace the protection, forward,
// and bring the answer back in a form the requester can verify.
func (p *Proxy) relayRA(ctx context.Context, r *coap.Request, rt route) ([]byte, failure) {
	m, err := cmp.Parse(r.Payload)
	if err != nil {
		return nil, failure{kind: failBadRequest, msg: "the payload is not a PKIMessage", cause: err}
	}
	req := authority.Requester{Transport: authority.TransportCoAP, Protocol: authority.ProtocolCMP}
	if r.Peer.Secure {
		req.Transport = authority.TransportCoAPS
	}
	if r.Peer.Addr != nil {
		req.Addr = r.Peer.Addr.String()
	}
	if m.Body.Type() == cmp.TypeNested {
		return p.refuse(m, nil, errs.New(errs.BadRequest, "nested messages are not forwarded by this RA"), cmp.FailBadRequest)
	}

	var (
		secret []byte
		sender []byte // the DER Name the signature protection authenticated
	)
	switch m.ProtectionKind() {
	case cmp.ProtectionNone:
		// RFC 9483 §4.3: only support messages may come unprotected; they ask for public data
		// and go upstream as they came (the RA vouches for nobody).
		if m.Body.Type() != cmp.TypeGenM {
			return p.refuse(m, nil, errs.New(errs.Unauthorized, "%s must be protected", m.Body.Type()), cmp.FailBadMessageCheck)
		}
		return p.post(ctx, p.upstreamURL(rt), r.Payload)
	case cmp.ProtectionPBM, cmp.ProtectionPBMAC1:
		// The cheap checks before the key derivation.
		if err := m.CheckMACParams(p.opts.MACLimits); err != nil {
			return p.refuse(m, nil, err, cmp.FailBadAlg)
		}
		ref := string(m.Header.SenderKID)
		s, err := p.opts.Authority.MACSecret(ref)
		if err != nil {
			return p.refuse(m, nil, errs.New(errs.Unauthorized, "unknown MAC secret reference %q", ref), cmp.FailSignerNotTrusted)
		}
		// RFC 9483 §5.2.3.1: the RA MUST validate the protection it replaces.
		if err := m.VerifyMACWith(s, p.opts.MACLimits); err != nil {
			return p.refuse(m, nil, err, cmp.FailBadMessageCheck)
		}
		if p.opts.ResponseTrust == nil {
			// The answer will be signed by the upstream for the RA; without anchors for that
			// signer the RA cannot vouch for it when it re-protects it with the secret.
			return p.refuse(m, s, errs.New(errs.Unavailable, "MAC-protected requests are not relayed here (no trust for the upstream's CMP signer)"), cmp.FailSystemUnavail)
		}
		secret, req.SecretRef = s, ref
	case cmp.ProtectionSignature:
		cert := m.ProtectionCert()
		if cert == nil {
			return p.refuse(m, nil, errs.New(errs.Unauthorized, "signature protection without a protection certificate in extraCerts"), cmp.FailBadMessageCheck)
		}
		// RFC 9483 §5.2.3.1: the RA MUST validate the protection it replaces.
		if err := m.VerifySignature(cert); err != nil {
			return p.refuse(m, nil, err, cmp.FailBadMessageCheck)
		}
		// RFC 9483 §3.1: sender is the subject of the protection certificate.
		if d, ok := m.Header.Sender.Directory(); ok && len(d) > 2 && !bytes.Equal(d, cert.RawSubject) &&
			m.Header.Sender.String() != cert.Subject.String() {
			return p.refuse(m, nil, errs.New(errs.Unauthorized, "sender is not the subject of the protection certificate"), cmp.FailBadMessageCheck)
		}
		raw := make([][]byte, 0, len(m.ExtraCerts))
		for _, c := range m.ExtraCerts {
			raw = append(raw, c.Raw)
		}
		chain, err := p.opts.Authority.VerifyClient(raw)
		if err != nil {
			return p.refuse(m, nil, errs.Wrap(errs.Unauthorized, err, "protection certificate not trusted"), cmp.FailSignerNotTrusted)
		}
		req.Chain, sender = chain, cert.RawSubject
	default:
		return p.refuse(m, nil, errs.New(errs.BadRequest, "unsupported protection algorithm"), cmp.FailBadAlg)
	}

	// RFC 9483 §5.2.3.1: the RA checks that the requester is authorized; the upstream will
	// see only the RA.
	if err := p.opts.Authority.AuthorizeRelay(ctx, req, rt.label); err != nil {
		return p.refuse(m, secret, err, cmp.FailNotAuthorized)
	}
	if err := checkPOP(m, rt.profile, cmp.POPAuth{Sender: sender, Secret: secret, Limits: p.opts.MACLimits}); err != nil {
		return p.refuse(m, secret, err, cmp.FailBadPOP)
	}

	// RFC 9483 §5.2.2: a kur or rr signed with the very certificate it renews or revokes
	// proves itself to the upstream CA, which must see that certificate (RFC 9483 §4.1.3,
	// §4.2): it is forwarded with its protection unchanged, and so are the certConf and pollReq
	// of its transaction.
	if m.ProtectionKind() == cmp.ProtectionSignature && p.keepProtection(m) {
		return p.post(ctx, p.upstreamURL(rt), r.Payload)
	}

	// RFC 9483 §5.2.3.1: new protection by the RA; transactionID, senderNonce and recipNonce
	// MUST NOT change. The RA's certificate and chain replace the extraCerts.
	fwd := &cmp.Message{Header: m.Header, Body: m.Body}
	fwd.Header.Sender = p.raName
	fwd.Header.SenderKID, fwd.Header.ProtectionAlg = nil, nil
	der, err := fwd.Marshal(p.ra)
	if err != nil {
		return p.refuse(m, secret, errs.Wrap(errs.Internal, err, "cannot re-protect the request"), cmp.FailSystemFailure)
	}
	rsp, f := p.post(ctx, p.upstreamURL(rt), der)
	if f.kind != failNone || secret == nil {
		// A signature-protecting requester verifies the upstream's signed answer itself.
		return rsp, f
	}
	return p.reprotectResponse(m, rsp, secret)
}

// checkPOP verifies the proofs of possession of a certificate request before the RA puts its
// own protection over it. RFC 4211 §4.3, RFC 9483 §5.2.3.2: raVerified is the RA's statement,
// so a requester's raVerified is refused, and the RA sets raVerified only where it verified the
// POP itself (and the profile asks for it). RFC 9483 §5.2.3: requests for central key
// generation (no POP) keep the requester's protection, so they are not relayed in RA mode.
func checkPOP(m *cmp.Message, pr Profile, a cmp.POPAuth) error {
	switch b := m.Body.(type) {
	case *cmp.CertReqMessages:
		for i := range b.Requests {
			crm := &b.Requests[i]
			switch crm.POPKind {
			case cmp.POPRAVerified:
				return errs.New(errs.Forbidden, "raVerified proof-of-possession is the RA's statement, not the requester's (RFC 4211 §4.3)")
			case cmp.POPSignature:
				if _, err := crm.VerifyPOP(a); err != nil {
					return err
				}
				if pr.RAVerified {
					crm.POPKind, crm.POP = cmp.POPRAVerified, nil
				}
			case cmp.POPNone:
				return cmp.WithFailInfo(errs.New(errs.BadRequest, "central key generation is not relayed by this RA (RFC 9483 §5.2.3)"), cmp.FailBadRequest)
			default:
				return cmp.WithFailInfo(errs.New(errs.BadRequest, "unsupported proof-of-possession"), cmp.FailBadPOP)
			}
		}
	case *cmp.P10CR:
		if b.CSR == nil || b.CSR.CheckSignature() != nil {
			return errs.New(errs.BadRequest, "the PKCS#10 signature does not verify")
		}
	}
	return nil
}

// reprotectResponse verifies the upstream's signed answer to a MAC-protected request and
// protects it with the requester's secret (RFC 9483 §3.2: the answer to a MAC-protected
// request is MAC-protected with the same secret).
func (p *Proxy) reprotectResponse(req *cmp.Message, der, secret []byte) ([]byte, failure) {
	m, err := p.verifiedResponse(req, der)
	if err != nil {
		return nil, failure{kind: failBadResponse, cause: err}
	}
	out := &cmp.Message{Header: m.Header, Body: m.Body, ExtraCerts: m.ExtraCerts}
	out.Header.Recipient, out.Header.RecipKID = req.Header.Sender, req.Header.SenderKID
	out.Header.SenderKID, out.Header.ProtectionAlg = nil, nil
	b, err := out.Marshal(req.MACProtectionLike(secret))
	if err != nil {
		return nil, failure{kind: failBadResponse, cause: err}
	}
	return b, failure{}
}

// refuse answers a request the RA will not forward with a CMP error message (RFC 9810
// §5.3.21), MAC-protected with the requester's secret when it proved it, else signed by the RA.
func (p *Proxy) refuse(req *cmp.Message, secret []byte, err error, info cmp.FailureInfo) ([]byte, failure) {
	if f := cmp.FailInfoOf(err); f != 0 {
		info = f
	}
	text := errs.Message(err)
	if errs.KindOf(err) == errs.Internal {
		text = errs.Internal.String()
	}
	hdr, herr := cmp.NewResponseHeader(&req.Header, p.raName)
	if herr != nil {
		return nil, failure{kind: failBadRequest, msg: text, cause: err}
	}
	var prot cmp.Protector = p.ra
	if secret != nil {
		prot = req.MACProtectionLike(secret)
	}
	body := &cmp.ErrorContent{Status: cmp.StatusInfo{Status: cmp.StatusRejection, FailInfo: info, StatusString: []string{text}}}
	out, merr := (&cmp.Message{Header: hdr, Body: body}).Marshal(prot)
	if merr != nil {
		return nil, failure{kind: failBadRequest, msg: text, cause: errors.Join(err, merr)}
	}
	return out, failure{kind: failRefused, cause: err}
}

// Transactions forwarded with their protection unchanged, so that their follow-up messages are
// too: at most maxKept, each for keptFor.
const (
	maxKept = 10000
	keptFor = time.Hour
)

// keepProtection reports whether the signature-protected m goes upstream unchanged: a kur or
// rr (its transaction is remembered), or the certConf or pollReq of such a transaction.
func (p *Proxy) keepProtection(m *cmp.Message) bool {
	id := string(m.Header.TransactionID)
	now := p.opts.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	switch m.Body.Type() {
	case cmp.TypeKUR, cmp.TypeRR:
		if len(p.kept) >= maxKept {
			for k, until := range p.kept {
				if now.After(until) {
					delete(p.kept, k)
				}
			}
		}
		if len(p.kept) < maxKept {
			p.kept[id] = now.Add(keptFor)
		}
		return true
	case cmp.TypeCertConf, cmp.TypePollReq:
		until, ok := p.kept[id]
		return ok && !now.After(until)
	}
	return false
}
