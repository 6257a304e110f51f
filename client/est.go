// Package client holds coapca's client libraries. This file is the EST-coaps client (RFC 9148):
// it speaks the EST functions over a coap.Client (one DTLS association), negotiates the
// Content-Formats of RFC 9148 §4.3, follows delayed responses (5.03 + Max-Age, §4.7) until a
// deadline, and helps keep the Explicit Trust Anchor database of RFC 7030 §4.1.3 / RFC 9148 §9.1
// (trustanchors.go).
package client

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"coapca/coap"
	"coapca/est"
	"coapca/est/cms"
)

// CertFormat selects how the server returns certificates (RFC 9148 §4.3).
type CertFormat int

const (
	// PKCS7 asks for certs-only PKCS#7 (Content-Format 281), the server's default.
	PKCS7 CertFormat = iota
	// Cert asks for a single DER certificate (Content-Format 287).
	Cert
)

// ParseCertFormat parses "pkcs7" or "cert".
func ParseCertFormat(s string) (CertFormat, error) {
	switch strings.ToLower(s) {
	case "pkcs7", "281", "":
		return PKCS7, nil
	case "cert", "287", "pkix-cert":
		return Cert, nil
	}
	return 0, fmt.Errorf("unknown certificate format %q (want pkcs7 or cert)", s)
}

// Progress reports a delayed response the client is waiting out (RFC 9148 §4.7).
type Progress struct {
	Function   string        // "sen", "sren", "skg", ...
	Attempt    int           // 1 for the first 5.03
	RetryAfter time.Duration // the server's Max-Age
	Diagnostic string        // the server's diagnostic payload, if any
	// Reconnected is set when the association was lost (the server closed the session or
	// stopped answering, e.g. it restarted): EST-coaps made a new one, EST over HTTPS tries
	// again after a pause; the request is sent again. Diagnostic then says what failed.
	Reconnected bool
}

// ESTOptions configures an EST client.
type ESTOptions struct {
	// Root is the EST root; "" = /.well-known/est (RFC 9148 §4.1).
	Root string
	// Label selects a certificate profile: requests go to Root/Label/<function>.
	Label string
	// Accept is the certificate format asked for on /crts, /sen, /sren and /skg.
	Accept CertFormat
	// Trust, when set, are the trust anchors an issued certificate must chain to (with the CA
	// certificates of the answer, or else of /crts, as intermediates) before Enroll, Reenroll
	// or ServerKeyGen return it: the certificate to be saved is checked, not only the server.
	Trust []*x509.Certificate
	// Wait is how long to keep resending a request answered with 5.03 + Max-Age. 0 = give up
	// at the first 5.03 (the error is a *PendingError).
	Wait time.Duration
	// OnProgress, if set, is called before each wait.
	OnProgress func(Progress)
	// Redial, when set, makes a new association with the server (a new DTLS handshake, or a new
	// OSCORE/EDHOC association). A request whose association is gone — the server ended the
	// session (close_notify) or no longer answers on it (a restarted server forgot it) — is then
	// sent again over a new one while Wait lasts, instead of failing. The old association is
	// closed. A CSR bound to the old session (tls-unique in challengePassword) will be refused
	// by the server on the new one.
	Redial func(ctx context.Context) (*coap.Client, error)
	// KeyDecrypter, when set, opens a CMS-encrypted server-generated key (Content-Format 280,
	// RFC 7030 §4.4.2) with a pre-shared key-encryption key or the client's own private key;
	// ServerKeyGen then also refuses an unencrypted key (284). The CSR must ask for the
	// encryption (est.DecryptKeyIdentifierAttribute, est.AsymmetricDecryptKeyIdentifierAttribute).
	KeyDecrypter *cms.Decrypter
}

// EST is an EST-coaps client over one CoAP association.
type EST struct {
	c    *coap.Client
	opts ESTOptions
	// sleep waits d or until ctx is done (replaced in tests).
	sleep func(ctx context.Context, d time.Duration) error
	// cas are the CA certificates of /crts, fetched before a CSR is sent (see prefetchCAs).
	cas []*x509.Certificate
}

// NewEST returns an EST client using c.
func NewEST(c *coap.Client, opts ESTOptions) *EST {
	if opts.Root == "" {
		opts.Root = "/.well-known/est"
	}
	opts.Root = "/" + strings.Trim(opts.Root, "/")
	opts.Label = strings.Trim(opts.Label, "/")
	return &EST{c: c, opts: opts, sleep: sleepCtx}
}

