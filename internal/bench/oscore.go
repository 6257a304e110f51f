package bench

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"

	"coapca/ace"
	"coapca/client"
	"coapca/coap"
	"coapca/coap/dtlsconn"
	"coapca/coap/oscorelayer"
	"coapca/edhoc"
	"coapca/internal/config"
	"coapca/internal/server"
	"coapca/oscore"
)

// FrontDoors compares EST enrollment over EST-coaps (a new DTLS session per enrollment),
// EST-oscore with a pre-shared context (o.OSCORE) and EST-oscore keyed by EDHOC with the
// combined request (o.EDHOC), against one server in one run: enrollments per second with
// o.Concurrency devices at once, and the bytes and datagrams on the wire per enrollment, counted
// by a UDP relay over o.WireSamples sequential enrollments per mode (UDP payloads, both
// directions, retransmissions included; IP/UDP headers excluded).
// It prints the results to w and its progress to progress.
func FrontDoors(ctx context.Context, o ESTOptions, w, progress io.Writer) error {
	rs, sizes, err := frontDoors(ctx, o, progress)
	if err != nil {
		return err
	}
	printFrontDoors(w, o, rs)
	if len(sizes) > 0 {
		printEDHOCSizes(w, sizes)
	}
	return nil
}

// edhocSizes are the EDHOC message sizes for one choice of the server's ID_CRED_R
// (credential) and the device's ID_CRED_I (initiator).
type edhocSizes struct {
	credential, initiator string
	m1, m2, m3            int
}

// edhocMessageSizes runs one EDHOC handshake (method 0, suite 2) for each choice of
// edhoc.credential for the server's certificate (the device's IDevID in a one-certificate
// x5chain), then for each way the device names its certificate (client --edhoc-cred, with
// the server's default), in memory, and returns the sizes of message_1..3: what a
// constrained initiator must receive (message_2) or send (message_3) in one piece is the
// point (RFC 9528 §3.5.3, RFC 9360).
func edhocMessageSizes(srv tls.Certificate, dev tls.Certificate) ([]edhocSizes, error) {
	chain, err := client.ParseChain(srv.Certificate)
	if err != nil {
		return nil, err
	}
	devLeaf, err := x509.ParseCertificate(dev.Certificate[0])
	if err != nil {
		return nil, err
	}
	var out []edhocSizes
	for _, kinds := range [][2]string{{"x5chain-leaf", "x5chain"}, {"x5chain", "x5chain"}, {"x5t", "x5chain"},
		{"x5chain-leaf", "x5t"}, {"x5chain-leaf", "kid"}} {
		kind, devKind := kinds[0], kinds[1]
		if devKind == "kid" && len(devLeaf.SubjectKeyId) == 0 {
			continue // this IDevID has no Subject Key Identifier to name it by
		}
		devCred, err := client.EDHOCCredential([]*x509.Certificate{devLeaf}, devKind)
		if err != nil {
			return nil, err
		}
		srvCred, err := server.EDHOCCredential(chain, kind)
		if err != nil {
			return nil, err
		}
		// Both sides know each other here: the sizes, not trust, are measured.
		know := func(c *edhoc.Credential) edhoc.Resolver {
			return func(*edhoc.IDCred, []edhoc.EAD) (*edhoc.Credential, error) { return c, nil }
		}
		in, err := edhoc.NewInitiator(edhoc.Config{Suites: []edhoc.Suite{2}, Credential: devCred, PrivateKey: dev.PrivateKey, Resolve: know(srvCred)})
		if err != nil {
			return nil, err
		}
		re, err := edhoc.NewResponder(edhoc.Config{Credential: srvCred, PrivateKey: srv.PrivateKey, Resolve: know(devCred)})
		if err != nil {
			return nil, err
		}
		m1, err := in.Message1(nil)
		if err == nil {
			_, err = re.ProcessMessage1(m1)
		}
		var m2, m3 []byte
		if err == nil {
			m2, err = re.Message2(nil)
		}
		if err == nil {
			_, err = in.ProcessMessage2(m2)
		}
		if err == nil {
			m3, err = in.Message3(nil)
		}
		if err == nil {
			_, err = re.ProcessMessage3(m3)
		}
		if err != nil {
			return nil, fmt.Errorf("edhoc sizes (%s, %s): %w", kind, devKind, err)
		}
		out = append(out, edhocSizes{credential: kind, initiator: devKind, m1: len(m1), m2: len(m2), m3: len(m3)})
	}
	return out, nil
}

