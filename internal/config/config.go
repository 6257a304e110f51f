// Package config is coapca's configuration file: one YAML document whose every field is
// documented in docs/configuration.md. The zero file (no file at all) is a working
// configuration: Default fills in everything.
package config

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the whole configuration file.
type Config struct {
	// Data is the data directory (CA keys, certificates, database). Default ./coapca-data.
	Data string `yaml:"data"`
	// Store selects the database: SQLite in the data directory (default) or PostgreSQL, which
	// several instances can share.
	Store Store `yaml:"store"`
	// Log configures logging.
	Log Log `yaml:"log"`
	// Listen holds the listener addresses; an empty address disables that listener.
	Listen Listen `yaml:"listen"`
	// ServerNames are extra DNS names / IP addresses for the server certificate created on
	// first start (localhost, 127.0.0.1, ::1 and the host name are always included).
	ServerNames []string `yaml:"server_names"`
	// CoAP tunes the CoAP endpoint (RFC 7252 transmission parameters and limits).
	CoAP CoAP `yaml:"coap"`
	// DTLS tunes the DTLS listener.
	DTLS DTLS `yaml:"dtls"`
	// CA says where the CA keys are and how they are protected (HSM, encryption at rest).
	CA CA `yaml:"ca"`
	// Authority configures profiles, trust stores and CA behaviour.
	Authority Authority `yaml:"authority"`
	// CMP tunes the CMP service (RFC 9483).
	CMP CMP `yaml:"cmp"`
	// CMPUpstream makes the server a CMP registrar in front of an HTTP CMP server
	// (cmpupstream.go). Default off.
	CMPUpstream CMPUpstream `yaml:"cmp_upstream"`
	// EST tunes the EST service.
	EST EST `yaml:"est"`
	// EDHOC tunes the EDHOC responder on the coap:// listener (RFC 9528).
	EDHOC EDHOC `yaml:"edhoc"`
	// HTTP bounds what one client can hold of the HTTP listener.
	HTTP HTTP `yaml:"http"`
	// OSCOREContexts are pre-shared OSCORE context files for EST-oscore on the coap://
	// listener (YAML, seen from the server's side: hex master_secret, master_salt, sender_id,
	// recipient_id, optional id_context; name = the client's identity, labels = the EST labels
	// it may enroll under). Also `coapca serve --oscore-context FILE` (repeatable).
	OSCOREContexts []string `yaml:"oscore_contexts"`
	// ACE makes the coap:// listener an ACE resource server with the OSCORE profile
	// (RFC 9200, RFC 9203): /authz-info accepts access tokens from the configured
	// authorization servers. Off unless audiences and keys are set.
	ACE ACE `yaml:"ace"`
	// Upstream turns the EST front doors into a registrar (RFC 9148 §5) relaying to an
	// upstream EST server over HTTPS (upstream.go). Default off.
	Upstream Upstream `yaml:"upstream"`
	// ShutdownTimeout bounds a graceful stop (SIGINT, SIGTERM): requests already taken are
	// finished and answered for at most this long, then the server exits. Default 30s; also
	// `coapca serve --shutdown-timeout`.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// GCHeadroomMiB is how far, in MiB, the server's Go heap may grow between garbage
	// collections at least (internal/gcpace): while the live heap is smaller, collections are
	// that much rarer than under Go's default pacing, above it the pacing is Go's. 0 (unset)
	// is DefaultGCHeadroomMiB; negative leaves Go's default pacing. A GOGC environment variable
	// wins over it. Also `coapca serve --gc-headroom-mib`.
	GCHeadroomMiB int `yaml:"gc_headroom_mib"`
}

// DefaultGCHeadroomMiB is GCHeadroomMiB's default.
const DefaultGCHeadroomMiB = 64

// DefaultShutdownTimeout is ShutdownTimeout's default.
const DefaultShutdownTimeout = 30 * time.Second

// Store selects the database back end.
type Store struct {
	// Driver is sqlite (default: DATA/coapca.db) or postgres.
	Driver string `yaml:"driver"`
	// DSN is the PostgreSQL connection string (postgres://user@host:port/db?sslmode=… or
	// key=value), for driver postgres. Also `--store postgres://…`.
	DSN string `yaml:"dsn"`
	// DSNFile is a file holding the DSN instead (it may carry a password); for driver postgres.
	DSNFile string `yaml:"dsn_file"`
}

// Store drivers.
const (
	DriverSQLite   = "sqlite"
	DriverPostgres = "postgres"
)

