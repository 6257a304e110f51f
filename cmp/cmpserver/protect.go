package cmpserver

import (
	"crypto"
	"crypto/x509/pkix"
	"encoding/asn1"

	"coapca/cmp"
)

// Parameters of the MAC algorithms as they appear in protectionAlg (RFC 9481 §6.1).
type pbmParameter struct {
	Salt           []byte
	OWF            pkix.AlgorithmIdentifier
	IterationCount int
	MAC            pkix.AlgorithmIdentifier
}

type pbkdf2Params struct {
	Salt           []byte
	IterationCount int
	KeyLength      int                      `asn1:"optional"`
	PRF            pkix.AlgorithmIdentifier `asn1:"optional"`
}

type pbmac1Params struct {
	KeyDerivationFunc pkix.AlgorithmIdentifier
	MessageAuthScheme pkix.AlgorithmIdentifier
}

var hashes = []struct {
	h        crypto.Hash
	oid      asn1.ObjectIdentifier
	hmac     asn1.ObjectIdentifier
	hmacAlt  asn1.ObjectIdentifier
	hmacName string
}{
	{crypto.SHA1, cmp.OIDSHA1, cmp.OIDHMACWithSHA1, cmp.OIDHMACSHA1, "sha1"},
	{crypto.SHA224, cmp.OIDSHA224, cmp.OIDHMACWithSHA224, nil, "sha224"},
	{crypto.SHA256, cmp.OIDSHA256, cmp.OIDHMACWithSHA256, nil, "sha256"},
	{crypto.SHA384, cmp.OIDSHA384, cmp.OIDHMACWithSHA384, nil, "sha384"},
	{crypto.SHA512, cmp.OIDSHA512, cmp.OIDHMACWithSHA512, nil, "sha512"},
}

func hashOf(oid asn1.ObjectIdentifier) crypto.Hash {
	for _, h := range hashes {
		if h.oid.Equal(oid) {
			return h.h
		}
	}
	return 0
}

func hmacOf(oid asn1.ObjectIdentifier) crypto.Hash {
	for _, h := range hashes {
		if h.hmac.Equal(oid) || (h.hmacAlt != nil && h.hmacAlt.Equal(oid)) {
			return h.h
		}
	}
	return 0
}

// macLike returns a MAC protector with the algorithms and iteration count of req's (verified)
// protection and a fresh salt: RFC 9483 §3.2 answers MAC-protected requests with the same
// shared secret, and a client such as OpenSSL expects its own algorithms back.
func macLike(req *cmp.Message, secret []byte) cmp.Protector {
	alg := req.Header.ProtectionAlg
	ref := req.Header.SenderKID
	switch {
	case alg.Algorithm.Equal(cmp.OIDPasswordBasedMac):
		var p pbmParameter
		if _, err := asn1.Unmarshal(alg.Parameters.FullBytes, &p); err == nil {
			return &cmp.PBMProtection{Secret: secret, Reference: ref, OWF: hashOf(p.OWF.Algorithm),
				MAC: hmacOf(p.MAC.Algorithm), Iterations: p.IterationCount}
		}
		return &cmp.PBMProtection{Secret: secret, Reference: ref}
	default:
		var p pbmac1Params
		var k pbkdf2Params
		if _, err := asn1.Unmarshal(alg.Parameters.FullBytes, &p); err == nil {
			if _, err := asn1.Unmarshal(p.KeyDerivationFunc.Parameters.FullBytes, &k); err == nil {
				prf := crypto.SHA1
				if len(k.PRF.Algorithm) > 0 {
					prf = hmacOf(k.PRF.Algorithm)
				}
				return &cmp.PBMAC1Protection{Secret: secret, Reference: ref, PRF: prf,
					MAC: hmacOf(p.MessageAuthScheme.Algorithm), Iterations: k.IterationCount, KeyLength: k.KeyLength}
			}
		}
		return &cmp.PBMAC1Protection{Secret: secret, Reference: ref}
	}
}
