package est

import (
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"coapca/est/cms"
)

// The Trust Anchor Management Protocol (RFC 5934) messages that /tamp delivers and /tamp/return
// takes (RFC 8295 §7): the requests a TA manager signs (status query, trust anchor update, apex
// trust anchor update, community update, sequence number adjust) and the client's responses
// (status response, the confirms, TAMP error). The module is IMPLICIT TAGS; a tagged CHOICE
// (TrustAnchorUpdate's add, TrustAnchorChoice) is explicitly tagged (X.680 §31.2.7).

// Content types of RFC 5934 §4 (id-tamp arc 2.16.840.1.101.2.1.2.77).
var (
	OIDTAMPStatusQuery            = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 2, 1, 2, 77, 1}
	OIDTAMPStatusResponse         = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 2, 1, 2, 77, 2}
	OIDTAMPUpdate                 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 2, 1, 2, 77, 3}
	OIDTAMPUpdateConfirm          = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 2, 1, 2, 77, 4}
	OIDTAMPApexUpdate             = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 2, 1, 2, 77, 5}
	OIDTAMPApexUpdateConfirm      = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 2, 1, 2, 77, 6}
	OIDTAMPCommunityUpdate        = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 2, 1, 2, 77, 7}
	OIDTAMPCommunityUpdateConfirm = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 2, 1, 2, 77, 8}
	OIDTAMPError                  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 2, 1, 2, 77, 9}
	OIDTAMPSeqNumAdjust           = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 2, 1, 2, 77, 10}
	OIDTAMPSeqNumAdjustConfirm    = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 2, 1, 2, 77, 11}
)

// TAMPKind names a TAMP message type; tampKinds is indexed by it.
type TAMPKind int

// The TAMP message types.
const (
	TAMPStatusQuery TAMPKind = iota
	TAMPStatusResponse
	TAMPUpdate
	TAMPUpdateConfirm
	TAMPApexUpdate
	TAMPApexUpdateConfirm
	TAMPCommunityUpdate
	TAMPCommunityUpdateConfirm
	TAMPSeqNumAdjust
	TAMPSeqNumAdjustConfirm
	TAMPError
	numTAMPKinds
)

type tampKindInfo struct {
	name  string
	oid   asn1.ObjectIdentifier
	media string   // RFC 8295 §7.1.2, §7.2.1 (RFC 5934 §8)
	reply TAMPKind // the response kind of a request (TAMPError for responses)
}

// tampKinds is the table of TAMP message types, indexed by TAMPKind.
var tampKinds = [numTAMPKinds]tampKindInfo{
	TAMPStatusQuery:            {"status-query", OIDTAMPStatusQuery, "application/tamp-status-query", TAMPStatusResponse},
	TAMPStatusResponse:         {"status-response", OIDTAMPStatusResponse, "application/tamp-status-response", TAMPError},
	TAMPUpdate:                 {"update", OIDTAMPUpdate, "application/tamp-update", TAMPUpdateConfirm},
	TAMPUpdateConfirm:          {"update-confirm", OIDTAMPUpdateConfirm, "application/tamp-update-confirm", TAMPError},
	TAMPApexUpdate:             {"apex-update", OIDTAMPApexUpdate, "application/tamp-apex-update", TAMPApexUpdateConfirm},
	TAMPApexUpdateConfirm:      {"apex-update-confirm", OIDTAMPApexUpdateConfirm, "application/tamp-apex-update-confirm", TAMPError},
	TAMPCommunityUpdate:        {"community-update", OIDTAMPCommunityUpdate, "application/tamp-community-update", TAMPCommunityUpdateConfirm},
	TAMPCommunityUpdateConfirm: {"community-update-confirm", OIDTAMPCommunityUpdateConfirm, "application/tamp-community-update-confirm", TAMPError},
	TAMPSeqNumAdjust:           {"sequence-adjust", OIDTAMPSeqNumAdjust, "application/tamp-sequence-adjust", TAMPSeqNumAdjustConfirm},
	TAMPSeqNumAdjustConfirm:    {"sequence-adjust-confirm", OIDTAMPSeqNumAdjustConfirm, "application/tamp-sequence-adjust-confirm", TAMPError},
	TAMPError:                  {"error", OIDTAMPError, "application/tamp-error", TAMPError},
}

