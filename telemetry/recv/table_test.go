package recv

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hoststat/hoststat/telemetry/sample"
)

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// st is a signed sample: its node number is believed. Boot b booted at
// b×1000 s.
func st(from string, node int, seq uint32, boot byte) Status {
	return Status{From: ap(from), Node: node, Seq: seq, Authenticated: true,
		Sample: &sample.Sample{BootID: [16]byte{boot}, BootTime: time.Unix(int64(boot)*1000, 0)}}
}

// unsigned is st without a key.
func unsigned(from string, node int, seq uint32, boot byte) Status {
	s := st(from, node, seq, boot)
	s.Authenticated = false
	return s
}

func mustReceive(t *testing.T, tb *Table, now time.Time, s Status) Update {
	t.Helper()
	u, r := tb.Receive(now, s)
	if r != DropNone {
		t.Fatalf("Receive(%v node %d seq %d) dropped: %v", s.From, s.Node, s.Seq, r)
	}
	return u
}

func TestTableNodeNumbers(t *testing.T) {
	nm, err := ParseNodeMap(strings.NewReader("# map\n5 10.0.0.9\n 0 10.0.0.7 # first\n\n"), "map")
	if err != nil {
		t.Fatal(err)
	}
	tb := NewTable(TableConfig{NodeMap: nm})
	// Signed and given in the packet: used as is.
	if u := mustReceive(t, tb, t0, st("10.0.2.9:900", 3, 1, 1)); u.Node != 3 || u.Derived {
		t.Errorf("explicit node: got %+v", u)
	}
	// A number the map pins to another address is refused, signed or not.
	if _, r := tb.Receive(t0, st("10.0.2.9:900", 5, 2, 1)); r != DropPinned {
		t.Errorf("node 5 (pinned to 10.0.0.9) from 10.0.2.9: %v, want pinned", r)
	}
	// Unsigned, the number in the packet is not believed: the map's
	// number for the address is used.
	if u := mustReceive(t, tb, t0, unsigned("10.0.0.9:900", 3, 1, 1)); u.Node != 5 {
		t.Errorf("unsigned node 3 from 10.0.0.9 (mapped to 5): got node %d", u.Node)
	}
	// Map file.
	if u := mustReceive(t, tb, t0, unsigned("10.0.0.7:901", NoNode, 1, 1)); u.Node != 0 || !u.Derived {
		t.Errorf("mapped node: got node %d", u.Node)
	}
	// First come, first assigned: the lowest number nobody holds (0 is
	// mapped, 3 is taken, 5 is reserved by the map).
	want := []int{1, 2, 4, 6}
	for i, ip := range []string{"10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.1.4"} {
		u := mustReceive(t, tb, t0, unsigned(ip+":1000", NoNode, 1, 1))
		if u.Node != want[i] {
			t.Errorf("%s: node %d, want %d", ip, u.Node, want[i])
		}
	}
	// The same address keeps its number, whatever its port.
	if u := mustReceive(t, tb, t0.Add(time.Second), unsigned("10.0.1.2:2000", NoNode, 2, 1)); u.Node != 2 {
		t.Errorf("returning sender got node %d, want 2", u.Node)
	}
}

func TestTableRestoredAssignments(t *testing.T) {
	tb := NewTable(TableConfig{Restored: []Assignment{
		{Node: 7, Addr: ap("10.0.0.7:5000")},
		{Node: 0, Addr: ap("127.0.0.1:1")}, // two explicit nodes on one host:
		{Node: 1, Addr: ap("127.0.0.1:2")}, // the IP must not be handed out
	}})
	if u := mustReceive(t, tb, t0, unsigned("10.0.0.7:6000", NoNode, 1, 1)); u.Node != 7 {
		t.Errorf("restored sender got node %d, want 7", u.Node)
	}
	if u := mustReceive(t, tb, t0, unsigned("127.0.0.1:3", NoNode, 1, 1)); u.Node != 2 {
		t.Errorf("sender on a shared IP got node %d, want the first free, 2", u.Node)
	}
	if u := mustReceive(t, tb, t0, unsigned("10.9.9.9:3", NoNode, 1, 1)); u.Node != 3 {
		t.Errorf("new sender got node %d, want 3", u.Node)
	}
}

