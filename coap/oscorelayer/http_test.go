package oscorelayer

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"coapca/oscore"
)

// TestHTTPMapping: the RFC 8613 §11 mapping both ways, as a CoAP↔HTTP proxy applies it without
// security processing: option ↔ header field (the empty option is AA), ciphertext ↔ body,
// 2.04 ↔ 200, OSCORE errors ↔ their RFC 8075 statuses.
func TestHTTPMapping(t *testing.T) {
	for _, opt := range [][]byte{{0x09, 0x25}, {}} {
		m := &message.Message{Code: codes.POST, Payload: []byte{1, 2, 3},
			Options: message.Options{{ID: oscore.OptionNumber, Value: opt}}}
		hr, err := NewHTTPRequest(context.Background(), "http://server.example/", m)
		if err != nil {
			t.Fatal(err)
		}
		back, status, err := MessageFromHTTPRequest(hr, 100)
		if err != nil || status != 0 || back.Code != codes.POST || !bytes.Equal(back.Payload, m.Payload) {
			t.Fatalf("request round trip: %+v %d %v", back, status, err)
		}
		if v, _ := optionValue(back, oscore.OptionNumber); !bytes.Equal(v, opt) {
			t.Fatalf("option %x → %x", opt, v)
		}
		rec := httptest.NewRecorder()
		WriteHTTPResponse(rec, &message.Message{Code: codes.Changed, Payload: []byte{9},
			Options: message.Options{{ID: oscore.OptionNumber, Value: opt}}})
		if rec.Code != 200 || rec.Header().Get("Content-Type") != MediaType {
			t.Fatalf("protected answer: %d %v", rec.Code, rec.Header())
		}
		resp, err := MessageFromHTTPResponse(rec.Result(), 100)
		if v, _ := optionValue(resp, oscore.OptionNumber); err != nil || resp.Code != codes.Changed || !bytes.Equal(v, opt) {
			t.Fatalf("response round trip: %+v %v", resp, err)
		}
	}
	for _, c := range []codes.Code{codes.Unauthorized, codes.BadRequest, codes.ServiceUnavailable} {
		rec := httptest.NewRecorder()
		WriteHTTPResponse(rec, &message.Message{Code: c, Payload: []byte("diag")})
		resp, err := MessageFromHTTPResponse(rec.Result(), 100)
		if err != nil || resp.Code != c || string(resp.Payload) != "diag" {
			t.Fatalf("error %v: HTTP %d → %+v %v", c, rec.Code, resp, err)
		}
	}
	if _, err := NewHTTPRequest(context.Background(), "http://x/", &message.Message{Code: codes.GET}); err == nil {
		t.Fatal("a message without OSCORE option was mapped")
	}
	for _, tt := range []struct {
		name, method, header, ctype string
		want                        int
	}{
		{"GET", http.MethodGet, "AA", MediaType, http.StatusMethodNotAllowed},
		{"no header", http.MethodPost, "", MediaType, http.StatusBadRequest},
		{"wrong media type", http.MethodPost, "AA", "application/cbor", http.StatusBadRequest},
		{"bad base64url", http.MethodPost, "+/", MediaType, http.StatusBadRequest},
	} {
		r := httptest.NewRequest(tt.method, "/", bytes.NewReader([]byte{1}))
		if tt.header != "" {
			r.Header.Set(HTTPHeader, tt.header)
		}
		r.Header.Set("Content-Type", tt.ctype)
		if _, status, err := MessageFromHTTPRequest(r, 100); err == nil || status != tt.want {
			t.Errorf("%s: status %d, %v; want %d", tt.name, status, err, tt.want)
		}
	}
	big := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(make([]byte, 101)))
	big.Header.Set(HTTPHeader, "AA")
	big.Header.Set("Content-Type", MediaType)
	if _, status, _ := MessageFromHTTPRequest(big, 100); status != http.StatusRequestEntityTooLarge {
		t.Errorf("body over the limit: %d", status)
	}
}
