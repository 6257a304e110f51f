package authority

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"coapca/errs"
	"coapca/store"
)

// Packages the operator queues for clients and the server delivers through the RFC 8295
// package operations (§5 /symmetrickeys), listed per client in the PAL (§2). Who gets which
// package, and whose receipts count, is decided here (docs/security.md); the content is opaque
// to the authority (the EST service encodes and protects it).

// PackageKind is the kind of a queued package: the RFC 8295 operation that delivers it.
type PackageKind string

// The package kinds.
const (
	// PackageSymmetricKeys is a symmetric key package (RFC 6031) for /symmetrickeys (RFC 8295
	// §5); the EST service protects it for each client.
	PackageSymmetricKeys PackageKind = "symmetrickeys"
	// PackageFirmware is a signed firmware package (RFC 4108) for /firmware (RFC 8295 §6),
	// delivered as queued; its Name is the firmware package identifier ("OID:VERSION") that
	// receipts and errors name.
	PackageFirmware PackageKind = "firmware"
	// PackageTAMP is a signed TAMP message (RFC 5934) for /tamp (RFC 8295 §7), delivered as
	// queued; its Name is "KIND#SEQNUM" (e.g. "update#7"), which responses, confirms and
	// errors name by their message reference.
	PackageTAMP PackageKind = "tamp"
)

// MaxPackageContent bounds a queued package's content.
const MaxPackageContent = 64 << 10

// maxPackagesScanned bounds the packages looked at for one client (the operator queues
// packages by hand; a fleet has few).
const maxPackagesScanned = 10000

// Package is a queued package with, for one client, its delivery state.
type Package struct {
	ID        int64
	Kind      PackageKind
	Target    string // "serial:HEX", "subject:DN" or "label:L" (see AddPackage)
	Name      string
	Content   []byte
	CreatedAt time.Time

	// For the client asked about (PackagesFor, FetchPackage): when it last fetched the package
	// (zero: never) and its latest receipt or error ("" none).
	FetchedAt  time.Time
	ReturnKind string
	ErrorCode  string
	ReturnedAt time.Time
	// Forms are the symmetric key forms the operator allows (RFC 8295 §5.1.2; nil: the
	// default, DefaultSymKeyForms); Form is the form of the client's latest fetch.
	Forms []string
	Form  string
}

// delivered reports whether the client is done with the package: it acknowledged it with a
// receipt, or fetched a symmetric key package in the plain form, which carries no key package
// identifier (RFC 8295 §5.2: the receipt request "only appears when additional encryption is
// employed"), so no receipt or error can name it and it is not offered or listed again.
func (p *Package) delivered() bool {
	return p.ReturnKind == "receipt" || (p.Kind == PackageSymmetricKeys && p.Form == SymKeyFormPlain)
}

// PackageDelivery is one client's state of a package, for the operator.
type PackageDelivery struct {
	ClientSerial string
	FetchedAt    time.Time
	Fetches      int
	Form         string
	ReturnKind   string
	ErrorCode    string
	ReturnedAt   time.Time
}

// PackageID is the key package identifier (RFC 7191 KeyPkgID) of a queued package: the text
// "coapca:KIND:ID". The client echoes it in its receipt or error.
func PackageID(kind PackageKind, id int64) []byte {
	return []byte("coapca:" + string(kind) + ":" + strconv.FormatInt(id, 10))
}

// parsePackageID reverses PackageID for kind.
func parsePackageID(kind PackageKind, pkgID []byte) (int64, bool) {
	rest, ok := strings.CutPrefix(string(pkgID), "coapca:"+string(kind)+":")
	if !ok {
		return 0, false
	}
	id, err := strconv.ParseInt(rest, 10, 64)
	return id, err == nil && id > 0 && strconv.FormatInt(id, 10) == rest
}

