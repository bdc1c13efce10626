package shm

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The history file keeps, per node, summary figures for the last minutes
// at full resolution and the last day at one point per minute, beside the
// table. Layout in docs/shm.md ("The history file"); keep the two in step.

// HistoryFileName is the history file inside the shm directory.
const HistoryFileName = "beostat.history"

// HistoryVersion is the layout version of the history file.
const HistoryVersion = 2

var historyMagic = [8]byte{'H', 'S', 'T', 'A', 'T', 'H', 'I', 'S'}

// History header offsets (the header is one 4096-byte page).
const (
	yMagic      = 0
	yVersion    = 8
	yHeaderSize = 12 // 4096
	yGeneration = 16
	yRetired    = 24 // uint32, atomic; same offset as the table's
	yCapacity   = 28 // node slots
	yFine       = 32 // full-resolution points per node
	yCoarse     = 36 // one-minute points per node
	ySlotSize   = 40
	yFineSize   = 44 // 16
	yCoarseSize = 48 // 12
	yCRC        = 52 // CRC-32C of bytes [0,24) and [28,52)
	yFileSize   = 56 // uint64
	yReserved   = 64 // uint32, atomic: slots [0, reserved) have blocks; readers look no further

	historyHeaderSize = 4096
	fineSize          = 16
	coarseSize        = 12
	slotHeaderSize    = 64

	// Node slot header offsets.
	sSeq    = 0  // uint64, atomic: the slot's seqlock
	sNode   = 8  // uint32: node + 1; 0 the slot is free
	sCount  = 12 // uint32: full-resolution points held (≤ fine)
	sNext   = 16 // uint32: index the next full-resolution point goes to
	sMinute = 24 // int64: Unix minute of the newest one-minute point; 0 none
	sFirst  = 32 // int64: Unix minute of the slot's first point: the ring holds nothing of this node before it

	// Bounds a reader checks before trusting a header.
	maxHistoryPoints = 1 << 20
	maxHistorySlot   = 32 << 20
)

// Marks in a point's CPU field instead of a percentage.
const (
	markDown   = 0xFFFF // the node was down: no figures
	markNoData = 0xFFFE // nothing was recorded for that minute
)

// HistoryOptions sizes the history file. The defaults keep 15 minutes at
// one point a second and 24 hours at one point a minute in 31,744 bytes a
// node.
type HistoryOptions struct {
	// Nodes is the most node slots the file grows to; default
	// DefaultHistoryNodes. Append for one more fails with ErrHistoryFull.
	Nodes int
	// Initial is the slots a new file starts with; default
	// DefaultHistoryInitial, at most Nodes. The file doubles when a new
	// node finds no free slot, and halves when a quarter or less is used.
	Initial int
	Fine    int // full-resolution points per node; default 900
	Coarse  int // one-minute points per node; default 1440
}

// Default history sizes: 16,384 nodes of 31,744 bytes are 496 MiB at
// most, reserved as the nodes come (64 slots, 1.9 MiB, at first).
const (
	DefaultHistoryNodes   = 16384
	DefaultHistoryInitial = 64
)

// ErrHistoryFull is returned by Append for a new node when every node
// slot is taken and the file is at its most slots.
var ErrHistoryFull = errors.New("shm: history full")

// ErrHistoryGrowing is returned by Append for a new node while the slots
// it would take are being reserved: its point is not kept, a later one is.
var ErrHistoryGrowing = errors.New("shm: history growing: no slot reserved for a new node yet")

// Figures are the summary figures of a node at one time. Memory is in
// bytes, rates in bytes per second.
type Figures struct {
	Up                           bool // false: the node was down; the other figures are zero
	CPUPercent                   float64
	Load1                        float64
	MemUsed, SwapUsed            uint64
	RxBytesPerSec, TxBytesPerSec float64
}

// Point is a node's figures at Time. One-minute points hold the averages
// of the minute starting at Time over the samples when the node was up;
// Up is false when it was down the whole minute.
type Point struct {
	Time time.Time
	Figures
}

type historyGeometry struct {
	generation         uint64
	capacity           int
	fine, coarse       int
	slotSize, fileSize int
}

func newHistoryGeometry(gen uint64, o HistoryOptions) historyGeometry {
	slot := int(alignUp(uint64(slotHeaderSize+fineSize*o.Fine+coarseSize*o.Coarse), 64))
	return historyGeometry{generation: gen, capacity: o.Nodes, fine: o.Fine, coarse: o.Coarse,
		slotSize: slot, fileSize: historyHeaderSize + o.Nodes*slot}
}

func (g historyGeometry) slot(k int) int { return historyHeaderSize + k*g.slotSize }

