package server

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"

	"coapca/coap/oscorelayer"
	"coapca/edhoc"
	"coapca/est/estcoap"
	"coapca/oscore"
)

// OSCOREContextFile is a pre-shared OSCORE security context (RFC 8613 §3), the YAML file of
// `coapca serve --oscore-context FILE` (seen from the server's side) and of
// `coapca est --oscore FILE` (seen from the client's side: sender and recipient swapped).
//
//	name: sensor-17            # the identity the authority knows the client by (default: file name)
//	labels: ["", "sensors"]    # server side: EST labels it may enroll under ("" = default; none = all)
//	master_secret: 0102…       # hex, required
//	master_salt: 9e7c…         # hex, optional (empty salt)
//	sender_id: 01              # hex, may be empty
//	recipient_id: ""           # hex, may be empty
//	id_context: 37cbf3…        # hex, optional
//	aead: 10                   # COSE AEAD algorithm, default 10 (AES-CCM-16-64-128)
//	replay_window: 32          # default 32
//
// The Sender Sequence Number is persisted beside it (server: DATA/oscore/, client: FILE.seq) so
// that a restart never reuses a nonce (RFC 8613 Appendix B.1.1).
type OSCOREContextFile struct {
	Name         string   `yaml:"name"`
	Labels       []string `yaml:"labels"`
	MasterSecret string   `yaml:"master_secret"`
	MasterSalt   string   `yaml:"master_salt"`
	SenderID     string   `yaml:"sender_id"`
	RecipientID  string   `yaml:"recipient_id"`
	IDContext    string   `yaml:"id_context"`
	AEAD         int      `yaml:"aead"`
	ReplayWindow int      `yaml:"replay_window"`
}

// LoadOSCOREContext reads a context file into oscore.Params (without a sequence store): the
// server's side here, the client's side for `coapca est --oscore`.
func LoadOSCOREContext(path string) (*OSCOREContextFile, oscore.Params, error) {
	var f OSCOREContextFile
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, oscore.Params{}, fmt.Errorf("oscore context: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, oscore.Params{}, fmt.Errorf("oscore context %s: %w", path, err)
	}
	if f.Name == "" {
		f.Name = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	}
	var p oscore.Params
	for _, x := range []struct {
		field, v string
		dst      *[]byte
	}{
		{"master_secret", f.MasterSecret, &p.MasterSecret}, {"master_salt", f.MasterSalt, &p.MasterSalt},
		{"sender_id", f.SenderID, &p.SenderID}, {"recipient_id", f.RecipientID, &p.RecipientID},
		{"id_context", f.IDContext, &p.IDContext},
	} {
		v, err := hex.DecodeString(strings.ReplaceAll(x.v, " ", ""))
		if err != nil {
			return nil, p, fmt.Errorf("oscore context %s: %s is not hex: %w", path, x.field, err)
		}
		*x.dst = v
	}
	if len(p.MasterSecret) == 0 {
		return nil, p, fmt.Errorf("oscore context %s: master_secret is required", path)
	}
	p.AEAD, p.ReplayWindow = f.AEAD, f.ReplayWindow
	return &f, p, nil
}

// EDHOCCredential is the server's EDHOC credential (ID_CRED_R, RFC 9528 §3.5.3) for the
// config value edhoc.credential: "x5chain-leaf" (default: the end-entity certificate alone;
// RFC 9360 §2 does not require the whole chain when the recipient can find the rest, and
// message_2 then fits one 1024-byte block), "x5chain" (with the issuing CA) or "x5t" (a
// SHA-256/64 hash of the certificate, which the initiator must hold). chain is leaf first.
func EDHOCCredential(chain []*x509.Certificate, kind string) (*edhoc.Credential, error) {
	var (
		cred *edhoc.Credential
		err  error
	)
	if chain == nil { // only the choice is checked (Start, before the data directory exists)
		switch kind {
		case "", "x5chain-leaf", "x5chain", "x5t":
			return nil, nil
		}
	}
	switch kind {
	case "", "x5chain-leaf":
		cred, err = edhoc.NewX509Credential(chain[:min(1, len(chain))], edhoc.ByX5Chain)
	case "x5chain":
		cred, err = edhoc.NewX509Credential(chain, edhoc.ByX5Chain)
	case "x5t":
		cred, err = edhoc.NewX509Credential(chain, edhoc.ByX5T)
	default:
		return nil, fmt.Errorf("edhoc.credential %q: want x5chain-leaf, x5chain or x5t", kind)
	}
	if err != nil {
		return nil, fmt.Errorf("edhoc credential: %w", err)
	}
	return cred, nil
}