// String is the kind's name ("update", "update-confirm", ...).
func (k TAMPKind) String() string {
	if k < 0 || k >= numTAMPKinds {
		return "TAMPKind(" + strconv.Itoa(int(k)) + ")"
	}
	return tampKinds[k].name
}

// Media is the kind's media type (RFC 8295 §7.1.2, §7.2.1).
func (k TAMPKind) Media() string { return tampKinds[k].media }

// OID is the kind's content type.
func (k TAMPKind) OID() asn1.ObjectIdentifier { return tampKinds[k].oid }

// Reply is the response kind a request asks for.
func (k TAMPKind) Reply() TAMPKind { return tampKinds[k].reply }

// IsRequest reports whether k is a message a TA manager sends (RFC 8295 §7.1).
func (k TAMPKind) IsRequest() bool { return k != TAMPError && tampKinds[k].reply != TAMPError }

// RequestOf returns the request kind a response kind answers (a TAMP error answers any; ok is
// false for it and for requests).
func (k TAMPKind) RequestOf() (TAMPKind, bool) {
	for r, info := range tampKinds {
		if info.reply == k && k != TAMPError {
			return TAMPKind(r), true
		}
	}
	return 0, false
}

// TAMPKindByOID returns the kind of a content type.
func TAMPKindByOID(oid asn1.ObjectIdentifier) (TAMPKind, bool) {
	for k, info := range tampKinds {
		if info.oid.Equal(oid) {
			return TAMPKind(k), true
		}
	}
	return 0, false
}

// TAMPKindByName returns the kind named s ("update", ...).
func TAMPKindByName(s string) (TAMPKind, bool) {
	for k, info := range tampKinds {
		if info.name == s {
			return TAMPKind(k), true
		}
	}
	return 0, false
}

// TAMPKindByMedia returns the kind of a media type (without parameters).
func TAMPKindByMedia(s string) (TAMPKind, bool) {
	for k, info := range tampKinds {
		if info.media == s {
			return TAMPKind(k), true
		}
	}
	return 0, false
}

// tampStatusNames are RFC 5934's StatusCode values.
var tampStatusNames = []string{"success", "decodeFailure", "badContentInfo", "badSignedData", "badEncapContent", "badCertificate",
	"badSignerInfo", "badSignedAttrs", "badUnsignedAttrs", "missingContent", "noTrustAnchor", "notAuthorized", "badDigestAlgorithm",
	"badSignatureAlgorithm", "unsupportedKeySize", "unsupportedParameters", "signatureFailure", "insufficientMemory",
	"unsupportedTAMPMsgType", "apexTAMPAnchor", "improperTAAddition", "seqNumFailure", "contingencyPublicKeyDecrypt",
	"incorrectTarget", "communityUpdateFailed", "trustAnchorNotFound", "unsupportedTAAlgorithm", "unsupportedTAKeySize",
	"unsupportedContinPubKeyDecryptAlg", "missingSignature", "resourcesBusy", "versionNumberMismatch", "missingPolicySet",
	"revokedCertificate", "unsupportedTrustAnchorFormat", "improperTAChange", "malformed", "cmsError", "unsupportedTargetIdentifier"}

// TAMPStatusName names a StatusCode (RFC 5934 §5): its name, "other" for 127, else "enum N".
func TAMPStatusName(code int) string {
	switch {
	case code >= 0 && code < len(tampStatusNames):
		return tampStatusNames[code]
	case code == 127:
		return "other"
	}
	return "enum " + strconv.Itoa(code)
}

// TAMPStatusByName returns the StatusCode of a name (or of "N").
func TAMPStatusByName(s string) (int, bool) {
	if i := slices.Index(tampStatusNames, s); i >= 0 {
		return i, true
	}
	if s == "other" {
		return 127, true
	}
	if n, err := strconv.Atoi(s); err == nil && n >= 0 && n <= 127 {
		return n, true
	}
	return 0, false
}

// Bounds of what ParseTAMP accepts.
const (
	MaxTAMPMessage = 64 << 10
	maxTAMPItems   = 64
)

