package est

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// CsrAttrs is the CSR Attributes response of RFC 7030 §4.5.2 (the EST-coaps /att payload,
// Content-Format 285), as clarified by RFC 9908:
//
//	CsrAttrs ::= SEQUENCE SIZE (0..MAX) OF AttrOrOID
//	AttrOrOID ::= CHOICE { oid OBJECT IDENTIFIER, attribute Attribute }
//	Attribute ::= SEQUENCE { type OBJECT IDENTIFIER, values SET SIZE(1..MAX) OF ANY }
type CsrAttrs struct {
	Items []AttrOrOID
}

// AttrOrOID is one element of CsrAttrs: either a bare OID (Attribute nil) or an Attribute.
type AttrOrOID struct {
	OID       asn1.ObjectIdentifier
	Attribute *Attribute
}

// Attribute is an attribute with its values kept as raw DER elements.
type Attribute struct {
	Type   asn1.ObjectIdentifier
	Values []asn1.RawValue
}

// CsrAttrsTemplate describes what a server asks of the client's CSR. NewCsrAttrs turns it into
// the RFC 9908 style: bare challengePassword OID when PoP linking is wanted, the key type as an
// attribute (algorithm OID with the curve / key size as value), the signature algorithm OID,
// and an extensionRequest attribute whose value is the template of extensions to request.
type CsrAttrsTemplate struct {
	ChallengePassword  bool
	KeyType            string // "P-256", "P-384", "P-521", "Ed25519", "RSA-2048", ...; "" = no preference
	SignatureAlgorithm x509.SignatureAlgorithm
	Extensions         []pkix.Extension
}

// NewCsrAttrs builds the CsrAttrs for t.
func NewCsrAttrs(t CsrAttrsTemplate) (*CsrAttrs, error) {
	a := &CsrAttrs{}
	if t.ChallengePassword {
		a.Items = append(a.Items, AttrOrOID{OID: OIDChallengePassword})
	}
	if t.KeyType != "" {
		attr, err := keyTypeAttribute(t.KeyType)
		if err != nil {
			return nil, err
		}
		if attr != nil {
			a.Items = append(a.Items, AttrOrOID{Attribute: attr})
		} else {
			a.Items = append(a.Items, AttrOrOID{OID: oidEd25519})
		}
	}
	if t.SignatureAlgorithm != x509.UnknownSignatureAlgorithm {
		oid, ok := sigAlgOID(t.SignatureAlgorithm)
		if !ok {
			return nil, fmt.Errorf("csrattrs: unsupported signature algorithm %v", t.SignatureAlgorithm)
		}
		a.Items = append(a.Items, AttrOrOID{OID: oid})
	}
	if len(t.Extensions) > 0 {
		ext, err := asn1.Marshal(t.Extensions)
		if err != nil {
			return nil, fmt.Errorf("csrattrs: extensionRequest: %w", err)
		}
		a.Items = append(a.Items, AttrOrOID{Attribute: &Attribute{
			Type: OIDExtensionRequest, Values: []asn1.RawValue{{FullBytes: ext}},
		}})
	}
	return a, nil
}

func keyTypeAttribute(kt string) (*Attribute, error) {
	curve := map[string]asn1.ObjectIdentifier{"P-256": oidP256, "P-384": oidP384, "P-521": oidP521}
	if c, ok := curve[kt]; ok {
		v, _ := asn1.Marshal(c)
		return &Attribute{Type: oidECPublicKey, Values: []asn1.RawValue{{FullBytes: v}}}, nil
	}
	if kt == "Ed25519" {
		return nil, nil
	}
	var bits int
	if _, err := fmt.Sscanf(kt, "RSA-%d", &bits); err == nil && bits >= 1024 {
		v, _ := asn1.Marshal(bits)
		return &Attribute{Type: oidRSAEncrypton, Values: []asn1.RawValue{{FullBytes: v}}}, nil
	}
	return nil, fmt.Errorf("csrattrs: unsupported key type %q", kt)
}

func sigAlgOID(alg x509.SignatureAlgorithm) (asn1.ObjectIdentifier, bool) {
	for _, s := range sigAlgOIDs {
		if s.alg == alg {
			return s.oid, true
		}
	}
	return nil, false
}

