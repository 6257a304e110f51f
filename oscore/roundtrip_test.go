package oscore

import (
	"bytes"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// pair returns a client and a server context sharing one Master Secret.
func pair(t testing.TB, mod func(cli, srv *Params)) (cli, srv *Context) {
	t.Helper()
	cp := Params{MasterSecret: []byte("0123456789abcdef"), MasterSalt: []byte{1, 2, 3}, SenderID: []byte{0x01}, RecipientID: []byte{}}
	sp := Params{MasterSecret: []byte("0123456789abcdef"), MasterSalt: []byte{1, 2, 3}, SenderID: []byte{}, RecipientID: []byte{0x01}}
	if mod != nil {
		mod(&cp, &sp)
	}
	var err error
	if cli, err = NewContext(cp); err != nil {
		t.Fatal(err)
	}
	if srv, err = NewContext(sp); err != nil {
		t.Fatal(err)
	}
	return cli, srv
}

func get(path string) *message.Message {
	m := &message.Message{Code: codes.GET, Token: []byte{0xca, 0xfe}, MessageID: 7, Type: message.Confirmable}
	m.Options = m.Options.Add(message.Option{ID: message.URIPath, Value: []byte(path)})
	return m
}

func opt(id message.OptionID, v string) message.Option {
	return message.Option{ID: id, Value: []byte(v)}
}

func sameOptions(a, b message.Options) bool {
	a, b = sortOptions(append(message.Options{}, a...)), sortOptions(append(message.Options{}, b...))
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].ID != b[i].ID || !bytes.Equal(a[i].Value, b[i].Value) {
			return false
		}
	}
	return true
}

