package coap

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// ClientOptions configures Dial.
type ClientOptions struct {
	DTLS      *DTLSClientConfig // for coaps://
	BlockSize int               // 16..1024; 0 = 1024. Block1 size and the Block2 size asked for.
	Config    Config            // timers and limits (MaxBodySize caps a Block2 download)
	// Layer, when set, protects every request message (each block of a block-wise transfer
	// separately: OSCORE inner block-wise, RFC 8613 §4.1.3.4.1) and verifies every response.
	// Observe is not available through a Layer.
	Layer ClientLayer
	// DialUDP, when set, opens the datagram connection of a coap:// client instead of a UDP
	// socket (coaptest's in-memory link); coaps:// does not use it.
	DialUDP func(ctx context.Context, addr string) (net.Conn, error)
}

// ClientRequest is a request for Client.Do.
type ClientRequest struct {
	Method        codes.Code
	Path          string
	Query         []string
	ContentFormat Format // zero: no Content-Format option
	Accept        Format // zero: no Accept option
	Payload       []byte
	Options       message.Options // extra options
}

// Client is a CoAP client bound to one server association.
type Client struct {
	ep      *endpoint
	sess    *session
	conn    io.Closer
	szx     uint8
	maxBody int
	layer   ClientLayer
	wg      sync.WaitGroup
	// gone is closed when the server ends the session (a DTLS close_notify): exchanges then fail
	// with ErrSessionClosed at once instead of retransmitting into a session that is no more.
	gone     chan struct{}
	goneOnce sync.Once
}

// Dial opens a client to rawURL ("coap://host[:port]" or "coaps://host[:port]").
func Dial(ctx context.Context, rawURL string, opts ClientOptions) (*Client, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("coap: dial %q: %w", rawURL, err)
	}
	bs := opts.BlockSize
	if bs <= 0 || bs > maxBlock {
		bs = maxBlock
	}
	c := &Client{ep: newEndpoint(opts.Config), szx: szxFor(bs), layer: opts.Layer, gone: make(chan struct{})}
	c.maxBody = c.ep.cfg.MaxBodySize
	var (
		rd   func([]byte) (int, error)
		peer Peer
		wr   func([]byte) error
		bufN = maxDatagram // a UDP datagram
	)
	switch u.Scheme {
	case "coap":
		host := hostPort(u, "5683")
		dial := opts.DialUDP
		if dial == nil {
			dial = func(ctx context.Context, addr string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "udp", addr)
			}
		}
		conn, err := dial(ctx, host)
		if err != nil {
			return nil, fmt.Errorf("coap: dial %s: %w", host, err)
		}
		c.conn = conn
		rd = conn.Read
		wr = func(b []byte) error { _, err := conn.Write(b); return err }
		peer = Peer{Addr: conn.RemoteAddr()}
	case "coaps":
		host := hostPort(u, "5684")
		conn, p, err := dialDTLS(ctx, host, opts.DTLS)
		if err != nil {
			return nil, err
		}
		c.conn = conn
		rd = conn.Read
		wr = func(b []byte) error { _, err := conn.Write(b); return err }
		peer = p
		bufN = maxDTLSRecord // dtlsconn reads one record's plaintext at a time
	default:
		return nil, fmt.Errorf("coap: dial %q: unsupported scheme", rawURL)
	}
	c.sess = c.ep.newSession(peer, wr)
	c.wg.Add(1)
	go c.readLoop(rd, bufN)
	return c, nil
}

const (
	maxDatagram   = 64 * 1024 // the largest UDP payload
	maxDTLSRecord = 1 << 14   // RFC 6347 §4.1: a record's plaintext is at most 2^14 bytes
)

