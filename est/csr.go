package est

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/subtle"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"coapca/errs"
)

// MaxCSRSize bounds the CSRs ParseCSR accepts (a P-256 CSR is ~300-600 bytes; RSA-4096 ~1.7 KB).
const MaxCSRSize = 16 << 10

// ParseCSR parses a DER PKCS#10 request (RFC 2986; EST-coaps Content-Format 286 carries it in
// binary, RFC 9148 §4.3) and, when checkSignature is set, verifies its self-signature (the
// proof of possession of RFC 7030 §3.4 / RFC 5272 §6.7). Failures are errs.BadRequest with a
// diagnostic meant for the client. Server-side key generation passes checkSignature false:
// RFC 9148 §4.8 says the server MUST ignore the public key and signature of that CSR.
func ParseCSR(der []byte, checkSignature bool) (*x509.CertificateRequest, error) {
	if len(der) == 0 {
		return nil, errs.New(errs.BadRequest, "empty request body: a DER PKCS#10 CSR is required")
	}
	if len(der) > MaxCSRSize {
		return nil, errs.New(errs.TooLarge, "CSR is %d bytes, more than the %d accepted", len(der), MaxCSRSize)
	}
	if der[0] == '-' {
		return nil, errs.New(errs.BadRequest, "CSR is PEM text; EST-coaps carries binary DER (RFC 9148 §4.3)")
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		// The parser's text (encoding/asn1 prints its field parameters as a Go struct) is for
		// the log; the client gets one short line.
		return nil, errs.Wrap(errs.BadRequest, err, "malformed CSR: not a DER PKCS#10 request (%s)", csrReason(err))
	}
	if checkSignature {
		if err := csr.CheckSignature(); err != nil {
			return nil, errs.Wrap(errs.BadRequest, err, "CSR signature does not verify with the CSR's public key (%v, %v): %s",
				csr.PublicKeyAlgorithm, csr.SignatureAlgorithm, csrReason(err))
		}
	}
	return csr, nil
}

// csrReason is the short reason ParseCSR gives the client for a request crypto/x509 could not
// parse: encoding/asn1's kind of failure without its field dump, or crypto/x509's own
// one-line message.
func csrReason(err error) string {
	var se asn1.StructuralError
	var sy asn1.SyntaxError
	switch {
	case errors.As(err, &se):
		return "ASN.1 structure error: " + shortReason(se.Msg)
	case errors.As(err, &sy):
		return "ASN.1 syntax error: " + shortReason(sy.Msg)
	}
	return shortReason(strings.TrimPrefix(err.Error(), "x509: "))
}

// shortReason cuts a parser's message to a few words for a client diagnostic.
func shortReason(s string) string {
	const maxReason = 60
	s = errs.Diagnostic(s)
	if len(s) > maxReason {
		cut := maxReason - len("…")
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = strings.TrimRight(s[:cut], " ") + "…"
	}
	if s == "" {
		return "unparsable"
	}
	return s
}

// CSRAttributes returns the attributes of the CertificationRequestInfo (RFC 2986 §4.1), which
// crypto/x509 does not expose except for extensionRequest.
func CSRAttributes(csr *x509.CertificateRequest) ([]Attribute, error) {
	tbs := cryptobyte.String(csr.RawTBSCertificateRequest)
	var info cryptobyte.String
	if !tbs.ReadASN1(&info, cbasn1.SEQUENCE) {
		return nil, errors.New("csr: malformed CertificationRequestInfo")
	}
	var attrs cryptobyte.String
	var present bool
	if !info.SkipASN1(cbasn1.INTEGER) || !info.SkipASN1(cbasn1.SEQUENCE) || !info.SkipASN1(cbasn1.SEQUENCE) ||
		!info.ReadOptionalASN1(&attrs, &present, cbasn1.Tag(0).Constructed().ContextSpecific()) {
		return nil, errors.New("csr: malformed CertificationRequestInfo")
	}
	var out []Attribute
	for !attrs.Empty() {
		var at, set cryptobyte.String
		var typ asn1.ObjectIdentifier
		if !attrs.ReadASN1(&at, cbasn1.SEQUENCE) || !at.ReadASN1ObjectIdentifier(&typ) || !at.ReadASN1(&set, cbasn1.SET) {
			return nil, errors.New("csr: malformed attribute")
		}
		a := Attribute{Type: typ}
		for !set.Empty() {
			var el cryptobyte.String
			var tag cbasn1.Tag
			if !set.ReadAnyASN1Element(&el, &tag) {
				return nil, fmt.Errorf("csr: malformed value of attribute %v", typ)
			}
			var rv asn1.RawValue
			if _, err := asn1.Unmarshal(el, &rv); err != nil {
				return nil, fmt.Errorf("csr: attribute %v: %w", typ, err)
			}
			a.Values = append(a.Values, rv)
		}
		out = append(out, a)
	}
	return out, nil
}