func historyCRC(h []byte) uint32 {
	c := crc32.Update(0, castagnoli, h[:yRetired])
	return crc32.Update(c, castagnoli, h[yCapacity:yCRC])
}

func encodeHistoryHeader(h []byte, g historyGeometry) {
	copy(h[yMagic:], historyMagic[:])
	le.PutUint32(h[yVersion:], HistoryVersion)
	le.PutUint32(h[yHeaderSize:], historyHeaderSize)
	le.PutUint64(h[yGeneration:], g.generation)
	le.PutUint32(h[yCapacity:], uint32(g.capacity))
	le.PutUint32(h[yFine:], uint32(g.fine))
	le.PutUint32(h[yCoarse:], uint32(g.coarse))
	le.PutUint32(h[ySlotSize:], uint32(g.slotSize))
	le.PutUint32(h[yFineSize:], fineSize)
	le.PutUint32(h[yCoarseSize:], coarseSize)
	le.PutUint64(h[yFileSize:], uint64(g.fileSize))
	le.PutUint32(h[yCRC:], historyCRC(h))
}

// decodeHistoryHeader validates the header of a history file of size
// bytes; after it, every slot lies inside the file.
func decodeHistoryHeader(b []byte, size int64) (historyGeometry, error) {
	if size < historyHeaderSize || len(b) < historyHeaderSize {
		return historyGeometry{}, fmt.Errorf("%w: %d bytes is shorter than a history header", ErrNotTable, size)
	}
	if [8]byte(b[yMagic:yMagic+8]) != historyMagic {
		return historyGeometry{}, fmt.Errorf("%w: bad magic %q", ErrNotTable, b[yMagic:yMagic+8])
	}
	if v := le.Uint32(b[yVersion:]); v != HistoryVersion {
		return historyGeometry{}, fmt.Errorf("%w %d (this program reads history %d)", ErrVersion, v, HistoryVersion)
	}
	if got, want := le.Uint32(b[yCRC:]), historyCRC(b); got != want {
		return historyGeometry{}, fmt.Errorf("%w: header checksum %#08x, want %#08x", ErrCorrupt, got, want)
	}
	g := historyGeometry{
		generation: le.Uint64(b[yGeneration:]),
		capacity:   int(le.Uint32(b[yCapacity:])),
		fine:       int(le.Uint32(b[yFine:])),
		coarse:     int(le.Uint32(b[yCoarse:])),
		slotSize:   int(le.Uint32(b[ySlotSize:])),
	}
	fileSize := le.Uint64(b[yFileSize:])
	switch {
	case le.Uint32(b[yHeaderSize:]) != historyHeaderSize || le.Uint32(b[yFineSize:]) != fineSize || le.Uint32(b[yCoarseSize:]) != coarseSize:
		return historyGeometry{}, fmt.Errorf("%w: point geometry differs from history layout %d", ErrCorrupt, HistoryVersion)
	case g.capacity > MaxNodes || g.fine < 1 || g.fine > maxHistoryPoints || g.coarse < 1 || g.coarse > maxHistoryPoints:
		return historyGeometry{}, fmt.Errorf("%w: %d slots of %d+%d points out of bounds", ErrCorrupt, g.capacity, g.fine, g.coarse)
	case g.slotSize != newHistoryGeometry(0, HistoryOptions{Nodes: 1, Fine: g.fine, Coarse: g.coarse}).slotSize || g.slotSize > maxHistorySlot:
		return historyGeometry{}, fmt.Errorf("%w: slot size %d does not match %d+%d points", ErrCorrupt, g.slotSize, g.fine, g.coarse)
	case fileSize != uint64(historyHeaderSize)+uint64(g.capacity)*uint64(g.slotSize) || fileSize != uint64(size):
		return historyGeometry{}, fmt.Errorf("%w: file size %d, header says %d for %d slots", ErrCorrupt, size, fileSize, g.capacity)
	}
	g.fileSize = int(fileSize)
	return g, nil
}

// HistoryWriter appends to the history file. It belongs to the table's
// Writer (same directory, same lock). Its methods are safe for
// concurrent use.
type HistoryWriter struct {
	mu       sync.Mutex
	dir      string
	path     string
	log      *slog.Logger
	f        *os.File
	m        []byte
	g        historyGeometry
	initial  int            // slots reserved at least
	max      int            // slots the file never grows beyond (its capacity)
	slots    map[int]int    // node → slot
	free     []int          // cleared slots below used, reused first
	used     int            // slots [0, used) are taken or in free
	reserved int            // slots [0, reserved) have blocks behind them
	growing  *reservation   // the reservation under way; nil when none is
	refused  int            // new nodes told ErrHistoryGrowing during it
	growErr  error          // why the last reservation failed, at growAt
	growAt   time.Time      // (Append's clock: now)
	now      time.Time      // the latest time Append was given
	retiring sync.WaitGroup // old files being unmapped
	buf      []byte
}