// Validate checks the choice of back end without connecting or reading DSNFile.
func (s Store) Validate() error {
	switch s.Driver {
	case "", DriverSQLite:
		if s.DSN != "" || s.DSNFile != "" {
			return fmt.Errorf("config: store.dsn and store.dsn_file are for driver postgres; driver sqlite keeps its database in the data directory")
		}
	case DriverPostgres:
		if (s.DSN == "") == (s.DSNFile == "") {
			return fmt.Errorf("config: store driver postgres needs exactly one of store.dsn and store.dsn_file")
		}
	default:
		return fmt.Errorf("config: store.driver %q is not sqlite or postgres", s.Driver)
	}
	return nil
}

// PostgresDSN returns the DSN of driver postgres, read from DSNFile when that is set (one line;
// surrounding white space ignored).
func (s Store) PostgresDSN() (string, error) {
	if err := s.Validate(); err != nil {
		return "", err
	}
	if s.DSN != "" {
		return s.DSN, nil
	}
	b, err := os.ReadFile(s.DSNFile)
	if err != nil {
		return "", fmt.Errorf("config: store.dsn_file: %w", err)
	}
	dsn := strings.TrimSpace(string(b))
	if dsn == "" {
		return "", fmt.Errorf("config: store.dsn_file %s is empty", s.DSNFile)
	}
	return dsn, nil
}

// ACE is the resource-server side of the ACE OSCORE profile.
type ACE struct {
	// Audiences are the aud values that name this server. Required to enable /authz-info.
	Audiences []string `yaml:"audiences"`
	// Issuers, when set, are the only iss values accepted.
	Issuers []string `yaml:"issuers"`
	// ASName names the AS of tokens without iss (what requesters rules of kind token name).
	// Default "as".
	ASName string `yaml:"as_name"`
	// ASURI is sent in the AS Request Creation Hints (RFC 9200 §5.3) of the 4.01 answered to an
	// unprotected request for an EST-oscore resource; empty = no hints.
	ASURI string `yaml:"as_uri"`
	// Scope is the scope named in the creation hints; default "est".
	Scope string `yaml:"scope"`
	// Keys are the authorization servers' token keys.
	Keys []ACEKey `yaml:"keys"`
	// MaxTokens bounds the tokens held and remembered against replay. Default 10000.
	MaxTokens int `yaml:"max_tokens"`
}

// ACEKey is one key of an authorization server.
type ACEKey struct {
	// KID is the COSE kid, in hex; empty = tokens without kid (only with a single key).
	KID string `yaml:"kid"`
	// Alg is the COSE algorithm: 10 (AES-CCM-16-64-128, COSE_Encrypt0), 4 or 5 (HMAC 256/64,
	// 256/256, COSE_Mac0), -7 (ES256, COSE_Sign1).
	Alg int `yaml:"alg"`
	// KeyFile holds the key: a symmetric key as hex text or raw bytes, or for ES256 the AS's
	// public key (PEM).
	KeyFile string `yaml:"key_file"`
	// Issuer is the AS this key speaks for: a token it authenticates is accepted only with this
	// iss (one without iss takes it). Required when more than one key is configured.
	Issuer string `yaml:"issuer"`
}

// validate checks what can be checked without reading the key files: with several keys,
// every key names its AS (else one AS's key could vouch for another AS's iss).
func (a ACE) validate() error {
	if len(a.Keys) < 2 {
		return nil
	}
	for i, k := range a.Keys {
		if strings.TrimSpace(k.Issuer) == "" {
			return fmt.Errorf("config: ace.keys[%d]: issuer is required when several AS keys are configured", i)
		}
	}
	return nil
}

// EST tunes the EST service.
type EST struct {
	// ServerKeygenKEKs are the pre-shared AES key-encryption keys a CSR may name with
	// DecryptKeyIdentifier (RFC 7030 §4.4.1.1) to receive its server-generated key encrypted
	// under it (Content-Format 280). Default none.
	ServerKeygenKEKs []KEK `yaml:"server_keygen_keks"`
}

// KEK is one pre-shared key-encryption key.
type KEK struct {
	// ID is the DecryptKeyIdentifier that names the key, in hex.
	ID string `yaml:"id"`
	// KeyFile holds the AES key (16, 24 or 32 bytes): raw, or as hex text.
	KeyFile string `yaml:"key_file"`
}

// LoadKEKs reads the key-encryption keys, by the bytes of their identifiers.
func (e EST) LoadKEKs() (map[string][]byte, error) {
	out := make(map[string][]byte, len(e.ServerKeygenKEKs))
	for i, k := range e.ServerKeygenKEKs {
		id, err := hex.DecodeString(k.ID)
		if err != nil || len(id) == 0 {
			return nil, fmt.Errorf("config: est.server_keygen_keks[%d].id %q is not a non-empty hex string", i, k.ID)
		}
		if _, dup := out[string(id)]; dup {
			return nil, fmt.Errorf("config: est.server_keygen_keks[%d].id %s appears twice", i, k.ID)
		}
		if k.KeyFile == "" {
			return nil, fmt.Errorf("config: est.server_keygen_keks[%d] (id %s) has no key_file", i, k.ID)
		}
		b, err := os.ReadFile(k.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("config: est.server_keygen_keks[%d]: %w", i, err)
		}
		key, err := ParseKEK(b)
		if err != nil {
			return nil, fmt.Errorf("config: est.server_keygen_keks[%d] %s: %w", i, k.KeyFile, err)
		}
		out[string(id)] = key
	}
	return out, nil
}

