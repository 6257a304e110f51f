package cmp

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"testing"
	"time"

	"coapca/errs"
	"coapca/internal/testpki"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

func newKey(t testing.TB, kind string) crypto.Signer {
	t.Helper()
	var k crypto.Signer
	var err error
	switch kind {
	case "p256":
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "p384":
		k, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "ed25519":
		_, k, err = ed25519.GenerateKey(rand.Reader)
	case "rsa":
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	}
	if err != nil || k == nil {
		t.Fatalf("key %s: %v", kind, err)
	}
	return k
}

// issue certifies key for cn, signed by parent (self-signed when parent is nil), with the
// SubjectKeyIdentifier cn (used as senderKID).
func issue(t testing.TB, parent *x509.Certificate, parentKey crypto.Signer, key crypto.Signer, cn string, isCA bool) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: cn},
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  isCA,
		SubjectKeyId:          []byte(cn),
	}
	if isCA {
		tmpl.KeyUsage |= x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	}
	if parent == nil {
		return testpki.SelfSigned(t, tmpl, key)
	}
	return (&testpki.CA{Cert: parent, Key: parentKey}).Issue(t, tmpl, key.Public())
}

func goPKI(t testing.TB) (caKey crypto.Signer, ca *x509.Certificate) {
	caKey = newKey(t, "p256")
	return caKey, issue(t, nil, nil, caKey, "Go Test CA", true)
}

// bodies returns one example of every PKIBody type.
func bodies(t *testing.T, caKey crypto.Signer, ca *x509.Certificate) []Body {
	devKey := newKey(t, "p256")
	dev := issue(t, ca, caKey, devKey, "dev", false)
	var tmpl CertTemplate
	if err := tmpl.SetSubject(pkix.Name{CommonName: "dev", Organization: []string{"coapca"}}); err != nil {
		t.Fatal(err)
	}
	tmpl.Extensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Value: []byte{0x30, 0x05, 0x82, 0x03, 'd', 'e', 'v'}}}
	tmpl.NotAfter = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	req, err := NewCertReqMsg(7, tmpl, nil, devKey)
	if err != nil {
		t.Fatal(err)
	}
	kurReq, err := NewCertReqMsg(0, tmpl, []AttributeTypeAndValue{NewOldCertIDControl(dev)}, devKey)
	if err != nil {
		t.Fatal(err)
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "dev"}}, devKey)
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := x509.ParseCertificateRequest(csrDER)
	cs, err := NewCertStatus(7, dev, nil)
	if err != nil {
		t.Fatal(err)
	}
	code := int64(42)
	inner := &Message{Header: Header{TransactionID: []byte("0123456789abcdef")}, Body: &PKIConf{}}
	if _, err := inner.Marshal(nil); err != nil {
		t.Fatal(err)
	}
	crl, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: time.Now(), NextUpdate: time.Now().Add(time.Hour)}, ca, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return []Body{
		&CAKeyUpdAnn{RootCAKeyUpdate: RootCAKeyUpdate{NewWithNew: ca, OldWithNew: dev}},
		&CAKeyUpdAnn{RootCAKeyUpdate: RootCAKeyUpdate{NewWithNew: ca, OldWithNew: dev, NewWithOld: dev}, V2: true},
		&CertAnn{Cert: dev},
		&RevAnn{Status: StatusRevocationNotification, CertID: CertID{Issuer: DirectoryName(dev.RawIssuer), Serial: dev.SerialNumber},
			WillBeRevokedAt: time.Now(), BadSinceDate: time.Now().Add(-time.Hour), CRLDetails: NewRevDetails(dev, 1).CRLEntryDetails},
		&CRLAnn{CRLs: [][]byte{crl}},
		&Nested{Messages: []*Message{inner, inner}},
		&CertReqMessages{BodyType: TypeIR, Requests: []CertReqMsg{req}},
		&CertRepMessage{BodyType: TypeIP, CAPubs: []*x509.Certificate{ca}, Responses: []CertResponse{{CertReqID: 7, Status: StatusInfo{Status: StatusAccepted}, Cert: dev}}},
		&CertReqMessages{BodyType: TypeCR, Requests: []CertReqMsg{req}},
		&CertRepMessage{BodyType: TypeCP, Responses: []CertResponse{{CertReqID: 7, Status: StatusInfo{Status: StatusWaiting, StatusString: []string{"pending"}}}}},
		&P10CR{CSR: csr},
		&CertReqMessages{BodyType: TypeKUR, Requests: []CertReqMsg{kurReq}},
		&CertRepMessage{BodyType: TypeKUP, Responses: []CertResponse{{CertReqID: 0, Status: StatusInfo{Status: StatusRejection, FailInfo: FailBadPOP | FailSystemFailure | FailBadAlg, StatusString: []string{"no"}}}}},
		&RevReqContent{Requests: []RevDetails{NewRevDetails(dev, 1)}},
		&RevRepContent{Status: []StatusInfo{{Status: StatusAccepted}}, RevCerts: []CertID{{Issuer: DirectoryName(dev.RawIssuer), Serial: dev.SerialNumber}}, CRLs: [][]byte{{0x30, 0x00}}},
		&PKIConf{},
		&GenContent{BodyType: TypeGenM, ITAVs: []InfoTypeAndValue{{Type: OIDITCACerts}, {Type: OIDITCertProfile, Value: MarshalCertProfile([]string{"tls"})}}},
		&GenContent{BodyType: TypeGenP, ITAVs: []InfoTypeAndValue{CACertsITAV([]*x509.Certificate{ca})}},
		&ErrorContent{Status: StatusInfo{Status: StatusRejection, FailInfo: FailDuplicateCertReq, StatusString: []string{"dup"}}, ErrorCode: &code, ErrorDetails: []string{"x", "y"}},
		&CertConfirmContent{Statuses: []CertStatus{cs, {CertHash: []byte{1, 2}, CertReqID: 1, StatusInfo: &StatusInfo{Status: StatusRejection, FailInfo: FailBadCertTemplate}, HashAlg: &pkix.AlgorithmIdentifier{Algorithm: OIDSHA256}}}},
		&PollReqContent{CertReqIDs: []int64{0, 7}},
		&PollRepContent{Entries: []PollRep{{CertReqID: 0, CheckAfter: 30, Reason: []string{"manual approval"}}, {CertReqID: 7, CheckAfter: 5}}},
	}
}

