package statd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/netlab"
	"github.com/hoststat/hoststat/nsm"
	"github.com/hoststat/hoststat/oncrpc"
	"github.com/hoststat/hoststat/oncrpc/xdr"
)

// The tests here attack an in-process daemon from another host of a netlab
// (its own network namespace, so the attacker's address is not loopback and
// the daemon's RPC server puts it in the remote class), while a lock
// manager on the daemon's own loopback goes about its business. They hold
// issue 7's "nothing a remote peer sends delays a loopback SM_MON" for the
// daemon itself, where oncrpc/peers_test.go holds it for the bare server.

// labDaemon starts the daemon inside host srv's network namespace: its
// sockets are made by Run on a thread that netlab.Host.Do keeps in that
// namespace for as long as Run runs. td.udp and td.tcp are on srv's
// loopback, so loopback calls go through srv.Do (labLoopbackMon).
func labDaemon(t *testing.T, srv *netlab.Host, mutate func(*Config)) *testDaemon {
	t.Helper()
	return newTestDaemonIn(t, mutate, srv.Do)
}

// labLoopbackMon makes one SM_MON for name from srv's loopback over network
// (a fresh client, as a lock manager that just started would), and returns
// an error unless it is answered stat_succ within timeout.
func labLoopbackMon(srv *netlab.Host, td *testDaemon, network, name string, timeout time.Duration) error {
	addr := td.udp
	if network == "tcp" {
		addr = td.tcp
	}
	return srv.Do(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		c, err := oncrpc.Dial(ctx, network, addr, oncrpc.WithRetransmit(100*time.Millisecond, 300*time.Millisecond))
		if err != nil {
			return err
		}
		defer c.Close()
		my := nsm.MyID{Name: "127.0.0.1", Prog: nsm.NLMProgram, Vers: 4, Proc: 16}
		r, err := callMon(ctx, c, nsm.Mon{ID: nsm.MonID{MonName: name, MyID: my}})
		if err == nil && r.Res != nsm.StatSucc {
			err = fmt.Errorf("answered %+v", r)
		}
		if err != nil {
			return fmt.Errorf("loopback SM_MON %s over %s: %w", name, network, err)
		}
		return nil
	})
}

// TestRemoteIdleConnectionsDoNotStarveMon: 256 idle TCP connections from a
// remote peer (issue 7: they made loopback TCP SM_MON fail), first within
// the per-address bound's reach and then all held open at once from 32
// addresses: a lock manager on loopback still registers over TCP and UDP,
// with a new connection each time, within a second. Fails on the daemon
// before e28c8de, where the server's one bound of 256 connections was
// shared by every caller.
func TestRemoteIdleConnectionsDoNotStarveMon(t *testing.T) {
	lab := netlab.New(t)
	srv, peer := lab.AddHost("server"), lab.AddHost("peer")
	td := labDaemon(t, srv, nil)
	port := netip.MustParseAddrPort(td.tcp).Port()
	to := netip.AddrPortFrom(srv.Addr, port)

	// 256 from the peer's one address: the per-address bound (8) closes
	// all but a few at once, and the peer is left holding dead sockets.
	held := netlab.DialTCP(t, peer, to, 256, netip.Addr{})
	for i := range 3 {
		for _, network := range []string{"tcp", "udp"} {
			if err := labLoopbackMon(srv, td, network, fmt.Sprintf("10.7.1.%d%s", i, network), time.Second); err != nil {
				t.Fatalf("with %d idle remote connections: %v", len(held), err)
			}
		}
	}

	// 256 held open at once: 8 from each of 32 addresses of the peer, the
	// remote class's whole bound. Loopback has its own.
	var extra []netip.Addr
	for i := range 31 {
		a := lab.Net4().Addr().As4()
		a[3] = byte(100 + i)
		extra = append(extra, netip.AddrFrom4(a))
	}
	if _, err := peer.Run(context.Background(), "sh", "-c", addAddrs(extra)); err != nil {
		t.Fatalf("adding addresses to the peer: %v", err)
	}
	srcs := append([]netip.Addr{peer.Addr}, extra...)
	var more []net.Conn
	for _, src := range srcs {
		more = append(more, netlab.DialTCP(t, peer, to, oncrpc.DefaultMaxConnsPerRemote, src)...)
	}
	open := len(more)
	// The server closes what is over its bounds as it accepts it.
	netlab.WaitFor(t, 15*time.Second, "the remote bound held open", func() error {
		first, all := countAlive(held), countAlive(more)
		all += first
		if first != oncrpc.DefaultMaxConnsPerRemote || all != oncrpc.DefaultMaxRemoteConns {
			return fmt.Errorf("%d of the first 256 connections from one address open (want %d), %d remote connections in all (want the remote bound %d)",
				first, oncrpc.DefaultMaxConnsPerRemote, all, oncrpc.DefaultMaxRemoteConns)
		}
		return nil
	})
	for i := range 5 {
		for _, network := range []string{"tcp", "udp"} {
			if err := labLoopbackMon(srv, td, network, fmt.Sprintf("10.7.2.%d%s", i, network), time.Second); err != nil {
				t.Fatalf("with %d more remote connections from %d addresses: %v", open, len(srcs), err)
			}
		}
	}
	if st := td.status(); len(st.Monitored) != 16 {
		t.Errorf("%d hosts monitored, want the 16 registered", len(st.Monitored))
	}
}

