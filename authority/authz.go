package authority

import (
	"context"
	"slices"
	"strings"

	"coapca/errs"
	"coapca/store"
)

// This file is the one place where coapca decides what an authenticated requester may do: the
// matrix of docs/security.md. Front doors describe the requester (Requester) and what their
// transport proved (CertRequest.Link, RAVerified); they decide nothing themselves.

// ErrRAVerifiedNotRA refuses a CMP raVerified proof-of-possession from a requester that is not
// an authorized RA (CMP answers it with failInfo badPOP).
var ErrRAVerifiedNotRA = errs.New(errs.Forbidden, "raVerified proof-of-possession is accepted only from an authorized RA")

// authorize authenticates r's requester and decides whether it may do r.Op under profile p.
// On success the identity carries the kind and rule that admitted it and the origin recorded
// with the new certificate.
func (a *Authority) authorize(ctx context.Context, r CertRequest, p *Profile) (identity, error) {
	who, err := a.authenticateRequester(ctx, r.Requester)
	if err != nil {
		return who, err
	}
	switch r.Op {
	case OpEnroll, OpServerKeyGen:
		// RFC 9200 §5.10.1.1: the RS enforces the access rights of the token; its scope names
		// the labels and operations (see ace.ParseScope) and nothing outside it is granted.
		if who.token != nil && !who.token.covers(p.Label, r.Op) {
			return who, errs.New(errs.Forbidden, "%s does not grant %s under label %q", who.describe(), r.Op, p.Label)
		}
		rl := a.match(p, r.Requester.Transport, who)
		if rl == nil {
			return who, errs.New(errs.Forbidden, "%s may not enroll under label %q", who.describe(), p.Label)
		}
		who.rule, who.kind = rl, rl.kind
		who.origin = who.originFor(rl.kind)
	case OpReenroll:
		// RFC 7030 §4.2.2, RFC 9483 §4.1.3: re-enrollment renews a certificate this CA issued,
		// authenticated with that very certificate.
		if who.ours == nil && who.source == CANameUpstream {
			// RFC 9148 §5: a registrar's devices renew certificates its upstream CA issued;
			// the upstream, which knows their labels, decides the rest. The subject and SAN
			// must still be kept (template, KindLDevID).
			who.kind, who.origin = KindLDevID, CANameUpstream
			break
		}
		if who.ours == nil {
			// RFC 7030 §3.7, RFC 9148 §5: a registrar (an RA) relays a device's re-enrollment;
			// it authenticated the device with the certificate being renewed and checked that
			// the CSR keeps its subject and SAN. Only an RA an ra rule admits is believed.
			if rl := a.match(p, r.Requester.Transport, who); rl != nil && rl.kind == KindRA {
				who.rule, who.kind = rl, KindRA
				who.origin = who.originFor(KindRA)
				break
			}
			return who, errs.New(errs.Forbidden, "re-enrollment requires a certificate issued by this CA")
		}
		who.kind = KindLDevID
		who.origin = who.ours.RequesterRef
		if who.origin == "" {
			who.origin = CANameOurs
		}
		if old := who.ours.Label; old != p.Label {
			// A certificate stays within the label (and so the trust decision) it was issued
			// under, unless this profile explicitly takes certificates of that label and would
			// have admitted the certificate's original requester itself.
			if !slices.Contains(p.reenrollFrom, old) {
				return who, errs.New(errs.Forbidden, "a certificate issued under label %q may not re-enroll under label %q", old, p.Label)
			}
			if !a.admitsOrigin(p, r.Requester.Transport, who.origin, old) {
				return who, errs.New(errs.Forbidden, "label %q does not admit the original requester (%s) of this certificate", p.Label, who.origin)
			}
		}
	default:
		return who, errs.New(errs.BadRequest, "unknown operation %q", r.Op)
	}

	ra := who.kind == KindRA
	// RFC 7030 §3.5, RFC 9148 §3: a challengePassword MUST match the session's channel binding.
	// RFC 7030 §3.7: an authorized RA terminated the device's session and linked the CSR
	// there, so its own session's binding cannot match; only an RA is excused.
	switch r.Link {
	case LinkMismatched:
		if !ra {
			return who, errs.New(errs.BadRequest, "the CSR's challengePassword does not match this session's channel binding "+
				"(tls-unique, tls-exporter or edhoc-unique): the CSR was not made for this session (RFC 7030 §3.5, RFC 9148 §3)")
		}
	case LinkAbsent:
		if p.RequirePoP && !ra {
			return who, errs.New(errs.BadRequest, "this profile requires proof-of-possession linking: put the connection's "+
				"tls-unique (base64) in the CSR's challengePassword (RFC 7030 §3.5, RFC 9148 §3)")
		}
	}
	// RFC 4211 §4.3, RFC 9483 §5.2: raVerified is an RA's statement; nobody else may make it.
	if r.RAVerified && !ra {
		return who, ErrRAVerifiedNotRA
	}
	return who, nil
}

