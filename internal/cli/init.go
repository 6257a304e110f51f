package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"coapca/internal/config"
	"coapca/internal/server"
	"coapca/kms"
	"coapca/kms/pkcs11"
)

const initDescription = `Set up a production CA: write a commented configuration (no demo trust, no demo
secret) and create the CA it names in a new data directory — the root, the issuing CA, the
server and CMP signer certificates — after validating the configuration.

Key custody:
  --passphrase-file FILE or --passphrase-env VAR  the CA keys in DATA/private are encrypted at
      rest (PKCS#8, PBES2 with AES-256); the configuration names the same source for serve.
  --root-key-out FILE  the root key is written to FILE instead of DATA/private/ca.key: move it
      off line. serve runs without it; it is needed again only to certify a new issuing CA.
  --issuing-key pkcs11:URI  the issuing key is generated in an HSM (RFC 7512 URI; binaries
      built with -tags pkcs11), or certified as found there, and never leaves it.
  --issuing-key pkcs11:URI --import-key FILE  an existing issuing key (PEM; encrypted with the
      passphrase above or not) is imported into the HSM instead, sensitive and not extractable;
      destroy FILE afterwards. A key already in the token under that name is not replaced.

Registrar (RFC 9148 §5, docs/registrar.md):
  --registrar  also create DATA/registrar.pem: the registrar identity (id-kp-cmcRA, serverAuth,
      clientAuth) that 'serve --upstream' presents to devices and to the upstream CA; the
      upstream must trust this data directory's ca.pem for its ra rule.

Then add your manufacturers' trust stores (authority.trust_stores) and CMP secrets
(authority.mac_secrets) to the file and run 'coapca serve --config FILE'.`

func runInit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("init", "coapca init [flags]", initDescription, stderr)
	cfgPath := fs.String("config", "coapca.yaml", "configuration file to write (must not exist)")
	dataDir := fs.String("data", "coapca-data", "data directory to create (must not hold a CA)")
	passFile := fs.String("passphrase-file", "", "file holding the passphrase that encrypts the CA keys at rest")
	passEnv := fs.String("passphrase-env", "", "environment variable holding that passphrase")
	rootOut := fs.String("root-key-out", "", "write the root key here instead of DATA/private/ca.key (to move off line)")
	issuingKey := fs.String("issuing-key", "", "pkcs11: URI (RFC 7512) of the issuing key in an HSM, generated there if missing")
	iterations := fs.Int("pbkdf2-iterations", 0, "PBKDF2 iterations of the encrypted key files (default 600000; lower only for slow machines)")
	importKey := fs.String("import-key", "", "existing issuing key file to import into the HSM that --issuing-key names")
	keyType := fs.String("issuing-key-type", "P-256", "type of an issuing key generated in the HSM: P-256, P-384, RSA-2048, RSA-3072")
	registrar := fs.Bool("registrar", false, "also create DATA/registrar.pem, the registrar identity with id-kp-cmcRA (RFC 9148 §5)")
	var names stringList
	fs.Var(&names, "server-name", "DNS name or IP address for the server certificate (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	if *issuingKey != "" && !strings.HasPrefix(strings.ToLower(*issuingKey), "pkcs11:") {
		return usagef("--issuing-key must be a pkcs11: URI (a key file is made in the data directory)")
	}
	if *importKey != "" && *issuingKey == "" {
		return usagef("--import-key needs --issuing-key pkcs11:URI (the token to import the key into)")
	}
	if *iterations < 0 {
		return usagef("--pbkdf2-iterations must be positive")
	}
	if _, err := os.Lstat(*cfgPath); err == nil {
		return fmt.Errorf("%s exists; init never overwrites a configuration", *cfgPath)
	}
	data, err := filepath.Abs(*dataDir)
	if err != nil {
		return err
	}
	abs := func(p string) (string, error) {
		if p == "" {
			return "", nil
		}
		return filepath.Abs(p)
	}
	pf, err := abs(*passFile)
	if err != nil {
		return err
	}
	ro, err := abs(*rootOut)
	if err != nil {
		return err
	}
	ik, err := abs(*importKey)
	if err != nil {
		return err
	}

	cfg := config.Default()
	cfg.Data = data
	cfg.ServerNames = names
	cfg.CA = config.CA{IssuingKey: *issuingKey, KeyPassphraseFile: pf, KeyPassphraseEnv: *passEnv, NoDemo: true}
	text := productionConfig(cfg)
	if *registrar {
		text += registrarConfig
	}

	// The file as written is what serve will read: validate that, before anything exists.
	tmp, err := os.CreateTemp(filepath.Dir(*cfgPath), ".coapca-init-*.yaml")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(text); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	loaded, err := config.Load(tmp.Name())
	if err != nil {
		return fmt.Errorf("the generated configuration does not load (a bug): %w", err)
	}
	log, err := newLogger(stderr, "info")
	if err != nil {
		return err
	}
	d, err := server.InitCA(ctx, loaded, server.InitOptions{IssuingKeyType: *keyType, RootKeyOut: ro, PBKDF2Iterations: *iterations,
		ImportKeyFile: ik, Registrar: *registrar}, log)
	if err != nil {
		return err
	}
	mode := os.FileMode(0o640)
	if strings.Contains(strings.ToLower(*issuingKey), "pin-value=") {
		mode = 0o600 // the file holds the token's PIN
	}
	if err := kms.WriteFileAtomic(*cfgPath, []byte(text), mode); err != nil {
		return err
	}

	fmt.Fprintf(stdout, "coapca: wrote %s and created %s:\n", *cfgPath, d.Dir)
	for _, f := range d.Created {
		fmt.Fprintf(stdout, "  %s\n", f)
	}
	fmt.Fprintf(stdout, "\nroot CA certificate (the trust anchor devices install): %s\n", d.Paths.Root)
	switch {
	case ro != "":
		fmt.Fprintf(stdout, "root key: %s — move it off line now (it is not in the data directory)", ro)
	case pf != "" || *passEnv != "":
		fmt.Fprintf(stdout, "root key: %s, encrypted; consider moving it off line (init --root-key-out does that)", d.Paths.RootKey)
	default:
		fmt.Fprintf(stdout, "root key: %s, NOT encrypted (use --passphrase-file/--passphrase-env or --root-key-out)", d.Paths.RootKey)
	}
	if pf != "" || *passEnv != "" {
		fmt.Fprint(stdout, "; CA keys are encrypted at rest")
	}
	fmt.Fprintln(stdout)
	if *issuingKey != "" {
		fmt.Fprintf(stdout, "issuing key: in the HSM (%s)\n", pkcs11.Redact(*issuingKey))
	}
	if ik != "" {
		fmt.Fprintf(stdout, "issuing key: imported from %s, which still holds it: destroy that file now\n", ik)
	}
	if *registrar {
		fmt.Fprintf(stdout, "registrar identity (id-kp-cmcRA; its upstream CA must trust %s in an ra rule): %s\n", d.Paths.Root, d.Paths.Registrar)
	}
	fmt.Fprintf(stdout, "\nNext: add authority.trust_stores and/or authority.mac_secrets to %s, then\n  coapca serve --config %s\n", *cfgPath, *cfgPath)
	return nil
}