// TAMPMessage is one TAMP message (RFC 5934 §4), requests and responses alike; which fields
// count depends on Kind. coapca's TargetIdentifier is always allModules (the server decides
// who gets the message, RFC 8295 §7); a received one is kept as its DER.
type TAMPMessage struct {
	Kind   TAMPKind
	Terse  bool  // status query and updates: terse (1) rather than the DEFAULT verbose (2)
	SeqNum int64 // TAMPMsgRef.seqNum (0..2^63-1)
	// Target is the DER of TAMPMsgRef.target; nil means allModules.
	Target []byte
	// HasRef is false only for a TAMPError without msgRef.
	HasRef bool

	// Trust anchor update (add, remove) and apex update (Apex, ClearTAs, ClearCommunities).
	Add              []*x509.Certificate
	Remove           [][]byte // SubjectPublicKeyInfo DER
	Apex             *x509.Certificate
	ClearTAs         bool
	ClearCommunities bool
	// Community update.
	CommunityAdd, CommunityRemove []asn1.ObjectIdentifier

	// Responses: the status codes (a confirm's terse list, or its single status; a TAMP
	// error's status), the TA key identifiers of a terse status response, and the message
	// type a TAMP error is about.
	Status  []int
	KeyIDs  [][]byte
	MsgType asn1.ObjectIdentifier
}

var allModules = []byte{0x83, 0x00} // TargetIdentifier allModules [3] IMPLICIT NULL

func (m *TAMPMessage) addRef(b *cryptobyte.Builder) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		if m.Target == nil {
			b.AddBytes(allModules)
		} else {
			b.AddBytes(m.Target)
		}
		b.AddASN1Int64(m.SeqNum)
	})
}

func addTerse(b *cryptobyte.Builder, terse bool) {
	if terse { // TerseOrVerbose DEFAULT verbose: only terse is written
		b.AddASN1(cbasn1.Tag(1).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes([]byte{1}) })
	}
}

func addOIDs(b *cryptobyte.Builder, tag cbasn1.Tag, oids []asn1.ObjectIdentifier) {
	b.AddASN1(tag, func(b *cryptobyte.Builder) {
		for _, o := range oids {
			b.AddASN1ObjectIdentifier(o)
		}
	})
}

func addStatus(b *cryptobyte.Builder, tag cbasn1.Tag, code int) {
	b.AddASN1(tag, func(b *cryptobyte.Builder) { b.AddBytes(encodeEnum(code)) })
}

// encodeEnum is the contents octet of a StatusCode (0..127, checked by MarshalTAMP).
func encodeEnum(n int) []byte { return []byte{byte(n)} }

