package coap

import (
	"container/list"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// observer is one entry of the server's list of observers (RFC 7641 §4.1),
// keyed by client endpoint and token.
type observer struct {
	s     *session
	token []byte
	path  string
	query []string
	szx   uint8

	// sendMu serialises this observer's notifications from taking their Observe number to
	// handing them to the socket: a client drops a notification that arrives after one with a
	// newer number (RFC 7641 §3.4), so one overtaken between the two would be lost.
	sendMu sync.Mutex

	// guarded by Server.obsMu
	ip       netip.Addr
	allElem  *list.Element // in Server.obsAll; nil once removed
	ipElem   *list.Element // in Server.obsIP[ip]
	count    int
	lastCON  time.Time
	inFlight bool
	queued   *Response

	// guarded by session.mu
	lastNonMID uint16
	hasNonMID  bool
}

// ipOf returns the IP address of a peer address (zero when it has none).
func ipOf(a net.Addr) netip.Addr {
	switch v := a.(type) {
	case *net.UDPAddr:
		ap := v.AddrPort()
		return ap.Addr().Unmap()
	case nil:
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// register adds or replaces (RFC 7641 §4.1) the observation (sess, token) and
// returns the Observe value for the response. A new observation over MaxObserversPerIP or
// MaxObservers evicts the oldest one of the same address, or the oldest of all: the list of
// observers is bounded whoever fills it.
//
// The observer is returned with its sendMu held: the caller releases it once the registration
// response has been handed to the socket, so that no notification — an eviction's included —
// overtakes the response that starts the observation.
func (s *Server) register(sess *session, token []byte, path string, query []string, szx uint8) (uint32, *observer) {
	ip := ipOf(sess.peer.Addr)
	var evicted []*observer
	s.obsMu.Lock()
	sess.mu.Lock()
	old := sess.observers[string(token)]
	if old != nil {
		s.unlinkObserverLocked(old)
	}
	o := &observer{s: sess, token: append([]byte(nil), token...), path: path, query: query, szx: szx, lastCON: time.Now(), ip: ip}
	o.sendMu.Lock() // released by the caller after the registration response (serve)
	closed := sess.closed
	if !closed {
		if sess.observers == nil {
			sess.observers = map[string]*observer{}
		}
		sess.observers[string(token)] = o
	}
	sess.mu.Unlock()
	if !closed {
		if l := s.obsIP[ip]; l != nil && l.Len() >= s.ep.cfg.MaxObserversPerIP {
			evicted = append(evicted, l.Back().Value.(*observer))
			s.unlinkObserverLocked(evicted[len(evicted)-1])
		}
		if s.obsAll.Len() >= s.ep.cfg.MaxObservers {
			evicted = append(evicted, s.obsAll.Back().Value.(*observer))
			s.unlinkObserverLocked(evicted[len(evicted)-1])
		}
		set := s.observers[path]
		if set == nil {
			set = map[*observer]struct{}{}
			s.observers[path] = set
		}
		set[o] = struct{}{}
		o.allElem = s.obsAll.PushFront(o)
		l := s.obsIP[ip]
		if l == nil {
			l = list.New()
			s.obsIP[ip] = l
		}
		o.ipElem = l.PushFront(o)
	}
	s.obsMu.Unlock()
	for _, e := range evicted {
		s.evictObserver(e)
	}
	return s.obsSeq.Add(1) & 0xffffff, o
}

// unlinkObserverLocked takes o out of the server's lists (obsMu held); false when it was
// already out.
func (s *Server) unlinkObserverLocked(o *observer) bool {
	if o.allElem == nil {
		return false
	}
	if set := s.observers[o.path]; set != nil {
		delete(set, o)
		if len(set) == 0 {
			delete(s.observers, o.path)
		}
	}
	s.obsAll.Remove(o.allElem)
	o.allElem = nil
	if l := s.obsIP[o.ip]; l != nil {
		l.Remove(o.ipElem)
		if l.Len() == 0 {
			delete(s.obsIP, o.ip)
		}
	}
	o.ipElem = nil
	return true
}

// evictObserver ends an observation the server cannot keep: it leaves the session, and the
// client is told with a non-2.xx notification, which ends an observation (RFC 7641 §3.2).
//
// The notice waits for o's sendMu: an observation registered a moment ago is told only after
// its registration response went out (register), and no notification of it is in between.
func (s *Server) evictObserver(o *observer) {
	o.sendMu.Lock()
	defer o.sendMu.Unlock()
	sess := o.s
	sess.mu.Lock()
	if sess.observers[string(o.token)] == o {
		delete(sess.observers, string(o.token))
	}
	mid := sess.allocMIDLocked()
	sess.mu.Unlock()
	s.ep.stats.obsEvicted.Add(1)
	m := &message.Message{Type: message.NonConfirmable, Code: codes.ServiceUnavailable, MessageID: int32(mid), Token: o.token}
	m.Options = addUint(make(message.Options, 0, 1), message.MaxAge, 30)
	s.ep.stats.byCode[m.Code].Add(1)
	sess.send(encode(m))
}

func (s *Server) deregister(sess *session, token []byte) {
	sess.mu.Lock()
	o := sess.observers[string(token)]
	sess.mu.Unlock()
	if o != nil {
		s.removeObserver(sess, o)
	}
}

func (s *Server) removeObserver(sess *session, o *observer) {
	s.obsMu.Lock()
	s.unlinkObserverLocked(o)
	s.obsMu.Unlock()
	sess.mu.Lock()
	if sess.observers[string(o.token)] == o {
		delete(sess.observers, string(o.token))
	}
	sess.mu.Unlock()
}

// Observers returns how many observers path has.
func (s *Server) Observers(path string) int {
	s.obsMu.Lock()
	defer s.obsMu.Unlock()
	return len(s.observers[cleanPath(path)])
}

// Notify sends r as a notification (RFC 7641 §4.2) to every observer of path.
// Every ObserveConEvery-th notification to an observer, and any after 24 h
// without one, is confirmable (§4.5); an observer that does not acknowledge it
// (or answers Reset) is removed.
func (s *Server) Notify(path string, r *Response) {
	path = cleanPath(path)
	s.obsMu.Lock()
	list := make([]*observer, 0, len(s.observers[path]))
	for o := range s.observers[path] {
		list = append(list, o)
	}
	s.obsMu.Unlock()
	for _, o := range list {
		s.notifyOne(o, r)
	}
}

func (s *Server) notifyOne(o *observer, r *Response) {
	o.sendMu.Lock()
	defer o.sendMu.Unlock()
	now := time.Now()
	s.obsMu.Lock()
	if o.inFlight {
		o.queued = r // §4.5.2: only the newest state matters
		s.obsMu.Unlock()
		return
	}
	o.count++
	con := o.count%s.ep.cfg.ObserveConEvery == 0 || now.Sub(o.lastCON) > 24*time.Hour || r.Code>>5 != 2
	if con {
		o.inFlight = true
		o.lastCON = now
	}
	s.obsMu.Unlock()

	seq := s.obsSeq.Add(1) & 0xffffff
	key2 := strconv.Itoa(1) + "\x00" + o.path + "\x00" + strings.Join(o.query, "&")
	m := o.s.buildResponse(r, key2, block{SZX: o.szx}, nil, int64(seq))
	m.Token = o.token
	s.ep.stats.notifications.Add(1)
	if r.Code>>5 != 2 {
		// §3.2/§4.2: a non-2.xx notification ends the observation.
		s.removeObserver(o.s, o)
	}
	if con {
		_, err := o.s.startCON(m, func(_ *message.Message, err error) {
			if err != nil {
				s.removeObserver(o.s, o)
				return
			}
			s.obsMu.Lock()
			o.inFlight = false
			q := o.queued
			o.queued = nil
			s.obsMu.Unlock()
			if q != nil {
				go s.notifyOne(o, q)
			}
		})
		if err != nil {
			s.removeObserver(o.s, o)
		}
		return
	}
	m.Type = message.NonConfirmable
	o.s.mu.Lock()
	mid := o.s.allocMIDLocked()
	o.lastNonMID, o.hasNonMID = mid, true
	o.s.mu.Unlock()
	m.MessageID = int32(mid)
	o.s.send(encode(m))
}
