package dtlsconn

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"net"
	"runtime/metrics"
	"testing"

	"github.com/pion/dtls/v3"
	pionelliptic "github.com/pion/dtls/v3/pkg/crypto/elliptic"
	"github.com/pion/transport/v5/netctx"
)

// pion's record layer writes a session's datagrams through netctx; sessionPC lets it write
// without a goroutine watching the write's context.
var _ netctx.NonBlockWritePacketConn = (*sessionPC)(nil)

// Full handshakes (ECDHE-ECDSA P-256, mutual certificates, CCM_8, EMS), one
// at a time, through our Listener and through raw pion (dtls.ListenWithOptions +
// dtls.DialWithOptions) in the same run. Compare with the ECDSA benchmarks below.
func BenchmarkHandshake(b *testing.B) {
	p := testPKI(b)
	verify := poolVerifier(p.pool, x509.ExtKeyUsageClientAuth)
	pionServer := func() []dtls.ServerOption {
		return []dtls.ServerOption{
			dtls.WithCertificates(p.server),
			dtls.WithCipherSuites(dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8),
			dtls.WithExtendedMasterSecret(dtls.RequireExtendedMasterSecret),
			dtls.WithEllipticCurves(pionelliptic.P256),
			dtls.WithClientAuth(dtls.RequireAnyClientCert),
			dtls.WithLoggerFactory(quietLoggerFactory()),
			dtls.WithVerifyPeerCertificate(func(raw [][]byte, _ [][]*x509.Certificate) error {
				_, err := verify(raw)
				return err
			}),
		}
	}
	pionClient := func() []dtls.ClientOption {
		return []dtls.ClientOption{
			dtls.WithCertificates(p.client),
			dtls.WithRootCAs(p.pool),
			dtls.WithServerName("localhost"),
			dtls.WithCipherSuites(dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8),
			dtls.WithExtendedMasterSecret(dtls.RequireExtendedMasterSecret),
			dtls.WithEllipticCurves(pionelliptic.P256),
			dtls.WithLoggerFactory(quietLoggerFactory()),
		}
	}
	pionDial := func(b *testing.B, addr *net.UDPAddr) {
		c, err := dtls.DialWithOptions("udp", addr, pionClient()...)
		if err == nil {
			err = c.Handshake()
		}
		if err != nil {
			b.Error(err)
			return
		}
		_ = c.Close()
	}
	ourListener := func(b *testing.B) *Listener {
		cfg := serverConfig(p)
		cfg.HandshakesPerSourcePerSecond = -1
		l := listen(b, cfg)
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func() { // until the client's close_notify
					_, _ = c.Read(make([]byte, 1500))
					_ = c.Close()
				}()
			}
		}()
		return l
	}
	b.Run("dtlsconn-listener+dtlsconn-dial", func(b *testing.B) {
		l := ourListener(b)
		cfg := clientConfig(p)
		b.ResetTimer()
		for b.Loop() {
			c, err := Dial(context.Background(), "udp", l.Addr().String(), cfg)
			if err != nil {
				b.Fatal(err)
			}
			_ = c.Close()
		}
	})
	b.Run("dtlsconn-listener+pion-dial", func(b *testing.B) {
		l := ourListener(b)
		addr := l.Addr().(*net.UDPAddr)
		b.ResetTimer()
		for b.Loop() {
			pionDial(b, addr)
		}
	})
	pionListener := func(b *testing.B) net.Listener {
		ln, err := dtls.ListenWithOptions("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, pionServer()...)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					if dc, ok := c.(*dtls.Conn); ok {
						_ = dc.Handshake()
					}
					_, _ = c.Read(make([]byte, 1500)) // until the client's close_notify
					_ = c.Close()
				}()
			}
		}()
		return ln
	}
	b.Run("pion-listen+pion-dial", func(b *testing.B) {
		addr := pionListener(b).Addr().(*net.UDPAddr)
		b.ResetTimer()
		for b.Loop() {
			pionDial(b, addr)
		}
	})
	// The same pion server with our client: the difference to pion-listen+pion-dial is what
	// dtlsconn.Dial adds on the client side (transcript for tls-unique, Conn set-up).
	b.Run("pion-listen+dtlsconn-dial", func(b *testing.B) {
		addr := pionListener(b).Addr().String()
		cfg := clientConfig(p)
		b.ResetTimer()
		for b.Loop() {
			c, err := Dial(context.Background(), "udp", addr, cfg)
			if err != nil {
				b.Fatal(err)
			}
			_ = c.Close()
		}
	})
	// 4 concurrent clients per CPU.
	b.Run("parallel/dtlsconn-listener+pion-dial", func(b *testing.B) {
		l := ourListener(b)
		b.Cleanup(func() { b.Logf("listener stats %+v", l.Stats()) })
		addr := l.Addr().(*net.UDPAddr)
		b.SetParallelism(4)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				pionDial(b, addr)
			}
		})
	})
	b.Run("parallel/pion-listen+pion-dial", func(b *testing.B) {
		addr := pionListener(b).Addr().(*net.UDPAddr)
		b.SetParallelism(4)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				pionDial(b, addr)
			}
		})
	})
}

func BenchmarkECDSAP256(b *testing.B) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	h := sha256.Sum256([]byte("message"))
	sig, _ := ecdsa.SignASN1(rand.Reader, k, h[:])
	b.Run("sign", func(b *testing.B) {
		for b.Loop() {
			if _, err := ecdsa.SignASN1(rand.Reader, k, h[:]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("verify", func(b *testing.B) {
		for b.Loop() {
			if !ecdsa.VerifyASN1(&k.PublicKey, h[:], sig) {
				b.Fatal("verify")
			}
		}
	})
}

// BenchmarkRecordRoundTrip: one small record from a dtlsconn client to a Listener's session and
// its echo back, over an established session (the path of every CoAP request after the
// handshake: demultiplexer, virtual socket, pion's record layer, both directions). allocs/op
// and goroutines/op (goroutines started) count both ends.
func BenchmarkRecordRoundTrip(b *testing.B) {
	p := testPKI(b)
	cfg := serverConfig(p)
	cfg.ParkAfter = -1
	l := listen(b, cfg)
	serve(b, l)
	c, err := Dial(context.Background(), "udp", l.Addr().String(), clientConfig(p))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close() })
	req := []byte{0x40, 0x01, 0x12, 0x34, 0xb3, 'e', 's', 't'}
	buf := make([]byte, 2048)
	created := []metrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
	metrics.Read(created)
	g0 := created[0].Value.Uint64()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		if _, err := c.Read(buf); err != nil {
			b.Fatal(err)
		}
	}
	metrics.Read(created)
	b.ReportMetric(float64(created[0].Value.Uint64()-g0)/float64(b.N), "goroutines/op")
}