func TestRoundTripEveryOptionClass(t *testing.T) {
	cli, srv := pair(t, nil)
	req := &message.Message{Code: codes.PUT, Token: []byte{1, 2, 3, 4}, MessageID: 0x1234, Type: message.Confirmable,
		Payload: []byte("body")}
	reqOpts := message.Options{
		opt(message.IfMatch, "\x01"), opt(message.URIHost, "example.com"), opt(message.ETag, "et"),
		opt(message.URIPort, "\x16\x33"), opt(message.URIPath, ".well-known"), opt(message.URIPath, "est"),
		opt(message.ContentFormat, "\x01\x1e"), opt(message.URIQuery, "a=1"), opt(message.URIQuery, "b"),
		opt(message.Accept, "\x01\x19"), opt(message.Block1, "\x0e"), opt(message.Size1, "\x04\x00"),
		opt(message.ProxyScheme, "coap"), opt(OptionEcho, "echoecho"), opt(OptionRequestTag, "rt"),
		opt(message.NoResponse, "\x1a"), opt(OptionHopLimit, "\x10"), opt(2048, "unknown"),
	}
	for _, o := range reqOpts {
		req.Options = req.Options.Add(o)
	}
	prot, cst, err := cli.ProtectRequest(req)
	if err != nil {
		t.Fatal(err)
	}
	if prot.Code != codes.POST || !bytes.Equal(prot.Token, req.Token) || prot.MessageID != req.MessageID || prot.Type != req.Type {
		t.Fatalf("outer header %v", prot)
	}
	// Only class U options (and OSCORE) are visible outside (RFC 8613 §4.1).
	for _, o := range prot.Options {
		if o.ID != OptionNumber && OptionClass(o.ID) != ClassU {
			t.Errorf("class E option %v in the clear", o.ID)
		}
	}
	for _, id := range []message.OptionID{message.URIHost, message.URIPort, message.ProxyScheme, OptionHopLimit} {
		if !prot.Options.HasOption(id) {
			t.Errorf("outer option %v missing", id)
		}
	}
	if bytes.Contains(prot.Payload, []byte("body")) || bytes.Contains(prot.Payload, []byte("well-known")) {
		t.Fatal("plaintext visible")
	}
	in, sst, err := srv.UnprotectRequest(prot)
	if err != nil {
		t.Fatal(err)
	}
	if in.Code != codes.PUT || string(in.Payload) != "body" {
		t.Fatalf("inner %v", in)
	}
	// Every option arrives (Echo too: a synchronized server leaves it to the application).
	if !sameOptions(in.Options, reqOpts) {
		t.Fatalf("options\n got %v\nwant %v", in.Options, reqOpts)
	}

	resp := &message.Message{Code: codes.Content, Token: req.Token, MessageID: 0x1234, Type: message.Acknowledgement,
		Payload: []byte("answer")}
	respOpts := message.Options{opt(message.ETag, "x"), opt(message.LocationPath, "p"), opt(message.ContentFormat, "\x3c"),
		opt(message.MaxAge, "\x3c"), opt(message.LocationQuery, "q"), opt(message.Block2, "\x16"), opt(message.Size2, "\x08\x00")}
	for _, o := range respOpts {
		resp.Options = resp.Options.Add(o)
	}
	presp, err := srv.ProtectResponse(sst, resp)
	if err != nil {
		t.Fatal(err)
	}
	if presp.Code != codes.Changed || len(presp.Options) != 1 {
		t.Fatalf("outer response %v %v", presp.Code, presp.Options)
	}
	if v, _ := presp.Options.GetBytes(OptionNumber); len(v) != 0 {
		t.Fatalf("first response should reuse the request nonce, option %x", v)
	}
	// A proxy adds Outer options (Max-Age, Block2 of an outer transfer): they are discarded (§8.4 step 1).
	presp.Options = presp.Options.Add(opt(message.MaxAge, "\x00"))
	presp.Options = presp.Options.Add(opt(message.Block2, "\x06"))
	out, err := cli.UnprotectResponse(cst, presp)
	if err != nil {
		t.Fatal(err)
	}
	if out.Code != codes.Content || string(out.Payload) != "answer" || !sameOptions(out.Options, respOpts) {
		t.Fatalf("response %v %v", out, out.Options)
	}
	// Only one response per request (§7.4).
	if _, err := cli.UnprotectResponse(cst, presp); !errors.Is(err, ErrResponse) {
		t.Fatalf("second response: %v", err)
	}
	// A second response from the server takes its own Partial IV.
	p2, err := srv.ProtectResponse(sst, resp)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := p2.Options.GetBytes(OptionNumber); len(v) < 2 || v[0]&flagPIVLen == 0 {
		t.Fatalf("second response must carry a Partial IV, option %x", v)
	}
}

func TestProxyURIDecomposition(t *testing.T) {
	cli, srv := pair(t, nil)
	req := &message.Message{Code: codes.GET, Token: []byte{1}, MessageID: 1, Type: message.NonConfirmable}
	req.Options = req.Options.Add(opt(message.ProxyURI, "coap://example.com:5684/res/x%2Fy?q=1&r"))
	prot, _, err := cli.ProtectRequest(req)
	if err != nil {
		t.Fatal(err)
	}
	pu, err := prot.Options.GetString(message.ProxyURI)
	if err != nil || pu != "coap://example.com:5684" {
		t.Fatalf("outer Proxy-Uri %q %v", pu, err)
	}
	in, _, err := srv.UnprotectRequest(prot)
	if err != nil {
		t.Fatal(err)
	}
	want := message.Options{opt(message.ProxyURI, "coap://example.com:5684"), opt(message.URIPath, "res"),
		opt(message.URIPath, "x/y"), opt(message.URIQuery, "q=1"), opt(message.URIQuery, "r")}
	if !sameOptions(in.Options, want) {
		t.Fatalf("got %v", in.Options)
	}
}

func TestNestedOSCORERefused(t *testing.T) {
	cli, _ := pair(t, nil)
	req := get("x")
	req.Options = req.Options.Add(opt(OptionNumber, ""))
	if _, _, err := cli.ProtectRequest(req); err == nil {
		t.Fatal("nested OSCORE accepted")
	}
}

