package estserver

import (
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"strconv"
	"strings"
	"time"

	"coapca/authority"
	"coapca/errs"
	"coapca/est"
	"coapca/est/cms"
)

// PackageSource is what the package operations of RFC 8295 need from the authority
// (implemented by *authority.Authority): /pal (§2), /symmetrickeys and /symmetrickeys/return
// (§5). The authority decides who gets which package and whose receipts count
// (docs/security.md); an Authority without it answers them with errs.NotFound.
type PackageSource interface {
	PackagesFor(ctx context.Context, req authority.Requester, label string) ([]*authority.Package, error)
	FetchPackage(ctx context.Context, req authority.Requester, label string, f authority.PackageFetch) (*authority.Package, []byte, error)
	RecordPackageReturn(ctx context.Context, req authority.Requester, label string, kind authority.PackageKind,
		r authority.PackageReturn) (*authority.Package, error)
}

var _ PackageSource = (*authority.Authority)(nil)

// Operation paths of the PAL entries (RFC 8295 §2.1: each entry refers to the path component
// the client uses); the binding makes them absolute URIs.
const (
	OpPAL                 = "pal"
	OpSymmetricKeys       = "symmetrickeys"
	OpSymmetricKeysReturn = "symmetrickeys/return"
	OpFirmware            = "firmware"
	OpFirmwareReturn      = "firmware/return"
	OpTAMP                = "tamp"
	OpTAMPReturn          = "tamp/return"
)

func (s *Service) packages() (PackageSource, error) {
	ps, ok := s.auth.(PackageSource)
	if !ok {
		return nil, errs.New(errs.NotFound, "this server delivers no packages")
	}
	return ps, nil
}

// PAL returns the Package Availability List of the requester (RFC 8295 §2): the CA
// certificates (/cacerts), the CRL (/crls) and the end-entity certificates (/eecerts) where
// this server offers them, then, for each symmetric key or firmware package queued for it, an
// entry to fetch it (0024, 0026; dated when the client acknowledged it with a receipt) and,
// while a fetched package waits for its receipt, an entry asking for it (0025, 0027; RFC 8295
// §2.1.1:
// "PAL entries can also be used to notify clients that they are to return receipts or
// errors"). Entry URIs are operation paths (OpSymmetricKeys, ...), made absolute by the
// binding. Who may ask is the authority's decision (PackageSource.PackagesFor).
func (s *Service) PAL(ctx context.Context, r *Request) (entries []est.PALEntry, err error) {
	defer func(start time.Time) { s.report("pal", r, start, err, false) }(time.Now())
	src, err := s.packages()
	if err != nil {
		return nil, err
	}
	pkgs, err := src.PackagesFor(ctx, r.Requester, r.Label)
	if err != nil {
		return nil, typed(err, "package availability list")
	}
	entries = append(entries, est.PALEntry{Type: est.PALCACert, URI: "cacerts"})
	if _, ok := s.auth.(CRLSource); ok {
		entries = append(entries, est.PALEntry{Type: est.PALCRL, URI: "crls"})
	}
	if _, ok := s.auth.(EECertSource); ok {
		entries = append(entries, est.PALEntry{Type: est.PALEECert, URI: "eecerts"})
	}
	for _, p := range pkgs {
		var e, ret est.PALEntry
		switch p.Kind {
		case authority.PackageSymmetricKeys:
			// RFC 8295 §2.1 size: that of the SymmetricKeyPackage; the CMS layers around it
			// depend on the form the client asks for.
			e = est.PALEntry{Type: est.PALSymmetricKeyPackage, URI: OpSymmetricKeys, Size: int64(len(p.Content))}
			ret = est.PALEntry{Type: est.PALSymmetricKeyReturn, URI: OpSymmetricKeysReturn}
		case authority.PackageFirmware:
			e = est.PALEntry{Type: est.PALFirmwarePackage, URI: OpFirmware, Size: int64(len(p.Content))}
			ret = est.PALEntry{Type: est.PALFirmwareReturn, URI: OpFirmwareReturn}
		case authority.PackageTAMP:
			k, _, _ := tampName(p.Name)
			pkgType, retType, ok := est.PALTypesOfTAMP(k)
			if !ok {
				continue
			}
			e = est.PALEntry{Type: pkgType, URI: OpTAMP, Size: int64(len(p.Content))}
			ret = est.PALEntry{Type: retType, URI: OpTAMPReturn}
		default:
			continue
		}
		if p.ReturnKind == "receipt" {
			e.Date = p.ReturnedAt
		}
		entries = append(entries, e)
		if !p.FetchedAt.IsZero() && p.ReturnKind == "" {
			entries = append(entries, ret)
		}
	}
	return entries, nil
}

