package oncrpc

import (
	"net/netip"
	"sync/atomic"
	"time"
)

// Callers come in two classes with separate capacity: local ones (loopback
// addresses, 127.0.0.0/8 and ::1, and unix sockets), among them the kernel's
// lock manager, and remote ones (everything else). Each class has its own
// handler slots and connection slots, so no number of remote connections,
// partial records or datagrams can take what a local caller needs. Remote
// peers are further bounded per source address.

// Defaults for the per-class limits; docs/security.md states them.
const (
	DefaultMaxRemoteConns    = 256
	DefaultMaxConnsPerRemote = 8
	DefaultMaxRemoteInFlight = 128
	DefaultRemoteIdleTimeout = 30 * time.Second
	DefaultRecordTimeout     = 10 * time.Second
)

// PeerStats counts what a Server has seen of one class of callers.
type PeerStats struct {
	ConnsOpen      int64  // connections open now
	ConnsRefused   uint64 // connections closed at once for being over a limit
	IdleTimeouts   uint64 // connections closed for being idle
	RecordTimeouts uint64 // connections closed for not completing a record in time
	CallsShed      uint64 // datagrams dropped unread because every handler slot was busy
	InFlight       int64  // handlers running now
}

// peerClass is the capacity and the counters of one class of callers.
type peerClass struct {
	local    bool
	sem      chan struct{} // handler slots
	maxConns int
	idle     time.Duration // <0: never

	conns, inFlight                                  atomic.Int64
	refused, idleTimeouts, recordTimeouts, callsShed atomic.Uint64
}

func newPeerClass(local bool, inFlight, maxConns int, idle time.Duration) *peerClass {
	return &peerClass{local: local, sem: make(chan struct{}, inFlight), maxConns: maxConns, idle: idle}
}

func (p *peerClass) stats() PeerStats {
	return PeerStats{
		ConnsOpen: p.conns.Load(), ConnsRefused: p.refused.Load(), IdleTimeouts: p.idleTimeouts.Load(),
		RecordTimeouts: p.recordTimeouts.Load(), CallsShed: p.callsShed.Load(), InFlight: p.inFlight.Load(),
	}
}

// name is the class's name in logs.
func (p *peerClass) name() string {
	if p.local {
		return "local"
	}
	return "remote"
}

// tryAcquire takes a handler slot if one is free.
func (p *peerClass) tryAcquire() bool {
	select {
	case p.sem <- struct{}{}:
		p.inFlight.Add(1)
		return true
	default:
		return false
	}
}

// acquire waits for a handler slot, or fails once done closes.
func (p *peerClass) acquire(done <-chan struct{}) bool {
	select {
	case p.sem <- struct{}{}:
		p.inFlight.Add(1)
		return true
	case <-done:
		return false
	}
}

func (p *peerClass) release() {
	p.inFlight.Add(-1)
	<-p.sem
}

// isLocalPeer tells a local caller: a unix socket (no address) or a
// loopback address.
func isLocalPeer(remote netip.AddrPort, transport string) bool {
	return transport == "unix" || remote.Addr().Unmap().IsLoopback()
}

// limit returns n, or def when n is not positive.
func limit(n, def int) int {
	if n <= 0 {
		return def
	}
	return n
}

// orDefault returns d, or def when d is zero.
func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}
