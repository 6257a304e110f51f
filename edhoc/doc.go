// Package edhoc implements EDHOC, Ephemeral Diffie-Hellman Over COSE (RFC 9528), as a library
// that knows nothing of the server: an Initiator and a Responder state machine, the message
// codecs and the key schedule, checked byte for byte against the traces of RFC 9529.
//
// Implemented:
//   - §3.2 methods 0–3 (signature and static DH keys for each side);
//   - §3.3 connection identifiers, raw byte strings sent as int or bstr (§3.3.2);
//   - §3.5 credentials: X.509 certificates referenced by x5t or transported in x5chain, CWT
//     Claims Sets referenced by kid or transported by value (kccs); a Resolver callback lets the
//     application decide whom it trusts from ID_CRED_x;
//   - §3.6 / §10.2 cipher suites 0–6 (2 and 3 are the mandatory ones for EST-oscore);
//   - §3.8 EAD items, passed through to the application;
//   - §4 key derivation (EDHOC_Extract/Expand/KDF, TH_2..TH_4, PRK_2e, PRK_3e2m, PRK_4e3m,
//     PRK_out, PRK_exporter), EDHOC_Exporter (§4.2.1) and EDHOC_KeyUpdate (Appendix H);
//   - §5 message_1..message_4 (message_4 optional) and their processing, §6 error messages;
//   - Appendix A.1 OSCORE Master Secret/Salt and Sender/Recipient IDs.
//
// CBOR is encoded and decoded with github.com/fxamacker/cbor/v2 (wire.go). The message decoders
// are strict (§3.1: deterministic CBOR, checked by re-encoding each item) and bounded (nesting,
// array and map sizes), and reject the invalid messages of RFC 9529 §4. EDHOC over CoAP (Appendix A.2: the 0xf5 / C_R prefixes, Content-Formats 64/65) is
// the binding's job, not this package's.
//
// A session is a plain value with no shared state: a peer that abandons a handshake leaves a
// state that the binding simply drops (Close wipes the secrets at once).
package edhoc