func TestRoundTripAllBodies(t *testing.T) {
	caKey, ca := goPKI(t)
	signers := map[string]crypto.Signer{"p256": newKey(t, "p256"), "p384": newKey(t, "p384"), "ed25519": newKey(t, "ed25519"), "rsa": newKey(t, "rsa")}
	protectors := map[string]Protector{
		"none":       nil,
		"pbm-sha1":   &PBMProtection{Secret: []byte("pw"), Reference: []byte("ref"), MAC: crypto.SHA1, Iterations: 500},
		"pbm-sha256": &PBMProtection{Secret: []byte("pw"), Reference: []byte("ref"), Iterations: 1000},
		"pbmac1":     &PBMAC1Protection{Secret: []byte("pw"), Reference: []byte("ref"), Iterations: 1000},
		"pbmac1-512": &PBMAC1Protection{Secret: []byte("pw"), PRF: crypto.SHA512, MAC: crypto.SHA512, Iterations: 1000},
	}
	for name, k := range signers {
		protectors["sig-"+name] = &SignatureProtection{Signer: k, Cert: issue(t, ca, caKey, k, "signer "+name, false), Chain: []*x509.Certificate{ca}}
	}
	seen := map[BodyType]bool{}
	for _, body := range bodies(t, caKey, ca) {
		seen[body.Type()] = true
		for pname, p := range protectors {
			t.Run(body.Type().String()+"/"+pname, func(t *testing.T) {
				hdr, err := NewRequestHeader(NameGN(pkix.Name{CommonName: "dev"}), DirectoryName(ca.RawSubject), nil, nil)
				if err != nil {
					t.Fatal(err)
				}
				hdr.SetImplicitConfirm()
				hdr.SetCertProfile("tls", "iot")
				hdr.SetConfirmWaitTime(time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC))
				hdr.FreeText = []string{"hello"}
				m := &Message{Header: hdr, Body: body}
				der, err := m.Marshal(p)
				if err != nil {
					t.Fatal(err)
				}
				got, err := Parse(der)
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				again, err := got.Marshal(nil)
				if err != nil || !bytes.Equal(again, der) {
					t.Fatalf("re-encoding differs (%v)", err)
				}
				if got.Body.Type() != body.Type() {
					t.Fatalf("type %s", got.Body.Type())
				}
				if !got.Header.ImplicitConfirm() || len(got.Header.CertProfile()) != 2 || got.Header.CertProfile()[1] != "iot" {
					t.Error("generalInfo lost")
				}
				if cwt, ok := got.Header.ConfirmWaitTime(); !ok || cwt.Year() != 2031 {
					t.Error("confirmWaitTime lost")
				}
				if got.Header.Sender.String() != "CN=dev" || !got.Header.Recipient.Equal(DirectoryName(ca.RawSubject)) {
					t.Errorf("names %q %q", got.Header.Sender, got.Header.Recipient)
				}
				if !bytes.Equal(got.Header.TransactionID, hdr.TransactionID) || !bytes.Equal(got.Header.SenderNonce, hdr.SenderNonce) {
					t.Error("transactionID/nonce lost")
				}
				switch pp := p.(type) {
				case nil:
					if got.ProtectionKind() != ProtectionNone {
						t.Error("unprotected message reports protection")
					}
					if got.VerifyMAC([]byte("pw")) == nil {
						t.Error("VerifyMAC accepted an unprotected message")
					}
				case *PBMProtection, *PBMAC1Protection:
					if err := got.VerifyMAC([]byte("pw")); err != nil {
						t.Error(err)
					}
					if err := got.VerifyMAC([]byte("pW")); !errors.Is(err, ErrBadMessageCheck) {
						t.Errorf("wrong secret: %v", err)
					}
				case *SignatureProtection:
					if !got.ProtectionCert().Equal(pp.Cert) || !got.ExtraCerts[1].Equal(ca) {
						t.Error("extraCerts order")
					}
					if !bytes.Equal(got.Header.SenderKID, pp.Cert.SubjectKeyId) {
						t.Error("senderKID is not the SKI")
					}
					if err := got.VerifySignature(got.ProtectionCert()); err != nil {
						t.Error(err)
					}
					if err := got.VerifySignature(ca); err == nil {
						t.Error("verified with the wrong key")
					}
				}
				if crm, ok := got.Body.(*CertReqMessages); ok {
					if _, err := crm.Requests[0].VerifyPOP(POPAuth{}); err != nil {
						t.Errorf("POP: %v", err)
					}
					tm := crm.Requests[0].Template
					if n, _ := tm.SubjectName(); n.CommonName != "dev" || !tm.NotAfter.Equal(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)) || len(tm.Extensions) != 1 {
						t.Errorf("template lost: %+v", tm)
					}
				}
			})
		}
	}
	for _, want := range []BodyType{TypeIR, TypeIP, TypeCR, TypeCP, TypeP10CR, TypeKUR, TypeKUP, TypeRR, TypeRP, TypePKIConf, TypeGenM, TypeGenP, TypeError, TypeCertConf, TypePollReq, TypePollRep,
		TypeCKUAnn, TypeCAnn, TypeRAnn, TypeCRLAnn, TypeNested} {
		if !seen[want] {
			t.Errorf("no round trip for %s", want)
		}
	}
}

