package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"

	"coapca/coap"
	"coapca/coap/oscorelayer"
	"coapca/edhoc"
	"coapca/oscore"
)

// dialOSCORE opens a coap:// client protected by OSCORE (EST-oscore): with the pre-shared
// context of --oscore, or with a context from EDHOC authenticated by --cert/--key. It sets
// f.binding and f.serverChain.
func dialOSCORE(ctx context.Context, f *estFlags, u *url.URL, pair *tls.Certificate,
	verify func([][]byte) ([]*x509.Certificate, error)) (*coap.Client, error) {
	var layer coap.ClientLayer
	var ed *oscorelayer.EDHOCClient
	if f.oscoreFile != "" {
		_, p, err := loadOSCOREContext(f.oscoreFile)
		if err != nil {
			return nil, err
		}
		// RFC 8613 Appendix B.1.1: never reuse a nonce across runs of the client.
		p.SequenceStore = oscore.NewFileSequenceStore(f.oscoreFile+".seq", 0)
		octx, err := oscore.NewContext(p)
		if err != nil {
			return nil, fmt.Errorf("oscore context %s: %w", f.oscoreFile, err)
		}
		layer = oscorelayer.NewClient(octx)
		f.binding = func(context.Context) ([]byte, error) {
			return nil, errors.New("a pre-shared OSCORE context has no channel-binding value (use --edhoc)")
		}
		f.serverChain = func() []*x509.Certificate { return nil }
	} else {
		if pair == nil {
			return nil, usagef("--edhoc needs --cert and --key (the device's identity)")
		}
		chain := make([]*x509.Certificate, 0, len(pair.Certificate))
		for _, der := range pair.Certificate {
			c, err := x509.ParseCertificate(der)
			if err != nil {
				return nil, fmt.Errorf("client identity: %w", err)
			}
			chain = append(chain, c)
		}
		cred, err := edhoc.NewX509Credential(chain, edhoc.ByX5Chain)
		if err != nil {
			return nil, fmt.Errorf("edhoc credential: %w", err)
		}
		ed, err = oscorelayer.NewEDHOCClient(oscorelayer.EDHOCConfig{
			Credential: cred, PrivateKey: pair.PrivateKey, VerifyPeer: verify, Separate: f.edhocSeparate,
		})
		if err != nil {
			return nil, err
		}
		layer = ed
		f.serverChain = ed.PeerChain
	}
	c, err := coap.Dial(ctx, "coap://"+u.Host, coap.ClientOptions{BlockSize: f.blockSize, Layer: layer})
	if err != nil {
		return nil, err
	}
	if ed != nil {
		f.binding = func(ctx context.Context) ([]byte, error) {
			if err := ed.Handshake(ctx, c); err != nil {
				return nil, err
			}
			return ed.ChannelBinding(), nil
		}
	}
	return c, nil
}