// MarshalTAMP returns the DER of m's content (version v2 is the DEFAULT and omitted).
func MarshalTAMP(m *TAMPMessage) ([]byte, error) {
	if m.Kind < 0 || m.Kind >= numTAMPKinds {
		return nil, fmt.Errorf("tamp: unknown message kind %d", m.Kind)
	}
	if m.SeqNum < 0 {
		return nil, errors.New("tamp: negative sequence number")
	}
	if (m.Kind != TAMPError || m.HasRef) && m.Target != nil && !validTarget(m.Target) {
		return nil, errors.New("tamp: malformed target identifier")
	}
	needStatus := map[TAMPKind]int{TAMPUpdateConfirm: -1, TAMPApexUpdateConfirm: 1, TAMPCommunityUpdateConfirm: 1,
		TAMPSeqNumAdjustConfirm: 1, TAMPError: 1}
	if n, ok := needStatus[m.Kind]; ok && ((n == 1 && len(m.Status) != 1) || (n == -1 && len(m.Status) == 0)) {
		return nil, fmt.Errorf("tamp: %s needs %s status code", m.Kind, map[int]string{1: "exactly one", -1: "at least one"}[n])
	}
	for _, s := range m.Status {
		if s < 0 || s > 127 {
			return nil, fmt.Errorf("tamp: status %d out of range", s)
		}
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		switch m.Kind {
		case TAMPStatusQuery:
			addTerse(b, m.Terse)
			m.addRef(b)
		case TAMPStatusResponse:
			if len(m.KeyIDs) == 0 {
				b.SetError(errors.New("tamp: a terse status response needs trust anchor key identifiers (SIZE (1..MAX))"))
				return
			}
			m.addRef(b)
			// terseResponse [0] IMPLICIT TerseStatusResponse { taKeyIds KeyIdentifiers }
			b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					for _, id := range m.KeyIDs {
						b.AddASN1OctetString(id)
					}
				})
			})
		case TAMPUpdate:
			if len(m.Add)+len(m.Remove) == 0 {
				b.SetError(errors.New("tamp: a trust anchor update needs at least one addition or removal (SIZE (1..MAX))"))
				return
			}
			addTerse(b, m.Terse)
			m.addRef(b)
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				for _, c := range m.Add { // add [1] TrustAnchorChoice (a CHOICE: explicit), certificate
					b.AddASN1(cbasn1.Tag(1).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(c.Raw) })
				}
				for _, spki := range m.Remove { // remove [2] IMPLICIT SubjectPublicKeyInfo
					in := cryptobyte.String(spki)
					var body cryptobyte.String
					if !in.ReadASN1(&body, cbasn1.SEQUENCE) || !in.Empty() {
						b.SetError(errors.New("tamp: malformed SubjectPublicKeyInfo to remove"))
						return
					}
					b.AddASN1(cbasn1.Tag(2).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(body) })
				}
			})
		case TAMPApexUpdate:
			if m.Apex == nil {
				b.SetError(errors.New("tamp: an apex update needs the new apex trust anchor"))
				return
			}
			addTerse(b, m.Terse)
			m.addRef(b)
			b.AddASN1Boolean(m.ClearTAs)
			b.AddASN1Boolean(m.ClearCommunities)
			b.AddBytes(m.Apex.Raw) // apexTA TrustAnchorChoice: certificate
		case TAMPCommunityUpdate:
			if len(m.CommunityAdd)+len(m.CommunityRemove) == 0 {
				b.SetError(errors.New("tamp: a community update needs communities to add or remove"))
				return
			}
			addTerse(b, m.Terse)
			m.addRef(b)
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				if len(m.CommunityRemove) > 0 {
					addOIDs(b, cbasn1.Tag(1).Constructed().ContextSpecific(), m.CommunityRemove)
				}
				if len(m.CommunityAdd) > 0 {
					addOIDs(b, cbasn1.Tag(2).Constructed().ContextSpecific(), m.CommunityAdd)
				}
			})
		case TAMPSeqNumAdjust:
			m.addRef(b)
		case TAMPUpdateConfirm:
			m.addRef(b)
			// terseConfirm [0] IMPLICIT StatusCodeList
			b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
				for _, s := range m.Status {
					addStatus(b, cbasn1.ENUM, s)
				}
			})
		case TAMPApexUpdateConfirm, TAMPCommunityUpdateConfirm:
			m.addRef(b)
			addStatus(b, cbasn1.Tag(0).ContextSpecific(), m.Status[0]) // terse [0] IMPLICIT StatusCode
		case TAMPSeqNumAdjustConfirm:
			m.addRef(b)
			addStatus(b, cbasn1.ENUM, m.Status[0])
		case TAMPError:
			if m.MsgType == nil {
				b.SetError(errors.New("tamp: an error needs the message type it is about"))
				return
			}
			b.AddASN1ObjectIdentifier(m.MsgType)
			addStatus(b, cbasn1.ENUM, m.Status[0])
			if m.HasRef {
				m.addRef(b)
			}
		}
	})
	return b.Bytes()
}

// validTarget reports whether t is one TargetIdentifier element: hwModules [1], communities
// [2] (constructed), allModules [3], uri [4] (primitive) or otherName [5] (constructed).
func validTarget(t []byte) bool {
	s := cryptobyte.String(t)
	var el cryptobyte.String
	var tag cbasn1.Tag
	if !s.ReadAnyASN1Element(&el, &tag) || !s.Empty() {
		return false
	}
	switch uint8(tag) {
	case 0xa1, 0xa2, 0x83, 0x84, 0xa5:
		return true
	}
	return false
}

// ParseTAMP reads the DER content of a TAMP message of kind (RFC 5934 §4). Verbose status
// responses and confirms are accepted with their status and trust anchors skipped; trust
// anchors other than certificates in updates are refused.
func ParseTAMP(kind TAMPKind, der []byte) (*TAMPMessage, error) {
	if kind < 0 || kind >= numTAMPKinds {
		return nil, fmt.Errorf("tamp: unknown message kind %d", kind)
	}
	if len(der) > MaxTAMPMessage {
		return nil, fmt.Errorf("tamp: %d bytes is larger than %d", len(der), MaxTAMPMessage)
	}
	m := &TAMPMessage{Kind: kind, HasRef: true}
	in := cryptobyte.String(der)
	var s cryptobyte.String
	if !in.ReadASN1(&s, cbasn1.SEQUENCE) || !in.Empty() {
		return nil, fmt.Errorf("tamp %s: not a DER SEQUENCE", kind)
	}
	if err := m.parse(&s); err != nil {
		return nil, fmt.Errorf("tamp %s: %w", kind, err)
	}
	if !s.Empty() {
		return nil, fmt.Errorf("tamp %s: trailing data", kind)
	}
	return m, nil
}

