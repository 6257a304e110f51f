package coap

import (
	"bytes"
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// tagLayer is a toy object-security layer: a request is "protected" when it carries the OSCORE
// option with value "ok" (anything else is refused with 4.01), and every response message to it
// gets the option "sealed". It counts what it sealed. Like OSCORE, it hides the Block options of
// the inner message (RFC 8613 §4.1.3.4.1: inner Block options are class E): "sealed" messages
// carry them as the elective private options innerBlock1/innerBlock2, so the endpoint's own
// block-wise handling sees only Outer Block options.
type tagLayer struct{ sealed atomic.Int64 }

const (
	innerBlock1 message.OptionID = 65000
	innerBlock2 message.OptionID = 65002
)

// hideBlocks moves Block1/Block2 to the inner private options; showBlocks moves them back.
func hideBlocks(opts message.Options) message.Options {
	return swapOpts(opts, map[message.OptionID]message.OptionID{message.Block1: innerBlock1, message.Block2: innerBlock2})
}

func showBlocks(opts message.Options) message.Options {
	return swapOpts(opts, map[message.OptionID]message.OptionID{innerBlock1: message.Block1, innerBlock2: message.Block2})
}

func swapOpts(opts message.Options, m map[message.OptionID]message.OptionID) message.Options {
	out := make(message.Options, 0, len(opts))
	for _, o := range opts {
		if to, ok := m[o.ID]; ok {
			o.ID = to
		}
		out = out.Add(o)
	}
	return out
}

func (l *tagLayer) Unprotect(m *message.Message, peer Peer) LayerResult {
	v, ok := optBytes(m.Options, optOSCORE)
	if !ok {
		return LayerResult{}
	}
	if string(v) != "ok" {
		return LayerResult{Reply: &message.Message{Code: codes.Unauthorized, Payload: []byte("bad tag")}}
	}
	inner := *m
	inner.Options = showBlocks(append(message.Options(nil), m.Options...).Remove(optOSCORE))
	peer.OSCORE = &ObjectSecurity{Identity: "tagged"}
	return LayerResult{Request: &inner, Peer: peer, Protect: func(r *message.Message) (*message.Message, error) {
		l.sealed.Add(1)
		out := *r
		out.Options = hideBlocks(append(message.Options(nil), r.Options...)).Add(message.Option{ID: optOSCORE, Value: []byte("sealed")})
		return &out, nil
	}}
}

// tagClient is the client side of tagLayer.
type tagClient struct{ tag string }

func (c tagClient) RoundTrip(req *message.Message, send func(*message.Message) (*message.Message, error)) (*message.Message, error) {
	p := *req
	p.Options = hideBlocks(append(message.Options(nil), req.Options...)).Add(message.Option{ID: optOSCORE, Value: []byte(c.tag)})
	r, err := send(&p)
	if err != nil {
		return nil, err
	}
	if v, _ := optBytes(r.Options, optOSCORE); string(v) == "sealed" {
		out := *r
		out.Options = showBlocks(append(message.Options(nil), r.Options...).Remove(optOSCORE))
		return &out, nil
	}
	return r, nil
}

func TestLayer(t *testing.T) {
	mux := NewMux()
	var who atomic.Value
	mux.Handle(Resource{Path: "/p", OSCORE: true, Handler: HandlerFunc(func(_ context.Context, r *Request) *Response {
		if r.Peer.OSCORE != nil {
			who.Store(r.Peer.OSCORE.Identity)
		}
		return NewResponse(codes.Content, append(testBody(2500, 1), r.Payload...))
	})})
	mux.Handle(Resource{Path: "/plain", Handler: HandlerFunc(func(_ context.Context, r *Request) *Response {
		return NewResponse(codes.Content, []byte("plain"))
	})})
	l := &tagLayer{}
	mux.SetLayer(l)
	srv := NewServer(mux, Config{})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeUDP(pc)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dial := func(layer ClientLayer) *Client {
		c, err := Dial(ctx, "coap://"+pc.LocalAddr().String(), ClientOptions{Layer: layer, BlockSize: 512})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	do := func(c *Client, path string, body []byte) *Response {
		t.Helper()
		resp, err := c.Do(ctx, &ClientRequest{Method: codes.POST, Path: path, Payload: body})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}

	for _, tc := range []struct {
		name   string
		layer  ClientLayer
		path   string
		code   codes.Code
		sealed bool
	}{
		{"protected, block-wise both ways", tagClient{"ok"}, "/p", codes.Content, true},
		{"unprotected to an OSCORE resource", nil, "/p", codes.Unauthorized, false},
		{"refused by the layer", tagClient{"forged"}, "/p", codes.Unauthorized, false},
		{"unprotected to a plain resource", nil, "/plain", codes.Content, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := l.sealed.Load()
			body := testBody(1300, 9) // three Block1 blocks at 512
			resp := do(dial(tc.layer), tc.path, body)
			if resp.Code != tc.code {
				t.Fatalf("code %v, want %v (%s)", resp.Code, tc.code, resp.Payload)
			}
			sealed := l.sealed.Load() - before
			if !tc.sealed {
				if sealed != 0 {
					t.Fatalf("%d messages sealed", sealed)
				}
				return
			}
			if !bytes.Equal(resp.Payload, append(testBody(2500, 1), body...)) {
				t.Fatal("body differs")
			}
			// 2 × 2.31 Continue + 8 Block2 blocks (3800 bytes at 512): every message sealed.
			if sealed != 10 {
				t.Fatalf("%d messages sealed, want 10", sealed)
			}
			if who.Load() != "tagged" {
				t.Fatalf("handler saw identity %v", who.Load())
			}
		})
	}
	if err := dial(tagClient{"ok"}).Observe(ctx, "/p", func(*Response) {}); err == nil {
		t.Error("Observe through a client layer did not fail")
	}
}
