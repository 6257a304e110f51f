package edhoc

import (
	"bytes"
	"crypto/ecdh"
	"crypto/subtle"
	"errors"
	"fmt"
)

// Initiator runs the Initiator side of EDHOC (RFC 9528 §5): Message1, ProcessMessage2,
// Message3, then optionally ProcessMessage4. Any failure ends the session (§5.1: the session
// is aborted and its state erased); every later call returns ErrState.
//
// After Message3 the session is completed and these methods (shared with Responder) work:
// Exporter(label, context, length), OSCORE(), KeyUpdate(context), PRKOut(); and at any time
// Suite(), Method(), ConnIDs(), PeerCredential(), Completed(), Close().
// An Initiator is not safe for concurrent use.
type Initiator struct {
	session
	m1 []byte
}

// NewInitiator checks the configuration and returns an Initiator in its start state.
func NewInitiator(cfg Config) (*Initiator, error) {
	s, err := newSession(cfg)
	if err != nil {
		return nil, err
	}
	if !cfg.Method.valid() {
		return nil, fmt.Errorf("edhoc: invalid method %d", cfg.Method)
	}
	if len(cfg.Suites) == 0 {
		return nil, errors.New("edhoc: Config.Suites (SUITES_I) is empty")
	}
	sel := cfg.Suites[len(cfg.Suites)-1]
	if s.p, err = params(sel); err != nil {
		return nil, err
	}
	s.method = cfg.Method
	if err := s.ownKeyFits(cfg.Method.InitiatorSigns()); err != nil {
		return nil, err
	}
	return &Initiator{session: *s}, nil
}

// SuitesAfterError computes SUITES_I for a new attempt after the Responder answered with
// ERR_CODE 2 (RFC 9528 §5.2.2, §6.3.2): the Initiator's preference list truncated after the
// first suite (in the Initiator's order) that the Responder supports, which becomes the
// selected one. RFC 9529 trace 2: preferred [6, 2], SUITES_R 2 → [6, 2].
func SuitesAfterError(preferred []Suite, suitesR []Suite) ([]Suite, error) {
	for i, s := range preferred {
		for _, r := range suitesR {
			if s == r {
				return append([]Suite(nil), preferred[:i+1]...), nil
			}
		}
	}
	return nil, errors.New("edhoc: no cipher suite in common with the Responder")
}

// Message1 builds message_1 (§5.2.2) with the optional EAD_1.
func (i *Initiator) Message1(ead []EAD) ([]byte, error) {
	if i.st != stStart {
		return nil, ErrState
	}
	var err error
	if i.eph, err = i.ephemeral(); err != nil {
		return nil, i.fail(fmt.Errorf("edhoc: ephemeral key: %w", err))
	}
	i.ci = bytes.Clone(i.cfg.ConnID)
	if i.ci == nil {
		if i.ci, err = randomConnID(i.rnd, nil); err != nil {
			return nil, i.fail(err)
		}
	}
	m := &Message1{Method: i.method, SuitesI: i.cfg.Suites, GX: i.p.encodePublic(i.eph.PublicKey()), CI: i.ci, EAD: ead}
	i.m1 = m.Marshal()
	i.h1 = i.p.hash(i.m1)
	i.trace("message_1", i.m1)
	i.trace("h_message_1", i.h1)
	i.st = stWaitM2
	return bytes.Clone(i.m1), nil
}

// Message2Info is what the Initiator learned from message_2.
type Message2Info struct {
	CR   []byte      // the Responder's connection identifier
	Peer *Credential // the Responder's credential, as the Resolver returned it
	EAD  []EAD       // EAD_2
}

// ProcessMessage2 decrypts and verifies message_2 (§5.3.3). If msg is an EDHOC error message
// the returned error is the peer's *ErrorMessage (ERR_CODE 2 carries SUITES_R).
func (i *Initiator) ProcessMessage2(msg []byte) (*Message2Info, error) {
	if i.st != stWaitM2 {
		return nil, ErrState
	}
	info, err := i.processMessage2(msg)
	if err != nil {
		return nil, i.fail(err)
	}
	i.st = stGotM2
	return info, nil
}

