//go:build !(amd64 || 386)

package shm

import (
	"encoding/binary"
	"sync/atomic"
	"unsafe"
)

// publish copies src (a multiple of 8 bytes) into the mapping at off
// inside a seqlock window. Weakly ordered CPUs may let a plain store
// overtake the odd sequence store; an atomic (release) store per word
// cannot.
func publish(m []byte, off int, src []byte) {
	dst := m[off : off+len(src)]
	p := unsafe.Pointer(unsafe.SliceData(dst))
	for i := 0; i+8 <= len(src); i += 8 {
		atomic.StoreUint64((*uint64)(unsafe.Add(p, i)), binary.NativeEndian.Uint64(src[i:]))
	}
}
