package cmp

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"strings"
	"testing"

	"coapca/errs"
)

// TestVerifyPOPRules: the RFC 4211 §4.1 rules for POPOSigningKey, and the key VerifyPOP
// reports as proven (the only one a certificate may be issued for).
func TestVerifyPOPRules(t *testing.T) {
	mine, theirs := newKey(t, "p256"), newKey(t, "p256")
	spki := func(k crypto.Signer) []byte {
		der, err := x509.MarshalPKIXPublicKey(k.Public())
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	secret := []byte("shared secret")
	signerDN, _ := asn1.Marshal(pkix.Name{CommonName: "signer"}.ToRDNSequence())
	signerGN := DirectoryName(signerDN)
	build := func(subject bool, tmplKey, inputKey, popKey crypto.Signer, macSecret []byte, sender *GeneralName) CertReqMsg {
		var tmpl CertTemplate
		if subject {
			_ = tmpl.SetSubject(pkix.Name{CommonName: "dev"})
		}
		if tmplKey != nil {
			_ = tmpl.SetPublicKey(tmplKey.Public())
		}
		if inputKey == nil { // POP over certReq
			m, err := NewCertReqMsg(0, tmpl, nil, popKey)
			if err != nil {
				t.Fatal(err)
			}
			return m
		}
		m, err := NewCertReqMsg(0, tmpl, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		var mac []byte
		if sender == nil {
			if mac, err = NewPublicKeyMAC(macSecret, spki(inputKey), &PBMProtection{Iterations: 1000}); err != nil {
				t.Fatal(err)
			}
		}
		in, err := NewPOPOSigningKeyInput(sender, mac, spki(inputKey))
		if err != nil {
			t.Fatal(err)
		}
		if err := m.SignPOPOSigningKeyInput(popKey, in); err != nil {
			t.Fatal(err)
		}
		return m
	}
	tests := []struct {
		name   string
		m      CertReqMsg
		auth   POPAuth
		proven crypto.Signer // nil = must fail
	}{
		{"over certReq", build(true, mine, nil, mine, nil, nil), POPAuth{}, mine},
		{"over certReq by another key", build(true, mine, nil, theirs, nil, nil), POPAuth{}, nil},
		{"input with subject and key in the template", build(true, theirs, mine, mine, secret, nil), POPAuth{Secret: secret}, nil},
		{"input key differs from the template's", build(false, theirs, mine, mine, secret, nil), POPAuth{Secret: secret}, nil},
		{"input key equals the template's", build(false, mine, mine, mine, secret, nil), POPAuth{Secret: secret}, mine},
		{"publicKeyMAC", build(true, nil, mine, mine, secret, nil), POPAuth{Secret: secret}, mine},
		{"publicKeyMAC with another secret", build(true, nil, mine, mine, []byte("other"), nil), POPAuth{Secret: secret}, nil},
		{"publicKeyMAC without a shared secret", build(true, nil, mine, mine, secret, nil), POPAuth{Sender: signerDN}, nil},
		{"publicKeyMAC beyond the MAC limits", build(true, nil, mine, mine, secret, nil), POPAuth{Secret: secret, Limits: MACLimits{MaxIterations: 500}}, nil},
		{"sender = the authenticated signer", build(true, nil, mine, mine, nil, &signerGN), POPAuth{Sender: signerDN}, mine},
		{"sender without an authenticated signer", build(true, nil, mine, mine, nil, &signerGN), POPAuth{Secret: secret}, nil},
		{"sender naming someone else", build(true, nil, mine, mine, nil, &signerGN), POPAuth{Sender: []byte{0x30, 0x00}}, nil},
		{"input signed by another key", build(true, nil, mine, theirs, secret, nil), POPAuth{Secret: secret}, nil},
		{"raVerified", func() CertReqMsg {
			m := build(true, mine, nil, mine, nil, nil)
			m.POPKind, m.POP = POPRAVerified, nil
			return m
		}(), POPAuth{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Through the wire, as the server sees it.
			der, err := (&Message{Body: &CertReqMessages{BodyType: TypeIR, Requests: []CertReqMsg{tt.m}}}).Marshal(nil)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Parse(der)
			if err != nil {
				t.Fatal(err)
			}
			m := got.Body.(*CertReqMessages).Requests[0]
			key, err := m.VerifyPOP(tt.auth)
			if tt.proven == nil {
				if err == nil {
					t.Fatal("accepted")
				}
				if errs.KindOf(err) != errs.BadRequest || FailInfoOf(err) != FailBadPOP {
					t.Errorf("error typed %v/%v: %v", errs.KindOf(err), FailInfoOf(err), err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(key, spki(tt.proven)) {
				t.Error("VerifyPOP reports another key than the one that signed")
			}
		})
	}
}

// TestShortError: diagnostics for the peer are one short line without encoding/asn1 dumps; the
// full text stays in Error() for the log.
func TestShortError(t *testing.T) {
	var v struct{ N int }
	_, asn1Err := asn1.Unmarshal([]byte{0x30, 0x03, 0x04, 0x01, 0x00}, &v)
	if asn1Err == nil {
		t.Fatal("no asn1 error to test with")
	}
	tests := []struct {
		err  error
		want string
	}{
		{errors.New("cmp: bad PKIHeader"), "cmp: bad PKIHeader"},
		{errors.New("first line\nsecond line"), "first line"},
		{errors.Join(errors.New("bad AlgorithmIdentifier"), asn1Err), "bad AlgorithmIdentifier"},
		{asn1Err, "ASN.1 structure error"},
		{errors.New("header: " + asn1Err.Error()), "header: ASN.1 structure error"},
	}
	for _, tt := range tests {
		if got := shortError(tt.err); got != tt.want {
			t.Errorf("shortError(%q) = %q, want %q", tt.err, got, tt.want)
		}
	}
	long := shortError(errors.New(strings.Repeat("x", 1000)))
	if len(long) > maxDiagnostic+len("…") {
		t.Errorf("%d bytes", len(long))
	}
	f := failure(errs.BadRequest, FailBadDataFormat, errors.New("header: "+asn1Err.Error()))
	if msg := errs.Message(f); strings.Contains(msg, "asn1:") {
		t.Errorf("client-visible %q", msg)
	}
	if !strings.Contains(f.Error(), asn1Err.Error()) {
		t.Errorf("the log loses the cause: %q", f.Error())
	}
}