// registerOSCORE sets up EST-oscore (draft-ietf-ace-coap-est-oscore) on the coap:// resource
// table: the EST resources marked `osc` and served only to OSCORE-protected requests (others
// get 4.01), the EDHOC resource (RFC 9528 Appendix A, RFC 9668 combined requests) that keys
// contexts for devices authenticated with X.509 like EST-coaps clients (the authority's
// VerifyClient: manufacturer trust stores or this CA), and the pre-shared contexts of files.
//
// A pre-shared context has no certificate: its file names an identity (name) and the labels it
// may enroll under, and the authority is told to allow exactly that (AllowPreShared). Its
// Sender Sequence Number is persisted under DATA/oscore/ and its replay window starts
// unsynchronized, so after a restart the first request is answered with an Echo challenge
// (RFC 8613 Appendix B.1.2, RFC 9175).
func (s *Server) registerOSCORE(_ context.Context, files []string) error {
	srvCert := s.data.ServerCertificate()
	chain := make([]*x509.Certificate, 0, len(srvCert.Certificate))
	for _, der := range srvCert.Certificate {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("server certificate: %w", err)
		}
		chain = append(chain, c)
	}
	cred, err := EDHOCCredential(chain, s.cfg.EDHOC.Credential)
	if err != nil {
		return err
	}
	layer := oscorelayer.NewServer(oscorelayer.ServerConfig{
		Credential: cred, PrivateKey: srvCert.PrivateKey, VerifyPeer: s.auth.VerifyClient, Logger: s.log,
		SessionTimeout: s.cfg.EDHOC.SessionTimeout, MaxSessions: s.cfg.EDHOC.MaxSessions,
		MaxSessionsPerSource: s.cfg.EDHOC.MaxSessionsPerSource,
	})
	s.metrics.GaugeFunc("edhoc_sessions", "EDHOC handshakes waiting for message_3.", func() float64 {
		n, _ := layer.Stats()
		return float64(n)
	})
	s.metrics.GaugeFunc("oscore_contexts", "OSCORE security contexts held (pre-shared and from EDHOC).", func() float64 {
		_, n := layer.Stats()
		return float64(n)
	})
	seqDir := filepath.Join(s.data.Dir, "oscore")
	for _, path := range files {
		f, p, err := LoadOSCOREContext(path)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(seqDir, 0o700); err != nil {
			return fmt.Errorf("oscore sequence numbers: %w", err)
		}
		// One sequence file per context (Sender ID, Recipient ID, ID Context): contexts never
		// share a reservation, so none can roll another's back.
		seqFile := filepath.Join(seqDir, "ssn-"+hex.EncodeToString(p.SenderID)+"_"+hex.EncodeToString(p.RecipientID)+
			"_"+hex.EncodeToString(p.IDContext))
		p.SequenceStore = oscore.NewFileSequenceStore(seqFile, 0)
		p.ReplayWindowUnsynchronized = true
		p.Logger = s.log
		c, err := oscore.NewContext(p)
		if err != nil {
			return fmt.Errorf("oscore context %s: %w", path, err)
		}
		if err := s.auth.AllowPreShared(f.Name, f.Labels); err != nil {
			return fmt.Errorf("oscore context %s: %w", path, err)
		}
		layer.AddContext(c, oscorelayer.Identity{Name: f.Name})
		s.log.Info("oscore: pre-shared context loaded", "file", path, "identity", f.Name, "labels", f.Labels)
	}
	estcoap.New(s.est, estcoap.Options{Labels: s.auth.Labels(), OSCORE: true, Logger: s.log}).Register(s.plainMux)
	s.plainMux.Handle(layer.EDHOCResource())
	s.plainMux.SetLayer(layer)
	return nil
}
