package authority

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// This file writes the certificates this CA issues when its key is an in-process P-256 key,
// the default: the TBSCertificate of RFC 5280 §4.1, byte for byte what x509.CreateCertificate
// writes for the same template (tests compare the two), encoded directly instead of through
// encoding/asn1's reflection, and signed once.
//
// x509.CreateCertificate verifies every signature it gets from its signer ("to ensure the
// crypto.Signer behaved correctly": a broken HSM or remote signer must not yield a certificate
// nobody can verify). That costs one ECDSA verification — two scalar multiplications, about
// twice a signature — on every issuance. An in-process *ecdsa.PrivateKey is Go's own ECDSA, the
// implementation every verification trusts; this path signs with it and skips that second
// check, as OpenSSL-based CAs do. Every other signer (PKCS#11 tokens, any other
// crypto.Signer, other curves and key types) and every template field this encoder does not
// write goes through x509.CreateCertificate and keeps the check.

var (
	oidSignatureECDSAWithSHA256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidExtKeyUsage              = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidExtExtendedKeyUsage      = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidExtBasicConstraints      = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidExtSubjectKeyID          = asn1.ObjectIdentifier{2, 5, 29, 14}
	oidExtAuthorityKeyID        = asn1.ObjectIdentifier{2, 5, 29, 35}
	oidExtSubjectAltName        = asn1.ObjectIdentifier{2, 5, 29, 17}
)

// ExtKeyUsageOID returns the OID of an extendedKeyUsage purpose a profile can name (RFC 5280
// §4.2.1.12), or false for another one.
func ExtKeyUsageOID(u x509.ExtKeyUsage) (asn1.ObjectIdentifier, bool) {
	o, ok := extKeyUsageOIDs[u]
	return o, ok
}

// extKeyUsageOIDs are the extendedKeyUsage purposes profiles can name (RFC 5280 §4.2.1.12).
var extKeyUsageOIDs = map[x509.ExtKeyUsage]asn1.ObjectIdentifier{
	x509.ExtKeyUsageAny:             {2, 5, 29, 37, 0},
	x509.ExtKeyUsageServerAuth:      {1, 3, 6, 1, 5, 5, 7, 3, 1},
	x509.ExtKeyUsageClientAuth:      {1, 3, 6, 1, 5, 5, 7, 3, 2},
	x509.ExtKeyUsageCodeSigning:     {1, 3, 6, 1, 5, 5, 7, 3, 3},
	x509.ExtKeyUsageEmailProtection: {1, 3, 6, 1, 5, 5, 7, 3, 4},
	x509.ExtKeyUsageTimeStamping:    {1, 3, 6, 1, 5, 5, 7, 3, 8},
	x509.ExtKeyUsageOCSPSigning:     {1, 3, 6, 1, 5, 5, 7, 3, 9},
}

// createCertificate signs tmpl for pub under this CA: x509.CreateCertificate(rand.Reader,
// tmpl, a.issuer, pub, a.signer), by encodeTBS and signTBS where they apply.
func (a *Authority) createCertificate(tmpl *x509.Certificate, pub crypto.PublicKey) ([]byte, error) {
	if k, ok := a.signer.(*ecdsa.PrivateKey); ok && k.Curve == elliptic.P256() {
		if tbs, ok, err := encodeTBS(tmpl, a.issuer, pub); err != nil {
			return nil, err
		} else if ok {
			return signTBS(k, tbs)
		}
	}
	return x509.CreateCertificate(rand.Reader, tmpl, a.issuer, pub, a.signer)
}

// encodable reports whether encodeTBS writes every field tmpl sets: the fields template
// fills in. Anything else is left to x509.CreateCertificate.
func encodable(tmpl, parent *x509.Certificate) bool {
	return tmpl.SerialNumber != nil && tmpl.SerialNumber.Sign() > 0 &&
		len(tmpl.RawSubject) > 0 && !bytes.Equal(tmpl.RawSubject, parent.RawSubject) &&
		len(parent.RawSubject) > 0 &&
		tmpl.SignatureAlgorithm == x509.UnknownSignatureAlgorithm &&
		!tmpl.IsCA && tmpl.MaxPathLen == 0 && !tmpl.MaxPathLenZero &&
		tmpl.AuthorityKeyId == nil && tmpl.UnknownExtKeyUsage == nil && tmpl.ExtraExtensions == nil &&
		tmpl.OCSPServer == nil && tmpl.IssuingCertificateURL == nil && tmpl.CRLDistributionPoints == nil &&
		tmpl.PolicyIdentifiers == nil && tmpl.Policies == nil &&
		!tmpl.PermittedDNSDomainsCritical && tmpl.PermittedDNSDomains == nil && tmpl.ExcludedDNSDomains == nil &&
		tmpl.PermittedIPRanges == nil && tmpl.ExcludedIPRanges == nil &&
		tmpl.PermittedEmailAddresses == nil && tmpl.ExcludedEmailAddresses == nil &&
		tmpl.PermittedURIDomains == nil && tmpl.ExcludedURIDomains == nil
}

