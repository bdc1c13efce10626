package send

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"

	"golang.org/x/net/bpf"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/hoststat/hoststat/internal/rawio"
	"github.com/hoststat/hoststat/telemetry/wire"
)

// Transport is what the agent needs of the network, so the same code runs
// over real UDP and over an in-memory network in tests (as in memberlist).
type Transport interface {
	// WriteTo sends b to a master or to the group.
	WriteTo(b []byte, to netip.AddrPort) error
	// ReadFrom blocks for the next datagram addressed to us or to the
	// group (update requests, and other nodes' status packets), until
	// Close.
	ReadFrom(b []byte) (int, netip.AddrPort, error)
	Close() error
}

// UDPConfig describes the agent's sockets.
type UDPConfig struct {
	Interface string     // multicast on this interface; empty: none
	Group     netip.Addr // IPv4 multicast group
	Port      int        // the group's port
	IPv6      bool       // open an IPv6 socket too, for IPv6 masters
}

// UDP is the real Transport. It sends from one ephemeral-port socket per
// address family, on which masters can answer directly, and listens on
// group:port for multicast requests.
type UDP struct {
	out4, out6 *net.UDPConn
	fd4, fd6   int          // their descriptors, for rawio.SendTo
	listen     *net.UDPConn // nil without multicast
	in         chan datagram
	closed     chan struct{}
	once       sync.Once
	wg         sync.WaitGroup
}

type datagram struct {
	b    []byte
	from netip.AddrPort
}

// ListenUDP opens the agent's sockets.
func ListenUDP(cfg UDPConfig) (*UDP, error) {
	u := &UDP{in: make(chan datagram, 64), closed: make(chan struct{}), fd4: -1, fd6: -1}
	fail := func(err error) (*UDP, error) {
		u.closeAll()
		return nil, err
	}
	var err error
	if u.out4, err = net.ListenUDP("udp4", &net.UDPAddr{}); err != nil {
		return fail(fmt.Errorf("udp socket: %w", err))
	}
	if u.fd4, err = sysfd(u.out4); err != nil {
		return fail(err)
	}
	if cfg.IPv6 {
		if u.out6, err = net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6unspecified}); err != nil {
			return fail(fmt.Errorf("udp6 socket: %w", err))
		}
		if u.fd6, err = sysfd(u.out6); err != nil {
			return fail(err)
		}
	}
	if cfg.Interface != "" {
		if !cfg.Group.Is4() || !cfg.Group.IsMulticast() {
			return fail(fmt.Errorf("group %s is not an IPv4 multicast address", cfg.Group))
		}
		ifi, err := net.InterfaceByName(cfg.Interface)
		if err != nil {
			return fail(fmt.Errorf("interface %s: %w", cfg.Interface, err))
		}
		p := ipv4.NewPacketConn(u.out4)
		// TTL 1: status stays on the cluster segment. Loopback on, so a
		// recvstats on this very host hears this node as well.
		for _, err := range []error{p.SetMulticastInterface(ifi), p.SetMulticastTTL(1), p.SetMulticastLoopback(true)} {
			if err != nil {
				return fail(fmt.Errorf("multicast on %s: %w", cfg.Interface, err))
			}
		}
		// Bound to the group, not to 0.0.0.0: we get the group's
		// datagrams and never steal unicast meant for a recvstats on
		// this host; SO_REUSEADDR lets both, and several agents, bind.
		lc := net.ListenConfig{Control: reuseAddr}
		addr := netip.AddrPortFrom(cfg.Group, uint16(cfg.Port)).String()
		pc, err := lc.ListenPacket(context.Background(), "udp4", addr)
		if err != nil {
			return fail(fmt.Errorf("listen on %s: %w", addr, err))
		}
		u.listen = pc.(*net.UDPConn)
		lp := ipv4.NewPacketConn(u.listen)
		// Every other node's status comes through the group: the kernel
		// drops it, so it never wakes us.
		if err := lp.SetBPF(requestFilter); err != nil {
			return fail(fmt.Errorf("filter on %s: %w", addr, err))
		}
		if err := lp.JoinGroup(ifi, &net.UDPAddr{IP: cfg.Group.AsSlice()}); err != nil {
			return fail(fmt.Errorf("join %s on %s: %w", cfg.Group, cfg.Interface, err))
		}
	}
	for _, c := range []*net.UDPConn{u.out4, u.out6, u.listen} {
		if c != nil {
			u.wg.Add(1)
			go u.pump(c)
		}
	}
	return u, nil
}

