// Package estserver is coapca's EST service (RFC 7030 §4, RFC 9148 §4, RFC 8295): cacerts,
// enroll, re-enroll, server-side key generation (plain PKCS#8 or CMS-encrypted, RFC 7030
// §4.4), CSR attributes and CRLs, and the packages of RFC 8295 §2, §5–§7 (the PAL, symmetric
// keys, firmware, TAMP, with their returns). It is transport independent: EST-coaps and EST-oscore
// (package est/estcoap) and EST over HTTPS (est/esthttp) call the same methods with a Request
// and map the typed errors (coapca/errs) to their wire codes. It reports what the transport
// proved (the requester, PoP linking); every policy decision (who may enroll for what,
// pending approval, issuance) belongs to the Authority it is given. The wire formats are
// package est.
package estserver

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"coapca/est"

	"coapca/authority"
	"coapca/errs"
	"coapca/kms"
)

// Authority is what the EST service needs from the CA/RA core (implemented by
// *authority.Authority). It owns every policy decision: who may enroll for what, profiles,
// pending approval, issuance and its record.
type Authority interface {
	Issue(ctx context.Context, r authority.CertRequest) (*authority.Issued, error)
	Profile(label string) (*authority.Profile, error)
	CACerts(label string) []*x509.Certificate
}

var _ Authority = (*authority.Authority)(nil)

// Request is one EST operation as the front doors hand it over, independent of the transport.
type Request struct {
	Label string // EST label (RFC 7030 §3.2.2, RFC 9148 §4.1); "" = default
	Body  []byte // DER PKCS#10 CSR for Enroll, Reenroll, ServerKeyGen
	// MediaType is the body's media type without parameters where it selects the content
	// (ReturnTAMP: RFC 8295 §7.2.1's application/tamp-*).
	MediaType string
	// Requester is who sent the request, as the front door authenticated it (the client
	// chain, the pre-shared identity, the transport): the authority decides on it.
	Requester authority.Requester
	// TLS supplies the DTLS/TLS channel bindings for PoP linking (RFC 7030 §3.5): tls-unique,
	// and tls-exporter accepted in its place (RFC 9148 §3); nil without a TLS-like channel.
	// They are only asked for when a CSR carries a challengePassword.
	TLS TLSBinding
	// ChannelBinding is another channel-binding value of the session the request came over,
	// accepted in the challengePassword like tls-unique: EST-oscore's edhoc-unique (an
	// EDHOC_Exporter output, seed of draft-ietf-ace-coap-est-oscore).
	ChannelBinding []byte
	// RequireEncryptedKey is set when the client asked for a CMS-encrypted key (Accept 280):
	// ServerKeyGen then refuses, before generating anything, a CSR that does not say how to
	// encrypt it.
	RequireEncryptedKey bool
	// KeyPackage asks for the key in the encapsulation of RFC 8295 §8.1 (application/cms:
	// SignedData of the RFC 7030 §4.4.2 EnvelopedData, ServerKey.KeyPackage). It needs a CSR
	// that says how to encrypt the key; one that does not is refused before anything is
	// generated.
	KeyPackage bool
	// SymKeyForms are the forms of RFC 8295 §5.1.2 the client takes from /symmetrickeys, its
	// preference first (its Accept header, est.SymKeyEncapsulationsOfAccept), unless
	// SymKeyAnyForm (it named none). Empty with SymKeyAnyForm false: it named only forms this
	// server does not produce — refused (406) once the client is authenticated.
	SymKeyForms   []est.SymKeyEncapsulation
	SymKeyAnyForm bool
}

// TLSBinding supplies a session's channel-binding values (coap.Peer.TLS is one).
type TLSBinding interface {
	TLSUnique() []byte
	TLSExporter() []byte
}

// StaticTLS is a TLSBinding with fixed values.
type StaticTLS struct{ Unique, Exporter []byte }

// TLSUnique returns s.Unique.
func (s StaticTLS) TLSUnique() []byte { return s.Unique }

// TLSExporter returns s.Exporter.
func (s StaticTLS) TLSExporter() []byte { return s.Exporter }

