package authority

import (
	"crypto/x509"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Config is the authority's part of the YAML configuration file. The zero value is a working
// configuration: one default profile (DefaultProfile) and no manufacturer trust store (the
// server adds the demo manufacturer CA of its data directory).
type Config struct {
	// Profiles are the certificate profiles. The profile with label "" (or no label) is the
	// default, used by /.well-known/est itself; a built-in default (DefaultProfile) is added
	// when none is configured. Every other label is served as /.well-known/est/<label>.
	Profiles []ProfileConfig `yaml:"profiles"`
	// TrustStores are the manufacturer trust stores: certificates that authenticate devices'
	// factory identities (IDevIDs) for initial enrollment.
	TrustStores []TrustStoreConfig `yaml:"trust_stores"`
	// MACSecrets are shared secrets that authenticate CMP requests with MAC protection
	// (RFC 9483 §3.2, PasswordBasedMac/PBMAC1), each named by its reference (senderKID).
	MACSecrets []MACSecretConfig `yaml:"mac_secrets"`
	// CRLValidity is how long a generated CRL is valid (its nextUpdate − thisUpdate).
	// Default 168h (7 days).
	CRLValidity time.Duration `yaml:"crl_validity"`
	// Backdate moves every certificate's notBefore this far into the past, so that devices
	// whose clocks lag slightly accept a fresh certificate. Default 1m; negative = none.
	Backdate time.Duration `yaml:"backdate"`
}

// TrustStoreConfig is one manufacturer trust store.
type TrustStoreConfig struct {
	// Name identifies the store in logs and in ProfileConfig.TrustStores (required, unique;
	// "ca" is reserved for this CA itself).
	Name string `yaml:"name"`
	// CertsFile is a PEM file of trust-anchor certificates (the manufacturer's root and/or
	// issuing CAs). Every certificate in it is a trust anchor.
	CertsFile string `yaml:"certs_file"`
	// AllowExpired accepts device certificates from this store after their notAfter: an
	// IDevID is meant to last the device's lifetime and may have expired, or carry the
	// 99991231235959Z "no expiration" time (RFC 9148 §9, IEEE 802.1AR). Default false.
	AllowExpired bool `yaml:"allow_expired"`
}

// MACSecretConfig is one CMP shared secret.
type MACSecretConfig struct {
	// Reference is the secret's name, sent by the client as senderKID (required, unique).
	Reference string `yaml:"reference"`
	// SecretFile holds the secret (the file's content without a trailing newline).
	SecretFile string `yaml:"secret_file"`
	// Labels restricts the profiles the secret may enroll for ("" is the default profile);
	// empty = every profile.
	Labels []string `yaml:"labels"`
}

// ProfileConfig configures one certificate profile. Durations are Go durations ("8760h").
type ProfileConfig struct {
	// Label selects the profile: "" is the default profile; other labels appear in the
	// URI path (/.well-known/est/<label>, CMP /p/<label>). Letters, digits, '-', '_', '.'.
	Label string `yaml:"label"`
	// Validity is the lifetime of issued certificates (default 8760h = 365 days), capped at
	// the issuing CA's own notAfter.
	Validity time.Duration `yaml:"validity"`
	// KeyUsage lists keyUsage bits: digitalSignature, contentCommitment, keyEncipherment,
	// dataEncipherment, keyAgreement, certSign, crlSign, encipherOnly, decipherOnly.
	// Default [digitalSignature].
	KeyUsage []string `yaml:"key_usage"`
	// ExtKeyUsage lists extendedKeyUsage purposes: clientAuth, serverAuth, codeSigning,
	// emailProtection, timeStamping, ocspSigning, any. Default [clientAuth].
	ExtKeyUsage []string `yaml:"ext_key_usage"`
	// KeyType is the key type the profile asks for in CSR attributes (/att) and generates
	// for server-side key generation: P-256 (default), P-384, P-521, Ed25519, RSA-2048,
	// RSA-3072, RSA-4096.
	KeyType string `yaml:"key_type"`
	// AcceptKeyTypes restricts the public keys this profile certifies (same spelling as
	// KeyType). Empty = any of P-256, P-384, P-521, Ed25519 and RSA of 2048 bits or more.
	AcceptKeyTypes []string `yaml:"accept_key_types"`
	// RequirePoP requires the CSR to be linked to the DTLS/TLS session: challengePassword
	// equal to tls-unique (RFC 7030 §3.5). The EST service enforces it.
	RequirePoP bool `yaml:"require_pop"`
	// ManualApproval holds every request as pending until an operator runs
	// `coapca ca approve ID` (or reject); the client is told to retry (RFC 9148 §4.7,
	// RFC 7030 §4.2.3, RFC 9483 §4.4).
	ManualApproval bool `yaml:"manual_approval"`
	// RetryAfter is the delay the client is told to wait while its request is pending
	// (CoAP Max-Age, HTTP Retry-After, CMP checkAfter). Default 30s.
	RetryAfter time.Duration `yaml:"retry_after"`
	// TrustStores restricts which trust stores may enroll under this profile, by name
	// ("ca" = certificates this CA issued). Empty = all. Re-enrollment always requires a
	// certificate this CA issued.
	TrustStores []string `yaml:"trust_stores"`
	// Subject sets the subject rules.
	Subject SubjectConfig `yaml:"subject"`
	// SAN sets the subjectAltName rules.
	SAN SANConfig `yaml:"san"`
}

// SubjectConfig are the rules that turn the CSR's subject into the issued subject.
type SubjectConfig struct {
	// CopySerialNumber replaces the subject's serialNumber attribute (2.5.4.5) with the one in
	// the requester's certificate (e.g. the IDevID's device serial number), and drops a
	// serialNumber the CSR asks for when the requester's certificate has none.
	// Requests without a client certificate (CMP MAC) keep the CSR's. The built-in default
	// profile sets it.
	CopySerialNumber bool `yaml:"copy_serial_number"`
	// RequireCommonName rejects CSRs without a commonName.
	RequireCommonName bool `yaml:"require_common_name"`
	// CommonNamePattern, when set, is a regular expression the whole commonName must match.
	CommonNamePattern string `yaml:"common_name_pattern"`
	// Organization, when set, replaces the subject's organizationName attributes.
	Organization []string `yaml:"organization"`
	// OrganizationalUnit, when set, replaces the subject's organizationalUnitName attributes.
	OrganizationalUnit []string `yaml:"organizational_unit"`
}

// SANConfig are the rules for subjectAltName entries requested in the CSR.
type SANConfig struct {
	// Allow lists the SAN types a CSR may request: dns, ip, email, uri. Empty = all four;
	// [none] = no SAN at all. A CSR asking for another type is rejected.
	Allow []string `yaml:"allow"`
	// DNSPattern, when set, is a regular expression every requested DNS name must match.
	DNSPattern string `yaml:"dns_pattern"`
}

// Profile is a compiled certificate profile. Values returned by Authority.Profile are copies.
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
	TrustStores    []string // empty = all

	CopySerialNumber   bool
	RequireCommonName  bool
	CommonNamePattern  *regexp.Regexp
	Organization       []string
	OrganizationalUnit []string

	AllowDNS, AllowIP, AllowEmail, AllowURI bool
	DNSPattern                              *regexp.Regexp
}

