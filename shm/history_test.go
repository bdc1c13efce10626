package shm

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hoststat/hoststat/internal/netlab"
)

// figuresAt are figures that derive from i, so a torn point shows.
func figuresAt(i int) Figures {
	return Figures{Up: true, CPUPercent: float64(i%100) + 0.25, Load1: float64(i%50) / 4,
		MemUsed: uint64(i) << 20, SwapUsed: uint64(i%7) << 20, RxBytesPerSec: float64(i % 2000), TxBytesPerSec: 2 * float64(i%1000)}
}

// stored is f as the history keeps it (memory in KiB and rates to 11
// significant bits).
func stored(f Figures) Figures {
	var p [12]byte
	encodeFigures(p[:], f)
	return decodeFigures(p[:])
}

func openHistory(t testing.TB, dir string, o HistoryOptions) (*Writer, *HistoryWriter) {
	t.Helper()
	w := create(t, dir, WriterOptions{})
	h, err := w.OpenHistory(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close(); w.Close() })
	return w, h
}

// fileBlocks is the bytes of blocks behind the file at path.
func fileBlocks(t testing.TB, path string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

func TestHistoryDefaultsFit32KiB(t *testing.T) {
	dir := t.TempDir()
	_, h := openHistory(t, dir, HistoryOptions{})
	if h.g.slotSize > 32<<10 || h.g.fine != 900 || h.g.coarse != 1440 || h.g.capacity != DefaultHistoryNodes || h.reserved != DefaultHistoryInitial {
		t.Errorf("default geometry %+v, %d reserved: slot over 32 KiB or not 15 min at 1 s + 24 h at 1 min", h.g, h.reserved)
	}
	st, err := os.Stat(filepath.Join(dir, HistoryFileName))
	if err != nil || st.Mode().Perm() != 0o644 || st.Size() != int64(h.g.fileSize) {
		t.Fatalf("history file %v, %v", st, err)
	}
	// The file is as large as the most nodes, but only the first slots
	// take memory.
	if got, want := fileBlocks(t, filepath.Join(dir, HistoryFileName)), int64(historyHeaderSize+DefaultHistoryInitial*h.g.slotSize); got < want || got > want+64<<10 {
		t.Errorf("a new history file holds %d bytes of blocks, want the %d of %d slots", got, want, DefaultHistoryInitial)
	}
}

// Twenty minutes of one point a second: the reader gets the last 900
// points as written and one-minute averages of the minutes before them.
func TestHistoryRoundTrip(t *testing.T) {
	dir := t.TempDir()
	_, h := openHistory(t, dir, HistoryOptions{Nodes: 4})
	start := time.Unix(1_800_000_000, 0).Truncate(time.Minute)
	for i := range 1200 {
		f := figuresAt(i)
		if i >= 60 && i < 120 {
			f = Figures{} // down for the second minute
		}
		if err := h.Append(7, start.Add(time.Duration(i)*time.Second), f); err != nil {
			t.Fatal(err)
		}
	}
	r, err := OpenHistoryReader(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	minutes, fine, ok, err := r.Read(7, time.Time{})
	if !ok || err != nil {
		t.Fatal(ok, err)
	}
	if len(fine) != 900 || !fine[0].Time.Equal(start.Add(300*time.Second)) || !fine[899].Time.Equal(start.Add(1199*time.Second)) {
		t.Fatalf("%d full-resolution points from %v to %v", len(fine), fine[0].Time, fine[len(fine)-1].Time)
	}
	for j, p := range fine {
		want := figuresAt(300 + j)
		if p.Up != true || p.CPUPercent != want.CPUPercent || p.Load1 != want.Load1 || p.MemUsed != want.MemUsed ||
			p.RxBytesPerSec != want.RxBytesPerSec || p.TxBytesPerSec != want.TxBytesPerSec {
			t.Fatalf("point %d = %+v, want %+v", j, p.Figures, want)
		}
	}
	// Minutes 0-4 come before the full-resolution points.
	if len(minutes) != 5 {
		t.Fatalf("%d minutes: %+v", len(minutes), minutes)
	}
	if !minutes[0].Up || minutes[1].Up || !minutes[2].Up || !minutes[2].Time.Equal(start.Add(2*time.Minute)) {
		t.Errorf("minutes %+v", minutes[:3])
	}
	var cpu float64
	for i := 120; i < 180; i++ {
		cpu += figuresAt(i).CPUPercent
	}
	if got, want := minutes[2].CPUPercent, math.Round(cpu/60*100)/100; got != want {
		t.Errorf("minute 2 CPU average %v, want %v", got, want)
	}
	// --since cuts both.
	minutes, fine, _, _ = r.Read(7, start.Add(1190*time.Second))
	if len(minutes) != 0 || len(fine) != 10 {
		t.Errorf("since: %d minutes, %d points", len(minutes), len(fine))
	}
	// A window that starts before the full-resolution points gets the
	// minutes it overlaps before them; one they cover gets none.
	for since, want := range map[time.Duration]int{250 * time.Second: 1, 179 * time.Second: 3, 300 * time.Second: 0, 310 * time.Second: 0} {
		if minutes, _, _, _ := r.Read(7, start.Add(since)); len(minutes) != want {
			t.Errorf("since start+%v: %d minutes, want %d", since, len(minutes), want)
		}
	}
	if _, _, ok, err := r.Read(8, time.Time{}); ok || err != nil {
		t.Errorf("node 8 without history: %v, %v", ok, err)
	}
}

// A day and more of one point a minute keeps the last 24 hours; a gap
// reads as minutes without data, left out.
func TestHistoryDayAndGaps(t *testing.T) {
	dir := t.TempDir()
	_, h := openHistory(t, dir, HistoryOptions{Nodes: 1, Fine: 10, Coarse: 1440})
	start := time.Unix(1_800_000_000, 0).Truncate(time.Minute)
	for i := range 1600 {
		if i >= 1500 && i < 1510 {
			continue // silent for ten minutes
		}
		if err := h.Append(3, start.Add(time.Duration(i)*time.Minute), figuresAt(i)); err != nil {
			t.Fatal(err)
		}
	}
	r, err := OpenHistoryReader(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	minutes, fine, _, err := r.Read(3, time.Time{})
	if err != nil || len(fine) != 10 {
		t.Fatal(len(fine), err)
	}
	// The newest minute closed is 1598: minutes 159 .. 1589 (the ten
	// full-resolution ones follow), less the gap.
	if len(minutes) != 1431-10 || !minutes[0].Time.Equal(start.Add(159*time.Minute)) {
		t.Errorf("%d minutes from %v", len(minutes), minutes[0].Time)
	}
	for _, m := range minutes {
		if i := int(m.Time.Sub(start) / time.Minute); (i >= 1500 && i < 1510) || m.CPUPercent != figuresAt(i).CPUPercent {
			t.Fatalf("minute %d = %+v", i, m)
		}
	}
}

func TestHistoryFull(t *testing.T) {
	_, h := openHistory(t, t.TempDir(), HistoryOptions{Nodes: 2})
	now := time.Now()
	for _, n := range []int{5, 9, 5} {
		if err := h.Append(n, now, figuresAt(1)); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.Append(11, now, figuresAt(1)); !errors.Is(err, ErrHistoryFull) {
		t.Errorf("third node: %v", err)
	}
	if err := h.Append(5, time.Unix(-5, 0), figuresAt(1)); err == nil {
		t.Error("a time before 1970 accepted")
	}
}

// A restarted writer keeps the history (at a larger maximum too); other
// point counts replace it, and the readers of the old file follow to the
// new one.
func TestHistoryReusedAndReplaced(t *testing.T) {
	dir := t.TempDir()
	w := create(t, dir, WriterOptions{})
	for _, n := range []int{1, 2} {
		if err := putCounter(w, n, 1, 1, 1); err != nil {
			t.Fatal(err)
		}
	}
	h, err := w.OpenHistory(HistoryOptions{Nodes: 4})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	h.Append(2, now, figuresAt(3))
	h.Close()
	h, err = w.OpenHistory(HistoryOptions{Nodes: 8})
	if err != nil {
		t.Fatal(err)
	}
	h.Append(1, now, figuresAt(4))
	r, err := OpenHistoryReader(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for n, i := range map[int]int{2: 3, 1: 4} {
		if _, fine, ok, err := r.Read(n, time.Time{}); !ok || err != nil || len(fine) != 1 || fine[0].CPUPercent != figuresAt(i).CPUPercent {
			t.Errorf("node %d after restart: %v %v %+v", n, ok, err, fine)
		}
	}
	h.Close()
	h, err = w.OpenHistory(HistoryOptions{Nodes: 8, Fine: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	defer w.Close()
	if _, _, ok, err := r.Read(2, time.Time{}); ok || err != nil || r.g.fine != 100 {
		t.Errorf("after resize the reader still sees the old file: %v %v %d", ok, err, r.g.fine)
	}
}

// A symlink or someone else's file at the history's name is never
// followed or written: it is replaced by a file of ours.
func TestHistoryForeignFileReplaced(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(dir, HistoryFileName)); err != nil {
		t.Fatal(err)
	}
	_, h := openHistory(t, dir, HistoryOptions{Nodes: 2})
	if err := h.Append(1, time.Now(), figuresAt(1)); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious" {
		t.Errorf("symlink target written: %q", b)
	}
	if st, err := os.Lstat(filepath.Join(dir, HistoryFileName)); err != nil || !st.Mode().IsRegular() {
		t.Errorf("history is %v, %v", st, err)
	}
}

// A reader never sees a torn slot while the writer appends.
func TestHistoryConcurrentReads(t *testing.T) {
	dir := t.TempDir()
	_, h := openHistory(t, dir, HistoryOptions{Nodes: 1, Fine: 64, Coarse: 16})
	start := time.Unix(1_800_000_000, 0)
	// recvstats appends to a slot once a sample; this writer appends in
	// bursts thousands of times a second, but pauses between bursts as
	// every real writer does, so that a reader copying the slot can finish.
	var appended atomic.Int64
	stop := writeUntilStopped(func(i int) {
		h.Append(0, start.Add(time.Duration(i)*time.Second), figuresAt(i))
		appended.Store(int64(i + 1))
		if i%8 == 7 {
			time.Sleep(time.Microsecond)
		}
	})
	r, err := OpenHistoryReader(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// Read for as long as it takes the writer to append a few thousand
	// times, so that many reads overlap an append however fast they are.
	for reads := 0; reads < 2000 || appended.Load() < 20000; reads++ {
		_, fine, _, err := r.Read(0, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		for j, p := range fine {
			i := int(p.Time.Sub(start) / time.Second)
			if p.Figures != stored(figuresAt(i)) || (j > 0 && !p.Time.After(fine[j-1].Time)) {
				t.Fatalf("torn: point %d at %d = %+v", j, i, p)
			}
		}
	}
	stop()
}

// writeUntilStopped calls write(0), write(1), … in a goroutine of its own
// until the returned stop, which waits for it.
func writeUntilStopped(write func(i int)) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			write(i)
		}
	}()
	return func() { close(done); wg.Wait() }
}

func TestPackFloat(t *testing.T) {
	for _, x := range []float64{0, 1, 2047, 2048, 2049, 1e6, 123456789, 4e12} {
		got := unpackFloat(packFloat(x))
		if math.Abs(got-x) > x/2000 {
			t.Errorf("%v → %v", x, got)
		}
	}
	if got := unpackFloat(packFloat(1e20)); got != 2047*(1<<31) {
		t.Errorf("huge → %v", got)
	}
}

// In a shared (sticky, world-writable) shm directory, a history file
// another user made, or one others can write, holding forged points, is
// never adopted: the writer replaces it with its own, and readers never
// see the forged points.
func TestHistoryForeignFilesInSharedDir(t *testing.T) {
	netlab.RequireRoot(t)
	const nobody = 65534
	dir := sharedDir(t)
	// A forged history of the same sizes: node 5 at 99 % CPU.
	other := t.TempDir()
	_, fh := openHistory(t, other, HistoryOptions{Nodes: 4})
	if err := fh.Append(5, time.Now(), Figures{Up: true, CPUPercent: 99}); err != nil {
		t.Fatal(err)
	}
	forged, err := os.ReadFile(filepath.Join(other, HistoryFileName))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, HistoryFileName)
	for _, c := range []struct {
		what string
		mode os.FileMode
		uid  int
	}{{"another user's file", 0o644, nobody}, {"a file others can write", 0o666, 0}} {
		os.Remove(path)
		if err := os.WriteFile(path, forged, c.mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(path, c.mode)
		if err := os.Chown(path, c.uid, c.uid); err != nil {
			t.Fatal(err)
		}
		w := create(t, dir, WriterOptions{})
		h, err := w.OpenHistory(HistoryOptions{Nodes: 4})
		if err != nil {
			t.Fatalf("%s: %v", c.what, err)
		}
		r, err := OpenHistoryReader(dir)
		if err != nil {
			t.Fatal(err)
		}
		if _, fine, ok, err := r.Read(5, time.Time{}); ok || err != nil || len(fine) != 0 {
			t.Errorf("%s: adopted: node 5 has %v (%v, %v)", c.what, fine, ok, err)
		}
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil || st.Uid != 0 || st.Mode&0o7777 != 0o644 {
			t.Errorf("%s: history now uid %d mode %o, %v", c.what, st.Uid, st.Mode&0o7777, err)
		}
		r.Close()
		h.Close()
		w.Close()
	}
}

// A slot a killed writer left mid-append (odd sequence) is cleared when
// the next writer reuses the file; the other nodes keep their history.
func TestHistoryMidAppendRepaired(t *testing.T) {
	dir := t.TempDir()
	w := create(t, dir, WriterOptions{})
	defer w.Close()
	for _, n := range []int{1, 2} {
		if err := putCounter(w, n, 1, 1, 1); err != nil {
			t.Fatal(err)
		}
	}
	h, err := w.OpenHistory(HistoryOptions{Nodes: 4})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	h.Append(1, now, figuresAt(1))
	h.Append(2, now, figuresAt(2))
	off := h.g.slot(h.slots[1])
	store64(h.m, off+sSeq, load64(h.m, off+sSeq)+1) // killed inside the window
	h.Close()

	readWait, liveWriterWait = time.Millisecond, 0
	defer func() { readWait, liveWriterWait = 50*time.Millisecond, time.Second }()
	r, err := OpenHistoryReader(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, _, _, err := r.Read(1, time.Time{}); !errors.Is(err, ErrWriterStuck) {
		t.Errorf("a slot left mid-append reads as %v, want ErrWriterStuck", err)
	}
	h, err = w.OpenHistory(HistoryOptions{Nodes: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if _, fine, ok, err := r.Read(1, time.Time{}); ok || err != nil || len(fine) != 0 {
		t.Errorf("node 1 after repair: %v %v %v", fine, ok, err)
	}
	if _, fine, ok, err := r.Read(2, time.Time{}); !ok || err != nil || len(fine) != 1 {
		t.Errorf("node 2 after repair: %v %v %v", fine, ok, err)
	}
	if err := h.Append(1, now, figuresAt(3)); err != nil {
		t.Fatal(err)
	}
}

// A new node's day holds only the minutes it was heard, also in a slot
// used before by another node (freed, or of a file that grew): the rest
// of its one-minute ring was marked without data when the slot was taken.
func TestHistoryNewNodeDayHoldsOnlyItsMinutes(t *testing.T) {
	dir := t.TempDir()
	// One full-resolution point: the reader gives the minutes before it.
	_, h := openHistory(t, dir, HistoryOptions{Nodes: 2, Initial: 1, Fine: 1, Coarse: 1440})
	start := time.Unix(1_800_000_000, 0).Truncate(time.Minute)
	for i := range 1500 { // node 1 fills its whole day, then is forgotten
		if err := h.Append(1, start.Add(time.Duration(i)*time.Minute), figuresAt(i)); err != nil {
			t.Fatal(err)
		}
	}
	h.Release(1)
	later := start.Add(1500 * time.Minute)
	for _, node := range []int{2, 3} { // 2 takes node 1's slot, 3 one of the grown file
		for i := range 3 {
			if err := h.Append(node, later.Add(time.Duration(i)*time.Minute), figuresAt(i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	r, err := OpenHistoryReader(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, node := range []int{2, 3} {
		minutes, _, _, err := r.Read(node, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		var heard int
		for _, m := range minutes {
			if m.Up {
				heard++
				if i := int(m.Time.Sub(later) / time.Minute); i < 0 || i > 1 || m.CPUPercent != stored(figuresAt(i)).CPUPercent {
					t.Errorf("node %d: minute %v = %+v, not one it was heard in", node, m.Time, m)
				}
			}
		}
		if heard != 2 {
			t.Errorf("node %d: %d minutes with data, want the 2 closed", node, heard)
		}
	}
}

// The first minute every node of a cluster closes falls in the same
// second: what it costs a node (ns/op) must not grow with the day's length.
func BenchmarkHistoryFirstMinute(b *testing.B) {
	for _, coarse := range []int{60, 1440} {
		b.Run(fmt.Sprintf("minutes=%d", coarse), func(b *testing.B) {
			_, h := openHistory(b, b.TempDir(), HistoryOptions{Nodes: b.N, Initial: b.N, Fine: 900, Coarse: coarse})
			t0 := time.Unix(1_800_000_000, 0).Truncate(time.Minute)
			for n := range b.N {
				if err := h.Append(n, t0, figuresAt(n)); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for n := range b.N {
				if err := h.Append(n, t0.Add(time.Minute), figuresAt(n)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
