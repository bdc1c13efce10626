package statd

// Interoperability tests in network namespaces (internal/netlab) against the
// real Debian rpcbind, rpcinfo, rpc.statd and sm-notify, with our
// rpc.statd and statdctl as built binaries. They need root: without it they
// skip, unless CI=true, when they fail.

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/netlab"
	"github.com/hoststat/hoststat/nsm"
	"github.com/hoststat/hoststat/oncrpc"
	"github.com/hoststat/hoststat/oncrpc/rpcbind"
	"github.com/hoststat/hoststat/oncrpc/xdr"
)

type labTools struct {
	rpcbind, rpcinfo, nfsStatd, smNotify string
	ourStatd, statdctl                   string
}

func needLab(t testing.TB) labTools {
	t.Helper()
	netlab.RequireRoot(t)
	var lt labTools
	lt.rpcbind = netlab.RequireCommand(t, "rpcbind")
	lt.rpcinfo = netlab.RequireCommand(t, "rpcinfo")
	lt.nfsStatd = netlab.RequireCommand(t, "rpc.statd")
	lt.smNotify = netlab.RequireCommand(t, "sm-notify")
	bin := netlab.BuildCommands(t, "./cmd/rpc.statd", "./cmd/statdctl")
	lt.ourStatd = filepath.Join(bin, "rpc.statd")
	lt.statdctl = filepath.Join(bin, "statdctl")
	return lt
}

// startRPCBind runs the real rpcbind on h and waits until it answers.
func startRPCBind(t testing.TB, ctx context.Context, lt labTools, h *netlab.Host) *netlab.Proc {
	t.Helper()
	p := h.Start(lt.rpcbind, "-f", "-w")
	netlab.WaitFor(t, 5*time.Second, "rpcbind on "+h.Name, func() error {
		_, err := h.Run(ctx, lt.rpcinfo, "-p")
		return err
	})
	return p
}

// registeredOn waits until h's rpcbind lists program prog on udp and tcp.
func registeredOn(t testing.TB, ctx context.Context, lt labTools, h *netlab.Host, prog string) {
	t.Helper()
	netlab.WaitFor(t, 10*time.Second, prog+" registered on "+h.Name, func() error {
		out, err := h.Run(ctx, lt.rpcinfo, "-p")
		if err != nil {
			return err
		}
		if n := strings.Count(out, " "+prog+" "); n < 2 {
			return fmt.Errorf("%s on udp and tcp not listed:\n%s", prog, out)
		}
		return nil
	})
}

// ourStatus runs statdctl --json on h.
func ourStatus(t *testing.T, ctx context.Context, lt labTools, h *netlab.Host, dir string) *Status {
	t.Helper()
	out, err := h.Run(ctx, lt.statdctl, "-P", dir, "--json")
	if err != nil {
		t.Fatalf("statdctl on %s: %v\n%s", h.Name, err, out)
	}
	var st Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("statdctl --json: %v\n%s", err, out)
	}
	return &st
}

// labRegistrant is a lock manager stand-in living in a lab host: an RPC
// server on the host's loopback, registered with the host's rpcbind
// (through its unix socket, reached via the host's /proc/PID/root), that
// records the status callbacks it receives.
type labRegistrant struct {
	h                *netlab.Host
	prog, vers, proc uint32
	port             int
	got              chan gotStatus
	srv              *oncrpc.Server
}

func newLabRegistrant(t *testing.T, h *netlab.Host, prog, vers, proc uint32) *labRegistrant {
	t.Helper()
	r := &labRegistrant{h: h, prog: prog, vers: vers, proc: proc, got: make(chan gotStatus, 64),
		srv: &oncrpc.Server{Logger: slog.New(slog.DiscardHandler)}}
	r.srv.Handle(prog, vers, proc, func(_ context.Context, call *oncrpc.Call, _ *xdr.Encoder) error {
		var st nsm.Status
		if err := st.Decode(call.Args); err != nil {
			return err
		}
		r.got <- gotStatus{st, call.Remote}
		return nil
	})
	r.port = serveInLab(t, h, r.srv, prog, vers, "127.0.0.1")
	return r
}

