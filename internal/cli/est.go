package cli

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"coapca/client"
	"coapca/coap"
	"coapca/est"
	"coapca/est/cms"
	"coapca/internal/config"
	"coapca/internal/pemfile"
	"coapca/internal/server"
	"coapca/kms"
	"coapca/oscore"
)

const estUsage = `Usage: coapca est COMMAND --server coaps://HOST[:PORT][/LABEL] [flags]
       coapca est COMMAND --server coap://HOST[:PORT][/LABEL] (--oscore FILE | --edhoc | --ace AS-URL --ace-context FILE) [flags]
       coapca est COMMAND --server https://HOST[:PORT][/LABEL] [--cert/--key | --user U --password-file F] [flags]
       coapca est COMMAND --server http(s)://HOST[:PORT][/LABEL] --oscore FILE [flags]

EST-coaps client (RFC 9148). The device authenticates with --cert/--key (its IDevID for
enroll, the certificate we issued for reenroll) and the server with --trust (implicit trust
anchors) or the explicit trust anchor database --explicit-ta, which 'cacerts' fills (RFC 7030
§4.1.3) and which replaces --trust once it exists. The server's certificate (DTLS or EDHOC)
must chain to them, carry id-kp-serverAuth or id-kp-cmcRA and name the host of --server.

EST-oscore (draft-ietf-ace-coap-est-oscore) over coap://: --oscore FILE protects the requests
with a pre-shared OSCORE context (YAML seen from the client's side; its sequence number is kept
in FILE.seq), or --edhoc keys OSCORE with EDHOC (RFC 9528), authenticated with --cert/--key and
the server's chain checked against the trust anchors; message_3 travels in the first OSCORE
request (RFC 9668) unless --edhoc-separate. --edhoc-cred x5t or kid names the certificate by
reference instead of sending it (RFC 9528 §3.5.3; fewer bytes in message_3): the server must
know it, as a certificate it issued (re-enrollment) or one of its trust stores lists.
--pop puts edhoc-unique in the challengePassword.
With --ace coap://AS[:PORT][/token] the OSCORE context comes from an access token (ACE OSCORE
profile, RFC 9203): the client asks the authorization server for a token over OSCORE with the
context of --ace-context (its credential at the AS, YAML seen from the client's side), for
--audience and --scope (default: learned from the server's AS Request Creation Hints, RFC 9200
§5.3), posts it to the server's /authz-info and derives the context; when the server answers
4.01 (context lost, token expired) it gets a new token once.

EST-oscore over HTTP (RFC 8613 §11) with --oscore FILE and http:// or https://: each request
is protected as on coap:// and POSTed to the server's root with the OSCORE header field and an
application/oscore body (a CoAP-HTTP proxy can forward it without security processing).

EST over HTTPS (RFC 7030) with https://: the client authenticates with --cert/--key or HTTP
Basic (--user, --password-file); --pop puts tls-unique (TLS 1.2) or tls-exporter (TLS 1.3,
RFC 9266) in the challengePassword; --tls12 caps the connection at TLS 1.2. The commands
use /cacerts, /simpleenroll, /simplereenroll, /csrattrs and /serverkeygen; 202 + Retry-After
is followed up to --wait.

Commands:
  cacerts       fetch the CA certificates (/crts)
  enroll        new key + CSR, enroll (/sen); writes --key-out and --out
  reenroll      renew the --cert identity (/sren): same subject and SANs, new key unless --reuse-key
  csrattrs      print the CSR attributes the server wants (/att)
  serverkeygen  the server generates the key (/skg, or /skc with --accept cert)
  eecerts       https:// only: fetch the end-entity certificates the server lets this client
                have, its own and, where the label's profile allows, its peers' (RFC 8295 §3)
  return        https:// only: return a signed key package receipt (--receipt) or error
                (--error CODE) for a server-generated key (RFC 8295 §8.2, RFC 7191)
  pal           https:// only: print this client's Package Availability List (RFC 8295 §2)
  symmetrickeys https:// only: fetch the next symmetric key package waiting for this client
                (RFC 8295 §5.1, RFC 6031), check both signatures against the trust anchors,
                decrypt it with --key, write the keys to --out (mode 0600: one line per key,
                "ID ALGORITHM HEX") and return a signed receipt (RFC 8295 §5.2; --no-receipt
                not to)
  firmware      https:// only: fetch the next firmware package waiting for this client (RFC
                8295 §6.1, RFC 4108), check its signature against the trust anchors, write the
                image to --out and return a load receipt signed with --key (--no-receipt not to)
  tamp          https:// only: fetch the next TAMP message waiting for this client (RFC 8295
                §7, RFC 5934), check its signature against the trust anchors, print it, write
                the trust anchors it adds to --out (PEM) and return the response signed with
                --key: for a status query the key identifiers of the --trust anchors, for an
                update success for each change (--error CODE: a TAMP error instead)

Run 'coapca est COMMAND -h' for the flags.
`

