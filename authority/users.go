package authority

import (
	"crypto/sha256"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// HTTP Basic users (RFC 7030 §3.2.3): passwords are kept only as bcrypt hashes. A bcrypt
// comparison costs tens of milliseconds by design, so a successful one is remembered for a
// short while (keyed by a hash of name and password, never the password itself): a client that
// enrolls and then polls a pending request does not pay it every time.

const (
	passwordCacheTTL  = 5 * time.Minute
	passwordCacheSize = 1024
)

type passwordCache struct {
	mu      sync.Mutex
	entries map[[sha256.Size]byte]time.Time
}

func passwordKey(user, password string) [sha256.Size]byte {
	h := sha256.New()
	h.Write([]byte(user))
	h.Write([]byte{0})
	h.Write([]byte(password))
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

// checkPassword reports whether password is user's.
func (a *Authority) checkPassword(user, password string) bool {
	hash, ok := a.users[user]
	if !ok {
		// Compare anyway, so that an unknown name costs what a known one does.
		_ = bcrypt.CompareHashAndPassword(dummyHash, []byte(password))
		return false
	}
	k := passwordKey(user, password)
	now := a.now()
	c := &a.passwords
	c.mu.Lock()
	exp, hit := c.entries[k]
	c.mu.Unlock()
	if hit && now.Before(exp) {
		return true
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(password)) != nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil || len(c.entries) >= passwordCacheSize {
		c.entries = map[[sha256.Size]byte]time.Time{}
	}
	c.entries[k] = now.Add(passwordCacheTTL)
	return true
}

// dummyHash is a bcrypt hash of a random password at the default cost.
var dummyHash = []byte("$2a$10$Gr85XCyQJrrHogYh9og9cuyKyMHXC8cJOFxnHwgyaZRJweVul9L8i")

// HashPassword returns the bcrypt hash of password for Config.Users.
func HashPassword(password string) (string, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	return string(h), err
}
