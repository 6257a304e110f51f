package authority

import (
	"crypto/x509/pkix"
	"slices"
	"strings"
	"testing"
	"time"

	"coapca/errs"
	"coapca/store"
)

// TestEnumTables: every PendingStatus and Revocation has a name and a store spelling, and the
// store spellings map back; a new value without its table entry fails here (the arrays are
// sized by the Num* bound, so a missing entry is an empty string).
func TestEnumTables(t *testing.T) {
	seen := map[store.PendingStatus]bool{}
	for s := StatusUnknown; s < NumPendingStatuses; s++ {
		if pendingStatusNames[s] == "" {
			t.Errorf("status %d has no name", s)
		}
		if s == StatusUnknown {
			if storeStatus[s] != "" || statusFromStore("") != StatusUnknown {
				t.Errorf("StatusUnknown must have no store spelling")
			}
			continue
		}
		if storeStatus[s] == "" || seen[storeStatus[s]] || statusFromStore(storeStatus[s]) != s || string(storeStatus[s]) != s.String() {
			t.Errorf("status %v: store spelling %q does not round-trip", s, storeStatus[s])
		}
		seen[storeStatus[s]] = true
	}
	if got := statusFromStore("weird"); got != StatusUnknown {
		t.Errorf("unknown store status read as %v", got)
	}
	revs := map[store.RevocationFilter]bool{}
	for r := AnyRevocation; r < NumRevocations; r++ {
		if revs[storeRevocation[r]] || (r != AnyRevocation && storeRevocation[r] == store.AnyRevocation) {
			t.Errorf("revocation filter %d maps to %d twice", r, storeRevocation[r])
		}
		revs[storeRevocation[r]] = true
	}
	for pr := ProtocolUnknown + 1; pr < NumProtocols; pr++ {
		if parseProtocol(pr.String()) != pr {
			t.Errorf("protocol %v does not round-trip", pr)
		}
	}
}

// TestListRecords: the operator's view (`coapca ca list|pending|show`) and the services' reads
// go through the authority's own records and filters, with the store's values translated.
func TestListRecords(t *testing.T) {
	p := newPKI(t)
	s := p.openStore(t)
	a := p.authority(t, s, p.config())
	now := p.now
	dev := p.idevid(t, p.mfrA, "A-1", now.AddDate(-1, 0, 0), noExpiry())
	i1, _ := enrolled(t, a, dev, pkix.Name{CommonName: "alpha"})
	i2, _ := enrolled(t, a, dev, pkix.Name{CommonName: "beta"})
	if err := a.Revoke(ctx, i2.Serial, ReasonKeyCompromise); err != nil {
		t.Fatal(err)
	}
	csr, _ := mkCSR(t, csrOpts{subject: pkix.Name{CommonName: "dev-9"}})
	_, err := a.Issue(ctx, CertRequest{Op: OpEnroll, Label: "manual", CSR: csr, Requester: est(dev)})
	pendID := errs.As(err).ID
	csr2, _ := mkCSR(t, csrOpts{subject: pkix.Name{CommonName: "dev-10"}})
	_, err = a.Issue(ctx, CertRequest{Op: OpEnroll, Label: "manual", CSR: csr2, Requester: est(dev)})
	rejID := errs.As(err).ID
	if err := a.Reject(ctx, rejID, "no"); err != nil {
		t.Fatal(err)
	}

	serials := func(rs []*CertRecord) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.Serial)
		}
		slices.Sort(out)
		return out
	}
	both := []string{i1.Serial, i2.Serial}
	slices.Sort(both)
	certTests := []struct {
		name string
		f    CertFilter
		want []string
	}{
		{"all", CertFilter{}, both},
		{"revoked", CertFilter{Revocation: OnlyRevoked}, []string{i2.Serial}},
		{"not revoked", CertFilter{Revocation: NotRevoked}, []string{i1.Serial}},
		{"subject", CertFilter{SubjectContains: "alph"}, []string{i1.Serial}},
		{"default label", CertFilter{LabelSet: true}, both},
		{"other label", CertFilter{Label: "manual", LabelSet: true}, nil},
		{"serial prefix, upper case", CertFilter{SerialPrefix: strings.ToUpper(i1.Serial[:len(i1.Serial)-1])}, []string{i1.Serial}},
		{"limit", CertFilter{Limit: 1}, nil}, // checked by count below
	}
	for _, tt := range certTests {
		t.Run("certs/"+tt.name, func(t *testing.T) {
			rs, err := a.ListCertificates(ctx, tt.f)
			if err != nil {
				t.Fatal(err)
			}
			if tt.name == "limit" {
				if len(rs) != 1 {
					t.Errorf("%d records, want 1", len(rs))
				}
				return
			}
			if got := serials(rs); !slices.Equal(got, tt.want) {
				t.Errorf("serials %v, want %v", got, tt.want)
			}
		})
	}

	rec, err := a.Certificate(ctx, i2.Serial)
	if err != nil {
		t.Fatal(err)
	}
	if !rec.Revoked() || rec.RevocationReason != ReasonKeyCompromise || rec.Op != OpEnroll || rec.Protocol != ProtocolEST ||
		rec.Transport != TransportCoAPS || rec.RequesterSerial != FormatSerial(dev.SerialNumber) || rec.RequesterRef != "ts:mfr-a" || !strings.Contains(rec.Subject, "CN=beta") {
		t.Errorf("record %+v", rec)
	}
	if rev, err := a.RevokedSerials(ctx); err != nil || !slices.Equal(rev, []string{i2.Serial}) {
		t.Errorf("RevokedSerials = %v, %v", rev, err)
	}

	ids := func(rs []*PendingRecord) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.ID)
		}
		slices.Sort(out)
		return out
	}
	all := []string{pendID, rejID}
	slices.Sort(all)
	pendTests := []struct {
		name string
		f    PendingFilter
		want []string
	}{
		{"every status", PendingFilter{}, all},
		{"waiting", PendingFilter{Status: StatusPending}, []string{pendID}},
		{"rejected", PendingFilter{Status: StatusRejected}, []string{rejID}},
		{"approved", PendingFilter{Status: StatusApproved}, nil},
		{"label", PendingFilter{Label: "manual"}, all},
		{"other label", PendingFilter{Label: "strict"}, nil},
	}
	for _, tt := range pendTests {
		t.Run("pending/"+tt.name, func(t *testing.T) {
			rs, err := a.ListPending(ctx, tt.f)
			if err != nil {
				t.Fatal(err)
			}
			if got := ids(rs); !slices.Equal(got, tt.want) {
				t.Errorf("IDs %v, want %v", got, tt.want)
			}
		})
	}
	pend, err := a.PendingRequest(ctx, rejID)
	if err != nil || pend.Status != StatusRejected || pend.Reason != "no" || pend.Op != OpEnroll || pend.Subject != "CN=dev-10" {
		t.Errorf("rejected request %+v, %v", pend, err)
	}
}