func printEDHOCSizes(w io.Writer, sizes []edhocSizes) {
	fmt.Fprintf(w, "\nEDHOC message sizes by the server's credential (edhoc.credential) and the device's (est --edhoc-cred; method 0, suite 2)\n")
	fmt.Fprintf(w, "%-14s %-10s %10s %10s %10s   %s\n", "credential", "initiator", "message_1", "message_2", "message_3", "message_2 in one 1024-byte block")
	for _, z := range sizes {
		fits := "yes"
		if z.m2 > 1024 {
			fits = "no (Block2 needed)"
		}
		fmt.Fprintf(w, "%-14s %-10s %10d %10d %10d   %s\n", z.credential, z.initiator, z.m1, z.m2, z.m3, fits)
	}
}

func frontDoors(ctx context.Context, o ESTOptions, progress io.Writer) ([]frontDoorResult, []edhocSizes, error) {
	say := func(format string, a ...any) { fmt.Fprintf(progress, "bench: "+format+"\n", a...) }
	dir, err := os.MkdirTemp("", "coapca-bench-oscore-")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(dir)
	samples := max(o.WireSamples, 1)
	n := o.Devices + samples

	// One pre-shared context per device (server's side in files, client's side in memory).
	type pskPair struct{ cli oscore.Params }
	psks := make([]pskPair, n)
	var files []string
	if o.OSCORE {
		if err := os.MkdirAll(filepath.Join(dir, "psk"), 0o700); err != nil {
			return nil, nil, err
		}
		for i := range psks {
			secret := make([]byte, 16)
			if _, err := rand.Read(secret); err != nil {
				return nil, nil, err
			}
			rid := []byte{byte((i + 1) >> 8), byte(i + 1)}
			f := filepath.Join(dir, "psk", fmt.Sprintf("bench-%05d.yaml", i))
			y := fmt.Sprintf("name: bench-%05d\nmaster_secret: %x\nsender_id: \"\"\nrecipient_id: %x\n", i, secret, rid)
			if err := os.WriteFile(f, []byte(y), 0o600); err != nil {
				return nil, nil, err
			}
			files = append(files, f)
			psks[i].cli = oscore.Params{MasterSecret: secret, SenderID: rid, RecipientID: []byte{}}
		}
	}

	// ACE: an authorization server with one registered client (and OSCORE context) per device,
	// and the server trusting its token key.
	var asCtx []*oscore.Context
	var asAddr, rsKey string
	if o.ACE {
		asAddr, rsKey, asCtx, err = startBenchAS(ctx, dir, n)
		if err != nil {
			return nil, nil, err
		}
	}
	s, stop, err := startServer(ctx, filepath.Join(dir, "data"), func(cfg *config.Config) {
		cfg.Listen.CoAPS, cfg.Listen.CoAP = "127.0.0.1:0", "127.0.0.1:0"
		cfg.OSCOREContexts = files
		if o.ACE {
			cfg.ACE = config.ACE{Audiences: []string{"bench-rs"}, Keys: []config.ACEKey{{KID: "01", Alg: 10, KeyFile: rsKey}}}
		}
		cfg.DTLS.HandshakesPerSourcePerSecond = -1
		cfg.DTLS.MaxHalfOpen = 4 * o.Concurrency
		// Every simulated device sends from its own port of 127.0.0.1, and the server keeps
		// each port's session (its deduplication state) for EXCHANGE_LIFETIME: the warm-up
		// and each coap:// front door open n sessions, all from one address. Real devices have
		// addresses of their own, so the per-address cap is raised to hold them all; at the
		// default cap the newcomers beyond it would each first prove their address (an extra
		// round trip, RFC 9175 §2.4 item 3) and that would be counted on the wire.
		sessions := 4*n + o.Concurrency
		cfg.CoAP.MaxSessionsPerIP = sessions
		if all := sessions + 4*o.Concurrency; all > 10000 { // coap.max_sessions' default
			cfg.CoAP.MaxSessions = all
		}
		// Likewise the EDHOC handshakes in flight from one address (default 16): beyond it a
		// message_1 is refused with 5.03, which the devices here do not retry.
		if per := 2 * o.Concurrency; per > 16 {
			cfg.EDHOC.MaxSessionsPerSource = per
			cfg.EDHOC.MaxSessions = max(cfg.EDHOC.MaxSessions, per)
		}
	})
	if err != nil {
		return nil, nil, err
	}
	defer stop()
	say("preparing %d device identities and CSRs", n)
	devs, err := makeDevices(s.Data(), n)
	if err != nil {
		return nil, nil, err
	}
	roots := x509.NewCertPool()
	roots.AddCert(s.Data().Root)
	verify := func(raw [][]byte) ([]*x509.Certificate, error) {
		chain, err := client.ParseChain(raw)
		if err != nil {
			return nil, err
		}
		inter := x509.NewCertPool()
		inter.AddCert(s.Data().IssuingCA) // the server sends its certificate alone (edhoc.credential x5chain-leaf)
		for _, c := range chain[1:] {
			inter.AddCert(c)
		}
		if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter}); err != nil {
			return nil, err
		}
		return chain, nil
	}
	pskCtx := make([]*oscore.Context, n)
	for i := range pskCtx {
		if o.OSCORE {
			if pskCtx[i], err = oscore.NewContext(psks[i].cli); err != nil {
				return nil, nil, err
			}
		}
	}

	coapsURL := func(addr string) string { return "coaps://" + addr }
	coapURL := func(addr string) string { return "coap://" + addr }
	srvCoaps, srvCoap := s.CoAPSURL()[len("coaps://"):], s.CoAPURL()[len("coap://"):]
	asTarget := asAddr
	// enroll runs one enrollment of device i in mode against addr and adds the device's CoAP
	// retransmissions (each an ACK_TIMEOUT or more of waiting, RFC 7252 §4.2) to retrans.
	enroll := func(ctx context.Context, mode string, i int, addr string, retrans *atomic.Uint64) error {
		d := devs[i]
		var c *coap.Client
		var err error
		switch mode {
		case "coaps":
			c, err = coap.Dial(ctx, coapsURL(addr), coap.ClientOptions{BlockSize: o.BlockSize, DTLS: &dtlsconn.ClientConfig{
				Certificates: []tls.Certificate{d.idevid}, RootCAs: roots, ServerName: "127.0.0.1"}})
		case "oscore":
			c, err = coap.Dial(ctx, coapURL(addr), coap.ClientOptions{BlockSize: o.BlockSize, Layer: oscorelayer.NewClient(pskCtx[i])})
		case "edhoc":
			leaf, perr := x509.ParseCertificate(d.idevid.Certificate[0])
			if perr != nil {
				return perr
			}
			cred, cerr := edhoc.NewX509Credential([]*x509.Certificate{leaf}, edhoc.ByX5Chain)
			if cerr != nil {
				return cerr
			}
			ec, eerr := oscorelayer.NewEDHOCClient(oscorelayer.EDHOCConfig{Credential: cred, PrivateKey: d.idevid.PrivateKey, VerifyPeer: verify})
			if eerr != nil {
				return eerr
			}
			c, err = coap.Dial(ctx, coapURL(addr), coap.ClientOptions{BlockSize: o.BlockSize, Layer: ec})
		case "ace":
			ac, aerr := client.NewACEClient(client.ACEConfig{AS: "coap://" + asTarget + "/token", ASContext: asCtx[i],
				Audience: "bench-rs", Scope: "est"})
			if aerr != nil {
				return aerr
			}
			c, err = coap.Dial(ctx, coapURL(addr), coap.ClientOptions{BlockSize: o.BlockSize, Layer: ac})
		}
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = client.NewEST(c, client.ESTOptions{}).Enroll(ctx, d.csr)
		retrans.Add(c.Stats().Retransmissions)
		return err
	}

	if o.OSCORE {
		// A context loaded at start answers its first request with Echo (RFC 8613 B.1.2):
		// synchronise every device once, outside the measurement.
		say("synchronising %d pre-shared contexts (Echo)", n)
		for i := range n {
			c, err := coap.Dial(ctx, s.CoAPURL(), coap.ClientOptions{Layer: oscorelayer.NewClient(pskCtx[i])})
			if err != nil {
				return nil, nil, err
			}
			_, err = client.NewEST(c, client.ESTOptions{}).CSRAttrs(ctx)
			c.Close()
			if err != nil {
				return nil, nil, fmt.Errorf("oscore warm-up: %w", err)
			}
		}
	}

	modes := []string{"coaps"}
	if o.OSCORE {
		modes = append(modes, "oscore")
	}
	if o.EDHOC {
		modes = append(modes, "edhoc")
	}
	if o.ACE {
		// The AS contexts start unsynchronized at the AS (Echo on the first request): one
		// token request per device outside the measurement synchronises them.
		say("synchronising %d OSCORE contexts with the AS (Echo)", n)
		if err := syncBenchAS(ctx, asAddr, asCtx); err != nil {
			return nil, nil, err
		}
		modes = append(modes, "ace")
	}
	var out []frontDoorResult
	for _, mode := range modes {
		r := frontDoorResult{mode: mode}
		target := srvCoaps
		if mode != "coaps" {
			target = srvCoap
		}
		say("%s: %d enrollments, %d at a time", mode, o.Devices, o.Concurrency)
		var next atomic.Int64
		var retrans atomic.Uint64
		var mu sync.Mutex
		var wg sync.WaitGroup
		start := time.Now()
		for range o.Concurrency {
			wg.Go(func() {
				for {
					i := int(next.Add(1)) - 1
					if i >= o.Devices || ctx.Err() != nil {
						return
					}
					t0 := time.Now()
					err := enroll(ctx, mode, i, target, &retrans)
					mu.Lock()
					if err != nil {
						r.errs++
						if r.errs == 1 {
							say("%s: first error: %v", mode, err)
						}
					} else {
						r.lat = append(r.lat, time.Since(t0))
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		r.perSec = float64(len(r.lat)) / time.Since(start).Seconds()
		r.retrans = retrans.Load()

		relay, err := newUDPRelay(target)
		if err != nil {
			return nil, nil, err
		}
		// With ACE the AS's traffic counts too: a second relay in front of it.
		var asRelay *udpRelay
		if mode == "ace" {
			if asRelay, err = newUDPRelay(asAddr); err != nil {
				relay.close()
				return nil, nil, err
			}
			asTarget = asRelay.addr()
		}
		ok := 0
		for k := range samples {
			var sampleRetrans atomic.Uint64
			if err := enroll(ctx, mode, o.Devices+k, relay.addr(), &sampleRetrans); err == nil {
				ok++
			}
		}
		relay.close()
		total, dgrams := relay.bytes.Load(), relay.datagrams.Load()
		if asRelay != nil {
			asRelay.close()
			total, dgrams = total+asRelay.bytes.Load(), dgrams+asRelay.datagrams.Load()
			asTarget = asAddr
		}
		if ok > 0 {
			r.bytes = float64(total) / float64(ok)
			r.datagrams = float64(dgrams) / float64(ok)
		}
		out = append(out, r)
	}
	var sizes []edhocSizes
	if o.EDHOC {
		if sizes, err = edhocMessageSizes(s.Data().ServerCertificate(), devs[0].idevid); err != nil {
			return nil, nil, err
		}
	}
	return out, sizes, ctx.Err()
}

type frontDoorResult struct {
	mode             string
	perSec           float64
	lat              latencies
	errs             int
	retrans          uint64 // CoAP retransmissions by the devices (DTLS's own handshake retransmissions not counted)
	bytes, datagrams float64
}

func printFrontDoors(w io.Writer, o ESTOptions, rs []frontDoorResult) {
	names := map[string]string{
		"coaps":  "EST-coaps (new DTLS session + /sen)",
		"oscore": "EST-oscore, pre-shared context (/sen)",
		"edhoc":  "EST-oscore, EDHOC + combined /sen",
		"ace":    "EST-oscore, ACE token (AS + authz-info + /sen)",
	}
	fmt.Fprintf(w, "coapca bench est: one enrollment per device, %d devices, %d at a time, block size %d, SQLite fsync'd\n", o.Devices, o.Concurrency, o.BlockSize)
	fmt.Fprintf(w, "bytes on the wire: UDP payloads both ways through a counting relay, mean of %d sequential enrollments\n\n", max(o.WireSamples, 1))
	fmt.Fprintf(w, "%-48s %10s %10s %10s %14s %10s %7s %8s\n", "front door", "enroll/s", "p50", "p99", "bytes/enroll", "datagrams", "errors", "retrans")
	for _, r := range rs {
		fmt.Fprintf(w, "%-48s %10.0f %10v %10v %14.0f %10.1f %7d %8d\n", names[r.mode], r.perSec,
			r.lat.pct(.5).Round(10*time.Microsecond), r.lat.pct(.99).Round(10*time.Microsecond), r.bytes, r.datagrams, r.errs, r.retrans)
	}
}

// udpRelay forwards datagrams between clients and a UDP server and counts them.
type udpRelay struct {
	pc        net.PacketConn
	target    *net.UDPAddr
	bytes     atomic.Int64
	datagrams atomic.Int64
	mu        sync.Mutex
	up        map[string]*net.UDPConn
	wg        sync.WaitGroup
}

func newUDPRelay(target string) (*udpRelay, error) {
	ta, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		return nil, err
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &udpRelay{pc: pc, target: ta, up: map[string]*net.UDPConn{}}
	r.wg.Add(1)
	go r.loop()
	return r, nil
}

func (r *udpRelay) addr() string { return r.pc.LocalAddr().String() }

func (r *udpRelay) loop() {
	defer r.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		n, from, err := r.pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		r.bytes.Add(int64(n))
		r.datagrams.Add(1)
		r.mu.Lock()
		up := r.up[from.String()]
		if up == nil {
			up, err = net.DialUDP("udp", nil, r.target)
			if err != nil {
				r.mu.Unlock()
				continue
			}
			r.up[from.String()] = up
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				b := make([]byte, 64<<10)
				for {
					m, err := up.Read(b)
					if err != nil {
						if errors.Is(err, net.ErrClosed) {
							return
						}
						continue
					}
					r.bytes.Add(int64(m))
					r.datagrams.Add(1)
					_, _ = r.pc.WriteTo(b[:m], from)
				}
			}()
		}
		r.mu.Unlock()
		_, _ = up.Write(buf[:n])
	}
}

func (r *udpRelay) close() {
	r.pc.Close()
	r.mu.Lock()
	for _, u := range r.up {
		u.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// startBenchAS starts an ACE authorization server for n devices (one registered client and
// OSCORE context each) and returns its address, the token key file for the resource server and
// the devices' contexts with the AS.
func startBenchAS(ctx context.Context, dir string, n int) (string, string, []*oscore.Context, error) {
	adir := filepath.Join(dir, "as")
	if err := os.MkdirAll(adir, 0o700); err != nil {
		return "", "", nil, err
	}
	key := make([]byte, 16)
	if _, err := rand.Read(key); err != nil {
		return "", "", nil, err
	}
	keyFile := filepath.Join(adir, "rs.key")
	if err := os.WriteFile(keyFile, fmt.Appendf(nil, "%x\n", key), 0o600); err != nil {
		return "", "", nil, err
	}
	cfg := server.ASConfig{Listen: "127.0.0.1:0", Name: "bench-as", Lifetime: time.Hour,
		Audiences: []server.ASAudienceCfg{{Name: "bench-rs", KID: "01", Alg: 10, KeyFile: keyFile}}}
	ctxs := make([]*oscore.Context, n)
	for i := range n {
		secret := make([]byte, 16)
		if _, err := rand.Read(secret); err != nil {
			return "", "", nil, err
		}
		cid := []byte{byte((i + 1) >> 8), byte(i + 1)}
		f := filepath.Join(adir, fmt.Sprintf("client-%05d.yaml", i))
		y := fmt.Sprintf("name: dev-%05d\nmaster_secret: %x\nsender_id: \"\"\nrecipient_id: %x\n", i, secret, cid)
		if err := os.WriteFile(f, []byte(y), 0o600); err != nil {
			return "", "", nil, err
		}
		cfg.Clients = append(cfg.Clients, server.ASClientCfg{Name: fmt.Sprintf("dev-%05d", i), Scope: "est",
			Audiences: []string{"bench-rs"}, OSCOREContext: f})
		c, err := oscore.NewContext(oscore.Params{MasterSecret: secret, SenderID: cid, RecipientID: []byte{}})
		if err != nil {
			return "", "", nil, err
		}
		ctxs[i] = c
	}
	as, err := server.StartAS(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return "", "", nil, err
	}
	go func() {
		<-ctx.Done()
		as.Close()
	}()
	return as.Addr().String(), keyFile, ctxs, nil
}

// syncBenchAS runs one exchange per device context with the AS (its replay window starts
// unsynchronized: Echo, RFC 8613 Appendix B.1.2), asking for a token it throws away.
func syncBenchAS(ctx context.Context, addr string, ctxs []*oscore.Context) error {
	for _, oc := range ctxs {
		c, err := coap.Dial(ctx, "coap://"+addr, coap.ClientOptions{Layer: oscorelayer.NewClient(oc)})
		if err != nil {
			return err
		}
		_, err = c.Do(ctx, &coap.ClientRequest{Method: codes.POST, Path: "/token",
			Payload: (&ace.TokenRequest{Audience: "bench-rs", Scope: "est"}).Marshal()})
		c.Close()
		if err != nil {
			return fmt.Errorf("ace warm-up: %w", err)
		}
	}
	return nil
}
