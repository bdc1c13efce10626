package statd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/netlab"
	"github.com/hoststat/hoststat/nsm"
	"github.com/hoststat/hoststat/oncrpc"
	"github.com/hoststat/hoststat/oncrpc/xdr"
)

func priv(b byte) (p [nsm.PrivLen]byte) {
	for i := range p {
		p[i] = b + byte(i)
	}
	return p
}

// TestMonStatUnmon runs SM_MON, SM_STAT, SM_UNMON and SM_UNMON_ALL over UDP
// and TCP and checks each answers with our state and changes what the
// daemon (and its store, through the admin view) holds.
func TestMonStatUnmon(t *testing.T) {
	td := newTestDaemon(t, nil)
	ctx := ctxT(t, 20*time.Second)
	state := td.status().State
	if state%2 != 1 {
		t.Fatalf("state %d is not odd after start", state)
	}
	my := nsm.MyID{Name: "127.0.0.1", Prog: 100021, Vers: 4, Proc: 16}
	for _, network := range []string{"udp", "tcp"} {
		c := td.dial(network)
		if err := c.Call(ctx, nsm.Program, nsm.Version, nsm.ProcNull, nil, nil); err != nil {
			t.Fatalf("%s NULL: %v", network, err)
		}
		host := "peer-" + network + ".example.com"
		r, err := callMon(ctx, c, nsm.Mon{ID: nsm.MonID{MonName: host, MyID: my}, Priv: priv(1)})
		if err != nil || r.Res != nsm.StatSucc || r.State != state {
			t.Fatalf("%s SM_MON: %+v %v, want stat_succ state %d", network, r, err, state)
		}
		r, err = callStat(ctx, c, "127.0.0.1")
		if err != nil || r.Res != nsm.StatSucc || r.State != state {
			t.Fatalf("%s SM_STAT: %+v %v", network, r, err)
		}
	}
	st := td.status()
	if len(st.Monitored) != 2 || st.Monitored[0].MonName != "peer-tcp.example.com" ||
		st.Monitored[0].Registrants[0].Prog != 100021 || st.Monitored[0].Registrants[0].Priv != "0102030405060708090a0b0c0d0e0f10" {
		t.Fatalf("monitored: %+v", st.Monitored)
	}
	c := td.dial("udp")
	r, err := callUnmon(ctx, c, nsm.MonID{MonName: "peer-udp.example.com", MyID: my})
	if err != nil || r.State != state {
		t.Fatalf("SM_UNMON: %+v %v", r, err)
	}
	if st := td.status(); len(st.Monitored) != 1 || st.Monitored[0].MonName != "peer-tcp.example.com" {
		t.Fatalf("after SM_UNMON: %+v", st.Monitored)
	}
	// Unmonitoring what is not monitored answers our state too (nfs-utils).
	if r, err := callUnmon(ctx, c, nsm.MonID{MonName: "never.example.com", MyID: my}); err != nil || r.State != state {
		t.Fatalf("SM_UNMON of unknown: %+v %v", r, err)
	}
	callMon(ctx, c, nsm.Mon{ID: nsm.MonID{MonName: "other", MyID: nsm.MyID{Name: "x", Prog: 7, Vers: 1, Proc: 1}}})
	r, err = callUnmonAll(ctx, c, my)
	if err != nil || r.State != state {
		t.Fatalf("SM_UNMON_ALL: %+v %v", r, err)
	}
	if st := td.status(); len(st.Monitored) != 1 || st.Monitored[0].MonName != "other" {
		t.Fatalf("after SM_UNMON_ALL only the other registrant's host stays: %+v", st.Monitored)
	}
	// Unknown procedures are PROC_UNAVAIL, other versions PROG_MISMATCH.
	if err := c.Call(ctx, nsm.Program, nsm.Version, 7, nil, nil); !errors.Is(err, oncrpc.ErrProcUnavail) {
		t.Fatalf("proc 7: %v", err)
	}
	if err := c.Call(ctx, nsm.Program, 2, 0, nil, nil); !errors.Is(err, oncrpc.ErrProgMismatch) {
		t.Fatalf("version 2: %v", err)
	}
}

