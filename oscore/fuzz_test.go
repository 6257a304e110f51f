package oscore

import (
	"bytes"
	"errors"
	"testing"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

func FuzzParseOptionValue(f *testing.F) {
	for _, s := range []string{"", "0914", "091400", "19140837cbf3210017a2d3", "0100", "090525", "0900", "19050544616c656b", "0107",
		"00", "e0", "06", "0f", "1900", "19ff", "01"} {
		f.Add(unhex(f, s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ov, err := ParseOptionValue(b)
		if err != nil {
			return
		}
		// Whatever parses re-encodes to the same bytes (the encoding is canonical).
		out, err := ov.Marshal()
		if err != nil {
			t.Fatalf("marshal %+v: %v", ov, err)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("%x parsed as %+v re-encodes as %x", b, ov, out)
		}
	})
}

func FuzzDecodePlaintext(f *testing.F) {
	for _, s := range []string{"01b3747631", "45ff48656c6c6f20576f726c6421", "01", "01ff", "01f0", "01d1", "01e10001"} {
		f.Add(unhex(f, s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		code, opts, payload, err := decodePlaintext(b)
		if err != nil {
			return
		}
		// Re-encoding and decoding again gives the same message.
		re, err := encodePlaintext(code, append(message.Options{}, opts...), payload)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		code2, opts2, payload2, err := decodePlaintext(re)
		if err != nil || code2 != code || !sameOptions(opts, opts2) || !bytes.Equal(payload, payload2) {
			t.Fatalf("round trip of %x: %v", b, err)
		}
	})
}

// FuzzUnprotect feeds whole CoAP datagrams to the server's request path (through a Keyring) and
// to the client's response path. Nothing may panic; every failure must be a typed *Error.
func FuzzUnprotect(f *testing.F) {
	v := loadVectors(f)
	for _, mp := range v.MessageProtection {
		if mp.ProtectedRequest != "" {
			f.Add(unhex(f, mp.ProtectedRequest))
		} else {
			f.Add(unhex(f, mp.ProtectedResponse))
		}
	}
	f.Add(unhex(f, "44025d1f00003974396c6f63616c686f7374620914ff"))
	f.Add(unhex(f, "44025d1f00003974396c6f63616c686f737463e91400ff612f1092f1776f1c1668b3825e"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m := &message.Message{Options: make(message.Options, 0, 32)}
		if _, err := coder.DefaultCoder.Decode(b, m); err != nil {
			return
		}
		ring := NewKeyring()
		ring.Add(contextFor(t, v, "C.1.2", 0))
		ring.Add(contextFor(t, v, "C.3.2", 0))
		if _, st, err := ring.UnprotectRequest(m); err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("untyped error %v", err)
			}
			if _, rerr := ErrorResponse(m, err); rerr != nil {
				t.Fatalf("error response: %v", rerr)
			}
		} else if _, err := st.Context().ProtectResponse(st, &message.Message{Code: codes.Content, Token: m.Token}); err != nil {
			t.Fatalf("protect response: %v", err)
		}
		cli := contextFor(t, v, "C.1.1", 20)
		_, cst, err := cli.ProtectRequest(decodeMsg(t, unhex(t, v.MessageProtection[0].UnprotectedRequest)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.UnprotectResponse(cst, m); err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("untyped error %v", err)
			}
		}
	})
}

func BenchmarkRoundTrip(b *testing.B) {
	cli, srv := pair(b, func(c, s *Params) { c.SequenceGap = 1 << 20; s.SequenceGap = 1 << 20 })
	req := get("/.well-known/est/sen")
	req.Code = codes.POST
	req.Payload = make([]byte, 300)
	resp := &message.Message{Code: codes.Changed, Token: req.Token, MessageID: 7, Type: message.Acknowledgement, Payload: make([]byte, 500)}
	b.ReportAllocs()
	for b.Loop() {
		p, cst, err := cli.ProtectRequest(req)
		if err != nil {
			b.Fatal(err)
		}
		_, sst, err := srv.UnprotectRequest(p)
		if err != nil {
			b.Fatal(err)
		}
		pr, err := srv.ProtectResponse(sst, resp)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := cli.UnprotectResponse(cst, pr); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "exchanges/s")
}