// OpenHistory opens the history file beside the table for writing (mode
// 0644), reusing one of the same sizes that the writer's user owns and
// only it can write, keeping what it holds; anything else (other sizes,
// someone else's file, a symlink) is replaced by a new file, created
// exclusively and renamed into place, and the replaced one of ours is
// marked retired for its readers.
func (w *Writer) OpenHistory(o HistoryOptions) (*HistoryWriter, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		return nil, ErrClosed
	}
	if o.Nodes <= 0 {
		o.Nodes = DefaultHistoryNodes
	}
	if o.Initial <= 0 {
		o.Initial = DefaultHistoryInitial
	}
	o.Initial = min(o.Initial, o.Nodes)
	if o.Fine <= 0 {
		o.Fine = 900
	}
	if o.Coarse <= 0 {
		o.Coarse = 1440
	}
	if o.Nodes > MaxNodes || o.Fine > maxHistoryPoints || o.Coarse > maxHistoryPoints ||
		newHistoryGeometry(0, o).slotSize > maxHistorySlot {
		return nil, fmt.Errorf("shm: history of %d nodes × %d+%d points exceeds the limits", o.Nodes, o.Fine, o.Coarse)
	}
	h := &HistoryWriter{dir: w.dir, path: filepath.Join(w.dir, HistoryFileName), log: w.log,
		initial: o.Initial, max: o.Nodes, slots: make(map[int]int)}
	want := newHistoryGeometry(uint64(time.Now().UnixNano()), HistoryOptions{Nodes: o.Nodes, Fine: o.Fine, Coarse: o.Coarse})
	old, err := openOwned(h.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case errors.Is(err, errForeign):
		w.log.Warn("shm: replacing a history file the writer does not own", "path", h.path, "reason", err)
	case err != nil:
		return nil, fmt.Errorf("shm: open history %s for writing: %w", h.path, err)
	default:
		if err := h.reuse(old, want); err == nil {
			// Nodes the table no longer holds were forgotten while no
			// history was kept: their slots are free.
			for n := range h.slots {
				if w.lookup(n) < 0 {
					h.release(n)
				}
			}
			return h, nil
		} else {
			w.log.Info("shm: replacing history file", "path", h.path, "reason", err)
		}
		defer old.Close()
		defer retireFile(old, historyMagic)
	}
	if err := h.create(want); err != nil {
		return nil, err
	}
	return h, nil
}

// reuse adopts f when it is a sound history file of want's point counts
// and at most h.max slots.
func (h *HistoryWriter) reuse(f *os.File, want historyGeometry) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() < historyHeaderSize || st.Size() > math.MaxInt {
		return fmt.Errorf("%w: %d bytes", ErrNotTable, st.Size())
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return err
	}
	g, err := decodeHistoryHeader(m, st.Size())
	reserved := 0
	switch {
	case err != nil:
	case load32(m, yRetired) != 0:
		err = errors.New("history is marked retired")
	case g.capacity > h.max || g.fine != want.fine || g.coarse != want.coarse:
		err = fmt.Errorf("sizes %d×%d+%d, want at most %d×%d+%d", g.capacity, g.fine, g.coarse, h.max, want.fine, want.coarse)
	default:
		// Reserve again what the file says is (a writer killed between
		// reserving and saying so, a damaged word): never a hole in use.
		reserved = min(max(int(load32(m, yReserved)), h.initial, 1), g.capacity)
		err = reserveRange(f, int64(historyHeaderSize), int64(reserved*g.slotSize))
	}
	if err != nil {
		unix.Munmap(m)
		return err
	}
	h.f, h.m, h.g, h.reserved = f, m, g, reserved
	store32(m, yReserved, uint32(reserved))
	for k := range reserved {
		off := g.slot(k)
		if load64(m, off+sSeq)&1 != 0 {
			// A writer died mid-append: the slot's points are suspect.
			clear(m[off+8 : off+g.slotSize])
			store64(m, off+sSeq, load64(m, off+sSeq)+1)
		}
		if n := int(le.Uint32(m[off+sNode:])); n > 0 && n <= MaxNodes {
			if _, dup := h.slots[n-1]; !dup {
				h.slots[n-1] = k
				h.used = k + 1
				continue
			}
		}
		clear(m[off+8 : off+g.slotSize])
	}
	for k := range h.used {
		if le.Uint32(m[g.slot(k)+sNode:]) == 0 {
			h.free = append(h.free, k)
		}
	}
	if g.capacity == h.max {
		return nil
	}
	// --history-nodes was raised: the same slots in a file of the new
	// capacity.
	if err := h.relayout(h.reserved); err != nil {
		unix.Munmap(m)
		h.f, h.m = nil, nil
		h.slots, h.free, h.used, h.reserved = map[int]int{}, nil, 0, 0
		return err
	}
	return nil
}

