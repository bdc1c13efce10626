package statd

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/netlab"
	"github.com/hoststat/hoststat/nsm"
	"github.com/hoststat/hoststat/oncrpc"
	"github.com/hoststat/hoststat/oncrpc/xdr"
)

// spoofTrap is a UDP RPC server that an on-path attacker races: the first
// time it sees a call (by xid) it does not answer, and a spoofer at another
// address (127.0.0.66) answers in its name with the xid it saw and a
// result of the attacker's choosing; a retransmission of the call gets the
// true answer. A client that took the forged reply never retransmits.
type spoofTrap struct {
	t      *testing.T
	conns  []*net.UDPConn // one per address, on one port: a reply leaves from the address called
	spoof  *net.UDPConn
	answer func(h oncrpc.CallHeader, args []byte) (real, forged []byte)

	mu    sync.Mutex
	seen  map[uint32]int // datagrams per xid
	order []uint32       // xids in the order first seen
	procs map[uint32]int // distinct calls per procedure
}

func newSpoofTrap(t *testing.T, addrs []string, answer func(oncrpc.CallHeader, []byte) (real, forged []byte)) *spoofTrap {
	t.Helper()
	tr := &spoofTrap{t: t, spoof: loopbackSender(t, "127.0.0.66:0"), answer: answer, seen: map[uint32]int{}, procs: map[uint32]int{}}
	port := 0
	for _, a := range addrs {
		c := loopbackSender(t, fmt.Sprintf("%s:%d", a, port))
		port = c.LocalAddr().(*net.UDPAddr).Port
		tr.conns = append(tr.conns, c)
		go tr.serve(c)
	}
	return tr
}

func (tr *spoofTrap) port() int { return tr.conns[0].LocalAddr().(*net.UDPAddr).Port }

func (tr *spoofTrap) serve(conn *net.UDPConn) {
	buf := make([]byte, 9000)
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		h, args, err := oncrpc.ParseCall(buf[:n])
		if err != nil {
			continue
		}
		tr.mu.Lock()
		first := tr.seen[h.XID] == 0
		tr.seen[h.XID]++
		if first {
			tr.order = append(tr.order, h.XID)
			tr.procs[h.Procedure]++
		}
		tr.mu.Unlock()
		real, forged := tr.answer(h, args)
		e := xdr.NewEncoder(nil)
		if first {
			oncrpc.AppendReply(e, h.XID, nil, forged)
			tr.spoof.WriteToUDPAddrPort(e.Bytes(), from)
			continue
		}
		oncrpc.AppendReply(e, h.XID, nil, real)
		conn.WriteToUDPAddrPort(e.Bytes(), from)
	}
}

// snapshot returns the xids in order, how many of them were retransmitted
// (seen more than once), and the distinct calls of proc.
func (tr *spoofTrap) snapshot(proc uint32) (order []uint32, retransmitted, calls int) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for _, x := range tr.order {
		if tr.seen[x] > 1 {
			retransmitted++
		}
	}
	return append([]uint32(nil), tr.order...), retransmitted, tr.procs[proc]
}

