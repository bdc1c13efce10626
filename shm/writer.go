package shm

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hoststat/hoststat/telemetry/rates"
	"github.com/hoststat/hoststat/telemetry/sample"
)

// WriterOptions tune a new Writer. The zero value is usable.
type WriterOptions struct {
	// InitialNodes is how many node records to lay out at first (recvstats
	// -N). The table grows past it on demand, up to MaxNodes. Default 64.
	InitialNodes int
	// MaxNodes bounds how many nodes the table holds at once (node
	// numbers themselves run up to the package's MaxNodes); Put of one
	// more node fails with ErrTableFull. Default DefaultMaxNodes.
	MaxNodes int
	// DownAfter is published to readers: a node not heard from for this
	// long is shown down. Default 30s.
	DownAfter time.Duration
	// Logger receives growth and repair events; default slog.Default().
	Logger *slog.Logger
}

// DefaultMaxNodes is the default bound on the nodes a table holds.
const DefaultMaxNodes = 65536

// Assignment is a node number and the address it was last heard from.
type Assignment struct {
	Node int
	Addr netip.AddrPort
}

var (
	// ErrClosed is returned by a Writer or Reader used after Close.
	ErrClosed = errors.New("shm: table closed")
	// ErrTableFull is returned by Put for a new node when the table holds
	// WriterOptions.MaxNodes nodes already.
	ErrTableFull = errors.New("shm: table full")
)

const (
	defaultInitialNodes = 64
	defaultDownAfter    = 30 * time.Second
	slotEstimate        = 1024 // data bytes per node assumed when sizing
	minDataSize         = 64 << 10
	tempPattern         = ".beostat-*.tmp"
)

// Writer is the one process that updates a table (recvstats). Its methods
// are safe for concurrent use.
type Writer struct {
	mu      sync.Mutex
	dir     string
	path    string
	log     *slog.Logger
	max     int // WriterOptions.MaxNodes
	initial int // WriterOptions.InitialNodes: the table never shrinks below

	lock *os.File // flocked: we are the writer
	f    *os.File
	m    []byte
	g    geometry

	bump    uint64              // first never-allocated byte of the data area
	free    map[uint32][]uint64 // released slots by exact capacity
	records int                 // first never-allocated record
	freeRec []int32             // released records
	leaves  int                 // leaf pages in use
	nodes   int                 // nodes in the index
	limit   int                 // highest in-use node + 1

	// scratch for Put, reused to keep it allocation-free
	models   []string
	modelIdx []uint16
	first    rates.Rates // Put's figures of a first sample
	recBuf   [recordSize]byte
	dataBuf  []byte
	// keep: the put in progress keeps the record's details, copied into
	// kept (disks and filesystems) and keptHost.
	keep     bool
	kept     []byte
	keptHost [hostnameSize]byte
}

// Create opens the table in dir (DefaultDir when empty) for writing,
// creating dir (mode 0755) and the table (mode 0644) as needed. An existing
// table of this layout that the caller's user owns and only it can write
// is reused in place, keeping every node's last data and address; anything
// else is replaced atomically (a replaced table of ours is marked retired
// so its readers re-open the path). Only one writer may hold a table at a
// time: it locks LockName in dir, which readers cannot open.
func Create(dir string, opts WriterOptions) (*Writer, error) {
	if dir == "" {
		dir = DefaultDir
	}
	if opts.MaxNodes <= 0 {
		opts.MaxNodes = DefaultMaxNodes
	}
	if opts.MaxNodes > MaxNodes {
		return nil, fmt.Errorf("shm: a table of %d nodes exceeds the limit of %d", opts.MaxNodes, MaxNodes)
	}
	if opts.InitialNodes <= 0 {
		opts.InitialNodes = defaultInitialNodes
	}
	opts.InitialNodes = min(opts.InitialNodes, opts.MaxNodes)
	if opts.DownAfter <= 0 {
		opts.DownAfter = defaultDownAfter
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if err := mkdirWorldReadable(dir); err != nil {
		return nil, err
	}
	if err := checkDir(dir); err != nil {
		return nil, err
	}
	w := &Writer{
		dir:     dir,
		path:    filepath.Join(dir, FileName),
		log:     opts.Logger,
		max:     opts.MaxNodes,
		initial: opts.InitialNodes,
		free:    make(map[uint32][]uint64),
	}
	lock, err := lockDir(dir)
	if errors.Is(err, errBusy) {
		return nil, fmt.Errorf("shm: table %s is in use by another writer (pid %d)", w.path, peekPID(w.path))
	}
	if err != nil {
		return nil, err
	}
	w.lock = lock
	if err := w.open(opts); err != nil {
		lock.Close()
		return nil, err
	}
	ticks, _ := processStart(os.Getpid())
	store64(w.m, hDownAfter, uint64(opts.DownAfter))
	store64(w.m, hWriterStart, uint64(time.Now().UnixNano()))
	store64(w.m, hWriterTicks, ticks)
	store32(w.m, hWriterPID, uint32(os.Getpid()))
	store64(w.m, hKernelDrops, 0) // a new writer, a new socket
	store64(w.m, hReadBuffer, 0)
	resetCounters(w.m)
	return w, nil
}

// mkdirWorldReadable creates dir and any missing parents with mode 0755
// whatever the umask, since readers run as other users; directories that
// already exist keep their mode.
func mkdirWorldReadable(dir string) error {
	var missing []string
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil || d == filepath.Dir(d) {
			break
		}
		missing = append(missing, d)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("shm: create table directory %s: %w", dir, err)
	}
	for _, d := range missing {
		if err := os.Chmod(d, 0o755); err != nil {
			return fmt.Errorf("shm: table directory %s: %w", d, err)
		}
	}
	return nil
}

