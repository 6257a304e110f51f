package authority

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"coapca/errs"
	"coapca/internal/testpki"
	"coapca/store"
)

var ctx = context.Background()

func est(chain ...*x509.Certificate) Requester {
	return Requester{Chain: chain, Transport: TransportCoAPS, Protocol: ProtocolEST, Addr: "[::1]:5000"}
}

func wantKind(t *testing.T, err error, want errs.Kind, ok bool) {
	t.Helper()
	if ok {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("no error, want %v", want)
	}
	if got := errs.KindOf(err); got != want {
		t.Fatalf("error kind %v (%v), want %v", got, err, want)
	}
}

// enrolled issues an LDevID for the device identity idev (through the default profile).
func enrolled(t *testing.T, a *Authority, idev *x509.Certificate, subject pkix.Name, dns ...string) (*Issued, crypto.Signer) {
	t.Helper()
	csr, k := mkCSR(t, csrOpts{subject: subject, dns: dns})
	iss, err := a.Issue(ctx, CertRequest{Op: OpEnroll, CSR: csr, Requester: est(idev)})
	if err != nil {
		t.Fatal(err)
	}
	return iss, k
}

func TestEnrollPolicy(t *testing.T) {
	p := newPKI(t)
	s := p.openStore(t)
	a := p.authority(t, s, p.config())
	now := p.now
	devA := p.idevid(t, p.mfrA, "A-1", now.AddDate(-1, 0, 0), noExpiry())
	devB := p.idevid(t, p.mfrB, "B-1", now.AddDate(-1, 0, 0), noExpiry())
	expiredA := p.idevid(t, p.mfrA, "A-old", now.AddDate(-3, 0, 0), now.AddDate(-1, 0, 0))
	expiredB := p.idevid(t, p.mfrB, "B-old", now.AddDate(-3, 0, 0), now.AddDate(-1, 0, 0))
	futureB := p.idevid(t, p.mfrB, "B-future", now.AddDate(1, 0, 0), now.AddDate(3, 0, 0))
	other := testpki.NewCA(t, "Unknown Manufacturer")
	devOther := p.idevid(t, other, "X-1", now.Add(-time.Hour), now.AddDate(1, 0, 0))
	ldev, _ := enrolled(t, a, devA, pkix.Name{CommonName: "dev-1"})
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 1024)

	name := func(cn string) pkix.Name { return pkix.Name{CommonName: cn} }
	tests := []struct {
		name      string
		label     string
		req       Requester
		csr       csrOpts
		op        Op
		kind      errs.Kind
		ok        bool
		subject   string // expected issued subject
		dnsWanted []string
	}{
		{name: "IDevID from trusted manufacturer", req: est(devA), csr: csrOpts{subject: name("dev-1")}, ok: true,
			subject: "SERIALNUMBER=A-1,CN=dev-1"},
		{name: "serialNumber in CSR replaced by the IDevID's", req: est(devA),
			csr: csrOpts{subject: pkix.Name{CommonName: "dev-1", SerialNumber: "forged"}}, ok: true, subject: "SERIALNUMBER=A-1,CN=dev-1"},
		{name: "serialNumber kept where the CSR has the right one", req: est(devA),
			csr: csrOpts{subject: pkix.Name{CommonName: "dev-1", SerialNumber: "A-1"}}, ok: true, subject: "SERIALNUMBER=A-1,CN=dev-1"},
		{name: "no client certificate", req: est(), csr: csrOpts{subject: name("x")}, kind: errs.Unauthorized},
		{name: "untrusted manufacturer", req: est(devOther), csr: csrOpts{subject: name("x")}, kind: errs.Unauthorized},
		{name: "expired IDevID, store without allow_expired", req: est(expiredA), csr: csrOpts{subject: name("x")}, kind: errs.Unauthorized},
		{name: "expired IDevID, store with allow_expired", req: est(expiredB), csr: csrOpts{subject: name("x")}, ok: true,
			subject: "SERIALNUMBER=B-old,CN=x"},
		{name: "not yet valid IDevID, even with allow_expired", req: est(futureB), csr: csrOpts{subject: name("x")}, kind: errs.Unauthorized},
		{name: "IDevID with chain sent along", req: est(devB, p.mfrB.Cert), csr: csrOpts{subject: name("x")}, ok: true, subject: "SERIALNUMBER=B-1,CN=x"},
		// Attack 5: an LDevID counted as an enrollment identity for any subject.
		{name: "attack: our own LDevID enrolls another subject", req: est(ldev.Cert), csr: csrOpts{subject: name("dev-1b")}, kind: errs.Forbidden},
		{name: "MAC secret", req: Requester{SecretRef: "demo", Protocol: ProtocolCMP}, csr: csrOpts{subject: pkix.Name{CommonName: "m"}},
			ok: true, subject: "CN=m"},
		// Attack 5: a MAC holder claimed another device's serialNumber.
		{name: "attack: MAC secret claims a device serialNumber", req: Requester{SecretRef: "demo", Protocol: ProtocolCMP},
			csr: csrOpts{subject: pkix.Name{CommonName: "m", SerialNumber: "A-1"}}, kind: errs.Forbidden},
		{name: "attack: wildcard DNS SAN", req: est(devA), csr: csrOpts{subject: name("dev-1"), dns: []string{"*.bank.example"}}, kind: errs.BadRequest},
		{name: "attack: arbitrary subject attribute", req: est(devA),
			csr: csrOpts{subject: pkix.Name{CommonName: "dev-1", ExtraNames: []pkix.AttributeTypeAndValue{{Type: []int{1, 2, 3, 4}, Value: "x"}}}}, kind: errs.BadRequest},
		{name: "attack: CN pattern without a CN", label: "strict", req: est(devA), csr: csrOpts{subject: pkix.Name{Country: []string{"DE"}}, dns: []string{"d.example"}}, kind: errs.BadRequest},
		{name: "unknown MAC secret", req: Requester{SecretRef: "nope", Protocol: ProtocolCMP}, csr: csrOpts{subject: name("m")}, kind: errs.Unauthorized},
		{name: "unknown label", label: "nope", req: est(devA), csr: csrOpts{subject: name("x")}, kind: errs.NotFound},
		{name: "profile restricted to another trust store", label: "only-a", req: est(devB), csr: csrOpts{subject: name("x")}, kind: errs.Forbidden},
		{name: "profile restricted to this trust store", label: "only-a", req: est(devA), csr: csrOpts{subject: name("x")}, ok: true, subject: "CN=x"},
		{name: "strict: good", label: "strict", req: est(devA), csr: csrOpts{subject: pkix.Name{CommonName: "dev-42", Organization: []string{"Evil"}},
			dns: []string{"d.example"}}, ok: true, subject: "CN=dev-42,O=Acme", dnsWanted: []string{"d.example"}},
		{name: "strict: CN pattern", label: "strict", req: est(devA), csr: csrOpts{subject: name("device-42")}, kind: errs.BadRequest},
		{name: "strict: CN required", label: "strict", req: est(devA), csr: csrOpts{subject: pkix.Name{Organization: []string{"x"}}}, kind: errs.BadRequest},
		{name: "strict: DNS pattern", label: "strict", req: est(devA), csr: csrOpts{subject: name("dev-1"), dns: []string{"evil.com"}}, kind: errs.BadRequest},
		{name: "strict: email SAN not allowed", label: "strict", req: est(devA), csr: csrOpts{subject: name("dev-1"), emails: []string{"a@b.example"}}, kind: errs.BadRequest},
		{name: "nosan: SAN refused", label: "nosan", req: est(devA), csr: csrOpts{subject: name("x"), dns: []string{"x.example"}}, kind: errs.BadRequest},
		{name: "small RSA key", req: est(devA), csr: csrOpts{subject: name("x"), key: rsaKey}, kind: errs.BadRequest},
		{name: "empty subject and no SAN", label: "only-a", req: est(devA), csr: csrOpts{}, kind: errs.BadRequest},
		{name: "unknown op", op: "explode", req: est(devA), csr: csrOpts{subject: name("x")}, kind: errs.BadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			csr, k := mkCSR(t, tt.csr)
			op := tt.op
			if op == "" {
				op = OpEnroll
			}
			iss, err := a.Issue(ctx, CertRequest{Op: op, Label: tt.label, CSR: csr, Requester: tt.req})
			wantKind(t, err, tt.kind, tt.ok)
			if !tt.ok {
				return
			}
			if got := iss.Cert.Subject.String(); got != tt.subject {
				t.Errorf("subject %q, want %q", got, tt.subject)
			}
			if !iss.Cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(k.Public()) {
				t.Error("certificate is not for the CSR's key")
			}
			if fmt.Sprint(iss.Cert.DNSNames) != fmt.Sprint(tt.dnsWanted) && tt.dnsWanted != nil {
				t.Errorf("DNS names %v, want %v", iss.Cert.DNSNames, tt.dnsWanted)
			}
			checkIssued(t, p, s, iss, tt.req)
		})
	}
}

