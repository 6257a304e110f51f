// Package kms turns key URIs into crypto.Signers, so the authority signs the same way with a
// key file and with a hardware or software token.
//
// Supported URIs:
//
//	file:/abs/path/key.pem    PEM private key: PKCS#8 ("PRIVATE KEY"), SEC 1 ("EC PRIVATE KEY"),
//	file:relative/key.pem     PKCS#1 ("RSA PRIVATE KEY") or encrypted PKCS#8 ("ENCRYPTED
//	/abs/path/key.pem         PRIVATE KEY", RFC 5958 §3 with PBES2, RFC 8018 §6.2); a bare path
//	                          is a file URI
//	pkcs11:token=...;object=...?module-path=...   RFC 7512 (kms/pkcs11); only in binaries
//	                          built with -tags pkcs11
//
// The package also generates and writes keys (P-256, the key type of the CA, the server and
// the demo identities).
package kms

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// ErrNotBuilt is returned for a key URI scheme this binary was built without.
var ErrNotBuilt = errors.New("kms: key URI scheme not built into this binary")

// Open returns the signer that uri names.
func Open(ctx context.Context, uri string) (crypto.Signer, error) {
	return OpenWithPassphrase(ctx, uri, nil)
}

// OpenWithPassphrase is Open for key files that may be encrypted (PKCS#8 PBES2) under
// passphrase; a PKCS#11 URI carries its own PIN and ignores it.
func OpenWithPassphrase(ctx context.Context, uri string, passphrase []byte) (crypto.Signer, error) {
	scheme, rest, ok := strings.Cut(uri, ":")
	if !ok || strings.ContainsAny(scheme, "/\\.") || len(scheme) < 2 { // bare path (also C:\ on Windows)
		return LoadKeyFileWithPassphrase(uri, passphrase)
	}
	switch strings.ToLower(scheme) {
	case "file":
		// file:///abs, file:/abs and file:rel are all accepted.
		path := strings.TrimPrefix(rest, "//")
		if path == "" {
			return nil, fmt.Errorf("kms: %q names no file", uri)
		}
		return LoadKeyFileWithPassphrase(path, passphrase)
	case "pkcs11":
		return openPKCS11(ctx, uri)
	default:
		return nil, fmt.Errorf("kms: unknown key URI scheme %q in %q (want file: or pkcs11:)", scheme, uri)
	}
}

// LoadKeyFile reads a PEM private key file.
func LoadKeyFile(path string) (crypto.Signer, error) {
	return LoadKeyFileWithPassphrase(path, nil)
}

// LoadKeyFileWithPassphrase reads a PEM private key file that may be encrypted under
// passphrase ("ENCRYPTED PRIVATE KEY", PKCS#8 PBES2).
func LoadKeyFileWithPassphrase(path string, passphrase []byte) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("kms: %w", err)
	}
	k, err := ParsePrivateKeyPEMWithPassphrase(data, passphrase)
	if err != nil {
		return nil, fmt.Errorf("kms: %s: %w", path, err)
	}
	return k, nil
}

// ParsePrivateKeyPEM parses the first private key block of data (PKCS#8, SEC 1 or PKCS#1).
func ParsePrivateKeyPEM(data []byte) (crypto.Signer, error) {
	return ParsePrivateKeyPEMWithPassphrase(data, nil)
}

// ParsePrivateKeyPEMWithPassphrase is ParsePrivateKeyPEM that also reads an encrypted
// PKCS#8 key (PBES2) with passphrase. An encrypted key without a passphrase, or with a wrong
// one, is ErrPassphrase.
func ParsePrivateKeyPEMWithPassphrase(data, passphrase []byte) (crypto.Signer, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errors.New("no PEM private key found")
		}
		switch b.Type {
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("PKCS#8 key: %w", err)
			}
			s, ok := k.(crypto.Signer)
			if !ok {
				return nil, fmt.Errorf("PKCS#8 key of type %T cannot sign", k)
			}
			return s, nil
		case "EC PRIVATE KEY":
			k, err := x509.ParseECPrivateKey(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("EC key: %w", err)
			}
			return k, nil
		case "RSA PRIVATE KEY":
			k, err := x509.ParsePKCS1PrivateKey(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("RSA key: %w", err)
			}
			return k, nil
		case "ENCRYPTED PRIVATE KEY":
			if len(passphrase) == 0 {
				return nil, fmt.Errorf("%w (the key is encrypted; give its passphrase)", ErrPassphrase)
			}
			der, err := decryptPKCS8(b.Bytes, passphrase)
			if err != nil {
				return nil, err
			}
			k, err := x509.ParsePKCS8PrivateKey(der)
			if err != nil {
				// Padding that happened to check out under a wrong passphrase.
				return nil, ErrPassphrase
			}
			s, ok := k.(crypto.Signer)
			if !ok {
				return nil, fmt.Errorf("PKCS#8 key of type %T cannot sign", k)
			}
			return s, nil
		}
	}
}

