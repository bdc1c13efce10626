package recv

import (
	"net/netip"
	"testing"
	"time"

	"github.com/hoststat/hoststat/telemetry/sample"
)

// honestFleet is n unsigned, unnumbered senders on 10.1/16, each with its
// own boot.
type honestFleet struct {
	addrs []netip.AddrPort
	nodes []int
	seq   uint32
}

func newFleet(n int) *honestFleet {
	f := &honestFleet{}
	for i := range n {
		f.addrs = append(f.addrs, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), 3040))
	}
	return f
}

// round has every node send one sample at now; the first round records
// their numbers, later ones check they keep them.
func (f *honestFleet) round(t *testing.T, tb *Table, now time.Time) {
	t.Helper()
	f.seq++
	for i, a := range f.addrs {
		smp := &sample.Sample{BootID: [16]byte{1, byte(i >> 8), byte(i)}}
		u, r := tb.Receive(now, Status{From: a, Node: NoNode, Seq: f.seq, Sample: smp})
		if r != DropNone {
			t.Fatalf("honest node %v, round %d: dropped (%v)", a, f.seq, r)
		}
		if len(f.nodes) < len(f.addrs) {
			f.nodes = append(f.nodes, u.Node)
		} else if u.Node != f.nodes[i] {
			t.Fatalf("honest node %v moved from number %d to %d", a, f.nodes[i], u.Node)
		}
	}
}

func spoofed(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{172, byte(16 + i>>16), byte(i >> 8), byte(i)}), uint16(1024+i%60000))
}

// 200,000 spoofed source addresses, each sending one unsigned sample,
// while 1,000 known nodes keep sending: the known nodes keep their
// numbers and every sample is stored; the spoofed senders gain at most
// the admission burst plus the rate, and are forgotten after probation.
func TestSpoofedAddressFlood(t *testing.T) {
	tb := NewTable(TableConfig{})
	honest := newFleet(1000)
	now := t0
	for range established {
		honest.round(t, tb, now)
		now = now.Add(time.Second)
	}
	const spoofs, seconds = 200_000, 10
	admitted := 0
	for s := range seconds {
		for i := range spoofs / seconds {
			k := s*spoofs/seconds + i
			if _, r := tb.Receive(now, unsigned(spoofed(k).String(), NoNode, 1, 7)); r == DropNone {
				admitted++
			}
		}
		honest.round(t, tb, now)
		tb.Expire(now)
		now = now.Add(time.Second)
	}
	limit := DefaultAdmitBurst + seconds*DefaultAdmitRate
	if admitted > limit || tb.Nodes() > 1000+limit {
		t.Errorf("%d spoofed senders admitted, %d nodes; want at most %d admitted", admitted, tb.Nodes(), limit)
	}
	// The spoofed addresses fall silent: after probation they are gone,
	// the honest nodes are all still there.
	for range 2 * DefaultProbation / time.Second {
		honest.round(t, tb, now)
		tb.Expire(now)
		now = now.Add(time.Second)
	}
	if tb.Nodes() != 1000 {
		t.Errorf("%d nodes after probation, want the 1000 honest ones", tb.Nodes())
	}
}

// A table filled up by spoofed senders keeps serving its known nodes,
// and frees the numbers once the spoofed senders fall silent.
func TestFullTableKeepsKnownNodes(t *testing.T) {
	tb := NewTable(TableConfig{MaxNodes: 1100, AdmitBurst: 100_000})
	honest := newFleet(1000)
	now := t0
	for range established {
		honest.round(t, tb, now)
		now = now.Add(time.Second)
	}
	for i := range 5000 {
		tb.Receive(now, unsigned(spoofed(i).String(), NoNode, 1, 7))
	}
	if tb.Nodes() != 1100 || tb.Len() > 1100 {
		t.Fatalf("%d nodes, len %d; want the table full at 1100", tb.Nodes(), tb.Len())
	}
	latecomer := unsigned("10.2.0.1:3040", NoNode, 1, 8)
	if _, r := tb.Receive(now, latecomer); r != DropNodeRange {
		t.Errorf("a new sender in a full table: %v, want node-range", r)
	}
	for range 2 * DefaultProbation / time.Second {
		now = now.Add(time.Second)
		honest.round(t, tb, now)
		tb.Expire(now)
	}
	if u, r := tb.Receive(now, latecomer); r != DropNone || u.Node < 1000 {
		t.Errorf("a new sender once the spoofed ones are forgotten: node %d, %v", u.Node, r)
	}
}

// One captured signed sample of an unnumbered node, replayed from 1,000
// spoofed addresses, makes no node: the boot it names is taken.
func TestSignedReplayFromSpoofedAddresses(t *testing.T) {
	tb := NewTable(TableConfig{})
	capture := st("10.0.0.1:3040", NoNode, 42, 1)
	mustReceive(t, tb, t0, capture)
	for i := range 1000 {
		c := capture
		c.From = spoofed(i)
		if u, r := tb.Receive(t0.Add(time.Duration(i)*time.Millisecond), c); r == DropNone {
			t.Fatalf("replay from %v stored as node %d", c.From, u.Node)
		}
	}
	if tb.Nodes() != 1 {
		t.Errorf("%d nodes after the replays, want 1", tb.Nodes())
	}
	// A later sample of the same boot from another address is the node
	// itself, moved: taken.
	moved := st("10.0.0.2:3040", NoNode, 43, 1)
	mustReceive(t, tb, t0.Add(2*time.Second), moved)
}