func noExpiry() time.Time { return time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC) }

// checkIssued verifies the certificate against our root and its record in the store.
func checkIssued(t *testing.T, p *testPKI, s store.Store, iss *Issued, req Requester) {
	t.Helper()
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(p.root.Cert)
	inter.AddCert(p.issuing.Cert)
	if _, err := iss.Cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("issued certificate does not verify: %v", err)
	}
	if iss.Cert.SerialNumber.Sign() <= 0 || iss.Cert.SerialNumber.BitLen() > 128 || len(iss.Cert.SubjectKeyId) != 20 {
		t.Errorf("serial %x / SKI %x", iss.Cert.SerialNumber, iss.Cert.SubjectKeyId)
	}
	if len(iss.Chain) != 2 || !iss.Chain[0].Equal(p.issuing.Cert) {
		t.Error("chain is not issuing CA, root")
	}
	rec, err := s.Cert(ctx, iss.Serial)
	if err != nil {
		t.Fatalf("certificate not recorded: %v", err)
	}
	wantRef := "ts:"
	if req.SecretRef != "" {
		wantRef = "mac:" + req.SecretRef
	}
	if !bytes.Equal(rec.DER, iss.Cert.Raw) || rec.Protocol != req.Protocol.String() || rec.Transport != req.Transport.String() ||
		rec.RequesterAddr != req.Addr || !strings.HasPrefix(rec.RequesterRef, wantRef) {
		t.Errorf("record %+v", rec)
	}
	// The record describes exactly the certificate sent (the names are formatted from the
	// requester's or the CA's identical DER where possible, Authority.names).
	if rec.Subject != iss.Cert.Subject.String() || rec.Issuer != iss.Cert.Issuer.String() ||
		!rec.NotBefore.Equal(iss.Cert.NotBefore) || !rec.NotAfter.Equal(iss.Cert.NotAfter) ||
		rec.Serial != store.FormatSerial(iss.Cert.SerialNumber) || rec.Serial != iss.Serial {
		t.Errorf("record %+v does not describe the issued certificate %s (issuer %s)", rec, iss.Cert.Subject, iss.Cert.Issuer)
	}
	if len(req.Chain) > 0 && (rec.RequesterSubject != req.Chain[0].Subject.String() ||
		rec.RequesterSerial != store.FormatSerial(req.Chain[0].SerialNumber) || rec.RequesterIssuer != req.Chain[0].Issuer.String()) {
		t.Errorf("requester identity not recorded: %+v", rec)
	}
}

