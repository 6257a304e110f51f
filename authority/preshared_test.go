package authority

import (
	"crypto/x509/pkix"
	"testing"

	"coapca/errs"
	"coapca/internal/testpki"
)

// TestPreShared: a pre-shared (OSCORE) identity enrolls only once registered, only under its
// labels, never re-enrolls, and is recorded as psk:NAME.
func TestPreShared(t *testing.T) {
	p := newPKI(t)
	s := p.openStore(t)
	a := p.authority(t, s, p.config())
	if err := a.AllowPreShared("sensor-17", []string{"", "strict"}); err != nil {
		t.Fatal(err)
	}
	if err := a.AllowPreShared("bad", []string{"no-such-label"}); err == nil {
		t.Error("AllowPreShared accepted an unknown label")
	}
	if err := a.AllowPreShared("", nil); err == nil {
		t.Error("AllowPreShared accepted an empty name")
	}
	psk := func(name string) Requester {
		return Requester{PreShared: name, Transport: TransportOSCORE, Protocol: ProtocolEST}
	}
	for _, tt := range []struct {
		name, label, who string
		op               Op
		want             errs.Kind
		ok               bool
	}{
		{"enroll default", "", "sensor-17", OpEnroll, 0, true},
		{"serverkeygen", "", "sensor-17", OpServerKeyGen, 0, true},
		{"label not allowed", "manual", "sensor-17", OpEnroll, errs.Forbidden, false},
		{"unknown identity", "", "nobody", OpEnroll, errs.Unauthorized, false},
		{"no re-enrollment", "", "sensor-17", OpReenroll, errs.Forbidden, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			csr, _ := mkCSR(t, csrOpts{subject: pkix.Name{CommonName: "psk-dev"}})
			r := CertRequest{Op: tt.op, Label: tt.label, CSR: csr, Requester: psk(tt.who)}
			if tt.op == OpServerKeyGen {
				r.PublicKey = testpki.NewKey(t).Public()
			}
			iss, err := a.Issue(ctx, r)
			wantKind(t, err, tt.want, tt.ok)
			if tt.ok {
				rec, err := s.Cert(ctx, iss.Serial)
				if err != nil || rec.RequesterRef != "psk:sensor-17" {
					t.Fatalf("record %+v, %v", rec, err)
				}
			}
		})
	}
}
