package oncrpc

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/netlab"
	"github.com/hoststat/hoststat/oncrpc/xdr"
)

// The tests here attack a server from another host of a netlab (its own
// network namespace, so its address is not loopback) and check that a
// caller on the server's loopback is served throughout.

// attackLab serves s on the wildcard UDP and TCP addresses of a lab host
// "server" (dual-stack sockets, so IPv4 callers arrive IPv4-mapped; one port
// for both) and returns that host, a host "peer" to
// attack from, and the port.
func attackLab(t *testing.T, s *Server) (ts *testServer, srv, peer *netlab.Host, port int) {
	t.Helper()
	lab := netlab.New(t)
	srv, peer = lab.AddHost("server"), lab.AddHost("peer")
	ts = newTestServer(t, s)
	// Runs before the server's Shutdown (cleanups run last first), so
	// held handlers let go.
	t.Cleanup(func() {
		select {
		case <-ts.release:
		default:
			close(ts.release)
		}
	})
	err := srv.Do(func() error {
		pc, err := net.ListenPacket("udp", "[::]:0")
		if err != nil {
			return err
		}
		port = pc.LocalAddr().(*net.UDPAddr).Port
		l, err := net.Listen("tcp", "[::]:"+strconv.Itoa(port))
		if err != nil {
			pc.Close()
			return err
		}
		go ts.ServeUDP(pc)
		go ts.ServeTCP(l)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return ts, srv, peer, port
}

// loopbackEcho makes one echo call from srv's own loopback (127.0.0.1, or
// ::1 for a network ending in 6) over network, dialing (and redialing)
// inside srv's namespace, within timeout.
func loopbackEcho(srv *netlab.Host, network string, port int, timeout time.Duration) error {
	host := "127.0.0.1"
	if strings.HasSuffix(network, "6") {
		host = "::1"
	}
	return srv.Do(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		c, err := Dial(ctx, network, net.JoinHostPort(host, strconv.Itoa(port)),
			WithRetransmit(50*time.Millisecond, 200*time.Millisecond))
		if err != nil {
			return err
		}
		defer c.Close()
		got, err := echo(ctx, c, 1, "local")
		if err == nil && got != "local" {
			err = fmt.Errorf("echo returned %q", got)
		}
		return err
	})
}

// waitStats waits until cond holds for the server's stats.
func waitStats(t *testing.T, s *Server, what string, cond func(ServerStats) bool) {
	t.Helper()
	netlab.WaitFor(t, 10*time.Second, what, func() error {
		if st := s.Stats(); !cond(st) {
			return fmt.Errorf("stats %+v", st)
		}
		return nil
	})
}

// TestRemoteConnectionsLeaveLoopbackItsSlots: 256 idle connections from one
// remote address (the attack that made loopback TCP SM_MON fail) and then,
// with the per-address limit lifted, more than the remote bound in all.
func TestRemoteConnectionsLeaveLoopbackItsSlots(t *testing.T) {
	netlab.RequireRoot(t)
	cases := []struct {
		name       string
		srv        *Server
		dial, open int
		ipv6       bool
	}{
		{"256 from one address", &Server{}, 256, DefaultMaxConnsPerRemote, false},
		{"256 from one IPv6 address", &Server{}, 256, DefaultMaxConnsPerRemote, true},
		{"over the remote bound", &Server{MaxConnsPerRemote: 1000}, 300, DefaultMaxRemoteConns, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts, srv, peer, port := attackLab(t, tc.srv)
			target, loopback := srv.Addr, "tcp4"
			if tc.ipv6 {
				target, loopback = srv.Addr6, "tcp6"
			}
			netlab.DialTCP(t, peer, netip.AddrPortFrom(target, uint16(port)), tc.dial, netip.Addr{})
			waitStats(t, ts.Server, "every connection accepted or refused", func(st ServerStats) bool {
				return st.Remote.ConnsOpen+int64(st.Remote.ConnsRefused) == int64(tc.dial)
			})
			if st := ts.Stats().Remote; st.ConnsOpen != int64(tc.open) || st.ConnsRefused != uint64(tc.dial-tc.open) {
				t.Errorf("remote: %d open, %d refused; want %d and %d", st.ConnsOpen, st.ConnsRefused, tc.open, tc.dial-tc.open)
			}
			for i := range 3 {
				if err := loopbackEcho(srv, loopback, port, 5*time.Second); err != nil {
					t.Fatalf("loopback TCP call %d with the remote connections open: %v", i, err)
				}
			}
			if st := ts.Stats().Local; st.ConnsRefused != 0 {
				t.Errorf("local connections refused: %d", st.ConnsRefused)
			}
		})
	}
}

