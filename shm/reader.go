package shm

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"path/filepath"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hoststat/hoststat/telemetry/sample"
)

// Rate is a network device's byte rate between the node's last two samples.
type Rate struct {
	RxBytesPerSec, TxBytesPerSec float64
}

// Record is everything the table holds about one node: its Summary (the
// fixed part, decoded once) and the sample it came from with per-CPU and
// per-device figures.
type Record struct {
	Summary
	// Sample is the node's last sample; its Time, BootTime, BootID, Total,
	// Memory and Load repeat the Summary's.
	Sample sample.Sample
	// CPUPercent is each CPU's busy share (0-100) between the node's last
	// two samples, in Sample.CPUs order.
	CPUPercent []float32
	NetRates   []Rate     // in Sample.Net order
	DiskRates  []DiskRate // in Sample.Disks order
}

// DiskRate is a disk's byte rates and busy share (0-100) between the
// node's last two samples.
type DiskRate struct {
	ReadBytesPerSec, WriteBytesPerSec float64
	BusyPercent                       float32
}

// Summary is the fixed part of a node's record: enough for a one-line
// overview, read without touching the per-CPU and per-device data.
type Summary struct {
	Node     int
	Addr     netip.AddrPort // where the node's last status came from
	LastSeen time.Time      // when it arrived (master clock)
	Time     time.Time      // when the node took the sample (node clock)
	BootTime time.Time
	BootID   [16]byte
	CPUs     int
	NetDevs  int
	// Host is the node's hostname, NUL-padded, cut to 32 bytes; all zero
	// when its sendstats does not send it. (An array, so reading a summary
	// allocates nothing; HostBytes and Hostname give it.)
	Host               [hostnameSize]byte
	Disks, Filesystems int // counts, in the data slot
	Total              sample.Ticks
	TotalPercent       float32
	Memory             sample.Memory
	Load               sample.Load
	// RxBytesPerSec and TxBytesPerSec add up every device but "lo".
	RxBytesPerSec, TxBytesPerSec float64
	// Repaired means a restarted writer found this record half-written
	// and kept only node and address until the node reports again.
	Repaired bool
}

// HostBytes is the hostname without its padding.
func (s *Summary) HostBytes() []byte { return nameBytes(s.Host[:]) }

// Hostname is the node's hostname; empty when it sends none.
func (s *Summary) Hostname() string { return string(s.HostBytes()) }

// decodeSummary is the one decoder of a node record's fixed part. (Field
// by field: a composite literal would be built aside and copied.)
func decodeSummary(b []byte, s *Summary) {
	_ = b[recordSize-1]
	s.Node = int(le.Uint32(b[rNode:]))
	s.Addr = getAddr(b)
	s.LastSeen = getTime(b[rLastSeen:])
	s.Time = getTime(b[rTime:])
	s.BootTime = getTime(b[rBootTime:])
	s.BootID = [16]byte(b[rBootID : rBootID+16])
	s.CPUs = int(le.Uint32(b[rCPUs:]))
	s.NetDevs = int(le.Uint16(b[rNets:]))
	s.Host = [hostnameSize]byte(b[rHostname : rHostname+hostnameSize])
	s.Disks, s.Filesystems = int(le.Uint16(b[rDisks:])), int(le.Uint16(b[rFSs:]))
	s.Total = getTicks(b[rTicks:])
	s.TotalPercent = getF32(b[rTotalPct:])
	s.Memory = getMemory(b[rMemory:])
	s.Load = getLoad(b)
	s.RxBytesPerSec = getF64(b[rRxRate:])
	s.TxBytesPerSec = getF64(b[rTxRate:])
	s.Repaired = le.Uint32(b[rFlags:])&flagRepaired != 0
}

