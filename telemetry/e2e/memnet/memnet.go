// Package memnet is an in-memory datagram network with multicast groups,
// for running sendstats' and recvstats' protocol code in tests without
// sockets. Like UDP it drops rather than blocks when a receiver is behind.
package memnet

import (
	"errors"
	"net/netip"
	"os"
	"sync"
	"time"
)

// ErrClosed is returned by an Endpoint used after Close.
var ErrClosed = errors.New("memnet: endpoint closed")

// QueueLen is how many datagrams an endpoint holds before dropping.
const QueueLen = 4096

// Datagram is one delivered packet.
type Datagram struct {
	Data      []byte
	From      netip.AddrPort
	Multicast bool
}

// Network connects endpoints by address.
type Network struct {
	mu       sync.Mutex
	eps      map[netip.AddrPort]*Endpoint
	nextPort uint16
	// Filter, when set, is asked about every delivery; false drops it.
	Filter func(from, to netip.AddrPort, b []byte) bool
}

// New returns an empty network.
func New() *Network {
	return &Network{eps: map[netip.AddrPort]*Endpoint{}, nextPort: 40000}
}

// Listen opens an endpoint at addr; port 0 picks a free port.
func (n *Network) Listen(addr netip.AddrPort) (*Endpoint, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if addr.Port() == 0 {
		for {
			n.nextPort++
			a := netip.AddrPortFrom(addr.Addr(), n.nextPort)
			if _, used := n.eps[a]; !used {
				addr = a
				break
			}
		}
	}
	if _, used := n.eps[addr]; used {
		return nil, errors.New("memnet: address in use: " + addr.String())
	}
	e := &Endpoint{net: n, addr: addr, q: make(chan Datagram, QueueLen), closed: make(chan struct{}), groups: map[netip.Addr]bool{}}
	n.eps[addr] = e
	return e, nil
}

// Endpoint is one bound datagram socket.
type Endpoint struct {
	net      *Network
	addr     netip.AddrPort
	q        chan Datagram
	closed   chan struct{}
	once     sync.Once
	mu       sync.Mutex
	groups   map[netip.Addr]bool
	deadline time.Time
}

// Addr is the endpoint's address.
func (e *Endpoint) Addr() netip.AddrPort { return e.addr }

// Join makes the endpoint receive datagrams sent to group on its port.
func (e *Endpoint) Join(group netip.Addr) {
	e.net.mu.Lock()
	defer e.net.mu.Unlock()
	e.groups[group] = true
}

// WriteTo delivers b to the endpoint at to, or to every member of the
// group when to is a multicast address (the sender too, as with
// IP_MULTICAST_LOOP, if it joined).
func (e *Endpoint) WriteTo(b []byte, to netip.AddrPort) error {
	select {
	case <-e.closed:
		return ErrClosed
	default:
	}
	n := e.net
	n.mu.Lock()
	var dst []*Endpoint
	if to.Addr().IsMulticast() {
		for a, ep := range n.eps {
			if a.Port() == to.Port() && ep.groups[to.Addr()] {
				dst = append(dst, ep)
			}
		}
	} else if ep, ok := n.eps[to]; ok {
		dst = append(dst, ep)
	} else if ep, ok := n.eps[netip.AddrPortFrom(netip.IPv4Unspecified(), to.Port())]; ok {
		dst = append(dst, ep) // a wildcard listener
	}
	filter := n.Filter
	n.mu.Unlock()
	for _, ep := range dst {
		if filter != nil && !filter(e.addr, ep.addr, b) {
			continue
		}
		d := Datagram{Data: append([]byte(nil), b...), From: e.addr, Multicast: to.Addr().IsMulticast()}
		select {
		case ep.q <- d:
		default: // full: dropped, as UDP would
		}
	}
	return nil
}

// SendAs delivers b to the endpoint at to as if sent from from, an
// address no endpoint need have (a spoofed source), waiting while that
// endpoint's queue is full so that nothing is lost. It reports whether
// there was an endpoint at to.
func (n *Network) SendAs(from, to netip.AddrPort, b []byte) bool {
	n.mu.Lock()
	ep, ok := n.eps[to]
	n.mu.Unlock()
	if !ok {
		return false
	}
	select {
	case ep.q <- Datagram{Data: append([]byte(nil), b...), From: from}:
		return true
	case <-ep.closed:
		return false
	}
}

// SetReadDeadline bounds the next reads; zero means none.
func (e *Endpoint) SetReadDeadline(t time.Time) error {
	e.mu.Lock()
	e.deadline = t
	e.mu.Unlock()
	return nil
}

type timeoutError struct{}

func (timeoutError) Error() string { return "memnet: i/o timeout" }
func (timeoutError) Timeout() bool { return true }
func (timeoutError) Unwrap() error { return os.ErrDeadlineExceeded }

// Read blocks for the next datagram, until the deadline or Close.
func (e *Endpoint) Read() (Datagram, error) {
	select {
	case d := <-e.q:
		return d, nil
	case <-e.closed:
		return Datagram{}, ErrClosed
	default:
	}
	e.mu.Lock()
	dl := e.deadline
	e.mu.Unlock()
	var timeout <-chan time.Time
	if !dl.IsZero() {
		d := time.Until(dl)
		if d <= 0 {
			return Datagram{}, timeoutError{}
		}
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case d := <-e.q:
		return d, nil
	case <-e.closed:
		return Datagram{}, ErrClosed
	case <-timeout:
		return Datagram{}, timeoutError{}
	}
}

// TryRead returns a queued datagram without blocking.
func (e *Endpoint) TryRead() (Datagram, bool) {
	select {
	case d := <-e.q:
		return d, true
	default:
		return Datagram{}, false
	}
}

// Close unbinds the endpoint and wakes a blocked Read.
func (e *Endpoint) Close() error {
	e.once.Do(func() {
		close(e.closed)
		e.net.mu.Lock()
		delete(e.net.eps, e.addr)
		e.net.mu.Unlock()
	})
	return nil
}
