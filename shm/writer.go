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
	"time"

	"golang.org/x/sys/unix"

	"github.com/hoststat/hoststat/telemetry/sample"
)

// WriterOptions tune a new Writer. The zero value is usable.
type WriterOptions struct {
	// InitialNodes is how many node slots to lay out at first (recvstats
	// -N). The table grows past it on demand. Default 64.
	InitialNodes int
	// DownAfter is published to readers: a node not heard from for this
	// long is shown down. Default 30s.
	DownAfter time.Duration
	// Logger receives growth and repair events; default slog.Default().
	Logger *slog.Logger
}

// Assignment is a node number and the address it was last heard from.
type Assignment struct {
	Node int
	Addr netip.AddrPort
}

// ErrClosed is returned by a Writer or Reader used after Close.
var ErrClosed = errors.New("shm: table closed")

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
	mu   sync.Mutex
	dir  string
	path string
	log  *slog.Logger

	f *os.File
	m []byte
	g geometry

	bump  uint64              // first never-allocated byte of the data area
	free  map[uint32][]uint64 // released slots by exact capacity
	limit int                 // highest in-use node + 1

	// scratch for Put, reused to keep it allocation-free
	models   []string
	modelIdx []uint16
	pct      []float32
	rates    []Rate
	recBuf   [recordSize]byte
	dataBuf  []byte
}

// Create opens the table in dir (DefaultDir when empty) for writing,
// creating dir (mode 0755) and the table (mode 0644) as needed. An existing
// table of this layout is reused in place, keeping every node's last data
// and address; anything else is replaced atomically and the old file is
// marked retired so its readers re-open the path. Only one writer may hold
// a table at a time.
func Create(dir string, opts WriterOptions) (*Writer, error) {
	if dir == "" {
		dir = DefaultDir
	}
	if opts.InitialNodes <= 0 {
		opts.InitialNodes = defaultInitialNodes
	}
	if opts.InitialNodes > MaxNodes {
		return nil, fmt.Errorf("shm: %d initial nodes exceeds the limit of %d", opts.InitialNodes, MaxNodes)
	}
	if opts.DownAfter <= 0 {
		opts.DownAfter = defaultDownAfter
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if err := mkdirWorldReadable(dir); err != nil {
		return nil, err
	}
	if st, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("shm: table directory %s: %w", dir, err)
	} else if !st.IsDir() {
		return nil, fmt.Errorf("shm: table directory %s is not a directory", dir)
	}
	w := &Writer{
		dir:  dir,
		path: filepath.Join(dir, FileName),
		log:  opts.Logger,
		free: make(map[uint32][]uint64),
	}
	if err := w.open(opts); err != nil {
		return nil, err
	}
	store64(w.m, hDownAfter, uint64(opts.DownAfter))
	store64(w.m, hWriterStart, uint64(time.Now().UnixNano()))
	store32(w.m, hWriterPID, uint32(os.Getpid()))
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

// open reuses the table at w.path or lays out a new one.
func (w *Writer) open(opts WriterOptions) error {
	old, err := os.OpenFile(w.path, os.O_RDWR, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		g := newGeometry(uint64(time.Now().UnixNano()), opts.InitialNodes, dataSizeFor(opts.InitialNodes))
		return w.install(g, nil)
	case err != nil:
		return fmt.Errorf("shm: open table %s for writing: %w", w.path, err)
	}
	if err := unix.Flock(int(old.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		pid := peekPID(old)
		old.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return fmt.Errorf("shm: table %s is in use by another writer (pid %d)", w.path, pid)
		}
		return fmt.Errorf("shm: lock table %s: %w", w.path, err)
	}
	if err := w.reuse(old); err == nil {
		w.cleanTemps()
		if opts.InitialNodes > w.g.capacity {
			return w.relayout(opts.InitialNodes, 0)
		}
		return nil
	} else {
		w.log.Info("shm: replacing existing table", "path", w.path, "reason", err)
	}
	w.cleanTemps()
	capacity := opts.InitialNodes
	g := newGeometry(uint64(time.Now().UnixNano()), capacity, dataSizeFor(capacity))
	err = w.install(g, nil)
	retireFile(old)
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
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", w.path)
	}
	if st.Size() < headerSize || st.Size() > math.MaxInt {
		return fmt.Errorf("%w: %d bytes", ErrNotTable, st.Size())
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("map %s: %w", w.path, err)
	}
	g, err := decodeHeader(m, st.Size())
	if err == nil && load32(m, hRetired) != 0 {
		err = errors.New("table is marked retired")
	}
	if err == nil {
		err = checkSlots(m, g)
	}
	if err != nil {
		unix.Munmap(m)
		return err
	}
	w.f, w.m, w.g = f, m, g
	repaired := 0
	for n := 0; n < g.capacity; n++ {
		off := g.recordOffset(n)
		seq := load64(m, off+rSeq)
		if seq&1 != 0 {
			w.repair(off, seq)
			repaired++
		}
		rec := m[off : off+recordSize]
		if le.Uint32(rec[rFlags:])&flagInUse != 0 {
			w.limit = n + 1
			if end := le.Uint64(rec[rDataOff:]) + uint64(le.Uint32(rec[rDataCap:])); end > w.bump {
				w.bump = end
			}
		}
	}
	store32(m, hNodeLimit, uint32(w.limit))
	store64(m, hDataUsed, w.bump)
	if repaired > 0 {
		w.log.Warn("shm: repaired records left half-written by a previous writer", "path", w.path, "records", repaired)
	}
	return nil
}

