// Package esthttp is the EST binding for HTTPS (RFC 7030, with the clarifications of RFC 8951):
// it translates HTTP requests under /.well-known/est into calls on the EST service, and the
// service's results and typed errors back into HTTP responses. It decides no policy and touches
// no store: who may do what is the authority's decision (docs/security.md).
//
// Implemented:
//
//   - the operation paths of RFC 7030 §3.2.2 (cacerts, simpleenroll, simplereenroll,
//     serverkeygen, csrattrs, under /.well-known/est and under /.well-known/est/<label>);
//     /fullcmc answers 501 (RFC 7030 §4.3 is optional and not implemented);
//   - authentication as RFC 7030 §3.2.3 and §3.3 describe: the TLS client certificate chain
//     (verified during the handshake by the caller's tls.Config), or HTTP Basic credentials —
//     only over TLS — handed to the authority as they are; a 401 carries WWW-Authenticate:
//     Basic only where Basic users are configured (Options.BasicRealm);
//   - PoP linking (RFC 7030 §3.5): the connection's tls-unique (TLS 1.2, RFC 5929) or
//     tls-exporter (TLS 1.3, RFC 9266) is offered to the service, which reports whether the
//     CSR's challengePassword carries it; the authority decides what that means;
//   - media types of RFC 7030 §4: requests application/pkcs10; responses
//     application/pkcs7-mime (cacerts), application/pkcs7-mime; smime-type=certs-only
//     (enrollment), application/csrattrs, and multipart/mixed with application/pkcs8 and
//     certs-only parts (serverkeygen, RFC 7030 §4.4.2);
//   - base64 as RFC 8951 §3 settles it: every payload is the base64 (RFC 4648 §4) of DER,
//     whatever Content-Transfer-Encoding says. Received bodies are decoded with or without
//     line breaks and with any or no Content-Transfer-Encoding header (DecodeBody); sent
//     bodies are unbroken base64, and carry "Content-Transfer-Encoding: base64" as well,
//     which RFC 8951 lets receivers ignore but clients written to RFC 7030 (Bouncy Castle's
//     ESTService, libest) need in order to decode the body at all;
//   - /serverkeygen answering a PKCS #12 PFX (RFC 8295 §8.3) to a client whose Accept asks for
//     application/pkcs12; the PFX is shrouded with the request's HTTP Basic password, the one
//     secret such a client shares with the server (RFC 8295 leaves the distribution of the
//     password open);
//   - /crls of RFC 8295 §4 when the service offers it (CRLService): the issuing CA's CRL in a
//     crls-only SignedData, framed as /cacerts is (RFC 8295 §4.2);
//   - /eecerts of RFC 8295 §3 when the service offers it (EECertService): the end-entity
//     certificates the authority lets the requester have (its own, and its label's peers where
//     the profile allows), certs-only as /cacerts (RFC 8295 §3.2);
//   - /serverkeygen answering the key as an asymmetric key package (RFC 8295 §8.1, RFC 5958)
//     to a client whose Accept names application/cms: the key part of the multipart answer is
//     application/cms, a SignedData of the RFC 7030 §4.4.2 EnvelopedData (est.MediaKeyPackage);
//   - /serverkeygen/return of RFC 8295 §8.2 when the service offers it
//     (KeyPackageReturnService): a key package receipt or error (RFC 7191) as application/cms,
//     answered 204 (RFC 8295 §5.2.2);
//   - /pal of RFC 8295 §2 when the service offers it (PackageService): the requester's Package
//     Availability List as application/xml, its entries' URIs absolute under the request's
//     host and label;
//   - /symmetrickeys and /symmetrickeys/return of RFC 8295 §5 (PackageService): the symmetric
//     key package as application/cms (est.MediaSymmetricKeyPackage, base64 as every EST
//     payload), and receipts and errors (RFC 7191) as /serverkeygen/return takes them, answered
//     204 (RFC 8295 §5.2.2);
//   - /firmware and /firmware/return of RFC 8295 §6 (PackageService): the signed firmware
//     package (RFC 4108) as application/cms, and load receipts and errors, signed or not,
//     answered 204 (RFC 8295 §6.2.2);
//   - /tamp and /tamp/return of RFC 8295 §7 (PackageService): the signed TAMP message (RFC
//     5934) under its application/tamp-* media type, and responses, confirms and errors under
//     theirs, answered 204 (RFC 8295 §7.2.2);
//   - pending requests (manual approval) as 202 Accepted with Retry-After (RFC 7030 §4.2.3);
//   - errors from one table errs.Kind → HTTP status (statusFor); internal errors reach the
//     client only as "internal error".
package esthttp

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"math"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"

	"coapca/authority"
	"coapca/errs"
	"coapca/est"
	"coapca/est/estserver"
)

