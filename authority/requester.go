package authority

import (
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"strings"
)

// Transport is how a request reached the server. Front doors set it; profiles may restrict
// requester rules to some transports (RequesterRule.Transports).
type Transport uint8

// The transports. The zero value is TransportUnknown, which no transport restriction admits.
const (
	TransportUnknown Transport = iota
	TransportCoAPS             // CoAP over DTLS 1.2 (EST-coaps RFC 9148, CMP RFC 9482)
	TransportOSCORE            // CoAP with OSCORE (EST-oscore; keys from EDHOC or pre-shared)
	TransportCoAP              // plain CoAP (CMP with message protection, RFC 9482)
	TransportHTTPS             // HTTP over TLS (EST RFC 7030, CMP RFC 9811)
	TransportHTTP              // plain HTTP (CMP with message protection, RFC 9811)
	NumTransports
)

var transportNames = [NumTransports]string{"unknown", "coaps", "oscore", "coap", "https", "http"}

func (t Transport) String() string {
	if t < NumTransports {
		return transportNames[t]
	}
	return fmt.Sprintf("transport(%d)", uint8(t))
}

// ParseTransport is the inverse of Transport.String.
func ParseTransport(s string) (Transport, bool) {
	for i, n := range transportNames {
		if i > 0 && strings.EqualFold(n, s) {
			return Transport(i), true
		}
	}
	return TransportUnknown, false
}

// Protocol is the enrollment protocol of a request.
type Protocol uint8

// The protocols.
const (
	ProtocolUnknown Protocol = iota
	ProtocolEST              // EST: RFC 7030, RFC 9148, EST-oscore
	ProtocolCMP              // CMP: RFC 9810 with the Lightweight CMP Profile RFC 9483
	NumProtocols
)

var protocolNames = [NumProtocols]string{"unknown", "est", "cmp"}

func (p Protocol) String() string {
	if p < NumProtocols {
		return protocolNames[p]
	}
	return fmt.Sprintf("protocol(%d)", uint8(p))
}

// Requester is who sent a request, as the front door authenticated it: the one description
// every binding builds and the authority decides on (docs/security.md). A binding fills in what
// its transport proved and nothing else; it never decides what the requester may do.
type Requester struct {
	Transport Transport
	Protocol  Protocol
	// Chain is the authenticated certificate chain, leaf first (nil when none): the DTLS/TLS
	// client certificate, the certificate an EDHOC peer authenticated with, or the CMP
	// protection certificate with its extraCerts. The front door proved possession of the
	// leaf's key (handshake, EDHOC, or the CMP signature).
	Chain []*x509.Certificate
	// SecretRef is the reference (senderKID) of the shared secret whose MAC the front door
	// verified (CMP MAC protection, RFC 9483 §3.2); "" otherwise. MAC references and
	// pre-shared names are separate namespaces.
	SecretRef string
	// PreShared names the pre-shared symmetric key that authenticated the request when no
	// certificate did: an OSCORE context loaded with `coapca serve --oscore-context`
	// (EST-oscore). The authority accepts only names registered with AllowPreShared.
	PreShared string
	// Token is the reference of an access token (ACE, RFC 9200 / RFC 9203 OSCORE profile) that
	// keyed the OSCORE context of the request: the front door verified the token and the
	// request's OSCORE protection, and registered the token's grant with AllowToken. The
	// authority accepts only references registered there and not expired.
	Token string
	// User and Password are HTTP Basic credentials sent over TLS (RFC 7030 §3.2.3, §3.3.2),
	// checked by the authority against the configured users (bcrypt hashes). They count only
	// when no certificate authenticated the request. The password is never logged or kept.
	User, Password string
	// Addr is the network address, for the record and the log.
	Addr string
}

// Kind is the kind of an authenticated requester: what the matrix in docs/security.md
// decides on, and what a profile's requester rules name.
type Kind uint8

// The requester kinds.
const (
	KindNone      Kind = iota // not authenticated
	KindIDevID                // a certificate from a manufacturer trust store (RFC 9148 §9, IEEE 802.1AR)
	KindLDevID                // a certificate this CA issued (and recorded)
	KindMAC                   // a CMP shared secret (RFC 9483 §3.2, §4.1.5)
	KindPreShared             // a pre-shared OSCORE context
	KindRA                    // a registration authority: a certificate with id-kp-cmcRA (RFC 6402)
	KindUser                  // HTTP Basic credentials over TLS (RFC 7030 §3.2.3)
	KindToken                 // an ACE access token (RFC 9200, RFC 9203) that keyed an OSCORE context
	NumKinds
)

var kindNames = [NumKinds]string{"none", "idevid", "ldevid", "mac", "preshared", "ra", "user", "token"}

func (k Kind) String() string {
	if k < NumKinds {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

func parseKind(s string) (Kind, bool) {
	for i, n := range kindNames {
		if i > 0 && strings.EqualFold(n, s) {
			return Kind(i), true
		}
	}
	return KindNone, false
}

// Linking is what the front door found about proof-of-possession linking of an EST request
// (RFC 7030 §3.5, RFC 9148 §3, EST-oscore's edhoc-unique): the authority decides what follows.
type Linking uint8

// The linking outcomes.
const (
	// LinkNotApplicable: the protocol proves possession its own way (CMP POP, RFC 4211 §4).
	LinkNotApplicable Linking = iota
	// LinkAbsent: the CSR carries no challengePassword.
	LinkAbsent
	// LinkMatched: the challengePassword equals a channel binding of this session.
	LinkMatched
	// LinkMismatched: the challengePassword matches none of this session's channel bindings
	// (or the session has none): the CSR was made for another session.
	LinkMismatched
)

// oidCmcRA is id-kp-cmcRA (RFC 6402 §2.10): the certificate holder is a registration authority.
var oidCmcRA = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 28}

func hasCmcRA(c *x509.Certificate) bool {
	for _, o := range c.UnknownExtKeyUsage {
		if o.Equal(oidCmcRA) {
			return true
		}
	}
	return false
}
