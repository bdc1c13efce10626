package statd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hoststat/hoststat/nsm"
	"github.com/hoststat/hoststat/oncrpc"
	"github.com/hoststat/hoststat/oncrpc/rpcbind"
	"github.com/hoststat/hoststat/oncrpc/xdr"
)

// datagramMux sends RPC calls to many servers over one unconnected UDP
// socket per address family and matches replies to calls by transaction id,
// as sm-notify does. oncrpc.Client does not fit here: its connected socket
// takes replies only from the address called, needs a socket per server
// (20,000 to notify 10,000 hosts), and could not share -o's fixed port.
type datagramMux struct {
	v4, v6       *net.UDPConn
	first, limit time.Duration // retransmission interval and its cap

	mu      sync.Mutex
	waiting map[uint32]waiter // by xid
	xid     atomic.Uint32
	wg      sync.WaitGroup
}

// newDatagramMux binds the sockets to port (0: any). A family that cannot
// be bound (no IPv6 in this namespace) is left out.
func newDatagramMux(port int) (*datagramMux, error) {
	m := &datagramMux{first: 250 * time.Millisecond, limit: time.Second, waiting: map[uint32]waiter{}}
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
		// Matched by xid, as sm-notify does: a server on a wildcard socket
		// may answer from another of its addresses (every 127.x address
		// answers from 127.0.0.1), and xids start at random. But a call to
		// loopback (the local rpcbind's GETPORT that picks a callback's
		// port) takes its reply from loopback only: the kernel drops
		// packets from the network that claim a loopback source, so no
		// remote host that learnt our xids can answer in its place.
		m.mu.Lock()
		w, ok := m.waiting[binary.BigEndian.Uint32(buf)]
		m.mu.Unlock()
		if !ok || w.loopback && !from.Addr().Unmap().IsLoopback() {
			continue
		}
		select {
		case w.ch <- append([]byte(nil), buf[:n]...):
		default: // a duplicate (answer to a retransmission)
		}
	}
}

// call is oncrpc.Client.Call to the server at `to`: it retransmits with a
// doubling interval until a reply or the end of ctx.
func (m *datagramMux) call(ctx context.Context, to netip.AddrPort, prog, vers, proc uint32, args func(*xdr.Encoder), result func(*xdr.Decoder) error) error {
	to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())
	c := m.v4
	if to.Addr().Is6() {
		c = m.v6
	}
	if c == nil {
		return fmt.Errorf("no socket for %s", to)
	}
	xid := m.xid.Add(1)
	e := xdr.NewEncoder(make([]byte, 0, 128))
	h := oncrpc.CallHeader{XID: xid, RPCVersion: oncrpc.RPCVersion, Program: prog, Version: vers, Procedure: proc}
	h.Encode(e)
	if args != nil {
		args(e)
	}
	msg := e.Bytes()
	reply := make(chan []byte, 1)
	m.mu.Lock()
	m.waiting[xid] = waiter{ch: reply, loopback: to.Addr().IsLoopback()}
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
			return ctx.Err()
		case raw := <-reply:
			r, err := oncrpc.ParseReply(raw)
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

// waiter is a call waiting for its reply.
type waiter struct {
	ch       chan []byte
	loopback bool // called a loopback address: accept a reply from loopback only
}

// to returns the mux as a caller of one server, for rpcbind.NewClient.
func (m *datagramMux) to(server netip.AddrPort) oncrpc.Caller { return muxServer{m, server} }

type muxServer struct {
	m      *datagramMux
	server netip.AddrPort
}

func (s muxServer) Call(ctx context.Context, prog, vers, proc uint32, args func(*xdr.Encoder), result func(*xdr.Decoder) error) error {
	return s.m.call(ctx, s.server, prog, vers, proc, args, result)
}

// lookup asks the rpcbind at rpcb for the port of prog/vers on protocol
// proto (rpcbind.ProtoUDP or ProtoTCP): portmapper v2 GETPORT over IPv4,
// what every rpcbind and portmap answers and what sm-notify asks; rpcbind
// GETADDR over IPv6, which portmapper v2 cannot speak (UDP only there).
func (m *datagramMux) lookup(ctx context.Context, rpcb netip.AddrPort, prog, vers, proto uint32) (uint16, error) {
	rpcb = netip.AddrPortFrom(rpcb.Addr().Unmap(), rpcb.Port())
	if rpcb.Addr().Is4() {
		return rpcbind.NewClient(m.to(rpcb), "udp").GetPort(ctx, rpcbind.Mapping{Program: prog, Version: vers, Protocol: proto})
	}
	if proto != rpcbind.ProtoUDP {
		return 0, fmt.Errorf("looking up protocol %d over IPv6: only UDP is supported", proto)
	}
	ap, err := rpcbind.NewClient(m.to(rpcb), "udp6").Lookup(ctx, rpcb.Addr(), prog, vers)
	return ap.Port(), err
}

// peerNotifier sends our SM_NOTIFY to peers.
type peerNotifier struct {
	mux      *datagramMux
	names    []string // our names: FQDN, then the short name
	rpcbPort uint16
	timeout  time.Duration
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
	as, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	for i := range as {
		as[i] = as[i].Unmap()
	}
	return as, nil
}

func (p *peerNotifier) notifyAddr(ctx context.Context, a netip.Addr, state int32) error {
	port, err := p.mux.lookup(ctx, netip.AddrPortFrom(a, p.rpcbPort), nsm.Program, nsm.Version, rpcbind.ProtoUDP)
	if err != nil {
		return fmt.Errorf("rpcbind: %w", err)
	}
	to := netip.AddrPortFrom(a, port)
	var first error
	var wg sync.WaitGroup
	for i, name := range p.names {
		sc := nsm.StatChange{MonName: name, State: state}
		if i == 0 {
			first = p.mux.call(ctx, to, nsm.Program, nsm.Version, nsm.ProcNotify, func(e *xdr.Encoder) { sc.Encode(e) }, nil)
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
			p.mux.call(cctx, to, nsm.Program, nsm.Version, nsm.ProcNotify, func(e *xdr.Encoder) { sc.Encode(e) }, nil)
		}()
	}
	wg.Wait()
	return nil
}
