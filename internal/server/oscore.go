package server

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"coapca/ace"
	"coapca/authority"
	"coapca/coap"
	"coapca/coap/oscorelayer"
	"coapca/edhoc"
	"coapca/est/estcoap"
	"coapca/internal/config"
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

// lookupEDHOCCredential resolves an EDHOC Initiator's ID_CRED_I sent by reference, x5t or
// kid (RFC 9528 §3.5.3, RFC 9360 §2), from this CA's records and the trust stores
// (authority.FindCredential). The layer then verifies what it finds with VerifyClient, as
// a chain sent by value: revocation and trust are decided there.
func (s *Server) lookupEDHOCCredential(ctx context.Context) func(*edhoc.IDCred) ([][]byte, error) {
	ctx = context.WithoutCancel(ctx)
	return func(id *edhoc.IDCred) ([][]byte, error) {
		var ref authority.CredentialRef
		switch {
		case id.X5T != nil:
			// RFC 9360 §2: the hash algorithms coapca knows, SHA-256 and its 64-bit truncation.
			switch id.X5T.Alg {
			case edhoc.AlgSHA256, edhoc.AlgSHA256_64:
				ref.SHA256Prefix = id.X5T.Hash
			default:
				return nil, fmt.Errorf("x5t hash algorithm %d is not supported", id.X5T.Alg)
			}
		case len(id.Kid) > 0:
			ref.KeyID = id.Kid
		default:
			return nil, errors.New("no x5t or kid")
		}
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		chain, err := s.auth.FindCredential(lctx, ref)
		if err != nil {
			s.log.Info("edhoc: credential reference not resolved", "ref", ref, "err", err)
			return nil, err
		}
		return chain, nil
	}
}

// registerOSCORE sets up EST-oscore (draft-ietf-ace-coap-est-oscore) on the coap:// resource
// table: the EST resources marked `osc` and served only to OSCORE-protected requests (others
// get 4.01), the EDHOC resource (RFC 9528 Appendix A, RFC 9668 combined requests) that keys
// contexts for devices authenticated with X.509 like EST-coaps clients (the authority's
// VerifyClient: manufacturer trust stores or this CA), and the pre-shared contexts of files.
//
// A pre-shared context has no certificate: its file names an identity (name) and the labels it
// may enroll under, and the authority is told to allow exactly that (AllowPreShared). Its
// Sender Sequence Numbers are reserved in the store and its replay window starts
// unsynchronized, so after a restart the first request is answered with an Echo challenge
// (RFC 8613 Appendix B.1.2, RFC 9175); every accepted request is also checked against the
// replay history in the store, which every instance shares (RFC 8613 §7.4).
func (s *Server) registerOSCORE(ctx context.Context, files []string) error {
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
		MaxSessionsPerSource: s.cfg.EDHOC.MaxSessionsPerSource, LookupCredential: s.lookupEDHOCCredential(ctx),
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
		// One sequence per context (Sender ID, Recipient ID, ID Context): contexts never share
		// a reservation, so none can roll another's back. The blocks are reserved in the store,
		// which every instance shares: each instance sends from blocks of its own (RFC 8613
		// §7.2.1: a nonce is never reused, whichever instance answers). A sequence file of an
		// earlier version, which kept the limit in the data directory, is the floor.
		name := hex.EncodeToString(p.SenderID) + "_" + hex.EncodeToString(p.RecipientID) + "_" + hex.EncodeToString(p.IDContext)
		floor, err := oscore.NewFileSequenceStore(filepath.Join(seqDir, "ssn-"+name), 0).Load()
		if err != nil {
			return fmt.Errorf("oscore context %s: %w", path, err)
		}
		p.SequenceStore = &sequenceBlocks{ctx: context.WithoutCancel(ctx), auth: s.auth, name: name, floor: floor}
		p.ReplayWindowUnsynchronized = true
		// With several instances on one database the replay history is in the store too: a
		// request one instance accepted is refused by every other (RFC 8613 §7.4), not only by
		// the instance that saw it. SQLite serves one instance (the data directory lock), whose
		// own window and the Echo resynchronisation after a restart (RFC 8613 Appendix B.1.2)
		// suffice: it is spared a database write per request.
		if s.cfg.Store.Driver == config.DriverPostgres {
			p.SharedReplay = &sharedReplay{ctx: context.WithoutCancel(ctx), auth: s.auth, name: name}
		}
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
	if err := s.registerACE(layer); err != nil {
		return err
	}
	estcoap.New(s.estFront(), estcoap.Options{Labels: s.auth.Labels(), OSCORE: true, Logger: s.log}).Register(s.plainMux)
	s.oscoreLayer = layer
	if s.oscoreProxy != nil {
		// Registrar forwarding EST-oscore (upstream.oscore_url): EDHOC runs end to end with the
		// upstream, and only the pre-shared and token contexts held here are verified here.
		s.plainMux.Handle(s.oscoreProxy.EDHOCResource())
		s.plainMux.SetLayer(s.oscoreProxy.WithLocal(layer))
		return nil
	}
	s.plainMux.Handle(layer.EDHOCResource())
	s.plainMux.SetLayer(layer)
	return nil
}

// sequenceBlocks reserves the Sender Sequence Numbers of a pre-shared OSCORE context in blocks
// from the store (oscore.SequenceAllocator), so that several instances sharing the store and
// the context never send with the same number (RFC 8613 §7.2.1, Appendix B.1.1).
type sequenceBlocks struct {
	ctx   context.Context
	auth  *authority.Authority
	name  string
	floor uint64 // no number below it: the limit a sequence file of an earlier version holds
}

