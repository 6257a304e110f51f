package estserver

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"time"

	"coapca/est"

	"coapca/errs"
	"coapca/est/cms"
)

// KeyEncryption is what the service needs to return server-generated keys CMS-encrypted
// (RFC 7030 §4.4.2, RFC 9148 §4.8, Content-Format 280).
type KeyEncryption struct {
	// KEKs are the pre-shared AES key-encryption keys (16, 24 or 32 bytes) by the
	// DecryptKeyIdentifier that names them (RFC 7030 §4.4.1.1; the map key is the identifier's
	// bytes).
	KEKs map[string][]byte
	// Signer signs the key package; Chain[0] is its certificate, the rest its chain (RFC 7030
	// §4.4.2: the SignedData is signed by the party that generated the private key).
	Signer crypto.Signer
	Chain  []*x509.Certificate
}

// SetKeyEncryption enables CMS-encrypted server-generated keys. Call it before serving.
func (s *Service) SetKeyEncryption(k KeyEncryption) error {
	if k.Signer == nil || len(k.Chain) == 0 {
		return errors.New("est: key encryption needs a signer and its certificate")
	}
	if pk, ok := k.Chain[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pk.Equal(k.Signer.Public()) {
		return errors.New("est: key encryption: the certificate does not match the signer's key")
	}
	keks := make(map[string][]byte, len(k.KEKs))
	for id, kek := range k.KEKs {
		if id == "" {
			return errors.New("est: key-encryption key with an empty identifier")
		}
		switch len(kek) {
		case 16, 24, 32:
		default:
			return fmt.Errorf("est: key-encryption key %x has %d bytes, want 16, 24 or 32 (AES)", id, len(kek))
		}
		keks[id] = bytes.Clone(kek)
	}
	k.KEKs = keks
	s.keyEnc = &k
	return nil
}

// keyRecipient is how the client asked its key to be encrypted, resolved to a CMS recipient.
type keyRecipient struct {
	kind string // "DecryptKeyIdentifier" or "AsymmetricDecryptKeyIdentifier"
	r    cms.Recipient
	opts cms.EncryptOptions
}

// encryptionRecipient reads DecryptKeyIdentifier / AsymmetricDecryptKeyIdentifier and
// SMIMECapabilities from the CSR and resolves the recipient, before anything is issued. It
// returns nil when the CSR asks for no encryption.
func (s *Service) encryptionRecipient(csr *x509.CertificateRequest, r *Request) (*keyRecipient, error) {
	attrs, err := est.CSRAttributes(csr)
	if err != nil {
		return nil, errs.Wrap(errs.BadRequest, err, "CSR attributes are malformed")
	}
	var kr *keyRecipient
	var caps []asn1.ObjectIdentifier
	for _, a := range attrs {
		switch {
		case a.Type.Equal(est.OIDDecryptKeyIdentifier), a.Type.Equal(est.OIDAsymmetricDecryptKeyIdentifier):
			name := "DecryptKeyIdentifier"
			if a.Type.Equal(est.OIDAsymmetricDecryptKeyIdentifier) {
				name = "AsymmetricDecryptKeyIdentifier"
			}
			if kr != nil {
				return nil, errs.New(errs.BadRequest, "the CSR carries more than one decrypt-key identifier")
			}
			// RFC 7030 §4.4.1.1 / §4.4.1.2: one OCTET STRING value.
			if len(a.Values) != 1 || a.Values[0].Class != asn1.ClassUniversal || a.Values[0].Tag != asn1.TagOctetString ||
				len(a.Values[0].Bytes) == 0 {
				return nil, errs.New(errs.BadRequest, "%s must have exactly one non-empty OCTET STRING value", name)
			}
			kr = &keyRecipient{kind: name}
			if err := s.resolveRecipient(kr, a.Values[0].Bytes, r); err != nil {
				return nil, err
			}
		case a.Type.Equal(est.OIDSMIMECapabilities):
			if len(a.Values) != 1 {
				return nil, errs.New(errs.BadRequest, "SMIMECapabilities must have exactly one value")
			}
			if caps, err = parseSMIMECapabilities(a.Values[0].FullBytes); err != nil {
				return nil, errs.Wrap(errs.BadRequest, err, "SMIMECapabilities is malformed")
			}
		}
	}
	if kr == nil {
		if r.KeyPackage {
			// RFC 8295 §8.1: every application/cms encapsulation it defines encrypts the key,
			// and the CSR is how the client names the key to encrypt it for.
			return nil, errs.New(errs.NotAcceptable, "an asymmetric key package as application/cms (RFC 8295 §8.1) is encrypted: "+
				"the CSR needs DecryptKeyIdentifier or AsymmetricDecryptKeyIdentifier (RFC 7030 §4.4.1)")
		}
		if r.RequireEncryptedKey {
			return nil, errs.New(errs.NotAcceptable, "an encrypted key (Content-Format 280) needs a CSR with DecryptKeyIdentifier "+
				"or AsymmetricDecryptKeyIdentifier (RFC 7030 §4.4.1, RFC 9148 §4.8)")
		}
		return nil, nil
	}
	// RFC 7030 §4.4.2: the algorithms are among those the client listed in SMIMECapabilities;
	// without the attribute, AES-256-CBC and the AES-256 key wrap.
	kr.opts = chooseAlgorithms(caps)
	if caps != nil && kr.opts.ContentCipher == nil {
		return nil, errs.New(errs.NotAcceptable, "SMIMECapabilities lists no content-encryption algorithm this server has (AES-128/192/256-CBC)")
	}
	return kr, nil
}

func (s *Service) resolveRecipient(kr *keyRecipient, id []byte, r *Request) error {
	if s.keyEnc == nil {
		return errs.New(errs.NotAcceptable, "the CSR carries %s, but this server is not configured to return CMS-encrypted keys "+
			"(Content-Format 280); send the CSR without it to receive an unencrypted PKCS#8 key (284) over this protected session", kr.kind)
	}
	if kr.kind == "DecryptKeyIdentifier" {
		kek, ok := s.keyEnc.KEKs[string(id)]
		if !ok {
			return errs.New(errs.BadRequest, "DecryptKeyIdentifier %x names no key-encryption key this server holds", id)
		}
		kr.r = cms.Recipient{KEK: kek, KEKID: bytes.Clone(id)}
		return nil
	}
	// RFC 7030 §4.4.1.2: the identifier is a subjectKeyIdentifier; the server determines the key
	// it names. The only public key this server binds to the requester is the requester's own
	// authenticated certificate: encrypting for any other key would hand the private key to
	// whoever holds it.
	if len(r.Requester.Chain) == 0 {
		return errs.New(errs.BadRequest, "AsymmetricDecryptKeyIdentifier: this session authenticated no certificate; "+
			"the server encrypts only for the requester's own certificate key")
	}
	leaf := r.Requester.Chain[0]
	if !bytes.Equal(id, est.SubjectKeyID(leaf)) && !bytes.Equal(id, leaf.SubjectKeyId) {
		return errs.New(errs.BadRequest, "AsymmetricDecryptKeyIdentifier %x does not name the key of the certificate this "+
			"session authenticated (subjectKeyIdentifier %x); the server encrypts only for the requester's own key", id, est.SubjectKeyID(leaf))
	}
	switch leaf.PublicKey.(type) {
	case *ecdsa.PublicKey, *rsa.PublicKey:
	default:
		return errs.New(errs.BadRequest, "AsymmetricDecryptKeyIdentifier names a %v key; only EC (key agreement) and RSA "+
			"(key transport) keys can receive an encrypted key", leaf.PublicKeyAlgorithm)
	}
	kr.r = cms.Recipient{Cert: leaf}
	return nil
}

// parseSMIMECapabilities reads SMIMECapabilities (RFC 8551 §2.5.2): a SEQUENCE OF
// SMIMECapability { capabilityID, parameters OPTIONAL }; only the identifiers are kept.
func parseSMIMECapabilities(der []byte) ([]asn1.ObjectIdentifier, error) {
	var caps []struct {
		ID     asn1.ObjectIdentifier
		Params asn1.RawValue `asn1:"optional"`
	}
	rest, err := asn1.Unmarshal(der, &caps)
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, errors.New("trailing data")
	}
	out := make([]asn1.ObjectIdentifier, len(caps))
	for i, c := range caps {
		out[i] = c.ID
	}
	return out, nil
}