// create lays out a new, empty history file and renames it into place.
func (h *HistoryWriter) create(g historyGeometry) error {
	reserved := min(h.initial, g.capacity)
	f, m, err := createMappedSparse(h.dir, ".beostat-history-*.tmp", "history", int64(g.fileSize), int64(g.slot(reserved)))
	if err != nil {
		return err
	}
	populate(m[:g.slot(reserved)])
	store32(m, yReserved, uint32(reserved))
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return err
	}
	encodeHistoryHeader(m[:historyHeaderSize], g)
	if err := os.Rename(tmp, h.path); err != nil {
		unix.Munmap(m)
		return fail(fmt.Errorf("shm: install history %s: %w", h.path, err))
	}
	h.f, h.m, h.g, h.reserved = f, m, g, reserved
	return nil
}

// Append records node's figures at t: a full-resolution point, and when
// t starts a new minute, the one-minute point of the node's last minute.
// Times must not go backwards for a node (an earlier t is ignored).
func (h *HistoryWriter) Append(node int, t time.Time, f Figures) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil {
		return ErrClosed
	}
	if node < 0 || node >= MaxNodes {
		return fmt.Errorf("shm: history: node %d out of range", node)
	}
	sec := t.Unix()
	if sec <= 0 || sec > math.MaxUint32 {
		return fmt.Errorf("shm: history: node %d: time %v out of range", node, t)
	}
	if t.After(h.now) {
		h.now = t
	}
	k, ok := h.slots[node]
	if !ok {
		var err error
		if k, err = h.take(); err != nil {
			return err
		}
		h.slots[node] = k
	}
	off := h.g.slot(k)
	s := h.m[off : off+h.g.slotSize]
	count, next := int(le.Uint32(s[sCount:])), int(le.Uint32(s[sNext:]))
	if count > h.g.fine || next >= h.g.fine {
		count, next = 0, 0 // damaged: start over
	}
	fine := s[slotHeaderSize : slotHeaderSize+fineSize*h.g.fine]
	closing := int64(-1)
	if count > 0 {
		lastSec := int64(le.Uint32(fine[((next+h.g.fine-1)%h.g.fine)*fineSize:]))
		if sec < lastSec {
			return nil
		}
		if sec/60 > lastSec/60 {
			closing = lastSec / 60
		}
	}

	// Inside one seqlock window: only the bytes that change are written.
	seq := load64(h.m, off+sSeq)
	store64(h.m, off+sSeq, seq+1)
	if !ok {
		// The one-minute ring may hold another node's day (a freed
		// slot is cleared, but a cleared entry reads as a minute at 0 %):
		// readers look at the minutes from this one on only, so that no
		// new node costs marking a day, which for every node of a
		// cluster that started together fell in the same second.
		h.patch(off+sFirst, 8, func(p []byte) { le.PutUint64(p, uint64(sec/60)) })
	}
	if closing >= 0 {
		h.closeMinute(off, s, fine, count, next, closing)
	}
	h.patch(off+slotHeaderSize+next*fineSize, fineSize, func(p []byte) { encodeFine(p, uint32(sec), f) })
	h.patch(off+sNode, sMinute-sNode, func(p []byte) {
		le.PutUint32(p[sNode-sNode:], uint32(node+1))
		le.PutUint32(p[sCount-sNode:], uint32(min(count+1, h.g.fine)))
		le.PutUint32(p[sNext-sNode:], uint32((next+1)%h.g.fine))
	})
	store64(h.m, off+sSeq, seq+2)
	return nil
}

// take hands out a cleared slot: a freed one, else the next reserved
// one. Slots are reserved ahead of need, in the background, so that a
// burst of new nodes never waits for the kernel to zero their pages: a
// new node that finds none reserved yet keeps its point for next time. A
// reservation that failed (a full tmpfs) is tried again a minute later,
// not for every packet.
func (h *HistoryWriter) take() (int, error) {
	if n := len(h.free); n > 0 {
		k := h.free[n-1]
		h.free = h.free[:n-1]
		return k, nil
	}
	if h.used == h.reserved {
		if h.reserved >= h.g.capacity {
			return 0, ErrHistoryFull // no formatting: recvstats meets this for every packet of such a node
		}
		h.grow() // does nothing within a minute of a failed reservation
		switch {
		case h.used < h.reserved: // reserved on the spot
		case h.growing == nil:
			return 0, h.growErr
		default:
			h.refused++
			return 0, ErrHistoryGrowing
		}
	}
	h.used++
	if 4*h.used >= 3*h.reserved {
		h.grow()
	}
	return h.used - 1, nil
}

