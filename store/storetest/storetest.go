// Package storetest is the conformance suite every store.Store implementation runs:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store { return openFresh(t) })
//	}
//
// open must return an empty store; the suite closes it.
package storetest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"sync"
	"testing"
	"time"

	"coapca/store"
)

// Run runs every conformance test against stores made by open.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"RecordAndGet", testRecordAndGet},
		{"DuplicateSerial", testDuplicateSerial},
		{"List", testList},
		{"Revoke", testRevoke},
		{"PendingCreateOrGet", testPendingCreateOrGet},
		{"PendingDecide", testPendingDecide},
		{"PendingIssuedAtomically", testPendingIssued},
		{"PendingConcurrentIssue", testPendingConcurrentIssue},
		{"ListPending", testListPending},
		{"Counter", testCounter},
		{"ReserveRange", testReserveRange},
		{"ReserveRangeConcurrent", testReserveRangeConcurrent},
		{"AdvanceCounter", testAdvanceCounter},
		{"AdvanceCounterConcurrent", testAdvanceCounterConcurrent},
		{"Unconfirmed", testUnconfirmed},
		{"ConcurrentWrites", testConcurrentWrites},
		{"KeyPackageReturns", testKeyPackageReturns},
		{"Packages", testPackages},
		{"CMPTransactions", testCMPTransactions},
		{"KeyRefs", testKeyRefs},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			defer s.Close()
			tt.fn(t, s)
		})
	}
}

var ctx = context.Background()

// second truncates, since stores may keep seconds only.
var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func cert(serial string) *store.Cert {
	return &store.Cert{
		Serial: serial, Subject: "CN=dev-" + serial, Issuer: "CN=Issuing CA",
		NotBefore: t0, NotAfter: t0.Add(24 * time.Hour), DER: []byte{0x30, 0x03, 0x02, 0x01, 0x01},
		Label: "", Op: "enroll", Protocol: "est", Transport: "coaps",
		RequesterSubject: "CN=idevid", RequesterIssuer: "CN=Manufacturer", RequesterSerial: "abc",
		RequesterAddr: "127.0.0.1:1234", IssuedAt: t0,
	}
}

func testRecordAndGet(t *testing.T, s store.Store) {
	c := cert("1a2b")
	c.RequesterRef = "demo"
	if err := s.RecordIssued(ctx, c); err != nil {
		t.Fatal(err)
	}
	got, err := s.Cert(ctx, "1a2b")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(*got) != fmt.Sprint(*c) {
		t.Errorf("got  %+v\nwant %+v", *got, *c)
	}
	if got.Revoked() {
		t.Error("new certificate is revoked")
	}
	if _, err := s.Cert(ctx, "ffff"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("missing serial: err = %v, want ErrNotFound", err)
	}
}

func testDuplicateSerial(t *testing.T, s store.Store) {
	if err := s.RecordIssued(ctx, cert("77")); err != nil {
		t.Fatal(err)
	}
	dup := cert("77")
	dup.Subject = "CN=other"
	if err := s.RecordIssued(ctx, dup); !errors.Is(err, store.ErrDuplicateSerial) {
		t.Fatalf("duplicate: err = %v, want ErrDuplicateSerial", err)
	}
	got, err := s.Cert(ctx, "77")
	if err != nil || got.Subject != "CN=dev-77" {
		t.Fatalf("the first record was changed: %+v, %v", got, err)
	}
	// A revoked serial stays taken.
	if err := s.RevokeCert(ctx, "77", 1, t0); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordIssued(ctx, cert("77")); !errors.Is(err, store.ErrDuplicateSerial) {
		t.Fatalf("reuse after revocation: err = %v, want ErrDuplicateSerial", err)
	}
}

