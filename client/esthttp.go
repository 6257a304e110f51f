package client

// The EST over HTTPS client (RFC 7030, RFC 8951). It keeps one TLS connection to the server for
// its requests, like the EST-coaps client keeps one DTLS association: a CSR linked to the
// session (RFC 7030 §3.5) must travel over the connection whose tls-unique (TLS 1.2) or
// tls-exporter (TLS 1.3, RFC 9266) it carries.

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"coapca/est"
	"coapca/est/cms"
)

// ESTClient is what an EST client does, whatever its transport: *EST (EST-coaps,
// EST-oscore) and *HTTPS (EST over HTTPS) implement it.
type ESTClient interface {
	CACerts(ctx context.Context) ([]*x509.Certificate, error)
	Enroll(ctx context.Context, csr []byte) (*x509.Certificate, error)
	Reenroll(ctx context.Context, csr []byte) (*x509.Certificate, error)
	CSRAttrs(ctx context.Context) (*est.CsrAttrs, error)
	ServerKeyGen(ctx context.Context, csr []byte) (*ServerKey, error)
}

var (
	_ ESTClient = (*EST)(nil)
	_ ESTClient = (*HTTPS)(nil)
)

// HTTPSOptions configures an EST over HTTPS client.
type HTTPSOptions struct {
	// Label selects a certificate profile: requests go to /.well-known/est/Label/<operation>.
	Label string
	// VerifyServer checks the server's certificate chain (raw DER, leaf first) on every
	// connection; normally ServerVerifier(anchors, host, nil). Required: a client that trusts
	// any server must say so with ParseChain.
	VerifyServer func(raw [][]byte) ([]*x509.Certificate, error)
	// Certificates are the client's TLS identity (RFC 7030 §3.3.2), if any.
	Certificates []tls.Certificate
	// User and Password are HTTP Basic credentials (RFC 7030 §3.2.3), sent only over TLS.
	User, Password string
	// Trust, when set, are the anchors an issued certificate must chain to (see ESTOptions).
	Trust []*x509.Certificate
	// MaxVersion caps the TLS version (tls.VersionTLS12 for tls-unique PoP); 0 = TLS 1.3.
	MaxVersion uint16
	// Wait is how long to keep resending a request answered with 202 + Retry-After.
	Wait time.Duration
	// OnProgress, if set, is called before each wait.
	OnProgress func(Progress)
	// KeyDecrypter, when set, opens a CMS-encrypted server-generated key (RFC 7030 §4.4.2,
	// application/pkcs7-mime; smime-type=server-generated-key); a key then sent unencrypted is
	// refused (see ESTOptions.KeyDecrypter).
	KeyDecrypter *cms.Decrypter
	// KeyPackage asks /serverkeygen for the key as an asymmetric key package of RFC 8295 §8.1
	// (Accept: application/cms): the encrypted key of KeyDecrypter (required) in a further
	// SignedData. Both signatures must validate to Trust when it is set.
	KeyPackage bool
	// SymKeyEncapsulation is the form of RFC 8295 §5.1.2 asked of /symmetrickeys (Accept with
	// the RFC 7193 parameters) and the only one SymmetricKeys accepts; the zero value is
	// signed-enveloped-signed.
	SymKeyEncapsulation est.SymKeyEncapsulation
}

// HTTPS is an EST over HTTPS client. It is not safe for concurrent use.
type HTTPS struct {
	host  string // host:port
	base  string // /.well-known/est[/label]
	opts  HTTPSOptions
	tls   *tls.Config
	conn  *tls.Conn
	br    *bufio.Reader
	chain []*x509.Certificate // the server's verified chain on conn
	sleep func(ctx context.Context, d time.Duration) error
}

// maxResponse caps what the client reads of one answer.
const maxResponse = 1 << 20

