package oscorelayer

import (
	"bytes"
	"context"
	"crypto/x509"
	"net/netip"
	"testing"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"coapca/coap"
	"coapca/edhoc"
	"coapca/oscore"
)

// fuzzSeeds returns datagrams that reach every branch of the layer: a protected request, a
// combined request, message_1 and message_3 posts to the EDHOC resource, and a plain request.
func fuzzSeeds(t testing.TB, f *fixture) [][]byte {
	cli := mustContext(t, pskParams(false, nil))
	req := &message.Message{Code: codes.GET, Token: []byte{1}, Type: message.Confirmable, MessageID: 7,
		Options: message.Options{{ID: message.URIPath, Value: []byte("r")}}}
	p, _, err := cli.ProtectRequest(req)
	if err != nil {
		t.Fatal(err)
	}
	p.Token, p.Type, p.MessageID = req.Token, message.Confirmable, 7
	comb := *p
	comb.Options = comb.Options.Add(message.Option{ID: oscore.OptionEDHOC, Value: []byte{}})
	comb.Payload = append([]byte{0x43, 1, 2, 3}, p.Payload...)

	cred, _ := edhoc.NewX509Credential([]*x509.Certificate{f.pki.device}, edhoc.ByX5Chain)
	init, err := edhoc.NewInitiator(edhoc.Config{Suites: []edhoc.Suite{edhoc.Suite2}, Credential: cred, PrivateKey: f.pki.devKey,
		Resolve: func(*edhoc.IDCred, []edhoc.EAD) (*edhoc.Credential, error) { return nil, edhoc.ErrUnknownCredential }})
	if err != nil {
		t.Fatal(err)
	}
	m1, _ := init.Message1(nil)
	post := func(payload []byte) []byte {
		m := &message.Message{Code: codes.POST, Type: message.Confirmable, MessageID: 8, Token: []byte{2},
			Options: message.Options{{ID: message.URIPath, Value: []byte(".well-known")}, {ID: message.URIPath, Value: []byte("edhoc")},
				{ID: message.ContentFormat, Value: []byte{CFCIDEDHOC}}}, Payload: payload}
		return encodeMsg(t, m)
	}
	return [][]byte{encodeMsg(t, p), encodeMsg(t, &comb), post(append([]byte{0xf5}, m1...)), post([]byte{0x37, 0x41, 0x01}),
		encodeMsg(t, req)}
}

// FuzzServerLayer feeds datagrams through the coap server with the OSCORE layer and the EDHOC
// resource: nothing may panic, whatever the bytes.
func FuzzServerLayer(f *testing.F) {
	fx := newFixture(f, ServerConfig{}, mustContext(f, pskParams(true, nil)))
	// Behind the address check too: a server that trusts source addresses.
	trusting := newFixtureCoAP(f, ServerConfig{}, mustContext(f, pskParams(true, nil)), coap.Config{TrustUDPSources: true})
	for _, s := range fuzzSeeds(f, fx) {
		f.Add(s)
	}
	pc := &fakePC{}
	addr := netip.MustParseAddrPort("192.0.2.7:5683")
	f.Fuzz(func(t *testing.T, b []byte) {
		fx.srv.HandleDatagram(pc, addr, b)
		trusting.srv.HandleDatagram(pc, addr, b)
		pc.mu.Lock()
		pc.out = pc.out[:0]
		pc.mu.Unlock()
	})
}

// FuzzEDHOCResource calls the EDHOC resource handler and the layer's Unprotect directly with
// arbitrary payloads (the EDHOC option set, so the combined-request path parses them too).
func FuzzEDHOCResource(f *testing.F) {
	fx := newFixture(f, ServerConfig{}, mustContext(f, pskParams(true, nil)))
	f.Add([]byte{0xf5, 0x03, 0x02})
	f.Add([]byte{0x37, 0x41, 0x00})
	f.Add([]byte{0x43, 0x01, 0x02, 0x03, 0xaa})
	h := fx.layer.EDHOCResource().Handler
	f.Fuzz(func(t *testing.T, b []byte) {
		resp := h.ServeCoAP(context.Background(), &coap.Request{Method: codes.POST, Path: WellKnownEDHOC,
			ContentFormat: coap.CF(CFCIDEDHOC), Payload: b})
		if resp == nil {
			t.Fatal("nil response")
		}
		m := &message.Message{Code: codes.POST, Payload: b, Options: message.Options{
			{ID: oscore.OptionNumber, Value: []byte{0x09, 0x01, 0x37}}, {ID: oscore.OptionEDHOC, Value: []byte{}}}}
		_ = fx.layer.Unprotect(m, coap.Peer{})
	})
}

// FuzzHTTPHeader: the OSCORE header field decoder (RFC 8613 §11.3) never panics and what it
// accepts encodes back to a value that decodes to the same option.
func FuzzHTTPHeader(f *testing.F) {
	for _, s := range []string{"AA", "CSU", "", "!!", "CQ"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := DecodeHTTPHeader(s)
		if err != nil {
			return
		}
		v2, err := DecodeHTTPHeader(EncodeHTTPHeader(v))
		if err != nil || !bytes.Equal(v, v2) {
			t.Fatalf("%q: %x then %x, %v", s, v, v2, err)
		}
	})
}