// match returns the first requester rule of p that admits who over transport t, RA rules
// first (an RA's certificate may also chain to a store an idevid rule names).
func (a *Authority) match(p *Profile, t Transport, who identity) *rule {
	for _, pass := range []bool{true, false} {
		for _, rl := range p.rules {
			if (rl.kind == KindRA) != pass || !rl.admitsTransport(t) {
				continue
			}
			if a.ruleAdmits(rl, p.Label, who) {
				return rl
			}
		}
	}
	return nil
}

func (a *Authority) ruleAdmits(rl *rule, label string, who identity) bool {
	switch rl.kind {
	case KindRA:
		return who.leaf != nil && hasCmcRA(who.leaf) && rl.admits(who.source)
	case KindIDevID:
		return who.leaf != nil && who.source != CANameOurs && rl.admits(who.source)
	case KindLDevID:
		return who.ours != nil && (slices.Contains(rl.from, "*") || slices.Contains(rl.from, who.ours.Label))
	case KindMAC:
		return who.secretRef != "" && rl.admits(who.secretRef)
	case KindUser:
		return who.user != "" && rl.admits(who.user)
	case KindToken:
		return who.token != nil && rl.admits(who.token.Issuer)
	case KindPreShared:
		if who.preShared == "" || !rl.admits(who.preShared) {
			return false
		}
		// The identity's own registration may narrow its labels further (--oscore-context).
		a.psMu.RLock()
		labels := a.preShared[who.preShared]
		a.psMu.RUnlock()
		return len(labels) == 0 || slices.Contains(labels, label)
	}
	return false
}

// admitsOrigin reports whether p has a rule that would admit the original requester of a
// certificate (its recorded origin) issued under label old.
func (a *Authority) admitsOrigin(p *Profile, t Transport, origin, old string) bool {
	kind, src, _ := strings.Cut(origin, ":")
	for _, rl := range p.rules {
		if !rl.admitsTransport(t) {
			continue
		}
		switch {
		case kind == "ts" && rl.kind == KindIDevID,
			kind == "mac" && rl.kind == KindMAC,
			kind == "psk" && rl.kind == KindPreShared,
			kind == "ra" && rl.kind == KindRA,
			kind == "user" && rl.kind == KindUser:
			if rl.admits(src) {
				return true
			}
		case kind == "token" && rl.kind == KindToken:
			// A token rule names the AS (From), not AS/SUBJECT: the AS is the original requester's
			// trust decision.
			if rl.admits(strings.SplitN(src, "/", 2)[0]) {
				return true
			}
		case kind == CANameOurs && rl.kind == KindLDevID:
			if slices.Contains(rl.from, "*") || slices.Contains(rl.from, old) {
				return true
			}
		}
	}
	return false
}

// originFor is the origin recorded with a certificate enrolled by who as kind k: the kind and
// source that vouched for it, in separate namespaces ("ts:STORE", "ra:STORE", "mac:REF",
// "psk:NAME"), or for an LDevID the origin of the certificate it presented.
func (w identity) originFor(k Kind) string {
	switch k {
	case KindIDevID:
		return "ts:" + w.source
	case KindRA:
		return "ra:" + w.source
	case KindMAC:
		return "mac:" + w.secretRef
	case KindPreShared:
		return "psk:" + w.preShared
	case KindUser:
		return "user:" + w.user
	case KindToken:
		if w.token != nil {
			return "token:" + w.token.Issuer + "/" + w.token.Subject
		}
	case KindLDevID:
		if w.ours != nil && w.ours.RequesterRef != "" {
			return w.ours.RequesterRef
		}
		return CANameOurs
	}
	return ""
}