// StatusError is a non-success answer from the server.
type StatusError struct {
	Function   string
	Code       codes.Code
	Diagnostic string // the server's diagnostic payload (RFC 7252 §5.5.2)
}

func (e *StatusError) Error() string {
	s := fmt.Sprintf("est /%s: server answered %s", e.Function, codeString(e.Code))
	if e.Diagnostic != "" {
		s += ": " + e.Diagnostic
	}
	return s
}

// PendingError is returned when the server still answers 5.03 + Max-Age at the wait deadline.
type PendingError struct {
	Function   string
	RetryAfter time.Duration
	Diagnostic string
}

func (e *PendingError) Error() string {
	s := fmt.Sprintf("est /%s: request still pending (server asks to retry in %v)", e.Function, e.RetryAfter)
	if e.Diagnostic != "" {
		s += ": " + e.Diagnostic
	}
	return s
}

// TLSUnique is the tls-unique of the association, to put (base64) in a CSR's challengePassword
// for PoP linking (RFC 7030 §3.5, RFC 9148 §3; see est.CreateCSR).
func (e *EST) TLSUnique() []byte { return e.c.Peer().TLSUnique() }

func (e *EST) path(fn string) string {
	if e.opts.Label != "" {
		return e.opts.Root + "/" + e.opts.Label + "/" + fn
	}
	return e.opts.Root + "/" + fn
}

func (e *EST) certAccept() coap.Format {
	if e.opts.Accept == Cert {
		return coap.CF(est.CFPKIXCert)
	}
	return coap.CF(est.CFPKCS7CertsOnly)
}

// do sends the request and resends it while the server answers 5.03 + Max-Age, until
// opts.Wait runs out (RFC 9148 §4.7: "the client SHOULD resend the identical CSR").
func (e *EST) do(ctx context.Context, fn string, req *coap.ClientRequest, want codes.Code) (*coap.Response, error) {
	deadline := time.Now().Add(e.opts.Wait)
	for attempt := 1; ; attempt++ {
		resp, err := e.c.Do(ctx, req)
		if err != nil {
			if e.opts.Redial == nil || !sessionGone(err) || !time.Now().Before(deadline) || ctx.Err() != nil {
				return nil, fmt.Errorf("est /%s: %w", fn, err)
			}
			if rerr := e.redial(ctx, deadline); rerr != nil {
				return nil, fmt.Errorf("est /%s: %w (and no new association: %w)", fn, err, rerr)
			}
			if e.opts.OnProgress != nil {
				e.opts.OnProgress(Progress{Function: fn, Attempt: attempt, Reconnected: true, Diagnostic: err.Error()})
			}
			continue
		}
		if resp.Code == want {
			return resp, nil
		}
		if secs, ok := resp.MaxAge.Get(); resp.Code == codes.ServiceUnavailable && ok && secs > 0 {
			wait := resp.MaxAge.Duration()
			diag := string(resp.Payload)
			if time.Now().Add(wait).After(deadline) {
				return nil, &PendingError{Function: fn, RetryAfter: wait, Diagnostic: diag}
			}
			if e.opts.OnProgress != nil {
				e.opts.OnProgress(Progress{Function: fn, Attempt: attempt, RetryAfter: wait, Diagnostic: diag})
			}
			if err := e.sleep(ctx, wait); err != nil {
				return nil, fmt.Errorf("est /%s: %w", fn, err)
			}
			continue
		}
		se := &StatusError{Function: fn, Code: resp.Code}
		if resp.Code>>5 >= 4 {
			se.Diagnostic = string(resp.Payload)
		}
		return nil, se
	}
}

// sessionGone tells the errors after which the association is of no more use: the server closed
// the DTLS session, or stopped acknowledging (after MAX_RETRANSMIT, RFC 7252 §4.2).
func sessionGone(err error) bool {
	return errors.Is(err, coap.ErrSessionClosed) || errors.Is(err, coap.ErrTimeout)
}

// Backoff between attempts to make a new association with a server that is away.
const (
	redialFirst   = time.Second
	redialMax     = 30 * time.Second
	redialAttempt = 20 * time.Second // bound of one handshake attempt
)