func TestPOPWithEachKeyType(t *testing.T) {
	for _, kind := range []string{"p256", "p384", "ed25519", "rsa"} {
		t.Run(kind, func(t *testing.T) {
			k := newKey(t, kind)
			var tmpl CertTemplate
			_ = tmpl.SetSubject(pkix.Name{CommonName: kind})
			m, err := NewCertReqMsg(0, tmpl, nil, k)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := m.VerifyPOP(POPAuth{}); err != nil {
				t.Fatal(err)
			}
			// A POP by another key must fail.
			other := newKey(t, kind)
			_ = m.Template.SetPublicKey(other.Public())
			m.RawCertReq = nil
			if _, err := m.VerifyPOP(POPAuth{}); err == nil {
				t.Fatal("POP verified with a different template key")
			}
		})
	}
}

func TestCertHashEd25519UsesSHA512(t *testing.T) {
	caKey := newKey(t, "ed25519")
	ca := issue(t, nil, nil, caKey, "ed ca", true)
	leaf := issue(t, ca, caKey, newKey(t, "p256"), "leaf", false)
	h, err := CertHash(leaf, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := sha512.Sum512(leaf.Raw)
	if !bytes.Equal(h, want[:]) {
		t.Fatal("certHash of an Ed25519-signed certificate is not SHA-512")
	}
}

func TestResponseHeaderAndChecks(t *testing.T) {
	req, err := NewRequestHeader(NameGN(pkix.Name{CommonName: "dev"}), NullDN(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SenderKID = []byte("kid")
	if err := CheckRequest(&req); err != nil {
		t.Fatal(err)
	}
	rsp, err := NewResponseHeader(&req, NameGN(pkix.Name{CommonName: "ca"}))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rsp.RecipNonce, req.SenderNonce) || !bytes.Equal(rsp.TransactionID, req.TransactionID) ||
		!bytes.Equal(rsp.RecipKID, req.SenderKID) || bytes.Equal(rsp.SenderNonce, req.SenderNonce) || !rsp.Recipient.Equal(req.Sender) {
		t.Fatal("response header does not echo the request")
	}
	if err := CheckResponse(&req, &rsp); err != nil {
		t.Fatal(err)
	}
	bad := rsp
	bad.RecipNonce = []byte("0123456789abcdef")
	if err := CheckResponse(&req, &bad); FailInfoOf(err) != FailBadRecipientNonce {
		t.Errorf("nonce mismatch: %v", err)
	}
	bad = rsp
	bad.TransactionID = []byte("0123456789abcdef")
	if err := CheckResponse(&req, &bad); err == nil {
		t.Error("transactionID mismatch accepted")
	}
	short := req
	short.SenderNonce = []byte{1}
	if err := CheckRequest(&short); FailInfoOf(err) != FailBadSenderNonce {
		t.Errorf("short nonce: %v", err)
	}
	short = req
	short.PVNO = 1
	if err := CheckRequest(&short); FailInfoOf(err) != FailUnsupportedVersion {
		t.Errorf("pvno 1: %v", err)
	}
	if err := CheckMessageTime(&req, time.Now().Add(time.Hour), time.Minute); FailInfoOf(err) != FailBadTime {
		t.Errorf("messageTime: %v", err)
	}
	if err := CheckMessageTime(&req, time.Now(), time.Minute); err != nil {
		t.Error(err)
	}
}

func TestFailureInfoDER(t *testing.T) {
	tests := []struct {
		f    FailureInfo
		want []byte
	}{
		{FailBadAlg, []byte{0x03, 0x02, 0x07, 0x80}},
		{FailBadRequest, []byte{0x03, 0x02, 0x05, 0x20}},
		{FailBadPOP, []byte{0x03, 0x03, 0x06, 0x00, 0x40}},
		{FailDuplicateCertReq, []byte{0x03, 0x05, 0x05, 0x00, 0x00, 0x00, 0x20}},
		{FailBadAlg | FailSystemFailure, []byte{0x03, 0x05, 0x06, 0x80, 0x00, 0x00, 0x40}},
	}
	for _, tt := range tests {
		b := StatusInfo{Status: StatusRejection, FailInfo: tt.f}
		m := &Message{Body: &ErrorContent{Status: b}}
		der, err := m.Marshal(nil)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(der, tt.want) {
			t.Errorf("%v: % x not in % x", tt.f, tt.want, der)
		}
		got, err := Parse(der)
		if err != nil {
			t.Fatal(err)
		}
		if f := got.Body.(*ErrorContent).Status.FailInfo; f != tt.f {
			t.Errorf("parsed %v, want %v", f, tt.f)
		}
	}
}

func TestGenmContents(t *testing.T) {
	caKey, ca := goPKI(t)
	newCA := issue(t, nil, nil, newKey(t, "p256"), "New CA", true)
	rku := &RootCAKeyUpdate{NewWithNew: newCA, NewWithOld: issue(t, ca, caKey, newKey(t, "p256"), "nwo", true)}
	v, err := rku.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseRootCAKeyUpdate(v)
	if err != nil || !got.NewWithNew.Equal(newCA) || !got.NewWithOld.Equal(rku.NewWithOld) || got.OldWithNew != nil {
		t.Fatalf("rootCaKeyUpdate: %v", err)
	}
	certs, err := ParseCerts(CACertsITAV([]*x509.Certificate{ca, newCA}).Value)
	if err != nil || len(certs) != 2 {
		t.Fatalf("caCerts: %v", err)
	}
	var tmpl CertTemplate
	_ = tmpl.SetSubject(pkix.Name{CommonName: "tmpl"})
	crt := &CertReqTemplateContent{Template: tmpl, KeySpec: []AttributeTypeAndValue{{Type: asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 5, 1, 11}, Value: []byte{0x30, 0x09, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01}}}}
	v, err = crt.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	crt2, err := ParseCertReqTemplate(v)
	if err != nil || len(crt2.KeySpec) != 1 {
		t.Fatalf("certReqTemplate: %v", err)
	}
	if n, _ := crt2.Template.SubjectName(); n.CommonName != "tmpl" {
		t.Error("template subject lost")
	}
	list := []CRLStatus{{Issuer: []GeneralName{DirectoryName(ca.RawSubject)}, ThisUpdate: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)},
		{DPN: []byte{0xa0, 0x08, 0x86, 0x06, 'h', 't', 't', 'p', ':', '/'}}}
	v, err = MarshalCRLStatusList(list)
	if err != nil {
		t.Fatal(err)
	}
	list2, err := ParseCRLStatusList(v)
	if err != nil || len(list2) != 2 || !list2[0].ThisUpdate.Equal(list[0].ThisUpdate) || !bytes.Equal(list2[1].DPN, list[1].DPN) {
		t.Fatalf("crlStatusList: %v %+v", err, list2)
	}
	crl, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: time.Now(), NextUpdate: time.Now().Add(time.Hour)}, ca, caKey)
	if err != nil {
		t.Fatal(err)
	}
	crls, err := ParseCRLs(MarshalCRLs([][]byte{crl}))
	if err != nil || !bytes.Equal(crls[0], crl) {
		t.Fatalf("crls: %v", err)
	}
	if p, err := ParseCertProfile(MarshalCertProfile([]string{"a", "b"})); err != nil || len(p) != 2 {
		t.Fatalf("certProfile: %v", err)
	}
}

