//go:build pkcs11 && cgo

package pkcs11

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"strings"

	mp "github.com/miekg/pkcs11"
)

// Import puts an existing private key (ECDSA P-256/P-384/P-521 or RSA, e.g. an issuing CA key
// file of a CA moving into an HSM) into the token as the key uri names, with its public half,
// and returns it opened like Open. The private key object is created with CKA_SENSITIVE true
// and CKA_EXTRACTABLE false (PKCS#11 v2.40 §4.9: the token then never reveals its value, and
// neither attribute can be changed back), CKA_TOKEN true (it outlives the session) and
// CKA_PRIVATE true (only a logged-in user can use it). The token records that it was imported
// (CKA_ALWAYS_SENSITIVE and CKA_NEVER_EXTRACTABLE false): the copy in the file the key came from
// is the operator's to destroy. A key that uri already names is not replaced (ErrKeyExists).
func Import(ctx context.Context, uri string, key crypto.Signer) (*Key, error) {
	u, err := ParseURI(uri)
	if err != nil {
		return nil, err
	}
	if err := u.KeyRef(); err != nil {
		return nil, err
	}
	pin, err := u.PIN()
	if err != nil {
		return nil, err
	}
	id := u.ID
	if len(id) == 0 {
		id = []byte(u.Object) // as Generate: the label doubles as the id crypto11 needs
	}
	priv, pub, err := keyTemplates(key)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: import into %s: %w", Redact(uri), err)
	}
	common := []*mp.Attribute{mp.NewAttribute(mp.CKA_TOKEN, true), mp.NewAttribute(mp.CKA_ID, id)}
	if u.Object != "" {
		common = append(common, mp.NewAttribute(mp.CKA_LABEL, u.Object))
	}
	priv = append(append(priv, common...),
		mp.NewAttribute(mp.CKA_CLASS, mp.CKO_PRIVATE_KEY),
		mp.NewAttribute(mp.CKA_PRIVATE, true),
		mp.NewAttribute(mp.CKA_SIGN, true),
		mp.NewAttribute(mp.CKA_SENSITIVE, true),
		mp.NewAttribute(mp.CKA_EXTRACTABLE, false))
	pub = append(append(pub, common...),
		mp.NewAttribute(mp.CKA_CLASS, mp.CKO_PUBLIC_KEY),
		mp.NewAttribute(mp.CKA_PRIVATE, false),
		mp.NewAttribute(mp.CKA_VERIFY, true))

	m := mp.New(u.ModulePath)
	if m == nil {
		return nil, fmt.Errorf("pkcs11: import into %s: cannot load the module", Redact(uri))
	}
	ierr := m.Initialize()
	if ierr != nil && !isCKR(ierr, mp.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		m.Destroy()
		return nil, fmt.Errorf("pkcs11: import into %s: initialize: %w", Redact(uri), ierr)
	}
	err = createKey(m, u, pin, priv, pub)
	if ierr == nil {
		// This process had not initialised the module: finalise it again, so that the Open
		// below (crypto11) starts from a clean state.
		if ferr := m.Finalize(); ferr != nil && err == nil {
			err = fmt.Errorf("finalize: %w", ferr)
		}
	}
	m.Destroy()
	if err != nil {
		return nil, fmt.Errorf("pkcs11: import into %s: %w", Redact(uri), err)
	}
	return Open(ctx, uri)
}

func isCKR(err error, code uint) bool {
	var e mp.Error
	return errors.As(err, &e) && uint(e) == code
}

// createKey logs in to the token u names and creates the two objects, unless a private key
// with the same label and id is there already.
func createKey(m *mp.Ctx, u *URI, pin string, priv, pub []*mp.Attribute) error {
	slot, err := findSlot(m, u)
	if err != nil {
		return err
	}
	sh, err := m.OpenSession(slot, mp.CKF_SERIAL_SESSION|mp.CKF_RW_SESSION)
	if err != nil {
		return fmt.Errorf("open session: %w", err)
	}
	defer m.CloseSession(sh)
	if pin != "" {
		if err := m.Login(sh, mp.CKU_USER, pin); err != nil && !isCKR(err, mp.CKR_USER_ALREADY_LOGGED_IN) {
			return fmt.Errorf("login: %w", err)
		}
	}
	find := []*mp.Attribute{mp.NewAttribute(mp.CKA_CLASS, mp.CKO_PRIVATE_KEY)}
	if len(u.ID) > 0 {
		find = append(find, mp.NewAttribute(mp.CKA_ID, u.ID))
	}
	if u.Object != "" {
		find = append(find, mp.NewAttribute(mp.CKA_LABEL, u.Object))
	}
	if err := m.FindObjectsInit(sh, find); err != nil {
		return fmt.Errorf("find: %w", err)
	}
	found, _, err := m.FindObjects(sh, 1)
	if ferr := m.FindObjectsFinal(sh); err == nil {
		err = ferr
	}
	if err != nil {
		return fmt.Errorf("find: %w", err)
	}
	if len(found) > 0 {
		return fmt.Errorf("the token already holds such a key; not replaced: %w", ErrKeyExists)
	}
	po, err := m.CreateObject(sh, priv)
	if err != nil {
		return fmt.Errorf("create the private key object: %w", err)
	}
	if _, err := m.CreateObject(sh, pub); err != nil {
		// Nothing half-imported stays behind.
		if derr := m.DestroyObject(sh, po); derr != nil {
			return fmt.Errorf("create the public key object: %w (and the private key object stays: %v)", err, derr)
		}
		return fmt.Errorf("create the public key object: %w", err)
	}
	return nil
}

