package rpcbind

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/hoststat/hoststat/oncrpc"
	"github.com/hoststat/hoststat/oncrpc/xdr"
)

func TestUniversalAddr(t *testing.T) {
	for _, tc := range []struct {
		ap   string
		want string
	}{
		{"192.0.2.7:111", "192.0.2.7.0.111"},
		{"0.0.0.0:1009", "0.0.0.0.3.241"},
		{"[::1]:2049", "::1.8.1"},
		{"[::]:65535", "::.255.255"},
		{"[fd00:1::5]:0", "fd00:1::5.0.0"},
		{"[::ffff:10.1.2.3]:513", "10.1.2.3.2.1"},
	} {
		ap := netip.MustParseAddrPort(tc.ap)
		got := EncodeUniversalAddr(ap)
		if got != tc.want {
			t.Errorf("Encode(%s) = %q, want %q", tc.ap, got, tc.want)
		}
		back, err := ParseUniversalAddr(got)
		if err != nil || back != netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()) {
			t.Errorf("Parse(%q) = %v, %v", got, back, err)
		}
	}
	for _, bad := range []string{"", "1.2.3.4", "1.2.3.4.5", "1.2.3.4.256.1", "1.2.3.4.1.-1", "1.2.3.4.1.+1",
		"1.2.3.4..1", "host.0.111", "1.2.3.0.111", "::1.1", "1.2.3.4.0001.1"} {
		if ap, err := ParseUniversalAddr(bad); err == nil {
			t.Errorf("Parse(%q) = %v, want an error", bad, ap)
		}
	}
}

func FuzzParseUniversalAddr(f *testing.F) {
	f.Add("192.0.2.7.0.111")
	f.Add("fe80::1%eth0.8.1")
	f.Add("::ffff:1.2.3.4.0.1")
	f.Fuzz(func(t *testing.T, s string) {
		ap, err := ParseUniversalAddr(s)
		if err != nil {
			return
		}
		if back, err := ParseUniversalAddr(EncodeUniversalAddr(ap)); err != nil || back.Port() != ap.Port() ||
			back.Addr().WithZone("") != ap.Addr().WithZone("") {
			t.Fatalf("%q → %v → %v, %v", s, ap, back, err)
		}
	})
}

func FuzzDecodeDump(f *testing.F) {
	e := xdr.NewEncoder(nil)
	for _, b := range []Binding{{100000, 4, "tcp", "0.0.0.0.0.111", "superuser"}, {100024, 1, "udp6", "::.3.241", "0"}} {
		e.Bool(true)
		b.encode(e)
	}
	e.Bool(false)
	f.Add(e.Bytes())
	f.Add([]byte{0, 0, 0, 1, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		list, err := DecodeDump(xdr.NewDecoder(b))
		if err == nil && len(list)*20 > len(b) {
			t.Fatalf("%d entries from %d bytes", len(list), len(b))
		}
		ports, err := DecodePortDump(xdr.NewDecoder(b))
		if err == nil && len(ports)*20 > len(b) {
			t.Fatalf("%d mappings from %d bytes", len(ports), len(b))
		}
	})
}

// portmap is an in-process portmapper that speaks version 2 only, as the
// old portmap daemon does: it shows the fallback from rpcbind 4 and 3.
type portmap struct {
	mu   sync.Mutex
	maps map[[3]uint32]uint32 // prog, vers, protocol → port
}

func startPortmap(t *testing.T) (*portmap, string) {
	pm := &portmap{maps: map[[3]uint32]uint32{}}
	s := &oncrpc.Server{Logger: slog.New(slog.DiscardHandler)}
	args := func(c *oncrpc.Call) (Mapping, error) {
		m := decodeMapping(c.Args)
		if c.Args.Err() != nil {
			return m, oncrpc.ErrGarbageArgs
		}
		return m, nil
	}
	s.Handle(Program, 2, procSet, func(_ context.Context, c *oncrpc.Call, res *xdr.Encoder) error {
		m, err := args(c)
		if err != nil {
			return err
		}
		pm.mu.Lock()
		defer pm.mu.Unlock()
		k := [3]uint32{m.Program, m.Version, m.Protocol}
		_, taken := pm.maps[k]
		if !taken {
			pm.maps[k] = m.Port
		}
		res.Bool(!taken)
		return nil
	})
	s.Handle(Program, 2, procUnset, func(_ context.Context, c *oncrpc.Call, res *xdr.Encoder) error {
		m, err := args(c)
		if err != nil {
			return err
		}
		pm.mu.Lock()
		defer pm.mu.Unlock()
		found := false
		for k := range pm.maps {
			if k[0] == m.Program && k[1] == m.Version {
				delete(pm.maps, k)
				found = true
			}
		}
		res.Bool(found)
		return nil
	})
	s.Handle(Program, 2, procGetAddr, func(_ context.Context, c *oncrpc.Call, res *xdr.Encoder) error {
		m, err := args(c)
		if err != nil {
			return err
		}
		pm.mu.Lock()
		defer pm.mu.Unlock()
		res.Uint32(pm.maps[[3]uint32{m.Program, m.Version, m.Protocol}])
		return nil
	})
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.ServeUDP(pc)
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	return pm, pc.LocalAddr().String()
}

func TestFallbackToPortmapperVersion2(t *testing.T) {
	pm, addr := startPortmap(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, "udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A stale registration from a previous run is replaced.
	pm.mu.Lock()
	pm.maps[[3]uint32{300001, 1, ProtoUDP}] = 999
	pm.mu.Unlock()
	if err := c.Register(ctx, 300001, 1, 1001, 1002, true); err != nil {
		t.Fatal(err)
	}
	pm.mu.Lock()
	if got := pm.maps[[3]uint32{300001, 1, ProtoUDP}]; got != 1001 {
		t.Errorf("udp port %d, want 1001", got)
	}
	if got := pm.maps[[3]uint32{300001, 1, ProtoTCP}]; got != 1002 {
		t.Errorf("tcp port %d, want 1002", got)
	}
	pm.mu.Unlock()
	host := netip.MustParseAddr("127.0.0.1")
	if ap, err := c.Lookup(ctx, host, 300001, 1); err != nil || ap != netip.AddrPortFrom(host, 1001) {
		t.Errorf("Lookup = %v, %v", ap, err)
	}
	if err := c.Unregister(ctx, 300001, 1); err != nil {
		t.Fatal(err)
	}
	pm.mu.Lock()
	if len(pm.maps) != 0 {
		t.Errorf("left after Unregister: %v", pm.maps)
	}
	pm.mu.Unlock()
	if _, err := c.Lookup(ctx, host, 300001, 1); !errors.Is(err, ErrNotRegistered) {
		t.Errorf("Lookup after Unregister: %v", err)
	}
}

// NewClient speaks rpcbind over a Caller the caller owns: its Close leaves
// that Caller working.
func TestNewClientOverCaller(t *testing.T) {
	pm, addr := startPortmap(t)
	pm.mu.Lock()
	pm.maps[[3]uint32{300002, 1, ProtoUDP}] = 2049
	pm.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rpc, err := oncrpc.Dial(ctx, "udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer rpc.Close()
	for range 2 {
		c := NewClient(rpc, "udp")
		if port, err := c.GetPort(ctx, Mapping{Program: 300002, Version: 1, Protocol: ProtoUDP}); err != nil || port != 2049 {
			t.Fatalf("GetPort = %d, %v", port, err)
		}
		c.Close()
	}
}