type estFlags struct {
	clientFlags
	explicitTA, accept       string
	pop, reuseKey            bool
	oscoreFile               string
	aceURL, aceContext       string
	aceAudience, aceScope    string
	edhoc, edhocSeparate     bool
	edhocCred                string
	taFingerprint            string
	encryptKey, encryptKeyID string // serverkeygen: --encrypt-key, --encrypt-key-id
	keyPackage               bool   // serverkeygen: --key-package (RFC 8295 §8.1, https://)
	// return: --receipt, --error, --package-cert, --package-key (RFC 8295 §8.2)
	receipt                 bool
	returnError             string
	packageCert, packageKey string
	noReceipt               bool   // symmetrickeys: --no-receipt
	firmwareKeys            string // firmware: --firmware-keys
	symKeyEncName           string // symmetrickeys: --encapsulation
	symKeyEnc               est.SymKeyEncapsulation

	// Set by encryptedKeyRequest: extra CSR attributes and the decrypter of a 280 key.
	csrAttrs     []est.Attribute
	keyDecrypter *cms.Decrypter

	// Set by dialEST: the session's channel-binding value for --pop, the server's
	// authenticated chain, and the name it was authenticated for ("" when the session
	// authenticated no server certificate: --insecure, --oscore).
	binding     func(ctx context.Context) ([]byte, error)
	serverChain func() []*x509.Certificate
	serverName  string
	// anchors authenticate the server and the certificates it issues (client.ESTOptions.Trust).
	anchors []*x509.Certificate
	host    string // the host of --server

	https httpsFlags // https:// only (est_https_client.go)
}