func TestReplayRejected(t *testing.T) {
	cli, srv := pair(t, nil)
	prot, _, err := cli.ProtectRequest(get("a"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := srv.UnprotectRequest(prot); err != nil {
		t.Fatal(err)
	}
	_, _, err = srv.UnprotectRequest(prot)
	if !errors.Is(err, ErrReplay) {
		t.Fatalf("replay: %v", err)
	}
	resp, _ := ErrorResponse(prot, err)
	if resp.Code != codes.Unauthorized || string(resp.Payload) != "Replay detected" || resp.Type != message.Acknowledgement {
		t.Fatalf("error response %v %q", resp, resp.Payload)
	}
	if ma, err := resp.Options.GetUint32(message.MaxAge); err != nil || ma != 0 {
		t.Fatalf("Max-Age %d %v", ma, err)
	}
}

// TestReplayWindowSliding drives the window with the Partial IVs of real requests.
func TestReplayWindowSliding(t *testing.T) {
	tests := []struct {
		name   string
		window int
		seqs   []uint64
		ok     []bool
	}{
		{"in order", 32, []uint64{0, 1, 2, 3}, []bool{true, true, true, true}},
		{"duplicate", 32, []uint64{5, 5}, []bool{true, false}},
		{"out of order inside window", 32, []uint64{10, 8, 9, 8, 11}, []bool{true, true, true, false, true}},
		{"too old", 32, []uint64{100, 68, 69}, []bool{true, false, true}},
		{"slide far", 32, []uint64{1, 1000, 999, 968, 1}, []bool{true, true, true, false, false}},
		{"window 1", 1, []uint64{3, 2, 4, 4}, []bool{true, false, true, false}},
		{"window 200 across words", 200, []uint64{300, 101, 100, 150, 150, 365, 166, 165}, []bool{true, true, false, true, false, true, true, false}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			store := NewMemorySequenceStore(0)
			cli, srv := pair(t, func(c, s *Params) { c.SequenceStore = store; s.ReplayWindow = tc.window })
			for i, seq := range tc.seqs {
				// Rewind the client so it reuses seq (a replay or a delayed copy, as an attacker would send).
				cli.ssn, cli.reserved = seq, 0
				prot, _, err := cli.ProtectRequest(get("w"))
				if err != nil {
					t.Fatal(err)
				}
				_, _, err = srv.UnprotectRequest(prot)
				if (err == nil) != tc.ok[i] {
					t.Fatalf("step %d seq %d: err %v, want ok=%v", i, seq, err, tc.ok[i])
				}
				if err != nil && !errors.Is(err, ErrReplay) {
					t.Fatalf("step %d: %v", i, err)
				}
			}
		})
	}
}

func TestSequencePersistenceAcrossRestart(t *testing.T) {
	stores := map[string]func(t *testing.T) SequenceStore{
		"memory": func(*testing.T) SequenceStore { return NewMemorySequenceStore(0) },
		"file":   func(t *testing.T) SequenceStore { return NewFileSequenceStore(filepath.Join(t.TempDir(), "ssn"), 0) },
	}
	for name, mk := range stores {
		t.Run(name, func(t *testing.T) {
			store := mk(t)
			seen := map[string]bool{}
			var srv *Context
			for boot := 0; boot < 4; boot++ {
				// A fresh client context on every boot: only the store survives the "crash".
				cli, s := pair(t, func(c, s *Params) { c.SequenceStore = store; c.SequenceGap = 10 })
				if srv == nil {
					srv = s
				}
				for i := 0; i < 7+boot*5; i++ {
					prot, _, err := cli.ProtectRequest(get("p"))
					if err != nil {
						t.Fatal(err)
					}
					ov, _ := ParseMessage(prot)
					if seen[string(ov.PartialIV)] {
						t.Fatalf("boot %d reused Partial IV %x", boot, ov.PartialIV)
					}
					seen[string(ov.PartialIV)] = true
					// The server, which kept its window, accepts every request.
					if _, _, err := srv.UnprotectRequest(prot); err != nil {
						t.Fatalf("boot %d: %v", boot, err)
					}
				}
			}
			if n, _ := store.Load(); n != 80 {
				// boots use 7, 12, 17, 22 numbers with K=10: limits 10, 30, 50, 80.
				t.Fatalf("stored limit %d, want 80", n)
			}
		})
	}
}

type failingStore struct{}

func (failingStore) Load() (uint64, error) { return 0, nil }
func (failingStore) Reserve(uint64) error  { return errors.New("disk full") }

func TestSequenceStoreFailureStopsSending(t *testing.T) {
	cli, _ := pair(t, func(c, s *Params) { c.SequenceStore = failingStore{} })
	if _, _, err := cli.ProtectRequest(get("x")); err == nil {
		t.Fatal("sent a message whose sequence number could not be persisted")
	}
}

func TestSequenceExhausted(t *testing.T) {
	cli, _ := pair(t, func(c, s *Params) { c.SequenceStore = NewMemorySequenceStore(MaxSequenceNumber) })
	if _, _, err := cli.ProtectRequest(get("x")); err != nil {
		t.Fatalf("last number: %v", err)
	}
	if _, _, err := cli.ProtectRequest(get("x")); !errors.Is(err, ErrSequenceExhausted) {
		t.Fatalf("after last: %v", err)
	}
}

// TestEchoRoundTrip: a server restarted with its Sender Sequence Number persisted but without a
// replay window challenges with 4.01 + Echo; the client repeats; old requests stay rejected
// (RFC 8613 Appendix B.1.2, RFC 9175).
func TestEchoRoundTrip(t *testing.T) {
	now := time.Unix(1000, 0)
	srvStore := NewMemorySequenceStore(0)
	cli, srv := pair(t, func(c, s *Params) { s.SequenceStore = srvStore })
	// Traffic before the restart; keep one request to replay later.
	old, _, _ := cli.ProtectRequest(get("old"))
	_, st, err := srv.UnprotectRequest(old)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.ProtectResponseWithPIV(st, &message.Message{Code: codes.Content, Token: old.Token, MessageID: 1}); err != nil {
		t.Fatal(err)
	}
	_, srv = pair(t, func(c, s *Params) {
		s.SequenceStore, s.ReplayWindowUnsynchronized = srvStore, true
		s.Now = func() time.Time { return now }
	})
	if srv.ReplayWindowSynchronized() {
		t.Fatal("restored context claims a synchronized window")
	}
	var sent []*message.Message
	send := func(p *message.Message) (*message.Message, error) {
		sent = append(sent, p)
		in, st, err := srv.UnprotectRequest(p)
		if err != nil {
			return ErrorResponse(p, err)
		}
		if in.Options.HasOption(OptionEcho) {
			t.Error("the Echo used for resynchronisation reached the application")
		}
		resp := &message.Message{Code: codes.Content, Token: p.Token, MessageID: p.MessageID, Type: message.Acknowledgement,
			Payload: append([]byte("hello "), in.Options[0].Value...)}
		return srv.ProtectResponse(st, resp)
	}
	resp, err := cli.Exchange(get("new"), send)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Code != codes.Content || string(resp.Payload) != "hello new" || len(sent) != 2 {
		t.Fatalf("resp %v %q after %d sends", resp.Code, resp.Payload, len(sent))
	}
	if !srv.ReplayWindowSynchronized() {
		t.Fatal("window not synchronized after Echo")
	}
	// The challenge carried the server's own Partial IV (B.1.2 MUST).
	if n := srv.SenderSequenceNumber(); n != DefaultSequenceGap+1 {
		t.Fatalf("server SSN %d after challenge, want %d (persisted limit + 1)", n, DefaultSequenceGap+1)
	}
	// Replays of the first (unverified) request and of the pre-restart request are refused now.
	for i, p := range []*message.Message{sent[0], old, sent[1]} {
		if _, _, err := srv.UnprotectRequest(p); !errors.Is(err, ErrReplay) {
			t.Fatalf("replay %d accepted: %v", i, err)
		}
	}
	// A wrong or expired Echo value gets a new challenge.
	srv.InvalidateReplayWindow()
	p, _, _ := cli.ProtectRequest(WithEcho(get("x"), []byte("forged!!")))
	_, _, err = srv.UnprotectRequest(p)
	if !errors.Is(err, ErrEchoRequired) {
		t.Fatalf("forged echo: %v", err)
	}
	ch, err := ErrorResponse(p, err)
	if err != nil || !IsProtected(ch) || ch.Code != codes.Changed {
		t.Fatalf("challenge %v %v", ch, err)
	}
	v := ch.Options[0].Value
	if len(v) < 2 || v[0]&flagPIVLen == 0 {
		t.Fatalf("challenge without Partial IV: %x", v)
	}
	now = now.Add(DefaultEchoLifetime + time.Second)
	p, _, _ = cli.ProtectRequest(WithEcho(get("x"), srv.echo))
	if _, _, err := srv.UnprotectRequest(p); !errors.Is(err, ErrEchoRequired) {
		t.Fatalf("expired echo: %v", err)
	}
}

func TestObserve(t *testing.T) {
	cli, srv := pair(t, nil)
	reg := get("temp")
	reg.Options = reg.Options.Add(message.Option{ID: message.Observe, Value: []byte{}})
	prot, cst, err := cli.ProtectRequest(reg)
	if err != nil {
		t.Fatal(err)
	}
	if prot.Code != codeFETCH {
		t.Fatalf("outer code %v, want FETCH", prot.Code)
	}
	if o, err := prot.Options.Observe(); err != nil || o != 0 {
		t.Fatalf("outer Observe %d %v", o, err)
	}
	in, sst, err := srv.UnprotectRequest(prot)
	if err != nil {
		t.Fatal(err)
	}
	if !sst.Observe() || !in.Options.HasOption(message.Observe) {
		t.Fatal("server did not see the registration")
	}
	notify := func(seq uint32, body string) *message.Message {
		n := &message.Message{Code: codes.Content, Token: reg.Token, MessageID: int32(100 + seq), Type: message.NonConfirmable, Payload: []byte(body)}
		n.Options, _, _ = n.Options.SetObserve(make([]byte, 4), seq)
		p, err := srv.ProtectResponse(sst, n)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	n1, n2, n3 := notify(5, "20C"), notify(6, "21C"), notify(7, "22C")
	for _, n := range []*message.Message{n1, n2, n3} {
		if n.Code != codes.Content {
			t.Fatalf("notification outer code %v", n.Code)
		}
		ov, _ := ParseMessage(n)
		if ov.PartialIV == nil {
			t.Fatal("notification without Partial IV")
		}
	}
	// n2 arrives first, then n1 (older: dropped), then n3, then n3 again (replay: dropped).
	steps := []struct {
		m    *message.Message
		body string
		ok   bool
	}{{n2, "21C", true}, {n1, "", false}, {n3, "22C", true}, {n3, "", false}}
	for i, s := range steps {
		out, err := cli.UnprotectResponse(cst, s.m)
		if (err == nil) != s.ok {
			t.Fatalf("step %d: %v", i, err)
		}
		if err == nil {
			if string(out.Payload) != s.body {
				t.Fatalf("step %d body %q", i, out.Payload)
			}
			if _, err := out.Options.Observe(); err != nil {
				t.Fatalf("step %d: no Observe in the notification", i)
			}
		}
	}
	// A notification answering a plain GET is refused (§4.1.3.5.2).
	p, cst2, _ := cli.ProtectRequest(get("plain"))
	_, sst2, err := srv.UnprotectRequest(p)
	if err != nil {
		t.Fatal(err)
	}
	n := &message.Message{Code: codes.Content, Token: p.Token, MessageID: 1, Type: message.Acknowledgement}
	n.Options, _, _ = n.Options.SetObserve(make([]byte, 4), 9)
	pn, _ := srv.ProtectResponse(sst2, n)
	if _, err := cli.UnprotectResponse(cst2, pn); !errors.Is(err, ErrResponse) {
		t.Fatalf("notification to GET: %v", err)
	}
}

func TestInnerBlockwise(t *testing.T) {
	// Inner Block1: each block is its own OSCORE request (RFC 8613 §4.1.3.4.1); Block1 is encrypted.
	cli, srv := pair(t, nil)
	for num := 0; num < 3; num++ {
		req := get("sen")
		req.Code = codes.POST
		req.Options = req.Options.Add(message.Option{ID: message.Block1, Value: []byte{byte(num<<4 | 0x08 | 2)}})
		req.Payload = bytes.Repeat([]byte{byte('a' + num)}, 64)
		p, _, err := cli.ProtectRequest(req)
		if err != nil {
			t.Fatal(err)
		}
		if p.Options.HasOption(message.Block1) {
			t.Fatal("inner Block1 visible")
		}
		in, _, err := srv.UnprotectRequest(p)
		if err != nil {
			t.Fatal(err)
		}
		if v, _ := in.Options.GetUint32(message.Block1); v != uint32(num<<4|0x08|2) || !bytes.Equal(in.Payload, req.Payload) {
			t.Fatalf("block %d: %x", num, v)
		}
	}
}

func TestOuterBlockwiseLimit(t *testing.T) {
	cli, srv := pair(t, func(c, s *Params) { s.MaxUnfragmentedSize = 100 })
	req := get("big")
	req.Code = codes.POST
	req.Payload = make([]byte, 200)
	p, _, _ := cli.ProtectRequest(req)
	// The transport reassembled an Outer Block1 transfer; the Outer Block1 itself is discarded.
	p.Options = p.Options.Add(message.Option{ID: message.Block1, Value: []byte{0x06}})
	if _, _, err := srv.UnprotectRequest(p); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("over MAX_UNFRAGMENTED_SIZE: %v", err)
	}
	req.Payload = make([]byte, 50)
	p, _, _ = cli.ProtectRequest(req)
	p.Options = p.Options.Add(message.Option{ID: message.Block1, Value: []byte{0x06}})
	in, _, err := srv.UnprotectRequest(p)
	if err != nil {
		t.Fatal(err)
	}
	if in.Options.HasOption(message.Block1) {
		t.Fatal("outer Block1 leaked into the decrypted request")
	}
}

func TestVerificationErrors(t *testing.T) {
	cli, srv := pair(t, nil)
	mk := func() *message.Message { p, _, _ := cli.ProtectRequest(get("e")); return p }
	tests := []struct {
		name string
		mod  func(m *message.Message)
		want *Error
		code codes.Code
	}{
		{"no OSCORE option", func(m *message.Message) { m.Options = m.Options.Remove(OptionNumber) }, ErrNotProtected, codes.Unauthorized},
		{"reserved flag", func(m *message.Message) { m.Options[0].Value = append([]byte{0x89}, m.Options[0].Value[1:]...) }, ErrDecode, codes.BadOption},
		{"no partial IV", func(m *message.Message) { m.Options[0].Value = []byte{0x08, 0x01} }, ErrDecode, codes.BadOption},
		{"unknown kid", func(m *message.Message) { m.Options[0].Value = append(m.Options[0].Value[:2:2], 0x77) }, ErrContextNotFound, codes.Unauthorized},
		{"wrong kid context", func(m *message.Message) { m.Options[0].Value = []byte{0x19, 0x00, 0x01, 0xaa, 0x01} }, ErrContextNotFound, codes.Unauthorized},
		{"tampered ciphertext", func(m *message.Message) { m.Payload[0] ^= 1 }, ErrDecrypt, codes.BadRequest},
		{"tampered partial IV", func(m *message.Message) { m.Options[0].Value[1] ^= 0x40 }, ErrDecrypt, codes.BadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := mk()
			tc.mod(m)
			_, _, err := srv.UnprotectRequest(m)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			r, _ := ErrorResponse(m, err)
			if r.Code != tc.code || IsProtected(r) {
				t.Fatalf("error response %v", r)
			}
		})
	}
}

