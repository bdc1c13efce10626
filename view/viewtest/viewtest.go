// Package viewtest keeps a shared-memory node table written by the real
// shm writer, as recvstats would, with figures that follow a known rule,
// for the tests and benchmarks of beostatus.
package viewtest

import (
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hoststat/hoststat/shm"
	"github.com/hoststat/hoststat/telemetry/rates"
	"github.com/hoststat/hoststat/telemetry/sample"
)

// Table is a node table whose nodes report when Refresh is called, except
// those stopped.
type Table struct {
	Dir string
	W   *shm.Writer

	mu      sync.Mutex
	last    time.Time
	nodes   int
	round   int
	stopped map[int]bool
	samples map[int]*sample.Sample
	fig     rates.Rates
	hist    *shm.HistoryWriter // nil: no history kept
	// Busy is the CPU busy percent of node in round; default
	// DefaultBusy. Set before the first Refresh.
	Busy func(node, round int) int
}

// Memory figures of every node.
const (
	MemTotal  = 8 << 30
	SwapTotal = 1 << 30
	SwapFree  = 512 << 20
	Buffers   = 1 << 20
	Cached    = 2 << 20
	Shared    = 3 << 20
)

// DefaultBusy gives each node its own steady figure: (13·node) mod 100.
func DefaultBusy(node, round int) int { return 13 * node % 100 }

// New lays out a table in a temporary directory of t with nodes 0..n-1,
// each reported twice (so rates and percents exist), the last time now.
func New(t testing.TB, n int, downAfter time.Duration) *Table {
	tb := &Table{Dir: t.TempDir(), nodes: n, stopped: map[int]bool{}, samples: map[int]*sample.Sample{}, Busy: DefaultBusy}
	w, err := shm.Create(tb.Dir, shm.WriterOptions{InitialNodes: n, DownAfter: downAfter,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	tb.W = w
	now := time.Now()
	for _, at := range []time.Time{now.Add(-time.Second), now} {
		if err := tb.RefreshAt(at); err != nil {
			t.Fatal(err)
		}
	}
	return tb
}

// Addr is where node reports from: 10.1.H.L:3040.
func Addr(node int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(node >> 8), byte(node)}), 3040)
}

// Stop makes node fall silent: Refresh leaves it out.
func (tb *Table) Stop(node int) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	tb.stopped[node] = true
}

// RenameDevice gives node's device i (0 lo, 1 eth0) another name from its
// next report on: a node names its devices as it likes.
func (tb *Table) RenameDevice(node, i int, name string) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	tb.samples[node].Net[i].Name = name
}

// Refresh reports every node not stopped, seen now.
func (tb *Table) Refresh() error { return tb.RefreshAt(time.Now()) }

// RefreshAt reports every node not stopped, seen at seen. In each report
// node's 2 CPUs are Busy(node, round) percent busy for the last 100
// ticks (¾ user, ¼ system); memory used is the same percent of MemTotal; load1 is Busy/50
// (Busy/100 per CPU); eth0 receives Busy·1000 bytes and sends 500 per
// report.
func (tb *Table) RefreshAt(seen time.Time) error {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	tb.round++
	tb.last = seen
	for node := range tb.nodes {
		if tb.stopped[node] {
			continue
		}
		busy := uint64(tb.Busy(node, tb.round))
		s := tb.samples[node]
		var prev *sample.Sample // what the table holds: rates come from it, as recvstats derives them
		if s != nil {
			p := *s
			p.CPUs, p.Net = slices.Clone(s.CPUs), slices.Clone(s.Net)
			prev = &p
		}
		if s == nil {
			s = &sample.Sample{
				BootTime: seen.Add(-time.Hour).Truncate(time.Second), BootID: [16]byte{byte(node), byte(node >> 8), 1},
				CPUs: []sample.CPU{{MHz: 2000, Model: "Lab CPU"}, {MHz: 2001, Model: "Lab CPU"}},
				Net:  []sample.NetDev{{Name: "lo"}, {Name: "eth0"}},
			}
			tb.samples[node] = s
		}
		s.Time = seen
		s.Total = sample.Ticks{}
		for i := range s.CPUs {
			t := &s.CPUs[i].Ticks
			t.User += busy * 3 / 4
			t.System += busy - busy*3/4
			t.Idle += 100 - busy
			s.Total.User += t.User
			s.Total.System += t.System
			s.Total.Idle += t.Idle
		}
		avail := MemTotal / 100 * (100 - busy)
		s.Memory = sample.Memory{Total: MemTotal, Available: avail, Free: avail / 2, Buffers: Buffers, Cached: Cached,
			Shared: Shared, SwapTotal: SwapTotal, SwapFree: SwapFree}
		s.Load = sample.Load{One: float64(busy) / 50, Five: 0.5, Fifteen: 0.25, Running: 1, Total: 100, LastPID: 4242}
		s.Net[1].RxBytes += busy * 1000
		s.Net[1].TxBytes += 500
		s.Net[1].RxPackets++
		s.Net[1].TxPackets++
		tb.fig.Between(prev, s)
		if err := tb.W.PutRates(node, Addr(node), seen, s, &tb.fig); err != nil {
			return err
		}
		if tb.hist != nil { // as recvstats appends what it stored
			err := tb.hist.Append(node, seen, shm.Figures{Up: true, CPUPercent: float64(tb.fig.TotalPercent),
				Load1: s.Load.One, MemUsed: s.Memory.Used(), SwapUsed: s.Memory.SwapUsed(),
				RxBytesPerSec: tb.fig.RxBytesPerSec, TxBytesPerSec: tb.fig.TxBytesPerSec})
			if err != nil && !errors.Is(err, shm.ErrHistoryFull) {
				return err
			}
		}
	}
	return nil
}

