package recv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// Message is one received datagram.
type Message struct {
	Buf       []byte // the receive buffer; Buf[:N] is the datagram
	N         int
	Truncated bool // larger than Buf
	From      netip.AddrPort
	Multicast bool // sent to a multicast group, not to our address
}

// Transport is what the server needs of the network, so the same code runs
// over real UDP and over an in-memory network in tests (as in memberlist).
type Transport interface {
	// ReadBatch fills up to len(ms) messages, blocking until at least one
	// arrives or the read deadline passes (then it returns an error for
	// which os.IsTimeout is true).
	ReadBatch(ms []Message) (int, error)
	SetReadDeadline(t time.Time) error
	// WriteTo sends b to a node or, to = the group, to every node.
	WriteTo(b []byte, to netip.AddrPort) error
	LocalAddr() netip.AddrPort
	Close() error
}

// UDPConfig describes the master's socket.
type UDPConfig struct {
	Listen    netip.Addr // zero: every IPv4 address
	Port      int
	Interface string     // join Group here; empty: unicast only
	Group     netip.Addr // IPv4 multicast group
	// ReadBuffer is the socket receive buffer to ask for; bursts of
	// answers to an update request arrive all at once.
	ReadBuffer int
}

// UDP is the real Transport: one UDP socket, recvmmsg batches.
type UDP struct {
	conn  *net.UDPConn
	pc    *ipv4.PacketConn
	mcast bool
	batch []ipv4.Message
	oob   [][]byte
	local netip.AddrPort

	readBuffer int  // SO_RCVBUF as the kernel reports it (twice what was granted)
	forced     bool // granted past rmem_max (SO_RCVBUFFORCE, CAP_NET_ADMIN)
	rxqOvfl    bool // SO_RXQ_OVFL is on: datagrams carry the socket's drop count
	lastOvfl   uint32
	kernDrops  atomic.Uint64
}

// KernelDrops counts the datagrams the kernel dropped on this socket
// because its receive buffer was full, as of the last datagram read (from
// SO_RXQ_OVFL, which each datagram carries).
func (u *UDP) KernelDrops() uint64 { return u.kernDrops.Load() }

// ReadBuffer is the socket's receive buffer as the kernel reports it
// (SO_RCVBUF: twice the bytes granted, for its bookkeeping), and whether
// it was forced past net.core.rmem_max.
func (u *UDP) ReadBuffer() (bytes int, forced bool) { return u.readBuffer, u.forced }

// reuse lets several listeners share the port, like the original's
// listeners on one host, and a restarted daemon bind at once.
func reuse(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	})
	return errors.Join(err, serr)
}

// ListenUDP binds the master's socket and joins the group on the interface.
func ListenUDP(cfg UDPConfig) (*UDP, error) {
	listen := cfg.Listen
	if !listen.IsValid() {
		listen = netip.IPv4Unspecified()
	}
	network := "udp4"
	if listen.Is6() && !listen.Is4In6() {
		network = "udp"
		if cfg.Interface != "" {
			return nil, fmt.Errorf("listen address %s: multicast needs an IPv4 listen address", listen)
		}
	}
	lc := net.ListenConfig{Control: reuse}
	addr := netip.AddrPortFrom(listen.Unmap(), uint16(cfg.Port)).String()
	pconn, err := lc.ListenPacket(context.Background(), network, addr)
	if err != nil {
		return nil, fmt.Errorf("listen on udp %s: %w", addr, err)
	}
	conn := pconn.(*net.UDPConn)
	u := &UDP{conn: conn, pc: ipv4.NewPacketConn(conn)}
	u.local = conn.LocalAddr().(*net.UDPAddr).AddrPort()
	if cfg.ReadBuffer > 0 {
		u.forced = setReadBuffer(conn, cfg.ReadBuffer)
	}
	u.readBuffer, u.rxqOvfl = socketOptions(conn)
	if cfg.Interface != "" {
		if err := u.join(cfg.Interface, cfg.Group); err != nil {
			conn.Close()
			return nil, err
		}
	}
	return u, nil
}

// setReadBuffer asks for n bytes, past rmem_max when we have the
// privilege (CAP_NET_ADMIN), and tells whether it was forced; a smaller
// buffer only costs packets in bursts.
func setReadBuffer(conn *net.UDPConn, n int) (forced bool) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return false
	}
	_ = rc.Control(func(fd uintptr) {
		forced = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n) == nil
		if !forced {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, n)
		}
	})
	return forced
}

// socketOptions turns on SO_RXQ_OVFL, so every datagram carries the
// socket's drop counter, and reads the receive buffer the kernel granted.
func socketOptions(conn *net.UDPConn) (readBuffer int, rxqOvfl bool) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return 0, false
	}
	_ = rc.Control(func(fd uintptr) {
		rxqOvfl = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RXQ_OVFL, 1) == nil
		readBuffer, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
	})
	return readBuffer, rxqOvfl
}