// findSlot returns the slot of the one token u names (token label, serial, slot-id).
func findSlot(m *mp.Ctx, u *URI) (uint, error) {
	slots, err := m.GetSlotList(true)
	if err != nil {
		return 0, fmt.Errorf("slot list: %w", err)
	}
	var match []uint
	for _, s := range slots {
		if u.SlotID != nil && *u.SlotID != s {
			continue
		}
		if u.Token != "" || u.Serial != "" {
			ti, err := m.GetTokenInfo(s)
			if err != nil {
				return 0, fmt.Errorf("token info of slot %d: %w", s, err)
			}
			if u.Token != "" && strings.TrimRight(ti.Label, " \x00") != u.Token {
				continue
			}
			if u.Serial != "" && strings.TrimRight(ti.SerialNumber, " \x00") != u.Serial {
				continue
			}
		}
		match = append(match, s)
	}
	switch len(match) {
	case 0:
		return 0, errors.New("no such token")
	case 1:
		return match[0], nil
	}
	return 0, fmt.Errorf("%d tokens match; name one (token, serial or slot-id)", len(match))
}

// keyTemplates returns the type-specific attributes of the private and public key objects.
func keyTemplates(key crypto.Signer) (priv, pub []*mp.Attribute, err error) {
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		var oid asn1.ObjectIdentifier
		switch k.Curve {
		case elliptic.P256():
			oid = asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}
		case elliptic.P384():
			oid = asn1.ObjectIdentifier{1, 3, 132, 0, 34}
		case elliptic.P521():
			oid = asn1.ObjectIdentifier{1, 3, 132, 0, 35}
		default:
			return nil, nil, fmt.Errorf("ECDSA curve %s cannot be imported", k.Curve.Params().Name)
		}
		params, err := asn1.Marshal(oid)
		if err != nil {
			return nil, nil, err
		}
		d, err := k.Bytes()
		if err != nil {
			return nil, nil, err
		}
		pk, err := k.PublicKey.Bytes()
		if err != nil {
			return nil, nil, err
		}
		// CKA_EC_POINT is the DER encoding of an OCTET STRING holding the uncompressed point
		// (PKCS#11 v2.40 §2.3.3).
		point, err := asn1.Marshal(pk)
		if err != nil {
			return nil, nil, err
		}
		kt := mp.NewAttribute(mp.CKA_KEY_TYPE, mp.CKK_EC)
		return []*mp.Attribute{kt, mp.NewAttribute(mp.CKA_EC_PARAMS, params), mp.NewAttribute(mp.CKA_VALUE, d)},
			[]*mp.Attribute{kt, mp.NewAttribute(mp.CKA_EC_PARAMS, params), mp.NewAttribute(mp.CKA_EC_POINT, point)}, nil
	case *rsa.PrivateKey:
		if len(k.Primes) != 2 {
			return nil, nil, errors.New("multi-prime RSA keys cannot be imported")
		}
		k.Precompute()
		e := big.NewInt(int64(k.E)).Bytes()
		kt := mp.NewAttribute(mp.CKA_KEY_TYPE, mp.CKK_RSA)
		return []*mp.Attribute{kt,
				mp.NewAttribute(mp.CKA_MODULUS, k.N.Bytes()), mp.NewAttribute(mp.CKA_PUBLIC_EXPONENT, e),
				mp.NewAttribute(mp.CKA_PRIVATE_EXPONENT, k.D.Bytes()),
				mp.NewAttribute(mp.CKA_PRIME_1, k.Primes[0].Bytes()), mp.NewAttribute(mp.CKA_PRIME_2, k.Primes[1].Bytes()),
				mp.NewAttribute(mp.CKA_EXPONENT_1, k.Precomputed.Dp.Bytes()), mp.NewAttribute(mp.CKA_EXPONENT_2, k.Precomputed.Dq.Bytes()),
				mp.NewAttribute(mp.CKA_COEFFICIENT, k.Precomputed.Qinv.Bytes())},
			[]*mp.Attribute{kt, mp.NewAttribute(mp.CKA_MODULUS, k.N.Bytes()), mp.NewAttribute(mp.CKA_PUBLIC_EXPONENT, e)}, nil
	}
	return nil, nil, fmt.Errorf("a %T cannot be imported (ECDSA or RSA keys only)", key)
}
