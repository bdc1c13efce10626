package shm

// recvstats publishes its own counters in the table header's bytes
// 176-255, so readers (beostat, beostatus' /metrics) show them without
// talking to it. Layout in docs/shm.md ("The header"); keep the two in
// step.

// Header offsets of the writer's counters, all atomic.
const (
	hReceived  = 176 // uint64: datagrams read from the socket
	hStored    = 184 // uint64: samples stored
	hNodesUp   = 192 // uint32: nodes up by the writer's table
	hNodesDown = 196 // uint32: nodes silent past the down-after time, not yet forgotten
	hDrops     = 200 // uint32 × len(DropReasons): drops by reason, modulo 2^32
	hOverflow  = 252 // uint32: events --on-event's queue had no room for, modulo 2^32
)

// DropReasons names the drop counters of the header in their order
// (kernel drops are KernelDrops, a uint64 of their own).
var DropReasons = [...]string{"version", "truncated", "oversize", "malformed", "auth", "replay",
	"duplicate", "stale", "incomplete", "node-range", "admission", "pinned", "other"}

// Counters are the writer's own counters since it started (a new writer
// starts them at 0). Each field is read atomically, the set is not one
// snapshot. Drops and EventOverflow wrap at 2^32, which a Prometheus
// rate reads as a counter reset.
type Counters struct {
	Received      uint64
	Stored        uint64
	NodesUp       int
	NodesDown     int
	Drops         [len(DropReasons)]uint64 // by DropReasons
	EventOverflow uint64
}

// SetCounters publishes the writer's counters in the header.
func (w *Writer) SetCounters(c Counters) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		return
	}
	store64(w.m, hReceived, c.Received)
	store64(w.m, hStored, c.Stored)
	store32(w.m, hNodesUp, uint32(max(c.NodesUp, 0)))
	store32(w.m, hNodesDown, uint32(max(c.NodesDown, 0)))
	for i, d := range c.Drops {
		store32(w.m, hDrops+4*i, uint32(d))
	}
	store32(w.m, hOverflow, uint32(c.EventOverflow))
}

// counters reads the writer's counters from the header of m.
func counters(m []byte) Counters {
	c := Counters{Received: load64(m, hReceived), Stored: load64(m, hStored),
		NodesUp: int(min(load32(m, hNodesUp), MaxNodes)), NodesDown: int(min(load32(m, hNodesDown), MaxNodes)),
		EventOverflow: uint64(load32(m, hOverflow))}
	for i := range c.Drops {
		c.Drops[i] = uint64(load32(m, hDrops+4*i))
	}
	return c
}

// resetCounters zeroes the counters for a new writer.
func resetCounters(m []byte) {
	for off := hReceived; off < headerSize; off += 4 {
		store32(m, off, 0)
	}
}

// copyCounters carries the counters into a re-laid-out table.
func copyCounters(dst, src []byte) {
	for off := hReceived; off < headerSize; off += 4 {
		store32(dst, off, load32(src, off))
	}
}
