package cmp

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/rsa"
	"crypto/subtle"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"hash"

	"coapca/errs"

	_ "crypto/sha1" // hash registrations for PBM/HMAC
	_ "crypto/sha256"
	_ "crypto/sha512"
)

// Bounds on MAC parameters accepted from the network (see [MACLimits]).
const (
	// MaxIterations is the default cap of [MACLimits].
	MaxIterations = 100000
	// MinIterations is the minimum of RFC 4211 §4.4 (as updated by RFC 9045).
	MinIterations = 100
	minSaltLen    = 8
)

// ErrBadMessageCheck is wrapped by protection verification failures; they are errs.Unauthorized
// with PKIFailureInfo badMessageCheck (badAlg for unusable MAC parameters), RFC 9810 §5.1.3.
var ErrBadMessageCheck = errors.New("cmp: protection does not verify")

// Protector computes PKIMessage protection (RFC 9810 §5.1.3). Implementations are
// *SignatureProtection, *PBMProtection and *PBMAC1Protection.
type Protector interface {
	// params returns protectionAlg and the default senderKID.
	params() (pkix.AlgorithmIdentifier, []byte, error)
	protect(alg pkix.AlgorithmIdentifier, data []byte) ([]byte, error)
	certs() []*x509.Certificate
}

// SignatureProtection signs with Signer; Cert (the protection certificate) goes first in
// extraCerts, followed by Chain (RFC 9810 §5.1.3.3, RFC 9483 §3.3).
type SignatureProtection struct {
	Signer crypto.Signer
	Cert   *x509.Certificate
	Chain  []*x509.Certificate
}

func (p *SignatureProtection) params() (pkix.AlgorithmIdentifier, []byte, error) {
	if p.Signer == nil || p.Cert == nil {
		return pkix.AlgorithmIdentifier{}, nil, errors.New("signature protection needs Signer and Cert")
	}
	alg, _, err := SignatureAlgorithmFor(p.Signer.Public())
	// RFC 9483 §3.1: senderKID is the subjectKeyIdentifier of the protection certificate, if any.
	return alg, p.Cert.SubjectKeyId, err
}

func (p *SignatureProtection) protect(_ pkix.AlgorithmIdentifier, data []byte) ([]byte, error) {
	_, sig, err := sign(p.Signer, data)
	return sig, err
}

func (p *SignatureProtection) certs() []*x509.Certificate {
	return append([]*x509.Certificate{p.Cert}, p.Chain...)
}

// PBMProtection is PasswordBasedMac protection (RFC 9810 §5.1.3.1, RFC 9481 §6.1.1).
// Zero values: OWF SHA-256, MAC HMAC-SHA-256, 10000 iterations, 16-octet random salt.
type PBMProtection struct {
	Secret     []byte
	Reference  []byte // senderKID
	OWF        crypto.Hash
	MAC        crypto.Hash // crypto.SHA1 → hmac-sha1 (OpenSSL's default); SHA-2 → hmacWithSHAxxx
	Iterations int
	Salt       []byte
}

type pbmParameter struct {
	Salt           []byte
	OWF            pkix.AlgorithmIdentifier
	IterationCount int
	MAC            pkix.AlgorithmIdentifier
}

func (p *PBMProtection) params() (pkix.AlgorithmIdentifier, []byte, error) {
	owf, mac, iter := p.OWF, p.MAC, p.Iterations
	if owf == 0 {
		owf = crypto.SHA256
	}
	if mac == 0 {
		mac = crypto.SHA256
	}
	if iter == 0 {
		iter = 10000
	}
	salt := p.Salt
	if salt == nil {
		var err error
		if salt, err = randomBytes(16); err != nil {
			return pkix.AlgorithmIdentifier{}, nil, err
		}
	}
	owfOID, ok := hashOIDs[owf]
	if !ok {
		return pkix.AlgorithmIdentifier{}, nil, fmt.Errorf("unsupported OWF %v", owf)
	}
	macOID := OIDHMACSHA1
	if mac != crypto.SHA1 {
		if macOID, ok = hmacOIDs[mac]; !ok {
			return pkix.AlgorithmIdentifier{}, nil, fmt.Errorf("unsupported MAC %v", mac)
		}
	}
	der, err := asn1.Marshal(pbmParameter{Salt: salt, OWF: pkix.AlgorithmIdentifier{Algorithm: owfOID},
		IterationCount: iter, MAC: pkix.AlgorithmIdentifier{Algorithm: macOID}})
	if err != nil {
		return pkix.AlgorithmIdentifier{}, nil, err
	}
	return pkix.AlgorithmIdentifier{Algorithm: OIDPasswordBasedMac, Parameters: asn1.RawValue{FullBytes: der}}, p.Reference, nil
}

