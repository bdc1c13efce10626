package shm

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hoststat/hoststat/telemetry/rates"
	"github.com/hoststat/hoststat/telemetry/sample"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

var base = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func create(t testing.TB, dir string, opts WriterOptions) *Writer {
	t.Helper()
	opts.Logger = quiet
	w, err := Create(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func openReader(t testing.TB, dir string) *Reader {
	t.Helper()
	r, err := OpenReader(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func addrOf(node int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(node >> 16), byte(node >> 8), byte(node)}), 3040)
}

// counterSample is a sample whose every field derives from c, so a reader
// can tell a consistent record from a torn one.
func counterSample(c uint64, cpus, nets int) *sample.Sample {
	s := &sample.Sample{
		Time:     base.Add(time.Duration(c) * time.Second),
		BootTime: base.Add(-time.Duration(c) * time.Second),
		Total:    sample.Ticks{User: 3 * c, Nice: c, System: 2 * c, Idle: 4 * c, IOWait: c + 1, IRQ: c + 2, SoftIRQ: c + 3, Steal: c + 4},
		Memory:   sample.Memory{Total: c, Free: c + 1, Available: c + 2, Buffers: c + 3, Cached: c + 4, Shared: c + 5, SwapTotal: c + 6, SwapFree: c + 7},
		Load:     sample.Load{One: float64(c), Five: float64(c) / 2, Fifteen: float64(c) / 4, Running: uint32(c), Total: uint32(c + 1), LastPID: uint32(c + 2)},
		CPUs:     make([]sample.CPU, cpus),
		Net:      make([]sample.NetDev, nets),
	}
	s.BootID[0] = 0xb0
	for i := range s.CPUs {
		k := c + uint64(i)
		s.CPUs[i] = sample.CPU{
			Ticks: sample.Ticks{User: k, Nice: k + 1, System: k + 2, Idle: k + 3, IOWait: k + 4, IRQ: k + 5, SoftIRQ: k + 6, Steal: k + 7},
			MHz:   float64(k) + 0.5,
			Model: "Test CPU model",
		}
	}
	for i := range s.Net {
		k := c*10 + uint64(i)
		s.Net[i] = sample.NetDev{Name: fmt.Sprintf("eth%d", i),
			RxBytes: k, RxPackets: k + 1, RxErrors: k + 2, RxDrops: k + 3, TxBytes: k + 4, TxPackets: k + 5, TxErrors: k + 6, TxDrops: k + 7}
	}
	return s
}

// checkCounter reports how rec differs from counterSample of the counter
// its memory total claims.
func checkCounter(rec *Record, cpus, nets int) error {
	c := rec.Sample.Memory.Total
	want := counterSample(c, cpus, nets)
	s := &rec.Sample
	switch {
	case !s.Time.Equal(want.Time), !s.BootTime.Equal(want.BootTime), s.BootID != want.BootID:
		return fmt.Errorf("counter %d: times %v %v", c, s.Time, s.BootTime)
	case s.Total != want.Total, s.Memory != want.Memory, s.Load != want.Load:
		return fmt.Errorf("counter %d: totals %+v %+v %+v", c, s.Total, s.Memory, s.Load)
	case !rec.LastSeen.Equal(want.Time):
		return fmt.Errorf("counter %d: last seen %v", c, rec.LastSeen)
	case len(s.CPUs) != cpus || len(s.Net) != nets || len(rec.CPUPercent) != cpus || len(rec.NetRates) != nets:
		return fmt.Errorf("counter %d: %d CPUs %d devices", c, len(s.CPUs), len(s.Net))
	}
	for i := range s.CPUs {
		if s.CPUs[i] != want.CPUs[i] {
			return fmt.Errorf("counter %d: cpu %d = %+v, want %+v", c, i, s.CPUs[i], want.CPUs[i])
		}
		if p := rec.CPUPercent[i]; p < 0 || p > 100 {
			return fmt.Errorf("counter %d: cpu %d percent %v", c, i, p)
		}
	}
	for i := range s.Net {
		if s.Net[i] != want.Net[i] {
			return fmt.Errorf("counter %d: dev %d = %+v, want %+v", c, i, s.Net[i], want.Net[i])
		}
	}
	return nil
}

// putCounter stores counterSample(c) for node, seen at the sample time.
func putCounter(w *Writer, node int, c uint64, cpus, nets int) error {
	s := counterSample(c, cpus, nets)
	return w.Put(node, addrOf(node), s.Time, s)
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	w := create(t, dir, WriterOptions{InitialNodes: 8, DownAfter: 5 * time.Second})
	defer w.Close()

	s1 := &sample.Sample{
		Time:     base,
		BootTime: base.Add(-time.Hour),
		BootID:   [16]byte{1, 2, 3},
		Total:    sample.Ticks{User: 200, Idle: 200},
		CPUs: []sample.CPU{
			{Ticks: sample.Ticks{User: 100, Idle: 100}, MHz: 2400.5, Model: "Xeon A"},
			{Ticks: sample.Ticks{User: 100, Idle: 100}, MHz: 1200, Model: "Xeon B"},
		},
		Memory: sample.Memory{Total: 8 << 30, Free: 1 << 30, Available: 4 << 30, Buffers: 1, Cached: 2, Shared: 3, SwapTotal: 4, SwapFree: 5},
		Load:   sample.Load{One: 0.5, Five: 1.25, Fifteen: 2, Running: 3, Total: 400, LastPID: 12345},
		Net: []sample.NetDev{
			{Name: "lo", RxBytes: 1000, TxBytes: 1000},
			{Name: "enp0s31f6-very-long-name", RxBytes: 1000, TxBytes: 5000, RxPackets: 7, TxDrops: 9},
		},
	}
	addr := netip.MustParseAddrPort("[fd00::7]:3040")
	if err := w.Put(3, addr, base.Add(time.Millisecond), s1); err != nil {
		t.Fatal(err)
	}
	s2 := *s1
	s2.Time = base.Add(2 * time.Second)
	s2.Total = sample.Ticks{User: 275, Idle: 325} // 75 of 200 busy
	s2.CPUs = []sample.CPU{
		{Ticks: sample.Ticks{User: 150, Idle: 150}, MHz: 2400.5, Model: "Xeon A"}, // 50 %
		{Ticks: sample.Ticks{User: 125, Idle: 175}, MHz: 1200, Model: "Xeon B"},   // 25 %
	}
	s2.Net = []sample.NetDev{
		{Name: "lo", RxBytes: 3000, TxBytes: 3000},
		{Name: "enp0s31f6-very-long-name", RxBytes: 3000, TxBytes: 9000, RxPackets: 8, TxDrops: 9},
	}
	seen := base.Add(2*time.Second + time.Millisecond)
	var fig rates.Rates
	fig.Between(s1, &s2)
	if err := w.PutRates(3, addr, seen, &s2, &fig); err != nil {
		t.Fatal(err)
	}
	w.SetUpdateRequest(base.Add(time.Second))

	r := openReader(t, dir)
	var rec Record
	ok, err := r.Read(3, &rec)
	if !ok || err != nil {
		t.Fatalf("Read(3) = %v, %v", ok, err)
	}
	if rec.Node != 3 || rec.Addr != addr || !rec.LastSeen.Equal(seen) {
		t.Errorf("node/addr/seen = %d %v %v", rec.Node, rec.Addr, rec.LastSeen)
	}
	got := &rec.Sample
	if !got.Time.Equal(s2.Time) || !got.BootTime.Equal(s2.BootTime) || got.BootID != s2.BootID ||
		got.Total != s2.Total || got.Memory != s2.Memory || got.Load != s2.Load {
		t.Errorf("fixed part = %+v", got)
	}
	if len(got.CPUs) != 2 || got.CPUs[0] != s2.CPUs[0] || got.CPUs[1] != s2.CPUs[1] {
		t.Errorf("CPUs = %+v", got.CPUs)
	}
	if want := []float32{50, 25}; len(rec.CPUPercent) != 2 || rec.CPUPercent[0] != want[0] || rec.CPUPercent[1] != want[1] {
		t.Errorf("CPUPercent = %v, want %v", rec.CPUPercent, want)
	}
	if rec.TotalPercent != 37.5 {
		t.Errorf("TotalPercent = %v, want 37.5", rec.TotalPercent)
	}
	if len(got.Net) != 2 || got.Net[0].Name != "lo" || got.Net[1].Name != "enp0s31f6-very-l" ||
		got.Net[1].RxBytes != 3000 || got.Net[1].RxPackets != 8 || got.Net[1].TxDrops != 9 {
		t.Errorf("Net = %+v (names are cut to 16 bytes)", got.Net)
	}
	if want := []Rate{{1000, 1000}, {1000, 2000}}; len(rec.NetRates) != 2 || rec.NetRates[0] != want[0] || rec.NetRates[1] != want[1] {
		t.Errorf("NetRates = %v, want %v", rec.NetRates, want)
	}

	sum, ok, err := r.Summary(3)
	if !ok || err != nil {
		t.Fatalf("Summary(3) = %v, %v", ok, err)
	}
	if sum.Node != 3 || sum.Addr != addr || sum.CPUs != 2 || sum.NetDevs != 2 || sum.Memory != s2.Memory ||
		sum.Load != s2.Load || sum.TotalPercent != 37.5 || sum.Repaired {
		t.Errorf("Summary = %+v", sum)
	}
	// Totals leave out loopback.
	if sum.RxBytesPerSec != 1000 || sum.TxBytesPerSec != 2000 {
		t.Errorf("Summary rates = %v/%v, want 1000/2000", sum.RxBytesPerSec, sum.TxBytesPerSec)
	}

	for _, n := range []int{-1, 0, 2, 4, 7, 8, 1 << 30} {
		if ok, err := r.Read(n, &rec); ok || err != nil {
			t.Errorf("Read(%d) = %v, %v; want false, nil", n, ok, err)
		}
		if _, ok, err := r.Summary(n); ok || err != nil {
			t.Errorf("Summary(%d) = %v, %v; want false, nil", n, ok, err)
		}
	}

	info := r.Info()
	if info.Capacity != 8 || info.NodeLimit != 4 || info.DownAfter != 5*time.Second ||
		!info.LastUpdateRequest.Equal(base.Add(time.Second)) || info.WriterPID != os.Getpid() || info.Puts != 2 {
		t.Errorf("Info = %+v", info)
	}
	if !info.Up(seen, seen.Add(4*time.Second)) || info.Up(seen, seen.Add(5*time.Second)) || info.Up(time.Time{}, seen) {
		t.Error("Info.Up does not follow DownAfter")
	}
	st, err := os.Stat(filepath.Join(dir, FileName))
	if err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("table mode = %v, %v; want 0644", st.Mode(), err)
	}
}