func (m *TAMPMessage) parse(s *cryptobyte.String) error {
	// version [0] IMPLICIT TAMPVersion DEFAULT v2
	if s.PeekASN1Tag(cbasn1.Tag(0).ContextSpecific()) {
		var v cryptobyte.String
		if !s.ReadASN1(&v, cbasn1.Tag(0).ContextSpecific()) || len(v) != 1 || (v[0] != 1 && v[0] != 2) {
			return errors.New("unsupported version")
		}
	}
	switch m.Kind {
	case TAMPStatusQuery, TAMPUpdate, TAMPApexUpdate, TAMPCommunityUpdate:
		if s.PeekASN1Tag(cbasn1.Tag(1).ContextSpecific()) {
			var t cryptobyte.String
			if !s.ReadASN1(&t, cbasn1.Tag(1).ContextSpecific()) || len(t) != 1 || (t[0] != 1 && t[0] != 2) {
				return errors.New("malformed terse")
			}
			m.Terse = t[0] == 1
		}
	}
	if m.Kind == TAMPError {
		if !s.ReadASN1ObjectIdentifier(&m.MsgType) {
			return errors.New("malformed msgType")
		}
		if err := m.readStatus(s, cbasn1.ENUM); err != nil {
			return err
		}
		m.HasRef = !s.Empty()
		if m.HasRef {
			return m.readRef(s)
		}
		return nil
	}
	if err := m.readRef(s); err != nil {
		return err
	}
	switch m.Kind {
	case TAMPStatusQuery, TAMPSeqNumAdjust:
	case TAMPStatusResponse:
		switch {
		case s.PeekASN1Tag(cbasn1.Tag(0).Constructed().ContextSpecific()):
			var terse, ids cryptobyte.String
			if !s.ReadASN1(&terse, cbasn1.Tag(0).Constructed().ContextSpecific()) || !terse.ReadASN1(&ids, cbasn1.SEQUENCE) ||
				!terse.SkipOptionalASN1(cbasn1.SEQUENCE) || !terse.Empty() {
				return errors.New("malformed terse status response")
			}
			for !ids.Empty() {
				var id cryptobyte.String
				if len(m.KeyIDs) == maxTAMPItems || !ids.ReadASN1(&id, cbasn1.OCTET_STRING) {
					return errors.New("malformed taKeyIds")
				}
				m.KeyIDs = append(m.KeyIDs, append([]byte{}, id...))
			}
			if len(m.KeyIDs) == 0 {
				return errors.New("empty taKeyIds (SIZE (1..MAX))")
			}
		case s.PeekASN1Tag(cbasn1.Tag(1).Constructed().ContextSpecific()):
			if !s.SkipASN1(cbasn1.Tag(1).Constructed().ContextSpecific()) {
				return errors.New("malformed verbose status response")
			}
		default:
			return errors.New("missing response")
		}
		if !s.SkipOptionalASN1(cbasn1.BOOLEAN) { // usesApex DEFAULT TRUE
			return errors.New("malformed usesApex")
		}
	case TAMPUpdate:
		var ups cryptobyte.String
		if !s.ReadASN1(&ups, cbasn1.SEQUENCE) {
			return errors.New("malformed updates")
		}
		for !ups.Empty() {
			if len(m.Add)+len(m.Remove) == maxTAMPItems {
				return errors.New("too many updates")
			}
			var el cryptobyte.String
			switch {
			case ups.PeekASN1Tag(cbasn1.Tag(1).Constructed().ContextSpecific()):
				var cert cryptobyte.String
				if !ups.ReadASN1(&el, cbasn1.Tag(1).Constructed().ContextSpecific()) || !el.ReadASN1Element(&cert, cbasn1.SEQUENCE) || !el.Empty() {
					return errors.New("an added trust anchor is not a certificate (TrustAnchorChoice certificate)")
				}
				c, err := x509.ParseCertificate(cert)
				if err != nil {
					return fmt.Errorf("added trust anchor: %w", err)
				}
				m.Add = append(m.Add, c)
			case ups.PeekASN1Tag(cbasn1.Tag(2).Constructed().ContextSpecific()):
				if !ups.ReadASN1(&el, cbasn1.Tag(2).Constructed().ContextSpecific()) {
					return errors.New("malformed remove")
				}
				var b cryptobyte.Builder
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddBytes(el) })
				spki, err := b.Bytes()
				if err != nil {
					return err
				}
				if _, err := x509.ParsePKIXPublicKey(spki); err != nil {
					return fmt.Errorf("removed trust anchor: %w", err)
				}
				m.Remove = append(m.Remove, spki)
			default:
				return errors.New("unsupported trust anchor update (add and remove only)")
			}
		}
		if len(m.Add)+len(m.Remove) == 0 {
			return errors.New("no updates (SIZE (1..MAX))")
		}
		if !s.SkipOptionalASN1(cbasn1.Tag(2).Constructed().ContextSpecific()) { // tampSeqNumbers
			return errors.New("malformed tampSeqNumbers")
		}
	case TAMPApexUpdate:
		var cert cryptobyte.String
		if !s.ReadASN1Boolean(&m.ClearTAs) || !s.ReadASN1Boolean(&m.ClearCommunities) || !s.SkipOptionalASN1(cbasn1.INTEGER) ||
			!s.ReadASN1Element(&cert, cbasn1.SEQUENCE) {
			return errors.New("malformed apex update (the apex trust anchor must be a certificate)")
		}
		c, err := x509.ParseCertificate(cert)
		if err != nil {
			return fmt.Errorf("apex trust anchor: %w", err)
		}
		m.Apex = c
	case TAMPCommunityUpdate:
		var ups cryptobyte.String
		if !s.ReadASN1(&ups, cbasn1.SEQUENCE) {
			return errors.New("malformed updates")
		}
		for i, dst := range []*[]asn1.ObjectIdentifier{&m.CommunityRemove, &m.CommunityAdd} {
			tag := cbasn1.Tag(i + 1).Constructed().ContextSpecific()
			if !ups.PeekASN1Tag(tag) {
				continue
			}
			var l cryptobyte.String
			if !ups.ReadASN1(&l, tag) {
				return errors.New("malformed community list")
			}
			for !l.Empty() {
				var o asn1.ObjectIdentifier
				if len(*dst) == maxTAMPItems || !l.ReadASN1ObjectIdentifier(&o) {
					return errors.New("malformed community")
				}
				*dst = append(*dst, o)
			}
		}
		if !ups.Empty() {
			return errors.New("malformed updates")
		}
		if len(m.CommunityAdd)+len(m.CommunityRemove) == 0 {
			return errors.New("no communities to add or remove")
		}
	case TAMPUpdateConfirm:
		switch {
		case s.PeekASN1Tag(cbasn1.Tag(0).Constructed().ContextSpecific()):
			var l cryptobyte.String
			if !s.ReadASN1(&l, cbasn1.Tag(0).Constructed().ContextSpecific()) {
				return errors.New("malformed terse confirm")
			}
			for !l.Empty() {
				if len(m.Status) == maxTAMPItems {
					return errors.New("too many status codes")
				}
				if err := m.readStatus(&l, cbasn1.ENUM); err != nil {
					return err
				}
			}
		case s.PeekASN1Tag(cbasn1.Tag(1).Constructed().ContextSpecific()):
			var v, l cryptobyte.String
			if !s.ReadASN1(&v, cbasn1.Tag(1).Constructed().ContextSpecific()) || !v.ReadASN1(&l, cbasn1.SEQUENCE) {
				return errors.New("malformed verbose confirm")
			}
			for !l.Empty() {
				if len(m.Status) == maxTAMPItems {
					return errors.New("too many status codes")
				}
				if err := m.readStatus(&l, cbasn1.ENUM); err != nil {
					return err
				}
			}
		default:
			return errors.New("missing confirm")
		}
		if len(m.Status) == 0 {
			return errors.New("empty status list (SIZE (1..MAX))")
		}
	case TAMPApexUpdateConfirm, TAMPCommunityUpdateConfirm:
		switch {
		case s.PeekASN1Tag(cbasn1.Tag(0).ContextSpecific()):
			if err := m.readStatus(s, cbasn1.Tag(0).ContextSpecific()); err != nil {
				return err
			}
		case s.PeekASN1Tag(cbasn1.Tag(1).Constructed().ContextSpecific()):
			var v cryptobyte.String
			if !s.ReadASN1(&v, cbasn1.Tag(1).Constructed().ContextSpecific()) {
				return errors.New("malformed verbose confirm")
			}
			if err := m.readStatus(&v, cbasn1.ENUM); err != nil {
				return err
			}
		default:
			return errors.New("missing confirm")
		}
	case TAMPSeqNumAdjustConfirm:
		if err := m.readStatus(s, cbasn1.ENUM); err != nil {
			return err
		}
	}
	return nil
}

