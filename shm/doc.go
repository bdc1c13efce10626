// Package shm is the shared-memory node table: one writer (recvstats)
// keeps every node's latest status in a file under the shm directory
// (default /var/shm/beostat), and any number of readers in other processes
// map it read-only.
//
// Readers never block the writer and never see a half-written record: each
// node record carries a sequence counter (a seqlock) that is odd while the
// writer is inside; a reader copies the record, re-checks the counter and
// retries on a change. The table has a fixed-size index record per node
// (the summary: times, total ticks, memory, load, rates) that points into
// a variable data area holding the node's CPUs and network devices, so a
// table of 100,000 small nodes stays small while a node with thousands of
// CPUs still fits.
//
// When the table must grow the writer builds a new file, renames it over
// the old one and marks the old mapping retired; readers notice on their
// next call and re-open the path. A restarted writer reuses a sound table
// in place, keeping every node's data and address.
//
// The byte layout is documented in docs/shm.md.
package shm