// AddPackage queues a package for clients (the operator's `coapca ca symkey add`). target is
// "serial:HEX" (the client authenticating with that certificate of this CA), "subject:DN" (any
// client authenticating with a certificate of this CA with exactly that subject) or "label:L"
// (any client authenticating with a certificate of this CA issued under label L). An unknown
// serial or label is errs.NotFound, anything else malformed errs.BadRequest; nothing is stored
// then. forms are, for a symmetric key package, the forms of RFC 8295 §5.1.2 it may be
// delivered in (nil: DefaultSymKeyForms, those that encrypt for the client); other kinds take
// none.
func (a *Authority) AddPackage(ctx context.Context, kind PackageKind, target, name string, content []byte, forms []string) (*Package, error) {
	if kind != PackageSymmetricKeys && kind != PackageFirmware && kind != PackageTAMP {
		return nil, errs.New(errs.BadRequest, "unknown package kind %q", kind)
	}
	storedForms, err := canonicalSymKeyForms(kind, forms)
	if err != nil {
		return nil, err
	}
	if name == "" || len(name) > 256 {
		return nil, errs.New(errs.BadRequest, "a package needs a name of 1..256 bytes")
	}
	if len(content) == 0 || len(content) > MaxPackageContent {
		return nil, errs.New(errs.BadRequest, "package content of %d bytes (1..%d)", len(content), MaxPackageContent)
	}
	how, what, _ := strings.Cut(target, ":")
	// The label the package's clients ask under, where the target names one: its profile may
	// limit the symmetric key forms (symmetric_key_forms).
	var prof *Profile
	switch how {
	case "serial":
		rec, err := a.storedCert(ctx, what)
		if err != nil {
			return nil, err
		}
		target = "serial:" + rec.Serial
		prof = a.profiles[rec.Label]
	case "label":
		var ok bool
		if prof, ok = a.profiles[what]; !ok {
			return nil, errs.New(errs.NotFound, "unknown label %q", what)
		}
	case "subject":
		if strings.TrimSpace(what) == "" {
			return nil, errs.New(errs.BadRequest, "empty subject")
		}
	default:
		return nil, errs.New(errs.BadRequest, "target %q is none of serial:HEX, subject:DN, label:L", target)
	}
	if kind == PackageSymmetricKeys && prof != nil && prof.SymKeyForms != nil {
		q := &Package{}
		if storedForms != "" {
			q.Forms = strings.Split(storedForms, ",")
		}
		if len(q.allowedForms(prof.SymKeyForms)) == 0 {
			return nil, errs.New(errs.BadRequest, "label %q delivers symmetric keys only as %s (symmetric_key_forms): none of the package's forms %s",
				prof.Label, strings.Join(prof.SymKeyForms, ", "), strings.Join(q.allowedForms(nil), ", "))
		}
	}
	p := &store.Package{Kind: string(kind), Target: target, Name: name, Content: content, CreatedAt: a.now(), Forms: storedForms}
	if err := a.store.AddPackage(ctx, p); err != nil {
		return nil, errs.Wrap(errs.Internal, err, "recording the package")
	}
	a.log.Info("package queued", "kind", kind, "id", p.ID, "target", target, "name", name, "forms", storedForms)
	return packageOf(p), nil
}

func packageOf(p *store.Package) *Package {
	q := &Package{ID: p.ID, Kind: PackageKind(p.Kind), Target: p.Target, Name: p.Name, Content: p.Content, CreatedAt: p.CreatedAt}
	if p.Forms != "" {
		q.Forms = strings.Split(p.Forms, ",")
	}
	return q
}

// ListPackages returns the queued packages of kind ("" all), oldest first, for the operator.
func (a *Authority) ListPackages(ctx context.Context, kind PackageKind, limit int) ([]*Package, error) {
	rows, err := a.store.ListPackages(ctx, store.PackageFilter{Kind: string(kind), Limit: limit})
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "listing packages")
	}
	out := make([]*Package, len(rows))
	for i, p := range rows {
		out[i] = packageOf(p)
	}
	return out, nil
}

