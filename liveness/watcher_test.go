package liveness

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hoststat/hoststat/beostat/beostattest"
	"github.com/hoststat/hoststat/shm"
	"github.com/hoststat/hoststat/telemetry/sample"
)

// clock is a settable time for the watcher, safe across goroutines.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// table is a real shared-memory table that the test writes, as recvstats
// would.
type table struct {
	t   testing.TB
	dir string
	w   *shm.Writer
	clk *clock
}

func newTable(t testing.TB, clk *clock) *table {
	dir := t.TempDir()
	w, err := shm.Create(dir, shm.WriterOptions{DownAfter: downAfter, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return &table{t, dir, w, clk}
}

// put stores a status of node from addr with boot b, seen now.
func (tb *table) put(node int, addr string, b byte) {
	tb.t.Helper()
	now := tb.clk.Now()
	s := &sample.Sample{Time: now, BootTime: t0.Add(-time.Duration(b) * time.Hour), BootID: boot(b),
		CPUs: make([]sample.CPU, 1), Memory: sample.Memory{Total: 1 << 30}}
	if err := tb.w.Put(node, netip.AddrPortFrom(ip(addr), 3040), now, s); err != nil {
		tb.t.Fatal(err)
	}
}

func newWatcher(t testing.TB, dir string, clk *clock, buffer int) *Watcher {
	return NewWatcher(WatcherConfig{Dir: dir, Buffer: buffer, Logger: quiet, Now: clk.Now})
}

// drain returns the events waiting on the channel.
func drain(w *Watcher) []Event {
	var got []Event
	for {
		select {
		case e := <-w.Events():
			got = append(got, e)
		default:
			return got
		}
	}
}

// sameEvents compares events with their times as instants (the table's
// times come back in the local zone).
func sameEvents(got, want []Event) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if utc(got[i]) != utc(want[i]) {
			return false
		}
	}
	return true
}

func utc(e Event) Event {
	switch e := e.(type) {
	case RebootSeen:
		e.At = e.At.UTC()
		return e
	case Returned:
		e.At = e.At.UTC()
		return e
	}
	return e
}

func scan(t testing.TB, w *Watcher) {
	t.Helper()
	if err := w.Scan(); err != nil {
		t.Fatalf("scan: %v", err)
	}
}

// Against a real table written by shm.Writer: a tracked host ties to its
// node by address, its reboot is one event, new samples of the same boot
// are none, and a host at no node's address is unknown.
func TestWatcherRealTable(t *testing.T) {
	clk := &clock{t: t0}
	tb := newTable(t, clk)
	tb.put(1, "10.0.0.1", 1)
	tb.put(2, "fd00::2", 1)
	tb.put(3, "10.0.0.3", 7)
	w := newWatcher(t, tb.dir, clk, 0)
	for _, h := range []Host{
		{Name: "c1", Addrs: []netip.Addr{ip("10.0.0.1")}},
		{Name: "c2", Addrs: []netip.Addr{ip("10.0.0.2"), ip("fd00::2")}},
		{Name: "nostats", Addrs: []netip.Addr{ip("10.0.0.99")}},
	} {
		if err := w.Track(h); err != nil {
			t.Fatal(err)
		}
	}
	scan(t, w)
	if got := drain(w); len(got) != 0 {
		t.Errorf("first sighting: %+v", got)
	}
	for name, want := range map[string]State{"c1": Up, "c2": Up, "nostats": Unknown} {
		if l := w.Liveness(name); l.State != want {
			t.Errorf("%s: %+v, want %v", name, l, want)
		}
	}
	if l := w.Liveness("c2"); l.Node != 2 || l.BootID != boot(1) {
		t.Errorf("c2 tied to node %d boot %x, want node 2 boot 1", l.Node, l.BootID)
	}

	clk.Add(time.Second)
	tb.put(1, "10.0.0.1", 1)
	tb.put(2, "fd00::2", 2)
	scan(t, w)
	scan(t, w)
	want := RebootSeen{Host: "c2", Node: 2, OldBoot: boot(1), NewBoot: boot(2), At: clk.Now()}
	if got := drain(w); !sameEvents(got, []Event{want}) {
		t.Errorf("after c2 rebooted: %+v, want only %+v", got, want)
	}
	clk.Add(time.Second)
	tb.put(2, "fd00::2", 2)
	scan(t, w)
	if got := drain(w); len(got) != 0 {
		t.Errorf("new samples of the same boot: %+v", got)
	}

	// c1 goes silent; a day of scans later it is gone; it comes back.
	// c2 reports once an hour: silent between, so each report is a return.
	for range 25 {
		clk.Add(time.Hour)
		tb.put(2, "fd00::2", 2)
		scan(t, w)
		if got := drain(w); !sameEvents(got, []Event{Returned{Host: "c2", Node: 2, At: clk.Now()}}) {
			t.Fatalf("c2 reporting hourly: %+v", got)
		}
	}
	if l := w.Liveness("c1"); l.State != Gone {
		t.Errorf("c1 after a day of silence: %v", l.State)
	}
	tb.put(1, "10.0.0.1", 1)
	scan(t, w)
	if got := drain(w); !sameEvents(got, []Event{Returned{Host: "c1", Node: 1, At: clk.Now()}}) {
		t.Errorf("c1 back: %+v", got)
	}
}

