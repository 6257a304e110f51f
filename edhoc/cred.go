package edhoc

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
)

// COSE header labels used in ID_CRED_x (RFC 9528 §3.5.3, RFC 9360, RFC 9528 §10.6).
const (
	HeaderKid     = 4
	HeaderKCCS    = 14
	HeaderX5Chain = 33
	HeaderX5T     = 34
)

// COSE hash algorithms for x5t (RFC 9360 §2, RFC 9054).
const (
	AlgSHA256_64 = -15
)

// ErrUnknownCredential is returned by a Resolver that does not know (or does not trust) the
// referenced credential. The session then fails and, where RFC 9528 §6.3 applies, the error
// message with ERR_CODE 3 is produced.
var ErrUnknownCredential = errors.New("edhoc: unknown credential referenced")

// CertHash is a COSE_CertHash (RFC 9360): the hash of a DER certificate.
type CertHash struct {
	Alg  int    // AlgSHA256 (-16) or AlgSHA256_64 (-15)
	Hash []byte // the (possibly truncated) hash value
}

// IDCred is an ID_CRED_x (RFC 9528 §3.5.3), a COSE header map that identifies or transports a
// credential. Raw is the deterministic CBOR encoding of the map, which is what enters
// context_2/3 and the Sig_structure; the other fields are the recognized parameters.
type IDCred struct {
	Raw     []byte
	Kid     []byte    // label 4
	X5T     *CertHash // label 34
	X5Chain [][]byte  // label 33, DER certificates, end-entity first
	KCCS    []byte    // label 14, a CWT Claims Set by value
}

// IDCredKid references a credential by kid.
func IDCredKid(kid []byte) IDCred {
	b := appendHead(nil, majMap, 1)
	b = appendInt(b, HeaderKid)
	b = appendBstr(b, kid)
	return IDCred{Raw: b, Kid: bytes.Clone(kid)}
}

// IDCredX5T references an X.509 certificate by its SHA-256/64 hash (as RFC 9529 trace 1 does).
func IDCredX5T(certDER []byte) IDCred {
	sum := sha256.Sum256(certDER)
	h := bytes.Clone(sum[:8])
	b := appendHead(nil, majMap, 1)
	b = appendInt(b, HeaderX5T)
	b = appendHead(b, majArray, 2)
	b = appendInt(b, AlgSHA256_64)
	b = appendBstr(b, h)
	return IDCred{Raw: b, X5T: &CertHash{Alg: AlgSHA256_64, Hash: h}}
}

// IDCredX5Chain transports an X.509 chain (end-entity first). A single certificate is encoded
// as a bstr, several as an array (RFC 9360 §2).
func IDCredX5Chain(ders [][]byte) IDCred {
	b := appendHead(nil, majMap, 1)
	b = appendInt(b, HeaderX5Chain)
	if len(ders) == 1 {
		b = appendBstr(b, ders[0])
	} else {
		b = appendHead(b, majArray, uint64(len(ders)))
		for _, d := range ders {
			b = appendBstr(b, d)
		}
	}
	chain := make([][]byte, len(ders))
	for i, d := range ders {
		chain[i] = bytes.Clone(d)
	}
	return IDCred{Raw: b, X5Chain: chain}
}

// IDCredKCCS transports a CCS by value.
func IDCredKCCS(ccs []byte) IDCred {
	b := appendHead(nil, majMap, 1)
	b = appendInt(b, HeaderKCCS)
	b = append(b, ccs...)
	return IDCred{Raw: b, KCCS: bytes.Clone(ccs)}
}

