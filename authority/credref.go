package authority

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"fmt"

	"coapca/errs"
	"coapca/store"
)

// CredentialRef designates an X.509 certificate by reference, as an EDHOC Initiator may in
// ID_CRED_I instead of sending the certificate (RFC 9528 §3.5.3). Exactly one field is set.
type CredentialRef struct {
	// SHA256Prefix is an x5t (RFC 9360 §2): the SHA-256 of the certificate's DER, or its first
	// 8 bytes (SHA-256/64). Shorter prefixes are refused.
	SHA256Prefix []byte
	// KeyID is a kid: the certificate's Subject Key Identifier.
	KeyID []byte
}

// maxKeyIDMatches bounds how many of this CA's certificates with one kid are read: the
// newest ones, which are the ones still valid.
const maxKeyIDMatches = 16

// FindCredential returns the chain (raw DER, leaf first) of the one certificate that ref
// designates among the certificates this CA issued (with this CA's chain after it) and the
// certificates configured in the trust stores (alone: the store holds it as a trust anchor, a
// device's pinned certificate). It decides nothing about the certificate: the caller passes
// what it gets to VerifyClient like a chain sent by value, which refuses a revoked, expired or
// untrusted one. A reference that designates several different certificates is refused
// rather than resolved to one of them (errs.Unauthorized), as is one that designates none.
//
// For a kid, this CA's revoked certificates and those outside their validity are left out
// first. Our kid is the hash of the key (RFC 7093 §2 method 4): several valid certificates
// of ours with one kid certify one key (a device that re-enrolled and kept its key), and the
// newest stands for them (the Initiator's MAC_3 covers its CRED_I, so the handshake succeeds
// only if that is the one the device holds). A kid on certificates of different keys, or on
// ours and a trust store's, is ambiguous.
func (a *Authority) FindCredential(ctx context.Context, ref CredentialRef) ([][]byte, error) {
	var (
		f     store.CertFilter
		match func(c *x509.Certificate) bool
	)
	switch {
	case len(ref.SHA256Prefix) > 0 && len(ref.KeyID) == 0:
		// RFC 9360 §2 hashes: SHA-256/64 (8 bytes) is the shortest that coapca accepts.
		if len(ref.SHA256Prefix) < 8 || len(ref.SHA256Prefix) > sha256.Size {
			return nil, errs.New(errs.Unauthorized, "x5t hash of %d bytes: want 8 to %d", len(ref.SHA256Prefix), sha256.Size)
		}
		f = store.CertFilter{CertSHA256Prefix: ref.SHA256Prefix, Limit: 2}
		match = func(c *x509.Certificate) bool {
			sum := sha256.Sum256(c.Raw)
			return bytes.HasPrefix(sum[:], ref.SHA256Prefix)
		}
	case len(ref.KeyID) > 0 && len(ref.SHA256Prefix) == 0:
		f = store.CertFilter{KeyID: ref.KeyID, Revocation: store.NotRevoked, Limit: maxKeyIDMatches}
		match = func(c *x509.Certificate) bool { return bytes.Equal(c.SubjectKeyId, ref.KeyID) }
	default:
		return nil, errs.New(errs.BadRequest, "a credential reference is an x5t or a kid")
	}

	var found [][]byte // distinct leaf DERs
	add := func(der []byte) {
		for _, d := range found {
			if bytes.Equal(d, der) {
				return
			}
		}
		found = append(found, der)
	}
	recs, err := a.store.ListCerts(ctx, f)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "cannot look up the credential reference")
	}
	now := a.now()
	var spki []byte // for a kid: the key of the newest of our certificates
	for _, rec := range recs {
		if len(ref.KeyID) == 0 {
			add(rec.DER)
			continue
		}
		if now.Before(rec.NotBefore) || now.After(rec.NotAfter) {
			continue
		}
		c, err := x509.ParseCertificate(rec.DER)
		if err != nil {
			continue
		}
		switch {
		case spki == nil:
			spki = c.RawSubjectPublicKeyInfo
			add(rec.DER)
		case !bytes.Equal(spki, c.RawSubjectPublicKeyInfo):
			// Two of our certificates, two keys, one kid: no guess.
			add(rec.DER)
		}
		// Another certificate of the same key (a re-enrollment that kept it): the newest
		// stands for them. If the device holds an older one, the handshake fails at MAC_3,
		// which covers CRED_I (RFC 9528 §5.4.2): it cannot be taken for another certificate.
	}
	ours := len(found)
	for _, ts := range a.trust {
		for _, c := range ts.certs {
			if match(c) {
				add(c.Raw)
			}
		}
	}
	switch {
	case len(found) == 0:
		return nil, errs.New(errs.Unauthorized, "no certificate known for this credential reference")
	case len(found) > 1:
		return nil, errs.New(errs.Unauthorized, "the credential reference designates %d certificates", len(found))
	}
	chain := [][]byte{found[0]}
	if ours == 1 {
		for _, c := range a.chain[:len(a.chain)-1] {
			chain = append(chain, c.Raw)
		}
	}
	return chain, nil
}

// String names a reference in logs.
func (r CredentialRef) String() string {
	if len(r.KeyID) > 0 {
		return fmt.Sprintf("kid %x", r.KeyID)
	}
	return fmt.Sprintf("x5t %x", r.SHA256Prefix)
}