func runEST(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd, err := subcommand("est", args, estUsage, stdout, "cacerts", "enroll", "reenroll", "csrattrs", "serverkeygen", "eecerts", "return", "pal", "symmetrickeys", "firmware", "tamp")
	if cmd == "" {
		return err
	}
	var f estFlags
	fs := newFlagSet("est "+cmd, "coapca est "+cmd+" --server coaps://HOST[:PORT][/LABEL] [flags]", estUsage, stderr)
	f.register(fs, clientHelp{
		server:    "EST server URL: coaps://host[:port][/label], coap://… with --oscore or --edhoc, or https://host[:port][/label] (required)",
		cert:      "client certificate (PEM; chain allowed): the IDevID, or for reenroll the certificate to renew",
		trust:     "implicit trust anchors (PEM) that authenticate the server",
		insecure:  "do not authenticate the server (bootstrapping only; RFC 7030 §4.1.1 provisional trust)",
		blockSize: "CoAP block size: 16, 32, 64, 128, 256, 512 or 1024",
		wait:      "how long to keep retrying a pending request (5.03 + Max-Age)",
	})
	f.registerOut(fs, "write the certificate(s) here as PEM (default stdout)")
	fs.StringVar(&f.oscoreFile, "oscore", "", "coap://: protect with this pre-shared OSCORE context (YAML, client's side)")
	fs.StringVar(&f.aceURL, "ace", "", "coap://: get the OSCORE context from an access token of this ACE authorization server (RFC 9203)")
	fs.StringVar(&f.aceContext, "ace-context", "", "with --ace: the OSCORE context with the authorization server (YAML, client's side)")
	fs.StringVar(&f.aceAudience, "audience", "", "with --ace: the audience to ask a token for (default: from the server's creation hints)")
	fs.StringVar(&f.aceScope, "scope", "", "with --ace: the scope to ask for (default: the AS's registration or the creation hints)")
	fs.BoolVar(&f.edhoc, "edhoc", false, "coap://: key OSCORE with EDHOC, authenticated with --cert/--key")
	fs.BoolVar(&f.edhocSeparate, "edhoc-separate", false, "with --edhoc: send message_3 on its own, not in the first OSCORE request (RFC 9668)")
	fs.StringVar(&f.edhocCred, "edhoc-cred", "x5chain", "with --edhoc: how ID_CRED_I names the certificate: x5chain (by value), x5t or kid (by reference: a certificate the server issued or trusts)")
	fs.StringVar(&f.explicitTA, "explicit-ta", "", "explicit trust anchor database (PEM): used instead of --trust when it exists; cacerts updates it")
	addHTTPSFlags(fs, &f.https)
	fs.StringVar(&f.accept, "accept", "pkcs7", "certificate format to ask for: pkcs7 (281) or cert (287)")
	if cmd == "enroll" || cmd == "reenroll" || cmd == "serverkeygen" {
		f.registerEnroll(fs, "subject of the CSR, e.g. CN=dev-1,O=Acme (reenroll: default the current certificate's)",
			"subjectAltName: dns:NAME, ip:ADDR, email:ADDR, uri:URI (repeatable; a bare value is a DNS name)")
		fs.StringVar(&f.csr, "csr", "", "send this CSR (DER or PEM) instead of making one")
		fs.BoolVar(&f.pop, "pop", false, "link the CSR to the session: challengePassword = tls-unique (RFC 9148 §3, RFC 7030 §3.5) or edhoc-unique")
	}
	if cmd == "cacerts" {
		fs.StringVar(&f.taFingerprint, "ta-fingerprint", "", "SHA-256 (hex) of the root CA, compared out of band: --explicit-ta stores only this root; "+
			"with --insecure this bootstraps the explicit TA database (RFC 7030 §4.1.1)")
	}
	if cmd == "serverkeygen" {
		fs.StringVar(&f.encryptKey, "encrypt-key", "", "ask for the key CMS-encrypted (280): FILE = a pre-shared AES key (hex or raw; with --encrypt-key-id), "+
			"or 'own' = to the key of --cert (RFC 7030 §4.4.1)")
		fs.StringVar(&f.encryptKeyID, "encrypt-key-id", "", "with --encrypt-key FILE: the key's identifier (hex), as the server's est.server_keygen_keks[].id")
		fs.BoolVar(&f.keyPackage, "key-package", false, "https:// with --encrypt-key: ask for the key as an asymmetric key package (application/cms, "+
			"RFC 8295 §8.1): the encrypted key in a further SignedData")
	}
	if cmd == "return" {
		fs.BoolVar(&f.receipt, "receipt", false, "return a key package receipt, signed with the received key (--package-key)")
		fs.StringVar(&f.returnError, "error", "", "return a key package error with this RFC 7191 code (name such as decryptFailure, or number), "+
			"signed with --package-key if given, else with --key")
		fs.StringVar(&f.packageCert, "package-cert", "", "the certificate of the server-generated key the receipt or error is about (PEM)")
		fs.StringVar(&f.packageKey, "package-key", "", "the server-generated key (PEM): signs the receipt, proving it arrived")
	}
	if cmd == "symmetrickeys" || cmd == "firmware" || cmd == "tamp" {
		fs.BoolVar(&f.noReceipt, "no-receipt", false, "do not return a receipt for the package")
	}
	if cmd == "tamp" {
		fs.StringVar(&f.returnError, "error", "", "answer with a TAMP error of this RFC 5934 StatusCode (name such as seqNumFailure, or number)")
	}
	if cmd == "symmetrickeys" {
		fs.StringVar(&f.symKeyEncName, "encapsulation", "signed-enveloped-signed", "the form to ask for and accept (RFC 8295 §5.1.2): "+
			strings.Join(est.SymKeyEncapsulationNames(), ", ")+"; plain and signed are protected by TLS only")
		fs.StringVar(&f.returnError, "error", "", "refuse the package: write no keys and return a key package error of this RFC 7191 code "+
			"(name such as decryptFailure, or number) instead of the receipt")
	}
	if cmd == "firmware" {
		fs.StringVar(&f.firmwareKeys, "firmware-keys", "", "the keys file `est symmetrickeys --out` wrote: decrypts an encrypted firmware package "+
			"with the key its decrypt-key-identifier names (RFC 4108 §2.2.5)")
		fs.StringVar(&f.returnError, "error", "", "refuse the package: write no image and return a firmware package load error of this "+
			"RFC 4108 §4 code (name such as badFirmware, or number) instead of the receipt")
	}
	if cmd == "reenroll" {
		fs.BoolVar(&f.reuseKey, "reuse-key", false, "keep the key of --key instead of making a new one")
	}
	ctx, cancel, err := f.parse(ctx, fs, args[1:])
	if err != nil {
		return err
	}
	defer cancel()
	if f.symKeyEncName != "" {
		enc, ok := est.SymKeyEncapsulationByName(f.symKeyEncName)
		if !ok {
			return usagef("--encapsulation %q: one of %s", f.symKeyEncName, strings.Join(est.SymKeyEncapsulationNames(), ", "))
		}
		f.symKeyEnc = enc
	}

	if (cmd == "eecerts" || cmd == "return" || cmd == "pal" || cmd == "symmetrickeys" || cmd == "firmware" || cmd == "tamp") && !strings.HasPrefix(strings.ToLower(f.server), "https://") {
		return usagef("%s (RFC 8295) is an EST over HTTPS operation: use --server https://", cmd)
	}
	var ret []byte
	var retType string
	if cmd == "return" {
		if ret, retType, err = keyPackageReturn(&f); err != nil {
			return err
		}
	}
	if f.keyPackage && (f.encryptKey == "" || !strings.HasPrefix(strings.ToLower(f.server), "https://")) {
		return usagef("--key-package (RFC 8295 §8.1) needs --encrypt-key and --server https://: the key package is always encrypted")
	}
	if err := encryptedKeyRequest(&f); err != nil {
		return err
	}
	c, ec, err := dialEST(ctx, &f, stderr)
	if err != nil {
		return err
	}
	defer c.Close()

	switch cmd {
	case "cacerts":
		var fingerprint []byte
		if f.taFingerprint != "" {
			if fingerprint, err = parseFingerprint(f.taFingerprint); err != nil {
				return usagef("--ta-fingerprint: %v", err)
			}
		}
		if f.explicitTA != "" && f.serverName == "" && (fingerprint == nil || f.oscoreFile != "" || f.aceURL != "") {
			// RFC 7030 §4.1.1, §4.1.3: the explicit TA database is filled only from a server
			// this connection authenticated with certificates (implicit or explicit TAs), or
			// with a root whose fingerprint was compared out of band.
			return usagef("--explicit-ta: this connection does not authenticate the server with a certificate (--insecure or --oscore); " +
				"fetch /crts, compare the root's fingerprint out of band (RFC 7030 §4.1.1) and pass it with --ta-fingerprint, or the root with --trust")
		}
		certs, err := ec.CACerts(ctx)
		if err != nil {
			return err
		}
		if f.insecure && f.serverName == "" {
			// RFC 7030 §4.1.1: what an unauthenticated server sent needs an out-of-band check.
			for _, c := range certs {
				sum := sha256.Sum256(c.Raw)
				fmt.Fprintf(stderr, "unauthenticated: %s  SHA-256 %X\n", c.Subject, sum)
			}
		}
		if f.explicitTA != "" {
			if fingerprint != nil {
				keep, _, err := client.SelectTrustAnchors(certs, time.Now())
				if err != nil {
					return fmt.Errorf("explicit trust anchors %s left unchanged: %w", f.explicitTA, err)
				}
				if sum := sha256.Sum256(keep[0].Raw); !bytes.Equal(sum[:], fingerprint) {
					return fmt.Errorf("explicit trust anchors %s left unchanged: the root %s has SHA-256 %X, not the --ta-fingerprint", f.explicitTA, keep[0].Subject, sum)
				}
			}
			// Without a server check on the connection (--insecure with --ta-fingerprint) the
			// server is authenticated now: its chain must lead to the root just compared, with
			// a server role for the host dialed.
			written, dropped, err := client.UpdateTrustAnchors(f.explicitTA, certs, f.serverChain(), f.host, time.Now())
			if err != nil {
				return fmt.Errorf("explicit trust anchors %s left unchanged: %w", f.explicitTA, err)
			}
			for _, c := range dropped {
				fmt.Fprintf(stderr, "not stored as a trust anchor (does not validate to the root %s): %s\n", written[0].Subject, c.Subject)
			}
			fmt.Fprintf(stderr, "updated explicit trust anchors %s (%d certificates)\n", f.explicitTA, len(written))
		}
		return writeCerts(f.out, stdout, certs...)
	case "return":
		hc, ok := ec.(*client.HTTPS)
		if !ok {
			return usagef("return (RFC 8295 §8.2) is an EST over HTTPS operation: use --server https://")
		}
		if err := hc.ReturnKeyPackage(ctx, retType, ret); err != nil {
			return err
		}
		what := "error"
		if f.receipt {
			what = "receipt"
		}
		fmt.Fprintf(stderr, "the server took the key package %s (204)\n", what)
		return nil
	case "pal", "symmetrickeys", "firmware", "tamp":
		hc, ok := ec.(*client.HTTPS)
		if !ok {
			return usagef("%s (RFC 8295) is an EST over HTTPS operation: use --server https://", cmd)
		}
		switch cmd {
		case "pal":
			return printPAL(ctx, hc, f.out, stdout)
		case "firmware":
			return fetchFirmware(ctx, hc, &f, stdout, stderr)
		case "tamp":
			return fetchTAMP(ctx, hc, &f, stdout, stderr)
		}
		return fetchSymmetricKeys(ctx, hc, &f, stdout, stderr)
	case "eecerts":
		hc, ok := ec.(*client.HTTPS)
		if !ok {
			return usagef("eecerts (RFC 8295 §3) is an EST over HTTPS operation: use --server https://")
		}
		certs, err := hc.EECerts(ctx)
		if err != nil {
			return err
		}
		return writeCerts(f.out, stdout, certs...)
	case "csrattrs":
		a, err := ec.CSRAttrs(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, a.String())
		return nil
	}

	// enroll, reenroll, serverkeygen
	var identity *x509.Certificate
	if cmd == "reenroll" {
		chain, err := pemfile.ReadCerts(f.cert)
		if err != nil {
			return err
		}
		identity = chain[0]
	}
	// A new key for enroll and reenroll is saved (with its CSR) next to --key-out before the
	// CSR is sent, and a saved one is resumed (enrollstate.go).
	state := ""
	if (cmd == "enroll" || cmd == "reenroll") && f.csr == "" && (cmd != "reenroll" || !f.reuseKey) {
		state = statePath(f.keyOut)
	}
	saved, err := loadEnrollState(state)
	if err != nil {
		return err
	}
	var (
		csr    []byte
		newKey crypto.Signer
	)
	if saved != nil {
		if err := checkResumedSubject(&f.clientFlags, state, saved.csr); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "resuming the enrollment saved in %s\n", state)
		csr, newKey = saved.csr, saved.key
		if csr == nil {
			csr, _, err = buildCSR(ctx, &f, cmd, identity, saved.key)
		}
	} else {
		csr, newKey, err = buildCSR(ctx, &f, cmd, identity, nil)
		if err == nil && state != "" && newKey != nil {
			keep := csr
			if f.pop {
				keep = nil // bound to this session's tls-unique: made again on resume
			}
			err = saveEnrollState(state, newKey, keep)
		}
	}
	if err != nil {
		return err
	}
	switch cmd {
	case "enroll", "reenroll":
		var cert *x509.Certificate
		if cmd == "enroll" {
			cert, err = ec.Enroll(ctx, csr)
		} else {
			cert, err = ec.Reenroll(ctx, csr)
		}
		if err != nil {
			if state != "" {
				if refusedForGood(err) {
					_ = os.Remove(state)
				} else {
					fmt.Fprintf(stderr, "the new key and the CSR are saved in %s: run the same command again to resume\n", state)
				}
			}
			return err
		}
		if newKey != nil && f.keyOut != "" {
			if err := f.writeKey(newKey, stdout, stderr); err != nil {
				return err
			}
		}
		fmt.Fprintf(stderr, "enrolled: %s (serial %x, valid until %s)\n", cert.Subject, cert.SerialNumber, cert.NotAfter.Format(time.RFC3339))
		if err := writeCerts(f.out, stdout, cert); err != nil {
			return err
		}
		if state != "" {
			if err := os.Remove(state); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("enrolled, but the finished state file stays: %w", err)
			}
		}
		return nil
	default: // serverkeygen
		sk, err := ec.ServerKeyGen(ctx, csr)
		if err != nil {
			return err
		}
		switch {
		case sk.KeyPackage:
			fmt.Fprintf(stderr, "the key came as an asymmetric key package (application/cms, RFC 8295 §8.1), signed by %s "+
				"outside and %s inside; decrypted\n", sk.OuterSigner.Subject, sk.KeySigner.Subject)
		case sk.Encrypted:
			fmt.Fprintf(stderr, "the key came CMS-encrypted (280), signed by %s; decrypted\n", sk.KeySigner.Subject)
		}
		keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: sk.PKCS8})
		if f.keyOut != "" {
			if err := writeOutput(f.keyOut, stdout, keyPEM, 0o600); err != nil {
				return err
			}
			fmt.Fprintf(stderr, "wrote server-generated key %s\n", f.keyOut)
		} else {
			fmt.Fprintln(stderr, "warning: no --key-out: printing the server-generated private key")
			if _, err := stdout.Write(keyPEM); err != nil {
				return err
			}
		}
		fmt.Fprintf(stderr, "enrolled: %s (serial %x, valid until %s)\n", sk.Cert.Subject, sk.Cert.SerialNumber, sk.Cert.NotAfter.Format(time.RFC3339))
		return writeCerts(f.out, stdout, sk.Cert)
	}
}

