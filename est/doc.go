// Package est is the EST wire formats: pure functions on bytes, usable by clients and servers
// alike, that import nothing of the server (the EST service is package est/estserver):
//
//   - certs-only PKCS#7 ("degenerate" CMS SignedData, RFC 5652 §5, RFC 7030 §4.1.3 / §4.2.3):
//     EncodeCertsOnly, ParseCertsOnly — Content-Format 281 (application/pkcs7-mime; smime-type=certs-only)
//   - CSR attributes (RFC 7030 §4.5.2 as clarified by RFC 9908): CsrAttrs, ParseCsrAttrs,
//     (*CsrAttrs).Marshal, (*CsrAttrs).String — Content-Format 285
//   - multipart-core (RFC 8710): EncodeMultipart, ParseMultipart — Content-Format 62
//   - PKCS#10 requests (RFC 2986, RFC 5967): ParseCSR with diagnostics, challengePassword
//     extraction and PoP linking (RFC 7030 §3.5, RFC 9148 §3), detection of requests for
//     CMS-encrypted server-generated keys (RFC 7030 §4.4.1.1/§4.4.1.2, RFC 9148 §4.8)
//   - PKCS#8 private keys (RFC 5958): MarshalPKCS8 — Content-Format 284
//   - CMS-encrypted server-generated keys (RFC 7030 §4.4.2; package est/cms): an
//     AsymmetricKeyPackage in a SignedData in an EnvelopedData — Content-Format 280; the
//     service builds it (estserver.Service.SetKeyEncryption), clients open it with
//     DecryptServerKey
//   - RFC 8295 packages: the Package Availability List (§2; MarshalPAL, ParsePAL), symmetric
//     key packages (RFC 6031) in every form of §5.1.2 — plain, signed, enveloped,
//     signed-enveloped-signed, and the encrypted key package of RFC 6032 — with RFC 7191 §5's
//     key-package-identifier-and-receipt-request (SymKeyEncapsulation, SealSymmetricKeyPackageAs,
//     OpenSymmetricKeyPackage, MarshalEncryptedKeyPackage, ParseEncryptedKeyPackage), key
//     package receipts and errors (RFC 7191), firmware packages, signed or encrypted then signed,
//     and their load receipts and errors (RFC 4108; SignFirmwarePackage,
//     SignEncryptedFirmwarePackage, OpenFirmwarePackage, ParseFirmwareReturn) and the TAMP
//     messages (RFC 5934; MarshalTAMP, ParseTAMP, SignTAMP, OpenTAMP). None of them has a CoAP
//     Content-Format.
//
// Content-Format numbers are those registered by RFC 9148 §8.1 (and RFC 8710 for 62).
package est

// CoAP Content-Format identifiers used by EST-coaps (RFC 9148 §8.1, RFC 8710 §5).
const (
	CFMultipartCore  = 62  // application/multipart-core
	CFPKCS7ServerKey = 280 // application/pkcs7-mime; smime-type=server-generated-key (CMS-encrypted key)
	CFPKCS7CertsOnly = 281 // application/pkcs7-mime; smime-type=certs-only
	CFPKCS8          = 284 // application/pkcs8
	CFCSRAttrs       = 285 // application/csrattrs
	CFPKCS10         = 286 // application/pkcs10
	CFPKIXCert       = 287 // application/pkix-cert
)
