// Package server is coapca's composition root: from a config.Config it wires the front doors,
// the services, the authority and the store into a running server (Start), or opens the data
// directory, the store and the authority without listeners for `coapca ca` (OpenHouse). It is
// the one package that opens a store back end (internal/archtest checks this).
//
// One file per front door registers it: est.go (the EST service and EST-coaps, RFC 9148, on
// coaps://), oscore.go (EST-oscore: OSCORE, RFC 8613, keyed by EDHOC, RFC 9528, or pre-shared,
// on coap://), cmp.go (CMP over CoAP, RFC 9482, on coap:// and coaps://, and over HTTP, RFC
// 9811); server.go runs the listeners, metrics.go exports their counters, welcome.go prints
// what runs and how to enroll the demo device.
package server