// SymmetricKeys delivers the oldest symmetric key package queued for the requester that it has
// not acknowledged (RFC 8295 §5.1), in a form of §5.1.2 that the client takes (r.SymKeyForms)
// and the operator allows for the package (the authority decides: by default only the forms
// that encrypt for the client — "It is strongly RECOMMENDED that servers always return
// encrypted symmetric keys"). The SymmetricKeyPackage (RFC 6031) is signed by this server with
// a key-package-identifier-and-receipt-request attribute and, in the encrypted forms,
// encrypted for the requester's certificate (ECDH key agreement for an EC key, RSA-OAEP for
// RSA). The fetch is recorded only once the package is sealed. Nothing waiting is
// errs.NotFound; nothing in a form the client takes, errs.NotAcceptable.
func (s *Service) SymmetricKeys(ctx context.Context, r *Request) (der []byte, enc est.SymKeyEncapsulation, err error) {
	defer func(start time.Time) { s.report("symmetrickeys", r, start, err, false) }(time.Now())
	src, err := s.packages()
	if err != nil {
		return nil, 0, err
	}
	if s.keyEnc == nil {
		return nil, 0, errs.New(errs.NotFound, "this server has no key to sign packages with")
	}
	f := authority.PackageFetch{Kind: authority.PackageSymmetricKeys, AnyForm: r.SymKeyAnyForm}
	for _, e := range r.SymKeyForms {
		f.Forms = append(f.Forms, e.String())
	}
	f.Seal = func(p *authority.Package, form string, to *x509.Certificate) ([]byte, error) {
		e, ok := est.SymKeyEncapsulationByName(form)
		if !ok {
			return nil, errs.New(errs.Internal, "the authority chose symmetric key form %q, which this server does not produce", form)
		}
		if e != est.SymKeyPlain && e != est.SymKeySigned {
			// The package is encrypted for this key (ECDH for EC, RSA-OAEP for RSA;
			// cms.Recipient).
			switch to.PublicKey.(type) {
			case *ecdsa.PublicKey, *rsa.PublicKey:
			default:
				return nil, errs.New(errs.NotAcceptable, "symmetric keys are encrypted for the client certificate's key, "+
					"which must be EC or RSA, not %T", to.PublicKey)
			}
		}
		der, err := est.SealSymmetricKeyPackageAs(s.rand, e, p.Content, authority.PackageID(p.Kind, p.ID), s.keyEnc.Signer, s.keyEnc.Chain,
			cms.Recipient{Cert: to}, nil, time.Now())
		if err != nil {
			return nil, errs.Wrap(errs.Internal, err, "protecting symmetric key package %d", p.ID)
		}
		enc = e
		return der, nil
	}
	p, der, err := src.FetchPackage(ctx, r.Requester, r.Label, f)
	if err != nil {
		return nil, 0, typed(err, "symmetric keys")
	}
	s.log.Debug("symmetric keys", "package", p.ID, "label", r.Label, "encapsulation", enc)
	return der, enc, nil
}

// ReturnSymmetricKeys takes a key package receipt or error (RFC 7191) for a symmetric key
// package (RFC 8295 §5.2, /symmetrickeys/return): r.Body is the DER ContentInfo. A malformed or
// wrongly signed one is errs.BadRequest; whose it may be, and whether the signer validates to an
// authorized trust anchor, is the authority's decision. Nothing is recorded when it fails.
func (s *Service) ReturnSymmetricKeys(ctx context.Context, r *Request) (err error) {
	defer func(start time.Time) { s.report("symmetrickeys_return", r, start, err, false) }(time.Now())
	src, err := s.packages()
	if err != nil {
		return err
	}
	p, err := est.ParseKeyPackageReturn(r.Body)
	if err != nil {
		return errs.Wrap(errs.BadRequest, err, "malformed key package receipt or error")
	}
	in := authority.PackageReturn{Kind: "error", PkgID: p.PkgID, ErrorCode: p.ErrorCode, DER: r.Body}
	if p.Receipt {
		in.Kind = "receipt"
	}
	in.Signer, in.SignerCerts = signerAndCerts(p.Signed)
	if _, err := src.RecordPackageReturn(ctx, r.Requester, r.Label, authority.PackageSymmetricKeys, in); err != nil {
		return typed(err, "symmetric key package return")
	}
	return nil
}

// Firmware delivers the oldest firmware package queued for the requester that it has not
// acknowledged (RFC 8295 §6.1): the signed firmware package of RFC 4108 as the operator queued
// it (est.MediaFirmwarePackage; RFC 8295 §6.1.2 "If the firmware is signed"). Nothing waiting
// is errs.NotFound.
func (s *Service) Firmware(ctx context.Context, r *Request) (der []byte, err error) {
	defer func(start time.Time) { s.report("firmware", r, start, err, false) }(time.Now())
	src, err := s.packages()
	if err != nil {
		return nil, err
	}
	_, der, err = src.FetchPackage(ctx, r.Requester, r.Label, authority.PackageFetch{Kind: authority.PackageFirmware})
	if err != nil {
		return nil, typed(err, "firmware")
	}
	return der, nil
}