// A signed sample of a node the map pins to an address is taken only
// from that address.
func TestPinnedNodeOnlyFromItsAddress(t *testing.T) {
	tb := NewTable(TableConfig{NodeMap: NodeMap{netip.MustParseAddr("10.0.0.7"): 7}})
	if _, r := tb.Receive(t0, st("10.0.0.8:3040", 7, 1, 1)); r != DropPinned {
		t.Errorf("signed node 7 from 10.0.0.8: %v, want pinned", r)
	}
	if u := mustReceive(t, tb, t0, st("10.0.0.7:3040", 7, 1, 1)); u.Node != 7 {
		t.Errorf("node 7 from its address stored as %d", u.Node)
	}
	// Unsigned, the pin is what makes the number believed.
	tb = NewTable(TableConfig{NodeMap: NodeMap{netip.MustParseAddr("10.0.0.7"): 7}})
	if u := mustReceive(t, tb, t0, unsigned("10.0.0.7:3040", 7, 1, 1)); u.Node != 7 || u.Fresh.Honest != true {
		t.Errorf("unsigned pinned node 7: %+v", u)
	}
	if u := mustReceive(t, tb, t0, unsigned("10.0.0.9:3040", 9, 1, 2)); u.Node == 9 {
		t.Error("unsigned node number 9 from an unpinned address believed")
	}
}

// Reflection: 500 spoofed addresses that sent one sample each get no
// update request in the following 3 minutes, nor after a restart that
// restored them from the table; an honest unicast node that falls silent
// is asked.
func TestNoRequestsToSpoofedAddresses(t *testing.T) {
	tb := NewTable(TableConfig{Multicast: true})
	now := t0
	honest := "10.0.0.1:3040"
	for i := range established {
		s := unsigned(honest, NoNode, uint32(i+1), 1)
		s.Unicast = true
		mustReceive(t, tb, now, s)
		now = now.Add(time.Second)
	}
	var restored []Assignment
	for i := range 500 {
		s := unsigned(spoofed(i).String(), NoNode, 1, 9)
		s.Unicast = true
		u := mustReceive(t, tb, now, s)
		restored = append(restored, Assignment{Node: u.Node, Addr: u.Addr})
	}
	reflect := func(tb *Table, from time.Time) (spoofedAsked, honestAsked int) {
		for now := from; now.Before(from.Add(3 * time.Minute)); now = now.Add(100 * time.Millisecond) {
			req, _ := tb.Tick(now)
			for _, a := range req.Unicast {
				if a == ap(honest) {
					honestAsked++
				} else {
					spoofedAsked++
				}
			}
		}
		return
	}
	if s, h := reflect(tb, now); s != 0 || h == 0 {
		t.Errorf("3 minutes: %d requests to spoofed addresses (want 0), %d to the silent honest node (want some)", s, h)
	}
	tb2 := NewTable(TableConfig{Multicast: true, Restored: restored})
	if s, _ := reflect(tb2, now); s != 0 {
		t.Errorf("after a restart: %d requests to spoofed addresses restored from the table", s)
	}
}

// A node silent for ForgetAfter is forgotten and its number handed out
// again; one that keeps sending never is.
func TestForgetAfter(t *testing.T) {
	tb := NewTable(TableConfig{ForgetAfter: time.Hour})
	now := t0
	for i := range established {
		mustReceive(t, tb, now, unsigned("10.0.0.1:1", NoNode, uint32(i+1), 1))
		mustReceive(t, tb, now, unsigned("10.0.0.2:1", NoNode, uint32(i+1), 2))
		now = now.Add(time.Second)
	}
	var gone []int
	for range 70 {
		now = now.Add(time.Minute)
		mustReceive(t, tb, now, unsigned("10.0.0.2:1", NoNode, uint32(now.Unix()), 2))
		gone = append(gone, tb.Expire(now)...)
	}
	if len(gone) != 1 || gone[0] != 0 || tb.Nodes() != 1 {
		t.Fatalf("forgotten %v, %d nodes left; want node 0 forgotten, 1 left", gone, tb.Nodes())
	}
	if u := mustReceive(t, tb, now, unsigned("10.0.0.3:1", NoNode, 1, 3)); u.Node != 0 {
		t.Errorf("new sender got node %d, want the freed 0", u.Node)
	}
}

// Hosts that share a kernel (network namespaces, containers) share a boot
// id. A restarted master names by boot only the senders that were signed
// and unnumbered: a numbered node's boot does not make an unnumbered
// sender of the same kernel a replay.
func TestRestoredNumberedNodeDoesNotClaimItsBoot(t *testing.T) {
	boot := [16]byte{5}
	tb := NewTable(TableConfig{
		Restored: []Assignment{{Node: 5, Addr: ap("10.0.0.5:3040")}},
		Windows:  map[int]Freshness{5: {BootID: boot, BootTime: 5000e9, Epoch: 100, Seq: 9, Honest: true}},
	})
	s := st("10.0.0.6:3040", NoNode, 1, 5) // the same boot, an earlier process
	s.Epoch = 50
	if u, r := tb.Receive(t0, s); r != DropNone || u.Node == 5 {
		t.Errorf("unnumbered signed sender sharing node 5's kernel: node %d, %v", u.Node, r)
	}
}