func TestReenroll(t *testing.T) {
	p := newPKI(t)
	s := p.openStore(t)
	a := p.authority(t, s, p.config())
	dev := p.idevid(t, p.mfrA, "A-7", p.now.Add(-time.Hour), noExpiry())
	subj := pkix.Name{CommonName: "dev-7"}
	ldev, _ := enrolled(t, a, dev, subj, "dev7.example")
	revoked, _ := enrolled(t, a, dev, subj, "dev7.example")
	if err := a.Revoke(ctx, revoked.Serial, ReasonSuperseded); err != nil {
		t.Fatal(err)
	}
	// Signed by our issuing CA but never recorded: not a certificate we issued.
	forged := p.issuing.Issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "dev-7", SerialNumber: "A-7"},
		NotBefore: p.now.Add(-time.Hour), NotAfter: p.now.Add(time.Hour), DNSNames: []string{"dev7.example"}},
		testpki.NewKey(t).Public())
	full := pkix.Name{CommonName: "dev-7", SerialNumber: "A-7"}

	tests := []struct {
		name string
		req  Requester
		csr  csrOpts
		kind errs.Kind
		ok   bool
	}{
		{"same subject and SAN, new key", est(ldev.Cert), csrOpts{subject: subj, dns: []string{"dev7.example"}}, 0, true},
		{"subject copied in full from the old certificate", est(ldev.Cert, p.issuing.Cert), csrOpts{subject: full, dns: []string{"dev7.example"}}, 0, true},
		{"subject mismatch", est(ldev.Cert), csrOpts{subject: pkix.Name{CommonName: "dev-8"}, dns: []string{"dev7.example"}}, errs.Forbidden, false},
		{"extra subject attribute", est(ldev.Cert), csrOpts{subject: pkix.Name{CommonName: "dev-7", Organization: []string{"x"}}, dns: []string{"dev7.example"}}, errs.Forbidden, false},
		{"SAN mismatch", est(ldev.Cert), csrOpts{subject: subj, dns: []string{"other.example"}}, errs.Forbidden, false},
		{"SAN missing", est(ldev.Cert), csrOpts{subject: subj}, errs.Forbidden, false},
		{"IDevID is not our certificate", est(dev), csrOpts{subject: subj, dns: []string{"dev7.example"}}, errs.Forbidden, false},
		{"not recorded by us", est(forged), csrOpts{subject: subj, dns: []string{"dev7.example"}}, errs.Forbidden, false},
		{"revoked", est(revoked.Cert), csrOpts{subject: subj, dns: []string{"dev7.example"}}, errs.Forbidden, false},
		{"no client certificate", est(), csrOpts{subject: subj}, errs.Unauthorized, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			csr, _ := mkCSR(t, tt.csr)
			iss, err := a.Issue(ctx, CertRequest{Op: OpReenroll, CSR: csr, Requester: tt.req})
			wantKind(t, err, tt.kind, tt.ok)
			if tt.ok {
				if iss.Cert.Subject.String() != ldev.Cert.Subject.String() {
					t.Errorf("subject %s, want %s", iss.Cert.Subject, ldev.Cert.Subject)
				}
				checkIssued(t, p, s, iss, tt.req)
			}
		})
	}
}

func TestServerKeyGen(t *testing.T) {
	p := newPKI(t)
	s := p.openStore(t)
	a := p.authority(t, s, p.config())
	dev := p.idevid(t, p.mfrA, "A-9", p.now.Add(-time.Hour), noExpiry())
	csr, _ := mkCSR(t, csrOpts{subject: pkix.Name{CommonName: "skg"}})
	gen := testpki.NewKey(t)
	iss, err := a.Issue(ctx, CertRequest{Op: OpServerKeyGen, CSR: csr, PublicKey: gen.Public(), Requester: est(dev)})
	if err != nil {
		t.Fatal(err)
	}
	if !iss.Cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(gen.Public()) {
		t.Error("certificate is not for the generated key")
	}
	_, err = a.Issue(ctx, CertRequest{Op: OpServerKeyGen, CSR: csr, Requester: est(dev)})
	wantKind(t, err, errs.Internal, false)
}

