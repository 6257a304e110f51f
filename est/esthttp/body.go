package esthttp

import (
	"encoding/base64"

	"coapca/errs"
)

// EncodeBody is what this server sends: the base64 of der (RFC 4648 §4) without line breaks,
// RFC 8951 §3's encoding for every EST payload.
func EncodeBody(der []byte) string { return base64.StdEncoding.EncodeToString(der) }

// DecodeBody decodes a received EST payload leniently, as RFC 8951 §3 asks of receivers: the
// base64 of DER whatever the Content-Transfer-Encoding header says (it is ignored), with or
// without line breaks (CRLF or LF every 64 or 76 characters, as MIME encoders write) and with
// or without padding. A body that is binary DER (a SEQUENCE, as some clients send when they
// take HTTP to be binary-clean) is accepted as it is. Anything else is errs.BadRequest.
func DecodeBody(raw []byte) ([]byte, error) {
	clean := make([]byte, 0, len(raw))
	binary := false
	for _, c := range raw {
		switch {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			continue
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '+', c == '/', c == '=':
		default:
			binary = true
		}
		clean = append(clean, c)
	}
	if len(clean) == 0 {
		return nil, errs.New(errs.BadRequest, "empty request body: expected the base64 of a DER PKCS#10 request (RFC 8951 §3)")
	}
	if binary {
		// A DER SEQUENCE with a long-form length (every CSR is longer than 127 bytes) has a
		// non-alphabet byte at index 1, so it cannot be mistaken for base64.
		if raw[0] == 0x30 && len(raw) > 1 && raw[1] >= 0x80 {
			return raw, nil
		}
		return nil, errs.New(errs.BadRequest, "request body is neither base64 (RFC 8951 §3) nor DER")
	}
	enc := base64.StdEncoding
	if len(clean)%4 != 0 {
		enc = base64.RawStdEncoding
	}
	der, err := enc.DecodeString(string(clean))
	if err != nil {
		return nil, errs.New(errs.BadRequest, "malformed base64 in the request body (RFC 8951 §3): %s", errs.Reason(err))
	}
	if len(der) == 0 {
		return nil, errs.New(errs.BadRequest, "empty request body")
	}
	return der, nil
}