func (m *TAMPMessage) readRef(s *cryptobyte.String) error {
	var ref, target cryptobyte.String
	var tag cbasn1.Tag
	if !s.ReadASN1(&ref, cbasn1.SEQUENCE) || !ref.ReadAnyASN1Element(&target, &tag) || !ref.ReadASN1Int64WithTag(&m.SeqNum, cbasn1.INTEGER) ||
		!ref.Empty() || m.SeqNum < 0 {
		return errors.New("malformed TAMPMsgRef")
	}
	if !validTarget(target) {
		return errors.New("malformed target identifier")
	}
	if string(target) != string(allModules) {
		m.Target = append([]byte{}, target...)
	}
	return nil
}

func (m *TAMPMessage) readStatus(s *cryptobyte.String, tag cbasn1.Tag) error {
	// StatusCode values are 0..127: one contents octet in DER.
	var v cryptobyte.String
	if !s.ReadASN1(&v, tag) || len(v) != 1 || v[0] >= 0x80 {
		return errors.New("malformed status code")
	}
	m.Status = append(m.Status, int(v[0]))
	return nil
}

// SignTAMP signs a TAMP message: the ContentInfo of a SignedData by signer (certificate
// chain[0]) encapsulating m (RFC 5934 §4: TAMP messages are CMS signed-data; RFC 8295 §7.1.2:
// "these content types are digitally signed").
func SignTAMP(rnd io.Reader, m *TAMPMessage, signer crypto.Signer, chain []*x509.Certificate, now time.Time) ([]byte, error) {
	body, err := MarshalTAMP(m)
	if err != nil {
		return nil, err
	}
	sd, err := cms.Sign(rnd, m.Kind.OID(), body, signer, chain, now)
	if err != nil {
		return nil, fmt.Errorf("tamp: %w", err)
	}
	return cms.ContentInfo(cms.OIDSignedData, sd)
}