// The table stores the figures it is given, whatever the samples: which
// samples they span (a reboot, say) is recvstats' call, not storage's.
func TestPutStoresFiguresAsGiven(t *testing.T) {
	dir := t.TempDir()
	w := create(t, dir, WriterOptions{})
	defer w.Close()
	s := counterSample(100, 2, 2)
	if err := w.Put(0, addrOf(0), base, s); err != nil {
		t.Fatal(err)
	}
	s2 := counterSample(200, 2, 2)
	s2.BootID = [16]byte{9} // another boot: the table does not care
	fig := &rates.Rates{TotalPercent: 42, CPUPercent: []float32{1, 99}, Net: []rates.Net{{RxBytesPerSec: 7, TxBytesPerSec: 8}, {RxBytesPerSec: 9, TxBytesPerSec: 10}},
		RxBytesPerSec: 11, TxBytesPerSec: 12}
	if err := w.PutRates(0, addrOf(0), base.Add(time.Second), s2, fig); err != nil {
		t.Fatal(err)
	}
	r := openReader(t, dir)
	var rec Record
	if ok, err := r.Read(0, &rec); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if rec.TotalPercent != 42 || !slices.Equal(rec.CPUPercent, fig.CPUPercent) ||
		!slices.Equal(rec.NetRates, []Rate{{7, 8}, {9, 10}}) || rec.RxBytesPerSec != 11 || rec.TxBytesPerSec != 12 {
		t.Errorf("stored %v %v %v %v/%v; want the figures given", rec.TotalPercent, rec.CPUPercent, rec.NetRates, rec.RxBytesPerSec, rec.TxBytesPerSec)
	}
	// Last gives recvstats back the counters figures are derived from.
	var last sample.Sample
	if !w.Last(0, &last) || last.BootID != s2.BootID || !last.Time.Equal(s2.Time) || last.Total != s2.Total ||
		len(last.CPUs) != 2 || last.CPUs[1].Ticks != s2.CPUs[1].Ticks || len(last.Net) != 2 ||
		last.Net[1].Name != s2.Net[1].Name || last.Net[1].RxBytes != s2.Net[1].RxBytes || last.Net[1].TxBytes != s2.Net[1].TxBytes {
		t.Errorf("Last = %+v", last)
	}
	if w.Last(1, &last) {
		t.Error("Last of a node not in the table = true")
	}
	// Figures that do not fit the sample are refused, not half stored.
	if err := w.PutRates(0, addrOf(0), base, s2, &rates.Rates{CPUPercent: []float32{1}}); err == nil ||
		!strings.Contains(err.Error(), "figures") {
		t.Errorf("mismatched figures: %v", err)
	}
	// Put stores a first sample: percent since boot, no rates.
	if err := w.Put(0, addrOf(0), base.Add(2*time.Second), s2); err != nil {
		t.Fatal(err)
	}
	if ok, err := r.Read(0, &rec); !ok || err != nil {
		t.Fatal(ok, err)
	}
	var first rates.Rates
	first.Between(nil, s2)
	if rec.TotalPercent != first.TotalPercent || rec.NetRates[1] != (Rate{}) {
		t.Errorf("Put: total %v rates %v; want %v and none", rec.TotalPercent, rec.NetRates, first.TotalPercent)
	}
}

