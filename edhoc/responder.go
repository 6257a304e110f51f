package edhoc

import (
	"bytes"
	"crypto/ecdh"
	"crypto/subtle"
	"errors"
	"fmt"
	"slices"
)

// Responder runs the Responder side of EDHOC (RFC 9528 §5): ProcessMessage1, Message2,
// ProcessMessage3, then optionally Message4. Errors from Process* are *Error values whose
// Reply is the EDHOC error message to send (ReplyFor encodes it). A Responder holds only its
// own session: a binding keeps Responders in a table keyed by C_R and drops abandoned ones.
//
// After ProcessMessage3 the session is completed and Exporter, OSCORE, KeyUpdate, PRKOut work
// (see Initiator for the shared methods). A Responder is not safe for concurrent use.
type Responder struct {
	session
	ead1 []EAD
}

// NewResponder checks the configuration and returns a Responder waiting for message_1.
func NewResponder(cfg Config) (*Responder, error) {
	s, err := newSession(cfg)
	if err != nil {
		return nil, err
	}
	if s.cfg.Suites == nil {
		s.cfg.Suites = []Suite{Suite2, Suite3, Suite0, Suite1, Suite4, Suite5, Suite6}
	}
	for _, su := range s.cfg.Suites {
		if !su.Supported() {
			return nil, fmt.Errorf("edhoc: Responder suite %d not implemented", su)
		}
	}
	return &Responder{session: *s}, nil
}

// SetConnID sets C_R before Message2 (e.g. a binding picks an identifier unused in its table
// after seeing C_I).
func (r *Responder) SetConnID(id []byte) error {
	if r.st != stStart && r.st != stGotM1 {
		return ErrState
	}
	if id == nil {
		return errors.New("edhoc: empty connection identifier")
	}
	r.cfg.ConnID = bytes.Clone(id)
	return nil
}

// ProcessMessage1 decodes and checks message_1 (§5.2.3) and returns it.
func (r *Responder) ProcessMessage1(msg []byte) (*Message1, error) {
	if r.st != stStart {
		return nil, ErrState
	}
	m, err := r.processMessage1(msg)
	if err != nil {
		return nil, r.fail(err)
	}
	r.st = stGotM1
	return m, nil
}

func (r *Responder) processMessage1(msg []byte) (*Message1, error) {
	m, gx, err := parseMessage1(msg)
	if err != nil {
		// An unsupported selected suite is reported with SUITES_R even when G_X could not be
		// checked (§5.2.3 step 2: the suite check comes first).
		if sr := r.wrongSuite(msg); sr != nil {
			return nil, sr
		}
		return nil, failUnspecified(err, "malformed message_1")
	}
	if !m.Method.valid() || (r.cfg.Methods != nil && !slices.Contains(r.cfg.Methods, m.Method)) {
		return nil, failUnspecified(fmt.Errorf("edhoc: method %d not accepted", m.Method), "method not supported")
	}
	// §5.2.3: the selected suite must be supported and no suite the Initiator prefers to it
	// (listed before it in SUITES_I) may be supported; otherwise ERR_CODE 2 with SUITES_R.
	if err := r.checkSuites(m.SuitesI); err != nil {
		return nil, err
	}
	if r.p, err = params(m.Selected()); err != nil {
		return nil, err
	}
	if err := r.ownKeyFits(m.Method.ResponderSigns()); err != nil {
		// Our credential cannot serve this method (and suite): refuse now, with an error message.
		return nil, failUnspecified(err, "method not supported")
	}
	r.peerEph = gx // decoded and validated by parseMessage1 (the suite is implemented)
	if err := r.checkEAD(1, m.EAD); err != nil {
		return nil, err
	}
	r.method = m.Method
	r.ci = m.CI
	r.ead1 = withoutPadding(m.EAD)
	m.EAD = r.ead1
	r.h1 = r.p.hash(msg)
	r.trace("h_message_1", r.h1)
	return m, nil
}