func TestTableSequenceAndReboot(t *testing.T) {
	tb := NewTable(TableConfig{})
	mustReceive(t, tb, t0, st("10.0.0.1:1", 4, 100, 1))
	for _, seq := range []uint32{100, 99} {
		if _, r := tb.Receive(t0.Add(time.Second), st("10.0.0.1:1", 4, seq, 1)); r != DropStale {
			t.Errorf("seq %d after 100: reason %v, want stale", seq, r)
		}
	}
	u := mustReceive(t, tb, t0.Add(2*time.Second), st("10.0.0.1:1", 4, 101, 1))
	if u.Reboot || !u.Continues {
		t.Errorf("same boot: reboot %v continues %v; want false, true", u.Reboot, u.Continues)
	}
	// A reboot starts the numbers again; figures must not span it.
	u = mustReceive(t, tb, t0.Add(3*time.Second), st("10.0.0.1:1", 4, 5, 2))
	if !u.Reboot || u.Continues {
		t.Errorf("boot id change: reboot %v continues %v; want true, false", u.Reboot, u.Continues)
	}
	if u := mustReceive(t, tb, t0, st("10.0.0.7:1", 7, 1, 1)); u.Continues {
		t.Error("a node's first sample continues nothing")
	}
	// After a restart the persisted window says which boot was stored.
	tb2 := NewTable(TableConfig{Windows: map[int]Freshness{4: {BootID: [16]byte{2}, Seq: 5}},
		Restored: []Assignment{{Node: 4, Addr: netip.MustParseAddrPort("10.0.0.1:1")}}})
	if u := mustReceive(t, tb2, t0, st("10.0.0.1:1", 4, 6, 2)); !u.Continues {
		t.Error("same boot after a restart does not continue")
	}
	u = mustReceive(t, tb, t0.Add(4*time.Second), st("10.0.0.2:1", 4, 1, 3))
	if !u.Moved {
		t.Error("another IP claiming node 4 not flagged as moved")
	}
}

// A restarted sendstats (same boot, later epoch) is accepted whatever its
// sequence number; an earlier process's packets are stale.
func TestTableEpochs(t *testing.T) {
	tb := NewTable(TableConfig{})
	s := st("10.0.0.1:1", 1, 500, 1)
	s.Epoch = 1000
	mustReceive(t, tb, t0, s)
	s.Epoch, s.Seq = 2000, 1
	mustReceive(t, tb, t0.Add(time.Second), s)
	s.Epoch, s.Seq = 1000, 501
	if _, r := tb.Receive(t0.Add(2*time.Second), s); r != DropReplay {
		t.Errorf("earlier process's packet: %v, want replay", r)
	}
}

func TestTableNodeRange(t *testing.T) {
	tb := NewTable(TableConfig{MaxNodes: 3})
	if _, r := tb.Receive(t0, st("10.0.0.1:1", 3, 1, 1)); r != DropNodeRange {
		t.Errorf("node 3 of 3: %v, want node-range", r)
	}
	if _, r := tb.Receive(t0, st("10.0.0.1:1", MaxNodes+5, 1, 1)); r != DropNodeRange {
		t.Errorf("huge node: %v, want node-range", r)
	}
	for i := range 3 {
		mustReceive(t, tb, t0, unsigned(netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, 0, byte(i)}), 1).String(), NoNode, 1, 1))
	}
	if _, r := tb.Receive(t0, unsigned("10.2.0.0:1", NoNode, 1, 1)); r != DropNodeRange {
		t.Errorf("unnumbered sender in a full table: %v, want node-range", r)
	}
	if tb.Len() > 3 {
		t.Errorf("table grew to %d past its limit 3", tb.Len())
	}
}

// run feeds a node sending every interval from start to end, and ticks
// every 100ms, returning the times of requests.
func TestTableRequests(t *testing.T) {
	tb := NewTable(TableConfig{Multicast: true, Restored: []Assignment{{Node: 9, Addr: ap("10.0.0.9:777")}},
		Windows: map[int]Freshness{9: {BootID: [16]byte{1}, Honest: true}}})
	req, ok := tb.Tick(t0)
	if !ok || !req.Multicast || !slices.Equal(req.Unicast, []netip.AddrPort{ap("10.0.0.9:777")}) {
		t.Fatalf("start: got %+v %v, want multicast and unicast to the restored node", req, ok)
	}
	// Node 9 answers by unicast; nodes 1 and 2 send by multicast every
	// second, node 3 by unicast every 2 s.
	now := t0
	seq := uint32(1)
	recvAt := func(from string, node int, unicast bool) {
		s := st(from, node, seq, 1)
		s.Unicast = unicast
		seq++
		mustReceive(t, tb, now, s)
	}
	recvAt("10.0.0.9:777", 9, true)
	var reqs []time.Time
	step := 100 * time.Millisecond
	for i := 0; now.Before(t0.Add(20 * time.Second)); i++ {
		now = now.Add(step)
		if i%10 == 9 { // on whole seconds
			recvAt("10.0.0.1:100", 1, false)
			recvAt("10.0.0.2:100", 2, false)
			recvAt("10.0.0.9:777", 9, true)
		}
		if i%20 == 19 {
			recvAt("10.0.0.3:300", 3, true)
		}
		if _, ok := tb.Tick(now); ok {
			reqs = append(reqs, now)
		}
	}
	if len(reqs) != 0 {
		t.Fatalf("requests while every node is on time: %v", reqs)
	}
	// Node 2 (multicast) goes silent at 20 s; node 3 (unicast) too.
	silentFrom := now
	var got []Request
	for now.Before(t0.Add(200 * time.Second)) {
		now = now.Add(step)
		if int(now.Sub(t0)/step)%10 == 0 {
			recvAt("10.0.0.1:100", 1, false)
			recvAt("10.0.0.9:777", 9, true)
		}
		if r, ok := tb.Tick(now); ok {
			reqs = append(reqs, now)
			got = append(got, r)
		}
	}
	if len(reqs) == 0 {
		t.Fatal("no request for silent nodes")
	}
	// First request: node 2 overdue by 2 s (2× its 1 s interval).
	if d := reqs[0].Sub(silentFrom); d < 2*time.Second || d > 3*time.Second {
		t.Errorf("first request %v after the node went silent, want 2-3s", d)
	}
	var mc, uc int
	for i, r := range got {
		if i > 0 && reqs[i].Sub(reqs[i-1]) < time.Second {
			t.Errorf("requests %v apart, want at least 1s", reqs[i].Sub(reqs[i-1]))
		}
		if r.Multicast {
			mc++
		}
		for _, a := range r.Unicast {
			if a != ap("10.0.0.3:300") {
				t.Errorf("unicast request to %v, which is not silent", a)
			}
			uc++
		}
	}
	// Backing off: 180 s of silence cost a handful of requests, not 180.
	if mc == 0 || uc == 0 || len(reqs) > 16 {
		t.Errorf("%d requests (%d multicast, %d unicast) over 180 s of silence; want a few of each", len(reqs), mc, uc)
	}
	if !tb.LastRequest().Equal(reqs[len(reqs)-1]) {
		t.Errorf("LastRequest %v, want %v", tb.LastRequest(), reqs[len(reqs)-1])
	}
}