// NewHTTPS returns a client for serverURL ("https://host[:port][/label]"; a path under
// /.well-known/est is accepted too). It connects at the first request.
func NewHTTPS(serverURL string, opts HTTPSOptions) (*HTTPS, error) {
	u, err := url.Parse(serverURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("server URL %q: want https://host[:port][/label]", serverURL)
	}
	if opts.VerifyServer == nil {
		return nil, errors.New("est over https: no server verification configured")
	}
	label := strings.Trim(strings.TrimPrefix(strings.Trim(u.Path, "/"), ".well-known/est"), "/")
	if opts.Label == "" {
		opts.Label = label
	}
	if strings.Contains(opts.Label, "/") {
		return nil, fmt.Errorf("server URL %q: a label is one path segment", serverURL)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "443")
	}
	c := &HTTPS{host: host, base: "/.well-known/est", opts: opts, sleep: sleepCtx}
	if opts.Label != "" {
		c.base += "/" + opts.Label
	}
	c.tls = &tls.Config{
		ServerName:   u.Hostname(),
		Certificates: opts.Certificates,
		MinVersion:   tls.VersionTLS12,
		MaxVersion:   opts.MaxVersion,
		// The server is checked by VerifyServer alone (serverAuth or cmcRA, the name, the
		// anchors; client/verify.go), on resumed connections too (VerifyConnection).
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			raw := make([][]byte, len(cs.PeerCertificates))
			for i, pc := range cs.PeerCertificates {
				raw[i] = pc.Raw
			}
			chain, err := opts.VerifyServer(raw)
			if err != nil {
				return err
			}
			c.chain = chain
			return nil
		},
	}
	if len(opts.Certificates) > 0 {
		// Present the identity whenever the server asks, whatever CAs it names.
		cert := opts.Certificates[0]
		c.tls.Certificates = nil
		c.tls.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	}
	return c, nil
}

// Close closes the connection.
func (c *HTTPS) Close() error {
	if c.conn == nil {
		return nil
	}
	err := c.conn.Close()
	c.conn, c.br = nil, nil
	return err
}

// ServerChain is the server's verified certificate chain (leaf first) of the current
// connection; nil before the first request.
func (c *HTTPS) ServerChain() []*x509.Certificate { return c.chain }

func (c *HTTPS) connect(ctx context.Context) error {
	if c.conn != nil {
		return nil
	}
	d := tls.Dialer{Config: c.tls, NetDialer: &net.Dialer{Timeout: 30 * time.Second}}
	nc, err := d.DialContext(ctx, "tcp", c.host)
	if err != nil {
		return fmt.Errorf("est over https: %w", err)
	}
	c.conn = nc.(*tls.Conn)
	c.br = bufio.NewReader(c.conn)
	return nil
}

// ChannelBinding connects if needed and returns the connection's channel binding for PoP
// linking (RFC 7030 §3.5): tls-unique on TLS 1.2 (RFC 5929), tls-exporter on TLS 1.3
// (RFC 9266). Put it base64-encoded in the CSR's challengePassword and send the CSR before
// anything closes the connection.
func (c *HTTPS) ChannelBinding(ctx context.Context) ([]byte, error) {
	if err := c.connect(ctx); err != nil {
		return nil, err
	}
	cs := c.conn.ConnectionState()
	if cs.Version == tls.VersionTLS13 {
		b, err := cs.ExportKeyingMaterial("EXPORTER-Channel-Binding", nil, 32)
		if err != nil {
			return nil, fmt.Errorf("tls-exporter: %w", err)
		}
		return b, nil
	}
	if len(cs.TLSUnique) == 0 {
		return nil, errors.New("the TLS connection has no tls-unique value")
	}
	return cs.TLSUnique, nil
}

// HTTPStatusError is a non-success answer from an EST over HTTPS server.
type HTTPStatusError struct {
	Operation string
	Status    int
	Message   string // the server's text, one line
}

