package authority

import (
	"crypto/x509"
	"math/big"
	"testing"
	"time"
)

func TestChainCache(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	cert := func(serial int64, notAfter time.Time) *x509.Certificate {
		return &x509.Certificate{Raw: big.NewInt(serial).Bytes(), SerialNumber: big.NewInt(serial), NotAfter: notAfter}
	}
	far := now.Add(24 * time.Hour)
	leaf, root := cert(1, far), cert(2, far)
	soonLeaf := cert(3, now.Add(time.Minute))
	tests := []struct {
		name          string
		chain         []*x509.Certificate
		leafMayExpire bool
		at            time.Time
		hit           bool
	}{
		{"fresh entry", []*x509.Certificate{leaf, root}, false, now.Add(time.Second), true},
		{"past the TTL", []*x509.Certificate{leaf, root}, false, now.Add(chainCacheTTL), false},
		{"past the leaf's notAfter", []*x509.Certificate{soonLeaf, root}, false, now.Add(2 * time.Minute), false},
		{"before the leaf's notAfter", []*x509.Certificate{soonLeaf, root}, false, now.Add(30 * time.Second), true},
		{"expired leaf allowed by its store", []*x509.Certificate{soonLeaf, root}, true, now.Add(2 * time.Minute), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c chainCache
			c.put(tt.chain, "demo", tt.chain, tt.leafMayExpire, now)
			e, ok := c.get(tt.chain, tt.at)
			if ok != tt.hit {
				t.Fatalf("hit = %v, want %v", ok, tt.hit)
			}
			if ok && (e.source != "demo" || len(e.chain) != 2) {
				t.Fatalf("entry %+v", e)
			}
			if _, ok := c.get([]*x509.Certificate{tt.chain[0]}, now); ok {
				t.Fatal("a different chain (leaf alone) hit the entry")
			}
		})
	}

	var c chainCache
	for i := range chainCacheSize + 10 {
		ch := []*x509.Certificate{cert(int64(1000+i), far)}
		c.put(ch, "demo", ch, false, now)
	}
	if len(c.entries) != chainCacheSize || len(c.order) != chainCacheSize {
		t.Fatalf("cache holds %d entries (%d in order), want the cap %d", len(c.entries), len(c.order), chainCacheSize)
	}
	if _, ok := c.get([]*x509.Certificate{cert(1000, far)}, now); ok {
		t.Fatal("the oldest entry survived eviction")
	}
	if _, ok := c.get([]*x509.Certificate{cert(int64(1000+chainCacheSize+9), far)}, now); !ok {
		t.Fatal("the newest entry is missing")
	}
}
