// Package ace implements the ACE framework (RFC 9200) with its OSCORE profile (RFC 9203) for
// EST-oscore: access tokens are CWTs (RFC 8392) protected with COSE (RFC 9052, RFC 9053):
// COSE_Encrypt0 with AES-CCM-16-64-128, COSE_Mac0 with HMAC 256/64 or 256/256, or COSE_Sign1
// with ES256; the token's cnf carries OSCORE_Input_Material (RFC 9203 §3.2.1).
//
// It holds the parts of the profile that do not depend on the server:
//   - the COSE and CWT codecs (bounded CBOR decoding, strict types);
//   - the /authz-info request and response (RFC 9203 §4.1, §4.2, Content-Format
//     application/ace+cbor) and the derivation of the OSCORE security context (§4.3);
//   - ResourceServer: verifies posted tokens (key, algorithm, audience, expiry, replay), derives
//     the context, and hands the grant to the authorization decision (the caller's Grants);
//   - AuthorizationServer: the /token endpoint (RFC 9200 §5.8) for registered clients;
//   - the AS Request Creation Hints (RFC 9200 §5.3) and scope strings naming EST labels and
//     operations.
//
// It imports nothing of the server: the EST service and the authority sit above it.
package ace