// syncReserve is the most bytes of slots reserved on the spot: less than
// handing the work to another goroutine and losing a point costs.
const syncReserve = 256 << 10

// grow reserves more slots (at most the capacity), unless a
// reservation is under way or failed within the minute: the blocks, and
// the writer's page tables for them; in the background unless small.
func (h *HistoryWriter) grow() {
	if h.growing != nil || h.reserved >= h.g.capacity || (h.growErr != nil && h.now.Before(h.growAt.Add(time.Minute))) {
		return
	}
	// Twice what is reserved, or twice the demand seen: the nodes that
	// have slots and those refused one while the last reservation ran.
	from, to := h.reserved, min(max(2*h.reserved, 2*(h.used+h.refused), 1), h.g.capacity)
	h.refused = 0
	f, m, g := h.f, h.m, h.g
	off, n := g.slot(from), (to-from)*g.slotSize
	reserve := func() error {
		err := reserveRange(f, int64(off), int64(n))
		if err == nil {
			populate(m[off : off+n]) // slots no one uses yet
		}
		return err
	}
	if n <= syncReserve {
		h.reservedTo(from, to, reserve())
		return
	}
	r := &reservation{done: make(chan struct{}), from: from, to: to}
	h.growing = r
	go func() {
		r.err = reserve()
		close(r.done)
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.growing != r {
			return // waitGrowth took it
		}
		h.growing = nil
		h.reservedTo(from, to, r.err)
		// New nodes came faster than this reservation: the next one now,
		// not at the next new node.
		if r.err == nil && (h.refused > 0 || 4*h.used >= 3*h.reserved) {
			h.grow()
		}
	}()
}

// A reservation is slots [from, to) being reserved in the background;
// err is set when done is closed.
type reservation struct {
	done     chan struct{}
	from, to int
	err      error
}

// reservedTo records the outcome of reserving slots [from, to).
func (h *HistoryWriter) reservedTo(from, to int, err error) {
	if err != nil {
		h.growErr, h.growAt = fmt.Errorf("%w: cannot reserve %d slots: %w", ErrHistoryFull, to, err), h.now
		h.log.Warn("shm: cannot reserve more history slots; trying again in a minute", "path", h.path, "reserved", from, "want", to, "err", err)
		return
	}
	h.growErr = nil
	h.reserved = to
	store32(h.m, yReserved, uint32(to))
}

// waitGrowth waits for a reservation under way and records it (never
// waiting for h.mu, which the caller holds).
func (h *HistoryWriter) waitGrowth() {
	if r := h.growing; r != nil {
		<-r.done
		h.growing = nil
		h.reservedTo(r.from, r.to, r.err)
	}
}

// populate faults in the pages of b for writing, so that the ingest path
// does not take those faults; a chunk at a time, since the kernel holds
// the process's memory map lock for each call, and an mmap elsewhere in
// the process (the Go heap growing) would wait behind a long one, and
// every page fault of the receive loop behind that.
func populate(b []byte) {
	const chunk = 1 << 20
	for len(b) > 0 {
		c := b[:min(chunk, len(b))]
		b = b[len(c):]
		if unix.Madvise(c, unix.MADV_POPULATE_WRITE) != nil {
			for i := 0; i < len(c); i += 4096 { // kernels before 5.14
				c[i] = 0
			}
		}
	}
}

// Release forgets node's history: its slot is cleared under the seqlock
// (a reader finds the node has none) and goes to the next new node. When
// fewer than a quarter of the reserved slots stay in use the file is laid
// out again with twice the nodes left reserved, so that its memory
// follows the nodes down as well as up.
func (h *HistoryWriter) Release(node int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil || !h.release(node) {
		return
	}
	if h.reserved > h.initial && 4*len(h.slots) < h.reserved {
		if err := h.relayout(max(h.initial, 2*len(h.slots))); err != nil {
			h.log.Warn("shm: could not shrink the history", "path", h.path, "err", err)
		}
	}
}

// release clears node's slot and frees it; false when node has none.
func (h *HistoryWriter) release(node int) bool {
	k, ok := h.slots[node]
	if !ok {
		return false
	}
	off := h.g.slot(k)
	seq := load64(h.m, off+sSeq)
	store64(h.m, off+sSeq, seq+1)
	h.buf = resize(h.buf, h.g.slotSize-8)
	clear(h.buf)
	publish(h.m, off+8, h.buf)
	store64(h.m, off+sSeq, seq+2)
	delete(h.slots, node)
	h.free = append(h.free, k)
	return true
}