// addAddrs is a shell command adding each address to the lab host's eth0.
func addAddrs(as []netip.Addr) string {
	var b strings.Builder
	for _, a := range as {
		fmt.Fprintf(&b, "ip addr add %s/32 dev %s && ", a, netlab.Iface)
	}
	b.WriteString("true")
	return b.String()
}

// countAlive counts the connections the server has not closed: a read
// that times out means open, EOF or a reset means closed.
func countAlive(conns []net.Conn) int {
	alive := 0
	buf := make([]byte, 1)
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(5 * time.Millisecond))
		_, err := c.Read(buf)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			alive++
		}
	}
	return alive
}

// TestRemoteUnanswerableStatsDoNotStarveMon: a remote peer sends SM_STAT
// for names whose DNS never answers (a real DNS socket that reads and never
// replies), about 1,000 a second for 3 s (issue 7 saw 700/s starve loopback
// SM_MON over UDP): loopback SM_MON over UDP and TCP is answered within a
// second throughout, and the flood is answered stat_fail or shed. Unlike
// TestUnanswerableLookupsDoNotStarveMon (a flood from a loopback address,
// the local class, held by the 8 waiters SM_STAT allows), here the flood
// is in the remote class: it would fail on the daemon before e28c8de,
// whose server gave every caller the same handler slots.
func TestRemoteUnanswerableStatsDoNotStarveMon(t *testing.T) {
	lab := netlab.New(t)
	srv, peer := lab.AddHost("server"), lab.AddHost("peer")
	hole := loopbackSender(t, "127.0.0.1:0") // in this test's own namespace: reads nothing, answers nothing
	var lookups atomic.Int64
	resolver := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		lookups.Add(1)
		var dl net.Dialer
		return dl.DialContext(ctx, "udp", hole.LocalAddr().String())
	}}
	td := labDaemon(t, srv, func(c *Config) { c.Resolver = resolver })
	to := netip.AddrPortFrom(srv.Addr, netip.MustParseAddrPort(td.udp).Port())

	var sent, answered atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		peer.Do(func() error {
			conn, err := net.ListenUDP("udp4", nil)
			if err != nil {
				return err
			}
			defer conn.Close()
			go func() { // count answers; each must be stat_fail
				buf := make([]byte, 1500)
				for {
					n, err := conn.Read(buf)
					if err != nil {
						return
					}
					if r, err := oncrpc.ParseReply(buf[:n]); err == nil && r.Err == nil {
						var res nsm.StatRes
						if res.Decode(xdr.NewDecoder(r.Results)) == nil && res.Res == nsm.StatFail {
							answered.Add(1)
						}
					}
				}
			}()
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return nil
				case <-tick.C:
				}
				for j := range 10 {
					e := xdr.NewEncoder(nil)
					h := oncrpc.CallHeader{XID: uint32(i*10 + j), RPCVersion: 2, Program: nsm.Program, Version: nsm.Version, Procedure: nsm.ProcStat}
					h.Encode(e)
					(&nsm.Name{MonName: fmt.Sprintf("never-%d-%d.test", i, j)}).Encode(e)
					conn.WriteToUDPAddrPort(e.Bytes(), to)
					sent.Add(1)
				}
			}
		})
	}()
	defer func() { close(stop); wg.Wait() }()

	time.Sleep(time.Second) // let the handlers fill up, if they can
	deadline := time.Now().Add(2 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		for _, network := range []string{"udp", "tcp"} {
			if err := labLoopbackMon(srv, td, network, fmt.Sprintf("10.8.0.%d%s", i, network), time.Second); err != nil {
				t.Fatalf("during the remote SM_STAT flood (%d sent, %d answered stat_fail): %v", sent.Load(), answered.Load(), err)
			}
		}
	}
	if sent.Load() < 1000 || lookups.Load() == 0 {
		t.Fatalf("the flood did not happen: %d SM_STAT sent, %d DNS queries", sent.Load(), lookups.Load())
	}
	t.Logf("%d SM_STAT sent, %d answered stat_fail, %d DNS queries", sent.Load(), answered.Load(), lookups.Load())
}