// open reuses the table at w.path or lays out a new one; the caller holds
// the lock.
func (w *Writer) open(opts WriterOptions) error {
	w.cleanTemps()
	fresh := func() error {
		capacity := opts.InitialNodes
		g := newGeometry(uint64(time.Now().UnixNano()), capacity, leavesFor(capacity), dataSizeFor(capacity))
		return w.install(g)
	}
	old, err := openOwned(w.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fresh()
	case errors.Is(err, errForeign):
		// Someone else's file (or a symlink): never read or written, only
		// replaced by our own.
		w.log.Warn("shm: replacing a table file the writer does not own", "path", w.path, "reason", err)
		return fresh()
	case err != nil:
		return fmt.Errorf("shm: open table %s for writing: %w", w.path, err)
	}
	if err := w.reuse(old); err == nil {
		if opts.InitialNodes > w.g.capacity {
			return w.relayout(opts.InitialNodes, w.g.leaves, 0)
		}
		return nil
	} else {
		w.log.Info("shm: replacing existing table", "path", w.path, "reason", err)
	}
	err = fresh()
	retireFile(old, magic)
	old.Close()
	return err
}

// reuse adopts f if it holds a sound table of this layout, repairing
// records a dead writer left half-written. On error f is still open.
func (w *Writer) reuse(f *os.File) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() < headerSize || st.Size() > math.MaxInt {
		return fmt.Errorf("%w: %d bytes", ErrNotTable, st.Size())
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("map %s: %w", w.path, err)
	}
	if err := w.adoptMapping(m); err != nil {
		unix.Munmap(m)
		return err
	}
	w.f = f
	return nil
}

// adoptMapping takes over the table mapped at m if it is sound.
func (w *Writer) adoptMapping(m []byte) error {
	g, err := decodeHeader(m, int64(len(m)))
	if err == nil && load32(m, hRetired) != 0 {
		err = errors.New("table is marked retired")
	}
	var a adoption
	if err == nil {
		a, err = adopt(m, g)
	}
	if err != nil {
		return err
	}
	w.m, w.g = m, g
	// Only now, with the whole file checked, repair and tidy it.
	for _, k := range a.odd {
		w.repair(g.record(k))
	}
	for _, k := range a.stray {
		w.clearRecord(g.record(k))
	}
	w.bump, w.records, w.freeRec = a.bump, a.records, a.freeRec
	w.leaves, w.nodes, w.limit = a.leaves, a.nodes, a.limit
	clear(m[leavesOffset+a.leaves*leafSize : g.recordOffset]) // leaves to come start empty
	w.publishCounts()
	store64(m, hDataUsed, w.bump)
	if len(a.odd) > 0 {
		w.log.Warn("shm: repaired records left half-written by a previous writer", "path", w.path, "records", len(a.odd))
	}
	return nil
}

// adoption is what adopt learnt of a table it found sound.
type adoption struct {
	odd, stray []int // records left half-written; in use but not indexed
	freeRec    []int32
	records    int // one past the last record in use
	leaves     int // one past the last leaf in use
	bump       uint64
	nodes      int
	limit      int
}