// A node that gains CPUs and devices moves to a bigger data slot; small
// nodes stay small.
func TestVariableSizeNodes(t *testing.T) {
	dir := t.TempDir()
	w := create(t, dir, WriterOptions{InitialNodes: 1000})
	defer w.Close()
	for n := range 1000 {
		if err := putCounter(w, n, uint64(n), 4, 3); err != nil {
			t.Fatal(err)
		}
	}
	st, _ := os.Stat(w.Path())
	if per := st.Size() / 1000; per > 2048 {
		t.Errorf("1000 small nodes take %d bytes each; want ≤ 2 KiB", per)
	}
	big := counterSample(7, 1024, 64)
	if err := w.Put(500, addrOf(500), base.Add(7*time.Second), big); err != nil {
		t.Fatal(err)
	}
	r := openReader(t, dir)
	var rec Record
	if ok, err := r.Read(500, &rec); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if err := checkCounter(&rec, 1024, 64); err != nil {
		t.Error(err)
	}
	// Neighbours were not overwritten.
	for _, n := range []int{0, 499, 501, 999} {
		if ok, err := r.Read(n, &rec); !ok || err != nil {
			t.Fatal(ok, err)
		}
		if err := checkCounter(&rec, 4, 3); err != nil {
			t.Errorf("node %d: %v", n, err)
		}
	}
	// And shrinks back in place.
	if err := putCounter(w, 500, 8, 2, 1); err != nil {
		t.Fatal(err)
	}
	if ok, err := r.Read(500, &rec); !ok || err != nil || checkCounter(&rec, 2, 1) != nil {
		t.Errorf("after shrink: %v %v %v", ok, err, checkCounter(&rec, 2, 1))
	}
}

