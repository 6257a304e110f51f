package authority

import (
	"context"
	"errors"
	"strings"

	"coapca/errs"
	"coapca/store"
)

// EventKind says what an Event reports.
type EventKind int

const (
	// EventResync: events may have been missed (the notification connection was lost); look
	// at the store again.
	EventResync EventKind = iota
	// EventRevoked: a certificate was revoked, by any process using the store.
	EventRevoked
	// EventAccepted: a certificate was accepted by its requester (CMP certConf or implicit
	// confirmation), on the server instance Origin.
	EventAccepted
)

// Event is something that happened on the store, seen by every server instance that shares it.
type Event struct {
	Kind   EventKind
	Serial string // FormatSerial
	Label  string // EventAccepted: the profile label
	Origin string // EventAccepted: the instance that announced it (PublishAccepted)
}

// ErrNoEvents: the store cannot deliver events to other processes (SQLite); poll instead.
var ErrNoEvents = errors.New("authority: the store delivers no events to other processes")

const eventAccepted = "accepted"

// Events calls fn with every event of the store (revocations by any process, acceptances
// published by any instance), from one goroutine, until ctx ends. It returns once events are
// delivered, or ErrNoEvents when the store cannot (then the caller polls). Malformed events
// are dropped.
func (a *Authority) Events(ctx context.Context, fn func(Event)) error {
	n, ok := a.store.(store.Notifier)
	if !ok {
		return ErrNoEvents
	}
	err := n.Listen(ctx, func(raw string) {
		e, ok := parseEvent(raw)
		if !ok {
			a.log.Warn("store event dropped: malformed", "event", raw)
			return
		}
		fn(e)
	})
	if err != nil {
		return errs.Wrap(errs.Internal, err, "cannot listen for store events")
	}
	return nil
}

// parseEvent reads "" (resync), "revoked SERIAL" and "accepted ORIGIN SERIAL LABEL".
func parseEvent(raw string) (Event, bool) {
	if raw == "" {
		return Event{Kind: EventResync}, true
	}
	f := strings.SplitN(raw, " ", 4)
	var e Event
	switch {
	case f[0] == store.EventRevoked && len(f) == 2:
		e = Event{Kind: EventRevoked, Serial: f[1]}
	case f[0] == eventAccepted && len(f) == 4 && f[1] != "":
		e = Event{Kind: EventAccepted, Origin: f[1], Serial: f[2], Label: f[3]}
	default:
		return Event{}, false
	}
	sn, err := store.NormalizeSerial(e.Serial)
	if err != nil || sn != e.Serial {
		return Event{}, false
	}
	return e, true
}

// PublishAccepted tells every instance that the certificate serial of profile label was
// accepted, announced by instance origin (no spaces). ErrNoEvents when the store cannot.
func (a *Authority) PublishAccepted(ctx context.Context, origin, serial, label string) error {
	n, ok := a.store.(store.Notifier)
	if !ok {
		return ErrNoEvents
	}
	if origin == "" || strings.ContainsAny(origin, " ") {
		return errs.New(errs.Internal, "bad instance name %q", origin)
	}
	if err := n.Notify(ctx, eventAccepted+" "+origin+" "+serial+" "+label); err != nil {
		return errs.Wrap(errs.Internal, err, "cannot publish the acceptance of %s", serial)
	}
	return nil
}
