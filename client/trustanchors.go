package client

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"

	"coapca/internal/pemfile"
	"coapca/kms"
)

// The Explicit Trust Anchor database of RFC 7030 §4.1.3 / RFC 9148 §9.1: after the client has
// authenticated the server with its implicit trust anchors (e.g. --trust), it stores the CA
// certificates from /crts and uses them — and only them — to authenticate the server on later
// connections. These helpers keep that database as a PEM file.

// ReadTrustAnchors reads every certificate of a PEM file. A missing file is (nil, nil): no
// explicit trust anchors yet.
func ReadTrustAnchors(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("trust anchors: %w", err)
	}
	certs, err := pemfile.ParseCerts(data)
	if err != nil {
		return nil, fmt.Errorf("trust anchors %s: %w", path, err)
	}
	return certs, nil
}

// WriteTrustAnchors replaces the file with certs as PEM, atomically (temporary file, fsync,
// rename), so that a crash never leaves a client without trust anchors.
func WriteTrustAnchors(path string, certs []*x509.Certificate) error {
	if len(certs) == 0 {
		return errors.New("trust anchors: refusing to write an empty set")
	}
	var buf bytes.Buffer
	for _, c := range certs {
		if err := pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}); err != nil {
			return err
		}
	}
	// Atomically for a regular file; a symbolic link is followed, never replaced
	// (kms.WriteFileAtomic).
	if err := kms.WriteFileAtomic(path, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("trust anchors: %w", err)
	}
	return nil
}

// Pool returns a cert pool holding certs.
func Pool(certs []*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

// SelectTrustAnchors picks from a /crts answer what may enter the explicit TA database
// (RFC 7030 §4.1.3): the most recent self-signed CA certificate is the trust anchor, and the
// other CA certificates are kept only when they pass RFC 5280 path validation to it ("using the
// most recent CA certificate as the TA") — e.g. the issuing CA, or OldWithNew during a root key
// rollover. Everything else (a second, unrelated root, an end-entity certificate) is returned
// in dropped and never stored.
func SelectTrustAnchors(caCerts []*x509.Certificate, now time.Time) (keep, dropped []*x509.Certificate, err error) {
	var ta *x509.Certificate
	for _, c := range caCerts {
		if c.IsCA && c.BasicConstraintsValid && isSelfSigned(c) && (ta == nil || c.NotAfter.After(ta.NotAfter)) {
			ta = c
		}
	}
	if ta == nil {
		return nil, nil, errors.New("trust anchors: /crts returned no self-signed CA certificate (RFC 7030 §4.1.3: the current root CA is required)")
	}
	keep = []*x509.Certificate{ta}
	for _, c := range caCerts {
		if c == ta || c.Equal(ta) {
			continue
		}
		if c.IsCA && c.BasicConstraintsValid {
			if _, err := verifyChain(c, caCerts, []*x509.Certificate{ta}, now); err == nil {
				keep = append(keep, c)
				continue
			}
		}
		dropped = append(dropped, c)
	}
	return keep, dropped, nil
}

// UpdateTrustAnchors is the /crts step of RFC 7030 §4.1.3 / RFC 9148 §9.1. The caller must
// have authenticated the server of this connection (VerifyServer with its implicit or current
// explicit trust anchors, for serverName) and passes the chain it accepted: a /crts answer from
// an unauthenticated server (provisional trust, RFC 7030 §4.1.1) needs an out-of-band check
// instead and must not come here. The database gets the trust anchor chosen by
// SelectTrustAnchors and the CA certificates that validate to it, and only if the server's
// chain, revalidated against exactly that set, still authenticates the server (RFC 9148 §9.1);
// otherwise the file is left unchanged and an error returned. It returns what was written and
// what was dropped.
func UpdateTrustAnchors(path string, caCerts, serverChain []*x509.Certificate, serverName string, now time.Time) (written, dropped []*x509.Certificate, err error) {
	if len(caCerts) == 0 {
		return nil, nil, errors.New("trust anchors: /crts returned no certificate")
	}
	keep, dropped, err := SelectTrustAnchors(caCerts, now)
	if err != nil {
		return nil, nil, err
	}
	if err := VerifyServer(serverChain, keep, serverName, now); err != nil {
		return nil, nil, fmt.Errorf("trust anchors: the CA certificates from /crts do not authenticate this server: %w", err)
	}
	if err := WriteTrustAnchors(path, keep); err != nil {
		return nil, nil, err
	}
	return keep, dropped, nil
}