func TestKeyringIDContexts(t *testing.T) {
	ring := NewKeyring()
	var clients []*Context
	for i, idc := range [][]byte{{0xa1}, {0xa2}, nil} {
		cli, srv := pair(t, func(c, s *Params) {
			c.IDContext, s.IDContext = idc, idc
			c.MasterSecret = append([]byte("secret-"), byte(i))
			s.MasterSecret = c.MasterSecret
			c.OmitKIDContext = i == 1 // the server must then try every candidate
		})
		ring.Add(srv)
		clients = append(clients, cli)
	}
	if ring.Len() != 3 {
		t.Fatalf("len %d", ring.Len())
	}
	for i, cli := range clients {
		p, cst, err := cli.ProtectRequest(get("k"))
		if err != nil {
			t.Fatal(err)
		}
		in, st, err := ring.UnprotectRequest(p)
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		resp := &message.Message{Code: codes.Content, Token: in.Token, MessageID: 1, Type: message.Acknowledgement, Payload: []byte{byte(i)}}
		pr, err := ring.ProtectResponse(st, resp)
		if err != nil {
			t.Fatal(err)
		}
		out, err := cli.UnprotectResponse(cst, pr)
		if err != nil || out.Payload[0] != byte(i) {
			t.Fatalf("client %d response: %v", i, err)
		}
	}
	ring.Remove(ring.Lookup(OptionValue{KID: []byte{1}, HasKID: true, KIDContext: []byte{0xa1}, HasKIDContext: true})[0])
	p, _, _ := clients[0].ProtectRequest(get("k"))
	if _, _, err := ring.UnprotectRequest(p); !errors.Is(err, ErrContextNotFound) {
		t.Fatalf("removed context: %v", err)
	}
}

