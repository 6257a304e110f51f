package client

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"slices"
	"strings"

	"coapca/est"
	"coapca/est/cms"
)

// PAL fetches the client's Package Availability List (RFC 8295 §2, /pal): XML, whose entries
// name the packages waiting for this client and the URIs to fetch or return them at.
func (c *HTTPS) PAL(ctx context.Context) ([]est.PALEntry, error) {
	const op = "pal"
	a, err := c.do(ctx, http.MethodGet, op, "", nil)
	if err != nil {
		return nil, err
	}
	if err := checkMediaType(a, op, est.MediaPAL); err != nil {
		return nil, err
	}
	entries, err := est.ParsePAL(bytes.NewReader(a.body))
	if err != nil {
		return nil, fmt.Errorf("est /%s: %w", op, err)
	}
	return entries, nil
}

// SymmetricKeys fetches the next symmetric key package waiting for this client (RFC 8295 §5.1,
// /symmetrickeys) and opens it with d (the client's key and certificate): the signed,
// enveloped, signed encapsulation of est.MediaSymmetricKeyPackage. RFC 8295 §5.1.2: "the
// client MUST reject it if the digital signature does not validate back to an authorized TA" —
// both signers must chain to opts.Trust (with /cacerts as intermediates); without Trust the
// package is refused, as is one the server sent unencrypted.
func (c *HTTPS) SymmetricKeys(ctx context.Context, d cms.Decrypter) (*est.OpenedSymmetricKeys, error) {
	const op = "symmetrickeys"
	if len(c.opts.Trust) == 0 {
		return nil, fmt.Errorf("est /%s: trust anchors are needed to check the package's signatures (RFC 8295 §5.1.2)", op)
	}
	a, err := c.do(ctx, http.MethodGet, op, "", nil)
	if err != nil {
		return nil, err
	}
	if err := checkMediaType(a, op, "application/cms"); err != nil {
		return nil, err
	}
	der, err := decodeBase64Body(a.body)
	if err != nil {
		return nil, fmt.Errorf("est /%s: %w", op, err)
	}
	keys, err := est.OpenSymmetricKeyPackage(der, d)
	if err != nil {
		return nil, fmt.Errorf("est /%s: %w", op, err)
	}
	// Only the form asked for is taken: a server that strips a signature or the encryption
	// (RFC 8295 §5.1.2's note on a malicious server) is refused.
	if keys.Encapsulation != c.opts.SymKeyEncapsulation {
		return nil, fmt.Errorf("est /%s: the package came %s, not %s as asked (RFC 8295 §5.1.2)", op, keys.Encapsulation, c.opts.SymKeyEncapsulation)
	}
	cas, err := c.CACerts(ctx)
	if err != nil {
		return nil, fmt.Errorf("est /%s: intermediates for validation: %w", op, err)
	}
	for _, s := range []struct {
		layer  string
		signer *x509.Certificate
		certs  []*x509.Certificate
	}{{"outer", keys.OuterSigner, keys.OuterCerts}, {"inner", keys.InnerSigner, keys.InnerCerts}} {
		if s.signer == nil {
			continue // a layer this form does not have
		}
		if err := checkKeySigner(s.signer, slices.Concat(s.certs, cas), c.opts.Trust); err != nil {
			return nil, fmt.Errorf("est /%s: %s SignedData: %w (RFC 8295 §5.1.2)", op, s.layer, err)
		}
	}
	return keys, nil
}

// ReturnSymmetricKeys posts a key package receipt or error (RFC 7191; the DER ContentInfo, e.g.
// from est.SignKeyPackageReceiptFor) to /symmetrickeys/return (RFC 8295 §5.2.1) with
// contentType (est.MediaKeyPackageReceipt, est.MediaKeyPackageError, ...). The server answers
// 204 (RFC 8295 §5.2.2).
func (c *HTTPS) ReturnSymmetricKeys(ctx context.Context, contentType string, der []byte) error {
	const op = "symmetrickeys/return"
	return c.postReturn(ctx, op, contentType, der, "RFC 8295 §5.2.2")
}

