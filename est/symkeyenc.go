package est

import (
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"mime"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"coapca/est/cms"
)

// OIDEncryptedKeyPackage is id-ct-KP-encryptedKeyPkg (RFC 6032 §2).
var OIDEncryptedKeyPackage = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 2, 1, 2, 78, 2}

// SymKeyEncapsulation is one of the forms in which /symmetrickeys returns a symmetric key
// package (RFC 8295 §5.1.2).
type SymKeyEncapsulation int

// The encapsulations of RFC 8295 §5.1.2, outermost layer first.
const (
	// SymKeySignedEnvelopedSigned: "additional encryption and origin authentication" — a
	// SignedData of an EnvelopedData of a SignedData of the SymmetricKeyPackage. The default.
	SymKeySignedEnvelopedSigned SymKeyEncapsulation = iota
	// SymKeyPlain: "additional encryption is not being employed" — the SymmetricKeyPackage,
	// protected by TLS only (RFC 8295 §5.1: the cipher suite MUST NOT be NULL; Go's TLS has none).
	SymKeyPlain
	// SymKeySigned: the SymmetricKeyPackage in a SignedData (§5.1.2: "a symmetric key package
	// (which might be signed)"), protected in transit by TLS only.
	SymKeySigned
	// SymKeyEnveloped: "additional encryption" — an EnvelopedData of a SignedData of the
	// SymmetricKeyPackage.
	SymKeyEnveloped
	// SymKeyEncryptedKeyPackage: the encrypted key package of RFC 6032 (its enveloped choice,
	// which RFC 6032 §2 says implementations MUST support) of a SignedData of the
	// SymmetricKeyPackage, signed again after encryption (RFC 6032 §1's example layering).
	SymKeyEncryptedKeyPackage
)

var symKeyEncapsulations = []struct {
	enc          SymKeyEncapsulation
	name, layers string // layers: the RFC 7193 encapsulatingContent value
}{
	{SymKeySignedEnvelopedSigned, "signed-enveloped-signed", "signedData, envelopedData, signedData"},
	{SymKeyPlain, "plain", ""},
	{SymKeySigned, "signed", "signedData"},
	{SymKeyEnveloped, "enveloped", "envelopedData, signedData"},
	{SymKeyEncryptedKeyPackage, "encrypted-key-package", "signedData, encryptedKeyPkg, signedData"},
}

func (e SymKeyEncapsulation) String() string {
	for _, x := range symKeyEncapsulations {
		if x.enc == e {
			return x.name
		}
	}
	return fmt.Sprintf("encapsulation(%d)", int(e))
}

// SymKeyEncapsulationNames lists the encapsulations by name, the default first.
func SymKeyEncapsulationNames() []string {
	var out []string
	for _, x := range symKeyEncapsulations {
		out = append(out, x.name)
	}
	return out
}

// SymKeyEncapsulationByName returns the encapsulation called name.
func SymKeyEncapsulationByName(name string) (SymKeyEncapsulation, bool) {
	for _, x := range symKeyEncapsulations {
		if x.name == name {
			return x.enc, true
		}
	}
	return 0, false
}

// MediaType is the Content-Type of the encapsulation: application/cms with the RFC 7193
// encapsulatingContent and innerContent parameters (RFC 8295 §5.1.2: they SHOULD be included).
func (e SymKeyEncapsulation) MediaType() string {
	for _, x := range symKeyEncapsulations {
		switch {
		case x.enc != e:
		case x.layers == "":
			return "application/cms; innerContent=sKeyPackage"
		case !strings.Contains(x.layers, ","):
			return "application/cms; encapsulatingContent=" + x.layers + "; innerContent=sKeyPackage"
		default:
			return `application/cms; encapsulatingContent="` + x.layers + `"; innerContent=sKeyPackage`
		}
	}
	return MediaSymmetricKeyPackage
}

// SymKeyEncapsulationOfAccept reads the encapsulation a client asks for in its Accept header
// values: the first application/cms media range whose encapsulatingContent and innerContent
// (RFC 7193) name one of the forms. asked is false when no application/cms range carries
// those parameters (the server then uses the default); ok is false when some do, but none names
// a form coapca produces.
func SymKeyEncapsulationOfAccept(values []string) (enc SymKeyEncapsulation, asked, ok bool) {
	forms, asked := SymKeyEncapsulationsOfAccept(values)
	if !asked {
		return SymKeySignedEnvelopedSigned, false, true
	}
	if len(forms) == 0 {
		return SymKeySignedEnvelopedSigned, true, false
	}
	return forms[0], true, true
}

// SymKeyEncapsulationsOfAccept reads every encapsulation a client takes from its Accept header
// values, in the order it names them (each once): the application/cms media ranges whose
// encapsulatingContent and innerContent (RFC 7193) name one of the forms. asked is false when
// no application/cms range carries those parameters (the client takes any form); forms is
// empty, with asked true, when some do but none names a form coapca produces.
func SymKeyEncapsulationsOfAccept(values []string) (forms []SymKeyEncapsulation, asked bool) {
	norm := func(s string) string { return strings.Join(strings.Fields(strings.ReplaceAll(s, ",", " ")), ",") }
	for _, v := range values {
		for _, part := range splitOutsideQuotes(v) {
			mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil || mt != "application/cms" {
				continue
			}
			inner, hasInner := params["innercontent"]
			layers, hasLayers := params["encapsulatingcontent"]
			if !hasInner && !hasLayers {
				continue
			}
			asked = true
			if hasInner && !strings.EqualFold(inner, "sKeyPackage") {
				continue
			}
			for _, x := range symKeyEncapsulations {
				if strings.EqualFold(norm(layers), norm(x.layers)) && !slices.Contains(forms, x.enc) {
					forms = append(forms, x.enc)
				}
			}
		}
	}
	return forms, asked
}

