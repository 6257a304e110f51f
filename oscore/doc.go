// Package oscore implements Object Security for Constrained RESTful Environments (OSCORE,
// RFC 8613) for CoAP messages in go-coap's message.Message form. It imports nothing of the
// coapca server: a CoAP endpoint plugs it in as a layer between the message codec and its
// request handling.
//
// Implemented:
//   - §3: security context derivation (HKDF, Sender/Recipient Keys, Common IV), ID Context;
//     AEAD and HKDF algorithms pluggable by COSE identifier (AES-CCM-16-64-128 and HKDF SHA-256
//     by default; the other AES-CCM variants, AES-GCM and ChaCha20/Poly1305 built in).
//   - §4: option classes E/U (Figure 5), Outer Code POST/FETCH and 2.04/2.05, Proxy-Uri
//     decomposition, Observe (Inner and Outer), Inner block-wise (Block options are Class E) and
//     Outer block-wise (Outer Block options are discarded after the transport reassembled the
//     message; MAX_UNFRAGMENTED_SIZE), nested OSCORE refused.
//   - §5, §6: COSE_Encrypt0 with the AAD of §5.4, the nonce of §5.2, the compressed OSCORE option
//     of §6.1 (ParseOptionValue / OptionValue.Marshal).
//   - §7: Partial IVs and sender sequence numbers (atomic, persisted through SequenceStore with
//     a safe gap, Appendix B.1.1), the replay window (default 32), Notification Numbers for
//     Observe (§7.4.1).
//   - §8: request and response processing, with the error kinds of §8.2 (ErrorResponse maps
//     them to 4.02 / 4.01 / 4.00 with Outer Max-Age 0).
//   - Appendix B.1.2 with RFC 9175 Echo: a context restored after a restart answers the first
//     request with a protected 4.01 + Echo and accepts the repeated request as the new lower
//     limit of its replay window; Context.Exchange does the client side.
//
// Server use:
//
//	ring := oscore.NewKeyring(); ring.Add(ctx)
//	inner, st, err := ring.UnprotectRequest(msg)
//	if err != nil { resp, _ := oscore.ErrorResponse(msg, err); send(resp); return }
//	out, err := st.Context().ProtectResponse(st, handle(inner))
//
// Client use: ctx.Exchange(req, send), or ProtectRequest / UnprotectResponse.
//
// Restarts: give long-lived (pre-shared) contexts a FileSequenceStore so the Sender Sequence
// Number survives, and on the server set Params.ReplayWindowUnsynchronized when such a context is
// loaded at start: its first request is then answered with the Echo challenge. Contexts derived
// afresh (EDHOC) need neither.
//
// Not implemented: Class I options (none are defined), signaling messages (§4.3), the B.2 context
// re-derivation protocol and persisting the replay window itself (Echo is used instead).
package oscore
