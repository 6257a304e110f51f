package oscorelayer

import (
	"crypto/rand"
	"encoding/binary"
	"runtime"
	"testing"

	"coapca/oscore"
)

func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkOSCOREContextMemory reports the heap one OSCORE security context costs the server
// layer (B/context): n contexts (AES-CCM-16-64-128, replay window 32, in-memory sequence
// numbers) derived and installed as an EDHOC handshake installs them. Run with -benchtime=1x.
func BenchmarkOSCOREContextMemory(b *testing.B) {
	const n = 10000
	for b.Loop() {
		layer := NewServer(ServerConfig{MaxContexts: 2 * n})
		before := liveHeap()
		for i := range n {
			secret := make([]byte, 16)
			_, _ = rand.Read(secret)
			rid := binary.BigEndian.AppendUint32(nil, uint32(i))
			c, err := oscore.NewContext(oscore.Params{MasterSecret: secret, SenderID: []byte{}, RecipientID: rid})
			if err != nil {
				b.Fatal(err)
			}
			layer.mu.Lock()
			layer.addDerivedLocked(c, Identity{}, layer.cfg.Now())
			layer.mu.Unlock()
		}
		after := liveHeap()
		if _, ctxs := layer.Stats(); ctxs != n {
			b.Fatalf("%d contexts held, want %d", ctxs, n)
		}
		b.ReportMetric((float64(after)-float64(before))/n, "B/context")
		runtime.KeepAlive(layer)
	}
}