// PackageDeliveries returns every client's state of package id, for the operator.
func (a *Authority) PackageDeliveries(ctx context.Context, id int64) ([]*PackageDelivery, error) {
	rows, err := a.store.ListPackageDeliveries(ctx, store.PackageDeliveryFilter{PackageID: id})
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "listing deliveries")
	}
	out := make([]*PackageDelivery, len(rows))
	for i, d := range rows {
		out[i] = &PackageDelivery{ClientSerial: d.ClientSerial, FetchedAt: d.FetchedAt, Fetches: d.Fetches, Form: d.Form, ReturnKind: d.ReturnKind,
			ErrorCode: d.ErrorCode, ReturnedAt: d.ReturnedAt}
	}
	return out, nil
}

// clientPackages returns the packages of kind ("" all) targeted at the client holding rec, oldest
// first, with its delivery state.
func (a *Authority) clientPackages(ctx context.Context, kind PackageKind, rec *store.Cert) ([]*Package, error) {
	rows, err := a.store.ListPackages(ctx, store.PackageFilter{Kind: string(kind), Limit: maxPackagesScanned})
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "listing packages")
	}
	ds, err := a.store.ListPackageDeliveries(ctx, store.PackageDeliveryFilter{ClientSerial: rec.Serial})
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "listing deliveries")
	}
	byID := make(map[int64]*store.PackageDelivery, len(ds))
	for _, d := range ds {
		byID[d.PackageID] = d
	}
	var out []*Package
	for _, p := range rows {
		if !targets(p, rec) {
			continue
		}
		q := packageOf(p)
		if d := byID[p.ID]; d != nil {
			q.FetchedAt, q.Form, q.ReturnKind, q.ErrorCode, q.ReturnedAt = d.FetchedAt, d.Form, d.ReturnKind, d.ErrorCode, d.ReturnedAt
		}
		out = append(out, q)
	}
	return out, nil
}

// PackagesFor returns, for the PAL (RFC 8295 §2), the packages queued for the requester with
// its delivery state. Decided as FetchPackage: a client authenticated with a certificate of
// this CA, asking under that certificate's label, sees its own packages only. A symmetric key
// package it fetched in the plain form is left out: it is no longer offered, and nothing can
// acknowledge it (Package.delivered), so the PAL has nothing to say about it.
func (a *Authority) PackagesFor(ctx context.Context, req Requester, label string) ([]*Package, error) {
	who, err := a.packageClient(ctx, req, label)
	if err != nil {
		return nil, err
	}
	ps, err := a.clientPackages(ctx, "", who.ours)
	if err != nil {
		return nil, err
	}
	out := ps[:0]
	for _, p := range ps {
		if p.ReturnKind == "receipt" || !p.delivered() {
			out = append(out, p)
		}
	}
	return out, nil
}

// PackageFetch is what a client asks FetchPackage for.
type PackageFetch struct {
	Kind PackageKind
	// For symmetric keys, the forms of RFC 8295 §5.1.2 the client takes (its Accept): AnyForm
	// when it names none (no Accept, */*, bare application/cms), else Forms, its preference
	// first — empty when it names only forms this server does not produce. Unused for other
	// kinds.
	AnyForm bool
	Forms   []string
	// Seal makes what is delivered from the package, in form ("" for kinds without forms), for
	// the certificate to (the requester's own). nil delivers the content as queued. The fetch
	// is recorded only once Seal succeeded; its error is returned as is.
	Seal func(p *Package, form string, to *x509.Certificate) ([]byte, error)
}

