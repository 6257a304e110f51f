package registrar

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strings"

	"coapca/authority"
	"coapca/errs"
	"coapca/est"
	"coapca/est/estserver"
	"coapca/kms"
)

// ServerKeyGen relays /skg and /skc to /serverkeygen (RFC 7030 §4.4, RFC 9148 §4.8). The key
// comes back as the upstream made it: PKCS#8 (284) — which the registrar, in the middle, can
// read (RFC 9148 §10.2) — or CMS-encrypted to the device (280), relayed byte for byte (RFC 9148
// §5: "the encrypted CMS EnvelopedData blob MUST be converted at the Registrar to binary CBOR
// type 2 downstream"). An upstream without /serverkeygen (404, 405, 501) gets, with
// LocalKeyGen, a key made here and a plain enrollment.
func (s *Service) ServerKeyGen(ctx context.Context, r *estserver.Request) (*estserver.ServerKey, error) {
	// RFC 9148 §4.8: the server MUST ignore the CSR's public key and signature.
	csr, err := est.ParseCSR(r.Body, false)
	if err != nil {
		return nil, err
	}
	_, encrypted := est.EncryptedKeyRequest(csr)
	if r.RequireEncryptedKey && !encrypted {
		return nil, errs.New(errs.BadRequest, "Accept 280 asks for an encrypted key, but the CSR names no DecryptKeyIdentifier "+
			"or AsymmetricDecryptKeyIdentifier to encrypt it to (RFC 7030 §4.4.1)")
	}
	if err := s.authorize(ctx, r, authority.OpServerKeyGen, csr); err != nil {
		return nil, err
	}
	label := s.upstreamLabel(r.Label)
	a, err := s.do(ctx, "serverkeygen", label, http.MethodPost, "application/pkcs10", csr.Raw, nil)
	if err != nil {
		if !s.opts.LocalKeyGen || !noServerKeyGen(err) {
			return nil, err
		}
		if encrypted {
			// The registrar has no way to encrypt to the device's key-encryption key.
			return nil, errs.New(errs.NotAcceptable, "the upstream CA has no server-side key generation and the registrar "+
				"returns keys only unencrypted (Content-Format 284)")
		}
		return s.localKeyGen(ctx, r.Label, label, csr)
	}
	sk, err := parseServerKey(a.header.Get("Content-Type"), a.body)
	if err != nil {
		return nil, s.badAnswer("serverkeygen", err)
	}
	if encrypted != (sk.Encrypted != nil) {
		return nil, s.badAnswer("serverkeygen", errors.New("the key's encryption is not what the CSR asked for"))
	}
	return sk, nil
}

// noServerKeyGen reports whether err is the upstream saying it has no /serverkeygen.
func noServerKeyGen(err error) bool {
	var st *upstreamStatus
	return errors.As(err, &st) && (st.code == http.StatusNotFound || st.code == http.StatusMethodNotAllowed || st.code == http.StatusNotImplemented)
}

// parseServerKey reads a /serverkeygen answer (RFC 7030 §4.4.2: multipart/mixed, the key as
// application/pkcs8 or application/pkcs7-mime; smime-type=server-generated-key, then the
// certificate as certs-only; each part base64). The key is kept as bytes: the registrar neither
// needs nor, for an encrypted key, can open it.
func parseServerKey(contentType string, body []byte) (*estserver.ServerKey, error) {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil || !strings.EqualFold(mt, "multipart/mixed") || params["boundary"] == "" {
		return nil, fmt.Errorf("unexpected Content-Type %q (want multipart/mixed with a boundary)", contentType)
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	sk := &estserver.ServerKey{}
	var cert *x509.Certificate
	var chain []*x509.Certificate
	for i := 0; ; i++ {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("multipart: %w", err)
		}
		if i >= 4 {
			return nil, errors.New("more than 4 parts")
		}
		raw, err := io.ReadAll(io.LimitReader(p, maxAnswer))
		if err != nil {
			return nil, fmt.Errorf("multipart: %w", err)
		}
		pmt, pparams, err := mime.ParseMediaType(p.Header.Get("Content-Type"))
		if err != nil {
			return nil, fmt.Errorf("part %d: malformed Content-Type", i+1)
		}
		der, err := decodeBase64(raw)
		if err != nil {
			return nil, fmt.Errorf("part %d: %w", i+1, err)
		}
		switch strings.ToLower(pmt) + ";" + strings.ToLower(pparams["smime-type"]) {
		case "application/pkcs8;":
			if _, err := x509.ParsePKCS8PrivateKey(der); err != nil {
				return nil, fmt.Errorf("private key: %w", err)
			}
			sk.PKCS8 = der
		case "application/pkcs7-mime;server-generated-key":
			sk.Encrypted = der
		case "application/pkcs7-mime;certs-only", "application/pkcs7-mime;":
			certs, err := est.ParseCertsOnly(der)
			if err != nil || len(certs) == 0 {
				return nil, fmt.Errorf("certificate part: %v", err)
			}
			cert, chain = certs[0], certs[1:]
		default:
			return nil, fmt.Errorf("part %d: unexpected media type %s", i+1, pmt)
		}
	}
	if cert == nil || (sk.PKCS8 == nil) == (sk.Encrypted == nil) {
		return nil, errors.New("the answer lacks the key or the certificate")
	}
	sk.Issued = &authority.Issued{Cert: cert, Chain: chain, Serial: authority.FormatSerial(cert.SerialNumber)}
	return sk, nil
}

// localKeyGen is RFC 9148 §5's registrar-generated key: "Such a Registrar is responsible for
// generating a new CSR signed by a new key which will be returned to the client along with the
// certificate from the CA. In these cases, the Registrar MUST use random number generation with
// proper entropy" (Options.Rand: crypto/rand unless a test says otherwise). The new CSR keeps the
// device's subject, subjectAltName and requested extensions.
func (s *Service) localKeyGen(ctx context.Context, label, upLabel string, dev *x509.CertificateRequest) (*estserver.ServerKey, error) {
	key, err := kms.GenerateKeyFrom(s.opts.Rand, s.opts.KeyType)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "registrar key generation failed")
	}
	tmpl := &x509.CertificateRequest{
		RawSubject: dev.RawSubject, DNSNames: dev.DNSNames, IPAddresses: dev.IPAddresses,
		EmailAddresses: dev.EmailAddresses, URIs: dev.URIs, ExtraExtensions: dev.Extensions,
	}
	// crypto/x509 writes the SAN extension itself from the fields above.
	tmpl.ExtraExtensions = nil
	for _, e := range dev.Extensions {
		if !e.Id.Equal([]int{2, 5, 29, 17}) {
			tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, e)
		}
	}
	der, err := x509.CreateCertificateRequest(s.opts.Rand, tmpl, key)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "registrar CSR creation failed")
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "registrar CSR creation failed")
	}
	iss, err := s.relayEnroll(ctx, "simpleenroll", upLabel, csr)
	if err != nil {
		return nil, err
	}
	p8, err := est.MarshalPKCS8(key)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "encoding the generated key failed")
	}
	s.localKeys.Add(1)
	if s.opts.OnLocalKey != nil {
		s.opts.OnLocalKey(label)
	}
	s.log.Info("registrar: generated the key itself (the upstream CA has no /serverkeygen)", "label", label,
		"subject", iss.Cert.Subject.String(), "serial", iss.Serial)
	return &estserver.ServerKey{Issued: iss, Key: key, PKCS8: p8}, nil
}