func (i *Initiator) processMessage2(msg []byte) (*Message2Info, error) {
	if IsErrorMessage(msg) {
		em, err := ParseErrorMessage(msg)
		if err != nil {
			return nil, err
		}
		return nil, em
	}
	gyb, ct2, err := parseMessage2(msg, 32)
	if err != nil {
		return nil, failUnspecified(err, "malformed message_2")
	}
	if i.peerEph, err = i.p.decodePublic(gyb, false); err != nil {
		return nil, failUnspecified(malformed("message_2 G_Y", err), "invalid G_Y")
	}
	// TH_2 = H(G_Y, H(message_1)) (§5.3.2)
	in := appendBstr(appendBstr(nil, gyb), i.h1)
	i.trace("input_th_2", in)
	i.th2 = i.p.hash(in)
	i.trace("th_2", i.th2)
	gxy, err := dh(i.eph, i.peerEph)
	if err != nil {
		return nil, failUnspecified(err, "invalid G_Y")
	}
	i.trace("g_xy", gxy)
	if i.prk2e, err = i.p.extract(i.th2, gxy); err != nil {
		return nil, err
	}
	i.trace("prk_2e", i.prk2e)
	ks, err := i.kdf("keystream_2", i.prk2e, 0, i.th2, len(ct2))
	if err != nil {
		return nil, failUnspecified(err, "message_2 too long")
	}
	pt2 := make([]byte, len(ct2))
	subtle.XORBytes(pt2, ct2, ks)
	i.trace("plaintext_2", pt2)
	p2, err := ParsePlaintext2(pt2, i.sigLen(i.method.ResponderSigns()))
	if err != nil {
		return nil, failUnspecified(err, "malformed PLAINTEXT_2")
	}
	if bytes.Equal(p2.CR, i.ci) {
		// §3.3.2: C_R is chosen different from C_I.
		return nil, failUnspecified(errors.New("edhoc: C_R equals C_I"), "C_R equals C_I")
	}
	i.cr = p2.CR
	cred, err := i.resolve(p2.IDCredR, p2.EAD)
	if err != nil {
		return nil, err
	}
	// PRK_3e2m (§4.1.1.2)
	if i.method.ResponderSigns() {
		i.prk3e2m = i.prk2e
	} else {
		pub, err := i.peerStaticDH(cred)
		if err != nil {
			return nil, failUnspecified(err, "credential does not fit the method")
		}
		salt, err := i.kdf("salt_3e2m", i.prk2e, 1, i.th2, i.p.hashLen)
		if err != nil {
			return nil, err
		}
		grx, err := dh(i.eph, pub)
		if err != nil {
			return nil, err
		}
		i.trace("g_rx", grx)
		if i.prk3e2m, err = i.p.extract(salt, grx); err != nil {
			return nil, err
		}
	}
	i.trace("prk_3e2m", i.prk3e2m)
	// MAC_2 = EDHOC_KDF(PRK_3e2m, 2, context_2, mac_length_2), context_2 = << C_R, ID_CRED_R, TH_2, CRED_R, ? EAD_2 >>
	ctx2 := appendIDBytes(nil, i.cr)
	ctx2 = append(ctx2, p2.IDCredR.Raw...)
	ctx2 = appendBstr(ctx2, i.th2)
	ctx2 = append(ctx2, cred.Cred...)
	ctx2 = appendEAD(ctx2, p2.EAD)
	i.trace("context_2", ctx2)
	mac2, err := i.kdf("mac_2", i.prk3e2m, 2, ctx2, i.macLen(i.method.ResponderSigns()))
	if err != nil {
		return nil, err
	}
	if i.method.ResponderSigns() {
		tbs := sigStructure(p2.IDCredR.Raw, i.th2, cred.Cred, p2.EAD, mac2)
		i.trace("message_to_be_signed_2", tbs)
		if err := i.verify(cred.PublicKey, tbs, p2.SigOrMAC); err != nil {
			return nil, failUnspecified(fmt.Errorf("edhoc: Signature_or_MAC_2: %w", err), "authentication failed")
		}
	} else if subtle.ConstantTimeCompare(mac2, p2.SigOrMAC) != 1 {
		return nil, failUnspecified(fmt.Errorf("edhoc: MAC_2: %w", ErrAuth), "authentication failed")
	}
	i.trace("signature_or_mac_2", p2.SigOrMAC)
	if err := i.checkEAD(2, p2.EAD); err != nil {
		return nil, err
	}
	// TH_3 = H(TH_2, PLAINTEXT_2, CRED_R) (§5.3.3)
	in3 := appendBstr(nil, i.th2)
	in3 = append(in3, pt2...)
	in3 = append(in3, cred.Cred...)
	i.trace("input_th_3", in3)
	i.th3 = i.p.hash(in3)
	i.trace("th_3", i.th3)
	i.peerCred = cred
	return &Message2Info{CR: bytes.Clone(i.cr), Peer: cred, EAD: withoutPadding(p2.EAD)}, nil
}

// Message3 builds message_3 (§5.4.2) with the optional EAD_3. Afterwards the Initiator has
// PRK_out: Exporter and OSCORE work (message_4, if the application uses it, confirms that
// the Responder completed too).
func (i *Initiator) Message3(ead []EAD) ([]byte, error) {
	if i.st != stGotM2 {
		return nil, ErrState
	}
	m3, err := i.message3(ead)
	if err != nil {
		return nil, i.fail(err)
	}
	i.st = stCompleted
	return m3, nil
}