// Info describes the table as a whole.
type Info struct {
	Path       string
	Generation uint64 // changes whenever the table is re-laid out
	Capacity   int    // node records in the current layout
	Nodes      int    // nodes in the table
	NodeLimit  int    // highest node number in use + 1
	// DownAfter is how long a node may stay silent before it counts as
	// down; see Up.
	DownAfter         time.Duration
	LastUpdateRequest time.Time // last update request recvstats multicast
	WriterPID         int       // 0 when no writer has the table open
	WriterStart       time.Time // when the writer opened the table
	// WriterTicks is the writer process's start time in clock ticks after
	// boot, as /proc/PID/stat gives it: it tells the writer from a later
	// process that got the same pid.
	WriterTicks uint64
	Puts        uint64 // records written since the table was laid out
	// KernelDrops counts the datagrams the kernel dropped on the writer's
	// socket because its receive buffer was full, since the writer
	// started (0 from writers that do not publish it); ReadBuffer is that
	// buffer as SO_RCVBUF reports it (twice the bytes granted).
	KernelDrops uint64
	ReadBuffer  int
	// Counters are the writer's own: packets, drops by reason, nodes up
	// and down (see SetCounters); zero from writers that do not publish them.
	Counters Counters
}

// Up reports whether a node last seen at lastSeen counts as up at now.
func (i Info) Up(lastSeen, now time.Time) bool {
	return !lastSeen.IsZero() && now.Sub(lastSeen) < i.DownAfter
}

// WriterRunning reports whether the writer named in the table is alive:
// its pid exists and is the same process (same start time). A table whose
// writer is not running is not being updated.
func (i Info) WriterRunning() bool { return writerRunning(i.WriterPID, i.WriterTicks) }

// ErrWriterStuck is returned when a record stays locked by the writer
// longer than any write takes: the writer probably died mid-write. The
// next writer to open the table repairs it.
var ErrWriterStuck = errors.New("record stays locked by the writer (recvstats died mid-write?)")

// readWait bounds how long a read waits for a record to settle; a
// variable so the fuzz targets need not wait on every odd record (0: no
// wait at all).
var readWait = 50 * time.Millisecond

// liveWriterWait is how much longer a read waits on a record whose writer
// process still exists.
var liveWriterWait = time.Second

// writerAlive reports whether the process named as the table's writer is
// running (see Info.WriterRunning).
func (r *Reader) writerAlive() bool {
	return writerRunning(int(load32(r.m, hWriterPID)), load64(r.m, hWriterTicks))
}

// Reader reads a table that another process writes. It never blocks the
// writer and never returns a torn record. A Reader follows the table
// across growth and writer restarts by re-opening the path when its
// mapping is retired. A Reader is not safe for concurrent use: give each
// goroutine its own (they are cheap).
type Reader struct {
	path string
	m    []byte
	g    geometry

	rec    [recordSize]byte
	data   []byte
	models []string

	readLo, readHi int // the span of the mapping read since the last release
}