// DefaultRoot is the EST path prefix (RFC 7030 §3.2.2).
const DefaultRoot = "/.well-known/est"

// Media types (RFC 7030 §4, §6).
const (
	MediaPKCS10    = "application/pkcs10"
	MediaPKCS7     = "application/pkcs7-mime"
	MediaCertsOnly = "application/pkcs7-mime; smime-type=certs-only"
	MediaCSRAttrs  = "application/csrattrs"
	MediaPKCS8     = "application/pkcs8"
	// MediaServerGeneratedKey is a CMS-encrypted server-generated key (RFC 7030 §4.4.2).
	MediaServerGeneratedKey = "application/pkcs7-mime; smime-type=server-generated-key"
	MediaMultipart          = "multipart/mixed"
	MediaPKCS12             = "application/pkcs12"
	// MediaCMS selects, in Accept, the asymmetric key package of RFC 8295 §8.1 (RFC 7193);
	// the key part of the answer is then est.MediaKeyPackage.
	MediaCMS = "application/cms"
)

// DefaultMaxBody caps a request body (base64 of a CSR): est.MaxCSRSize in base64 with room
// for line breaks.
const DefaultMaxBody = 32 << 10

// Service is the EST service the binding calls; *estserver.Service implements it.
type Service interface {
	CACerts(ctx context.Context, r *estserver.Request) ([]*x509.Certificate, error)
	Enroll(ctx context.Context, r *estserver.Request) (*authority.Issued, error)
	Reenroll(ctx context.Context, r *estserver.Request) (*authority.Issued, error)
	ServerKeyGen(ctx context.Context, r *estserver.Request) (*estserver.ServerKey, error)
	CSRAttrs(ctx context.Context, r *estserver.Request) (*est.CsrAttrs, error)
}

// CRLService is the optional /crls operation (RFC 8295 §4); *estserver.Service implements it.
type CRLService interface {
	CRLs(ctx context.Context, r *estserver.Request) ([][]byte, error)
}

// EECertService is the optional /eecerts operation (RFC 8295 §3); *estserver.Service
// implements it.
type EECertService interface {
	EECerts(ctx context.Context, r *estserver.Request) ([]*x509.Certificate, error)
}

// KeyPackageReturnService is the optional /serverkeygen/return operation (RFC 8295 §8.2);
// *estserver.Service implements it.
type KeyPackageReturnService interface {
	ReturnKeyPackage(ctx context.Context, r *estserver.Request) (*authority.KeyPackageReturn, error)
}

// PackageService is the optional package operations of RFC 8295: /pal (§2), /symmetrickeys and
// /symmetrickeys/return (§5), /firmware and /firmware/return (§6), /tamp and /tamp/return (§7);
// *estserver.Service implements it.
type PackageService interface {
	PAL(ctx context.Context, r *estserver.Request) ([]est.PALEntry, error)
	SymmetricKeys(ctx context.Context, r *estserver.Request) ([]byte, est.SymKeyEncapsulation, error)
	ReturnSymmetricKeys(ctx context.Context, r *estserver.Request) error
	Firmware(ctx context.Context, r *estserver.Request) ([]byte, error)
	ReturnFirmware(ctx context.Context, r *estserver.Request) error
	TAMP(ctx context.Context, r *estserver.Request) ([]byte, string, error)
	ReturnTAMP(ctx context.Context, r *estserver.Request) error
}

// Options configures the binding.
type Options struct {
	// BasicRealm, when set, is the realm of the WWW-Authenticate: Basic challenge that a 401
	// carries (RFC 7030 §3.2.3, RFC 7617). Set it only when HTTP Basic users are configured:
	// without them a challenge would invite credentials the server cannot check.
	BasicRealm string
	// MaxBody caps a request body (413 beyond it); 0 = DefaultMaxBody.
	MaxBody int64
	Logger  *slog.Logger
}

