package coap

import (
	"slices"
	"sync"
	"time"
)

// workers runs request handlers on goroutines that outlive one request. A goroutine starts
// with a small stack, and a handler that parses a CSR (encoding/asn1's recursive, reflective
// parser) or signs grows it several times, copying it each time: in a server CPU profile of
// `coapca bench est` (8 devices re-enrolling at once) runtime.newstack took 4.1 % of the
// server's CPU (1.4 % with workers), most of it under x509.ParseCertificateRequest. A worker
// keeps its grown stack from one request to the next (until the garbage collector shrinks the
// stack of an idle one).
//
// The idle workers are a stack: the most recently idle one takes the next request, so a steady
// load keeps as many workers as it has requests in flight and the others, left over from a
// burst, end after idleFor without work.
type workers struct {
	idleFor time.Duration
	mu      sync.Mutex
	idle    []*worker // most recently idle last
	closed  bool
}

type worker struct {
	next chan func() // buffered (1): run never blocks on a worker it took from idle
}

// run runs f on an idle worker, or on a new one when none is idle or the pool is closed (a
// handler admitted just before Close still runs).
func (p *workers) run(f func()) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 && !p.closed {
		w := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		w.next <- f
		return
	}
	p.mu.Unlock()
	go p.work(&worker{next: make(chan func(), 1)}, f)
}

// work runs f, then whatever run hands it, until it has been idle for idleFor or the pool
// is closed.
func (p *workers) work(w *worker, f func()) {
	var t *time.Timer
	for {
		f()
		f = nil // not kept alive while idle
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return
		}
		p.idle = append(p.idle, w)
		p.mu.Unlock()
		if t == nil {
			t = time.NewTimer(p.idleFor)
		} else {
			t.Reset(p.idleFor)
		}
		var ok bool
		select {
		case f, ok = <-w.next:
			if !ok { // closed
				return
			}
			continue
		case <-t.C:
		}
		p.mu.Lock()
		i := slices.Index(p.idle, w)
		if i >= 0 {
			p.idle = slices.Delete(p.idle, i, i+1)
		}
		p.mu.Unlock()
		if i >= 0 {
			return
		}
		// run took this worker from idle as the timer fired, and its function is on the way,
		// or close took it and closed next.
		if f, ok = <-w.next; !ok {
			return
		}
	}
}

// close ends the idle workers; busy ones end when their handler returns.
func (p *workers) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, w := range p.idle {
		close(w.next)
	}
	p.idle = nil
}