func uint32Bytes(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// TestSpoofedRepliesIgnoredAndXIDsUnpredictable runs the three kinds of
// call rpc.statd makes (issue 7's wire hygiene) against an attacker who
// sees every call and answers first from another address with the right
// xid: rpcbind GETPORT for a peer (forged port: the attacker's), SM_NOTIFY
// to peers after SM_SIMU_CRASH (forged success), rpcbind GETPORT for a
// registrant and the callback itself (forged success), the callback going
// to loopback whatever my_name says. Every call is
// retransmitted until the true server answers, nothing reaches the
// attacker's port, every peer and the registrant get their calls, and the
// xids, in the order they went out, are no counter (each more than 256
// from the one before, modulo 2^32). The daemon before befe7eb took a
// reply by xid alone from any address (statd/peer.go's datagramMux) and
// numbered its calls in sequence.
func TestSpoofedRepliesIgnoredAndXIDsUnpredictable(t *testing.T) {
	netlab.RequireRoot(t) // SM_SIMU_CRASH from a privileged port; callbacks from reserved ports
	evil := loopbackSender(t, "0.0.0.0:0")
	evilPort := uint32(evil.LocalAddr().(*net.UDPAddr).Port)
	evilGot := make(chan netip.AddrPort, 100)
	go func() {
		buf := make([]byte, 9000)
		for {
			_, from, err := evil.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			evilGot <- from
		}
	}()

	const registrantProg = 200100
	notified := make(chan string, 100)
	peers := []string{"127.0.0.5", "127.0.0.6", "127.0.0.7", "127.0.0.8"}
	peer := newSpoofTrap(t, peers, func(h oncrpc.CallHeader, args []byte) ([]byte, []byte) {
		var sc nsm.StatChange
		if h.Procedure == nsm.ProcNotify && sc.Decode(xdr.NewDecoder(args)) == nil {
			notified <- sc.MonName
		}
		return nil, nil
	})
	called := make(chan nsm.Status, 100)
	registrant := newSpoofTrap(t, []string{"127.0.0.1"}, func(h oncrpc.CallHeader, args []byte) ([]byte, []byte) {
		var st nsm.Status
		if st.Decode(xdr.NewDecoder(args)) == nil {
			called <- st
		}
		return nil, nil
	})
	rpcb := newSpoofTrap(t, append([]string{"127.0.0.1"}, peers...), func(h oncrpc.CallHeader, args []byte) ([]byte, []byte) {
		d := xdr.NewDecoder(args)
		prog := d.Uint32()
		port := 0
		switch prog {
		case nsm.Program:
			port = peer.port()
		case registrantProg:
			port = registrant.port()
		}
		return uint32Bytes(uint32(port)), uint32Bytes(evilPort)
	})
	td := newTestDaemon(t, func(c *Config) {
		c.RPCBindPort = rpcb.port()
		c.Schedule = nsm.Schedule{FirstRetry: 100 * time.Millisecond, MaxRetry: 200 * time.Millisecond}
	})
	ctx := ctxT(t, 60*time.Second)
	c := td.dial("udp")
	// my_name names another host (CERT CA-99.05: statd called back
	// wherever it was told). The registrant listens on 127.0.0.1 only, so
	// the callback arrives only if my_name is ignored, as in nfs-utils.
	my := nsm.MyID{Name: "127.0.0.77", Prog: registrantProg, Vers: 1, Proc: 16}
	for _, h := range peers {
		if r, err := callMon(ctx, c, nsm.Mon{ID: nsm.MonID{MonName: h, MyID: my}}); err != nil || r.Res != nsm.StatSucc {
			t.Fatalf("SM_MON %s: %+v %v", h, r, err)
		}
	}
	state := td.status().State
	if err := callSimuCrash(ctx, dialT(t, "udp", td.udp, oncrpc.WithPrivilegedPort())); err != nil {
		t.Fatal(err)
	}
	netlab.WaitFor(t, 20*time.Second, "every peer notified", func() error { return owedNone(td) })
	// A peer restarts: its SM_NOTIFY makes the daemon call the registrant back.
	if err := callNotify(ctx, c, "127.0.0.5", 7); err != nil {
		t.Fatal(err)
	}
	select {
	case st := <-called:
		if st.MonName != "127.0.0.5" || st.State != 7 {
			t.Fatalf("callback %+v", st)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no callback")
	}
	netlab.WaitFor(t, 5*time.Second, "the callback counted as delivered", func() error {
		if n := td.status().CallbacksDelivered; n != 1 {
			return fmt.Errorf("%d callbacks delivered", n)
		}
		return nil
	})

	select {
	case from := <-evilGot:
		t.Fatalf("the daemon called the attacker's port (from %v): it took a forged rpcbind reply", from)
	default:
	}
	if st := td.status(); st.State != state+2 {
		t.Errorf("state %d, want %d", st.State, state+2)
	}
	got := map[string]bool{}
	for len(notified) > 0 {
		got[<-notified] = true
	}
	if !got["me.example.com"] {
		t.Errorf("peers were not notified by our name: %v", got)
	}
	var all []uint32
	for _, s := range []struct {
		what  string
		trap  *spoofTrap
		proc  uint32
		calls int
	}{
		{"rpcbind GETPORT", rpcb, pmapGetPort, len(peers) + 1},
		{"SM_NOTIFY", peer, nsm.ProcNotify, len(peers)},
		{"callback", registrant, 16, 1},
	} {
		order, retransmitted, calls := s.trap.snapshot(s.proc)
		if calls < s.calls {
			t.Errorf("%s: %d calls, want at least %d", s.what, calls, s.calls)
		}
		// Every call whose forged reply was taken would not be retransmitted.
		if retransmitted != len(order) {
			t.Errorf("%s: %d of %d calls retransmitted after the forged reply: the others took it", s.what, retransmitted, len(order))
		}
		all = append(all, order...)
		for i := 1; i < len(order); i++ {
			if d := order[i] - order[i-1]; d <= 256 || -d <= 256 {
				t.Errorf("%s: xid %#x follows %#x: a counter, not a random draw", s.what, order[i], order[i-1])
			}
		}
	}
	seen := map[uint32]bool{}
	for _, x := range all {
		if seen[x] {
			t.Errorf("xid %#x used for two calls", x)
		}
		seen[x] = true
	}
	if len(all) < 2*len(peers)+2 {
		t.Errorf("only %d calls seen", len(all))
	}
}