// ServerKey is the result of server-side key generation. Exactly one of PKCS8 and Encrypted is
// set: the CSR decides which (RFC 9148 §4.8).
type ServerKey struct {
	Issued *authority.Issued
	Key    crypto.Signer
	PKCS8  []byte // the key as PKCS#8 DER (Content-Format 284), when no encryption was asked for
	// Encrypted is the key as CMS EnvelopedData of a SignedData of an AsymmetricKeyPackage
	// (RFC 7030 §4.4.2; Content-Format 280), when the CSR carried a decrypt-key identifier;
	// with Request.KeyPackage, that EnvelopedData in a further SignedData (RFC 8295 §8.1) and
	// KeyPackage is set.
	Encrypted  []byte
	KeyPackage bool
}

// Service implements the EST functions of RFC 7030 §4 / RFC 9148 §4 on top of an Authority.
type Service struct {
	auth    Authority
	log     *slog.Logger
	rand    io.Reader
	observe Observer
	keyEnc  *KeyEncryption // nil: encrypted server-generated keys are refused
}

// Observer is told the outcome of every EST request: the function ("cacerts", "enroll",
// "reenroll", "serverkeygen", "csrattrs"), the transport, the result ("ok", "issued",
// "pending" or the errs.Kind's name in snake case) and how long it took. Metrics use it.
type Observer func(function, transport, result string, d time.Duration)

// SetObserver installs o (nil removes it). Call it before serving.
func (s *Service) SetObserver(o Observer) { s.observe = o }

func (s *Service) report(function string, r *Request, start time.Time, err error, issued bool) {
	if s.observe == nil {
		return
	}
	result := "ok"
	switch {
	case errs.KindOf(err) == errs.Pending:
		result = "pending"
	case err != nil:
		result = strings.ReplaceAll(errs.KindOf(err).String(), " ", "_")
	case issued:
		result = "issued"
	}
	s.observe(function, r.Requester.Transport.String(), result, time.Since(start))
}

// NewService returns the EST service over a. log may be nil (discard).
func New(a Authority, log *slog.Logger) *Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{auth: a, log: log, rand: rand.Reader}
}

// CACerts returns the CA certificates for the label (RFC 7030 §4.1, /crts): issuing CA first,
// then up to the root. An unknown label is errs.NotFound.
func (s *Service) CACerts(ctx context.Context, r *Request) (certs []*x509.Certificate, err error) {
	defer func(start time.Time) { s.report("cacerts", r, start, err, false) }(time.Now())
	if _, err := s.auth.Profile(r.Label); err != nil {
		return nil, typed(err, "profile lookup")
	}
	certs = s.auth.CACerts(r.Label)
	if len(certs) == 0 {
		return nil, errs.New(errs.Unavailable, "no CA certificates are configured for label %q", r.Label)
	}
	return certs, nil
}

// Enroll is simple enrollment (RFC 7030 §4.2.1, RFC 9148 /sen).
func (s *Service) Enroll(ctx context.Context, r *Request) (*authority.Issued, error) {
	return s.enroll(ctx, r, authority.OpEnroll)
}

// Reenroll is simple re-enrollment (RFC 7030 §4.2.2, RFC 9148 /sren). The authority checks
// that the client authenticated with a certificate for the same subject and SAN.
func (s *Service) Reenroll(ctx context.Context, r *Request) (*authority.Issued, error) {
	return s.enroll(ctx, r, authority.OpReenroll)
}

func (s *Service) enroll(ctx context.Context, r *Request, op authority.Op) (iss *authority.Issued, err error) {
	start := time.Now()
	reached := false
	defer func() { s.logResult(ctx, op, r, start, reached, iss, err) }()
	if _, err := s.auth.Profile(r.Label); err != nil {
		return nil, typed(err, "profile lookup")
	}
	csr, err := est.ParseCSR(r.Body, true)
	if err != nil {
		return nil, err
	}
	link, err := linking(csr, r)
	if err != nil {
		return nil, err
	}
	reached = true
	iss, err = s.auth.Issue(ctx, authority.CertRequest{
		Op: op, Label: r.Label, CSR: csr, Requester: r.Requester, Link: link,
	})
	if err != nil {
		return nil, typed(err, "certificate issuance")
	}
	return iss, nil
}

