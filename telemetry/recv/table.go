package recv

import (
	"net/netip"
	"time"

	"github.com/hoststat/hoststat/shm"
	"github.com/hoststat/hoststat/telemetry/sample"
)

// MaxNodes is the hard limit on node numbers, the table's and the wire's.
const MaxNodes = sample.MaxNodes

// DefaultMaxNodes is --max-nodes: the design's 100,000 nodes per master,
// rounded up to a power of two. The table holds at most this many nodes,
// so its file stays under about 180 MB however the numbers are spread.
const DefaultMaxNodes = 1 << 17

// DefaultForgetAfter is --forget-after: a node silent for a day is gone,
// its record removed and its number free again. A node away for
// maintenance keeps its number; the node map pins numbers for good.
const DefaultForgetAfter = 24 * time.Hour

// Defaults of the admission of new senders (a token bucket): a whole
// 1,000-node rack powering on is admitted at once, a cluster of 100,000
// within about 17 minutes of a cold start (a known node is never
// throttled, and a restarted master knows its nodes from the table);
// a flood of spoofed addresses gains at most 100 numbers a second.
const (
	DefaultAdmitRate  = 100
	DefaultAdmitBurst = 1000
)

// established is how many samples a sender must have sent before it
// counts as honest without a key: it then keeps its number for
// ForgetAfter, and gets update requests by unicast. A spoofed source
// address that sends once is forgotten after Probation.
const established = 3

// DefaultProbation is how long a sender that has not yet sent
// `established` samples keeps its number while silent.
const DefaultProbation = time.Minute

// NoNode is the node number of a sender that does not know its own.
const NoNode = -1

// Status is one complete sample as it left the reassembler.
type Status struct {
	From    netip.AddrPort
	Unicast bool // sent to our address rather than to the group
	// Authenticated says the sample carried a valid MAC of the key: its
	// node number and boot are the key holder's word.
	Authenticated bool
	Node          int    // NoNode: the master assigns one
	Epoch         uint64 // the sending process's start, since boot
	Seq           uint32 // sample number within the process
	Sample        *sample.Sample
}

// Freshness is the newest (boot, epoch, seq) accepted as one node: what
// a later packet must be newer than. Server keeps it on disk beside the
// table (Window), so a restart does not open a replay window.
type Freshness struct {
	BootID   [16]byte
	BootTime int64 // Unix ns, the sender's word
	Epoch    uint64
	Seq      uint32
	// Honest: the sender authenticated, was pinned by the node map, or
	// sent `established` samples. Only honest addresses are asked for
	// updates by unicast after a restart.
	Honest bool
	// ByBoot: a signed sample without a node number, whose sender is
	// named by its boot (Table.boots).
	ByBoot bool
}

// newer tells whether a sample of (boot, bootTime, epoch, seq) comes after
// f: another boot must have booted later, the same boot needs a later
// process or, in one process, a larger seq.
func (f *Freshness) newer(boot [16]byte, bootTime int64, epoch uint64, seq uint32) (bool, Reason) {
	if boot != f.BootID {
		if bootTime <= f.BootTime {
			return false, DropReplay
		}
		return true, DropNone
	}
	switch {
	case epoch < f.Epoch:
		return false, DropReplay
	case epoch > f.Epoch:
		return true, DropNone
	case seq == f.Seq:
		return false, DropDuplicate
	case seq < f.Seq:
		return false, DropStale
	}
	return true, DropNone
}