// adopt checks every offset of a table a new writer found at the path:
// each directory word names a distinct leaf inside the file, each leaf
// word a distinct record inside the file that is in use for that very
// node, each record's slot lies inside the data area, matches its counts
// and overlaps no other. It only reads m.
func adopt(m []byte, g geometry) (adoption, error) {
	var a adoption
	leafSeen := make([]bool, g.leaves)
	recSeen := make([]bool, g.capacity)
	type span struct{ off, end uint64 }
	var slots []span
	for d := range dirEntries {
		l := int(load32(m, dirOffset+4*d))
		if l == 0 {
			continue
		}
		if l > g.leaves || leafSeen[l-1] {
			return a, fmt.Errorf("%w: directory entry %d names leaf %d (of %d, or twice)", ErrCorrupt, d, l, g.leaves)
		}
		leafSeen[l-1] = true
		a.leaves = max(a.leaves, l)
		for e := range leafEntries {
			node := d*leafEntries + e
			k := int(load32(m, leafWord(l-1, node)))
			if k == 0 {
				continue
			}
			if k > g.capacity || recSeen[k-1] {
				return a, fmt.Errorf("%w: node %d names record %d (of %d, or twice)", ErrCorrupt, node, k, g.capacity)
			}
			recSeen[k-1] = true
			k--
			a.records = max(a.records, k+1)
			rec := m[g.record(k):][:recordSize]
			if le.Uint32(rec[rFlags:])&flagInUse == 0 || int(le.Uint32(rec[rNode:])) != node {
				return a, fmt.Errorf("%w: node %d names record %d of node %d", ErrCorrupt, node, k, le.Uint32(rec[rNode:]))
			}
			if load64(m, g.record(k)+rSeq)&1 != 0 {
				// Torn by a dead writer: only the slot is kept, and checked.
				a.odd = append(a.odd, k)
				off, c := le.Uint64(rec[rDataOff:]), uint64(le.Uint32(rec[rDataCap:]))
				if off%slotAlign != 0 || c%slotAlign != 0 || off > g.dataSize || c > g.dataSize-off {
					return a, fmt.Errorf("%w: node %d data slot [%d,+%d) outside the data area", ErrCorrupt, node, off, c)
				}
			} else if err := checkSlot(rec, g.dataSize); err != nil {
				return a, fmt.Errorf("node %d: %w", node, err)
			}
			off, c := le.Uint64(rec[rDataOff:]), uint64(le.Uint32(rec[rDataCap:]))
			if c > 0 {
				slots = append(slots, span{off, off + c})
				a.bump = max(a.bump, off+c)
			}
			a.nodes++
			a.limit = node + 1
		}
	}
	slices.SortFunc(slots, func(x, y span) int { return cmp.Compare(x.off, y.off) })
	for i := 1; i < len(slots); i++ {
		if slots[i].off < slots[i-1].end {
			return a, fmt.Errorf("%w: data slots overlap at %d", ErrCorrupt, slots[i].off)
		}
	}
	// Records not indexed are free; one in use was being added or removed
	// when its writer died.
	for k := range g.capacity {
		if recSeen[k] {
			continue
		}
		if k < a.records {
			a.freeRec = append(a.freeRec, int32(k))
		}
		if !allZero(m[g.record(k)+8:][:recordSize-8]) || load64(m, g.record(k))&1 != 0 {
			a.stray = append(a.stray, k)
		}
	}
	return a, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// repair closes a record at off a dead writer left odd. Its contents may
// be torn, so only the node number, address and slot survive (recvstats
// keeps node assignments by them); the rest waits for the node's next
// packet.
func (w *Writer) repair(off int) {
	rec := w.m[off : off+recordSize]
	seq := load64(w.m, off+rSeq)
	node, flags := le.Uint32(rec[rNode:]), le.Uint32(rec[rFlags:])
	var addr [rCPUs - rAddr]byte
	copy(addr[:], rec[rAddr:rCPUs])
	dataOff, dataCap := le.Uint64(rec[rDataOff:]), le.Uint32(rec[rDataCap:])
	clear(rec[8:])
	le.PutUint32(rec[rNode:], node)
	le.PutUint32(rec[rFlags:], flags&flagInUse|flagRepaired)
	copy(rec[rAddr:rCPUs], addr[:])
	le.PutUint64(rec[rDataOff:], dataOff)
	le.PutUint32(rec[rDataCap:], dataCap)
	store64(w.m, off+rSeq, seq+1)
}

// clearRecord empties the record at off inside a seqlock window.
func (w *Writer) clearRecord(off int) {
	seq := load64(w.m, off+rSeq) &^ 1
	store64(w.m, off+rSeq, seq+1)
	clear(w.recBuf[:])
	publish(w.m, off+8, w.recBuf[8:])
	store64(w.m, off+rSeq, seq+2)
}

// publishCounts tells readers the node count, leaves and node limit.
func (w *Writer) publishCounts() {
	store32(w.m, hNodes, uint32(w.nodes))
	store32(w.m, hLeavesUsed, uint32(w.leaves))
	store32(w.m, hNodeLimit, uint32(w.limit))
}

func dataSizeFor(nodes int) uint64 {
	return max(uint64(nodes)*slotEstimate, minDataSize)
}

// leavesFor is the leaf pages to lay out for capacity nodes numbered
// densely from 0; sparse numbers grow the index on demand.
func leavesFor(capacity int) int {
	return min(dirEntries, max(1, (capacity+leafEntries-1)/leafEntries))
}

// peekPID reads the writer pid from the table at path, 0 if it cannot.
func peekPID(path string) uint32 {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return 0
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return 0
	}
	var b [4]byte
	if _, err := f.ReadAt(b[:], hWriterPID); err != nil {
		return 0
	}
	return le.Uint32(b[:])
}

// retireFile marks a replaced file of ours so its readers re-open the
// path. Only files that carry the magic are touched: the retired word sits
// at the same offset in every layout version.
func retireFile(f *os.File, magic [8]byte) {
	var b [8]byte
	if _, err := f.ReadAt(b[:], hMagic); err != nil || b != magic {
		return
	}
	var one [4]byte
	le.PutUint32(one[:], retiredMarker)
	f.WriteAt(one[:], hRetired)
}