func hostPort(u *url.URL, port string) string {
	if u.Port() != "" {
		return u.Host
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// readBufs recycle clients' read buffers, by size: a DTLS record's plaintext (maxDTLSRecord,
// coaps://) or a whole datagram (maxDatagram, coap://). A client made per enrollment then no
// longer allocates and clears 16 or 64 KiB of its own. A sync.Pool holds no state, only memory
// the GC may reclaim.
var (
	recordBufs   = sync.Pool{New: func() any { b := make([]byte, maxDTLSRecord); return &b }}
	datagramBufs = sync.Pool{New: func() any { b := make([]byte, maxDatagram); return &b }}
)

// readLoop reads into a buffer of bufN bytes: a datagram, or one DTLS record's plaintext.
func (c *Client) readLoop(rd func([]byte) (int, error), bufN int) {
	defer c.wg.Done()
	var buf []byte
	switch bufN {
	case maxDTLSRecord, maxDatagram:
		pool := &recordBufs
		if bufN == maxDatagram {
			pool = &datagramBufs
		}
		bp := pool.Get().(*[]byte)
		defer pool.Put(bp) // every datagram or record read is copied out before handle
		buf = *bp
	default:
		buf = make([]byte, bufN)
	}
	for {
		n, err := rd(buf)
		if err != nil {
			if c.ep.ctx.Err() == nil && errors.Is(err, io.EOF) {
				// The server closed the session (DTLS close_notify, RFC 5246 §7.2.1).
				c.goneOnce.Do(func() { close(c.gone) })
				return
			}
			if c.ep.ctx.Err() != nil || errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) {
				// The association is over (the server closed the DTLS session, or Close):
				// a request waiting for a separate response gets ErrClosed rather than a wait
				// that nothing can end (RFC 7252 §5.2.2 gives it no deadline).
				c.ep.cancel()
				return
			}
			if errors.Is(err, io.ErrShortBuffer) {
				continue
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			// ICMP port unreachable and the like: keep reading until Close.
			select {
			case <-c.ep.ctx.Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		b := make([]byte, n)
		copy(b, buf[:n])
		c.sess.handle(b)
	}
}

// Peer returns the server's DTLS chain and channel-binding values (Addr only over coap://).
func (c *Client) Peer() Peer { return c.sess.peer }

// Stats returns the client's counters.
func (c *Client) Stats() Stats { return c.ep.stats.snapshot() }

// Close ends the association.
func (c *Client) Close() error {
	c.ep.cancel()
	err := c.conn.Close()
	c.sess.close()
	c.wg.Wait()
	return err
}

func (c *Client) newMessage(req *ClientRequest) *message.Message {
	opts := make(message.Options, 0, len(req.Options)+12)
	for _, o := range req.Options {
		opts = opts.Add(o)
	}
	opts = setPath(opts, req.Path)
	for _, q := range req.Query {
		opts = opts.Add(message.Option{ID: message.URIQuery, Value: []byte(q)})
	}
	if cf, ok := req.ContentFormat.Get(); ok {
		opts = addUint(opts, message.ContentFormat, uint32(cf))
	}
	if a, ok := req.Accept.Get(); ok {
		opts = addUint(opts, message.Accept, uint32(a))
	}
	return &message.Message{Code: req.Method, Options: opts}
}

// exchange sends m through the Layer, if any, and returns the (verified) response.
func (c *Client) exchange(ctx context.Context, m *message.Message) (*message.Message, error) {
	if c.layer == nil {
		return c.rawExchange(ctx, m)
	}
	r, err := c.layer.RoundTrip(m, func(p *message.Message) (*message.Message, error) { return c.rawExchange(ctx, p) })
	if err != nil {
		return nil, err
	}
	if id := unknownCritical(r.Options); id != 0 {
		return nil, fmt.Errorf("coap: response carries unrecognised critical option %d", id)
	}
	return r, nil
}

// rawExchange sends m (CON) and returns the response. A server that first wants this
// client to prove its address answers 4.01 Unauthorized with an Echo option: the request is
// then sent once more with that Echo value (RFC 9175 §2.3), transparently to the caller.
func (c *Client) rawExchange(ctx context.Context, m *message.Message) (*message.Message, error) {
	r, err := c.rawOnce(ctx, m)
	if err != nil {
		return nil, err
	}
	if echo, ok := echoChallenge(r); ok {
		again := *m
		again.Options = append(message.Options(nil), m.Options...).Remove(optEcho).Add(message.Option{ID: optEcho, Value: echo})
		return c.rawOnce(ctx, &again)
	}
	return r, nil
}

// echoChallenge returns the Echo value of a 4.01 Unauthorized + Echo response (RFC 9175 §2.3).
func echoChallenge(r *message.Message) ([]byte, bool) {
	if r.Code != codes.Unauthorized {
		return nil, false
	}
	v, ok := optBytes(r.Options, optEcho)
	return v, ok && len(v) > 0 && len(v) <= 40 // RFC 9175 §2.2.1: 1 to 40 bytes
}

// rawOnce sends m (CON) with a fresh token and returns the response,
// piggybacked or separate (RFC 7252 §5.2).
func (c *Client) rawOnce(ctx context.Context, m *message.Message) (*message.Message, error) {
	select {
	case <-c.gone:
		return nil, ErrSessionClosed
	default:
	}
	m.Token = newToken()
	ch := c.sess.addWaiter(m.Token, 1)
	defer c.sess.removeWaiter(m.Token)
	ackc := make(chan error, 1)
	select {
	case c.sess.nstart <- struct{}{}: // NSTART (RFC 7252 §4.7)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	var once sync.Once
	release := func() { once.Do(func() { <-c.sess.nstart }) }
	defer release()
	mid, err := c.sess.startCON(m, func(_ *message.Message, err error) { ackc <- err })
	if err != nil {
		return nil, err
	}
	got := func(r *message.Message) (*message.Message, error) {
		c.sess.cancelCON(mid)
		if id := unknownCritical(r.Options); id != 0 {
			return nil, fmt.Errorf("coap: response carries unrecognised critical option %d", id)
		}
		return r, nil
	}
	// arrived is the response the read loop has already handed over, if any. The read loop
	// hands a response to its waiter before it reads what follows it, such as the close_notify
	// of a server that answers its in-flight requests and then closes every session (Shutdown):
	// when the session's end and the response are both there, the response counts. (A select
	// with several ready cases picks one at random.)
	arrived := func() (*message.Message, bool) {
		select {
		case r := <-ch:
			return r, true
		default:
			return nil, false
		}
	}
	for {
		select {
		case r := <-ch:
			// A separate response may overtake the empty ACK (RFC 7252 §5.2.2).
			return got(r)
		case err := <-ackc:
			if err != nil && !errors.Is(err, context.Canceled) {
				return nil, fmt.Errorf("coap: %s %s: %w", m.Code, pathOf(m.Options), err)
			}
			release()
			ackc = nil
		case <-ctx.Done():
			c.sess.cancelCON(mid)
			return nil, ctx.Err()
		case <-c.ep.ctx.Done():
			if r, ok := arrived(); ok {
				return got(r)
			}
			return nil, ErrClosed
		case <-c.gone:
			if r, ok := arrived(); ok {
				return got(r)
			}
			c.sess.cancelCON(mid)
			return nil, ErrSessionClosed
		}
	}
}

// Do sends req and returns the whole response: a body larger than the block
// size goes out with Block1 (RFC 7959 §2.5, one Request-Tag per body, RFC 9175
// §3), a block-wise response is fetched completely (§2.4) and checked by ETag.
func (c *Client) Do(ctx context.Context, req *ClientRequest) (*Response, error) {
	size := 1 << (c.szx + 4)
	var resp *message.Message
	if len(req.Payload) > size {
		tag := newToken()[:4]
		szx := c.szx
		off := 0
		for {
			bs := 1 << (szx + 4)
			end := min(off+bs, len(req.Payload))
			more := end < len(req.Payload)
			m := c.newMessage(req)
			m.Options = m.Options.Add(message.Option{ID: message.Block1, Value: block{Num: uint32(off / bs), More: more, SZX: szx}.encode()})
			m.Options = m.Options.Add(message.Option{ID: optRequestTag, Value: tag})
			if off == 0 {
				m.Options = addUint(m.Options, message.Size1, uint32(len(req.Payload)))
			}
			if !more {
				// Early Block2 size negotiation in the last Block1 request (RFC 7959 §3.3).
				m.Options = m.Options.Add(message.Option{ID: message.Block2, Value: block{SZX: c.szx}.encode()})
			}
			m.Payload = req.Payload[off:end]
			r, err := c.exchange(ctx, m)
			if err != nil {
				return nil, err
			}
			if !more || r.Code != codes.Continue {
				resp = r
				break
			}
			if rb, ok, err := getBlock(r.Options, message.Block1); err == nil && ok && rb.SZX < szx {
				szx = rb.SZX // the server asked for smaller blocks (RFC 7959 §2.5)
			}
			off = end
		}
	} else {
		m := c.newMessage(req)
		m.Payload = req.Payload
		m.Options = m.Options.Add(message.Option{ID: message.Block2, Value: block{SZX: c.szx}.encode()})
		r, err := c.exchange(ctx, m)
		if err != nil {
			return nil, err
		}
		resp = r
	}
	return c.finishBlock2(ctx, req, resp)
}

// finishBlock2 fetches the remaining blocks of a Block2 response.
func (c *Client) finishBlock2(ctx context.Context, req *ClientRequest, first *message.Message) (*Response, error) {
	b2, has, err := getBlock(first.Options, message.Block2)
	if err != nil {
		return nil, fmt.Errorf("coap: response: %w", err)
	}
	out := toResponse(first)
	if !has || !b2.More {
		return out, nil
	}
	etag, _ := optBytes(first.Options, message.ETag)
	body := append([]byte(nil), first.Payload...)
	szx := b2.SZX
	for b2.More {
		if len(body)%(1<<(szx+4)) != 0 {
			return nil, errors.New("coap: Block2 payload does not match its block size")
		}
		if len(body) > c.maxBody {
			return nil, fmt.Errorf("coap: response body over %d bytes", c.maxBody)
		}
		m := c.newMessage(&ClientRequest{Method: req.Method, Path: req.Path, Query: req.Query,
			Accept: req.Accept, Options: req.Options})
		m.Options = m.Options.Remove(message.Observe)
		m.Options = m.Options.Add(message.Option{ID: message.Block2, Value: block{Num: uint32(len(body) >> (szx + 4)), SZX: szx}.encode()})
		r, err := c.exchange(ctx, m)
		if err != nil {
			return nil, err
		}
		if r.Code != first.Code {
			return toResponse(r), nil
		}
		nb, ok, err := getBlock(r.Options, message.Block2)
		if err != nil || !ok {
			return nil, errors.New("coap: Block2 follow-up without Block2 option")
		}
		if et, _ := optBytes(r.Options, message.ETag); !bytes.Equal(et, etag) {
			return nil, errors.New("coap: representation changed during Block2 transfer (ETag)")
		}
		if nb.offset() != len(body) {
			return nil, errors.New("coap: Block2 block at unexpected offset")
		}
		body = append(body, r.Payload...)
		b2, szx = nb, nb.SZX
	}
	out.Payload = body
	out.Options = out.Options.Remove(message.Block2)
	return out, nil
}

func toResponse(m *message.Message) *Response {
	r := &Response{Code: m.Code, ContentFormat: optFormat(m.Options, message.ContentFormat),
		MaxAge: optAge(m.Options), Payload: m.Payload, Options: m.Options}
	r.ETag, _ = optBytes(m.Options, message.ETag)
	return r
}

// Observe registers for path (RFC 7641 §3.1) and calls fn with the first
// response and every later notification, in order, until ctx is done; then it
// deregisters (§3.6) and returns ctx's error. A block-wise notification is
// completed with GETs before fn sees it.
func (c *Client) Observe(ctx context.Context, path string, fn func(*Response)) error {
	if c.layer != nil {
		return errors.New("coap: Observe is not available through a client Layer")
	}
	m := c.newMessage(&ClientRequest{Method: codes.GET, Path: path})
	m.Options = addUint(m.Options, message.Observe, 0)
	m.Options = m.Options.Add(message.Option{ID: message.Block2, Value: block{SZX: c.szx}.encode()})
	m.Token = newToken()
	ch := c.sess.addWaiter(m.Token, 16)
	defer c.sess.removeWaiter(m.Token)
	if _, err := c.sess.sendCONWait(ctx, m); err != nil {
		return fmt.Errorf("coap: observe %s: %w", path, err)
	}
	var (
		lastSeq  int64 = -1
		lastTime time.Time
		echoed   bool
	)
	get := &ClientRequest{Method: codes.GET, Path: path}
	for {
		select {
		case <-ctx.Done():
			c.deregister(path, m.Token)
			return ctx.Err()
		case <-c.ep.ctx.Done():
			return ErrClosed
		case r := <-ch:
			if echo, ok := echoChallenge(r); ok && !echoed && lastSeq < 0 {
				// RFC 9175 §2.3: register again, with the Echo value, under the same token.
				echoed = true
				m.Options = m.Options.Remove(optEcho).Add(message.Option{ID: optEcho, Value: echo})
				if _, err := c.sess.sendCONWait(ctx, m); err != nil {
					return fmt.Errorf("coap: observe %s: %w", path, err)
				}
				continue
			}
			seq := optUint(r.Options, message.Observe)
			now := time.Now()
			if seq >= 0 && lastSeq >= 0 && !newer(lastSeq, seq, lastTime, now) {
				continue // RFC 7641 §3.4: reordered, older notification
			}
			if seq >= 0 {
				lastSeq, lastTime = seq, now
			}
			resp, err := c.finishBlock2(ctx, get, r)
			if err != nil {
				continue
			}
			fn(resp)
			if seq < 0 {
				return errors.New("coap: resource is not observable")
			}
			if r.Code>>5 != 2 {
				return fmt.Errorf("coap: observation ended with %s", r.Code)
			}
		}
	}
}

// newer implements the freshness rule of RFC 7641 §3.4.
func newer(v1, v2 int64, t1, t2 time.Time) bool {
	return v1 < v2 && v2-v1 < 1<<23 || v1 > v2 && v1-v2 > 1<<23 || t2.After(t1.Add(128*time.Second))
}

func (c *Client) deregister(path string, token []byte) {
	m := c.newMessage(&ClientRequest{Method: codes.GET, Path: path})
	m.Options = addUint(m.Options, message.Observe, 1)
	m.Token = token
	ctx, cancel := context.WithTimeout(c.ep.ctx, c.ep.cfg.ACKTimeout*2)
	defer cancel()
	_, _ = c.sess.sendCONWait(ctx, m)
}

// String renders the request line for logs.
func (r *ClientRequest) String() string {
	return r.Method.String() + " " + r.Path + "?" + strings.Join(r.Query, "&")
}
