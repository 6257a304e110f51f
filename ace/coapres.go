package ace

import (
	"context"
	"errors"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"coapca/coap"
)

// AuthzInfoPath is the path of the authz-info resource (RFC 9200 §5.10.1).
const AuthzInfoPath = "/authz-info"

// TokenPath is the path of the token endpoint (RFC 9200 §5.8).
const TokenPath = "/token"

// Resource is the unprotected /authz-info resource of the coap:// listener (RFC 9203 §4.1):
// POST with application/ace+cbor, answered 2.01 Created with nonce2 and
// ace_server_recipientid, 4.01 for a token that does not verify (RFC 9200 §5.10.1.1), 4.00 for a
// malformed body.
func (rs *ResourceServer) Resource() coap.Resource {
	return coap.Resource{Path: AuthzInfoPath, CT: []int{ContentFormatACECBOR}, Title: "ACE authz-info (RFC 9203)",
		Handler: coap.HandlerFunc(func(_ context.Context, r *coap.Request) *coap.Response {
			if r.Method != codes.POST {
				return coap.NewResponse(codes.MethodNotAllowed, nil)
			}
			if cf, ok := r.ContentFormat.Get(); ok && cf != ContentFormatACECBOR {
				return coap.NewResponse(codes.UnsupportedMediaType, []byte("want application/ace+cbor (19)"))
			}
			resp, err := rs.AuthzInfo(r.Payload)
			switch {
			case err == nil:
				return &coap.Response{Code: codes.Created, ContentFormat: coap.CF(ContentFormatACECBOR), Payload: resp.Marshal()}
			case errors.Is(err, ErrTooManyTokens):
				return &coap.Response{Code: codes.ServiceUnavailable, MaxAge: coap.MaxAge(30)}
			case Unauthorized(err):
				rs.log.Info("ace: access token refused", "peer", r.Peer.Addr, "error", err)
				return coap.NewResponse(codes.Unauthorized, []byte(err.Error()))
			default:
				return coap.NewResponse(codes.BadRequest, []byte(err.Error()))
			}
		})}
}

// Resource is the /token endpoint over OSCORE (RFC 9203 §3.1: the client and the AS talk over
// OSCORE; the client is the owner of the OSCORE context the request came under, named by
// client). Errors are 4.00 or 4.01 with the {error: code} body of RFC 9200 §5.8.3.
func (as *AuthorizationServer) Resource(client func(coap.Peer) string) coap.Resource {
	return coap.Resource{Path: TokenPath, OSCORE: true, CT: []int{ContentFormatACECBOR}, Title: "ACE token endpoint (RFC 9200)",
		Handler: coap.HandlerFunc(func(_ context.Context, r *coap.Request) *coap.Response {
			if r.Method != codes.POST {
				return coap.NewResponse(codes.MethodNotAllowed, nil)
			}
			name := client(r.Peer)
			req, err := ParseTokenRequest(r.Payload)
			var resp *TokenResponse
			if err == nil {
				resp, err = as.Token(name, req)
			}
			var te *TokenError
			switch {
			case err == nil:
				return &coap.Response{Code: codes.Created, ContentFormat: coap.CF(ContentFormatACECBOR), Payload: resp.Marshal()}
			case errors.As(err, &te):
				as.log.Info("ace: token request refused", "client", name, "error", err)
				code := codes.BadRequest
				if te.Code == ErrCodeInvalidClient {
					code = codes.Unauthorized
				}
				return &coap.Response{Code: code, ContentFormat: coap.CF(ContentFormatACECBOR), Payload: te.Body()}
			default:
				return &coap.Response{Code: codes.BadRequest, ContentFormat: coap.CF(ContentFormatACECBOR),
					Payload: (&TokenError{Code: ErrCodeInvalidRequest}).Body()}
			}
		})}
}
