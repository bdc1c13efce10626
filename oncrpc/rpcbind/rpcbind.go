// Package rpcbind is a client of the ONC RPC port mapper: portmapper
// version 2 and rpcbind versions 3 and 4 (RFC 1833), program 100000.
//
// Services register with the local rpcbind (Register, Unregister) and
// clients find a peer's service through the peer's rpcbind (Lookup).
//
// Registering needs a local caller. Debian's rpcbind (1.2.6, as measured by
// this package's tests) accepts SET and UNSET through its unix socket
// /run/rpcbind.sock, recording the caller's uid from the socket ("superuser"
// for root), and from 127.0.0.1 or ::1 over UDP or TCP, recording
// "superuser" for a port below 1024 and "unknown" otherwise; only the owner
// or the superuser may UNSET a registration, so a daemon replacing its own
// stale registrations must come as root. Other hosts are denied with
// AUTH_ERROR AUTH_TOOWEAK. DialLocal therefore uses the unix socket, or else
// 127.0.0.1:111 from a privileged port, which also suits the old portmap.
//
// rpcbind answers GETADDR for the transport the question arrived on, not
// the netid it names, so Lookup asks over the transport it looks up.
package rpcbind

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/hoststat/hoststat/oncrpc"
	"github.com/hoststat/hoststat/oncrpc/xdr"
)

// Program and port of the port mapper.
const (
	Program = 100000
	Port    = 111
)

// LocalSocket is where the Linux rpcbind listens for local callers.
const LocalSocket = "/run/rpcbind.sock"

// Procedures; rpcbind versions 3 and 4 share the first five numbers with
// the portmapper.
const (
	procNull    = 0
	procSet     = 1
	procUnset   = 2
	procGetAddr = 3 // GETPORT in version 2
	procDump    = 4
)

// Protocol numbers in a version 2 Mapping.
const (
	ProtoTCP = 6
	ProtoUDP = 17
)

// maxString caps netids, addresses and owners read from a server.
const maxString = 1024

// ErrNotRegistered means the server has no address for the program and
// version asked for.
var ErrNotRegistered = errors.New("rpcbind: program not registered")

// Mapping is a portmapper (version 2) registration: IPv4 only.
type Mapping struct {
	Program, Version uint32
	Protocol         uint32 // ProtoTCP or ProtoUDP
	Port             uint32
}

// Binding is an rpcbind (version 3 and 4) registration.
type Binding struct {
	Program, Version uint32
	Netid            string // "udp", "tcp", "udp6", "tcp6", "local"...
	Addr             string // universal address
	Owner            string // the registrant's uid as text; the server decides
}

func (m Mapping) encode(e *xdr.Encoder) {
	e.Uint32(m.Program)
	e.Uint32(m.Version)
	e.Uint32(m.Protocol)
	e.Uint32(m.Port)
}

func decodeMapping(d *xdr.Decoder) Mapping {
	return Mapping{Program: d.Uint32(), Version: d.Uint32(), Protocol: d.Uint32(), Port: d.Uint32()}
}

func (b Binding) encode(e *xdr.Encoder) {
	e.Uint32(b.Program)
	e.Uint32(b.Version)
	e.String(b.Netid)
	e.String(b.Addr)
	e.String(b.Owner)
}

func decodeBinding(d *xdr.Decoder) Binding {
	return Binding{Program: d.Uint32(), Version: d.Uint32(), Netid: d.String("r_netid", maxString),
		Addr: d.String("r_addr", maxString), Owner: d.String("r_owner", maxString)}
}

// DecodeDump reads the result of a version 3 or 4 DUMP: an XDR optional
// list of bindings. Each entry takes at least 20 bytes of input, so the list
// cannot outgrow the message.
func DecodeDump(d *xdr.Decoder) ([]Binding, error) {
	var out []Binding
	for d.Bool() {
		out = append(out, decodeBinding(d))
	}
	return out, d.Err()
}

