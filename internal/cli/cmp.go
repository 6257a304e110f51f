package cli

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"time"

	"coapca/client"
	"coapca/cmp"
	"coapca/coap/dtlsconn"
	"coapca/internal/pemfile"
	"coapca/kms"
)

const cmpUsage = `Usage: coapca cmp COMMAND --server URL [flags]

CMP client (Lightweight CMP Profile, RFC 9483) over CoAP (RFC 9482) or HTTP (RFC 9811).
--server is coap://HOST[:PORT], coaps://HOST[:PORT], http://HOST:PORT or https://HOST:PORT,
optionally with the CMP path (default /.well-known/cmp; /.well-known/cmp/p/LABEL selects a
profile, as does --label).

Requests are protected either with a shared secret (--ref and --secret or --secret-file:
PasswordBasedMac, or PBMAC1 with --pbmac1) or with a signature (--cert and --key: the
manufacturer/IDevID certificate for ir, a certificate this CA issued for cr, kur and rr).
Answers are accepted only from the CA (RFC 9483 §3.5): MAC-protected with the request's secret,
or signed by the CMP signer given with --srvcert, or else by a certificate with id-kp-cmcCA or
id-kp-cmcRA that chains to --trust (e.g. coapca-data/ca.pem). An issued certificate is saved
only when it chains to --trust (or to the caPubs of a MAC-protected answer); otherwise it is
rejected in certConf. Over coaps:// --cert/--key are also the DTLS client identity, and the
server's DTLS certificate must chain to --trust with id-kp-serverAuth (or id-kp-cmcRA) for the
host of --server.

Commands:
  ir      enroll a new key with a new PKI (initialization request)
  cr      enroll a new key with a PKI that already knows us (certification request)
  p10cr   enroll with a PKCS#10 CSR (--csr FILE, or one made from --subject)
  kur     renew --oldcert (default --cert) with a new key (key update request)
  rr      revoke --oldcert (default --cert) (revocation request; --reason N)
  genm    ask for support information: --info cacerts | rootupdate | template | crls

Enrollment writes the new key to --key-out, the certificate (PEM) to --out (default stdout),
sends certConf (unless --implicit-confirm is granted), and polls while the request waits for
approval, printing progress, for up to --wait.

Run 'coapca cmp COMMAND -h' for the flags.
`

type cmpFlags struct {
	clientFlags
	ref, secret, secretFile, label  string
	srvcert, oldcert, caOut, newKey string
	info                            stringList
	reason                          int
	pbmac1, implicit                bool
}