func TestPutRejectsOutOfRange(t *testing.T) {
	w := create(t, t.TempDir(), WriterOptions{})
	defer w.Close()
	for _, n := range []int{-1, MaxNodes} {
		if err := putCounter(w, n, 1, 1, 1); err == nil {
			t.Errorf("Put(%d) accepted", n)
		}
	}
	if err := w.Put(0, addrOf(0), base, counterSample(1, MaxCPUs+1, 1)); err == nil || !strings.Contains(err.Error(), "CPUs") {
		t.Errorf("Put with %d CPUs: %v", MaxCPUs+1, err)
	}
}

func TestRemove(t *testing.T) {
	dir := t.TempDir()
	w := create(t, dir, WriterOptions{InitialNodes: 4})
	defer w.Close()
	for n := range 3 {
		putCounter(w, n, uint64(n), 1, 1)
	}
	w.Remove(2)
	w.Remove(0)
	r := openReader(t, dir)
	if _, ok, _ := r.Summary(0); ok {
		t.Error("removed node 0 still readable")
	}
	if _, ok, _ := r.Summary(1); !ok {
		t.Error("node 1 gone")
	}
	if got := r.Info().NodeLimit; got != 2 {
		t.Errorf("NodeLimit = %d, want 2", got)
	}
	if got := w.Nodes(); len(got) != 1 || got[0] != (Assignment{1, addrOf(1)}) {
		t.Errorf("Nodes = %v", got)
	}
	// The freed slot is reused.
	if err := putCounter(w, 0, 5, 1, 1); err != nil {
		t.Fatal(err)
	}
}