func (p *PBMProtection) protect(alg pkix.AlgorithmIdentifier, data []byte) ([]byte, error) {
	return macProtect(alg, p.Secret, data)
}

func (p *PBMProtection) certs() []*x509.Certificate { return nil }

// PBMAC1Protection is PBMAC1 protection (RFC 8018 §7.1, RFC 9481 §6.1.2): PBKDF2 with PRF
// HMAC-PRF, then HMAC-MAC. Zero values: PRF and MAC SHA-256, 10000 iterations, 16-octet
// random salt, key length = MAC output length (keyLength is in octets, RFC 9481 §6.1.2).
type PBMAC1Protection struct {
	Secret     []byte
	Reference  []byte // senderKID
	PRF        crypto.Hash
	MAC        crypto.Hash
	Iterations int
	KeyLength  int
	Salt       []byte
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

func (p *PBMAC1Protection) params() (pkix.AlgorithmIdentifier, []byte, error) {
	prf, mac, iter, klen := p.PRF, p.MAC, p.Iterations, p.KeyLength
	if prf == 0 {
		prf = crypto.SHA256
	}
	if mac == 0 {
		mac = crypto.SHA256
	}
	if iter == 0 {
		iter = 10000
	}
	if klen == 0 {
		klen = mac.Size()
	}
	salt := p.Salt
	if salt == nil {
		var err error
		if salt, err = randomBytes(16); err != nil {
			return pkix.AlgorithmIdentifier{}, nil, err
		}
	}
	prfOID, ok1 := hmacOIDs[prf]
	macOID, ok2 := hmacOIDs[mac]
	if !ok1 || !ok2 {
		return pkix.AlgorithmIdentifier{}, nil, errors.New("unsupported PBMAC1 PRF/MAC")
	}
	kdf, err := asn1.Marshal(pbkdf2Params{Salt: salt, IterationCount: iter, KeyLength: klen,
		PRF: pkix.AlgorithmIdentifier{Algorithm: prfOID, Parameters: asn1.NullRawValue}})
	if err != nil {
		return pkix.AlgorithmIdentifier{}, nil, err
	}
	der, err := asn1.Marshal(pbmac1Params{
		KeyDerivationFunc: pkix.AlgorithmIdentifier{Algorithm: OIDPBKDF2, Parameters: asn1.RawValue{FullBytes: kdf}},
		MessageAuthScheme: pkix.AlgorithmIdentifier{Algorithm: macOID, Parameters: asn1.NullRawValue},
	})
	if err != nil {
		return pkix.AlgorithmIdentifier{}, nil, err
	}
	return pkix.AlgorithmIdentifier{Algorithm: OIDPBMAC1, Parameters: asn1.RawValue{FullBytes: der}}, p.Reference, nil
}

func (p *PBMAC1Protection) protect(alg pkix.AlgorithmIdentifier, data []byte) ([]byte, error) {
	return macProtect(alg, p.Secret, data)
}

func (p *PBMAC1Protection) certs() []*x509.Certificate { return nil }

var hashOIDs = map[crypto.Hash]asn1.ObjectIdentifier{
	crypto.SHA1: OIDSHA1, crypto.SHA224: OIDSHA224, crypto.SHA256: OIDSHA256,
	crypto.SHA384: OIDSHA384, crypto.SHA512: OIDSHA512,
}

var hmacOIDs = map[crypto.Hash]asn1.ObjectIdentifier{
	crypto.SHA1: OIDHMACWithSHA1, crypto.SHA224: OIDHMACWithSHA224, crypto.SHA256: OIDHMACWithSHA256,
	crypto.SHA384: OIDHMACWithSHA384, crypto.SHA512: OIDHMACWithSHA512,
}

func hashByOID(oid asn1.ObjectIdentifier) (crypto.Hash, bool) {
	for h, o := range hashOIDs {
		if o.Equal(oid) {
			return h, true
		}
	}
	return 0, false
}

func hmacByOID(oid asn1.ObjectIdentifier) (crypto.Hash, bool) {
	if oid.Equal(OIDHMACSHA1) {
		return crypto.SHA1, true
	}
	for h, o := range hmacOIDs {
		if o.Equal(oid) {
			return h, true
		}
	}
	return 0, false
}

// macProtect computes a PasswordBasedMac or PBMAC1 value as described by alg, within the
// default limits (used for what this side protects itself).
func macProtect(alg pkix.AlgorithmIdentifier, secret, data []byte) ([]byte, error) {
	return macProtectLimited(alg, secret, data, MACLimits{})
}

// macProtectLimited computes a MAC whose parameters came from the network: they are checked
// against l before any key derivation.
func macProtectLimited(alg pkix.AlgorithmIdentifier, secret, data []byte, l MACLimits) ([]byte, error) {
	p, err := parseMACParams(alg, l)
	if err != nil {
		return nil, err
	}
	key, err := p.key(secret)
	if err != nil {
		return nil, err
	}
	m := hmac.New(p.mac.New, key)
	m.Write(data)
	return m.Sum(nil), nil
}

// MACLimits bound the PasswordBasedMac and PBMAC1 parameters accepted from the network. The
// requester chooses them, and the verifier pays for them before it can compare a MAC: RFC 4211
// §4.4 (as updated by RFC 9045) puts the minimum at 100 iterations and names the trade-off
// between password protection and "the time spent by the server processing all of the
// requests"; RFC 9481 §6.1 leaves the maximum to policy. The zero value is the default.
type MACLimits struct {
	// MaxIterations caps the work of one key derivation: PasswordBasedMac iterationCount, and
	// PBKDF2 iterationCount × the PRF blocks keyLength needs (RFC 8018 §5.2). 0 =
	// MaxIterations (100,000: about 30 ms of SHA-256 on one core; OpenSSL uses 500 by default
	// and coapca's client 10,000).
	MaxIterations int
}

func (l MACLimits) maxIterations() int {
	if l.MaxIterations > 0 {
		return l.MaxIterations
	}
	return MaxIterations
}

// maxKeyLength caps PBKDF2 keyLength (octets): the largest HMAC key worth deriving is one
// SHA-512 output.
const maxKeyLength = 64

// macParams are the checked parameters of a PasswordBasedMac or PBMAC1 protectionAlg.
type macParams struct {
	pbmac1 bool
	owf    crypto.Hash // PBM
	prf    crypto.Hash // PBMAC1
	mac    crypto.Hash
	salt   []byte
	iter   int
	klen   int // PBMAC1
}

// parseMACParams decodes and checks protectionAlg without deriving anything, so that a request
// with unacceptable parameters costs no hashing.
func parseMACParams(alg pkix.AlgorithmIdentifier, l MACLimits) (*macParams, error) {
	switch {
	case alg.Algorithm.Equal(OIDPasswordBasedMac):
		var p pbmParameter
		if rest, err := asn1.Unmarshal(alg.Parameters.FullBytes, &p); err != nil || len(rest) != 0 {
			return nil, errors.New("bad PBMParameter")
		}
		owf, ok := hashByOID(p.OWF.Algorithm)
		if !ok {
			return nil, fmt.Errorf("unsupported PBM OWF %v", p.OWF.Algorithm)
		}
		mac, ok := hmacByOID(p.MAC.Algorithm)
		if !ok {
			return nil, fmt.Errorf("unsupported PBM MAC %v", p.MAC.Algorithm)
		}
		if err := checkKDF(p.Salt, p.IterationCount, p.IterationCount, l); err != nil {
			return nil, err
		}
		return &macParams{owf: owf, mac: mac, salt: p.Salt, iter: p.IterationCount}, nil
	case alg.Algorithm.Equal(OIDPBMAC1):
		var p pbmac1Params
		if rest, err := asn1.Unmarshal(alg.Parameters.FullBytes, &p); err != nil || len(rest) != 0 {
			return nil, errors.New("bad PBMAC1-params")
		}
		if !p.KeyDerivationFunc.Algorithm.Equal(OIDPBKDF2) {
			return nil, errors.New("PBMAC1: key derivation is not PBKDF2")
		}
		var k pbkdf2Params
		if rest, err := asn1.Unmarshal(p.KeyDerivationFunc.Parameters.FullBytes, &k); err != nil || len(rest) != 0 {
			return nil, errors.New("bad PBKDF2-params (only the specified salt is supported)")
		}
		prf := crypto.SHA1 // RFC 8018 default algid-hmacWithSHA1
		if len(k.PRF.Algorithm) > 0 {
			var ok bool
			if prf, ok = hmacByOID(k.PRF.Algorithm); !ok {
				return nil, fmt.Errorf("unsupported PBKDF2 PRF %v", k.PRF.Algorithm)
			}
		}
		mac, ok := hmacByOID(p.MessageAuthScheme.Algorithm)
		if !ok {
			return nil, fmt.Errorf("unsupported PBMAC1 MAC %v", p.MessageAuthScheme.Algorithm)
		}
		// RFC 9481 §6.1.2: keyLength MUST be present and is in octets.
		if k.KeyLength < 1 || k.KeyLength > maxKeyLength {
			return nil, fmt.Errorf("PBKDF2 keyLength %d out of range [1, %d]", k.KeyLength, maxKeyLength)
		}
		// PBKDF2 runs iterationCount PRF calls per output block (RFC 8018 §5.2).
		blocks := (k.KeyLength + prf.Size() - 1) / prf.Size()
		if err := checkKDF(k.Salt, k.IterationCount, k.IterationCount*blocks, l); err != nil {
			return nil, err
		}
		return &macParams{pbmac1: true, prf: prf, mac: mac, salt: k.Salt, iter: k.IterationCount, klen: k.KeyLength}, nil
	}
	return nil, fmt.Errorf("protectionAlg %v is not a MAC", alg.Algorithm)
}

// key derives the MAC key from secret.
func (p *macParams) key(secret []byte) ([]byte, error) {
	if p.pbmac1 {
		key, err := pbkdf2.Key(func() hash.Hash { return p.prf.New() }, string(secret), p.salt, p.iter, p.klen)
		if err != nil {
			return nil, fmt.Errorf("PBKDF2: %w", err)
		}
		return key, nil
	}
	// RFC 9810 §5.1.3.1: K = OWF^iterationCount(secret || salt).
	h := p.owf.New()
	h.Write(secret)
	h.Write(p.salt)
	key := h.Sum(nil)
	for i := 1; i < p.iter; i++ {
		h.Reset()
		h.Write(key)
		key = h.Sum(key[:0])
	}
	return key, nil
}

// checkKDF checks the salt and iteration count; work is the hashing they cost.
func checkKDF(salt []byte, iter, work int, l MACLimits) error {
	if len(salt) < minSaltLen || len(salt) > 1024 {
		return fmt.Errorf("salt of %d octets not accepted", len(salt))
	}
	// RFC 4211 §4.4 (RFC 9045): iterationCount MUST be at least 100.
	if iter < MinIterations {
		return fmt.Errorf("iteration count %d below %d", iter, MinIterations)
	}
	if maxIter := l.maxIterations(); iter > maxIter || work > maxIter {
		return fmt.Errorf("iteration count %d (work %d) above the limit %d", iter, work, maxIter)
	}
	return nil
}

// ProtectionKind tells how a message is protected.
type ProtectionKind int

const (
	ProtectionNone ProtectionKind = iota
	ProtectionPBM
	ProtectionPBMAC1
	ProtectionSignature
	ProtectionUnknown
)

func (k ProtectionKind) String() string {
	return [...]string{"none", "PasswordBasedMac", "PBMAC1", "signature", "unknown"}[k]
}

// ProtectionKind reports the protection of m from its protectionAlg.
func (m *Message) ProtectionKind() ProtectionKind {
	if m.Protection == nil || m.Header.ProtectionAlg == nil {
		return ProtectionNone
	}
	oid := m.Header.ProtectionAlg.Algorithm
	switch {
	case oid.Equal(OIDPasswordBasedMac):
		return ProtectionPBM
	case oid.Equal(OIDPBMAC1):
		return ProtectionPBMAC1
	}
	if _, ok := sigAlgByOID(oid); ok {
		return ProtectionSignature
	}
	return ProtectionUnknown
}

func (m *Message) protectedBytes() ([]byte, error) {
	if m.RawHeader == nil || m.RawBody == nil {
		return nil, errors.New("cmp: message was neither parsed nor marshaled")
	}
	if m.Protection == nil || m.Header.ProtectionAlg == nil {
		return nil, failure(errs.Unauthorized, FailBadMessageCheck, fmt.Errorf("%w: message is not protected", ErrBadMessageCheck))
	}
	return protectedPart(m.RawHeader, m.RawBody), nil
}

// VerifyMAC checks PasswordBasedMac or PBMAC1 protection with the shared secret
// (RFC 9810 §5.1.3.1-2) within the default [MACLimits]. Failures wrap ErrBadMessageCheck.
func (m *Message) VerifyMAC(secret []byte) error { return m.VerifyMACWith(secret, MACLimits{}) }

// CheckMACParams checks, without deriving a key, that m is MAC-protected with parameters
// within l: a verifier calls it (and its other cheap checks) before the key derivation that
// VerifyMACWith pays. Errors are errs.Unauthorized with badAlg.
func (m *Message) CheckMACParams(l MACLimits) error {
	if _, err := m.protectedBytes(); err != nil {
		return err
	}
	if _, err := parseMACParams(*m.Header.ProtectionAlg, l); err != nil {
		return failure(errs.Unauthorized, FailBadAlg, fmt.Errorf("%w: %v", ErrBadMessageCheck, err))
	}
	return nil
}

// VerifyMACWith is VerifyMAC with the limits l on the requester's MAC parameters; they are
// checked before the key is derived.
func (m *Message) VerifyMACWith(secret []byte, l MACLimits) error {
	data, err := m.protectedBytes()
	if err != nil {
		return err
	}
	want, err := macProtectLimited(*m.Header.ProtectionAlg, secret, data, l)
	if err != nil {
		return failure(errs.Unauthorized, FailBadAlg, fmt.Errorf("%w: %v", ErrBadMessageCheck, err))
	}
	if subtle.ConstantTimeCompare(want, m.Protection) != 1 {
		return failure(errs.Unauthorized, FailBadMessageCheck, fmt.Errorf("%w: MAC mismatch", ErrBadMessageCheck))
	}
	return nil
}

// ProtectionCert returns the first extraCert, which carries the signature protection key
// (RFC 9810 §5.1.3.3), or nil.
func (m *Message) ProtectionCert() *x509.Certificate {
	if len(m.ExtraCerts) == 0 {
		return nil
	}
	return m.ExtraCerts[0]
}

// VerifySignature checks signature protection with cert's public key (RFC 9810 §5.1.3.3).
// The caller validates cert (chain, key usage); typically cert = m.ProtectionCert().
// Failures wrap ErrBadMessageCheck.
func (m *Message) VerifySignature(cert *x509.Certificate) error {
	data, err := m.protectedBytes()
	if err != nil {
		return err
	}
	if cert == nil {
		return failure(errs.Unauthorized, FailBadMessageCheck, fmt.Errorf("%w: no protection certificate", ErrBadMessageCheck))
	}
	if err := verifySignature(cert.PublicKey, *m.Header.ProtectionAlg, data, m.Protection); err != nil {
		return failure(errs.Unauthorized, FailBadMessageCheck, fmt.Errorf("%w: %v", ErrBadMessageCheck, err))
	}
	return nil
}

type sigAlg struct {
	oid  asn1.ObjectIdentifier
	hash crypto.Hash // 0 for Ed25519
	key  string      // "ecdsa", "ed25519", "rsa"
	null bool        // parameters NULL (RSA)
}

var sigAlgs = []sigAlg{
	{OIDECDSAWithSHA256, crypto.SHA256, "ecdsa", false},
	{OIDECDSAWithSHA384, crypto.SHA384, "ecdsa", false},
	{OIDECDSAWithSHA512, crypto.SHA512, "ecdsa", false},
	{OIDEd25519, 0, "ed25519", false},
	{OIDSHA256WithRSA, crypto.SHA256, "rsa", true},
	{OIDSHA384WithRSA, crypto.SHA384, "rsa", true},
	{OIDSHA512WithRSA, crypto.SHA512, "rsa", true},
}

func sigAlgByOID(oid asn1.ObjectIdentifier) (sigAlg, bool) {
	for _, a := range sigAlgs {
		if a.oid.Equal(oid) {
			return a, true
		}
	}
	return sigAlg{}, false
}

// SignatureAlgorithmFor returns the RFC 9481 §3 signature algorithm for pub: ECDSA P-256 with
// SHA-256, P-384 with SHA-384, P-521 with SHA-512, Ed25519, RSA PKCS#1 v1.5 with SHA-256.
func SignatureAlgorithmFor(pub crypto.PublicKey) (pkix.AlgorithmIdentifier, crypto.Hash, error) {
	var a sigAlg
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			a = sigAlgs[0]
		case elliptic.P384():
			a = sigAlgs[1]
		case elliptic.P521():
			a = sigAlgs[2]
		default:
			return pkix.AlgorithmIdentifier{}, 0, errors.New("unsupported ECDSA curve")
		}
	case ed25519.PublicKey:
		a = sigAlgs[3]
	case *rsa.PublicKey:
		a = sigAlgs[4]
	default:
		return pkix.AlgorithmIdentifier{}, 0, fmt.Errorf("unsupported key type %T", pub)
	}
	id := pkix.AlgorithmIdentifier{Algorithm: a.oid}
	if a.null {
		id.Parameters = asn1.NullRawValue
	}
	return id, a.hash, nil
}