// Handler serves EST over HTTPS.
type Handler struct {
	svc  Service
	opts Options
	log  *slog.Logger
}

// New returns the handler of svc.
func New(svc Service, opts Options) *Handler {
	if opts.MaxBody <= 0 {
		opts.MaxBody = DefaultMaxBody
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Handler{svc: svc, opts: opts, log: log}
}

// Register adds the handler to mux for every path under DefaultRoot.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.Handle(DefaultRoot+"/", h)
}

// operation is one EST operation path (RFC 7030 §3.2.2).
type operation struct {
	method string
	post   bool // carries a PKCS#10 body
}

var operations = map[string]operation{
	"cacerts":        {http.MethodGet, false},
	"simpleenroll":   {http.MethodPost, true},
	"simplereenroll": {http.MethodPost, true},
	"serverkeygen":   {http.MethodPost, true},
	"csrattrs":       {http.MethodGet, false},
	"crls":           {http.MethodGet, false},
	"eecerts":        {http.MethodGet, false},
	"fullcmc":        {http.MethodPost, true},
	// RFC 8295 §8.2: receipts and errors for asymmetric key packages; the body is
	// application/cms, read by readCMS.
	opReturn: {http.MethodPost, false},
	// RFC 8295 §2, §5.1, §5.2.
	estserver.OpPAL:                 {http.MethodGet, false},
	estserver.OpSymmetricKeys:       {http.MethodGet, false},
	estserver.OpSymmetricKeysReturn: {http.MethodPost, false},
	// RFC 8295 §6.1, §6.2.
	estserver.OpFirmware:       {http.MethodGet, false},
	estserver.OpFirmwareReturn: {http.MethodPost, false},
	// RFC 8295 §7.1, §7.2.
	estserver.OpTAMP:       {http.MethodGet, false},
	estserver.OpTAMPReturn: {http.MethodPost, false},
}

const opReturn = "serverkeygen/return"

// split turns "/.well-known/est[/label]/op" into (label, op) (est.SplitPath); RFC 8295's
// serverkeygen/return (§8.2) and symmetrickeys/return (§5.2) are the operations of two
// segments.
func split(p string) (label, op string, ok bool) {
	if base, found := strings.CutSuffix(p, "/return"); found {
		if l, o, ok := est.SplitPath(DefaultRoot, base); ok && (o == "serverkeygen" || o == estserver.OpSymmetricKeys || o == estserver.OpFirmware || o == estserver.OpTAMP) {
			return l, o + "/return", true
		}
	}
	return est.SplitPath(DefaultRoot, p)
}

