package oscore_test

import (
	"fmt"

	"coapca/oscore"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// A client and a server with a pre-shared context; the server answers through a Keyring.
func Example() {
	secret := []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	client, _ := oscore.NewContext(oscore.Params{MasterSecret: secret, SenderID: []byte{0x01}, RecipientID: []byte{}})
	server, _ := oscore.NewContext(oscore.Params{MasterSecret: secret, SenderID: []byte{}, RecipientID: []byte{0x01}})
	ring := oscore.NewKeyring()
	ring.Add(server)

	serve := func(p *message.Message) (*message.Message, error) {
		return ring.Serve(p, func(req *message.Message, _ *oscore.RequestState) *message.Message {
			path, _ := req.Options.Path()
			return &message.Message{Code: codes.Content, Token: req.Token, MessageID: req.MessageID,
				Type: message.Acknowledgement, Payload: []byte("hello " + path)}
		})
	}

	req := &message.Message{Code: codes.GET, Token: []byte{0x42}, MessageID: 1, Type: message.Confirmable}
	req.Options, _, _ = req.Options.SetPath(make([]byte, 32), "/.well-known/est/crts")
	resp, err := client.Exchange(req, serve)
	fmt.Println(resp.Code, string(resp.Payload), err)
	// Output: Content hello /.well-known/est/crts <nil>
}