func (e *HTTPStatusError) Error() string {
	s := fmt.Sprintf("est /%s: server answered %d %s", e.Operation, e.Status, http.StatusText(e.Status))
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

type httpAnswer struct {
	status int
	header http.Header
	body   []byte
}

// roundTrip sends one request on the connection and reads the answer. A kept-alive connection
// the server has closed meanwhile is redialed once, for a request that was not sent.
func (c *HTTPS) roundTrip(ctx context.Context, method, op, contentType string, body []byte) (*httpAnswer, error) {
	for attempt := 0; ; attempt++ {
		reused := c.conn != nil
		if err := c.connect(ctx); err != nil {
			return nil, err
		}
		a, sent, err := c.exchange(ctx, method, op, contentType, body)
		if err == nil {
			return a, nil
		}
		c.Close()
		if !reused || attempt > 0 || (sent && method != http.MethodGet) {
			return nil, fmt.Errorf("est /%s: %w", op, err)
		}
	}
}

func (c *HTTPS) exchange(ctx context.Context, method, op, contentType string, body []byte) (*httpAnswer, bool, error) {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(2 * time.Minute)
	}
	_ = c.conn.SetDeadline(deadline)
	req, err := http.NewRequestWithContext(ctx, method, "https://"+c.host+c.base+"/"+op, bytes.NewReader(body))
	if err != nil {
		return nil, false, err
	}
	req.Host = c.tls.ServerName
	if _, port, _ := net.SplitHostPort(c.host); port != "443" {
		req.Host = net.JoinHostPort(c.tls.ServerName, port)
	}
	req.Header.Set("User-Agent", "coapca")
	if op == "serverkeygen" && c.opts.KeyPackage {
		// RFC 8295 §8.1: the key part comes as application/cms in the multipart answer.
		req.Header.Set("Accept", "multipart/mixed, application/cms")
	}
	if op == "symmetrickeys" {
		req.Header.Set("Accept", c.opts.SymKeyEncapsulation.MediaType())
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
		// RFC 8951 §3 has receivers ignore it, but servers written to RFC 7030 want it
		// (globalsign/est v1.0.6 answers 415 without it).
		req.Header.Set("Content-Transfer-Encoding", "base64")
	}
	if c.opts.User != "" {
		req.SetBasicAuth(c.opts.User, c.opts.Password)
	}
	if err := req.Write(c.conn); err != nil {
		return nil, false, err
	}
	resp, err := http.ReadResponse(c.br, req)
	if err != nil {
		return nil, true, err
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	resp.Body.Close()
	if err != nil {
		return nil, true, err
	}
	if len(b) > maxResponse {
		return nil, true, fmt.Errorf("answer larger than %d bytes", maxResponse)
	}
	if resp.Close {
		c.Close()
	}
	return &httpAnswer{status: resp.StatusCode, header: resp.Header, body: b}, true, nil
}

// do sends the request and resends it while the server answers 202 + Retry-After, until
// opts.Wait runs out (RFC 7030 §4.2.3).
func (c *HTTPS) do(ctx context.Context, method, op, contentType string, body []byte) (*httpAnswer, error) {
	deadline := time.Now().Add(c.opts.Wait)
	waited := false        // the server said 202: the request is known to it
	backoff := redialFirst // between attempts to reach a server that went away
	for attempt := 1; ; attempt++ {
		a, err := c.roundTrip(ctx, method, op, contentType, body)
		if err != nil {
			// A server that restarts while the client waits for its pending request is
			// unreachable for a while: keep trying while Wait lasts (the identical request is
			// resent, as after a 202). Before any 202 a failure is reported at once.
			if !waited || ctx.Err() != nil || !time.Now().Add(backoff).Before(deadline) {
				return nil, err
			}
			if c.opts.OnProgress != nil {
				c.opts.OnProgress(Progress{Function: op, Attempt: attempt, Reconnected: true, Diagnostic: err.Error()})
			}
			if err := c.sleep(ctx, backoff); err != nil {
				return nil, fmt.Errorf("est /%s: %w", op, err)
			}
			backoff = min(2*backoff, redialMax)
			continue
		}
		backoff = redialFirst
		msg := oneLine(a.body)
		switch {
		case a.status == http.StatusOK:
			return a, nil
		case a.status == http.StatusAccepted:
			wait := 60 * time.Second
			if s, err := strconv.Atoi(strings.TrimSpace(a.header.Get("Retry-After"))); err == nil && s >= 0 {
				wait = time.Duration(s) * time.Second
			}
			if time.Now().Add(wait).After(deadline) {
				return nil, &PendingError{Function: op, RetryAfter: wait, Diagnostic: msg}
			}
			waited = true
			if c.opts.OnProgress != nil {
				c.opts.OnProgress(Progress{Function: op, Attempt: attempt, RetryAfter: wait, Diagnostic: msg})
			}
			// The server may drop an idle connection while we wait (its idle timeout):
			// resend on a fresh one rather than find out by a POST that cannot be retried.
			c.Close()
			if err := c.sleep(ctx, wait); err != nil {
				return nil, fmt.Errorf("est /%s: %w", op, err)
			}
			continue
		}
		return nil, &HTTPStatusError{Operation: op, Status: a.status, Message: msg}
	}
}

func oneLine(b []byte) string {
	s := string(b)
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i]
	}
	if len(s) > 240 {
		s = s[:240]
	}
	return strings.ToValidUTF8(strings.TrimSpace(s), "?")
}

