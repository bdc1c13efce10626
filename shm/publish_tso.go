//go:build amd64 || 386

package shm

// publish copies src into the mapping at off inside a seqlock window. On
// these total-store-order CPUs stores become visible in program order, and
// the compiler keeps them between the atomic sequence stores, so a plain
// copy is enough.
func publish(m []byte, off int, src []byte) {
	copy(m[off:off+len(src)], src)
}
