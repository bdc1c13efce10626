package statd

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/netlab"
	"github.com/hoststat/hoststat/nsm"
	"github.com/hoststat/hoststat/oncrpc"
	"github.com/hoststat/hoststat/oncrpc/xdr"
)

// TestGarbageFloodLeavesDaemonServing: thousands of datagrams that are no
// RPC call, calls whose arguments do not decode, and TCP streams of junk
// neither stop the daemon nor flood its log; each undecodable call is
// answered GARBAGE_ARGS and its refusal logged once per caller and
// procedure; SM_MON works afterwards over UDP and TCP.
func TestGarbageFloodLeavesDaemonServing(t *testing.T) {
	td := newTestDaemon(t, nil)
	rnd := rand.New(rand.NewPCG(1, 2))
	junk := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rnd.Uint32())
		}
		return b
	}

	uc, err := net.Dial("udp", td.udp)
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	for range 5000 {
		uc.Write(junk(rnd.IntN(300)))
	}

	// Every procedure with arguments, given a string length past the end.
	for _, proc := range []uint32{nsm.ProcStat, nsm.ProcMon, nsm.ProcUnmon, nsm.ProcUnmonAll, nsm.ProcNotify} {
		for range 3 {
			_, err := rawCall(t, "127.0.0.1:0", td.udp, proc, func(e *xdr.Encoder) { e.Uint32(0xfffffff0) })
			if !errors.Is(err, oncrpc.ErrGarbageArgs) {
				t.Fatalf("procedure %d with undecodable arguments: %v, want GARBAGE_ARGS", proc, err)
			}
		}
	}

	for _, stream := range [][]byte{
		junk(64 << 10), // random record marks
		binary.BigEndian.AppendUint32(nil, 0xffffffff),                      // a 2 GiB record announced
		append(binary.BigEndian.AppendUint32(nil, 0x80000040), junk(64)...), // one whole record of junk
	} {
		tc, err := net.Dial("tcp", td.tcp)
		if err != nil {
			t.Fatal(err)
		}
		tc.Write(stream)
		tc.SetReadDeadline(time.Now().Add(5 * time.Second))
		var buf [512]byte
		for {
			// Until the daemon hangs up: junk earns no reply worth reading.
			if _, err := tc.Read(buf[:]); err != nil {
				break
			}
		}
		tc.Close()
	}

	ctx := ctxT(t, 20*time.Second)
	for _, network := range []string{"udp", "tcp"} {
		r, err := callMon(ctx, td.dial(network), nsm.Mon{ID: nsm.MonID{MonName: "after-" + network,
			MyID: nsm.MyID{Name: "127.0.0.1", Prog: 100021, Vers: 4, Proc: 16}}})
		if err != nil || r.Res != nsm.StatSucc {
			t.Fatalf("SM_MON over %s after the flood: %+v %v", network, r, err)
		}
	}
	logs := td.logs.String()
	for _, proc := range []string{"SM_STAT", "SM_MON", "SM_UNMON", "SM_UNMON_ALL", "SM_NOTIFY"} {
		if n := strings.Count(logs, `msg="refused `+proc+`" caller=`); n != 1 {
			t.Errorf("undecodable %s logged %d times, want once", proc, n)
		}
	}
	if !strings.Contains(logs, `reason="arguments do not decode" value=`) {
		t.Errorf("no refusal record for undecodable arguments:\n%s", logs)
	}
	// Without -d, thousands of bad messages make a handful of records.
	records := 0
	for _, line := range strings.Split(logs, "\n") {
		if line != "" && !strings.Contains(line, "level=DEBUG") {
			records++
		}
	}
	if records > 20 {
		t.Errorf("the flood wrote %d records above debug level", records)
	}
}

// TestFixedPorts: -p puts the listeners on that port; -o makes SM_NOTIFY
// leave from that one (a firewall may be opened for each alone).
func TestFixedPorts(t *testing.T) {
	listen, out := freePort(t), freePort(t)
	for out == listen {
		out = freePort(t)
	}
	td := newTestDaemon(t, func(c *Config) { c.Port, c.OutgoingPort = listen, out })
	if !strings.HasSuffix(td.udp, ":"+strconv.Itoa(listen)) || !strings.HasSuffix(td.tcp, ":"+strconv.Itoa(listen)) {
		t.Fatalf("-p %d: listening on udp %s, tcp %s", listen, td.udp, td.tcp)
	}
	peer := newFakePeer(t, td.rpcb, "127.0.0.2")
	monitorHosts(t, td, "127.0.0.2")
	td.stop()
	sum, err := NotifyOnce(ctxT(t, 20*time.Second), td.cfg)
	if err != nil || sum.Notified != 1 {
		t.Fatalf("rpc.statd -n: %+v %v", sum, err)
	}
	got := peer.received()
	if len(got) == 0 {
		t.Fatal("no SM_NOTIFY received")
	}
	for _, n := range got {
		if int(n.from.Port()) != out {
			t.Errorf("SM_NOTIFY %q came from %v, want port %d", n.name, n.from, out)
		}
	}
}

// TestCallbackRetriedUntilRegistrantListens: a registrant that is not
// reachable when the SM_NOTIFY comes (restarting, say) is called back once
// it is registered with rpcbind again.
func TestCallbackRetriedUntilRegistrantListens(t *testing.T) {
	td := newTestDaemon(t, nil)
	ctx := ctxT(t, 30*time.Second)
	const prog = 200200
	c := td.dial("udp")
	my := nsm.MyID{Name: "127.0.0.1", Prog: prog, Vers: 1, Proc: 16}
	if r, err := callMon(ctx, c, nsm.Mon{ID: nsm.MonID{MonName: "peer", MyID: my}, Priv: priv(3)}); err != nil || r.Res != nsm.StatSucc {
		t.Fatalf("SM_MON: %+v %v", r, err)
	}
	if err := callNotify(ctx, c, "peer", 5); err != nil {
		t.Fatal(err)
	}
	netlab.WaitFor(t, 10*time.Second, "a failed callback", func() error {
		if !strings.Contains(td.logs.String(), `msg="callback failed"`) {
			return errors.New("none logged")
		}
		return nil
	})
	reg := newRegistrant(t, td.rpcb, prog)
	if g := reg.next(t, 10*time.Second); g.st.MonName != "peer" || g.st.State != 5 || g.st.Priv != priv(3) {
		t.Fatalf("callback %+v", g.st)
	}
}

func freePort(t *testing.T) int { return netlab.FreeUDPPort(t) }