func (i *Initiator) message3(ead []EAD) ([]byte, error) {
	own := i.cfg.Credential
	var err error
	if i.method.InitiatorSigns() {
		i.prk4e3m = i.prk3e2m
	} else {
		k, err := i.ownStaticDH()
		if err != nil {
			return nil, err
		}
		salt, err := i.kdf("salt_4e3m", i.prk3e2m, 5, i.th3, i.p.hashLen)
		if err != nil {
			return nil, err
		}
		giy, err := dh(k, i.peerEph)
		if err != nil {
			return nil, err
		}
		i.trace("g_iy", giy)
		if i.prk4e3m, err = i.p.extract(salt, giy); err != nil {
			return nil, err
		}
	}
	i.trace("prk_4e3m", i.prk4e3m)
	// context_3 = << ID_CRED_I, TH_3, CRED_I, ? EAD_3 >>
	ctx3 := append([]byte(nil), own.ID.Raw...)
	ctx3 = appendBstr(ctx3, i.th3)
	ctx3 = append(ctx3, own.Cred...)
	ctx3 = appendEAD(ctx3, ead)
	i.trace("context_3", ctx3)
	mac3, err := i.kdf("mac_3", i.prk4e3m, 6, ctx3, i.macLen(i.method.InitiatorSigns()))
	if err != nil {
		return nil, err
	}
	sig := mac3
	if i.method.InitiatorSigns() {
		tbs := sigStructure(own.ID.Raw, i.th3, own.Cred, ead, mac3)
		i.trace("message_to_be_signed_3", tbs)
		if sig, err = i.sign(tbs); err != nil {
			return nil, err
		}
	}
	i.trace("signature_or_mac_3", sig)
	p3 := &Plaintext3{IDCredI: &own.ID, SigOrMAC: sig, EAD: ead}
	pt3 := p3.marshal()
	i.trace("plaintext_3", pt3)
	a3 := encStructure(i.th3)
	i.trace("a_3", a3)
	k3, err := i.kdf("k_3", i.prk3e2m, 3, i.th3, i.p.keyLen)
	if err != nil {
		return nil, err
	}
	iv3, err := i.kdf("iv_3", i.prk3e2m, 4, i.th3, i.p.ivLen)
	if err != nil {
		return nil, err
	}
	aead, err := i.p.aead(k3)
	if err != nil {
		return nil, err
	}
	ct3 := aead.Seal(nil, iv3, pt3, a3)
	i.trace("ciphertext_3", ct3)
	m3 := appendBstr(nil, ct3)
	i.trace("message_3", m3)
	// TH_4 = H(TH_3, PLAINTEXT_3, CRED_I) (§5.4.2)
	in4 := appendBstr(nil, i.th3)
	in4 = append(in4, pt3...)
	in4 = append(in4, own.Cred...)
	i.trace("input_th_4", in4)
	i.th4 = i.p.hash(in4)
	i.trace("th_4", i.th4)
	if err := i.finish(); err != nil {
		return nil, err
	}
	i.eph = nil // X is no longer needed
	return m3, nil
}

// ProcessMessage4 verifies the optional message_4 (§5.5.3) and returns EAD_4. An error
// message from the Responder is returned as its *ErrorMessage.
func (i *Initiator) ProcessMessage4(msg []byte) ([]EAD, error) {
	if i.st != stCompleted || i.prk4e3m == nil {
		return nil, ErrState
	}
	ead, err := i.processMessage4(msg)
	if err != nil {
		return nil, i.fail(err)
	}
	clear(i.prk4e3m)
	i.prk4e3m = nil // message_4 is processed at most once
	return ead, nil
}

func (i *Initiator) processMessage4(msg []byte) ([]EAD, error) {
	if IsErrorMessage(msg) {
		em, err := ParseErrorMessage(msg)
		if err != nil {
			return nil, err
		}
		return nil, em
	}
	ct4, err := parseBstrMessage("message_4", msg)
	if err != nil {
		return nil, failUnspecified(err, "malformed message_4")
	}
	aead, iv4, err := i.message4Keys()
	if err != nil {
		return nil, err
	}
	a4 := encStructure(i.th4)
	i.trace("a_4", a4)
	pt4, err := aead.Open(nil, iv4, ct4, a4)
	if err != nil {
		return nil, failUnspecified(fmt.Errorf("edhoc: message_4: %w", ErrAuth), "authentication failed")
	}
	i.trace("plaintext_4", pt4)
	ead, err := ParsePlaintext4(pt4)
	if err != nil {
		return nil, failUnspecified(err, "malformed PLAINTEXT_4")
	}
	if err := i.checkEAD(4, ead); err != nil {
		return nil, err
	}
	return withoutPadding(ead), nil
}

// PeerEphemeralKey returns the Responder's ephemeral public key G_Y once message_2 was
// accepted (for P-256 with one of the two possible y-coordinates, which gives the same ECDH
// result). draft-ietf-ace-coap-est-oscore uses it as the recipient key of an RFC 6955 static-DH
// proof of possession in a CSR.
func (i *Initiator) PeerEphemeralKey() *ecdh.PublicKey {
	if i.st != stGotM2 && i.st != stCompleted {
		return nil
	}
	return i.peerEph
}

// OSCORE derives the OSCORE Master Secret, Master Salt and ids (RFC 9528 Appendix A.1);
// the Initiator's Sender ID is C_R.
func (i *Initiator) OSCORE() (*OSCOREContext, error) { return i.oscore(true) }