// Growth from -N 4 to 100,000 nodes while a reader keeps reading.
func TestGrowthWhileReading(t *testing.T) {
	const nodes = 100_000
	dir := t.TempDir()
	w := create(t, dir, WriterOptions{InitialNodes: 4, MaxNodes: nodes})
	defer w.Close()
	if err := putCounter(w, 0, 0, 1, 1); err != nil {
		t.Fatal(err)
	}
	r := openReader(t, dir)
	gen0 := r.Info().Generation

	started, done := make(chan struct{}), make(chan struct{})
	result := make(chan error, 1)
	go func() {
		var rec Record
		reads, n := 0, 0
		signalled := false
		gens := map[uint64]bool{}
		for {
			select {
			case <-done:
				gens[r.Info().Generation] = true // the last one too, however the reader was scheduled
				if reads == 0 || len(gens) < 2 {
					result <- fmt.Errorf("reader read %d records in %d generations; want it to read across growth", reads, len(gens))
					return
				}
				result <- nil
				return
			default:
			}
			info := r.Info()
			gens[info.Generation] = true
			limit := info.NodeLimit
			if n >= limit {
				n = 0
			}
			ok, err := r.Read(n, &rec)
			if err != nil {
				result <- err
				return
			}
			if ok {
				reads++
				if err := checkCounter(&rec, 1, 1); err != nil || rec.Node != n || rec.Sample.Memory.Total != uint64(n) {
					result <- fmt.Errorf("node %d: %v (counter %d)", n, err, rec.Sample.Memory.Total)
					return
				}
			}
			n += 97
			if reads == 1 && !signalled {
				close(started)
				signalled = true
			}
		}
	}()
	select { // the reader has read from the first generation
	case <-started:
	case err := <-result:
		t.Fatal(err)
	}
	for n := 1; n < nodes; n++ {
		if err := putCounter(w, n, uint64(n), 1, 1); err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	if err := <-result; err != nil {
		t.Fatal(err)
	}
	info := r.Info()
	if info.Capacity < nodes || info.NodeLimit != nodes || info.Generation == gen0 {
		t.Errorf("after growth: %+v (generation was %d)", info, gen0)
	}
	var rec Record
	for _, n := range []int{0, 1, 4, 5, 4096, nodes - 1} {
		if ok, err := r.Read(n, &rec); !ok || err != nil || rec.Sample.Memory.Total != uint64(n) || rec.Addr != addrOf(n) {
			t.Errorf("node %d after growth: %v %v %d %v", n, ok, err, rec.Sample.Memory.Total, rec.Addr)
		}
	}
	st, _ := os.Stat(w.Path())
	t.Logf("%d nodes: table %d bytes (%d per node), generation %d", nodes, st.Size(), st.Size()/nodes, info.Generation)
	if per := st.Size() / nodes; per > 2048 {
		t.Errorf("%d bytes per small node; want ≤ 2 KiB", per)
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".beostat-*"))
	if len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// A writer that closes and a new one that reuses the table in place.
func TestRestartReusesTable(t *testing.T) {
	dir := t.TempDir()
	w := create(t, dir, WriterOptions{InitialNodes: 16, DownAfter: time.Second})
	for n := range 10 {
		putCounter(w, n, uint64(n), 2, 2)
	}
	w.Remove(4)
	r := openReader(t, dir)
	gen := r.Info().Generation
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if pid := r.Info().WriterPID; pid != 0 {
		t.Errorf("WriterPID after Close = %d, want 0", pid)
	}
	var rec Record
	if ok, err := r.Read(3, &rec); !ok || err != nil || checkCounter(&rec, 2, 2) != nil {
		t.Fatalf("read with no writer: %v %v", ok, err)
	}

	w2 := create(t, dir, WriterOptions{InitialNodes: 4, DownAfter: 3 * time.Second})
	defer w2.Close()
	got := w2.Nodes()
	if len(got) != 9 {
		t.Fatalf("Nodes after restart = %v", got)
	}
	for _, a := range got {
		if a.Node == 4 || a.Addr != addrOf(a.Node) {
			t.Errorf("assignment %v", a)
		}
	}
	info := r.Info()
	if info.Generation != gen || info.DownAfter != 3*time.Second || info.WriterPID != os.Getpid() {
		t.Errorf("reader after restart: %+v; want generation %d kept", info, gen)
	}
	// Old data is still there, and new writes show up in the old mapping.
	if ok, err := r.Read(9, &rec); !ok || err != nil || checkCounter(&rec, 2, 2) != nil || rec.Sample.Memory.Total != 9 {
		t.Errorf("node 9 kept: %v %v", ok, err)
	}
	putCounter(w2, 9, 99, 2, 2)
	if ok, err := r.Read(9, &rec); !ok || err != nil || rec.Sample.Memory.Total != 99 {
		t.Errorf("node 9 rewritten: %v %v %d", ok, err, rec.Sample.Memory.Total)
	}
	// The kept record is the previous sample figures are derived from.
	var last sample.Sample
	if !w2.Last(9, &last) || last.Total != counterSample(99, 2, 2).Total {
		t.Fatalf("Last(9) after restart = %+v", last)
	}
	next := counterSample(199, 2, 2)
	var fig rates.Rates
	fig.Between(&last, next)
	w2.PutRates(9, addrOf(9), next.Time, next, &fig)
	if ok, _ := r.Read(9, &rec); !ok || rec.NetRates[0].RxBytesPerSec != 10 {
		t.Errorf("rate across restart = %v, want 10 B/s", rec.NetRates)
	}

	// Growth by the new writer retires the old mapping; the reader follows.
	for n := 100; n < 120; n++ {
		putCounter(w2, n, uint64(n), 2, 2)
	}
	if ok, err := r.Read(100, &rec); !ok || err != nil || rec.Sample.Memory.Total != 100 {
		t.Errorf("node 100 after growth: %v %v", ok, err)
	}
	if r.Info().Generation == gen {
		t.Error("generation did not change on growth")
	}
}

func TestSecondWriterRefused(t *testing.T) {
	dir := t.TempDir()
	w := create(t, dir, WriterOptions{})
	defer w.Close()
	_, err := Create(dir, WriterOptions{Logger: quiet})
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, FileName)) ||
		!strings.Contains(err.Error(), fmt.Sprint("pid ", os.Getpid())) {
		t.Fatalf("second Create = %v; want in-use error naming path and pid", err)
	}
}

