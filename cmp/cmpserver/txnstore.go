package cmpserver

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"time"

	"coapca/authority"
	"coapca/cmp"
	"coapca/errs"
)

// txnState is what an open transaction needs to continue on another instance, as JSON in the
// transaction store: who owns it, where it stands, and the request as the authority takes it
// (the Requester is that of the message being answered, so it is not kept).
type txnState struct {
	Who          string       `json:"who"`
	BodyType     cmp.BodyType `json:"body"`
	Label        string       `json:"label"`
	CertReqID    int64        `json:"cert_req_id"`
	PendingID    string       `json:"pending_id,omitempty"`
	IssuedSerial string       `json:"issued,omitempty"`
	LastNonce    []byte       `json:"last_nonce,omitempty"`

	Op         authority.Op `json:"op,omitempty"`
	RequestKey []byte       `json:"request_key,omitempty"`
	RAVerified bool         `json:"ra_verified,omitempty"`
	// P10CR is the PKCS#10 request of a p10cr; otherwise the CertTemplate's fields
	// (templateCSR): the proven key, the subject and the SANs.
	P10CR      []byte   `json:"p10cr,omitempty"`
	SPKI       []byte   `json:"spki,omitempty"`
	RawSubject []byte   `json:"subject,omitempty"`
	DNSNames   []string `json:"dns,omitempty"`
	Emails     []string `json:"emails,omitempty"`
	IPs        [][]byte `json:"ips,omitempty"`
	URIs       []string `json:"uris,omitempty"`
}

// encode returns the stored form of x. The caller holds s.mu.
func (x *txn) encode() ([]byte, error) {
	st := txnState{Who: x.who, BodyType: x.bodyType, Label: x.label, CertReqID: x.certReqID,
		PendingID: x.pendingID, LastNonce: x.lastNonce, Op: x.creq.Op, RequestKey: x.creq.RequestKey,
		RAVerified: x.creq.RAVerified}
	if x.issued != nil {
		st.IssuedSerial = x.issued.Serial
	}
	if csr := x.creq.CSR; csr != nil {
		if x.bodyType == cmp.TypeP10CR {
			st.P10CR = csr.Raw
		} else {
			spki, err := x509.MarshalPKIXPublicKey(csr.PublicKey)
			if err != nil {
				return nil, fmt.Errorf("cmp: transaction state: %w", err)
			}
			st.SPKI, st.RawSubject, st.DNSNames, st.Emails = spki, csr.RawSubject, csr.DNSNames, csr.EmailAddresses
			for _, ip := range csr.IPAddresses {
				st.IPs = append(st.IPs, []byte(ip))
			}
			for _, u := range csr.URIs {
				st.URIs = append(st.URIs, u.String())
			}
		}
	}
	return json.Marshal(st)
}

// decodeTxn rebuilds the transaction id from its stored form.
func (s *Service) decodeTxn(ctx context.Context, id string, b []byte, expires time.Time) (*txn, error) {
	var st txnState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("transaction state: %w", err)
	}
	x := &txn{id: id, who: st.Who, bodyType: st.BodyType, label: st.Label, certReqID: st.CertReqID,
		pendingID: st.PendingID, lastNonce: st.LastNonce, expires: expires, stored: true,
		creq: authority.CertRequest{Op: st.Op, Label: st.Label, RequestKey: st.RequestKey, RAVerified: st.RAVerified}}
	switch {
	case st.P10CR != nil:
		csr, err := x509.ParseCertificateRequest(st.P10CR)
		if err != nil {
			return nil, fmt.Errorf("transaction state: PKCS#10: %w", err)
		}
		x.creq.CSR = csr
	case st.SPKI != nil:
		pub, err := x509.ParsePKIXPublicKey(st.SPKI)
		if err != nil {
			return nil, fmt.Errorf("transaction state: public key: %w", err)
		}
		csr := &x509.CertificateRequest{PublicKey: pub, RawSubject: st.RawSubject, DNSNames: st.DNSNames, EmailAddresses: st.Emails}
		if st.RawSubject != nil {
			var rdn pkix.RDNSequence
			if rest, err := asn1.Unmarshal(st.RawSubject, &rdn); err != nil || len(rest) > 0 {
				return nil, errors.New("transaction state: bad subject")
			}
			csr.Subject.FillFromRDNSequence(&rdn)
		}
		for _, ip := range st.IPs {
			csr.IPAddresses = append(csr.IPAddresses, net.IP(slices.Clone(ip)))
		}
		for _, raw := range st.URIs {
			u, err := url.Parse(raw)
			if err != nil {
				return nil, fmt.Errorf("transaction state: %w", err)
			}
			csr.URIs = append(csr.URIs, u)
		}
		x.creq.CSR, x.creq.PublicKey = csr, pub
	}
	if st.IssuedSerial != "" {
		rec, err := s.auth.Certificate(ctx, st.IssuedSerial)
		if err != nil {
			return nil, fmt.Errorf("transaction state: certificate %s: %w", st.IssuedSerial, err)
		}
		cert, err := x509.ParseCertificate(rec.DER)
		if err != nil {
			return nil, fmt.Errorf("transaction state: certificate %s: %w", st.IssuedSerial, err)
		}
		x.issued = &authority.Issued{Cert: cert, Chain: s.auth.CACerts(st.Label), Serial: st.IssuedSerial, PendingID: st.PendingID}
	}
	return x, nil
}

// loadTxn brings transaction id from the transaction store into s.txns, replacing what this
// process held unless it is handling a message of it right now (busy): the store is
// authoritative, since another instance may have moved the transaction on or ended it. Without
// a transaction store it does nothing.
func (s *Service) loadTxn(ctx context.Context, id string) (*txn, error) {
	if s.opts.Transactions == nil {
		return nil, nil
	}
	s.mu.Lock()
	if x, ok := s.txns[id]; ok && x.busy {
		s.mu.Unlock()
		return x, nil
	}
	s.mu.Unlock()
	t, err := s.opts.Transactions.CMPTransaction(ctx, []byte(id))
	var x *txn
	switch {
	case errs.KindOf(err) == errs.NotFound:
	case err != nil:
		return nil, cmp.WithFailInfo(errs.Wrap(errs.Internal, err, "cannot read the transaction"), cmp.FailSystemFailure)
	default:
		if x, err = s.decodeTxn(ctx, id, t.State, t.Expires); err != nil {
			return nil, cmp.WithFailInfo(errs.Wrap(errs.Internal, err, "cannot read the transaction"), cmp.FailSystemFailure)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.txns[id]; ok && cur.busy {
		return cur, nil
	}
	if x == nil {
		delete(s.txns, id)
		return nil, nil
	}
	s.txns[id] = x
	return x, nil
}

// forgetTxn removes transaction id from the transaction store.
func (s *Service) forgetTxn(ctx context.Context, id string) {
	if s.opts.Transactions == nil {
		return
	}
	err := s.opts.Transactions.DeleteCMPTransaction(context.WithoutCancel(ctx), []byte(id))
	if err != nil && errs.KindOf(err) != errs.NotFound {
		s.log.Error("cmp: cannot remove the transaction from the store", "transaction", hex.EncodeToString([]byte(id)), "err", err)
	}
}