func TestAlgorithms(t *testing.T) {
	for _, alg := range []int{AlgAESCCM16_64_128, AlgAESCCM16_64_256, AlgAESCCM64_64_128, AlgAESCCM64_64_256,
		AlgAESCCM16_128_128, AlgAESCCM16_128_256, AlgAESCCM64_128_128, AlgAESCCM64_128_256,
		AlgA128GCM, AlgA192GCM, AlgA256GCM, AlgChaCha20Poly1305} {
		for _, kdf := range []int{HKDFSHA256, HKDFSHA512} {
			cli, srv := pair(t, func(c, s *Params) { c.AEAD, s.AEAD, c.HKDF, s.HKDF = alg, alg, kdf, kdf })
			p, cst, err := cli.ProtectRequest(get("alg"))
			if err != nil {
				t.Fatalf("alg %d: %v", alg, err)
			}
			in, sst, err := srv.UnprotectRequest(p)
			if err != nil {
				t.Fatalf("alg %d: %v", alg, err)
			}
			pr, _ := srv.ProtectResponse(sst, &message.Message{Code: codes.Content, Token: in.Token, MessageID: 2, Type: message.Acknowledgement, Payload: []byte("ok")})
			if out, err := cli.UnprotectResponse(cst, pr); err != nil || string(out.Payload) != "ok" {
				t.Fatalf("alg %d hkdf %d: %v", alg, kdf, err)
			}
		}
	}
	if _, err := NewContext(Params{MasterSecret: []byte{1}, AEAD: 99, SenderID: []byte{1}}); err == nil {
		t.Fatal("unknown AEAD accepted")
	}
	if _, err := NewContext(Params{MasterSecret: []byte{1}, AEAD: AlgAESCCM64_64_128, SenderID: []byte{1, 2}}); err == nil {
		t.Fatal("Sender ID longer than nonce-6 accepted")
	}
}

