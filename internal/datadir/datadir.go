// Package datadir bootstraps coapca's data directory on first start, so that `coapca serve`
// runs on a fresh machine with no configuration, and reuses it on every later start.
//
// Layout (the first four paths are a documented interface):
//
//	DIR/ca.pem                        root CA certificate: the trust anchor clients install
//	DIR/demo/manufacturer-ca.pem      demo manufacturer CA (a trust store for IDevIDs)
//	DIR/demo/device.pem, device.key   one demo device identity (IDevID) it issued
//	DIR/demo/cmp-secret               CMP MAC secret for reference "demo" (RFC 9483 §3.2)
//	DIR/demo/private/manufacturer-ca.key
//	DIR/issuing-ca.pem                issuing CA (signs every enrolled certificate)
//	DIR/server.pem                    the server's DTLS/TLS certificate + issuing CA
//	DIR/cmp-signer.pem                CMP response-signing certificate (chains to ca.pem)
//	DIR/private/*.key                 private keys (PKCS#8 PEM, mode 0600, directory 0700)
//	DIR/coapca.db                     SQLite database (opened by the caller; 0600)
//
// The directories holding keys (private, demo, demo/private) are 0700 and the keys and the
// demo secret 0600; wider modes found on a later start are narrowed (and logged).
//
// All keys are ECDSA P-256. Files are written atomically; a file that exists is never
// overwritten, except the server and CMP signer certificates, which are re-issued when they
// expire within 30 days, no longer chain to the issuing CA, or (server) lack a configured name.
package datadir

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"coapca/kms"
)

// Options configure Open.
type Options struct {
	// Dir is the data directory (created with mode 0700 if missing).
	Dir string
	// ServerNames are extra DNS names and IP addresses for the server certificate, beside
	// localhost, 127.0.0.1, ::1 and the host name.
	ServerNames []string
	// Registrar makes (or keeps) DIR/registrar.pem: the identity of a registrar (RFC 9148 §5),
	// with id-kp-cmcRA (RFC 6402 §2.10) beside serverAuth and clientAuth, for its DTLS server
	// certificate toward devices and its TLS client certificate toward the upstream CA.
	Registrar bool
	// Logger; nil = discard.
	Logger *slog.Logger
	// Now replaces time.Now (tests).
	Now func() time.Time

	// Passphrase, when set, encrypts the keys Open creates in DIR/private (PKCS#8 with PBES2)
	// and decrypts the encrypted keys it finds there.
	Passphrase []byte
	// PBKDF2Iterations is the work of that encryption; 0 = kms.DefaultPBKDF2Iterations.
	PBKDF2Iterations int
	// IssuingKey, when set, is the issuing CA's key held elsewhere (a PKCS#11 token): it
	// replaces DIR/private/issuing-ca.key, and issuing-ca.pem must certify it.
	IssuingKey crypto.Signer
	// RootKeyOut, when set, is where a root key created by this Open is written instead of
	// DIR/private/ca.key: the operator moves it off line. Later starts run without the root key
	// (it is needed only to certify a new issuing CA).
	RootKeyOut string
	// NoDemo skips the demo manufacturer CA, device identity and CMP secret.
	NoDemo bool
}

// Paths are the files of a data directory (absolute paths).
type Paths struct {
	Root, RootKey                   string // DIR/ca.pem, DIR/private/ca.key
	IssuingCA, IssuingKey           string // DIR/issuing-ca.pem, DIR/private/issuing-ca.key
	Server, ServerKey               string // DIR/server.pem (server + issuing CA), DIR/private/server.key
	CMPSigner, CMPSignerKey         string // DIR/cmp-signer.pem, DIR/private/cmp-signer.key
	Registrar, RegistrarKey         string // DIR/registrar.pem (registrar + issuing CA), DIR/private/registrar.key
	ManufacturerCA, ManufacturerKey string // DIR/demo/manufacturer-ca.pem, DIR/demo/private/manufacturer-ca.key
	Device, DeviceKey               string // DIR/demo/device.pem, DIR/demo/device.key
	CMPSecret                       string // DIR/demo/cmp-secret
	DB                              string // DIR/coapca.db (not created by Open)
	Private, Demo, DemoPrivate      string // the directories
}