// GenerateKey makes a new key of type keyType from crypto/rand: "P-256" (also "" and "EC"),
// "P-384", "P-521", "Ed25519", "RSA-2048", "RSA-3072", "RSA-4096".
func GenerateKey(keyType string) (crypto.Signer, error) {
	return GenerateKeyFrom(rand.Reader, keyType)
}

// GenerateKeyFrom is GenerateKey with the randomness taken from rnd (a test's source; the
// standard library may ignore it and use its own generator, see crypto/rand).
func GenerateKeyFrom(rnd io.Reader, keyType string) (crypto.Signer, error) {
	switch strings.ToUpper(keyType) {
	case "", "P-256", "EC", "ECDSA", "PRIME256V1", "SECP256R1":
		return ecdsa.GenerateKey(elliptic.P256(), rnd)
	case "P-384", "SECP384R1":
		return ecdsa.GenerateKey(elliptic.P384(), rnd)
	case "P-521", "SECP521R1":
		return ecdsa.GenerateKey(elliptic.P521(), rnd)
	case "ED25519":
		_, k, err := ed25519.GenerateKey(rnd)
		return k, err
	case "RSA-2048", "RSA":
		return rsa.GenerateKey(rnd, 2048)
	case "RSA-3072":
		return rsa.GenerateKey(rnd, 3072)
	case "RSA-4096":
		return rsa.GenerateKey(rnd, 4096)
	}
	return nil, fmt.Errorf("kms: unknown key type %q", keyType)
}

// GenerateP256 makes a new ECDSA P-256 key.
func GenerateP256() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// KeyType names the type of a public key the way GenerateKey spells it ("P-256", "Ed25519",
// "RSA-2048", ...); "" for a type it does not know.
func KeyType(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return k.Curve.Params().Name
	case ed25519.PublicKey:
		return "Ed25519"
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA-%d", k.N.BitLen())
	}
	return ""
}

// MarshalPrivateKeyPEM encodes key as a PKCS#8 PEM block.
func MarshalPrivateKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("kms: marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// WriteKeyFile writes key as PKCS#8 PEM to path with mode 0600, atomically (a temporary file
// in the same directory, fsync'd and renamed), creating the directory with mode 0700.
func WriteKeyFile(path string, key crypto.Signer) error {
	data, err := MarshalPrivateKeyPEM(key)
	if err != nil {
		return err
	}
	return WriteFileAtomic(path, data, 0o600)
}

// WriteEncryptedKeyFile writes key as an encrypted PKCS#8 PEM (PBES2, AES-256-CBC) under
// passphrase to path with mode 0600, atomically; an empty passphrase writes it unencrypted.
// iterations is the PBKDF2 work (0 = DefaultPBKDF2Iterations).
func WriteEncryptedKeyFile(path string, key crypto.Signer, passphrase []byte, iterations int) error {
	if len(passphrase) == 0 {
		return WriteKeyFile(path, key)
	}
	data, err := MarshalEncryptedPrivateKeyPEM(key, passphrase, iterations)
	if err != nil {
		return err
	}
	return WriteFileAtomic(path, data, 0o600)
}

// WriteFileAtomic writes data to path so that readers see either the old or the new
// content, never a part of it.
//
// Only regular files are replaced. A symbolic link is followed (its target is written, the link
// stays) and one that leads nowhere is refused, never replaced; a device or FIFO (e.g. --out
// /dev/null) is written through, never replaced — renaming over /dev/null as root would turn it
// into a regular file and break every other program that writes to it; a directory is an error.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSymlink != 0 {
		target, err := filepath.EvalSymlinks(path)
		if err != nil {
			// A dangling link (or a loop): renaming over it would replace the link itself.
			return fmt.Errorf("kms: %s is a symbolic link that cannot be followed (refusing to replace it): %w", path, err)
		}
		path = target
	}
	if fi, err := os.Stat(path); err == nil && !fi.Mode().IsRegular() {
		if fi.IsDir() {
			return fmt.Errorf("kms: %s is a directory", path)
		}
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return fmt.Errorf("kms: %w", err)
		}
		if _, err := f.Write(data); err != nil {
			f.Close()
			return fmt.Errorf("kms: write %s: %w", path, err)
		}
		return f.Close()
	}
	dir := filepath.Dir(path)
	dirMode := os.FileMode(0o755)
	if mode&0o077 == 0 {
		dirMode = 0o700
	}
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return fmt.Errorf("kms: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("kms: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("kms: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("kms: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("kms: sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("kms: close %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("kms: %w", err)
	}
	return nil
}
