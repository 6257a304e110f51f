package client

import (
	"encoding/asn1"
	"testing"

	"coapca/cmp"
)

func TestGenMRequest(t *testing.T) {
	for _, tt := range []struct {
		name      string
		in        []string
		want      []asn1.ObjectIdentifier
		wantValue []bool // the ITAV carries a value (crls: a CRLStatusList, RFC 9483 §4.3.4)
		wantErr   bool
	}{
		{name: "all", in: []string{"cacerts", "RootUpdate", "template", "crls"},
			want:      []asn1.ObjectIdentifier{cmp.OIDITCACerts, cmp.OIDITRootCAKeyUpdate, cmp.OIDITCertReqTemplate, cmp.OIDITCRLStatusList},
			wantValue: []bool{false, false, false, true}},
		{name: "none", in: nil},
		{name: "unknown", in: []string{"cacerts", "keypairparam"}, wantErr: true},
		{name: "empty name", in: []string{""}, wantErr: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := GenMRequest(tt.in...)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("accepted: %v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("%d ITAVs, want %d", len(got), len(tt.want))
			}
			for i, it := range got {
				if !it.Type.Equal(tt.want[i]) || (len(it.Value) > 0) != tt.wantValue[i] {
					t.Errorf("ITAV %d: %v with %d value octets", i, it.Type, len(it.Value))
				}
			}
		})
	}
}
