package est

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"reflect"
	"testing"
	"time"

	"coapca/est/cms"
)

// tampSamples is one message of every kind, as coapca writes them.
func tampSamples(tb testing.TB) []*TAMPMessage {
	_, ta := returnFixture(tb)
	_, old := returnFixture(tb)
	community := asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 7}
	return []*TAMPMessage{
		{Kind: TAMPStatusQuery, Terse: true, SeqNum: 1, HasRef: true},
		{Kind: TAMPStatusResponse, SeqNum: 1, HasRef: true, KeyIDs: [][]byte{SubjectKeyID(ta)}},
		{Kind: TAMPUpdate, SeqNum: 2, HasRef: true, Add: []*x509.Certificate{ta}, Remove: [][]byte{old.RawSubjectPublicKeyInfo}},
		{Kind: TAMPUpdateConfirm, SeqNum: 2, HasRef: true, Status: []int{0, 25}},
		{Kind: TAMPApexUpdate, SeqNum: 3, HasRef: true, Apex: ta, ClearTAs: true},
		{Kind: TAMPApexUpdateConfirm, SeqNum: 3, HasRef: true, Status: []int{0}},
		{Kind: TAMPCommunityUpdate, Terse: true, SeqNum: 4, HasRef: true, CommunityAdd: []asn1.ObjectIdentifier{community}},
		{Kind: TAMPCommunityUpdateConfirm, SeqNum: 4, HasRef: true, Status: []int{24}},
		{Kind: TAMPSeqNumAdjust, SeqNum: 5, HasRef: true, Target: []byte{0x84, 0x03, 'u', ':', 'x'}},
		{Kind: TAMPSeqNumAdjustConfirm, SeqNum: 5, HasRef: true, Status: []int{0}},
		{Kind: TAMPError, MsgType: OIDTAMPUpdate, Status: []int{21}, SeqNum: 2, HasRef: true},
		{Kind: TAMPError, MsgType: OIDTAMPStatusQuery, Status: []int{127}},
	}
}

// TestTAMPRoundTrip: every TAMP message kind of RFC 5934 §4 that coapca writes reads back equal,
// signed and opened; the kind table covers every kind.
func TestTAMPRoundTrip(t *testing.T) {
	for k := TAMPKind(0); k < numTAMPKinds; k++ {
		if info := tampKinds[k]; info.name == "" || info.oid == nil || info.media == "" {
			t.Errorf("kind %d has no table entry", k)
		}
	}
	key, cert := returnFixture(t)
	for _, m := range tampSamples(t) {
		t.Run(m.Kind.String(), func(t *testing.T) {
			der, err := MarshalTAMP(m)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseTAMP(m.Kind, der)
			if err != nil {
				t.Fatal(err)
			}
			if !tampEqual(got, m) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, m)
			}
			signed, err := SignTAMP(rand.Reader, m, key, []*x509.Certificate{cert}, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			o, err := OpenTAMP(signed, m.Kind, false)
			if err != nil || o.Signed == nil || !o.Signed.Signer.Equal(cert) || !tampEqual(o.TAMPMessage, m) {
				t.Fatalf("opened: %+v, %v", o, err)
			}
			if _, err := OpenTAMP(signed, (m.Kind+1)%numTAMPKinds, false); err == nil {
				t.Fatal("opened as another kind than its media type announces")
			}
			plain, _ := cms.ContentInfo(m.Kind.OID(), der)
			if _, err := OpenTAMP(plain, m.Kind, false); err == nil {
				t.Fatal("an unsigned message was accepted where a signature is required")
			}
			if _, err := OpenTAMP(plain, m.Kind, true); err != nil {
				t.Fatalf("unsigned where allowed: %v", err)
			}
		})
	}
	for _, bad := range []*TAMPMessage{
		{Kind: TAMPUpdate, HasRef: true},
		{Kind: TAMPApexUpdate, HasRef: true},
		{Kind: TAMPUpdateConfirm, HasRef: true},
		{Kind: TAMPError, Status: []int{0}},
		{Kind: TAMPSeqNumAdjustConfirm, HasRef: true, Status: []int{128}},
		{Kind: TAMPStatusQuery, SeqNum: -1, HasRef: true},
		{Kind: TAMPStatusQuery, HasRef: true, Target: []byte{0x30, 0x00}},
	} {
		if _, err := MarshalTAMP(bad); err == nil {
			t.Errorf("marshalled %+v", bad)
		}
	}
}

func tampEqual(a, b *TAMPMessage) bool {
	certs := func(cs []*x509.Certificate) [][]byte {
		var out [][]byte
		for _, c := range cs {
			out = append(out, c.Raw)
		}
		return out
	}
	ac, bc := *a, *b
	ac.Add, bc.Add, ac.Apex, bc.Apex = nil, nil, nil, nil
	apexEq := (a.Apex == nil) == (b.Apex == nil) && (a.Apex == nil || bytes.Equal(a.Apex.Raw, b.Apex.Raw))
	return apexEq && reflect.DeepEqual(certs(a.Add), certs(b.Add)) && reflect.DeepEqual(ac, bc)
}

func FuzzParseTAMP(f *testing.F) {
	for _, m := range tampSamples(f) {
		der, _ := MarshalTAMP(m)
		f.Add(uint8(m.Kind), der)
	}
	f.Fuzz(func(t *testing.T, k uint8, b []byte) {
		kind := TAMPKind(k % uint8(numTAMPKinds))
		m, err := ParseTAMP(kind, b)
		if err != nil {
			return
		}
		der, err := MarshalTAMP(m)
		if err != nil {
			// Verbose responses are read but not written back: their status is what counts.
			return
		}
		again, err := ParseTAMP(kind, der)
		if err != nil || !tampEqual(again, m) {
			t.Fatalf("re-encoding of %x (%s) does not read back: %v\n%+v\n%+v", b, kind, err, m, again)
		}
	})
}

func FuzzOpenTAMP(f *testing.F) {
	key, cert := returnFixture(f)
	for _, m := range tampSamples(f)[:3] {
		der, _ := SignTAMP(rand.Reader, m, key, []*x509.Certificate{cert}, time.Now())
		f.Add(der)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := OpenTAMP(b, -1, true)
		if err != nil {
			return
		}
		if o.Kind < 0 || o.Kind >= numTAMPKinds {
			t.Fatalf("kind %d", o.Kind)
		}
	})
}
