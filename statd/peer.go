package statd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hoststat/hoststat/nsm"
	"github.com/hoststat/hoststat/oncrpc"
	"github.com/hoststat/hoststat/oncrpc/xdr"
)

// datagramMux sends RPC calls to many peers over one UDP socket per address
// family and matches replies to calls by transaction id and sender, as
// sm-notify does. Notifying 10,000 hosts so costs two sockets, not 20,000.
type datagramMux struct {
	v4, v6       *net.UDPConn
	first, limit time.Duration // retransmission interval and its cap

	mu      sync.Mutex
	waiting map[uint32]*pending
	xid     atomic.Uint32
	wg      sync.WaitGroup
}

type pending struct {
	to    netip.AddrPort
	reply chan []byte
}

// newDatagramMux binds the sockets to port (0: any). A family that cannot
// be bound (no IPv6 in this namespace) is left out.
func newDatagramMux(port int) (*datagramMux, error) {
	m := &datagramMux{first: 250 * time.Millisecond, limit: time.Second, waiting: map[uint32]*pending{}}
	m.xid.Store(rand.Uint32())
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
		return nil, fmt.Errorf("outgoing UDP socket: %w", errors.Join(errs...))
	}
	for _, c := range []*net.UDPConn{m.v4, m.v6} {
		if c != nil {
			m.wg.Add(1)
			go m.read(c)
		}
	}
	return m, nil
}

func (m *datagramMux) close() {
	for _, c := range []*net.UDPConn{m.v4, m.v6} {
		if c != nil {
			c.Close()
		}
	}
	m.wg.Wait()
}

func (m *datagramMux) read(c *net.UDPConn) {
	defer m.wg.Done()
	buf := make([]byte, 9000)
	for {
		n, _, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // ICMP errors surface here on some kernels; the call retransmits
		}
		if n < 4 {
			continue
		}
		xid := binary.BigEndian.Uint32(buf)
		m.mu.Lock()
		p := m.waiting[xid]
		m.mu.Unlock()
		// Matched by xid alone, as sm-notify does: a server on a wildcard
		// socket may answer from another of its addresses (every 127.x
		// address answers from 127.0.0.1), and xids start at random.
		if p == nil {
			continue
		}
		select {
		case p.reply <- append([]byte(nil), buf[:n]...):
		default: // a duplicate (answer to a retransmission)
		}
	}
}

// call sends one call to `to`, retransmitting with a doubling interval until
// a reply or the end of ctx, and returns the results of a SUCCESS reply.
func (m *datagramMux) call(ctx context.Context, to netip.AddrPort, prog, vers, proc uint32, args func(*xdr.Encoder)) ([]byte, error) {
	to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())
	c := m.v4
	if to.Addr().Is6() {
		c = m.v6
	}
	if c == nil {
		return nil, fmt.Errorf("no socket for %s", to)
	}
	xid := m.xid.Add(1)
	e := xdr.NewEncoder(make([]byte, 0, 128))
	h := oncrpc.CallHeader{XID: xid, RPCVersion: oncrpc.RPCVersion, Program: prog, Version: vers, Procedure: proc}
	h.Encode(e)
	if args != nil {
		args(e)
	}
	msg := e.Bytes()
	p := &pending{to: to, reply: make(chan []byte, 1)}
	m.mu.Lock()
	m.waiting[xid] = p
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.waiting, xid)
		m.mu.Unlock()
	}()
	interval := m.first
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case raw := <-p.reply:
			r, err := oncrpc.ParseReply(raw)
			if err != nil {
				return nil, err
			}
			if r.Err != nil {
				return nil, r.Err
			}
			return r.Results, nil
		case <-t.C:
			// A full socket buffer is worth another try; an unreachable
			// network is not.
			if _, err := c.WriteToUDPAddrPort(msg, to); err != nil &&
				!errors.Is(err, syscall.ENOBUFS) && !errors.Is(err, syscall.EAGAIN) {
				return nil, err
			}
			t.Reset(interval)
			interval = min(2*interval, m.limit)
		}
	}
}

// Portmapper and rpcbind procedure numbers (RFC 1833).
const (
	pmapProg       = 100000
	pmapVers       = 2
	pmapGetPort    = 3
	rpcbVers       = 3
	rpcbGetAddr    = 3
	ipprotoUDP     = 17
	ipprotoTCP     = 6
	maxUniversalAd = 256
)

// getPort asks the rpcbind at rpcb for the UDP port of prog/vers: portmapper
// v2 GETPORT over IPv4 (what every rpcbind and portmap answers, and what
// sm-notify asks), rpcbind v3 GETADDR over IPv6 (portmapper v2 is IPv4-only).
func (m *datagramMux) getPort(ctx context.Context, rpcb netip.AddrPort, prog, vers uint32) (uint16, error) {
	return m.getPortProto(ctx, rpcb, prog, vers, ipprotoUDP)
}

