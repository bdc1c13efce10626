package recv

import (
	"net/netip"
	"time"

	"github.com/hoststat/hoststat/shm"
)

// EventKind is what changed about a node; Event is one change, as the
// table decided it. They are the events file's (shm), which publishes
// them to readers.
type (
	EventKind = shm.EventKind
	Event     = shm.Event
)

// Event kinds, in the words --on-event passes to its program.
const (
	EventUp        = shm.EventUp
	EventDown      = shm.EventDown
	EventReboot    = shm.EventReboot
	EventForgotten = shm.EventForgotten
)

// event records an event for Events to hand out. At most two per node
// per Receive and one per node per Expire, so the buffer stays within a
// small multiple of the nodes between two calls of Events.
func (t *Table) event(now time.Time, n int, addr netip.AddrPort, k EventKind) {
	t.events = append(t.events, Event{Time: now, Node: n, Addr: addr, Kind: k})
}

// Events returns the events decided since the last call, oldest first.
// The slice is reused by the next call.
func (t *Table) Events() []Event {
	ev := t.events
	t.events = t.events[:0]
	return ev
}
