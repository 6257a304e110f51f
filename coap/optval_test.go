package coap

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// startOptServer serves /answer (replies with the Response the test put in want) and records
// every Request it serves in seen.
func startOptServer(t *testing.T) (addr string, answer chan *Response, seen chan *Request) {
	t.Helper()
	answer, seen = make(chan *Response, 1), make(chan *Request, 1)
	mux := NewMux()
	mux.Handle(Resource{Path: "/answer", Handler: HandlerFunc(func(_ context.Context, r *Request) *Response {
		seen <- r
		return <-answer
	})})
	srv := NewServer(mux, fastConfig())
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeUDP(pc) }()
	t.Cleanup(func() {
		_ = srv.Close()
		if err := <-done; err != nil {
			t.Errorf("ServeUDP: %v", err)
		}
	})
	return "coap://" + pc.LocalAddr().String(), answer, seen
}

// TestZeroValueMeansAbsent: a Response, ClientRequest or Request whose Content-Format, Accept,
// Max-Age or Observe is left at its zero value carries no such option on the wire, while the
// legal zero values (Content-Format 0 text/plain, Max-Age 0) still travel as options. It is
// the attack of issue 9 on the old API, where a handler writing Response{Code, Payload} sent
// "text/plain, Max-Age 0" without asking for it.
func TestZeroValueMeansAbsent(t *testing.T) {
	addr, answer, seen := startOptServer(t)
	c, err := Dial(context.Background(), addr, ClientOptions{Config: fastConfig()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })

	for _, tc := range []struct {
		name        string
		req         ClientRequest
		resp        Response
		wantCF      Format // what the handler sees
		wantAccept  Format
		wantObserve Observe
		wantAge     time.Duration // the freshness the client reads (RFC 7252 §5.10.5)
	}{
		{name: "all absent",
			req:  ClientRequest{Method: codes.GET},
			resp: Response{Code: codes.Content, Payload: []byte("x")}, wantAge: 60 * time.Second},
		{name: "legal zeros present",
			req:    ClientRequest{Method: codes.POST, ContentFormat: CF(0), Accept: CF(0), Payload: []byte("t")},
			resp:   Response{Code: codes.Changed, ContentFormat: CF(0), MaxAge: MaxAge(0)},
			wantCF: CF(0), wantAccept: CF(0)},
		{name: "values",
			req:    ClientRequest{Method: codes.POST, ContentFormat: CF(286), Accept: CF(281), Payload: []byte("csr")},
			resp:   Response{Code: codes.ServiceUnavailable, ContentFormat: CF(287), MaxAge: MaxAge(90)},
			wantCF: CF(286), wantAccept: CF(281), wantAge: 90 * time.Second},
		{name: "observe register",
			req:  ClientRequest{Method: codes.GET, Options: message.Options{{ID: message.Observe, Value: nil}}},
			resp: Response{Code: codes.Content}, wantObserve: ObserveRegister, wantAge: 60 * time.Second},
		{name: "observe deregister",
			req:  ClientRequest{Method: codes.GET, Options: message.Options{{ID: message.Observe, Value: []byte{1}}}},
			resp: Response{Code: codes.Content}, wantObserve: ObserveDeregister, wantAge: 60 * time.Second},
		{name: "over-long Content-Format is no Content-Format",
			req: ClientRequest{Method: codes.POST, Payload: []byte("p"),
				Options: message.Options{{ID: message.ContentFormat, Value: []byte{1, 0, 0}}}},
			resp: Response{Code: codes.Changed}, wantAge: 60 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			answer <- &tc.resp
			req := tc.req
			req.Path = "/answer"
			got, err := c.Do(context.Background(), &req)
			if err != nil {
				t.Fatal(err)
			}
			r := <-seen
			if r.ContentFormat != tc.wantCF || r.Accept != tc.wantAccept || r.Observe != tc.wantObserve {
				t.Errorf("handler saw Content-Format %v, Accept %v, Observe %v; want %v, %v, %v",
					r.ContentFormat, r.Accept, r.Observe, tc.wantCF, tc.wantAccept, tc.wantObserve)
			}
			_, cfOnWire := optBytes(got.Options, message.ContentFormat)
			_, ageOnWire := optBytes(got.Options, message.MaxAge)
			if cfOnWire != tc.resp.ContentFormat.IsSet() || ageOnWire != tc.resp.MaxAge.IsSet() {
				t.Errorf("on the wire: Content-Format %v, Max-Age %v; handler set %v, %v",
					cfOnWire, ageOnWire, tc.resp.ContentFormat, tc.resp.MaxAge)
			}
			if got.ContentFormat != tc.resp.ContentFormat || got.MaxAge != tc.resp.MaxAge {
				t.Errorf("client read Content-Format %v, Max-Age %v; want %v, %v",
					got.ContentFormat, got.MaxAge, tc.resp.ContentFormat, tc.resp.MaxAge)
			}
			if d := got.MaxAge.Duration(); d != tc.wantAge {
				t.Errorf("freshness %v, want %v", d, tc.wantAge)
			}
		})
	}
}

func TestFormatAndAgeStrings(t *testing.T) {
	for _, tc := range []struct {
		got, want string
	}{
		{Format{}.String(), "none"},
		{CF(0).String(), "0"},
		{CF(65535).String(), "65535"},
		{Age{}.String(), "none"},
		{MaxAge(0).String(), "0"},
		{MaxAge(1<<32 - 1).String(), "4294967295"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
	if n, ok := CF(0).Get(); n != 0 || !ok {
		t.Errorf("CF(0).Get() = %d, %v", n, ok)
	}
	if _, ok := (Format{}).Get(); ok {
		t.Error("zero Format reports a value")
	}
	if s, ok := MaxAge(0).Get(); s != 0 || !ok {
		t.Errorf("MaxAge(0).Get() = %d, %v", s, ok)
	}
	if _, ok := (Age{}).Get(); ok {
		t.Error("zero Age reports a value")
	}
}
