package client

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"coapca/authority"
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
	certs, err := authority.ParseCertsPEM(data)
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
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("trust anchors: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(buf.Bytes()); err != nil {
		tmp.Close()
		return fmt.Errorf("trust anchors: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("trust anchors: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("trust anchors: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
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

// VerifyServerChain checks the server's DTLS chain (leaf first) against anchors. RFC 9148 §9.1:
// a client that fetched /crts on a connection SHOULD revalidate the server's chain against the
// updated Explicit TA before continuing on that connection, and MUST use it for new ones.
// The CA certificates among anchors that are not self-signed serve as intermediates.
func VerifyServerChain(chain []*x509.Certificate, anchors []*x509.Certificate, now time.Time) error {
	if len(chain) == 0 {
		return errors.New("trust anchors: the server presented no certificate")
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, a := range anchors {
		if bytes.Equal(a.RawIssuer, a.RawSubject) && a.CheckSignatureFrom(a) == nil {
			roots.AddCert(a)
		} else {
			inter.AddCert(a)
		}
	}
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return fmt.Errorf("trust anchors: the server's certificate does not chain to the explicit trust anchors: %w", err)
	}
	return nil
}

// UpdateTrustAnchors is the /crts step of RFC 7030 §4.1.3: the CA certificates just fetched
// over a connection authenticated with the current trust anchors become the explicit trust
// anchors, after checking that the server's chain validates against them (otherwise the
// database is left unchanged and an error returned).
func UpdateTrustAnchors(path string, caCerts, serverChain []*x509.Certificate) error {
	if len(caCerts) == 0 {
		return errors.New("trust anchors: /crts returned no certificate")
	}
	if err := VerifyServerChain(serverChain, caCerts, time.Now()); err != nil {
		return err
	}
	return WriteTrustAnchors(path, caCerts)
}