// Marshal returns the DER of a.
func (a *CsrAttrs) Marshal() ([]byte, error) {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(seq *cryptobyte.Builder) {
		for _, it := range a.Items {
			if it.Attribute == nil {
				seq.AddASN1ObjectIdentifier(it.OID)
				continue
			}
			seq.AddASN1(cbasn1.SEQUENCE, func(at *cryptobyte.Builder) {
				at.AddASN1ObjectIdentifier(it.Attribute.Type)
				at.AddASN1(cbasn1.SET, func(set *cryptobyte.Builder) {
					for _, v := range it.Attribute.Values {
						if v.FullBytes != nil {
							set.AddBytes(v.FullBytes)
						} else {
							fb, err := asn1.Marshal(v)
							if err != nil {
								set.SetError(err)
								return
							}
							set.AddBytes(fb)
						}
					}
				})
			})
		}
	})
	out, err := b.Bytes()
	if err != nil {
		return nil, fmt.Errorf("csrattrs: encode: %w", err)
	}
	return out, nil
}

// ParseCsrAttrs parses a CsrAttrs (RFC 7030 §4.5.2, RFC 9908). An empty payload means "no
// attributes". It accepts the loose encodings RFC 9908 documents in the RFC 7030 example
// (attribute values of any type), and rejects anything that is not a SEQUENCE of OIDs and
// Attributes.
func ParseCsrAttrs(der []byte) (*CsrAttrs, error) {
	a := &CsrAttrs{}
	if len(der) == 0 {
		return a, nil
	}
	in := cryptobyte.String(der)
	var seq cryptobyte.String
	if !in.ReadASN1(&seq, cbasn1.SEQUENCE) {
		return nil, errors.New("csrattrs: not a DER SEQUENCE")
	}
	if !in.Empty() {
		return nil, errors.New("csrattrs: trailing data after the SEQUENCE")
	}
	for i := 0; !seq.Empty(); i++ {
		if i >= 256 {
			return nil, errors.New("csrattrs: too many elements")
		}
		var tag cbasn1.Tag
		if !seq.PeekASN1Tag(cbasn1.OBJECT_IDENTIFIER) && !seq.PeekASN1Tag(cbasn1.SEQUENCE) {
			var el cryptobyte.String
			if seq.ReadAnyASN1(&el, &tag) {
				return nil, fmt.Errorf("csrattrs: element %d: tag 0x%x is neither an OID nor an Attribute", i, uint8(tag))
			}
			return nil, fmt.Errorf("csrattrs: element %d: malformed", i)
		}
		if seq.PeekASN1Tag(cbasn1.OBJECT_IDENTIFIER) {
			var oid asn1.ObjectIdentifier
			if !seq.ReadASN1ObjectIdentifier(&oid) {
				return nil, fmt.Errorf("csrattrs: element %d: malformed OID", i)
			}
			a.Items = append(a.Items, AttrOrOID{OID: oid})
			continue
		}
		var at, set cryptobyte.String
		var typ asn1.ObjectIdentifier
		if !seq.ReadASN1(&at, cbasn1.SEQUENCE) || !at.ReadASN1ObjectIdentifier(&typ) {
			return nil, fmt.Errorf("csrattrs: element %d: malformed Attribute type", i)
		}
		if !at.ReadASN1(&set, cbasn1.SET) || !at.Empty() {
			return nil, fmt.Errorf("csrattrs: element %d (%v): Attribute values are not a SET", i, typ)
		}
		attr := &Attribute{Type: typ}
		for !set.Empty() {
			var el cryptobyte.String
			if !set.ReadAnyASN1Element(&el, &tag) {
				return nil, fmt.Errorf("csrattrs: element %d (%v): malformed value", i, typ)
			}
			var rv asn1.RawValue
			if _, err := asn1.Unmarshal(el, &rv); err != nil {
				return nil, fmt.Errorf("csrattrs: element %d (%v): %w", i, typ, err)
			}
			attr.Values = append(attr.Values, rv)
		}
		if len(attr.Values) == 0 {
			return nil, fmt.Errorf("csrattrs: element %d (%v): Attribute has no values", i, typ)
		}
		a.Items = append(a.Items, AttrOrOID{Attribute: attr})
	}
	return a, nil
}

// WantsChallengePassword reports whether the server asks for the challengePassword (PoP
// linking, RFC 7030 §3.5), as a bare OID or as an attribute.
func (a *CsrAttrs) WantsChallengePassword() bool {
	for _, it := range a.Items {
		if it.OID.Equal(OIDChallengePassword) || (it.Attribute != nil && it.Attribute.Type.Equal(OIDChallengePassword)) {
			return true
		}
	}
	return false
}

