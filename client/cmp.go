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
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
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
		c, err := coap.Dial(ctx, u.Scheme+"://"+u.Host, opts)
		if err != nil {
			return nil, err
		}
		return &coapCMP{c: c, path: path}, nil
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
	c    *coap.Client
	path string
}

// RoundTrip POSTs the message (RFC 9482 §2.3: Confirmable, Content-Format 259, block-wise by
// the endpoint).
func (t *coapCMP) RoundTrip(ctx context.Context, req []byte) ([]byte, error) {
	rsp, err := t.c.Do(ctx, &coap.ClientRequest{Method: codes.POST, Path: t.path, ContentFormat: cmpContentFormat,
		Accept: cmpContentFormat, Payload: req})
	if err != nil {
		return nil, err
	}
	if rsp.Code>>5 != 2 {
		return nil, fmt.Errorf("cmp: server answered %v: %s", rsp.Code, strings.TrimSpace(string(rsp.Payload)))
	}
	switch rsp.ContentFormat {
	case cmpContentFormat, 42, -1: // 42 and none from servers that predate RFC 9482
	default:
		return nil, fmt.Errorf("cmp: answer has Content-Format %d, not 259", rsp.ContentFormat)
	}
	return rsp.Payload, nil
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
type CMPOptions struct {
	// Protection protects every request: *cmp.SignatureProtection, *cmp.PBMProtection or
	// *cmp.PBMAC1Protection (RFC 9483 §3.2).
	Protection cmp.Protector
	// Secret verifies MAC-protected answers (the shared secret of a MAC Protection).
	Secret []byte
	// Trust are the trust anchors for signature-protected answers: the server's protection
	// certificate must chain to one of them (extraCerts serve as intermediates).
	Trust []*x509.Certificate
	// InsecureSkipVerify accepts answers whose protection cannot be checked (testing only).
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
	return &CMP{t: t, o: o}
}

// CMPEnrollment is the outcome of ir, cr, kur or p10cr.
type CMPEnrollment struct {
	Cert       *x509.Certificate
	CAPubs     []*x509.Certificate // root CA certificates from ip (RFC 9483 §4.1.1)
	ExtraCerts []*x509.Certificate // the chain the server sent
	// ImplicitConfirm is true when the server granted implicit confirmation (no certConf).
	ImplicitConfirm bool
	Polls           int // pollReq messages sent
}

// exchange sends one request body in transaction txID (nil = new) and returns the verified
// answer and the request header.
func (c *CMP) exchange(ctx context.Context, body cmp.Body, txID, recipNonce []byte, first bool, sender cmp.GeneralName) (*cmp.Message, *cmp.Header, error) {
	if sender.IsZero() {
		sender = c.o.Sender
	}
	rcpt := c.o.Recipient
	if rcpt.IsZero() {
		rcpt = cmp.NullDN()
	}
	hdr, err := cmp.NewRequestHeader(sender, rcpt, txID, recipNonce)
	if err != nil {
		return nil, nil, err
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
		return nil, nil, err
	}
	rspDER, err := c.t.RoundTrip(ctx, der)
	if err != nil {
		return nil, nil, fmt.Errorf("cmp %s: %w", body.Type(), err)
	}
	rsp, err := cmp.Parse(rspDER)
	if err != nil {
		return nil, nil, fmt.Errorf("cmp %s: answer: %w", body.Type(), err)
	}
	if err := c.verify(rsp); err != nil {
		if f := rsp.Failed(); f != nil {
			return nil, nil, fmt.Errorf("cmp %s: %w (and the error message's protection does not verify: %v)", body.Type(), f, err)
		}
		return nil, nil, fmt.Errorf("cmp %s: %w", body.Type(), err)
	}
	// RFC 9483 §3.5: transactionID and recipNonce must answer our request.
	if err := cmp.CheckResponse(&m.Header, &rsp.Header); err != nil {
		return nil, nil, fmt.Errorf("cmp %s: %w", body.Type(), err)
	}
	return rsp, &m.Header, nil
}

// verify checks the answer's protection (RFC 9483 §3.2, §3.3).
func (c *CMP) verify(rsp *cmp.Message) error {
	switch rsp.ProtectionKind() {
	case cmp.ProtectionPBM, cmp.ProtectionPBMAC1:
		if c.o.Secret == nil {
			if c.o.InsecureSkipVerify {
				return nil
			}
			return errors.New("MAC-protected answer but no shared secret")
		}
		return rsp.VerifyMAC(c.o.Secret)
	case cmp.ProtectionSignature:
		cert := rsp.ProtectionCert()
		if err := rsp.VerifySignature(cert); err != nil {
			return err
		}
		if c.o.InsecureSkipVerify {
			return nil
		}
		if len(c.o.Trust) == 0 {
			return errors.New("signed answer but no trust anchors to validate the server's certificate")
		}
		roots, inter := x509.NewCertPool(), x509.NewCertPool()
		for _, a := range c.o.Trust {
			roots.AddCert(a)
		}
		for _, e := range rsp.ExtraCerts[1:] {
			inter.AddCert(e)
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return fmt.Errorf("the server's protection certificate %s is not trusted: %w", cert.Subject, err)
		}
		return nil
	case cmp.ProtectionNone:
		if c.o.InsecureSkipVerify {
			return nil
		}
		return errors.New("the answer is not protected")
	}
	return errors.New("the answer's protection algorithm is not supported")
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
	res, err := c.transact(ctx, &cmp.CertReqMessages{BodyType: t, Requests: []cmp.CertReqMsg{crm}}, 0, sender)
	if err != nil {
		return nil, err
	}
	if !publicKeyEqual(res.Cert.PublicKey, key.Public()) {
		return nil, errors.New("cmp: the certificate does not certify our key")
	}
	return res, nil
}

// P10CR requests a certificate with a PKCS#10 CSR (RFC 9483 §4.1.4).
func (c *CMP) P10CR(ctx context.Context, csr *x509.CertificateRequest) (*CMPEnrollment, error) {
	var sender cmp.GeneralName
	if _, sig := c.o.Protection.(*cmp.SignatureProtection); !sig {
		sender = cmp.DirectoryName(csr.RawSubject)
	}
	res, err := c.transact(ctx, &cmp.P10CR{CSR: csr}, -1, sender)
	if err != nil {
		return nil, err
	}
	if !publicKeyEqual(res.Cert.PublicKey, csr.PublicKey) {
		return nil, errors.New("cmp: the certificate does not certify the CSR's key")
	}
	return res, nil
}

func publicKeyEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// transact runs one enrollment transaction: request, polling, certConf.
func (c *CMP) transact(ctx context.Context, body cmp.Body, certReqID int64, sender cmp.GeneralName) (*CMPEnrollment, error) {
	rsp, hdr, err := c.exchange(ctx, body, nil, nil, true, sender)
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
		rsp, _, err = c.exchange(ctx, &cmp.PollReqContent{CertReqIDs: []int64{id}}, txID, rsp.Header.SenderNonce, false, sender)
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
	if res.ImplicitConfirm {
		return out, nil
	}
	// RFC 9483 §4.1.1: confirm with the certificate's hash; the server answers pkiconf.
	cs, err := cmp.NewCertStatus(id, res.Cert, nil)
	if err != nil {
		return nil, err
	}
	conf, _, err := c.exchange(ctx, &cmp.CertConfirmContent{Statuses: []cmp.CertStatus{cs}}, txID, rsp.Header.SenderNonce, false, sender)
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
	rsp, _, err := c.exchange(ctx, &cmp.RevReqContent{Requests: []cmp.RevDetails{cmp.NewRevDetails(cert, reason)}}, nil, nil, true, cmp.GeneralName{})
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
	rsp, _, err := c.exchange(ctx, &cmp.GenContent{BodyType: cmp.TypeGenM, ITAVs: itavs}, nil, nil, true, cmp.GeneralName{})
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
