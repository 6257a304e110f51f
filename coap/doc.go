// Package coap is coapca's CoAP endpoint: a server and a client over plain UDP
// (coap://) and DTLS 1.2 (coaps://, through package coap/dtlsconn), usable on its
// own and knowing nothing of EST or CMP.
//
// It implements:
//   - RFC 7252 messaging: CON/NON/ACK/RST (§4), retransmission with the §4.8
//     transmission parameters, deduplication for EXCHANGE_LIFETIME (§4.5) at O(1)
//     per datagram, piggybacked and separate responses (§5.2), rejection of
//     unrecognised critical options with 4.02 (§5.4.1), CoAP ping (§4.3);
//   - RFC 7959 block-wise transfers (Block1, Block2, Size1, Size2) in both
//     directions on both sides, correlated as RFC 9175 §3 prescribes (endpoint,
//     method, URI, Content-Format, Request-Tag), never by token; Block2 bodies are
//     served from a cached representation with an ETag, so a handler runs once per
//     request whatever tokens the follow-ups use;
//   - RFC 7641 observation: a server-side registry with CON notifications often
//     enough to detect dead observers, and client-side observation;
//   - RFC 6690 /.well-known/core generated from the resource table, with query
//     filtering (including the prefix form "rt=ace.est*"), and a link-format parser.
//
// Object security plugs in as a layer: Mux.SetLayer installs a Layer (package
// coap/oscorelayer: OSCORE, RFC 8613, keyed by EDHOC or pre-shared) that verifies every
// request before the resource table and seals every response message to it (piggybacked,
// separate, each Block1/Block2 block: inner block-wise), with the verified identity in
// Request.Peer.OSCORE; resources marked OSCORE answer 4.01 to anything else.
// ClientOptions.Layer does the same for a Client.
//
// Address validation on plain UDP (RFC 9175 §2.3–2.4, RFC 7252 §11.3): a source
// address that has not proven it receives what is sent to it gets only a stateless
// 4.01 + Echo challenge, at most three times the size of its request, and holds no
// session, observer or Block1 buffer; the Client answers such challenges by itself.
// DTLS sessions and OSCORE-verified requests prove the address; Config.TrustUDPSources
// turns the check off.
//
// A DTLS session's reader parks the session (dtlsconn.Conn.Park) once it has been quiet for
// the listener's ParkAfter and holds nothing in progress; session state (deduplication,
// block-wise, observation maps) is allocated on first use and dropped when empty, so an idle
// peer costs a few KB.
//
// Limits (Config): sessions overall and per IP address (an unproven session is
// evicted first, else the least recently heard idle one), observers overall and per
// IP address (the oldest is evicted), Block1 reassemblies per peer and per IP address,
// concurrent handler exchanges per peer, Block1 body size, and the memory held by
// reassembly buffers and response caches. Server
// Stats (the Metrics interface) counts responses by code, retransmissions,
// duplicates, resets, malformed datagrams, block-wise transfers, notifications
// and sessions; DTLS handshake counters are in dtlsconn.Listener.Stats.
//
// go-coap's message (option codec), message/codes and udp/coder (encoder) packages are used for the wire
// codec only; the endpoint (exchanges, deduplication, block-wise, observe,
// sessions) is written here.
package coap