// ParseKEK reads an AES key-encryption key file: 32, 48 or 64 hex digits (surrounding white
// space ignored), or exactly 16, 24 or 32 raw bytes.
func ParseKEK(b []byte) ([]byte, error) {
	if t := bytes.TrimSpace(b); len(t) == 32 || len(t) == 48 || len(t) == 64 {
		if k, err := hex.DecodeString(string(t)); err == nil {
			return k, nil
		}
	}
	switch len(b) {
	case 16, 24, 32:
		return bytes.Clone(b), nil
	}
	return nil, fmt.Errorf("not an AES key: want 16, 24 or 32 raw bytes or 32, 48 or 64 hex digits, found %d bytes", len(b))
}

// CMP tunes the CMP service.
type CMP struct {
	// ConfirmWait is how long an issued certificate waits for certConf before it is revoked
	// (RFC 9810 §5.1.1.2 confirmWaitTime). Default 5m.
	ConfirmWait time.Duration `yaml:"confirm_wait"`
	// NoImplicitConfirm refuses implicitConfirm: every certificate then needs certConf.
	// Default false (implicitConfirm is granted when asked).
	NoImplicitConfirm bool `yaml:"no_implicit_confirm"`
	// MaxTransactions caps the open transactions. Default 10000.
	MaxTransactions int `yaml:"max_transactions"`
	// MessageTimeTolerance is how far a request's messageTime may be from the server's clock
	// before it is refused with badTime (RFC 9483 §3.5). Default 5m; negative = not checked.
	MessageTimeTolerance time.Duration `yaml:"message_time_tolerance"`
	// MaxMACIterations caps the PasswordBasedMac iterationCount and the PBKDF2 work of PBMAC1
	// (iterations × output blocks) a requester may ask the server to compute. Default 100000.
	MaxMACIterations int `yaml:"max_mac_iterations"`
}

// Log configures logging.
type Log struct {
	// Level is debug, info, warn or error. Default info.
	Level string `yaml:"level"`
	// Format is text or json. Default text.
	Format string `yaml:"format"`
}

// Listen holds listener addresses.
type Listen struct {
	// CoAPS is the EST-coaps (DTLS) listener. Default ":5684".
	CoAPS string `yaml:"coaps"`
	// CoAP is the plain-UDP CoAP listener (EST-oscore, CMP over CoAP). Default ":5683".
	CoAP string `yaml:"coap"`
	// HTTP is the HTTP listener (CMP over HTTP). Default "" (off).
	HTTP string `yaml:"http"`
	// HTTPS is the EST over HTTPS listener (RFC 7030), TLS 1.2 and 1.3 with the server
	// certificate of the data directory. Default "" (off).
	HTTPS string `yaml:"https"`
	// Metrics serves Prometheus /metrics and /healthz over HTTP. Default "" (off).
	Metrics string `yaml:"metrics"`
}

