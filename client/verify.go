package client

// Server authentication, in one place for every client transport: the DTLS handshake of
// EST-coaps and CMP over coaps://, and the EDHOC responder credential of EST-oscore. A chain
// that merely chains to a trust anchor is not enough — a device certificate issued by the same
// CA would then impersonate the server — so the leaf must also carry a server role and name
// the host that was dialed.

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"slices"
	"time"

	"coapca/coap/dtlsconn"
)

// Extended key usages of RFC 6402 §2.10 that name a PKI role.
var (
	// OIDKPCmcCA is id-kp-cmcCA (1.3.6.1.5.5.7.3.27): a CA answering certificate requests.
	OIDKPCmcCA = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 27}
	// OIDKPCmcRA is id-kp-cmcRA (1.3.6.1.5.5.7.3.28): a registration authority.
	OIDKPCmcRA = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 28}
)

// anchorPools splits trust anchors into roots (self-signed) and intermediates. When no anchor
// is self-signed, every anchor is a root: the caller deliberately trusts a subordinate CA.
func anchorPools(anchors []*x509.Certificate) (roots, inter *x509.CertPool) {
	roots, inter = x509.NewCertPool(), x509.NewCertPool()
	var selfSigned int
	for _, a := range anchors {
		if isSelfSigned(a) {
			selfSigned++
		}
	}
	for _, a := range anchors {
		if selfSigned == 0 || isSelfSigned(a) {
			roots.AddCert(a)
		} else {
			inter.AddCert(a)
		}
	}
	return roots, inter
}

func isSelfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil
}

// verifyChain validates leaf (RFC 5280) to anchors, with extra as untrusted intermediates, and
// returns the first valid chain (leaf first, anchor last). Extended key usages are the
// caller's business: Go's verifier cannot express id-kp-cmcRA.
func verifyChain(leaf *x509.Certificate, extra, anchors []*x509.Certificate, now time.Time) ([]*x509.Certificate, error) {
	if len(anchors) == 0 {
		return nil, errors.New("no trust anchors")
	}
	roots, inter := anchorPools(anchors)
	for _, c := range extra {
		inter.AddCert(c)
	}
	chains, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return nil, err
	}
	return chains[0], nil
}

// hasEKU reports whether c lists one of the purposes explicitly. A certificate without the
// extension, or with anyExtendedKeyUsage only, names no role and does not count.
func hasEKU(c *x509.Certificate, std []x509.ExtKeyUsage, other []asn1.ObjectIdentifier) bool {
	for _, u := range c.ExtKeyUsage {
		if slices.Contains(std, u) {
			return true
		}
	}
	for _, u := range c.UnknownExtKeyUsage {
		for _, o := range other {
			if u.Equal(o) {
				return true
			}
		}
	}
	return false
}

// VerifyServer decides whether chain (leaf first, as presented in the DTLS handshake or the
// EDHOC x5chain) authenticates the server the client dialed as name:
//
//   - the leaf validates to anchors (RFC 5280; chain[1:] serve as intermediates),
//   - the leaf is a server: id-kp-serverAuth, or id-kp-cmcRA (RFC 6402) for an EST server
//     acting as RA (RFC 7030 §3.6.1, RFC 9148 §5 and §9); a certificate for clients only, one
//     without extendedKeyUsage or with only anyExtendedKeyUsage is refused,
//   - the leaf names name: a dNSName (or, for an IP literal, an iPAddress) subjectAltName,
//     never the common name (RFC 6125 §6.4, RFC 7030 §3.6.2, RFC 9148 §4).
//
// RFC 7030 §3.6.1 lets a client that uses its explicit TA database accept an id-kp-cmcRA
// certificate without the name check; this client always checks the name (the safer choice).
func VerifyServer(chain, anchors []*x509.Certificate, name string, now time.Time) error {
	if len(chain) == 0 {
		return errors.New("the server presented no certificate")
	}
	if name == "" {
		return errors.New("no server name to check the server's certificate against")
	}
	leaf := chain[0]
	if _, err := verifyChain(leaf, chain[1:], anchors, now); err != nil {
		return fmt.Errorf("the server's certificate %q does not chain to the trust anchors: %w", leaf.Subject, err)
	}
	if !hasEKU(leaf, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, []asn1.ObjectIdentifier{OIDKPCmcRA}) {
		return fmt.Errorf("the server's certificate %q is not a server certificate (it has neither id-kp-serverAuth nor id-kp-cmcRA)", leaf.Subject)
	}
	if leaf.IsCA {
		return fmt.Errorf("the server's certificate %q is a CA certificate", leaf.Subject)
	}
	if err := leaf.VerifyHostname(name); err != nil {
		return fmt.Errorf("the server's certificate %q is not for %q: %w", leaf.Subject, name, err)
	}
	return nil
}

// ServerVerifier returns VerifyServer as the VerifyPeer callback of a DTLS client
// (dtlsconn.ClientConfig) or an EDHOC initiator (oscorelayer.EDHOCConfig): it parses the raw
// chain and returns it once accepted. now is the clock (nil = time.Now).
func ServerVerifier(anchors []*x509.Certificate, name string, now func() time.Time) func(raw [][]byte) ([]*x509.Certificate, error) {
	if now == nil {
		now = time.Now
	}
	return func(raw [][]byte) ([]*x509.Certificate, error) {
		chain, err := ParseChain(raw)
		if err != nil {
			return nil, err
		}
		if err := VerifyServer(chain, anchors, name, now()); err != nil {
			return nil, err
		}
		return chain, nil
	}
}

// ServerDTLSConfig returns the DTLS client configuration that authenticates the server at name
// with VerifyServer and presents certs as the client identity. pion's built-in check is
// replaced, not merely supplemented: it knows neither id-kp-cmcRA nor intermediate CAs among
// the anchors.
func ServerDTLSConfig(anchors []*x509.Certificate, name string, certs []tls.Certificate) *dtlsconn.ClientConfig {
	return &dtlsconn.ClientConfig{ServerName: name, Certificates: certs,
		InsecureSkipVerify: true, VerifyPeer: ServerVerifier(anchors, name, nil)}
}

// ParseChain parses a raw certificate chain (leaf first).
func ParseChain(raw [][]byte) ([]*x509.Certificate, error) {
	if len(raw) == 0 {
		return nil, errors.New("the server presented no certificate")
	}
	out := make([]*x509.Certificate, 0, len(raw))
	for _, r := range raw {
		c, err := x509.ParseCertificate(r)
		if err != nil {
			return nil, fmt.Errorf("the server's certificate chain: %w", err)
		}
		out = append(out, c)
	}
	return out, nil
}