// ServeHTTP handles one EST request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	label, name, ok := split(r.URL.Path)
	op, known := operations[name]
	if !ok || !known {
		h.fail(w, r, errs.New(errs.NotFound, "no EST operation at %s (expected %s[/<label>]/{cacerts,simpleenroll,simplereenroll,serverkeygen,serverkeygen/return,csrattrs,crls,eecerts,pal,symmetrickeys,symmetrickeys/return,firmware,firmware/return,tamp,tamp/return})",
			r.URL.Path, DefaultRoot))
		return
	}
	if r.Method != op.method && !(op.method == http.MethodGet && r.Method == http.MethodHead) {
		w.Header().Set("Allow", op.method)
		writeText(w, http.StatusMethodNotAllowed, "/"+name+" takes "+op.method+" only (RFC 7030 §3.2.2)")
		return
	}
	if name == "fullcmc" {
		// RFC 7030 §4.3: Full CMC is optional; this server does not implement it.
		writeText(w, http.StatusNotImplemented, "/fullcmc (Full CMC, RFC 7030 §4.3) is not implemented; use /simpleenroll")
		return
	}
	req := Request(r, label)
	if op.post {
		h.log.Debug("est-https request", "path", r.URL.Path, "addr", r.RemoteAddr, "content_type", r.Header.Get("Content-Type"),
			"content_transfer_encoding", r.Header.Get("Content-Transfer-Encoding"), "content_length", r.ContentLength)
		body, err := h.readCSR(w, r)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		req.Body = body
	}
	if name == estserver.OpTAMPReturn {
		// RFC 8295 §7.2.1: application/tamp-status-response, -update-confirm, ... -error.
		body, mt, err := h.readBody(w, r, func(mt string) bool { return strings.HasPrefix(mt, "application/tamp-") },
			"a TAMP response, confirm or error is application/tamp-… (RFC 8295 §7.2.1)")
		if err != nil {
			h.fail(w, r, err)
			return
		}
		req.Body, req.MediaType = body, mt
	}
	if name == opReturn || name == estserver.OpSymmetricKeysReturn || name == estserver.OpFirmwareReturn {
		body, err := h.readCMS(w, r)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		req.Body = body
	}
	ctx := r.Context()
	switch name {
	case estserver.OpPAL, estserver.OpSymmetricKeys, estserver.OpSymmetricKeysReturn, estserver.OpFirmware, estserver.OpFirmwareReturn,
		estserver.OpTAMP, estserver.OpTAMPReturn:
		h.servePackages(w, r, name, label, req)
	case opReturn:
		rs, ok := h.svc.(KeyPackageReturnService)
		if !ok {
			h.fail(w, r, errs.New(errs.NotFound, "this server takes no key package receipts"))
			return
		}
		if _, err := rs.ReturnKeyPackage(ctx, req); err != nil {
			h.fail(w, r, err)
			return
		}
		// RFC 8295 §5.2.2 (for §8.2): "the server response has an HTTP 204 response code".
		w.WriteHeader(http.StatusNoContent)
	case "cacerts":
		certs, err := h.svc.CACerts(ctx, req)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		der, err := est.EncodeCertsOnly(certs)
		if err != nil {
			h.fail(w, r, errs.Wrap(errs.Internal, err, "encoding failed"))
			return
		}
		// RFC 7030 §4.1.3: a certs-only Simple PKI Response as application/pkcs7-mime.
		writeBase64(w, MediaPKCS7, der)
	case "crls":
		cs, ok := h.svc.(CRLService)
		if !ok {
			h.fail(w, r, errs.New(errs.NotFound, "this server distributes no CRLs"))
			return
		}
		crls, err := cs.CRLs(ctx, req)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		der, err := est.EncodeCRLsOnly(crls)
		if err != nil {
			h.fail(w, r, errs.Wrap(errs.Internal, err, "encoding failed"))
			return
		}
		// RFC 8295 §4.2: "identical to what is described in Section 4.1.3 of [RFC7030]",
		// with CRLs in the crls-only message.
		writeBase64(w, MediaPKCS7, der)
	case "eecerts":
		es, ok := h.svc.(EECertService)
		if !ok {
			h.fail(w, r, errs.New(errs.NotFound, "this server distributes no end-entity certificates"))
			return
		}
		certs, err := es.EECerts(ctx, req)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		der, err := est.EncodeCertsOnly(certs)
		if err != nil {
			h.fail(w, r, errs.Wrap(errs.Internal, err, "encoding failed"))
			return
		}
		// RFC 8295 §3.2: "identical to what is described in Section 4.1.3 of [RFC7030]", with
		// the end-entity certificates in the certs-only message. They name devices: no caching.
		w.Header().Set("Cache-Control", "no-store")
		writeBase64(w, MediaPKCS7, der)
	case "csrattrs":
		a, err := h.svc.CSRAttrs(ctx, req)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		der, err := a.Marshal()
		if err != nil {
			h.fail(w, r, errs.Wrap(errs.Internal, err, "encoding failed"))
			return
		}
		// RFC 7030 §4.5.2.
		writeBase64(w, MediaCSRAttrs, der)
	case "simpleenroll", "simplereenroll":
		var iss *authority.Issued
		var err error
		if name == "simplereenroll" {
			iss, err = h.svc.Reenroll(ctx, req)
		} else {
			iss, err = h.svc.Enroll(ctx, req)
		}
		if err != nil {
			h.fail(w, r, err)
			return
		}
		// RFC 7030 §4.2.3: a certs-only Simple PKI Response holding the issued certificate.
		der, err := est.EncodeCertsOnly([]*x509.Certificate{iss.Cert})
		if err != nil {
			h.fail(w, r, errs.Wrap(errs.Internal, err, "encoding failed"))
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		writeBase64(w, MediaCertsOnly, der)
	case "serverkeygen":
		pkcs12, keyPackage := keyFormat(r.Header.Values("Accept"))
		// RFC 8295 §8.1: a client that accepts application/cms gets the key as an asymmetric
		// key package in SignedData(EnvelopedData(SignedData)); the service refuses (406)
		// before generating anything when the CSR names no key to encrypt it for.
		req.KeyPackage = keyPackage
		if pkcs12 {
			// RFC 8295 §8.3: the PFX is the protection; a CSR asking for a CMS-encrypted key
			// (RFC 7030 §4.4.1) wants the other answer. Refused before any key is generated.
			if csr, err := x509.ParseCertificateRequest(req.Body); err == nil {
				if attr, ok := est.EncryptedKeyRequest(csr); ok {
					h.fail(w, r, errs.New(errs.NotAcceptable, "the CSR asks for a CMS-encrypted key (%s): accept %s, not %s",
						attr, MediaMultipart, MediaPKCS12))
					return
				}
			}
		}
		if pkcs12 && req.Requester.Password == "" {
			// Refused before a key is generated or a certificate issued.
			h.fail(w, r, errs.New(errs.NotAcceptable, "a PKCS #12 answer (RFC 8295 §8.3) is protected with the request's HTTP Basic "+
				"password: send credentials, or accept %s (RFC 7030 §4.4.2)", MediaMultipart))
			return
		}
		sk, err := h.svc.ServerKeyGen(ctx, req)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		if pkcs12 {
			pfx, err := est.EncodePKCS12(rand.Reader, sk.PKCS8, sk.Issued.Cert, req.Requester.Password)
			if err != nil {
				h.fail(w, r, errs.Wrap(errs.Internal, err, "encoding failed"))
				return
			}
			w.Header().Set("Cache-Control", "no-store")
			// RFC 8295 §8.3.2: application/pkcs12, a base64-encoded DER PFX.
			writeBase64(w, MediaPKCS12, pfx)
			return
		}
		h.writeServerKey(w, r, sk)
	}
}