// Data is a loaded data directory.
type Data struct {
	Dir   string
	Paths Paths

	Root, IssuingCA, Server, CMPSigner, ManufacturerCA, Device               *x509.Certificate
	RootKey, IssuingKey, ServerKey, CMPSignerKey, ManufacturerKey, DeviceKey crypto.Signer
	// Registrar and RegistrarKey are set with Options.Registrar.
	Registrar    *x509.Certificate
	RegistrarKey crypto.Signer

	// CMPSecretRef is the reference of the demo CMP MAC secret ("demo"); CMPSecret its value
	// (the content of Paths.CMPSecret).
	CMPSecretRef string
	CMPSecret    []byte

	// Created lists the files written by this Open, for the serve printout (empty on a
	// later start that reused everything).
	Created []string
}

// DemoSecretRef is the reference of the demo CMP MAC secret.
const DemoSecretRef = "demo"

// DeviceSerialNumber is the subject serialNumber of the demo device.
const DeviceSerialNumber = "0001"

// renewBefore: derived certificates this close to expiry are re-issued on start.
const renewBefore = 30 * 24 * time.Hour

// noExpiry is the IEEE 802.1AR / RFC 5280 §4.1.2.5 "no well-defined expiration" time,
// used for the demo manufacturer CA and IDevID.
var noExpiry = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)

func layout(dir string) Paths {
	j := func(p ...string) string { return filepath.Join(append([]string{dir}, p...)...) }
	return Paths{
		Root: j("ca.pem"), RootKey: j("private", "ca.key"),
		IssuingCA: j("issuing-ca.pem"), IssuingKey: j("private", "issuing-ca.key"),
		Server: j("server.pem"), ServerKey: j("private", "server.key"),
		CMPSigner: j("cmp-signer.pem"), CMPSignerKey: j("private", "cmp-signer.key"),
		Registrar: j("registrar.pem"), RegistrarKey: j("private", "registrar.key"),
		ManufacturerCA: j("demo", "manufacturer-ca.pem"), ManufacturerKey: j("demo", "private", "manufacturer-ca.key"),
		Device: j("demo", "device.pem"), DeviceKey: j("demo", "device.key"),
		CMPSecret: j("demo", "cmp-secret"),
		DB:        j("coapca.db"),
		Private:   j("private"), Demo: j("demo"), DemoPrivate: j("demo", "private"),
	}
}

type builder struct {
	d    *Data
	now  time.Time
	log  *slog.Logger
	pass []byte
	iter int
	// keyOut redirects where a new key is written (the offline root key).
	keyOut map[string]string
}

