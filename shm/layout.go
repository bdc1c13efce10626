package shm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"net/netip"
	"time"
	"unsafe"

	"github.com/hoststat/hoststat/telemetry/sample"
)

// The byte layout below is documented in docs/shm.md; keep the two in step.
// All multi-byte values are little-endian (the native order of every
// platform the package builds on; see init).

// FileName is the name of the table file inside the shm directory.
const FileName = "beostat"

// DefaultDir is where recvstats keeps the table unless told otherwise.
const DefaultDir = "/var/shm"

// LayoutVersion is the version of the byte layout this package writes and
// reads. The offsets of magic, version and the retired word never change
// between versions, so any version can tell a reader to go away.
// Version 2 replaced the index of one record per node number by a
// two-level index of the nodes present; version 3 added the hostname to
// the record and disks and filesystems to the data slot.
const LayoutVersion = 3

var magic = [8]byte{'H', 'S', 'T', 'A', 'T', 'S', 'H', 'M'}

// Header offsets.
const (
	hMagic        = 0
	hVersion      = 8
	hHeaderSize   = 12
	hGeneration   = 16
	hRetired      = 24 // uint32, atomic
	hLeafCapacity = 28 // leaf pages of the node index
	hCapacity     = 32 // node records
	hRecordSize   = 36
	hRecordOffset = 40
	hDataOffset   = 48
	hDataSize     = 56
	hFileSize     = 64
	hCPUSize      = 72
	hNetSize      = 76
	hModelSize    = 80
	hSlotAlign    = 84
	hCRC          = 88  // CRC-32C of bytes [0,24) and [28,88)
	hDownAfter    = 96  // int64 ns, atomic
	hUpdateReq    = 104 // int64 unix ns, atomic
	hWriterStart  = 112 // int64 unix ns, atomic
	hWriterPID    = 120 // uint32, atomic
	hNodeLimit    = 124 // uint32, atomic: highest in-use node + 1
	hDataUsed     = 128 // uint64, atomic: allocation high-water mark
	hPuts         = 136 // uint64, atomic: records written by this file's writers
	hWriterTicks  = 144 // uint64, atomic: writer's start, clock ticks after boot (/proc/PID/stat)
	hNodes        = 152 // uint32, atomic: nodes in the index
	hLeavesUsed   = 156 // uint32, atomic: leaf pages in use
	hKernelDrops  = 160 // uint64, atomic: datagrams the kernel dropped on the writer's socket
	hReadBuffer   = 168 // uint64, atomic: the writer's socket receive buffer (SO_RCVBUF)
	headerSize    = 256
	crcEnd        = hCRC
	crcGapStart   = hRetired
	crcGapEnd     = hLeafCapacity
	retiredMarker = 1
)

// The node index: a directory page of dirEntries words, one per block of
// leafEntries node numbers, naming a leaf page (number + 1, 0 none) whose
// words name the node's record (number + 1, 0 none). Only blocks with a
// node present have a leaf, so the index follows the nodes present, never
// the largest node number (at most dirEntries leaves: 4 MiB).
const (
	dirOffset    = 4096
	dirEntries   = MaxNodes / leafEntries
	leafEntries  = 1024
	leafSize     = 4 * leafEntries
	leavesOffset = dirOffset + 4*dirEntries
)

// Node record offsets (recordSize bytes per node, 8-byte aligned).
const (
	rSeq       = 0 // uint64, atomic: odd while the writer is inside
	rNode      = 8
	rFlags     = 12
	rAddr      = 16 // 16 bytes, IPv4 as IPv4-mapped IPv6
	rPort      = 32
	rFamily    = 34 // 0 none, 4, 6
	rCPUs      = 36 // uint32
	rLastSeen  = 40
	rTime      = 48
	rBootTime  = 56
	rBootID    = 64
	rTicks     = 80 // 8 × uint64
	rTotalPct  = 144
	rNets      = 148 // uint16
	rModels    = 150 // uint16
	rMemory    = 152 // 8 × uint64
	rLoad1     = 216
	rLoad5     = 224
	rLoad15    = 232
	rRunning   = 240
	rProcs     = 244
	rLastPID   = 248
	rDataLen   = 252
	rDataOff   = 256 // relative to the data area
	rDataCap   = 264
	rDisks     = 268 // uint16
	rFSs       = 270 // uint16
	rRxRate    = 272
	rTxRate    = 280
	rHostname  = 288 // 32 bytes, NUL-padded
	recordSize = 320
	// hostnameSize is the room for the hostname in the record: most are
	// shorter; longer ones are cut.
	hostnameSize = 32
)