// repair closes a record a dead writer left odd. Its contents may be torn,
// so only the node number and address survive (recvstats keeps node
// assignments by them); the rest waits for the node's next packet.
func (w *Writer) repair(off int, seq uint64) {
	rec := w.m[off : off+recordSize]
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

// checkSlots verifies that the data slots of in-use records lie inside the
// data area and do not overlap, so a writer can trust them.
func checkSlots(m []byte, g geometry) error {
	type slot struct{ off, end uint64 }
	var slots []slot
	for n := 0; n < g.capacity; n++ {
		rec := m[g.recordOffset(n):][:recordSize]
		if le.Uint32(rec[rFlags:])&flagInUse == 0 {
			continue
		}
		off, c := le.Uint64(rec[rDataOff:]), uint64(le.Uint32(rec[rDataCap:]))
		if c == 0 {
			continue
		}
		if off%slotAlign != 0 || c%slotAlign != 0 || off > g.dataSize || c > g.dataSize-off {
			return fmt.Errorf("%w: node %d data slot [%d,+%d) outside the data area", ErrCorrupt, n, off, c)
		}
		slots = append(slots, slot{off, off + c})
	}
	slices.SortFunc(slots, func(a, b slot) int { return cmp.Compare(a.off, b.off) })
	for i := 1; i < len(slots); i++ {
		if slots[i].off < slots[i-1].end {
			return fmt.Errorf("%w: data slots overlap at %d", ErrCorrupt, slots[i].off)
		}
	}
	return nil
}

func dataSizeFor(nodes int) uint64 {
	return max(uint64(nodes)*slotEstimate, minDataSize)
}

// peekPID reads the writer pid from a table file, 0 if it cannot.
func peekPID(f *os.File) uint32 {
	var b [4]byte
	if _, err := f.ReadAt(b[:], hWriterPID); err != nil {
		return 0
	}
	return le.Uint32(b[:])
}

// retireFile marks a replaced file so its readers re-open the path. Only
// files that carry the magic are touched: the retired word sits at the
// same offset in every layout version.
func retireFile(f *os.File) {
	var b [8]byte
	if _, err := f.ReadAt(b[:], hMagic); err != nil || b != magic {
		return
	}
	var one [4]byte
	le.PutUint32(one[:], retiredMarker)
	f.WriteAt(one[:], hRetired)
}

// cleanTemps removes half-built tables a writer died leaving behind; only
// the lock holder may, so no live writer is still building one.
func (w *Writer) cleanTemps() {
	names, _ := filepath.Glob(filepath.Join(w.dir, tempPattern))
	for _, n := range names {
		os.Remove(n)
	}
}

// install builds a table of geometry g in a temporary file, copies the
// in-use records of the current mapping (if any) into it, renames it into
// place and retires the current mapping.
func (w *Writer) install(g geometry, prev []byte) error {
	f, err := os.CreateTemp(w.dir, tempPattern)
	if err != nil {
		return fmt.Errorf("shm: create table in %s: %w", w.dir, err)
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		return fail(fmt.Errorf("shm: set mode 0644 on %s: %w", tmp, err))
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return fail(fmt.Errorf("shm: lock %s: %w", tmp, err))
	}
	if err := reserve(f, int64(g.fileSize)); err != nil {
		return fail(fmt.Errorf("shm: size %s to %d bytes: %w", tmp, g.fileSize, err))
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(g.fileSize), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fail(fmt.Errorf("shm: map %s: %w", tmp, err))
	}
	encodeHeader(m[:headerSize], g)

	var bump uint64
	limit := 0
	if prev != nil {
		for n := 0; n < w.g.capacity; n++ {
			src := prev[w.g.recordOffset(n):][:recordSize]
			if le.Uint32(src[rFlags:])&flagInUse == 0 {
				continue
			}
			dst := m[g.recordOffset(n):][:recordSize]
			copy(dst, src)
			if c := uint64(le.Uint32(src[rDataCap:])); c > 0 {
				from := w.g.dataOffset + le.Uint64(src[rDataOff:])
				copy(m[g.dataOffset+bump:][:c], prev[from:][:c])
				le.PutUint64(dst[rDataOff:], bump)
				bump += c
			}
			limit = n + 1
		}
		for _, off := range []int{hDownAfter, hUpdateReq, hWriterStart, hPuts} {
			store64(m, off, load64(prev, off))
		}
		store32(m, hWriterPID, load32(prev, hWriterPID))
	}
	store32(m, hNodeLimit, uint32(limit))
	store64(m, hDataUsed, bump)

	if err := os.Rename(tmp, w.path); err != nil {
		unix.Munmap(m)
		return fail(fmt.Errorf("shm: install table %s: %w", w.path, err))
	}
	if prev != nil {
		// Readers see the new file at the path before they learn to look.
		store32(prev, hRetired, retiredMarker)
		unix.Munmap(prev)
		w.f.Close()
	}
	w.f, w.m, w.g = f, m, g
	w.bump, w.limit = bump, limit
	clear(w.free)
	return nil
}

// reserve gives f its size with blocks behind it, so a full disk is an
// error now rather than a SIGBUS on some later store.
func reserve(f *os.File, size int64) error {
	err := unix.Fallocate(int(f.Fd()), 0, 0, size)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		return f.Truncate(size)
	}
	return err
}