// dialEST opens the association (DTLS, or UDP with an OSCORE layer) and wraps it in the EST
// client. It sets f.binding and f.serverChain.
func dialEST(ctx context.Context, f *estFlags, stderr io.Writer) (io.Closer, client.ESTClient, error) {
	u, err := url.Parse(f.server)
	if err != nil || u.Host == "" {
		return nil, nil, usagef("bad --server %q: want coaps://host[:port][/label]", f.server)
	}
	switch u.Scheme {
	case "http", "https":
		if f.oscoreFile == "" {
			if u.Scheme == "http" {
				return nil, nil, usagef("--server http://: EST-oscore over HTTP (RFC 8613 §11) needs --oscore FILE; EST over HTTPS uses https://")
			}
			return dialESTHTTPS(f, u, stderr)
		}
		if f.edhoc || f.aceURL != "" {
			return nil, nil, usagef("EST-oscore over HTTP works with a pre-shared context (--oscore) only")
		}
	case "coaps":
		if f.oscoreFile != "" || f.edhoc || f.aceURL != "" {
			return nil, nil, usagef("--oscore, --edhoc and --ace go with coap:// (EST-oscore), not coaps://")
		}
	case "coap":
		n := 0
		for _, b := range []bool{f.oscoreFile != "", f.edhoc, f.aceURL != ""} {
			if b {
				n++
			}
		}
		if n != 1 {
			return nil, nil, usagef("coap:// (EST-oscore) needs exactly one of --oscore FILE, --edhoc and --ace AS-URL")
		}
		if (f.aceURL != "") != (f.aceContext != "") {
			return nil, nil, usagef("--ace AS-URL and --ace-context FILE go together")
		}
	default:
		return nil, nil, usagef("--server %q: want coaps:// (EST-coaps), coap:// (EST-oscore) or https:// (EST over HTTPS)", f.server)
	}
	f.host = u.Hostname()
	label := strings.Trim(u.Path, "/")
	label = strings.TrimPrefix(label, ".well-known/est")
	label = strings.Trim(label, "/")
	accept, err := client.ParseCertFormat(f.accept)
	if err != nil {
		return nil, nil, usagef("--accept: %v", err)
	}
	pair, err := f.identity("client identity")
	if err != nil {
		return nil, nil, err
	}
	verify, err := serverVerifier(f, u.Hostname(), stderr)
	if err != nil {
		return nil, nil, err
	}
	o := client.ESTDialOptions{BlockSize: f.blockSize, Identity: pair, VerifyServer: verify, EDHOC: f.edhoc, EDHOCSeparate: f.edhocSeparate, EDHOCCredential: f.edhocCred}
	if u.Scheme == "https" {
		// OSCORE over HTTPS: the TLS hop is checked against --trust when given (RFC 8613 §12.1
		// recommends TLS on HTTP hops); OSCORE protects end to end either way.
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if len(f.anchors) > 0 {
			pool := x509.NewCertPool()
			for _, a := range f.anchors {
				pool.AddCert(a)
			}
			tc.RootCAs = pool
		}
		o.HTTPClient = &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 60 * time.Second}
	}
	if f.oscoreFile != "" {
		if o.OSCORE, err = loadClientOSCORE(f.oscoreFile); err != nil {
			return nil, nil, err
		}
	}
	if f.aceURL != "" {
		asCtx, err := loadClientOSCORE(f.aceContext)
		if err != nil {
			return nil, nil, err
		}
		if o.ACE, err = client.NewACEClient(client.ACEConfig{AS: f.aceURL, ASContext: asCtx,
			Audience: f.aceAudience, Scope: f.aceScope}); err != nil {
			return nil, nil, usagef("--ace: %v", err)
		}
	}
	if f.edhoc && pair == nil {
		return nil, nil, usagef("--edhoc needs --cert and --key (the device's identity)")
	}
	switch f.edhocCred {
	case "", "x5chain", "x5t", "kid":
	default:
		return nil, nil, usagef("--edhoc-cred %q: want x5chain, x5t or kid", f.edhocCred)
	}
	c, err := client.DialEST(ctx, f.server, o)
	if err != nil {
		return nil, nil, err
	}
	f.binding, f.serverChain = c.ChannelBinding, c.ServerChain
	cur := c // the association in use: Redial replaces it
	var mu sync.Mutex
	redial := func(ctx context.Context) (*coap.Client, error) {
		n, err := client.DialEST(ctx, f.server, o)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		cur = n
		mu.Unlock()
		f.binding, f.serverChain = n.ChannelBinding, n.ServerChain
		return n.Client, nil
	}
	ec := client.NewEST(c.Client, client.ESTOptions{Label: label, Accept: accept, Wait: f.wait, Trust: f.anchors, KeyDecrypter: f.keyDecrypter,
		Redial: redial, OnProgress: func(p client.Progress) {
			if p.Reconnected {
				fmt.Fprintf(stderr, "lost the association with the server (%s); reconnected, sending /%s again\n", p.Diagnostic, p.Function)
				return
			}
			msg := fmt.Sprintf("pending: /%s not ready, retrying in %v (attempt %d)", p.Function, p.RetryAfter, p.Attempt)
			if p.Diagnostic != "" {
				msg += ": " + p.Diagnostic
			}
			fmt.Fprintln(stderr, msg)
		}})
	return closerFunc(func() error {
		mu.Lock()
		defer mu.Unlock()
		return cur.Close()
	}), ec, nil
}

