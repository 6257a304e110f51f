package authority

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"testing"

	"coapca/errs"
	"coapca/internal/testpki"
	"coapca/store"
)

// TestRegistrarDecisions: what a registrar asks (Authorize, RFC 9148 §5) is Issue's decision
// without a record, certificates of its upstream CA count for re-enrollment only through it,
// and an RA relays re-enrollments only where an ra rule admits it (RFC 7030 §3.7). Each
// refusal is written as the attack it stops.
func TestRegistrarDecisions(t *testing.T) {
	p := newPKI(t)
	s := p.openStore(t)
	a := p.authority(t, s, p.authzConfig(t))
	upstream := testpki.NewCA(t, "Upstream CA")
	upDev := upstream.Device(t, "dev-1", "").Cert
	devA := p.idevid(t, p.mfrA, "A-1", p.now.AddDate(0, 0, -1), noExpiry())
	ra, notRA := p.raCert(t, true), p.raCert(t, false)
	cn := func(s string) csrOpts { return csrOpts{subject: pkix.Name{CommonName: s}} }

	type step struct {
		name      string
		authorize bool // Authorize instead of Issue
		op        Op
		label     string
		req       Requester
		csr       csrOpts
		link      Linking
		kind      errs.Kind
		ok        bool
	}
	run := func(t *testing.T, tt step) {
		csr, _ := mkCSR(t, tt.csr)
		before, _ := s.ListCerts(ctx, store.CertFilter{})
		r := CertRequest{Op: tt.op, Label: tt.label, CSR: csr, Requester: tt.req, Link: tt.link}
		var err error
		if tt.authorize {
			_, err = a.Authorize(ctx, r)
		} else {
			_, err = a.Issue(ctx, r)
		}
		wantKind(t, err, tt.kind, tt.ok)
		after, _ := s.ListCerts(ctx, store.CertFilter{})
		if want := len(before); (tt.authorize || !tt.ok) && len(after) != want {
			t.Fatalf("recorded a certificate (%d → %d)", want, len(after))
		}
	}
	t.Run("before the upstream is known", func(t *testing.T) {
		run(t, step{authorize: true, op: OpReenroll, req: est(upDev), csr: cn("dev-1"), kind: errs.Unauthorized})
	})
	a.SetUpstreamCAs(upstream.Chain)
	for _, tt := range []step{
		{name: "the upstream's certificate renews through the registrar", authorize: true, op: OpReenroll, req: est(upDev),
			csr: cn("dev-1"), ok: true},
		{name: "attack: the upstream's certificate renews into another name", authorize: true, op: OpReenroll, req: est(upDev),
			csr: cn("dev-2"), kind: errs.Forbidden},
		{name: "attack: the upstream's certificate enrolls as an IDevID of every store (\"*\")", authorize: true, op: OpEnroll,
			label: "linked", req: est(upDev), csr: cn("dev-1"), link: LinkMatched, kind: errs.Forbidden},
		{name: "attack: the upstream's certificate renews at this CA (CMP kur beside a registrar)", op: OpReenroll, req: est(upDev),
			csr: cn("dev-1"), kind: errs.Forbidden},
		{name: "attack: a relayed PoP link the registrar did not check", authorize: true, op: OpEnroll, req: est(devA),
			csr: cn("x"), link: LinkMismatched, kind: errs.BadRequest},
		{name: "an IDevID the profile admits", authorize: true, op: OpEnroll, req: est(devA), csr: cn("x"), ok: true},
		{name: "server-side key generation is decided without a key", authorize: true, op: OpServerKeyGen, req: est(devA),
			csr: cn("x"), ok: true},
		{name: "an RA relays a device's re-enrollment (RFC 7030 §3.7)", op: OpReenroll, req: est(ra), csr: cn("dev-9"),
			link: LinkMismatched, ok: true},
		{name: "attack: a certificate without id-kp-cmcRA relays a re-enrollment", op: OpReenroll, req: est(notRA),
			csr: cn("dev-9"), kind: errs.Forbidden},
		{name: "attack: an RA relays a re-enrollment where no ra rule admits it", op: OpReenroll, label: "servers", req: est(ra),
			csr: cn("dev-9"), kind: errs.Forbidden},
	} {
		t.Run(tt.name, func(t *testing.T) { run(t, tt) })
	}
	a.SetUpstreamCAs(nil)
	t.Run("after the upstream is forgotten", func(t *testing.T) {
		run(t, step{authorize: true, op: OpReenroll, req: est(upDev), csr: cn("dev-1"), kind: errs.Unauthorized})
	})
}

// TestUpstreamNameReserved: no trust store may take the upstream's source name.
func TestUpstreamNameReserved(t *testing.T) {
	p := newPKI(t)
	pol := p.authzConfig(t)
	pol.TrustStores = append(pol.TrustStores, TrustStore{Name: CANameUpstream, Roots: []*x509.Certificate{p.mfrA.Cert}})
	if _, err := New(pol, p.options(p.openStore(t))); err == nil {
		t.Fatal("a trust store named \"upstream\" was accepted")
	}
}
