package client

// This file is the CMP client (RFC 9483 Lightweight CMP Profile, EE side) over CoAP
// (RFC 9482: coap://, coaps://) and HTTP (RFC 9811: http://, https://): ir, cr, kur, p10cr with
// certConf and polling (§4.1, §4.4), rr (§4.2) and genm support messages (§4.3).

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"coapca/cmp"
	"coapca/coap"
	"coapca/coap/dtlsconn"
)

// CMP Content-Formats / media type (RFC 9482 §5, RFC 9811).
const (
	cmpContentFormat = 259
	cmpMediaType     = "application/pkixcmp"
	cmpDefaultPath   = "/.well-known/cmp"
)

// CMPTransport carries one DER PKIMessage to the server and returns its answer.
type CMPTransport interface {
	RoundTrip(ctx context.Context, req []byte) ([]byte, error)
	Close() error
}

// CMPTransportOptions configure DialCMP.
type CMPTransportOptions struct {
	DTLS       *dtlsconn.ClientConfig // coaps://: client identity and server verification
	TLS        *tls.Config            // https://
	BlockSize  int                    // CoAP block size (16..1024; 0 = 1024)
	HTTPClient *http.Client           // http(s)://; nil = a client with TLS and a 60 s timeout
}

// DialCMP returns the transport for rawURL: coap://, coaps:// (RFC 9482), http://, https://
// (RFC 9811). The URL's path is the CMP path; empty or "/" = /.well-known/cmp, and a path
// below it may name a profile (/p/<label>) or an operation label.
func DialCMP(ctx context.Context, rawURL string, o CMPTransportOptions) (CMPTransport, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("cmp: bad server URL %q", rawURL)
	}
	path := u.Path
	if path == "" || path == "/" {
		path = cmpDefaultPath
	}
	switch u.Scheme {
	case "coap", "coaps":
		opts := coap.ClientOptions{BlockSize: o.BlockSize}
		if u.Scheme == "coaps" {
			if o.DTLS == nil {
				return nil, errors.New("cmp: coaps:// needs a DTLS configuration")
			}
			opts.DTLS = o.DTLS
		}
		dial := func(ctx context.Context) (*coap.Client, error) { return coap.Dial(ctx, u.Scheme+"://"+u.Host, opts) }
		c, err := dial(ctx)
		if err != nil {
			return nil, err
		}
		return &coapCMP{c: c, path: path, dial: dial, sleep: sleepCtx}, nil
	case "http", "https":
		hc := o.HTTPClient
		if hc == nil {
			hc = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{TLSClientConfig: o.TLS}}
		}
		u.Path = path
		return &httpCMP{c: hc, url: u.String()}, nil
	}
	return nil, fmt.Errorf("cmp: unsupported scheme %q (coap, coaps, http, https)", u.Scheme)
}

type coapCMP struct {
	c     *coap.Client
	path  string
	dial  func(ctx context.Context) (*coap.Client, error)
	sleep func(ctx context.Context, d time.Duration) error
}