// CoAP are the CoAP endpoint's parameters. Zero values take the RFC 7252 §4.8 defaults.
type CoAP struct {
	// ACKTimeout is ACK_TIMEOUT. Default 2s.
	ACKTimeout time.Duration `yaml:"ack_timeout"`
	// ACKRandomFactor is ACK_RANDOM_FACTOR. Default 1.5.
	ACKRandomFactor float64 `yaml:"ack_random_factor"`
	// MaxRetransmit is MAX_RETRANSMIT. Default 4.
	MaxRetransmit int `yaml:"max_retransmit"`
	// NStart is NSTART, outstanding confirmable requests per peer. Default 1.
	NStart int `yaml:"nstart"`
	// SeparateAfter: a handler slower than this gets an empty ACK at once and its answer as
	// a separate confirmable response (RFC 7252 §5.2.2). Default 1s.
	SeparateAfter time.Duration `yaml:"separate_after"`
	// MaxBodySize caps a block-wise (Block1) request body; larger → 4.13 with Size1.
	// Default 65536 bytes.
	MaxBodySize int `yaml:"max_body_size"`
	// BlockTimeout is how long a half-transferred block-wise body is kept after its last
	// block (refreshed by every block). Default 60s.
	BlockTimeout time.Duration `yaml:"block_timeout"`
	// MaxExchangesPerPeer caps concurrent requests a peer may have in progress. Default 16.
	MaxExchangesPerPeer int `yaml:"max_exchanges_per_peer"`
	// MaxSessions caps the CoAP peers (UDP sources, DTLS sessions) kept at once. Default 10000.
	MaxSessions int `yaml:"max_sessions"`
	// MaxCacheBytes caps the memory of response caches (deduplication, Block2 representations)
	// and, separately, of Block1 reassembly buffers. Default 67108864 (64 MiB).
	MaxCacheBytes int `yaml:"max_cache_bytes"`
	// TrustUDPSources turns off address validation on coap:// (RFC 9175 Echo). Default false.
	TrustUDPSources bool `yaml:"trust_udp_sources"`
	// EchoWindow is how long an Echo value of an address challenge is accepted. Default 30s.
	EchoWindow time.Duration `yaml:"echo_window"`
	// MaxSessionsPerIP caps the coap:// sessions of one IP address. Default 256.
	MaxSessionsPerIP int `yaml:"max_sessions_per_ip"`
	// MaxObservers caps the Observe registrations held at once. Default 4096.
	MaxObservers int `yaml:"max_observers"`
	// MaxObserversPerIP caps the Observe registrations of one IP address. Default 16.
	MaxObserversPerIP int `yaml:"max_observers_per_ip"`
	// MaxTransfersPerIP caps the Block1 reassemblies in progress from one IP address. Default 64.
	MaxTransfersPerIP int `yaml:"max_transfers_per_ip"`
	// MaxLayerWorkers caps the coap:// OSCORE requests verified at once beside the read loop
	// (a slow shared replay check or EDHOC message_3 holds up only its own). Default 64.
	MaxLayerWorkers int `yaml:"max_layer_workers"`
}

// EDHOC are the EDHOC responder's limits.
type EDHOC struct {
	// SessionTimeout frees a handshake that waited this long for message_3. Default 60s.
	SessionTimeout time.Duration `yaml:"session_timeout"`
	// MaxSessions caps handshakes waiting for message_3. Default 1024.
	MaxSessions int `yaml:"max_sessions"`
	// MaxSessionsPerSource caps the handshakes of one IP address. Default 16.
	MaxSessionsPerSource int `yaml:"max_sessions_per_source"`
	// Credential is how message_2 identifies the server's certificate (ID_CRED_R, RFC 9528
	// §3.5.3, RFC 9360): "x5chain-leaf" (the certificate alone), "x5chain" (with its issuing
	// CA) or "x5t" (its SHA-256/64 hash only). Default "x5chain-leaf".
	Credential string `yaml:"credential"`
}

// HTTP are the HTTP listener's timeouts and sizes.
type HTTP struct {
	// ReadHeaderTimeout bounds sending the request header. Default 5s.
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	// ReadTimeout bounds sending the whole request, body included. Default 30s.
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// WriteTimeout bounds the time from the end of the header to the end of the answer. Default 60s.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// IdleTimeout closes a kept-alive connection without a next request. Default 60s.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxHeaderBytes caps the request header. Default 16384.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// MaxBodySize caps a request body (413 beyond it). Default 65536.
	MaxBodySize int64 `yaml:"max_body_size"`
}

// DTLS are the DTLS listener's parameters.
type DTLS struct {
	// HandshakeTimeout bounds one handshake. Default 10s.
	HandshakeTimeout time.Duration `yaml:"handshake_timeout"`
	// IdleTimeout closes a session without traffic for this long. Default 10m.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// ParkAfter parks a quiet session (its keys kept, its connection state released; the next
	// datagram resumes it) after this long without a record. Default 10s; negative = never.
	ParkAfter time.Duration `yaml:"park_after"`
	// HandshakesPerSourcePerSecond rate-limits handshakes from one IP address. Default 20.
	HandshakesPerSourcePerSecond float64 `yaml:"handshakes_per_source_per_second"`
	// MaxHalfOpen caps handshakes in progress at once. Default 512.
	MaxHalfOpen int `yaml:"max_half_open"`
	// MaxSessions caps established sessions. Default 10000.
	MaxSessions int `yaml:"max_sessions"`
	// CipherSuites lists extra DTLS cipher suites by IANA name; TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8
	// (RFC 7925) is always offered. Default [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256].
	CipherSuites []string `yaml:"cipher_suites"`
}

// Default returns the configuration used when no file is given.
func Default() Config {
	return Config{
		Data:   "./coapca-data",
		Log:    Log{Level: "info", Format: "text"},
		Listen: Listen{CoAPS: ":5684", CoAP: ":5683"},
	}
}

// Load reads the YAML file at path over Default. Unknown fields are errors, so a typo in a
// field name does not silently leave a default in force.
func Load(path string) (Config, error) {
	cfg := Default()
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}