// serveInLab serves srv on h's address bind (loopback, or 0.0.0.0 for
// callers from other hosts) over UDP and TCP, one port, registered as
// prog/vers with h's rpcbind (through its unix socket, reached via the
// host's /proc/PID/root); it returns the port.
func serveInLab(t *testing.T, h *netlab.Host, srv *oncrpc.Server, prog, vers uint32, bind string) int {
	t.Helper()
	var pc net.PacketConn
	var ln net.Listener
	err := h.Do(func() error {
		var err error
		if pc, err = net.ListenPacket("udp4", bind+":0"); err != nil {
			return err
		}
		ln, err = net.Listen("tcp4", fmt.Sprintf("%s:%d", bind, pc.LocalAddr().(*net.UDPAddr).Port))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	go srv.ServeUDP(pc)
	go srv.ServeTCP(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	sock := fmt.Sprintf("/proc/%d/root%s", h.HolderPid(), rpcbind.LocalSocket)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := rpcbind.Dial(ctx, "unix", sock)
	if err != nil {
		t.Fatalf("rpcbind socket of %s: %v", h.Name, err)
	}
	defer c.Close()
	for _, netid := range []string{"udp", "tcp"} {
		ua := rpcbind.EncodeUniversalAddr(netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(port)))
		ok, err := c.Set(ctx, rpcbind.Binding{Program: prog, Version: vers, Netid: netid, Addr: ua, Owner: "0"})
		if err != nil || !ok {
			t.Fatalf("registering %d/%d %s with %s's rpcbind: ok=%v %v", prog, vers, netid, h.Name, ok, err)
		}
	}
	return port
}

func (r *labRegistrant) myID(name string) nsm.MyID {
	return nsm.MyID{Name: name, Prog: r.prog, Vers: r.vers, Proc: r.proc}
}

// statdAddr finds the NSM service on h's loopback over UDP through h's
// rpcbind, as the kernel's lock manager does.
func statdAddr(t testing.TB, h *netlab.Host) netip.AddrPort {
	t.Helper()
	var ap netip.AddrPort
	err := h.Do(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var err error
		ap, err = rpcbind.Lookup(ctx, netip.AddrFrom4([4]byte{127, 0, 0, 1}), nsm.Program, nsm.Version, "udp")
		return err
	})
	if err != nil {
		t.Fatalf("statd on %s through rpcbind: %v", h.Name, err)
	}
	return ap
}

// statdClient dials the NSM service of h's loopback over UDP (statdAddr).
func statdClient(t *testing.T, h *netlab.Host) *oncrpc.Client {
	t.Helper()
	addr := statdAddr(t, h)
	var c *oncrpc.Client
	err := h.Do(func() error {
		var err error
		c, err = oncrpc.Dial(context.Background(), "udp", addr.String(),
			oncrpc.WithRetransmit(100*time.Millisecond, time.Second), oncrpc.WithCallTimeout(10*time.Second))
		return err
	})
	if err != nil {
		t.Fatalf("statd on %s: %v", h.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (r *labRegistrant) next(t *testing.T, within time.Duration) gotStatus {
	t.Helper()
	select {
	case g := <-r.got:
		return g
	case <-time.After(within):
		t.Fatalf("no callback to %d/%d/%d on %s within %v", r.prog, r.vers, r.proc, r.h.Name, within)
	}
	return gotStatus{}
}

// nfsState reads the state number nfs-utils keeps in DIR/state (an int in
// host byte order).
func nfsState(t *testing.T, dir string) int32 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "state"))
	if err != nil || len(b) != 4 {
		t.Fatalf("nfs-utils state file: %v (%d bytes)", err, len(b))
	}
	return int32(binary.NativeEndian.Uint32(b))
}

// TestInteropRPCInfo (1): rpcinfo lists our statd on udp and tcp (and
// udp6/tcp6), pings it over both from the host and from a peer, statdctl
// answers; SIGTERM unregisters it. Then the same daemon started without -F:
// the command returns only once it is registered.
func TestInteropRPCInfo(t *testing.T) {
	lt := needLab(t)
	ctx := ctxT(t, 90*time.Second)
	lab := netlab.New(t)
	a, b := lab.AddHost("a"), lab.AddHost("b")
	startRPCBind(t, ctx, lt, a)
	dir := t.TempDir()
	statd := a.Start(lt.ourStatd, "-F", "-d", "-P", dir)
	registeredOn(t, ctx, lt, a, "100024")
	out, _ := a.Run(ctx, lt.rpcinfo, "-p")
	if !regexp.MustCompile(`100024\s+1\s+udp\s+\d+\s+status`).MatchString(out) || !regexp.MustCompile(`100024\s+1\s+tcp\s+\d+\s+status`).MatchString(out) {
		t.Fatalf("rpcinfo -p:\n%s", out)
	}
	out, _ = a.Run(ctx, lt.rpcinfo, "-s")
	if m := regexp.MustCompile(`100024\s+1\s+(\S+)`).FindStringSubmatch(out); m == nil || len(strings.Split(m[1], ",")) != 4 {
		t.Errorf("rpcinfo -s should list udp, tcp, udp6 and tcp6:\n%s", out)
	}
	for _, proto := range []string{"udp", "tcp"} {
		if out, err := a.Run(ctx, lt.rpcinfo, "-T", proto, "127.0.0.1", "100024", "1"); err != nil || !strings.Contains(out, "ready and waiting") {
			t.Errorf("rpcinfo -T %s 127.0.0.1: %q %v", proto, out, err)
		}
		if out, err := b.Run(ctx, lt.rpcinfo, "-T", proto, a.Addr.String(), "100024", "1"); err != nil || !strings.Contains(out, "ready and waiting") {
			t.Errorf("rpcinfo -T %s from b: %q %v", proto, out, err)
		}
	}
	if out, err := b.Run(ctx, lt.rpcinfo, "-T", "udp6", a.Addr6.String(), "100024", "1"); err != nil || !strings.Contains(out, "ready and waiting") {
		t.Errorf("rpcinfo -T udp6 from b: %q %v", out, err)
	}
	if out, err := a.Run(ctx, lt.statdctl, "-P", dir); err != nil || !strings.Contains(out, "state 1") || !strings.Contains(out, "notifications owed: 0") {
		t.Errorf("statdctl:\n%s %v", out, err)
	}
	if err := statd.Stop(); err != nil {
		t.Errorf("SIGTERM: %v", err)
	}
	if out, _ := a.Run(ctx, lt.rpcinfo, "-p"); strings.Contains(out, "100024") {
		t.Errorf("still registered after SIGTERM:\n%s", out)
	}

	// Daemonized: returns once serving and registered, exit status 0.
	start := time.Now()
	if out, err := a.Run(ctx, lt.ourStatd, "-P", dir); err != nil {
		t.Fatalf("rpc.statd (daemonizing): %v\n%s", err, out)
	}
	out, err := a.Run(ctx, lt.rpcinfo, "-p")
	if err != nil || strings.Count(out, " 100024 ") < 2 {
		t.Fatalf("not registered when the parent exited (%v):\n%s", time.Since(start), out)
	}
	st := ourStatus(t, ctx, lt, a, dir)
	if st.State != 1 {
		t.Errorf("daemon restart in the same boot changed the state to %d", st.State)
	}
	// A second daemon on the same state directory fails, and says why.
	if out, err := a.Run(ctx, lt.ourStatd, "-P", dir); err == nil || !strings.Contains(out, "locked") {
		t.Errorf("second daemon: %v\n%s", err, out)
	}
	if _, err := a.Run(ctx, "kill", "-TERM", strconv.Itoa(st.Pid)); err != nil {
		t.Fatal(err)
	}
	netlab.WaitFor(t, 5*time.Second, "unregistered", func() error {
		out, _ := a.Run(ctx, lt.rpcinfo, "-p")
		if strings.Contains(out, "100024") {
			return fmt.Errorf("still listed:\n%s", out)
		}
		return nil
	})
}

// peerPair is the two-host scene of tests (2) and (3): a runs our statd, b
// the real nfs-utils one, each with its rpcbind and a registrant.
type peerPair struct {
	lt         labTools
	a, b       *netlab.Host
	dirA, dirB string
	ours, nfs  *netlab.Proc
	regA, regB *labRegistrant
}

func newPeerPair(t *testing.T, ctx context.Context) *peerPair {
	lt := needLab(t)
	lab := netlab.New(t)
	p := &peerPair{lt: lt, a: lab.AddHost("a"), b: lab.AddHost("b"), dirA: t.TempDir(), dirB: netlab.MakeStatdDir(t)}
	startRPCBind(t, ctx, lt, p.a)
	startRPCBind(t, ctx, lt, p.b)
	p.ours = p.a.Start(lt.ourStatd, "-F", "-d", "-P", p.dirA, "--callback-program", "300100")
	p.nfs = p.b.Start(lt.nfsStatd, "-F", "-d", "-L", "-P", p.dirB)
	registeredOn(t, ctx, lt, p.a, "100024")
	registeredOn(t, ctx, lt, p.b, "100024")
	// nfs-utils' statd accepts registrations for the kernel's lock
	// manager only (program 100021, procedure 16 or 24).
	p.regA = newLabRegistrant(t, p.a, 300100, 1, 1)
	p.regB = newLabRegistrant(t, p.b, 100021, 4, 16)
	return p
}

// TestInteropPeerRestart (2): a registrant on our host monitors the peer
// (by name and by address); the peer running nfs-utils "reboots" (statd
// stopped, sm-notify run on its state directory); our statd calls our
// registrant back with the registered name, the peer's new state and the
// registration's priv, once per registration.
func TestInteropPeerRestart(t *testing.T) {
	ctx := ctxT(t, 90*time.Second)
	p := newPeerPair(t, ctx)
	// The peer's lock manager monitors us, so its sm-notify has us to notify.
	cb := statdClient(t, p.b)
	if r, err := callMon(ctx, cb, nsm.Mon{ID: nsm.MonID{MonName: p.a.Addr.String(), MyID: p.regB.myID("b")}, Priv: priv(0x40)}); err != nil || r.Res != nsm.StatSucc {
		t.Fatalf("SM_MON on nfs-utils statd: %+v %v", r, err)
	}
	ca := statdClient(t, p.a)
	ourState := ourStatus(t, ctx, p.lt, p.a, p.dirA).State
	for i, name := range []string{"b", p.b.Addr.String()} {
		r, err := callMon(ctx, ca, nsm.Mon{ID: nsm.MonID{MonName: name, MyID: p.regA.myID("a")}, Priv: priv(byte(0x10 * (i + 1)))})
		if err != nil || r.Res != nsm.StatSucc || r.State != ourState {
			t.Fatalf("SM_MON %s on our statd: %+v %v", name, r, err)
		}
	}
	if err := p.nfs.Stop(); err != nil {
		t.Logf("nfs-utils statd on SIGTERM: %v", err)
	}
	nctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if out, err := p.b.Run(nctx, p.lt.smNotify, "-d", "-f", "-P", p.dirB); err != nil {
		t.Fatalf("sm-notify on b: %v\n%s", err, out)
	}
	peerState := nfsState(t, p.dirB)
	got := map[string]gotStatus{}
	for range 2 {
		g := p.regA.next(t, 10*time.Second)
		got[g.st.MonName] = g
	}
	for i, name := range []string{"b", p.b.Addr.String()} {
		g, ok := got[name]
		if !ok || g.st.State != peerState || g.st.Priv != priv(byte(0x10*(i+1))) || !g.from.Addr().IsLoopback() || g.from.Port() >= 1024 {
			t.Errorf("callback for %s: %+v from %v (want state %d, priv %x, from a privileged loopback port)", name, g.st, g.from, peerState, priv(byte(0x10*(i+1))))
		}
	}
	select {
	case g := <-p.regA.got:
		t.Errorf("extra callback %+v", g.st)
	case <-time.After(500 * time.Millisecond):
	}
}

// TestInteropOurReboot (3): our host "reboots" (rpc.statd -n, then the
// daemon): the peer's real statd, which monitors us for its lock manager,
// hears our new state and calls that registrant back with it; the daemon
// then starts without notifying again or changing the state. Over IPv4 (we
// monitor the peer by name, it monitors our address) and over IPv6 (each
// monitors the other's IPv6 address only, so the SM_NOTIFY goes out over
// udp6, the peer's port found with rpcbind GETADDR).
func TestInteropOurReboot(t *testing.T) {
	for _, ipv6 := range []bool{false, true} {
		t.Run(map[bool]string{false: "IPv4", true: "IPv6"}[ipv6], func(t *testing.T) {
			ctx := ctxT(t, 90*time.Second)
			p := newPeerPair(t, ctx)
			us, peer := p.a.Addr.String(), "b"
			if ipv6 {
				us, peer = p.a.Addr6.String(), p.b.Addr6.String()
			}
			cb := statdClient(t, p.b)
			if r, err := callMon(ctx, cb, nsm.Mon{ID: nsm.MonID{MonName: us, MyID: p.regB.myID("b")}, Priv: priv(0x70)}); err != nil || r.Res != nsm.StatSucc {
				t.Fatalf("SM_MON %s on nfs-utils statd: %+v %v", us, r, err)
			}
			// Our lock manager monitors b, so we owe b a notification at reboot.
			ca := statdClient(t, p.a)
			if r, err := callMon(ctx, ca, nsm.Mon{ID: nsm.MonID{MonName: peer, MyID: p.regA.myID("a")}}); err != nil || r.Res != nsm.StatSucc {
				t.Fatalf("SM_MON %s on our statd: %+v %v", peer, r, err)
			}
			before := ourStatus(t, ctx, p.lt, p.a, p.dirA).State
			if err := p.ours.Stop(); err != nil {
				t.Fatal(err)
			}
			out, err := p.a.Run(ctx, p.lt.ourStatd, "-n", "-P", p.dirA)
			want := fmt.Sprintf("state %d: notified 1 of 1 hosts; 0 still owed", before+2)
			if err != nil || !strings.Contains(out, want) {
				t.Fatalf("rpc.statd -n: %v\n%s\nwant %q", err, out, want)
			}
			g := p.regB.next(t, 10*time.Second)
			if g.st.MonName != us || g.st.State != before+2 || g.st.Priv != priv(0x70) {
				t.Fatalf("nfs-utils statd called back %+v, want mon_name %s state %d", g.st, us, before+2)
			}
			p.ours = p.a.Start(p.lt.ourStatd, "-F", "-d", "-P", p.dirA, "--callback-program", "300100")
			registeredOn(t, ctx, p.lt, p.a, "100024")
			st := ourStatus(t, ctx, p.lt, p.a, p.dirA)
			if st.State != before+2 || len(st.Owed) != 0 || len(st.Monitored) != 0 {
				t.Fatalf("daemon after -n: state %d owed %+v monitored %+v", st.State, st.Owed, st.Monitored)
			}
			select {
			case g := <-p.regB.got:
				t.Errorf("the daemon notified again: %+v", g.st)
			case <-time.After(time.Second):
			}
		})
	}
}

// TestInteropUnreachablePeer (4): a peer whose link is down at our reboot
// is left owed by rpc.statd -n (exit status 1), retried by the daemon on a
// short schedule, and notified once its link is back.
func TestInteropUnreachablePeer(t *testing.T) {
	lt := needLab(t)
	ctx := ctxT(t, 120*time.Second)
	lab := netlab.New(t)
	a, c := lab.AddHost("a"), lab.AddHost("c")
	dirA, dirC := t.TempDir(), netlab.MakeStatdDir(t)
	startRPCBind(t, ctx, lt, a)
	startRPCBind(t, ctx, lt, c)
	ours := a.Start(lt.ourStatd, "-F", "-d", "-P", dirA, "--callback-program", "300100")
	nfs := c.Start(lt.nfsStatd, "-F", "-d", "-L", "-P", dirC)
	registeredOn(t, ctx, lt, a, "100024")
	registeredOn(t, ctx, lt, c, "100024")
	reg := newLabRegistrant(t, a, 300100, 1, 1)
	if r, err := callMon(ctx, statdClient(t, a), nsm.Mon{ID: nsm.MonID{MonName: "c", MyID: reg.myID("a")}}); err != nil || r.Res != nsm.StatSucc {
		t.Fatalf("SM_MON: %+v %v", r, err)
	}
	ours.Stop()
	if err := c.LinkDown(); err != nil {
		t.Fatal(err)
	}
	out, err := a.Run(ctx, lt.ourStatd, "-n", "-P", dirA)
	if err == nil || !strings.Contains(out, "notified 0 of 1 hosts; 1 still owed") {
		t.Fatalf("rpc.statd -n with c down: %v\n%s", err, out)
	}
	a.Start(lt.ourStatd, "-F", "-d", "-P", dirA, "--notify-schedule", "first-retry=200ms,max-retry=500ms", "--callback-program", "300100")
	registeredOn(t, ctx, lt, a, "100024")
	st := ourStatus(t, ctx, lt, a, dirA)
	if len(st.Owed) != 1 || st.Owed[0].Host != "c" || st.Owed[0].Attempts < 1 {
		t.Fatalf("owed while c is down: %+v", st.Owed)
	}
	state := st.State
	netlab.WaitFor(t, 20*time.Second, "a failed attempt by the daemon", func() error {
		if st := ourStatus(t, ctx, lt, a, dirA); len(st.Owed) != 1 || st.Owed[0].Attempts < 2 {
			return fmt.Errorf("owed %+v", st.Owed)
		}
		return nil
	})
	if err := c.LinkUp(); err != nil {
		t.Fatal(err)
	}
	netlab.WaitFor(t, 20*time.Second, "c's statd to hear our SM_NOTIFY", func() error {
		want := fmt.Sprintf("state: %d", state)
		if !strings.Contains(nfs.Output(), "Received SM_NOTIFY") || !strings.Contains(nfs.Output(), want) {
			return fmt.Errorf("nfs-utils statd output has no SM_NOTIFY with %q:\n%s", want, nfs.Output())
		}
		return nil
	})
	netlab.WaitFor(t, 10*time.Second, "nothing owed", func() error {
		if st := ourStatus(t, ctx, lt, a, dirA); len(st.Owed) != 0 {
			return fmt.Errorf("owed %+v", st.Owed)
		}
		return nil
	})
}

// TestInteropKillDuringMonBurst (5): SIGKILL of our statd in the middle of
// a burst of concurrent SM_MON calls loses no acknowledged registration, and
// the state number never goes backwards, over 20 rounds; every fifth round
// starts after a "reboot" (new boot id), where the state must move on.
func TestInteropKillDuringMonBurst(t *testing.T) {
	lt := needLab(t)
	ctx := ctxT(t, 240*time.Second)
	lab := netlab.New(t)
	a := lab.AddHost("a")
	startRPCBind(t, ctx, lt, a)
	dir := t.TempDir()
	bootFile := filepath.Join(dir, "boot_id")
	writeBootID(t, bootFile, "boot-0")
	var acked []string
	var lastState int32
	const rounds, callers = 20, 32
	for round := range rounds {
		rebooted := round > 0 && round%5 == 0
		if rebooted {
			writeBootID(t, bootFile, fmt.Sprintf("boot-%d", round))
		}
		proc := a.Start(lt.ourStatd, "-F", "-P", dir, "--boot-id-path", bootFile)
		// rpcbind still lists the killed daemon: wait for the new one's
		// admin socket, which opens after it registered.
		var st *Status
		netlab.WaitFor(t, 10*time.Second, "the new daemon", func() error {
			out, err := a.Run(ctx, lt.statdctl, "-P", dir, "--json")
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			st = &Status{}
			if err := json.Unmarshal([]byte(out), st); err != nil {
				return err
			}
			if st.Pid != proc.Pid() {
				return fmt.Errorf("pid %d answers, want %d", st.Pid, proc.Pid())
			}
			return nil
		})
		if st.State < lastState || (rebooted && st.State <= lastState) || st.State%2 != 1 {
			t.Fatalf("round %d: state %d after %d (reboot %v)", round, st.State, lastState, rebooted)
		}
		lastState = st.State
		if !rebooted {
			have := map[string]bool{}
			for _, m := range st.Monitored {
				have[m.MonName] = true
			}
			for _, name := range acked {
				if !have[name] {
					t.Fatalf("round %d: acknowledged SM_MON of %s lost by SIGKILL", round, name)
				}
			}
		}
		acked = acked[:0]
		for _, m := range st.Monitored {
			acked = append(acked, m.MonName)
		}

		c := statdClient(t, a)
		var mu sync.Mutex
		var fresh atomic.Int64 // acknowledged in this round
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for w := range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					name := fmt.Sprintf("r%d-w%d-%d.example.com", round, w, i)
					cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
					r, err := callMon(cctx, c, nsm.Mon{ID: nsm.MonID{MonName: name, MyID: nsm.MyID{Name: "127.0.0.1", Prog: 100021, Vers: 4, Proc: 16}}})
					cancel()
					if err != nil {
						return // the daemon is gone
					}
					if r.Res == nsm.StatSucc {
						mu.Lock()
						acked = append(acked, name)
						mu.Unlock()
						fresh.Add(1)
					}
				}
			}()
		}
		// Kill at a random point of the burst, once it is under way.
		netlab.WaitFor(t, 10*time.Second, "SM_MON acknowledged", func() error {
			if fresh.Load() == 0 {
				return errors.New("none yet")
			}
			return nil
		})
		time.Sleep(time.Duration(rand.IntN(200)) * time.Millisecond)
		proc.Kill()
		close(stop)
		wg.Wait()
		c.Close()
		t.Logf("round %d: state %d, %d SM_MON acknowledged this round, %d registrations in all", round, lastState, fresh.Load(), len(acked))
	}
}