func TestManualApproval(t *testing.T) {
	p := newPKI(t)
	s := p.openStore(t)
	a := p.authority(t, s, p.config())
	dev := p.idevid(t, p.mfrA, "A-3", p.now.Add(-time.Hour), noExpiry())
	csr, _ := mkCSR(t, csrOpts{subject: pkix.Name{CommonName: "dev-3"}})
	req := CertRequest{Op: OpEnroll, Label: "manual", CSR: csr, Requester: est(dev)}

	_, err := a.Issue(ctx, req)
	e := errs.As(err)
	if e == nil || e.Kind != errs.Pending || e.ID == "" || e.RetryAfter != 42*time.Second {
		t.Fatalf("first request: %v, want pending with retry 42s", err)
	}
	id := e.ID
	// The same request from another address: same pending entry.
	req2 := req
	req2.Requester.Addr = "192.0.2.1:7"
	_, err = a.Issue(ctx, req2)
	if e := errs.As(err); e == nil || e.Kind != errs.Pending || e.ID != id {
		t.Fatalf("resend: %v, want pending %s", err, id)
	}
	// Another CSR (or another requester) is another request.
	csrB, _ := mkCSR(t, csrOpts{subject: pkix.Name{CommonName: "dev-3"}})
	_, err = a.Issue(ctx, CertRequest{Op: OpEnroll, Label: "manual", CSR: csrB, Requester: est(dev)})
	if e := errs.As(err); e == nil || e.Kind != errs.Pending || e.ID == id {
		t.Fatalf("other CSR: %v, want a new pending ID", err)
	}
	idB := errs.As(err).ID

	// Restart: reopen the database and build a new authority; the CLI approves through its own handle.
	s.Close()
	s = p.openStore(t)
	a = p.authority(t, s, p.config())
	cli := p.openStore(t)
	cliAuth := p.authority(t, cli, p.config())
	if pend, err := a.PendingRequest(ctx, id); err != nil || pend.Status != StatusPending || pend.Subject != "CN=dev-3" {
		t.Fatalf("pending after restart: %+v, %v", pend, err)
	}
	if err := cliAuth.Approve(ctx, id); err != nil {
		t.Fatal(err)
	}
	iss, err := a.Issue(ctx, req)
	if err != nil {
		t.Fatalf("resend after approval: %v", err)
	}
	if iss.PendingID != id {
		t.Errorf("PendingID = %q", iss.PendingID)
	}
	checkIssued(t, p, s, iss, req.Requester)
	pend, _ := a.PendingRequest(ctx, id)
	if pend.Status != StatusIssued || pend.CertSerial != iss.Serial {
		t.Errorf("pending after issue: %+v", pend)
	}
	// A further resend gets the same certificate, not a second one.
	again, err := a.Issue(ctx, req)
	if err != nil || again.Serial != iss.Serial {
		t.Errorf("second resend: %v, serial %v want %v", err, again, iss.Serial)
	}
	if l, _ := s.ListCerts(ctx, store.CertFilter{Label: "manual"}); len(l) != 1 {
		t.Errorf("%d certificates recorded for the request, want 1", len(l))
	}

	// Reject with a reason.
	if err := cliAuth.Reject(ctx, idB, "unknown device"); err != nil {
		t.Fatal(err)
	}
	_, err = a.Issue(ctx, CertRequest{Op: OpEnroll, Label: "manual", CSR: csrB, Requester: est(dev)})
	wantKind(t, err, errs.Forbidden, false)
	if !strings.Contains(errs.Message(err), "unknown device") {
		t.Errorf("rejection message %q lacks the reason", errs.Message(err))
	}
	wantKind(t, a.Approve(ctx, idB), errs.Conflict, false)
	wantKind(t, a.Approve(ctx, "nope"), errs.NotFound, false)

	// Revoking the issued certificate: a resend no longer gets it.
	if err := a.Revoke(ctx, iss.Serial, ReasonKeyCompromise); err != nil {
		t.Fatal(err)
	}
	_, err = a.Issue(ctx, req)
	wantKind(t, err, errs.Forbidden, false)
}

func TestManualApprovalConcurrentResends(t *testing.T) {
	p := newPKI(t)
	s := p.openStore(t)
	a := p.authority(t, s, p.config())
	dev := p.idevid(t, p.mfrA, "A-4", p.now.Add(-time.Hour), noExpiry())
	csr, _ := mkCSR(t, csrOpts{subject: pkix.Name{CommonName: "dev-4"}})
	req := CertRequest{Op: OpEnroll, Label: "manual", CSR: csr, Requester: est(dev)}
	_, err := a.Issue(ctx, req)
	id := errs.As(err).ID
	if err := a.Approve(ctx, id); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	serials := make([]string, 8)
	for i := range serials {
		wg.Add(1)
		go func() {
			defer wg.Done()
			iss, err := a.Issue(ctx, req)
			if err != nil {
				t.Error(err)
				return
			}
			serials[i] = iss.Serial
		}()
	}
	wg.Wait()
	for _, sn := range serials {
		if sn != serials[0] {
			t.Fatalf("concurrent resends got different certificates: %v", serials)
		}
	}
}