// DefaultProfile is the profile used for label "" when the configuration has none:
// one-year client certificates (digitalSignature, clientAuth) for P-256 keys, with the
// IDevID's serialNumber copied into the subject and every SAN type allowed.
func DefaultProfile() ProfileConfig {
	return ProfileConfig{
		Validity:    365 * 24 * time.Hour,
		KeyUsage:    []string{"digitalSignature"},
		ExtKeyUsage: []string{"clientAuth"},
		KeyType:     "P-256",
		RetryAfter:  30 * time.Second,
		Subject:     SubjectConfig{CopySerialNumber: true},
	}
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

// compile checks a profile configuration and fills in defaults.
func (pc ProfileConfig) compile() (*Profile, error) {
	def := DefaultProfile()
	p := &Profile{
		Label:              pc.Label,
		Validity:           pc.Validity,
		RequirePoP:         pc.RequirePoP,
		ManualApproval:     pc.ManualApproval,
		RetryAfter:         pc.RetryAfter,
		TrustStores:        slices.Clone(pc.TrustStores),
		CopySerialNumber:   pc.Subject.CopySerialNumber,
		RequireCommonName:  pc.Subject.RequireCommonName,
		Organization:       slices.Clone(pc.Subject.Organization),
		OrganizationalUnit: slices.Clone(pc.Subject.OrganizationalUnit),
	}
	if !labelRE.MatchString(pc.Label) {
		return nil, fmt.Errorf("label %q: only letters, digits, '.', '_' and '-' are allowed", pc.Label)
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
	if pc.Subject.CommonNamePattern != "" {
		re, err := regexp.Compile("^(?:" + pc.Subject.CommonNamePattern + ")$")
		if err != nil {
			return nil, fmt.Errorf("common_name_pattern: %w", err)
		}
		p.CommonNamePattern = re
	}
	if pc.SAN.DNSPattern != "" {
		re, err := regexp.Compile("^(?:" + pc.SAN.DNSPattern + ")$")
		if err != nil {
			return nil, fmt.Errorf("dns_pattern: %w", err)
		}
		p.DNSPattern = re
	}
	allow := pc.SAN.Allow
	if len(allow) == 0 {
		allow = []string{"dns", "ip", "email", "uri"}
	}
	for _, t := range allow {
		switch strings.ToLower(t) {
		case "dns":
			p.AllowDNS = true
		case "ip":
			p.AllowIP = true
		case "email":
			p.AllowEmail = true
		case "uri":
			p.AllowURI = true
		case "none":
		default:
			return nil, fmt.Errorf("unknown SAN type %q (want dns, ip, email, uri or none)", t)
		}
	}
	return p, nil
}

func (p *Profile) clone() *Profile {
	c := *p
	c.ExtKeyUsage = slices.Clone(p.ExtKeyUsage)
	c.AcceptKeyTypes = slices.Clone(p.AcceptKeyTypes)
	c.TrustStores = slices.Clone(p.TrustStores)
	c.Organization = slices.Clone(p.Organization)
	c.OrganizationalUnit = slices.Clone(p.OrganizationalUnit)
	return &c
}