// ServerKeyGen is server-side key generation (RFC 7030 §4.4, RFC 9148 §4.8 /skg and /skc).
// The CSR is parsed for its subject, SANs and attributes; its public key and signature are
// ignored (RFC 9148 §4.8: the server MUST ignore them). A key of the profile's KeyType is
// generated and certified. A CSR carrying DecryptKeyIdentifier or AsymmetricDecryptKeyIdentifier
// (RFC 7030 §4.4.1) gets the key CMS-encrypted (ServerKey.Encrypted, Content-Format 280); the
// recipient is resolved before anything is generated or issued, and a request the server cannot
// encrypt for is refused then (see SetKeyEncryption).
func (s *Service) ServerKeyGen(ctx context.Context, r *Request) (sk *ServerKey, err error) {
	start := time.Now()
	reached := false
	defer func() {
		var iss *authority.Issued
		if sk != nil {
			iss = sk.Issued
		}
		s.logResult(ctx, authority.OpServerKeyGen, r, start, reached, iss, err)
	}()
	prof, err := s.auth.Profile(r.Label)
	if err != nil {
		return nil, typed(err, "profile lookup")
	}
	csr, err := est.ParseCSR(r.Body, false)
	if err != nil {
		return nil, err
	}
	kr, err := s.encryptionRecipient(csr, r)
	if err != nil {
		return nil, err
	}
	link, err := linking(csr, r)
	if err != nil {
		return nil, err
	}
	key, err := kms.GenerateKeyFrom(s.rand, prof.KeyType)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "server key generation failed")
	}
	reached = true
	iss, err := s.auth.Issue(ctx, authority.CertRequest{
		Op: authority.OpServerKeyGen, Label: r.Label, CSR: csr, PublicKey: key.Public(), Requester: r.Requester, Link: link,
	})
	if err != nil {
		return nil, typed(err, "certificate issuance")
	}
	p8, err := est.MarshalPKCS8(key)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "encoding the generated key failed")
	}
	if kr == nil {
		return &ServerKey{Issued: iss, Key: key, PKCS8: p8}, nil
	}
	now := time.Now()
	enc, err := s.encryptKey(s.rand, kr, p8, now)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "encrypting the generated key failed")
	}
	if r.KeyPackage {
		if enc, err = s.signEnvelope(s.rand, enc, now); err != nil {
			return nil, errs.Wrap(errs.Internal, err, "signing the encrypted key package failed")
		}
	}
	return &ServerKey{Issued: iss, Key: key, Encrypted: enc, KeyPackage: r.KeyPackage}, nil
}

// CSRAttrs returns what the label's profile wants in a CSR (RFC 7030 §4.5, RFC 9148 /att),
// in the RFC 9908 style: challengePassword when PoP linking is required, the key type and
// signature algorithm, and an extensionRequest template with the profile's key usages.
func (s *Service) CSRAttrs(ctx context.Context, r *Request) (attrs *est.CsrAttrs, err error) {
	defer func(start time.Time) { s.report("csrattrs", r, start, err, false) }(time.Now())
	prof, err := s.auth.Profile(r.Label)
	if err != nil {
		return nil, typed(err, "profile lookup")
	}
	kt := prof.KeyType
	if kt == "" {
		kt = "P-256"
	}
	t := est.CsrAttrsTemplate{ChallengePassword: prof.RequirePoP, KeyType: kt}
	switch kt {
	case "P-256":
		t.SignatureAlgorithm = x509.ECDSAWithSHA256
	case "P-384":
		t.SignatureAlgorithm = x509.ECDSAWithSHA384
	case "P-521":
		t.SignatureAlgorithm = x509.ECDSAWithSHA512
	case "RSA-2048", "RSA-3072", "RSA-4096":
		t.SignatureAlgorithm = x509.SHA256WithRSA
	}
	if prof.KeyUsage != 0 {
		ext, err := keyUsageExtension(prof.KeyUsage)
		if err != nil {
			return nil, errs.Wrap(errs.Internal, err, "building CSR attributes failed")
		}
		t.Extensions = append(t.Extensions, ext)
	}
	if len(prof.ExtKeyUsage) > 0 {
		ext, err := extKeyUsageExtension(prof.ExtKeyUsage)
		if err != nil {
			return nil, errs.Wrap(errs.Internal, err, "building CSR attributes failed")
		}
		t.Extensions = append(t.Extensions, ext)
	}
	a, err := est.NewCsrAttrs(t)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "building CSR attributes failed")
	}
	return a, nil
}

