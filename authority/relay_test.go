package authority

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"testing"
	"time"

	"coapca/errs"
	"coapca/internal/testpki"
)

// TestAuthorizeRelayAttacks: a CMP registrar in RA mode re-protects what it forwards, so the
// upstream CA sees only the RA (RFC 9483 §5.2.3.1). Each case is a requester that tries to get
// its request laundered through the RA under a label whose profile does not admit it.
func TestAuthorizeRelayAttacks(t *testing.T) {
	p := newPKI(t)
	s := p.openStore(t)
	a := p.authority(t, s, p.authzConfig(t))
	devA := p.idevid(t, p.mfrA, "A-1", p.now.Add(-time.Hour), noExpiry())
	devB := p.idevid(t, p.mfrB, "B-1", p.now.Add(-time.Hour), noExpiry())
	ldev, _ := enrolled(t, a, devA, pkix.Name{CommonName: "dev-1"})
	rogue := p.idevid(t, testpki.NewCA(t, "Rogue"), "R-1", p.now.Add(-time.Hour), noExpiry())
	cert := func(c *x509.Certificate, tr Transport) Requester {
		return Requester{Chain: []*x509.Certificate{c}, Transport: tr, Protocol: ProtocolCMP}
	}
	mac := func(ref string) Requester {
		return Requester{SecretRef: ref, Transport: TransportCoAP, Protocol: ProtocolCMP}
	}
	tests := []struct {
		name  string
		req   Requester
		label string
		want  errs.Kind // -1 = admitted
	}{
		{"manufacturer A device under its label", cert(devA, TransportCoAP), "", -1},
		{"MAC secret named by the label's rule", mac("demo"), "", -1},
		{"our certificate under the label it was issued under", cert(ldev.Cert, TransportCoAP), "", -1},
		{"attack: anonymous requester", Requester{Transport: TransportCoAP, Protocol: ProtocolCMP}, "", errs.Unauthorized},
		{"attack: certificate of an unknown CA", cert(rogue, TransportCoAP), "", errs.Unauthorized},
		{"attack: manufacturer B device under A's label", cert(devB, TransportCoAP), "", errs.Forbidden},
		{"attack: manufacturer A device under B's label", cert(devA, TransportCoAP), "servers", errs.Forbidden},
		{"attack: MAC secret the label does not name", mac("other"), "", errs.Forbidden},
		{"attack: unknown MAC reference", mac("nobody"), "", errs.Unauthorized},
		{"attack: transport the rule excludes", cert(devA, TransportCoAP), "dtls-only", errs.Forbidden},
		{"attack: unknown label", mac("demo"), "nope", errs.NotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := a.AuthorizeRelay(context.Background(), tt.req, tt.label)
			if tt.want < 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || errs.KindOf(err) != tt.want {
				t.Fatalf("got %v, want kind %v", err, tt.want)
			}
		})
	}
}