// cleanTemps removes half-built tables a writer of ours died leaving
// behind; only the lock holder may, so no live writer is still building
// one. Other users' files are left alone.
func (w *Writer) cleanTemps() {
	names, _ := filepath.Glob(filepath.Join(w.dir, tempPattern))
	for _, n := range names {
		var st unix.Stat_t
		if unix.Lstat(n, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && int(st.Uid) == os.Geteuid() {
			os.Remove(n)
		}
	}
}

// install builds a table of geometry g in a new temporary file (created
// exclusively: never someone else's file or a symlink), copies the nodes
// of the current mapping (if any) into it, renames it into place and
// retires the current mapping.
func (w *Writer) install(g geometry) error {
	prev := w.m
	f, m, err := createMapped(w.dir, tempPattern, "table", int64(g.fileSize))
	if err != nil {
		return err
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return err
	}
	encodeHeader(m[:headerSize], g)

	// Copy the nodes in node order, packing records, leaves and slots.
	var bump uint64
	records, leaves, limit := 0, 0, 0
	if prev != nil {
		w.eachNode(func(node, k int) {
			src := prev[w.g.record(k):][:recordSize]
			dst := m[g.record(records):][:recordSize]
			copy(dst, src)
			if c := uint64(le.Uint32(src[rDataCap:])); c > 0 {
				from := w.g.dataOffset + le.Uint64(src[rDataOff:])
				copy(m[g.dataOffset+bump:][:c], prev[from:][:c])
				le.PutUint64(dst[rDataOff:], bump)
				bump += c
			}
			l := int(le.Uint32(m[dirWord(node):]))
			if l == 0 {
				leaves++
				l = leaves
				le.PutUint32(m[dirWord(node):], uint32(l))
			}
			records++
			le.PutUint32(m[leafWord(l-1, node):], uint32(records))
			limit = node + 1
		})
		for _, off := range []int{hDownAfter, hUpdateReq, hWriterStart, hPuts, hWriterTicks, hKernelDrops, hReadBuffer} {
			store64(m, off, load64(prev, off))
		}
		store32(m, hWriterPID, load32(prev, hWriterPID))
		copyCounters(m, prev)
	}

	if err := os.Rename(tmp, w.path); err != nil {
		unix.Munmap(m)
		return fail(fmt.Errorf("shm: install table %s: %w", w.path, err))
	}
	if prev != nil {
		// Readers see the new file at the path before they learn to look.
		store32(prev, hRetired, retiredMarker)
		unix.Munmap(prev)
		if w.f != nil {
			w.f.Close()
		}
	}
	w.f, w.m, w.g = f, m, g
	w.bump, w.records, w.leaves, w.limit = bump, records, leaves, limit
	w.nodes = records
	w.freeRec = w.freeRec[:0]
	clear(w.free)
	w.publishCounts()
	store64(m, hDataUsed, bump)
	return nil
}

// eachNode calls f for every node in the index, ascending, with its
// record number.
func (w *Writer) eachNode(f func(node, k int)) {
	for d := range dirEntries {
		l := int(load32(w.m, dirOffset+4*d))
		if l == 0 {
			continue
		}
		for e := range leafEntries {
			node := d*leafEntries + e
			if k := int(load32(w.m, leafWord(l-1, node))); k != 0 {
				f(node, k-1)
			}
		}
	}
}

// lookup is node's record number, -1 when node is not in the index.
func (w *Writer) lookup(node int) int {
	l := int(load32(w.m, dirWord(node)))
	if l == 0 {
		return -1
	}
	return int(load32(w.m, leafWord(l-1, node))) - 1
}

// reserve gives f its size with blocks behind it, so a full disk is an
// error now rather than a SIGBUS on some later store.
func reserve(f *os.File, size int64) error { return reserveRange(f, 0, size) }

// reserveRange puts blocks behind bytes [off, off+n) of f, growing it to
// off+n if shorter. Where the filesystem cannot, it only sizes the file.
func reserveRange(f *os.File, off, n int64) error {
	err := unix.Fallocate(int(f.Fd()), 0, off, n)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		st, serr := f.Stat()
		if serr != nil || st.Size() >= off+n {
			return serr
		}
		return f.Truncate(off + n)
	}
	return err
}

// relayout lays the table out again with room for at least capacity
// records, leaves index leaves and extra more data bytes, compacting
// records, leaves and data.
func (w *Writer) relayout(capacity, leaves int, extra uint64) error {
	capacity = max(capacity, w.nodes)
	blocks := 0
	for d := range dirEntries {
		if load32(w.m, dirOffset+4*d) != 0 {
			blocks++
		}
	}
	leaves = min(dirEntries, max(leaves, blocks))
	var live uint64
	w.eachNode(func(_, k int) { live += uint64(le.Uint32(w.m[w.g.record(k)+rDataCap:])) })
	// Size the data area for a full table of nodes like the ones seen so
	// far, and at least double what is live now.
	perNode := uint64(slotEstimate)
	if w.nodes > 0 {
		perNode = live / uint64(w.nodes)
	}
	data := max(uint64(capacity)*perNode, 2*(live+extra), minDataSize)
	g := newGeometry(w.g.generation+1, capacity, leaves, data)
	start := time.Now()
	if err := w.install(g); err != nil {
		return err
	}
	w.log.Info("shm: table re-laid out", "path", w.path, "generation", g.generation,
		"nodes", g.capacity, "leaves", g.leaves, "data_bytes", g.dataSize, "took", time.Since(start))
	return nil
}

// room makes sure a Put can allocate what it needs without a relayout in
// between: a record and a leaf for a new node, a data slot of c bytes.
func (w *Writer) room(node int, isNew bool, c uint32) error {
	needRec := isNew && len(w.freeRec) == 0 && w.records == w.g.capacity
	needLeaf := isNew && load32(w.m, dirWord(node)) == 0 && w.leaves == w.g.leaves
	needData := c > 0 && len(w.free[c]) == 0 && w.bump+uint64(c) > w.g.dataSize
	if !needRec && !needLeaf && !needData {
		return nil
	}
	capacity, leaves := w.g.capacity, w.g.leaves
	if needRec {
		capacity = min(max(2*capacity, 1), w.max)
	}
	if needLeaf {
		leaves = min(max(2*leaves, 1), dirEntries)
	}
	return w.relayout(capacity, leaves, uint64(c))
}