func TestConcurrentIssueUniqueSerials(t *testing.T) {
	p := newPKI(t)
	s := p.openStore(t)
	a := p.authority(t, s, p.config())
	dev := p.idevid(t, p.mfrA, "A-5", p.now.Add(-time.Hour), noExpiry())
	const n = 64
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[string]bool{}
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			csr, _ := mkCSR(t, csrOpts{subject: pkix.Name{CommonName: fmt.Sprintf("c-%d", i)}})
			iss, err := a.Issue(ctx, CertRequest{Op: OpEnroll, CSR: csr, Requester: est(dev)})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if seen[iss.Serial] {
				t.Errorf("serial %s issued twice", iss.Serial)
			}
			seen[iss.Serial] = true
		}()
	}
	wg.Wait()
	if l, _ := s.ListCerts(ctx, store.CertFilter{}); len(l) != n {
		t.Errorf("%d certificates recorded, want %d", len(l), n)
	}
}

// collidingStore makes the first RecordIssued report a duplicate serial.
type collidingStore struct {
	store.Store
	collided bool
	serials  []string
}

func (c *collidingStore) RecordIssued(ctx context.Context, rec *store.Cert) error {
	c.serials = append(c.serials, rec.Serial)
	if !c.collided {
		c.collided = true
		return fmt.Errorf("test: %w", store.ErrDuplicateSerial)
	}
	return c.Store.RecordIssued(ctx, rec)
}

func TestSerialCollisionRetried(t *testing.T) {
	p := newPKI(t)
	cs := &collidingStore{Store: p.openStore(t)}
	a, err := New(p.config(), p.options(cs))
	if err != nil {
		t.Fatal(err)
	}
	dev := p.idevid(t, p.mfrA, "A-6", p.now.Add(-time.Hour), noExpiry())
	csr, _ := mkCSR(t, csrOpts{subject: pkix.Name{CommonName: "c"}})
	iss, err := a.Issue(ctx, CertRequest{Op: OpEnroll, CSR: csr, Requester: est(dev)})
	if err != nil {
		t.Fatal(err)
	}
	if len(cs.serials) != 2 || cs.serials[0] == cs.serials[1] || iss.Serial != cs.serials[1] {
		t.Errorf("serials tried %v, issued %s", cs.serials, iss.Serial)
	}
}

func TestRevokeAndCRL(t *testing.T) {
	p := newPKI(t)
	s := p.openStore(t)
	var revoked []string
	a, err := New(p.config(), Options{Store: s, Signer: p.issuing.Key, Chain: p.issuing.Chain,
		OnRevoke: func(serial string, reason int) { revoked = append(revoked, fmt.Sprintf("%s/%d", serial, reason)) }})
	if err != nil {
		t.Fatal(err)
	}
	dev := p.idevid(t, p.mfrA, "A-2", p.now.Add(-time.Hour), noExpiry())
	i1, _ := enrolled(t, a, dev, pkix.Name{CommonName: "one"})
	i2, _ := enrolled(t, a, dev, pkix.Name{CommonName: "two"})

	crl := func() *x509.RevocationList {
		t.Helper()
		der, err := a.CRL(ctx)
		if err != nil {
			t.Fatal(err)
		}
		rl, err := x509.ParseRevocationList(der)
		if err != nil {
			t.Fatal(err)
		}
		if err := rl.CheckSignatureFrom(p.issuing.Cert); err != nil {
			t.Fatalf("CRL signature: %v", err)
		}
		return rl
	}
	rl := crl()
	if len(rl.RevokedCertificateEntries) != 0 || rl.Number.Int64() != 1 || !rl.NextUpdate.After(rl.ThisUpdate) {
		t.Fatalf("first CRL: %d entries, number %v", len(rl.RevokedCertificateEntries), rl.Number)
	}

	tests := []struct {
		serial string
		reason int
		kind   errs.Kind
		ok     bool
	}{
		{strings.ToUpper(i1.Serial), ReasonKeyCompromise, 0, true},
		{i1.Serial, ReasonKeyCompromise, errs.Conflict, false},
		{"abcdef", 0, errs.NotFound, false},
		{"xyz", 0, errs.BadRequest, false},
		{i2.Serial, 7, errs.BadRequest, false},
		{i2.Serial, 11, errs.BadRequest, false},
	}
	for _, tt := range tests {
		wantKind(t, a.Revoke(ctx, tt.serial, tt.reason), tt.kind, tt.ok)
	}
	if want := i1.Serial + "/1"; fmt.Sprint(revoked) != "["+want+"]" {
		t.Errorf("OnRevoke saw %v, want [%s]", revoked, want)
	}
	rl = crl()
	if rl.Number.Int64() != 2 || len(rl.RevokedCertificateEntries) != 1 {
		t.Fatalf("second CRL: number %v, %d entries", rl.Number, len(rl.RevokedCertificateEntries))
	}
	e := rl.RevokedCertificateEntries[0]
	if e.SerialNumber.Cmp(i1.Cert.SerialNumber) != 0 || e.ReasonCode != ReasonKeyCompromise {
		t.Errorf("CRL entry %+v", e)
	}
	// The revoked certificate no longer authenticates.
	if _, err := a.VerifyClient([][]byte{i1.Cert.Raw}); errs.KindOf(err) != errs.Forbidden {
		t.Errorf("VerifyClient(revoked) = %v", err)
	}
	if c, err := a.Certificate(ctx, i1.Serial); err != nil || !c.Revoked() {
		t.Errorf("Certificate = %+v, %v", c, err)
	}
}