// servePackages answers the package operations of RFC 8295 (PackageService).
func (h *Handler) servePackages(w http.ResponseWriter, r *http.Request, name, label string, req *estserver.Request) {
	ps, ok := h.svc.(PackageService)
	if !ok {
		h.fail(w, r, errs.New(errs.NotFound, "this server delivers no packages"))
		return
	}
	if r.Method == http.MethodHead && name != estserver.OpPAL {
		// Fetching a package records its delivery (the PAL then asks for the receipt): a HEAD
		// must not.
		w.Header().Set("Allow", http.MethodGet)
		writeText(w, http.StatusMethodNotAllowed, "/"+name+" takes GET only: fetching a package records its delivery")
		return
	}
	ctx := r.Context()
	switch name {
	case estserver.OpPAL:
		entries, err := ps.PAL(ctx, req)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		base := DefaultRoot + "/"
		if label != "" {
			base += label + "/"
		}
		scheme := "https"
		if r.TLS == nil {
			scheme = "http"
		}
		for i := range entries {
			entries[i].URI = (&url.URL{Scheme: scheme, Host: r.Host, Path: base + entries[i].URI}).String()
		}
		doc, err := est.MarshalPAL(entries)
		if err != nil {
			h.fail(w, r, errs.Wrap(errs.Internal, err, "encoding failed"))
			return
		}
		// RFC 8295 §2.2: the PAL is XML; it is per client and changes as packages move.
		w.Header().Set("Content-Type", est.MediaPAL)
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		w.Write(doc)
	case estserver.OpSymmetricKeys:
		// RFC 8295 §5.1.2 lists several forms; the client names those it takes in Accept
		// with the RFC 7193 parameters (est.SymKeyEncapsulationsOfAccept). Which one it gets,
		// or none (406), is decided after it is authenticated.
		forms, asked := est.SymKeyEncapsulationsOfAccept(r.Header.Values("Accept"))
		req.SymKeyForms, req.SymKeyAnyForm = forms, !asked
		der, enc, err := ps.SymmetricKeys(ctx, req)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		// RFC 8295 §5.1.2: "HTTP 200 response code with a Content-Type of application/cms",
		// with the encapsulatingContent and innerContent parameters.
		w.Header().Set("Cache-Control", "no-store")
		writeBase64(w, enc.MediaType(), der)
	case estserver.OpSymmetricKeysReturn:
		if err := ps.ReturnSymmetricKeys(ctx, req); err != nil {
			h.fail(w, r, err)
			return
		}
		// RFC 8295 §5.2.2: "the server response has an HTTP 204 response code".
		w.WriteHeader(http.StatusNoContent)
	case estserver.OpFirmware:
		der, err := ps.Firmware(ctx, req)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		// RFC 8295 §6.1.2: "HTTP 200 response code with a Content-Type of application/cms".
		w.Header().Set("Cache-Control", "no-store")
		writeBase64(w, est.FirmwareMediaType(der), der)
	case estserver.OpFirmwareReturn:
		if err := ps.ReturnFirmware(ctx, req); err != nil {
			h.fail(w, r, err)
			return
		}
		// RFC 8295 §6.2.2: "the server response MUST have an HTTP 204 response code".
		w.WriteHeader(http.StatusNoContent)
	case estserver.OpTAMP:
		der, mt, err := ps.TAMP(ctx, req)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		// RFC 8295 §7.1.2: "HTTP 200 response code and a Content-Type of" the message's type.
		w.Header().Set("Cache-Control", "no-store")
		writeBase64(w, mt, der)
	case estserver.OpTAMPReturn:
		if err := ps.ReturnTAMP(ctx, req); err != nil {
			h.fail(w, r, err)
			return
		}
		// RFC 8295 §7.2.2: "the server response MUST have an HTTP 204 response code".
		w.WriteHeader(http.StatusNoContent)
	}
}

