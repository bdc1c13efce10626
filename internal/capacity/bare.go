package capacity

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/hoststat/hoststat/telemetry/recv"
	"github.com/hoststat/hoststat/telemetry/wire"
)

// DefaultReadBuffer is the socket receive buffer the bare receiver asks
// for: recvstats' at its default --max-nodes (recv.ReadBufferFor), so both
// face the same bursts. Pass recvstats' figure with --read-buffer when it
// runs with another --max-nodes.
const DefaultReadBuffer = recv.DefaultReadBuffer

// bareBatch is how many datagrams one recvmmsg(2) may return: recvstats'.
const bareBatch = 64

// Bare is the least a receiver can do: it reads datagrams in recvmmsg
// batches into buffers as large as recvstats', and counts them.
type Bare struct {
	conn                         *net.UDPConn
	pc                           *ipv4.PacketConn
	readBuffer                   int
	datagrams, bytes, batchCount atomic.Uint64
}

// Received is what a bare receiver counted, printed as JSON by barerecv.
type Received struct {
	Datagrams uint64 `json:"datagrams"`
	Bytes     uint64 `json:"bytes"`
	Batches   uint64 `json:"batches"`
	// ReadBuffer is the receive buffer the kernel granted (SO_RCVBUF,
	// which Linux reports doubled for its bookkeeping).
	ReadBuffer int `json:"read_buffer"`
}

// ListenBare opens the socket at addr, asking for readBuffer bytes of
// receive buffer (past rmem_max when root, like recvstats).
func ListenBare(addr netip.AddrPort, readBuffer int) (*Bare, error) {
	conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return nil, fmt.Errorf("capacity: %w", err)
	}
	b := &Bare{conn: conn, pc: ipv4.NewPacketConn(conn)}
	rc, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("capacity: %w", err)
	}
	rc.Control(func(fd uintptr) {
		if readBuffer > 0 && unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, readBuffer) != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, readBuffer)
		}
		b.readBuffer, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
	})
	return b, nil
}

// Addr is where the receiver listens.
func (b *Bare) Addr() netip.AddrPort { return b.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

// Serve reads and counts until Close; it returns nil then.
func (b *Bare) Serve() error {
	msgs := make([]ipv4.Message, bareBatch)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, wire.MaxDatagram+64)}
	}
	for {
		n, err := b.pc.ReadBatch(msgs, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("capacity: recvmmsg: %w", err)
		}
		var bytes uint64
		for i := range msgs[:n] {
			bytes += uint64(msgs[i].N)
		}
		// Counted once a batch, as recvstats counts what it stored.
		b.datagrams.Add(uint64(n))
		b.bytes.Add(bytes)
		b.batchCount.Add(1)
	}
}

// Counts says what was received so far.
func (b *Bare) Counts() Received {
	return Received{Datagrams: b.datagrams.Load(), Bytes: b.bytes.Load(), Batches: b.batchCount.Load(), ReadBuffer: b.readBuffer}
}

// Close closes the socket; Serve returns.
func (b *Bare) Close() error { return b.conn.Close() }