func TestVerifyClient(t *testing.T) {
	p := newPKI(t)
	s := p.openStore(t)
	a := p.authority(t, s, p.config())
	dev := p.idevid(t, p.mfrA, "A-8", p.now.Add(-time.Hour), noExpiry())
	ldev, _ := enrolled(t, a, dev, pkix.Name{CommonName: "v"})
	selfSigned := testpki.NewCA(t, "me").Cert
	tests := []struct {
		name  string
		raw   [][]byte
		ok    bool
		chain int
	}{
		{"IDevID", [][]byte{dev.Raw}, true, 2},
		{"our LDevID", [][]byte{ldev.Cert.Raw}, true, 3},
		{"self-signed", [][]byte{selfSigned.Raw}, false, 0},
		{"garbage", [][]byte{{1, 2, 3}}, false, 0},
		{"none", nil, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chain, err := a.VerifyClient(tt.raw)
			if tt.ok != (err == nil) {
				t.Fatalf("err = %v", err)
			}
			if tt.ok && len(chain) != tt.chain {
				t.Errorf("chain of %d, want %d", len(chain), tt.chain)
			}
			if !tt.ok && errs.KindOf(err) != errs.Unauthorized {
				t.Errorf("kind %v", errs.KindOf(err))
			}
		})
	}
}

func TestNewConfigErrors(t *testing.T) {
	p := newPKI(t)
	s := p.openStore(t)
	base := p.config
	tests := []struct {
		name string
		mod  func(c *Policy)
		opts func(o *Options)
	}{
		{"unknown key usage", func(c *Policy) { c.Profiles[1].KeyUsage = []string{"flying"} }, nil},
		{"unknown EKU", func(c *Policy) { c.Profiles[1].ExtKeyUsage = []string{"flying"} }, nil},
		{"duplicate label", func(c *Policy) { c.Profiles = append(c.Profiles, ProfileOptions{Label: "manual"}) }, nil},
		{"bad label", func(c *Policy) { c.Profiles[1].Label = "a/b" }, nil},
		{"unknown trust store in a requester rule", func(c *Policy) {
			c.Profiles[1].Requesters = []RequesterRule{{Kind: "idevid", From: []string{"zzz"}}}
		}, nil},
		{"this CA as an idevid source", func(c *Policy) {
			c.Profiles[1].Requesters = []RequesterRule{{Kind: "idevid", From: []string{"ca"}}}
		}, nil},
		{"unknown requester kind", func(c *Policy) { c.Profiles[1].Requesters = []RequesterRule{{Kind: "anyone", From: []string{"*"}}} }, nil},
		{"rule without from", func(c *Policy) { c.Profiles[1].Requesters = []RequesterRule{{Kind: "mac"}} }, nil},
		{"unknown MAC secret in a rule", func(c *Policy) { c.Profiles[1].Requesters = []RequesterRule{{Kind: "mac", From: []string{"zzz"}}} }, nil},
		{"unknown label in an ldevid rule", func(c *Policy) { c.Profiles[1].Requesters = []RequesterRule{{Kind: "ldevid", From: []string{"zzz"}}} }, nil},
		{"unknown transport", func(c *Policy) {
			c.Profiles[1].Requesters = []RequesterRule{{Kind: "mac", From: []string{"*"}, Transports: []string{"smoke"}}}
		}, nil},
		{"may_revoke for idevid", func(c *Policy) {
			c.Profiles[1].Requesters = []RequesterRule{{Kind: "idevid", From: []string{"*"}, MayRevoke: true}}
		}, nil},
		{"unknown reenroll_from label", func(c *Policy) { c.Profiles[1].ReenrollFrom = []string{"zzz"} }, nil},
		{"unknown subject attribute", func(c *Policy) { c.Profiles[1].Subject.AllowAttributes = []string{"shoeSize"} }, nil},
		{"reserved trust store name", func(c *Policy) { c.TrustStores[0].Name = "ca" }, nil},
		{"trust store without certificates", func(c *Policy) { c.TrustStores[0].Roots = nil }, nil},
		{"nil trust anchor", func(c *Policy) { c.TrustStores[0].Roots = []*x509.Certificate{nil} }, nil},
		{"duplicate trust store", func(c *Policy) { c.TrustStores[1].Name = c.TrustStores[0].Name }, nil},
		{"empty MAC secret", func(c *Policy) { c.MACSecrets[0].Secret = nil }, nil},
		{"MAC secret without reference", func(c *Policy) { c.MACSecrets[0].Reference = "" }, nil},
		{"duplicate MAC secret", func(c *Policy) {
			c.MACSecrets = append(c.MACSecrets, MACSecret{Reference: "demo", Secret: []byte("x")})
		}, nil},
		{"bad regexp", func(c *Policy) { c.Profiles[1].Subject.CommonNamePattern = "(" }, nil},
		{"unknown key type", func(c *Policy) { c.Profiles[1].KeyType = "P-999" }, nil},
		{"unknown SAN type", func(c *Policy) { c.Profiles[1].SAN.Allow = []string{"x400"} }, nil},
		{"signer does not match", nil, func(o *Options) { o.Signer = p.root.Key }},
		{"not a CA", nil, func(o *Options) {
			leaf := p.issuing.NewLeaf(t, &x509.Certificate{Subject: pkix.Name{CommonName: "leaf"}})
			o.Signer, o.Chain = leaf.Key, []*x509.Certificate{leaf.Cert}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pol := base()
			if tt.mod != nil {
				tt.mod(&pol)
			}
			o := p.options(s)
			if tt.opts != nil {
				tt.opts(&o)
			}
			if _, err := New(pol, o); err == nil {
				t.Fatal("New accepted the configuration")
			}
		})
	}
}