// closerFunc is an io.Closer of a function.
type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// serverVerifier returns the check of the server's chain (DTLS or EDHOC): against the explicit
// trust anchors, else --trust, for the host of --server (client.VerifyServer: server role and
// name, RFC 7030 §3.6, RFC 9148 §4); nil with a pre-shared OSCORE context, which authenticates
// the server itself; a parse-only check with --insecure. It sets f.serverName when the check
// authenticates the server.
func serverVerifier(f *estFlags, host string, stderr io.Writer) (func([][]byte) ([]*x509.Certificate, error), error) {
	if f.oscoreFile != "" || f.aceURL != "" {
		// The pre-shared context authenticates the server; no certificate is involved. --trust,
		// when given, still checks the certificates it issues.
		if f.trust != "" {
			anchors, err := pemfile.ReadCerts(f.trust)
			if err != nil {
				return nil, err
			}
			f.anchors = anchors
		}
		return nil, nil
	}
	anchors, from := []*x509.Certificate(nil), ""
	var err error
	if f.explicitTA != "" {
		if anchors, err = client.ReadTrustAnchors(f.explicitTA); err != nil {
			return nil, err
		}
		from = f.explicitTA
	}
	// RFC 7030 §3.6.1: once the explicit TA database exists it alone authenticates the server.
	if len(anchors) == 0 && f.trust != "" {
		if anchors, err = pemfile.ReadCerts(f.trust); err != nil {
			return nil, err
		}
		from = f.trust
	}
	switch {
	case len(anchors) > 0:
		f.serverName, f.anchors = host, anchors
		check := client.ServerVerifier(anchors, host, nil)
		return func(raw [][]byte) ([]*x509.Certificate, error) {
			chain, err := check(raw)
			if err != nil {
				if len(raw) == 1 && errors.As(err, new(x509.UnknownAuthorityError)) {
					// An EDHOC server sending its certificate alone (coapca's default
					// edhoc.credential x5chain-leaf, RFC 9528 §3.5.3) needs the issuing CA here.
					return nil, fmt.Errorf("server not trusted by %s: %w (the server sent its certificate without its issuing CA: add that CA, e.g. DATA/issuing-ca.pem, to --trust)", from, err)
				}
				return nil, fmt.Errorf("server not trusted by %s: %w", from, err)
			}
			return chain, nil
		}, nil
	case f.insecure:
		fmt.Fprintln(stderr, "warning: --insecure: the server is not authenticated")
		return client.ParseChain, nil
	}
	return nil, usagef("no trust anchors: pass --trust FILE (e.g. coapca-data/ca.pem), --explicit-ta FILE or --insecure")
}

