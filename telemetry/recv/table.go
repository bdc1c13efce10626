package recv

import (
	"net/netip"
	"time"

	"github.com/hoststat/hoststat/shm"
	"github.com/hoststat/hoststat/telemetry/sample"
)

// MaxNodes bounds node numbers, so a forged packet cannot make the table
// grow without limit: the shared-memory table's own limit.
const MaxNodes = shm.MaxNodes

// NoNode is the node number of a sender that does not know its own.
const NoNode = -1

// Status is one complete, authenticated sample as it left the reassembler.
type Status struct {
	From    netip.AddrPort
	Unicast bool   // sent to our address rather than to the group
	Node    int    // NoNode: the master assigns one
	Epoch   uint64 // the sending process's start, since boot
	Seq     uint32 // sample number within the process
	Sample  *sample.Sample
}

// Update is what the table decided to store for one Status.
type Update struct {
	Node    int
	Addr    netip.AddrPort
	Seen    time.Time
	Sample  *sample.Sample
	Reboot  bool // boot id changed: rates and CPU percent must not span it
	Derived bool // the number was assigned here, not sent by the node
	Moved   bool // a different IP address now reports as this node
}

// Assignment is a node number and the address last heard as it, as a
// previous recvstats left them in the shared-memory table.
type Assignment = shm.Assignment

// Request says where to send an update request.
type Request struct {
	Multicast bool             // to the group on the interface
	Unicast   []netip.AddrPort // to each of these senders
}

// TableConfig tunes the node table. Zero values take the defaults.
type TableConfig struct {
	NodeMap   NodeMap
	Restored  []Assignment
	Multicast bool // a group is joined: requests may go by multicast

	// AssumedInterval stands for a node's send interval until two
	// packets have shown the real one.
	AssumedInterval time.Duration // default 1s, sendstats' default rate
	// MinOverdue is the least silence that makes a node overdue, however
	// fast it sends, so scheduling jitter does not trigger requests.
	MinOverdue time.Duration // default 500ms
	// RequestGap is the least time between two update requests.
	RequestGap time.Duration // default 1s
	// MaxBackoff caps the growing pause between requests on behalf of
	// one silent node, so a powered-off node costs one request a minute.
	MaxBackoff time.Duration // default 1m
	MaxNodes   int           // default MaxNodes
}

func (c *TableConfig) defaults() {
	if c.AssumedInterval <= 0 {
		c.AssumedInterval = time.Second
	}
	if c.MinOverdue <= 0 {
		c.MinOverdue = 500 * time.Millisecond
	}
	if c.RequestGap <= 0 {
		c.RequestGap = time.Second
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = time.Minute
	}
	if c.MaxNodes <= 0 || c.MaxNodes > MaxNodes {
		c.MaxNodes = MaxNodes
	}
}

type nodeState struct {
	inUse    bool // heard from (this run) or restored from the last run
	heard    bool // heard from in this run: bootID and seq are valid
	reserved bool // the node map holds this number for some address
	derived  bool
	unicast  bool
	asks     uint8
	addr     netip.AddrPort
	bootID   [16]byte
	epoch    uint64
	seq      uint32
	lastSeen time.Time
	interval time.Duration // smoothed gap between unrequested packets
	nextAsk  time.Time
}

// Table is the master's node table as a pure state machine: it is fed
// decoded packets and clock ticks and answers with what to store and when
// to ask nodes to resend. It does no I/O and reads no clock, so tests run
// hours of schedule in microseconds. It is not safe for concurrent use.
type Table struct {
	cfg         TableConfig
	nodes       []nodeState
	byAddr      map[netip.Addr]int // derived and mapped numbers by IP
	nextFree    int                // no free number below this
	started     bool
	lastRequest time.Time
	nextScan    time.Time
}

// NewTable returns a table seeded with the node map and with the
// assignments a previous run left behind.
func NewTable(cfg TableConfig) *Table {
	cfg.defaults()
	t := &Table{cfg: cfg, byAddr: make(map[netip.Addr]int, len(cfg.NodeMap)+len(cfg.Restored))}
	for a, n := range cfg.NodeMap {
		if n < 0 || n >= cfg.MaxNodes {
			continue
		}
		t.grow(n)
		t.nodes[n].reserved = true
		t.byAddr[a] = n
	}
	// An IP that held several numbers belonged to explicitly numbered
	// senders sharing a host: it must not hand one of them out again.
	count := map[netip.Addr]int{}
	for _, r := range cfg.Restored {
		count[r.Addr.Addr()]++
	}
	for _, r := range cfg.Restored {
		if r.Node < 0 || r.Node >= cfg.MaxNodes || !r.Addr.IsValid() {
			continue
		}
		t.grow(r.Node)
		s := &t.nodes[r.Node]
		s.inUse = true
		s.addr = r.Addr
		s.unicast = true // unknown: ask it directly as well
		ip := r.Addr.Addr()
		if _, mapped := t.byAddr[ip]; !mapped && count[ip] == 1 && !s.reserved {
			t.byAddr[ip] = r.Node
			s.derived = true
		}
	}
	return t
}

// Len is one more than the highest node number the table has room for.
func (t *Table) Len() int { return len(t.nodes) }

func (t *Table) grow(n int) {
	if n < len(t.nodes) {
		return
	}
	size := max(2*len(t.nodes), n+1, 64)
	size = min(size, t.cfg.MaxNodes)
	nodes := make([]nodeState, size)
	copy(nodes, t.nodes)
	t.nodes = nodes
}