func (r *Responder) checkSuites(suitesI []Suite) error {
	// The selected suite must be the first suite in SUITES_I that the Responder supports.
	var first Suite
	found := false
	for _, s := range suitesI {
		if slices.Contains(r.cfg.Suites, s) {
			first, found = s, true
			break
		}
	}
	sel := suitesI[len(suitesI)-1]
	if found && first == sel {
		return nil
	}
	// §6.3: SUITES_R includes the supported suite of SUITES_I that the Initiator prefers most;
	// if none is supported, all the Responder's suites.
	suitesR := []Suite{first}
	if !found {
		suitesR = slices.Clone(r.cfg.Suites)
	}
	return &Error{
		Err:   fmt.Errorf("edhoc: selected cipher suite %d refused (SUITES_I %v)", sel, suitesI),
		Reply: &ErrorMessage{Code: ErrCodeWrongSuite, SuitesR: suitesR},
	}
}

// wrongSuite decodes just enough of a message_1 that failed full validation to tell whether
// the suite is the problem.
func (r *Responder) wrongSuite(msg []byte) error {
	rd := &reader{rest: msg}
	if _, err := rd.readInt(); err != nil {
		return nil
	}
	s, err := rd.readSuites()
	if err != nil {
		return nil
	}
	return r.checkSuites(s)
}

// Message2 builds message_2 (§5.3.2) with the optional EAD_2.
func (r *Responder) Message2(ead []EAD) ([]byte, error) {
	if r.st != stGotM1 {
		return nil, ErrState
	}
	m2, err := r.message2(ead)
	if err != nil {
		return nil, r.fail(err)
	}
	r.st = stWaitM3
	return m2, nil
}

func (r *Responder) message2(ead []EAD) ([]byte, error) {
	own := r.cfg.Credential
	var err error
	r.cr = bytes.Clone(r.cfg.ConnID)
	if r.cr == nil {
		if r.cr, err = randomConnID(r.rnd, r.ci); err != nil {
			return nil, err
		}
	} else if bytes.Equal(r.cr, r.ci) {
		return nil, errors.New("edhoc: C_R must differ from C_I (use SetConnID)")
	}
	if r.eph, err = r.ephemeral(); err != nil {
		return nil, fmt.Errorf("edhoc: ephemeral key: %w", err)
	}
	gy := r.p.encodePublic(r.eph.PublicKey())
	in := appendBstr(appendBstr(nil, gy), r.h1)
	r.trace("input_th_2", in)
	r.th2 = r.p.hash(in)
	r.trace("th_2", r.th2)
	gxy, err := dh(r.eph, r.peerEph)
	if err != nil {
		return nil, err
	}
	r.trace("g_xy", gxy)
	if r.prk2e, err = r.p.extract(r.th2, gxy); err != nil {
		return nil, err
	}
	r.trace("prk_2e", r.prk2e)
	if r.method.ResponderSigns() {
		r.prk3e2m = r.prk2e
	} else {
		k, err := r.ownStaticDH()
		if err != nil {
			return nil, err
		}
		salt, err := r.kdf("salt_3e2m", r.prk2e, 1, r.th2, r.p.hashLen)
		if err != nil {
			return nil, err
		}
		grx, err := dh(k, r.peerEph)
		if err != nil {
			return nil, err
		}
		r.trace("g_rx", grx)
		if r.prk3e2m, err = r.p.extract(salt, grx); err != nil {
			return nil, err
		}
	}
	r.trace("prk_3e2m", r.prk3e2m)
	ctx2 := appendIDBytes(nil, r.cr)
	ctx2 = append(ctx2, own.ID.Raw...)
	ctx2 = appendBstr(ctx2, r.th2)
	ctx2 = append(ctx2, own.Cred...)
	ctx2 = appendEAD(ctx2, ead)
	r.trace("context_2", ctx2)
	mac2, err := r.kdf("mac_2", r.prk3e2m, 2, ctx2, r.macLen(r.method.ResponderSigns()))
	if err != nil {
		return nil, err
	}
	sig := mac2
	if r.method.ResponderSigns() {
		tbs := sigStructure(own.ID.Raw, r.th2, own.Cred, ead, mac2)
		r.trace("message_to_be_signed_2", tbs)
		if sig, err = r.sign(tbs); err != nil {
			return nil, err
		}
	}
	r.trace("signature_or_mac_2", sig)
	p2 := &Plaintext2{CR: r.cr, IDCredR: &own.ID, SigOrMAC: sig, EAD: ead}
	pt2 := p2.marshal()
	r.trace("plaintext_2", pt2)
	if len(pt2) > 255*r.p.hashLen {
		// TODO(RFC 9528 Appendix G): the optional keystream extension for long PLAINTEXT_2.
		return nil, fmt.Errorf("edhoc: PLAINTEXT_2 of %d bytes exceeds 255*hash_length (use x5t instead of x5chain)", len(pt2))
	}
	ks, err := r.kdf("keystream_2", r.prk2e, 0, r.th2, len(pt2))
	if err != nil {
		return nil, err
	}
	ct2 := make([]byte, len(pt2))
	subtle.XORBytes(ct2, pt2, ks)
	r.trace("ciphertext_2", ct2)
	m2 := appendBstr(nil, append(gy, ct2...))
	r.trace("message_2", m2)
	in3 := appendBstr(nil, r.th2)
	in3 = append(in3, pt2...)
	in3 = append(in3, own.Cred...)
	r.trace("input_th_3", in3)
	r.th3 = r.p.hash(in3)
	r.trace("th_3", r.th3)
	return m2, nil
}