// encodeTBS returns the DER TBSCertificate (RFC 5280 §4.1) that x509.CreateCertificate signs
// for tmpl, parent and pub with a P-256 key, or ok false when tmpl uses a field it does not
// write. The public key is pub, encoded as x509.MarshalPKIXPublicKey does; template leaves
// that encoding in tmpl.RawSubjectPublicKeyInfo (it hashed it for the key identifier), which
// spares marshalling it again when it is pub's.
func encodeTBS(tmpl, parent *x509.Certificate, pub crypto.PublicKey) (tbs []byte, ok bool, err error) {
	if !encodable(tmpl, parent) {
		return nil, false, nil
	}
	for _, u := range tmpl.ExtKeyUsage {
		if extKeyUsageOIDs[u] == nil {
			return nil, false, nil
		}
	}
	// The key written is pub's, whatever the template carries: tmpl.RawSubjectPublicKeyInfo is
	// taken only when it is that very key's encoding.
	spki, err := subjectPublicKeyInfo(pub, tmpl.RawSubjectPublicKeyInfo)
	if err != nil {
		return nil, false, fmt.Errorf("x509: %w", err)
	}
	// Validity times: UTCTime for 1950 through 2049, GeneralizedTime otherwise (§4.1.2.5).
	notBefore, notAfter := tmpl.NotBefore.UTC(), tmpl.NotAfter.UTC()
	for _, t := range []time.Time{notBefore, notAfter} {
		if t.Year() < 0 || t.Year() > 9999 {
			return nil, false, fmt.Errorf("x509: cannot encode validity time %v", t)
		}
	}
	// SANs are IA5Strings (§4.2.1.6): ASCII only, as x509.CreateCertificate insists.
	for _, s := range [][]string{tmpl.DNSNames, tmpl.EmailAddresses} {
		for _, n := range s {
			if err := ia5(n); err != nil {
				return nil, false, err
			}
		}
	}
	uris := make([]string, len(tmpl.URIs))
	for i, u := range tmpl.URIs {
		uris[i] = u.String()
		if err := ia5(uris[i]); err != nil {
			return nil, false, err
		}
	}

	b := cryptobyte.NewBuilder(make([]byte, 0, 512+len(spki)+len(tmpl.RawSubject)+len(parent.RawSubject)))
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1Int64(2) // v3
		})
		b.AddASN1BigInt(tmpl.SerialNumber)
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // ecdsa-with-SHA256, no parameters (RFC 5758 §3.2)
			b.AddASN1ObjectIdentifier(oidSignatureECDSAWithSHA256)
		})
		b.AddBytes(parent.RawSubject)
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			addTime(b, notBefore)
			addTime(b, notAfter)
		})
		b.AddBytes(tmpl.RawSubject)
		b.AddBytes(spki)
		b.AddASN1(cbasn1.Tag(3).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				addExtensions(b, tmpl, parent, uris)
			})
		})
	})
	tbs, err = b.Bytes()
	if err != nil {
		return nil, false, fmt.Errorf("x509: encoding the certificate: %w", err)
	}
	return tbs, true, nil
}