// TestMonIdempotentAndDurable: the same SM_MON twice is one registration;
// a new cookie replaces the old; a restart within the same boot keeps
// everything and the state; a reboot drops registrations, moves the state to
// the next odd number and owes each host a notification.
func TestMonIdempotentAndDurable(t *testing.T) {
	td := newTestDaemon(t, func(c *Config) { c.NoNotify = true })
	ctx := ctxT(t, 20*time.Second)
	c := td.dial("udp")
	my := nsm.MyID{Name: "127.0.0.1", Prog: 100021, Vers: 4, Proc: 16}
	m := nsm.Mon{ID: nsm.MonID{MonName: "10.1.2.3", MyID: my}, Priv: priv(1)}
	for range 3 {
		if r, err := callMon(ctx, c, m); err != nil || r.Res != nsm.StatSucc {
			t.Fatalf("SM_MON: %+v %v", r, err)
		}
	}
	st := td.status()
	if len(st.Monitored) != 1 || len(st.Monitored[0].Registrants) != 1 {
		t.Fatalf("duplicate SM_MON made %+v", st.Monitored)
	}
	m.Priv = priv(9)
	callMon(ctx, c, m)
	if st := td.status(); st.Monitored[0].Registrants[0].Priv != "090a0b0c0d0e0f101112131415161718" {
		t.Fatalf("new cookie not recorded: %+v", st.Monitored)
	}
	state := st.State

	td.restart()
	st = td.status()
	if st.State != state || len(st.Monitored) != 1 || len(st.Owed) != 0 {
		t.Fatalf("restart changed things: state %d→%d, %+v, owed %+v", state, st.State, st.Monitored, st.Owed)
	}

	writeBootID(t, td.bootID, "boot-2")
	td.restart()
	st = td.status()
	if st.State != state+2 || len(st.Monitored) != 0 || len(st.Owed) != 1 || st.Owed[0].Host != "10.1.2.3" || st.Owed[0].State != state+2 {
		t.Fatalf("reboot: state %d→%d, monitored %+v, owed %+v", state, st.State, st.Monitored, st.Owed)
	}
}

// nonLoopbackAddr finds an address of this machine that is not loopback,
// so a test can call the daemon as a "remote" caller without root.
func nonLoopbackAddr(t *testing.T) netip.Addr {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Skip(err)
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() && !p.Addr().IsLoopback() {
			return p.Addr()
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no non-loopback IPv4 address to call from, and CI=true")
	}
	t.Skip("no non-loopback IPv4 address to call from")
	return netip.Addr{}
}

// TestRemoteCallersRefused: SM_MON from a non-loopback address gets
// stat_fail/-1 and records nothing; SM_UNMON, SM_UNMON_ALL and SM_SIMU_CRASH
// are denied with AUTH_TOOWEAK; each refusal is logged once, quoted.
func TestRemoteCallersRefused(t *testing.T) {
	remote := nonLoopbackAddr(t)
	td := newTestDaemon(t, nil)
	ctx := ctxT(t, 20*time.Second)
	_, port, _ := strings.Cut(td.udp, ":")
	c := dialT(t, "udp", net.JoinHostPort(remote.String(), port))
	my := nsm.MyID{Name: "127.0.0.1", Prog: 100021, Vers: 4, Proc: 16}
	for range 3 {
		r, err := callMon(ctx, c, nsm.Mon{ID: nsm.MonID{MonName: "victim%n", MyID: my}})
		if err != nil || r.Res != nsm.StatFail || r.State != -1 {
			t.Fatalf("remote SM_MON: %+v %v, want stat_fail -1", r, err)
		}
	}
	if st := td.status(); len(st.Monitored) != 0 {
		t.Fatalf("remote SM_MON recorded %+v", st.Monitored)
	}
	if _, err := callUnmon(ctx, c, nsm.MonID{MonName: "x", MyID: my}); !isAuthTooWeak(err) {
		t.Fatalf("remote SM_UNMON: %v", err)
	}
	if _, err := callUnmonAll(ctx, c, my); !isAuthTooWeak(err) {
		t.Fatalf("remote SM_UNMON_ALL: %v", err)
	}
	if err := callSimuCrash(ctx, c); !isAuthTooWeak(err) {
		t.Fatalf("remote SM_SIMU_CRASH: %v", err)
	}
	// Anyone may ask SM_STAT and send SM_NOTIFY.
	if r, err := callStat(ctx, c, "127.0.0.1"); err != nil || r.Res != nsm.StatSucc {
		t.Fatalf("remote SM_STAT: %+v %v", r, err)
	}
	logs := td.logs.String()
	if n := strings.Count(logs, `msg="refused SM_MON"`); n != 1 {
		t.Fatalf("remote SM_MON refusal logged %d times, want once:\n%s", n, logs)
	}
	if !strings.Contains(logs, `value="\"victim%n\""`) || !strings.Contains(logs, "caller="+remote.String()) {
		t.Fatalf("refusal record lacks the quoted value or the caller:\n%s", logs)
	}
}