// Firmware fetches the next firmware package waiting for this client (RFC 8295 §6.1, /firmware)
// and verifies it: a signed firmware package (RFC 4108) whose signer must chain to opts.Trust
// (with /cacerts as intermediates; RFC 8295 §6.1.2: "the client MUST reject it if the digital
// signature does not validate back to an authorized TA"). Without Trust it is refused.
func (c *HTTPS) Firmware(ctx context.Context) (*est.Firmware, error) {
	const op = "firmware"
	if len(c.opts.Trust) == 0 {
		return nil, fmt.Errorf("est /%s: trust anchors are needed to check the package's signature (RFC 8295 §6.1.2)", op)
	}
	a, err := c.do(ctx, http.MethodGet, op, "", nil)
	if err != nil {
		return nil, err
	}
	if err := checkMediaType(a, op, "application/cms"); err != nil {
		return nil, err
	}
	der, err := decodeBase64Body(a.body)
	if err != nil {
		return nil, fmt.Errorf("est /%s: %w", op, err)
	}
	fw, err := est.OpenFirmwarePackage(der)
	if err != nil {
		return nil, fmt.Errorf("est /%s: %w", op, err)
	}
	cas, err := c.CACerts(ctx)
	if err != nil {
		return nil, fmt.Errorf("est /%s: intermediates for validation: %w", op, err)
	}
	if err := checkKeySigner(fw.Signer, slices.Concat(fw.Certs, cas), c.opts.Trust); err != nil {
		return nil, fmt.Errorf("est /%s: %w (RFC 8295 §6.1.2)", op, err)
	}
	return fw, nil
}

// ReturnFirmware posts a firmware package load receipt or error (RFC 4108 §3, §4; the DER
// ContentInfo, signed or not) to /firmware/return (RFC 8295 §6.2.1). The server answers 204.
func (c *HTTPS) ReturnFirmware(ctx context.Context, contentType string, der []byte) error {
	const op = "firmware/return"
	return c.postReturn(ctx, op, contentType, der, "RFC 8295 §6.2.2")
}

// TAMP fetches the next TAMP message waiting for this client (RFC 8295 §7.1, /tamp) and opens
// it: a signed TAMP message (RFC 5934) of the kind its media type announces, whose signer must
// chain to opts.Trust (with /cacerts as intermediates; RFC 8295 §7.1.2: "clients MUST reject
// it if the digital signature does not validate back to an authorized TA"). Without Trust, or
// unsigned, it is refused. The DER as received is returned too.
func (c *HTTPS) TAMP(ctx context.Context) (*est.OpenedTAMP, []byte, error) {
	const op = "tamp"
	if len(c.opts.Trust) == 0 {
		return nil, nil, fmt.Errorf("est /%s: trust anchors are needed to check the message's signature (RFC 8295 §7.1.2)", op)
	}
	a, err := c.do(ctx, http.MethodGet, op, "", nil)
	if err != nil {
		return nil, nil, err
	}
	mt, _, err := mime.ParseMediaType(a.header.Get("Content-Type"))
	kind, ok := est.TAMPKindByMedia(strings.ToLower(mt))
	if err != nil || !ok || !kind.IsRequest() {
		return nil, nil, fmt.Errorf("est /%s: unexpected Content-Type %q (RFC 8295 §7.1.2)", op, a.header.Get("Content-Type"))
	}
	der, err := decodeBase64Body(a.body)
	if err != nil {
		return nil, nil, fmt.Errorf("est /%s: %w", op, err)
	}
	m, err := est.OpenTAMP(der, kind, false)
	if err != nil {
		return nil, nil, fmt.Errorf("est /%s: %w", op, err)
	}
	cas, err := c.CACerts(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("est /%s: intermediates for validation: %w", op, err)
	}
	if err := checkKeySigner(m.Signed.Signer, slices.Concat(m.Signed.Certs, cas), c.opts.Trust); err != nil {
		return nil, nil, fmt.Errorf("est /%s: %w (RFC 8295 §7.1.2)", op, err)
	}
	return m, der, nil
}

// ReturnTAMP posts a TAMP response, confirm or error of kind (the DER ContentInfo, signed or
// not) to /tamp/return under the kind's media type (RFC 8295 §7.2.1). The server answers 204.
func (c *HTTPS) ReturnTAMP(ctx context.Context, kind est.TAMPKind, der []byte) error {
	const op = "tamp/return"
	return c.postReturn(ctx, op, kind.Media(), der, "RFC 8295 §7.2.2")
}

// postReturn posts a receipt, confirm or error (DER, sent base64 as RFC 8295's returns are) to
// op under contentType; the server answers 204 No Content (spec names the section that says so).
func (c *HTTPS) postReturn(ctx context.Context, op, contentType string, der []byte, spec string) error {
	_, err := c.do(ctx, http.MethodPost, op, contentType, []byte(base64.StdEncoding.EncodeToString(der)))
	var se *HTTPStatusError
	if errors.As(err, &se) && se.Status == http.StatusNoContent {
		return nil
	}
	if err == nil {
		return fmt.Errorf("est /%s: the server answered 200, not 204 (%s)", op, spec)
	}
	return err
}