func TestProfilesAndLabels(t *testing.T) {
	p := newPKI(t)
	s := p.openStore(t)
	a := p.authority(t, s, Policy{})
	def, err := a.Profile("")
	if err != nil {
		t.Fatal(err)
	}
	if !def.names.copySerialNumber || def.KeyType != "P-256" || def.Validity != 365*24*time.Hour ||
		def.KeyUsage != x509.KeyUsageDigitalSignature || len(def.ExtKeyUsage) != 1 {
		t.Errorf("default profile %+v", def)
	}
	if len(a.Labels()) != 0 {
		t.Errorf("Labels = %v", a.Labels())
	}
	a = p.authority(t, s, p.config())
	if got := fmt.Sprint(a.Labels()); got != "[manual nosan only-a ordered strict]" {
		t.Errorf("Labels = %s", got)
	}
	if _, err := a.Profile("nope"); errs.KindOf(err) != errs.NotFound {
		t.Errorf("unknown profile: %v", err)
	}
	if ca := a.CACerts("manual"); len(ca) != 2 || !ca[0].Equal(p.issuing.Cert) || !ca[1].Equal(p.root.Cert) {
		t.Error("CACerts is not issuing CA, root")
	}
	if sec, err := a.MACSecret("demo"); err != nil || string(sec) != "s3cret" {
		t.Errorf("MACSecret = %q, %v", sec, err)
	}
	if _, err := a.MACSecret("x"); errs.KindOf(err) != errs.Unauthorized {
		t.Errorf("unknown secret: %v", err)
	}
}

func TestIssueLogged(t *testing.T) {
	p := newPKI(t)
	s := p.openStore(t)
	var buf bytes.Buffer
	var outcomes []string
	a, err := New(p.config(), Options{Store: s, Signer: p.issuing.Key, Chain: p.issuing.Chain,
		Logger: slog.New(slog.NewTextHandler(&buf, nil)),
		OnIssue: func(op Op, label, protocol, result string, d time.Duration) {
			outcomes = append(outcomes, fmt.Sprintf("%s/%s/%s/%s", op, label, protocol, result))
		}})
	if err != nil {
		t.Fatal(err)
	}
	dev := p.idevid(t, p.mfrA, "A-10", p.now.Add(-time.Hour), noExpiry())
	enrolled(t, a, dev, pkix.Name{CommonName: "logged"})
	csr, _ := mkCSR(t, csrOpts{subject: pkix.Name{CommonName: "x"}})
	a.Issue(ctx, CertRequest{Op: OpEnroll, Label: "manual", CSR: csr, Requester: est(dev)})
	a.Issue(ctx, CertRequest{Op: OpEnroll, CSR: csr, Requester: est()})
	for _, want := range []string{"msg=issue", "op=enroll", "result=issued", "serial=", "result=pending",
		"result=unauthorized", "requester=\"SERIALNUMBER=A-10", "duration="} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, buf.String())
		}
	}
	if got := strings.Join(outcomes, " "); got != "enroll//est/issued enroll/manual/est/pending enroll//est/unauthorized" {
		t.Errorf("OnIssue outcomes %q", got)
	}
}