// requestFilter is a socket filter that passes update requests only, as
// mayBeRequest tells them: long enough for a header, and of that kind. A
// UDP socket's filter sees the 8-byte UDP header first. What it drops
// never reaches us.
var requestFilter = func() []bpf.RawInstruction {
	const udpHeader = 8
	prog, err := bpf.Assemble([]bpf.Instruction{
		bpf.LoadExtension{Num: bpf.ExtLen},
		bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: udpHeader + wire.HeaderLen, SkipFalse: 3},
		bpf.LoadAbsolute{Off: udpHeader + wire.KindOffset, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(wire.KindUpdateRequest), SkipFalse: 1},
		bpf.RetConstant{Val: 1 << 16}, // the whole datagram
		bpf.RetConstant{Val: 0},
	})
	if err != nil {
		panic(err)
	}
	return prog
}()

// sysfd is c's descriptor, valid until c is closed.
func sysfd(c *net.UDPConn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if err := rc.Control(func(s uintptr) { fd = int(s) }); err != nil {
		return -1, err
	}
	return fd, nil
}

func reuseAddr(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	})
	return errors.Join(err, serr)
}

// pump forwards what one socket receives; requests are rare, so a
// goroutine and a copy per datagram cost nothing that matters.
func (u *UDP) pump(c *net.UDPConn) {
	defer u.wg.Done()
	buf := make([]byte, wire.MaxDatagram+64)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // e.g. ICMP errors reported on the socket
		}
		// Other nodes' status packets reach us through the group: skip
		// them here, before the copy.
		if !mayBeRequest(buf[:n]) {
			continue
		}
		d := datagram{b: append([]byte(nil), buf[:n]...), from: netip.AddrPortFrom(from.Addr().Unmap(), from.Port())}
		select {
		case u.in <- d:
		case <-u.closed:
			return
		default: // the agent is behind: like a full socket buffer
		}
	}
}

// mayBeRequest looks at the kind byte of the header, so that status
// packets are skipped without checking their MAC.
func mayBeRequest(b []byte) bool {
	k, ok := wire.PeekKind(b)
	return ok && k == wire.KindUpdateRequest
}

// WriteTo sends b from the socket of to's family: with a raw sendto
// (package rawio: a periodic sample then wakes no runtime thread), or
// through the poller when that cannot be done at once (a full socket
// buffer) or at all.
func (u *UDP) WriteTo(b []byte, to netip.AddrPort) error {
	c, fd := u.out4, u.fd4
	if to.Addr().Is6() && !to.Addr().Is4In6() {
		c, fd = u.out6, u.fd6
		if c == nil {
			return fmt.Errorf("no IPv6 socket for %s", to)
		}
	} else {
		to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())
	}
	select {
	case <-u.closed:
		return net.ErrClosed // the descriptor may be another file's now
	default:
	}
	if rawio.SendTo(fd, b, to) == nil {
		return nil
	}
	_, err := c.WriteToUDPAddrPort(b, to)
	return err
}

// LocalAddr is the IPv4 sending socket's address, where masters send
// their direct requests.
func (u *UDP) LocalAddr() netip.AddrPort { return u.out4.LocalAddr().(*net.UDPAddr).AddrPort() }

// ReadFrom returns the next datagram that may be an update request.
func (u *UDP) ReadFrom(b []byte) (int, netip.AddrPort, error) {
	select {
	case d := <-u.in:
		return copy(b, d.b), d.from, nil
	case <-u.closed:
		return 0, netip.AddrPort{}, net.ErrClosed
	}
}

func (u *UDP) closeAll() error {
	var errs []error
	for _, c := range []*net.UDPConn{u.out4, u.out6, u.listen} {
		if c != nil {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}

// Close closes every socket and waits for the readers.
func (u *UDP) Close() error {
	var err error
	u.once.Do(func() {
		close(u.closed)
		err = u.closeAll()
		u.wg.Wait()
	})
	return err
}