// Record flags.
const (
	flagInUse    = 1 << 0
	flagRepaired = 1 << 1 // a new writer found the record half-written and cleared it
)

// Data slot entries.
const (
	cpuSize   = 80 // ticks 64, MHz f64, percent f32, model index u16, pad u16
	netSize   = 96 // name 16, 8 counters, rx rate f64, tx rate f64
	modelSize = 64 // NUL-padded UTF-8
	slotAlign = 64
	nameSize  = 16
	// diskSize: name 32, 5 counters, read and write rates f64, busy
	// percent f32, pad 4.
	diskSize     = 96
	diskNameSize = 32
	// fsSize: mount point 96, type 16, 5 figures, flags u32, pad 4.
	fsSize      = 160
	mountSize   = 96
	fsTypeSize  = 16
	fsNotAnswer = 1 // filesystem flag: statfs did not answer
)

// Limits on one node; they bound every allocation a reader makes from the
// file.
const (
	MaxCPUs    = sample.MaxCPUs // the wire's limits: a valid sample always fits
	MaxNetDevs = sample.MaxNetDevs
	MaxModels  = 64
	// MaxDisks and MaxFilesystems are the sample's limits too.
	MaxDisks       = sample.MaxDisks
	MaxFilesystems = sample.MaxFilesystems
	// MaxNodes bounds node numbers: they run from 0 to MaxNodes-1. How
	// many nodes a table holds is WriterOptions.MaxNodes.
	MaxNodes = sample.MaxNodes
	maxSlot  = MaxModels*modelSize + MaxCPUs*cpuSize + MaxNetDevs*netSize + MaxDisks*diskSize + MaxFilesystems*fsSize
)

var le = binary.LittleEndian

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func init() {
	// The seqlock words are read with native atomics but described as
	// little-endian in the layout: refuse to run where the two differ.
	var x uint16 = 1
	if *(*byte)(unsafe.Pointer(&x)) != 1 {
		panic("shm: the table layout needs a little-endian machine")
	}
}

// geometry is the immutable part of the header.
type geometry struct {
	generation   uint64
	capacity     int // node records
	leaves       int // leaf pages of the node index
	recordOffset uint64
	dataOffset   uint64
	dataSize     uint64
	fileSize     uint64
}

func newGeometry(gen uint64, capacity, leaves int, dataSize uint64) geometry {
	recOff := uint64(leavesOffset + leaves*leafSize)
	dataOff := alignUp(recOff+uint64(capacity)*recordSize, 4096)
	dataSize = alignUp(dataSize, 4096)
	return geometry{
		generation:   gen,
		capacity:     capacity,
		leaves:       leaves,
		recordOffset: recOff,
		dataOffset:   dataOff,
		dataSize:     dataSize,
		fileSize:     dataOff + dataSize,
	}
}

// record is the file offset of record k.
func (g geometry) record(k int) int { return int(g.recordOffset) + k*recordSize }

// leafWord is the file offset of node's word in leaf page l.
func leafWord(l, node int) int { return leavesOffset + l*leafSize + 4*(node%leafEntries) }

// dirWord is the file offset of the directory word of node's block.
func dirWord(node int) int { return dirOffset + 4*(node/leafEntries) }

func headerCRC(h []byte) uint32 {
	c := crc32.Update(0, castagnoli, h[:crcGapStart])
	return crc32.Update(c, castagnoli, h[crcGapEnd:crcEnd])
}

// encodeHeader writes the immutable header of g into h (at least
// headerSize bytes, zeroed).
func encodeHeader(h []byte, g geometry) {
	copy(h[hMagic:], magic[:])
	le.PutUint32(h[hVersion:], LayoutVersion)
	le.PutUint32(h[hHeaderSize:], headerSize)
	le.PutUint64(h[hGeneration:], g.generation)
	le.PutUint32(h[hLeafCapacity:], uint32(g.leaves))
	le.PutUint32(h[hCapacity:], uint32(g.capacity))
	le.PutUint32(h[hRecordSize:], recordSize)
	le.PutUint64(h[hRecordOffset:], g.recordOffset)
	le.PutUint64(h[hDataOffset:], g.dataOffset)
	le.PutUint64(h[hDataSize:], g.dataSize)
	le.PutUint64(h[hFileSize:], g.fileSize)
	le.PutUint32(h[hCPUSize:], cpuSize)
	le.PutUint32(h[hNetSize:], netSize)
	le.PutUint32(h[hModelSize:], modelSize)
	le.PutUint32(h[hSlotAlign:], slotAlign)
	le.PutUint32(h[hCRC:], headerCRC(h))
}