func testList(t *testing.T, s store.Store) {
	for i, lbl := range []string{"", "a", "a", "b"} {
		c := cert(fmt.Sprintf("%x", 0x100+i))
		c.Label = lbl
		c.IssuedAt = t0.Add(time.Duration(i) * time.Second)
		if i == 2 {
			// requested with another client certificate, or by a Basic user
			c.RequesterIssuer, c.RequesterSerial = "CN=Issuing CA", "100"
		}
		if i == 3 {
			c.RequesterIssuer, c.RequesterSerial, c.RequesterRef = "", "", "user:alice"
		}
		if err := s.RecordIssued(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.RevokeCert(ctx, "101", 0, t0); err != nil {
		t.Fatal(err)
	}
	serials := func(cs []*store.Cert) string {
		var out string
		for _, c := range cs {
			out += c.Serial + " "
		}
		return out
	}
	tests := []struct {
		name string
		f    store.CertFilter
		want string
	}{
		{"all newest first", store.CertFilter{}, "103 102 101 100 "},
		{"label a", store.CertFilter{Label: "a"}, "102 101 "},
		{"default label", store.CertFilter{LabelSet: true}, "100 "},
		{"revoked", store.CertFilter{Revocation: store.OnlyRevoked}, "101 "},
		{"not revoked", store.CertFilter{Revocation: store.NotRevoked}, "103 102 100 "},
		{"subject", store.CertFilter{SubjectContains: "dev-102"}, "102 "},
		{"serial prefix", store.CertFilter{SerialPrefix: "10"}, "103 102 101 100 "},
		{"serial prefix none", store.CertFilter{SerialPrefix: "2"}, ""},
		{"issuer", store.CertFilter{Issuer: "CN=Issuing CA", Limit: 1}, "103 "},
		{"limit offset", store.CertFilter{Limit: 2, Offset: 1}, "102 101 "},
		{"other issuer", store.CertFilter{Issuer: "CN=x"}, ""},
		{"requester certificate", store.CertFilter{RequesterIssuer: "CN=Issuing CA", RequesterSerial: "100"}, "102 "},
		{"requester certificate, other issuer", store.CertFilter{RequesterIssuer: "CN=Manufacturer", RequesterSerial: "100"}, ""},
		{"requester serial", store.CertFilter{RequesterSerial: "abc"}, "101 100 "},
		{"requester ref", store.CertFilter{RequesterRef: "user:alice"}, "103 "},
		{"requester ref with label", store.CertFilter{RequesterRef: "user:alice", Label: "a"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.ListCerts(ctx, tt.f)
			if err != nil {
				t.Fatal(err)
			}
			if serials(got) != tt.want {
				t.Errorf("got %q, want %q", serials(got), tt.want)
			}
		})
	}
}

func testRevoke(t *testing.T, s store.Store) {
	for _, sn := range []string{"a1", "a2", "a3"} {
		c := cert(sn)
		if sn == "a3" {
			c.Issuer = "CN=Other CA"
		}
		if err := s.RecordIssued(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	if l, err := s.RevokedCerts(ctx, ""); err != nil || len(l) != 0 {
		t.Fatalf("revoked before any revocation: %v %v", l, err)
	}
	at := t0.Add(time.Hour)
	if err := s.RevokeCert(ctx, "a2", 1, at); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeCert(ctx, "a3", 4, at); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeCert(ctx, "a2", 1, at); !errors.Is(err, store.ErrAlreadyRevoked) {
		t.Errorf("second revoke: err = %v, want ErrAlreadyRevoked", err)
	}
	if err := s.RevokeCert(ctx, "ff", 1, at); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("revoke unknown: err = %v, want ErrNotFound", err)
	}
	got, err := s.Cert(ctx, "a2")
	if err != nil || !got.Revoked() || !got.RevokedAt.Equal(at) || got.RevocationReason != 1 {
		t.Errorf("revoked record = %+v, %v", got, err)
	}
	l, err := s.RevokedCerts(ctx, "CN=Issuing CA")
	if err != nil {
		t.Fatal(err)
	}
	want := []store.RevokedEntry{{Serial: "a2", RevokedAt: at, Reason: 1, NotAfter: t0.Add(24 * time.Hour)}}
	if fmt.Sprint(l) != fmt.Sprint(want) {
		t.Errorf("RevokedCerts = %v, want %v", l, want)
	}
	if l, _ := s.RevokedCerts(ctx, ""); len(l) != 2 {
		t.Errorf("RevokedCerts(all) = %v, want 2 entries", l)
	}
}

func pending(key string) *store.Pending {
	return &store.Pending{
		RequestKey: key, Label: "manual", Op: "enroll", Protocol: "est", Transport: "coaps",
		Subject: "CN=dev", Request: []byte{1, 2, 3}, RequesterSubject: "CN=idevid",
		RequesterIssuer: "CN=Manufacturer", RequesterSerial: "01", RequesterAddr: "[::1]:5000",
	}
}

func testPendingCreateOrGet(t *testing.T, s store.Store) {
	p1, created, err := s.CreatePending(ctx, pending("k1"))
	if err != nil || !created {
		t.Fatalf("first create: created=%v err=%v", created, err)
	}
	if p1.ID == "" || p1.Status != store.StatusPending || p1.CreatedAt.IsZero() {
		t.Fatalf("created row incomplete: %+v", p1)
	}
	p2, created, err := s.CreatePending(ctx, pending("k1"))
	if err != nil || created || p2.ID != p1.ID {
		t.Fatalf("second create: id %q created=%v err=%v, want id %q not created", p2.ID, created, err, p1.ID)
	}
	p3, created, err := s.CreatePending(ctx, pending("k2"))
	if err != nil || !created || p3.ID == p1.ID {
		t.Fatalf("other key: %+v created=%v err=%v", p3, created, err)
	}
	got, err := s.Pending(ctx, p1.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := pending("k1")
	if got.RequestKey != want.RequestKey || got.Label != want.Label || string(got.Request) != string(want.Request) ||
		got.RequesterAddr != want.RequesterAddr || got.Subject != want.Subject || got.Status != store.StatusPending {
		t.Errorf("Pending = %+v", got)
	}
	if _, err := s.Pending(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown id: err = %v, want ErrNotFound", err)
	}
}

func testPendingDecide(t *testing.T, s store.Store) {
	a, _, _ := s.CreatePending(ctx, pending("a"))
	r, _, _ := s.CreatePending(ctx, pending("r"))
	tests := []struct {
		id     string
		status store.PendingStatus
		reason string
		err    error
	}{
		{a.ID, store.StatusApproved, "", nil},
		{a.ID, store.StatusApproved, "", nil}, // idempotent
		{a.ID, store.StatusRejected, "late", store.ErrPendingState},
		{r.ID, store.StatusRejected, "unknown device", nil},
		{r.ID, store.StatusApproved, "", store.ErrPendingState},
		{"missing", store.StatusApproved, "", store.ErrNotFound},
	}
	for i, tt := range tests {
		err := s.DecidePending(ctx, tt.id, tt.status, tt.reason)
		if (tt.err == nil && err != nil) || (tt.err != nil && !errors.Is(err, tt.err)) {
			t.Errorf("step %d: err = %v, want %v", i, err, tt.err)
		}
	}
	if err := s.DecidePending(ctx, a.ID, store.StatusIssued, ""); err == nil {
		t.Error("DecidePending(issued) succeeded; only approve/reject are decisions")
	}
	got, _ := s.Pending(ctx, r.ID)
	if got.Status != store.StatusRejected || got.Reason != "unknown device" {
		t.Errorf("rejected row = %+v", got)
	}
	got, _ = s.Pending(ctx, a.ID)
	if got.Status != store.StatusApproved {
		t.Errorf("approved row = %+v", got)
	}
}

func testPendingIssued(t *testing.T, s store.Store) {
	p, _, _ := s.CreatePending(ctx, pending("x"))
	c := cert("c0ffee")
	c.PendingID = p.ID
	// Not yet approved: nothing is written.
	if err := s.RecordIssued(ctx, c); !errors.Is(err, store.ErrPendingState) {
		t.Fatalf("issue for unapproved request: err = %v, want ErrPendingState", err)
	}
	if _, err := s.Cert(ctx, "c0ffee"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("half-written record after failed RecordIssued: %v", err)
	}
	if err := s.DecidePending(ctx, p.ID, store.StatusApproved, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordIssued(ctx, c); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Pending(ctx, p.ID)
	if got.Status != store.StatusIssued || got.CertSerial != "c0ffee" {
		t.Errorf("pending after issue = %+v", got)
	}
	if cc, err := s.Cert(ctx, "c0ffee"); err != nil || cc.PendingID != p.ID {
		t.Errorf("cert = %+v, %v", cc, err)
	}
	// A duplicate serial leaves the pending row untouched.
	p2, _, _ := s.CreatePending(ctx, pending("y"))
	s.DecidePending(ctx, p2.ID, store.StatusApproved, "")
	c2 := cert("c0ffee")
	c2.PendingID = p2.ID
	if err := s.RecordIssued(ctx, c2); !errors.Is(err, store.ErrDuplicateSerial) {
		t.Fatalf("duplicate: %v", err)
	}
	if got, _ := s.Pending(ctx, p2.ID); got.Status != store.StatusApproved || got.CertSerial != "" {
		t.Errorf("pending changed by a failed RecordIssued: %+v", got)
	}
}

func testPendingConcurrentIssue(t *testing.T, s store.Store) {
	p, _, _ := s.CreatePending(ctx, pending("race"))
	s.DecidePending(ctx, p.ID, store.StatusApproved, "")
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := cert(fmt.Sprintf("beef%02x", i))
			c.PendingID = p.ID
			errs[i] = s.RecordIssued(ctx, c)
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, store.ErrPendingState):
			t.Errorf("unexpected error %v", err)
		}
	}
	if ok != 1 {
		t.Errorf("%d certificates recorded for one approved request, want 1", ok)
	}
	if l, _ := s.ListCerts(ctx, store.CertFilter{SerialPrefix: "beef"}); len(l) != 1 {
		t.Errorf("%d certificates in the store, want 1", len(l))
	}
}

func testListPending(t *testing.T, s store.Store) {
	var ids []string
	for _, k := range []string{"p1", "p2", "p3"} {
		p := pending(k)
		if k == "p3" {
			p.Label = "other"
		}
		got, _, err := s.CreatePending(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, got.ID)
	}
	s.DecidePending(ctx, ids[0], store.StatusRejected, "no")
	tests := []struct {
		f    store.PendingFilter
		want int
	}{
		{store.PendingFilter{}, 3},
		{store.PendingFilter{Status: store.StatusPending}, 2},
		{store.PendingFilter{Status: store.StatusRejected}, 1},
		{store.PendingFilter{Label: "other"}, 1},
		{store.PendingFilter{Limit: 2}, 2},
		{store.PendingFilter{Offset: 2}, 1},
	}
	for _, tt := range tests {
		got, err := s.ListPending(ctx, tt.f)
		if err != nil || len(got) != tt.want {
			t.Errorf("ListPending(%+v) = %d rows, %v; want %d", tt.f, len(got), err, tt.want)
		}
	}
}

func testCounter(t *testing.T, s store.Store) {
	for want := int64(1); want <= 3; want++ {
		if v, err := s.NextCounter(ctx, "crl"); err != nil || v != want {
			t.Fatalf("NextCounter = %d, %v; want %d", v, err, want)
		}
	}
	if v, _ := s.NextCounter(ctx, "other"); v != 1 {
		t.Errorf("independent counter = %d, want 1", v)
	}
}

func testConcurrentWrites(t *testing.T, s store.Store) {
	const n = 64
	var wg sync.WaitGroup
	errc := make(chan error, 2*n)
	seen := make(chan int64, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.RecordIssued(ctx, cert(fmt.Sprintf("cc%04x", i))); err != nil {
				errc <- err
			}
			v, err := s.NextCounter(ctx, "c")
			if err != nil {
				errc <- err
			}
			seen <- v
		}()
	}
	wg.Wait()
	close(errc)
	close(seen)
	for err := range errc {
		t.Error(err)
	}
	uniq := map[int64]bool{}
	for v := range seen {
		if uniq[v] {
			t.Errorf("counter value %d returned twice", v)
		}
		uniq[v] = true
	}
	if l, _ := s.ListCerts(ctx, store.CertFilter{SerialPrefix: "cc"}); len(l) != n {
		t.Errorf("%d certificates recorded, want %d", len(l), n)
	}
}

// testUnconfirmed: CMP certificates waiting for certConf are kept with their deadline, listed
// once due (earliest first, bounded), replaced when recorded again, and removed on
// confirmation; an entry for an unknown certificate is refused.
func testUnconfirmed(t *testing.T, s store.Store) {
	for _, sn := range []string{"a1", "a2", "a3"} {
		if err := s.RecordIssued(ctx, cert(sn)); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		serial   string
		deadline time.Time
	}{
		{"a2", t0.Add(2 * time.Minute)},
		{"a1", t0.Add(time.Minute)},
		{"a3", t0.Add(time.Hour)},
	}
	for _, tt := range tests {
		if err := s.AddUnconfirmed(ctx, store.Unconfirmed{Serial: tt.serial, TransactionID: []byte("tx-" + tt.serial), Deadline: tt.deadline}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.AddUnconfirmed(ctx, store.Unconfirmed{Serial: "ffff", Deadline: t0}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unconfirmed entry for an unknown certificate: err = %v, want ErrNotFound", err)
	}
	due := func(now time.Time, limit int) string {
		t.Helper()
		us, err := s.DueUnconfirmed(ctx, now, limit)
		if err != nil {
			t.Fatal(err)
		}
		var out string
		for _, u := range us {
			out += u.Serial + " "
			if string(u.TransactionID) != "tx-"+u.Serial || u.CreatedAt.IsZero() {
				t.Errorf("entry %+v lost its fields", u)
			}
		}
		return out
	}
	for _, tt := range []struct {
		now   time.Time
		limit int
		want  string
	}{
		{t0, 0, ""},
		{t0.Add(time.Minute), 0, "a1 "},
		{t0.Add(10 * time.Minute), 0, "a1 a2 "},
		{t0.Add(10 * time.Minute), 1, "a1 "},
		{t0.Add(2 * time.Hour), 0, "a1 a2 a3 "},
	} {
		if got := due(tt.now, tt.limit); got != tt.want {
			t.Errorf("due at %v (limit %d) = %q, want %q", tt.now, tt.limit, got, tt.want)
		}
	}
	// Recording a serial again moves its deadline.
	if err := s.AddUnconfirmed(ctx, store.Unconfirmed{Serial: "a1", TransactionID: []byte("tx-a1"), Deadline: t0.Add(3 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if got := due(t0.Add(2*time.Hour), 0); got != "a2 a3 " {
		t.Errorf("after moving a1's deadline: %q", got)
	}
	if err := s.DeleteUnconfirmed(ctx, "a2"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteUnconfirmed(ctx, "a2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second delete: err = %v, want ErrNotFound", err)
	}
	if got := due(t0.Add(4*time.Hour), 0); got != "a3 a1 " {
		t.Errorf("after confirming a2: %q", got)
	}
}

func testKeyPackageReturns(t *testing.T, s store.Store) {
	if l, err := s.ListKeyPackageReturns(ctx, store.KeyPackageReturnFilter{}); err != nil || len(l) != 0 {
		t.Fatalf("empty store: %v, %v", l, err)
	}
	in := []*store.KeyPackageReturn{
		{Kind: "receipt", CertSerial: "a1", PkgID: []byte{0xa1}, By: "CN=dev-a1", SignerSerial: "a1",
			RequesterSubject: "CN=idevid", RequesterIssuer: "CN=Manufacturer", RequesterSerial: "abc", RequesterAddr: "127.0.0.1:1",
			DER: []byte{0x30, 0x00}, ReceivedAt: t0},
		{Kind: "error", CertSerial: "a2", ErrorCode: "decryptFailure", By: "CN=dev-a2", RequesterRef: "user:alice",
			DER: []byte{0x30, 0x01}, ReceivedAt: t0.Add(time.Second)},
		{Kind: "receipt", CertSerial: "a1", PkgID: []byte{0xa1}, By: "CN=dev-a1", SignerSerial: "a1", DER: []byte{0x30, 0x02},
			ReceivedAt: t0.Add(2 * time.Second)},
	}
	for _, r := range in {
		if err := s.AddKeyPackageReturn(ctx, r); err != nil {
			t.Fatal(err)
		}
		if r.ID == 0 {
			t.Fatal("no ID set")
		}
	}
	if in[0].ID == in[1].ID || in[1].ID == in[2].ID {
		t.Fatal("IDs are not unique")
	}
	all, err := s.ListKeyPackageReturns(ctx, store.KeyPackageReturnFilter{})
	if err != nil || len(all) != 3 || all[0].ID != in[2].ID || all[2].ID != in[0].ID {
		t.Fatalf("list newest first: %v, %v", all, err)
	}
	if fmt.Sprint(*all[1]) != fmt.Sprint(*in[1]) {
		t.Errorf("round trip:\n got %+v\nwant %+v", *all[1], *in[1])
	}
	a1, err := s.ListKeyPackageReturns(ctx, store.KeyPackageReturnFilter{CertSerial: "a1", Limit: 1})
	if err != nil || len(a1) != 1 || a1[0].ID != in[2].ID {
		t.Fatalf("filter by certificate: %v, %v", a1, err)
	}
	if none, err := s.ListKeyPackageReturns(ctx, store.KeyPackageReturnFilter{CertSerial: "ff"}); err != nil || len(none) != 0 {
		t.Fatalf("unknown certificate: %v, %v", none, err)
	}
}

func testPackages(t *testing.T, s store.Store) {
	if l, err := s.ListPackages(ctx, store.PackageFilter{}); err != nil || len(l) != 0 {
		t.Fatalf("empty store: %v, %v", l, err)
	}
	in := []*store.Package{
		{Kind: "symmetrickeys", Target: "serial:a1", Name: "k1", Content: []byte{0x30, 0x00}, CreatedAt: t0},
		{Kind: "firmware", Target: "label:cam", Name: "fw", Content: []byte{0x30, 0x01}, CreatedAt: t0.Add(time.Second)},
		{Kind: "symmetrickeys", Target: "label:cam", Name: "k2", Content: []byte{0x30, 0x02}, CreatedAt: t0.Add(2 * time.Second),
			Forms: "enveloped,signed-enveloped-signed"},
	}
	for _, p := range in {
		if err := s.AddPackage(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if in[0].ID == 0 || in[0].ID == in[1].ID || in[1].ID == in[2].ID {
		t.Fatalf("IDs: %d %d %d", in[0].ID, in[1].ID, in[2].ID)
	}
	sym, err := s.ListPackages(ctx, store.PackageFilter{Kind: "symmetrickeys"})
	if err != nil || len(sym) != 2 || sym[0].ID != in[0].ID || sym[1].ID != in[2].ID {
		t.Fatalf("list by kind, oldest first: %v, %v", sym, err)
	}
	if sym[0].Forms != "" || sym[1].Forms != in[2].Forms {
		t.Errorf("forms round trip: %q, %q; want \"\", %q", sym[0].Forms, sym[1].Forms, in[2].Forms)
	}
	if fmt.Sprint(*sym[1]) != fmt.Sprint(*in[2]) {
		t.Errorf("round trip:\n got %+v\nwant %+v", *sym[1], *in[2])
	}
	got, err := s.GetPackage(ctx, in[1].ID)
	if err != nil || got.Name != "fw" {
		t.Fatalf("get: %v, %v", got, err)
	}
	if _, err := s.GetPackage(ctx, 9999); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get unknown: %v", err)
	}

	// A return for a package never fetched is refused and records nothing.
	ret := store.PackageDelivery{PackageID: in[0].ID, ClientSerial: "a1", ReturnKind: "receipt", ReturnDER: []byte{1}, ReturnedAt: t0}
	if err := s.ReturnPackage(ctx, ret); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("return before fetch: %v", err)
	}
	if d, err := s.ListPackageDeliveries(ctx, store.PackageDeliveryFilter{}); err != nil || len(d) != 0 {
		t.Fatalf("deliveries after a refused return: %v, %v", d, err)
	}
	for i := range 2 {
		if err := s.MarkPackageFetched(ctx, in[0].ID, "a1", []string{"plain", "enveloped"}[i], t0.Add(time.Duration(i)*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.MarkPackageFetched(ctx, in[2].ID, "b2", "", t0); err != nil {
		t.Fatal(err)
	}
	d, err := s.ListPackageDeliveries(ctx, store.PackageDeliveryFilter{ClientSerial: "a1"})
	if err != nil || len(d) != 1 || d[0].Fetches != 2 || !d[0].FetchedAt.Equal(t0.Add(time.Minute)) || d[0].ReturnKind != "" ||
		d[0].Form != "enveloped" {
		t.Fatalf("fetched twice (the latest form kept): %+v, %v", d, err)
	}
	ret.ReturnedAt = t0.Add(time.Hour)
	if err := s.ReturnPackage(ctx, ret); err != nil {
		t.Fatal(err)
	}
	d, err = s.ListPackageDeliveries(ctx, store.PackageDeliveryFilter{PackageID: in[0].ID})
	if err != nil || len(d) != 1 || d[0].ReturnKind != "receipt" || !d[0].ReturnedAt.Equal(ret.ReturnedAt) || len(d[0].ReturnDER) != 1 {
		t.Fatalf("after the receipt: %+v, %v", d, err)
	}
	if all, err := s.ListPackageDeliveries(ctx, store.PackageDeliveryFilter{}); err != nil || len(all) != 2 {
		t.Fatalf("all deliveries: %v, %v", all, err)
	}
}

// testReserveRange: ranges follow each other, a floor moves the counter up (never down), names
// are independent, and a bad range is refused without changing anything.
func testReserveRange(t *testing.T, s store.Store) {
	tests := []struct {
		name      string
		floor, n  int64
		wantFirst int64
		wantErr   bool
	}{
		{"ssn", 0, 64, 0, false},
		{"ssn", 0, 64, 64, false},
		{"ssn", 100, 10, 128, false}, // floor below the counter: no effect
		{"ssn", 1000, 10, 1000, false},
		{"ssn", 0, 1, 1010, false},
		{"other", 500, 5, 500, false},
		{"ssn", 0, 0, 0, true},
		{"ssn", -1, 5, 0, true},
		{"ssn", 0, 1, 1011, false}, // the refused ones changed nothing
	}
	for i, tt := range tests {
		first, err := s.ReserveRange(ctx, tt.name, tt.floor, tt.n)
		if tt.wantErr {
			if err == nil {
				t.Errorf("step %d: ReserveRange(%q, %d, %d) accepted", i, tt.name, tt.floor, tt.n)
			}
			continue
		}
		if err != nil || first != tt.wantFirst {
			t.Errorf("step %d: ReserveRange(%q, %d, %d) = %d, %v; want %d", i, tt.name, tt.floor, tt.n, first, err, tt.wantFirst)
		}
	}
}

// testReserveRangeConcurrent: concurrent reservations never overlap.
func testReserveRangeConcurrent(t *testing.T, s store.Store) {
	const workers, each, n = 8, 10, 16
	var mu sync.Mutex
	var firsts []int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				f, err := s.ReserveRange(ctx, "shared", 0, n)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				firsts = append(firsts, f)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(firsts)
	for i, f := range firsts {
		if f != int64(i*n) {
			t.Fatalf("reservations overlap or leave gaps: %v", firsts)
		}
	}
}

// testAdvanceCounter: a counter only moves up, a refused advance (a replay) changes nothing,
// names are independent, and a bad value is refused.
func testAdvanceCounter(t *testing.T, s store.Store) {
	tests := []struct {
		name    string
		value   int64
		want    bool
		wantErr bool
	}{
		{"rw", 5, true, false}, // a new name starts at the value
		{"rw", 5, false, false},
		{"rw", 3, false, false},
		{"rw", 6, true, false}, // the refusals above did not move it
		{"rw", 100, true, false},
		{"other", 6, true, false},
		{"rw", -1, false, true},
		{"rw", 100, false, false},
		{"rw", 101, true, false},
	}
	for i, tt := range tests {
		got, err := s.AdvanceCounter(ctx, tt.name, tt.value)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("step %d: AdvanceCounter(%q, %d) = %v, %v; want %v (error %v)", i, tt.name, tt.value, got, err, tt.want, tt.wantErr)
		}
	}
}

// testAdvanceCounterConcurrent: of many callers advancing to the same values at once, exactly
// one succeeds for each value (one request accepted once, whichever instance receives it).
func testAdvanceCounterConcurrent(t *testing.T, s store.Store) {
	const workers, values = 8, 20
	var mu sync.Mutex
	won := map[int64]int{}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for v := int64(1); v <= values; v++ {
				ok, err := s.AdvanceCounter(ctx, "replay", v)
				if err != nil {
					t.Error(err)
					return
				}
				if ok {
					mu.Lock()
					won[v]++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	for v, n := range won {
		if n != 1 {
			t.Errorf("value %d accepted %d times", v, n)
		}
	}
	if won[values] != 1 {
		t.Errorf("the highest value was accepted %d times, want once", won[values])
	}
}

// testCMPTransactions: open CMP transactions are created, read, replaced, deleted, and
// removed once expired; an unknown ID is ErrNotFound.
func testCMPTransactions(t *testing.T, s store.Store) {
	if _, err := s.CMPTransaction(ctx, []byte("none")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown transaction: err = %v, want ErrNotFound", err)
	}
	if err := s.PutCMPTransaction(ctx, store.CMPTransaction{State: []byte("x"), Expires: t0}); err == nil {
		t.Error("a transaction without an ID was stored")
	}
	for i, id := range []string{"t1", "t2", "t3"} {
		tx := store.CMPTransaction{ID: []byte(id), State: []byte("state-" + id), Expires: t0.Add(time.Duration(i) * time.Minute)}
		if err := s.PutCMPTransaction(ctx, tx); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.CMPTransaction(ctx, []byte("t2"))
	if err != nil || string(got.State) != "state-t2" || !got.Expires.Equal(t0.Add(time.Minute)) || string(got.ID) != "t2" {
		t.Fatalf("CMPTransaction(t2) = %+v, %v", got, err)
	}
	// Replaced: the next message of the transaction moved it on.
	if err := s.PutCMPTransaction(ctx, store.CMPTransaction{ID: []byte("t2"), State: []byte("later"), Expires: t0.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.CMPTransaction(ctx, []byte("t2")); err != nil || string(got.State) != "later" || !got.Expires.Equal(t0.Add(time.Hour)) {
		t.Fatalf("after replacing: %+v, %v", got, err)
	}
	// t1 (t0) and t3 (t0+2m) expire before t0+5m; t2 (t0+1h) does not.
	if n, err := s.DeleteExpiredCMPTransactions(ctx, t0.Add(5*time.Minute)); err != nil || n != 2 {
		t.Fatalf("DeleteExpiredCMPTransactions = %d, %v; want 2", n, err)
	}
	for _, id := range []string{"t1", "t3"} {
		if _, err := s.CMPTransaction(ctx, []byte(id)); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("expired %s still there: %v", id, err)
		}
	}
	if err := s.DeleteCMPTransaction(ctx, []byte("t2")); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteCMPTransaction(ctx, []byte("t2")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second delete: err = %v, want ErrNotFound", err)
	}
}

// CertDER returns a real self-signed certificate (DER) with that serial and Subject Key
// Identifier, for tests of lookups by hash and key identifier (CertFilter.CertSHA256Prefix,
// KeyID) and of migrations that fill them in.
func CertDER(serial int64, keyID []byte) ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: fmt.Sprintf("dev-%d", serial)},
		NotBefore: t0, NotAfter: t0.Add(24 * time.Hour), SubjectKeyId: keyID,
	}
	return x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
}

// testKeyRefs: certificates are found by (a prefix of) the SHA-256 of their DER, as an EDHOC
// x5t designates one (RFC 9360 §2), and by exact Subject Key Identifier (an EDHOC kid); a
// shorter or longer kid, or a hash of other bytes, finds nothing.
func testKeyRefs(t *testing.T, s store.Store) {
	kidA, kidB := []byte{0xaa, 1, 2, 3}, []byte{0xbb, 1, 2, 3}
	ders := map[string][]byte{"c4": {0x30, 0x03, 0x02, 0x01, 0x04}} // no certificate: hashed, without a kid
	// c1 and c2 share a kid (a re-enrollment with the same key).
	for sn, kid := range map[string][]byte{"c1": kidA, "c2": kidA, "c3": kidB} {
		der, err := CertDER(int64(len(ders)), kid)
		if err != nil {
			t.Fatal(err)
		}
		ders[sn] = der
	}
	for i, sn := range []string{"c1", "c2", "c3", "c4"} {
		c := cert(sn)
		c.DER = ders[sn]
		c.IssuedAt = t0.Add(time.Duration(i) * time.Second)
		if err := s.RecordIssued(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.RevokeCert(ctx, "c1", 1, t0); err != nil {
		t.Fatal(err)
	}
	sum := func(sn string) []byte { h := sha256.Sum256(ders[sn]); return h[:] }
	flip := bytes.Clone(sum("c3"))
	flip[7] ^= 1
	serials := func(cs []*store.Cert) string {
		var out string
		for _, c := range cs {
			out += c.Serial + " "
		}
		return out
	}
	tests := []struct {
		name string
		f    store.CertFilter
		want string
	}{
		{"full SHA-256", store.CertFilter{CertSHA256Prefix: sum("c3")}, "c3 "},
		{"SHA-256/64", store.CertFilter{CertSHA256Prefix: sum("c2")[:8]}, "c2 "},
		{"SHA-256/64 of a revoked one", store.CertFilter{CertSHA256Prefix: sum("c1")[:8]}, "c1 "},
		{"hash of bytes that are no certificate", store.CertFilter{CertSHA256Prefix: sum("c4")[:8]}, "c4 "},
		{"one bit off", store.CertFilter{CertSHA256Prefix: flip[:8]}, ""},
		{"kid on two certificates", store.CertFilter{KeyID: kidA}, "c2 c1 "},
		{"kid, not revoked", store.CertFilter{KeyID: kidA, Revocation: store.NotRevoked}, "c2 "},
		{"other kid", store.CertFilter{KeyID: kidB}, "c3 "},
		{"kid prefix", store.CertFilter{KeyID: kidB[:3]}, ""},
		{"kid longer", store.CertFilter{KeyID: append(bytes.Clone(kidB), 4)}, ""},
		{"kid and hash of different certificates", store.CertFilter{KeyID: kidB, CertSHA256Prefix: sum("c2")[:8]}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.ListCerts(ctx, tt.f)
			if err != nil {
				t.Fatal(err)
			}
			if serials(got) != tt.want {
				t.Errorf("got %q, want %q", serials(got), tt.want)
			}
		})
	}
}