// linking finds out whether the CSR is linked to the session it came over (RFC 7030 §3.5,
// RFC 9148 §3): a challengePassword carrying the session's tls-unique (base64 per RFC 7030, raw
// per RFC 9148), tls-exporter (RFC 9266, for TLS 1.3 / DTLS 1.3) or EST-oscore's edhoc-unique.
// It only reports; the authority decides what a missing or foreign binding means for this
// requester (a device must match, an authorized RA relays CSRs linked to the device's own
// session, RFC 7030 §3.7, and a profile may require linking). A malformed challengePassword
// is a bad request.
func linking(csr *x509.CertificateRequest, r *Request) (authority.Linking, error) {
	pw, present, err := est.ChallengePassword(csr)
	if err != nil {
		return 0, err
	}
	if !present {
		return authority.LinkAbsent, nil
	}
	var tlsUnique, tlsExporter []byte
	if r.TLS != nil {
		tlsUnique, tlsExporter = r.TLS.TLSUnique(), r.TLS.TLSExporter()
	}
	if len(r.ChannelBinding) > 0 && est.MatchesChannelBinding(pw, r.ChannelBinding) ||
		(len(tlsUnique) > 0 || len(tlsExporter) > 0) && est.MatchesChannelBinding(pw, tlsUnique, tlsExporter) {
		return authority.LinkMatched, nil
	}
	return authority.LinkMismatched, nil
}

// typed makes sure err carries a Kind: untyped errors from below become Internal (and their
// text is never shown to the client).
func typed(err error, what string) error {
	if errs.As(err) != nil {
		return err
	}
	return errs.Wrap(errs.Internal, err, "%s failed", what)
}

// logResult logs one operation. The authority logs every issuance decision (who, what,
// result, duration); the service adds a line at Info only for requests it refused itself
// before reaching the authority (bad CSR, PoP linking, encrypted-key requests), and at Debug
// otherwise.
func (s *Service) logResult(ctx context.Context, op authority.Op, r *Request, start time.Time, reached bool, iss *authority.Issued, err error) {
	defer s.report(string(op), r, start, err, iss != nil && iss.Cert != nil)
	level := slog.LevelDebug
	msg := "est request"
	if err != nil && !reached {
		level, msg = slog.LevelInfo, "est request refused"
	}
	if !s.log.Enabled(ctx, level) {
		return // the attributes below cost a formatted name per request
	}
	attrs := []slog.Attr{
		slog.String("op", string(op)), slog.String("label", r.Label), slog.String("transport", r.Requester.Transport.String()),
		slog.String("addr", r.Requester.Addr), slog.Duration("duration", time.Since(start)),
	}
	if len(r.Requester.Chain) > 0 {
		attrs = append(attrs, slog.String("client", r.Requester.Chain[0].Subject.String()))
	}
	switch {
	case err != nil:
		attrs = append(attrs, slog.String("result", errs.KindOf(err).String()), slog.String("error", err.Error()))
	case iss != nil && iss.Cert != nil:
		attrs = append(attrs, slog.String("result", "issued"), slog.String("serial", iss.Serial))
	}
	s.log.LogAttrs(ctx, level, msg, attrs...)
}

var (
	oidKeyUsage    = asn1.ObjectIdentifier{2, 5, 29, 15} // RFC 5280 §4.2.1.3
	oidExtKeyUsage = asn1.ObjectIdentifier{2, 5, 29, 37} // RFC 5280 §4.2.1.12
)

func extKeyUsageExtension(ekus []x509.ExtKeyUsage) (pkix.Extension, error) {
	var oids []asn1.ObjectIdentifier
	for _, u := range ekus {
		o, ok := authority.ExtKeyUsageOID(u)
		if !ok {
			return pkix.Extension{}, fmt.Errorf("unknown extended key usage %v", u)
		}
		oids = append(oids, o)
	}
	v, err := asn1.Marshal(oids)
	return pkix.Extension{Id: oidExtKeyUsage, Value: v}, err
}

// keyUsageExtension encodes KeyUsage as RFC 5280 §4.2.1.3 (bit 0 = digitalSignature, DER
// minimal bit string).
func keyUsageExtension(ku x509.KeyUsage) (pkix.Extension, error) {
	var b [2]byte
	n := 0
	for i := 0; i < 9; i++ {
		if ku&(1<<i) != 0 {
			b[i/8] |= 0x80 >> (i % 8)
			n = i + 1
		}
	}
	bs := asn1.BitString{Bytes: b[:(n+7)/8], BitLength: n}
	v, err := asn1.Marshal(bs)
	return pkix.Extension{Id: oidKeyUsage, Critical: true, Value: v}, err
}
