package oncrpc

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/hoststat/hoststat/oncrpc/xdr"
)

func uint32Reply(xid, value uint32) []byte {
	res := xdr.NewEncoder(nil)
	res.Uint32(value)
	e := xdr.NewEncoder(nil)
	AppendReply(e, xid, nil, res.Bytes())
	return e.Bytes()
}

func listenUDP(t *testing.T, addr string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// A reply with the right xid from anywhere but the address and port called
// is ignored: a forger that learnt the xid, answering first, loses to the
// server called.
func TestMulticallerTakesRepliesOnlyFromServerCalled(t *testing.T) {
	m, err := ListenMulticaller(0)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	mport := m.v4.LocalAddr().(*net.UDPAddr).Port
	server := listenUDP(t, "127.0.0.1:0")
	forgers := []*net.UDPConn{listenUDP(t, "127.0.0.2:0"), listenUDP(t, "127.0.0.1:0")} // other address; same address, other port
	go func() {
		buf := make([]byte, 1500)
		n, from, err := server.ReadFromUDPAddrPort(buf)
		if err != nil || n < 4 {
			return
		}
		xid := binary.BigEndian.Uint32(buf)
		for _, f := range forgers {
			f.WriteToUDPAddrPort(uint32Reply(xid, 1), netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(mport)))
		}
		time.Sleep(50 * time.Millisecond)
		server.WriteToUDPAddrPort(uint32Reply(xid, 2), from)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got uint32
	err = m.Call(ctx, server.LocalAddr().(*net.UDPAddr).AddrPort(), 100000, 2, 3, nil, func(d *xdr.Decoder) error { got = d.Uint32(); return d.Err() })
	if err != nil {
		t.Fatal(err)
	}
	if got != 2 {
		t.Fatalf("took the forged reply (%d), want the server's (2)", got)
	}
}

// Outgoing xids are unpredictable: consecutive calls do not count up (a
// counter, even from a random start, lets anyone who saw one call forge
// the reply to the next).
func TestMulticallerXIDsUnpredictable(t *testing.T) {
	m, err := ListenMulticaller(0)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	server := listenUDP(t, "127.0.0.1:0")
	xids := make(chan uint32, 64)
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := server.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if n >= 4 {
				x := binary.BigEndian.Uint32(buf)
				xids <- x
				server.WriteToUDPAddrPort(uint32Reply(x, 0), from)
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []uint32
	for range 32 {
		if err := m.Call(ctx, server.LocalAddr().(*net.UDPAddr).AddrPort(), 1, 1, 1, nil, nil); err != nil {
			t.Fatal(err)
		}
		got = append(got, <-xids)
	}
	for i := 1; i < len(got); i++ {
		if d := got[i] - got[i-1]; d < 16 || d > 1<<32-16 {
			t.Fatalf("xid %d follows %d: predictable (%v)", got[i], got[i-1], got)
		}
	}
}
