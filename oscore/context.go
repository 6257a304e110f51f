package oscore

import (
	"bytes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"
)

// Defaults (RFC 8613 §3.2, §3.2.2; RFC 9175 §2.3).
const (
	DefaultReplayWindow = 32
	MaxReplayWindow     = 4096
	DefaultSequenceGap  = 64
	DefaultEchoLifetime = 30 * time.Second
	// MaxSequenceNumber is the largest Sender Sequence Number: a Partial IV has at most 5 bytes (§7.2.1).
	MaxSequenceNumber = 1<<40 - 1
)

// Params are the inputs of a security context (RFC 8613 §3.1, §3.2) plus local policy.
type Params struct {
	MasterSecret []byte
	MasterSalt   []byte // empty = the default empty salt
	SenderID     []byte // may be empty; at most AEAD nonce length - 6 bytes (§3.3)
	RecipientID  []byte
	// IDContext is the optional ID Context (§3.1); empty = absent (nil in the HKDF info).
	IDContext []byte
	// AEAD is the COSE AEAD algorithm; 0 = AES-CCM-16-64-128 (10).
	AEAD int
	// HKDF is the COSE HKDF algorithm; 0 = HKDF SHA-256 (-10).
	HKDF int
	// ReplayWindow is the size of the server's replay window; 0 = 32 (§3.2.2).
	ReplayWindow int
	// OmitKIDContext keeps the ID Context out of requests ('kid context' is sent by default when
	// IDContext is set, so the server can find the context, §5.1).
	OmitKIDContext bool
	// SequenceStore persists the Sender Sequence Number; nil = in memory, starting at 0.
	SequenceStore SequenceStore
	// SequenceGap is K of Appendix B.1.1 (numbers reserved per write); 0 = 64.
	SequenceGap uint64
	// ReplayWindowUnsynchronized marks a context restored after losing its replay window (a
	// restart): requests are only accepted after an Echo round trip (Appendix B.1.2). Contexts that
	// are new on both sides (fresh EDHOC) leave it false.
	ReplayWindowUnsynchronized bool
	// SharedReplay, when set, is asked about every request the replay window accepts: a
	// context that several processes hold (server instances answering for one pre-shared
	// context) has one replay history, so a request accepted by one is refused by every other
	// (§7.4). nil = this Context's window alone.
	SharedReplay SharedReplayWindow
	// EchoLifetime bounds how long an Echo value is accepted; 0 = 30 s.
	EchoLifetime time.Duration
	// MaxUnfragmentedSize is MAX_UNFRAGMENTED_SIZE (§4.1.3.4.2): a received OSCORE message (after
	// outer block-wise reassembly) with a larger payload is discarded; 0 = no limit.
	MaxUnfragmentedSize int
	// Registry supplies extra algorithms; nil = built-ins only.
	Registry *Registry
	Logger   *slog.Logger     // nil = discard
	Now      func() time.Time // nil = time.Now
	Rand     io.Reader        // Echo values; nil = crypto/rand
}

// Context is an OSCORE security context (RFC 8613 §3): the Common Context, one Sender Context and
// one Recipient Context. It is safe for concurrent use.
type Context struct {
	alg            AEADAlgorithm
	senderID       []byte
	recipientID    []byte
	idContext      []byte
	hasIDContext   bool
	sendKIDContext bool
	senderKey      []byte
	recipientKey   []byte
	commonIV       []byte
	sender         cipher.AEAD
	recipient      cipher.AEAD

	store        SequenceStore
	gap          uint64
	echoLifetime time.Duration
	maxUnfrag    int
	log          *slog.Logger
	now          func() time.Time
	rand         io.Reader

	mu       sync.Mutex
	ssn      uint64 // next Sender Sequence Number
	reserved uint64 // numbers below this are reserved in store
	window   *replayWindow
	shared   SharedReplayWindow
	synced   bool
	echo     []byte
	echoAt   time.Time
}