// parseFingerprint parses a SHA-256 fingerprint in hex, with or without colons.
func parseFingerprint(s string) ([]byte, error) {
	b, err := hex.DecodeString(strings.ReplaceAll(strings.TrimSpace(s), ":", ""))
	if err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("%q is not a SHA-256 fingerprint (64 hex digits)", s)
	}
	return b, nil
}

// buildCSR returns the CSR to send and, when it made one, the new key.
func buildCSR(ctx context.Context, f *estFlags, cmd string, identity *x509.Certificate, key crypto.Signer) ([]byte, crypto.Signer, error) {
	if f.csr != "" {
		b, err := f.readCSR()
		return b, nil, err
	}
	req, err := f.certRequest(identity, true)
	if err != nil {
		return nil, nil, err
	}
	switch {
	case key != nil: // resumed: the saved key
	case cmd == "reenroll" && f.reuseKey:
		if key, err = kms.LoadKeyFile(f.key); err != nil {
			return nil, nil, err
		}
	default:
		if key, err = f.generateKey(); err != nil {
			return nil, nil, err
		}
	}
	pw := ""
	if f.pop {
		cb, err := f.binding(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("--pop: %w", err)
		}
		pw = base64.StdEncoding.EncodeToString(cb)
	}
	csr, err := client.NewCSR(key, req, pw, f.csrAttrs...)
	if err != nil {
		return nil, nil, err
	}
	if cmd == "reenroll" && f.reuseKey {
		return csr, nil, nil
	}
	return csr, key, nil
}