// Message3Info is what the Responder learned from message_3.
type Message3Info struct {
	Peer *Credential // the Initiator's credential, as the Resolver returned it
	EAD  []EAD       // EAD_3
}

// ProcessMessage3 decrypts and verifies message_3 (§5.4.3). On success the session is
// completed: Exporter, OSCORE and Message4 work.
func (r *Responder) ProcessMessage3(msg []byte) (*Message3Info, error) {
	if r.st != stWaitM3 {
		return nil, ErrState
	}
	info, err := r.processMessage3(msg)
	if err != nil {
		return nil, r.fail(err)
	}
	r.st = stCompleted
	return info, nil
}

func (r *Responder) processMessage3(msg []byte) (*Message3Info, error) {
	if IsErrorMessage(msg) {
		em, err := ParseErrorMessage(msg)
		if err != nil {
			return nil, err
		}
		return nil, em
	}
	ct3, err := parseBstrMessage("message_3", msg)
	if err != nil {
		return nil, failUnspecified(err, "malformed message_3")
	}
	k3, err := r.kdf("k_3", r.prk3e2m, 3, r.th3, r.p.keyLen)
	if err != nil {
		return nil, err
	}
	iv3, err := r.kdf("iv_3", r.prk3e2m, 4, r.th3, r.p.ivLen)
	if err != nil {
		return nil, err
	}
	aead, err := r.p.aead(k3)
	if err != nil {
		return nil, err
	}
	a3 := encStructure(r.th3)
	r.trace("a_3", a3)
	pt3, err := aead.Open(nil, iv3, ct3, a3)
	if err != nil {
		return nil, failUnspecified(fmt.Errorf("edhoc: message_3: %w", ErrAuth), "authentication failed")
	}
	r.trace("plaintext_3", pt3)
	p3, err := ParsePlaintext3(pt3, r.sigLen(r.method.InitiatorSigns()))
	if err != nil {
		return nil, failUnspecified(err, "malformed PLAINTEXT_3")
	}
	cred, err := r.resolve(p3.IDCredI, p3.EAD)
	if err != nil {
		return nil, err
	}
	if r.method.InitiatorSigns() {
		r.prk4e3m = r.prk3e2m
	} else {
		pub, err := r.peerStaticDH(cred)
		if err != nil {
			return nil, failUnspecified(err, "credential does not fit the method")
		}
		salt, err := r.kdf("salt_4e3m", r.prk3e2m, 5, r.th3, r.p.hashLen)
		if err != nil {
			return nil, err
		}
		giy, err := dh(r.eph, pub)
		if err != nil {
			return nil, err
		}
		r.trace("g_iy", giy)
		if r.prk4e3m, err = r.p.extract(salt, giy); err != nil {
			return nil, err
		}
	}
	r.trace("prk_4e3m", r.prk4e3m)
	ctx3 := append([]byte(nil), p3.IDCredI.Raw...)
	ctx3 = appendBstr(ctx3, r.th3)
	ctx3 = append(ctx3, cred.Cred...)
	ctx3 = appendEAD(ctx3, p3.EAD)
	r.trace("context_3", ctx3)
	mac3, err := r.kdf("mac_3", r.prk4e3m, 6, ctx3, r.macLen(r.method.InitiatorSigns()))
	if err != nil {
		return nil, err
	}
	if r.method.InitiatorSigns() {
		tbs := sigStructure(p3.IDCredI.Raw, r.th3, cred.Cred, p3.EAD, mac3)
		r.trace("message_to_be_signed_3", tbs)
		if err := r.verify(cred.PublicKey, tbs, p3.SigOrMAC); err != nil {
			return nil, failUnspecified(fmt.Errorf("edhoc: Signature_or_MAC_3: %w", err), "authentication failed")
		}
	} else if subtle.ConstantTimeCompare(mac3, p3.SigOrMAC) != 1 {
		return nil, failUnspecified(fmt.Errorf("edhoc: MAC_3: %w", ErrAuth), "authentication failed")
	}
	r.trace("signature_or_mac_3", p3.SigOrMAC)
	if err := r.checkEAD(3, p3.EAD); err != nil {
		return nil, err
	}
	in4 := appendBstr(nil, r.th3)
	in4 = append(in4, pt3...)
	in4 = append(in4, cred.Cred...)
	r.trace("input_th_4", in4)
	r.th4 = r.p.hash(in4)
	r.trace("th_4", r.th4)
	if err := r.finish(); err != nil {
		return nil, err
	}
	r.peerCred = cred
	return &Message3Info{Peer: cred, EAD: withoutPadding(p3.EAD)}, nil
}