// sequenceTimeout bounds one reservation: a request waiting on an unreachable database fails.
const sequenceTimeout = 10 * time.Second

func (b *sequenceBlocks) Load() (uint64, error) { return b.floor, nil }

func (b *sequenceBlocks) Reserve(uint64) error {
	return errors.New("server: OSCORE sequence numbers are allocated in blocks, not reserved up to a limit")
}

func (b *sequenceBlocks) Allocate(n uint64) (uint64, error) {
	ctx, cancel := context.WithTimeout(b.ctx, sequenceTimeout)
	defer cancel()
	return b.auth.ReserveSequence(ctx, b.name, b.floor, n)
}

// sharedReplay is the replay check of a pre-shared OSCORE context that every instance on the
// store shares (oscore.SharedReplayWindow).
type sharedReplay struct {
	ctx  context.Context
	auth *authority.Authority
	name string
}

func (r *sharedReplay) Accept(seq uint64) (bool, error) {
	ctx, cancel := context.WithTimeout(r.ctx, sequenceTimeout)
	defer cancel()
	return r.auth.AcceptSequence(ctx, r.name, seq)
}

// withOSCORE puts EST-oscore over HTTP (RFC 8613 §11) in front of an HTTP listener's handler:
// a POST with the OSCORE header field and an application/oscore body is verified with the same
// contexts, replay windows and sequence-number store as on coap:// and served by the same
// EST-oscore resources; every other request goes to h. Without EST-oscore (no coap:// listener)
// h is returned as it is.
func (s *Server) withOSCORE(h http.Handler, maxBody int64) http.Handler {
	if s.oscoreLayer == nil {
		return h
	}
	return s.oscoreLayer.HTTPHandler(s.plainMux, h, maxBody)
}

// registerACE makes the coap:// listener an ACE resource server with the OSCORE profile
// (RFC 9200, RFC 9203) when cfg.ACE names audiences: /authz-info verifies posted tokens with
// the configured AS keys, derives their OSCORE contexts into layer, and registers each token's
// grant with the authority (requester kind token), which decides every EST request made under
// the context. An unprotected request for an EST-oscore resource gets the AS Request Creation
// Hints (RFC 9200 §5.3) when ace.as_uri is set.
func (s *Server) registerACE(layer *oscorelayer.Server) error {
	c := s.cfg.ACE
	if len(c.Audiences) == 0 && len(c.Keys) == 0 {
		return nil
	}
	if len(c.Audiences) == 0 || len(c.Keys) == 0 {
		return fmt.Errorf("ace: both audiences and keys are needed for /authz-info")
	}
	keys := make([]ace.Key, 0, len(c.Keys))
	for i, k := range c.Keys {
		key, err := ace.LoadKey(k.KID, k.Alg, k.KeyFile)
		if err != nil {
			return fmt.Errorf("ace.keys[%d]: %w", i, err)
		}
		key.Issuer = k.Issuer
		keys = append(keys, key)
	}
	rs, err := ace.NewResourceServer(ace.RSConfig{Audiences: c.Audiences, Keys: keys, Issuers: c.Issuers,
		ASName: c.ASName, MaxTokens: c.MaxTokens, Contexts: aceContexts{layer}, Grants: aceGrants{s.auth}, Logger: s.log})
	if err != nil {
		return err
	}
	s.plainMux.Handle(rs.Resource())
	if c.ASURI != "" {
		scope := c.Scope
		if scope == "" {
			scope = "est"
		}
		hints := ace.CreationHints(c.ASURI, c.Audiences[0], scope)
		s.plainMux.SetUnprotectedHints(func(string) (coap.Format, []byte) {
			return coap.CF(ace.ContentFormatACECBOR), hints
		})
	}
	s.log.Info("ace: resource server on /authz-info", "audiences", c.Audiences, "keys", len(keys))
	return nil
}

// aceContexts installs token-derived contexts in the OSCORE layer.
type aceContexts struct{ l *oscorelayer.Server }

func (a aceContexts) FreeRecipientID(avoid []byte) ([]byte, bool) { return a.l.FreeRecipientID(avoid) }
func (a aceContexts) AddTokenContext(c *oscore.Context, ref string, expires time.Time) {
	a.l.AddTokenContext(c, oscorelayer.Identity{Token: ref, Expires: expires})
}
func (a aceContexts) RemoveContext(c *oscore.Context) { a.l.RemoveContext(c) }

// aceGrants hands a verified token's grant to the authority.
type aceGrants struct{ a *authority.Authority }

func (g aceGrants) Grant(ref, issuer string, c *ace.Claims, scope []ace.Scope) error {
	sub := c.Subject
	if sub == "" {
		sub = "cti:" + ref
	}
	sc := make([]authority.TokenScope, 0, len(scope))
	for _, e := range scope {
		ts := authority.TokenScope{Label: e.Label}
		for _, op := range e.Ops {
			ts.Ops = append(ts.Ops, authority.Op(op))
		}
		sc = append(sc, ts)
	}
	return g.a.AllowToken(ref, authority.TokenGrant{Issuer: issuer, Subject: sub, Scopes: sc, Expires: c.Expires})
}

func (g aceGrants) Revoke(ref string) { g.a.DropToken(ref) }
