package statd

// Telemetry tests (docs/liveness.md) in the network lab, every daemon a
// real process: recvstats, sendstats, rpcbind, our rpc.statd and statdctl,
// and the nfs-utils rpc.statd and sm-notify as the client's.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/netlab"
	"github.com/hoststat/hoststat/liveness"
	"github.com/hoststat/hoststat/nsm"
	"github.com/hoststat/hoststat/oncrpc"
	"github.com/hoststat/hoststat/oncrpc/rpcbind"
	"github.com/hoststat/hoststat/shm"
	"github.com/hoststat/hoststat/view/viewtest"
)

const (
	telemetryPeriod = time.Second // sendstats -r 1 and rpc.statd --telemetry-period
	// labSlack is what a bound on time allows beyond the sample periods
	// the requirement names: two CPUs shared with other tests' processes
	// delay a scan, a process's wake-up and an RPC round trip.
	labSlack = time.Second
	// The client's boots (its boot id and boot time in the /proc copy).
	bootA, bootB = "11111111-2222-4333-8444-555555555555", "66666666-7777-4888-8999-aaaaaaaaaaaa"
	btimeA       = 1795312373
	// Our statd's metrics, on a's loopback.
	labMetrics = "127.0.0.1:9100"
)

// telLab is the lab of the telemetry tests. Host a is the master:
// rpcbind, recvstats writing the table, our rpc.statd --telemetry (with
// its boot id, lock manager grace file and metrics), and a registrant
// standing in for its lock manager (program 300100). Host b is the client,
// node 7: sendstats reading a copy of a captured /proc whose boot the test
// changes, in boot bootA at the start; a test adds b's rpcbind and
// nfs-utils statd when it wants them.
type telLab struct {
	t        *testing.T
	ctx      context.Context
	lt       labTools
	a, b     *netlab.Host
	dirA     string // our statd's state directory
	shmDir   string // the table
	bootFile string // our statd's boot id (--boot-id-path)
	grace    string // our lock manager's grace file (--end-grace-path), empty at the start
	oursArgs []string
	ours     *netlab.Proc
	reg      *labRegistrant
	proc     *netlab.ProcTree
	sendBin  string
	sendArgs []string
	send     *netlab.Proc
}