// Open creates whatever is missing in opts.Dir and loads everything.
func Open(opts Options) (*Data, error) {
	if opts.Dir == "" {
		return nil, errors.New("datadir: no directory")
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("datadir: %w", err)
	}
	p := layout(dir)
	dirs := []string{dir, p.Private, p.Demo, p.DemoPrivate}
	if opts.NoDemo {
		dirs = dirs[:2]
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("datadir: %w", err)
		}
	}
	if err := restrictSecrets(p, log); err != nil {
		return nil, err
	}
	b := &builder{d: &Data{Dir: dir, Paths: p, CMPSecretRef: DemoSecretRef}, now: now(), log: log,
		pass: opts.Passphrase, iter: opts.PBKDF2Iterations, keyOut: map[string]string{}}
	d := b.d
	if opts.RootKeyOut != "" {
		b.keyOut[p.RootKey] = opts.RootKeyOut
	}

	// Root CA (self-signed) and issuing CA: never replaced once they exist — every issued
	// certificate depends on them. A root whose key is not in DIR/private is off line: it is
	// loaded without its key.
	rootCreate := func(key crypto.Signer) (*x509.Certificate, error) {
		return b.sign(&x509.Certificate{
			Subject:   pkix.Name{CommonName: "coapca Root CA", Organization: []string{"coapca"}},
			NotBefore: b.now.Add(-time.Hour), NotAfter: b.now.AddDate(20, 0, 0),
			IsCA: true, BasicConstraintsValid: true, MaxPathLen: 1,
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		}, nil, nil, key)
	}
	if fileExists(p.Root) && !fileExists(p.RootKey) {
		if d.Root, err = loadCert(p.Root); err != nil {
			return nil, err
		}
		log.Info("data directory: the root key is off line", "root", p.Root)
	} else if d.Root, d.RootKey, err = b.ensure(p.Root, p.RootKey, nil, rootCreate); err != nil {
		return nil, err
	}
	issuingCreate := func(key crypto.Signer) (*x509.Certificate, error) {
		if d.RootKey == nil {
			return nil, fmt.Errorf("the root key is off line (not at %s): put it there for this start, or restore issuing-ca.pem", p.RootKey)
		}
		return b.sign(&x509.Certificate{
			Subject:   pkix.Name{CommonName: "coapca Issuing CA", Organization: []string{"coapca"}},
			NotBefore: b.now.Add(-time.Hour), NotAfter: b.now.AddDate(10, 0, 0),
			IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		}, d.Root, d.RootKey, key)
	}
	if opts.IssuingKey != nil {
		d.IssuingCA, err = b.ensureExternal(p.IssuingCA, opts.IssuingKey, b.mustChain(d.Root, p.Root), issuingCreate)
		d.IssuingKey = opts.IssuingKey
	} else {
		d.IssuingCA, d.IssuingKey, err = b.ensure(p.IssuingCA, p.IssuingKey, b.mustChain(d.Root, p.Root), issuingCreate)
	}
	if err != nil {
		return nil, err
	}

	names, ips := serverNames(opts.ServerNames)
	d.Server, d.ServerKey, err = b.ensure(p.Server, p.ServerKey, b.renewable(d.IssuingCA, func(c *x509.Certificate) bool {
		for _, n := range names {
			if !slices.Contains(c.DNSNames, n) {
				return false
			}
		}
		for _, ip := range ips {
			if !slices.ContainsFunc(c.IPAddresses, ip.Equal) {
				return false
			}
		}
		return true
	}), func(key crypto.Signer) (*x509.Certificate, error) {
		return b.sign(&x509.Certificate{
			Subject:   pkix.Name{CommonName: names[0], Organization: []string{"coapca"}},
			NotBefore: b.now.Add(-time.Hour), NotAfter: b.now.AddDate(1, 0, 0),
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			DNSNames:    names, IPAddresses: ips, BasicConstraintsValid: true,
		}, d.IssuingCA, d.IssuingKey, key)
	})
	if err != nil {
		return nil, err
	}

	// RFC 9483 §3.1 / RFC 6402 §2.10: a CMP responder protecting with its own key names its
	// role with id-kp-cmcCA (and id-kp-cmcRA for RA use).
	d.CMPSigner, d.CMPSignerKey, err = b.ensure(p.CMPSigner, p.CMPSignerKey, b.renewable(d.IssuingCA, nil), func(key crypto.Signer) (*x509.Certificate, error) {
		return b.sign(&x509.Certificate{
			Subject:   pkix.Name{CommonName: "coapca CMP Signer", Organization: []string{"coapca"}},
			NotBefore: b.now.Add(-time.Hour), NotAfter: b.now.AddDate(2, 0, 0),
			KeyUsage:              x509.KeyUsageDigitalSignature,
			UnknownExtKeyUsage:    []asn1.ObjectIdentifier{oidKPCmcCA, oidKPCmcRA},
			BasicConstraintsValid: true,
		}, d.IssuingCA, d.IssuingKey, key)
	})
	if err != nil {
		return nil, err
	}

	if opts.Registrar {
		// RFC 9148 §5 and §10.2 (draft §10.2): the upstream EST server recognises a registrar by
		// id-kp-cmcRA in its TLS client certificate, and a device using its implicit TA
		// database SHOULD check for it in the server certificate: one identity carries both.
		d.Registrar, d.RegistrarKey, err = b.ensure(p.Registrar, p.RegistrarKey, b.renewable(d.IssuingCA, func(c *x509.Certificate) bool {
			for _, n := range names {
				if !slices.Contains(c.DNSNames, n) {
					return false
				}
			}
			return true
		}), func(key crypto.Signer) (*x509.Certificate, error) {
			return b.sign(&x509.Certificate{
				Subject:   pkix.Name{CommonName: "coapca registrar " + names[0], Organization: []string{"coapca"}},
				NotBefore: b.now.Add(-time.Hour), NotAfter: b.now.AddDate(1, 0, 0),
				KeyUsage:           x509.KeyUsageDigitalSignature,
				ExtKeyUsage:        []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
				UnknownExtKeyUsage: []asn1.ObjectIdentifier{oidKPCmcRA},
				DNSNames:           names, IPAddresses: ips, BasicConstraintsValid: true,
			}, d.IssuingCA, d.IssuingKey, key)
		})
		if err != nil {
			return nil, err
		}
	}

	if opts.NoDemo {
		d.CMPSecretRef = ""
		for _, c := range d.Created {
			log.Debug("data directory: created", "file", c)
		}
		return d, nil
	}
	// Demo manufacturer: a CA and one IDevID as a factory would make them (IEEE 802.1AR:
	// serialNumber in the subject, no expiry).
	d.ManufacturerCA, d.ManufacturerKey, err = b.ensure(p.ManufacturerCA, p.ManufacturerKey, nil, func(key crypto.Signer) (*x509.Certificate, error) {
		return b.sign(&x509.Certificate{
			Subject:   pkix.Name{CommonName: "coapca Demo Manufacturer CA", Organization: []string{"Demo Manufacturer"}},
			NotBefore: b.now.Add(-time.Hour), NotAfter: noExpiry,
			IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		}, nil, nil, key)
	})
	if err != nil {
		return nil, err
	}
	d.Device, d.DeviceKey, err = b.ensure(p.Device, p.DeviceKey, b.mustChain(d.ManufacturerCA, p.ManufacturerCA), func(key crypto.Signer) (*x509.Certificate, error) {
		return b.sign(&x509.Certificate{
			Subject: pkix.Name{CommonName: "demo-device-" + DeviceSerialNumber, SerialNumber: DeviceSerialNumber,
				Organization: []string{"Demo Manufacturer"}},
			NotBefore: b.now.Add(-time.Hour), NotAfter: noExpiry,
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}, d.ManufacturerCA, d.ManufacturerKey, key)
	})
	if err != nil {
		return nil, err
	}

	if d.CMPSecret, err = b.secret(p.CMPSecret); err != nil {
		return nil, err
	}
	for _, c := range d.Created {
		log.Debug("data directory: created", "file", c)
	}
	return d, nil
}