// ChallengePassword extracts the challengePassword attribute (PKCS#9, RFC 2985 §5.4.1: a
// DirectoryString) of csr. present is false when the CSR has none.
func ChallengePassword(csr *x509.CertificateRequest) (pw []byte, present bool, err error) {
	attrs, err := CSRAttributes(csr)
	if err != nil {
		return nil, false, errs.Wrap(errs.BadRequest, err, "CSR attributes are malformed")
	}
	for _, a := range attrs {
		if !a.Type.Equal(OIDChallengePassword) {
			continue
		}
		if len(a.Values) != 1 {
			return nil, true, errs.New(errs.BadRequest, "challengePassword must have exactly one value, has %d", len(a.Values))
		}
		v := a.Values[0]
		if v.Class != asn1.ClassUniversal {
			return nil, true, errs.New(errs.BadRequest, "challengePassword is not a DirectoryString")
		}
		switch v.Tag {
		case asn1.TagPrintableString, asn1.TagUTF8String, asn1.TagT61String, asn1.TagIA5String, asn1.TagOctetString:
			// OCTET STRING is not a DirectoryString, but some clients put the raw tls-unique there.
			return append([]byte(nil), v.Bytes...), true, nil
		case asn1.TagBMPString:
			if len(v.Bytes)%2 != 0 {
				return nil, true, errs.New(errs.BadRequest, "challengePassword BMPString has odd length")
			}
			u := make([]uint16, len(v.Bytes)/2)
			for i := range u {
				u[i] = uint16(v.Bytes[2*i])<<8 | uint16(v.Bytes[2*i+1])
			}
			return []byte(string(utf16.Decode(u))), true, nil
		case 28: // UniversalString, UTF-32BE
			if len(v.Bytes)%4 != 0 {
				return nil, true, errs.New(errs.BadRequest, "challengePassword UniversalString has bad length")
			}
			var out []byte
			for i := 0; i < len(v.Bytes); i += 4 {
				r := rune(v.Bytes[i])<<24 | rune(v.Bytes[i+1])<<16 | rune(v.Bytes[i+2])<<8 | rune(v.Bytes[i+3])
				out = utf8.AppendRune(out, r)
			}
			return out, true, nil
		default:
			return nil, true, errs.New(errs.BadRequest, "challengePassword has ASN.1 tag %d, not a DirectoryString", v.Tag)
		}
	}
	return nil, false, nil
}

// MatchesChannelBinding reports whether a challengePassword carries one of the channel-binding
// values. RFC 7030 §3.5 places the tls-unique value base64-encoded (RFC 4648 §4) in the
// challengePassword; RFC 9148 §3 says the client adds the Finished message (the raw
// tls-unique, RFC 5929) and, for DTLS 1.3, allows the RFC 9266 tls-exporter value instead.
// Both the raw bytes and their base64 (padded or not) are therefore accepted.
func MatchesChannelBinding(pw []byte, bindings ...[]byte) bool {
	for _, b := range bindings {
		if len(b) == 0 {
			continue
		}
		if subtle.ConstantTimeCompare(pw, b) == 1 {
			return true
		}
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
			if subtle.ConstantTimeCompare(pw, []byte(enc.EncodeToString(b))) == 1 {
				return true
			}
		}
	}
	return false
}