// DecodePortDump reads the result of a version 2 DUMP.
func DecodePortDump(d *xdr.Decoder) ([]Mapping, error) {
	var out []Mapping
	for d.Bool() {
		out = append(out, decodeMapping(d))
	}
	return out, d.Err()
}

// Client talks to one rpcbind. It uses version 4 and falls back to version 3
// when the server lacks 4.
type Client struct {
	rpc     oncrpc.Caller
	owned   *oncrpc.Client // closed by Close; nil for NewClient
	network string

	mu   sync.Mutex
	vers uint32 // rpcbind version that answered; 0 before the first call
}

// Dial returns a client of the rpcbind at address on network ("udp", "tcp",
// "unix"...), e.g. Dial(ctx, "udp", "192.0.2.7:111").
func Dial(ctx context.Context, network, address string, opts ...oncrpc.DialOption) (*Client, error) {
	c, err := oncrpc.Dial(ctx, network, address, opts...)
	if err != nil {
		return nil, err
	}
	return &Client{rpc: c, owned: c, network: network}, nil
}

// NewClient returns a client of the rpcbind that rpc calls, over network
// ("udp", "udp6", "tcp"...: the transport Lookup asks about). Close leaves
// rpc open.
func NewClient(rpc oncrpc.Caller, network string) *Client {
	return &Client{rpc: rpc, network: network}
}

// DialLocal returns a client of the local rpcbind fit for registering:
// through LocalSocket, or else from a privileged port to 127.0.0.1:111.
func DialLocal(ctx context.Context, opts ...oncrpc.DialOption) (*Client, error) {
	c, err := Dial(ctx, "unix", LocalSocket, opts...)
	if err == nil {
		return c, nil
	}
	c, err2 := Dial(ctx, "udp", netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), Port).String(), append(opts, oncrpc.WithPrivilegedPort())...)
	if err2 != nil {
		return nil, fmt.Errorf("rpcbind: no local rpcbind: %v; %w", err, err2)
	}
	return c, nil
}

// Close closes the socket Dial opened.
func (c *Client) Close() error {
	if c.owned == nil {
		return nil
	}
	return c.owned.Close()
}

// call makes a version 4 call, or version 3 when the server lacks 4.
func (c *Client) call(ctx context.Context, proc uint32, args func(*xdr.Encoder), result func(*xdr.Decoder) error) error {
	c.mu.Lock()
	vers := c.vers
	c.mu.Unlock()
	if vers != 0 {
		return c.rpc.Call(ctx, Program, vers, proc, args, result)
	}
	var err error
	for _, v := range []uint32{4, 3} {
		err = c.rpc.Call(ctx, Program, v, proc, args, result)
		if errors.Is(err, oncrpc.ErrProgMismatch) {
			continue
		}
		if err == nil {
			c.mu.Lock()
			c.vers = v
			c.mu.Unlock()
		}
		return err
	}
	return err
}

func decodeBool(v *bool) func(*xdr.Decoder) error {
	return func(d *xdr.Decoder) error { *v = d.Bool(); return d.Err() }
}

// Set registers b and reports whether the server took it (false when
// another owner holds that program, version and netid).
func (c *Client) Set(ctx context.Context, b Binding) (bool, error) {
	var ok bool
	err := c.call(ctx, procSet, b.encode, decodeBool(&ok))
	return ok, err
}

// Unset removes the registrations of b's program and version on b's netid,
// or on every netid when b.Netid is empty.
func (c *Client) Unset(ctx context.Context, b Binding) (bool, error) {
	var ok bool
	err := c.call(ctx, procUnset, b.encode, decodeBool(&ok))
	return ok, err
}

// GetAddr returns the universal address of b's program and version on b's
// netid, or ErrNotRegistered.
func (c *Client) GetAddr(ctx context.Context, b Binding) (string, error) {
	var addr string
	err := c.call(ctx, procGetAddr, b.encode, func(d *xdr.Decoder) error {
		addr = d.String("universal address", maxString)
		return d.Err()
	})
	if err == nil && addr == "" {
		err = ErrNotRegistered
	}
	return addr, err
}

