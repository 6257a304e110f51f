package authority

import (
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Policy is everything the authority decides by: profiles, manufacturer trust stores, MAC
// secrets and CA behaviour, as plain values. The composition layer (internal/config) reads
// the YAML file and the files it names and translates them into a Policy; the authority
// reads no files and checks every rule in New. The zero value is a working policy: one
// default profile (DefaultProfile) and no manufacturer trust store.
type Policy struct {
	// Profiles are the certificate profiles. The profile with label "" is the default, used
	// by /.well-known/est itself; a built-in default (DefaultProfile) is added when none is
	// given. Every other label is served as /.well-known/est/<label>.
	Profiles []ProfileOptions
	// TrustStores are the manufacturer trust stores: certificates that authenticate devices'
	// factory identities (IDevIDs) for initial enrollment.
	TrustStores []TrustStore
	// MACSecrets are shared secrets that authenticate CMP requests with MAC protection
	// (RFC 9483 §3.2, PasswordBasedMac/PBMAC1), each named by its reference (senderKID).
	MACSecrets []MACSecret
	// Users are HTTP Basic credentials (RFC 7030 §3.2.3) for EST over HTTPS, by name, with a
	// bcrypt hash of the password. Profiles admit them with requester rules of kind user.
	Users []User
	// CRLValidity is how long a generated CRL is valid (its nextUpdate − thisUpdate).
	// Default 168h (7 days).
	CRLValidity time.Duration
	// Backdate moves every certificate's notBefore this far into the past, so that devices
	// whose clocks lag slightly accept a fresh certificate. Default 1m; negative = none.
	Backdate time.Duration
}

// TrustStore is one manufacturer trust store.
type TrustStore struct {
	// Name identifies the store in logs and in requester rules (required, unique; "ca" is
	// reserved for this CA itself).
	Name string
	// Roots are the trust anchors: the manufacturer's root and/or issuing CAs (at least one).
	Roots []*x509.Certificate
	// AllowExpired accepts device certificates from this store after their notAfter: an
	// IDevID is meant to last the device's lifetime and may have expired, or carry the
	// 99991231235959Z "no expiration" time (RFC 9148 §9, IEEE 802.1AR).
	AllowExpired bool
}

// MACSecret is one CMP shared secret.
type MACSecret struct {
	// Reference is the secret's name, sent by the client as senderKID (required, unique).
	Reference string
	// Secret is the shared secret (not empty).
	Secret []byte
}

// User is one HTTP Basic user.
type User struct {
	// Name is the user name (required, unique, without ':').
	Name string
	// PasswordHash is the bcrypt hash of the password ($2a$, $2b$ or $2y$).
	PasswordHash string
}

// ProfileOptions configure one certificate profile.
type ProfileOptions struct {
	// Label selects the profile: "" is the default profile; other labels appear in the
	// URI path (/.well-known/est/<label>, CMP /p/<label>). Letters, digits, '-', '_', '.'.
	Label string
	// Validity is the lifetime of issued certificates (default 8760h = 365 days), capped at
	// the issuing CA's own notAfter.
	Validity time.Duration
	// KeyUsage lists keyUsage bits: digitalSignature, contentCommitment, keyEncipherment,
	// dataEncipherment, keyAgreement, certSign, crlSign, encipherOnly, decipherOnly.
	// Default [digitalSignature].
	KeyUsage []string
	// ExtKeyUsage lists extendedKeyUsage purposes: clientAuth, serverAuth, codeSigning,
	// emailProtection, timeStamping, ocspSigning, any. Default [clientAuth].
	ExtKeyUsage []string
	// KeyType is the key type the profile asks for in CSR attributes (/att) and generates
	// for server-side key generation: P-256 (default), P-384, P-521, Ed25519, RSA-2048,
	// RSA-3072, RSA-4096.
	KeyType string
	// AcceptKeyTypes restricts the public keys this profile certifies (same spelling as
	// KeyType). Empty = any of P-256, P-384, P-521, Ed25519 and RSA of 2048 bits or more.
	AcceptKeyTypes []string
	// RequirePoP requires the CSR to be linked to the DTLS/TLS session: challengePassword
	// equal to tls-unique (RFC 7030 §3.5). The EST service enforces it.
	RequirePoP bool
	// ManualApproval holds every request as pending until an operator runs
	// `coapca ca approve ID` (or reject); the client is told to retry (RFC 9148 §4.7,
	// RFC 7030 §4.2.3, RFC 9483 §4.4).
	ManualApproval bool
	// RetryAfter is the delay the client is told to wait while its request is pending
	// (CoAP Max-Age, HTTP Retry-After, CMP checkAfter). Default 30s.
	RetryAfter time.Duration
	// Requesters says who may enroll (and ask for server-generated keys) under this profile,
	// one rule per requester kind and source (docs/security.md). Default deny: a requester no
	// rule names is refused. The built-in default profile admits IDevIDs of every trust store,
	// every MAC secret and every pre-shared identity.
	Requesters []RequesterRule
	// ReenrollFrom lists other labels whose certificates may re-enroll (EST /sren, CMP kur)
	// into this profile. A certificate always re-enrolls under the label it was issued under;
	// moving to another label needs that label here, and its original requester must be
	// admitted by this profile's rules too.
	ReenrollFrom []string
	// EECertsPeers lets /eecerts (RFC 8295 §3) return, besides a requester's own certificates,
	// the current certificates of every other requester of this label (its peers). Off by
	// default: a requester sees only its own certificates.
	EECertsPeers bool
	// SymmetricKeyForms are the forms of RFC 8295 §5.1.2 in which symmetric key packages may
	// be delivered to this label's clients at most (names of SymKeyForms, or "all"); a
	// package's own forms (AddPackage) are narrowed to these. Empty: no label-wide limit.
	SymmetricKeyForms []string
	// Subject sets the subject rules.
	Subject SubjectRules
	// SAN sets the subjectAltName rules.
	SAN SANRules
}

// SubjectRules turn the CSR's subject into the issued subject.
type SubjectRules struct {
	// CopySerialNumber replaces the subject's serialNumber attribute (2.5.4.5) with the one in
	// the requester's certificate (e.g. the IDevID's device serial number), and drops a
	// serialNumber the CSR asks for when the requester's certificate has none.
	// Requests without a client certificate (CMP MAC) keep the CSR's. The built-in default
	// profile sets it.
	CopySerialNumber bool
	// RequireCommonName rejects CSRs without a commonName.
	RequireCommonName bool
	// CommonNamePattern, when set, is a regular expression the whole commonName must match;
	// a CSR without a commonName is then rejected too.
	CommonNamePattern string
	// AllowAttributes lists the subject attributes a CSR may ask for, by short name (CN, O, OU,
	// C, ST, L, serialNumber, DC, UID, emailAddress, title, GN, SN) or dotted OID. Default
	// [CN, O, OU, C, ST, L, serialNumber]. A serialNumber asked for by a requester with a device
	// certificate must be that certificate's own; requesters without one (MAC secrets,
	// pre-shared keys, RAs) may ask for serialNumber only when it is listed explicitly.
	// Attributes the profile sets itself (organization, copied serialNumber) are always allowed.
	AllowAttributes []string
	// Organization, when set, replaces the subject's organizationName attributes.
	Organization []string
	// OrganizationalUnit, when set, replaces the subject's organizationalUnitName attributes.
	OrganizationalUnit []string
}

// SANRules are the rules for subjectAltName entries requested in the CSR.
type SANRules struct {
	// Allow lists the SAN types a CSR may request: dns, ip, email, uri. Empty = all four;
	// [none] = no SAN at all. A CSR asking for another type is rejected.
	Allow []string
	// DNSPattern, when set, is a regular expression every requested DNS name must match.
	DNSPattern string
	// AllowWildcard admits DNS names with a wildcard label ("*.example.com"). Default false.
	AllowWildcard bool
}

// RequesterRule admits one kind of requester to a profile (docs/security.md).
type RequesterRule struct {
	// Kind is the requester kind: idevid (a device certificate from a manufacturer trust
	// store), ldevid (a certificate this CA issued, enrolling a further certificate with the
	// same subject and SANs), mac (a CMP shared secret), preshared (a pre-shared OSCORE
	// context), ra (a registration authority: a certificate with id-kp-cmcRA), user (HTTP
	// Basic), token (an ACE access token, RFC 9203, from the authorization servers named in
	// From; its scope narrows the labels and operations further).
	Kind string
	// From names the sources admitted, by kind: trust store names (idevid; ra also "ca" for
	// this CA), profile labels whose certificates may enroll here (ldevid), secret references
	// (mac), pre-shared identity names (preshared), user names (user), authorization server
	// names (token, the token's iss or the configured AS name). "*" = every configured
	// source of the kind
	// (for idevid and ra: every manufacturer trust store, not this CA). Required.
	From []string
	// Transports restricts the rule to some transports: coaps, oscore, coap, https, http.
	// Empty = every transport.
	Transports []string
	// MayRevoke lets this requester revoke with CMP rr (RFC 9483 §4.2): for mac, only
	// certificates enrolled with that very secret under this profile; for ra, every
	// certificate of this profile. A certificate's own key may always revoke it.
	MayRevoke bool
	// BindCommonName requires the commonName to equal the secret reference (mac), the
	// pre-shared identity's name (preshared) or the user name (user), so a per-device secret
	// cannot enroll another device's name.
	BindCommonName bool
	// Subject and SAN, when set, replace the profile's subject and SAN rules for this
	// requester kind.
	Subject *SubjectRules
	SAN     *SANRules
}

// Profile is a compiled certificate profile. Values returned by Authority.Profile are copies;
// the exported fields are what front doors may show (CSR attributes, key generation, retry
// delays), the authorization rules stay inside the authority.
type Profile struct {
	Label          string
	Validity       time.Duration
	KeyUsage       x509.KeyUsage
	ExtKeyUsage    []x509.ExtKeyUsage
	RequirePoP     bool
	ManualApproval bool
	RetryAfter     time.Duration
	KeyType        string   // "P-256" (what /att asks for and server keygen makes)
	AcceptKeyTypes []string // empty = any supported
	EECertsPeers   bool     // /eecerts returns the label's peer certificates too
	// SymKeyForms limits the symmetric key forms delivered under this label (nil: no limit).
	SymKeyForms []string

	names        *nameRules // subject and SAN rules of the profile
	rules        []*rule    // who may enroll (default deny)
	reenrollFrom []string   // other labels whose certificates may re-enroll here
}

// nameRules are the compiled subject and SAN rules.
type nameRules struct {
	copySerialNumber   bool
	requireCommonName  bool
	commonNamePattern  *regexp.Regexp
	organization       []string
	organizationalUnit []string
	allowAttrs         map[string]bool // OID strings a CSR may ask for
	serialExplicit     bool            // serialNumber listed in allow_attributes

	allowDNS, allowIP, allowEmail, allowURI bool
	dnsPattern                              *regexp.Regexp
	allowWildcard                           bool
}

// rule is a compiled RequesterRule.
type rule struct {
	kind       Kind
	from       []string // "*" = any
	transports []Transport
	mayRevoke  bool
	bindCN     bool
	names      *nameRules
}

func (r *rule) admits(source string) bool {
	// "*" is every manufacturer trust store: neither this CA nor a registrar's upstream CA.
	return slices.Contains(r.from, "*") && source != CANameOurs && source != CANameUpstream || slices.Contains(r.from, source)
}

func (r *rule) admitsTransport(t Transport) bool {
	return len(r.transports) == 0 || slices.Contains(r.transports, t)
}

// DefaultProfile is the profile used for label "" when the configuration has none:
// one-year client certificates (digitalSignature, clientAuth) for P-256 keys, with the
// IDevID's serialNumber copied into the subject, no wildcard SANs, and enrollment by IDevIDs of
// every trust store, every MAC secret and every pre-shared identity.
func DefaultProfile() ProfileOptions {
	return ProfileOptions{
		Validity:    365 * 24 * time.Hour,
		KeyUsage:    []string{"digitalSignature"},
		ExtKeyUsage: []string{"clientAuth"},
		KeyType:     "P-256",
		RetryAfter:  30 * time.Second,
		Subject:     SubjectRules{CopySerialNumber: true},
		Requesters: []RequesterRule{
			{Kind: "idevid", From: []string{"*"}},
			{Kind: "mac", From: []string{"*"}},
			{Kind: "preshared", From: []string{"*"}},
			{Kind: "token", From: []string{"*"}},
		},
	}
}

// attrNames are the subject attribute short names of allow_attributes (RFC 4514 §3 and
// RFC 4519 spellings).
var attrNames = map[string]asn1.ObjectIdentifier{
	"cn":           {2, 5, 4, 3},
	"sn":           {2, 5, 4, 4},
	"serialnumber": {2, 5, 4, 5},
	"c":            {2, 5, 4, 6},
	"l":            {2, 5, 4, 7},
	"st":           {2, 5, 4, 8},
	"street":       {2, 5, 4, 9},
	"o":            {2, 5, 4, 10},
	"ou":           {2, 5, 4, 11},
	"title":        {2, 5, 4, 12},
	"gn":           {2, 5, 4, 42},
	"dc":           {0, 9, 2342, 19200300, 100, 1, 25},
	"uid":          {0, 9, 2342, 19200300, 100, 1, 1},
	"emailaddress": {1, 2, 840, 113549, 1, 9, 1},
}

var defaultAttrs = []string{"CN", "O", "OU", "C", "ST", "L", "serialNumber"}

func parseAttr(s string) (asn1.ObjectIdentifier, error) {
	if o, ok := attrNames[strings.ToLower(s)]; ok {
		return o, nil
	}
	var o asn1.ObjectIdentifier
	for _, part := range strings.Split(s, ".") {
		n, err := strconv.Atoi(part)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("unknown subject attribute %q (a short name such as CN, O, serialNumber, or a dotted OID)", s)
		}
		o = append(o, n)
	}
	if len(o) < 2 {
		return nil, fmt.Errorf("unknown subject attribute %q", s)
	}
	return o, nil
}