// A registry entry replaces a built-in algorithm.
type countingAEAD struct {
	AEADAlgorithm
	n *int
}

func (c countingAEAD) ID() int { *c.n++; return c.AEADAlgorithm.ID() }

func TestRegistry(t *testing.T) {
	n := 0
	r := NewRegistry()
	r.RegisterAEAD(countingAEAD{builtinAEAD(AlgAESCCM16_64_128), &n})
	if _, err := NewContext(Params{MasterSecret: []byte{1}, SenderID: []byte{1}, Registry: r}); err != nil || n == 0 {
		t.Fatalf("registry not used: %v %d", err, n)
	}
}

func TestConcurrentRequests(t *testing.T) {
	cli, srv := pair(t, func(c, s *Params) { c.SequenceGap = 3; s.ReplayWindow = 256 })
	const n = 64
	msgs := make(chan *message.Message, n)
	errc := make(chan error, 2*n)
	for i := 0; i < n; i++ {
		go func() {
			p, _, err := cli.ProtectRequest(get("c"))
			errc <- err
			msgs <- p
		}()
	}
	var all []*message.Message
	for i := 0; i < n; i++ {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		all = append(all, <-msgs)
	}
	// Each request is delivered twice, concurrently: exactly one copy passes.
	ok := make(chan bool, 2*n)
	for _, p := range all {
		for k := 0; k < 2; k++ {
			go func() { _, _, err := srv.UnprotectRequest(p); ok <- err == nil }()
		}
	}
	good := 0
	for i := 0; i < 2*n; i++ {
		if <-ok {
			good++
		}
	}
	if good != n {
		t.Fatalf("%d accepted, want %d", good, n)
	}
}