// Dump lists every registration.
func (c *Client) Dump(ctx context.Context) ([]Binding, error) {
	var out []Binding
	err := c.call(ctx, procDump, nil, func(d *xdr.Decoder) (err error) {
		out, err = DecodeDump(d)
		return err
	})
	return out, err
}

// SetPort registers m with portmapper version 2.
func (c *Client) SetPort(ctx context.Context, m Mapping) (bool, error) {
	var ok bool
	err := c.rpc.Call(ctx, Program, 2, procSet, m.encode, decodeBool(&ok))
	return ok, err
}

// UnsetPort removes m's program and version (both protocols; the port and
// protocol are ignored) with portmapper version 2.
func (c *Client) UnsetPort(ctx context.Context, m Mapping) (bool, error) {
	var ok bool
	err := c.rpc.Call(ctx, Program, 2, procUnset, m.encode, decodeBool(&ok))
	return ok, err
}

// GetPort returns the port of m's program, version and protocol with
// portmapper version 2, or ErrNotRegistered.
func (c *Client) GetPort(ctx context.Context, m Mapping) (uint16, error) {
	var port uint32
	err := c.rpc.Call(ctx, Program, 2, procGetAddr, m.encode, func(d *xdr.Decoder) error {
		port = d.Uint32()
		return d.Err()
	})
	switch {
	case err != nil:
		return 0, err
	case port == 0:
		return 0, ErrNotRegistered
	case port > 65535:
		return 0, fmt.Errorf("rpcbind: GETPORT answered port %d", port)
	}
	return uint16(port), nil
}

// DumpPorts lists every registration with portmapper version 2.
func (c *Client) DumpPorts(ctx context.Context) ([]Mapping, error) {
	var out []Mapping
	err := c.rpc.Call(ctx, Program, 2, procDump, nil, func(d *xdr.Decoder) (err error) {
		out, err = DecodePortDump(d)
		return err
	})
	return out, err
}

// Netid names the transport ("udp" or "tcp") for IPv4 or, when ipv6, IPv6.
func Netid(transport string, ipv6 bool) string {
	if ipv6 {
		return transport + "6"
	}
	return transport
}

// lacksVersions3And4 tells when to fall back to portmapper version 2.
func lacksVersions3And4(err error) bool {
	return errors.Is(err, oncrpc.ErrProgMismatch) || errors.Is(err, oncrpc.ErrProcUnavail)
}

// Register registers prog and vers at udpPort and tcpPort (0: not on that
// transport) on every local address, on IPv6 as well when ipv6, replacing
// whatever was registered for them before. It uses rpcbind version 4 (or 3)
// and falls back to portmapper version 2, which knows IPv4 only.
func (c *Client) Register(ctx context.Context, prog, vers uint32, udpPort, tcpPort int, ipv6 bool) error {
	owner := strconv.Itoa(os.Geteuid())
	if _, err := c.Unset(ctx, Binding{Program: prog, Version: vers, Owner: owner}); err != nil {
		if lacksVersions3And4(err) {
			return c.registerPorts(ctx, prog, vers, udpPort, tcpPort)
		}
		return err
	}
	for _, tr := range []struct {
		name string
		port int
	}{{"udp", udpPort}, {"tcp", tcpPort}} {
		if tr.port == 0 {
			continue
		}
		families := []bool{false}
		if ipv6 {
			families = append(families, true)
		}
		for _, six := range families {
			any := netip.IPv4Unspecified()
			if six {
				any = netip.IPv6Unspecified()
			}
			b := Binding{Program: prog, Version: vers, Netid: Netid(tr.name, six),
				Addr: EncodeUniversalAddr(netip.AddrPortFrom(any, uint16(tr.port))), Owner: owner}
			ok, err := c.Set(ctx, b)
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("rpcbind: server refused to register program %d version %d on %s at %s", prog, vers, b.Netid, b.Addr)
			}
		}
	}
	return nil
}