func TestParseRejectsGarbage(t *testing.T) {
	good := fixture(t, "ir_pbm_req1.der")
	for i, der := range [][]byte{nil, {0x30, 0x00}, good[:len(good)-1], append(append([]byte{}, good...), 0), {0x30, 0x03, 0x02, 0x01, 0x02}} {
		if _, err := Parse(der); err == nil {
			t.Errorf("case %d accepted", i)
		}
	}
	// A PBM with an absurd iteration count is refused rather than computed.
	m, _ := Parse(good)
	alg, _, _ := (&PBMProtection{Iterations: MaxIterations + 1}).params()
	m.Header.ProtectionAlg = &alg
	der, _ := m.Marshal(nil)
	m2, _ := Parse(der)
	if err := m2.VerifyMAC([]byte(fixtureSecret)); err == nil {
		t.Error("iteration count above the limit accepted")
	}
}

func TestTypedErrors(t *testing.T) {
	_, err := Parse([]byte{1, 2, 3})
	if errs.KindOf(err) != errs.BadRequest || FailInfoOf(err) != FailBadDataFormat {
		t.Errorf("Parse error typed %v/%v", errs.KindOf(err), FailInfoOf(err))
	}
	m, _ := Parse(fixture(t, "ir_pbm_req1.der"))
	err = m.VerifyMAC([]byte("nope"))
	if errs.KindOf(err) != errs.Unauthorized || FailInfoOf(err) != FailBadMessageCheck || !errors.Is(err, ErrBadMessageCheck) {
		t.Errorf("VerifyMAC error typed %v/%v: %v", errs.KindOf(err), FailInfoOf(err), err)
	}
	r := m.Body.(*CertReqMessages).Requests[0]
	r.POP.Signature = append([]byte{}, r.POP.Signature...)
	r.POP.Signature[8] ^= 1
	if _, err := r.VerifyPOP(POPAuth{}); errs.KindOf(err) != errs.BadRequest || FailInfoOf(err) != FailBadPOP {
		t.Errorf("VerifyPOP error typed %v/%v", errs.KindOf(err), FailInfoOf(err))
	}
}