// newTelLab starts the lab, our statd with args added to its command line.
func newTelLab(t *testing.T, ctx context.Context, args ...string) *telLab {
	t.Helper()
	lt := needLab(t)
	tbin := netlab.BuildCommands(t, "./cmd/recvstats", "./cmd/sendstats")
	lab := netlab.New(t)
	l := &telLab{t: t, ctx: ctx, lt: lt, a: lab.AddHost("a"), b: lab.AddHost("b"), dirA: t.TempDir(), shmDir: t.TempDir(),
		proc: netlab.NewProcTree(t, "../telemetry/sample/testdata/proc/vm2"), sendBin: filepath.Join(tbin, "sendstats")}
	l.bootFile, l.grace = filepath.Join(t.TempDir(), "boot_id"), filepath.Join(t.TempDir(), "nlm_end_grace")
	writeBootID(t, l.bootFile, "boot-1")
	if err := os.WriteFile(l.grace, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	startRecvstats(t, l.a, tbin, l.shmDir, l.b.Addr.String())
	l.sendArgs = []string{"-d", "-a", l.a.Addr.String() + ":3040", "--node", "7", "-r", "1", "--proc", l.proc.Dir}
	l.boot(bootA, btimeA)
	tableShows(t, l.shmDir, bootA)
	startRPCBind(t, ctx, lt, l.a)
	l.oursArgs = append([]string{"-F", "-d", "-P", l.dirA, "--callback-program", "300100",
		"--telemetry", l.shmDir, "--telemetry-period", telemetryPeriod.String(), "--boot-id-path", l.bootFile,
		"--end-grace-path", l.grace, "--metrics", labMetrics}, args...)
	l.startOurs()
	l.reg = newLabRegistrant(t, l.a, 300100, 1, 1)
	return l
}

// startRecvstats runs recvstats on h writing the table in shmDir, with
// node 7 at client (the address its sendstats sends from).
func startRecvstats(t *testing.T, h *netlab.Host, tbin, shmDir, client string) {
	t.Helper()
	nodeMap := filepath.Join(t.TempDir(), "nodes")
	if err := os.WriteFile(nodeMap, []byte("7 "+client+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.Start(filepath.Join(tbin, "recvstats"), "-d", "--listen", h.Addr.String(), "-p", "3040", "--shm-dir", shmDir,
		"--node-map", nodeMap, "--down-after", "2500ms")
}

// startOurs starts our statd and waits until it answers statdctl.
func (l *telLab) startOurs() {
	l.t.Helper()
	l.ours = l.a.Start(l.lt.ourStatd, l.oursArgs...)
	netlab.WaitFor(l.t, 10*time.Second, "our statd serving", func() error {
		out, err := l.a.Run(l.ctx, l.lt.statdctl, "-P", l.dirA, "--json")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		var st Status
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			return err
		}
		if st.Pid != l.ours.Pid() {
			return fmt.Errorf("pid %d answers, want %d", st.Pid, l.ours.Pid())
		}
		return nil
	})
}

// restartOurs stops our statd (SIGTERM) and starts it again; in a new boot
// of a when bootID is not "".
func (l *telLab) restartOurs(bootID string) {
	l.t.Helper()
	if err := l.ours.Stop(); err != nil {
		l.t.Fatalf("our statd on SIGTERM: %v", err)
	}
	if bootID != "" {
		writeBootID(l.t, l.bootFile, bootID)
	}
	l.startOurs()
}

func (l *telLab) status() *Status {
	l.t.Helper()
	return ourStatus(l.t, l.ctx, l.lt, l.a, l.dirA)
}

// boot starts b's sendstats in a boot of its own, stopping the one running:
// b rebooted.
func (l *telLab) boot(id string, btime int64) {
	l.t.Helper()
	if l.send != nil {
		l.send.Stop()
	}
	l.proc.Boot(id, btime)
	l.send = l.b.Start(l.sendBin, l.sendArgs...)
}

// monitor registers our registrant's interest in b with our statd.
func (l *telLab) monitor(p [nsm.PrivLen]byte) {
	l.t.Helper()
	m := nsm.Mon{ID: nsm.MonID{MonName: l.b.Addr.String(), MyID: l.reg.myID("a")}, Priv: p}
	if r, err := callMon(l.ctx, statdClient(l.t, l.a), m); err != nil || r.Res != nsm.StatSucc {
		l.t.Fatalf("SM_MON %s on our statd: %+v %v", m.ID.MonName, r, err)
	}
}

// notifyFromB sends our statd an SM_NOTIFY from b, as b's statd would.
func (l *telLab) notifyFromB(state int32) {
	l.t.Helper()
	var c *oncrpc.Client
	err := l.b.Do(func() error {
		ctx, cancel := context.WithTimeout(l.ctx, 5*time.Second)
		defer cancel()
		ap, err := rpcbind.Lookup(ctx, l.a.Addr, nsm.Program, nsm.Version, "udp")
		if err != nil {
			return err
		}
		c, err = oncrpc.Dial(context.Background(), "udp", ap.String(),
			oncrpc.WithRetransmit(100*time.Millisecond, time.Second), oncrpc.WithCallTimeout(10*time.Second))
		return err
	})
	if err != nil {
		l.t.Fatalf("our statd from b: %v", err)
	}
	defer c.Close()
	if err := callNotify(l.ctx, c, l.b.Addr.String(), state); err != nil {
		l.t.Fatalf("SM_NOTIFY from b: %v", err)
	}
}

// waitMonitored waits until statdctl shows b, the one host monitored, in
// liveness state want.
func (l *telLab) waitMonitored(want string, within time.Duration) HostLiveness {
	l.t.Helper()
	var live HostLiveness
	netlab.WaitFor(l.t, within, "b "+want+" in statdctl", func() error {
		st := l.status()
		if len(st.Monitored) != 1 || st.Monitored[0].Liveness == nil || st.Monitored[0].Liveness.State != want {
			return fmt.Errorf("monitored %+v", st.Monitored)
		}
		live = *st.Monitored[0].Liveness
		return nil
	})
	return live
}

func (l *telLab) metrics() scrape {
	l.t.Helper()
	return scrapeMetricsWith(l.t, l.a.HTTPClient(), "http://"+labMetrics+"/metrics")
}

// graceFile is what our statd wrote to the lock manager's grace file.
func (l *telLab) graceFile() string {
	l.t.Helper()
	b, err := os.ReadFile(l.grace)
	if err != nil {
		l.t.Fatal(err)
	}
	return string(b)
}

// waitGraceEnded waits for the grace file to say Y, and checks the log
// and the metric say so too.
func (l *telLab) waitGraceEnded(within time.Duration) {
	l.t.Helper()
	netlab.WaitFor(l.t, within, "the grace period ended", func() error {
		if g := l.graceFile(); g != "Y" {
			return fmt.Errorf("grace file %q", g)
		}
		return nil
	})
	// The daemon counts and logs it just after writing the file.
	netlab.WaitFor(l.t, 5*time.Second, "the end of grace logged and counted", func() error {
		if !strings.Contains(l.ours.Output(), "lock manager grace period ended") {
			return fmt.Errorf("not logged")
		}
		if v := l.metrics().value("grace_ended"); v != 1 {
			return fmt.Errorf("grace_ended = %v after the grace file was written", v)
		}
		return nil
	})
}

func (r *labRegistrant) none(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case g := <-r.got:
		t.Fatalf("unexpected callback to %d on %s: %+v", r.prog, r.h.Name, g.st)
	case <-time.After(within):
	}
}

// tableShows waits until the table in dir shows node 7 in boot id, and
// says when it was first heard in it.
func tableShows(t testing.TB, dir, id string) time.Time {
	t.Helper()
	var at time.Time
	netlab.WaitFor(t, 10*time.Second, "boot "+id+" in the table", func() error {
		r, err := shm.OpenReader(dir)
		if err != nil {
			return err
		}
		defer r.Close()
		s, ok, err := r.Summary(7)
		if err != nil || !ok || liveness.FormatBootID(s.BootID) != id {
			return fmt.Errorf("node 7: boot %s %v %v", liveness.FormatBootID(s.BootID), ok, err)
		}
		at = s.LastSeen
		return nil
	})
	return at
}

// A client running only sendstats (no statd), monitored by a registrant
// of our rpc.statd, reboots: the registrant is called back within two
// sample periods of the table showing the new boot, once, with a new odd
// state; an SM_NOTIFY for that reboot arriving after (twice, as nfs-utils
// sends it) makes no second callback. statdctl and the metrics show the
// client up, then silent and gone once it stops sending.
func TestTelemetryRebootWithoutNotify(t *testing.T) {
	ctx := ctxT(t, 2*time.Minute)
	l := newTelLab(t, ctx, "--gone-after", "4s")
	l.monitor(priv(9))
	if live := l.waitMonitored("up", 10*time.Second); live.BootID != bootA {
		t.Errorf("liveness %+v, want boot %s", live, bootA)
	}
	l.reg.none(t, 2*telemetryPeriod) // a first sighting is no reboot

	l.boot(bootB, btimeA+3600)
	first := tableShows(t, l.shmDir, bootB)
	g := l.reg.next(t, 10*time.Second)
	took := time.Since(first)
	t.Logf("callback %v after the table first showed the new boot", took)
	if took > 2*telemetryPeriod+labSlack {
		t.Errorf("callback %v after the table showed the reboot, more than two sample periods (+%v slack)", took, labSlack)
	}
	if g.st.MonName != l.b.Addr.String() || g.st.State%2 != 1 || g.st.Priv != priv(9) {
		t.Errorf("callback %+v, want mon_name %s, an odd state, priv 9", g.st, l.b.Addr)
	}
	l.reg.none(t, 3*telemetryPeriod)
	if !strings.Contains(l.ours.Output(), "reboot seen by telemetry") {
		t.Errorf("no log naming the source")
	}

	// b's statd, late, announces the same reboot: no second callback.
	for range 2 {
		l.notifyFromB(41)
	}
	l.reg.none(t, 3*time.Second)
	if n := strings.Count(l.ours.Output(), "state=41"); n < 2 {
		t.Errorf("our statd logged %d SM_NOTIFY with state 41, want 2", n)
	}

	// b falls silent: silent, then gone after --gone-after; the metrics
	// count it under each state in turn.
	own := l.status().Name // the host's own identity labels its series
	if v := l.metrics().value("hosts_by_liveness", "identity", own, "state", "up"); v != 1 {
		t.Errorf("hosts_by_liveness{identity=%s,state=up} = %v, want 1", own, v)
	}
	l.send.Stop()
	for _, want := range []string{"silent", "gone"} {
		if live := l.waitMonitored(want, 15*time.Second); live.Since.IsZero() {
			t.Errorf("%s without a time: %+v", want, live)
		}
		if v := l.metrics().value("hosts_by_liveness", "identity", own, "state", want); v != 1 {
			t.Errorf("hosts_by_liveness{identity=%s,state=%s} = %v, want 1", own, want, v)
		}
	}
}

// A client that falls silent becomes gone after --gone-after: the
// notification owed to it since our reboot is given up, which ends the
// lock manager's grace period (the only host owed is gone); the real
// statdctl forget then calls its registrant back with a new odd state (the
// release lock managers act on) and drops the registration durably: after
// our statd restarts, neither the registration nor the notification is
// there. With --release-gone the release happens by itself.
func TestTelemetryGoneThenForget(t *testing.T) {
	for _, auto := range []bool{false, true} {
		t.Run(fmt.Sprintf("release-gone=%v", auto), func(t *testing.T) {
			ctx := ctxT(t, 2*time.Minute)
			args := []string{"--gone-after", "3s", "--grace-settle", "1s"}
			if auto {
				args = append(args, "--release-gone")
			}
			l := newTelLab(t, ctx, args...)
			l.monitor(priv(5))
			// Our reboot: b is owed a notification (it runs no statd, so
			// every attempt fails), and our lock manager monitors it again.
			os.WriteFile(l.grace, nil, 0o644)
			l.restartOurs("boot-2")
			l.monitor(priv(5))
			l.notifyFromB(7)
			if g := l.reg.next(t, 10*time.Second); g.st.State != 7 {
				t.Fatalf("callback %+v, want b's state 7", g.st)
			}
			if st := l.status(); len(st.Owed) != 1 || st.Owed[0].Host != l.b.Addr.String() || len(st.Monitored) != 1 {
				t.Fatalf("after our reboot: owed %+v monitored %+v", st.Owed, st.Monitored)
			}
			if g := l.graceFile(); g != "" {
				t.Fatalf("grace ended (%q) while b is owed", g)
			}
			l.send.Stop()
			if !auto {
				l.waitMonitored("gone", 20*time.Second)
				l.reg.none(t, 2*telemetryPeriod) // gone alone releases nothing
				out, err := l.a.Run(ctx, l.lt.statdctl, "-P", l.dirA, "--json", "forget", l.b.Addr.String())
				var sum ForgetSummary
				if err != nil || json.Unmarshal([]byte(out), &sum) != nil || sum.Released != 1 || sum.Registrations != 1 {
					t.Fatalf("statdctl forget: %v\n%s", err, out)
				}
			}
			g := l.reg.next(t, 20*time.Second)
			if g.st.MonName != l.b.Addr.String() || g.st.State != 9 || g.st.Priv != priv(5) {
				t.Errorf("release callback %+v, want %s state 9 priv 5", g.st, l.b.Addr)
			}
			netlab.WaitFor(t, 5*time.Second, "the registration and the debt dropped", func() error {
				if st := l.status(); len(st.Monitored) != 0 || len(st.Owed) != 0 {
					return fmt.Errorf("monitored %+v owed %+v", st.Monitored, st.Owed)
				}
				return nil
			})
			// Gone, the debt is given up; --release-gone may forget the
			// host (and drop the debt) first.
			if out := l.ours.Output(); !strings.Contains(out, "gave up notifying host: gone") && !(auto && strings.Contains(out, "forgot host")) {
				t.Error("the debt to the gone host neither given up as gone nor forgotten")
			}
			l.waitGraceEnded(10 * time.Second)
			l.restartOurs("")
			if st := l.status(); len(st.Monitored) != 0 || len(st.Owed) != 0 {
				t.Fatalf("after a restart: monitored %+v owed %+v", st.Monitored, st.Owed)
			}
			l.reg.none(t, 2*telemetryPeriod)
		})
	}
}

// After our reboot, the notification owed to a client that telemetry
// shows down is held: not sent, although the client's real nfs-utils
// statd is back and would take it, until telemetry sees the client again
// (a new boot); then within a sample period, not at the next scheduled
// retry a minute away. The client's statd calls its lock manager back with
// our new state. The lock manager's grace period stays until then, and
// ends --grace-settle after the client acknowledged (file, log, metric).
func TestTelemetryOwedNotifiedOnReturn(t *testing.T) {
	ctx := ctxT(t, 3*time.Minute)
	const settle = 5 * time.Second
	l := newTelLab(t, ctx, "--grace-settle", settle.String(),
		"--notify-schedule", "first-retry=1m,max-retry=1m,frequent-for=1h,slow=1h,give-up=2h")
	// Our first start owes nobody: grace ends at once (after the settle time).
	l.waitGraceEnded(settle + 10*time.Second)
	os.WriteFile(l.grace, nil, 0o644)

	dirB := netlab.MakeStatdDir(t)
	startRPCBind(t, ctx, l.lt, l.b)
	startNFS := func() *netlab.Proc {
		p := l.b.Start(l.lt.nfsStatd, "-F", "-d", "-L", "-P", dirB)
		registeredOn(t, ctx, l.lt, l.b, "100024")
		return p
	}
	nfs := startNFS()
	regB := newLabRegistrant(t, l.b, 100021, 4, 16)
	monA := func() { // b's lock manager monitors us
		m := nsm.Mon{ID: nsm.MonID{MonName: l.a.Addr.String(), MyID: regB.myID("b")}, Priv: priv(0x44)}
		if r, err := callMon(ctx, statdClient(t, l.b), m); err != nil || r.Res != nsm.StatSucc {
			t.Fatalf("SM_MON on nfs-utils statd: %+v %v", r, err)
		}
	}
	monA()
	l.monitor(priv(0x55))
	l.waitMonitored("up", 10*time.Second)

	// b goes down: its statd and sendstats stop.
	nfs.Stop()
	l.send.Stop()
	l.waitMonitored("silent", 15*time.Second)
	l.restartOurs("boot-2") // our reboot: b is owed a notification, and down
	netlab.WaitFor(t, 15*time.Second, "the debt held, silent, no give-up", func() error {
		st := l.status()
		if len(st.Owed) != 1 || st.Owed[0].Liveness == nil || st.Owed[0].Liveness.State != "silent" || !st.Owed[0].GiveUp.IsZero() ||
			!strings.Contains(l.ours.Output(), "notification waits for its return") {
			return fmt.Errorf("owed %+v", st.Owed)
		}
		return nil
	})
	state := l.status().State

	// b comes back: its statd first (its lock manager monitors us again),
	// then, booted, its sendstats.
	nfs = startNFS()
	monA()
	regB.none(t, 3*telemetryPeriod) // held, though b's statd would take it
	if g := l.graceFile(); g != "" {
		t.Fatalf("grace ended (%q) while b is owed", g)
	}
	if v := l.metrics().value("grace_ended"); v != 0 {
		t.Errorf("grace_ended = %v while b is owed", v)
	}
	l.boot(bootB, btimeA+3600)
	first := tableShows(t, l.shmDir, bootB)
	g := regB.next(t, 20*time.Second)
	took := time.Since(first)
	t.Logf("b's lock manager called back %v after the table first showed b again", took)
	if took > telemetryPeriod+labSlack {
		t.Errorf("notified %v after b's return, more than a sample period (+%v slack)", took, labSlack)
	}
	if g.st.MonName != l.a.Addr.String() || g.st.State != state || g.st.Priv != priv(0x44) {
		t.Errorf("nfs-utils statd called back %+v, want %s state %d priv 44", g.st, l.a.Addr, state)
	}
	if g := l.graceFile(); g != "" {
		t.Errorf("grace ended (%q) before --grace-settle passed", g)
	}
	netlab.WaitFor(t, 5*time.Second, "nothing owed", func() error {
		if st := l.status(); len(st.Owed) != 0 {
			return fmt.Errorf("owed %+v", st.Owed)
		}
		return nil
	})
	l.waitGraceEnded(settle + 10*time.Second)
}

// A client b runs the real nfs-utils statd and sendstats; our rpc.statd
// monitors it for a registrant. An nftables rule in b's namespace drops
// what b sends to a's rpcbind and statd ports (UDP and TCP), so the
// SM_NOTIFY its real sm-notify sends after b reboots does not arrive;
// telemetry still sees the new boot, and the registrant is called back
// within two sample periods of the table showing it. Once the rule is
// gone, sm-notify's retry gets through and is acknowledged: no second
// callback.
func TestInteropRebootWithBlockedSMNotify(t *testing.T) {
	ctx := ctxT(t, 2*time.Minute)
	nft := netlab.RequireCommand(t, "nft")
	const ourPort = "662"
	l := newTelLab(t, ctx, "-p", ourPort)
	a, b := l.a, l.b
	dirB := netlab.MakeStatdDir(t)
	startRPCBind(t, ctx, l.lt, b)
	nfs := b.Start(l.lt.nfsStatd, "-F", "-d", "-L", "-P", dirB)
	registeredOn(t, ctx, l.lt, b, "100024")
	regB := newLabRegistrant(t, b, 100021, 4, 16)
	// b's lock manager monitors a, so b's sm-notify has a to notify.
	if r, err := callMon(ctx, statdClient(t, b), nsm.Mon{ID: nsm.MonID{MonName: a.Addr.String(), MyID: regB.myID("b")}}); err != nil || r.Res != nsm.StatSucc {
		t.Fatalf("SM_MON on nfs-utils statd: %+v %v", r, err)
	}
	l.monitor(priv(0x33))
	l.waitMonitored("up", 15*time.Second)

	rules := filepath.Join(t.TempDir(), "firewall.nft")
	os.WriteFile(rules, []byte(`table inet statdfw {
	chain out {
		type filter hook output priority filter; policy accept;
		ip daddr `+a.Addr.String()+` meta l4proto { tcp, udp } th dport { 111, `+ourPort+` } counter drop
	}
}
`), 0o644)
	if out, err := b.Run(ctx, nft, "-f", rules); err != nil {
		t.Fatalf("nft on b: %v\n%s", err, out)
	}
	// b reboots: statd and sendstats stop, a new boot, sendstats and
	// sm-notify start again.
	nfs.Stop()
	l.boot(bootB, btimeA+3600)
	notified := make(chan error, 1)
	var smOut string
	go func() {
		nctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		defer cancel()
		var err error
		smOut, err = b.Run(nctx, l.lt.smNotify, "-d", "-f", "-P", dirB)
		notified <- err
	}()
	first := tableShows(t, l.shmDir, bootB)
	g := l.reg.next(t, 10*time.Second)
	took := time.Since(first)
	t.Logf("callback %v after the table first showed b's new boot", took)
	if took > 2*telemetryPeriod+labSlack {
		t.Errorf("callback %v after the table showed the reboot, more than two sample periods (+%v slack)", took, labSlack)
	}
	if g.st.MonName != b.Addr.String() || g.st.State%2 != 1 || g.st.Priv != priv(0x33) {
		t.Errorf("callback %+v, want %s, an odd state, priv 33", g.st, b.Addr)
	}
	peer := nfsState(t, dirB)
	if g.st.State == peer {
		t.Errorf("called back with b's own new state %d: its SM_NOTIFY got through?", peer)
	}
	select {
	case err := <-notified:
		t.Fatalf("sm-notify ended (%v) through the firewall:\n%s", err, smOut)
	default:
	}
	if out, err := b.Run(ctx, nft, "list", "table", "inet", "statdfw"); err != nil || strings.Contains(out, "packets 0 ") {
		t.Errorf("the rule dropped nothing: %v\n%s", err, out)
	}

	// The firewall opens: sm-notify's next retry reaches our statd, which
	// acknowledges it, and takes it as the reboot telemetry saw.
	if out, err := b.Run(ctx, nft, "delete", "table", "inet", "statdfw"); err != nil {
		t.Fatalf("nft delete on b: %v\n%s", err, out)
	}
	select {
	case err := <-notified:
		if err != nil {
			t.Fatalf("sm-notify: %v\n%s", err, smOut)
		}
	case <-time.After(80 * time.Second):
		t.Fatal("sm-notify not done after the firewall opened")
	}
	want := fmt.Sprintf("state=%d", peer)
	netlab.WaitFor(t, 5*time.Second, "our statd to log b's SM_NOTIFY ("+want+")", func() error {
		if !strings.Contains(l.ours.Output(), want) {
			return fmt.Errorf("not logged")
		}
		return nil
	})
	l.reg.none(t, 3*time.Second)
}

// identityTelLab is the failover lab (s1 serving nfs, s2 standing by)
// with both servers following one telemetry table written by recvstats
// on host m, and a client c sending as node 7 from sendstats over a copy
// of a captured /proc (in boot bootA at the start).
type identityTelLab struct {
	*failoverLab
	m, c   *netlab.Host
	shmDir string
	tbin   string
	proc   *netlab.ProcTree
	send   *netlab.Proc
}

func newIdentityTelLab(t *testing.T, ctx context.Context, args ...string) *identityTelLab {
	t.Helper()
	l := &identityTelLab{shmDir: t.TempDir()}
	l.failoverLab = newFailoverLab(t, ctx, 3*time.Second, func(lab *netlab.Lab) {
		l.m, l.c = lab.AddHost("m"), lab.AddHost("c")
	}, append([]string{"--telemetry", l.shmDir, "--telemetry-period", telemetryPeriod.String(), "--metrics", labMetrics}, args...)...)
	l.tbin = netlab.BuildCommands(t, "./cmd/recvstats", "./cmd/sendstats")
	startRecvstats(t, l.m, l.tbin, l.shmDir, l.c.Addr.String())
	l.proc = netlab.NewProcTree(t, "../telemetry/sample/testdata/proc/vm2")
	l.boot(bootA, btimeA)
	return l
}

// boot starts c's sendstats in boot id, stopping the one running (c
// rebooted), and waits for the table to show it.
func (l *identityTelLab) boot(id string, btime int64) {
	l.t.Helper()
	if l.send != nil {
		l.send.Stop()
	}
	l.proc.Boot(id, btime)
	l.send = l.c.Start(filepath.Join(l.tbin, "sendstats"), "-d", "-a", l.m.Addr.String()+":3040", "--node", "7", "-r", "1", "--proc", l.proc.Dir)
	tableShows(l.t, l.shmDir, id)
}

// monitor has s's lock manager monitor c under my_name my.
func (l *identityTelLab) monitor(s *failoverServer, my string, p byte) {
	l.t.Helper()
	mon := nsm.Mon{ID: nsm.MonID{MonName: l.c.Addr.String(), MyID: s.reg.myID(my)}, Priv: priv(p)}
	if r, err := callMon(l.ctx, statdClient(l.t, s.h), mon); err != nil || r.Res != nsm.StatSucc {
		l.t.Fatalf("SM_MON %s my_name %s on %s: %+v %v", mon.ID.MonName, my, s.h.Name, r, err)
	}
}

// TestFailoverIdentityTelemetry: telemetry and statdctl forget for an
// --identity. The failover lab (three etcd members, s1 serving nfs, s2
// standing by), both servers following one telemetry table written by
// recvstats on host m; client c runs sendstats (node 7, a copy of a
// captured /proc whose boot the test changes) and the real nfs-utils
// statd, whose lock manager monitors nfs. s1's lock manager monitors c
// under my_name nfs and under s1's own name.
//
//   - s1's statdctl and metrics show c's liveness under nfs;
//   - c reboots without SM_NOTIFY (a new boot id): s1's registrant is
//     called back once under each identity;
//   - c goes down (statd and sendstats stopped), nfs moves to s2: s2
//     shows c silent under nfs, owed the takeover's notification and held
//     (retries a minute apart); c comes back in a new boot: s2 notifies
//     it at once (c's statd calls its lock manager back with nfs's new
//     state) and calls s2's registrant back for the reboot, while s1,
//     no longer the owner, calls back only under its own name;
//   - statdctl forget on s2 releases c under nfs (the release callback)
//     and the registration and debt are gone from etcd; forget
//     --identity nfs on s1 says s2 serves it.
func TestFailoverIdentityTelemetry(t *testing.T) {
	ctx := ctxT(t, 4*time.Minute)
	const bootC = "bbbbbbbb-cccc-4ddd-8eee-ffffffffffff"
	l := newIdentityTelLab(t, ctx, "--notify-schedule", "first-retry=1m,max-retry=1m,frequent-for=1h,slow=1h,give-up=2h")
	f, c, boot := l.failoverLab, l.c, l.boot
	lt, s1, s2 := f.lt, f.servers[0], f.servers[1]

	// c's nfs-utils statd, its lock manager monitoring nfs.
	dirC := netlab.MakeStatdDir(t)
	startRPCBind(t, ctx, lt, c)
	startNFS := func() *netlab.Proc {
		p := c.Start(lt.nfsStatd, "-F", "-d", "-L", "-P", dirC)
		registeredOn(t, ctx, lt, c, "100024")
		return p
	}
	nfs := startNFS()
	regC := newLabRegistrant(t, c, 100021, 4, 16)
	monNFS := func() {
		mon := nsm.Mon{ID: nsm.MonID{MonName: "nfs", MyID: regC.myID("c")}, Priv: priv(0x44)}
		if r, err := callMon(ctx, statdClient(t, c), mon); err != nil || r.Res != nsm.StatSucc {
			t.Fatalf("SM_MON nfs on c's nfs-utils statd: %+v %v", r, err)
		}
	}
	monNFS()

	// s1's lock manager monitors c under nfs (priv 7) and under s1's own
	// name (priv 8): one scan of the table, each identity its own events.
	client := c.Addr.String()
	l.monitor(s1, "nfs", 7)
	l.monitor(s1, "s1", 8)
	// callbacks takes n callbacks of s's registrant for c, by priv.
	callbacks := func(s *failoverServer, n int) map[byte]int32 {
		t.Helper()
		got := map[byte]int32{}
		for range n {
			g := s.reg.next(t, 10*time.Second)
			if g.st.MonName != client || g.st.State%2 != 1 {
				t.Errorf("%s's registrant called back %+v, want mon_name %s, an odd state", s.h.Name, g.st, client)
			}
			got[g.st.Priv[0]] = g.st.State
		}
		return got
	}
	status := func(s *failoverServer) *Status { return ourStatus(t, ctx, lt, s.h, filepath.Join(s.dir, "state")) }
	// nfsShows waits until s's status shows c, monitored under nfs, in
	// liveness state want, and owed a notification when owed.
	nfsShows := func(s *failoverServer, want string, owed bool) HostLiveness {
		t.Helper()
		var live HostLiveness
		netlab.WaitFor(t, 20*time.Second, fmt.Sprintf("%s showing %s %s under nfs", s.h.Name, client, want), func() error {
			st := status(s)
			if len(st.Identities) != 1 || st.Identities[0].Name != "nfs" {
				return fmt.Errorf("identities %+v", st.Identities)
			}
			id := st.Identities[0]
			if len(id.Monitored) != 1 || id.Monitored[0].MonName != client || id.Monitored[0].Liveness == nil ||
				id.Monitored[0].Liveness.State != want {
				return fmt.Errorf("nfs monitors %+v", id.Monitored)
			}
			if owed && (len(id.Owed) != 1 || id.Owed[0].Host != client || id.Owed[0].Liveness == nil ||
				id.Owed[0].Liveness.State != want || !id.Owed[0].GiveUp.IsZero()) {
				return fmt.Errorf("nfs owes %+v", id.Owed)
			}
			live = *id.Monitored[0].Liveness
			return nil
		})
		return live
	}
	scrapeOf := func(s *failoverServer) scrape {
		return scrapeMetricsWith(t, s.h.HTTPClient(), "http://"+labMetrics+"/metrics")
	}
	metric := func(s *failoverServer, ident, state string) float64 {
		return scrapeOf(s).value("hosts_by_liveness", "identity", ident, "state", state)
	}
	// identityFigures checks the per-identity series of ident in m: its
	// state, and c monitored by one registrant, owed when owed.
	identityFigures := func(who string, m scrape, ident string, state int32, owed uint64) {
		t.Helper()
		id := []string{"identity", ident}
		for _, w := range []struct {
			name string
			want float64
		}{{"state", float64(state)}, {"monitored_hosts", 1}, {"registrations", 1}, {"registrants", 1}} {
			if got := m.value(w.name, id...); got != w.want {
				t.Errorf("%s's %s{identity=%s} = %v, want %v", who, w.name, ident, got, w.want)
			}
		}
		if h := m.histogram("owed_notification_age_seconds", id...); h.GetSampleCount() != owed {
			t.Errorf("%s's owed_notification_age_seconds{identity=%s}: %v, want %d owed", who, ident, h, owed)
		}
		if m.value("notifications_sent_total", id...) < 0 || m.value("callbacks_total", id...) < 0 {
			t.Errorf("%s exports no notification or callback counters for %s", who, ident)
		}
	}
	if live := nfsShows(s1, "up", false); live.BootID != bootA {
		t.Errorf("s1: liveness of %s under nfs %+v, want boot %s", client, live, bootA)
	}
	if up, own := metric(s1, "nfs", "up"), metric(s1, "s1", "up"); up != 1 || own != 1 {
		t.Errorf("s1's hosts_by_liveness: nfs up %v, s1 up %v; want 1 each", up, own)
	}
	// s1's metrics show nfs (its odd state after the takeover) and its
	// own name, each monitoring c.
	nfsBefore := f.identities()["nfs"].State
	if nfsBefore%2 != 1 {
		t.Errorf("nfs's state %d in etcd on s1, want odd", nfsBefore)
	}
	m := scrapeOf(s1)
	identityFigures("s1", m, "nfs", nfsBefore, 0)
	identityFigures("s1", m, "s1", status(s1).State, 0)
	viewtest.Promtool(t, m.text)
	s1.reg.none(t, 2*telemetryPeriod) // a first sighting is no reboot

	// c reboots without SM_NOTIFY: s1's registrant is called back once
	// under each identity.
	boot(bootB, btimeA+3600)
	if got := callbacks(s1, 2); len(got) != 2 || got[7] == 0 || got[8] == 0 {
		t.Errorf("s1's registrant called back for privs %v, want 7 (nfs) and 8 (s1) once each", got)
	}
	s1.reg.none(t, 3*telemetryPeriod)

	// c goes down; nfs moves to s2, which owes c the takeover's
	// notification and holds it while c is silent.
	nfs.Stop()
	l.send.Stop()
	nfsShows(s1, "silent", false)
	out, err := s2.h.Run(ctx, lt.statdctl, "--store", f.store, "--timeout", "30s", "move", "nfs")
	if err != nil || !strings.Contains(out, "to s2") {
		t.Fatalf("statdctl move nfs: %v\n%s", err, out)
	}
	f.ipAddr(s1.h, "del")
	f.ipAddr(s2.h, "add")
	nfsShows(s2, "silent", true)
	if v := metric(s2, "nfs", "silent"); v != 1 {
		t.Errorf("s2's hosts_by_liveness{identity=nfs,state=silent} = %v, want 1", v)
	}
	state := f.identities()["nfs"].State
	// nfs's series moved with it: s2 shows its new state and the
	// takeover's debt to c; s1 exports nothing of nfs any more.
	if state == nfsBefore || state%2 != 1 {
		t.Errorf("nfs's state %d after the move (%d before), want a new odd one", state, nfsBefore)
	}
	m = scrapeOf(s2)
	identityFigures("s2", m, "nfs", state, 1)
	viewtest.Promtool(t, m.text)
	netlab.WaitFor(t, 10*time.Second, "s1 no longer exporting nfs", func() error {
		if ids := scrapeOf(s1).identities(); ids["nfs"] || !ids["s1"] {
			return fmt.Errorf("s1 exports identities %v, want s1 only", ids)
		}
		return nil
	})
	// An SM_MON for nfs on s1 now is refused, counted under its reason.
	mon := nsm.Mon{ID: nsm.MonID{MonName: client, MyID: s1.reg.myID("nfs")}, Priv: priv(9)}
	if r, err := callMon(ctx, statdClient(t, s1.h), mon); err != nil || r.Res != nsm.StatFail {
		t.Errorf("SM_MON my_name nfs on s1 after the move: %+v %v, want stat_fail", r, err)
	}
	if v := scrapeOf(s1).value("refusals_total", "proc", "SM_MON", "reason", "identity_not_served"); v != 1 {
		t.Errorf("s1's refusals_total{proc=SM_MON,reason=identity_not_served} = %v, want 1", v)
	}

	// c comes back in a new boot: notified at once, not at the retry a
	// minute away; the reboot is s2's to call back, not s1's.
	nfs = startNFS()
	monNFS()
	boot(bootC, btimeA+7200)
	if g := regC.next(t, 20*time.Second); g.st.MonName != "nfs" || g.st.State != state || g.st.Priv != priv(0x44) {
		t.Errorf("c's statd called its lock manager back %+v, want mon_name nfs state %d priv 44", g.st, state)
	}
	if got := callbacks(s2, 1); got[7] == 0 {
		t.Errorf("s2's registrant called back for privs %v for c's reboot, want 7 (nfs)", got)
	}
	if got := callbacks(s1, 1); got[8] == 0 {
		t.Errorf("s1's registrant called back for privs %v for c's reboot, want 8 (its own name) only", got)
	}
	s1.reg.none(t, 2*telemetryPeriod) // nothing under nfs, no longer s1's
	if live := nfsShows(s2, "up", false); live.BootID != bootC {
		t.Errorf("s2: liveness of %s under nfs %+v, want boot %s", client, live, bootC)
	}

	// forget on s2: released under nfs, dropped from etcd.
	out, err = s2.h.Run(ctx, lt.statdctl, "-P", filepath.Join(s2.dir, "state"), "--json", "forget", client)
	// statdctl's JSON, as a script reads it.
	var sum struct {
		Released      int `json:"released"`
		Registrations int `json:"registrations_dropped"`
		Identities    []struct {
			Identity      string `json:"identity"`
			Own           bool   `json:"own"`
			Released      int    `json:"released"`
			Registrations int    `json:"registrations_dropped"`
		} `json:"identities"`
	}
	if err != nil || json.Unmarshal([]byte(out), &sum) != nil {
		t.Fatalf("statdctl forget on s2: %v\n%s", err, out)
	}
	if sum.Released != 1 || sum.Registrations != 1 || len(sum.Identities) != 2 || !sum.Identities[0].Own ||
		sum.Identities[0].Identity != "s2" || sum.Identities[0].Registrations != 0 ||
		sum.Identities[1].Identity != "nfs" || sum.Identities[1].Released != 1 || sum.Identities[1].Registrations != 1 {
		t.Errorf("statdctl forget on s2: %+v, want 1 released and dropped under nfs, none under s2", sum)
	}
	if got := callbacks(s2, 1); got[7] == 0 {
		t.Errorf("release callback for privs %v, want 7 (nfs)", got)
	}
	if n := f.identities()["nfs"]; n.Registrations != 0 || n.Owed != 0 || n.Holder != "s2" {
		t.Errorf("etcd after the forget: nfs %+v, want no registrations, nothing owed", n)
	}
	if st := status(s2); len(st.Identities) != 1 || len(st.Identities[0].Monitored) != 0 || len(st.Identities[0].Owed) != 0 {
		t.Errorf("s2's status after the forget: %+v", st.Identities)
	}
	out, err = s1.h.Run(ctx, lt.statdctl, "-P", filepath.Join(s1.dir, "state"), "forget", "--identity", "nfs", client)
	if err == nil || !strings.Contains(out, `"s2" serves it`) {
		t.Errorf("statdctl forget --identity nfs on s1 (not its owner): %v\n%s", err, out)
	}
	out, err = s1.h.Run(ctx, lt.statdctl, "-P", filepath.Join(s1.dir, "state"), "forget", "--identity", "other", client)
	if err == nil || !strings.Contains(out, "neither this statd's name") {
		t.Errorf("statdctl forget --identity other on s1: %v\n%s", err, out)
	}
}

// TestFailoverIdentityReleaseGone: --release-gone under an --identity.
// s1's lock manager monitors c under nfs; c falls silent and is gone after
// --gone-after: s1 releases it under nfs by itself (its registrant is
// called back with a new odd state) and the registration is gone from
// etcd, as statdctl identities shows.
func TestFailoverIdentityReleaseGone(t *testing.T) {
	ctx := ctxT(t, 2*time.Minute)
	l := newIdentityTelLab(t, ctx, "--gone-after", "3s", "--release-gone")
	s1 := l.servers[0]
	l.monitor(s1, "nfs", 5)
	if n := l.identities()["nfs"]; n.Registrations != 1 {
		t.Fatalf("etcd: nfs %+v, want the registration", n)
	}
	s1.reg.none(t, 2*telemetryPeriod) // up: nothing released
	l.send.Stop()
	g := s1.reg.next(t, 20*time.Second)
	if g.st.MonName != l.c.Addr.String() || g.st.State%2 != 1 || g.st.Priv != priv(5) {
		t.Errorf("release callback %+v, want mon_name %s, an odd state, priv 5", g.st, l.c.Addr)
	}
	netlab.WaitFor(t, 5*time.Second, "the registration dropped from etcd", func() error {
		if n := l.identities()["nfs"]; n.Registrations != 0 || n.Holder != "s1" {
			return fmt.Errorf("nfs %+v", n)
		}
		return nil
	})
	if out := s1.proc.Output(); !strings.Contains(out, "forgot host") || !strings.Contains(out, "--release-gone") {
		t.Errorf("s1 did not log the release:\n%s", out)
	}
}