// decodeBase64Body decodes an EST payload: base64 with or without line breaks, whatever
// Content-Transfer-Encoding says (RFC 8951 §3).
func decodeBase64Body(b []byte) ([]byte, error) {
	clean := bytes.Map(func(r rune) rune {
		if r == '\r' || r == '\n' || r == ' ' || r == '\t' {
			return -1
		}
		return r
	}, b)
	enc := base64.StdEncoding
	if len(clean)%4 != 0 {
		enc = base64.RawStdEncoding
	}
	der, err := enc.DecodeString(string(clean))
	if err != nil {
		return nil, fmt.Errorf("malformed base64 body: %w", err)
	}
	return der, nil
}

func checkMediaType(a *httpAnswer, op, want string) error {
	mt, _, err := mime.ParseMediaType(a.header.Get("Content-Type"))
	if err != nil || !strings.EqualFold(mt, want) {
		return fmt.Errorf("est /%s: unexpected Content-Type %q (want %s)", op, a.header.Get("Content-Type"), want)
	}
	return nil
}

func (c *HTTPS) certsAnswer(ctx context.Context, method, op string, body []byte) ([]*x509.Certificate, error) {
	ct := ""
	if body != nil {
		ct = "application/pkcs10"
		body = []byte(base64.StdEncoding.EncodeToString(body))
	}
	a, err := c.do(ctx, method, op, ct, body)
	if err != nil {
		return nil, err
	}
	if err := checkMediaType(a, op, "application/pkcs7-mime"); err != nil {
		return nil, err
	}
	der, err := decodeBase64Body(a.body)
	if err != nil {
		return nil, fmt.Errorf("est /%s: %w", op, err)
	}
	certs, err := est.ParseCertsOnly(der)
	if err != nil {
		return nil, fmt.Errorf("est /%s: %w", op, err)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("est /%s: the answer holds no certificate", op)
	}
	return certs, nil
}

// CACerts fetches /cacerts (RFC 7030 §4.1).
func (c *HTTPS) CACerts(ctx context.Context) ([]*x509.Certificate, error) {
	return c.certsAnswer(ctx, http.MethodGet, "cacerts", nil)
}

// EECerts fetches /eecerts (RFC 8295 §3): the end-entity certificates the server lets this
// client have (its own and, where the server's profile allows, its peers'). RFC 8295 §3.2:
// "Clients MUST reject EE certificates that do not validate to an authorized TA" — with
// opts.Trust every certificate must chain to it (with /cacerts as intermediates), or the
// whole answer is refused; without Trust the caller must check them.
func (c *HTTPS) EECerts(ctx context.Context) ([]*x509.Certificate, error) {
	certs, err := c.certsAnswer(ctx, http.MethodGet, "eecerts", nil)
	if err != nil {
		return nil, err
	}
	if len(c.opts.Trust) == 0 {
		return certs, nil
	}
	cas, err := c.CACerts(ctx)
	if err != nil {
		return nil, fmt.Errorf("est /eecerts: intermediates for validation: %w", err)
	}
	for _, cert := range certs {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: Pool(c.opts.Trust), Intermediates: Pool(cas),
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return nil, fmt.Errorf("est /eecerts: %s (serial %x) does not validate to the trust anchors (RFC 8295 §3.2): %w",
				cert.Subject, cert.SerialNumber, err)
		}
	}
	return certs, nil
}

// ReturnKeyPackage posts a key package receipt or error (RFC 7191; the DER ContentInfo, e.g.
// from est.SignKeyPackageReceipt) to /serverkeygen/return (RFC 8295 §8.2) with contentType
// (est.MediaKeyPackageReceipt, est.MediaKeyPackageError, ...). The server answers 204.
func (c *HTTPS) ReturnKeyPackage(ctx context.Context, contentType string, der []byte) error {
	const op = "serverkeygen/return"
	return c.postReturn(ctx, op, contentType, der, "RFC 8295 §5.2.2")
}