// NewContext derives a security context (RFC 8613 §3.2.1):
// Sender Key = HKDF(salt, secret, [SenderID, IDContext, alg, "Key", L]), Recipient Key likewise
// with the Recipient ID, Common IV = HKDF(..., [empty bstr, IDContext, alg, "IV", nonce length]).
func NewContext(p Params) (*Context, error) {
	algID := p.AEAD
	if algID == 0 {
		algID = AlgAESCCM16_64_128
	}
	alg, err := p.Registry.AEAD(algID)
	if err != nil {
		return nil, err
	}
	hkdfID := p.HKDF
	if hkdfID == 0 {
		hkdfID = HKDFSHA256
	}
	kdf, err := p.Registry.HKDF(hkdfID)
	if err != nil {
		return nil, err
	}
	if len(p.MasterSecret) == 0 {
		return nil, errors.New("oscore: empty Master Secret")
	}
	nlen := alg.NonceSize()
	if nlen < 7 {
		return nil, fmt.Errorf("oscore: AEAD %d has a %d-byte nonce; OSCORE needs at least 7 (§5.2)", algID, nlen)
	}
	// RFC 8613 §3.3: Sender/Recipient IDs are at most nonce length - 6 bytes and must differ.
	for _, id := range [][]byte{p.SenderID, p.RecipientID} {
		if len(id) > nlen-6 {
			return nil, fmt.Errorf("oscore: ID %x longer than %d bytes (§3.3)", id, nlen-6)
		}
	}
	if bytes.Equal(p.SenderID, p.RecipientID) {
		return nil, errors.New("oscore: Sender ID equals Recipient ID (§3.3)")
	}
	w := p.ReplayWindow
	if w == 0 {
		w = DefaultReplayWindow
	}
	if w < 1 || w > MaxReplayWindow {
		return nil, fmt.Errorf("oscore: replay window %d out of range 1..%d", w, MaxReplayWindow)
	}
	c := &Context{
		alg:            alg,
		senderID:       clone(p.SenderID),
		recipientID:    clone(p.RecipientID),
		idContext:      clone(p.IDContext),
		hasIDContext:   len(p.IDContext) > 0,
		sendKIDContext: len(p.IDContext) > 0 && !p.OmitKIDContext,
		store:          p.SequenceStore,
		gap:            p.SequenceGap,
		echoLifetime:   p.EchoLifetime,
		maxUnfrag:      p.MaxUnfragmentedSize,
		log:            p.Logger,
		now:            p.Now,
		rand:           p.Rand,
		window:         newReplayWindow(w),
		shared:         p.SharedReplay,
		synced:         !p.ReplayWindowUnsynchronized,
	}
	if c.store == nil {
		c.store = NewMemorySequenceStore(0)
	}
	if c.gap == 0 {
		c.gap = DefaultSequenceGap
	}
	if c.echoLifetime == 0 {
		c.echoLifetime = DefaultEchoLifetime
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.rand == nil {
		c.rand = rand.Reader
	}
	derive := func(id []byte, typ string, l int) ([]byte, error) {
		info, err := hkdfInfo(id, p.IDContext, c.hasIDContext, algID, typ, l)
		if err != nil {
			return nil, err
		}
		k, err := kdf.Derive(p.MasterSecret, p.MasterSalt, info, l)
		if err != nil {
			return nil, fmt.Errorf("oscore: derive %s: %w", typ, err)
		}
		return k, nil
	}
	if c.senderKey, err = derive(p.SenderID, "Key", alg.KeySize()); err != nil {
		return nil, err
	}
	if c.recipientKey, err = derive(p.RecipientID, "Key", alg.KeySize()); err != nil {
		return nil, err
	}
	if c.commonIV, err = derive(nil, "IV", nlen); err != nil {
		return nil, err
	}
	if c.sender, err = alg.New(c.senderKey); err != nil {
		return nil, err
	}
	if c.recipient, err = alg.New(c.recipientKey); err != nil {
		return nil, err
	}
	start, err := c.store.Load()
	if err != nil {
		return nil, fmt.Errorf("oscore: load sender sequence number: %w", err)
	}
	c.ssn, c.reserved = start, start
	return c, nil
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte{}, b...)
}

// SenderID returns the Sender ID (the kid of this endpoint's requests).
func (c *Context) SenderID() []byte { return clone(c.senderID) }

// RecipientID returns the Recipient ID (the kid the peer's requests carry).
func (c *Context) RecipientID() []byte { return clone(c.recipientID) }

