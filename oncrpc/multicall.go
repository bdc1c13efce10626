package oncrpc

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/hoststat/hoststat/oncrpc/xdr"
)

// Multicaller calls many servers over one unconnected UDP socket per
// address family, retransmitting each call until its reply or the end of
// its context, as sm-notify does. Client does not fit mass notification: it
// needs a connected socket per server (20,000 to notify 10,000 hosts) and
// cannot share one fixed source port.
//
// Each call gets an xid drawn from crypto/rand, and a reply is taken only
// when it carries that xid and comes from the address and port called: an
// off-path host can neither guess an xid nor, on loopback, forge the source
// (the kernel drops packets from the network that claim a loopback source).
// Safe for concurrent use.
type Multicaller struct {
	v4, v6       *net.UDPConn
	first, limit time.Duration // retransmission interval and its cap

	mu      sync.Mutex
	waiting map[uint32]multiWaiter // by xid
	wg      sync.WaitGroup
}

type multiWaiter struct {
	to netip.AddrPort
	ch chan []byte
}

// ListenMulticaller binds the sockets to port (0: any). A family that
// cannot be bound (no IPv6 in this namespace) is left out; both failing is
// an error. Calls retransmit after 250 ms, doubling to 1 s.
func ListenMulticaller(port int) (*Multicaller, error) {
	m := newMulticaller()
	var errs []error
	if c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: port}); err == nil {
		m.v4 = c
	} else {
		errs = append(errs, err)
	}
	if c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6unspecified, Port: port}); err == nil {
		m.v6 = c
	} else {
		errs = append(errs, err)
	}
	if m.v4 == nil && m.v6 == nil {
		return nil, fmt.Errorf("oncrpc: outgoing UDP socket: %w", errors.Join(errs...))
	}
	return m.start(), nil
}

// ListenMulticallerFrom binds the sockets to the first IPv4 and the first
// IPv6 address of addrs (any port), so calls go from those addresses (a
// floating address a statd notifies from); a family without an address
// has no socket. Any bind failing is an error (an address not up yet on
// this host: EADDRNOTAVAIL).
func ListenMulticallerFrom(addrs []netip.Addr) (*Multicaller, error) {
	m := newMulticaller()
	for _, a := range addrs {
		network, sock := "udp4", &m.v4
		if !a.Unmap().Is4() {
			network, sock = "udp6", &m.v6
		}
		if *sock != nil {
			continue
		}
		c, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(a.Unmap(), 0)))
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("oncrpc: outgoing UDP socket on %s: %w", a, err)
		}
		*sock = c
	}
	if m.v4 == nil && m.v6 == nil {
		return nil, errors.New("oncrpc: outgoing UDP socket: no address to bind")
	}
	return m.start(), nil
}

func newMulticaller() *Multicaller {
	return &Multicaller{first: 250 * time.Millisecond, limit: time.Second, waiting: map[uint32]multiWaiter{}}
}

func (m *Multicaller) start() *Multicaller {
	for _, c := range []*net.UDPConn{m.v4, m.v6} {
		if c != nil {
			m.wg.Add(1)
			go m.read(c)
		}
	}
	return m
}

// Close closes the sockets; calls under way end with an error.
func (m *Multicaller) Close() error {
	for _, c := range []*net.UDPConn{m.v4, m.v6} {
		if c != nil {
			c.Close()
		}
	}
	m.wg.Wait()
	return nil
}

func (m *Multicaller) read(c *net.UDPConn) {
	defer m.wg.Done()
	buf := make([]byte, 9000)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // ICMP errors surface here on some kernels; the call retransmits
		}
		if n < 4 {
			continue
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		m.mu.Lock()
		w, ok := m.waiting[binary.BigEndian.Uint32(buf)]
		m.mu.Unlock()
		if !ok || w.to != from {
			continue
		}
		select {
		case w.ch <- append([]byte(nil), buf[:n]...):
		default: // a duplicate (answer to a retransmission)
		}
	}
}

// newXID draws an xid no call under way uses and reserves it for w.
func (m *Multicaller) newXID(w multiWaiter) uint32 {
	var b [4]byte
	m.mu.Lock()
	defer m.mu.Unlock()
	for {
		rand.Read(b[:]) // never fails (crypto/rand panics rather than return short)
		xid := binary.BigEndian.Uint32(b[:])
		if _, taken := m.waiting[xid]; !taken {
			m.waiting[xid] = w
			return xid
		}
	}
}

// Call calls prog/vers/proc at `to` and decodes the result with result
// (nil: ignore it). It retransmits with a doubling interval until a reply
// or the end of ctx.
func (m *Multicaller) Call(ctx context.Context, to netip.AddrPort, prog, vers, proc uint32, args func(*xdr.Encoder), result func(*xdr.Decoder) error) error {
	to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())
	c := m.v4
	if to.Addr().Is6() {
		c = m.v6
	}
	if c == nil {
		return fmt.Errorf("oncrpc: no socket for %s", to)
	}
	reply := make(chan []byte, 1)
	xid := m.newXID(multiWaiter{to: to, ch: reply})
	defer func() {
		m.mu.Lock()
		delete(m.waiting, xid)
		m.mu.Unlock()
	}()
	e := xdr.NewEncoder(make([]byte, 0, 128))
	h := CallHeader{XID: xid, RPCVersion: RPCVersion, Program: prog, Version: vers, Procedure: proc}
	h.Encode(e)
	if args != nil {
		args(e)
	}
	msg := e.Bytes()
	interval := m.first
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case raw := <-reply:
			r, err := ParseReply(raw)
			if err == nil {
				err = r.Err
			}
			if err == nil && result != nil {
				err = result(xdr.NewDecoder(r.Results))
			}
			return err
		case <-t.C:
			// A full socket buffer is worth another try; an unreachable
			// network is not.
			if _, err := c.WriteToUDPAddrPort(msg, to); err != nil &&
				!errors.Is(err, syscall.ENOBUFS) && !errors.Is(err, syscall.EAGAIN) {
				return err
			}
			t.Reset(interval)
			interval = min(2*interval, m.limit)
		}
	}
}

// To returns the Multicaller as a Caller of one server (for rpcbind.NewClient).
func (m *Multicaller) To(server netip.AddrPort) Caller { return multiTo{m, server} }

type multiTo struct {
	m      *Multicaller
	server netip.AddrPort
}

func (s multiTo) Call(ctx context.Context, prog, vers, proc uint32, args func(*xdr.Encoder), result func(*xdr.Decoder) error) error {
	return s.m.Call(ctx, s.server, prog, vers, proc, args, result)
}