// Message4 builds the optional message_4 (§5.5.2) with EAD_4; it can be sent once.
func (r *Responder) Message4(ead []EAD) ([]byte, error) {
	if r.st != stCompleted || r.prk4e3m == nil {
		return nil, ErrState
	}
	aead, iv4, err := r.message4Keys()
	if err != nil {
		return nil, r.fail(err)
	}
	a4 := encStructure(r.th4)
	r.trace("a_4", a4)
	pt4 := appendEAD(nil, ead)
	r.trace("plaintext_4", pt4)
	ct4 := aead.Seal(nil, iv4, pt4, a4)
	r.trace("ciphertext_4", ct4)
	m4 := appendBstr(nil, ct4)
	r.trace("message_4", m4)
	clear(r.prk4e3m)
	r.prk4e3m = nil
	return m4, nil
}

// EphemeralKey returns the Responder's ephemeral public key G_Y (after Message2).
func (r *Responder) EphemeralKey() *ecdh.PublicKey {
	if r.eph == nil {
		return nil
	}
	return r.eph.PublicKey()
}

// EphemeralECDH computes the ECDH shared secret of the Responder's ephemeral key Y and pub,
// e.g. to verify an RFC 6955 static-DH proof of possession in a CSR whose recipient key is G_Y
// (draft-ietf-ace-coap-est-oscore). Y is kept from Message2 until Close, so a binding should
// Close the Responder as soon as it no longer needs this.
func (r *Responder) EphemeralECDH(pub *ecdh.PublicKey) ([]byte, error) {
	if r.eph == nil {
		return nil, ErrState
	}
	return dh(r.eph, pub)
}

// EAD1 returns the EAD_1 items of the accepted message_1.
func (r *Responder) EAD1() []EAD { return r.ead1 }

// OSCORE derives the OSCORE Master Secret, Master Salt and ids (RFC 9528 Appendix A.1);
// the Responder's Sender ID is C_I.
func (r *Responder) OSCORE() (*OSCOREContext, error) { return r.oscore(false) }
