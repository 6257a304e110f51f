// Package cmp is the Certificate Management Protocol message layer of coapca: the PKIMessage
// codec of RFC 9810 (CMP, formerly RFC 4210/9480) with the CRMF structures of RFC 4211, the
// message protection of RFC 9810 §5.1.3 with the algorithms of RFC 9481, and the support-message
// contents of RFC 9483 (Lightweight CMP Profile) §4.3.
//
// It knows nothing about the server or its transports: a server decodes a request with [Parse],
// checks its protection ([Message.VerifyMAC], [Message.VerifySignature]) and proof of possession
// ([CertReqMsg.VerifyPOP]), and builds the answer with [NewResponseHeader] and [Message.Marshal];
// a client builds ir/cr/p10cr/kur/rr/genm/certConf/pollReq bodies the same way and checks the
// answer with [CheckResponse].
//
// Implemented:
//   - RFC 9810 §5.1 PKIMessage, PKIHeader (§5.1.1), PKIBody (§5.1.2), protection (§5.1.3) and
//     extraCerts (§5.1.4); generalInfo implicitConfirm/confirmWaitTime/certProfile (§5.1.1.1-4).
//   - RFC 9810 §5.3: CertReqMessages, CertRepMessage, p10cr, RevReqContent/RevRepContent,
//     PKIConfirmContent, GenMsg/GenRep with InfoTypeAndValue, ErrorMsgContent,
//     CertConfirmContent (§5.3.18, certHash), PollReq/PollRep (§5.3.22), the announcements
//     ckuann/cann/rann/crlann (§5.3.13-16, sent on RFC 9482 §2.6 `…/ann`) and nested
//     (§5.1.3.4, depth-limited).
//   - RFC 9483 §4.3 support-message contents: caCerts, rootCaKeyUpdate/rootCaCert,
//     certReqTemplate, certProfile, crlStatusList, crls.
//   - RFC 4211 §5 CertTemplate, §4.1 POPOSigningKey (signature POP, generated and verified;
//     with poposkInput, the key must be the template's and authInfo is checked against the
//     authenticated requester: [POPAuth]).
//   - RFC 9481 §3 signatures (ECDSA P-256/P-384/P-521, Ed25519, RSA PKCS#1 v1.5) and §6.1
//     MACs (PasswordBasedMac §6.1.1 and PBMAC1 §6.1.2, both with HMAC-SHA-1/SHA-2).
//
// Errors returned for network input are typed for the front doors: errs.BadRequest or
// errs.Unauthorized (coapca/errs) carrying explicit PKIFailureInfo bits ([FailInfoOf]) and a
// short one-line message (no encoding/asn1 struct dumps); the full cause stays in the error
// chain for logs. Mapping other errors (errs kinds) to PKIFailureInfo is server policy and
// lives in cmp/cmpserver, not here. MAC parameters from the network are bounded by
// [MACLimits] and checked before any key derivation ([Message.CheckMACParams]).
//
// Not implemented: EncryptedKey/EnvelopedData (central key generation, encrypted certificates
// are kept as raw DER only), POP by key encipherment/agreement (parsed, not verified),
// RSASSA-PSS signatures, and the body choices popdecc/popdecr/krr/krp/ccr/ccp.
//
// The ASN.1 module of RFC 9810 (PKIXCMP) uses EXPLICIT tags; the CRMF module of RFC 4211 uses
// IMPLICIT tags. Both are written by hand with golang.org/x/crypto/cryptobyte.
package cmp
