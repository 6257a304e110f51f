package authority

import (
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"path/filepath"
	"testing"
	"time"

	"coapca/internal/testpki"
	"coapca/store"
	"coapca/store/sqlite"
)

// testPKI is an in-memory PKI for the tests, made with internal/testpki: our root and issuing
// CA, two manufacturers and their device identities, built fresh for every test (expiry
// matters).
type testPKI struct {
	dir           string
	root, issuing *testpki.CA
	mfrA, mfrB    *testpki.CA // manufacturer roots, trust stores "mfr-a" and "mfr-b"
	dbPath        string
	now           time.Time
}

func newPKI(t testing.TB) *testPKI {
	t.Helper()
	p := &testPKI{dir: t.TempDir(), now: time.Now()}
	long := p.now.AddDate(10, 0, 0)
	p.root = testpki.NewRoot(t, &x509.Certificate{Subject: pkix.Name{CommonName: "Test Root"}, NotAfter: long}, testpki.NewKey(t))
	p.issuing = p.root.IssueCA(t, &x509.Certificate{Subject: pkix.Name{CommonName: "Test Issuing CA"}, NotAfter: long}, testpki.NewKey(t))
	// The manufacturers have issued IDevIDs for years (some now expired).
	mfr := func(cn string) *testpki.CA {
		return testpki.NewRoot(t, &x509.Certificate{Subject: pkix.Name{CommonName: cn},
			NotBefore: p.now.AddDate(-5, 0, 0), NotAfter: long}, testpki.NewKey(t))
	}
	p.mfrA, p.mfrB = mfr("Manufacturer A"), mfr("Manufacturer B")
	p.dbPath = filepath.Join(p.dir, "ca.db")
	return p
}

// idevid makes a device identity from a manufacturer, valid from nb to na.
func (p *testPKI) idevid(t testing.TB, mfr *testpki.CA, serial string, nb, na time.Time) *x509.Certificate {
	t.Helper()
	return mfr.NewLeaf(t, &x509.Certificate{
		Subject:   pkix.Name{CommonName: "idevid-" + serial, SerialNumber: serial, Organization: []string{mfr.Cert.Subject.CommonName}},
		NotBefore: nb, NotAfter: na,
	}).Cert
}

// options are the authority's options with store s, signing as our issuing CA.
func (p *testPKI) options(s store.Store) Options {
	return Options{Store: s, Signer: p.issuing.Key, Chain: p.issuing.Chain}
}

// anyone admits IDevIDs of every trust store, every MAC secret and every pre-shared identity,
// as the built-in default profile does.
var anyone = DefaultProfile().Requesters

func (p *testPKI) config() Policy {
	return Policy{
		TrustStores: []TrustStore{
			{Name: "mfr-a", Roots: []*x509.Certificate{p.mfrA.Cert}},
			{Name: "mfr-b", Roots: []*x509.Certificate{p.mfrB.Cert}, AllowExpired: true},
		},
		MACSecrets: []MACSecret{{Reference: "demo", Secret: []byte("s3cret")}},
		Profiles: []ProfileOptions{
			{Label: "", Subject: SubjectRules{CopySerialNumber: true}, Requesters: anyone},
			{Label: "manual", ManualApproval: true, RetryAfter: 42 * time.Second, Requesters: anyone},
			{Label: "only-a", Requesters: []RequesterRule{{Kind: "idevid", From: []string{"mfr-a"}}}},
			{Label: "strict", Subject: SubjectRules{RequireCommonName: true, CommonNamePattern: `dev-[0-9]+`,
				Organization: []string{"Acme"}}, SAN: SANRules{Allow: []string{"dns"}, DNSPattern: `.*\.example`},
				AcceptKeyTypes: []string{"P-256"}, Requesters: anyone},
			{Label: "nosan", SAN: SANRules{Allow: []string{"none"}}, Requesters: anyone},
			{Label: "ordered", Subject: SubjectRules{CopySerialNumber: true, Organization: []string{"Acme"},
				OrganizationalUnit: []string{"Sensors"}}, Requesters: anyone},
		},
	}
}

func (p *testPKI) openStore(t testing.TB) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), p.dbPath, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func (p *testPKI) authority(t testing.TB, s *sqlite.Store, cfg Policy) *Authority {
	t.Helper()
	a, err := New(cfg, p.options(s))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

type csrOpts struct {
	subject pkix.Name
	dns     []string
	emails  []string
	key     crypto.Signer
}

func mkCSR(t testing.TB, o csrOpts) (*x509.CertificateRequest, crypto.Signer) {
	t.Helper()
	k := o.key
	if k == nil {
		k = testpki.NewKey(t)
	}
	return testpki.CSR(t, k, &x509.CertificateRequest{Subject: o.subject, DNSNames: o.dns, EmailAddresses: o.emails}), k
}
