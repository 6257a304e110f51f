package edhoc

import (
	"bytes"
	"crypto"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
)

// Resolver finds and authorizes the peer's credential from its ID_CRED_x (RFC 9528 §3.5.3,
// §5.3.3 step 3, §5.4.3). It returns ErrUnknownCredential (or an error wrapping it) when the
// credential is unknown or untrusted; any other error also aborts the session. ead holds the
// EAD items of the same message, for credentials transported or authorized through EAD.
type Resolver func(id *IDCred, ead []EAD) (*Credential, error)

// Config configures an Initiator or a Responder.
type Config struct {
	// Method is the authentication method the Initiator proposes (Initiator only).
	Method Method
	// Methods restricts the methods a Responder accepts; nil accepts all four (Responder only).
	Methods []Method
	// Suites: for the Initiator, SUITES_I in order of preference, truncated after the selected
	// suite, which is the last element (RFC 9528 §5.2.2; use SuitesAfterError to retry after an
	// error). For the Responder, the suites it supports in order of preference; nil = all
	// implemented ones.
	Suites []Suite
	// Credential is the own authentication credential (CRED_x and ID_CRED_x).
	Credential *Credential
	// PrivateKey is the own authentication key: a crypto.Signer (ed25519.PrivateKey,
	// *ecdsa.PrivateKey P-256) when this side signs, an *ecdh.PrivateKey (or *ecdsa.PrivateKey
	// P-256) when it authenticates with static DH.
	PrivateKey crypto.PrivateKey
	// ConnID is the own connection identifier (C_I or C_R, raw bytes); nil = random (§3.3).
	ConnID []byte
	// Resolve decides about the peer's credential. Required.
	Resolve Resolver
	// OnEAD, when set, sees the EAD items of every received message (1..4) after the message
	// authenticated (message_1: after decoding) and may abort by returning an error. When nil,
	// a critical item (negative label) aborts the session (§3.8) and others are only returned.
	OnEAD func(message int, items []EAD) error
	// Ephemeral injects the ephemeral key X or Y (test vectors); nil = fresh from Rand.
	Ephemeral *ecdh.PrivateKey
	// Rand is the randomness source; nil = crypto/rand.
	Rand io.Reader
	// Trace, when set, receives every intermediate value under the names of RFC 9529
	// (lowercase, e.g. "th_2", "prk_3e2m", "keystream_2"). It exposes secrets: tests only.
	Trace func(name string, value []byte)
	// Logger receives debug logs; nil = discard.
	Logger *slog.Logger
}

