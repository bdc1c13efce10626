package statd

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/netlab"
	"github.com/hoststat/hoststat/nsm"
	"github.com/hoststat/hoststat/oncrpc"
	"github.com/hoststat/hoststat/oncrpc/rpcbind"
	"github.com/hoststat/hoststat/oncrpc/xdr"
)

// notifyPacket is one SM_NOTIFY call datagram.
func notifyPacket(xid uint32, name string, state int32) []byte {
	e := xdr.NewEncoder(nil)
	h := oncrpc.CallHeader{XID: xid, RPCVersion: 2, Program: nsm.Program, Version: nsm.Version, Procedure: nsm.ProcNotify}
	h.Encode(e)
	(&nsm.StatChange{MonName: name, State: state}).Encode(e)
	return e.Bytes()
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// 20,000 SM_NOTIFY with increasing states for one monitored host from one
// address (issue 7): memory and goroutines stay bounded, the registrant
// gets a handful of callbacks ending with the latest state, and loopback
// SM_MON is served throughout. On the old code each one started a
// callback goroutine retrying for minutes.
func TestNotifyFloodForMonitoredHost(t *testing.T) {
	td := newTestDaemon(t, nil)
	ctx := ctxT(t, 60*time.Second)
	reg := newRegistrant(t, td.rpcb, 200100)
	c := td.dial("udp")
	if r, err := callMon(ctx, c, nsm.Mon{ID: nsm.MonID{MonName: "127.0.0.40", MyID: reg.myID()}, Priv: priv(4)}); err != nil || r.Res != nsm.StatSucc {
		t.Fatalf("SM_MON: %+v %v", r, err)
	}
	heapBefore, goBefore := heapInUse(), runtime.NumGoroutine()

	flood := loopbackSender(t, "127.0.0.40:0")
	to := netip.MustParseAddrPort(td.udp)
	const n = 20000
	var monErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // a lock manager going about its business meanwhile
		defer wg.Done()
		for i := range 20 {
			r, err := callMon(ctx, c, nsm.Mon{ID: nsm.MonID{MonName: fmt.Sprintf("10.9.0.%d", i), MyID: reg.myID()}})
			if err != nil || r.Res != nsm.StatSucc {
				monErr = fmt.Errorf("SM_MON during the flood: %+v %v", r, err)
				return
			}
		}
	}()
	maxGo := 0
	for i := 1; i <= n; i++ {
		flood.WriteToUDPAddrPort(notifyPacket(uint32(i), "127.0.0.40", int32(i)), to)
		if i%1000 == 0 {
			maxGo = max(maxGo, runtime.NumGoroutine())
			time.Sleep(time.Millisecond) // let the socket drain: the flood is about the daemon, not the kernel buffer
		}
	}
	wg.Wait()
	if monErr != nil {
		t.Fatal(monErr)
	}
	// The last word, repeated until it is certain to have been read (it is
	// not answered: the sender is over its rate).
	for range 3 {
		flood.WriteToUDPAddrPort(notifyPacket(n+1, "127.0.0.40", n+1), to)
		time.Sleep(50 * time.Millisecond)
	}
	var got []int32
	for {
		g := reg.next(t, 5*time.Second)
		got = append(got, g.st.State)
		if g.st.State == n+1 {
			break
		}
	}
	reg.none(t, 500*time.Millisecond)
	if len(got) > 10 {
		t.Errorf("registrant called back %d times: %v", len(got), got)
	}
	// The server runs at most DefaultMaxInFlight handlers at once; nothing
	// may outlive its call.
	if maxGo > goBefore+oncrpc.DefaultMaxInFlight+50 {
		t.Errorf("goroutines went from %d to %d during the flood", goBefore, maxGo)
	}
	netlab.WaitFor(t, 5*time.Second, "goroutines back to where they were", func() error {
		if n := runtime.NumGoroutine(); n > goBefore+20 {
			return fmt.Errorf("%d goroutines, %d before the flood", n, goBefore)
		}
		return nil
	})
	if grew := int64(heapInUse()) - int64(heapBefore); grew > 4<<20 {
		t.Errorf("heap grew by %d KiB", grew>>10)
	}
	if logs := td.logs.String(); strings.Count(logs, "SM_NOTIFY rate limit") > 1 || strings.Count(logs, "\n") > 200 {
		t.Errorf("the flood wrote %d log lines", strings.Count(logs, "\n"))
	}
}

