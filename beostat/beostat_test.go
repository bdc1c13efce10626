package beostat

import (
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hoststat/hoststat/beostat/beostattest"
	"github.com/hoststat/hoststat/shm"
	"github.com/hoststat/hoststat/telemetry/sample"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func newTable(t *testing.T) (*shm.Writer, *Table, time.Time) {
	dir := t.TempDir()
	w, err := shm.Create(dir, shm.WriterOptions{InitialNodes: 8, DownAfter: 10 * time.Second, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	now := time.Now()
	for node, seen := range map[int]time.Time{1: now.Add(-time.Second), 3: now.Add(-time.Minute)} { // 3 is down
		if err := beostattest.PutTwoSamples(w, node, seen); err != nil {
			t.Fatal(err)
		}
	}
	w.SetUpdateRequest(now.Add(-5 * time.Second))
	tab, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	tab.now = func() time.Time { return now }
	t.Cleanup(func() { tab.Close() })
	return w, tab, now
}

func TestLibbeostatCalls(t *testing.T) {
	_, tab, now := newTable(t)
	if got := tab.NodeCount(); got != 4 {
		t.Errorf("NodeCount = %d, want 4", got)
	}
	if nodes, err := tab.Nodes(); err != nil || len(nodes) != 2 || nodes[0] != 1 || nodes[1] != 3 {
		t.Errorf("Nodes = %v, %v", nodes, err)
	}
	for node, want := range map[int]bool{0: false, 1: true, 2: false, 3: false} {
		if up, err := tab.NodeAvailable(node); up != want || err != nil {
			t.Errorf("NodeAvailable(%d) = %v, %v; want %v", node, up, err, want)
		}
	}
	if got, err := tab.LastUpdate(1); err != nil || !got.Equal(now.Add(-time.Second)) {
		t.Errorf("LastUpdate(1) = %v, %v", got, err)
	}
	if got := tab.LastUpdateRequest(); !got.Equal(now.Add(-5 * time.Second)) {
		t.Errorf("LastUpdateRequest = %v", got)
	}
	if n, err := tab.CPUCount(1); n != 2 || err != nil {
		t.Errorf("CPUCount = %d, %v", n, err)
	}
	if tk, err := tab.CPUTicks(1, 1); err != nil || tk != (sample.Ticks{User: 125, Idle: 175}) {
		t.Errorf("CPUTicks = %+v, %v", tk, err)
	}
	for cpu, want := range []float32{50, 25} {
		if p, err := tab.CPUPercent(1, cpu); p != want || err != nil {
			t.Errorf("CPUPercent(1, %d) = %v, %v; want %v", cpu, p, err, want)
		}
	}
	if mhz, err := tab.MHz(1, 0); mhz != 3000 || err != nil {
		t.Errorf("MHz = %v, %v", mhz, err)
	}
	if m, err := tab.Memory(1); err != nil || m.Total != 16<<30 || MemUsed(m) != 4<<30 {
		t.Errorf("Memory = %+v, %v", m, err)
	}
	if l, err := tab.Load(1); err != nil || l.One != 1.5 || l.LastPID != 4242 {
		t.Errorf("Load = %+v, %v", l, err)
	}
	devs, err := tab.NetDevs(1)
	if err != nil || len(devs) != 2 || devs[1].Name != "eth0" || devs[1].RxBytes != 12000 ||
		devs[1].RxBytesPerSec != 1000 || devs[1].TxBytesPerSec != 500 {
		t.Errorf("NetDevs = %+v, %v", devs, err)
	}
	if n, err := tab.IdleCPUsOnNode(1, 30); n != 1 || err != nil {
		t.Errorf("IdleCPUsOnNode(1, 30) = %d, %v; want 1", n, err)
	}
	// Only up nodes count: node 3 is down.
	for thr, want := range map[float32]int{10: 0, 30: 1, 9999: 2} {
		if n, err := tab.IdleCPUs(thr); n != want || err != nil {
			t.Errorf("IdleCPUs(%v) = %d, %v; want %d", thr, n, err, want)
		}
	}
}

func TestErrorsNameNode(t *testing.T) {
	_, tab, _ := newTable(t)
	cases := []struct {
		err  error
		want error
		text string
	}{
		{errOf(tab.CPUCount(2)), ErrNeverSeen, "node 2: never seen"},
		{errOf(tab.Memory(7)), ErrNoSuchNode, "node 7: no such node"},
		{errOf(tab.Load(-1)), ErrNoSuchNode, "node -1: no such node"},
		{errOf(tab.CPUPercent(1, 2)), ErrNoSuchCPU, "node 1: no such CPU 2 (it has 2)"},
		{errOf(tab.NetDevs(0)), ErrNeverSeen, "node 0"},
		{errOf(tab.NodeAvailable(99)), ErrNoSuchNode, "node 99"},
	}
	for _, c := range cases {
		var ne *NodeError
		if !errors.Is(c.err, c.want) || !errors.As(c.err, &ne) || !strings.Contains(c.err.Error(), c.text) {
			t.Errorf("error %v; want %v containing %q", c.err, c.want, c.text)
		}
	}
}

func errOf[T any](_ T, err error) error { return err }

func TestStatusAndDetail(t *testing.T) {
	_, tab, _ := newTable(t)
	st, err := tab.Status()
	if err != nil || len(st) != 2 {
		t.Fatalf("Status = %v, %v", st, err)
	}
	s := st[0]
	if s.Node != 1 || s.Addr != "10.0.0.1:3040" || !s.Up || s.CPUs != 2 || s.CPUPercent != 37.5 ||
		s.MemTotal != 16<<30 || s.MemUsed != 4<<30 || s.Load1 != 1.5 || s.RxBytesPerSec != 1000 ||
		s.TxBytesPerSec != 500 || s.AgeSeconds != 1 || s.BootID != "01000000000000000000000000000000" {
		t.Errorf("Status[0] = %+v", s)
	}
	if st[1].Node != 3 || st[1].Up || st[1].AgeSeconds != 60 {
		t.Errorf("Status[1] = %+v", st[1])
	}
	d, err := tab.Detail(1)
	if err != nil || d.Status != s || len(d.PerCPU) != 2 || d.PerCPU[0].Percent != 50 || d.PerCPU[1].MHz != 2000 ||
		d.PerCPU[0].Model != "Test CPU" || len(d.Net) != 2 || d.Net[1].RxBytesPerSec != 1000 {
		t.Errorf("Detail = %+v, %v", d, err)
	}
	if _, err := tab.Detail(2); !errors.Is(err, ErrNeverSeen) {
		t.Errorf("Detail(2) = %v", err)
	}
}

func TestOpenMissing(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("Open of empty dir = %v", err)
	}
}

// A record left half-written by a dead recvstats: Status lists that node
// as unknown and the others as usual; IdleCPUs counts the others; the
// node's own calls fail naming it.
func TestStuckNodeIsUnknown(t *testing.T) {
	w, tab, _ := newTable(t)
	w.Close()
	if err := beostattest.LeaveMidWrite(filepath.Dir(tab.Path()), 3); err != nil {
		t.Fatal(err)
	}
	st, err := tab.Status()
	if err != nil || len(st) != 2 {
		t.Fatalf("Status = %+v, %v", st, err)
	}
	if st[0].Node != 1 || st[0].State != StateUp || st[0].Stale || st[0].Addr != "10.0.0.1:3040" {
		t.Errorf("the other node: %+v", st[0])
	}
	if st[1].Node != 3 || st[1].State != StateUnknown || st[1].Up || st[1].Stale || !strings.Contains(st[1].Error, "died mid-write") {
		t.Errorf("the stuck node: %+v", st[1])
	}
	if n, err := tab.IdleCPUs(100); n != 2 || err != nil {
		t.Errorf("IdleCPUs = %d, %v; want node 1's 2 CPUs", n, err)
	}
	if _, err := tab.Memory(3); !errors.Is(err, shm.ErrWriterStuck) || !strings.Contains(err.Error(), "node 3") {
		t.Errorf("Memory(3) = %v", err)
	}
}
