package send

import (
	"net"
	"testing"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/hoststat/hoststat/telemetry/sample"
	"github.com/hoststat/hoststat/telemetry/wire"
)

// The filter of the multicast listener passes update requests only, so
// other nodes' status never wakes an agent. Checked on a unicast socket:
// the filter is the same.
func TestRequestFilter(t *testing.T) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := ipv4.NewPacketConn(c).SetBPF(requestFilter); err != nil {
		t.Fatal(err)
	}
	out, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	enc := wire.NewEncoder(nil)
	status, err := enc.AppendStatus(nil, 1, 1, &sample.Sample{CPUs: make([]sample.CPU, 2)})
	if err != nil {
		t.Fatal(err)
	}
	req := enc.AppendUpdateRequest(nil, wire.Header{Node: wire.NoNode, Seq: 1, Time: time.Now()})
	for _, b := range [][]byte{status[0], []byte("HSTS\x01\x02"), {}, req} {
		if _, err := out.WriteTo(b, c.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	n, _, err := c.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	if k, ok := wire.PeekKind(buf[:n]); !ok || k != wire.KindUpdateRequest || n != len(req) {
		t.Fatalf("first datagram through the filter: %d bytes, kind %v", n, k)
	}
	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, _, err := c.ReadFrom(buf); err == nil {
		t.Fatalf("a second datagram of %d bytes passed", n)
	}
}

// Sends go out by the raw path, to IPv4 and IPv6 masters, and nothing is
// sent once the transport is closed.
func TestUDPWriteTo(t *testing.T) {
	u, err := ListenUDP(UDPConfig{IPv6: true})
	if err != nil {
		t.Skip("no IPv6:", err)
	}
	for _, network := range []string{"udp4", "udp6"} {
		sink, err := net.ListenUDP(network, &net.UDPAddr{IP: map[string]net.IP{"udp4": net.IPv4(127, 0, 0, 1), "udp6": net.IPv6loopback}[network]})
		if err != nil {
			t.Fatal(err)
		}
		defer sink.Close()
		if err := u.WriteTo([]byte("sample"), sink.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
			t.Fatalf("%s: %v", network, err)
		}
		sink.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 64)
		n, _, err := sink.ReadFrom(buf)
		if err != nil || string(buf[:n]) != "sample" {
			t.Fatalf("%s: got %q, %v", network, buf[:n], err)
		}
	}
	u.Close()
	if err := u.WriteTo([]byte("x"), u.LocalAddr()); err == nil {
		t.Error("WriteTo after Close: no error")
	}
}
