package oscorelayer

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"coapca/oscore"
)

// TestRFC9668Example parses the EDHOC + OSCORE request of RFC 9668 §3.4 (testdata copy of
// ../shared/vectors/oscore-edhoc-rfc9668-example.json): the EDHOC option (21, empty), the
// OSCORE option (Partial IV 0, kid 0x01 = C_R), and COMB_PAYLOAD split into message_3 and the
// OSCORE ciphertext exactly as the server splits it; the client-side framing (message_3 ‖
// ciphertext) rebuilds the same payload. The example is framing only (its ciphertext is not
// consistent with any context), so the server answers it with an EDHOC error, not a panic.
// optionOSCORE is the OSCORE option number (RFC 8613 §2).
const optionOSCORE message.OptionID = 9

func TestRFC9668Example(t *testing.T) {
	raw, err := os.ReadFile("testdata/oscore-edhoc-rfc9668-example.json")
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	hx := func(k string) []byte {
		s, _ := v[k].(string)
		b, err := hex.DecodeString(s)
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		return b
	}
	var req message.Message
	req.Options = make(message.Options, 0, 8)
	if _, err := coder.DefaultCoder.Decode(hx("protected_request"), &req); err != nil {
		t.Fatal(err)
	}
	if req.Code != codes.POST || !bytes.Equal(req.Token, hx("token")) {
		t.Fatalf("code %v token %x", req.Code, req.Token)
	}
	if v, err := req.Options.GetBytes(oscore.OptionEDHOC); err != nil || len(v) != 0 {
		t.Fatalf("EDHOC option: %x %v", v, err)
	}
	if v, err := req.Options.GetBytes(optionOSCORE); err != nil || !bytes.Equal(v, hx("oscore_option_value")) {
		t.Fatalf("OSCORE option: %x %v", v, err)
	}
	ov, err := oscore.ParseMessage(&req)
	if err != nil || !ov.HasKID || !bytes.Equal(ov.KID, []byte{0x01}) || !bytes.Equal(ov.PartialIV, []byte{0x00}) {
		t.Fatalf("OSCORE option value %+v %v", ov, err)
	}
	if !bytes.Equal(req.Payload, hx("comb_payload")) {
		t.Fatalf("payload %x", req.Payload)
	}
	m3, ct, err := splitBstr(req.Payload)
	if err != nil || !bytes.Equal(m3, hx("edhoc_message_3")) || !bytes.Equal(ct, hx("oscore_ciphertext")) {
		t.Fatalf("split: message_3 %x, ciphertext %x, %v", m3, ct, err)
	}
	if rebuilt := append(append([]byte{}, m3...), ct...); !bytes.Equal(rebuilt, req.Payload) {
		t.Fatalf("rebuilt COMB_PAYLOAD %x", rebuilt)
	}
	s := NewServer(ServerConfig{})
	if inner, reply := s.combined(&req); inner != nil || reply == nil || reply.Code>>5 < 4 {
		t.Fatalf("an unknown C_R must be refused with an error: inner %v reply %v", inner, reply)
	}
}