func compileSubject(sc SubjectRules, n *nameRules) error {
	n.copySerialNumber = sc.CopySerialNumber
	n.requireCommonName = sc.RequireCommonName
	n.organization = slices.Clone(sc.Organization)
	n.organizationalUnit = slices.Clone(sc.OrganizationalUnit)
	n.commonNamePattern = nil
	if sc.CommonNamePattern != "" {
		re, err := regexp.Compile("^(?:" + sc.CommonNamePattern + ")$")
		if err != nil {
			return fmt.Errorf("common_name_pattern: %w", err)
		}
		n.commonNamePattern = re
	}
	attrs := sc.AllowAttributes
	n.serialExplicit = false
	if len(attrs) == 0 {
		attrs = defaultAttrs
	} else {
		for _, a := range attrs {
			if strings.EqualFold(a, "serialNumber") || a == "2.5.4.5" {
				n.serialExplicit = true
			}
		}
	}
	n.allowAttrs = map[string]bool{}
	for _, a := range attrs {
		o, err := parseAttr(a)
		if err != nil {
			return err
		}
		n.allowAttrs[o.String()] = true
	}
	return nil
}

func compileSAN(sc SANRules, n *nameRules) error {
	n.dnsPattern = nil
	if sc.DNSPattern != "" {
		re, err := regexp.Compile("^(?:" + sc.DNSPattern + ")$")
		if err != nil {
			return fmt.Errorf("dns_pattern: %w", err)
		}
		n.dnsPattern = re
	}
	n.allowWildcard = sc.AllowWildcard
	allow := sc.Allow
	if len(allow) == 0 {
		allow = []string{"dns", "ip", "email", "uri"}
	}
	n.allowDNS, n.allowIP, n.allowEmail, n.allowURI = false, false, false, false
	for _, t := range allow {
		switch strings.ToLower(t) {
		case "dns":
			n.allowDNS = true
		case "ip":
			n.allowIP = true
		case "email":
			n.allowEmail = true
		case "uri":
			n.allowURI = true
		case "none":
		default:
			return fmt.Errorf("unknown SAN type %q (want dns, ip, email, uri or none)", t)
		}
	}
	return nil
}