// TestOverlongMonNameIsGarbageArgs: mon_name is string<1024> (SM_MAXSTRLEN)
// in sm_inter.x, so 1025 bytes is not a valid argument of any procedure:
// docs/protocol.md promises GARBAGE_ARGS (as nfs-utils' rpcgen stubs
// answer), over UDP and TCP, for SM_STAT, SM_MON, SM_UNMON and SM_NOTIFY;
// nothing is stored and the daemon carries on. 1024 bytes is a valid name.
func TestOverlongMonNameIsGarbageArgs(t *testing.T) {
	td := newTestDaemon(t, nil)
	ctx := ctxT(t, 30*time.Second)
	my := nsm.MyID{Name: "127.0.0.1", Prog: nsm.NLMProgram, Vers: 4, Proc: 16}
	long := strings.Repeat("a", nsm.MaxStrLen+1)
	// Encoded by hand: nsm's encoders refuse a name this long.
	args := map[uint32]func(*xdr.Encoder){
		nsm.ProcStat: func(e *xdr.Encoder) { e.String(long) },
		nsm.ProcMon: func(e *xdr.Encoder) {
			e.String(long)
			my.Encode(e)
			e.FixedOpaque(make([]byte, nsm.PrivLen))
		},
		nsm.ProcUnmon:  func(e *xdr.Encoder) { e.String(long); my.Encode(e) },
		nsm.ProcNotify: func(e *xdr.Encoder) { e.String(long); e.Int32(3) },
	}
	for _, network := range []string{"udp", "tcp"} {
		c := td.dial(network)
		for _, proc := range []uint32{nsm.ProcStat, nsm.ProcMon, nsm.ProcUnmon, nsm.ProcNotify} {
			err := c.Call(ctx, nsm.Program, nsm.Version, proc, args[proc], nil)
			if !errors.Is(err, oncrpc.ErrGarbageArgs) {
				t.Errorf("%s: procedure %d with a %d-byte mon_name: %v, want GARBAGE_ARGS", network, proc, len(long), err)
			}
		}
		// The connection, and the daemon, carry on; SM_MAXSTRLEN itself is fine.
		name := strings.Repeat("b", nsm.MaxStrLen-len(network)) + network
		if r, err := callMon(ctx, c, nsm.Mon{ID: nsm.MonID{MonName: name, MyID: my}}); err != nil || r.Res != nsm.StatSucc {
			t.Fatalf("%s: SM_MON of a %d-byte name: %+v %v", network, len(name), r, err)
		}
	}
	st := td.status()
	if len(st.Monitored) != 2 {
		t.Fatalf("monitored %d hosts, want the two 1024-byte names", len(st.Monitored))
	}
	for _, m := range st.Monitored {
		if len(m.MonName) != nsm.MaxStrLen {
			t.Errorf("monitored a %d-byte name", len(m.MonName))
		}
	}
	if !strings.Contains(td.logs.String(), reasonGarbage) {
		t.Error("the undecodable arguments are not logged as a refusal")
	}
}
