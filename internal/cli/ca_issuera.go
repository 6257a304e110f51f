package cli

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"coapca/internal/datadir"
	"coapca/kms"
)

// issueRAFlags are the flags of `coapca ca issue-ra`.
type issueRAFlags struct {
	names    stringList
	csr      *string
	keyOut   *string
	out      *string
	cn       *string
	validity *time.Duration
}

func (f *issueRAFlags) register(fs *flag.FlagSet) {
	fs.Var(&f.names, "name", "issue-ra: DNS name or IP address of the registrar host (repeatable; at least one)")
	f.csr = fs.String("csr", "", "issue-ra: the registrar's CSR (PEM or DER); without it a new P-256 key is made (--key-out)")
	f.keyOut = fs.String("key-out", "", "issue-ra: where to write the new key (without --csr; must not exist)")
	f.out = fs.String("out", "", "issue-ra: where to write the certificate with the issuing CA, PEM (must not exist)")
	f.cn = fs.String("cn", "", "issue-ra: subject common name (default the first --name)")
	f.validity = fs.Duration("validity", 365*24*time.Hour, "issue-ra: lifetime, capped at the issuing CA's")
}

// runIssueRA certifies a separate registrar host (RFC 9148 §5) with this CA's issuing CA:
// id-kp-cmcRA with serverAuth and clientAuth (datadir.IssueRA), from its CSR or for a new key.
// The certificate is not in the database: the upstream's ra rule admits it by its chain and
// id-kp-cmcRA (docs/registrar.md), and it is replaced, not revoked, by issuing a new one.
func runIssueRA(d *datadir.Data, rest []string, f issueRAFlags, stdout io.Writer) error {
	if len(rest) > 0 {
		return usagef("ca issue-ra takes no argument (got %q)", rest[0])
	}
	if len(f.names) == 0 {
		return usagef("ca issue-ra needs --name (the registrar's DNS name or IP address)")
	}
	if *f.out == "" {
		return usagef("ca issue-ra needs --out")
	}
	if (*f.csr == "") == (*f.keyOut == "") {
		return usagef("ca issue-ra needs either --csr (the registrar's request) or --key-out (a new key)")
	}
	for _, p := range []string{*f.out, *f.keyOut} {
		if p == "" {
			continue
		}
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%s exists; not overwritten", p)
		}
	}
	var pub crypto.PublicKey
	var key crypto.Signer
	if *f.csr != "" {
		raw, err := os.ReadFile(*f.csr)
		if err != nil {
			return err
		}
		if b, _ := pem.Decode(raw); b != nil {
			if b.Type != "CERTIFICATE REQUEST" && b.Type != "NEW CERTIFICATE REQUEST" {
				return fmt.Errorf("%s: PEM block %q, want CERTIFICATE REQUEST", *f.csr, b.Type)
			}
			raw = b.Bytes
		}
		csr, err := x509.ParseCertificateRequest(raw)
		if err != nil {
			return fmt.Errorf("%s: %w", *f.csr, err)
		}
		// The CSR's signature proves the registrar holds the key (RFC 2986 §3): an operator
		// must not certify a key nobody showed possession of.
		if err := csr.CheckSignature(); err != nil {
			return fmt.Errorf("%s: the CSR's signature does not verify: %w", *f.csr, err)
		}
		pub = csr.PublicKey
	} else {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		key, pub = k, k.Public()
	}
	cert, err := d.IssueRA(datadir.RARequest{PublicKey: pub, CommonName: *f.cn, Names: f.names, Validity: *f.validity})
	if err != nil {
		return err
	}
	if key != nil {
		if err := kms.WriteKeyFile(*f.keyOut, key); err != nil {
			return err
		}
	}
	var out []byte
	for _, c := range []*x509.Certificate{cert, d.IssuingCA} {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	if err := kms.WriteFileAtomic(*f.out, out, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "coapca: registrar certificate %x (id-kp-cmcRA, serverAuth, clientAuth) for %v, valid until %s: %s\n",
		cert.SerialNumber, cert.DNSNames, cert.NotAfter.Format(time.RFC3339), *f.out)
	if key != nil {
		fmt.Fprintf(stdout, "coapca: its key: %s (move it to the registrar host)\n", *f.keyOut)
	}
	fmt.Fprintf(stdout, "On the registrar: coapca serve --upstream https://THIS-CA --upstream-trust ROOT.pem --upstream-cert %s --upstream-key KEY\n", *f.out)
	return nil
}