// A writer killed mid-write leaves a record odd: readers give a clear
// error for it, and the next writer repairs it keeping the address.
func TestKilledWriterRecordIsRepaired(t *testing.T) {
	dir := t.TempDir()
	w := create(t, dir, WriterOptions{InitialNodes: 8})
	for n := range 4 {
		putCounter(w, n, uint64(n), 2, 1)
	}
	off := w.g.record(w.lookup(2))
	store64(w.m, off+rSeq, load64(w.m, off+rSeq)+1)
	le.PutUint64(w.m[off+rMemory:], 12345) // half-written
	// Die: drop the mapping and lock without Close's bookkeeping.
	unix.Munmap(w.m)
	w.f.Close()
	w.lock.Close()

	r := openReader(t, dir)
	var rec Record
	start := time.Now()
	_, err := r.Read(2, &rec)
	if !errors.Is(err, ErrWriterStuck) || !strings.Contains(err.Error(), "node 2") {
		t.Fatalf("Read of odd record = %v; want ErrWriterStuck naming node 2", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("stuck read took %v", d)
	}
	if ok, err := r.Read(1, &rec); !ok || err != nil {
		t.Errorf("other nodes unaffected: %v %v", ok, err)
	}

	w2 := create(t, dir, WriterOptions{})
	defer w2.Close()
	s, ok, err := r.Summary(2)
	if !ok || err != nil || !s.Repaired || s.Addr != addrOf(2) || s.Memory.Total != 0 || s.CPUs != 0 {
		t.Fatalf("repaired Summary = %+v %v %v", s, ok, err)
	}
	if ok, err := r.Read(2, &rec); !ok || err != nil || !rec.Repaired || len(rec.Sample.CPUs) != 0 {
		t.Errorf("repaired Read = %v %v, repaired %v, CPUs %+v", ok, err, rec.Repaired, rec.Sample.CPUs)
	}
	if len(w2.Nodes()) != 4 {
		t.Errorf("assignments after repair: %v", w2.Nodes())
	}
	if err := putCounter(w2, 2, 2, 2, 1); err != nil {
		t.Fatal(err)
	}
	if s, _, _ := r.Summary(2); s.Repaired || s.Memory.Total != 2 {
		t.Errorf("after next packet: %+v", s)
	}
	if ok, _ := r.Read(2, &rec); !ok || rec.Repaired {
		t.Errorf("after next packet Read says repaired %v", rec.Repaired)
	}
}

// A table of another layout (or garbage) is replaced and retired.
func TestIncompatibleTableReplaced(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	w := create(t, dir, WriterOptions{InitialNodes: 4})
	putCounter(w, 1, 1, 1, 1)
	w.Close()
	r := openReader(t, dir)
	gen := r.Info().Generation

	// Pretend a future version wrote it.
	f, _ := os.OpenFile(path, os.O_RDWR, 0)
	f.WriteAt([]byte{99, 0, 0, 0}, hVersion)
	f.Close()

	w2 := create(t, dir, WriterOptions{InitialNodes: 4})
	defer w2.Close()
	if len(w2.Nodes()) != 0 {
		t.Errorf("replaced table kept nodes: %v", w2.Nodes())
	}
	putCounter(w2, 2, 2, 1, 1)
	if _, ok, err := r.Summary(2); !ok || err != nil {
		t.Errorf("reader did not follow to the replacement: %v %v", ok, err)
	}
	if r.Info().Generation == gen {
		t.Error("generation kept")
	}

	// Garbage at the path is replaced too.
	w2.Close()
	os.WriteFile(path, []byte("not a table"), 0o644)
	w3 := create(t, dir, WriterOptions{})
	w3.Close()
	openReader(t, dir)
}

func TestOpenReaderErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	check := func(what string, wantErr error) {
		t.Helper()
		_, err := OpenReader(dir)
		if err == nil || !strings.Contains(err.Error(), path) || (wantErr != nil && !errors.Is(err, wantErr)) {
			t.Errorf("%s: OpenReader = %v; want error naming %s (%v)", what, err, path, wantErr)
		}
	}
	check("missing", os.ErrNotExist)
	os.WriteFile(path, nil, 0o644)
	check("empty", ErrNotTable)
	os.WriteFile(path, []byte(strings.Repeat("x", 5000)), 0o644)
	check("garbage", ErrNotTable)

	w := create(t, t.TempDir(), WriterOptions{InitialNodes: 2})
	putCounter(w, 0, 1, 1, 1)
	good, _ := os.ReadFile(w.Path())
	w.Close()
	os.WriteFile(path, good[:len(good)-4096], 0o644)
	check("truncated", ErrCorrupt)
	bad := append([]byte(nil), good...)
	bad[hCapacity]++
	os.WriteFile(path, bad, 0o644)
	check("checksum", ErrCorrupt)
	bad = append([]byte(nil), good...)
	bad[hVersion] = 9
	os.WriteFile(path, bad, 0o644)
	check("version", ErrVersion)
	os.Remove(path)
	os.Mkdir(path, 0o755)
	check("directory", nil)
}