// TestIssueLogLevels: the issue line names the issued certificate and the requester when the
// logger takes Info, and is skipped (its attributes not even built) when it does not, while
// OnIssue still sees every outcome.
func TestIssueLogLevels(t *testing.T) {
	for _, tc := range []struct {
		level slog.Level
		want  []string // in the log; nil = no issue line at all
	}{
		{slog.LevelInfo, []string{"msg=issue", "op=enroll", "op=reenroll", "subject=\"SERIALNUMBER=A-14,CN=levels\"",
			"requester=\"SERIALNUMBER=A-14,CN=idevid-A-14,O=Manufacturer A (issuer CN=Manufacturer A,", "result=issued",
			"result=pending", "result=unauthorized"}},
		{slog.LevelWarn, nil},
	} {
		t.Run(tc.level.String(), func(t *testing.T) {
			p := newPKI(t)
			s := p.openStore(t)
			var buf bytes.Buffer
			var outcomes []string
			a, err := New(p.config(), Options{Store: s, Signer: p.issuing.Key, Chain: p.issuing.Chain,
				Logger: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: tc.level})),
				OnIssue: func(op Op, label, protocol, result string, d time.Duration) {
					outcomes = append(outcomes, fmt.Sprintf("%s/%s/%s", op, label, result))
				}})
			if err != nil {
				t.Fatal(err)
			}
			dev := p.idevid(t, p.mfrA, "A-14", p.now.Add(-time.Hour), noExpiry())
			ldev, _ := enrolled(t, a, dev, pkix.Name{CommonName: "levels"})
			csr, _ := mkCSR(t, csrOpts{subject: pkix.Name{CommonName: "levels"}})
			if _, err := a.Issue(ctx, CertRequest{Op: OpReenroll, CSR: csr, Requester: est(ldev.Cert)}); err != nil {
				t.Fatal(err)
			}
			a.Issue(ctx, CertRequest{Op: OpEnroll, Label: "manual", CSR: csr, Requester: est(dev)})
			a.Issue(ctx, CertRequest{Op: OpEnroll, CSR: csr, Requester: est()})
			if got := strings.Join(outcomes, " "); got != "enroll//issued reenroll//issued enroll/manual/pending enroll//unauthorized" {
				t.Errorf("OnIssue outcomes %q", got)
			}
			if tc.want == nil && strings.Contains(buf.String(), "msg=issue") {
				t.Errorf("issue logged at level %v:\n%s", tc.level, buf.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(buf.String(), w) {
					t.Errorf("log lacks %q:\n%s", w, buf.String())
				}
			}
		})
	}
}

func TestIssueContextCancelled(t *testing.T) {
	p := newPKI(t)
	s := p.openStore(t)
	a := p.authority(t, s, p.config())
	dev := p.idevid(t, p.mfrA, "A-11", p.now.Add(-time.Hour), noExpiry())
	csr, _ := mkCSR(t, csrOpts{subject: pkix.Name{CommonName: "x"}})
	c, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := a.Issue(c, CertRequest{Op: OpEnroll, CSR: csr, Requester: est(dev)}); err == nil {
		t.Fatal("Issue with a cancelled context succeeded")
	}
	if l, _ := s.ListCerts(ctx, store.CertFilter{}); len(l) != 0 {
		t.Errorf("%d certificates recorded", len(l))
	}
}

// TestReenrollAttributeOrder: a client that copies its certificate's subject into the renewal
// CSR through pkix.Name re-encodes it in Go's attribute order; that is still the same subject,
// and the renewed certificate keeps the old subject bytes.
func TestReenrollAttributeOrder(t *testing.T) {
	p := newPKI(t)
	s := p.openStore(t)
	a := p.authority(t, s, p.config())
	dev := p.idevid(t, p.mfrA, "A-12", p.now.Add(-time.Hour), noExpiry())
	csr, _ := mkCSR(t, csrOpts{subject: pkix.Name{CommonName: "dev-12", Organization: []string{"Evil"}}})
	old, err := a.Issue(ctx, CertRequest{Op: OpEnroll, Label: "ordered", CSR: csr, Requester: est(dev)})
	if err != nil {
		t.Fatal(err)
	}
	if got := old.Cert.Subject.String(); got != "SERIALNUMBER=A-12,CN=dev-12,OU=Sensors,O=Acme" {
		t.Fatalf("enrolled subject %s", got)
	}
	renewCSR, _ := mkCSR(t, csrOpts{subject: old.Cert.Subject}) // Go order: O, OU, CN, SERIALNUMBER
	if bytes.Equal(renewCSR.RawSubject, old.Cert.RawSubject) {
		t.Fatal("test needs a CSR whose attribute order differs")
	}
	iss, err := a.Issue(ctx, CertRequest{Op: OpReenroll, Label: "ordered", CSR: renewCSR, Requester: est(old.Cert)})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(iss.Cert.RawSubject, old.Cert.RawSubject) {
		t.Errorf("renewed subject %s, want the old bytes of %s", iss.Cert.Subject, old.Cert.Subject)
	}
	checkIssued(t, p, s, iss, est(old.Cert))

	// The same attributes with one value changed are another subject, whatever the order.
	forged := old.Cert.Subject
	forged.CommonName = "dev-13"
	forgedCSR, _ := mkCSR(t, csrOpts{subject: forged})
	_, err = a.Issue(ctx, CertRequest{Op: OpReenroll, Label: "ordered", CSR: forgedCSR, Requester: est(old.Cert)})
	wantKind(t, err, errs.Forbidden, false)
}