func runCMP(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd, err := subcommand("cmp", args, cmpUsage, stdout, "ir", "cr", "p10cr", "kur", "rr", "genm")
	if cmd == "" {
		return err
	}
	var f cmpFlags
	fs := newFlagSet("cmp "+cmd, "coapca cmp "+cmd+" --server URL [flags]", cmpUsage, stderr)
	f.register(fs, clientHelp{
		server:    "CMP server URL: coap://, coaps://, http:// or https://HOST[:PORT][/PATH] (required)",
		cert:      "signature protection: certificate (PEM, chain allowed); for coaps:// also the DTLS identity",
		trust:     "trust anchors (PEM) for the server's CMP signer and DTLS certificate, e.g. coapca-data/ca.pem",
		insecure:  "do not check answers, issued certificates and the DTLS server (testing only)",
		blockSize: "CoAP block size: 16 ... 1024",
		wait:      "how long to keep polling a request that waits for approval",
	})
	fs.StringVar(&f.ref, "ref", "", "MAC protection: reference of the shared secret (senderKID), e.g. demo")
	fs.StringVar(&f.secret, "secret", "", "MAC protection: the shared secret (prefer --secret-file)")
	fs.StringVar(&f.secretFile, "secret-file", "", "MAC protection: file holding the shared secret (e.g. coapca-data/demo/cmp-secret)")
	fs.BoolVar(&f.pbmac1, "pbmac1", false, "MAC protection with PBMAC1 (RFC 9481 §6.1.2) instead of PasswordBasedMac")
	fs.StringVar(&f.srvcert, "srvcert", "", "the CMP signer to expect (PEM): only answers signed by exactly this certificate are accepted (like openssl cmp -srvcert)")
	fs.StringVar(&f.label, "label", "", "certificate profile, sent as certProfile (RFC 9483 §3.1)")
	switch cmd {
	case "ir", "cr", "p10cr", "kur":
		f.registerEnroll(fs, "subject, e.g. CN=dev-1,O=Acme (kur: default the old certificate's)",
			"subjectAltName: dns:NAME, ip:ADDR, email:ADDR, uri:URI (repeatable)")
		fs.StringVar(&f.newKey, "newkey", "", "certify this existing private key (PEM) instead of generating one")
		f.registerOut(fs, "write the certificate here as PEM (default stdout)")
		fs.StringVar(&f.caOut, "ca-out", "", "write the CA certificates of the issued certificate's validated chain here as PEM")
		fs.BoolVar(&f.implicit, "implicit-confirm", false, "ask the server to skip certConf (implicitConfirm)")
	case "genm":
		fs.Var(&f.info, "info", "what to ask for: cacerts, rootupdate, template, crls (repeatable; default cacerts)")
		f.registerOut(fs, "write certificates / CRLs here as PEM (default stdout)")
	}
	if cmd == "p10cr" {
		fs.StringVar(&f.csr, "csr", "", "send this PKCS#10 CSR (PEM or DER) instead of making one")
	}
	if cmd == "kur" || cmd == "rr" {
		fs.StringVar(&f.oldcert, "oldcert", "", "the certificate to renew or revoke (default --cert)")
	}
	if cmd == "rr" {
		fs.IntVar(&f.reason, "reason", -1, "CRL reason code (RFC 5280 §5.3.1): 0 unspecified, 1 keyCompromise, 4 superseded, 5 cessationOfOperation ...; -1 none")
	}
	ctx, cancel, err := f.parse(ctx, fs, args[1:])
	if err != nil {
		return err
	}
	defer cancel()

	c, closeFn, err := dialCMP(ctx, &f, stderr)
	if err != nil {
		return err
	}
	defer closeFn()
	switch cmd {
	case "rr":
		old, err := f.oldCertificate()
		if err != nil {
			return err
		}
		if err := c.Revoke(ctx, old, f.reason); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "revoked: %s (serial %x)\n", old.Subject, old.SerialNumber)
		return nil
	case "genm":
		return cmpGenM(ctx, c, &f, stdout, stderr)
	}
	return cmpEnroll(ctx, c, cmd, &f, stdout, stderr)
}