// redial replaces the association with a new one from opts.Redial, trying until deadline.
func (e *EST) redial(ctx context.Context, deadline time.Time) error {
	wait := redialFirst
	for {
		actx, cancel := context.WithTimeout(ctx, redialAttempt)
		c, err := e.opts.Redial(actx)
		cancel()
		if err == nil {
			_ = e.c.Close()
			e.c = c
			return nil
		}
		if ctx.Err() != nil || !time.Now().Add(wait).Before(deadline) {
			return err
		}
		if err := e.sleep(ctx, wait); err != nil {
			return err
		}
		wait = min(2*wait, redialMax)
	}
}

// CACerts fetches the CA certificates (/crts, RFC 9148 §4.1; RFC 7030 §4.1). With Accept Cert
// the server returns one certificate (the trust anchor).
func (e *EST) CACerts(ctx context.Context) ([]*x509.Certificate, error) {
	resp, err := e.do(ctx, "crts", &coap.ClientRequest{Method: codes.GET, Path: e.path("crts"),
		Accept: e.certAccept()}, codes.Content)
	if err != nil {
		return nil, err
	}
	return parseCerts("crts", resp)
}

func (e *EST) caCertsPKCS7(ctx context.Context) ([]*x509.Certificate, error) {
	resp, err := e.do(ctx, "crts", &coap.ClientRequest{Method: codes.GET, Path: e.path("crts"),
		Accept: coap.CF(est.CFPKCS7CertsOnly)}, codes.Content)
	if err != nil {
		return nil, err
	}
	return parseCerts("crts", resp)
}

// CACertsMultipart fetches /crts with Accept 62 (constrained BRSKI): one 287 part per CA
// certificate.
func (e *EST) CACertsMultipart(ctx context.Context) ([]*x509.Certificate, error) {
	resp, err := e.do(ctx, "crts", &coap.ClientRequest{Method: codes.GET, Path: e.path("crts"),
		Accept: coap.CF(est.CFMultipartCore)}, codes.Content)
	if err != nil {
		return nil, err
	}
	return parseCerts("crts", resp)
}

// Enroll posts a DER CSR to /sen (RFC 7030 §4.2.1) and returns the issued certificate.
func (e *EST) Enroll(ctx context.Context, csr []byte) (*x509.Certificate, error) {
	return e.enroll(ctx, "sen", csr)
}

// Reenroll posts a DER CSR to /sren (RFC 7030 §4.2.2) and returns the issued certificate.
func (e *EST) Reenroll(ctx context.Context, csr []byte) (*x509.Certificate, error) {
	return e.enroll(ctx, "sren", csr)
}

func (e *EST) enroll(ctx context.Context, fn string, csr []byte) (*x509.Certificate, error) {
	e.prefetchCAs(ctx)
	resp, err := e.do(ctx, fn, &coap.ClientRequest{Method: codes.POST, Path: e.path(fn),
		ContentFormat: coap.CF(est.CFPKCS10), Accept: e.certAccept(), Payload: csr}, codes.Changed)
	if err != nil {
		return nil, err
	}
	certs, err := parseCerts(fn, resp)
	if err != nil {
		return nil, err
	}
	pub, err := requestedKey(csr, certs[0])
	if err != nil {
		return nil, fmt.Errorf("est /%s: our own CSR does not parse: %w", fn, err)
	}
	if err := e.checkIssued(ctx, fn, certs[0], pub, certs[1:]); err != nil {
		return nil, err
	}
	return certs[0], nil
}

// requestedKey returns the public key that csr (DER) asks to have certified, for the check
// that issued certifies it. When the CSR's SubjectPublicKeyInfo is byte for byte the issued
// certificate's, that key is the certificate's own, already parsed, and the CSR is not parsed
// further; otherwise (another key, or the same key encoded differently) the whole CSR is
// parsed and its key returned, which checkIssued then compares with the certificate's.
func requestedKey(csr []byte, issued *x509.Certificate) (crypto.PublicKey, error) {
	if spki, ok := csrPublicKeyInfo(csr); ok && bytes.Equal(spki, issued.RawSubjectPublicKeyInfo) {
		return issued.PublicKey, nil
	}
	req, err := x509.ParseCertificateRequest(csr)
	if err != nil {
		return nil, err
	}
	return req.PublicKey, nil
}

