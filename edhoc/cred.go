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
	return IDCred{Raw: encodeCBOR(map[int64]any{HeaderKid: kid}), Kid: bytes.Clone(kid)}
}

// IDCredX5T references an X.509 certificate by its SHA-256/64 hash (as RFC 9529 trace 1 does).
func IDCredX5T(certDER []byte) IDCred {
	sum := sha256.Sum256(certDER)
	h := bytes.Clone(sum[:8])
	raw := encodeCBOR(map[int64]any{HeaderX5T: []any{int64(AlgSHA256_64), h}})
	return IDCred{Raw: raw, X5T: &CertHash{Alg: AlgSHA256_64, Hash: h}}
}

// IDCredX5Chain transports an X.509 chain (end-entity first). A single certificate is encoded
// as a bstr, several as an array (RFC 9360 §2).
func IDCredX5Chain(ders [][]byte) IDCred {
	var v any = ders
	if len(ders) == 1 {
		v = ders[0]
	}
	chain := make([][]byte, len(ders))
	for i, d := range ders {
		chain[i] = bytes.Clone(d)
	}
	return IDCred{Raw: encodeCBOR(map[int64]any{HeaderX5Chain: v}), X5Chain: chain}
}

// IDCredKCCS transports a CCS by value. The CCS must be one deterministically encoded CBOR
// map, as NewCCSCredential and ParseIDCred check.
func IDCredKCCS(ccs []byte) (IDCred, error) {
	v, err := decodeOne(ccs)
	if err != nil {
		return IDCred{}, fmt.Errorf("edhoc: kccs: %w", err)
	}
	if _, ok := v.(map[any]any); !ok {
		return IDCred{}, fmt.Errorf("edhoc: kccs: %w", wrongType("map", v))
	}
	// ccs is deterministic, so encoding its decoded value gives ccs back, byte for byte.
	return IDCred{Raw: encodeCBOR(map[int64]any{HeaderKCCS: v}), KCCS: bytes.Clone(ccs)}, nil
}

// decodeOne decodes b, which must be exactly one deterministically encoded item.
func decodeOne(b []byte) (any, error) {
	r := &reader{rest: b}
	v, _, err := r.next()
	if err != nil {
		return nil, err
	}
	if !r.empty() {
		return nil, fmt.Errorf("%w: %d trailing bytes", errCBOR, len(r.rest))
	}
	return v, nil
}

// ParseIDCred parses the CBOR encoding of an ID_CRED_x map.
func ParseIDCred(b []byte) (*IDCred, error) {
	v, err := decodeOne(b)
	if err != nil {
		return nil, fmt.Errorf("edhoc: ID_CRED: %w", err)
	}
	m, ok := v.(map[any]any)
	if !ok {
		return nil, fmt.Errorf("edhoc: ID_CRED: %w", wrongType("map", v))
	}
	return idCredFromMap(m, b)
}

// idCredFromMap reads the recognized parameters of a decoded ID_CRED_x map whose
// encoding is raw. Parameters with text labels are not used here and are kept in Raw.
func idCredFromMap(m map[any]any, raw []byte) (*IDCred, error) {
	id := &IDCred{Raw: bytes.Clone(raw)}
	if v, ok := mapLookup(m, HeaderKid); ok {
		kid, ok := v.([]byte)
		if !ok {
			return nil, fmt.Errorf("edhoc: ID_CRED kid: %w", wrongType("byte string", v))
		}
		id.Kid = kid
	}
	if v, ok := mapLookup(m, HeaderX5T); ok {
		arr, ok := v.([]any)
		if !ok || len(arr) != 2 {
			return nil, fmt.Errorf("edhoc: ID_CRED x5t: want [alg, hash]")
		}
		alg, err := intValue(arr[0])
		if err != nil {
			return nil, fmt.Errorf("edhoc: ID_CRED x5t alg: %w", err)
		}
		h, ok := arr[1].([]byte)
		if !ok {
			return nil, fmt.Errorf("edhoc: ID_CRED x5t hash: %w", wrongType("byte string", arr[1]))
		}
		id.X5T = &CertHash{Alg: int(alg), Hash: h}
	}
	if v, ok := mapLookup(m, HeaderX5Chain); ok {
		switch x := v.(type) {
		case []byte:
			id.X5Chain = [][]byte{x}
		case []any:
			if len(x) == 0 {
				return nil, fmt.Errorf("edhoc: ID_CRED x5chain: want bstr or array of bstr")
			}
			for _, e := range x {
				d, ok := e.([]byte)
				if !ok {
					return nil, fmt.Errorf("edhoc: ID_CRED x5chain: %w", wrongType("byte string", e))
				}
				id.X5Chain = append(id.X5Chain, d)
			}
		default:
			return nil, fmt.Errorf("edhoc: ID_CRED x5chain: want bstr or array of bstr")
		}
	}
	if v, ok := mapLookup(m, HeaderKCCS); ok {
		if _, ok := v.(map[any]any); !ok {
			return nil, fmt.Errorf("edhoc: ID_CRED kccs: want map")
		}
		// The map was checked to be deterministic, so this is its encoding within raw.
		id.KCCS = encodeCBOR(v)
	}
	return id, nil
}