// loadClientOSCORE reads the pre-shared context of --oscore (the client's side).
func loadClientOSCORE(path string) (*oscore.Context, error) {
	_, p, err := server.LoadOSCOREContext(path)
	if err != nil {
		return nil, err
	}
	// RFC 8613 Appendix B.1.1: never reuse a nonce across runs of the client.
	p.SequenceStore = oscore.NewFileSequenceStore(path+".seq", 0)
	octx, err := oscore.NewContext(p)
	if err != nil {
		return nil, fmt.Errorf("oscore context %s: %w", path, err)
	}
	return octx, nil
}

// encryptedKeyRequest turns --encrypt-key into the CSR attributes that ask for a CMS-encrypted
// server-generated key and the decrypter that opens it (RFC 7030 §4.4.1, §4.4.2; RFC 9148
// §4.8): DecryptKeyIdentifier for a pre-shared AES key, AsymmetricDecryptKeyIdentifier for the
// key of --cert. SMIMECapabilities lists what this client decrypts.
func encryptedKeyRequest(f *estFlags) error {
	if f.encryptKey == "" {
		if f.encryptKeyID != "" {
			return usagef("--encrypt-key-id goes with --encrypt-key FILE")
		}
		return nil
	}
	var idAttr est.Attribute
	if f.encryptKey == "own" {
		if f.cert == "" || f.key == "" || f.encryptKeyID != "" {
			return usagef("--encrypt-key own needs --cert and --key (and no --encrypt-key-id)")
		}
		chain, err := pemfile.ReadCerts(f.cert)
		if err != nil {
			return err
		}
		key, err := kms.LoadKeyFile(f.key)
		if err != nil {
			return err
		}
		f.keyDecrypter = &cms.Decrypter{Key: key, Cert: chain[0]}
		idAttr = est.AsymmetricDecryptKeyIdentifierAttribute(est.SubjectKeyID(chain[0]))
	} else {
		id, err := hex.DecodeString(f.encryptKeyID)
		if err != nil || len(id) == 0 {
			return usagef("--encrypt-key FILE needs --encrypt-key-id HEX (the key's identifier known to the server)")
		}
		b, err := os.ReadFile(f.encryptKey)
		if err != nil {
			return fmt.Errorf("--encrypt-key: %w", err)
		}
		kek, err := config.ParseKEK(b)
		if err != nil {
			return fmt.Errorf("--encrypt-key %s: %w", f.encryptKey, err)
		}
		f.keyDecrypter = &cms.Decrypter{KEK: func(got []byte) []byte {
			if bytes.Equal(got, id) {
				return kek
			}
			return nil
		}}
		idAttr = est.DecryptKeyIdentifierAttribute(id)
	}
	capsAttr, err := est.SMIMECapabilitiesAttribute(cms.OIDAES256CBC, cms.OIDAES128CBC, cms.OIDAES256Wrap, cms.OIDAES128Wrap)
	if err != nil {
		return err
	}
	f.csrAttrs = append(f.csrAttrs, capsAttr, idAttr)
	return nil
}