// FetchPackage delivers the oldest package of f.Kind queued for the requester that it has not
// acknowledged with a receipt (nor, for symmetric keys, fetched in the plain form: nothing can
// acknowledge that) and that it may have in a form it takes (symKeyForm), sealed by f.Seal,
// and records the delivery once sealed. The requester is authenticated before its forms are
// looked at. No package: errs.NotFound; packages waiting, none in a form the client takes and
// the operator allows: errs.NotAcceptable. Nothing is recorded when it fails.
func (a *Authority) FetchPackage(ctx context.Context, req Requester, label string, f PackageFetch) (*Package, []byte, error) {
	who, err := a.packageClient(ctx, req, label)
	if err != nil {
		return nil, nil, err
	}
	if f.Kind == PackageSymmetricKeys && !f.AnyForm && len(f.Forms) == 0 {
		return nil, nil, errs.New(errs.NotAcceptable, "the request names no symmetric key package form this server produces (%s)",
			strings.Join(SymKeyForms(), ", "))
	}
	ps, err := a.clientPackages(ctx, f.Kind, who.ours)
	if err != nil {
		return nil, nil, err
	}
	var limit []string
	if prof := a.profiles[label]; prof != nil {
		limit = prof.SymKeyForms
	}
	var refused []string
	for _, p := range ps {
		if p.delivered() {
			continue
		}
		form := ""
		if p.Kind == PackageSymmetricKeys {
			var ok bool
			if form, ok = symKeyForm(p, f, limit); !ok {
				refused = append(refused, fmt.Sprintf("package %d (%s)", p.ID, strings.Join(p.allowedForms(limit), ", ")))
				continue
			}
		}
		out := p.Content
		if f.Seal != nil {
			if out, err = f.Seal(p, form, who.leaf); err != nil {
				return nil, nil, err
			}
		}
		now := a.now()
		if err := a.store.MarkPackageFetched(ctx, p.ID, who.ours.Serial, form, now); err != nil {
			return nil, nil, errs.Wrap(errs.Internal, err, "recording the delivery")
		}
		p.FetchedAt, p.Form = now, form
		a.log.Info("package delivered", "kind", f.Kind, "id", p.ID, "client", who.ours.Serial, "form", form, "addr", req.Addr)
		return p, out, nil
	}
	if len(refused) > 0 {
		a.log.Info("package fetch refused: form", "kind", f.Kind, "client", who.ours.Serial, "asked", strings.Join(f.Forms, ","),
			"addr", req.Addr)
		return nil, nil, errs.New(errs.NotAcceptable, "the %s packages waiting for %s are delivered only in forms it does not accept: %s",
			f.Kind, who.describe(), strings.Join(refused, "; "))
	}
	return nil, nil, errs.New(errs.NotFound, "no %s package is waiting for %s", f.Kind, who.describe())
}

// PackageReturn is a receipt or error (RFC 7191) a client returned for a queued package. The
// EST service fills in what it parsed; RecordPackageReturn decides.
type PackageReturn struct {
	Kind      string // "receipt" or "error"
	PkgID     []byte
	ErrorCode string
	// Signer is the certificate whose key signed it, SignerCerts the other certificates the
	// SignedData carried; nil for an unsigned error.
	Signer      *x509.Certificate
	SignerCerts []*x509.Certificate
	DER         []byte
}

// RecordPackageReturn decides whether req may return this receipt or error for a package of
// kind, and records it (docs/security.md). Default deny:
//   - the requester must authenticate with a certificate of this CA and ask under that
//     certificate's label (errs.Unauthorized, errs.Forbidden; an unknown label errs.NotFound);
//   - a receipt must be signed (RFC 8295 §5.2.1); a signature must validate back to an
//     authorized trust anchor (RFC 8295 §5.2.2: "the server MUST reject it if the digital
//     signature does not validate back to an authorized TA") and be the requester's own
//     certificate (errs.Forbidden);
//   - it must name a package of kind by its identifier (errs.BadRequest), which exists
//     (errs.NotFound), is queued for the requester (errs.Forbidden) and which the requester
//     fetched (errs.Conflict).
//
// Nothing is recorded when it refuses.
func (a *Authority) RecordPackageReturn(ctx context.Context, req Requester, label string, kind PackageKind, r PackageReturn) (*Package, error) {
	who, err := a.packageClient(ctx, req, label)
	if err != nil {
		return nil, err
	}
	switch r.Kind {
	case "receipt":
		// RFC 8295 §5.2.1: "The key package receipt is digitally signed"; a firmware receipt
		// may be unsigned (§6.2.1), TAMP responses "should be signed" (§7.2.1).
		if r.Signer == nil && kind == PackageSymmetricKeys {
			return nil, errs.New(errs.BadRequest, "a key package receipt must be signed (RFC 8295 §5.2.1)")
		}
	case "error":
	default:
		return nil, errs.New(errs.BadRequest, "unknown package return %q", r.Kind)
	}
	if r.Signer != nil {
		if _, err := a.authenticate(ctx, append([]*x509.Certificate{r.Signer}, r.SignerCerts...), ""); err != nil {
			// RFC 8295 §5.2.2.
			return nil, errs.New(errs.Forbidden, "the signature of the %s does not validate back to an authorized trust anchor: %s",
				r.Kind, errs.Message(err))
		}
		if !bytes.Equal(r.Signer.Raw, who.leaf.Raw) {
			return nil, errs.New(errs.Forbidden, "the %s is signed by %s, not by the requester's own certificate", r.Kind, r.Signer.Subject)
		}
	}
	sp, err := a.returnedPackage(ctx, kind, r, who)
	if err != nil {
		return nil, err
	}
	id := sp.ID
	now := a.now()
	d := store.PackageDelivery{PackageID: id, ClientSerial: who.ours.Serial, ReturnKind: r.Kind, ErrorCode: r.ErrorCode,
		ReturnDER: r.DER, ReturnedAt: now}
	if err := a.store.ReturnPackage(ctx, d); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, errs.New(errs.Conflict, "package %d was never fetched by %s", id, who.describe())
		}
		return nil, errs.Wrap(errs.Internal, err, "recording the %s", r.Kind)
	}
	a.log.Info("package "+r.Kind, "kind", kind, "id", id, "client", who.ours.Serial, "error_code", r.ErrorCode, "addr", req.Addr)
	p := packageOf(sp)
	p.ReturnKind, p.ErrorCode, p.ReturnedAt = r.Kind, r.ErrorCode, now
	return p, nil
}

