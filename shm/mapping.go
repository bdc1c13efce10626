package shm

import (
	"encoding/binary"
	"sync/atomic"
	"unsafe"
)

// The shared words of the table (seqlock counters and the mutable header
// fields) are only ever touched through these, on 8- or 4-byte aligned
// offsets of a page-aligned mapping.

func word64(m []byte, off int) *uint64 {
	_ = m[off+7]
	return (*uint64)(unsafe.Pointer(&m[off]))
}

func word32(m []byte, off int) *uint32 {
	_ = m[off+3]
	return (*uint32)(unsafe.Pointer(&m[off]))
}

func load64(m []byte, off int) uint64     { return atomic.LoadUint64(word64(m, off)) }
func store64(m []byte, off int, v uint64) { atomic.StoreUint64(word64(m, off), v) }
func load32(m []byte, off int) uint32     { return atomic.LoadUint32(word32(m, off)) }
func store32(m []byte, off int, v uint32) { atomic.StoreUint32(word32(m, off), v) }

// copyAtomic copies len(dst) bytes (a multiple of 8) from the mapping at
// off using one atomic load per word. Atomic loads keep the copy ordered
// before the reader's second look at the sequence counter on weakly
// ordered CPUs; on amd64 they are plain moves.
func copyAtomic(dst []byte, m []byte, off int) {
	src := m[off : off+len(dst)]
	p := unsafe.Pointer(unsafe.SliceData(src))
	for i := 0; i+8 <= len(dst); i += 8 {
		binary.NativeEndian.PutUint64(dst[i:], atomic.LoadUint64((*uint64)(unsafe.Add(p, i))))
	}
}