// splitOutsideQuotes splits an HTTP header value at the commas that are not inside a quoted
// string (an encapsulatingContent value holds commas).
func splitOutsideQuotes(s string) []string {
	var out []string
	quoted, start := false, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			quoted = !quoted
		case ',':
			if !quoted {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}

// MarshalEncryptedKeyPackage returns the DER EncryptedKeyPackage (RFC 6032 §2) of its enveloped
// choice, envelopedData being the DER EnvelopedData: "[0] EnvelopedData" under the module's
// IMPLICIT TAGS (RFC 6032 Appendix A), so the SEQUENCE tag becomes [0] constructed.
func MarshalEncryptedKeyPackage(envelopedData []byte) ([]byte, error) {
	in := cryptobyte.String(envelopedData)
	var body cryptobyte.String
	if !in.ReadASN1(&body, cbasn1.SEQUENCE) || !in.Empty() {
		return nil, errors.New("encrypted key package: not a DER EnvelopedData")
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(body) })
	return b.Bytes()
}

// ParseEncryptedKeyPackage reads a DER EncryptedKeyPackage (RFC 6032 §2) and returns the
// EnvelopedData of its enveloped choice as a DER SEQUENCE. The encrypted (EncryptedData, a key
// shared beforehand) and authEnveloped (AuthEnvelopedData) choices are refused: coapca
// produces and opens the enveloped one, which RFC 6032 §2 says implementations MUST support.
func ParseEncryptedKeyPackage(der []byte) ([]byte, error) {
	in := cryptobyte.String(der)
	var body cryptobyte.String
	var tag cbasn1.Tag
	if !in.ReadAnyASN1(&body, &tag) || !in.Empty() {
		return nil, errors.New("encrypted key package: not DER")
	}
	switch tag {
	case cbasn1.Tag(0).Constructed().ContextSpecific():
	case cbasn1.SEQUENCE:
		return nil, errors.New("encrypted key package: the encrypted (EncryptedData) choice is not supported")
	case cbasn1.Tag(1).Constructed().ContextSpecific():
		return nil, errors.New("encrypted key package: the authEnveloped (AuthEnvelopedData) choice is not supported")
	default:
		return nil, fmt.Errorf("encrypted key package: unknown choice (tag %#x)", uint8(tag))
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddBytes(body) })
	return b.Bytes()
}

// SealSymmetricKeyPackageAs wraps a DER SymmetricKeyPackage in the encapsulation enc (RFC 8295
// §5.1.2); see SealSymmetricKeyPackage for the keys and the identifier. The signed forms carry
// the key-package-identifier-and-receipt-request attribute for pkgID in the SignedData next to
// the SymmetricKeyPackage (RFC 7191 §5), so that the receipt can name the package; the plain
// form has no place for it (RFC 8295 §5.2: it "only appears when additional encryption is
// employed"; coapca also puts it in the signed-only form). The result is a ContentInfo.
func SealSymmetricKeyPackageAs(rnd io.Reader, enc SymKeyEncapsulation, pkg, pkgID []byte, signer crypto.Signer, chain []*x509.Certificate,
	to cms.Recipient, opts *cms.EncryptOptions, now time.Time) ([]byte, error) {
	switch enc {
	case SymKeySignedEnvelopedSigned:
		return SealSymmetricKeyPackage(rnd, pkg, pkgID, signer, chain, to, opts, now)
	case SymKeyPlain:
		return cms.ContentInfo(OIDSymmetricKeyPackage, pkg)
	}
	if len(chain) == 0 {
		return nil, errors.New("symmetric key package: no signer certificate")
	}
	req, err := MarshalKeyPkgIDAndReceiptReq(pkgID, chain[0])
	if err != nil {
		return nil, err
	}
	inner, err := cms.SignWithAttributes(rnd, OIDSymmetricKeyPackage, pkg, signer, chain, now,
		cms.Attribute{Type: OIDKeyPkgIDAndReceiptReq, Value: req})
	if err != nil {
		return nil, fmt.Errorf("symmetric key package: %w", err)
	}
	if enc == SymKeySigned {
		return cms.ContentInfo(cms.OIDSignedData, inner)
	}
	env, err := cms.Encrypt(rnd, cms.OIDSignedData, inner, to, opts)
	if err != nil {
		return nil, fmt.Errorf("symmetric key package: %w", err)
	}
	switch enc {
	case SymKeyEnveloped:
		return env, nil
	case SymKeyEncryptedKeyPackage:
		ed, err := cms.ContentOf(env, cms.OIDEnvelopedData)
		if err != nil {
			return nil, err
		}
		ekp, err := MarshalEncryptedKeyPackage(ed)
		if err != nil {
			return nil, err
		}
		outer, err := cms.Sign(rnd, OIDEncryptedKeyPackage, ekp, signer, chain, now)
		if err != nil {
			return nil, fmt.Errorf("symmetric key package: %w", err)
		}
		return cms.ContentInfo(cms.OIDSignedData, outer)
	}
	return nil, fmt.Errorf("symmetric key package: unknown encapsulation %v", enc)
}