// ParseIDCred parses the CBOR encoding of an ID_CRED_x map.
func ParseIDCred(b []byte) (*IDCred, error) {
	r := &reader{b: b}
	entries, err := r.readMap()
	if err != nil {
		return nil, fmt.Errorf("edhoc: ID_CRED: %w", err)
	}
	if !r.empty() {
		return nil, fmt.Errorf("edhoc: ID_CRED: trailing bytes")
	}
	id := &IDCred{Raw: bytes.Clone(b)}
	for _, e := range entries {
		kr := &reader{b: e[0]}
		if m := kr.peekMajor(); m != majUint && m != majNint {
			continue // text labels: not used here, kept in Raw
		}
		label, err := kr.readInt()
		if err != nil {
			return nil, fmt.Errorf("edhoc: ID_CRED label: %w", err)
		}
		vr := &reader{b: e[1]}
		switch label {
		case HeaderKid:
			v, err := vr.readBstr()
			if err != nil {
				return nil, fmt.Errorf("edhoc: ID_CRED kid: %w", err)
			}
			id.Kid = bytes.Clone(v)
		case HeaderX5T:
			n, err := vr.readArray()
			if err != nil || n != 2 {
				return nil, fmt.Errorf("edhoc: ID_CRED x5t: want [alg, hash]")
			}
			alg, err := vr.readInt()
			if err != nil {
				return nil, fmt.Errorf("edhoc: ID_CRED x5t alg: %w", err)
			}
			h, err := vr.readBstr()
			if err != nil {
				return nil, fmt.Errorf("edhoc: ID_CRED x5t hash: %w", err)
			}
			id.X5T = &CertHash{Alg: int(alg), Hash: bytes.Clone(h)}
		case HeaderX5Chain:
			if vr.peekMajor() == majBstr {
				v, _ := vr.readBstr()
				id.X5Chain = [][]byte{bytes.Clone(v)}
				break
			}
			n, err := vr.readArray()
			if err != nil || n == 0 {
				return nil, fmt.Errorf("edhoc: ID_CRED x5chain: want bstr or array of bstr")
			}
			for i := 0; i < n; i++ {
				v, err := vr.readBstr()
				if err != nil {
					return nil, fmt.Errorf("edhoc: ID_CRED x5chain: %w", err)
				}
				id.X5Chain = append(id.X5Chain, bytes.Clone(v))
			}
		case HeaderKCCS:
			if vr.peekMajor() != majMap {
				return nil, fmt.Errorf("edhoc: ID_CRED kccs: want map")
			}
			id.KCCS = bytes.Clone(e[1])
		}
	}
	return id, nil
}

// onlyKid reports whether the map holds nothing but a kid, in which case PLAINTEXT_2/3 carry
// the compact form (RFC 9528 §3.5.3.2).
func (id *IDCred) onlyKid() bool {
	if id.Kid == nil {
		return false
	}
	r := &reader{b: id.Raw}
	m, n, err := r.head()
	return err == nil && m == majMap && n == 1
}

// MatchesCert reports whether an x5t in the ID_CRED matches the DER certificate.
func (id *IDCred) MatchesCert(der []byte) bool {
	if id.X5T == nil {
		return false
	}
	sum := sha256.Sum256(der)
	switch id.X5T.Alg {
	case AlgSHA256:
		return bytes.Equal(sum[:], id.X5T.Hash)
	case AlgSHA256_64:
		return bytes.Equal(sum[:8], id.X5T.Hash)
	}
	return false
}

// Credential is an authentication credential CRED_x with its identifier ID_CRED_x
// (RFC 9528 §3.5.2) and the public authentication key it contains.
type Credential struct {
	ID IDCred
	// Cred is CRED_x exactly as it enters the transcript and MAC: the bstr-wrapped DER of the
	// end-entity certificate for X.509, or the CBOR map of a CCS.
	Cred []byte
	// PublicKey is ed25519.PublicKey, *ecdsa.PublicKey (P-256) or *ecdh.PublicKey (X25519 or P-256).
	PublicKey crypto.PublicKey
	// Certificates is the parsed chain for X.509 credentials (end-entity first), nil otherwise.
	Certificates []*x509.Certificate
}

// X509Ref selects how an X.509 credential is referenced in ID_CRED_x.
type X509Ref int

const (
	// ByX5T references the end-entity certificate by its SHA-256/64 hash.
	ByX5T X509Ref = iota
	// ByX5Chain transports the chain in ID_CRED_x.
	ByX5Chain
)