// TestListFiltersOutOfRange: a filter value outside its enumeration is a bad request, never
// silently read as "no filter" (which would list every certificate).
func TestListFiltersOutOfRange(t *testing.T) {
	p := newPKI(t)
	a := p.authority(t, p.openStore(t), p.config())
	_, err := a.ListCertificates(ctx, CertFilter{Revocation: NumRevocations})
	wantKind(t, err, errs.BadRequest, false)
	_, err = a.ListCertificates(ctx, CertFilter{Limit: -1})
	wantKind(t, err, errs.BadRequest, false)
	_, err = a.ListPending(ctx, PendingFilter{Status: NumPendingStatuses})
	wantKind(t, err, errs.BadRequest, false)
	_, err = a.ListPending(ctx, PendingFilter{Offset: -3})
	wantKind(t, err, errs.BadRequest, false)
	_, err = a.Certificate(ctx, "not hex")
	wantKind(t, err, errs.BadRequest, false)
	_, err = a.Certificate(ctx, "abcdef")
	wantKind(t, err, errs.NotFound, false)
	_, err = a.PendingRequest(ctx, "nope")
	wantKind(t, err, errs.NotFound, false)
}

// TestUnconfirmed: the CMP service keeps its confirmation deadlines through the authority
// (RFC 9810 §5.1.1.2), so they survive a restart without the service touching the store.
func TestUnconfirmed(t *testing.T) {
	p := newPKI(t)
	s := p.openStore(t)
	a := p.authority(t, s, p.config())
	dev := p.idevid(t, p.mfrA, "A-1", p.now.AddDate(-1, 0, 0), noExpiry())
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	var sn []string
	for i := range 3 {
		iss, _ := enrolled(t, a, dev, pkix.Name{CommonName: "u"})
		sn = append(sn, iss.Serial)
		if err := a.AddUnconfirmed(ctx, Unconfirmed{Serial: iss.Serial, TransactionID: []byte{byte(i)}, Deadline: t0.Add(time.Duration(i) * time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}
	// Only a certificate this CA issued can wait for confirmation.
	wantKind(t, a.AddUnconfirmed(ctx, Unconfirmed{Serial: "abc", Deadline: t0}), errs.NotFound, false)
	// A second authority on the same database (a restarted server) sees them.
	b := p.authority(t, p.openStore(t), p.config())
	due, err := b.DueUnconfirmed(ctx, t0.Add(time.Minute), 0)
	if err != nil || len(due) != 2 || due[0].Serial != sn[0] || due[1].Serial != sn[1] || due[1].TransactionID[0] != 1 || due[0].CreatedAt.IsZero() {
		t.Fatalf("due = %+v, %v", due, err)
	}
	if due, _ := b.DueUnconfirmed(ctx, t0.Add(time.Hour), 1); len(due) != 1 {
		t.Errorf("limit 1 gave %d", len(due))
	}
	if err := b.DeleteUnconfirmed(ctx, sn[0]); err != nil {
		t.Fatal(err)
	}
	wantKind(t, b.DeleteUnconfirmed(ctx, sn[0]), errs.NotFound, false)
	if due, _ := a.DueUnconfirmed(ctx, t0.Add(time.Hour), 0); len(due) != 2 {
		t.Errorf("after delete: %d due, want 2", len(due))
	}
}