// TestInteropNotifyThroughDaemon: the systemd order of nfs-utils (the
// daemon with -L, then the notify unit after nfs-server.service). Our host
// reboots (new boot id) and our daemon, which serves as the owner of its
// state directory, starts with -L: it moves the state on but tells nobody;
// then `rpc.statd -n`, the real binary with no more capabilities than
// hoststat-statd-notify.service gives it (the daemon has what
// hoststat-statd.service gives it), asks that daemon over the admin
// socket: the peer's real statd hears the new state and calls its
// registrant back; the summary line and exit status are those of -n on its
// own, and the state does not move again.
func TestInteropNotifyThroughDaemon(t *testing.T) {
	ctx := ctxT(t, 90*time.Second)
	p := newPeerPair(t, ctx)
	exe := buildNoCgo(t)
	caps := unitCapabilities(t, "hoststat-statd-notify.service")
	daemonCaps := unitCapabilities(t, "hoststat-statd.service")
	if err := p.ours.Stop(); err != nil {
		t.Fatal(err)
	}
	// A state directory owned by an ordinary user, as packaged.
	dir, err := os.MkdirTemp("", "statd-notify-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o700)
	start := func(args ...string) {
		// The daemon too has only what hoststat-statd.service gives it.
		p.ours = p.a.Start("setpriv", append([]string{"--bounding-set", daemonCaps, "--inh-caps", "-all", "--",
			exe, "-F", "-d", "-P", dir, "--nfs-utils-dir", "", "--callback-program", "300100"}, args...)...)
		netlab.WaitFor(t, 10*time.Second, "our daemon serving as nobody", func() error {
			if !strings.Contains(p.ours.Output(), "dropped root") {
				return errors.New("not yet")
			}
			return nil
		})
	}
	start()
	us := p.a.Addr.String()
	if r, err := callMon(ctx, statdClient(t, p.b), nsm.Mon{ID: nsm.MonID{MonName: us, MyID: p.regB.myID("b")}, Priv: priv(0x71)}); err != nil || r.Res != nsm.StatSucc {
		t.Fatalf("SM_MON %s on nfs-utils statd: %+v %v", us, r, err)
	}
	if r, err := callMon(ctx, statdClient(t, p.a), nsm.Mon{ID: nsm.MonID{MonName: "b", MyID: p.regA.myID("a")}}); err != nil || r.Res != nsm.StatSucc {
		t.Fatalf("SM_MON b on our statd: %+v %v", r, err)
	}
	before := ourStatus(t, ctx, p.lt, p.a, dir).State
	if err := p.ours.Stop(); err != nil {
		t.Fatal(err)
	}
	bootFile := filepath.Join(t.TempDir(), "boot_id")
	writeBootID(t, bootFile, "rebooted")
	start("-L", "--boot-id-path", bootFile)
	st := ourStatus(t, ctx, p.lt, p.a, dir)
	if st.State != before+2 || len(st.Owed) != 1 || st.Pid != p.ours.Pid() {
		t.Fatalf("after the reboot under -L: state %d owed %+v pid %d", st.State, st.Owed, st.Pid)
	}
	select {
	case g := <-p.regB.got:
		t.Fatalf("notified under -L before -n: %+v", g.st)
	case <-time.After(time.Second):
	}
	out, err := p.a.Run(ctx, "setpriv", append([]string{"--bounding-set", caps, "--inh-caps", "-all", "--"}, exe, "-n", "-P", dir)...)
	want := fmt.Sprintf("rpc.statd: state %d: notified 1 of 1 hosts; 0 still owed", before+2)
	if err != nil || !strings.Contains(out, want) || !strings.Contains(out, strconv.Itoa(p.ours.Pid())) {
		t.Fatalf("rpc.statd -n with bounding set %s: %v\n%s\nwant %q from the daemon (pid %d)", caps, err, out, want, p.ours.Pid())
	}
	g := p.regB.next(t, 10*time.Second)
	if g.st.MonName != us || g.st.State != before+2 || g.st.Priv != priv(0x71) {
		t.Fatalf("nfs-utils statd called back %+v, want state %d", g.st, before+2)
	}
	if st := ourStatus(t, ctx, p.lt, p.a, dir); st.State != before+2 || len(st.Owed) != 0 || st.Pid != p.ours.Pid() {
		t.Fatalf("after -n: state %d owed %+v pid %d", st.State, st.Owed, st.Pid)
	}
}

// unitCapabilities reads a packaged unit's CapabilityBoundingSet as
// setpriv --bounding-set wants it: -all,+cap,...
func unitCapabilities(t *testing.T, unit string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "packaging", "systemd", unit))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapabilityBoundingSet="); ok {
			set := "-all"
			for _, c := range strings.Fields(v) {
				set += ",+" + strings.ToLower(strings.TrimPrefix(c, "CAP_"))
			}
			return set
		}
	}
	t.Fatalf("%s: no CapabilityBoundingSet", unit)
	return ""
}