var keyUsageNames = map[string]x509.KeyUsage{
	"digitalsignature":  x509.KeyUsageDigitalSignature,
	"contentcommitment": x509.KeyUsageContentCommitment,
	"nonrepudiation":    x509.KeyUsageContentCommitment,
	"keyencipherment":   x509.KeyUsageKeyEncipherment,
	"dataencipherment":  x509.KeyUsageDataEncipherment,
	"keyagreement":      x509.KeyUsageKeyAgreement,
	"certsign":          x509.KeyUsageCertSign,
	"keycertsign":       x509.KeyUsageCertSign,
	"crlsign":           x509.KeyUsageCRLSign,
	"encipheronly":      x509.KeyUsageEncipherOnly,
	"decipheronly":      x509.KeyUsageDecipherOnly,
}

var extKeyUsageNames = map[string]x509.ExtKeyUsage{
	"clientauth":      x509.ExtKeyUsageClientAuth,
	"serverauth":      x509.ExtKeyUsageServerAuth,
	"codesigning":     x509.ExtKeyUsageCodeSigning,
	"emailprotection": x509.ExtKeyUsageEmailProtection,
	"timestamping":    x509.ExtKeyUsageTimeStamping,
	"ocspsigning":     x509.ExtKeyUsageOCSPSigning,
	"any":             x509.ExtKeyUsageAny,
}