// Request builds the estserver.Request of r: who sent it (the TLS client chain, HTTP Basic
// credentials, the address), over which transport, and the connection's channel bindings.
func Request(r *http.Request, label string) *estserver.Request {
	who := authority.Requester{Protocol: authority.ProtocolEST, Transport: authority.TransportHTTP, Addr: r.RemoteAddr}
	req := &estserver.Request{Label: label}
	if r.TLS != nil {
		who.Transport = authority.TransportHTTPS
		// The chain the handshake verified through the authority (tls.Config's
		// VerifyPeerCertificate); the authority authenticates it again when it decides.
		who.Chain = r.TLS.PeerCertificates
		// RFC 7030 §3.2.3: Basic credentials count only over TLS; the authority uses them only
		// when no certificate authenticated the request.
		if u, p, ok := r.BasicAuth(); ok {
			who.User, who.Password = u, p
		}
		req.TLS = connBinding{r.TLS}
	}
	req.Requester = who
	return req
}

// connBinding supplies the channel bindings of a TLS connection for PoP linking.
type connBinding struct{ cs *tls.ConnectionState }

// TLSUnique is the connection's tls-unique (RFC 5929 §3, RFC 7030 §3.5); TLS 1.2 only.
func (c connBinding) TLSUnique() []byte {
	if c.cs.Version == tls.VersionTLS13 {
		return nil
	}
	return c.cs.TLSUnique
}

// TLSExporter is the connection's tls-exporter (RFC 9266 §2): 32 bytes of the exporter with
// label "EXPORTER-Channel-Binding" and no context; TLS 1.3 only (RFC 9266 §3: with TLS 1.2 it
// is safe only with extended master secret, and tls-unique serves there).
func (c connBinding) TLSExporter() []byte {
	if c.cs.Version != tls.VersionTLS13 {
		return nil
	}
	b, err := c.cs.ExportKeyingMaterial("EXPORTER-Channel-Binding", nil, 32)
	if err != nil {
		return nil
	}
	return b
}