// Past is what a node reported at one time of the past: busy as Busy
// is, or down (nothing heard).
type Past func(node int, at time.Time) (busy int, up bool)

// KeepHistory starts the history file beside the table, as recvstats
// keeps it, with the default point counts for at most 1024 nodes (the
// first 1024; filling more takes long), and fills it
// with what every node reported over the span up to now: a point every
// step, by past. From then on every report
// is appended too.
func (tb *Table) KeepHistory(t testing.TB, span, step time.Duration, past Past) *shm.HistoryWriter {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	// Every node's slot reserved at once: filling the past never meets
	// a reservation under way.
	h, err := tb.W.OpenHistory(shm.HistoryOptions{Nodes: 1024, Initial: max(min(tb.nodes, 1024), 1)})
	if err != nil {
		t.Fatal(err)
	}
	tb.hist = h
	// Up to now, again until caught up (filling takes a while under the
	// race detector), so that the next report follows on without a gap.
	from := time.Now().Add(-span)
	for end := time.Now(); ; end = time.Now() {
		for node := range min(tb.nodes, 1024) {
			for at := from; !at.After(end); at = at.Add(step) {
				busy, up := past(node, at)
				if !up {
					continue // recvstats writes nothing for a silent node
				}
				if err := h.Append(node, at, PastFigures(busy)); err != nil {
					t.Fatal(err)
				}
			}
		}
		from = end.Add(step)
		if time.Since(end) < step {
			break
		}
	}
	return h
}

// PastFigures are the history figures of a report of busy percent, as
// RefreshAt reports it.
func PastFigures(busy int) shm.Figures {
	b := uint64(busy)
	m := sample.Memory{Total: MemTotal, Available: MemTotal / 100 * (100 - b), SwapTotal: SwapTotal, SwapFree: SwapFree}
	return shm.Figures{Up: true, CPUPercent: float64(busy), Load1: float64(busy) / 50, MemUsed: m.Used(),
		SwapUsed: m.SwapUsed(), RxBytesPerSec: float64(busy) * 1000, TxBytesPerSec: 500}
}

// Step reports every node not stopped, seen a second after the last
// report, so that rates come out exact: eth0 in Busy·1000 B/s, out 500 B/s.
func (tb *Table) Step() error {
	tb.mu.Lock()
	next := tb.last.Add(time.Second)
	tb.mu.Unlock()
	return tb.RefreshAt(next)
}

// Sample is the last sample node reported.
func (tb *Table) Sample(node int) sample.Sample {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	s := *tb.samples[node]
	s.CPUs = append([]sample.CPU(nil), s.CPUs...)
	s.Net = append([]sample.NetDev(nil), s.Net...)
	return s
}

// Run refreshes the table every period until stop is closed; the
// returned channel is closed when it has returned.
func (tb *Table) Run(t testing.TB, period time.Duration, stop <-chan struct{}) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		tk := time.NewTicker(period)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
				if err := tb.Refresh(); err != nil {
					t.Error(err)
					return
				}
			}
		}
	}()
	return done
}