var (
	oidKPCmcCA = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 27}
	oidKPCmcRA = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 28}
)

// serverNames returns the server certificate's DNS names (host name first, for the CN) and IPs.
func serverNames(extra []string) ([]string, []net.IP) {
	var names []string
	if h, err := os.Hostname(); err == nil && h != "" && h != "localhost" {
		names = append(names, strings.ToLower(h))
	}
	names = append(names, "localhost")
	ips := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}
	for _, n := range extra {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		if ip := net.ParseIP(n); ip != nil {
			if !slices.ContainsFunc(ips, ip.Equal) {
				ips = append(ips, ip)
			}
		} else if n = strings.ToLower(n); !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	return names, ips
}

// mustChain accepts an existing certificate only if parent signed it; anything else means the
// directory was tampered with, and is an error rather than a silent re-issue.
func (b *builder) mustChain(parent *x509.Certificate, parentPath string) func(*x509.Certificate) (bool, error) {
	return func(c *x509.Certificate) (bool, error) {
		if err := c.CheckSignatureFrom(parent); err != nil {
			return false, fmt.Errorf("datadir: certificate is not signed by %s: %w", parentPath, err)
		}
		return true, nil
	}
}

// renewable accepts an existing certificate while parent signed it, it is valid for another
// 30 days and ok (when set) accepts it; otherwise it is re-issued.
func (b *builder) renewable(parent *x509.Certificate, ok func(*x509.Certificate) bool) func(*x509.Certificate) (bool, error) {
	return func(c *x509.Certificate) (bool, error) {
		if c.CheckSignatureFrom(parent) != nil || b.now.Add(renewBefore).After(c.NotAfter) {
			return false, nil
		}
		return ok == nil || ok(c), nil
	}
}

// restrictSecrets keeps the keys and the demo MAC secret to the CA's user also when an older
// version, a restore or a copy left them wider: the directories that hold them become 0700
// (at most), every file in the private directories and the demo device key and secret 0600
// (at most). Each change is logged; a mode that cannot be narrowed stops Open.
func restrictSecrets(p Paths, log *slog.Logger) error {
	for _, d := range []string{p.Private, p.Demo, p.DemoPrivate} {
		if err := narrowMode(d, 0o700, log); err != nil {
			return err
		}
	}
	files := []string{p.DeviceKey, p.CMPSecret}
	for _, d := range []string{p.Private, p.DemoPrivate} {
		entries, err := os.ReadDir(d)
		if errors.Is(err, os.ErrNotExist) {
			continue // no demo directory (Options.NoDemo)
		}
		if err != nil {
			return fmt.Errorf("datadir: %w", err)
		}
		for _, e := range entries {
			if e.Type().IsRegular() {
				files = append(files, filepath.Join(d, e.Name()))
			}
		}
	}
	for _, f := range files {
		if err := narrowMode(f, 0o600, log); err != nil {
			return err
		}
	}
	return nil
}