func TestCreateErrorsNamePath(t *testing.T) {
	tmp := t.TempDir()
	file := filepath.Join(tmp, "file")
	os.WriteFile(file, nil, 0o644)
	for _, dir := range []string{file, filepath.Join(file, "sub")} {
		_, err := Create(dir, WriterOptions{Logger: quiet})
		if err == nil || !strings.Contains(err.Error(), dir) {
			t.Errorf("Create(%s) = %v; want error naming it", dir, err)
		}
	}
	if os.Geteuid() == 0 {
		t.Log("running as root: permission checks are bypassed, skipping the read-only directory case")
		return
	}
	ro := filepath.Join(tmp, "ro")
	os.Mkdir(ro, 0o555)
	_, err := Create(ro, WriterOptions{Logger: quiet})
	if err == nil || !strings.Contains(err.Error(), ro) || !errors.Is(err, os.ErrPermission) {
		t.Errorf("Create in read-only dir = %v", err)
	}
}

func TestCreateMakesDirAndModes(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "var", "shm")
	w := create(t, dir, WriterOptions{})
	defer w.Close()
	st, err := os.Stat(w.Path())
	if err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("table mode %v %v; want 0644 whatever the umask", st.Mode(), err)
	}
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if st, err := os.Stat(d); err != nil || st.Mode() != os.ModeDir|0o755 {
			t.Errorf("directory %s: %v %v; want created 0755 whatever the umask", d, st.Mode(), err)
		}
	}
	if st, _ := os.Stat(filepath.Dir(filepath.Dir(dir))); st.Mode().Perm() != 0o700 {
		t.Errorf("existing parent's mode changed to %v", st.Mode())
	}
}