func (w identity) describe() string {
	switch {
	case w.leaf != nil && w.ours != nil:
		return "the certificate " + w.ours.Serial + " issued by this CA under label \"" + w.ours.Label + "\""
	case w.leaf != nil && hasCmcRA(w.leaf):
		return "the RA certificate " + w.leaf.Subject.String() + " (trust store " + w.source + ")"
	case w.leaf != nil:
		return "a device certificate of trust store " + w.source
	case w.secretRef != "":
		return "the MAC secret " + w.secretRef
	case w.preShared != "":
		return "the pre-shared identity " + w.preShared
	case w.user != "":
		return "the user " + w.user
	case w.token != nil:
		return "the access token of " + w.token.Subject + " from " + w.token.Issuer
	}
	return "an anonymous requester"
}

// RevokeAs revokes the certificate with that serial on behalf of a requester (CMP rr,
// RFC 9483 §4.2), after deciding that it may: the certificate's own key (the requester's
// certificate is the one to revoke), an RA admitted with may_revoke by the certificate's
// profile, or a MAC secret admitted with may_revoke, only for certificates enrolled with that
// very secret. Operators revoke with Revoke. Errors as Revoke, plus errs.Unauthorized and
// errs.Forbidden.
func (a *Authority) RevokeAs(ctx context.Context, req Requester, serial string, reason int) error {
	sn, err := store.NormalizeSerial(serial)
	if err != nil {
		return errs.Wrap(errs.BadRequest, err, "bad serial number %q", serial)
	}
	who, err := a.authenticateRequester(ctx, req)
	if err != nil {
		return err
	}
	rec, err := a.storedCert(ctx, sn)
	if err != nil {
		return err
	}
	if err := a.mayRevoke(req.Transport, who, rec); err != nil {
		a.log.Info("revocation refused", "serial", sn, "requester", who.String(), "error", errs.Message(err))
		return err
	}
	return a.Revoke(ctx, sn, reason)
}

func (a *Authority) mayRevoke(t Transport, who identity, rec *store.Cert) error {
	if who.leaf != nil && who.ours != nil && who.ours.Serial == rec.Serial {
		return nil // RFC 9483 §4.2: signed with the key of the certificate to be revoked
	}
	p := a.profiles[rec.Label]
	if p != nil {
		for _, rl := range p.rules {
			if !rl.mayRevoke || !rl.admitsTransport(t) {
				continue
			}
			switch rl.kind {
			case KindRA:
				if a.ruleAdmits(rl, rec.Label, who) {
					return nil
				}
			case KindMAC:
				if a.ruleAdmits(rl, rec.Label, who) && rec.RequesterRef == "mac:"+who.secretRef {
					return nil
				}
			}
		}
	}
	return errs.New(errs.Forbidden, "%s may not revoke certificate %s: only its own key, an authorized RA or the operator may", who.describe(), rec.Serial)
}

// The package operations of RFC 8295 (/pal, /symmetrickeys, /firmware, /tamp and their
// returns; packages.go) are decided here: who is a package client, and which packages are its.

// packageClient authenticates a requester of the package operations. RFC 8295 §5, §6, §7: "The
// server MUST authenticate the client, and the server MUST check the client's authorization."
// coapca delivers packages only to a client that authenticates with a current certificate of
// this CA: the packages are encrypted to that certificate, and targeted by it. The client asks
// under the label its certificate was issued under, so that a label's front door (and its
// operator) sees only its own clients.
func (a *Authority) packageClient(ctx context.Context, req Requester, label string) (identity, error) {
	if _, ok := a.profiles[label]; !ok {
		return identity{}, errs.New(errs.NotFound, "unknown label %q", label)
	}
	who, err := a.authenticateRequester(ctx, req)
	if err != nil {
		return who, err
	}
	if who.leaf == nil || who.ours == nil {
		a.log.Info("package request refused", "requester", who.describe(), "addr", req.Addr)
		return who, errs.New(errs.Forbidden, "%s holds no certificate of this CA: packages are delivered only to clients "+
			"authenticated with one (RFC 8295 §5, §6, §7)", who.describe())
	}
	if who.ours.Label != label {
		a.log.Info("package request refused", "requester", who.describe(), "label", label, "addr", req.Addr)
		return who, errs.New(errs.Forbidden, "%s asks under label %q: its packages are served under its own label %q",
			who.describe(), label, who.ours.Label)
	}
	return who, nil
}