// narrowMode removes from path's permissions whatever limit does not allow; a missing path is
// left alone.
func narrowMode(path string, limit os.FileMode, log *slog.Logger) error {
	st, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("datadir: %w", err)
	}
	perm := st.Mode().Perm()
	if perm&^limit == 0 {
		return nil
	}
	if err := os.Chmod(path, perm&limit); err != nil {
		return fmt.Errorf("datadir: %s has mode %04o and cannot be restricted to %04o: %w", path, perm, perm&limit, err)
	}
	log.Warn("data directory: secret was accessible to other users; mode restricted", "path", path,
		"old_mode", fmt.Sprintf("%04o", perm), "new_mode", fmt.Sprintf("%04o", perm&limit))
	return nil
}

// ensure loads certPath and keyPath, or — when either is missing or check rejects the
// certificate — makes a new key and certificate and writes both (key first; the certificate
// file is the "done" marker).
func (b *builder) ensure(certPath, keyPath string, check func(*x509.Certificate) (bool, error),
	create func(crypto.Signer) (*x509.Certificate, error)) (*x509.Certificate, crypto.Signer, error) {
	cert, key, err := b.load(certPath, keyPath)
	switch {
	case err == nil:
		ok := true
		if check != nil {
			if ok, err = check(cert); err != nil {
				return nil, nil, fmt.Errorf("%s: %w", certPath, err)
			}
		}
		if ok {
			return cert, key, nil
		}
		b.log.Info("data directory: re-issuing certificate", "file", certPath)
	case !errors.Is(err, os.ErrNotExist):
		return nil, nil, err
	}
	if key == nil {
		if key, err = kms.GenerateP256(); err != nil {
			return nil, nil, fmt.Errorf("datadir: %w", err)
		}
		out := keyPath
		if o := b.keyOut[keyPath]; o != "" {
			out = o
			// Never overwrite a key file: it may be an older root's only copy.
			if fileExists(out) {
				return nil, nil, fmt.Errorf("datadir: %s exists; not overwritten", out)
			}
		}
		if err := b.writeKey(out, key); err != nil {
			return nil, nil, fmt.Errorf("datadir: %w", err)
		}
		b.d.Created = append(b.d.Created, out)
	}
	if cert, err = create(key); err != nil {
		return nil, nil, fmt.Errorf("datadir: %s: %w", certPath, err)
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
	if certPath == b.d.Paths.Server || certPath == b.d.Paths.Registrar {
		// Serve the chain up to (not including) the root.
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: b.d.IssuingCA.Raw})...)
	}
	if err := kms.WriteFileAtomic(certPath, out, 0o644); err != nil {
		return nil, nil, fmt.Errorf("datadir: %w", err)
	}
	b.d.Created = append(b.d.Created, certPath)
	return cert, key, nil
}

// writeKey writes a new key: encrypted under the passphrase when there is one and the key
// belongs to the CA (DIR/private, or the offline root key file); the demo device's key stays
// plaintext, as a device would hold it.
func (b *builder) writeKey(path string, key crypto.Signer) error {
	if len(b.pass) > 0 && (filepath.Dir(path) == b.d.Paths.Private || path == b.keyOut[b.d.Paths.RootKey]) {
		return kms.WriteEncryptedKeyFile(path, key, b.pass, b.iter)
	}
	return kms.WriteKeyFile(path, key)
}

// ensureExternal is ensure for a key held outside the directory (a token): it loads
// certPath and checks that it certifies key, or — when missing — certifies key with create.
func (b *builder) ensureExternal(certPath string, key crypto.Signer, check func(*x509.Certificate) (bool, error),
	create func(crypto.Signer) (*x509.Certificate, error)) (*x509.Certificate, error) {
	cert, err := loadCert(certPath)
	switch {
	case err == nil:
		if k, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(key.Public()) {
			return nil, fmt.Errorf("datadir: %s does not certify the configured issuing key (ca.issuing_key)", certPath)
		}
		if _, err := check(cert); err != nil {
			return nil, fmt.Errorf("%s: %w", certPath, err)
		}
		return cert, nil
	case !errors.Is(err, os.ErrNotExist):
		return nil, err
	}
	if cert, err = create(key); err != nil {
		return nil, fmt.Errorf("datadir: %s: %w", certPath, err)
	}
	if err := kms.WriteFileAtomic(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o644); err != nil {
		return nil, fmt.Errorf("datadir: %w", err)
	}
	b.d.Created = append(b.d.Created, certPath)
	return cert, nil
}