// readCSR reads and decodes a request body: Content-Type application/pkcs10 (RFC 7030
// §4.2.1), base64 per RFC 8951.
func (h *Handler) readCSR(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || !strings.EqualFold(mt, MediaPKCS10) {
			return nil, errs.New(errs.UnsupportedFormat, "the request's Content-Type must be %s (RFC 7030 §4.2.1), got %q", MediaPKCS10, ct)
		}
	}
	if r.ContentLength > h.opts.MaxBody {
		return nil, errs.New(errs.TooLarge, "request body of %d bytes exceeds the limit of %d", r.ContentLength, h.opts.MaxBody)
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.opts.MaxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, errs.New(errs.TooLarge, "request body exceeds the limit of %d bytes", h.opts.MaxBody)
		}
		return nil, errs.Wrap(errs.BadRequest, err, "cannot read the request body")
	}
	der, err := DecodeBody(raw)
	if err != nil {
		return nil, err
	}
	return der, nil
}

// readCMS reads the body of /serverkeygen/return: Content-Type application/cms (RFC 8295
// §5.2.1, RFC 7193; its parameters are informational), base64 per RFC 8951 or binary DER.
func (h *Handler) readCMS(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, _, err := h.readBody(w, r, func(mt string) bool { return mt == MediaCMS },
		"a key package receipt or error is "+MediaCMS+" (RFC 8295 §5.2.1)")
	return body, err
}

// readBody reads a request body whose media type (lower case, without parameters) accept
// takes, base64 per RFC 8951 or binary DER; it returns the body and the media type.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request, accept func(string) bool, want string) ([]byte, string, error) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	mt = strings.ToLower(mt)
	if err != nil || !accept(mt) {
		return nil, "", errs.New(errs.UnsupportedFormat, "%s, got %q", want, r.Header.Get("Content-Type"))
	}
	if r.ContentLength > h.opts.MaxBody {
		return nil, "", errs.New(errs.TooLarge, "request body of %d bytes exceeds the limit of %d", r.ContentLength, h.opts.MaxBody)
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.opts.MaxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, "", errs.New(errs.TooLarge, "request body exceeds the limit of %d bytes", h.opts.MaxBody)
		}
		return nil, "", errs.Wrap(errs.BadRequest, err, "cannot read the request body")
	}
	der, err := DecodeBody(raw)
	return der, mt, err
}

// keyFormat reads the Accept header of /serverkeygen: pkcs12 when it asks for
// application/pkcs12 (RFC 8295 §8.3) rather than the multipart/mixed answer of RFC 7030 §4.4.2
// or an application/cms key part; keyPackage when it names application/cms (RFC 8295 §8.1),
// which then wins over application/pkcs12.
func keyFormat(accept []string) (pkcs12, keyPackage bool) {
	p12, multi, cmsType := false, false, false
	for _, v := range accept {
		for _, part := range strings.Split(v, ",") {
			mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil {
				continue
			}
			switch strings.ToLower(mt) {
			case MediaPKCS12:
				p12 = true
			case MediaMultipart:
				multi = true
			case MediaCMS:
				cmsType = true
			}
		}
	}
	return p12 && !multi && !cmsType, cmsType
}

// writeServerKey answers /serverkeygen with multipart/mixed: the private key as
// application/pkcs8, then the certificate as a certs-only response (RFC 7030 §4.4.2).
func (h *Handler) writeServerKey(w http.ResponseWriter, r *http.Request, sk *estserver.ServerKey) {
	certs, err := est.EncodeCertsOnly([]*x509.Certificate{sk.Issued.Cert})
	if err != nil {
		h.fail(w, r, errs.Wrap(errs.Internal, err, "encoding failed"))
		return
	}
	// RFC 7030 §4.4.2: the key part is application/pkcs8, or, when the CSR asked for it to be
	// encrypted, application/pkcs7-mime; smime-type=server-generated-key (CMS EnvelopedData).
	keyPart := struct {
		ct  string
		der []byte
	}{MediaPKCS8, sk.PKCS8}
	if sk.Encrypted != nil {
		keyPart.ct, keyPart.der = MediaServerGeneratedKey, sk.Encrypted
		if sk.KeyPackage {
			// RFC 8295 §8.1: "the Content-Type is application/cms" with encapsulatingContent
			// and innerContent.
			keyPart.ct = est.MediaKeyPackage
		}
	}
	var buf strings.Builder
	mw := multipart.NewWriter(&buf)
	for _, p := range []struct {
		ct  string
		der []byte
	}{keyPart, {MediaCertsOnly, certs}} {
		hdr := textproto.MIMEHeader{}
		hdr.Set("Content-Type", p.ct)
		hdr.Set("Content-Transfer-Encoding", "base64")
		pw, err := mw.CreatePart(hdr)
		if err == nil {
			_, err = io.WriteString(pw, EncodeBody(p.der))
		}
		if err != nil {
			h.fail(w, r, errs.Wrap(errs.Internal, err, "encoding failed"))
			return
		}
	}
	if err := mw.Close(); err != nil {
		h.fail(w, r, errs.Wrap(errs.Internal, err, "encoding failed"))
		return
	}
	w.Header().Set("Content-Type", MediaMultipart+"; boundary="+mw.Boundary())
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, buf.String())
}