// Error is a local processing failure of a received message. Reply, when non-nil, is the
// error message RFC 9528 §6 says to send to the peer; errors.As(err, &*edhoc.Error) finds it.
type Error struct {
	Err   error
	Reply *ErrorMessage
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// ReplyFor returns the encoded EDHOC error message to send for err, or nil when none applies.
func ReplyFor(err error) []byte {
	var e *Error
	if errors.As(err, &e) && e.Reply != nil {
		return e.Reply.Marshal()
	}
	return nil
}

func failUnspecified(err error, diag string) *Error {
	return &Error{Err: err, Reply: &ErrorMessage{Code: ErrCodeUnspecified, Diagnostic: diag}}
}

// ErrState is returned when a method is called out of order or after the session failed.
var ErrState = errors.New("edhoc: call out of order or session already failed")

// ErrAuth is returned when a MAC, signature or AEAD check fails.
var ErrAuth = errors.New("edhoc: authentication failed")

type state int

const (
	stStart state = iota
	stWaitM2
	stGotM2 // Initiator: message_2 verified, message_3 not yet sent
	stGotM1 // Responder: message_1 accepted, message_2 not yet sent
	stWaitM3
	stCompleted // PRK_out available
	stFailed
)

// session is the part of the state both roles share. It holds nothing global: abandoning a
// session is just dropping it (call Close to wipe the secrets early).
type session struct {
	cfg    Config
	p      *suiteParams
	method Method
	st     state
	rnd    io.Reader
	log    *slog.Logger

	eph     *ecdh.PrivateKey
	peerEph *ecdh.PublicKey
	ci, cr  []byte

	th2, th3, th4           []byte
	prk2e, prk3e2m, prk4e3m []byte
	prkOut, prkExporter     []byte
	peerCred                *Credential
	h1                      []byte
}

func newSession(cfg Config) (*session, error) {
	if cfg.Resolve == nil {
		return nil, errors.New("edhoc: Config.Resolve is required")
	}
	if cfg.Credential == nil || cfg.PrivateKey == nil {
		return nil, errors.New("edhoc: Config.Credential and PrivateKey are required")
	}
	s := &session{cfg: cfg, rnd: cfg.Rand, log: cfg.Logger}
	if s.rnd == nil {
		s.rnd = rand.Reader
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s, nil
}

func (s *session) trace(name string, v []byte) {
	if s.cfg.Trace != nil {
		s.cfg.Trace(name, bytes.Clone(v))
	}
}

func (s *session) kdf(name string, prk []byte, label int, ctx []byte, length int) ([]byte, error) {
	if s.cfg.Trace != nil {
		s.trace("info_"+name, kdfInfo(label, ctx, length))
	}
	out, err := s.p.kdf(prk, label, ctx, length)
	if err == nil {
		s.trace(name, out)
	}
	return out, err
}

func (s *session) fail(err error) error {
	s.st = stFailed
	s.wipe()
	s.log.Debug("edhoc session failed", "err", err)
	return err
}

func (s *session) wipe() {
	// PRK_3e2m may share its bytes with PRK_2e and PRK_4e3m with PRK_3e2m; clearing twice is harmless.
	for _, b := range [][]byte{s.prk2e, s.prk3e2m, s.prk4e3m, s.prkOut, s.prkExporter} {
		clear(b)
	}
	s.prk2e, s.prk3e2m, s.prk4e3m, s.prkOut, s.prkExporter = nil, nil, nil, nil, nil
	s.eph = nil
}

// ephemeral returns the injected or a fresh ephemeral key.
func (s *session) ephemeral() (*ecdh.PrivateKey, error) {
	if k := s.cfg.Ephemeral; k != nil {
		if k.Curve() != s.p.ecdhCurve() {
			return nil, errors.New("edhoc: injected ephemeral key is on the wrong curve")
		}
		return k, nil
	}
	return s.p.ecdhCurve().GenerateKey(s.rnd)
}

// ownStaticDH returns the own static DH key for the suite's curve.
func (s *session) ownStaticDH() (*ecdh.PrivateKey, error) {
	var k *ecdh.PrivateKey
	switch v := s.cfg.PrivateKey.(type) {
	case *ecdh.PrivateKey:
		k = v
	case *ecdsa.PrivateKey:
		var err error
		if k, err = v.ECDH(); err != nil {
			return nil, fmt.Errorf("edhoc: static DH key: %w", err)
		}
	default:
		return nil, fmt.Errorf("edhoc: static DH needs an *ecdh.PrivateKey, have %T", s.cfg.PrivateKey)
	}
	if k.Curve() != s.p.ecdhCurve() {
		return nil, errors.New("edhoc: static DH key is not on the suite's curve")
	}
	return k, nil
}

// ownKeyFits checks that the own authentication key can serve the method and suite.
func (s *session) ownKeyFits(signs bool) error {
	if !signs {
		_, err := s.ownStaticDH()
		return err
	}
	signer, ok := s.cfg.PrivateKey.(crypto.Signer)
	if !ok {
		return fmt.Errorf("edhoc: signature method needs a crypto.Signer, have %T", s.cfg.PrivateKey)
	}
	switch pub := signer.Public().(type) {
	case ed25519.PublicKey:
		if s.p.sig == sigEdDSA {
			return nil
		}
	case *ecdsa.PublicKey:
		if s.p.sig == sigES256 && pub.Curve == elliptic.P256() {
			return nil
		}
	}
	return fmt.Errorf("edhoc: signing key %T does not fit suite %d", signer.Public(), s.p.id)
}

// peerStaticDH returns the peer's static DH public key from its credential.
func (s *session) peerStaticDH(c *Credential) (*ecdh.PublicKey, error) {
	var k *ecdh.PublicKey
	switch v := c.PublicKey.(type) {
	case *ecdh.PublicKey:
		k = v
	case *ecdsa.PublicKey:
		var err error
		if k, err = v.ECDH(); err != nil {
			return nil, fmt.Errorf("edhoc: peer static DH key: %w", err)
		}
	default:
		return nil, fmt.Errorf("edhoc: peer credential holds %T, not a static DH key", c.PublicKey)
	}
	if k.Curve() != s.p.ecdhCurve() {
		return nil, errors.New("edhoc: peer static DH key is not on the suite's curve")
	}
	return k, nil
}

func (s *session) sigLen(signs bool) int {
	if signs {
		return 64 // Ed25519 and ES256 (r || s)
	}
	return s.p.macLen
}

// macLen is mac_length_2 / mac_length_3 (§5.3.2, §5.4.2): hash length when the party signs,
// the suite's EDHOC MAC length for static DH.
func (s *session) macLen(signs bool) int {
	if signs {
		return s.p.hashLen
	}
	return s.p.macLen
}

// sigStructure builds the COSE Sig_structure of §5.3.2/§5.4.2:
// ["Signature1", << ID_CRED_x >>, << TH_x, CRED_x, ? EAD_x >>, MAC_x].
func sigStructure(idCred, th, cred []byte, ead []EAD, mac []byte) []byte {
	aad := appendBstr(nil, th)
	aad = append(aad, cred...)
	aad = appendEAD(aad, ead)
	return encodeCBOR(coseSigStructure{Context: "Signature1", Protected: idCred, ExternalAAD: aad, Payload: mac})
}

// coseSigStructure is a COSE Sig_structure for a COSE_Sign1 (RFC 9052 §4.4).
type coseSigStructure struct {
	_           struct{} `cbor:",toarray"`
	Context     string
	Protected   []byte
	ExternalAAD []byte
	Payload     []byte
}

// encStructure is the COSE Enc_structure ["Encrypt0", empty bstr, TH_x], the AAD of §5.4.2 and §5.5.2.
func encStructure(th []byte) []byte {
	return encodeCBOR(coseEncStructure{Context: "Encrypt0", Protected: nil, ExternalAAD: th})
}

// coseEncStructure is a COSE Enc_structure for a COSE_Encrypt0 (RFC 9052 §5.3).
type coseEncStructure struct {
	_           struct{} `cbor:",toarray"`
	Context     string
	Protected   []byte
	ExternalAAD []byte
}

func (s *session) sign(msg []byte) ([]byte, error) {
	signer, ok := s.cfg.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("edhoc: signature method needs a crypto.Signer, have %T", s.cfg.PrivateKey)
	}
	switch pub := signer.Public().(type) {
	case ed25519.PublicKey:
		if s.p.sig != sigEdDSA {
			return nil, errors.New("edhoc: suite needs ES256, key is Ed25519")
		}
		return signer.Sign(s.rnd, msg, crypto.Hash(0))
	case *ecdsa.PublicKey:
		if s.p.sig != sigES256 || pub.Curve != elliptic.P256() {
			return nil, errors.New("edhoc: suite needs EdDSA or key is not P-256")
		}
		d := sha256.Sum256(msg)
		der, err := signer.Sign(s.rnd, d[:], crypto.SHA256)
		if err != nil {
			return nil, fmt.Errorf("edhoc: ES256 sign: %w", err)
		}
		var rs struct{ R, S *big.Int }
		if _, err := asn1.Unmarshal(der, &rs); err != nil {
			return nil, fmt.Errorf("edhoc: ES256 signature encoding: %w", err)
		}
		out := make([]byte, 64)
		rs.R.FillBytes(out[:32])
		rs.S.FillBytes(out[32:])
		return out, nil
	default:
		return nil, fmt.Errorf("edhoc: unsupported signing key %T", pub)
	}
}

func (s *session) verify(pub crypto.PublicKey, msg, sig []byte) error {
	switch k := pub.(type) {
	case ed25519.PublicKey:
		if s.p.sig != sigEdDSA {
			return errors.New("edhoc: peer key is Ed25519, suite needs ES256")
		}
		if !ed25519.Verify(k, msg, sig) {
			return ErrAuth
		}
		return nil
	case *ecdsa.PublicKey:
		if s.p.sig != sigES256 || k.Curve != elliptic.P256() {
			return errors.New("edhoc: peer key does not fit the suite's signature algorithm")
		}
		d := sha256.Sum256(msg)
		r, ss := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
		if !ecdsa.Verify(k, d[:], r, ss) {
			return ErrAuth
		}
		return nil
	}
	return fmt.Errorf("edhoc: peer credential holds %T, not a signature key", pub)
}

// resolve calls the Resolver and maps unknown credentials to ERR_CODE 3 (§6.4).
func (s *session) resolve(id *IDCred, ead []EAD) (*Credential, error) {
	c, err := s.cfg.Resolve(id, withoutPadding(ead))
	if err != nil {
		if errors.Is(err, ErrUnknownCredential) {
			return nil, &Error{Err: err, Reply: &ErrorMessage{Code: ErrCodeUnknownCredential}}
		}
		return nil, failUnspecified(fmt.Errorf("edhoc: credential rejected: %w", err), "credential rejected")
	}
	if c == nil || c.Cred == nil {
		return nil, &Error{Err: ErrUnknownCredential, Reply: &ErrorMessage{Code: ErrCodeUnknownCredential}}
	}
	return c, nil
}

// withoutPadding drops padding items (ead_label 0): §3.8.1 says the receiver ignores and
// discards them. (They still enter context_2/3 and the Sig_structure as received.)
func withoutPadding(items []EAD) []EAD {
	var out []EAD
	for _, e := range items {
		if e.Label != 0 {
			out = append(out, e)
		}
	}
	return out
}

// checkEAD applies Config.OnEAD or the default rule for critical items (§3.8: an unknown
// critical item aborts the session with an error message). Padding is not shown to OnEAD.
func (s *session) checkEAD(msg int, items []EAD) error {
	items = withoutPadding(items)
	if s.cfg.OnEAD != nil {
		if err := s.cfg.OnEAD(msg, items); err != nil {
			return failUnspecified(fmt.Errorf("edhoc: EAD_%d rejected: %w", msg, err), "EAD rejected")
		}
		return nil
	}
	for _, e := range items {
		if e.Critical() {
			return failUnspecified(fmt.Errorf("edhoc: unsupported critical EAD_%d item %d", msg, e.Label), "unsupported critical EAD")
		}
	}
	return nil
}

// finish derives PRK_out and PRK_exporter from TH_4 (§4.1.3) and drops what the completed
// session no longer needs (only PRK_4e3m stays, for message_4).
func (s *session) finish() error {
	var err error
	if s.prkOut, err = s.kdf("prk_out", s.prk4e3m, 7, s.th4, s.p.hashLen); err != nil {
		return err
	}
	for _, b := range [][]byte{s.prk2e, s.prk3e2m} {
		if len(b) > 0 && &b[0] != &s.prk4e3m[0] {
			clear(b)
		}
	}
	s.prk2e, s.prk3e2m = nil, nil
	return s.deriveExporter()
}

func (s *session) deriveExporter() error {
	var err error
	s.prkExporter, err = s.kdf("prk_exporter", s.prkOut, 10, nil, s.p.hashLen)
	return err
}

func (s *session) message4Keys() (cipher.AEAD, []byte, error) {
	k4, err := s.kdf("k_4", s.prk4e3m, 8, s.th4, s.p.keyLen)
	if err != nil {
		return nil, nil, err
	}
	iv4, err := s.kdf("iv_4", s.prk4e3m, 9, s.th4, s.p.ivLen)
	if err != nil {
		return nil, nil, err
	}
	a, err := s.p.aead(k4)
	if err != nil {
		return nil, nil, err
	}
	return a, iv4, nil
}

// ---- results, exporter, key update, OSCORE (§4.2, Appendix A.1) ----

// Exporter is EDHOC_Exporter(label, context, length) = EDHOC_KDF(PRK_exporter, label, context,
// length) (RFC 9528 §4.2.1). Labels 0 and 1 are the OSCORE master secret and salt; 32768-65535
// are for private use.
func (s *session) Exporter(label int, context []byte, length int) ([]byte, error) {
	if s.st != stCompleted {
		return nil, ErrState
	}
	if label < 0 || length <= 0 {
		return nil, errors.New("edhoc: exporter label must be a uint and length positive")
	}
	return s.p.kdf(s.prkExporter, label, context, length)
}

// PRKOut returns a copy of PRK_out (§4.1.3) once the session completed.
func (s *session) PRKOut() ([]byte, error) {
	if s.st != stCompleted {
		return nil, ErrState
	}
	return bytes.Clone(s.prkOut), nil
}

// KeyUpdate replaces PRK_out by EDHOC_KDF(PRK_out, 11, context, hash_length) and derives a new
// PRK_exporter (RFC 9528 Appendix H). Both peers must call it with the same context.
func (s *session) KeyUpdate(context []byte) error {
	if s.st != stCompleted {
		return ErrState
	}
	out, err := s.kdf("keyupdate_prk_out", s.prkOut, 11, context, s.p.hashLen)
	if err != nil {
		return err
	}
	clear(s.prkOut)
	s.prkOut = out
	clear(s.prkExporter)
	s.prkExporter, err = s.kdf("keyupdate_prk_exporter", s.prkOut, 10, nil, s.p.hashLen)
	return err
}

// OSCOREContext is the input for an OSCORE security context (RFC 8613) derived from EDHOC
// (RFC 9528 Appendix A.1). The ids are this side's: the Initiator's Sender ID is C_R.
type OSCOREContext struct {
	MasterSecret []byte
	MasterSalt   []byte
	SenderID     []byte
	RecipientID  []byte
	AEAD         int // COSE AEAD algorithm (the suite's application AEAD)
	Hash         int // COSE hash algorithm of the application HKDF
}

func (s *session) oscore(initiator bool) (*OSCOREContext, error) {
	if s.st != stCompleted {
		return nil, ErrState
	}
	secret, err := s.Exporter(0, nil, s.p.appKeyLen)
	if err != nil {
		return nil, err
	}
	salt, err := s.Exporter(1, nil, 8)
	if err != nil {
		return nil, err
	}
	c := &OSCOREContext{MasterSecret: secret, MasterSalt: salt, AEAD: s.p.appAEAD, Hash: s.p.appHash}
	if initiator {
		c.SenderID, c.RecipientID = bytes.Clone(s.cr), bytes.Clone(s.ci)
	} else {
		c.SenderID, c.RecipientID = bytes.Clone(s.ci), bytes.Clone(s.cr)
	}
	return c, nil
}

// Suite returns the selected cipher suite (valid after message_1 was sent or accepted).
func (s *session) Suite() Suite {
	if s.p == nil {
		return -1
	}
	return s.p.id
}

// Method returns the authentication method.
func (s *session) Method() Method { return s.method }

// ConnIDs returns C_I and C_R (raw).
func (s *session) ConnIDs() (ci, cr []byte) { return bytes.Clone(s.ci), bytes.Clone(s.cr) }

// PeerCredential returns the peer's credential once it was authenticated.
func (s *session) PeerCredential() *Credential {
	if s.st != stCompleted && s.st != stGotM2 {
		return nil
	}
	return s.peerCred
}

// Completed reports whether PRK_out is available.
func (s *session) Completed() bool { return s.st == stCompleted }

// Close wipes the session's secrets; the session cannot be used afterwards.
func (s *session) Close() {
	s.wipe()
	s.st = stFailed
}

// randomConnID picks a random one-byte connection identifier that encodes as a CBOR int
// (§3.3.2: the shortest identifiers), different from avoid.
func randomConnID(rnd io.Reader, avoid []byte) ([]byte, error) {
	var b [1]byte
	for range 64 {
		if _, err := io.ReadFull(rnd, b[:]); err != nil {
			return nil, fmt.Errorf("edhoc: connection identifier: %w", err)
		}
		v := b[0] % 48
		if v >= 24 {
			v += 8 // 0x20..0x37
		}
		id := []byte{v}
		if !bytes.Equal(id, avoid) {
			return id, nil
		}
	}
	return nil, errors.New("edhoc: cannot pick a connection identifier")
}