// A slow consumer never blocks the scans: what the channel cannot take
// waits, one RebootSeen and one Returned per host at most, a later reboot
// of a waiting host merged into its event (first old boot, last new).
func TestWatcherSlowConsumer(t *testing.T) {
	clk := &clock{t: t0}
	tb := newTable(t, clk)
	w := newWatcher(t, tb.dir, clk, 1)
	const hosts = 3
	for i := range hosts {
		tb.put(i, fmt.Sprintf("10.0.0.%d", i), 0)
		w.Track(Host{Name: fmt.Sprint("h", i), Addrs: []netip.Addr{ip(fmt.Sprintf("10.0.0.%d", i))}})
	}
	scan(t, w)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for b := byte(1); b <= 100; b++ {
			clk.Add(time.Second)
			for i := range hosts {
				tb.put(i, fmt.Sprintf("10.0.0.%d", i), b)
			}
			scan(t, w)
		}
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("scans blocked on a consumer that does not read")
	}
	w.mu.Lock()
	backlog := len(w.pending)
	w.mu.Unlock()
	if backlog != hosts {
		t.Errorf("backlog of %d hosts, want %d (one per host)", backlog, hosts)
	}
	// The channel holds h0's first reboot; the rest is merged per host,
	// oldest first.
	got := drain(w)
	for range hosts {
		scan(t, w)
		got = append(got, drain(w)...)
	}
	want := []Event{
		RebootSeen{Host: "h0", Node: 0, OldBoot: boot(0), NewBoot: boot(1), At: t0.Add(time.Second)},
		RebootSeen{Host: "h1", Node: 1, OldBoot: boot(0), NewBoot: boot(100), At: clk.Now()},
		RebootSeen{Host: "h2", Node: 2, OldBoot: boot(0), NewBoot: boot(100), At: clk.Now()},
		RebootSeen{Host: "h0", Node: 0, OldBoot: boot(1), NewBoot: boot(100), At: clk.Now()},
	}
	if !sameEvents(got, want) {
		t.Errorf("delivered\n%+v\nwant\n%+v", got, want)
	}
	if w.Untrack("h0"); len(w.pending) != 0 || len(w.order) != 0 {
		t.Errorf("backlog left: %v %v", w.pending, w.order)
	}
}

// Untracking a host drops what it had waiting.
func TestWatcherUntrackDropsBacklog(t *testing.T) {
	clk := &clock{t: t0}
	tb := newTable(t, clk)
	w := newWatcher(t, tb.dir, clk, 1)
	for i := range 2 {
		tb.put(i, fmt.Sprintf("10.0.0.%d", i), 1)
		w.Track(Host{Name: fmt.Sprint("h", i), Addrs: []netip.Addr{ip(fmt.Sprintf("10.0.0.%d", i))}})
	}
	scan(t, w)
	clk.Add(time.Second)
	tb.put(0, "10.0.0.0", 2)
	tb.put(1, "10.0.0.1", 2)
	scan(t, w)
	w.Untrack("h1")
	scan(t, w)
	if got := drain(w); len(got) != 1 || got[0].HostName() != "h0" {
		t.Errorf("delivered %+v, want h0's reboot only", got)
	}
}