// RoundTrip POSTs the message (RFC 9482 §2.3: Confirmable, Content-Format 259, block-wise by
// the endpoint).
//
// A message the server did not take is sent again, until ctx ends: when the server ended the DTLS
// session (close_notify: a stopping server first answers every request it took, so this one was
// not), over a new session; when it answered 5.03 with Max-Age (a stopping server refuses new
// work so, RFC 7252 §5.9.3.4), after Max-Age. A request that merely went unanswered is not sent
// again: the server may have processed it.
func (t *coapCMP) RoundTrip(ctx context.Context, req []byte) ([]byte, error) {
	var rsp *coap.Response
	for {
		var err error
		rsp, err = t.c.Do(ctx, &coap.ClientRequest{Method: codes.POST, Path: t.path, ContentFormat: coap.CF(cmpContentFormat),
			Accept: coap.CF(cmpContentFormat), Payload: req})
		if errors.Is(err, coap.ErrSessionClosed) {
			if err := t.redial(ctx); err != nil {
				return nil, fmt.Errorf("cmp: the server closed the session and no new one could be made: %w", err)
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		if secs, ok := rsp.MaxAge.Get(); rsp.Code == codes.ServiceUnavailable && ok && secs > 0 {
			if err := t.sleep(ctx, rsp.MaxAge.Duration()); err != nil {
				return nil, fmt.Errorf("cmp: server unavailable (%s): %w", strings.TrimSpace(string(rsp.Payload)), err)
			}
			continue
		}
		break
	}
	if rsp.Code>>5 != 2 {
		return nil, fmt.Errorf("cmp: server answered %v: %s", rsp.Code, strings.TrimSpace(string(rsp.Payload)))
	}
	switch rsp.ContentFormat {
	case coap.CF(cmpContentFormat), coap.CF(42), coap.Format{}: // 42 and none from servers that predate RFC 9482
	default:
		return nil, fmt.Errorf("cmp: answer has Content-Format %v, not 259", rsp.ContentFormat)
	}
	return rsp.Payload, nil
}

// redial replaces the association by a new one, trying (with backoff) until ctx ends.
func (t *coapCMP) redial(ctx context.Context) error {
	wait := redialFirst
	for {
		actx, cancel := context.WithTimeout(ctx, redialAttempt)
		c, err := t.dial(actx)
		cancel()
		if err == nil {
			_ = t.c.Close()
			t.c = c
			return nil
		}
		if err := t.sleep(ctx, wait); err != nil {
			return err
		}
		wait = min(2*wait, redialMax)
	}
}

func (t *coapCMP) Close() error { return t.c.Close() }

type httpCMP struct {
	c   *http.Client
	url string
}

// RoundTrip POSTs the message (RFC 9811: application/pkixcmp, HTTP 200 for every CMP answer).
func (t *httpCMP) RoundTrip(ctx context.Context, req []byte) ([]byte, error) {
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(req))
	if err != nil {
		return nil, err
	}
	r.Header.Set("Content-Type", cmpMediaType)
	rsp, err := t.c.Do(r)
	if err != nil {
		return nil, err
	}
	defer rsp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(rsp.Body, cmp.MaxMessageSize+1))
	if err != nil {
		return nil, err
	}
	if rsp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("cmp: server answered HTTP %s: %s", rsp.Status, strings.TrimSpace(string(body)))
	}
	if ct := rsp.Header.Get("Content-Type"); !strings.HasPrefix(strings.ToLower(ct), cmpMediaType) {
		return nil, fmt.Errorf("cmp: answer has Content-Type %q, not %s", ct, cmpMediaType)
	}
	return body, nil
}

func (t *httpCMP) Close() error { t.c.CloseIdleConnections(); return nil }

// CMPProgress reports a delayed enrollment the client is polling for (RFC 9483 §4.4).
type CMPProgress struct {
	Attempt    int           // 1 for the first pollReq
	CheckAfter time.Duration // the server's checkAfter
	Reason     string
}

// CMPOptions configure a CMP client.
//
// Who may answer (RFC 9483 §3.5, §3.2): a MAC-protected answer must verify with Secret; a
// signed answer is accepted only from the pinned ServerCert, or from a protection certificate
// with id-kp-cmcCA or id-kp-cmcRA (RFC 6402 §2.10) that chains to Trust. A certificate that
// merely chains to Trust (a device, the DTLS server) cannot answer. An issued certificate is
// accepted only when it validates to Trust — or to the answer's caPubs when that answer was
// MAC-protected with Secret (RFC 9483 §4.1.1, §4.1.5) — and is otherwise rejected in certConf.
type CMPOptions struct {
	// Protection protects every request: *cmp.SignatureProtection, *cmp.PBMProtection or
	// *cmp.PBMAC1Protection (RFC 9483 §3.2).
	Protection cmp.Protector
	// Secret verifies MAC-protected answers (the shared secret of a MAC Protection).
	Secret []byte
	// Trust are the trust anchors: for the protection certificate of signed answers (with
	// extraCerts as intermediates) and for the certificates issued to us.
	Trust []*x509.Certificate
	// ServerCert, when set, is the CMP signer to expect (like openssl cmp -srvcert): a signed
	// answer whose protection certificate is exactly this one is accepted without a chain or
	// extended key usage check.
	ServerCert *x509.Certificate
	// InsecureSkipVerify accepts answers whose protection cannot be checked and issued
	// certificates that do not validate (testing only).
	InsecureSkipVerify bool
	// Sender and Recipient of the header; zero = the protection certificate's subject (or
	// the requested subject for MAC) and the null DN.
	Sender, Recipient cmp.GeneralName
	// Profile is sent as certProfile in generalInfo (RFC 9483 §3.1).
	Profile string
	// ImplicitConfirm asks the server to skip certConf (RFC 9810 §5.1.1.1).
	ImplicitConfirm bool
	// Wait bounds the time spent polling a delayed enrollment (default 10 minutes).
	Wait time.Duration
	// OnProgress is called before each pollReq.
	OnProgress func(CMPProgress)
	// Now is the clock for certificate validation (nil = time.Now).
	Now func() time.Time
}