// loadCert reads one PEM certificate; a missing file is an os.ErrNotExist error.
func loadCert(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("datadir: %w", err)
	}
	blk, _ := pem.Decode(data)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("datadir: %s: no PEM certificate", path)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("datadir: %s: %w", path, err)
	}
	return cert, nil
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// load reads a certificate and its key. A missing certificate with an existing key returns
// the key (to be certified again) and an os.ErrNotExist error.
func (b *builder) load(certPath, keyPath string) (*x509.Certificate, crypto.Signer, error) {
	key, kerr := kms.LoadKeyFileWithPassphrase(keyPath, b.pass)
	if kerr != nil && !errors.Is(kerr, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("datadir: %w", kerr)
	}
	data, err := os.ReadFile(certPath)
	if err != nil {
		if kerr != nil {
			key = nil
		}
		return nil, key, fmt.Errorf("datadir: %w", err)
	}
	if kerr != nil {
		return nil, nil, fmt.Errorf("datadir: %s exists but its key is missing: %v", certPath, kerr)
	}
	blk, _ := pem.Decode(data)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("datadir: %s: no PEM certificate", certPath)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("datadir: %s: %w", certPath, err)
	}
	if k, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(key.Public()) {
		return nil, nil, fmt.Errorf("datadir: %s does not match the key %s", certPath, keyPath)
	}
	return cert, key, nil
}

// sign issues tmpl for key, signed by parent/parentKey (self-signed when parent is nil).
func (b *builder) sign(tmpl *x509.Certificate, parent *x509.Certificate, parentKey crypto.Signer, key crypto.Signer) (*x509.Certificate, error) {
	sn, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = sn.Add(sn, big.NewInt(1))
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, err
	}
	ski := sha256.Sum256(spki)
	tmpl.SubjectKeyId = ski[:20] // RFC 7093 §2 method 4
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// secret loads or creates the demo CMP MAC secret: 24 random hex characters, usable as
// `openssl cmp -secret pass:...`.
func (b *builder) secret(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err == nil {
		s := bytes.TrimRight(data, "\r\n")
		if len(s) == 0 {
			return nil, fmt.Errorf("datadir: %s is empty", path)
		}
		return s, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("datadir: %w", err)
	}
	var r [12]byte
	if _, err := rand.Read(r[:]); err != nil {
		return nil, fmt.Errorf("datadir: %w", err)
	}
	s := []byte(hex.EncodeToString(r[:]))
	if err := kms.WriteFileAtomic(path, append(s, '\n'), 0o600); err != nil {
		return nil, fmt.Errorf("datadir: %w", err)
	}
	b.d.Created = append(b.d.Created, path)
	return s, nil
}

// IssuingChain is the authority's chain: issuing CA, then root.
func (d *Data) IssuingChain() []*x509.Certificate {
	return []*x509.Certificate{d.IssuingCA, d.Root}
}

// IssuingKeyURI is the kms key URI of the issuing CA key.
func (d *Data) IssuingKeyURI() string { return "file:" + d.Paths.IssuingKey }

// ServerCertificate is the server's DTLS/TLS certificate with the issuing CA.
func (d *Data) ServerCertificate() tls.Certificate {
	return tls.Certificate{
		Certificate: [][]byte{d.Server.Raw, d.IssuingCA.Raw},
		PrivateKey:  d.ServerKey,
		Leaf:        d.Server,
	}
}

// RegistrarCertificate is the registrar's identity with the issuing CA (Options.Registrar).
func (d *Data) RegistrarCertificate() tls.Certificate {
	return tls.Certificate{
		Certificate: [][]byte{d.Registrar.Raw, d.IssuingCA.Raw},
		PrivateKey:  d.RegistrarKey,
		Leaf:        d.Registrar,
	}
}

// DeviceCertificate is the demo device's identity as a TLS client certificate.
func (d *Data) DeviceCertificate() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{d.Device.Raw}, PrivateKey: d.DeviceKey, Leaf: d.Device}
}

// CMPSignerChain is the CMP signer certificate with its chain (signer, issuing CA, root),
// as CMP puts it in extraCerts (RFC 9483 §3.3).
func (d *Data) CMPSignerChain() []*x509.Certificate {
	return []*x509.Certificate{d.CMPSigner, d.IssuingCA, d.Root}
}