// EncryptedKeyRequest reports whether csr asks for the server-generated private key to be
// returned CMS-encrypted (Content-Format 280): RFC 9148 §4.8 — a CSR carrying
// DecryptKeyIdentifier (RFC 7030 §4.4.1.1, symmetric) or AsymmetricDecryptKeyIdentifier
// (RFC 7030 §4.4.1.2), usually beside SMIMECapabilities. The returned name says which.
func EncryptedKeyRequest(csr *x509.CertificateRequest) (string, bool) {
	attrs, err := CSRAttributes(csr)
	if err != nil {
		return "", false
	}
	for _, a := range attrs {
		switch {
		case a.Type.Equal(OIDDecryptKeyIdentifier):
			return "DecryptKeyIdentifier", true
		case a.Type.Equal(OIDAsymmetricDecryptKeyIdentifier):
			return "AsymmetricDecryptKeyIdentifier", true
		}
	}
	return "", false
}

// CreateCSR creates a DER PKCS#10 request from template signed by priv, like
// x509.CreateCertificateRequest, and adds a challengePassword attribute when
// challengePassword is non-empty (crypto/x509 cannot encode one). The password is encoded
// as PrintableString when it fits (base64 does), else UTF8String.
func CreateCSR(rand io.Reader, template *x509.CertificateRequest, priv crypto.Signer, challengePassword string) ([]byte, error) {
	if challengePassword == "" {
		return CreateCSRWithAttributes(rand, template, priv, nil)
	}
	return CreateCSRWithAttributes(rand, template, priv, []Attribute{ChallengePasswordAttribute(challengePassword)})
}

// ChallengePasswordAttribute is the challengePassword attribute (RFC 2985 §5.4.1) CreateCSR
// adds: PrintableString when pw fits (base64 does), else UTF8String.
func ChallengePasswordAttribute(pw string) Attribute {
	tag := asn1.TagUTF8String
	if isPrintable(pw) {
		tag = asn1.TagPrintableString
	}
	return Attribute{Type: OIDChallengePassword, Values: []asn1.RawValue{{Class: asn1.ClassUniversal, Tag: tag, Bytes: []byte(pw)}}}
}

// CreateCSRWithAttributes is x509.CreateCertificateRequest with extra PKCS#10 attributes
// (RFC 2986 §4.1) placed before the extensionRequest that crypto/x509 writes; crypto/x509
// itself can only add extensionRequest. Each value is written from its FullBytes when set,
// else from its Class, Tag and Bytes.
func CreateCSRWithAttributes(rand io.Reader, template *x509.CertificateRequest, priv crypto.Signer, extra []Attribute) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand, template, priv)
	if err != nil {
		return nil, fmt.Errorf("csr: %w", err)
	}
	if len(extra) == 0 {
		return der, nil
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("csr: %w", err)
	}
	// Split the signed CSR: SEQUENCE { info, signatureAlgorithm, signature }.
	outer := cryptobyte.String(der)
	var body, algID cryptobyte.String
	if !outer.ReadASN1(&body, cbasn1.SEQUENCE) || !body.SkipASN1(cbasn1.SEQUENCE) || !body.ReadASN1Element(&algID, cbasn1.SEQUENCE) {
		return nil, errors.New("csr: cannot split the generated request")
	}
	info := cryptobyte.String(csr.RawTBSCertificateRequest)
	var inner, version, subject, spki, attrs cryptobyte.String
	var present bool
	if !info.ReadASN1(&inner, cbasn1.SEQUENCE) || !inner.ReadASN1Element(&version, cbasn1.INTEGER) ||
		!inner.ReadASN1Element(&subject, cbasn1.SEQUENCE) || !inner.ReadASN1Element(&spki, cbasn1.SEQUENCE) ||
		!inner.ReadOptionalASN1(&attrs, &present, cbasn1.Tag(0).Constructed().ContextSpecific()) {
		return nil, errors.New("csr: cannot split the generated CertificationRequestInfo")
	}
	var tb cryptobyte.Builder
	tb.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(version)
		b.AddBytes(subject)
		b.AddBytes(spki)
		b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			for _, a := range extra {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1ObjectIdentifier(a.Type)
					b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
						for _, v := range a.Values {
							if len(v.FullBytes) > 0 {
								b.AddBytes(v.FullBytes)
								continue
							}
							enc, err := asn1.Marshal(v)
							if err != nil {
								b.SetError(err)
								return
							}
							b.AddBytes(enc)
						}
					})
				})
			}
			b.AddBytes(attrs)
		})
	})
	tbs, err := tb.Bytes()
	if err != nil {
		return nil, fmt.Errorf("csr: %w", err)
	}
	sig, err := signTBS(rand, priv, csr.SignatureAlgorithm, tbs)
	if err != nil {
		return nil, err
	}
	var ob cryptobyte.Builder
	ob.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(tbs)
		b.AddBytes(algID)
		b.AddASN1BitString(sig)
	})
	return ob.Bytes()
}