// No table, or a table no recvstats writes: the scan says so, naming
// the path, and nobody's silence counts while it lasts; once a table is
// written again the scans resume.
func TestWatcherBlind(t *testing.T) {
	clk := &clock{t: t0}
	dir := t.TempDir()
	w := newWatcher(t, dir, clk, 0)
	w.Track(Host{Name: "c1", Addrs: []netip.Addr{ip("10.0.0.1")}})
	if err := w.Scan(); err == nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("scan without a table: %v, want an error naming %s", err, dir)
	}
	wr, err := shm.Create(dir, shm.WriterOptions{DownAfter: downAfter, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	tb := &table{t, dir, wr, clk}
	tb.put(1, "10.0.0.1", 1)
	scan(t, w)
	if l := w.Liveness("c1"); l.State != Up {
		t.Fatalf("c1: %v", l.State)
	}
	wr.Close() // recvstats stops
	clk.Add(48 * time.Hour)
	if err := w.Scan(); err == nil || !strings.Contains(err.Error(), "not being written") {
		t.Errorf("scan of a table nobody writes: %v", err)
	}
	if l := w.Liveness("c1"); l.State != Silent {
		t.Errorf("c1 after two days without telemetry: %v, want silent (not gone)", l.State)
	}
	if st := w.Status(); st.Hosts != 1 || !st.LastScan.Equal(t0) || !strings.Contains(st.Blind, "not being written") {
		t.Errorf("status while blind: %+v", st)
	}
	wr, err = shm.Create(dir, shm.WriterOptions{DownAfter: downAfter, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer wr.Close()
	scan(t, w)
	if l := w.Liveness("c1"); l.State != Gone {
		t.Errorf("c1 once recvstats runs again, two days after its last status: %v, want gone", l.State)
	}
	if st := w.Status(); st.Blind != "" || !st.LastScan.Equal(clk.Now()) {
		t.Errorf("status once readable: %+v", st)
	}
}

// A writer whose pid this process cannot see (recvstats in another pid
// namespace) still counts while it writes records; once it stops
// writing, the table counts as not written.
func TestWatcherWriterInOtherPIDNamespace(t *testing.T) {
	clk := &clock{t: t0}
	tb := newTable(t, clk)
	w := newWatcher(t, tb.dir, clk, 0)
	w.Track(Host{Name: "c1", Addrs: []netip.Addr{ip("10.0.0.1")}})
	tb.put(1, "10.0.0.1", 1)
	if err := beostattest.SetWriterPID(tb.dir, 1<<22+1); err != nil { // above pid_max: no such process
		t.Fatal(err)
	}
	// The first look cannot tell a live table from a dead one's leftovers.
	if err := w.Scan(); err == nil {
		t.Error("first scan of a table whose writer is not seen: no error")
	}
	tb.put(1, "10.0.0.1", 1)
	scan(t, w)
	clk.Add(time.Second)
	if err := w.Scan(); err == nil {
		t.Error("scan of a table with no writer and no new records: no error")
	}
	if st := w.Status(); !st.LastScan.Equal(t0) {
		t.Errorf("last scan %v, want the one that saw new records", st.LastScan)
	}
}

// Run scans every period until cancelled, picking up a table that
// appears after it started.
func TestWatcherRun(t *testing.T) {
	dir := t.TempDir()
	w := NewWatcher(WatcherConfig{Dir: dir, Period: 10 * time.Millisecond, Logger: quiet})
	w.Track(Host{Name: "c1", Addrs: []netip.Addr{ip("10.0.0.1")}})
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error)
	go func() { ran <- w.Run(ctx) }()
	time.Sleep(30 * time.Millisecond)
	wr, err := shm.Create(dir, shm.WriterOptions{DownAfter: time.Minute, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer wr.Close()
	put := func(b byte) {
		s := &sample.Sample{Time: time.Now(), BootTime: t0, BootID: boot(b), CPUs: make([]sample.CPU, 1)}
		if err := wr.Put(1, netip.AddrPortFrom(ip("10.0.0.1"), 3040), time.Now(), s); err != nil {
			t.Fatal(err)
		}
	}
	put(1)
	for deadline := time.Now().Add(30 * time.Second); w.Liveness("c1").State != Up; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("c1 never up")
		}
	}
	put(2)
	select {
	case e := <-w.Events():
		if r, ok := e.(RebootSeen); !ok || r.NewBoot != boot(2) {
			t.Errorf("event %+v, want the reboot", e)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no event")
	}
	cancel()
	if err := <-ran; err != nil {
		t.Error(err)
	}
}

// A scan allocates nothing per node: the same at 10 nodes as at 2000.
func TestScanAllocsDoNotGrowWithTable(t *testing.T) {
	allocs := func(nodes int) float64 {
		clk := &clock{t: t0}
		tb := newTable(t, clk)
		w := newWatcher(t, tb.dir, clk, 0)
		w.Track(Host{Name: "c1", Addrs: []netip.Addr{ip("10.0.0.1")}, Hostname: "c1.example"})
		for i := range nodes {
			// Hostnames a tracked host does not have, in upper case, so
			// the tie check folds case and splits labels on every node.
			s := &sample.Sample{Time: clk.Now(), BootID: boot(1), CPUs: make([]sample.CPU, 1),
				Memory: sample.Memory{Total: 1 << 30}, Hostname: fmt.Sprintf("NODE%d.EXAMPLE", i)}
			if err := tb.w.Put(i, netip.AddrPortFrom(ip(fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255)), 3040), clk.Now(), s); err != nil {
				t.Fatal(err)
			}
		}
		scan(t, w) // first scan sizes the reused buffers
		return testing.AllocsPerRun(20, func() { w.Scan() })
	}
	small, large := allocs(10), allocs(2000)
	if large > small {
		t.Errorf("a scan of 2000 nodes allocates %v times, of 10 nodes %v: allocation per node", large, small)
	}
}

func TestFormatBootID(t *testing.T) {
	id, err := sample.ParseBootID([]byte("d40c5db7-c748-4ded-8e2f-a94001c770f7\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := FormatBootID(id); got != "d40c5db7-c748-4ded-8e2f-a94001c770f7" {
		t.Errorf("FormatBootID: %s", got)
	}
}

// BenchmarkScan is one scan of a table of 100,000 nodes (the design's
// nodes per master) with 1000 hosts tracked.
func BenchmarkScan(b *testing.B) {
	clk := &clock{t: t0}
	dir := b.TempDir()
	wr, err := shm.Create(dir, shm.WriterOptions{InitialNodes: 100000, MaxNodes: 100000, DownAfter: downAfter, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	defer wr.Close()
	tb := &table{b, dir, wr, clk}
	w := newWatcher(b, dir, clk, 0)
	for i := range 100000 {
		a := fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255)
		tb.put(i, a, 1)
		if i%100 == 0 {
			w.Track(Host{Name: a, Addrs: []netip.Addr{ip(a)}})
		}
	}
	if err := w.Scan(); err != nil { // sizes the reused node list
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := w.Scan(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/100000, "ns/node")
}

// TestWatcherTiesByHostname: a host whose addresses telemetry never sees
// (NAT, another network) is still tied to its node by the hostname the
// node reports, read from the real table.
func TestWatcherTiesByHostname(t *testing.T) {
	clk := &clock{t: t0}
	tb := newTable(t, clk)
	put := func(b byte) {
		s := &sample.Sample{Time: clk.Now(), BootTime: t0.Add(-time.Duration(b) * time.Hour), BootID: boot(b),
			CPUs: make([]sample.CPU, 1), Memory: sample.Memory{Total: 1 << 30}, Hostname: "client7"}
		if err := tb.w.Put(7, netip.AddrPortFrom(ip("10.9.9.7"), 3040), clk.Now(), s); err != nil {
			t.Fatal(err)
		}
	}
	put(1)
	w := newWatcher(t, tb.dir, clk, 0)
	// rpc.statd gives the mon_name as hostname; the node's kernel says "client7".
	if err := w.Track(Host{Name: "client7.example", Addrs: []netip.Addr{ip("192.0.2.7")}, Hostname: "client7.example"}); err != nil {
		t.Fatal(err)
	}
	scan(t, w)
	if l := w.Liveness("client7.example"); l.State != Up || l.Node != 7 {
		t.Fatalf("tied by hostname: %+v, want up on node 7", l)
	}
	clk.Add(time.Second)
	put(2)
	scan(t, w)
	scan(t, w)
	want := RebootSeen{Host: "client7.example", Node: 7, OldBoot: boot(1), NewBoot: boot(2), At: clk.Now()}
	if got := drain(w); !sameEvents(got, []Event{want}) {
		t.Errorf("reboot by hostname: %+v, want %+v", got, want)
	}
}