// Update is what the table decided to store for one Status.
type Update struct {
	Node   int
	Addr   netip.AddrPort
	Seen   time.Time
	Sample *sample.Sample
	Fresh  Freshness // to persist before the sample is stored
	Reboot bool      // boot id changed: rates and CPU percent must not span it
	// Continues says the sample follows one accepted as this node in the
	// same boot (this run or, by the persisted window, the last): figures
	// may be derived against the node's stored sample. The table is the
	// one judge of this; the shared-memory table only stores.
	Continues bool
	Derived   bool // the number was assigned here, not sent by the node
	Moved     bool // a different IP address now reports as this node
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
	NodeMap  NodeMap
	Restored []Assignment
	// Windows are the freshness of nodes as the last run persisted them.
	Windows   map[int]Freshness
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
	// AskFor is how long a silent node is asked for: after that it gets
	// no more unicast requests (multicast ones go on while it is known).
	AskFor time.Duration // default 10m
	// MaxTargets bounds the unicast requests of one Tick, so requests
	// cost at most MaxTargets datagrams a RequestGap.
	MaxTargets int // default 1024
	// MaxNodes bounds the node numbers, and so the table.
	MaxNodes int // default DefaultMaxNodes, at most MaxNodes
	// ForgetAfter: a node silent this long is forgotten (Expire).
	ForgetAfter time.Duration // default DefaultForgetAfter
	// Probation replaces ForgetAfter for senders not yet established.
	Probation time.Duration // default DefaultProbation
	// DownAfter: a node silent this long is down (an EventDown); readers
	// judge the same from the table's header.
	DownAfter time.Duration // default DefaultDownAfter
	// AdmitRate and AdmitBurst: the token bucket of new senders.
	AdmitRate  float64 // per second, default DefaultAdmitRate
	AdmitBurst int     // default DefaultAdmitBurst
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
	if c.AskFor <= 0 {
		c.AskFor = 10 * time.Minute
	}
	if c.MaxTargets <= 0 {
		c.MaxTargets = 1024
	}
	if c.MaxNodes <= 0 {
		c.MaxNodes = DefaultMaxNodes
	}
	c.MaxNodes = min(c.MaxNodes, MaxNodes)
	if c.ForgetAfter <= 0 {
		c.ForgetAfter = DefaultForgetAfter
	}
	if c.Probation <= 0 {
		c.Probation = DefaultProbation
	}
	c.Probation = min(c.Probation, c.ForgetAfter)
	if c.DownAfter <= 0 {
		c.DownAfter = DefaultDownAfter
	}
	if c.AdmitRate <= 0 {
		c.AdmitRate = DefaultAdmitRate
	}
	if c.AdmitBurst <= 0 {
		c.AdmitBurst = DefaultAdmitBurst
	}
}

type nodeState struct {
	inUse    bool       // heard from (this run) or restored from the last run
	heard    bool       // heard from in this run
	fresh    bool       // fresh holds what was last accepted as this node
	reserved bool       // the node map holds this number for pin
	pin      netip.Addr // the address the node map pins this number to
	derived  bool
	unicast  bool
	down     bool // an EventDown was the node's last event
	asks     uint8
	samples  uint8 // accepted samples, up to established
	addr     netip.AddrPort
	f        Freshness
	lastSeen time.Time
	interval time.Duration // smoothed gap between unrequested packets
	nextAsk  time.Time
}

// Table is the master's node table as a pure state machine: it is fed
// decoded packets and clock ticks and answers with what to store, what to
// forget and when to ask nodes to resend. It does no I/O and reads no
// clock, so tests run hours of schedule in microseconds. It is not safe
// for concurrent use.
//
// It decides who a packet is from: a node number in a packet is believed
// only when the packet is authenticated, or when the node map pins the
// number to the address it came from; otherwise the address names the
// node. Every structure is bounded by MaxNodes.
type Table struct {
	cfg      TableConfig
	nodes    []nodeState
	byAddr   map[netip.Addr]int // derived and mapped numbers by IP
	boots    map[[16]byte]int   // authenticated unnumbered senders' boots → node
	nextFree int                // no free number below this
	count    int                // nodes in use
	down     int                // nodes in use that are down

	tokens    float64 // admission bucket
	lastToken time.Time

	started     bool
	scanFrom    int // where the next scan for overdue nodes starts
	lastRequest time.Time
	nextScan    time.Time

	events []Event // decided since the last Events
}

// NewTable returns a table seeded with the node map and with the
// assignments and freshness a previous run left behind.
func NewTable(cfg TableConfig) *Table {
	cfg.defaults()
	t := &Table{cfg: cfg, byAddr: make(map[netip.Addr]int, len(cfg.NodeMap)+len(cfg.Restored)),
		boots:  map[[16]byte]int{},
		tokens: float64(cfg.AdmitBurst)}
	for a, n := range cfg.NodeMap {
		if n < 0 || n >= cfg.MaxNodes {
			continue
		}
		t.grow(n)
		t.nodes[n].reserved = true
		t.byAddr[a] = n
		t.nodes[n].pin = a
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
		if !s.inUse {
			t.count++
		}
		s.inUse = true
		s.addr = r.Addr
		s.unicast = true // unknown: ask it directly as well
		ip := r.Addr.Addr()
		if _, mapped := t.byAddr[ip]; !mapped && count[ip] == 1 && !s.reserved {
			t.byAddr[ip] = r.Node
			s.derived = true
		}
		if f, ok := cfg.Windows[r.Node]; ok {
			s.f, s.fresh = f, true
			if f.Honest {
				s.samples = established
			}
			if f.ByBoot {
				t.boots[f.BootID] = r.Node
			}
		}
	}
	return t
}

// pinned returns the address the node map pins number n to, if any: an
// index into the table rather than a map lookup, as it is asked for every
// packet.
func (t *Table) pinned(n int) (netip.Addr, bool) {
	if n < 0 || n >= len(t.nodes) || !t.nodes[n].reserved {
		return netip.Addr{}, false
	}
	return t.nodes[n].pin, true
}

