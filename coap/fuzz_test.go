package coap

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// FuzzServerDatagram feeds arbitrary datagrams to the server's datagram
// handler (decoder, option checks, block-wise, observe, dispatch). Replies go
// to a discard address.
func FuzzServerDatagram(f *testing.F) {
	seeds := [][]byte{
		encode(getReq(1, "t", "/small")),
		encode(getReq(2, "t", "/big", message.Option{ID: message.Block2, Value: block{Num: 3, SZX: 0}.encode()})),
		encode(getReq(3, "t", "/obs", message.Option{ID: message.Observe})),
		encode(getReq(4, "t", "/.well-known/core", message.Option{ID: message.URIQuery, Value: []byte("rt=ace*")})),
		{0x40, 0, 0, 1}, {0x70, 0, 0, 1}, {0x41, 0x01, 0, 1, 0xaa, 0xbf}, {0xff},
	}
	post := getReq(5, "p", "/echo", message.Option{ID: message.Block1, Value: block{Num: 0, More: true, SZX: 0}.encode()})
	post.Code, post.Payload = codes.POST, bytes.Repeat([]byte{1}, 16)
	seeds = append(seeds, encode(post))
	for _, s := range seeds {
		f.Add(s)
	}
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		f.Fatal(err)
	}
	defer pc.Close()
	from := netip.MustParseAddrPort("127.0.0.1:9")
	mux := newTestMux(&testSrv{}, 0)
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1500 {
			return // one MTU is enough to reach every path
		}
		// A fresh server per input, and waiting for its handlers, keep coverage
		// deterministic (the fuzzer's minimiser needs that).
		// Both with address validation (the gate) and with sources trusted (everything
		// behind it).
		for _, trust := range []bool{false, true} {
			srv := NewServer(mux, Config{MaxBodySize: 4096, SeparateAfter: time.Hour, TrustUDPSources: trust})
			srv.HandleDatagram(pc, from, b)
			srv.HandleDatagram(pc, from, b) // and its duplicate
			srv.running.Wait()
			_ = srv.Close()
		}
	})
}

// FuzzBlock1 drives the Block1 state machine with arbitrary block sequences:
// it must never exceed MaxBodySize nor hand back a body that was not sent in order.
func FuzzBlock1(f *testing.F) {
	f.Add([]byte{0x0a, 0x1a, 0x22})
	f.Add([]byte{0x08, 0x18, 0x28, 0x30})
	f.Add([]byte{0x0e, 0x00, 0x1e})
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 256 {
			return // longer sequences add nothing but allocation
		}
		ep := newEndpoint(Config{MaxBodySize: 512})
		s := ep.newSession(Peer{}, func([]byte) error { return nil })
		var sent []byte
		for i, op := range ops {
			b := block{Num: uint32(op >> 4), More: op&8 != 0, SZX: op & 7 % 7}
			payload := bytes.Repeat([]byte{byte(i)}, b.size())
			if !b.More && i%2 == 1 {
				payload = payload[:b.size()/2]
			}
			body, resp := s.block1Step("k", b, payload, -1)
			if resp != nil {
				if resp.Code == codes.Continue {
					sent = append(sent[:min(len(sent), b.offset())], payload...)
				}
				continue
			}
			want := append(sent[:min(len(sent), b.offset())], payload...)
			if b.Num == 0 {
				want = payload
			}
			if len(body) > 512 || !bytes.Equal(body, want) {
				t.Fatalf("op %d: body %d bytes, want %d", i, len(body), len(want))
			}
			sent = nil
		}
		s.close()
		if n := ep.stats.reasmBytes.Load(); n != 0 {
			t.Fatalf("reassembly bytes leaked: %d", n)
		}
	})
}

// FuzzLinkFormat parses, filters and re-serialises link-format documents.
func FuzzLinkFormat(f *testing.F) {
	f.Add([]byte(`</a>;rt="ace.est.crts";ct=287,</b>;rt="x y";obs,</c>`), "rt=ace.est*")
	f.Add([]byte(`<coap://h/x>;title="a,b;c";if=core.b`), "href=/x")
	f.Add([]byte(`</a>;ct="60 62"`), "ct=62")
	f.Add([]byte(`<`), "")
	f.Fuzz(func(t *testing.T, doc []byte, q string) {
		links, err := ParseLinkFormat(doc)
		if err != nil {
			return
		}
		_ = FilterLinks(links, []string{q})
		again, err := ParseLinkFormat(FormatLinks(links))
		if err != nil {
			t.Fatalf("re-parse of %q: %v", FormatLinks(links), err)
		}
		if len(again) != len(links) {
			t.Fatalf("round trip: %d links became %d", len(links), len(again))
		}
	})
}

// FuzzDecode: whatever decodes re-encodes to a message that decodes the same.
func FuzzDecode(f *testing.F) {
	f.Add([]byte{0x41, 0x01, 0, 1, 0xaa, 0xb1, 'x', 0xff, 'p'})
	f.Add(encode(getReq(2, "tok", "/a/b", message.Option{ID: message.Block2, Value: []byte{0x1e}})))
	f.Add([]byte{0x40, 0x01, 0, 1, 0xd1, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		var m message.Message
		if decode(b, &m) != nil {
			return
		}
		m.Options, _ = checkOptions(m.Options)
		e := encode(&m)
		if e == nil {
			return // e.g. an option value the encoder refuses
		}
		var m2 message.Message
		if err := decode(e, &m2); err != nil {
			t.Fatalf("re-decode of % x: %v", e, err)
		}
		if m2.Code != m.Code || !bytes.Equal(m2.Token, m.Token) || !bytes.Equal(m2.Payload, m.Payload) || len(m2.Options) != len(m.Options) {
			t.Fatalf("round trip changed the message: %v → %v", m, m2)
		}
	})
}