func (u *UDP) join(ifname string, group netip.Addr) error {
	if !group.Is4() || !group.IsMulticast() {
		return fmt.Errorf("group %s is not an IPv4 multicast address", group)
	}
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return fmt.Errorf("interface %s: %w", ifname, err)
	}
	g := &net.UDPAddr{IP: group.AsSlice()}
	if err := u.pc.JoinGroup(ifi, g); err != nil {
		return fmt.Errorf("join %s on %s: %w", group, ifname, err)
	}
	if err := u.pc.SetMulticastInterface(ifi); err != nil {
		return fmt.Errorf("multicast interface %s: %w", ifname, err)
	}
	// Requests stay on the cluster segment; looped back so a sendstats
	// on the master itself hears them too.
	if err := u.pc.SetMulticastTTL(1); err != nil {
		return fmt.Errorf("multicast TTL on %s: %w", ifname, err)
	}
	if err := u.pc.SetMulticastLoopback(true); err != nil {
		return fmt.Errorf("multicast loopback on %s: %w", ifname, err)
	}
	// The destination address tells a node heard by multicast from one
	// that sends to us directly (it then gets requests directly).
	if err := u.pc.SetControlMessage(ipv4.FlagDst, true); err != nil {
		return fmt.Errorf("IP_PKTINFO: %w", err)
	}
	u.mcast = true
	return nil
}

// LocalAddr is the bound address (the port chosen when Port was 0).
func (u *UDP) LocalAddr() netip.AddrPort { return u.local }

// SetReadDeadline bounds the next ReadBatch.
func (u *UDP) SetReadDeadline(t time.Time) error { return u.conn.SetReadDeadline(t) }

// WriteTo sends one datagram.
func (u *UDP) WriteTo(b []byte, to netip.AddrPort) error {
	_, err := u.conn.WriteToUDPAddrPort(b, to)
	return err
}

// Close closes the socket; a blocked ReadBatch returns.
func (u *UDP) Close() error { return u.conn.Close() }

// ReadBatch receives with one recvmmsg(2) call.
func (u *UDP) ReadBatch(ms []Message) (int, error) {
	if cap(u.batch) < len(ms) {
		u.batch = make([]ipv4.Message, len(ms))
		u.oob = make([][]byte, len(ms))
		for i := range u.batch {
			u.batch[i].Buffers = make([][]byte, 1)
			if u.mcast || u.rxqOvfl {
				u.oob[i] = make([]byte, 64) // IP_PKTINFO (32) and SO_RXQ_OVFL (24)
			}
		}
	}
	batch := u.batch[:len(ms)]
	for i := range batch {
		batch[i].Buffers[0] = ms[i].Buf
		batch[i].OOB = u.oob[i]
	}
	n, err := u.pc.ReadBatch(batch, 0)
	for i := 0; i < n; i++ {
		m, b := &ms[i], &batch[i]
		m.N = b.N
		m.Truncated = b.Flags&unix.MSG_TRUNC != 0
		m.From = netip.AddrPort{}
		if ua, ok := b.Addr.(*net.UDPAddr); ok {
			m.From = ua.AddrPort()
			m.From = netip.AddrPortFrom(m.From.Addr().Unmap(), m.From.Port())
		}
		m.Multicast = false
		if u.mcast {
			m.Multicast, _, _ = parseControl(b.OOB[:b.NN])
		}
	}
	// The drop counter is the socket's as each datagram was queued: the
	// batch's last datagram has the latest.
	if n > 0 && u.rxqOvfl {
		if _, c, ok := parseControl(batch[n-1].OOB[:batch[n-1].NN]); ok {
			u.kernDrops.Add(uint64(c - u.lastOvfl)) // the kernel's is 32 bits and wraps
			u.lastOvfl = c
		}
	}
	return n, err
}

// parseControl reads the control messages of one datagram: whether its
// destination was multicast (IP_PKTINFO) and the socket's drop counter
// (SO_RXQ_OVFL, absent until the first drop). Parsed by hand because
// ipv4.ControlMessage.Parse allocates for every packet.
func parseControl(oob []byte) (multicast bool, drops uint32, haveDrops bool) {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			break
		}
		switch {
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && l >= unix.CmsgLen(unix.SizeofInet4Pktinfo):
			pi := (*unix.Inet4Pktinfo)(unsafe.Pointer(&oob[unix.CmsgLen(0)]))
			multicast = pi.Addr[0]&0xf0 == 0xe0 // 224.0.0.0/4
		case h.Level == unix.SOL_SOCKET && h.Type == unix.SO_RXQ_OVFL && l >= unix.CmsgLen(4):
			drops, haveDrops = *(*uint32)(unsafe.Pointer(&oob[unix.CmsgLen(0)])), true
		}
		oob = oob[min(unix.CmsgSpace(l-unix.SizeofCmsghdr), len(oob)):]
	}
	return multicast, drops, haveDrops
}
