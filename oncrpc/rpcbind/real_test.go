package rpcbind

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/netlab"
	"github.com/hoststat/hoststat/oncrpc"
	"github.com/hoststat/hoststat/oncrpc/xdr"
)

const labProg = 0x20000123 // in the range RFC 5531 leaves to local use

// TestRealRpcbind registers an in-process server with Debian's rpcbind on a
// lab host and checks what rpcinfo, Lookup and a call through the looked-up
// address see, from the host itself and from another host.
func TestRealRpcbind(t *testing.T) {
	netlab.RequireRoot(t)
	netlab.RequireCommand(t, "rpcbind")
	netlab.RequireCommand(t, "rpcinfo")
	lab := netlab.New(t)
	a, b := lab.AddHost("a"), lab.AddHost("b")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a.Start("rpcbind", "-f", "-w")
	netlab.WaitFor(t, 10*time.Second, "rpcbind on a", func() error { _, err := a.Run(ctx, "rpcinfo", "-p"); return err })

	// The server's sockets live in a's network namespace; ":0" on a
	// dual-stack socket serves IPv4 and IPv6 on one port.
	srv := &oncrpc.Server{Logger: slog.New(slog.DiscardHandler)}
	srv.Handle(labProg, 1, 1, func(_ context.Context, c *oncrpc.Call, res *xdr.Encoder) error {
		res.String(c.Transport)
		return nil
	})
	var pc net.PacketConn
	var l net.Listener
	if err := a.Do(func() (err error) {
		if pc, err = net.ListenPacket("udp", ":0"); err != nil {
			return err
		}
		l, err = net.Listen("tcp", ":0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	go srv.ServeUDP(pc)
	go srv.ServeTCP(l)
	defer srv.Shutdown(ctx)
	udpPort, tcpPort := pc.LocalAddr().(*net.UDPAddr).Port, l.Addr().(*net.TCPAddr).Port

	// Our process is not in a's mount namespace; its /run shows through
	// /proc/PID/root. Unix sockets are found by path, whatever the netns.
	sock := fmt.Sprintf("/proc/%d/root%s", a.HolderPid(), LocalSocket)
	local, err := Dial(ctx, "unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()

	// A stale registration from an earlier run is replaced, not kept.
	if err := local.Register(ctx, labProg, 1, 9, 9, true); err != nil {
		t.Fatalf("Register (stale): %v", err)
	}
	if err := local.Register(ctx, labProg, 1, udpPort, tcpPort, true); err != nil {
		t.Fatalf("Register: %v", err)
	}
	out, err := a.Run(ctx, "rpcinfo", "-p")
	if err != nil {
		t.Fatal(err)
	}
	for proto, port := range map[string]int{"udp": udpPort, "tcp": tcpPort} {
		re := regexp.MustCompile(fmt.Sprintf(`(?m)^\s*%d\s+1\s+%s\s+%d\b`, labProg, proto, port))
		if !re.MatchString(out) {
			t.Errorf("rpcinfo -p does not list %d v1 %s port %d:\n%s", labProg, proto, port, out)
		}
	}
	if regexp.MustCompile(fmt.Sprintf(`(?m)^\s*%d\s+1\s+\w+\s+9\b`, labProg)).MatchString(out) {
		t.Errorf("stale registration on port 9 still listed:\n%s", out)
	}
	for _, tc := range [][]string{{"udp", "127.0.0.1"}, {"tcp", "127.0.0.1"}, {"udp6", "::1"}, {"tcp6", "::1"}} {
		out, err := a.Run(ctx, "rpcinfo", "-T", tc[0], tc[1], fmt.Sprint(labProg), "1")
		if err != nil || !strings.Contains(out, "ready and waiting") {
			t.Errorf("rpcinfo -T %s %s: %v\n%s", tc[0], tc[1], err, out)
		}
	}
	dump, err := local.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	netids := map[string]string{}
	for _, d := range dump {
		if d.Program == labProg {
			netids[d.Netid] = d.Addr
		}
	}
	if len(netids) != 4 || netids["udp6"] != EncodeUniversalAddr(netip.AddrPortFrom(netip.IPv6Unspecified(), uint16(udpPort))) {
		t.Errorf("DUMP lists %v", netids)
	}

	// Lookup from a itself and from b, over IPv4 and IPv6, then a call to
	// the address found.
	lookups := []struct {
		from *netlab.Host
		host netip.Addr
	}{{a, netip.MustParseAddr("127.0.0.1")}, {a, netip.IPv6Loopback()}, {b, a.Addr}, {b, a.Addr6}}
	for _, lk := range lookups {
		for transport, port := range map[string]int{"udp": udpPort, "tcp": tcpPort} {
			var ap netip.AddrPort
			var said string
			err := lk.from.Do(func() error {
				var err error
				if ap, err = Lookup(ctx, lk.host, labProg, 1, transport); err != nil {
					return err
				}
				c, err := oncrpc.Dial(ctx, transport, ap.String())
				if err != nil {
					return err
				}
				defer c.Close()
				return c.Call(ctx, labProg, 1, 1, nil, func(d *xdr.Decoder) error { said = d.String("t", 8); return d.Err() })
			})
			if err != nil || ap != netip.AddrPortFrom(lk.host, uint16(port)) || said != transport {
				t.Errorf("from %s, Lookup(%s, %s) = %v, call said %q: %v", lk.from.Name, lk.host, transport, ap, said, err)
			}
		}
	}

	// What Debian's rpcbind lets register: another host is denied with
	// AUTH_TOOWEAK; loopback from a port of 1024 or more may register (as
	// owner "unknown") but not remove a root-owned registration.
	err = b.Do(func() error {
		c, err := Dial(ctx, "udp", netip.AddrPortFrom(a.Addr, Port).String(), oncrpc.WithPrivilegedPort())
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Set(ctx, Binding{Program: labProg + 1, Version: 1, Netid: "udp", Addr: "0.0.0.0.3.241"})
		if !errors.Is(err, oncrpc.AuthError(oncrpc.AuthTooWeak)) {
			return fmt.Errorf("remote SET: %v, want AUTH_TOOWEAK", err)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	err = a.Do(func() error {
		c, err := Dial(ctx, "udp", "127.0.0.1:111")
		if err != nil {
			return err
		}
		defer c.Close()
		if ok, err := c.Unset(ctx, Binding{Program: labProg, Version: 1}); ok || err != nil {
			return fmt.Errorf("UNSET from an unprivileged loopback port: %v, %v", ok, err)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}

	if err := local.Unregister(ctx, labProg, 1); err != nil {
		t.Fatalf("Unregister: %v", err)
	}
	out, err = a.Run(ctx, "rpcinfo", "-p")
	if err != nil || strings.Contains(out, fmt.Sprint(labProg)) {
		t.Errorf("after Unregister, rpcinfo -p (%v):\n%s", err, out)
	}
	err = b.Do(func() error {
		_, err := Lookup(ctx, a.Addr, labProg, 1, "udp")
		return err
	})
	if !errors.Is(err, ErrNotRegistered) {
		t.Errorf("Lookup after Unregister: %v", err)
	}
}