// getPortProto is getPort for UDP (17) or TCP (6).
func (m *datagramMux) getPortProto(ctx context.Context, rpcb netip.AddrPort, prog, vers, proto uint32) (uint16, error) {
	if rpcb.Addr().Unmap().Is4() {
		res, err := m.call(ctx, rpcb, pmapProg, pmapVers, pmapGetPort, func(e *xdr.Encoder) {
			e.Uint32(prog)
			e.Uint32(vers)
			e.Uint32(proto)
			e.Uint32(0)
		})
		if err != nil {
			return 0, err
		}
		d := xdr.NewDecoder(res)
		port := d.Uint32()
		if d.Err() != nil || port > 65535 {
			return 0, fmt.Errorf("bad GETPORT reply from %s", rpcb)
		}
		if port == 0 {
			return 0, errNotRegistered
		}
		return uint16(port), nil
	}
	res, err := m.call(ctx, rpcb, pmapProg, rpcbVers, rpcbGetAddr, func(e *xdr.Encoder) {
		e.Uint32(prog)
		e.Uint32(vers)
		netid := "udp6"
		if proto == ipprotoTCP {
			netid = "tcp6"
		}
		e.String(netid)
		e.String("")
		e.String("")
	})
	if err != nil {
		return 0, err
	}
	d := xdr.NewDecoder(res)
	uaddr := d.String("universal address", maxUniversalAd)
	if d.Err() != nil {
		return 0, fmt.Errorf("bad GETADDR reply from %s", rpcb)
	}
	if uaddr == "" {
		return 0, errNotRegistered
	}
	return portOfUniversal(uaddr)
}

var errNotRegistered = errors.New("SM_PROG is not registered with the host's rpcbind")

// portOfUniversal reads the port of a universal address "h.h.h.h.p1.p2" or
// "x:y::z.p1.p2".
func portOfUniversal(u string) (uint16, error) {
	i := strings.LastIndexByte(u, '.')
	if i < 0 {
		return 0, fmt.Errorf("bad universal address %q", u)
	}
	j := strings.LastIndexByte(u[:i], '.')
	if j < 0 {
		return 0, fmt.Errorf("bad universal address %q", u)
	}
	hi, err1 := strconv.Atoi(u[j+1 : i])
	lo, err2 := strconv.Atoi(u[i+1:])
	if err1 != nil || err2 != nil || hi < 0 || hi > 255 || lo < 0 || lo > 255 {
		return 0, fmt.Errorf("bad universal address %q", u)
	}
	return uint16(hi<<8 | lo), nil
}

// notifier sends our SM_NOTIFY to peers.
type peerNotifier struct {
	mux      *datagramMux
	names    []string // our names: FQDN, then the short name
	rpcbPort uint16
	timeout  time.Duration
	resolver *net.Resolver
}

// notify delivers SM_NOTIFY{name, state} for each of our names to host,
// found through its rpcbind; each address of the host is tried in turn. The
// first name's reply counts: the others are courtesy (peers that registered
// us by our short name), sent but not waited on for long.
func (p *peerNotifier) notify(ctx context.Context, host string, state int32) error {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	addrs, err := p.resolve(ctx, host)
	if err != nil {
		return err
	}
	var errs []error
	for _, a := range addrs {
		err := p.notifyAddr(ctx, a, state)
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", a, err))
		if ctx.Err() != nil {
			break
		}
	}
	return errors.Join(errs...)
}

func (p *peerNotifier) resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a.Unmap()}, nil
	}
	r := p.resolver
	if r == nil {
		r = net.DefaultResolver
	}
	as, err := r.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	for i := range as {
		as[i] = as[i].Unmap()
	}
	return as, nil
}

func (p *peerNotifier) notifyAddr(ctx context.Context, a netip.Addr, state int32) error {
	port, err := p.mux.getPort(ctx, netip.AddrPortFrom(a, p.rpcbPort), nsm.Program, nsm.Version)
	if err != nil {
		return fmt.Errorf("rpcbind: %w", err)
	}
	to := netip.AddrPortFrom(a, port)
	var first error
	var wg sync.WaitGroup
	for i, name := range p.names {
		sc := nsm.StatChange{MonName: name, State: state}
		if i == 0 {
			_, first = p.mux.call(ctx, to, nsm.Program, nsm.Version, nsm.ProcNotify, func(e *xdr.Encoder) { sc.Encode(e) })
			if first != nil {
				return fmt.Errorf("SM_NOTIFY: %w", first)
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			p.mux.call(cctx, to, nsm.Program, nsm.Version, nsm.ProcNotify, func(e *xdr.Encoder) { sc.Encode(e) })
		}()
	}
	wg.Wait()
	return nil
}
