package liveness

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC)

const downAfter = 5 * time.Second

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func boot(b byte) [16]byte { return [16]byte{b, 0xbe} }

// fixture is a machine and the table it is fed, on a fake clock.
type fixture struct {
	t     *testing.T
	m     *Machine
	now   time.Time
	nodes map[int]Node
}

func newFixture(t *testing.T, hosts ...Host) *fixture {
	f := &fixture{t: t, m: New(Config{}), now: t0, nodes: map[int]Node{}}
	for _, h := range hosts {
		if err := f.m.Track(h); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// report is node n sending a status from addr with boot b, now.
func (f *fixture) report(n int, addr string, b byte) {
	f.nodes[n] = Node{Node: n, Addr: ip(addr), BootID: boot(b), LastSeen: f.now}
}

// scan feeds the whole table to the machine at the fixture's now.
func (f *fixture) scan() []Event {
	var nodes []Node
	for _, n := range f.nodes {
		nodes = append(nodes, n)
	}
	slices.SortFunc(nodes, func(a, b Node) int { return a.Node - b.Node })
	return f.m.Observe(f.now, downAfter, slices.Values(nodes))
}

func (f *fixture) expect(what string, got []Event, want ...Event) {
	f.t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !reflect.DeepEqual(got, want) {
		f.t.Errorf("%s: events %+v, want %+v", what, got, want)
	}
}

func (f *fixture) state(name string, want State) Liveness {
	f.t.Helper()
	l := f.m.Liveness(name, f.now)
	if l.State != want {
		f.t.Errorf("at +%v %q is %v, want %v (%+v)", f.now.Sub(t0), name, l.State, want, l)
	}
	return l
}

// A host whose node stops reporting is up, then silent from down-after
// on, then gone after GoneAfter (a day) of scans; it counts its silence
// from its last status, and a day of no scans (no table) makes nobody
// gone.
func TestUpSilentGone(t *testing.T) {
	f := newFixture(t, Host{Name: "c1", Addrs: []netip.Addr{ip("10.0.0.1")}})
	f.state("c1", Unknown)
	f.report(1, "10.0.0.1", 1)
	f.expect("first sighting", f.scan())
	l := f.state("c1", Up)
	if l.Node != 1 || l.BootID != boot(1) || !l.LastHeard.Equal(t0) {
		t.Errorf("liveness %+v, want node 1, boot 1, heard at t0", l)
	}
	last := f.now
	f.now = f.now.Add(downAfter - time.Nanosecond)
	f.state("c1", Up)
	f.now = last.Add(downAfter)
	f.scan()
	if l := f.state("c1", Silent); !l.LastHeard.Equal(last) {
		t.Errorf("silent since %v, want %v", l.LastHeard, last)
	}
	// A day later without a scan (telemetry blind): still only silent.
	f.now = last.Add(25 * time.Hour)
	f.state("c1", Silent)
	// Scans through the day: silent until a day after the last status.
	for f.now = last.Add(time.Minute); f.now.Before(last.Add(DefaultGoneAfter)); f.now = f.now.Add(time.Hour) {
		f.expect("silence", f.scan())
		f.state("c1", Silent)
	}
	f.now = last.Add(DefaultGoneAfter)
	f.scan()
	f.state("c1", Gone)
	// It comes back: up, and a return.
	f.report(1, "10.0.0.1", 1)
	f.expect("back after a day", f.scan(), Returned{Host: "c1", Node: 1, At: f.now})
	f.state("c1", Up)
}

// A boot id change is one RebootSeen; seeing the same boot again, or a
// sender restarted in the same boot, is no event; an earlier boot id
// coming back is none either.
func TestRebootSeenOnce(t *testing.T) {
	f := newFixture(t, Host{Name: "c1", Addrs: []netip.Addr{ip("10.0.0.1")}})
	f.report(1, "10.0.0.1", 1)
	f.expect("first sighting", f.scan())
	for range 3 {
		f.now = f.now.Add(time.Second)
		f.report(1, "10.0.0.1", 1) // new samples, or sendstats restarted: same boot
		f.expect("same boot", f.scan())
	}
	f.now = f.now.Add(time.Second)
	f.report(1, "10.0.0.1", 2)
	f.expect("reboot", f.scan(), RebootSeen{Host: "c1", Node: 1, OldBoot: boot(1), NewBoot: boot(2), At: f.now})
	f.expect("the same record scanned again", f.scan())
	f.now = f.now.Add(time.Second)
	f.report(1, "10.0.0.1", 2)
	f.expect("second sighting of the new boot", f.scan())
	f.now = f.now.Add(time.Second)
	f.report(1, "10.0.0.1", 1)
	f.expect("an old boot id again", f.scan())
	f.state("c1", Up)
	// A reboot while silent: a reboot and a return, in that order.
	f.now = f.now.Add(time.Minute)
	f.expect("silence", f.scan())
	f.state("c1", Silent)
	f.now = f.now.Add(time.Second)
	f.report(1, "10.0.0.1", 3)
	f.expect("rebooted while silent", f.scan(),
		RebootSeen{Host: "c1", Node: 1, OldBoot: boot(1), NewBoot: boot(3), At: f.now},
		Returned{Host: "c1", Node: 1, At: f.now})
}

// A host with several addresses is one host whichever it reports from;
// a node that moves to another address of the host is the same node; a
// node moving to an address of another host ties to that host without
// a reboot, and stops refreshing the first.
func TestAddresses(t *testing.T) {
	f := newFixture(t,
		Host{Name: "multi", Addrs: []netip.Addr{ip("10.0.0.1"), ip("fd00::1"), ip("::ffff:10.0.1.1")}},
		Host{Name: "other", Addrs: []netip.Addr{ip("10.0.0.9")}})
	f.report(1, "10.0.0.1", 1)
	f.expect("first", f.scan())
	f.now = f.now.Add(time.Second)
	f.report(1, "fd00::1", 1)
	f.expect("moved to its IPv6 address", f.scan())
	f.now = f.now.Add(time.Second)
	f.report(1, "::ffff:10.0.1.1", 1) // as the table stores IPv4
	f.expect("moved to its third address, written mapped", f.scan())
	if l := f.state("multi", Up); !l.LastHeard.Equal(f.now) {
		t.Errorf("multi last heard %v, want %v", l.LastHeard, f.now)
	}
	f.state("other", Unknown)

	// Node 1 now reports from other's address.
	f.now = f.now.Add(time.Second)
	f.report(1, "10.0.0.9", 1)
	f.expect("moved to another host's address", f.scan())
	f.state("other", Up)
	f.now = f.now.Add(downAfter)
	f.report(1, "10.0.0.9", 1)
	f.scan()
	f.state("multi", Silent)
	f.state("other", Up)
}

// A host that never ties to a node is unknown; an answer makes it up for
// down-after, with no event; an untracked host is unknown too.
func TestUnknownAndAnswered(t *testing.T) {
	f := newFixture(t, Host{Name: "nostats", Addrs: []netip.Addr{ip("10.0.0.7")}})
	f.report(3, "10.0.0.3", 1)
	f.expect("another node", f.scan())
	f.state("nostats", Unknown)
	f.state("never-tracked", Unknown)
	f.m.Answered("nostats", f.now)
	f.state("nostats", Up)
	f.now = f.now.Add(downAfter)
	f.expect("answer aged", f.scan())
	f.state("nostats", Unknown)

	// An answer from a silent tied host makes it up, without a Returned.
	f.report(7, "10.0.0.7", 1)
	f.expect("tied", f.scan())
	f.now = f.now.Add(time.Hour)
	f.scan()
	f.state("nostats", Silent)
	f.m.Answered("nostats", f.now)
	f.state("nostats", Up)
	f.now = f.now.Add(time.Second)
	f.expect("after an answer", f.scan())
}

// Two senders behind one address (NAT) each keep their boot: no reboot
// while both report. A host that comes back under a new node number with
// a new boot, while its old node is silent, rebooted.
func TestSeveralNodesOneAddress(t *testing.T) {
	f := newFixture(t, Host{Name: "nat", Addrs: []netip.Addr{ip("10.0.0.1")}})
	f.report(1, "10.0.0.1", 1)
	f.report(2, "10.0.0.1", 2)
	f.expect("two senders", f.scan())
	for range 5 {
		f.now = f.now.Add(time.Second)
		f.report(1, "10.0.0.1", 1)
		f.report(2, "10.0.0.1", 2)
		f.expect("both report", f.scan())
	}
	f.now = f.now.Add(time.Second)
	f.report(2, "10.0.0.1", 3)
	f.expect("node 2 reboots", f.scan(), RebootSeen{Host: "nat", Node: 2, OldBoot: boot(2), NewBoot: boot(3), At: f.now})

	// Both go silent; the host comes back as node 5 with a new boot.
	g := newFixture(t, Host{Name: "renumbered", Addrs: []netip.Addr{ip("10.0.0.1")}})
	g.report(1, "10.0.0.1", 1)
	g.scan()
	g.now = g.now.Add(time.Hour)
	delete(g.nodes, 1) // forgotten by recvstats
	g.scan()
	g.state("renumbered", Silent)
	g.report(5, "10.0.0.1", 2)
	g.expect("back as node 5", g.scan(),
		RebootSeen{Host: "renumbered", Node: 5, OldBoot: boot(1), NewBoot: boot(2), At: g.now},
		Returned{Host: "renumbered", Node: 5, At: g.now})
}

// Stale records at a host's address (nodes recvstats has not forgotten
// yet, older than the host's news) are no reboot, however many there are
// and however they cycle through the host's memory of nodes.
func TestStaleRecords(t *testing.T) {
	f := newFixture(t, Host{Name: "h", Addrs: []netip.Addr{ip("10.0.0.1")}})
	f.report(100, "10.0.0.1", 100)
	f.expect("first", f.scan())
	f.now = f.now.Add(time.Hour)
	for i := range 2 * maxTies {
		// Stale: older than node 100's status.
		f.nodes[i] = Node{Node: i, Addr: ip("10.0.0.1"), BootID: boot(byte(i)), LastSeen: t0.Add(-time.Duration(i+1) * time.Minute)}
	}
	for range 3 {
		f.now = f.now.Add(time.Second)
		f.expect("stale records", f.scan())
	}
	f.state("h", Silent)
}

// Hostnames tie by the NSM matching rule: case and a trailing dot aside,
// equal, or one short and the other qualified beginning with it; two
// qualified names in different domains never.
func TestHostname(t *testing.T) {
	for _, c := range []struct {
		tracked, reported string
		tied              bool
	}{
		{"C1.example", "c1.EXAMPLE", true},
		{"c1.example.", "c1.example", true},
		{"c1.example", "c1", true},  // a kernel with a short hostname, a qualified mon_name
		{"c1", "c1.example", true},  // a qualified kernel hostname, a short mon_name
		{"C1", "c1.Example.", true}, // both at once
		{"c1.a", "c1.b", false},
		{"c1.example", "c10.example", false},
		{"c1.example", "c10", false},
		{"c1", "c10.example", false},
		{"c1.example", "example", false},
	} {
		f := newFixture(t, Host{Name: "h", Hostname: c.tracked})
		f.nodes[4] = Node{Node: 4, Addr: ip("10.9.9.9"), Hostname: c.reported, BootID: boot(1), LastSeen: f.now}
		f.scan()
		l := f.m.Liveness("h", f.now)
		if got := l.State == Up && l.Node == 4; got != c.tied {
			t.Errorf("tracked %q, node reports %q: tied %v (%+v), want %v", c.tracked, c.reported, got, l, c.tied)
		}
		if tracks := f.m.tracksHostname([]byte(c.reported)); c.tied && !tracks {
			t.Errorf("tracksHostname(%q) false with %q tracked: the scan would not read the hostname", c.reported, c.tracked)
		}
	}
}

// Track checks its host, bounds the hosts, and re-tracking keeps what is
// known; Untrack forgets it.
func TestTrack(t *testing.T) {
	m := New(Config{MaxHosts: 2})
	for _, h := range []Host{
		{Name: ""},
		{Name: string(make([]byte, MaxNameLen+1))},
		{Name: "bad", Addrs: []netip.Addr{{}}},
		{Name: "many", Addrs: make([]netip.Addr, MaxAddrs+1)},
	} {
		if err := m.Track(h); !errors.Is(err, ErrBadHost) {
			t.Errorf("Track(%.20q, %d addrs): %v, want ErrBadHost", h.Name, len(h.Addrs), err)
		}
	}
	a := Host{Name: "a", Addrs: []netip.Addr{ip("10.0.0.1")}}
	if err := m.Track(a); err != nil {
		t.Fatal(err)
	}
	if err := m.Track(Host{Name: "b"}); err != nil {
		t.Fatal(err)
	}
	if err := m.Track(Host{Name: "c"}); !errors.Is(err, ErrTooManyHosts) {
		t.Errorf("third host: %v, want ErrTooManyHosts", err)
	}
	m.Observe(t0, downAfter, slices.Values([]Node{{Node: 1, Addr: ip("10.0.0.1"), BootID: boot(1), LastSeen: t0}}))
	// Re-tracked at a new address: still known, and tied by the new one.
	a.Addrs = []netip.Addr{ip("10.0.0.2")}
	if err := m.Track(a); err != nil {
		t.Fatal(err)
	}
	if l := m.Liveness("a", t0); l.State != Up {
		t.Errorf("re-tracked host is %v, want up", l.State)
	}
	ev := m.Observe(t0.Add(time.Second), downAfter, slices.Values([]Node{{Node: 1, Addr: ip("10.0.0.2"), BootID: boot(2), LastSeen: t0.Add(time.Second)}}))
	if len(ev) != 1 {
		t.Errorf("reboot at the new address: %+v", ev)
	}
	if len(m.byAddr) != 1 {
		t.Errorf("address index has %d entries, want 1 (the old address dropped)", len(m.byAddr))
	}
	m.Untrack("a")
	m.Untrack("b")
	if m.Len() != 0 || len(m.byAddr) != 0 || len(m.byHostname) != 0 {
		t.Errorf("after untracking everything: %d hosts, %d addresses indexed", m.Len(), len(m.byAddr))
	}
	if l := m.Liveness("a", t0); l.State != Unknown {
		t.Errorf("untracked host is %v", l.State)
	}
}

// Memory follows the tracked hosts, not the table: a host sighted as
// many node numbers keeps maxTies of them and knownBoots boot ids, and a
// table of many other nodes adds nothing.
func TestBounded(t *testing.T) {
	f := newFixture(t, Host{Name: "h", Addrs: []netip.Addr{ip("10.0.0.1")}})
	for i := range 100 {
		f.now = f.now.Add(time.Second)
		f.nodes = map[int]Node{i: {Node: i, Addr: ip("10.0.0.1"), BootID: boot(byte(i)), LastSeen: f.now}}
		for j := range 1000 {
			f.nodes[1000+j] = Node{Node: 1000 + j, Addr: netip.AddrFrom4([4]byte{10, 1, byte(j >> 8), byte(j)}), BootID: boot(1), LastSeen: f.now}
		}
		f.scan()
	}
	s := f.m.hosts["h"]
	if s.nties > maxTies || len(f.m.hosts) != 1 || len(f.m.byAddr) != 1 || cap(f.m.touched) > 1 {
		t.Errorf("ties %d, hosts %d, addresses %d, touched cap %d", s.nties, len(f.m.hosts), len(f.m.byAddr), cap(f.m.touched))
	}
	if l := f.state("h", Up); l.Node != 99 {
		t.Errorf("host last heard as node %d, want 99", l.Node)
	}
}

func TestStateText(t *testing.T) {
	for s, want := range map[State]string{Unknown: "unknown", Up: "up", Silent: "silent", Gone: "gone", 9: "State(9)"} {
		b, _ := s.MarshalText()
		if string(b) != want || fmt.Sprint(s) != want {
			t.Errorf("%d: %q", s, b)
		}
	}
}