// Errors a reader reports about a file it cannot trust.
var (
	// ErrNotTable means the file is not a hoststat table at all.
	ErrNotTable = errors.New("not a hoststat shared-memory table")
	// ErrVersion means the file is a table of another layout version.
	ErrVersion = errors.New("unsupported table layout version")
	// ErrCorrupt means the file claims to be a table but does not add up.
	ErrCorrupt = errors.New("corrupt table")
)

// decodeHeader validates the header against the size of the file holding
// it; on success the index, every record and the data area lie inside the
// file.
func decodeHeader(b []byte, size int64) (geometry, error) {
	if size < headerSize || len(b) < headerSize {
		return geometry{}, fmt.Errorf("%w: %d bytes is shorter than a header", ErrNotTable, size)
	}
	if [8]byte(b[hMagic:hMagic+8]) != magic {
		return geometry{}, fmt.Errorf("%w: bad magic %q", ErrNotTable, b[hMagic:hMagic+8])
	}
	if v := le.Uint32(b[hVersion:]); v != LayoutVersion {
		return geometry{}, fmt.Errorf("%w %d (this program reads %d)", ErrVersion, v, LayoutVersion)
	}
	if got, want := le.Uint32(b[hCRC:]), headerCRC(b); got != want {
		return geometry{}, fmt.Errorf("%w: header checksum %#08x, want %#08x", ErrCorrupt, got, want)
	}
	var g geometry
	g.generation = le.Uint64(b[hGeneration:])
	leaves := le.Uint32(b[hLeafCapacity:])
	capacity := le.Uint32(b[hCapacity:])
	g.recordOffset = le.Uint64(b[hRecordOffset:])
	g.dataOffset = le.Uint64(b[hDataOffset:])
	g.dataSize = le.Uint64(b[hDataSize:])
	g.fileSize = le.Uint64(b[hFileSize:])
	switch {
	case le.Uint32(b[hHeaderSize:]) != headerSize,
		le.Uint32(b[hRecordSize:]) != recordSize,
		le.Uint32(b[hCPUSize:]) != cpuSize,
		le.Uint32(b[hNetSize:]) != netSize,
		le.Uint32(b[hModelSize:]) != modelSize,
		le.Uint32(b[hSlotAlign:]) != slotAlign:
		return geometry{}, fmt.Errorf("%w: record geometry differs from layout %d", ErrCorrupt, LayoutVersion)
	case leaves > dirEntries:
		return geometry{}, fmt.Errorf("%w: %d index leaves exceed %d", ErrCorrupt, leaves, dirEntries)
	case capacity > MaxNodes:
		return geometry{}, fmt.Errorf("%w: capacity %d exceeds %d nodes", ErrCorrupt, capacity, MaxNodes)
	case g.recordOffset != leavesOffset+uint64(leaves)*leafSize:
		return geometry{}, fmt.Errorf("%w: records at %d, want %d after %d index leaves", ErrCorrupt, g.recordOffset, leavesOffset+uint64(leaves)*leafSize, leaves)
	case g.dataOffset%slotAlign != 0 || g.dataOffset < g.recordOffset+uint64(capacity)*recordSize:
		return geometry{}, fmt.Errorf("%w: data area at %d overlaps the node records", ErrCorrupt, g.dataOffset)
	case g.dataSize > math.MaxInt64-g.dataOffset || g.dataOffset+g.dataSize != g.fileSize:
		return geometry{}, fmt.Errorf("%w: data area [%d,+%d) does not end the table (%d bytes)", ErrCorrupt, g.dataOffset, g.dataSize, g.fileSize)
	case g.fileSize != uint64(size):
		return geometry{}, fmt.Errorf("%w: header says %d bytes, file has %d", ErrCorrupt, g.fileSize, size)
	}
	g.capacity, g.leaves = int(capacity), int(leaves)
	return g, nil
}

func alignUp(n, a uint64) uint64 { return (n + a - 1) &^ (a - 1) }