// csrPublicKeyInfo returns the DER of the subjectPKInfo of a PKCS #10 request (RFC 2986 §4.1:
// CertificationRequest ::= SEQUENCE { certificationRequestInfo SEQUENCE { version INTEGER,
// subject Name, subjectPKInfo SubjectPublicKeyInfo, attributes [0] }, ... }).
func csrPublicKeyInfo(der []byte) ([]byte, bool) {
	in := cryptobyte.String(der)
	var req, info, spki cryptobyte.String
	if !in.ReadASN1(&req, cbasn1.SEQUENCE) || !in.Empty() ||
		!req.ReadASN1(&info, cbasn1.SEQUENCE) ||
		!info.SkipASN1(cbasn1.INTEGER) ||
		!info.SkipASN1(cbasn1.SEQUENCE) ||
		!info.ReadASN1Element(&spki, cbasn1.SEQUENCE) {
		return nil, false
	}
	return spki, true
}

// checkIssued makes sure an issued certificate certifies pub and, with ESTOptions.Trust,
// chains to the trust anchors: a certificate the client saves must be one it can use. The
// answer's other certificates are intermediates; when they are not enough, /crts supplies the
// CA certificates (RFC 7030 §4.1.3).
func (e *EST) checkIssued(ctx context.Context, fn string, cert *x509.Certificate, pub crypto.PublicKey, extra []*x509.Certificate) error {
	cacerts := func(ctx context.Context) ([]*x509.Certificate, error) {
		if e.cas != nil {
			return e.cas, nil
		}
		// Certs-only (281) whatever opts.Accept says: with 287 /crts returns the root alone.
		return e.caCertsPKCS7(ctx)
	}
	return checkIssuedCert(ctx, fn, cert, pub, extra, e.opts.Trust, cacerts)
}

// prefetchCAs fetches the CA certificates that checkIssued may need as intermediates before the
// CSR goes out, with ESTOptions.Trust: once the server has issued, the certificate must not
// depend on a second request (a server that is stopping answers the CSR it took, but refuses new
// requests; the certificate would be issued and recorded, delivered, and then thrown away). A
// failure is not fatal here: checkIssued asks again when it needs them.
func (e *EST) prefetchCAs(ctx context.Context) {
	if len(e.opts.Trust) == 0 || e.cas != nil {
		return
	}
	if cas, err := e.caCertsPKCS7(ctx); err == nil {
		e.cas = cas
	}
}