// CMP is a CMP end-entity client over one transport.
type CMP struct {
	t CMPTransport
	o CMPOptions
}

// NewCMP returns a client sending over t.
func NewCMP(t CMPTransport, o CMPOptions) *CMP {
	if o.Wait <= 0 {
		o.Wait = 10 * time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &CMP{t: t, o: o}
}

// CMPEnrollment is the outcome of ir, cr, kur or p10cr.
type CMPEnrollment struct {
	Cert *x509.Certificate
	// Chain is Cert's validated chain, leaf first and trust anchor last: the only CA
	// certificates of the answer that are authenticated (nil with InsecureSkipVerify).
	Chain []*x509.Certificate
	// CAPubs and ExtraCerts are the answer's certificates as received, not authenticated.
	CAPubs     []*x509.Certificate // root CA certificates from ip (RFC 9483 §4.1.1)
	ExtraCerts []*x509.Certificate // the chain the server sent
	// ImplicitConfirm is true when the server granted implicit confirmation (no certConf).
	ImplicitConfirm bool
	Polls           int // pollReq messages sent
}

// protectedBy says how an answer was authenticated.
type protectedBy int

const (
	unchecked protectedBy = iota // InsecureSkipVerify: not authenticated
	bySecret                     // MAC with our shared secret
	bySigner                     // signature of an authorized CMP signer
)

// exchange sends one request body in transaction txID (nil = new) and returns the verified
// answer, how it was authenticated and the request header.
func (c *CMP) exchange(ctx context.Context, body cmp.Body, txID, recipNonce []byte, first bool, sender cmp.GeneralName) (*cmp.Message, protectedBy, *cmp.Header, error) {
	if sender.IsZero() {
		sender = c.o.Sender
	}
	rcpt := c.o.Recipient
	if rcpt.IsZero() {
		rcpt = cmp.NullDN()
	}
	hdr, err := cmp.NewRequestHeader(sender, rcpt, txID, recipNonce)
	if err != nil {
		return nil, 0, nil, err
	}
	if first {
		if c.o.Profile != "" {
			hdr.SetCertProfile(c.o.Profile)
		}
		switch body.Type() {
		case cmp.TypeIR, cmp.TypeCR, cmp.TypeKUR, cmp.TypeP10CR:
			if c.o.ImplicitConfirm {
				hdr.SetImplicitConfirm()
			}
		}
	}
	m := &cmp.Message{Header: hdr, Body: body}
	der, err := m.Marshal(c.o.Protection)
	if err != nil {
		return nil, 0, nil, err
	}
	rspDER, err := c.t.RoundTrip(ctx, der)
	if err != nil {
		return nil, 0, nil, fmt.Errorf("cmp %s: %w", body.Type(), err)
	}
	rsp, err := cmp.Parse(rspDER)
	if err != nil {
		return nil, 0, nil, fmt.Errorf("cmp %s: answer: %w", body.Type(), err)
	}
	by, err := c.verify(rsp)
	if err != nil {
		if f := rsp.Failed(); f != nil {
			return nil, 0, nil, fmt.Errorf("cmp %s: %w (and the error message's protection does not verify: %v)", body.Type(), f, err)
		}
		return nil, 0, nil, fmt.Errorf("cmp %s: %w", body.Type(), err)
	}
	// RFC 9483 §3.5: transactionID and recipNonce must answer our request.
	if err := cmp.CheckResponse(&m.Header, &rsp.Header); err != nil {
		return nil, 0, nil, fmt.Errorf("cmp %s: %w", body.Type(), err)
	}
	return rsp, by, &m.Header, nil
}

// verify checks the answer's protection and who gave it (RFC 9483 §3.5, §3.2): a MAC must
// verify with our shared secret — the one that protected the request —, a signature must come
// from an authorized CMP signer (authorizedSigner). Anything else is refused, whatever the
// request's protection was.
func (c *CMP) verify(rsp *cmp.Message) (protectedBy, error) {
	switch rsp.ProtectionKind() {
	case cmp.ProtectionPBM, cmp.ProtectionPBMAC1:
		if c.o.Secret == nil {
			if c.o.InsecureSkipVerify {
				return unchecked, nil
			}
			return 0, errors.New("MAC-protected answer but no shared secret")
		}
		if err := rsp.VerifyMAC(c.o.Secret); err != nil {
			return 0, err
		}
		return bySecret, nil
	case cmp.ProtectionSignature:
		cert := rsp.ProtectionCert()
		if err := rsp.VerifySignature(cert); err != nil {
			return 0, err
		}
		if err := c.authorizedSigner(cert, rsp.ExtraCerts[1:]); err != nil {
			if c.o.InsecureSkipVerify {
				return unchecked, nil
			}
			return 0, err
		}
		return bySigner, nil
	case cmp.ProtectionNone:
		if c.o.InsecureSkipVerify {
			return unchecked, nil
		}
		return 0, errors.New("the answer is not protected")
	}
	return 0, errors.New("the answer's protection algorithm is not supported")
}

// authorizedSigner decides whether cert may sign answers for the CA. RFC 9483 §3.5: the
// protection certificate must be valid and authorized: the pinned ServerCert, or else a
// certificate that chains to the trust anchors and names the CA or RA role with id-kp-cmcCA
// or id-kp-cmcRA (RFC 6402 §2.10, RFC 9483 §3.1) and may sign (digitalSignature).
func (c *CMP) authorizedSigner(cert *x509.Certificate, extra []*x509.Certificate) error {
	if c.o.ServerCert != nil {
		if cert.Equal(c.o.ServerCert) {
			return nil
		}
		return fmt.Errorf("the answer is signed by %q, not by the expected CMP signer %q", cert.Subject, c.o.ServerCert.Subject)
	}
	if len(c.o.Trust) == 0 {
		return errors.New("signed answer but no trust anchors (or expected CMP signer) to validate the server's certificate")
	}
	if _, err := verifyChain(cert, extra, c.o.Trust, c.o.Now()); err != nil {
		return fmt.Errorf("the server's protection certificate %q is not trusted: %w", cert.Subject, err)
	}
	if !hasEKU(cert, nil, []asn1.ObjectIdentifier{OIDKPCmcCA, OIDKPCmcRA}) {
		return fmt.Errorf("the server's protection certificate %q is not authorized to answer for the CA: it has neither id-kp-cmcCA nor id-kp-cmcRA", cert.Subject)
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return fmt.Errorf("the server's protection certificate %q may not sign (no digitalSignature key usage)", cert.Subject)
	}
	return nil
}

// acceptCert checks the issued certificate before it is confirmed or returned: it must
// certify our key and validate (RFC 5280) to the trust anchors, or to the answer's caPubs when
// that answer was MAC-protected with our shared secret — the only case where the caPubs are
// authenticated by something we already trust (RFC 9483 §4.1.1 and §4.1.5). It returns the
// validated chain (leaf first).
func (c *CMP) acceptCert(res *cmp.EnrollResult, by protectedBy, want crypto.PublicKey) ([]*x509.Certificate, error) {
	if !publicKeyEqual(res.Cert.PublicKey, want) {
		return nil, errors.New("the certificate does not certify our key")
	}
	if by == unchecked {
		return nil, nil
	}
	anchors := c.o.Trust
	if by == bySecret {
		anchors = append(slices.Clone(c.o.Trust), res.CAPubs...)
	}
	if len(anchors) == 0 {
		return nil, errors.New("no trust anchors to validate the issued certificate (pass the CA's root as trust anchor)")
	}
	chain, err := verifyChain(res.Cert, res.ExtraCerts, anchors, c.o.Now())
	if err != nil {
		return nil, fmt.Errorf("the issued certificate does not chain to the trust anchors: %w", err)
	}
	return chain, nil
}

// Enroll requests a certificate for tmpl with ir or cr (RFC 9483 §4.1.1, §4.1.2); key proves
// possession and its public key is certified.
func (c *CMP) Enroll(ctx context.Context, bodyType cmp.BodyType, tmpl cmp.CertTemplate, key crypto.Signer) (*CMPEnrollment, error) {
	if bodyType != cmp.TypeIR && bodyType != cmp.TypeCR {
		return nil, fmt.Errorf("cmp: Enroll takes ir or cr, not %s", bodyType)
	}
	return c.certReq(ctx, bodyType, tmpl, nil, key)
}

// KeyUpdate renews old with a new key (kur, RFC 9483 §4.1.3). The Protection must sign with
// old's key. An empty template keeps old's subject and SANs.
func (c *CMP) KeyUpdate(ctx context.Context, old *x509.Certificate, tmpl cmp.CertTemplate, key crypto.Signer) (*CMPEnrollment, error) {
	if tmpl.Subject == nil {
		tmpl.Subject = old.RawSubject
	}
	return c.certReq(ctx, cmp.TypeKUR, tmpl, []cmp.AttributeTypeAndValue{cmp.NewOldCertIDControl(old)}, key)
}

func (c *CMP) certReq(ctx context.Context, t cmp.BodyType, tmpl cmp.CertTemplate, controls []cmp.AttributeTypeAndValue, key crypto.Signer) (*CMPEnrollment, error) {
	crm, err := cmp.NewCertReqMsg(0, tmpl, controls, key)
	if err != nil {
		return nil, err
	}
	var sender cmp.GeneralName
	if _, sig := c.o.Protection.(*cmp.SignatureProtection); !sig && tmpl.Subject != nil {
		sender = cmp.DirectoryName(tmpl.Subject)
	}
	return c.transact(ctx, &cmp.CertReqMessages{BodyType: t, Requests: []cmp.CertReqMsg{crm}}, 0, sender, key.Public())
}

// P10CR requests a certificate with a PKCS#10 CSR (RFC 9483 §4.1.4).
func (c *CMP) P10CR(ctx context.Context, csr *x509.CertificateRequest) (*CMPEnrollment, error) {
	var sender cmp.GeneralName
	if _, sig := c.o.Protection.(*cmp.SignatureProtection); !sig {
		sender = cmp.DirectoryName(csr.RawSubject)
	}
	return c.transact(ctx, &cmp.P10CR{CSR: csr}, -1, sender, csr.PublicKey)
}

func publicKeyEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// transact runs one enrollment transaction: request, polling, certConf.
func (c *CMP) transact(ctx context.Context, body cmp.Body, certReqID int64, sender cmp.GeneralName, want crypto.PublicKey) (*CMPEnrollment, error) {
	rsp, by, hdr, err := c.exchange(ctx, body, nil, nil, true, sender)
	if err != nil {
		return nil, err
	}
	txID := hdr.TransactionID
	id := certReqID
	if b, ok := rsp.Body.(*cmp.CertRepMessage); ok && certReqID == -1 && len(b.Responses) == 1 {
		id = b.Responses[0].CertReqID // p10cr: -1 per RFC 9810 §5.3.4, 0 from older servers
	}
	res, err := cmp.ParseEnrollResponse(rsp, id)
	if err != nil {
		return nil, fmt.Errorf("cmp %s: %w", body.Type(), err)
	}
	out := &CMPEnrollment{}
	deadline := time.Now().Add(c.o.Wait)
	// RFC 9483 §4.4: poll until the certificate is there.
	for res.Waiting {
		if out.Polls > 0 || res.CheckAfter > 0 {
			wait := res.CheckAfter
			if time.Now().Add(wait).After(deadline) {
				return nil, fmt.Errorf("cmp %s: still waiting after %v: %s", body.Type(), c.o.Wait, res.Status)
			}
			if c.o.OnProgress != nil {
				c.o.OnProgress(CMPProgress{Attempt: out.Polls + 1, CheckAfter: wait, Reason: strings.Join(res.Status.StatusString, "; ")})
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(wait):
			}
		} else if c.o.OnProgress != nil {
			c.o.OnProgress(CMPProgress{Attempt: 1, Reason: strings.Join(res.Status.StatusString, "; ")})
		}
		out.Polls++
		// The certReqId of the request (-1 for p10cr, as the answer said).
		rsp, by, _, err = c.exchange(ctx, &cmp.PollReqContent{CertReqIDs: []int64{id}}, txID, rsp.Header.SenderNonce, false, sender)
		if err != nil {
			return nil, err
		}
		if p, ok := rsp.Body.(*cmp.PollRepContent); ok && len(p.Entries) == 1 {
			id2 := p.Entries[0].CertReqID
			res, err = cmp.ParseEnrollResponse(rsp, id2)
		} else {
			res, err = cmp.ParseEnrollResponse(rsp, id)
		}
		if err != nil {
			return nil, fmt.Errorf("cmp pollReq: %w", err)
		}
	}
	out.Cert, out.CAPubs, out.ExtraCerts, out.ImplicitConfirm = res.Cert, res.CAPubs, res.ExtraCerts, res.ImplicitConfirm
	chain, rejected := c.acceptCert(res, by, want)
	if rejected != nil {
		rejected = fmt.Errorf("cmp %s: %w", body.Type(), rejected)
	}
	out.Chain = chain
	if res.ImplicitConfirm {
		if rejected != nil {
			return nil, rejected
		}
		return out, nil
	}
	// RFC 9483 §4.1.1: confirm with the certificate's hash, or reject a certificate we do not
	// accept (status rejection, so that the CA can revoke it); the server answers pkiconf.
	var status *cmp.StatusInfo
	if rejected != nil {
		status = &cmp.StatusInfo{Status: cmp.StatusRejection, FailInfo: cmp.FailIncorrectData, StatusString: []string{rejected.Error()}}
	}
	cs, err := cmp.NewCertStatus(id, res.Cert, status)
	if err != nil {
		return nil, err
	}
	conf, _, _, err := c.exchange(ctx, &cmp.CertConfirmContent{Statuses: []cmp.CertStatus{cs}}, txID, rsp.Header.SenderNonce, false, sender)
	if rejected != nil {
		return nil, rejected
	}
	if err != nil {
		return nil, err
	}
	if err := conf.Failed(); err != nil {
		return nil, fmt.Errorf("cmp certConf: %w", err)
	}
	if conf.Body.Type() != cmp.TypePKIConf {
		return nil, fmt.Errorf("cmp certConf: unexpected %s answer", conf.Body.Type())
	}
	return out, nil
}

// Revoke asks for the revocation of cert (rr, RFC 9483 §4.2) with an RFC 5280 reason code
// (-1 = none).
func (c *CMP) Revoke(ctx context.Context, cert *x509.Certificate, reason int) error {
	rsp, _, _, err := c.exchange(ctx, &cmp.RevReqContent{Requests: []cmp.RevDetails{cmp.NewRevDetails(cert, reason)}}, nil, nil, true, cmp.GeneralName{})
	if err != nil {
		return err
	}
	if err := rsp.Failed(); err != nil {
		return fmt.Errorf("cmp rr: %w", err)
	}
	rp, ok := rsp.Body.(*cmp.RevRepContent)
	if !ok || len(rp.Status) != 1 {
		return fmt.Errorf("cmp rr: unexpected %s answer", rsp.Body.Type())
	}
	return nil
}

// GenM sends a general message with itavs and returns the genp's ITAVs (RFC 9483 §4.3).
func (c *CMP) GenM(ctx context.Context, itavs ...cmp.InfoTypeAndValue) ([]cmp.InfoTypeAndValue, error) {
	rsp, _, _, err := c.exchange(ctx, &cmp.GenContent{BodyType: cmp.TypeGenM, ITAVs: itavs}, nil, nil, true, cmp.GeneralName{})
	if err != nil {
		return nil, err
	}
	if err := rsp.Failed(); err != nil {
		return nil, fmt.Errorf("cmp genm: %w", err)
	}
	g, ok := rsp.Body.(*cmp.GenContent)
	if !ok || g.BodyType != cmp.TypeGenP {
		return nil, fmt.Errorf("cmp genm: unexpected %s answer", rsp.Body.Type())
	}
	return g.ITAVs, nil
}

// GenMRequest returns the ITAVs of a genm asking for the support information named (RFC 9483
// §4.3): "cacerts" (§4.3.1), "rootupdate" (§4.3.2), "template" (§4.3.3) and "crls" (§4.3.4),
// case-insensitive.
func GenMRequest(names ...string) ([]cmp.InfoTypeAndValue, error) {
	var itavs []cmp.InfoTypeAndValue
	for _, n := range names {
		var it cmp.InfoTypeAndValue
		switch strings.ToLower(n) {
		case "cacerts":
			it.Type = cmp.OIDITCACerts
		case "rootupdate":
			it.Type = cmp.OIDITRootCAKeyUpdate
		case "template":
			it.Type = cmp.OIDITCertReqTemplate
		case "crls":
			// RFC 9483 §4.3.4: the request names the CRL source; with none cached, ask for any.
			v, err := cmp.MarshalCRLStatusList([]cmp.CRLStatus{{Issuer: []cmp.GeneralName{cmp.NullDN()}}})
			if err != nil {
				return nil, err
			}
			it = cmp.InfoTypeAndValue{Type: cmp.OIDITCRLStatusList, Value: v}
		default:
			return nil, fmt.Errorf("%q: want cacerts, rootupdate, template or crls", n)
		}
		itavs = append(itavs, it)
	}
	return itavs, nil
}

// VerifyRootCAKeyUpdate checks a rootCaKeyUpdate from a genp (RFC 9483 §4.3.2) before its new
// root is used: newWithNew must be self-signed, and newWithOld — the same subject and key,
// certified by the old root — must validate to the current trust anchors (the check openssl's
// OSSL_CMP_get1_rootCaKeyUpdate makes; done in two steps because a chain through a certificate
// with the leaf's own subject and key is a loop to Go's verifier). Without trust anchors only
// the answer's protection vouches for it (a MAC with our secret or the pinned CMP signer).
func VerifyRootCAKeyUpdate(u *cmp.RootCAKeyUpdate, anchors []*x509.Certificate, now time.Time) error {
	if u == nil || u.NewWithNew == nil {
		return errors.New("rootCaKeyUpdate without newWithNew")
	}
	nn := u.NewWithNew
	if !nn.IsCA || !isSelfSigned(nn) {
		return fmt.Errorf("rootCaKeyUpdate: newWithNew %q is not a self-signed CA certificate", nn.Subject)
	}
	if len(anchors) == 0 {
		return nil
	}
	no := u.NewWithOld
	if no == nil || !no.IsCA || !bytes.Equal(no.RawSubject, nn.RawSubject) || !publicKeyEqual(no.PublicKey, nn.PublicKey) {
		return fmt.Errorf("rootCaKeyUpdate: the new root %q is not certified by the current trust anchors: no matching newWithOld", nn.Subject)
	}
	if _, err := verifyChain(no, nil, anchors, now); err != nil {
		return fmt.Errorf("rootCaKeyUpdate: the new root %q is not certified by the current trust anchors: %w", nn.Subject, err)
	}
	return nil
}