// relayout grows the table to at least capacity nodes with room for extra
// more data bytes, compacting the data area.
func (w *Writer) relayout(capacity int, extra uint64) error {
	capacity = max(capacity, w.g.capacity)
	var live, inUse uint64
	for n := 0; n < w.limit; n++ {
		rec := w.m[w.g.recordOffset(n):][:recordSize]
		if le.Uint32(rec[rFlags:])&flagInUse != 0 {
			live += uint64(le.Uint32(rec[rDataCap:]))
			inUse++
		}
	}
	// Size the data area for a full index of nodes like the ones seen so
	// far, and at least double what is live now.
	perNode := uint64(slotEstimate)
	if inUse > 0 {
		perNode = live / inUse
	}
	data := max(uint64(capacity)*perNode, 2*(live+extra), minDataSize)
	g := newGeometry(w.g.generation+1, capacity, data)
	start := time.Now()
	if err := w.install(g, w.m); err != nil {
		return err
	}
	w.log.Info("shm: table re-laid out", "path", w.path, "generation", g.generation,
		"nodes", g.capacity, "data_bytes", g.dataSize, "took", time.Since(start))
	return nil
}

// alloc finds a data slot of exactly c bytes (a multiple of slotAlign),
// growing the data area if needed.
func (w *Writer) alloc(c uint32) (uint64, error) {
	if l := w.free[c]; len(l) > 0 {
		off := l[len(l)-1]
		w.free[c] = l[:len(l)-1]
		return off, nil
	}
	if w.bump+uint64(c) > w.g.dataSize {
		if err := w.relayout(w.g.capacity, uint64(c)); err != nil {
			return 0, err
		}
	}
	off := w.bump
	w.bump += uint64(c)
	store64(w.m, hDataUsed, w.bump)
	return off, nil
}