func TestCertTemplateAllFieldsAndPOPVariants(t *testing.T) {
	k := newKey(t, "p256")
	spki, _ := x509.MarshalPKIXPublicKey(k.Public())
	ver := int64(2)
	issuer, _ := asn1.Marshal(pkix.Name{CommonName: "iss"}.ToRDNSequence())
	full := CertTemplate{Version: &ver, SerialNumber: big.NewInt(-129), SigningAlg: &pkix.AlgorithmIdentifier{Algorithm: OIDECDSAWithSHA256},
		Issuer: issuer, NotBefore: time.Date(2060, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2061, 1, 1, 0, 0, 0, 0, time.UTC)}
	_ = full.SetSubject(pkix.Name{CommonName: "full"})

	// raVerified POP, and a signature POP over poposkInput (template without publicKey,
	// RFC 4211 §4.1: the key travels in POPOSigningKeyInput).
	raV, err := NewCertReqMsg(1, full, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	raV.POPKind = POPRAVerified
	input := func() []byte {
		var b cryptobyte.Builder
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1(tagC(0), func(b *cryptobyte.Builder) { b.AddBytes(NameGN(pkix.Name{CommonName: "full"}).Raw) })
			b.AddBytes(spki)
		})
		return b.BytesOrPanic()
	}()
	alg, sig, err := sign(k, input)
	if err != nil {
		t.Fatal(err)
	}
	withInput, _ := NewCertReqMsg(2, full, nil, nil)
	withInput.POPKind, withInput.POP = POPSignature, &POPOSigningKey{Input: input, Algorithm: alg, Signature: sig}

	m := &Message{Body: &CertReqMessages{BodyType: TypeCR, Requests: []CertReqMsg{raV, withInput}}}
	der, err := m.Marshal(nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(der)
	if err != nil {
		t.Fatal(err)
	}
	reqs := got.Body.(*CertReqMessages).Requests
	if reqs[0].POPKind != POPRAVerified || func() bool { _, err := reqs[0].VerifyPOP(POPAuth{}); return err == nil }() {
		t.Error("raVerified lost or treated as a signature")
	}
	fullDN, _ := asn1.Marshal(pkix.Name{CommonName: "full"}.ToRDNSequence())
	if _, err := reqs[1].VerifyPOP(POPAuth{Sender: fullDN}); err != nil {
		t.Errorf("POP over poposkInput: %v", err)
	}
	tm := reqs[0].Template
	if *tm.Version != 2 || tm.SerialNumber.Int64() != -129 || !tm.SigningAlg.Algorithm.Equal(OIDECDSAWithSHA256) ||
		tm.NotBefore.Year() != 2060 || tm.NotAfter.Year() != 2061 {
		t.Errorf("template fields lost: %+v", tm)
	}
	if n, err := tm.IssuerName(); err != nil || n.CommonName != "iss" {
		t.Errorf("issuer %v %v", n, err)
	}
	if !got.Header.Sender.IsNullDN() || got.Header.Sender.String() != "" {
		t.Errorf("default sender %q", got.Header.Sender)
	}
	g := &GenContent{BodyType: TypeGenP, ITAVs: []InfoTypeAndValue{RootCACertITAV(newCertForTest(t))}}
	if it, ok := g.Find(OIDITRootCACert); !ok || it.Value == nil {
		t.Error("Find")
	}
}

func newCertForTest(t *testing.T) *x509.Certificate {
	k, ca := goPKI(t)
	_ = k
	return ca
}

func TestNestingLimit(t *testing.T) {
	m := &Message{Body: &PKIConf{}}
	if _, err := m.Marshal(nil); err != nil {
		t.Fatal(err)
	}
	for depth := 1; depth <= maxNesting+1; depth++ {
		m = &Message{Body: &Nested{Messages: []*Message{m}}}
		der, err := m.Marshal(nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = Parse(der)
		if depth <= maxNesting && err != nil {
			t.Fatalf("depth %d: %v", depth, err)
		}
		if depth > maxNesting && err == nil {
			t.Fatalf("depth %d accepted", depth)
		}
	}
}