func signTBS(rand io.Reader, priv crypto.Signer, alg x509.SignatureAlgorithm, tbs []byte) ([]byte, error) {
	var h crypto.Hash
	switch alg {
	case x509.ECDSAWithSHA256, x509.SHA256WithRSA:
		h = crypto.SHA256
	case x509.ECDSAWithSHA384, x509.SHA384WithRSA:
		h = crypto.SHA384
	case x509.ECDSAWithSHA512, x509.SHA512WithRSA:
		h = crypto.SHA512
	case x509.PureEd25519:
		return priv.Sign(rand, tbs, crypto.Hash(0))
	default:
		return nil, fmt.Errorf("csr: signature algorithm %v not supported with a challengePassword", alg)
	}
	hh := h.New()
	hh.Write(tbs)
	switch priv.Public().(type) {
	case *ecdsa.PublicKey, *rsa.PublicKey, ed25519.PublicKey:
	default:
		return nil, fmt.Errorf("csr: unsupported key type %T", priv.Public())
	}
	sig, err := priv.Sign(rand, hh.Sum(nil), h)
	if err != nil {
		return nil, fmt.Errorf("csr: sign: %w", err)
	}
	return sig, nil
}

func isPrintable(s string) bool {
	for _, c := range []byte(s) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == ' ', c == '\'', c == '(', c == ')', c == '+', c == ',', c == '-', c == '.', c == '/', c == ':', c == '=', c == '?':
		default:
			return false
		}
	}
	return true
}

// MarshalPKCS8 returns the PKCS#8 / RFC 5958 OneAsymmetricKey DER of key (Content-Format 284).
func MarshalPKCS8(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("pkcs8: %w", err)
	}
	return der, nil
}

// HardwareModuleName is the id-on-hardwareModuleName otherName of RFC 4108 §5 that IDevIDs and
// their CSRs carry in subjectAltName (RFC 9148 A.2).
type HardwareModuleName struct {
	Type   asn1.ObjectIdentifier // hwType
	Serial []byte                // hwSerialNum
}

// HardwareModuleNames returns the hardwareModuleName entries of the subjectAltName extension
// among exts (a CSR's or a certificate's Extensions).
func HardwareModuleNames(exts []pkix.Extension) ([]HardwareModuleName, error) {
	var out []HardwareModuleName
	for _, e := range exts {
		if !e.Id.Equal(oidSubjectAltName) {
			continue
		}
		var names []asn1.RawValue
		if rest, err := asn1.Unmarshal(e.Value, &names); err != nil || len(rest) != 0 {
			return nil, fmt.Errorf("subjectAltName: malformed GeneralNames")
		}
		for _, gn := range names {
			if gn.Class != asn1.ClassContextSpecific || gn.Tag != 0 {
				continue
			}
			var on struct {
				ID    asn1.ObjectIdentifier
				Value asn1.RawValue `asn1:"explicit,tag:0"`
			}
			if _, err := asn1.UnmarshalWithParams(gn.FullBytes, &on, "tag:0"); err != nil {
				return nil, fmt.Errorf("subjectAltName: malformed otherName: %w", err)
			}
			if !on.ID.Equal(OIDHardwareModuleName) {
				continue
			}
			var hw struct {
				Type   asn1.ObjectIdentifier
				Serial []byte
			}
			if rest, err := asn1.Unmarshal(on.Value.Bytes, &hw); err != nil || len(rest) != 0 {
				return nil, fmt.Errorf("subjectAltName: malformed hardwareModuleName")
			}
			out = append(out, HardwareModuleName{Type: hw.Type, Serial: hw.Serial})
		}
	}
	return out, nil
}