// Enroll posts a DER CSR to /simpleenroll (RFC 7030 §4.2.1).
func (c *HTTPS) Enroll(ctx context.Context, csr []byte) (*x509.Certificate, error) {
	return c.enroll(ctx, "simpleenroll", csr)
}

// Reenroll posts a DER CSR to /simplereenroll (RFC 7030 §4.2.2).
func (c *HTTPS) Reenroll(ctx context.Context, csr []byte) (*x509.Certificate, error) {
	return c.enroll(ctx, "simplereenroll", csr)
}

func (c *HTTPS) enroll(ctx context.Context, op string, csr []byte) (*x509.Certificate, error) {
	req, err := x509.ParseCertificateRequest(csr)
	if err != nil {
		return nil, fmt.Errorf("est /%s: our own CSR does not parse: %w", op, err)
	}
	certs, err := c.certsAnswer(ctx, http.MethodPost, op, csr)
	if err != nil {
		return nil, err
	}
	if err := c.checkIssued(ctx, op, certs[0], req.PublicKey, certs[1:]); err != nil {
		return nil, err
	}
	return certs[0], nil
}

// checkIssued is EST.checkIssued over this transport: the certificate certifies pub and, with
// opts.Trust, chains to the anchors (with /cacerts as intermediates when needed).
func (c *HTTPS) checkIssued(ctx context.Context, op string, cert *x509.Certificate, pub crypto.PublicKey, extra []*x509.Certificate) error {
	return checkIssuedCert(ctx, op, cert, pub, extra, c.opts.Trust, c.CACerts)
}

// CSRAttrs fetches /csrattrs (RFC 7030 §4.5). A 204 or 404 means the server wants nothing in
// particular (RFC 7030 §4.5.2): an empty attribute set.
func (c *HTTPS) CSRAttrs(ctx context.Context) (*est.CsrAttrs, error) {
	a, err := c.do(ctx, http.MethodGet, "csrattrs", "", nil)
	var se *HTTPStatusError
	if errors.As(err, &se) && se.Status == http.StatusNoContent {
		return est.ParseCsrAttrs([]byte{0x30, 0x00})
	}
	if err != nil {
		return nil, err
	}
	if err := checkMediaType(a, "csrattrs", "application/csrattrs"); err != nil {
		return nil, err
	}
	der, err := decodeBase64Body(a.body)
	if err != nil {
		return nil, fmt.Errorf("est /csrattrs: %w", err)
	}
	attrs, err := est.ParseCsrAttrs(der)
	if err != nil {
		return nil, fmt.Errorf("est /csrattrs: %w", err)
	}
	return attrs, nil
}

// ServerKeyGen posts csr to /serverkeygen and returns the generated key and its certificate
// (RFC 7030 §4.4): a multipart/mixed answer with an application/pkcs8 part and a certs-only
// part.
func (c *HTTPS) ServerKeyGen(ctx context.Context, csr []byte) (*ServerKey, error) {
	const op = "serverkeygen"
	a, err := c.do(ctx, http.MethodPost, op, "application/pkcs10", []byte(base64.StdEncoding.EncodeToString(csr)))
	if err != nil {
		return nil, err
	}
	sk, err := ParseServerKeyGen(a.header.Get("Content-Type"), a.body, c.opts.KeyDecrypter)
	if err != nil {
		return nil, fmt.Errorf("est /%s: %w", op, err)
	}
	if c.opts.KeyPackage && !sk.KeyPackage {
		return nil, fmt.Errorf("est /%s: asked for an asymmetric key package (application/cms, RFC 8295 §8.1), the server sent another form", op)
	}
	if sk.Encrypted {
		if err := checkKeySigner(sk.KeySigner, sk.keyCerts, c.opts.Trust); err != nil {
			return nil, fmt.Errorf("est /%s: %w", op, err)
		}
	}
	if sk.KeyPackage {
		// RFC 8295 §8.1: "the client MUST reject it if the digital signature does not validate
		// back to an authorized TA" — the outer signature as the inner one.
		if err := checkKeySigner(sk.OuterSigner, sk.outerCerts, c.opts.Trust); err != nil {
			return nil, fmt.Errorf("est /%s: key package: %w", op, err)
		}
	}
	pub, ok := sk.Key.(interface{ Public() crypto.PublicKey })
	if !ok {
		return nil, fmt.Errorf("est /%s: unsupported private key type %T", op, sk.Key)
	}
	if err := c.checkIssued(ctx, op, sk.Cert, pub.Public(), nil); err != nil {
		return nil, err
	}
	return sk, nil
}