// onlyKid reports whether the map holds nothing but a kid, in which case PLAINTEXT_2/3 carry
// the compact form (RFC 9528 §3.5.3.2).
func (id *IDCred) onlyKid() bool {
	if id.Kid == nil {
		return false
	}
	v, err := decodeOne(id.Raw)
	m, ok := v.(map[any]any)
	return err == nil && ok && len(m) == 1
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
		if c.ID, err = IDCredKCCS(ccs); err != nil {
			return nil, err
		}
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
	v, err := decodeOne(ccs)
	if err != nil {
		return nil, nil, fmt.Errorf("edhoc: CCS is not a single CBOR map: %w", err)
	}
	claims, ok := v.(map[any]any)
	if !ok {
		return nil, nil, fmt.Errorf("edhoc: CCS is not a single CBOR map: %w", wrongType("map", v))
	}
	cnfV, ok := mapLookup(claims, 8)
	if !ok {
		return nil, nil, errors.New("edhoc: CCS without cnf claim")
	}
	cnf, ok := cnfV.(map[any]any)
	if !ok {
		return nil, nil, fmt.Errorf("edhoc: CCS cnf: %w", wrongType("map", cnfV))
	}
	keyV, ok := mapLookup(cnf, 1)
	if !ok {
		return nil, nil, errors.New("edhoc: CCS cnf without COSE_Key")
	}
	key, ok := keyV.(map[any]any)
	if !ok {
		return nil, nil, fmt.Errorf("edhoc: COSE_Key: %w", wrongType("map", keyV))
	}
	return parseCOSEKey(key)
}

// parseCOSEKey decodes an OKP (Ed25519/X25519) or EC2 (P-256) COSE_Key (RFC 9053 §7).
func parseCOSEKey(entries map[any]any) (crypto.PublicKey, []byte, error) {
	getInt := func(l int64) int64 {
		v, _ := mapLookup(entries, l)
		x, err := intValue(v)
		if err != nil {
			return 0
		}
		return x
	}
	getBstr := func(l int64) []byte {
		v, _ := mapLookup(entries, l)
		x, _ := v.([]byte)
		return x
	}
	kty := getInt(1)
	crv := getInt(-1)
	kid := getBstr(2)
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
	var key map[int64]any
	switch k := pub.(type) {
	case ed25519.PublicKey:
		key = okpKey(kid, 6, k) // Ed25519
	case *ecdh.PublicKey:
		if k.Curve() == ecdh.X25519() {
			key = okpKey(kid, 4, k.Bytes()) // X25519
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
	// Deterministic encoding sorts the labels (RFC 8949 §4.2.1): 1, 2, -1, -2, -3.
	return encodeCBOR(map[int64]any{2: sub, 8: map[int64]any{1: key}}), nil
}

// okpKey is a COSE_Key {1: 1 (OKP), [2: kid,] -1: crv, -2: x} (RFC 9053 §7.2).
func okpKey(kid []byte, crv int64, x []byte) map[int64]any {
	key := map[int64]any{1: 1, -1: crv, -2: x}
	if kid != nil {
		key[2] = kid
	}
	return key
}

// ec2Key is a COSE_Key {1: 2 (EC2), [2: kid,] -1: 1 (P-256), -2: x, -3: y} (RFC 9053 §7.1.1).
func ec2Key(kid, x, y []byte) map[int64]any {
	key := map[int64]any{1: 2, -1: 1, -2: x, -3: y}
	if kid != nil {
		key[2] = kid
	}
	return key
}