// targets reports whether package p is for the client holding certificate rec.
func targets(p *store.Package, rec *store.Cert) bool {
	how, what, _ := strings.Cut(p.Target, ":")
	switch how {
	case "serial":
		return what == rec.Serial
	case "subject":
		return what == rec.Subject
	case "label":
		return what == rec.Label
	}
	return false
}

// The forms of a symmetric key package (RFC 8295 §5.1.2), by the names est.SymKeyEncapsulation
// gives them.
const (
	SymKeyFormSignedEnvelopedSigned = "signed-enveloped-signed"
	SymKeyFormEnveloped             = "enveloped"
	SymKeyFormEncryptedKeyPackage   = "encrypted-key-package"
	SymKeyFormSigned                = "signed"
	SymKeyFormPlain                 = "plain"
)

// SymKeyForms returns every symmetric key form, in the server's preference (used when the
// client names none): those that encrypt for the client first.
func SymKeyForms() []string {
	return []string{SymKeyFormSignedEnvelopedSigned, SymKeyFormEnveloped, SymKeyFormEncryptedKeyPackage, SymKeyFormSigned, SymKeyFormPlain}
}

// DefaultSymKeyForms returns the forms a symmetric key package may be delivered in when the
// operator said nothing: those that encrypt the key for the client's certificate. RFC 8295
// §5.1: "It is strongly RECOMMENDED that servers always return encrypted symmetric keys"; the
// plain and signed forms are protected by TLS only, and the operator must allow them by name.
func DefaultSymKeyForms() []string {
	return []string{SymKeyFormSignedEnvelopedSigned, SymKeyFormEnveloped, SymKeyFormEncryptedKeyPackage}
}

// canonicalSymKeyForms checks the forms the operator allows for a package of kind and returns
// them as stored: "" for the default (none given), else comma-separated in SymKeyForms order.
// "all" stands for every form. Only symmetric key packages have forms.
func canonicalSymKeyForms(kind PackageKind, forms []string) (string, error) {
	if len(forms) == 0 {
		return "", nil
	}
	if kind != PackageSymmetricKeys {
		return "", errs.New(errs.BadRequest, "only symmetric key packages have delivery forms, not %s packages", kind)
	}
	want := map[string]bool{}
	for _, f := range forms {
		f = strings.TrimSpace(f)
		switch {
		case f == "all":
			for _, g := range SymKeyForms() {
				want[g] = true
			}
		case slices.Contains(SymKeyForms(), f):
			want[f] = true
		default:
			return "", errs.New(errs.BadRequest, "unknown symmetric key form %q (%s, or all)", f, strings.Join(SymKeyForms(), ", "))
		}
	}
	var out []string
	for _, f := range SymKeyForms() {
		if want[f] {
			out = append(out, f)
		}
	}
	return strings.Join(out, ","), nil
}

// allowedForms returns the forms the operator allows the package to be delivered in under a
// label whose profile limits them to limit (nil: no limit): the package's forms (AddPackage;
// DefaultSymKeyForms when it named none) that the label allows.
func (p *Package) allowedForms(limit []string) []string {
	forms := p.Forms
	if len(forms) == 0 {
		forms = DefaultSymKeyForms()
	}
	if limit == nil {
		return forms
	}
	var out []string
	for _, f := range forms {
		if slices.Contains(limit, f) {
			out = append(out, f)
		}
	}
	return out
}

// symKeyForm decides the form symmetric key package p is delivered in to a client taking
// f.Forms (or any form) under a label whose profile limits the forms to limit: the client's
// first preference that the operator allows for p (AddPackage forms, by default only the forms
// that encrypt for the client) and for the label (the profile's symmetric_key_forms). RFC 8295
// §5.1.2 lists the forms; which one a client gets is the server's decision ("how the server
// knows" is out of scope there), and a form the operator did not allow is never delivered,
// whatever the client asks.
func symKeyForm(p *Package, f PackageFetch, limit []string) (string, bool) {
	allowed := p.allowedForms(limit)
	prefs := f.Forms
	if f.AnyForm {
		prefs = SymKeyForms()
	}
	for _, want := range prefs {
		if slices.Contains(allowed, want) {
			return want, true
		}
	}
	return "", false
}
