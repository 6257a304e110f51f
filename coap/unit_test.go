package coap

import (
	"context"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

func TestBlockOption(t *testing.T) {
	tests := []struct {
		b    block
		enc  []byte
		size int
		off  int
	}{
		{block{0, false, 0}, nil, 16, 0},
		{block{0, true, 6}, []byte{0x0e}, 1024, 0},
		{block{1, true, 2}, []byte{0x1a}, 64, 64},
		{block{187, false, 0}, []byte{0x0b, 0xb0}, 16, 2992},
		{block{1 << 19, true, 6}, []byte{0x80, 0x00, 0x0e}, 1024, 1 << 29},
	}
	for _, tt := range tests {
		if got := tt.b.encode(); string(got) != string(tt.enc) {
			t.Errorf("%v: encode %x want %x", tt.b, got, tt.enc)
		}
		opts := message.Options{{ID: message.Block2, Value: tt.b.encode()}}
		got, ok, err := getBlock(opts, message.Block2)
		if !ok || err != nil || got != tt.b || got.size() != tt.size || got.offset() != tt.off {
			t.Errorf("%v: decoded %v %v %v", tt.b, got, ok, err)
		}
	}
	if _, _, err := getBlock(message.Options{{ID: message.Block1, Value: []byte{0x0f}}}, message.Block1); err == nil {
		t.Error("BERT accepted over UDP")
	}
	if _, _, err := getBlock(message.Options{{ID: message.Block1, Value: []byte{1, 2, 3, 4}}}, message.Block1); err == nil {
		t.Error("4-byte block option accepted")
	}
	for n, want := range map[int]uint8{16: 0, 17: 0, 32: 1, 64: 2, 1000: 5, 1024: 6, 4096: 6} {
		if got := szxFor(n); got != want {
			t.Errorf("szxFor(%d) = %d want %d", n, got, want)
		}
	}
}

func TestUnknownCritical(t *testing.T) {
	tests := []struct {
		ids  []message.OptionID
		want message.OptionID
	}{
		{[]message.OptionID{message.URIPath, optOSCORE, optEDHOC, optRequestTag, optEcho, message.Size1}, 0},
		{[]message.OptionID{message.Observe, optNoResponse, 2048}, 0}, // elective unknown
		{[]message.OptionID{message.URIPath, 2049}, 2049},
		{[]message.OptionID{65001}, 65001},
	}
	for _, tt := range tests {
		var opts message.Options
		for _, id := range tt.ids {
			opts = append(opts, message.Option{ID: id})
		}
		if got := unknownCritical(opts); got != tt.want {
			t.Errorf("%v: %d want %d", tt.ids, got, tt.want)
		}
	}
}

func TestCheckOptions(t *testing.T) {
	tests := []struct {
		opts message.Options
		keep int
		bad  message.OptionID
	}{
		{message.Options{{ID: message.URIPath, Value: []byte("a")}, {ID: message.Block2, Value: []byte{1}}}, 2, 0},
		{message.Options{{ID: message.Block2, Value: []byte{1, 2, 3, 4}}}, 0, message.Block2},  // too long, critical
		{message.Options{{ID: message.ETag}}, 0, 0},                                            // too short, elective: ignored
		{message.Options{{ID: message.IfNoneMatch, Value: []byte{1}}}, 0, message.IfNoneMatch}, // must be empty
		{message.Options{{ID: 2049, Value: []byte{1}}, {ID: 2050}}, 2, 2049},                   // unknown kept
		{message.Options{{ID: optOSCORE, Value: []byte{9}}, {ID: optEDHOC}}, 2, 0},             // OSCORE, EDHOC known
		{message.Options{{ID: optEcho, Value: make([]byte, 41)}}, 0, 0},                        // Echo too long, elective
		{message.Options{{ID: optRequestTag, Value: make([]byte, 9)}}, 0, 0},                   // elective (RFC 9175 §3.2)
	}
	for i, tt := range tests {
		got, bad := checkOptions(tt.opts)
		if len(got) != tt.keep || bad != tt.bad {
			t.Errorf("%d: kept %d bad %d, want %d %d", i, len(got), bad, tt.keep, tt.bad)
		}
	}
}

func TestDecode(t *testing.T) {
	tests := []struct {
		in []byte
		ok bool
	}{
		{[]byte{0x40, 0x01, 0, 1}, true},
		{[]byte{0x41, 0x01, 0, 1, 0xaa, 0xb1, 'x', 0xff, 'p'}, true},
		{[]byte{0x40, 0x01, 0}, false},                // short
		{[]byte{0x80, 0x01, 0, 1}, false},             // version 2
		{[]byte{0x49, 0x01, 0, 1}, false},             // TKL 9
		{[]byte{0x42, 0x01, 0, 1, 1}, false},          // token truncated
		{[]byte{0x41, 0x01, 0, 1, 0xaa, 0xbf}, false}, // option length 15 (reserved)
		{[]byte{0x60, 0x00, 0, 1, 0xff}, false},       // empty ACK with trailing bytes
		{[]byte{0x71, 0x00, 0, 1, 7}, false},          // empty RST with token
	}
	for _, tt := range tests {
		var m message.Message
		err := decode(tt.in, &m)
		if (err == nil) != tt.ok {
			t.Errorf("% x: err %v", tt.in, err)
		}
	}
	var m message.Message
	if err := decode([]byte{0x41, 0x01, 0, 1, 0xaa, 0xb1, 'x', 0xff, 'p'}, &m); err != nil || pathOf(m.Options) != "/x" || string(m.Payload) != "p" || string(m.Token) != "\xaa" {
		t.Errorf("decoded %v", m)
	}
}

func TestLinkFormat(t *testing.T) {
	doc := `</est/crts>;rt="ace.est.crts";ct="287 281",</est/sen>;rt=ace.est.sen;ct=286;if=core.b,` +
		"\n" + `</obs>;obs;title="a, \"quoted\"; thing",<coap://[::1]/x>`
	links, err := ParseLinkFormat([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if len(links) != 4 {
		t.Fatalf("%d links", len(links))
	}
	if v, _ := links[2].Attr("title"); v != `a, "quoted"; thing` {
		t.Errorf("title %q", v)
	}
	if _, ok := links[2].Attr("obs"); !ok {
		t.Error("obs flag lost")
	}
	tests := []struct {
		q    []string
		want string
	}{
		{nil, "/est/crts /est/sen /obs coap://[::1]/x"},
		{[]string{"rt=ace.est*"}, "/est/crts /est/sen"},
		{[]string{"rt=ace.est.sen"}, "/est/sen"},
		{[]string{"ct=281"}, "/est/crts"},
		{[]string{"if=core.b", "rt=ace*"}, "/est/sen"},
		{[]string{"href=/est*"}, "/est/crts /est/sen"},
		{[]string{"href=/obs"}, "/obs"},
		{[]string{"title=a*"}, "/obs"},
		{[]string{"rt=none"}, ""},
		{[]string{"novalue"}, "/est/crts /est/sen /obs coap://[::1]/x"},
	}
	for _, tt := range tests {
		var got []string
		for _, l := range FilterLinks(links, tt.q) {
			got = append(got, l.Href)
		}
		if strings.Join(got, " ") != tt.want {
			t.Errorf("%v: %v want %q", tt.q, got, tt.want)
		}
	}
	round, err := ParseLinkFormat(FormatLinks(links))
	if err != nil || len(round) != 4 || round[2].Attrs[1].Value != `a, "quoted"; thing` {
		t.Fatalf("round trip: %q %v", FormatLinks(links), err)
	}
	for _, bad := range []string{"x", "</a", `</a>;t="x`, "</a>;;", "</a> x"} {
		if _, err := ParseLinkFormat([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestResourceLinks(t *testing.T) {
	got := string(FormatLinks(resourceLinks([]Resource{
		{Path: "/est/crts", RT: []string{"ace.est.crts"}, CT: []int{287, 281}},
		{Path: "/est/sen", RT: []string{"ace.est.sen"}, CT: []int{286}, OSCORE: true, Observable: true, IF: []string{"core.b"}, Title: "enroll"},
		{Path: "/secret", Hidden: true},
	})))
	want := `</est/crts>;rt="ace.est.crts";ct="287 281",</est/sen>;rt="ace.est.sen";if="core.b";ct=286;title="enroll";obs;osc`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestObserveFreshness(t *testing.T) {
	t0 := time.Now()
	tests := []struct {
		v1, v2 int64
		dt     time.Duration
		want   bool
	}{
		{1, 2, 0, true},
		{2, 1, 0, false},
		{0xfffffe, 3, 0, true}, // wrap
		{3, 0xfffffe, 0, false},
		{5, 4, 200 * time.Second, true}, // §3.4: over 128 s later
	}
	for _, tt := range tests {
		if got := newer(tt.v1, tt.v2, t0, t0.Add(tt.dt)); got != tt.want {
			t.Errorf("newer(%d,%d,+%v) = %v", tt.v1, tt.v2, tt.dt, got)
		}
	}
}

func TestConfigDefaults(t *testing.T) {
	c := Config{}.withDefaults()
	// RFC 7252 §4.8 and §4.8.2.
	if c.ACKTimeout != 2*time.Second || c.ACKRandomFactor != 1.5 || c.MaxRetransmit != 4 || c.NStart != 1 {
		t.Errorf("defaults %+v", c)
	}
	if c.ExchangeLifetime != 247*time.Second {
		t.Errorf("EXCHANGE_LIFETIME %v", c.ExchangeLifetime)
	}
	// The flood limits (docs/configuration.md).
	if c.TrustUDPSources || c.EchoWindow != 30*time.Second || c.MaxSessionsPerIP != 256 || c.MaxObservers != 4096 ||
		c.MaxObserversPerIP != 16 || c.MaxTransfersPerIP != 64 {
		t.Errorf("flood limits %+v", c)
	}
}

// TestDedupExpiry checks that deduplication state expires from the head of the
// queue, the map stays bounded, and an idle session ends up holding no map at all.
func TestDedupExpiry(t *testing.T) {
	ep := newEndpoint(Config{ExchangeLifetime: time.Minute})
	s := ep.newSession(Peer{}, func([]byte) error { return nil })
	now := time.Now()
	for i := range 1000 {
		s.mu.Lock()
		e := &dedupEntry{reply: make([]byte, 10)}
		ep.stats.cacheBytes.Add(10)
		if s.dedup == nil {
			s.dedup = map[uint16]*dedupEntry{}
		}
		s.dedup[uint16(i)] = e
		s.dq = append(s.dq, dedupItem{mid: uint16(i), expires: now.Add(time.Duration(i) * time.Millisecond), e: e})
		s.mu.Unlock()
	}
	s.mu.Lock()
	s.purgeDedupLocked(now.Add(500*time.Millisecond - time.Microsecond))
	n, q := len(s.dedup), len(s.dq)-s.dqHead
	s.mu.Unlock()
	if n != 500 || q != 500 || ep.stats.cacheBytes.Load() != 5000 {
		t.Fatalf("after purge: map %d queue %d bytes %d", n, q, ep.stats.cacheBytes.Load())
	}
	s.mu.Lock()
	s.purgeDedupLocked(now.Add(time.Second))
	idle := s.dedup == nil && s.dq == nil && s.pending == nil && s.block1 == nil && s.block2 == nil && s.observers == nil
	s.mu.Unlock()
	if !idle || ep.stats.cacheBytes.Load() != 0 {
		t.Fatalf("an idle session still holds state: dedup %v queue %d bytes %d", s.dedup, len(s.dq), ep.stats.cacheBytes.Load())
	}
}

func TestObserverRemovedAfterFailedCON(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ts := startLinkServer(t, Config{ACKTimeout: 10 * time.Millisecond, MaxRetransmit: 1, ObserveConEvery: 1})
		r := newRaw(t, ts)
		r.send(getReq(1, "tk", "/obs", message.Option{ID: message.Observe}))
		if m := r.recv(2 * time.Second); m == nil || m.Code != codes.Content {
			t.Fatalf("registration: %v", m)
		}
		ts.srv.Notify("/obs", NewResponse(codes.Content, []byte("n1")))
		if m := r.recv(2 * time.Second); m == nil || m.Type != message.Confirmable {
			t.Fatalf("want CON notification, got %v", m)
		}
		// Never acknowledge: after MAX_RETRANSMIT (one retransmission, within
		// 10 ms·1.5·(1+2) on the bubble's clock) the observer is gone.
		time.Sleep(time.Second)
		synctest.Wait()
		if ts.srv.Observers("/obs") != 0 {
			t.Fatal("dead observer kept")
		}
	})
}

func TestExchangeAndCacheLimits(t *testing.T) {
	synctest.Test(t, testExchangeAndCacheLimits)
}

func testExchangeAndCacheLimits(t *testing.T) {
	cfg := fastConfig()
	cfg.MaxExchangesPerPeer = 1
	cfg.SeparateAfter = time.Hour
	ts := startLinkServer(t, cfg)
	r := newRaw(t, ts)
	// The address check's exchange must have released its slot (nothing else is in flight,
	// so Wait cannot race with the read loop's Add).
	ts.srv.running.Wait()
	r.send(getReq(1, "a", "/slow"))
	synctest.Wait() // the /slow handler holds the peer's one exchange slot
	r.send(getReq(2, "b", "/small"))
	if m := r.recv(time.Second); m == nil || m.MessageID != 2 || m.Code != codes.ServiceUnavailable {
		t.Fatalf("over exchange cap: %v", m)
	}
	if m := r.recv(time.Second); m == nil || m.MessageID != 1 || m.Code != codes.Content {
		t.Fatalf("slow: %v", m)
	}
	if ts.srv.Stats().Busy != 1 {
		t.Error("busy not counted")
	}

	cfg = fastConfig()
	cfg.MaxCacheBytes = 1000
	ts2 := startLinkServer(t, cfg)
	c := dialTest(t, ts2, 64)
	resp, err := c.Do(context.Background(), &ClientRequest{Method: codes.GET, Path: "/big"})
	if err != nil || resp.Code != codes.ServiceUnavailable || !resp.MaxAge.IsSet() {
		t.Fatalf("over cache cap: %v %v", resp, err)
	}
}