// TestBadNamesRefused: names with '/', a leading '.', control bytes or
// over 1024 bytes are refused with stat_fail (SM_MON, SM_STAT) or
// GARBAGE_ARGS (SM_NOTIFY) and never stored.
func TestBadNamesRefused(t *testing.T) {
	td := newTestDaemon(t, nil)
	ctx := ctxT(t, 20*time.Second)
	c := td.dial("tcp")
	good := nsm.MyID{Name: "127.0.0.1", Prog: 100021, Vers: 4, Proc: 16}
	for _, bad := range []string{"new\nline", "../etc/passwd", ".hidden", "a/b", "bell\a", "%s%s%s%n", ""} {
		r, err := callMon(ctx, c, nsm.Mon{ID: nsm.MonID{MonName: bad, MyID: good}})
		if bad == "%s%s%s%n" {
			// Printable, no '/', no leading '.': a legal if odd name.
			if err != nil || r.Res != nsm.StatSucc {
				t.Fatalf("SM_MON %q: %+v %v", bad, r, err)
			}
			continue
		}
		if err != nil || r.Res != nsm.StatFail {
			t.Fatalf("SM_MON %q: %+v %v, want stat_fail", bad, r, err)
		}
		if r, err := callStat(ctx, c, bad); err != nil || r.Res != nsm.StatFail {
			t.Fatalf("SM_STAT %q: %+v %v", bad, r, err)
		}
		if err := callNotify(ctx, c, bad, 3); !errors.Is(err, oncrpc.ErrGarbageArgs) {
			t.Fatalf("SM_NOTIFY %q: %v", bad, err)
		}
	}
	r, err := callMon(ctx, c, nsm.Mon{ID: nsm.MonID{MonName: "ok", MyID: nsm.MyID{Name: "me/../x", Prog: 1, Vers: 1, Proc: 1}}})
	if err != nil || r.Res != nsm.StatFail {
		t.Fatalf("SM_MON with bad my_name: %+v %v", r, err)
	}
	// Longer than SM_MAXSTRLEN does not even decode.
	long := strings.Repeat("a", nsm.MaxStrLen+1)
	err = c.Call(ctx, nsm.Program, nsm.Version, nsm.ProcStat, func(e *xdr.Encoder) { e.String(long) }, nil)
	if !errors.Is(err, oncrpc.ErrGarbageArgs) {
		t.Fatalf("SM_STAT of %d bytes: %v", len(long), err)
	}
	if st := td.status(); len(st.Monitored) != 1 || st.Monitored[0].MonName != "%s%s%s%n" {
		t.Fatalf("monitored: %+v", st.Monitored)
	}
	if !strings.Contains(td.logs.String(), `value="\"new\\nline\""`) {
		t.Fatalf("bad name not quoted in the log:\n%s", td.logs.String())
	}
}

// TestNotifyCallsRegistrantBack: an SM_NOTIFY matching a registration by
// name (also short against qualified) or by the sender's address calls the
// registrant back on loopback with its mon_name, the new state and its
// priv; the same state again (sm-notify's FQDN-then-short pair) calls
// nobody; SM_UNMON stops the callbacks.
func TestNotifyCallsRegistrantBack(t *testing.T) {
	td := newTestDaemon(t, nil)
	ctx := ctxT(t, 30*time.Second)
	reg := newRegistrant(t, td.rpcb, 200100)
	c := td.dial("udp")
	for _, m := range []nsm.Mon{
		{ID: nsm.MonID{MonName: "peer.example.com", MyID: reg.myID()}, Priv: priv(1)},
		{ID: nsm.MonID{MonName: "127.0.0.9", MyID: reg.myID()}, Priv: priv(2)},
	} {
		if r, err := callMon(ctx, c, m); err != nil || r.Res != nsm.StatSucc {
			t.Fatalf("SM_MON: %+v %v", r, err)
		}
	}
	if err := callNotify(ctx, c, "peer.example.com", 5); err != nil {
		t.Fatal(err)
	}
	g := reg.next(t, 5*time.Second)
	if g.st.MonName != "peer.example.com" || g.st.State != 5 || g.st.Priv != priv(1) || !g.from.Addr().IsLoopback() {
		t.Fatalf("callback %+v from %v", g.st, g.from)
	}
	// The short name, same state: already told.
	callNotify(ctx, c, "PEER", 5)
	reg.none(t, 300*time.Millisecond)
	// Short name, new state: the registrant hears of it.
	callNotify(ctx, c, "peer", 7)
	if g := reg.next(t, 5*time.Second); g.st.MonName != "peer.example.com" || g.st.State != 7 {
		t.Fatalf("callback %+v", g.st)
	}
	// By sender address: a peer announcing a name we do not know it by.
	if _, err := rawCall(t, "127.0.0.9:0", td.udp, nsm.ProcNotify, func(e *xdr.Encoder) {
		(&nsm.StatChange{MonName: "some-name-we-never-heard", State: 9}).Encode(e)
	}); err != nil {
		t.Fatal(err)
	}
	if g := reg.next(t, 5*time.Second); g.st.MonName != "127.0.0.9" || g.st.State != 9 || g.st.Priv != priv(2) {
		t.Fatalf("callback by address %+v", g.st)
	}
	callUnmon(ctx, c, nsm.MonID{MonName: "peer.example.com", MyID: reg.myID()})
	callNotify(ctx, c, "peer.example.com", 11)
	reg.none(t, 300*time.Millisecond)
}

