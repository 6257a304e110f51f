package cli

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"coapca/client"
	"coapca/kms"
)

// clientFlags are the flags that the est and cmp client commands share, defined once here.
// Where the help text names the protocol, each command passes its own (clientHelp).
type clientFlags struct {
	server, cert, key, trust string
	insecure                 bool
	blockSize                int
	wait, timeout            time.Duration
	out                      string

	// Enrollment: the request and the new key.
	subject, keyOut, keyType, csr string
	sans                          stringList
}

// clientHelp holds the help texts that differ between est and cmp.
type clientHelp struct {
	server, cert, trust, insecure, blockSize, wait string
}

// register defines the connection flags of every client command.
func (f *clientFlags) register(fs *flag.FlagSet, h clientHelp) {
	fs.StringVar(&f.server, "server", "", h.server)
	fs.StringVar(&f.cert, "cert", "", h.cert)
	fs.StringVar(&f.key, "key", "", "private key of --cert (PEM)")
	fs.StringVar(&f.trust, "trust", "", h.trust)
	fs.BoolVar(&f.insecure, "insecure", false, h.insecure)
	fs.IntVar(&f.blockSize, "block-size", 1024, h.blockSize)
	fs.DurationVar(&f.wait, "wait", 10*time.Minute, h.wait)
	fs.DurationVar(&f.timeout, "timeout", 0, "give up after this long in all (default: --wait plus 1m)")
}

// registerOut defines --out with the command's help text.
func (f *clientFlags) registerOut(fs *flag.FlagSet, help string) {
	fs.StringVar(&f.out, "out", "", help)
}

// registerEnroll defines the flags of the commands that have a key certified.
func (f *clientFlags) registerEnroll(fs *flag.FlagSet, subjectHelp, sanHelp string) {
	fs.StringVar(&f.subject, "subject", "", subjectHelp)
	fs.Var(&f.sans, "san", sanHelp)
	fs.StringVar(&f.keyOut, "key-out", "", "write the new private key here (PEM, mode 0600; - for stdout); until the certificate arrives it waits in FILE.pending, which a rerun resumes")
	fs.StringVar(&f.keyType, "key-type", "P-256", "type of the new key: P-256, P-384, Ed25519")
}

// parse parses a client command's flags (no positional arguments allowed), requires --server,
// checks --block-size and returns ctx bounded by --timeout (default: --wait plus a minute).
func (f *clientFlags) parse(ctx context.Context, fs *flag.FlagSet, args []string) (context.Context, context.CancelFunc, error) {
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	if fs.NArg() > 0 {
		return nil, nil, usagef("unexpected argument %q", fs.Arg(0))
	}
	if f.server == "" {
		return nil, nil, usagef("--server is required")
	}
	switch f.blockSize {
	case 16, 32, 64, 128, 256, 512, 1024:
	default:
		return nil, nil, usagef("--block-size %d: want 16, 32, 64, 128, 256, 512 or 1024", f.blockSize)
	}
	d := f.timeout
	if d == 0 {
		d = f.wait + time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	return ctx, cancel, nil
}

// identity loads --cert and --key (nil when neither is given); what names it in errors.
func (f *clientFlags) identity(what string) (*tls.Certificate, error) {
	if f.cert == "" && f.key == "" {
		return nil, nil
	}
	if f.cert == "" || f.key == "" {
		return nil, usagef("--cert and --key go together")
	}
	p, err := tls.LoadX509KeyPair(f.cert, f.key)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return &p, nil
}

// certRequest is the subject (required unless a renewed certificate gives it) and the
// subjectAltNames of --subject and --san; names not given are taken from renew when set.
func (f *clientFlags) certRequest(renew *x509.Certificate, subjectRequired bool) (client.CertRequest, error) {
	var r client.CertRequest
	switch {
	case f.subject != "":
		name, err := client.ParseSubject(f.subject)
		if err != nil {
			return r, usagef("--subject: %v", err)
		}
		r.Subject = name
	case renew != nil:
		r.RawSubject = renew.RawSubject
	case subjectRequired:
		return r, usagef("--subject is required (e.g. --subject CN=device-1)")
	}
	sans, err := client.ParseSANs(f.sans...)
	if err != nil {
		return r, usagef("--san: %v", err)
	}
	if sans.Empty() && renew != nil {
		sans = client.SANsOf(renew)
	}
	r.SANs = sans
	return r, nil
}

// generateKey makes a key of --key-type.
func (f *clientFlags) generateKey() (crypto.Signer, error) {
	k, err := kms.GenerateKey(f.keyType)
	if err != nil {
		return nil, usagef("--key-type: %v", err)
	}
	return k, nil
}

// readCSR reads --csr: DER, or the first PEM block.
func (f *clientFlags) readCSR() ([]byte, error) {
	b, err := os.ReadFile(f.csr)
	if err != nil {
		return nil, err
	}
	if blk, _ := pem.Decode(b); blk != nil {
		b = blk.Bytes
	}
	return b, nil
}

// writeKey writes a new key to --key-out ("-": stdout) and says so.
func (f *clientFlags) writeKey(key crypto.Signer, stdout, stderr io.Writer) error {
	data, err := kms.MarshalPrivateKeyPEM(key)
	if err != nil {
		return err
	}
	if err := writeOutput(f.keyOut, stdout, data, 0o600); err != nil {
		return err
	}
	if f.keyOut != "-" {
		fmt.Fprintf(stderr, "wrote key %s\n", f.keyOut)
	}
	return nil
}

// writeCerts writes certs as PEM to path, or to w when path is "" or "-".
func writeCerts(path string, w io.Writer, certs ...*x509.Certificate) error {
	var b strings.Builder
	for _, c := range certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return writeOutput(path, w, []byte(b.String()), 0o644)
}
