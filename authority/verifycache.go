package authority

import (
	"crypto/sha256"
	"crypto/x509"
	"sync"
	"time"
)

// chainCache remembers chains that verified against a trust store or this CA, so that a device
// whose chain was verified in the DTLS handshake (VerifyClient) is not verified again, signature
// by signature, when its request reaches Issue a moment later. An entry lives at most
// chainCacheTTL and never past the notAfter of a certificate in the verified chain (the leaf's
// only counts when its store does not allow expired IDevIDs). Only the certificate-verification
// outcome is cached: revocation of certificates this CA issued is looked up in the store every
// time, before the cache is consulted.
type chainCache struct {
	mu      sync.Mutex
	entries map[[sha256.Size]byte]chainEntry
	order   [][sha256.Size]byte // insertion order, for eviction
}

type chainEntry struct {
	source  string
	chain   []*x509.Certificate
	expires time.Time
}

const (
	chainCacheTTL  = 5 * time.Minute
	chainCacheSize = 4096
)

func chainKey(chain []*x509.Certificate) [sha256.Size]byte {
	h := sha256.New()
	for _, c := range chain {
		var n [4]byte
		l := len(c.Raw)
		n[0], n[1], n[2], n[3] = byte(l>>24), byte(l>>16), byte(l>>8), byte(l)
		h.Write(n[:])
		h.Write(c.Raw)
	}
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

func (c *chainCache) get(chain []*x509.Certificate, now time.Time) (chainEntry, bool) {
	k := chainKey(chain)
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[k]
	if !ok || !now.Before(e.expires) {
		return chainEntry{}, false
	}
	return e, true
}

func (c *chainCache) put(presented []*x509.Certificate, source string, verified []*x509.Certificate, leafMayExpire bool, now time.Time) {
	exp := now.Add(chainCacheTTL)
	for i, v := range verified {
		if i == 0 && leafMayExpire {
			continue
		}
		if v.NotAfter.Before(exp) {
			exp = v.NotAfter
		}
	}
	if !now.Before(exp) {
		return
	}
	k := chainKey(presented)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = make(map[[sha256.Size]byte]chainEntry)
	}
	if _, ok := c.entries[k]; !ok {
		if len(c.order) >= chainCacheSize {
			delete(c.entries, c.order[0])
			c.order = c.order[1:]
		}
		c.order = append(c.order, k)
	}
	c.entries[k] = chainEntry{source: source, chain: verified, expires: exp}
}