// TestPartialRecordsFromRemoteTimeOut: remote connections that start a
// record and never finish it (a small one, a large fragment half sent, one
// trickling a byte at a time) are closed at the record deadline, even with
// no idle timeout at all, and loopback calls are served meanwhile.
func TestPartialRecordsFromRemoteTimeOut(t *testing.T) {
	netlab.RequireRoot(t)
	const holders = DefaultMaxRemoteConns - 1 // and the trickler
	ts, srv, peer, port := attackLab(t, &Server{RecordTimeout: 500 * time.Millisecond,
		RemoteIdleTimeout: -1, MaxConnsPerRemote: holders + 1})
	conns := netlab.DialTCP(t, peer, netip.AddrPortFrom(srv.Addr, uint16(port)), holders+1, netip.Addr{})
	for i, c := range conns[:holders] {
		claim, send := 1000, 10
		if i%2 == 1 {
			claim, send = 60000, 30000 // a large fragment, half of it
		}
		b := binary.BigEndian.AppendUint32(nil, uint32(claim)|lastFragment)
		if _, err := c.Write(append(b, make([]byte, send)...)); err != nil {
			t.Fatal(err)
		}
	}
	// The trickler never stops sending, one byte of a record at a time.
	trickler := conns[holders]
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		trickler.Write([]byte{0x80, 0, 0x10, 0}) // a 4 KiB record
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if _, err := trickler.Write([]byte{0}); err != nil {
				return
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	if err := loopbackEcho(srv, "tcp4", port, 5*time.Second); err != nil {
		t.Fatalf("loopback TCP call with %d partial records held: %v", holders, err)
	}
	waitStats(t, ts.Server, "every partial record timed out", func(st ServerStats) bool {
		return st.Remote.RecordTimeouts == holders+1 && st.Remote.ConnsOpen == 0
	})
	// The peer sees its connections closed.
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Fatalf("connection %d still open: %v", i, err)
		}
	}
	if st := ts.Stats(); st.Remote.IdleTimeouts != 0 || st.Local.RecordTimeouts != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestRemoteIdleTimeout: idle remote connections close at the remote idle
// timeout while an idle loopback connection (no timeout) stays and is served.
func TestRemoteIdleTimeout(t *testing.T) {
	netlab.RequireRoot(t)
	ts, srv, peer, port := attackLab(t, &Server{RemoteIdleTimeout: 200 * time.Millisecond, IdleTimeout: -1})
	remote := netlab.DialTCP(t, peer, netip.AddrPortFrom(srv.Addr, uint16(port)), 3, netip.Addr{})
	local := netlab.DialTCP(t, srv, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port)), 1, netip.Addr{})[0]
	waitStats(t, ts.Server, "remote connections closed idle", func(st ServerStats) bool {
		return st.Remote.IdleTimeouts == 3 && st.Remote.ConnsOpen == 0 && st.Local.ConnsOpen == 1
	})
	for i, c := range remote {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Fatalf("remote connection %d still open: %v", i, err)
		}
	}
	if err := WriteRecord(local, callMessage(CallHeader{XID: 8, RPCVersion: 2, Program: testProg, Version: 1})); err != nil {
		t.Fatal(err)
	}
	local.SetReadDeadline(time.Now().Add(5 * time.Second))
	rec, err := NewRecordReader(local, 0).ReadRecord()
	if err != nil {
		t.Fatalf("idle loopback connection: %v", err)
	}
	if r, err := ParseReply(rec); err != nil || r.XID != 8 || r.Err != nil {
		t.Fatalf("reply %+v, %v", r, err)
	}
	if st := ts.Stats().Local; st.IdleTimeouts != 0 {
		t.Errorf("local idle timeouts: %d", st.IdleTimeouts)
	}
}