// Believes tells whether a node number in an unsigned header from ip is
// believed: the node map pins the number to ip.
func (t *Table) Believes(node uint32, ip netip.Addr) bool {
	pin, ok := t.pinned(int(min(node, MaxNodes)))
	return ok && pin == ip
}

// Len is one more than the highest node number the table has room for.
func (t *Table) Len() int { return len(t.nodes) }

// Nodes is how many nodes are in use.
func (t *Table) Nodes() int { return t.count }

// Down is how many of them are down: silent for DownAfter (as of the
// last Expire), not yet forgotten.
func (t *Table) Down() int { return t.down }

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

// admit takes a token for a new sender, and tells whether there was one.
func (t *Table) admit(now time.Time) bool {
	if !t.lastToken.IsZero() && now.After(t.lastToken) {
		t.tokens = min(t.tokens+now.Sub(t.lastToken).Seconds()*t.cfg.AdmitRate, float64(t.cfg.AdmitBurst))
	}
	if t.lastToken.IsZero() || now.After(t.lastToken) {
		t.lastToken = now
	}
	if t.tokens < 1 {
		return false
	}
	t.tokens--
	return true
}

// assign gives a sender its number by address: the node map's, the one it
// had before, or the lowest number nobody holds (first come, first
// assigned), at the admission rate unless the sender holds the key. It
// returns a drop reason when the sender cannot have one now.
func (t *Table) assign(now time.Time, ip netip.Addr, signed bool) (int, Reason) {
	if n, ok := t.byAddr[ip]; ok {
		return n, DropNone
	}
	for t.nextFree < len(t.nodes) && (t.nodes[t.nextFree].inUse || t.nodes[t.nextFree].reserved) {
		t.nextFree++
	}
	if t.nextFree >= t.cfg.MaxNodes {
		return NoNode, DropNodeRange
	}
	if !signed && !t.admit(now) {
		return NoNode, DropAdmission
	}
	n := t.nextFree
	t.grow(n)
	t.byAddr[ip] = n
	s := &t.nodes[n]
	s.derived = true
	s.fresh = false // a new sender: whatever this number held is gone
	return n, DropNone
}