// chooseAlgorithms picks the first AES-CBC and AES key wrap the client listed (its order is its
// preference, RFC 8551 §2.5.2); without a list, AES-256-CBC and AES-256 wrap.
func chooseAlgorithms(caps []asn1.ObjectIdentifier) cms.EncryptOptions {
	if caps == nil {
		return cms.EncryptOptions{ContentCipher: cms.OIDAES256CBC, KeyWrap: cms.OIDAES256Wrap}
	}
	var o cms.EncryptOptions
	for _, c := range caps {
		for _, alg := range []asn1.ObjectIdentifier{cms.OIDAES128CBC, cms.OIDAES192CBC, cms.OIDAES256CBC} {
			if o.ContentCipher == nil && c.Equal(alg) {
				o.ContentCipher = alg
			}
		}
		for _, alg := range []asn1.ObjectIdentifier{cms.OIDAES128Wrap, cms.OIDAES192Wrap, cms.OIDAES256Wrap} {
			if o.KeyWrap == nil && c.Equal(alg) {
				o.KeyWrap = alg
			}
		}
	}
	return o
}

// encryptKey builds the answer of RFC 7030 §4.4.2 with additional encryption: the key as an
// AsymmetricKeyPackage (RFC 5958 §2), in a SignedData signed by this server, in an EnvelopedData
// for the recipient the client named: application/pkcs7-mime; smime-type=server-generated-key.
func (s *Service) encryptKey(rnd io.Reader, kr *keyRecipient, pkcs8 []byte, now time.Time) ([]byte, error) {
	pkg, err := cms.MarshalAsymmetricKeyPackage(pkcs8)
	if err != nil {
		return nil, err
	}
	sd, err := cms.Sign(rnd, cms.OIDAsymmetricKeyPackage, pkg, s.keyEnc.Signer, s.keyEnc.Chain, now)
	if err != nil {
		return nil, err
	}
	return cms.Encrypt(rnd, cms.OIDSignedData, sd, kr.r, &kr.opts)
}

// signEnvelope adds the outer layer of RFC 8295 §8.1 ("additional encryption and origin
// authentication" without CCC): a SignedData, signed by the party that generated the key, that
// encapsulates the EnvelopedData built by encryptKey; the result is a ContentInfo (RFC 5652 §3,
// RFC 7193: the outermost encapsulation of application/cms is a ContentInfo).
func (s *Service) signEnvelope(rnd io.Reader, envelope []byte, now time.Time) ([]byte, error) {
	ed, err := cms.ContentOf(envelope, cms.OIDEnvelopedData)
	if err != nil {
		return nil, err
	}
	sd, err := cms.Sign(rnd, cms.OIDEnvelopedData, ed, s.keyEnc.Signer, s.keyEnc.Chain, now)
	if err != nil {
		return nil, err
	}
	return cms.ContentInfo(cms.OIDSignedData, sd)
}