// IDContext returns the ID Context (nil when absent).
func (c *Context) IDContext() []byte { return clone(c.idContext) }

// AEAD returns the COSE AEAD algorithm identifier.
func (c *Context) AEAD() int { return c.alg.ID() }

// Keys returns copies of the derived Sender Key, Recipient Key and Common IV (for tests and
// interoperability checks; keep them secret).
func (c *Context) Keys() (senderKey, recipientKey, commonIV []byte) {
	return clone(c.senderKey), clone(c.recipientKey), clone(c.commonIV)
}

// SenderSequenceNumber returns the next Sender Sequence Number.
func (c *Context) SenderSequenceNumber() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ssn
}

// ReplayWindowSynchronized reports whether requests can be checked for replay (false after a
// restart until an Echo round trip, Appendix B.1.2).
func (c *Context) ReplayWindowSynchronized() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.synced
}

// InvalidateReplayWindow forgets the replay window: the next request is answered with an Echo
// challenge (Appendix B.1.2).
func (c *Context) InvalidateReplayWindow() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.synced = false
	c.window = newReplayWindow(int(c.window.size))
}

// nonce computes the AEAD nonce (RFC 8613 §5.2): S || pad(ID_PIV) || pad(PIV) XOR Common IV.
func (c *Context) nonce(idPIV, piv []byte) []byte {
	n := len(c.commonIV)
	b := make([]byte, n)
	b[0] = byte(len(idPIV))
	copy(b[n-5-len(idPIV):n-5], idPIV)
	copy(b[n-len(piv):], piv)
	for i := range b {
		b[i] ^= c.commonIV[i]
	}
	return b
}

// nextSequence returns a fresh Sender Sequence Number, reserving a block of K in the store first
// (§7.2: read-and-increment is atomic; Appendix B.1.1).
func (c *Context) nextSequence() (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ssn > MaxSequenceNumber {
		return 0, newErr(KindSequenceExhausted, "sender sequence number %d exceeds 2^40-1 (§7.2.1)", c.ssn)
	}
	if al, ok := c.store.(SequenceAllocator); ok && c.ssn >= c.reserved {
		// Shared by several processes: a block of our own (RFC 8613 §7.2.1, a nonce is never
		// reused: no other process gets these numbers).
		first, err := al.Allocate(c.gap)
		if err != nil {
			return 0, &Error{Kind: KindInternal, Err: fmt.Errorf("allocate sender sequence numbers: %w", err)}
		}
		if first > MaxSequenceNumber {
			return 0, newErr(KindSequenceExhausted, "sender sequence number %d exceeds 2^40-1 (§7.2.1)", first)
		}
		c.ssn, c.reserved = first, min(first+c.gap, MaxSequenceNumber+1)
	}
	if c.ssn >= c.reserved {
		limit := min(c.ssn+c.gap, MaxSequenceNumber+1)
		if err := c.store.Reserve(limit); err != nil {
			return 0, &Error{Kind: KindInternal, Err: fmt.Errorf("persist sender sequence number: %w", err)}
		}
		c.reserved = limit
	}
	n := c.ssn
	c.ssn++
	return n, nil
}

// seal encrypts a plaintext (RFC 8613 §5, RFC 9052 §5.3).
func seal(a cipher.AEAD, nonce, plaintext, aad []byte) ([]byte, error) {
	if m, ok := a.(interface{ MaxLength() int }); ok && len(plaintext) > m.MaxLength() {
		return nil, newErr(KindInternal, "plaintext of %d bytes exceeds the AEAD limit %d", len(plaintext), m.MaxLength())
	}
	return a.Seal(nil, nonce, plaintext, aad), nil
}

// currentEcho returns the Echo value to challenge with, making a new one when none is valid.
func (c *Context) currentEcho() ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.echo != nil && c.now().Sub(c.echoAt) < c.echoLifetime {
		return c.echo, nil
	}
	e := make([]byte, 8)
	if _, err := io.ReadFull(c.rand, e); err != nil {
		return nil, fmt.Errorf("oscore: echo value: %w", err)
	}
	c.echo, c.echoAt = e, c.now()
	return e, nil
}
