package oscorelayer

import (
	"bytes"
	"container/list"
	"crypto/sha256"
	"crypto/x509"
	"sync"

	"coapca/edhoc"
)

// knownCreds indexes the X.509 chains of Initiators that completed EDHOC with their chain
// carried by value (x5chain), so that a later handshake may reference the certificate by x5t
// or kid instead of sending it again (RFC 9528 §3.5.3, RFC 9360 §2): constrained devices
// save hundreds of bytes in message_3. It maps a reference to raw DER only: every use goes
// through VerifyPeer again, so a certificate revoked or expired since is refused, and the
// index never outlives a trust decision. It is bounded (least recently used dropped).
type knownCreds struct {
	mu    sync.Mutex
	max   int
	order *list.List                // *knownCred, most recently used first
	byX5T map[[8]byte]*list.Element // SHA-256/64 of the end-entity certificate
	byKid map[string]*list.Element  // Subject Key Identifier of the end-entity certificate
	amb   map[string]bool           // kids seen on two different certificates: refused
}

type knownCred struct {
	chain [][]byte
	x5t   [8]byte
	kid   string
}

func newKnownCreds(max int) *knownCreds {
	return &knownCreds{max: max, order: list.New(), byX5T: map[[8]byte]*list.Element{},
		byKid: map[string]*list.Element{}, amb: map[string]bool{}}
}

// add remembers a chain (raw DER, leaf first) that was carried by value and accepted.
func (k *knownCreds) add(chain [][]byte) {
	if k == nil || k.max <= 0 || len(chain) == 0 {
		return
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return
	}
	sum := sha256.Sum256(chain[0])
	var x5t [8]byte
	copy(x5t[:], sum[:8])
	kc := &knownCred{x5t: x5t, kid: string(leaf.SubjectKeyId)}
	for _, c := range chain {
		kc.chain = append(kc.chain, bytes.Clone(c))
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if e := k.byX5T[x5t]; e != nil {
		k.removeLocked(e)
	}
	e := k.order.PushFront(kc)
	k.byX5T[x5t] = e
	if kc.kid != "" && !k.amb[kc.kid] {
		if old := k.byKid[kc.kid]; old != nil && old.Value.(*knownCred).x5t != x5t {
			// Two certificates claim the same key identifier: the reference is ambiguous.
			k.amb[kc.kid] = true
			delete(k.byKid, kc.kid)
		} else {
			k.byKid[kc.kid] = e
		}
	}
	for k.order.Len() > k.max {
		k.removeLocked(k.order.Back())
	}
	if len(k.amb) > k.max {
		clear(k.amb) // bounded too; an ambiguity forgotten is resolved again when seen
	}
}

func (k *knownCreds) removeLocked(e *list.Element) {
	kc := e.Value.(*knownCred)
	k.order.Remove(e)
	if k.byX5T[kc.x5t] == e {
		delete(k.byX5T, kc.x5t)
	}
	if kc.kid != "" && k.byKid[kc.kid] == e {
		delete(k.byKid, kc.kid)
	}
}

// lookup returns the chain an x5t (SHA-256/64 or SHA-256) or kid designates, or nil.
func (k *knownCreds) lookup(id *edhoc.IDCred) [][]byte {
	if k == nil {
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	var e *list.Element
	switch {
	case id.X5T != nil:
		if len(id.X5T.Hash) < 8 {
			return nil
		}
		e = k.byX5T[[8]byte(id.X5T.Hash[:8])]
		if e != nil && !id.MatchesCert(e.Value.(*knownCred).chain[0]) {
			return nil // another algorithm, or a full hash that differs beyond the prefix
		}
	case id.Kid != nil:
		e = k.byKid[string(id.Kid)]
	}
	if e == nil {
		return nil
	}
	k.order.MoveToFront(e)
	return e.Value.(*knownCred).chain
}