// Time is stored as Unix nanoseconds; 0 is the zero time.
func putTime(b []byte, t time.Time) {
	var ns int64
	if !t.IsZero() {
		ns = t.UnixNano()
	}
	le.PutUint64(b, uint64(ns))
}

func getTime(b []byte) time.Time { return unixTime(int64(le.Uint64(b))) }

// unixTime is the time of ns Unix nanoseconds, 0 being the zero time.
func unixTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// getLoad reads the loadavg fields of an index record.
func getLoad(rec []byte) sample.Load {
	return sample.Load{
		One: getF64(rec[rLoad1:]), Five: getF64(rec[rLoad5:]), Fifteen: getF64(rec[rLoad15:]),
		Running: le.Uint32(rec[rRunning:]), Total: le.Uint32(rec[rProcs:]), LastPID: le.Uint32(rec[rLastPID:]),
	}
}

func putAddr(b []byte, a netip.AddrPort) {
	ip := a.Addr()
	var fam byte
	switch {
	case ip.Is4():
		fam = 4
	case ip.Is6():
		fam = 6
	}
	a16 := ip.As16()
	if fam == 0 {
		a16 = [16]byte{}
	}
	copy(b[rAddr:rAddr+16], a16[:])
	le.PutUint16(b[rPort:], a.Port())
	b[rFamily] = fam
}

func getAddr(b []byte) netip.AddrPort {
	ip := netip.AddrFrom16([16]byte(b[rAddr : rAddr+16]))
	switch b[rFamily] {
	case 4:
		ip = ip.Unmap()
	case 6:
	default:
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ip, le.Uint16(b[rPort:]))
}

func putF64(b []byte, f float64) { le.PutUint64(b, math.Float64bits(f)) }
func getF64(b []byte) float64    { return math.Float64frombits(le.Uint64(b)) }
func putF32(b []byte, f float32) { le.PutUint32(b, math.Float32bits(f)) }
func getF32(b []byte) float32    { return math.Float32frombits(le.Uint32(b)) }

// putName writes s NUL-padded into b, cut at a UTF-8 boundary if too long.
func putName(b []byte, s string) {
	n := len(s)
	if n > len(b) {
		n = len(b)
		for n > 0 && s[n]&0xC0 == 0x80 {
			n--
		}
	}
	copy(b, s[:n])
	clear(b[n:])
}

// nameBytes is b up to its first NUL.
func nameBytes(b []byte) []byte {
	for i, c := range b {
		if c == 0 {
			return b[:i]
		}
	}
	return b
}

// slotLen is the bytes a node's data slot needs.
func slotLen(models, cpus, nets, disks, fss int) int {
	return models*modelSize + cpus*cpuSize + nets*netSize + disks*diskSize + fss*fsSize
}

// slotCounts are the counts of a record's data slot.
func slotCounts(rec []byte) (models, cpus, nets, disks, fss int) {
	return int(le.Uint16(rec[rModels:])), int(le.Uint32(rec[rCPUs:])), int(le.Uint16(rec[rNets:])),
		int(le.Uint16(rec[rDisks:])), int(le.Uint16(rec[rFSs:]))
}

// checkSlot verifies that the data slot an in-use record rec points at
// lies inside a data area of dataSize bytes and matches the record's
// counts; every use of a slot, by readers and the writer, goes through it.
func checkSlot(rec []byte, dataSize uint64) error {
	models, cpus, nets, disks, fss := slotCounts(rec)
	n, c := uint64(le.Uint32(rec[rDataLen:])), uint64(le.Uint32(rec[rDataCap:]))
	off := le.Uint64(rec[rDataOff:])
	switch {
	case models > MaxModels || cpus > MaxCPUs || nets > MaxNetDevs || disks > MaxDisks || fss > MaxFilesystems:
		return fmt.Errorf("%w: %d models, %d CPUs, %d devices, %d disks, %d filesystems exceed the limits",
			ErrCorrupt, models, cpus, nets, disks, fss)
	case n != uint64(slotLen(models, cpus, nets, disks, fss)) || n > c:
		return fmt.Errorf("%w: data length %d does not match its counts", ErrCorrupt, n)
	case off%slotAlign != 0 || c%slotAlign != 0 || off > dataSize || c > dataSize-off:
		return fmt.Errorf("%w: data slot [%d,+%d) outside the data area", ErrCorrupt, off, c)
	}
	return nil
}