// addExtensions writes tmpl's extensions in x509.CreateCertificate's order.
func addExtensions(b *cryptobyte.Builder, tmpl, parent *x509.Certificate, uris []string) {
	ext := func(oid asn1.ObjectIdentifier, critical bool, value func(*cryptobyte.Builder)) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(oid)
			if critical {
				b.AddASN1Boolean(true) // DEFAULT FALSE is omitted (DER)
			}
			b.AddASN1(cbasn1.OCTET_STRING, value)
		})
	}
	if ku := tmpl.KeyUsage; ku != 0 {
		// §4.2.1.3: a BIT STRING, bit 0 (digitalSignature) first, trailing zero bits dropped.
		bits := [2]byte{reverseBits(byte(ku)), reverseBits(byte(ku >> 8))}
		n := 1
		if bits[1] != 0 {
			n = 2
		}
		unused := 0
		for i := 0; i < 8 && bits[n-1]&(1<<i) == 0; i++ {
			unused++
		}
		if unused == 8 { // no bit in the range written (only bits beyond decipherOnly): as x509 does
			unused = 0
		}
		ext(oidExtKeyUsage, true, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.BIT_STRING, func(b *cryptobyte.Builder) {
				b.AddUint8(uint8(unused))
				b.AddBytes(bits[:n])
			})
		})
	}
	if len(tmpl.ExtKeyUsage) > 0 {
		ext(oidExtExtendedKeyUsage, false, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				for _, u := range tmpl.ExtKeyUsage {
					b.AddASN1ObjectIdentifier(extKeyUsageOIDs[u])
				}
			})
		})
	}
	if tmpl.BasicConstraintsValid {
		// cA FALSE and no pathLenConstraint: both are omitted (§4.2.1.9, DER defaults).
		ext(oidExtBasicConstraints, true, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(*cryptobyte.Builder) {})
		})
	}
	if len(tmpl.SubjectKeyId) > 0 {
		ext(oidExtSubjectKeyID, false, func(b *cryptobyte.Builder) {
			b.AddASN1OctetString(tmpl.SubjectKeyId)
		})
	}
	if len(parent.SubjectKeyId) > 0 {
		// §4.2.1.1: keyIdentifier [0] IMPLICIT, the issuer's subjectKeyIdentifier.
		ext(oidExtAuthorityKeyID, false, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.Tag(0).ContextSpecific(), func(b *cryptobyte.Builder) {
					b.AddBytes(parent.SubjectKeyId)
				})
			})
		})
	}
	if len(tmpl.DNSNames)+len(tmpl.EmailAddresses)+len(tmpl.IPAddresses)+len(uris) > 0 {
		// §4.2.1.6: critical when the subject is empty.
		ext(oidExtSubjectAltName, bytes.Equal(tmpl.RawSubject, []byte{0x30, 0}), func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				name := func(tag uint8, v []byte) {
					b.AddASN1(cbasn1.Tag(tag).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(v) })
				}
				for _, n := range tmpl.DNSNames {
					name(2, []byte(n))
				}
				for _, n := range tmpl.EmailAddresses {
					name(1, []byte(n))
				}
				for _, ip := range tmpl.IPAddresses {
					if v4 := ip.To4(); v4 != nil {
						ip = v4
					}
					name(7, ip)
				}
				for _, u := range uris {
					name(6, []byte(u))
				}
			})
		})
	}
}

// addTime writes t (in UTC) as UTCTime for 1950 through 2049, else as GeneralizedTime.
func addTime(b *cryptobyte.Builder, t time.Time) {
	if y := t.Year(); y >= 1950 && y < 2050 {
		b.AddASN1(cbasn1.UTCTime, func(b *cryptobyte.Builder) { b.AddBytes([]byte(t.Format("060102150405Z"))) })
		return
	}
	b.AddASN1(cbasn1.GeneralizedTime, func(b *cryptobyte.Builder) { b.AddBytes([]byte(t.Format("20060102150405Z"))) })
}

func reverseBits(x byte) byte {
	var r byte
	for i := 0; i < 8; i++ {
		r = r<<1 | x&1
		x >>= 1
	}
	return r
}

// ia5 refuses a string that is not ASCII, which an IA5String cannot hold.
func ia5(s string) error {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return fmt.Errorf("x509: %q cannot be encoded as an IA5String", s)
		}
	}
	return nil
}

// signTBS signs tbs with k (ECDSA with SHA-256) and wraps it as a Certificate (§4.1.1).
func signTBS(k *ecdsa.PrivateKey, tbs []byte) ([]byte, error) {
	digest := sha256.Sum256(tbs)
	sig, err := ecdsa.SignASN1(rand.Reader, k, digest[:])
	if err != nil {
		return nil, fmt.Errorf("x509: signing: %w", err)
	}
	b := cryptobyte.NewBuilder(make([]byte, 0, len(tbs)+len(sig)+32))
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(tbs)
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(oidSignatureECDSAWithSHA256)
		})
		b.AddASN1BitString(sig)
	})
	return b.Bytes()
}