// maxParts bounds the parts of a /serverkeygen answer that are read.
const maxParts = 4

// ParseServerKeyGen parses a /serverkeygen answer (RFC 7030 §4.4.2): multipart/mixed with the
// key as application/pkcs8 and the certificate as application/pkcs7-mime certs-only, each
// base64 (RFC 8951 §3). A CMS-encrypted key (smime-type=server-generated-key) is opened with
// dec; without dec it is refused, and with dec an unencrypted key is refused (the client asked
// for encryption). The signer of an encrypted key is not checked here (see checkKeySigner).
func ParseServerKeyGen(contentType string, body []byte, dec *cms.Decrypter) (*ServerKey, error) {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil || !strings.EqualFold(mt, "multipart/mixed") || params["boundary"] == "" {
		return nil, fmt.Errorf("unexpected Content-Type %q (want multipart/mixed with a boundary)", contentType)
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	sk := &ServerKey{}
	for i := 0; ; i++ {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("multipart: %w", err)
		}
		if i >= maxParts {
			return nil, fmt.Errorf("more than %d parts", maxParts)
		}
		raw, err := io.ReadAll(io.LimitReader(p, maxResponse))
		if err != nil {
			return nil, fmt.Errorf("multipart: %w", err)
		}
		pmt, pparams, err := mime.ParseMediaType(p.Header.Get("Content-Type"))
		if err != nil {
			return nil, fmt.Errorf("part %d: malformed Content-Type %q", i+1, p.Header.Get("Content-Type"))
		}
		der, err := decodeBase64Body(raw)
		if err != nil {
			return nil, fmt.Errorf("part %d: %w", i+1, err)
		}
		switch strings.ToLower(pmt) {
		case "application/pkcs8":
			if dec != nil {
				return nil, errors.New("asked for a CMS-encrypted key, the server returned it unencrypted")
			}
			k, err := x509.ParsePKCS8PrivateKey(der)
			if err != nil {
				return nil, fmt.Errorf("private key: %w", err)
			}
			sk.Key, sk.PKCS8 = k, der
		case "application/cms":
			// RFC 8295 §8.1: SignedData(EnvelopedData(SignedData(AsymmetricKeyPackage))).
			if dec == nil {
				return nil, errors.New("the server returned an encrypted key package and no key to decrypt it was given")
			}
			kp, err := est.DecryptKeyPackage(der, *dec)
			if err != nil {
				return nil, fmt.Errorf("key package: %w", err)
			}
			sk.Key, sk.PKCS8, sk.Encrypted, sk.KeySigner, sk.keyCerts = kp.Key, kp.PKCS8, true, kp.Signer, kp.Certs
			sk.KeyPackage, sk.OuterSigner, sk.outerCerts = true, kp.OuterSigner, kp.OuterCerts
		case "application/pkcs7-mime":
			switch strings.ToLower(pparams["smime-type"]) {
			case "server-generated-key":
				if dec == nil {
					return nil, errors.New("the server returned a CMS-encrypted key and no key to decrypt it was given")
				}
				dk, err := est.DecryptServerKey(der, *dec)
				if err != nil {
					return nil, fmt.Errorf("encrypted key: %w", err)
				}
				sk.Key, sk.PKCS8, sk.Encrypted, sk.KeySigner, sk.keyCerts = dk.Key, dk.PKCS8, true, dk.Signer, dk.Certs
			case "certs-only", "":
				certs, err := est.ParseCertsOnly(der)
				if err != nil {
					return nil, fmt.Errorf("certificate part: %w", err)
				}
				if len(certs) == 0 {
					return nil, errors.New("the certificate part holds no certificate")
				}
				sk.Cert, sk.Format = certs[0], est.CFPKCS7CertsOnly
			}
		}
	}
	if sk.Key == nil || sk.Cert == nil {
		return nil, errors.New("the answer lacks the key or the certificate")
	}
	return sk, nil
}