// holdCall is a call to procHold with the given xid.
func holdCall(xid uint32) []byte {
	return callMessage(CallHeader{XID: xid, RPCVersion: 2, Program: testProg, Version: 1, Procedure: procHold})
}

// TestRemoteFloodLeavesLoopbackAnswered: a remote peer floods calls that
// hold their handler (as SM_STAT of a name whose DNS never answers did),
// over UDP and over pipelined TCP; loopback calls keep being answered.
func TestRemoteFloodLeavesLoopbackAnswered(t *testing.T) {
	netlab.RequireRoot(t)
	t.Run("udp", func(t *testing.T) {
		ts, srv, peer, port := attackLab(t, &Server{})
		var flood net.Conn
		err := peer.Do(func() (err error) {
			flood, err = net.Dial("udp4", netip.AddrPortFrom(srv.Addr, uint16(port)).String())
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		defer flood.Close()
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for xid := uint32(1); ; xid++ {
				select {
				case <-stop:
					return
				default:
				}
				flood.Write(holdCall(xid))
				if xid%256 == 0 {
					time.Sleep(time.Millisecond) // a flood, not a busy loop that starves the test
				}
			}
		}()
		defer func() { close(stop); wg.Wait() }()
		waitStats(t, ts.Server, "remote handlers all busy and datagrams shed", func(st ServerStats) bool {
			return st.Remote.InFlight == DefaultMaxRemoteInFlight && st.Remote.CallsShed > 1000
		})
		for i := range 20 {
			if err := loopbackEcho(srv, "udp4", port, 5*time.Second); err != nil {
				t.Fatalf("loopback UDP call %d during the flood: %v", i, err)
			}
		}
		if st := ts.Stats().Local; st.CallsShed != 0 {
			t.Errorf("local calls shed: %d", st.CallsShed)
		}
	})
	t.Run("tcp", func(t *testing.T) {
		ts, srv, peer, port := attackLab(t, &Server{})
		// More held calls than the old shared bound of 1024 handlers.
		conns := netlab.DialTCP(t, peer, netip.AddrPortFrom(srv.Addr, uint16(port)), DefaultMaxConnsPerRemote, netip.Addr{})
		for i, c := range conns {
			var b []byte
			for j := range 200 {
				msg := holdCall(uint32(i*1000 + j))
				b = binary.BigEndian.AppendUint32(b, uint32(len(msg))|lastFragment)
				b = append(b, msg...)
			}
			if _, err := c.Write(b); err != nil {
				t.Fatal(err)
			}
		}
		waitStats(t, ts.Server, "remote handlers all busy", func(st ServerStats) bool {
			return st.Remote.InFlight == DefaultMaxRemoteInFlight
		})
		for i := range 5 {
			if err := loopbackEcho(srv, "tcp4", port, 5*time.Second); err != nil {
				t.Fatalf("loopback TCP call %d while remote calls hold every remote slot: %v", i, err)
			}
		}
		// The remote calls are answered once their handlers let go.
		close(ts.release)
		conns[0].SetReadDeadline(time.Now().Add(10 * time.Second))
		rr := NewRecordReader(conns[0], 0)
		for j := range 200 {
			rec, err := rr.ReadRecord()
			if err != nil {
				t.Fatalf("reply %d to a held remote call: %v", j, err)
			}
			if r, err := ParseReply(rec); err != nil || r.Err != nil {
				t.Fatalf("reply %d: %+v %v", j, r, err)
			}
		}
	})
}

// TestLocalClassification: loopback and unix callers are local, all else
// remote; an IPv4-mapped loopback address is loopback.
func TestLocalClassification(t *testing.T) {
	cases := []struct {
		addr, transport string
		local           bool
	}{
		{"127.0.0.1:5", "udp", true},
		{"127.3.2.1:5", "tcp", true},
		{"[::1]:5", "tcp", true},
		{"[::ffff:127.0.0.1]:5", "udp", true},
		{"10.1.2.3:5", "udp", false},
		{"[fd00::1]:5", "tcp", false},
		{"[::ffff:10.0.0.1]:5", "tcp", false},
		{"0.0.0.0:5", "udp", false},
	}
	for _, c := range cases {
		if got := isLocalPeer(netip.MustParseAddrPort(c.addr), c.transport); got != c.local {
			t.Errorf("%s over %s: local %v", c.addr, c.transport, got)
		}
	}
	if !isLocalPeer(netip.AddrPort{}, "unix") {
		t.Error("unix socket caller not local")
	}
}

// TestXIDsAreUnpredictable: the xids a client sends are not a sequence: no
// two calls in a row differ by one (a counter from a random start), and two
// clients do not start alike.
func TestXIDsAreUnpredictable(t *testing.T) {
	ts := newTestServer(t, nil)
	addr := ts.listen(t, "udp4")
	ctx := ctxTimeout(t, 10*time.Second)
	xids := func(c *Client, n int) []uint32 {
		var out []uint32
		for range n {
			var x uint32
			err := c.Call(ctx, testProg, 1, procXID, nil, func(d *xdr.Decoder) error { x = d.Uint32(); return d.Err() })
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, x)
		}
		return out
	}
	a := xids(dialTest(t, "udp4", addr), 64)
	seen := map[uint32]bool{}
	steps := 0
	for i, x := range a {
		if seen[x] {
			t.Errorf("xid %#x repeated", x)
		}
		seen[x] = true
		if i > 0 && x-a[i-1] < 1<<16 {
			steps++
		}
	}
	if steps > 1 {
		t.Errorf("%d of %d xids follow the one before closely: %#x", steps, len(a)-1, a)
	}
	b := xids(dialTest(t, "udp4", addr), 2)
	if b[0] == a[0] || b[1]-b[0] == a[1]-a[0] {
		t.Errorf("two clients' xids alike: %#x %#x and %#x %#x", a[0], a[1], b[0], b[1])
	}
}