func TestNaNAndTimesSurvive(t *testing.T) {
	dir := t.TempDir()
	w := create(t, dir, WriterOptions{})
	defer w.Close()
	s := &sample.Sample{Load: sample.Load{One: math.Inf(1)}}
	if err := w.Put(0, netip.AddrPort{}, time.Time{}, s); err != nil {
		t.Fatal(err)
	}
	r := openReader(t, dir)
	sum, ok, err := r.Summary(0)
	if !ok || err != nil || !sum.LastSeen.IsZero() || !sum.Time.IsZero() || sum.Addr.IsValid() || !math.IsInf(sum.Load.One, 1) {
		t.Errorf("Summary = %+v %v %v", sum, ok, err)
	}
}

// EachNode walks on across a re-layout made while it walks (the reads in
// its callback follow the table to the new file, where the block being
// walked has another leaf): every node present before is listed once,
// ascending, and no other.
func TestEachNodeAcrossRelayout(t *testing.T) {
	dir := t.TempDir()
	w := create(t, dir, WriterOptions{InitialNodes: 8})
	defer w.Close()
	before := []int{1, 2, 3, 5120, 5121, 5122}
	for _, n := range before {
		if err := putCounter(w, n, uint64(n), 1, 1); err != nil {
			t.Fatal(err)
		}
	}
	r := openReader(t, dir)
	gen := r.Info().Generation
	var got []int
	err := r.EachNode(func(n int) error {
		got = append(got, n)
		if n == 5120 { // a block walked already gets nodes: the table grows
			for m := 1024; m < 1040; m++ {
				if err := putCounter(w, m, 1, 1, 1); err != nil {
					return err
				}
			}
		}
		_, ok, err := r.Summary(n)
		if !ok || err != nil {
			t.Errorf("node %d: %v, %v", n, ok, err)
		}
		return nil
	})
	if err != nil || !slices.Equal(got, before) {
		t.Errorf("EachNode listed %v, %v; want %v", got, err, before)
	}
	if r.Info().Generation == gen {
		t.Error("the table was not re-laid out: the test tests nothing")
	}
}

// The writer's socket figures reach readers, survive a re-layout and
// start again with the next writer (a new socket).
func TestSocketFiguresInHeader(t *testing.T) {
	dir := t.TempDir()
	w := create(t, dir, WriterOptions{InitialNodes: 1})
	w.SetSocket(4608, 7)
	r := openReader(t, dir)
	if i := r.Info(); i.KernelDrops != 7 || i.ReadBuffer != 4608 {
		t.Errorf("Info = drops %d buffer %d; want 7 and 4608", i.KernelDrops, i.ReadBuffer)
	}
	gen := r.Info().Generation
	for n := range 10 {
		if err := putCounter(w, n, 1, 1, 1); err != nil {
			t.Fatal(err)
		}
	}
	if i := r.Info(); i.Generation == gen || i.KernelDrops != 7 || i.ReadBuffer != 4608 {
		t.Errorf("after growth: generation %d (was %d), drops %d, buffer %d", i.Generation, gen, i.KernelDrops, i.ReadBuffer)
	}
	w.Close()
	w2 := create(t, dir, WriterOptions{})
	defer w2.Close()
	if i := r.Info(); i.KernelDrops != 0 || i.ReadBuffer != 0 {
		t.Errorf("next writer: drops %d buffer %d; want 0", i.KernelDrops, i.ReadBuffer)
	}
}