// keyPackageReturn builds the signed receipt or error of `est return` (RFC 8295 §8.2, RFC 7191)
// and its Content-Type.
func keyPackageReturn(f *estFlags) ([]byte, string, error) {
	if f.receipt == (f.returnError != "") {
		return nil, "", usagef("return needs exactly one of --receipt and --error CODE")
	}
	if f.packageCert == "" {
		return nil, "", usagef("return needs --package-cert: the certificate of the server-generated key")
	}
	pkg, err := pemfile.ReadCerts(f.packageCert)
	if err != nil {
		return nil, "", err
	}
	signKey, signCert, chain := f.packageKey, pkg[0], pkg[1:]
	if f.receipt {
		if f.packageKey == "" {
			return nil, "", usagef("--receipt needs --package-key: the receipt is signed with the received key")
		}
	} else if f.packageKey == "" {
		if f.cert == "" || f.key == "" {
			return nil, "", usagef("--error needs --package-key, or --cert and --key to sign it")
		}
		own, err := pemfile.ReadCerts(f.cert)
		if err != nil {
			return nil, "", err
		}
		signKey, signCert, chain = f.key, own[0], own[1:]
	}
	key, err := kms.LoadKeyFile(signKey)
	if err != nil {
		return nil, "", err
	}
	if pub, ok := signCert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(key.Public()) {
		return nil, "", usagef("the signing key %s does not belong to the certificate %s", signKey, signCert.Subject)
	}
	if f.receipt {
		der, err := est.SignKeyPackageReceipt(rand.Reader, key, signCert, chain, time.Now())
		return der, est.MediaKeyPackageReceipt, err
	}
	code, ok := est.ErrorCodeByName(f.returnError)
	if !ok {
		return nil, "", usagef("--error %q: not an RFC 7191 error code (a name such as decryptFailure, or 0-127)", f.returnError)
	}
	der, err := est.SignKeyPackageError(rand.Reader, code, pkg[0], key, signCert, chain, time.Now())
	return der, est.MediaKeyPackageError, err
}