// relayout moves the history to a new file of h.max slots with reserve
// of them reserved (at least the nodes'), the way the table grows: built
// under a temporary name, the nodes' slots copied in (packed, in slot
// order), renamed into place, the old file retired so its readers
// re-open the path.
func (h *HistoryWriter) relayout(reserve int) error {
	h.waitGrowth()
	start := time.Now()
	reserve = min(max(reserve, len(h.slots), 1), h.max)
	g := newHistoryGeometry(h.g.generation+1, HistoryOptions{Nodes: h.max, Fine: h.g.fine, Coarse: h.g.coarse})
	f, m, err := createMappedSparse(h.dir, ".beostat-history-*.tmp", "history", int64(g.fileSize), int64(g.slot(reserve)))
	if err != nil {
		return err
	}
	populate(m[:g.slot(reserve)])
	encodeHistoryHeader(m[:historyHeaderSize], g)
	store32(m, yReserved, uint32(reserve))
	moved := make(map[int]int, len(h.slots))
	for k := range h.used {
		off := h.g.slot(k)
		n := int(le.Uint32(h.m[off+sNode:])) - 1
		if j, ok := h.slots[n]; !ok || j != k {
			continue
		}
		// Only this writer changes the slots, and not now: a plain copy.
		copy(m[g.slot(len(moved)):][:g.slotSize], h.m[off:][:g.slotSize])
		moved[n] = len(moved)
	}
	if err := os.Rename(f.Name(), h.path); err != nil {
		unix.Munmap(m)
		f.Close()
		os.Remove(f.Name())
		return fmt.Errorf("shm: install history %s: %w", h.path, err)
	}
	// Readers see the new file at the path before they learn to look.
	store32(h.m, yRetired, retiredMarker)
	// Unmapping frees the old file's pages (once no reader maps it): off
	// the ingest path as well.
	h.retiring.Add(1)
	go func(f *os.File, m []byte) {
		defer h.retiring.Done()
		unix.Munmap(m)
		f.Close()
	}(h.f, h.m)
	h.f, h.m, h.g, h.reserved = f, m, g, reserve
	h.slots, h.free, h.used = moved, h.free[:0], len(moved)
	h.log.Info("shm: history re-laid out", "path", h.path, "generation", g.generation,
		"nodes", len(moved), "reserved", reserve, "slots", g.capacity, "bytes", g.slot(reserve), "took", time.Since(start))
	return nil
}

// patch rewrites n bytes of the mapping at off through edit, publishing
// the 8-byte words around them (publish stores whole words).
func (h *HistoryWriter) patch(off, n int, edit func([]byte)) {
	lo, hi := off&^7, (off+n+7)&^7
	h.buf = resize(h.buf, hi-lo)
	copy(h.buf, h.m[lo:hi])
	edit(h.buf[off-lo : off-lo+n])
	publish(h.m, lo, h.buf)
}

// closeMinute writes the one-minute point of minute (Unix minutes) from
// the full-resolution points of that minute, and marks the minutes since
// the previous one-minute point as without data.
func (h *HistoryWriter) closeMinute(off int, s, fine []byte, count, next int, minute int64) {
	var sum FiguresSum
	for i := 1; i <= count; i++ {
		p := fine[((next-i+h.g.fine)%h.g.fine)*fineSize:][:fineSize]
		if int64(le.Uint32(p))/60 < minute {
			break
		}
		sum.Add(decodeFigures(p[4:]))
	}
	prev := int64(le.Uint64(s[sMinute:]))
	if prev >= minute {
		return
	}
	coarseOff := off + slotHeaderSize + fineSize*h.g.fine
	entry := func(m int64) int { return coarseOff + int(m%int64(h.g.coarse))*coarseSize }
	noData := func(p []byte) { clear(p); le.PutUint16(p, markNoData) }
	first := minute // the first closed minute: readers skip those before the slot's first
	if prev > 0 {
		first = max(prev+1, minute-int64(h.g.coarse)+1)
	}
	for m := first; m < minute; m++ {
		h.patch(entry(m), coarseSize, noData)
	}
	h.patch(entry(minute), coarseSize, func(p []byte) { encodeFigures(p, sum.Mean()) })
	h.patch(off+sMinute, 8, func(p []byte) { le.PutUint64(p, uint64(minute)) })
}

// FiguresSum adds up figures to average them as a one-minute point does:
// over the times the node was up.
type FiguresSum struct {
	n int
	s Figures
}

// Add counts f when the node was up.
func (a *FiguresSum) Add(f Figures) {
	if !f.Up {
		return
	}
	a.n++
	a.s.CPUPercent += f.CPUPercent
	a.s.Load1 += f.Load1
	a.s.MemUsed += f.MemUsed
	a.s.SwapUsed += f.SwapUsed
	a.s.RxBytesPerSec += f.RxBytesPerSec
	a.s.TxBytesPerSec += f.TxBytesPerSec
}

