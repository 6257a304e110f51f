package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"

	"coapca/ace"
	"coapca/coap"
	"coapca/coap/oscorelayer"
	"coapca/oscore"
)

// ASConfig is the YAML file of `coapca as`: an ACE authorization server (RFC 9200) for the
// OSCORE profile (RFC 9203), whose /token endpoint runs over OSCORE on its own coap://
// listener. docs/ace.md describes it.
//
//	listen: 127.0.0.1:5783        # coap:// address of /token
//	name: as1                     # iss of the tokens
//	lifetime: 1h                  # token lifetime
//	audiences:                    # resource servers (or groups) it issues tokens for
//	  - name: coapca-rs           # aud
//	    kid: "6b31"               # hex COSE kid
//	    alg: 10                   # 10 Encrypt0, 4/5 Mac0, -7 Sign1
//	    key_file: rs.key          # symmetric: hex or raw; ES256: PEM private key
//	    enc_kid: "6532"           # with alg 4/5/-7: the Encrypt0 key wrapping the token
//	    enc_key_file: rs-enc.key
//	clients:
//	  - name: client-1            # sub of its tokens
//	    scope: est                # the widest scope it may ask for
//	    audiences: [coapca-rs]
//	    oscore_context: c1.yaml   # its OSCORE context with the AS (server's side)
type ASConfig struct {
	Listen    string          `yaml:"listen"`
	Name      string          `yaml:"name"`
	Lifetime  time.Duration   `yaml:"lifetime"`
	Audiences []ASAudienceCfg `yaml:"audiences"`
	Clients   []ASClientCfg   `yaml:"clients"`
}

// ASAudienceCfg is one audience of ASConfig.
type ASAudienceCfg struct {
	Name    string `yaml:"name"`
	KID     string `yaml:"kid"`
	Alg     int    `yaml:"alg"`
	KeyFile string `yaml:"key_file"`
	// EncKID and EncKeyFile name the AES-CCM-16-64-128 key that encrypts the MACed or signed
	// tokens of alg 4, 5 or -7 (nested: the token carries the Master Secret).
	EncKID     string `yaml:"enc_kid"`
	EncKeyFile string `yaml:"enc_key_file"`
}

// ASClientCfg is one registered client of ASConfig.
type ASClientCfg struct {
	Name          string   `yaml:"name"`
	Scope         string   `yaml:"scope"`
	Audiences     []string `yaml:"audiences"`
	OSCOREContext string   `yaml:"oscore_context"`
}

// LoadASConfig reads the AS's YAML file strictly (unknown fields are errors).
func LoadASConfig(path string) (ASConfig, error) {
	var c ASConfig
	b, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("as config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("as config %s: %w", path, err)
	}
	return c, nil
}

// AS is a running authorization server.
type AS struct {
	srv  *coap.Server
	pc   net.PacketConn
	wg   sync.WaitGroup
	once sync.Once
}

// Addr is the coap:// address of /token.
func (a *AS) Addr() net.Addr { return a.pc.LocalAddr() }

// Close stops the server.
func (a *AS) Close() error {
	var err error
	a.once.Do(func() {
		err = a.srv.Close()
		a.pc.Close()
		a.wg.Wait()
	})
	return err
}

// StartAS starts the authorization server of c. Each client's OSCORE context (server's side)
// authenticates it at /token (RFC 9203 §3.1); its Sender Sequence Number is kept beside the
// context file (FILE.as.seq) and its replay window starts unsynchronized (an Echo round trip
// after a restart, RFC 8613 Appendix B.1.2).
func StartAS(ctx context.Context, c ASConfig, log *slog.Logger) (*AS, error) {
	if c.Listen == "" {
		return nil, errors.New("as: listen is required")
	}
	cfg := ace.ASConfig{Name: c.Name, Lifetime: c.Lifetime, Logger: log}
	for i, a := range c.Audiences {
		k, err := ace.LoadKey(a.KID, a.Alg, a.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("as: audiences[%d]: %w", i, err)
		}
		aud := ace.Audience{Name: a.Name, Key: k}
		if a.EncKeyFile != "" {
			ek, err := ace.LoadKey(a.EncKID, ace.AlgAESCCM16_64_128, a.EncKeyFile)
			if err != nil {
				return nil, fmt.Errorf("as: audiences[%d] encryption key: %w", i, err)
			}
			aud.Encrypt = &ek
		}
		cfg.Audiences = append(cfg.Audiences, aud)
	}
	layer := oscorelayer.NewServer(oscorelayer.ServerConfig{Logger: log})
	for i, cl := range c.Clients {
		cfg.Clients = append(cfg.Clients, ace.Client{Name: cl.Name, Scope: cl.Scope, Audiences: cl.Audiences})
		if cl.OSCOREContext == "" {
			return nil, fmt.Errorf("as: clients[%d] (%s): oscore_context is required (the client's credential)", i, cl.Name)
		}
		_, p, err := LoadOSCOREContext(cl.OSCOREContext)
		if err != nil {
			return nil, fmt.Errorf("as: clients[%d]: %w", i, err)
		}
		p.SequenceStore = oscore.NewFileSequenceStore(cl.OSCOREContext+".as.seq", 0)
		p.ReplayWindowUnsynchronized = true
		p.Logger = log
		octx, err := oscore.NewContext(p)
		if err != nil {
			return nil, fmt.Errorf("as: clients[%d] %s: %w", i, cl.OSCOREContext, err)
		}
		// Identity.Name is the client's name at the AS; this listener serves nothing but /token.
		layer.AddContext(octx, oscorelayer.Identity{Name: cl.Name})
	}
	as, err := ace.NewAuthorizationServer(cfg)
	if err != nil {
		return nil, err
	}
	mux := coap.NewMux()
	mux.Handle(as.Resource(func(p coap.Peer) string {
		if p.OSCORE == nil {
			return ""
		}
		return p.OSCORE.Identity
	}))
	mux.SetLayer(layer)
	pc, err := net.ListenPacket("udp", c.Listen)
	if err != nil {
		return nil, fmt.Errorf("as: listen %s: %w", c.Listen, err)
	}
	a := &AS{srv: coap.NewServer(mux, coap.Config{Logger: log}), pc: pc}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if err := a.srv.ServeUDP(pc); err != nil && ctx.Err() == nil {
			log.Error("as: coap listener stopped", "err", err)
		}
	}()
	log.Info("ace: authorization server", "url", "coap://"+pc.LocalAddr().String()+ace.TokenPath, "name", c.Name,
		"audiences", len(cfg.Audiences), "clients", len(cfg.Clients))
	return a, nil
}