// alloc takes a data slot of exactly c bytes (a multiple of slotAlign);
// room has made sure there is one.
func (w *Writer) alloc(c uint32) uint64 {
	if l := w.free[c]; len(l) > 0 {
		off := l[len(l)-1]
		w.free[c] = l[:len(l)-1]
		return off
	}
	off := w.bump
	w.bump += uint64(c)
	store64(w.m, hDataUsed, w.bump)
	return off
}

func (w *Writer) release(off uint64, c uint32) {
	if c > 0 {
		w.free[c] = append(w.free[c], off)
	}
}

// Path is the table file.
func (w *Writer) Path() string { return w.path }

// Put stores s as node's first sample, heard from addr at seen (master
// clock): CPU percent since boot and no byte rates, as rates.Between
// gives them with no previous sample. Tools and tests use it; recvstats
// derives figures from the node's previous sample and calls PutRates.
func (w *Writer) Put(node int, addr netip.AddrPort, seen time.Time, s *sample.Sample) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.first.Between(nil, s)
	w.keep = false
	return w.put(node, addr, seen, s, &w.first)
}

// PutRates stores node's sample s, heard from addr at seen (master clock),
// with the figures r derived from it (rates.Rates.Between), and grows the
// table as needed. The table stores what it is given: which samples the
// figures span is for the caller to decide.
func (w *Writer) PutRates(node int, addr netip.AddrPort, seen time.Time, s *sample.Sample, r *rates.Rates) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.keep = false
	return w.put(node, addr, seen, s, r)
}