// writeBase64 writes a 200 with the base64 of der (RFC 8951 §3) and an explicit
// Content-Length (some clients, Bouncy Castle's among them, insist on one).
func writeBase64(w http.ResponseWriter, mediaType string, der []byte) {
	body := EncodeBody(der)
	h := w.Header()
	h.Set("Content-Type", mediaType)
	h.Set("Content-Transfer-Encoding", "base64")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, body)
}

// statusFor is THE table from error kinds to HTTP statuses (RFC 7030 §4.2.3, RFC 9110 §15),
// indexed by kind; TestStatusTableCoversEveryKind fails when a kind has no entry.
var statusFor = [errs.NumKinds]int{
	errs.Internal:          http.StatusInternalServerError,   // 500
	errs.BadRequest:        http.StatusBadRequest,            // 400
	errs.Unauthorized:      http.StatusUnauthorized,          // 401 (+ WWW-Authenticate where Basic is on)
	errs.Forbidden:         http.StatusForbidden,             // 403
	errs.NotFound:          http.StatusNotFound,              // 404
	errs.NotAcceptable:     http.StatusNotAcceptable,         // 406
	errs.UnsupportedFormat: http.StatusUnsupportedMediaType,  // 415
	errs.TooLarge:          http.StatusRequestEntityTooLarge, // 413
	errs.Pending:           http.StatusAccepted,              // 202 + Retry-After (RFC 7030 §4.2.3)
	errs.Unavailable:       http.StatusServiceUnavailable,    // 503 + Retry-After
	errs.Conflict:          http.StatusConflict,              // 409
	errs.BadGateway:        http.StatusBadGateway,            // 502
	errs.GatewayTimeout:    http.StatusGatewayTimeout,        // 504
}

// Status returns the HTTP status of err.
func Status(err error) int {
	if k := errs.KindOf(err); k.Valid() {
		return statusFor[k]
	}
	return http.StatusInternalServerError
}

// fail writes err as its status with the client-visible message (errs.Message) as a
// text/plain body (RFC 7030 §4.2.3: a human-readable error without a Content-Type of its own
// kind), Retry-After for a pending or unavailable service, and the Basic challenge on 401
// where Basic users are configured.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	status := Status(err)
	hdr := w.Header()
	if e := errs.As(err); e != nil && (e.Kind == errs.Pending || e.Kind == errs.Unavailable) {
		secs := 60 // RFC 7030 §4.2.3 requires Retry-After on a 202
		if e.RetryAfter > 0 {
			secs = int(min(math.Ceil(e.RetryAfter.Seconds()), math.MaxInt32))
		}
		hdr.Set("Retry-After", strconv.Itoa(secs))
	}
	if status == http.StatusUnauthorized && h.opts.BasicRealm != "" {
		// RFC 7030 §3.2.3, RFC 7617 §2.
		hdr.Set("WWW-Authenticate", `Basic realm="`+strings.NewReplacer(`"`, "", `\`, "").Replace(h.opts.BasicRealm)+`", charset="UTF-8"`)
	}
	level := slog.LevelDebug
	if errs.KindOf(err) == errs.Internal {
		level = slog.LevelError
	}
	h.log.Log(r.Context(), level, "est-https request failed", "path", r.URL.Path, "status", status, "addr", r.RemoteAddr, "error", err)
	writeText(w, status, errs.Message(err))
}

func writeText(w http.ResponseWriter, status int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(msg)+1))
	w.WriteHeader(status)
	_, _ = io.WriteString(w, msg+"\n")
}
