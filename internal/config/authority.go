package config

import (
	"bytes"
	"fmt"
	"os"
	"time"

	"coapca/authority"
	"coapca/internal/pemfile"
)

// Authority is the authority's part of the file: profiles, trust stores, MAC secrets and CA
// behaviour. Policy translates it into the authority's plain authority.Policy, reading the
// files it names; the rules themselves are checked by authority.New. The zero value is a
// working configuration: one default profile (authority.DefaultProfile) and no manufacturer
// trust store (the server then adds the demo manufacturer CA of its data directory).
type Authority struct {
	// Profiles are the certificate profiles. The profile with label "" (or no label) is the
	// default, used by /.well-known/est itself; a built-in default is added when none is
	// configured. Every other label is served as /.well-known/est/<label>.
	Profiles []Profile `yaml:"profiles"`
	// TrustStores are the manufacturer trust stores: certificates that authenticate devices'
	// factory identities (IDevIDs) for initial enrollment.
	TrustStores []TrustStore `yaml:"trust_stores"`
	// MACSecrets are shared secrets that authenticate CMP requests with MAC protection
	// (RFC 9483 §3.2, PasswordBasedMac/PBMAC1), each named by its reference (senderKID).
	MACSecrets []MACSecret `yaml:"mac_secrets"`
	// Users are HTTP Basic credentials (RFC 7030 §3.2.3) for EST over HTTPS, by name, with a
	// bcrypt hash of the password (e.g. `htpasswd -nbB NAME PASSWORD`, or `coapca ca
	// hash-password`). Profiles admit them with requester rules of kind user.
	Users []User `yaml:"users"`
	// CRLValidity is how long a generated CRL is valid (its nextUpdate − thisUpdate).
	// Default 168h (7 days).
	CRLValidity time.Duration `yaml:"crl_validity"`
	// Backdate moves every certificate's notBefore this far into the past, so that devices
	// whose clocks lag slightly accept a fresh certificate. Default 1m; negative = none.
	Backdate time.Duration `yaml:"backdate"`
}

// TrustStore is one manufacturer trust store.
type TrustStore struct {
	// Name identifies the store in logs and in requester rules (required, unique; "ca" is
	// reserved for this CA itself).
	Name string `yaml:"name"`
	// CertsFile is a PEM file of trust-anchor certificates (the manufacturer's root and/or
	// issuing CAs). Every certificate in it is a trust anchor.
	CertsFile string `yaml:"certs_file"`
	// AllowExpired accepts device certificates from this store after their notAfter
	// (RFC 9148 §9, IEEE 802.1AR). Default false.
	AllowExpired bool `yaml:"allow_expired"`
}

// MACSecret is one CMP shared secret.
type MACSecret struct {
	// Reference is the secret's name, sent by the client as senderKID (required, unique).
	Reference string `yaml:"reference"`
	// SecretFile holds the secret (the file's content without a trailing newline).
	SecretFile string `yaml:"secret_file"`
}

// User is one HTTP Basic user (authority.User).
type User struct {
	// Name is the user name (required, unique).
	Name string `yaml:"name"`
	// PasswordHash is the bcrypt hash of the password ($2a$, $2b$ or $2y$).
	PasswordHash string `yaml:"password_hash"`
}

// Profile configures one certificate profile (authority.ProfileOptions, which documents
// each rule). Durations are Go durations ("8760h").
type Profile struct {
	// Label selects the profile: "" is the default profile; other labels appear in the URI
	// path (/.well-known/est/<label>, CMP /p/<label>). Letters, digits, '-', '_', '.'.
	Label string `yaml:"label"`
	// Validity is the lifetime of issued certificates (default 8760h), capped at the issuing
	// CA's own notAfter.
	Validity time.Duration `yaml:"validity"`
	// KeyUsage lists keyUsage bits. Default [digitalSignature].
	KeyUsage []string `yaml:"key_usage"`
	// ExtKeyUsage lists extendedKeyUsage purposes. Default [clientAuth].
	ExtKeyUsage []string `yaml:"ext_key_usage"`
	// KeyType is the key type asked for in CSR attributes and made by server-side key
	// generation. Default P-256.
	KeyType string `yaml:"key_type"`
	// AcceptKeyTypes restricts the public keys this profile certifies.
	AcceptKeyTypes []string `yaml:"accept_key_types"`
	// RequirePoP requires the CSR to be linked to the DTLS/TLS session (RFC 7030 §3.5).
	RequirePoP bool `yaml:"require_pop"`
	// ManualApproval holds every request as pending until an operator decides.
	ManualApproval bool `yaml:"manual_approval"`
	// RetryAfter is the delay a client is told to wait while its request is pending. Default 30s.
	RetryAfter time.Duration `yaml:"retry_after"`
	// Requesters say who may enroll under this profile (default deny, docs/security.md).
	Requesters []RequesterRule `yaml:"requesters"`
	// ReenrollFrom lists other labels whose certificates may re-enroll into this profile.
	ReenrollFrom []string `yaml:"reenroll_from"`
	// EECertsPeers lets /eecerts (RFC 8295 §3) return the peer certificates of this label too.
	EECertsPeers bool `yaml:"eecerts_peers"`
	// SymmetricKeyForms limits the RFC 8295 §5.1.2 forms in which symmetric key packages are
	// delivered under this label (authority.ProfileOptions.SymmetricKeyForms).
	SymmetricKeyForms []string `yaml:"symmetric_key_forms"`
	// Subject sets the subject rules.
	Subject Subject `yaml:"subject"`
	// SAN sets the subjectAltName rules.
	SAN SAN `yaml:"san"`
}