// Mean is the average of what was added; down when nothing was.
func (a *FiguresSum) Mean() Figures {
	if a.n == 0 {
		return Figures{}
	}
	d, s := float64(a.n), a.s
	return Figures{Up: true, CPUPercent: s.CPUPercent / d, Load1: s.Load1 / d,
		MemUsed: s.MemUsed / uint64(a.n), SwapUsed: s.SwapUsed / uint64(a.n),
		RxBytesPerSec: s.RxBytesPerSec / d, TxBytesPerSec: s.TxBytesPerSec / d}
}

func encodeFine(p []byte, sec uint32, f Figures) {
	le.PutUint32(p, sec)
	encodeFigures(p[4:], f)
}

// encodeFigures writes the 12 bytes of figures: CPU and load in
// hundredths, memory in KiB and rates in bytes/s as compact floats.
func encodeFigures(p []byte, f Figures) {
	if !f.Up {
		clear(p[:12])
		le.PutUint16(p, markDown)
		return
	}
	le.PutUint16(p[0:], uint16(math.Round(clamp(f.CPUPercent, 0, 100)*100)))
	le.PutUint16(p[2:], uint16(math.Round(clamp(f.Load1, 0, 655.35)*100)))
	le.PutUint16(p[4:], packFloat(float64((f.MemUsed+512)/1024)))
	le.PutUint16(p[6:], packFloat(float64((f.SwapUsed+512)/1024)))
	le.PutUint16(p[8:], packFloat(f.RxBytesPerSec))
	le.PutUint16(p[10:], packFloat(f.TxBytesPerSec))
}

// decodeFigures reads what encodeFigures wrote; Up is false for a down or
// no-data mark.
func decodeFigures(p []byte) Figures {
	c := le.Uint16(p)
	if c == markDown || c == markNoData || c > 10000 {
		return Figures{}
	}
	return Figures{Up: true, CPUPercent: float64(c) / 100, Load1: float64(le.Uint16(p[2:])) / 100,
		MemUsed: uint64(unpackFloat(le.Uint16(p[4:]))) * 1024, SwapUsed: uint64(unpackFloat(le.Uint16(p[6:]))) * 1024,
		RxBytesPerSec: unpackFloat(le.Uint16(p[8:])), TxBytesPerSec: unpackFloat(le.Uint16(p[10:]))}
}

func clamp(x, lo, hi float64) float64 {
	if math.IsNaN(x) || x < lo {
		return lo
	}
	return min(x, hi)
}

// packFloat is x ≥ 0 as 11 bits of mantissa m and 5 of exponent e,
// x ≈ m·2^e: exact below 2048, within 0.05 % above, up to 4.4·10^12.
func packFloat(x float64) uint16 {
	x = clamp(math.Round(x), 0, 2047*(1<<31))
	e := 0
	for x >= 2048 {
		x = math.Round(x / 2)
		e++
	}
	if x >= 2048 { // rounding carried
		x /= 2
		e++
	}
	return uint16(e)<<11 | uint16(x)
}

func unpackFloat(v uint16) float64 { return math.Ldexp(float64(v&2047), int(v>>11)) }

// Close unmaps the history file.
func (h *HistoryWriter) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil {
		return ErrClosed
	}
	h.waitGrowth()
	h.retiring.Wait()
	err := unix.Munmap(h.m)
	h.m = nil
	if cerr := h.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// HistoryReader reads the history file that recvstats writes. It never
// blocks the writer and never returns a torn slot. Not safe for
// concurrent use.
type HistoryReader struct {
	path string
	m    []byte
	g    historyGeometry
	buf  []byte
}

// OpenHistoryReader maps the history file in dir (DefaultDir when empty)
// read-only.
func OpenHistoryReader(dir string) (*HistoryReader, error) {
	if dir == "" {
		dir = DefaultDir
	}
	h := &HistoryReader{path: filepath.Join(dir, HistoryFileName)}
	if err := h.open(); err != nil {
		return nil, err
	}
	return h, nil
}

func (h *HistoryReader) open() error {
	m, err := mapReadOnly(h.path, "history", historyHeaderSize)
	if err != nil {
		return err
	}
	g, err := decodeHistoryHeader(m, int64(len(m)))
	if err != nil {
		unix.Munmap(m)
		return fmt.Errorf("shm: history %s: %w", h.path, err)
	}
	if h.m != nil {
		unix.Munmap(h.m)
	}
	h.m, h.g = m, g
	return nil
}