// returnedPackage finds the package a receipt or error names: for symmetric keys by the key
// package identifier of PackageID; for firmware by its firmware package identifier, among the
// packages queued for the client (newest first). It must be queued for the client.
func (a *Authority) returnedPackage(ctx context.Context, kind PackageKind, r PackageReturn, who identity) (*store.Package, error) {
	if kind == PackageFirmware || kind == PackageTAMP {
		ps, err := a.clientPackages(ctx, kind, who.ours)
		if err != nil {
			return nil, err
		}
		for i := len(ps) - 1; i >= 0; i-- {
			if ps[i].Name == string(r.PkgID) {
				return &store.Package{ID: ps[i].ID, Kind: string(ps[i].Kind), Target: ps[i].Target, Name: ps[i].Name,
					Content: ps[i].Content, CreatedAt: ps[i].CreatedAt, Forms: strings.Join(ps[i].Forms, ",")}, nil
			}
		}
		return nil, errs.New(errs.NotFound, "no %s package %q is queued for %s", kind, r.PkgID, who.describe())
	}
	id, ok := parsePackageID(kind, r.PkgID)
	if !ok {
		return nil, errs.New(errs.BadRequest, "the %s names no %s package of this server (key package identifier %q)", r.Kind, kind, r.PkgID)
	}
	sp, err := a.store.GetPackage(ctx, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && sp.Kind != string(kind)) {
		return nil, errs.New(errs.NotFound, "no %s package %d", kind, id)
	}
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "package %d", id)
	}
	if !targets(sp, who.ours) {
		a.log.Info("package return refused", "kind", kind, "id", id, "requester", who.describe())
		return nil, errs.New(errs.Forbidden, "package %d is not queued for %s", id, who.describe())
	}
	return sp, nil
}

// NextTAMPSequence returns the next TAMP sequence number (RFC 5934 TAMPMsgRef.seqNum: a trust
// anchor store accepts a signer's messages only with increasing sequence numbers); one counter
// for this server's signer, never reused.
func (a *Authority) NextTAMPSequence(ctx context.Context) (int64, error) {
	n, err := a.store.NextCounter(ctx, "tamp-seqnum")
	if err != nil {
		return 0, errs.Wrap(errs.Internal, err, "TAMP sequence number")
	}
	return n, nil
}

// String renders a package for logs and the CLI.
func (p *Package) String() string {
	return fmt.Sprintf("%s package %d %q for %s", p.Kind, p.ID, p.Name, p.Target)
}
