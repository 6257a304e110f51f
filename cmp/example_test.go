package cmp_test

import (
	"crypto"
	"crypto/x509"
	"fmt"

	"coapca/cmp"
	"coapca/errs"
)

// A server answering an ir protected by a shared secret (RFC 9483 §4.1.5).
func Example_server() {
	var (
		reqDER  []byte // the POST body
		secret  []byte // looked up by req.Header.SenderKID
		issue   func(cmp.CertTemplate) (*x509.Certificate, error)
		caName  = cmp.NullDN() // cmp.DirectoryName(caCert.RawSubject)
		answer  cmp.Body
		reqBody *cmp.CertReqMessages
	)
	req, err := cmp.Parse(reqDER)
	if err != nil {
		return // answer an unprotected error message with badDataFormat
	}
	// The failure bits of the codec's errors (cmp.FailInfoOf); the server maps its own errors
	// (errs kinds) to PKIFailureInfo in a table of its own.
	reject := func(err error) cmp.StatusInfo {
		return cmp.StatusInfo{Status: cmp.StatusRejection, FailInfo: cmp.FailInfoOf(err), StatusString: []string{errs.Message(err)}}
	}
	if err := cmp.CheckRequest(&req.Header); err != nil {
		answer = &cmp.ErrorContent{Status: reject(err)}
	} else if err := req.VerifyMAC(secret); err != nil {
		answer = &cmp.ErrorContent{Status: reject(err)}
	} else if reqBody, _ = req.Body.(*cmp.CertReqMessages); reqBody == nil || reqBody.Type() != cmp.TypeIR {
		answer = &cmp.ErrorContent{Status: reject(cmp.WithFailInfo(errs.New(errs.BadRequest, "expected ir"), cmp.FailBadRequest))}
	} else {
		r := reqBody.Requests[0]
		rsp := cmp.CertResponse{CertReqID: r.CertReqID}
		// The key that the certificate certifies is the one whose possession was proven.
		if _, err := r.VerifyPOP(cmp.POPAuth{Secret: secret}); err != nil {
			rsp.Status = reject(err) // badPOP
		} else if cert, err := issue(r.Template); err != nil {
			rsp.Status = reject(cmp.WithFailInfo(err, cmp.FailBadCertTemplate))
		} else {
			rsp.Status, rsp.Cert = cmp.StatusInfo{Status: cmp.StatusAccepted}, cert
		}
		answer = &cmp.CertRepMessage{BodyType: cmp.TypeIP, Responses: []cmp.CertResponse{rsp}}
	}
	hdr, _ := cmp.NewResponseHeader(&req.Header, caName)
	out, err := (&cmp.Message{Header: hdr, Body: answer}).Marshal(&cmp.PBMProtection{Secret: secret})
	fmt.Println(len(out), err)
}

// A client building a signature-protected cr and confirming the certificate.
func Example_client() {
	var (
		key, newKey crypto.Signer
		cert, ca    *x509.Certificate
		roundTrip   func([]byte) ([]byte, error) // CoAP or HTTP POST
	)
	var tmpl cmp.CertTemplate
	tmpl.Subject = cert.RawSubject
	crm, _ := cmp.NewCertReqMsg(0, tmpl, nil, newKey)
	hdr, _ := cmp.NewRequestHeader(cmp.DirectoryName(cert.RawSubject), cmp.DirectoryName(ca.RawSubject), nil, nil)
	prot := &cmp.SignatureProtection{Signer: key, Cert: cert}
	reqDER, _ := (&cmp.Message{Header: hdr, Body: &cmp.CertReqMessages{BodyType: cmp.TypeCR, Requests: []cmp.CertReqMsg{crm}}}).Marshal(prot)
	rspDER, _ := roundTrip(reqDER)
	rsp, err := cmp.Parse(rspDER)
	if err != nil {
		return
	}
	if err := cmp.CheckResponse(&hdr, &rsp.Header); err != nil {
		return
	}
	if err := rsp.VerifySignature(rsp.ProtectionCert()); err != nil { // and validate that cert
		return
	}
	res, err := cmp.ParseEnrollResponse(rsp, 0)
	if err != nil || res.Waiting {
		return // polling: send a PollReqContent after res.CheckAfter
	}
	cs, _ := cmp.NewCertStatus(0, res.Cert, nil)
	confHdr, _ := cmp.NewRequestHeader(hdr.Sender, hdr.Recipient, hdr.TransactionID, rsp.Header.SenderNonce)
	confDER, _ := (&cmp.Message{Header: confHdr, Body: &cmp.CertConfirmContent{Statuses: []cmp.CertStatus{cs}}}).Marshal(prot)
	_, _ = roundTrip(confDER) // expect pkiconf
}
