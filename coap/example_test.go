package coap_test

import (
	"context"
	"fmt"
	"net"

	"coapca/coap"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// A front door registers its resources in a Mux; the Server serves them over
// coap:// (ServeUDP) and coaps:// (ServeDTLS) with block-wise, observe and
// /.well-known/core handled by the endpoint.
func Example() {
	mux := coap.NewMux()
	mux.Handle(coap.Resource{
		Path: "/.well-known/est/crts", RT: []string{"ace.est.crts"}, CT: []int{287},
		Handler: coap.HandlerFunc(func(ctx context.Context, r *coap.Request) *coap.Response {
			resp := coap.NewResponse(codes.Content, make([]byte, 3000)) // sent block-wise
			resp.ContentFormat = coap.CF(287)
			return resp
		}),
	})
	srv := coap.NewServer(mux, coap.Config{})
	defer srv.Close()
	pc, _ := net.ListenPacket("udp", "127.0.0.1:0")
	go srv.ServeUDP(pc)

	c, err := coap.Dial(context.Background(), "coap://"+pc.LocalAddr().String(), coap.ClientOptions{BlockSize: 256})
	if err != nil {
		panic(err)
	}
	defer c.Close()
	wkc, _ := c.Do(context.Background(), &coap.ClientRequest{Method: codes.GET, Path: "/.well-known/core",
		Query: []string{"rt=ace.est*"}})
	fmt.Println(string(wkc.Payload))
	crts, _ := c.Do(context.Background(), &coap.ClientRequest{Method: codes.GET, Path: "/.well-known/est/crts"})
	fmt.Println(crts.Code, len(crts.Payload), crts.ContentFormat)
	// Output:
	// </.well-known/est/crts>;rt="ace.est.crts";ct=287
	// Content 3000 287
}