// ReturnFirmware takes a firmware package load receipt or error (RFC 4108 §3, §4), signed or
// not (RFC 8295 §6.2.1): r.Body is the DER ContentInfo. A malformed or wrongly signed one is
// errs.BadRequest; the authority decides whose it may be. Nothing is recorded when it fails.
func (s *Service) ReturnFirmware(ctx context.Context, r *Request) (err error) {
	defer func(start time.Time) { s.report("firmware_return", r, start, err, false) }(time.Now())
	src, err := s.packages()
	if err != nil {
		return err
	}
	p, err := est.ParseFirmwareReturn(r.Body)
	if err != nil {
		return errs.Wrap(errs.BadRequest, err, "malformed firmware receipt or error")
	}
	if p.Name == nil {
		return errs.New(errs.BadRequest, "the firmware error names no firmware package (fwPkgName)")
	}
	in := authority.PackageReturn{Kind: "error", PkgID: []byte(p.Name.String()), ErrorCode: p.ErrorCode, DER: r.Body}
	if p.Receipt {
		in.Kind = "receipt"
	}
	in.Signer, in.SignerCerts = signerAndCerts(p.Signed)
	if _, err := src.RecordPackageReturn(ctx, r.Requester, r.Label, authority.PackageFirmware, in); err != nil {
		return typed(err, "firmware return")
	}
	return nil
}

// TAMPName is the name of a queued TAMP message: "KIND#SEQNUM" (authority.PackageTAMP).
func TAMPName(k est.TAMPKind, seq int64) string { return k.String() + "#" + strconv.FormatInt(seq, 10) }

func tampName(name string) (est.TAMPKind, int64, bool) {
	kindText, seqText, ok := strings.Cut(name, "#")
	k, known := est.TAMPKindByName(kindText)
	seq, err := strconv.ParseInt(seqText, 10, 64)
	return k, seq, ok && known && err == nil && k.IsRequest()
}

// TAMP delivers the oldest TAMP message queued for the requester that it has not answered with
// success (RFC 8295 §7.1): the signed message as the operator queued it, with its media type
// (RFC 8295 §7.1.2: application/tamp-status-query, -update, -apex-update, -community-update,
// -sequence-adjust). Nothing waiting is errs.NotFound.
func (s *Service) TAMP(ctx context.Context, r *Request) (der []byte, mediaType string, err error) {
	defer func(start time.Time) { s.report("tamp", r, start, err, false) }(time.Now())
	src, err := s.packages()
	if err != nil {
		return nil, "", err
	}
	var k est.TAMPKind
	seal := func(p *authority.Package, _ string, _ *x509.Certificate) ([]byte, error) {
		var ok bool
		if k, _, ok = tampName(p.Name); !ok {
			return nil, errs.New(errs.Internal, "queued TAMP package %d has no message kind", p.ID)
		}
		return p.Content, nil
	}
	_, der, err = src.FetchPackage(ctx, r.Requester, r.Label, authority.PackageFetch{Kind: authority.PackageTAMP, Seal: seal})
	if err != nil {
		return nil, "", typed(err, "tamp")
	}
	return der, k.Media(), nil
}

// ReturnTAMP takes a TAMP response, confirm or error (RFC 8295 §7.2; RFC 5934), signed or not
// (§7.2.1 "should be signed"): r.Body is the DER ContentInfo and r.MediaType must name its
// kind. A confirm whose every status is success, and a status response, count as the receipt;
// any other status, and a TAMP error, as an error with that status. The message it answers is
// named by its message reference (kind and sequence number). Malformed, or a signature that does
// not verify: errs.BadRequest; the authority decides whose it may be.
func (s *Service) ReturnTAMP(ctx context.Context, r *Request) (err error) {
	defer func(start time.Time) { s.report("tamp_return", r, start, err, false) }(time.Now())
	src, err := s.packages()
	if err != nil {
		return err
	}
	kind, ok := est.TAMPKindByMedia(r.MediaType)
	if !ok || kind.IsRequest() {
		return errs.New(errs.UnsupportedFormat, "%q is not a TAMP response, confirm or error media type (RFC 8295 §7.2.1)", r.MediaType)
	}
	m, err := est.OpenTAMP(r.Body, kind, true)
	if err != nil {
		return errs.Wrap(errs.BadRequest, err, "malformed TAMP %s", kind)
	}
	req, ok := kind.RequestOf()
	if kind == est.TAMPError {
		req, ok = est.TAMPKindByOID(m.MsgType)
		ok = ok && req.IsRequest()
	}
	if !ok || !m.HasRef {
		return errs.New(errs.BadRequest, "the TAMP %s names no TAMP message of this server", kind)
	}
	in := authority.PackageReturn{Kind: "receipt", PkgID: []byte(TAMPName(req, m.SeqNum)), DER: r.Body}
	for _, st := range m.Status {
		if st != 0 || kind == est.TAMPError {
			in.Kind, in.ErrorCode = "error", est.TAMPStatusName(st)
			break
		}
	}
	in.Signer, in.SignerCerts = signerAndCerts(m.Signed)
	if _, err := src.RecordPackageReturn(ctx, r.Requester, r.Label, authority.PackageTAMP, in); err != nil {
		return typed(err, "tamp return")
	}
	return nil
}
