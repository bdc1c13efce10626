package recv

import (
	"fmt"
	"strings"
)

// Reason is why a packet was not stored.
type Reason uint8

// Drop reasons. DropNone means the packet was used.
const (
	DropNone       Reason = iota
	DropVersion           // unknown protocol version
	DropTruncated         // shorter than its header says
	DropOversize          // larger than any valid datagram, or a sample larger than the table holds
	DropMalformed         // fields that do not add up
	DropAuth              // missing or wrong HMAC, or signed when we have no key
	DropReplay            // a sequence number already seen (authenticated replay)
	DropDuplicate         // a part already received
	DropStale             // older than what the table holds
	DropIncomplete        // parts of a sample that never completed
	DropNodeRange         // node number beyond the table's limit, or table full
	DropAdmission         // a new sender beyond the admission rate
	DropPinned            // a node number the node map pins to another address
	DropKernel            // dropped by the kernel: the socket's receive buffer was full
	DropOther             // anything else the decoder rejects
	numReasons
)

var reasonNames = [numReasons]string{
	"none", "version", "truncated", "oversize", "malformed", "auth", "replay",
	"duplicate", "stale", "incomplete", "node-range", "admission", "pinned", "kernel", "other",
}

func (r Reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", r)
}

// Drops counts dropped packets by reason.
type Drops [numReasons]uint64

// Total is the number of drops of every reason.
func (d *Drops) Total() uint64 {
	var n uint64
	for r := DropNone + 1; r < numReasons; r++ {
		n += d[r]
	}
	return n
}

// String is "auth=3 stale=1", or "none".
func (d *Drops) String() string {
	var b strings.Builder
	for r := DropNone + 1; r < numReasons; r++ {
		if d[r] != 0 {
			if b.Len() > 0 {
				b.WriteByte(' ')
			}
			fmt.Fprintf(&b, "%s=%d", r, d[r])
		}
	}
	if b.Len() == 0 {
		return "none"
	}
	return b.String()
}
