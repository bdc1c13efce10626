package view

import (
	"slices"
	"testing"
	"time"

	"github.com/hoststat/hoststat/view/viewtest"
)

func openLab(t *testing.T, nodes int, downAfter time.Duration) (*viewtest.Table, *TableSource) {
	t.Helper()
	tb := viewtest.New(t, nodes, downAfter)
	src, err := OpenTable(tb.Dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return tb, src
}

func nodeNumbers(ns []Node) []int {
	out := make([]int, len(ns))
	for i := range ns {
		out[i] = ns[i].Node
	}
	return out
}

func TestSnapshotReadsEveryNodeWithItsFigures(t *testing.T) {
	_, src := openLab(t, 5, time.Minute)
	snap, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if got := nodeNumbers(snap.Nodes); !slices.Equal(got, []int{0, 1, 2, 3, 4}) {
		t.Fatalf("nodes %v", got)
	}
	if !snap.WriterAlive || snap.DownAfter != time.Minute {
		t.Errorf("writer alive %v, down-after %v", snap.WriterAlive, snap.DownAfter)
	}
	n := snap.Nodes[3] // busy 39 %
	if n.State != Up || n.CPUPercent != 39 || n.Level(FigCPU) != 0.39 || n.Load1 != 0.78 || n.Level(FigLoad) != 0.39 {
		t.Errorf("node 3: state %v cpu %v (level %v) load %v (level %v)", n.State, n.CPUPercent, n.Level(FigCPU), n.Load1, n.Level(FigLoad))
	}
	if got := n.Value(FigMem); got != "39%" {
		t.Errorf("node 3 memory %s, want 39%%", got)
	}
	if n.Addr != "10.1.0.3:3040" {
		t.Errorf("node 3 addr %q", n.Addr)
	}
	if _, err := src.Detail(7); err == nil {
		t.Error("detail of a node not in the table: no error")
	}
}

func TestStates(t *testing.T) {
	for _, c := range []struct {
		up   bool
		age  float64
		want State
	}{{true, 1, Up}, {true, 5, Late}, {false, 10, Down}, {false, 0, Down}} {
		if got := stateOf(c.up, c.age, 10*time.Second); got != c.want {
			t.Errorf("up %v age %v: %v, want %v", c.up, c.age, got, c.want)
		}
	}
}

func TestSortAndFilter(t *testing.T) {
	nodes := []Node{
		{Node: 1, CPUPercent: 10, Addr: "10.0.0.1:3040"},
		{Node: 2, CPUPercent: 90, State: Down, Addr: "10.0.0.2:3040"},
		{Node: 3, CPUPercent: 50, State: Late, Addr: "192.168.1.3:3040"},
		{Node: 12, CPUPercent: 70, Addr: "10.0.0.12:3040"},
	}
	for _, c := range []struct {
		order Order
		want  []int
	}{{ByNode, []int{1, 2, 3, 12}}, {ByFigure, []int{2, 12, 3, 1}}, {ByState, []int{2, 3, 1, 12}}} {
		ns := slices.Clone(nodes)
		slices.Reverse(ns)
		Sort(ns, c.order, FigCPU)
		if got := nodeNumbers(ns); !slices.Equal(got, c.want) {
			t.Errorf("sort by %v: %v, want %v", c.order, got, c.want)
		}
	}
	for q, want := range map[string][]int{
		"":             {1, 2, 3, 12},
		"down":         {2},
		"up":           {1, 12},
		"late":         {3},
		"2-12":         {2, 3, 12},
		"12":           {12},
		"192.168":      {3},
		"10.0. up":     {1, 12},
		"nothing-here": {},
	} {
		if got := nodeNumbers(Filter(slices.Clone(nodes), q)); !slices.Equal(got, want) {
			t.Errorf("filter %q: %v, want %v", q, got, want)
		}
	}
}

func TestColourRampRunsGreenToRed(t *testing.T) {
	r0, g0, _ := RGB(0)
	r1, g1, _ := RGB(1)
	if !(g0 > r0 && r1 > g1) {
		t.Errorf("idle %d,%d busy %d,%d: idle should be green, busy red", r0, g0, r1, g1)
	}
}

func TestEncoderSendsOnlyWhatChanged(t *testing.T) {
	tb, src := openLab(t, 4, time.Minute)
	if err := tb.Step(); err != nil { // rates over exactly one second from here on
		t.Fatal(err)
	}
	e := NewEncoder()
	snap, _ := src.Snapshot()
	f := e.Next(&snap)
	if len(f.Rows) != 4 || f.Seq != 1 {
		t.Fatalf("first frame: %d rows, seq %d", len(f.Rows), f.Seq)
	}
	// Same figures again: nothing to send.
	if err := tb.Step(); err != nil {
		t.Fatal(err)
	}
	snap, _ = src.Snapshot()
	if f = e.Next(&snap); len(f.Rows) != 0 || f.Seq != 2 {
		t.Fatalf("unchanged table: %d rows (%v), seq %d", len(f.Rows), f.Rows, f.Seq)
	}
	// Node 2 gets busier: only its row is sent.
	tb.Busy = func(node, round int) int {
		if node == 2 {
			return 99
		}
		return viewtest.DefaultBusy(node, round)
	}
	if err := tb.Step(); err != nil {
		t.Fatal(err)
	}
	snap, _ = src.Snapshot()
	f = e.Next(&snap)
	if len(f.Rows) != 1 || f.Rows[0][0] != 2 || f.Rows[0][2] != 99 {
		t.Fatalf("after node 2 changed: rows %v", f.Rows)
	}
	// A node that leaves the table is sent as gone.
	snap.Nodes = snap.Nodes[1:]
	if f = e.Next(&snap); !slices.Equal(f.Gone, []int{0}) {
		t.Errorf("gone %v, want [0]", f.Gone)
	}
	full := e.Full()
	if !full.Full || full.Seq != 4 || len(full.Rows) != 3 || full.Rows[0][0] != 1 {
		t.Errorf("full frame %+v", full)
	}
}

func TestTwoDigits(t *testing.T) {
	for in, want := range map[float64]int64{0: 0, 42.4: 42, 1234: 1200, 98765: 99000, -3: 0} {
		if got := twoDigits(in); got != want {
			t.Errorf("twoDigits(%v) = %d, want %d", in, got, want)
		}
	}
}

// FuzzFilter: a filter typed by a user never panics, and keeps a subset.
func FuzzFilter(f *testing.F) {
	for _, s := range []string{"", "down", "10-19", "12", "10.0.", "1-", "-1", "9999999999999999999-1", "up late"} {
		f.Add(s)
	}
	nodes := []Node{{Node: 1, Addr: "10.0.0.1:3040"}, {Node: 12, State: Down}, {Node: 300, State: Late, Host: "n300"}}
	f.Fuzz(func(t *testing.T, q string) {
		got := Filter(slices.Clone(nodes), q)
		if len(got) > len(nodes) {
			t.Fatalf("filter %q grew the list", q)
		}
	})
}