// registrarConfig is the commented upstream section init --registrar appends.
const registrarConfig = `
# Registrar mode (RFC 9148 §5, docs/registrar.md): relay EST-coaps and EST-oscore to an
# upstream EST server over HTTPS. DATA/registrar.pem (id-kp-cmcRA) is the registrar's identity
# toward devices and its TLS client certificate toward the upstream.
# upstream:
#   url: "https://ca.example:8443"
#   trust: /etc/coapca/upstream-root.pem    # anchors for the upstream's TLS certificate
`

// productionConfig is the commented configuration init writes: everything a production
// deployment decides, with the defaults spelled out, and no demo credentials.
func productionConfig(c config.Config) string {
	q := strconv.Quote
	var names strings.Builder
	for _, n := range c.ServerNames {
		names.WriteString("\n  - " + q(n))
	}
	serverNames := "server_names: []"
	if names.Len() > 0 {
		serverNames = "server_names:" + names.String()
	}
	return `# coapca production configuration, written by 'coapca init'.
# Every field is documented in docs/configuration.md; 'coapca serve --config THIS-FILE' checks
# the whole file before it touches the data directory.

# The data directory: CA certificates, the keys in private/ (mode 0600), the SQLite database.
data: ` + q(c.Data) + `

log:
  level: info                # debug | info | warn | error
  format: json               # json for log collectors; text for a terminal

listen:
  coaps: ":5684"             # EST-coaps (RFC 9148) over DTLS 1.2
  coap: ":5683"              # EST-oscore and CMP over CoAP (RFC 9482); OSCORE/CMP protect themselves
  # http: ":8080"            # CMP over HTTP (RFC 9811)
  # https: ":8443"           # EST over HTTPS (RFC 7030)
  # metrics: "127.0.0.1:9090"  # Prometheus /metrics and /healthz

# DNS names and IP addresses devices use to reach this server (put in its certificate).
` + serverNames + `

# Key custody: where the CA keys are and how they are protected.
ca:
  # The issuing CA key: "" = DATA/private/issuing-ca.key; a pkcs11: URI (RFC 7512) = in an HSM.
  issuing_key: ` + q(c.CA.IssuingKey) + `
  # The passphrase that encrypts the key files in DATA/private (PKCS#8, PBES2, AES-256):
  # from a file (first line) or from an environment variable; not both.
  key_passphrase_file: ` + q(c.CA.KeyPassphraseFile) + `
  key_passphrase_env: ` + q(c.CA.KeyPassphraseEnv) + `
  # No demo manufacturer CA, demo device or demo CMP secret: not created, never trusted.
  no_demo: true

authority:
  # Manufacturer trust stores: the CAs whose device certificates (IDevIDs) may enroll.
  trust_stores: []
  #  - name: acme
  #    certs_file: /etc/coapca/acme-manufacturer-ca.pem
  #    allow_expired: true     # IEEE 802.1AR IDevIDs may outlive their notAfter

  # CMP shared secrets (RFC 9483 §3.2), each named by its reference (senderKID).
  mac_secrets: []
  #  - reference: factory-line-1
  #    secret_file: /etc/coapca/line-1.secret

  # Certificate profiles; without one, the built-in default profile (one year, clientAuth)
  # admits the IDevIDs of every trust store, every MAC secret and every pre-shared OSCORE
  # identity (docs/security.md lists the requester kinds and what each may do).
  # profiles:
  #  - label: ""
  #    validity: 8760h
  #    requesters: [{kind: idevid, from: [acme]}, {kind: mac, from: [factory-line-1]}]

  crl_validity: 168h
  backdate: 1m
`
}