var knownKeyTypes = []string{"P-256", "P-384", "P-521", "Ed25519", "RSA-2048", "RSA-3072", "RSA-4096"}

var labelRE = regexp.MustCompile(`^[A-Za-z0-9._-]*$`)

func canonicalKeyType(s string) (string, bool) {
	for _, k := range knownKeyTypes {
		if strings.EqualFold(k, s) {
			return k, true
		}
	}
	return "", false
}

// compile checks a profile configuration and fills in defaults. The sources that requester
// rules name are checked by New, which knows them.
func (pc ProfileOptions) compile() (*Profile, error) {
	def := DefaultProfile()
	p := &Profile{
		Label:          pc.Label,
		Validity:       pc.Validity,
		RequirePoP:     pc.RequirePoP,
		ManualApproval: pc.ManualApproval,
		RetryAfter:     pc.RetryAfter,
		EECertsPeers:   pc.EECertsPeers,
		reenrollFrom:   slices.Clone(pc.ReenrollFrom),
	}
	if !labelRE.MatchString(pc.Label) {
		return nil, fmt.Errorf("label %q: only letters, digits, '.', '_' and '-' are allowed", pc.Label)
	}
	if len(pc.SymmetricKeyForms) > 0 {
		forms, err := canonicalSymKeyForms(PackageSymmetricKeys, pc.SymmetricKeyForms)
		if err != nil {
			return nil, fmt.Errorf("symmetric_key_forms: %v", err)
		}
		p.SymKeyForms = strings.Split(forms, ",")
	}
	if p.Validity == 0 {
		p.Validity = def.Validity
	}
	if p.Validity < 0 {
		return nil, fmt.Errorf("validity %v is negative", p.Validity)
	}
	if p.RetryAfter <= 0 {
		p.RetryAfter = def.RetryAfter
	}
	ku := pc.KeyUsage
	if len(ku) == 0 {
		ku = def.KeyUsage
	}
	for _, n := range ku {
		v, ok := keyUsageNames[strings.ToLower(n)]
		if !ok {
			return nil, fmt.Errorf("unknown key usage %q", n)
		}
		p.KeyUsage |= v
	}
	eku := pc.ExtKeyUsage
	if len(eku) == 0 {
		eku = def.ExtKeyUsage
	}
	for _, n := range eku {
		v, ok := extKeyUsageNames[strings.ToLower(n)]
		if !ok {
			return nil, fmt.Errorf("unknown extended key usage %q", n)
		}
		p.ExtKeyUsage = append(p.ExtKeyUsage, v)
	}
	kt := pc.KeyType
	if kt == "" {
		kt = def.KeyType
	}
	var ok bool
	if p.KeyType, ok = canonicalKeyType(kt); !ok {
		return nil, fmt.Errorf("unknown key type %q (want one of %s)", kt, strings.Join(knownKeyTypes, ", "))
	}
	for _, k := range pc.AcceptKeyTypes {
		c, ok := canonicalKeyType(k)
		if !ok {
			return nil, fmt.Errorf("unknown accepted key type %q", k)
		}
		p.AcceptKeyTypes = append(p.AcceptKeyTypes, c)
	}
	p.names = &nameRules{}
	if err := compileSubject(pc.Subject, p.names); err != nil {
		return nil, err
	}
	if err := compileSAN(pc.SAN, p.names); err != nil {
		return nil, err
	}
	for i, rc := range pc.Requesters {
		r, err := compileRule(rc, p.names)
		if err != nil {
			return nil, fmt.Errorf("requesters[%d]: %w", i, err)
		}
		p.rules = append(p.rules, r)
	}
	return p, nil
}