// A local unprivileged user registers statd itself as the callback
// target (my_id {100024, 1, 5}: SM_SIMU_CRASH) and then notifies: on the
// old code statd called its own SM_SIMU_CRASH from a reserved port and the
// state moved on by two. Now the SM_MON is refused with stat_fail and a
// logged reason, and the state never moves.
func TestLocalUserCannotFakeReboot(t *testing.T) {
	netlab.RequireRoot(t) // the laundered call came from a reserved port, which needs root
	td := newTestDaemon(t, nil)
	ctx := ctxT(t, 20*time.Second)
	port := netip.MustParseAddrPort(td.udp).Port()
	td.rpcb.set(nsm.Program, nsm.Version, rpcbind.ProtoUDP, int(port))
	td.rpcb.set(rpcbind.Program, 2, rpcbind.ProtoUDP, td.rpcb.port)
	state := td.status().State
	c := td.dial("udp") // an unprivileged port
	for _, my := range []nsm.MyID{
		{Name: "127.0.0.1", Prog: nsm.Program, Vers: nsm.Version, Proc: nsm.ProcSimuCrash},
		{Name: "127.0.0.1", Prog: rpcbind.Program, Vers: 2, Proc: 1},
	} {
		r, err := callMon(ctx, c, nsm.Mon{ID: nsm.MonID{MonName: "victim", MyID: my}})
		if err != nil || r.Res != nsm.StatFail {
			t.Errorf("SM_MON with my_prog %d: %+v %v, want stat_fail", my.Prog, r, err)
		}
	}
	callNotify(ctx, c, "victim", 3)
	time.Sleep(time.Second) // any callback would have been made by now
	if st := td.status(); st.State != state || len(st.Monitored) != 0 {
		t.Fatalf("state %d → %d, monitored %+v", state, st.State, st.Monitored)
	}
	if !strings.Contains(td.logs.String(), "callback program not allowed") {
		t.Error("the refusal is not logged with its reason")
	}
	// Nor may the admin allow them.
	if _, err := (&Config{CallbackPrograms: []uint32{nsm.Program}}).withDefaults(); err == nil {
		t.Error("--callback-program 100024 accepted")
	}
}

// A slow -H program and 12,000 unsolicited SM_NOTIFY from 1,000 addresses:
// loopback SM_MON over UDP and TCP is still answered, and the daemon stops
// within 5 s of being told to, without a panic. On the old code the callout
// queue filled, handlers blocked, SM_MON timed out and shutdown hung.
func TestSlowHACalloutUnderFlood(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "callout")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nsleep 30\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	td := newTestDaemon(t, func(c *Config) { c.HACallout = script })
	ctx := ctxT(t, 60*time.Second)
	to := netip.MustParseAddrPort(td.udp)
	for s := range 1000 {
		f := loopbackSender(t, fmt.Sprintf("127.0.%d.%d:0", 1+s/250, 1+s%250))
		for i := range 12 {
			f.WriteToUDPAddrPort(notifyPacket(uint32(i), fmt.Sprintf("host-%d-%d", s, i), int32(i)), to)
		}
		f.Close()
	}
	my := nsm.MyID{Name: "127.0.0.1", Prog: nsm.NLMProgram, Vers: 4, Proc: 16}
	for _, network := range []string{"udp", "tcp"} {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		r, err := callMon(cctx, td.dial(network), nsm.Mon{ID: nsm.MonID{MonName: "peer-" + network, MyID: my}})
		cancel()
		if err != nil || r.Res != nsm.StatSucc {
			t.Fatalf("SM_MON over %s during the flood: %+v %v", network, r, err)
		}
	}
	if st := td.status(); st.HACalloutsDropped == 0 {
		t.Error("admin view counts no dropped callouts")
	}
	td.cancel()
	td.cancel = nil
	select {
	case err := <-td.done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("daemon still running 5 s after being told to stop")
	}
	if logs := td.logs.String(); !strings.Contains(logs, "ha-callout queue full") || strings.Contains(logs, "panic") {
		t.Errorf("want the overflow logged, and no panic; log:\n%s", tail(logs, 20))
	}
}

func tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	return strings.Join(l[max(0, len(l)-lines):], "\n")
}

// Remote SM_STAT calls naming hosts whose DNS never answers (a real DNS
// socket on loopback that reads and never replies), 2,000 a second: loopback
// SM_MON is still answered. On the old code every such call held a handler
// for 2 s, the handlers ran out and SM_MON waited behind them.
func TestUnanswerableLookupsDoNotStarveMon(t *testing.T) {
	hole := loopbackSender(t, "127.0.0.1:0") // reads nothing, answers nothing
	resolver := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dl net.Dialer
		return dl.DialContext(ctx, "udp", hole.LocalAddr().String())
	}}
	td := newTestDaemon(t, func(c *Config) { c.Resolver = resolver })
	ctx := ctxT(t, 30*time.Second)
	to := netip.MustParseAddrPort(td.udp)
	flood := loopbackSender(t, "127.0.0.50:0")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			e := xdr.NewEncoder(nil)
			h := oncrpc.CallHeader{XID: uint32(i), RPCVersion: 2, Program: nsm.Program, Version: nsm.Version, Procedure: nsm.ProcStat}
			h.Encode(e)
			(&nsm.Name{MonName: fmt.Sprintf("never-%d.test", i)}).Encode(e)
			flood.WriteToUDPAddrPort(e.Bytes(), to)
			if i%20 == 0 {
				time.Sleep(10 * time.Millisecond)
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	time.Sleep(time.Second) // let the handlers fill up, if they can
	c := td.dial("udp")
	my := nsm.MyID{Name: "127.0.0.1", Prog: nsm.NLMProgram, Vers: 4, Proc: 16}
	for i := range 5 {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		r, err := callMon(cctx, c, nsm.Mon{ID: nsm.MonID{MonName: fmt.Sprintf("10.8.0.%d", i), MyID: my}})
		cancel()
		if err != nil || r.Res != nsm.StatSucc {
			t.Fatalf("loopback SM_MON %d during the SM_STAT flood: %+v %v", i, r, err)
		}
	}
}

// The same through the real command and a real SIGTERM: rpc.statd with a
// slow -H program, flooded with unsolicited SM_NOTIFY from 1,000 loopback
// addresses, exits 0 within 5 s of SIGTERM, and writes no panic.
func TestSIGTERMUnderFloodWithSlowHACallout(t *testing.T) {
	bin := netlab.BuildCommands(t, "./cmd/rpc.statd")
	dir := t.TempDir()
	script := filepath.Join(dir, "callout")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nsleep 30\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	bootID := filepath.Join(dir, "boot_id")
	writeBootID(t, bootID, "boot-1")
	port := freePort(t)
	logs := &netlab.LogBuffer{}
	cmd := exec.Command(filepath.Join(bin, "rpc.statd"), "-F", "--no-rpcbind", "-P", filepath.Join(dir, "state"),
		"-p", strconv.Itoa(port), "--boot-id-path", bootID, "-H", script, "--name", "me.example.com")
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
		}
		if t.Failed() {
			t.Logf("rpc.statd output:\n%s", tail(logs.String(), 30))
		}
	}()
	to := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
	netlab.WaitFor(t, 10*time.Second, "rpc.statd answering", func() error {
		_, err := rawCall(t, "127.0.0.1:0", to.String(), nsm.ProcNull, nil)
		return err
	})
	for s := range 1000 {
		f := loopbackSender(t, fmt.Sprintf("127.0.%d.%d:0", 1+s/250, 1+s%250))
		for i := range 12 {
			f.WriteToUDPAddrPort(notifyPacket(uint32(i), fmt.Sprintf("host-%d-%d", s, i), int32(i)), to)
		}
		f.Close()
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("rpc.statd exited with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("rpc.statd still running 5 s after SIGTERM")
	}
	if out := logs.String(); strings.Contains(out, "panic") {
		t.Fatalf("panic on the way out:\n%s", tail(out, 30))
	}
}