// TestUnsolicitedNotifyRateLimited: a flood of SM_NOTIFY about hosts nobody
// monitors from one sender is answered up to the burst, then dropped.
func TestUnsolicitedNotifyRateLimited(t *testing.T) {
	td := newTestDaemon(t, nil)
	ctx := ctxT(t, 30*time.Second)
	c := td.dial("udp")
	answered, dropped := 0, 0
	for i := range 30 {
		cctx, cancel := context.WithTimeout(ctx, 150*time.Millisecond)
		err := callNotify(cctx, c, "stranger", int32(i))
		cancel()
		if err == nil {
			answered++
		} else {
			dropped++
		}
	}
	if answered < 5 || answered > 16 || dropped == 0 {
		t.Fatalf("answered %d, dropped %d of 30 unsolicited SM_NOTIFY", answered, dropped)
	}
	// Another sender still gets through.
	if _, err := rawCall(t, "127.0.0.3:0", td.udp, nsm.ProcNotify, func(e *xdr.Encoder) {
		(&nsm.StatChange{MonName: "stranger", State: 1}).Encode(e)
	}); err != nil {
		t.Fatalf("second sender: %v", err)
	}
	if n := strings.Count(td.logs.String(), "SM_NOTIFY rate limit"); n != 1 {
		t.Fatalf("rate limiting logged %d times, want once", n)
	}
}

// TestSimuCrash: from an unprivileged port it is denied; from a privileged
// loopback port (root only) the state moves on by two and every monitored
// host is notified of it, registrations kept.
func TestSimuCrash(t *testing.T) {
	td := newTestDaemon(t, func(c *Config) {
		c.Schedule = nsm.Schedule{FirstRetry: 100 * time.Millisecond, MaxRetry: 200 * time.Millisecond}
	})
	peer := newFakePeer(t, td.rpcb, "127.0.0.5")
	ctx := ctxT(t, 30*time.Second)
	c := td.dial("udp")
	if err := callSimuCrash(ctx, c); !isAuthTooWeak(err) {
		t.Fatalf("SM_SIMU_CRASH from port %v: %v", c.LocalAddr(), err)
	}
	netlab.RequireRoot(t) // a privileged source port needs root
	state := td.status().State
	callMon(ctx, c, nsm.Mon{ID: nsm.MonID{MonName: "127.0.0.5", MyID: nsm.MyID{Name: "l", Prog: 100021, Vers: 4, Proc: 16}}})
	pc := dialT(t, "udp", td.udp, oncrpc.WithPrivilegedPort())
	if err := callSimuCrash(ctx, pc); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-peer.calls:
		if n.to.String() != "127.0.0.5" || n.state != state+2 || n.name != "me.example.com" {
			t.Fatalf("notification %+v, want state %d", n, state+2)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no SM_NOTIFY after SM_SIMU_CRASH")
	}
	netlab.WaitFor(t, 5*time.Second, "nothing owed", func() error { return owedNone(td) })
	if st := td.status(); st.State != state+2 || len(st.Monitored) != 1 {
		t.Fatalf("after SM_SIMU_CRASH: state %d, monitored %+v", st.State, st.Monitored)
	}
}