// PutRatesKeepingDetails is PutRates for a sample that came without its
// details: the hostname, disks (with their rates) and filesystems stay
// as node's record holds them, and s's (with r's disk rates) must be
// empty. sendstats sends the details only every few samples; recvstats
// decides when what the table holds still belongs to the sender. With no
// record for node, nothing is kept.
func (w *Writer) PutRatesKeepingDetails(node int, addr netip.AddrPort, seen time.Time, s *sample.Sample, r *rates.Rates) error {
	if len(s.Disks) > 0 || len(s.Filesystems) > 0 || s.Hostname != "" {
		return fmt.Errorf("shm: node %d: a sample that keeps the stored details has details of its own", node)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.keep = true
	return w.put(node, addr, seen, s, r)
}

// keepDetails copies the hostname, disks and filesystems of record k
// into w.kept, and tells their counts; none for a record that holds no
// sound sample.
func (w *Writer) keepDetails(k int) (disks, fss int) {
	w.kept = w.kept[:0]
	rec := w.m[w.g.record(k):][:recordSize]
	if le.Uint32(rec[rFlags:])&(flagInUse|flagRepaired) != flagInUse || checkSlot(rec, w.g.dataSize) != nil {
		return 0, 0
	}
	models, cpus, nets, disks, fss := slotCounts(rec)
	w.keptHost = [hostnameSize]byte(rec[rHostname : rHostname+hostnameSize])
	d := w.m[w.g.dataOffset+le.Uint64(rec[rDataOff:]):][:slotLen(models, cpus, nets, disks, fss)]
	w.kept = append(w.kept, d[slotLen(models, cpus, nets, 0, 0):]...)
	return disks, fss
}

// put is Put with the figures r; the caller holds w.mu.
func (w *Writer) put(node int, addr netip.AddrPort, seen time.Time, s *sample.Sample, r *rates.Rates) error {
	switch {
	case node < 0 || node >= MaxNodes:
		return fmt.Errorf("shm: node %d out of range [0,%d)", node, MaxNodes)
	case len(s.CPUs) > MaxCPUs:
		return fmt.Errorf("shm: node %d has %d CPUs, more than the table holds (%d)", node, len(s.CPUs), MaxCPUs)
	case len(s.Net) > MaxNetDevs:
		return fmt.Errorf("shm: node %d has %d network devices, more than the table holds (%d)", node, len(s.Net), MaxNetDevs)
	case len(s.Disks) > MaxDisks || len(s.Filesystems) > MaxFilesystems:
		return fmt.Errorf("shm: node %d has %d disks and %d filesystems, more than the table holds (%d, %d)",
			node, len(s.Disks), len(s.Filesystems), MaxDisks, MaxFilesystems)
	case len(r.CPUPercent) != len(s.CPUs) || len(r.Net) != len(s.Net):
		return fmt.Errorf("shm: node %d: figures for %d CPUs and %d devices do not match its sample's %d and %d",
			node, len(r.CPUPercent), len(r.Net), len(s.CPUs), len(s.Net))
	case len(r.Disk) != len(s.Disks):
		return fmt.Errorf("shm: node %d: figures for %d disks do not match its sample's %d", node, len(r.Disk), len(s.Disks))
	}
	if w.m == nil {
		return ErrClosed
	}
	w.collectModels(s)
	k := w.lookup(node)
	isNew := k < 0
	disks, fss := len(s.Disks), len(s.Filesystems)
	keep := w.keep && !isNew
	if keep {
		// Copied now: room may lay the table out again.
		disks, fss = w.keepDetails(k)
	}
	need := uint32(alignUp(uint64(slotLen(len(w.models), len(s.CPUs), len(s.Net), disks, fss)), slotAlign))
	if isNew && w.nodes >= w.max {
		return fmt.Errorf("%w: node %d would be node %d of at most %d", ErrTableFull, node, w.nodes+1, w.max)
	}
	var dataOff uint64
	var dataCap uint32
	if !isNew {
		rec := w.m[w.g.record(k):][:recordSize]
		dataOff, dataCap = le.Uint64(rec[rDataOff:]), le.Uint32(rec[rDataCap:])
	}
	moved := isNew || need > dataCap
	want := need
	if !moved {
		want = 0
	}
	if err := w.room(node, isNew, want); err != nil {
		return err
	}
	if !isNew { // room may have re-laid out the table: look again
		k = w.lookup(node)
		rec := w.m[w.g.record(k):][:recordSize]
		dataOff, dataCap = le.Uint64(rec[rDataOff:]), le.Uint32(rec[rDataCap:])
	} else if n := len(w.freeRec); n > 0 {
		k = int(w.freeRec[n-1])
		w.freeRec = w.freeRec[:n-1]
	} else {
		k = w.records
		w.records++
	}
	off := w.g.record(k)
	if moved {
		if !isNew {
			defer w.release(dataOff, dataCap)
		}
		dataOff, dataCap = w.alloc(need), need
	}

	// Encode privately, then publish inside the shortest possible window.
	clear(w.recBuf[:])
	w.encode(w.recBuf[:], node, addr, seen, s, r, dataOff, dataCap)
	w.dataBuf = slices.Grow(w.dataBuf[:0], int(need))[:need]
	clear(w.dataBuf)
	w.encodeData(w.dataBuf, s, r)
	if keep {
		le.PutUint32(w.recBuf[rDataLen:], uint32(slotLen(len(w.models), len(s.CPUs), len(s.Net), disks, fss)))
		le.PutUint16(w.recBuf[rDisks:], uint16(disks))
		le.PutUint16(w.recBuf[rFSs:], uint16(fss))
		copy(w.recBuf[rHostname:rHostname+hostnameSize], w.keptHost[:])
		copy(w.dataBuf[slotLen(len(w.models), len(s.CPUs), len(s.Net), 0, 0):], w.kept)
	}
	seq := load64(w.m, off+rSeq)
	store64(w.m, off+rSeq, seq+1) // odd: readers keep off
	publish(w.m, off+8, w.recBuf[8:])
	publish(w.m, int(w.g.dataOffset+dataOff), w.dataBuf)
	store64(w.m, off+rSeq, seq+2)

	if isNew {
		// Index the record only once it is whole.
		l := int(load32(w.m, dirWord(node)))
		if l == 0 {
			w.leaves++
			l = w.leaves
			store32(w.m, dirWord(node), uint32(l))
		}
		store32(w.m, leafWord(l-1, node), uint32(k+1))
		w.nodes++
		w.limit = max(w.limit, node+1)
		w.publishCounts()
	}
	store64(w.m, hPuts, load64(w.m, hPuts)+1)
	return nil
}

func (w *Writer) collectModels(s *sample.Sample) {
	w.models = w.models[:0]
	w.modelIdx = w.modelIdx[:0]
	for i := range s.CPUs {
		m := s.CPUs[i].Model
		j := slices.Index(w.models, m)
		if j < 0 {
			if len(w.models) == MaxModels {
				j = MaxModels - 1 // more models than a node can have: lump the rest
			} else {
				w.models = append(w.models, m)
				j = len(w.models) - 1
			}
		}
		w.modelIdx = append(w.modelIdx, uint16(j))
	}
}

func putTicks(b []byte, t sample.Ticks) {
	for i, v := range [8]uint64{t.User, t.Nice, t.System, t.Idle, t.IOWait, t.IRQ, t.SoftIRQ, t.Steal} {
		le.PutUint64(b[8*i:], v)
	}
}

func getTicks(b []byte) sample.Ticks {
	_ = b[63]
	return sample.Ticks{
		User: le.Uint64(b[0:]), Nice: le.Uint64(b[8:]), System: le.Uint64(b[16:]), Idle: le.Uint64(b[24:]),
		IOWait: le.Uint64(b[32:]), IRQ: le.Uint64(b[40:]), SoftIRQ: le.Uint64(b[48:]), Steal: le.Uint64(b[56:]),
	}
}

func putMemory(b []byte, m *sample.Memory) {
	for i, v := range [8]uint64{m.Total, m.Free, m.Available, m.Buffers, m.Cached, m.Shared, m.SwapTotal, m.SwapFree} {
		le.PutUint64(b[8*i:], v)
	}
}

func getMemory(b []byte) sample.Memory {
	_ = b[63]
	return sample.Memory{
		Total: le.Uint64(b[0:]), Free: le.Uint64(b[8:]), Available: le.Uint64(b[16:]), Buffers: le.Uint64(b[24:]),
		Cached: le.Uint64(b[32:]), Shared: le.Uint64(b[40:]), SwapTotal: le.Uint64(b[48:]), SwapFree: le.Uint64(b[56:]),
	}
}

// encode writes the node index record; the caller holds the seqlock.
func (w *Writer) encode(rec []byte, node int, addr netip.AddrPort, seen time.Time, s *sample.Sample,
	r *rates.Rates, dataOff uint64, dataCap uint32) {
	le.PutUint32(rec[rNode:], uint32(node))
	le.PutUint32(rec[rFlags:], flagInUse)
	putAddr(rec, addr)
	le.PutUint32(rec[rCPUs:], uint32(len(s.CPUs)))
	putTime(rec[rLastSeen:], seen)
	putTime(rec[rTime:], s.Time)
	putTime(rec[rBootTime:], s.BootTime)
	copy(rec[rBootID:rBootID+16], s.BootID[:])
	putTicks(rec[rTicks:], s.Total)
	putF32(rec[rTotalPct:], r.TotalPercent)
	le.PutUint16(rec[rNets:], uint16(len(s.Net)))
	le.PutUint16(rec[rModels:], uint16(len(w.models)))
	putMemory(rec[rMemory:], &s.Memory)
	putF64(rec[rLoad1:], s.Load.One)
	putF64(rec[rLoad5:], s.Load.Five)
	putF64(rec[rLoad15:], s.Load.Fifteen)
	le.PutUint32(rec[rRunning:], s.Load.Running)
	le.PutUint32(rec[rProcs:], s.Load.Total)
	le.PutUint32(rec[rLastPID:], s.Load.LastPID)
	le.PutUint32(rec[rDataLen:], uint32(slotLen(len(w.models), len(s.CPUs), len(s.Net), len(s.Disks), len(s.Filesystems))))
	le.PutUint64(rec[rDataOff:], dataOff)
	le.PutUint32(rec[rDataCap:], dataCap)
	le.PutUint16(rec[rDisks:], uint16(len(s.Disks)))
	le.PutUint16(rec[rFSs:], uint16(len(s.Filesystems)))
	putF64(rec[rRxRate:], r.RxBytesPerSec)
	putF64(rec[rTxRate:], r.TxBytesPerSec)
	putName(rec[rHostname:rHostname+hostnameSize], s.Hostname)
}

// encodeData writes models, CPUs and devices into the node's data slot.
func (w *Writer) encodeData(b []byte, s *sample.Sample, r *rates.Rates) {
	for i, m := range w.models {
		putName(b[i*modelSize:][:modelSize], m)
	}
	b = b[len(w.models)*modelSize:]
	for i := range s.CPUs {
		e := b[i*cpuSize:][:cpuSize]
		putTicks(e, s.CPUs[i].Ticks)
		putF64(e[64:], s.CPUs[i].MHz)
		putF32(e[72:], r.CPUPercent[i])
		le.PutUint16(e[76:], w.modelIdx[i])
		le.PutUint16(e[78:], 0)
	}
	b = b[len(s.CPUs)*cpuSize:]
	for i := range s.Net {
		d := &s.Net[i]
		e := b[i*netSize:][:netSize]
		putName(e[:nameSize], d.Name)
		for j, v := range [8]uint64{d.RxBytes, d.RxPackets, d.RxErrors, d.RxDrops, d.TxBytes, d.TxPackets, d.TxErrors, d.TxDrops} {
			le.PutUint64(e[nameSize+8*j:], v)
		}
		putF64(e[80:], r.Net[i].RxBytesPerSec)
		putF64(e[88:], r.Net[i].TxBytesPerSec)
	}
	b = b[len(s.Net)*netSize:]
	for i := range s.Disks {
		d := &s.Disks[i]
		e := b[i*diskSize:][:diskSize]
		putName(e[:diskNameSize], d.Name)
		for j, v := range [5]uint64{d.Reads, d.Writes, d.ReadBytes, d.WriteBytes, d.IOMillis} {
			le.PutUint64(e[diskNameSize+8*j:], v)
		}
		dr := &r.Disk[i]
		putF64(e[72:], dr.ReadBytesPerSec)
		putF64(e[80:], dr.WriteBytesPerSec)
		putF32(e[88:], dr.BusyPercent)
		le.PutUint32(e[92:], 0)
	}
	b = b[len(s.Disks)*diskSize:]
	for i := range s.Filesystems {
		f := &s.Filesystems[i]
		e := b[i*fsSize:][:fsSize]
		putName(e[:mountSize], f.Mount)
		putName(e[mountSize:mountSize+fsTypeSize], f.Type)
		for j, v := range [5]uint64{f.Total, f.Free, f.Avail, f.Files, f.FilesFree} {
			le.PutUint64(e[mountSize+fsTypeSize+8*j:], v)
		}
		var flags uint32
		if f.NotAnswering {
			flags |= fsNotAnswer
		}
		le.PutUint32(e[152:], flags)
		le.PutUint32(e[156:], 0)
	}
}

// Last reads node's stored sample into prev, reusing its slices, as far
// as figures are derived from it (rates.Rates.Between): sample time, boot,
// tick counters, and each device's name and byte counters; other fields
// are left as they were. ok is false when node is not in the table or its
// record holds no sample (one repaired after a dead writer). It reads
// only what Between needs, since recvstats calls it for every packet.
func (w *Writer) Last(node int, prev *sample.Sample) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil || node < 0 || node >= MaxNodes {
		return false
	}
	k := w.lookup(node)
	if k < 0 {
		return false
	}
	b := w.m[w.g.record(k):][:recordSize]
	if le.Uint32(b[rFlags:])&(flagInUse|flagRepaired) != flagInUse || checkSlot(b, w.g.dataSize) != nil {
		return false
	}
	prev.Time, prev.BootTime = getTime(b[rTime:]), getTime(b[rBootTime:])
	prev.BootID = [16]byte(b[rBootID : rBootID+16])
	prev.Total = getTicks(b[rTicks:])
	models, cpus, nets, disks, fss := slotCounts(b)
	d := w.m[w.g.dataOffset+le.Uint64(b[rDataOff:]):][:slotLen(models, cpus, nets, disks, fss)]
	d = d[models*modelSize:]
	prev.CPUs = resize(prev.CPUs, cpus)
	for i := range prev.CPUs {
		prev.CPUs[i].Ticks = getTicks(d[i*cpuSize:])
	}
	d = d[cpus*cpuSize:]
	prev.Net = resize(prev.Net, nets)
	for i := range prev.Net {
		e, n := d[i*netSize:][:netSize], &prev.Net[i]
		if name := nameBytes(e[:nameSize]); n.Name != string(name) {
			n.Name = string(name)
		}
		n.RxBytes, n.TxBytes = le.Uint64(e[nameSize:]), le.Uint64(e[nameSize+32:])
	}
	d = d[nets*netSize:]
	prev.Disks = resize(prev.Disks, disks)
	for i := range prev.Disks {
		e, k := d[i*diskSize:][:diskSize], &prev.Disks[i]
		if name := nameBytes(e[:diskNameSize]); k.Name != string(name) {
			k.Name = string(name)
		}
		k.ReadBytes, k.WriteBytes, k.IOMillis = le.Uint64(e[diskNameSize+16:]), le.Uint64(e[diskNameSize+24:]), le.Uint64(e[diskNameSize+32:])
	}
	return true
}