// assign gives an unnumbered sender its number: the node map's, the one it
// had before, or the lowest number nobody holds (first come, first
// assigned). It returns NoNode when the table is full.
func (t *Table) assign(ip netip.Addr) (int, bool) {
	if n, ok := t.byAddr[ip]; ok {
		return n, false
	}
	for t.nextFree < len(t.nodes) && (t.nodes[t.nextFree].inUse || t.nodes[t.nextFree].reserved) {
		t.nextFree++
	}
	if t.nextFree >= t.cfg.MaxNodes {
		return NoNode, false
	}
	n := t.nextFree
	t.grow(n)
	t.byAddr[ip] = n
	t.nodes[n].derived = true
	return n, true
}

// Receive decides what to do with one complete sample received at now. It
// returns the update to store, or a drop reason.
func (t *Table) Receive(now time.Time, st Status) (Update, Reason) {
	if st.Sample == nil {
		return Update{}, DropMalformed
	}
	n := st.Node
	ip := st.From.Addr().Unmap()
	derived := false
	if n < 0 {
		n, _ = t.assign(ip)
		if n < 0 {
			return Update{}, DropNodeRange
		}
		derived = true
	} else if n >= t.cfg.MaxNodes {
		return Update{}, DropNodeRange
	}
	t.grow(n)
	s := &t.nodes[n]
	u := Update{Node: n, Addr: st.From, Seen: now, Sample: st.Sample, Derived: derived}
	if s.inUse && s.addr.IsValid() && s.addr.Addr().Unmap() != ip {
		u.Moved = true
	}
	if s.heard {
		if st.Sample.BootID != s.bootID {
			u.Reboot = true
		} else if (st.Epoch < s.epoch || st.Epoch == s.epoch && st.Seq <= s.seq) && !u.Moved {
			return Update{}, DropStale
		}
		// The gap ending in an answer to a request made on this node's
		// account is silence, not its rate. Other gaps rise the
		// estimate at once and lower it slowly, so that an early answer
		// to a request made for other nodes does not make this one look
		// overdue (sendstats restarts its period after answering, so the
		// next gap is a whole one again).
		if gap := now.Sub(s.lastSeen); gap > 0 && s.asks == 0 {
			if gap > s.interval {
				s.interval = gap
			} else {
				s.interval -= (s.interval - gap) / 16
			}
		}
	}
	s.inUse, s.heard = true, true
	s.derived = s.derived || derived
	s.unicast = st.Unicast
	s.addr = st.From
	s.bootID = st.Sample.BootID
	s.epoch, s.seq = st.Epoch, st.Seq
	s.lastSeen = now
	s.asks = 0
	s.nextAsk = time.Time{}
	return u, DropNone
}

// overdueAfter is how long a node may stay silent before we ask it.
func (t *Table) overdueAfter(s *nodeState) time.Duration {
	iv := s.interval
	if iv == 0 {
		iv = t.cfg.AssumedInterval
	}
	return max(2*iv, t.cfg.MinOverdue)
}

// Tick is called periodically. It returns a request to send, if any: one
// at start, then at most one per RequestGap and only while some node has
// been silent for more than twice its usual interval; each silent node is
// asked for with a doubling pause, so dead nodes cost little.
func (t *Table) Tick(now time.Time) (Request, bool) {
	if !t.started {
		t.started = true
		t.lastRequest = now
		req := Request{Multicast: t.cfg.Multicast}
		for i := range t.nodes {
			s := &t.nodes[i]
			if !s.inUse {
				continue
			}
			if s.addr.Port() != 0 {
				req.Unicast = append(req.Unicast, s.addr)
			}
			s.lastSeen = now // restored nodes are timed from our start
			s.asks = 1
			s.nextAsk = now.Add(2 * t.overdueAfter(s))
		}
		return req, req.Multicast || len(req.Unicast) > 0
	}
	if now.Sub(t.lastRequest) < t.cfg.RequestGap || now.Before(t.nextScan) {
		return Request{}, false
	}
	// The scan is linear in the nodes: at most four a RequestGap keeps
	// it negligible at 100,000 nodes, at the cost of a late request.
	t.nextScan = now.Add(t.cfg.RequestGap / 4)
	var req Request
	for i := range t.nodes {
		s := &t.nodes[i]
		if !s.inUse || now.Before(s.nextAsk) {
			continue
		}
		after := t.overdueAfter(s)
		if now.Sub(s.lastSeen) <= after {
			continue
		}
		// Restored nodes: we do not know how they send; ask both ways.
		if (s.unicast || !s.heard || !t.cfg.Multicast) && s.addr.Port() != 0 {
			req.Unicast = append(req.Unicast, s.addr)
		}
		if !s.unicast || !s.heard {
			req.Multicast = req.Multicast || t.cfg.Multicast
		}
		s.asks = min(s.asks+1, 30)
		s.nextAsk = now.Add(min(after<<s.asks, t.cfg.MaxBackoff))
	}
	if !req.Multicast && len(req.Unicast) == 0 {
		return Request{}, false
	}
	t.lastRequest = now
	return req, true
}

// LastRequest is when Tick last asked for updates.
func (t *Table) LastRequest() time.Time { return t.lastRequest }