// TestSimuCrashRetransmittedMovesStateOnce: SM_SIMU_CRASH sent twice with
// the same xid from the same privileged port (a UDP client's
// retransmission after a lost reply) moves the state by two, once; both
// get the same reply, sent once the new state is on disk. A new call moves
// it again. oncrpc had no duplicate
// request cache: the retransmission moved the state a second time.
func TestSimuCrashRetransmittedMovesStateOnce(t *testing.T) {
	td := newTestDaemon(t, nil)
	netlab.RequireRoot(t) // a privileged source port needs root
	ra, err := net.ResolveUDPAddr("udp", td.udp)
	if err != nil {
		t.Fatal(err)
	}
	var c *net.UDPConn
	for port := 1023; port >= 600 && c == nil; port-- {
		c, _ = net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}, ra)
	}
	if c == nil {
		t.Fatal("no free privileged port")
	}
	defer c.Close()
	crash := func(xid uint32) {
		t.Helper()
		e := xdr.NewEncoder(nil)
		(&oncrpc.CallHeader{XID: xid, RPCVersion: 2, Program: nsm.Program, Version: nsm.Version, Procedure: nsm.ProcSimuCrash}).Encode(e)
		if _, err := exchangeUDP(c, e.Bytes()); err != nil {
			t.Fatalf("SM_SIMU_CRASH xid %d: %v", xid, err)
		}
	}
	state := td.status().State
	crash(4242)
	// Persisted before the reply: the state file, written before the
	// store's commit, has it.
	if st, ok, err := nsm.ReadStateFile(filepath.Join(td.cfg.StateDir, StateFileName)); err != nil || !ok || st != state+2 {
		t.Fatalf("state file after the reply: %d, %v, %v; want %d", st, ok, err, state+2)
	}
	crash(4242) // the retransmission
	if got := td.status().State; got != state+2 {
		t.Fatalf("state %d after one SM_SIMU_CRASH and its retransmission, want %d", got, state+2)
	}
	crash(4243)
	if got := td.status().State; got != state+4 {
		t.Fatalf("state %d after a second SM_SIMU_CRASH, want %d", got, state+4)
	}
}

// TestHACallout: -H runs PROG add-client MON_NAME MY_NAME after SM_MON,
// del-client after SM_UNMON, and sm-notify MON_NAME IP STATE on SM_NOTIFY,
// in that order (nfs-utils' arguments).
func TestHACallout(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "calls")
	script := filepath.Join(dir, "callout")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"$@\" >> "+log+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	td := newTestDaemon(t, func(c *Config) { c.HACallout = script })
	ctx := ctxT(t, 20*time.Second)
	c := td.dial("udp")
	my := nsm.MyID{Name: "lockd-host", Prog: 100021, Vers: 4, Proc: 16}
	callMon(ctx, c, nsm.Mon{ID: nsm.MonID{MonName: "peer1", MyID: my}})
	callUnmon(ctx, c, nsm.MonID{MonName: "peer1", MyID: my})
	callNotify(ctx, c, "peer2", 7)
	want := "add-client peer1 lockd-host\ndel-client peer1 lockd-host\nsm-notify peer2 127.0.0.1 7\n"
	netlab.WaitFor(t, 5*time.Second, "the callouts", func() error {
		if b, _ := os.ReadFile(log); string(b) != want {
			return fmt.Errorf("callout log %q, want %q", b, want)
		}
		return nil
	})
}

// TestAdminRequests: the admin socket answers one JSON request line; a
// client that writes nothing (an older statdctl, `socat -`) still gets the
// status; an unknown or garbled request gets an error naming it, and the
// daemon keeps answering.
func TestAdminRequests(t *testing.T) {
	td := newTestDaemon(t, nil)
	ask := func(req string, closeWrite bool) map[string]any {
		t.Helper()
		c, err := net.Dial("unix", filepath.Join(td.cfg.StateDir, AdminSocketName))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if req != "" {
			io.WriteString(c, req)
		}
		if closeWrite {
			c.(*net.UnixConn).CloseWrite()
		}
		var ans map[string]any
		if err := json.NewDecoder(c).Decode(&ans); err != nil {
			t.Fatalf("request %q: %v", req, err)
		}
		return ans
	}
	for _, silent := range []bool{true, false} { // closed, or just quiet
		if ans := ask("", silent); ans["state"] != float64(1) || ans["pid"] == nil {
			t.Errorf("no request (write side closed %v): %v", silent, ans)
		}
	}
	if ans := ask(`{"op":"status"}`+"\n", false); ans["state"] != float64(1) {
		t.Errorf("status: %v", ans)
	}
	for req, want := range map[string]string{`{"op":"reboot"}` + "\n": `unknown request "reboot"`, "hello\n": `request "hello"`, `{"op":"forget","host":"a/b"}` + "\n": `forget: nsm: mon_name "a/b" contains`} {
		if ans := ask(req, false); !strings.Contains(fmt.Sprint(ans["error"]), want) {
			t.Errorf("request %q: %v, want an error with %q", req, ans, want)
		}
	}
	if st := td.status(); st.State != 1 {
		t.Fatalf("status after bad requests: %+v", st)
	}
}