// OpenedTAMP is a parsed TAMP message with the SignedData around it (nil when unsigned).
type OpenedTAMP struct {
	*TAMPMessage
	Signed *cms.Signed
}

// OpenTAMP reads a TAMP message: the DER ContentInfo of a SignedData holding one (signature
// verified; the signer's authority is the caller's check) or, when unsigned is true, of the
// message itself (RFC 8295 §7.2.1: responses "should be signed"). want, if not negative, is
// the kind the media type announced: another content type is refused.
func OpenTAMP(der []byte, want TAMPKind, unsigned bool) (*OpenedTAMP, error) {
	ctype, content, sd, err := openContentInfo(der, MaxTAMPMessage, "tamp")
	if err != nil {
		return nil, err
	}
	if sd == nil && !unsigned {
		return nil, fmt.Errorf("tamp: content type %v is not a SignedData (RFC 8295 §7.1.2: TAMP messages are signed)", ctype)
	}
	out := &OpenedTAMP{Signed: sd}
	kind, ok := TAMPKindByOID(ctype)
	if !ok {
		return nil, fmt.Errorf("tamp: content type %v is not a TAMP message (RFC 5934)", ctype)
	}
	if want >= 0 && kind != want {
		return nil, fmt.Errorf("tamp: the message is a %s, not the %s its media type announces", kind, want)
	}
	if out.TAMPMessage, err = ParseTAMP(kind, content); err != nil {
		return nil, err
	}
	return out, nil
}