// TestUDPReplyOnlyFromAddressCalled: replies with the right xid forged from
// another port and from another address are ignored; the call returns the
// server's own reply, which comes after them.
func TestUDPReplyOnlyFromAddressCalled(t *testing.T) {
	server, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	port := server.LocalAddr().(*net.UDPAddr).Port
	var forgers []*net.UDPConn
	for _, a := range []*net.UDPAddr{{IP: net.IPv4(127, 0, 0, 1)}, {IP: net.IPv4(127, 0, 0, 2), Port: port}} {
		f, err := net.ListenUDP("udp4", a)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		forgers = append(forgers, f)
	}
	reply := func(xid uint32, text string) []byte {
		e := xdr.NewEncoder(nil)
		appendReplyHeader(e, xid, nil)
		e.String(text)
		return e.Bytes()
	}
	go func() {
		buf := make([]byte, 1500)
		n, client, err := server.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		h, _, err := ParseCall(buf[:n])
		if err != nil {
			return
		}
		for _, f := range forgers {
			f.WriteToUDPAddrPort(reply(h.XID, "forged"), client)
		}
		time.Sleep(100 * time.Millisecond)
		server.WriteToUDPAddrPort(reply(h.XID, "real"), client)
	}()
	c := dialTest(t, "udp4", server.LocalAddr().String(), WithRetransmit(5*time.Second, 5*time.Second))
	got, err := echo(ctxTimeout(t, 5*time.Second), c, 1, "x")
	if err != nil || got != "real" {
		t.Fatalf("echo = %q, %v; want the reply from the address called", got, err)
	}
}