// Subject are the subject rules of a profile (authority.SubjectRules).
type Subject struct {
	CopySerialNumber   bool     `yaml:"copy_serial_number"`
	RequireCommonName  bool     `yaml:"require_common_name"`
	CommonNamePattern  string   `yaml:"common_name_pattern"`
	AllowAttributes    []string `yaml:"allow_attributes"`
	Organization       []string `yaml:"organization"`
	OrganizationalUnit []string `yaml:"organizational_unit"`
}

// SAN are the subjectAltName rules of a profile (authority.SANRules).
type SAN struct {
	Allow         []string `yaml:"allow"`
	DNSPattern    string   `yaml:"dns_pattern"`
	AllowWildcard bool     `yaml:"allow_wildcard"`
}

// RequesterRule admits one kind of requester to a profile (authority.RequesterRule,
// docs/security.md).
type RequesterRule struct {
	Kind           string   `yaml:"kind"`
	From           []string `yaml:"from"`
	Transports     []string `yaml:"transports"`
	MayRevoke      bool     `yaml:"may_revoke"`
	BindCommonName bool     `yaml:"bind_common_name"`
	Subject        *Subject `yaml:"subject"`
	SAN            *SAN     `yaml:"san"`
}

// DefaultRequesters are the requester rules of the built-in default profile
// (authority.DefaultProfile) in the file's terms: IDevIDs of every trust store, every MAC
// secret and every pre-shared identity.
func DefaultRequesters() []RequesterRule {
	var out []RequesterRule
	for _, r := range authority.DefaultProfile().Requesters {
		rr := RequesterRule{Kind: r.Kind, From: r.From, Transports: r.Transports, MayRevoke: r.MayRevoke, BindCommonName: r.BindCommonName}
		if r.Subject != nil {
			s := Subject(*r.Subject)
			rr.Subject = &s
		}
		if r.SAN != nil {
			s := SAN(*r.SAN)
			rr.SAN = &s
		}
		out = append(out, rr)
	}
	return out
}

// Policy reads the trust-store and secret files this section names and returns the
// authority's policy. It checks only what the files hold (readable, a certificate, a
// non-empty secret); authority.New checks the rules.
func (c Authority) Policy() (authority.Policy, error) {
	p := authority.Policy{CRLValidity: c.CRLValidity, Backdate: c.Backdate}
	for _, ts := range c.TrustStores {
		if ts.CertsFile == "" {
			return authority.Policy{}, fmt.Errorf("config: trust store %q: certs_file is required", ts.Name)
		}
		roots, err := pemfile.ReadCerts(ts.CertsFile)
		if err != nil {
			return authority.Policy{}, fmt.Errorf("config: trust store %q: %w", ts.Name, err)
		}
		p.TrustStores = append(p.TrustStores, authority.TrustStore{Name: ts.Name, Roots: roots, AllowExpired: ts.AllowExpired})
	}
	for _, ms := range c.MACSecrets {
		if ms.SecretFile == "" {
			return authority.Policy{}, fmt.Errorf("config: MAC secret %q: secret_file is required", ms.Reference)
		}
		b, err := os.ReadFile(ms.SecretFile)
		if err != nil {
			return authority.Policy{}, fmt.Errorf("config: MAC secret %q: %w", ms.Reference, err)
		}
		b = bytes.TrimRight(b, "\r\n")
		if len(b) == 0 {
			return authority.Policy{}, fmt.Errorf("config: MAC secret %q: %s is empty", ms.Reference, ms.SecretFile)
		}
		p.MACSecrets = append(p.MACSecrets, authority.MACSecret{Reference: ms.Reference, Secret: b})
	}
	for _, u := range c.Users {
		p.Users = append(p.Users, authority.User(u))
	}
	for _, pc := range c.Profiles {
		p.Profiles = append(p.Profiles, pc.options())
	}
	return p, nil
}

func (pc Profile) options() authority.ProfileOptions {
	o := authority.ProfileOptions{
		Label: pc.Label, Validity: pc.Validity, KeyUsage: pc.KeyUsage, ExtKeyUsage: pc.ExtKeyUsage,
		KeyType: pc.KeyType, AcceptKeyTypes: pc.AcceptKeyTypes, RequirePoP: pc.RequirePoP,
		ManualApproval: pc.ManualApproval, RetryAfter: pc.RetryAfter, ReenrollFrom: pc.ReenrollFrom,
		EECertsPeers: pc.EECertsPeers, SymmetricKeyForms: pc.SymmetricKeyForms,
		Subject: pc.Subject.rules(), SAN: pc.SAN.rules(),
	}
	for _, r := range pc.Requesters {
		rr := authority.RequesterRule{Kind: r.Kind, From: r.From, Transports: r.Transports,
			MayRevoke: r.MayRevoke, BindCommonName: r.BindCommonName}
		if r.Subject != nil {
			s := r.Subject.rules()
			rr.Subject = &s
		}
		if r.SAN != nil {
			s := r.SAN.rules()
			rr.SAN = &s
		}
		o.Requesters = append(o.Requesters, rr)
	}
	return o
}

// Subject and SAN have exactly the fields of their authority counterparts, so a field added
// to one and not the other fails to compile here.
func (s Subject) rules() authority.SubjectRules { return authority.SubjectRules(s) }

func (s SAN) rules() authority.SANRules { return authority.SANRules(s) }