func (w *Writer) release(off uint64, c uint32) {
	if c > 0 {
		w.free[c] = append(w.free[c], off)
	}
}

// Path is the table file.
func (w *Writer) Path() string { return w.path }

// Put stores node's sample, heard from addr at seen (master clock). It
// derives per-CPU and total CPU percent and per-device byte rates from the
// node's previous sample in the table (since boot when there is none or
// the node rebooted), and grows the table as needed.
func (w *Writer) Put(node int, addr netip.AddrPort, seen time.Time, s *sample.Sample) error {
	switch {
	case node < 0 || node >= MaxNodes:
		return fmt.Errorf("shm: node %d out of range [0,%d)", node, MaxNodes)
	case len(s.CPUs) > MaxCPUs:
		return fmt.Errorf("shm: node %d has %d CPUs, more than the table holds (%d)", node, len(s.CPUs), MaxCPUs)
	case len(s.Net) > MaxNetDevs:
		return fmt.Errorf("shm: node %d has %d network devices, more than the table holds (%d)", node, len(s.Net), MaxNetDevs)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		return ErrClosed
	}
	if node >= w.g.capacity {
		if err := w.relayout(max(node+1, 2*w.g.capacity), 0); err != nil {
			return err
		}
	}
	w.collectModels(s)
	need := uint32(alignUp(uint64(slotLen(len(w.models), len(s.CPUs), len(s.Net))), slotAlign))

	off := w.g.recordOffset(node)
	totalPct, rx, tx := w.derive(w.m[off:off+recordSize], s)

	rec := w.m[off : off+recordSize]
	inUse := le.Uint32(rec[rFlags:])&flagInUse != 0
	dataOff, dataCap := le.Uint64(rec[rDataOff:]), le.Uint32(rec[rDataCap:])
	moved := !inUse || need > dataCap
	if moved {
		newOff, err := w.alloc(need)
		if err != nil {
			return err
		}
		// alloc may have re-laid out the table: look again.
		off = w.g.recordOffset(node)
		rec = w.m[off : off+recordSize]
		dataOff, dataCap = le.Uint64(rec[rDataOff:]), le.Uint32(rec[rDataCap:])
		if inUse {
			defer w.release(dataOff, dataCap)
		}
		dataOff, dataCap = newOff, need
	}

	// Encode privately, then publish inside the shortest possible window.
	clear(w.recBuf[:])
	w.encode(w.recBuf[:], node, addr, seen, s, totalPct, rx, tx, dataOff, dataCap)
	w.dataBuf = slices.Grow(w.dataBuf[:0], int(need))[:need]
	clear(w.dataBuf)
	w.encodeData(w.dataBuf, s)
	seq := load64(w.m, off+rSeq)
	store64(w.m, off+rSeq, seq+1) // odd: readers keep off
	publish(w.m, off+8, w.recBuf[8:])
	publish(w.m, int(w.g.dataOffset+dataOff), w.dataBuf)
	store64(w.m, off+rSeq, seq+2)

	if node >= w.limit {
		w.limit = node + 1
		store32(w.m, hNodeLimit, uint32(w.limit))
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

// derive computes CPU percents and byte rates of s against the previous
// record rec of the same node.
func (w *Writer) derive(rec []byte, s *sample.Sample) (total float32, rx, tx float64) {
	prevOK := le.Uint32(rec[rFlags:])&flagInUse != 0 &&
		[16]byte(rec[rBootID:rBootID+16]) == s.BootID
	prevTime := getTime(rec[rTime:])
	var prevData []byte
	var prevModels, prevCPUs, prevNets int
	if prevOK {
		prevModels, prevCPUs, prevNets = int(le.Uint16(rec[rModels:])), int(le.Uint32(rec[rCPUs:])), int(le.Uint16(rec[rNets:]))
		n := slotLen(prevModels, prevCPUs, prevNets)
		if c := int(le.Uint32(rec[rDataCap:])); n <= c {
			prevData = w.m[w.g.dataOffset+le.Uint64(rec[rDataOff:]):][:n]
		}
	}

	w.pct = slices.Grow(w.pct[:0], len(s.CPUs))[:len(s.CPUs)]
	for i := range s.CPUs {
		var prev sample.Ticks
		if prevData != nil && i < prevCPUs {
			prev = getTicks(prevData[prevModels*modelSize+i*cpuSize:])
		}
		w.pct[i] = percent(&prev, &s.CPUs[i].Ticks)
	}
	var prevTotal sample.Ticks
	if prevOK {
		prevTotal = getTicks(rec[rTicks:])
	}
	total = percent(&prevTotal, &s.Total)

	dt := s.Time.Sub(prevTime).Seconds()
	w.rates = slices.Grow(w.rates[:0], len(s.Net))[:len(s.Net)]
	netBase := prevModels*modelSize + prevCPUs*cpuSize
	for i := range s.Net {
		d := &s.Net[i]
		w.rates[i] = Rate{}
		if prevData == nil || prevTime.IsZero() || dt <= 0 {
			continue
		}
		j := findNet(prevData[netBase:], prevNets, i, d.Name)
		if j < 0 {
			continue
		}
		e := prevData[netBase+j*netSize:]
		if r, t := le.Uint64(e[nameSize:]), le.Uint64(e[nameSize+32:]); d.RxBytes >= r && d.TxBytes >= t {
			w.rates[i] = Rate{RxBytesPerSec: float64(d.RxBytes-r) / dt, TxBytesPerSec: float64(d.TxBytes-t) / dt}
		}
		if d.Name != "lo" {
			rx += w.rates[i].RxBytesPerSec
			tx += w.rates[i].TxBytesPerSec
		}
	}
	return total, rx, tx
}

// findNet is the index of device name among n entries of a previous data
// slot, trying position hint first since devices rarely move.
func findNet(nets []byte, n, hint int, name string) int {
	name = truncName(name)
	match := func(j int) bool {
		return string(nameBytes(nets[j*netSize:j*netSize+nameSize])) == name
	}
	if hint < n && match(hint) {
		return hint
	}
	for j := 0; j < n; j++ {
		if match(j) {
			return j
		}
	}
	return -1
}

// truncName is name as the table stores it.
func truncName(name string) string {
	if len(name) <= nameSize {
		return name
	}
	var b [nameSize]byte
	putName(b[:], name)
	return string(nameBytes(b[:]))
}

// percent is the busy share of the ticks between prev and cur, 0 to 100.
// With no usable previous sample (zero prev, or counters that went back)
// it is the average since boot.
func percent(prev, cur *sample.Ticks) float32 {
	cb := cur.Busy()
	ca := cb + cur.Idle + cur.IOWait
	pb := prev.Busy()
	pa := pb + prev.Idle + prev.IOWait
	if ca < pa || cb < pb || (ca == pa && *prev != (sample.Ticks{})) {
		pa, pb = 0, 0 // since boot
	}
	if ca == pa {
		return 0
	}
	return float32(min(100, 100*float64(cb-pb)/float64(ca-pa)))
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
	totalPct float32, rx, tx float64, dataOff uint64, dataCap uint32) {
	le.PutUint32(rec[rNode:], uint32(node))
	le.PutUint32(rec[rFlags:], flagInUse)
	putAddr(rec, addr)
	le.PutUint32(rec[rCPUs:], uint32(len(s.CPUs)))
	putTime(rec[rLastSeen:], seen)
	putTime(rec[rTime:], s.Time)
	putTime(rec[rBootTime:], s.BootTime)
	copy(rec[rBootID:rBootID+16], s.BootID[:])
	putTicks(rec[rTicks:], s.Total)
	putF32(rec[rTotalPct:], totalPct)
	le.PutUint16(rec[rNets:], uint16(len(s.Net)))
	le.PutUint16(rec[rModels:], uint16(len(w.models)))
	putMemory(rec[rMemory:], &s.Memory)
	putF64(rec[rLoad1:], s.Load.One)
	putF64(rec[rLoad5:], s.Load.Five)
	putF64(rec[rLoad15:], s.Load.Fifteen)
	le.PutUint32(rec[rRunning:], s.Load.Running)
	le.PutUint32(rec[rProcs:], s.Load.Total)
	le.PutUint32(rec[rLastPID:], s.Load.LastPID)
	le.PutUint32(rec[rDataLen:], uint32(slotLen(len(w.models), len(s.CPUs), len(s.Net))))
	le.PutUint64(rec[rDataOff:], dataOff)
	le.PutUint32(rec[rDataCap:], dataCap)
	putF64(rec[rRxRate:], rx)
	putF64(rec[rTxRate:], tx)
}

// encodeData writes models, CPUs and devices into the node's data slot.
func (w *Writer) encodeData(b []byte, s *sample.Sample) {
	for i, m := range w.models {
		putName(b[i*modelSize:][:modelSize], m)
	}
	b = b[len(w.models)*modelSize:]
	for i := range s.CPUs {
		e := b[i*cpuSize:][:cpuSize]
		putTicks(e, s.CPUs[i].Ticks)
		putF64(e[64:], s.CPUs[i].MHz)
		putF32(e[72:], w.pct[i])
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
		putF64(e[80:], w.rates[i].RxBytesPerSec)
		putF64(e[88:], w.rates[i].TxBytesPerSec)
	}
}

// Nodes lists every in-use record's node and address, so recvstats can
// restore its node assignments after a restart.
func (w *Writer) Nodes() []Assignment {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []Assignment
	for n := 0; n < w.limit; n++ {
		rec := w.m[w.g.recordOffset(n):][:recordSize]
		if le.Uint32(rec[rFlags:])&flagInUse != 0 {
			out = append(out, Assignment{Node: n, Addr: getAddr(rec)})
		}
	}
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

// Remove forgets node: readers no longer see it and its address is free.
func (w *Writer) Remove(node int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil || node < 0 || node >= w.g.capacity {
		return
	}
	off := w.g.recordOffset(node)
	rec := w.m[off : off+recordSize]
	if le.Uint32(rec[rFlags:])&flagInUse == 0 {
		return
	}
	dataOff, dataCap := le.Uint64(rec[rDataOff:]), le.Uint32(rec[rDataCap:])
	clear(w.recBuf[:])
	seq := load64(w.m, off+rSeq)
	store64(w.m, off+rSeq, seq+1)
	publish(w.m, off+8, w.recBuf[8:])
	store64(w.m, off+rSeq, seq+2)
	w.release(dataOff, dataCap)
	for w.limit > 0 && le.Uint32(w.m[w.g.recordOffset(w.limit-1)+rFlags:])&flagInUse == 0 {
		w.limit--
	}
	store32(w.m, hNodeLimit, uint32(w.limit))
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
	err := unix.Munmap(w.m)
	w.m = nil
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("shm: close table %s: %w", w.path, err)
	}
	return nil
}
