// Package archtest checks coapca's import rules (DESIGN.md, "Import rules are checked by a
// test, not by memory"). It has no code of its own: its test reads the module's import graph
// with `go list -json ./...`, puts every package in a layer, and fails with the rule and the
// reason when an import breaks one:
//
//   - dependencies point down (neutral helpers < protocol libraries < store < authority <
//     services < bindings, client and test kits < composition), never up;
//   - the core is sealed: outside authority and store/*, nothing imports store; a store back
//     end is opened only by the composition root (internal/server) and by tests;
//   - protocol libraries (coap, coap/dtlsconn, coap/oscorelayer, oscore, edhoc and the cmp
//     codec) depend, transitively, on nothing but each other and the neutral helpers;
//   - a binding (est/estcoap, cmp/cmpcoap, cmp/cmphttp) imports no store and no composition
//     package;
//   - the client library depends on no server package (see the est exception in the test);
//   - the authority reads no files (it imports neither os nor io/fs);
//   - test kits are imported by tests only;
//   - every package of the module is in a layer, so a new package gets a decision.
package archtest
