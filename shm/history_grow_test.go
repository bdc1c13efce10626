package shm

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/netlab"
	"golang.org/x/sys/unix"
)

// slotBytes is a copy of node's slot as the writer holds it.
func slotBytes(t testing.TB, h *HistoryWriter, node int) []byte {
	t.Helper()
	k, ok := h.slots[node]
	if !ok {
		t.Fatalf("node %d has no slot", node)
	}
	return bytes.Clone(h.m[h.g.slot(k):][:h.g.slotSize])
}

// readAll is every point of node a reader returns, minutes first.
func readAll(t testing.TB, r *HistoryReader, node int) ([]Point, bool) {
	t.Helper()
	minutes, fine, ok, err := r.Read(node, time.Time{})
	if err != nil {
		t.Fatalf("node %d: %v", node, err)
	}
	return append(minutes, fine...), ok
}

// A table growing past the history's initial slots keeps every node's
// history: the file doubles, the early nodes' slots move over byte for
// byte, and a reader opened on the first file follows to each new one.
func TestHistoryGrowsKeepingEveryNode(t *testing.T) {
	dir := t.TempDir()
	_, h := openHistory(t, dir, HistoryOptions{Initial: 4, Nodes: 64, Fine: 30, Coarse: 10})
	r, err := OpenHistoryReader(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	start := time.Unix(1_800_000_000, 0).Truncate(time.Minute)
	// Four nodes over three minutes: full-resolution and one-minute points.
	for i := range 90 {
		for n := range 4 {
			if err := h.Append(n, start.Add(time.Duration(2*i)*time.Second), figuresAt(100*n+i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	before := map[int][]byte{}
	seen := map[int][]Point{}
	for n := range 4 {
		before[n] = slotBytes(t, h, n)
		p, ok := readAll(t, r, n)
		if !ok || len(p) != 30+2 {
			t.Fatalf("node %d before growth: %v, %d points", n, ok, len(p))
		}
		seen[n] = p
	}
	gen := h.g.generation
	last := start.Add(180 * time.Second)
	for n := 4; n < 40; n++ {
		if err := h.Append(n, last, figuresAt(100*n)); err != nil {
			t.Fatalf("node %d: %v", n, err)
		}
	}
	// Grown in place: the same file, the same slots, more of them reserved.
	if h.reserved != 64 || h.g.generation != gen {
		t.Errorf("40 nodes from 4 slots: %d reserved, generation +%d, want 64 after 4 doublings in the same file", h.reserved, h.g.generation-gen)
	}
	if got, want := fileBlocks(t, filepath.Join(dir, HistoryFileName)), int64(historyHeaderSize+64*h.g.slotSize); got < want || got > want+64<<10 {
		t.Errorf("history file holds %d bytes of blocks, want the %d of 64 slots", got, want)
	}
	for n := range 4 {
		if got := slotBytes(t, h, n); !bytes.Equal(got, before[n]) {
			t.Errorf("node %d: slot changed across growth", n)
		}
		p, ok := readAll(t, r, n)
		if !ok || !reflect.DeepEqual(p, seen[n]) {
			t.Errorf("node %d after growth: %v, %d points, want the %d from before", n, ok, len(p), len(seen[n]))
		}
	}
	if r.g.generation != h.g.generation {
		t.Errorf("reader on generation %d, writer on %d", r.g.generation, h.g.generation)
	}
	for n := 4; n < 40; n++ {
		p, ok := readAll(t, r, n)
		if !ok || len(p) != 1 || p[0].Figures != stored(figuresAt(100*n)) {
			t.Errorf("node %d: %v %+v", n, ok, p)
		}
	}
	// Left behind: no temporary files.
	if tmp, _ := filepath.Glob(filepath.Join(dir, ".beostat-*.tmp")); len(tmp) != 0 {
		t.Errorf("temporary files left: %v", tmp)
	}
}

// A forgotten node's slot goes to the next new node with no trace of the
// old one's points; a reader of the forgotten node finds no history.
func TestHistoryReleasedSlotReused(t *testing.T) {
	dir := t.TempDir()
	_, h := openHistory(t, dir, HistoryOptions{Initial: 2, Nodes: 2, Fine: 8, Coarse: 6})
	r, err := OpenHistoryReader(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	start := time.Unix(1_800_000_000, 0)
	for i := range 20 {
		for _, n := range []int{7, 9} {
			if err := h.Append(n, start.Add(time.Duration(i)*30*time.Second), figuresAt(n*10+i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	kept, _ := readAll(t, r, 9)
	k := h.slots[7]
	h.Release(7)
	if p, ok := readAll(t, r, 7); ok || len(p) != 0 {
		t.Errorf("forgotten node 7 still has history: %+v", p)
	}
	if err := h.Append(11, start.Add(time.Hour), figuresAt(5)); err != nil {
		t.Fatalf("new node after a release: %v", err)
	}
	if h.slots[11] != k {
		t.Errorf("node 11 in slot %d, not the freed slot %d", h.slots[11], k)
	}
	p, ok := readAll(t, r, 11)
	if !ok || len(p) != 1 || p[0].Time != start.Add(time.Hour) || p[0].Figures != stored(figuresAt(5)) {
		t.Errorf("node 11 in a reused slot: %v %+v, want its one point only", ok, p)
	}
	if p, ok := readAll(t, r, 7); ok || len(p) != 0 {
		t.Errorf("node 7 reads %+v from node 11's slot", p)
	}
	if p, ok := readAll(t, r, 9); !ok || len(p) != 8+3 || !reflect.DeepEqual(p, kept) {
		t.Errorf("node 9 lost history: %v, %d points", ok, len(p))
	}
	// The maximum holds: a third node finds no slot.
	if err := h.Append(12, start.Add(time.Hour), figuresAt(1)); !errors.Is(err, ErrHistoryFull) {
		t.Errorf("third node in a history of two: %v", err)
	}
	// Released and appended again: a new history, not the old one.
	h.Release(9)
	h.Append(9, start.Add(2*time.Hour), figuresAt(3))
	if p, ok := readAll(t, r, 9); !ok || len(p) != 1 {
		t.Errorf("node 9 back after a release: %v %+v", ok, p)
	}
}

// While nodes come and go through the same slot, a reader of one node
// only ever gets that node's points.
func TestHistoryReleaseWhileReading(t *testing.T) {
	dir := t.TempDir()
	_, h := openHistory(t, dir, HistoryOptions{Initial: 1, Nodes: 1, Fine: 16, Coarse: 4})
	start := time.Unix(1_800_000_000, 0)
	stop := writeUntilStopped(func(i int) {
		n := i % 2
		for j := range 20 {
			h.Append(n, start.Add(time.Duration(i*20+j)*time.Second), Figures{Up: true, CPUPercent: float64(n + 1)})
		}
		h.Release(n)
	})
	r, err := OpenHistoryReader(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	found := 0
	for i := 0; found < 1000 && i < 10_000_000; i++ {
		n := i % 2
		minutes, fine, ok, err := r.Read(n, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range append(minutes, fine...) {
			if p.Up && p.CPUPercent != float64(n+1) {
				t.Fatalf("node %d read a point of node %v", n, p.CPUPercent-1)
			}
		}
		if ok {
			found++
		}
	}
	stop()
	if found == 0 {
		t.Error("the reader never found a node")
	}
}

// The file follows the nodes down too: with a quarter or less of the
// slots in use it halves, keeping the nodes left.
func TestHistoryShrinks(t *testing.T) {
	dir := t.TempDir()
	_, h := openHistory(t, dir, HistoryOptions{Initial: 4, Nodes: 64, Fine: 4, Coarse: 2})
	now := time.Unix(1_800_000_000, 0)
	for n := range 40 {
		h.Append(n, now, figuresAt(n))
	}
	keep := map[int][]byte{}
	for _, n := range []int{3, 17, 39} {
		keep[n] = slotBytes(t, h, n)
	}
	for n := range 40 {
		if keep[n] == nil {
			h.Release(n)
		}
	}
	if h.reserved >= 32 {
		t.Errorf("3 nodes left hold %d slots", h.reserved)
	}
	if got := fileBlocks(t, filepath.Join(dir, HistoryFileName)); got > int64(historyHeaderSize+32*h.g.slotSize) {
		t.Errorf("3 nodes left hold %d bytes of blocks", got)
	}
	for n, b := range keep {
		if !bytes.Equal(slotBytes(t, h, n), b) {
			t.Errorf("node %d changed when the file shrank", n)
		}
	}
	for n := 100; n < 140; n++ {
		if err := h.Append(n, now, figuresAt(n)); err != nil {
			t.Fatalf("node %d after shrinking: %v", n, err)
		}
	}
}

// A restarted writer frees the slots of nodes the table no longer holds
// (forgotten while no history was kept); the others keep theirs.
func TestHistoryReopenFreesNodesNotInTable(t *testing.T) {
	dir := t.TempDir()
	w := create(t, dir, WriterOptions{})
	defer w.Close()
	for _, n := range []int{1, 2} {
		if err := putCounter(w, n, 1, 1, 1); err != nil {
			t.Fatal(err)
		}
	}
	h, err := w.OpenHistory(HistoryOptions{Initial: 2, Nodes: 2})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	h.Append(1, now, figuresAt(1))
	h.Append(2, now, figuresAt(2))
	h.Close()
	w.Remove(1)
	if h, err = w.OpenHistory(HistoryOptions{Initial: 2, Nodes: 2}); err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.Append(3, now, figuresAt(3)); err != nil {
		t.Errorf("forgotten node 1 kept its slot: %v", err)
	}
	r, err := OpenHistoryReader(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for n, want := range map[int]bool{1: false, 2: true, 3: true} {
		if _, ok := readAll(t, r, n); ok != want {
			t.Errorf("node %d has history: %v, want %v", n, ok, want)
		}
	}
}

// A reservation the filesystem refuses (a full tmpfs) is an error, tried
// again a minute later, not for every packet; the nodes already kept
// keep appending, and no page of a hole is ever written (that would be a
// SIGBUS on the full tmpfs, killing recvstats).
func TestHistoryGrowthRefused(t *testing.T) {
	netlab.RequireRoot(t)
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=64m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	// Slots of 9,728 bytes: the second one needs pages the first lacks.
	_, h := openHistory(t, dir, HistoryOptions{Initial: 1, Nodes: 4, Fine: 600, Coarse: 2})
	now := time.Unix(1_800_000_000, 0)
	if err := h.Append(0, now, figuresAt(0)); err != nil {
		t.Fatal(err)
	}
	fillFilesystem(t, filepath.Join(dir, "filler"))
	// Reserved ahead: the next node still gets a slot on the full tmpfs.
	if err := h.Append(1, now, figuresAt(1)); err != nil || h.reserved != 2 {
		t.Fatalf("a node on a reserved slot: %v, %d reserved", err, h.reserved)
	}
	err := h.Append(2, now, figuresAt(2))
	if !errors.Is(err, ErrHistoryFull) || !errors.Is(err, unix.ENOSPC) || h.reserved != 2 {
		t.Fatalf("growth on a full tmpfs: %v, %d reserved", err, h.reserved)
	}
	if err := os.Remove(filepath.Join(dir, "filler")); err != nil {
		t.Fatal(err)
	}
	if err := h.Append(2, now.Add(30*time.Second), figuresAt(2)); !errors.Is(err, ErrHistoryFull) {
		t.Errorf("growth retried within the minute: %v", err)
	}
	if err := h.Append(0, now.Add(30*time.Second), figuresAt(0)); err != nil {
		t.Errorf("a kept node: %v", err)
	}
	if err := h.Append(2, now.Add(61*time.Second), figuresAt(2)); err != nil || h.reserved != 4 {
		t.Errorf("growth a minute later: %v, %d reserved", err, h.reserved)
	}
}

// fillFilesystem writes path until its filesystem has no block left.
func fillFilesystem(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, unix.ENOSPC) {
				t.Fatal(err)
			}
			return
		}
	}
}

// A burst of new nodes (default slots: reservations in the background)
// never waits for one: a node that finds no slot reserved yet is told so
// and keeps its next point; once the reservation is in, every node has
// history, and the blocks follow the nodes (reserved at most about 8/3
// of the slots used).
func TestHistoryBurstReservesAhead(t *testing.T) {
	dir := t.TempDir()
	_, h := openHistory(t, dir, HistoryOptions{Nodes: 4096})
	now := time.Unix(1_800_000_000, 0)
	const nodes = 1000
	growing := 0
	for round := 0; ; round++ {
		missing := 0
		for n := range nodes {
			switch err := h.Append(n, now.Add(time.Duration(round)*time.Second), figuresAt(n)); {
			case errors.Is(err, ErrHistoryGrowing):
				growing++
				missing++
			case err != nil:
				t.Fatalf("node %d: %v", n, err)
			}
		}
		if missing == 0 {
			break
		}
		h.mu.Lock()
		h.waitGrowth()
		h.mu.Unlock()
		if round > 8 {
			t.Fatalf("%d nodes still without a slot after %d rounds", missing, round+1)
		}
	}
	t.Logf("%d appends found the next slots still being reserved", growing)
	r, err := OpenHistoryReader(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for n := range nodes {
		if _, fine, ok, err := r.Read(n, time.Time{}); err != nil || !ok || len(fine) == 0 {
			t.Fatalf("node %d: %v %v %d points", n, ok, err, len(fine))
		}
	}
	h.mu.Lock()
	h.waitGrowth()
	reserved := h.reserved
	h.mu.Unlock()
	if reserved > nodes*8/3+1 || reserved < nodes {
		t.Errorf("%d nodes reserved %d slots", nodes, reserved)
	}
	// (Filesystems allocate in extents of up to a few MiB.)
	if got := fileBlocks(t, filepath.Join(dir, HistoryFileName)); got > int64(h.g.slot(reserved))+4<<20 {
		t.Errorf("%d slots reserved, but the file holds %d bytes of blocks", reserved, got)
	}
}