// NewX509Credential builds a credential from a certificate chain (end-entity first).
func NewX509Credential(chain []*x509.Certificate, ref X509Ref) (*Credential, error) {
	if len(chain) == 0 {
		return nil, errors.New("edhoc: empty certificate chain")
	}
	leaf := chain[0]
	c := &Credential{Cred: appendBstr(nil, leaf.Raw), PublicKey: leaf.PublicKey, Certificates: chain}
	switch ref {
	case ByX5T:
		c.ID = IDCredX5T(leaf.Raw)
	case ByX5Chain:
		ders := make([][]byte, len(chain))
		for i, crt := range chain {
			ders[i] = crt.Raw
		}
		c.ID = IDCredX5Chain(ders)
	default:
		return nil, fmt.Errorf("edhoc: unknown X.509 reference %d", ref)
	}
	return c, nil
}

// NewCCSCredential builds a credential from a CWT Claims Set (RFC 8392) whose cnf claim holds a
// COSE_Key (RFC 9528 §3.5.2). With kid non-nil it is referenced by that kid; with kid nil it is
// referenced by the COSE_Key's kid if present, else transported by value (kccs).
func NewCCSCredential(ccs []byte, kid []byte) (*Credential, error) {
	pub, keyKid, err := parseCCS(ccs)
	if err != nil {
		return nil, err
	}
	c := &Credential{Cred: bytes.Clone(ccs), PublicKey: pub}
	switch {
	case kid != nil:
		c.ID = IDCredKid(kid)
	case keyKid != nil:
		c.ID = IDCredKid(keyKid)
	default:
		c.ID = IDCredKCCS(ccs)
	}
	return c, nil
}

// CredentialFromIDCred builds the credential that an ID_CRED transports by value (x5chain or
// kccs). It makes no trust decision: a Resolver calls it and then verifies the chain or CCS.
func CredentialFromIDCred(id *IDCred) (*Credential, error) {
	switch {
	case len(id.X5Chain) > 0:
		chain := make([]*x509.Certificate, len(id.X5Chain))
		for i, d := range id.X5Chain {
			crt, err := x509.ParseCertificate(d)
			if err != nil {
				return nil, fmt.Errorf("edhoc: x5chain certificate %d: %w", i, err)
			}
			chain[i] = crt
		}
		return &Credential{ID: *id, Cred: appendBstr(nil, id.X5Chain[0]), PublicKey: chain[0].PublicKey, Certificates: chain}, nil
	case id.KCCS != nil:
		pub, _, err := parseCCS(id.KCCS)
		if err != nil {
			return nil, err
		}
		return &Credential{ID: *id, Cred: bytes.Clone(id.KCCS), PublicKey: pub}, nil
	}
	return nil, ErrUnknownCredential
}

// parseCCS extracts the COSE_Key from the cnf claim (8) of a CCS: {8: {1: COSE_Key}}.
func parseCCS(ccs []byte) (crypto.PublicKey, []byte, error) {
	r := &reader{b: ccs}
	entries, err := r.readMap()
	if err != nil || !r.empty() {
		return nil, nil, fmt.Errorf("edhoc: CCS is not a single CBOR map: %v", err)
	}
	cnf := findInt(entries, 8)
	if cnf == nil {
		return nil, nil, errors.New("edhoc: CCS without cnf claim")
	}
	cr := &reader{b: cnf}
	ce, err := cr.readMap()
	if err != nil {
		return nil, nil, fmt.Errorf("edhoc: CCS cnf: %w", err)
	}
	ck := findInt(ce, 1)
	if ck == nil {
		return nil, nil, errors.New("edhoc: CCS cnf without COSE_Key")
	}
	return parseCOSEKey(ck)
}

func findInt(entries [][2][]byte, label int64) []byte {
	for _, e := range entries {
		r := &reader{b: e[0]}
		if m := r.peekMajor(); m != majUint && m != majNint {
			continue
		}
		if v, err := r.readInt(); err == nil && v == label {
			return e[1]
		}
	}
	return nil
}