// Nodes lists every node in the table, ascending, with its address, so
// recvstats can restore its node assignments after a restart.
func (w *Writer) Nodes() []Assignment {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []Assignment
	if w.m == nil {
		return out
	}
	w.eachNode(func(node, k int) {
		out = append(out, Assignment{Node: node, Addr: getAddr(w.m[w.g.record(k):][:recordSize])})
	})
	return out
}

// SetUpdateRequest records when recvstats last multicast an update
// request (libbeostat's beostat_get_last_multicast).
func (w *Writer) SetUpdateRequest(t time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m != nil {
		store64(w.m, hUpdateReq, uint64(t.UnixNano()))
	}
}

// SetSocket publishes the writer's socket: its receive buffer (SO_RCVBUF,
// as the kernel reports it) and the datagrams the kernel dropped on it
// because that buffer was full, since the writer opened it.
func (w *Writer) SetSocket(readBuffer int, kernelDrops uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m != nil {
		store64(w.m, hReadBuffer, uint64(max(readBuffer, 0)))
		store64(w.m, hKernelDrops, kernelDrops)
	}
}

// Remove forgets node: readers no longer see it, and its record and data
// slot are reused by the next new node. When a quarter or less of the
// records stay in use the table is laid out again, smaller.
func (w *Writer) Remove(node int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil || node < 0 || node >= MaxNodes {
		return
	}
	k := w.lookup(node)
	if k < 0 {
		return
	}
	// Unindex first: a reader that still found the record sees it empty.
	store32(w.m, leafWord(int(load32(w.m, dirWord(node)))-1, node), 0)
	off := w.g.record(k)
	rec := w.m[off : off+recordSize]
	dataOff, dataCap := le.Uint64(rec[rDataOff:]), le.Uint32(rec[rDataCap:])
	w.clearRecord(off)
	w.release(dataOff, dataCap)
	w.freeRec = append(w.freeRec, int32(k))
	w.nodes--
	if node == w.limit-1 {
		w.limit = 0
		w.eachNode(func(n, _ int) { w.limit = n + 1 })
	}
	w.publishCounts()
	// Down to a quarter of the records in use: lay the table out again at
	// twice the nodes left, so the file follows the nodes present down as
	// well as up.
	if w.g.capacity > w.initial && 4*w.nodes < w.g.capacity {
		if err := w.relayout(max(w.initial, 2*w.nodes), 1, 0); err != nil {
			w.log.Warn("shm: could not shrink the table", "path", w.path, "err", err)
		}
	}
}

// Close unmaps the table and releases it for the next writer. The file
// stays, valid, so readers keep showing the last data (nodes turn down as
// down-after passes) and a restarted recvstats picks it up.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		return ErrClosed
	}
	store32(w.m, hWriterPID, 0)
	store64(w.m, hWriterTicks, 0)
	err := unix.Munmap(w.m)
	w.m = nil
	if w.f != nil {
		if cerr := w.f.Close(); err == nil {
			err = cerr
		}
	}
	if w.lock != nil {
		w.lock.Close() // releases the lock for the next writer
	}
	if err != nil {
		return fmt.Errorf("shm: close table %s: %w", w.path, err)
	}
	return nil
}