func compileRule(rc RequesterRule, profileNames *nameRules) (*rule, error) {
	k, ok := parseKind(rc.Kind)
	if !ok {
		return nil, fmt.Errorf("unknown requester kind %q (want idevid, ldevid, mac, preshared, ra, user or token)", rc.Kind)
	}
	if len(rc.From) == 0 {
		return nil, fmt.Errorf("requester kind %s: from is required (names of the admitted sources, or \"*\")", k)
	}
	r := &rule{kind: k, from: slices.Clone(rc.From), mayRevoke: rc.MayRevoke, bindCN: rc.BindCommonName, names: profileNames}
	for _, t := range rc.Transports {
		tt, ok := ParseTransport(t)
		if !ok {
			return nil, fmt.Errorf("unknown transport %q (want coaps, oscore, coap, https or http)", t)
		}
		r.transports = append(r.transports, tt)
	}
	if rc.MayRevoke && k != KindMAC && k != KindRA {
		return nil, fmt.Errorf("may_revoke is for kinds mac and ra (a certificate's own key may always revoke it)")
	}
	if rc.BindCommonName && k != KindMAC && k != KindPreShared && k != KindUser {
		return nil, fmt.Errorf("bind_common_name is for kinds mac, preshared and user")
	}
	if rc.Subject != nil || rc.SAN != nil {
		n := *profileNames
		if rc.Subject != nil {
			if err := compileSubject(*rc.Subject, &n); err != nil {
				return nil, err
			}
		}
		if rc.SAN != nil {
			if err := compileSAN(*rc.SAN, &n); err != nil {
				return nil, err
			}
		}
		r.names = &n
	}
	return r, nil
}

func (p *Profile) clone() *Profile {
	c := *p
	c.ExtKeyUsage = slices.Clone(p.ExtKeyUsage)
	c.AcceptKeyTypes = slices.Clone(p.AcceptKeyTypes)
	return &c
}
