package coap

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"coapca/coap/dtlsconn"

	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// signRate measures raw ECDSA P-256 signatures per second (all cores) for a
// short while, as the yardstick the request rates are compared with.
func signRate() float64 {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	h := sha256.Sum256([]byte("x"))
	var n atomic.Int64
	deadline := time.Now().Add(300 * time.Millisecond)
	done := make(chan struct{})
	procs := runtime.GOMAXPROCS(0)
	start := time.Now()
	for range procs {
		go func() {
			for time.Now().Before(deadline) {
				_, _ = ecdsa.SignASN1(rand.Reader, k, h[:])
				n.Add(1)
			}
			done <- struct{}{}
		}()
	}
	for range procs {
		<-done
	}
	return float64(n.Load()) / time.Since(start).Seconds()
}

func BenchmarkECDSAP256Sign(b *testing.B) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	h := sha256.Sum256([]byte("x"))
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_, _ = ecdsa.SignASN1(rand.Reader, k, h[:])
		}
	})
}

// benchGET runs small GETs from 8 concurrent clients and reports requests/s
// and the ratio to the ECDSA sign rate measured in the same run.
func benchGET(b *testing.B, clients []*Client) {
	sr := signRate()
	var idx atomic.Int64
	ctx := context.Background()
	req := &ClientRequest{Method: codes.GET, Path: "/small"}
	b.SetParallelism((len(clients) + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		c := clients[int(idx.Add(1)-1)%len(clients)]
		for pb.Next() {
			if r, err := c.Do(ctx, req); err != nil || r.Code != codes.Content {
				b.Errorf("GET: %v", err)
				return
			}
		}
	})
	rps := float64(b.N) / time.Since(start).Seconds()
	b.ReportMetric(rps, "req/s")
	b.ReportMetric(sr, "signs/s")
	b.ReportMetric(rps/sr, "req/sign")
}

func BenchmarkGETUDP8(b *testing.B) {
	ts := startTestServer(b, Config{})
	clients := make([]*Client, 8)
	for i := range clients {
		clients[i] = dialTest(b, ts, 0)
	}
	benchGET(b, clients)
}

func BenchmarkGETDTLS8(b *testing.B) {
	p := newTestPKI(b)
	ts, _ := startDTLSServer(b, p, Config{})
	clients := make([]*Client, 8)
	for i := range clients {
		clients[i] = dialDTLSTest(b, p, ts, 0)
	}
	benchGET(b, clients)
}

// BenchmarkDialRequestClose is a full enrollment's session lifecycle against an in-process
// coaps:// server: Dial (DTLS handshake), one small POST, Close (close_notify), one session
// at a time. "handshake-only" is the same DTLS handshake and close without the CoAP client
// and request: the difference is what a session costs beyond its handshake.
func BenchmarkDialRequestClose(b *testing.B) {
	p := newTestPKI(b)
	ts, _ := startDTLSServer(b, p, Config{})
	ctx := context.Background()
	cfg := DTLSClientConfig{Certificates: []tls.Certificate{p.client}, RootCAs: p.pool}
	b.Run("handshake-only", func(b *testing.B) {
		b.ReportAllocs()
		defer reportCPU(b)()
		for b.Loop() {
			c, err := dtlsconn.Dial(ctx, "udp", ts.addr.String(), cfg)
			if err != nil {
				b.Fatal(err)
			}
			_ = c.Close()
		}
	})
	b.Run("dial+post+close", func(b *testing.B) {
		b.ReportAllocs()
		req := &ClientRequest{Method: codes.POST, Path: "/small", Payload: testBody(300, 0x33)}
		defer reportCPU(b)()
		for b.Loop() {
			c, err := Dial(ctx, "coaps://"+ts.addr.String(), ClientOptions{DTLS: &cfg})
			if err != nil {
				b.Fatal(err)
			}
			r, err := c.Do(ctx, req)
			if err != nil || r.Code != codes.Content {
				b.Fatalf("POST: %v %v", r, err)
			}
			_ = c.Close()
		}
	})
}

// reportCPU reports the process's CPU time (user + system, both ends of the session) per
// operation: with the client and the server in one process on a shared machine it moves much
// less than ns/op. Call as defer reportCPU(b)().
func reportCPU(b *testing.B) func() {
	cpu := func() time.Duration {
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	c0 := cpu()
	return func() {
		if b.N > 0 {
			b.ReportMetric(float64((cpu()-c0).Microseconds())/float64(b.N), "cpu-µs/op")
		}
	}
}