func TestTableUnicastOnlyNoMulticast(t *testing.T) {
	tb := NewTable(TableConfig{Multicast: false})
	if r, ok := tb.Tick(t0); ok {
		t.Errorf("start request with no group and no known nodes: %+v", r)
	}
	s := st("10.0.0.1:5", 1, 1, 1)
	mustReceive(t, tb, t0, s)
	r, ok := tb.Tick(t0.Add(10 * time.Second))
	if !ok || r.Multicast || len(r.Unicast) != 1 {
		t.Errorf("silent multicast-heard node without a group: %+v %v, want one unicast request", r, ok)
	}
}

// 100,000 signed nodes appear at once (a cold start of a large cluster
// with a key): key holders are not held back by the admission rate.
func TestTable100kNodes(t *testing.T) {
	tb := NewTable(TableConfig{})
	now := t0
	for n := range 100_000 {
		ip := netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)})
		smp := &sample.Sample{BootID: [16]byte{byte(n >> 16), byte(n >> 8), byte(n)}}
		u, r := tb.Receive(now, Status{From: netip.AddrPortFrom(ip, 3040), Node: NoNode, Seq: 1, Sample: smp, Authenticated: true})
		if r != DropNone || u.Node != n {
			t.Fatalf("sender %d: node %d, %v", n, u.Node, r)
		}
	}
	if tb.Len() < 100_000 || tb.Nodes() != 100_000 {
		t.Fatalf("table len %d, %d nodes", tb.Len(), tb.Nodes())
	}
	tb.Tick(now)
	// Ten seconds later every node is overdue: with no group joined,
	// requests ask each of them directly, at most MaxTargets (1024) a
	// RequestGap. (BenchmarkTableTick measures what the scan costs.)
	asked := map[netip.AddrPort]bool{}
	now = now.Add(10 * time.Second)
	for i := 0; i < 200 && len(asked) < 100_000; i++ {
		req, ok := tb.Tick(now)
		if !ok || req.Multicast || len(req.Unicast) > 1024 {
			t.Fatalf("tick %d over 100,000 silent nodes: %v, multicast %v, %d unicast; want at most 1024", i, ok, req.Multicast, len(req.Unicast))
		}
		for _, a := range req.Unicast {
			asked[a] = true
		}
		now = now.Add(time.Second)
	}
	if len(asked) != 100_000 {
		t.Fatalf("%d nodes asked, want all 100,000", len(asked))
	}
}

func BenchmarkTableReceive(b *testing.B) {
	const nodes = 100_000
	tb := NewTable(TableConfig{})
	smp := &sample.Sample{}
	now := t0
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		n := i % nodes
		tb.Receive(now, Status{From: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)}), 3040), Node: n, Seq: uint32(i + 1), Sample: smp, Authenticated: true})
	}
}

// BenchmarkTableTick is one scan of 100,000 silent nodes for overdue ones.
func BenchmarkTableTick(b *testing.B) {
	tb := NewTable(TableConfig{})
	smp := &sample.Sample{}
	for n := range 100_000 {
		tb.Receive(t0, Status{From: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)}), 3040), Node: n, Seq: 1, Sample: smp, Authenticated: true})
	}
	tb.Tick(t0)
	now := t0
	for b.Loop() {
		now = now.Add(time.Second) // one RequestGap: every tick scans
		tb.Tick(now)
	}
}