// KeyType returns the key type the server asks for ("P-256", "P-384", "P-521", "Ed25519",
// "RSA-<bits>", "RSA"), or "" when it states none or one this package does not name.
func (a *CsrAttrs) KeyType() string {
	for _, it := range a.Items {
		if it.Attribute == nil {
			if it.OID.Equal(oidEd25519) {
				return "Ed25519"
			}
			continue
		}
		switch {
		case it.Attribute.Type.Equal(oidECPublicKey):
			var c asn1.ObjectIdentifier
			if _, err := asn1.Unmarshal(it.Attribute.Values[0].FullBytes, &c); err == nil {
				switch {
				case c.Equal(oidP256):
					return "P-256"
				case c.Equal(oidP384):
					return "P-384"
				case c.Equal(oidP521):
					return "P-521"
				}
			}
		case it.Attribute.Type.Equal(oidRSAEncrypton):
			var bits int
			if _, err := asn1.Unmarshal(it.Attribute.Values[0].FullBytes, &bits); err == nil {
				return fmt.Sprintf("RSA-%d", bits)
			}
			return "RSA"
		}
	}
	return ""
}

// SignatureAlgorithm returns the first signature algorithm named, or UnknownSignatureAlgorithm.
func (a *CsrAttrs) SignatureAlgorithm() x509.SignatureAlgorithm {
	for _, it := range a.Items {
		if it.Attribute != nil {
			continue
		}
		for _, s := range sigAlgOIDs {
			if s.oid.Equal(it.OID) && !it.OID.Equal(oidEd25519) {
				return s.alg
			}
		}
	}
	return x509.UnknownSignatureAlgorithm
}

// Extensions returns the extensions of every extensionRequest template, in order.
func (a *CsrAttrs) Extensions() []pkix.Extension {
	var out []pkix.Extension
	for _, it := range a.Items {
		if it.Attribute == nil || !it.Attribute.Type.Equal(OIDExtensionRequest) {
			continue
		}
		for _, v := range it.Attribute.Values {
			var exts []pkix.Extension
			if rest, err := asn1.Unmarshal(v.FullBytes, &exts); err == nil && len(rest) == 0 {
				out = append(out, exts...)
			}
		}
	}
	return out
}

// String renders a for people (used by `coapca est csrattrs`).
func (a *CsrAttrs) String() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "CSR attributes (%d):\n", len(a.Items))
	for _, it := range a.Items {
		if it.Attribute == nil {
			fmt.Fprintf(&sb, "  - %s%s\n", oidName(it.OID), bareOIDHint(it.OID))
			continue
		}
		at := it.Attribute
		switch {
		case at.Type.Equal(OIDExtensionRequest):
			fmt.Fprintf(&sb, "  - %s: request these extensions:\n", oidName(at.Type))
			for _, v := range at.Values {
				var exts []pkix.Extension
				if rest, err := asn1.Unmarshal(v.FullBytes, &exts); err != nil || len(rest) != 0 {
					fmt.Fprintf(&sb, "      (unparsable template: %s)\n", describeValue(v, 0))
					continue
				}
				for _, e := range exts {
					crit := ""
					if e.Critical {
						crit = " [critical]"
					}
					fmt.Fprintf(&sb, "      %s%s: %s\n", oidName(e.Id), crit, describeExtension(e))
				}
			}
		case at.Type.Equal(oidECPublicKey) || at.Type.Equal(oidRSAEncrypton):
			vals := make([]string, len(at.Values))
			for i, v := range at.Values {
				vals[i] = describeValue(v, 0)
			}
			fmt.Fprintf(&sb, "  - key type: %s with %s\n", oidName(at.Type), strings.Join(vals, ", "))
		default:
			fmt.Fprintf(&sb, "  - attribute %s:\n", oidName(at.Type))
			for _, v := range at.Values {
				fmt.Fprintf(&sb, "      %s\n", describeValue(v, 0))
			}
		}
	}
	return sb.String()
}

func bareOIDHint(o asn1.ObjectIdentifier) string {
	switch {
	case o.Equal(OIDChallengePassword):
		return ": include a challengePassword (PoP linking, RFC 7030 §3.5)"
	case o.Equal(oidEd25519):
		return ": key type / signature algorithm"
	}
	for _, s := range sigAlgOIDs {
		if s.oid.Equal(o) {
			return ": sign the CSR with this algorithm"
		}
	}
	switch n := oidNames[o.String()]; {
	case strings.HasPrefix(n, "secp") || strings.HasPrefix(n, "brainpool"):
		return ": use a key on this curve"
	case strings.HasPrefix(n, "sha"):
		return ": use this hash algorithm"
	}
	if len(o) >= 3 && o[0] == 2 && o[1] == 5 && o[2] == 4 {
		return ": include this subject attribute"
	}
	return ""
}

