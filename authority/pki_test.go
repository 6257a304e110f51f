package authority

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"path/filepath"
	"testing"
	"time"

	"coapca/kms"
	"coapca/store/sqlite"
)

// testPKI is an in-memory PKI for the tests: our root and issuing CA, two manufacturers and
// their device identities, built fresh for every test (expiry matters).
type testPKI struct {
	dir                 string
	root, issuing       *x509.Certificate
	rootKey, issuingKey crypto.Signer
	mfrA, mfrB          *x509.Certificate
	mfrAKey, mfrBKey    crypto.Signer
	dbPath              string
	now                 time.Time
}

var serialCounter = big.NewInt(1000)

func mkCert(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	serialCounter = new(big.Int).Add(serialCounter, big.NewInt(1))
	tmpl.SerialNumber = serialCounter
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func caTmpl(cn string, nb, na time.Time) *x509.Certificate {
	return &x509.Certificate{Subject: pkix.Name{CommonName: cn}, NotBefore: nb, NotAfter: na, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
}

func newKey(t testing.TB) crypto.Signer {
	k, err := kms.GenerateP256()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newPKI(t testing.TB) *testPKI {
	t.Helper()
	p := &testPKI{dir: t.TempDir(), now: time.Now()}
	long := p.now.AddDate(10, 0, 0)
	p.rootKey, p.issuingKey, p.mfrAKey, p.mfrBKey = newKey(t), newKey(t), newKey(t), newKey(t)
	p.root = mkCert(t, caTmpl("Test Root", p.now.Add(-time.Hour), long), nil, p.rootKey.Public(), p.rootKey)
	p.issuing = mkCert(t, caTmpl("Test Issuing CA", p.now.Add(-time.Hour), long), p.root, p.issuingKey.Public(), p.rootKey)
	p.mfrA = mkCert(t, caTmpl("Manufacturer A", p.now.AddDate(-5, 0, 0), long), nil, p.mfrAKey.Public(), p.mfrAKey)
	p.mfrB = mkCert(t, caTmpl("Manufacturer B", p.now.AddDate(-5, 0, 0), long), nil, p.mfrBKey.Public(), p.mfrBKey)
	p.dbPath = filepath.Join(p.dir, "ca.db")
	return p
}

// idevid makes a device identity from a manufacturer, valid from nb to na.
func (p *testPKI) idevid(t testing.TB, mfr *x509.Certificate, mfrKey crypto.Signer, serial string, nb, na time.Time) (*x509.Certificate, crypto.Signer) {
	k := newKey(t)
	c := mkCert(t, &x509.Certificate{
		Subject:   pkix.Name{CommonName: "idevid-" + serial, SerialNumber: serial, Organization: []string{mfr.Subject.CommonName}},
		NotBefore: nb, NotAfter: na, KeyUsage: x509.KeyUsageDigitalSignature,
	}, mfr, k.Public(), mfrKey)
	return c, k
}

// anyone admits IDevIDs of every trust store, every MAC secret and every pre-shared identity,
// as the built-in default profile does.
var anyone = DefaultProfile().Requesters

func (p *testPKI) config() Policy {
	return Policy{
		TrustStores: []TrustStore{
			{Name: "mfr-a", Roots: []*x509.Certificate{p.mfrA}},
			{Name: "mfr-b", Roots: []*x509.Certificate{p.mfrB}, AllowExpired: true},
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
	a, err := New(cfg, Options{Store: s, Signer: p.issuingKey, Chain: []*x509.Certificate{p.issuing, p.root}})
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
		k = newKey(t)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: o.subject, DNSNames: o.dns, EmailAddresses: o.emails}, k)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return csr, k
}