// Receive decides what to do with one complete sample received at now. It
// returns the update to store, or a drop reason.
func (t *Table) Receive(now time.Time, st Status) (Update, Reason) {
	smp := st.Sample
	if smp == nil {
		return Update{}, DropMalformed
	}
	ip := st.From.Addr().Unmap()
	bootTime := int64(0)
	if !smp.BootTime.IsZero() {
		bootTime = smp.BootTime.UnixNano()
	}
	n := NoNode
	if st.Node != NoNode {
		if st.Node < 0 || st.Node >= MaxNodes {
			return Update{}, DropNodeRange // no node can have it
		}
		pin, pinned := t.pinned(st.Node)
		if pinned && pin != ip {
			// Pinned to another address: signed or not, not from here.
			return Update{}, DropPinned
		}
		if st.Authenticated || pinned {
			if st.Node >= t.cfg.MaxNodes {
				return Update{}, DropNodeRange
			}
			n = st.Node
		}
	}
	derived := false
	if n == NoNode {
		if st.Authenticated {
			// A signed sample names its sender by its boot: one already
			// taken from any address is a replay, wherever it comes from.
			if m, ok := t.boots[smp.BootID]; ok {
				if s := &t.nodes[m]; s.fresh {
					if ok, r := s.f.newer(smp.BootID, bootTime, st.Epoch, st.Seq); !ok {
						return Update{}, r
					}
				}
			}
		}
		var r Reason
		if n, r = t.assign(now, ip, st.Authenticated); r != DropNone {
			return Update{}, r
		}
		derived = true
	}
	t.grow(n)
	s := &t.nodes[n]
	u := Update{Node: n, Addr: st.From, Seen: now, Sample: smp, Derived: derived}
	if s.inUse && s.addr.IsValid() && s.addr.Addr().Unmap() != ip {
		u.Moved = true
	}
	if s.fresh {
		if ok, r := s.f.newer(smp.BootID, bootTime, st.Epoch, st.Seq); !ok {
			// Without a key nothing proves a sender, so a node that
			// moved is taken at its word; with one, never an old sample.
			if st.Authenticated || !u.Moved && smp.BootID == s.f.BootID {
				if r == DropDuplicate {
					r = DropStale
				}
				return Update{}, r
			}
		}
		u.Reboot = smp.BootID != s.f.BootID
		u.Continues = !u.Reboot
	}
	if s.heard {
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
	if !s.inUse {
		t.count++
	}
	// A node restored from the last run is taken as up: it gets "down"
	// if it stays silent, and no "up" when it answers in time.
	if !s.inUse || s.down {
		t.event(now, n, st.From, EventUp)
	}
	if s.down {
		t.down--
	}
	if u.Reboot {
		t.event(now, n, st.From, EventReboot)
	}
	s.down = false
	if s.fresh && s.f.ByBoot && s.f.BootID != smp.BootID {
		if m, ok := t.boots[s.f.BootID]; ok && m == n {
			delete(t.boots, s.f.BootID)
		}
	}
	if st.Authenticated && st.Node == NoNode {
		t.boots[smp.BootID] = n
	}
	s.inUse, s.heard, s.fresh = true, true, true
	s.derived = s.derived || derived
	s.unicast = st.Unicast
	s.addr = st.From
	if s.samples < established {
		s.samples++
	}
	honest := st.Authenticated || s.reserved && s.pin == ip || s.samples >= established
	s.f = Freshness{BootID: smp.BootID, BootTime: bootTime, Epoch: st.Epoch, Seq: st.Seq, Honest: honest,
		ByBoot: st.Authenticated && st.Node == NoNode}
	s.lastSeen = now
	s.asks = 0
	s.nextAsk = time.Time{}
	u.Fresh = s.f
	return u, DropNone
}

// Expire forgets the nodes silent for longer than ForgetAfter (Probation
// for those not yet established) and returns their numbers, which are
// free again: the caller removes their records. It also decides which
// nodes went down (silent for DownAfter): see Events. Linear in the table;
// call it about once a second.
func (t *Table) Expire(now time.Time) []int {
	var gone []int
	for n := range t.nodes {
		s := &t.nodes[n]
		if !s.inUse || s.lastSeen.IsZero() {
			continue // restored nodes are timed from the first Tick
		}
		limit := t.cfg.ForgetAfter
		if !s.f.Honest && s.samples < established {
			limit = t.cfg.Probation
		}
		if now.Sub(s.lastSeen) <= limit {
			if !s.down && now.Sub(s.lastSeen) >= t.cfg.DownAfter {
				s.down = true
				t.down++
				t.event(now, n, s.addr, EventDown)
			}
			continue
		}
		t.event(now, n, s.addr, EventForgotten)
		if s.down {
			t.down--
		}
		if ip := s.addr.Addr().Unmap(); s.derived && t.byAddr[ip] == n && !s.reserved {
			delete(t.byAddr, ip)
		}
		if m, ok := t.boots[s.f.BootID]; ok && s.fresh && s.f.ByBoot && m == n {
			delete(t.boots, s.f.BootID)
		}
		*s = nodeState{reserved: s.reserved, pin: s.pin}
		t.count--
		t.nextFree = min(t.nextFree, n)
		gone = append(gone, n)
	}
	return gone
}

// overdueAfter is how long a node may stay silent before we ask it.
func (t *Table) overdueAfter(s *nodeState) time.Duration {
	iv := s.interval
	if iv == 0 {
		iv = t.cfg.AssumedInterval
	}
	return max(2*iv, t.cfg.MinOverdue)
}

// askable tells whether s's address may get a unicast request: it was
// honest (not just a source address that sent a packet or two) and was
// heard from in the last AskFor.
func (t *Table) askable(now time.Time, s *nodeState) bool {
	return s.addr.Port() != 0 && s.fresh && s.f.Honest && now.Sub(s.lastSeen) <= t.cfg.AskFor
}

// Tick is called periodically. It returns a request to send, if any: one
// at start, then at most one per RequestGap and only while some node has
// been silent for more than twice its usual interval; each silent node is
// asked for with a doubling pause, so dead nodes cost little. A request
// goes by unicast to at most MaxTargets honest addresses.
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
			s.lastSeen = now // restored nodes are timed from our start
			if t.askable(now, s) && len(req.Unicast) < t.cfg.MaxTargets {
				req.Unicast = append(req.Unicast, s.addr)
			}
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
	// Round robin from where the last full request stopped, so that with
	// more silent nodes than MaxTargets every one gets its turn.
	start := min(t.scanFrom, len(t.nodes))
	t.scanFrom = 0
	for k := range t.nodes {
		i := (start + k) % len(t.nodes)
		s := &t.nodes[i]
		if !s.inUse || now.Before(s.nextAsk) {
			continue
		}
		after := t.overdueAfter(s)
		if now.Sub(s.lastSeen) <= after {
			continue
		}
		// Restored nodes: we do not know how they send; ask both ways.
		if (s.unicast || !s.heard || !t.cfg.Multicast) && t.askable(now, s) {
			if len(req.Unicast) >= t.cfg.MaxTargets {
				if t.scanFrom == 0 {
					t.scanFrom = i // asked next time, first
				}
				continue
			}
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