// OpenReader maps the table in dir (DefaultDir when empty) read-only.
func OpenReader(dir string) (*Reader, error) {
	if dir == "" {
		dir = DefaultDir
	}
	r := &Reader{path: filepath.Join(dir, FileName), readLo: math.MaxInt}
	if err := r.open(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Reader) open() error {
	for try := 0; ; try++ {
		m, g, err := mapTable(r.path)
		if err != nil {
			return err
		}
		if load32(m, hRetired) == 0 {
			if r.m != nil {
				unix.Munmap(r.m)
			}
			r.m, r.g = m, g
			return nil
		}
		// Retired yet at the path: we opened it just before the writer
		// renamed its replacement in (it retires only after the rename),
		// so the next open finds the new file.
		unix.Munmap(m)
		if try == 3 {
			return fmt.Errorf("shm: table %s is marked retired and no replacement is in its place", r.path)
		}
	}
}

// mapTable maps and validates the file at path.
func mapTable(path string) ([]byte, geometry, error) {
	m, err := mapReadOnly(path, "table", headerSize)
	if err != nil {
		return nil, geometry{}, err
	}
	size := int64(len(m))
	g, err := decodeHeader(m, size)
	if err != nil {
		unix.Munmap(m)
		return nil, geometry{}, fmt.Errorf("shm: table %s: %w", path, err)
	}
	return m, g, nil
}

// follow re-opens the path when the writer has retired our mapping.
func (r *Reader) follow() error {
	if r.m == nil {
		return ErrClosed
	}
	if load32(r.m, hRetired) == 0 {
		return nil
	}
	return r.open()
}

// Path is the table file.
func (r *Reader) Path() string { return r.path }

// Capacity is the number of node records in the current layout.
func (r *Reader) Capacity() int {
	r.follow()
	return r.g.capacity
}

// Info reads the table-wide fields.
func (r *Reader) Info() Info {
	if r.follow() != nil && r.m == nil {
		return Info{Path: r.path}
	}
	return Info{
		Path:              r.path,
		Generation:        r.g.generation,
		Capacity:          r.g.capacity,
		Nodes:             min(int(load32(r.m, hNodes)), r.g.capacity),
		NodeLimit:         min(int(load32(r.m, hNodeLimit)), MaxNodes),
		DownAfter:         time.Duration(load64(r.m, hDownAfter)),
		LastUpdateRequest: unixTime(int64(load64(r.m, hUpdateReq))),
		WriterPID:         int(load32(r.m, hWriterPID)),
		WriterStart:       unixTime(int64(load64(r.m, hWriterStart))),
		WriterTicks:       load64(r.m, hWriterTicks),
		Puts:              load64(r.m, hPuts),
		KernelDrops:       load64(r.m, hKernelDrops),
		ReadBuffer:        int(min(load64(r.m, hReadBuffer), math.MaxInt32)),
		Counters:          counters(r.m),
	}
}

// Nodes appends the numbers of the nodes in the table to dst, ascending.
// It walks the index only, so a node whose record is stuck is listed too.
func (r *Reader) Nodes(dst []int) ([]int, error) {
	err := r.EachNode(func(node int) error {
		dst = append(dst, node)
		return nil
	})
	return dst, err
}

// EachNode calls fn with the number of every node in the table,
// ascending, as Nodes lists them, without building a list: memory does
// not grow with the nodes. It stops at the first error fn returns and
// returns it.
func (r *Reader) EachNode(fn func(node int) error) error {
	if err := r.follow(); err != nil {
		return err
	}
	for d := range dirEntries {
		leaf, err := r.leafOf(d)
		if err != nil {
			return err
		}
		if leaf >= 0 && d > 0 {
			r.release()
		}
		gen := r.g.generation
		for e := 0; leaf >= 0 && e < leafEntries; e++ {
			if load32(r.m, leaf+4*e) == 0 {
				continue
			}
			if err := fn(d*leafEntries + e); err != nil {
				return err
			}
			if r.m == nil {
				return ErrClosed
			}
			// fn's reads may have followed the table to a new layout,
			// where the block has another leaf (or none): go on there.
			if r.g.generation != gen {
				if leaf, err = r.leafOf(d); err != nil {
					return err
				}
				gen = r.g.generation
			}
		}
	}
	return nil
}

// release lets go of the pages of records and data read since the last
// release (they stay in the page cache, shared with the writer): a walk
// of the whole table then holds about one index block's records in its
// resident set, not the table. Reading them again faults them back in.
func (r *Reader) release() {
	lo, hi := r.readLo&^4095, min(int(alignUp(uint64(r.readHi), 4096)), len(r.m))
	if lo < hi {
		unix.Madvise(r.m[lo:hi], unix.MADV_DONTNEED)
	}
	r.readLo, r.readHi = math.MaxInt, 0
}

// read notes that bytes [off, off+n) of the mapping were read, for release.
func (r *Reader) read(off, n int) {
	r.readLo, r.readHi = min(r.readLo, off), max(r.readHi, off+n)
}

// leafOf is the offset of the leaf of index block d, -1 when it has none.
func (r *Reader) leafOf(d int) (int, error) {
	l := int(load32(r.m, dirOffset+4*d))
	if l == 0 {
		return -1, nil
	}
	if l > r.g.leaves {
		return -1, fmt.Errorf("shm: table %s: %w: directory entry %d names leaf %d of %d", r.path, ErrCorrupt, d, l, r.g.leaves)
	}
	return leavesOffset + (l-1)*leafSize, nil
}

// locate is node's record number from the index, -1 when it has none.
// The index changes under us: the record found is checked to be node's.
func (r *Reader) locate(node int) (int, error) {
	if node < 0 || node >= MaxNodes {
		return -1, nil
	}
	l := int(load32(r.m, dirWord(node)))
	if l == 0 {
		return -1, nil
	}
	if l > r.g.leaves {
		return -1, fmt.Errorf("%w: directory names leaf %d of %d", ErrCorrupt, l, r.g.leaves)
	}
	k := int(load32(r.m, leafWord(l-1, node)))
	if k > r.g.capacity {
		return -1, fmt.Errorf("%w: index names record %d of %d", ErrCorrupt, k, r.g.capacity)
	}
	return k - 1, nil
}

// snapshot copies node's record (and its data slot when withData) into
// r.rec and r.data under the seqlock. It reports false when the node is
// not in the table.
func (r *Reader) snapshot(node int, withData bool) (bool, error) {
	if err := r.follow(); err != nil {
		return false, err
	}
	k, err := r.locate(node)
	if err != nil {
		return false, fmt.Errorf("shm: table %s: node %d: %w", r.path, node, err)
	}
	if k < 0 {
		return false, nil
	}
	off := r.g.record(k)
	r.read(off, recordSize)
	var deadline time.Time
	var waitSeq uint64
	for try := 0; ; try++ {
		s1 := load64(r.m, off+rSeq)
		if s1&1 == 0 {
			copyAtomic(r.rec[:], r.m, off)
			// The record may have been freed, or given to another node,
			// since we looked it up: then node is gone.
			inUse := le.Uint32(r.rec[rFlags:])&flagInUse != 0 && int(le.Uint32(r.rec[rNode:])) == node
			var bad error
			if inUse && withData {
				bad = r.copyData()
			}
			if load64(r.m, off+rSeq) == s1 {
				// A stable record that does not add up is in the file,
				// not in flight.
				if bad != nil {
					return false, fmt.Errorf("shm: table %s: node %d: %w", r.path, node, bad)
				}
				return inUse, nil
			}
		}
		switch {
		case readWait == 0: // the fuzz targets: no waiting, the same path every run
			return false, fmt.Errorf("shm: table %s: node %d: %w", r.path, node, ErrWriterStuck)
		case try < 32:
		case try < 256:
			runtime.Gosched()
		default:
			now := time.Now()
			switch {
			case deadline.IsZero() || s1 != waitSeq:
				// First wait, or the writer moved on since: it is alive.
				deadline, waitSeq = now.Add(readWait), s1
			case now.After(deadline):
				// A live writer may just be descheduled mid-write on a busy
				// machine; only a dead one, or one silent for long, is stuck.
				if now.Sub(deadline) < liveWriterWait && r.writerAlive() {
					break
				}
				return false, fmt.Errorf("shm: table %s: node %d: %w", r.path, node, ErrWriterStuck)
			}
			time.Sleep(20 * time.Microsecond)
		}
	}
}

// copyData copies the data slot r.rec points at, after checking that it
// lies inside the data area and matches the counts.
func (r *Reader) copyData() error {
	if err := checkSlot(r.rec[:], r.g.dataSize); err != nil {
		return err
	}
	n := le.Uint32(r.rec[rDataLen:])
	if cap(r.data) < int(n) {
		r.data = make([]byte, n)
	}
	r.data = r.data[:n]
	off := int(r.g.dataOffset + le.Uint64(r.rec[rDataOff:]))
	r.read(off, int(n))
	copyAtomic(r.data, r.m, off)
	return nil
}

// Summary reads the fixed part of node's record. ok is false when the
// node is not in the table (or out of range).
func (r *Reader) Summary(node int) (Summary, bool, error) {
	var s Summary
	ok, err := r.snapshot(node, false)
	if ok && err == nil {
		decodeSummary(r.rec[:], &s)
	}
	return s, ok, err
}

// Read copies node's whole record into rec, reusing rec's slices. ok is
// false when the node is not in the table (or out of range).
func (r *Reader) Read(node int, rec *Record) (bool, error) {
	ok, err := r.snapshot(node, true)
	if !ok || err != nil {
		return false, err
	}
	decodeRecord(r.rec[:], r.data, rec, &r.models)
	return true, nil
}

// decodeRecord is the one decoder of a whole node record: its fixed part
// b and data slot d (checked by checkSlot), into rec. models caches the
// model names of the last record decoded, so steady-state decoding does
// not allocate.
func decodeRecord(b, d []byte, rec *Record, models *[]string) {
	decodeSummary(b, &rec.Summary)
	sum, s := &rec.Summary, &rec.Sample
	s.Time, s.BootTime, s.BootID = sum.Time, sum.BootTime, sum.BootID
	s.Total, s.Memory, s.Load = sum.Total, sum.Memory, sum.Load

	nmodels, cpus, nets := int(le.Uint16(b[rModels:])), sum.CPUs, sum.NetDevs
	*models = (*models)[:0]
	for i := 0; i < nmodels; i++ {
		name := nameBytes(d[i*modelSize : (i+1)*modelSize])
		*models = append(*models, internModel(*models, i, name))
	}
	d = d[nmodels*modelSize:]

	s.CPUs = resize(s.CPUs, cpus)
	rec.CPUPercent = resize(rec.CPUPercent, cpus)
	for i := range cpus {
		e := d[i*cpuSize:][:cpuSize]
		c := &s.CPUs[i]
		c.Ticks = getTicks(e)
		c.MHz = getF64(e[64:])
		rec.CPUPercent[i] = getF32(e[72:])
		c.Model = ""
		if m := int(le.Uint16(e[76:])); m < len(*models) {
			c.Model = (*models)[m]
		}
	}
	d = d[cpus*cpuSize:]

	s.Net = resize(s.Net, nets)
	rec.NetRates = resize(rec.NetRates, nets)
	for i := range nets {
		e := d[i*netSize:][:netSize]
		n := &s.Net[i]
		if name := nameBytes(e[:nameSize]); n.Name != string(name) {
			n.Name = string(name)
		}
		c := e[nameSize:]
		n.RxBytes, n.RxPackets, n.RxErrors, n.RxDrops = le.Uint64(c[0:]), le.Uint64(c[8:]), le.Uint64(c[16:]), le.Uint64(c[24:])
		n.TxBytes, n.TxPackets, n.TxErrors, n.TxDrops = le.Uint64(c[32:]), le.Uint64(c[40:]), le.Uint64(c[48:]), le.Uint64(c[56:])
		rec.NetRates[i] = Rate{RxBytesPerSec: getF64(e[80:]), TxBytesPerSec: getF64(e[88:])}
	}
	d = d[nets*netSize:]

	if host := sum.HostBytes(); s.Hostname != string(host) {
		s.Hostname = string(host)
	}
	s.Disks = resize(s.Disks, sum.Disks)
	rec.DiskRates = resize(rec.DiskRates, sum.Disks)
	for i := range sum.Disks {
		e := d[i*diskSize:][:diskSize]
		k := &s.Disks[i]
		if name := nameBytes(e[:diskNameSize]); k.Name != string(name) {
			k.Name = string(name)
		}
		c := e[diskNameSize:]
		k.Reads, k.Writes, k.ReadBytes, k.WriteBytes, k.IOMillis = le.Uint64(c[0:]), le.Uint64(c[8:]), le.Uint64(c[16:]), le.Uint64(c[24:]), le.Uint64(c[32:])
		rec.DiskRates[i] = DiskRate{ReadBytesPerSec: getF64(e[72:]), WriteBytesPerSec: getF64(e[80:]), BusyPercent: getF32(e[88:])}
	}
	d = d[sum.Disks*diskSize:]

	s.Filesystems = resize(s.Filesystems, sum.Filesystems)
	for i := range sum.Filesystems {
		e := d[i*fsSize:][:fsSize]
		f := &s.Filesystems[i]
		if name := nameBytes(e[:mountSize]); f.Mount != string(name) {
			f.Mount = string(name)
		}
		if name := nameBytes(e[mountSize : mountSize+fsTypeSize]); f.Type != string(name) {
			f.Type = string(name)
		}
		c := e[mountSize+fsTypeSize:]
		f.Total, f.Free, f.Avail, f.Files, f.FilesFree = le.Uint64(c[0:]), le.Uint64(c[8:]), le.Uint64(c[16:]), le.Uint64(c[24:]), le.Uint64(c[32:])
		f.NotAnswering = le.Uint32(e[152:])&fsNotAnswer != 0
	}
}

// internModel returns name as a string, reusing the one cached for the
// same slot when it is equal so steady-state reads do not allocate.
func internModel(models []string, i int, name []byte) string {
	if i < cap(models) {
		if old := models[:i+1][i]; old == string(name) {
			return old
		}
	}
	return string(name)
}

// resize returns s with length n, reusing its array when large enough.
func resize[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// Close unmaps the table.
func (r *Reader) Close() error {
	if r.m == nil {
		return ErrClosed
	}
	err := unix.Munmap(r.m)
	r.m = nil
	if err != nil {
		return fmt.Errorf("shm: unmap table %s: %w", r.path, err)
	}
	return nil
}
