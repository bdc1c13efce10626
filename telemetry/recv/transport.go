package recv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
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
}

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
		setReadBuffer(conn, cfg.ReadBuffer)
	}
	if cfg.Interface != "" {
		if err := u.join(cfg.Interface, cfg.Group); err != nil {
			conn.Close()
			return nil, err
		}
	}
	return u, nil
}

// setReadBuffer asks for n bytes, past rmem_max when we have the
// privilege; a smaller buffer only costs packets in bursts.
func setReadBuffer(conn *net.UDPConn, n int) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n) != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, n)
		}
	})
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
			if u.mcast {
				u.oob[i] = make([]byte, 64)
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
		m.Multicast = u.mcast && pktinfoDstMulticast(b.OOB[:b.NN])
	}
	return n, err
}

// pktinfoDstMulticast finds IP_PKTINFO in a control message and reports
// whether the datagram's destination was multicast. Parsed by hand because
// ipv4.ControlMessage.Parse allocates for every packet.
func pktinfoDstMulticast(oob []byte) bool {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			return false
		}
		if h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && l >= unix.CmsgLen(unix.SizeofInet4Pktinfo) {
			pi := (*unix.Inet4Pktinfo)(unsafe.Pointer(&oob[unix.CmsgLen(0)]))
			return pi.Addr[0]&0xf0 == 0xe0 // 224.0.0.0/4
		}
		oob = oob[min(unix.CmsgSpace(l-unix.SizeofCmsghdr), len(oob)):]
	}
	return false
}