func sign(signer crypto.Signer, data []byte) (pkix.AlgorithmIdentifier, []byte, error) {
	alg, h, err := SignatureAlgorithmFor(signer.Public())
	if err != nil {
		return alg, nil, err
	}
	digest := data
	opts := crypto.SignerOpts(crypto.Hash(0))
	if h != 0 {
		hh := h.New()
		hh.Write(data)
		digest = hh.Sum(nil)
		opts = h
	}
	sig, err := signer.Sign(rand.Reader, digest, opts)
	if err != nil {
		return alg, nil, fmt.Errorf("sign: %w", err)
	}
	return alg, sig, nil
}

// verifySignature checks sig over data with pub under alg (RFC 9481 §3).
func verifySignature(pub crypto.PublicKey, alg pkix.AlgorithmIdentifier, data, sig []byte) error {
	a, ok := sigAlgByOID(alg.Algorithm)
	if !ok {
		return fmt.Errorf("unsupported signature algorithm %v", alg.Algorithm)
	}
	var digest []byte
	if a.hash != 0 {
		h := a.hash.New()
		h.Write(data)
		digest = h.Sum(nil)
	}
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if a.key == "ecdsa" && ecdsa.VerifyASN1(k, digest, sig) {
			return nil
		}
	case ed25519.PublicKey:
		if a.key == "ed25519" && ed25519.Verify(k, data, sig) {
			return nil
		}
	case *rsa.PublicKey:
		if a.key == "rsa" {
			if err := rsa.VerifyPKCS1v15(k, a.hash, digest, sig); err == nil {
				return nil
			}
		}
	default:
		return fmt.Errorf("unsupported key type %T", pub)
	}
	return errors.New("signature does not verify")
}