func (c *Client) registerPorts(ctx context.Context, prog, vers uint32, udpPort, tcpPort int) error {
	if _, err := c.UnsetPort(ctx, Mapping{Program: prog, Version: vers}); err != nil {
		return err
	}
	for _, m := range []Mapping{
		{Program: prog, Version: vers, Protocol: ProtoUDP, Port: uint32(udpPort)},
		{Program: prog, Version: vers, Protocol: ProtoTCP, Port: uint32(tcpPort)},
	} {
		if m.Port == 0 {
			continue
		}
		ok, err := c.SetPort(ctx, m)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("rpcbind: portmapper refused to register program %d version %d protocol %d port %d", prog, vers, m.Protocol, m.Port)
		}
	}
	return nil
}

// Unregister removes every registration of prog and vers.
func (c *Client) Unregister(ctx context.Context, prog, vers uint32) error {
	_, err := c.Unset(ctx, Binding{Program: prog, Version: vers, Owner: strconv.Itoa(os.Geteuid())})
	if lacksVersions3And4(err) {
		_, err = c.UnsetPort(ctx, Mapping{Program: prog, Version: vers})
	}
	return err
}

// Lookup asks this client's rpcbind, running on host, where prog and vers
// are served over the transport this client uses ("udp" or "tcp"): rpcbind
// answers GETADDR for the transport the question came over, whatever netid
// it names. It uses GETADDR (version 4 or 3), or else GETPORT (version 2,
// IPv4 only). An unspecified address in the answer means host.
func (c *Client) Lookup(ctx context.Context, host netip.Addr, prog, vers uint32) (netip.AddrPort, error) {
	transport := strings.TrimRight(c.network, "46")
	if transport != "udp" && transport != "tcp" {
		return netip.AddrPort{}, fmt.Errorf("rpcbind: cannot look up services over %q", c.network)
	}
	host = host.Unmap()
	six := host.Is6()
	uaddr, err := c.GetAddr(ctx, Binding{Program: prog, Version: vers, Netid: Netid(transport, six)})
	if err == nil {
		ap, err := ParseUniversalAddr(uaddr)
		if err != nil {
			return netip.AddrPort{}, err
		}
		if ap.Addr().IsUnspecified() {
			ap = netip.AddrPortFrom(host, ap.Port())
		}
		return ap, nil
	}
	if !lacksVersions3And4(err) || six {
		return netip.AddrPort{}, err
	}
	proto := uint32(ProtoUDP)
	if transport == "tcp" {
		proto = ProtoTCP
	}
	port, err := c.GetPort(ctx, Mapping{Program: prog, Version: vers, Protocol: proto})
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(host, port), nil
}

// Register registers with the local rpcbind; see Client.Register.
func Register(ctx context.Context, prog, vers uint32, udpPort, tcpPort int, ipv6 bool) error {
	c, err := DialLocal(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Register(ctx, prog, vers, udpPort, tcpPort, ipv6)
}

// Unregister removes every registration of prog and vers from the local
// rpcbind.
func Unregister(ctx context.Context, prog, vers uint32) error {
	c, err := DialLocal(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Unregister(ctx, prog, vers)
}

// Lookup asks the rpcbind on host where prog and vers are served over
// transport ("udp" or "tcp"), asking over that transport; see Client.Lookup.
func Lookup(ctx context.Context, host netip.Addr, prog, vers uint32, transport string) (netip.AddrPort, error) {
	if transport != "udp" && transport != "tcp" {
		return netip.AddrPort{}, fmt.Errorf("rpcbind: unknown transport %q", transport)
	}
	c, err := Dial(ctx, transport, netip.AddrPortFrom(host.Unmap(), Port).String())
	if err != nil {
		return netip.AddrPort{}, err
	}
	defer c.Close()
	return c.Lookup(ctx, host, prog, vers)
}
