package statd

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/hoststat/hoststat/nsm"
	"github.com/hoststat/hoststat/oncrpc"
	"github.com/hoststat/hoststat/oncrpc/rpcbind"
	"github.com/hoststat/hoststat/oncrpc/xdr"
)

// lookupPort asks the rpcbind at rpcb for the port of prog/vers on protocol
// proto (rpcbind.ProtoUDP or ProtoTCP): portmapper v2 GETPORT over IPv4,
// what every rpcbind and portmap answers and what sm-notify asks; rpcbind
// GETADDR over IPv6, which portmapper v2 cannot speak (UDP only there).
func lookupPort(ctx context.Context, m *oncrpc.Multicaller, rpcb netip.AddrPort, prog, vers, proto uint32) (uint16, error) {
	rpcb = netip.AddrPortFrom(rpcb.Addr().Unmap(), rpcb.Port())
	if rpcb.Addr().Is4() {
		return rpcbind.NewClient(m.To(rpcb), "udp").GetPort(ctx, rpcbind.Mapping{Program: prog, Version: vers, Protocol: proto})
	}
	if proto != rpcbind.ProtoUDP {
		return 0, fmt.Errorf("looking up protocol %d over IPv6: only UDP is supported", proto)
	}
	ap, err := rpcbind.NewClient(m.To(rpcb), "udp6").Lookup(ctx, rpcb.Addr(), prog, vers)
	return ap.Port(), err
}

// peerNotifier sends our SM_NOTIFY to peers.
type peerNotifier struct {
	mux      *oncrpc.Multicaller
	resolver Resolver
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
	as, err := p.resolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	for i := range as {
		as[i] = as[i].Unmap()
	}
	return as, nil
}

func (p *peerNotifier) notifyAddr(ctx context.Context, a netip.Addr, state int32) error {
	port, err := lookupPort(ctx, p.mux, netip.AddrPortFrom(a, p.rpcbPort), nsm.Program, nsm.Version, rpcbind.ProtoUDP)
	if err != nil {
		return fmt.Errorf("rpcbind: %w", err)
	}
	to := netip.AddrPortFrom(a, port)
	var first error
	var wg sync.WaitGroup
	for i, name := range p.names {
		sc := nsm.StatChange{MonName: name, State: state}
		if i == 0 {
			first = p.mux.Call(ctx, to, nsm.Program, nsm.Version, nsm.ProcNotify, func(e *xdr.Encoder) { sc.Encode(e) }, nil)
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
			p.mux.Call(cctx, to, nsm.Program, nsm.Version, nsm.ProcNotify, func(e *xdr.Encoder) { sc.Encode(e) }, nil)
		}()
	}
	wg.Wait()
	return nil
}