// Read returns node's points since since, oldest first: the
// full-resolution ones, and the one-minute ones of the minutes before the
// oldest full-resolution point (minutes without data left out). ok is
// false when the file has no history of node.
func (h *HistoryReader) Read(node int, since time.Time) (minutes, fine []Point, ok bool, err error) {
	if h.m == nil {
		return nil, nil, false, ErrClosed
	}
	if load32(h.m, yRetired) != 0 {
		if err := h.open(); err != nil {
			return nil, nil, false, err
		}
	}
	// Slots beyond the reserved ones are holes: looking there would give
	// them pages.
	for k := range min(int(load32(h.m, yReserved)), h.g.capacity) {
		off := h.g.slot(k)
		if int(load32(h.m, off+sNode)) != node+1 {
			continue
		}
		s, err := h.copySlot(off)
		if err != nil {
			return nil, nil, false, fmt.Errorf("shm: history %s: node %d: %w", h.path, node, err)
		}
		if int(le.Uint32(s[sNode:])) != node+1 {
			continue // the slot changed hands while we looked
		}
		minutes, fine, err = h.decodeSlot(s, since)
		if err != nil {
			return nil, nil, false, fmt.Errorf("shm: history %s: node %d: %w", h.path, node, err)
		}
		return minutes, fine, true, nil
	}
	return nil, nil, false, nil
}

// copySlot copies the slot at off under its seqlock into h.buf.
func (h *HistoryReader) copySlot(off int) ([]byte, error) {
	h.buf = resize(h.buf, h.g.slotSize)
	var deadline time.Time
	var waitSeq uint64
	for try := 0; ; try++ {
		s1 := load64(h.m, off+sSeq)
		if s1&1 == 0 {
			copyAtomic(h.buf, h.m, off)
			if load64(h.m, off+sSeq) == s1 {
				return h.buf, nil
			}
		}
		if readWait == 0 {
			return nil, ErrWriterStuck
		}
		// A writer whose sequence moves is alive and only busy with this
		// slot: wait on. Only one that holds the same odd sequence for
		// longer than any append takes is stuck.
		now := time.Now()
		switch {
		case deadline.IsZero() || s1 != waitSeq:
			deadline, waitSeq = now.Add(readWait+liveWriterWait), s1
		case now.After(deadline):
			return nil, ErrWriterStuck
		}
		if try > 32 {
			time.Sleep(20 * time.Microsecond)
		}
	}
}

// decodeSlot reads a copied slot; a slot whose counts do not add up is
// an error, never a panic.
func (h *HistoryReader) decodeSlot(s []byte, since time.Time) (minutes, fine []Point, err error) {
	count, next := int(le.Uint32(s[sCount:])), int(le.Uint32(s[sNext:]))
	if count > h.g.fine || next >= h.g.fine {
		return nil, nil, fmt.Errorf("%w: %d points, next %d, in a ring of %d", ErrCorrupt, count, next, h.g.fine)
	}
	ring := s[slotHeaderSize:][:fineSize*h.g.fine]
	var oldest int64 = math.MaxInt64
	for i := count; i >= 1; i-- {
		p := ring[((next-i+h.g.fine)%h.g.fine)*fineSize:][:fineSize]
		sec := int64(le.Uint32(p))
		oldest = min(oldest, sec)
		if t := time.Unix(sec, 0); !t.Before(since) {
			fine = append(fine, Point{Time: t, Figures: decodeFigures(p[4:])})
		}
	}
	newest := le.Uint64(s[sMinute:])
	switch {
	case newest == 0 || (count > 0 && !since.Before(time.Unix(oldest, 0))):
		return nil, fine, nil
	case newest > math.MaxUint32/60: // points are stamped in u32 seconds
		return nil, nil, fmt.Errorf("%w: newest minute %d out of range", ErrCorrupt, newest)
	}
	coarse := s[slotHeaderSize+fineSize*h.g.fine:][:coarseSize*h.g.coarse]
	first := le.Uint64(s[sFirst:]) // minutes before it are another node's, or none
	for i := range int64(h.g.coarse) {
		m := int64(newest) - int64(h.g.coarse) + 1 + i
		if m < 0 || uint64(m) < first || m*60 >= oldest {
			continue
		}
		e := coarse[int(m%int64(h.g.coarse))*coarseSize:][:coarseSize]
		// Only minutes of the window that the full-resolution points
		// do not cover: those that end after since.
		if t := time.Unix(m*60, 0); le.Uint16(e) != markNoData && t.Add(time.Minute).After(since) {
			minutes = append(minutes, Point{Time: t, Figures: decodeFigures(e)})
		}
	}
	return minutes, fine, nil
}

// Close unmaps the history file.
func (h *HistoryReader) Close() error {
	if h.m == nil {
		return ErrClosed
	}
	err := unix.Munmap(h.m)
	h.m = nil
	return err
}