// parseCOSEKey decodes an OKP (Ed25519/X25519) or EC2 (P-256) COSE_Key (RFC 9053 §7).
func parseCOSEKey(b []byte) (crypto.PublicKey, []byte, error) {
	r := &reader{b: b}
	entries, err := r.readMap()
	if err != nil {
		return nil, nil, fmt.Errorf("edhoc: COSE_Key: %w", err)
	}
	getInt := func(l int64) (int64, bool) {
		v := findInt(entries, l)
		if v == nil {
			return 0, false
		}
		x, err := (&reader{b: v}).readInt()
		return x, err == nil
	}
	getBstr := func(l int64) []byte {
		v := findInt(entries, l)
		if v == nil {
			return nil
		}
		x, err := (&reader{b: v}).readBstr()
		if err != nil {
			return nil
		}
		return x
	}
	kty, _ := getInt(1)
	crv, _ := getInt(-1)
	kid := bytes.Clone(getBstr(2))
	x := getBstr(-2)
	switch {
	case kty == 1 && crv == 6: // OKP Ed25519
		if len(x) != ed25519.PublicKeySize {
			return nil, nil, errors.New("edhoc: COSE_Key: bad Ed25519 key")
		}
		return ed25519.PublicKey(bytes.Clone(x)), kid, nil
	case kty == 1 && crv == 4: // OKP X25519
		pub, err := ecdh.X25519().NewPublicKey(x)
		if err != nil {
			return nil, nil, fmt.Errorf("edhoc: COSE_Key: %w", err)
		}
		return pub, kid, nil
	case kty == 2 && crv == 1: // EC2 P-256
		y := getBstr(-3)
		if len(x) != 32 || len(y) != 32 {
			return nil, nil, errors.New("edhoc: COSE_Key: bad P-256 coordinates")
		}
		enc := append(append([]byte{4}, x...), y...)
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), enc)
		if err != nil {
			return nil, nil, fmt.Errorf("edhoc: COSE_Key: %w", err)
		}
		return pub, kid, nil
	}
	return nil, nil, fmt.Errorf("edhoc: COSE_Key: unsupported kty %d / crv %d", kty, crv)
}

// CCSFromPublicKey builds a minimal CCS {2: sub, 8: {1: COSE_Key}} for a public key
// (ed25519.PublicKey, *ecdsa.PublicKey P-256 or *ecdh.PublicKey), with an optional kid in
// the COSE_Key. It is meant for tests and provisioning tools.
func CCSFromPublicKey(sub string, kid []byte, pub crypto.PublicKey) ([]byte, error) {
	var key []byte
	n := uint64(3)
	if kid != nil {
		n++
	}
	// okpKey is a COSE_Key {1: 1 (OKP), [2: kid,] -1: crv, -2: x} (RFC 9053 §7.2).
	okpKey := func(crv int64, x []byte) []byte {
		key := appendHead(nil, majMap, n)
		key = appendInt(key, 1)
		key = appendInt(key, 1)
		if kid != nil {
			key = appendInt(key, 2)
			key = appendBstr(key, kid)
		}
		key = appendInt(key, -1)
		key = appendInt(key, crv)
		key = appendInt(key, -2)
		return appendBstr(key, x)
	}
	switch k := pub.(type) {
	case ed25519.PublicKey:
		key = okpKey(6, k) // Ed25519
	case *ecdh.PublicKey:
		if k.Curve() == ecdh.X25519() {
			key = okpKey(4, k.Bytes()) // X25519
			break
		}
		b := k.Bytes()
		key = ec2Key(kid, b[1:33], b[33:65])
	case *ecdsa.PublicKey:
		b, err := k.Bytes()
		if err != nil || k.Curve != elliptic.P256() {
			return nil, errors.New("edhoc: CCS: only P-256 ECDSA keys")
		}
		key = ec2Key(kid, b[1:33], b[33:65])
	default:
		return nil, fmt.Errorf("edhoc: CCS: unsupported key type %T", pub)
	}
	b := appendHead(nil, majMap, 2)
	b = appendInt(b, 2)
	b = appendTstr(b, sub)
	b = appendInt(b, 8)
	b = appendHead(b, majMap, 1)
	b = appendInt(b, 1)
	return append(b, key...), nil
}

func ec2Key(kid, x, y []byte) []byte {
	n := uint64(4)
	if kid != nil {
		n++
	}
	key := appendHead(nil, majMap, n)
	key = appendInt(key, 1)
	key = appendInt(key, 2)
	if kid != nil {
		key = appendInt(key, 2)
		key = appendBstr(key, kid)
	}
	key = appendInt(key, -1)
	key = appendInt(key, 1)
	key = appendInt(key, -2)
	key = appendBstr(key, x)
	key = appendInt(key, -3)
	return appendBstr(key, y)
}