// MACProtectionLike returns a protector for answering m, a MAC-protected request whose MAC
// has been verified with secret: the same secret, reference, algorithms and iteration count,
// with a fresh salt. RFC 9483 §3.2: a response to a MAC-protected request is protected with the
// same shared secret; clients such as OpenSSL expect their own algorithms back. Unparsable
// parameters fall back to the defaults of PBMProtection / PBMAC1Protection.
func (m *Message) MACProtectionLike(secret []byte) Protector {
	alg := m.Header.ProtectionAlg
	ref := m.Header.SenderKID
	if alg.Algorithm.Equal(OIDPBMAC1) {
		p := &PBMAC1Protection{Secret: secret, Reference: ref}
		var pp pbmac1Params
		var k pbkdf2Params
		if _, err := asn1.Unmarshal(alg.Parameters.FullBytes, &pp); err != nil {
			return p
		}
		if _, err := asn1.Unmarshal(pp.KeyDerivationFunc.Parameters.FullBytes, &k); err != nil {
			return p
		}
		p.PRF = crypto.SHA1 // RFC 8018 default algid-hmacWithSHA1
		if len(k.PRF.Algorithm) > 0 {
			p.PRF, _ = hmacByOID(k.PRF.Algorithm)
		}
		p.MAC, _ = hmacByOID(pp.MessageAuthScheme.Algorithm)
		p.Iterations, p.KeyLength = k.IterationCount, k.KeyLength
		return p
	}
	p := &PBMProtection{Secret: secret, Reference: ref}
	var pp pbmParameter
	if _, err := asn1.Unmarshal(alg.Parameters.FullBytes, &pp); err == nil {
		p.OWF, _ = hashByOID(pp.OWF.Algorithm)
		p.MAC, _ = hmacByOID(pp.MAC.Algorithm)
		p.Iterations = pp.IterationCount
	}
	return p
}
