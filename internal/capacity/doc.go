// Package capacity measures how many nodes one recvstats master takes as it
// is deployed: a load generator process plays N distinct nodes, each sending
// a signed status packet R times a second, spread evenly over the second, to
// a receiver process on loopback; the receiver is either a bare loop that
// only counts datagrams (the least any receiver pays) or the real recvstats,
// in the background and with -d. The harness reads what each process cost
// from the kernel's accounting (/proc/PID/stat, /proc/PID/status), the
// socket's drop counter from /proc/net/udp and what reached the table from
// the table itself, and prints the table of docs/benchmarks.md.
//
// The commands live under internal/capacity/cmd (loadgen, barerecv,
// benchcapacity) so that `go build ./cmd/...` and `go install` of the
// daemons never ship them: they are tools of the benchmark, not of a
// cluster. `make bench-capacity` builds and runs them.
package capacity