// describeValue renders one DER value compactly.
func describeValue(v asn1.RawValue, depth int) string {
	if depth > 4 {
		return "…"
	}
	if v.Class == asn1.ClassUniversal {
		switch v.Tag {
		case asn1.TagOID:
			var o asn1.ObjectIdentifier
			if _, err := asn1.Unmarshal(v.FullBytes, &o); err == nil {
				return oidName(o)
			}
		case asn1.TagInteger:
			var n int64
			if _, err := asn1.Unmarshal(v.FullBytes, &n); err == nil {
				return fmt.Sprint(n)
			}
		case asn1.TagBoolean:
			var b bool
			if _, err := asn1.Unmarshal(v.FullBytes, &b); err == nil {
				return fmt.Sprint(b)
			}
		case asn1.TagPrintableString, asn1.TagUTF8String, asn1.TagIA5String, 20 /*T61*/, 26 /*Visible*/ :
			return fmt.Sprintf("%q", string(v.Bytes))
		case asn1.TagSequence, asn1.TagSet:
			parts := children(v.Bytes, depth)
			open, close := "{", "}"
			if v.Tag == asn1.TagSet {
				open, close = "SET{", "}"
			}
			return open + strings.Join(parts, ", ") + close
		case asn1.TagNull:
			return "NULL"
		}
	}
	if v.Class == asn1.ClassContextSpecific && v.IsCompound {
		return fmt.Sprintf("[%d]{%s}", v.Tag, strings.Join(children(v.Bytes, depth), ", "))
	}
	return "0x" + hex.EncodeToString(v.Bytes)
}

func children(b []byte, depth int) []string {
	var out []string
	for len(b) > 0 {
		var c asn1.RawValue
		rest, err := asn1.Unmarshal(b, &c)
		if err != nil {
			out = append(out, "0x"+hex.EncodeToString(b))
			break
		}
		out = append(out, describeValue(c, depth+1))
		b = rest
	}
	return out
}

// describeExtension renders the extensions a template commonly carries; others generically.
func describeExtension(e pkix.Extension) string {
	switch {
	case e.Id.Equal(oidSubjectAltName):
		if s, err := describeGeneralNames(e.Value); err == nil {
			return s
		}
	case e.Id.Equal(oidKeyUsage):
		var bs asn1.BitString
		if _, err := asn1.Unmarshal(e.Value, &bs); err == nil {
			names := []string{"digitalSignature", "nonRepudiation", "keyEncipherment", "dataEncipherment",
				"keyAgreement", "keyCertSign", "cRLSign", "encipherOnly", "decipherOnly"}
			var set []string
			for i, n := range names {
				if bs.At(i) == 1 {
					set = append(set, n)
				}
			}
			return strings.Join(set, ", ")
		}
	case e.Id.Equal(oidExtKeyUsage):
		var oids []asn1.ObjectIdentifier
		if _, err := asn1.Unmarshal(e.Value, &oids); err == nil {
			s := make([]string, len(oids))
			for i, o := range oids {
				s[i] = oidName(o)
			}
			return strings.Join(s, ", ")
		}
	}
	if len(e.Value) == 0 {
		return "(value to be filled in by the client)"
	}
	var rv asn1.RawValue
	if _, err := asn1.Unmarshal(e.Value, &rv); err == nil {
		return describeValue(rv, 0)
	}
	return "0x" + hex.EncodeToString(e.Value)
}

// describeGeneralNames renders a GeneralNames SEQUENCE (RFC 5280 §4.2.1.6).
func describeGeneralNames(der []byte) (string, error) {
	var seq asn1.RawValue
	if _, err := asn1.Unmarshal(der, &seq); err != nil {
		return "", err
	}
	var out []string
	b := seq.Bytes
	for len(b) > 0 {
		var gn asn1.RawValue
		rest, err := asn1.Unmarshal(b, &gn)
		if err != nil {
			return "", err
		}
		b = rest
		switch gn.Tag {
		case 0: // otherName ::= SEQUENCE { type-id OID, value [0] EXPLICIT ANY }
			var on struct {
				ID    asn1.ObjectIdentifier
				Value asn1.RawValue `asn1:"explicit,tag:0"`
			}
			if _, err := asn1.UnmarshalWithParams(gn.FullBytes, &on, "tag:0"); err != nil {
				out = append(out, "otherName 0x"+hex.EncodeToString(gn.Bytes))
				continue
			}
			var inner asn1.RawValue
			if _, err := asn1.Unmarshal(on.Value.Bytes, &inner); err != nil {
				inner = on.Value
			}
			out = append(out, fmt.Sprintf("otherName %s = %s", oidName(on.ID), describeValue(inner, 0)))
		case 1:
			out = append(out, "email:"+string(gn.Bytes))
		case 2:
			out = append(out, "DNS:"+string(gn.Bytes))
		case 6:
			out = append(out, "URI:"+string(gn.Bytes))
		case 7:
			out = append(out, "IP:"+net.IP(gn.Bytes).String())
		default:
			out = append(out, fmt.Sprintf("[%d] 0x%s", gn.Tag, hex.EncodeToString(gn.Bytes)))
		}
	}
	return strings.Join(out, ", "), nil
}
