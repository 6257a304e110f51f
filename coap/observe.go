package coap

import (
	"strconv"
	"strings"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
)

// observer is one entry of the server's list of observers (RFC 7641 §4.1),
// keyed by client endpoint and token.
type observer struct {
	s     *session
	token []byte
	path  string
	query []string
	szx   uint8

	// guarded by Server.obsMu
	count    int
	lastCON  time.Time
	inFlight bool
	queued   *Response

	// guarded by session.mu
	lastNonMID uint16
	hasNonMID  bool
}

// register adds or replaces (RFC 7641 §4.1) the observation (sess, token) and
// returns the Observe value for the response.
func (s *Server) register(sess *session, token []byte, path string, query []string, szx uint8) uint32 {
	s.obsMu.Lock()
	sess.mu.Lock()
	if old := sess.observers[string(token)]; old != nil {
		if set := s.observers[old.path]; set != nil {
			delete(set, old)
		}
	}
	o := &observer{s: sess, token: append([]byte(nil), token...), path: path, query: query, szx: szx, lastCON: time.Now()}
	closed := sess.closed
	if !closed {
		sess.observers[string(token)] = o
	}
	sess.mu.Unlock()
	if !closed {
		set := s.observers[path]
		if set == nil {
			set = map[*observer]struct{}{}
			s.observers[path] = set
		}
		set[o] = struct{}{}
	}
	s.obsMu.Unlock()
	return s.obsSeq.Add(1) & 0xffffff
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
	if set := s.observers[o.path]; set != nil {
		delete(set, o)
		if len(set) == 0 {
			delete(s.observers, o.path)
		}
	}
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
