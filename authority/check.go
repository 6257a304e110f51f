package authority

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"time"

	"coapca/store"
)

// CheckPolicy checks pol exactly as New does — every profile, rule, name and reference —
// without a store or a CA, so that a configuration is validated before its data directory
// exists. New neither reads nor writes the store, so a store that is never called suffices.
func CheckPolicy(pol Policy) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("authority: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "policy check"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("authority: %w", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("authority: %w", err)
	}
	_, err = New(pol, Options{Store: uncalledStore{}, Signer: key, Chain: []*x509.Certificate{ca}})
	return err
}

// uncalledStore satisfies store.Store for CheckPolicy; New calls none of its methods.
type uncalledStore struct{ store.Store }
