package recv

import (
	"fmt"
	"net/netip"
	"time"
)

// EventKind is what changed about a node.
type EventKind uint8

// Event kinds, in the words --on-event passes to its program.
const (
	EventUp        EventKind = iota + 1 // first heard, or heard again after being down
	EventDown                           // silent for DownAfter
	EventReboot                         // a new boot id (the node is up: it just sent)
	EventForgotten                      // silent for ForgetAfter: its number is free again
)

var eventNames = [...]string{"", "up", "down", "reboot", "forgotten"}

func (k EventKind) String() string {
	if int(k) < len(eventNames) && k != 0 {
		return eventNames[k]
	}
	return fmt.Sprintf("event(%d)", k)
}

// Event is one change of a node, as the table decided it.
type Event struct {
	Time time.Time
	Node int
	Addr netip.AddrPort // the address last heard as the node
	Kind EventKind
}

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