// checkIssuedCert is the check of an issued certificate shared by every EST transport: it
// certifies pub and, with trust, chains to those anchors, with extra and else the CA
// certificates from cacerts as intermediates.
func checkIssuedCert(ctx context.Context, fn string, cert *x509.Certificate, pub crypto.PublicKey, extra, trust []*x509.Certificate,
	cacerts func(context.Context) ([]*x509.Certificate, error)) error {
	if k, ok := pub.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(cert.PublicKey) {
		return fmt.Errorf("est /%s: the issued certificate does not certify the requested key", fn)
	}
	if len(trust) == 0 {
		return nil
	}
	verify := func(inter []*x509.Certificate) error {
		_, err := cert.Verify(x509.VerifyOptions{Roots: Pool(trust), Intermediates: Pool(inter),
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		return err
	}
	err := verify(extra)
	if err != nil {
		var ua x509.UnknownAuthorityError
		if errors.As(err, &ua) {
			if cas, cerr := cacerts(ctx); cerr == nil {
				err = verify(append(extra, cas...))
			}
		}
	}
	if err != nil {
		return fmt.Errorf("est /%s: the issued certificate does not chain to the trust anchors: %w", fn, err)
	}
	return nil
}

// CSRAttrs fetches /att (RFC 7030 §4.5).
func (e *EST) CSRAttrs(ctx context.Context) (*est.CsrAttrs, error) {
	resp, err := e.do(ctx, "att", &coap.ClientRequest{Method: codes.GET, Path: e.path("att"),
		Accept: coap.CF(est.CFCSRAttrs)}, codes.Content)
	if err != nil {
		return nil, err
	}
	if resp.ContentFormat != coap.CF(est.CFCSRAttrs) {
		return nil, fmt.Errorf("est /att: unexpected Content-Format %v", resp.ContentFormat)
	}
	a, err := est.ParseCsrAttrs(resp.Payload)
	if err != nil {
		return nil, fmt.Errorf("est /att: %w", err)
	}
	return a, nil
}

// ServerKey is what server-side key generation returns.
type ServerKey struct {
	Key    crypto.PrivateKey
	PKCS8  []byte // the key as PKCS#8 DER (received as 284, or decrypted from 280)
	Cert   *x509.Certificate
	Format int // the certificate's Content-Format (281 or 287)
	// Encrypted is set when the key came CMS-encrypted (280); KeySigner is then the certificate
	// that signed the key package (checked against ESTOptions.Trust when set).
	Encrypted bool
	KeySigner *x509.Certificate
	keyCerts  []*x509.Certificate // the key package's other certificates (intermediates)
	// KeyPackage is set when the key came as an asymmetric key package of RFC 8295 §8.1
	// (EST over HTTPS, application/cms); OuterSigner is then the certificate that signed the
	// outer SignedData (checked against the trust anchors as KeySigner).
	KeyPackage  bool
	OuterSigner *x509.Certificate
	outerCerts  []*x509.Certificate
}

// ServerKeyGen posts csr to /skg (Accept PKCS7) or /skc (Accept Cert) and returns the
// generated key and its certificate (RFC 9148 §4.8). The CSR's key and signature are ignored
// by the server; only its subject, SANs and attributes count.
func (e *EST) ServerKeyGen(ctx context.Context, csr []byte) (*ServerKey, error) {
	fn := "skg"
	if e.opts.Accept == Cert {
		fn = "skc"
	}
	e.prefetchCAs(ctx)
	resp, err := e.do(ctx, fn, &coap.ClientRequest{Method: codes.POST, Path: e.path(fn),
		ContentFormat: coap.CF(est.CFPKCS10), Accept: coap.CF(est.CFMultipartCore), Payload: csr}, codes.Changed)
	if err != nil {
		return nil, err
	}
	if resp.ContentFormat != coap.CF(est.CFMultipartCore) {
		return nil, fmt.Errorf("est /%s: unexpected Content-Format %v (want 62)", fn, resp.ContentFormat)
	}
	parts, err := est.ParseMultipart(resp.Payload)
	if err != nil {
		return nil, fmt.Errorf("est /%s: %w", fn, err)
	}
	sk := &ServerKey{}
	for _, p := range parts {
		switch p.ContentFormat {
		case est.CFPKCS8:
			if e.opts.KeyDecrypter != nil {
				// The key was asked for encrypted: a server (or an RA on the way) that sends it
				// in the clear does not get it used.
				return nil, fmt.Errorf("est /%s: asked for a CMS-encrypted key, the server returned it unencrypted (284)", fn)
			}
			k, err := x509.ParsePKCS8PrivateKey(p.Body)
			if err != nil {
				return nil, fmt.Errorf("est /%s: private key: %w", fn, err)
			}
			sk.Key, sk.PKCS8 = k, p.Body
		case est.CFPKCS7ServerKey:
			if e.opts.KeyDecrypter == nil {
				return nil, fmt.Errorf("est /%s: the server returned a CMS-encrypted key (280) and no key to decrypt it was given", fn)
			}
			dk, err := est.DecryptServerKey(p.Body, *e.opts.KeyDecrypter)
			if err != nil {
				return nil, fmt.Errorf("est /%s: encrypted key: %w", fn, err)
			}
			if err := checkKeySigner(dk.Signer, dk.Certs, e.opts.Trust); err != nil {
				return nil, fmt.Errorf("est /%s: %w", fn, err)
			}
			sk.Key, sk.PKCS8, sk.Encrypted, sk.KeySigner = dk.Key, dk.PKCS8, true, dk.Signer
		case est.CFPKCS7CertsOnly, est.CFPKIXCert:
			certs, err := decodeCerts(p.ContentFormat, p.Body)
			if err != nil {
				return nil, fmt.Errorf("est /%s: %w", fn, err)
			}
			sk.Cert, sk.Format = certs[0], int(p.ContentFormat)
		}
	}
	if sk.Key == nil || sk.Cert == nil {
		return nil, fmt.Errorf("est /%s: response lacks the key or the certificate", fn)
	}
	pub, ok := sk.Key.(interface{ Public() crypto.PublicKey })
	if !ok {
		return nil, fmt.Errorf("est /%s: unsupported private key type %T", fn, sk.Key)
	}
	if err := e.checkIssued(ctx, fn, sk.Cert, pub.Public(), nil); err != nil {
		return nil, err
	}
	return sk, nil
}

// checkKeySigner makes sure, with trust anchors, that the key package was signed by a
// certificate chaining to them (RFC 7030 §4.4.2: the SignedData is signed by the party that
// generated the key); certs are the SignedData's other certificates. Shared by every transport.
func checkKeySigner(signer *x509.Certificate, certs, trust []*x509.Certificate) error {
	if len(trust) == 0 {
		return nil
	}
	if _, err := signer.Verify(x509.VerifyOptions{Roots: Pool(trust), Intermediates: Pool(certs),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("the signer of the encrypted key (%s) does not chain to the trust anchors: %w", signer.Subject, err)
	}
	return nil
}

func parseCerts(fn string, resp *coap.Response) ([]*x509.Certificate, error) {
	cf, ok := resp.ContentFormat.Get()
	if !ok {
		return nil, fmt.Errorf("est /%s: certificates without a Content-Format", fn)
	}
	certs, err := decodeCerts(cf, resp.Payload)
	if err != nil {
		return nil, fmt.Errorf("est /%s: %w", fn, err)
	}
	return certs, nil
}

func decodeCerts(cf uint16, body []byte) ([]*x509.Certificate, error) {
	switch cf {
	case est.CFPKCS7CertsOnly:
		return est.ParseCertsOnly(body)
	case est.CFPKIXCert:
		c, err := x509.ParseCertificate(body)
		if err != nil {
			return nil, err
		}
		return []*x509.Certificate{c}, nil
	case est.CFMultipartCore:
		parts, err := est.ParseMultipart(body)
		if err != nil {
			return nil, err
		}
		var out []*x509.Certificate
		for _, p := range parts {
			if p.ContentFormat != est.CFPKIXCert && p.ContentFormat != est.CFPKCS7CertsOnly {
				continue
			}
			cs, err := decodeCerts(p.ContentFormat, p.Body)
			if err != nil {
				return nil, err
			}
			out = append(out, cs...)
		}
		if len(out) == 0 {
			return nil, errors.New("multipart-core holds no certificate")
		}
		return out, nil
	}
	return nil, fmt.Errorf("unexpected Content-Format %d for certificates", cf)
}

func codeString(c codes.Code) string {
	return fmt.Sprintf("%d.%02d", uint8(c)>>5, uint8(c)&0x1f)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Discover lists the EST-coaps resources the server announces (RFC 9148 §4.1:
// GET /.well-known/core?rt=ace.est*).
func Discover(ctx context.Context, c *coap.Client) ([]coap.Link, error) {
	resp, err := c.Do(ctx, &coap.ClientRequest{Method: codes.GET, Path: "/.well-known/core",
		Query: []string{"rt=ace.est*"}})
	if err != nil {
		return nil, fmt.Errorf("est discovery: %w", err)
	}
	if resp.Code != codes.Content {
		return nil, &StatusError{Function: ".well-known/core", Code: resp.Code, Diagnostic: string(resp.Payload)}
	}
	links, err := coap.ParseLinkFormat(resp.Payload)
	if err != nil {
		return nil, fmt.Errorf("est discovery: %w", err)
	}
	return links, nil
}

// SplitServerURL splits "coaps://host[:port][/label]" into the URL to dial and the EST label.
// A path under /.well-known/est is accepted too ("coaps://h/.well-known/est/lbl").
func SplitServerURL(raw string) (dialURL, label string, err error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok || (scheme != "coaps" && scheme != "coap") {
		return "", "", fmt.Errorf("server URL %q: want coaps://host[:port][/label]", raw)
	}
	host, path, _ := strings.Cut(rest, "/")
	if host == "" {
		return "", "", fmt.Errorf("server URL %q: no host", raw)
	}
	path = strings.Trim(path, "/")
	path = strings.TrimPrefix(strings.TrimPrefix(path, ".well-known/est"), "/")
	if strings.Contains(path, "/") {
		return "", "", fmt.Errorf("server URL %q: a label is one path segment", raw)
	}
	return scheme + "://" + host, path, nil
}
