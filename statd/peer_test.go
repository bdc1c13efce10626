package statd

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/hoststat/hoststat/oncrpc"
	"github.com/hoststat/hoststat/oncrpc/xdr"
)

// A host on the network that learnt our xids cannot answer a call we made
// to loopback (the local rpcbind lookup that picks a callback's port): its
// forged reply, arriving first, is ignored and the loopback server's
// genuine one is taken.
func TestLoopbackCallIgnoresRemoteReply(t *testing.T) {
	remote := nonLoopbackAddr(t)
	m, err := newDatagramMux(0)
	if err != nil {
		t.Fatal(err)
	}
	defer m.close()
	muxPort := m.v4.LocalAddr().(*net.UDPAddr).Port

	server, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	forger, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(remote, 0)))
	if err != nil {
		t.Fatal(err)
	}
	defer forger.Close()

	reply := func(xid, value uint32) []byte {
		res := xdr.NewEncoder(nil)
		res.Uint32(value)
		e := xdr.NewEncoder(nil)
		oncrpc.AppendReply(e, xid, nil, res.Bytes())
		return e.Bytes()
	}
	go func() {
		buf := make([]byte, 1500)
		n, from, err := server.ReadFromUDPAddrPort(buf)
		if err != nil || n < 4 {
			return
		}
		xid := binary.BigEndian.Uint32(buf)
		// The forged reply goes first, to the port the mux sends from.
		forger.WriteToUDPAddrPort(reply(xid, 1), netip.AddrPortFrom(remote, uint16(muxPort)))
		server.WriteToUDPAddrPort(reply(xid, 2), from)
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got uint32
	to := server.LocalAddr().(*net.UDPAddr).AddrPort()
	err = m.call(ctx, to, 100000, 2, 3, nil, func(d *xdr.Decoder) error { got = d.Uint32(); return d.Err() })
	if err != nil {
		t.Fatal(err)
	}
	if got != 2 {
		t.Fatalf("took the reply with value %d; want the loopback server's 2, not the remote forgery's 1", got)
	}
}