func TestExchangeUnprotectedError(t *testing.T) {
	cli, _ := pair(t, nil)
	_, other := pair(t, func(c, s *Params) { s.RecipientID = []byte{0x02} })
	ring := NewKeyring()
	ring.Add(other)
	resp, err := cli.Exchange(get("x"), func(p *message.Message) (*message.Message, error) {
		return ring.Serve(p, func(*message.Message, *RequestState) *message.Message { return nil })
	})
	if !errors.Is(err, ErrNotProtected) || resp == nil || resp.Code != codes.Unauthorized ||
		string(resp.Payload) != "Security context not found" {
		t.Fatalf("got %v %v", resp, err)
	}
	if KindOf(err) != KindNotProtected || KindOf(errors.New("x")) != KindInternal {
		t.Fatal("KindOf")
	}
}

// sharedAllocator is the database of several processes: blocks handed out in order.
type sharedAllocator struct {
	mu   sync.Mutex
	next uint64
}

func (a *sharedAllocator) Load() (uint64, error) { return 0, nil }
func (a *sharedAllocator) Reserve(uint64) error  { return errors.New("Reserve called on an allocator") }
func (a *sharedAllocator) Allocate(n uint64) (uint64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	first := a.next
	a.next += n
	return first, nil
}

// TestTwoProcessesOneContext: two server instances hold the same pre-shared context and send
// with it in turns. With a store that only records a limit, both would start at the same
// number and reuse nonces (RFC 8613 §7.2.1); with a SequenceAllocator each sends only from
// blocks of its own, so no Partial IV appears twice, also across a "restart" of one of them.
func TestTwoProcessesOneContext(t *testing.T) {
	shared := &sharedAllocator{}
	mk := func() *Context {
		cli, _ := pair(t, func(c, s *Params) { c.SequenceStore = shared; c.SequenceGap = 5 })
		return cli
	}
	procs := []*Context{mk(), mk()}
	seen := map[uint64]int{}
	for i := range 40 {
		if i == 23 {
			procs[1] = mk() // instance 1 restarts
		}
		p := i % 2
		if i%7 == 0 {
			p = 0 // uneven turns
		}
		prot, _, err := procs[p].ProtectRequest(get("p"))
		if err != nil {
			t.Fatal(err)
		}
		ov, _ := ParseMessage(prot)
		seq := decodePIV(ov.PartialIV)
		if prev, dup := seen[seq]; dup {
			t.Fatalf("instance %d reused sequence number %d (sent before by instance %d): nonce reuse", p, seq, prev)
		}
		seen[seq] = p
	}
}