func (f *cmpFlags) oldCertificate() (*x509.Certificate, error) {
	p := f.oldcert
	if p == "" {
		p = f.cert
	}
	if p == "" {
		return nil, usagef("--oldcert (or --cert) is required")
	}
	certs, err := pemfile.ReadCerts(p)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

// dialCMP builds the transport and the client from the flags.
func dialCMP(ctx context.Context, f *cmpFlags, stderr io.Writer) (*client.CMP, func(), error) {
	u, err := url.Parse(f.server)
	if err != nil || u.Host == "" {
		return nil, nil, usagef("bad --server %q: want coap://, coaps://, http:// or https://HOST[:PORT][/PATH]", f.server)
	}
	var anchors []*x509.Certificate
	if f.trust != "" {
		if anchors, err = pemfile.ReadCerts(f.trust); err != nil {
			return nil, nil, err
		}
	}
	if f.caOut != "" && f.insecure {
		return nil, nil, usagef("--ca-out writes only authenticated CA certificates: not with --insecure")
	}
	var srvcert *x509.Certificate
	if f.srvcert != "" {
		certs, err := pemfile.ReadCerts(f.srvcert)
		if err != nil {
			return nil, nil, err
		}
		srvcert = certs[0]
	}
	opts := client.CMPOptions{Trust: anchors, ServerCert: srvcert, Profile: f.label, ImplicitConfirm: f.implicit, Wait: f.wait,
		InsecureSkipVerify: f.insecure,
		OnProgress: func(p client.CMPProgress) {
			msg := fmt.Sprintf("waiting: the request awaits approval; polling (attempt %d)", p.Attempt)
			if p.CheckAfter > 0 {
				msg = fmt.Sprintf("waiting: the request awaits approval; polling again in %v (attempt %d)", p.CheckAfter, p.Attempt)
			}
			if p.Reason != "" {
				msg += ": " + p.Reason
			}
			fmt.Fprintln(stderr, msg)
		}}
	pair, err := f.identity("signature identity")
	if err != nil {
		return nil, nil, err
	}
	secret := []byte(f.secret)
	if f.secretFile != "" {
		b, err := os.ReadFile(f.secretFile)
		if err != nil {
			return nil, nil, err
		}
		secret = bytes.TrimRight(b, "\r\n")
	}
	switch {
	case f.ref != "" || len(secret) > 0:
		if f.ref == "" || len(secret) == 0 {
			return nil, nil, usagef("MAC protection needs --ref and --secret or --secret-file")
		}
		opts.Secret = secret
		if f.pbmac1 {
			opts.Protection = &cmp.PBMAC1Protection{Secret: secret, Reference: []byte(f.ref)}
		} else {
			opts.Protection = &cmp.PBMProtection{Secret: secret, Reference: []byte(f.ref)}
		}
	case pair != nil:
		chain, err := client.ParseChain(pair.Certificate)
		if err != nil {
			return nil, nil, err
		}
		signer, ok := pair.PrivateKey.(crypto.Signer)
		if !ok {
			return nil, nil, errors.New("--key is not a signing key")
		}
		opts.Protection = &cmp.SignatureProtection{Signer: signer, Cert: chain[0], Chain: chain[1:]}
	default:
		return nil, nil, usagef("protect the request: --ref with --secret/--secret-file (MAC), or --cert and --key (signature)")
	}
	if len(anchors) == 0 && srvcert == nil && !f.insecure {
		if _, sig := opts.Protection.(*cmp.SignatureProtection); sig {
			return nil, nil, usagef("--trust FILE (or --srvcert FILE) is required to check the server's signed answers (e.g. coapca-data/ca.pem)")
		}
	}
	to := client.CMPTransportOptions{BlockSize: f.blockSize}
	switch u.Scheme {
	case "coaps":
		if pair == nil {
			return nil, nil, usagef("coaps:// needs --cert and --key as the DTLS client identity")
		}
		ids := []tls.Certificate{*pair}
		switch {
		case len(anchors) > 0:
			// The same server check as EST-coaps: role and name, not just a chain.
			to.DTLS = client.ServerDTLSConfig(anchors, u.Hostname(), ids)
		case f.insecure:
			to.DTLS = &dtlsconn.ClientConfig{ServerName: u.Hostname(), InsecureSkipVerify: true, Certificates: ids}
		default:
			return nil, nil, usagef("coaps:// needs --trust to authenticate the server (or --insecure)")
		}
	case "https":
		tc := &tls.Config{InsecureSkipVerify: f.insecure}
		if len(anchors) > 0 {
			tc.RootCAs = client.Pool(anchors)
		}
		to.TLS = tc
	}
	t, err := client.DialCMP(ctx, f.server, to)
	if err != nil {
		return nil, nil, err
	}
	return client.NewCMP(t, opts), func() { t.Close() }, nil
}

func cmpEnroll(ctx context.Context, c *client.CMP, cmd string, f *cmpFlags, stdout, stderr io.Writer) (retErr error) {
	var (
		res    *client.CMPEnrollment
		newKey crypto.Signer
		err    error
	)
	// A new key is saved next to --key-out before the request goes out, and a key saved by an
	// interrupted run is used again (enrollstate.go). CMP requests are not resent byte for
	// byte (each has its own transactionID and nonce): only the key is kept.
	state := ""
	if f.newKey == "" && f.csr == "" {
		state = statePath(f.keyOut)
	}
	saved, err := loadEnrollState(state)
	if err != nil {
		return err
	}
	if saved != nil {
		fmt.Fprintf(stderr, "resuming with the key saved in %s\n", state)
	}
	certifiedKey := func() (crypto.Signer, error) {
		if saved != nil {
			return saved.key, nil
		}
		k, err := f.certifiedKey()
		if err == nil && state != "" {
			err = saveEnrollState(state, k, nil)
		}
		return k, err
	}
	defer func() {
		switch {
		case state == "":
		case retErr == nil || refusedForGood(retErr):
			_ = os.Remove(state)
		default:
			fmt.Fprintf(stderr, "the new key is saved in %s: run the same command again to use it\n", state)
		}
	}()
	if cmd == "p10cr" {
		var csr *x509.CertificateRequest
		if csr, newKey, err = cmpCSR(f, certifiedKey); err != nil {
			return err
		}
		res, err = c.P10CR(ctx, csr)
	} else {
		if newKey, err = certifiedKey(); err != nil {
			return err
		}
		req, rerr := f.certRequest(nil, cmd != "kur")
		if rerr != nil {
			return rerr
		}
		tmpl, terr := client.NewCertTemplate(newKey, req)
		if terr != nil {
			return terr
		}
		switch cmd {
		case "ir":
			res, err = c.Enroll(ctx, cmp.TypeIR, tmpl, newKey)
		case "cr":
			res, err = c.Enroll(ctx, cmp.TypeCR, tmpl, newKey)
		case "kur":
			old, oerr := f.oldCertificate()
			if oerr != nil {
				return oerr
			}
			res, err = c.KeyUpdate(ctx, old, tmpl, newKey)
		}
	}
	if err != nil {
		return err
	}
	if f.newKey != "" {
		newKey = nil // the caller has it
	}
	if newKey != nil && f.keyOut != "" {
		if err = f.writeKey(newKey, stdout, stderr); err != nil {
			return err
		}
	} else if newKey != nil {
		fmt.Fprintln(stderr, "warning: no --key-out: the new private key is not saved")
	}
	how := "confirmed with certConf"
	if res.ImplicitConfirm {
		how = "implicitly confirmed"
	}
	fmt.Fprintf(stderr, "enrolled: %s (serial %x, valid until %s, %s)\n", res.Cert.Subject, res.Cert.SerialNumber,
		res.Cert.NotAfter.Format(time.RFC3339), how)
	if f.caOut != "" {
		// Only the validated chain above the new certificate: never caPubs or extraCerts as
		// received (RFC 9483 §4.1.1: caPubs are trusted only from a MAC-authenticated answer,
		// and then they are where the chain ends).
		if len(res.Chain) < 2 {
			return errors.New("--ca-out: no authenticated CA certificate to write")
		}
		if err := writeCerts(f.caOut, stdout, res.Chain[1:]...); err != nil {
			return err
		}
	}
	return writeCerts(f.out, stdout, res.Cert)
}

// certifiedKey loads --newkey or generates a key of --key-type.
func (f *cmpFlags) certifiedKey() (crypto.Signer, error) {
	if f.newKey != "" {
		return kms.LoadKeyFile(f.newKey)
	}
	return f.generateKey()
}

// cmpCSR reads --csr or makes a CSR from --subject/--san with a new key.
func cmpCSR(f *cmpFlags, certifiedKey func() (crypto.Signer, error)) (*x509.CertificateRequest, crypto.Signer, error) {
	if f.csr != "" {
		der, err := f.readCSR()
		if err != nil {
			return nil, nil, err
		}
		csr, err := x509.ParseCertificateRequest(der)
		if err != nil {
			return nil, nil, fmt.Errorf("--csr: %w", err)
		}
		return csr, nil, nil
	}
	if f.subject == "" {
		return nil, nil, usagef("--subject or --csr is required")
	}
	req, err := f.certRequest(nil, true)
	if err != nil {
		return nil, nil, err
	}
	key, err := certifiedKey()
	if err != nil {
		return nil, nil, err
	}
	der, err := client.NewCSR(key, req, "")
	if err != nil {
		return nil, nil, err
	}
	csr, err := x509.ParseCertificateRequest(der)
	return csr, key, err
}

func cmpGenM(ctx context.Context, c *client.CMP, f *cmpFlags, stdout, stderr io.Writer) error {
	var anchors []*x509.Certificate
	if f.trust != "" {
		var err error
		if anchors, err = pemfile.ReadCerts(f.trust); err != nil {
			return err
		}
	}
	if len(f.info) == 0 {
		f.info = stringList{"cacerts"}
	}
	itavs, err := client.GenMRequest(f.info...)
	if err != nil {
		return usagef("--info %v", err)
	}
	got, err := c.GenM(ctx, itavs...)
	if err != nil {
		return err
	}
	var out bytes.Buffer
	for _, it := range got {
		switch {
		case it.Type.Equal(cmp.OIDITCACerts):
			certs, err := cmp.ParseCerts(it.Value)
			if err != nil {
				return err
			}
			fmt.Fprintf(stderr, "caCerts: %d certificate(s)\n", len(certs))
			for _, c := range certs {
				fmt.Fprintf(stderr, "  %s\n", c.Subject)
				_ = pem.Encode(&out, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
			}
		case it.Type.Equal(cmp.OIDITRootCAKeyUpdate):
			if len(it.Value) == 0 {
				fmt.Fprintln(stderr, "rootCaKeyUpdate: no root CA update available")
				continue
			}
			u, err := cmp.ParseRootCAKeyUpdate(it.Value)
			if err != nil {
				return err
			}
			if err := client.VerifyRootCAKeyUpdate(u, anchors, time.Now()); err != nil {
				return err
			}
			fmt.Fprintf(stderr, "rootCaKeyUpdate: new root %s\n", u.NewWithNew.Subject)
			_ = pem.Encode(&out, &pem.Block{Type: "CERTIFICATE", Bytes: u.NewWithNew.Raw})
		case it.Type.Equal(cmp.OIDITCertReqTemplate):
			if len(it.Value) == 0 {
				fmt.Fprintln(stderr, "certReqTemplate: none")
				continue
			}
			t, err := cmp.ParseCertReqTemplate(it.Value)
			if err != nil {
				return err
			}
			fmt.Fprintf(stderr, "certReqTemplate: %d template field(s) set, keySpec %d control(s)\n", countTemplate(&t.Template), len(t.KeySpec))
			for _, k := range t.KeySpec {
				fmt.Fprintf(stderr, "  keySpec %v\n", k.Type)
			}
		case it.Type.Equal(cmp.OIDITCRLs):
			if len(it.Value) == 0 {
				fmt.Fprintln(stderr, "crls: no newer CRL")
				continue
			}
			crls, err := cmp.ParseCRLs(it.Value)
			if err != nil {
				return err
			}
			fmt.Fprintf(stderr, "crls: %d CRL(s)\n", len(crls))
			for _, c := range crls {
				if rl, err := x509.ParseRevocationList(c); err == nil {
					fmt.Fprintf(stderr, "  issuer %s, number %v, %d revoked, next update %s\n", rl.Issuer, rl.Number,
						len(rl.RevokedCertificateEntries), rl.NextUpdate.Format(time.RFC3339))
				}
				_ = pem.Encode(&out, &pem.Block{Type: "X509 CRL", Bytes: c})
			}
		default:
			fmt.Fprintf(stderr, "%v: %d octet(s)\n", it.Type, len(it.Value))
		}
	}
	if out.Len() == 0 {
		return nil
	}
	return writeOutput(f.out, stdout, out.Bytes(), 0o644)
}

func countTemplate(t *cmp.CertTemplate) int {
	n := len(t.Extensions)
	if t.Subject != nil {
		n++
	}
	if t.PublicKey != nil {
		n++
	}
	return n
}
