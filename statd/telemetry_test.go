package statd

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/netlab"
	"github.com/hoststat/hoststat/liveness"
	"github.com/hoststat/hoststat/nsm"
	"github.com/hoststat/hoststat/shm"
)

// telemetryLab is a real recvstats on loopback writing a table, and a
// client node (127.0.0.1, node 7) that runs only sendstats, reading a
// copy of a captured /proc tree whose boot the test changes.
type telemetryLab struct {
	t        *testing.T
	shmDir   string
	sendArgs []string
	sendBin  string
	proc     *netlab.ProcTree
	stopSend func()
}

const telemetryPeriod = time.Second // sendstats -r 1 and the scan period

func newTelemetryLab(t *testing.T) *telemetryLab {
	bin := netlab.BuildCommands(t, "./cmd/recvstats", "./cmd/sendstats")
	l := &telemetryLab{t: t, shmDir: t.TempDir(), sendBin: filepath.Join(bin, "sendstats"),
		proc: netlab.NewProcTree(t, "../telemetry/sample/testdata/proc/vm2")}
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(c.LocalAddr().(*net.UDPAddr).Port)
	c.Close()
	nodeMap := filepath.Join(t.TempDir(), "nodes")
	os.WriteFile(nodeMap, []byte("7 127.0.0.1\n"), 0o644)
	netlab.StartDaemon(t, filepath.Join(bin, "recvstats"), "-d", "--listen", "127.0.0.1", "-p", port, "--shm-dir", l.shmDir,
		"--node-map", nodeMap, "--down-after", "2500ms")
	l.sendArgs = []string{"-d", "-a", "127.0.0.1:" + port, "--node", "7", "-r", "1", "--proc", l.proc.Dir}
	return l
}

// boot starts the client's sendstats in a boot of its own (boot id and
// boot time), stopping the one running: the node rebooted.
func (l *telemetryLab) boot(id string, btime int64) {
	l.t.Helper()
	if l.stopSend != nil {
		l.stopSend()
	}
	l.proc.Boot(id, btime)
	l.stopSend = netlab.StartDaemon(l.t, l.sendBin, l.sendArgs...)
}

// tableShows waits until the table shows node 7 in boot id, and says when
// it was first heard in it.
func (l *telemetryLab) tableShows(id string) time.Time {
	l.t.Helper()
	return tableShows(l.t, l.shmDir, id)
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
// state; the client's own SM_NOTIFY for that reboot, arriving after,
// makes no second callback. The admin status shows the client up, then
// silent and gone once it stops sending.
func TestTelemetryRebootWithoutNotify(t *testing.T) {
	lab := newTelemetryLab(t)
	const bootA, bootB = "11111111-2222-4333-8444-555555555555", "66666666-7777-4888-8999-aaaaaaaaaaaa"
	lab.boot(bootA, 1795312373)
	lab.tableShows(bootA)

	td := newTestDaemon(t, func(c *Config) {
		c.Telemetry, c.TelemetryPeriod, c.GoneAfter = lab.shmDir, telemetryPeriod, 4*time.Second
		c.MetricsAddr = "127.0.0.1:0"
	})
	reg := newRegistrant(t, td.rpcb, 200100)
	ctx := ctxT(t, time.Minute)
	c := td.dial("udp")
	if r, err := callMon(ctx, c, nsm.Mon{ID: nsm.MonID{MonName: "127.0.0.1", MyID: reg.myID()}, Priv: [16]byte{9}}); err != nil || r.Res != nsm.StatSucc {
		t.Fatalf("SM_MON: %+v %v", r, err)
	}
	netlab.WaitFor(t, 10*time.Second, "the client up in statdctl's status", func() error {
		st := td.status()
		if len(st.Monitored) != 1 || st.Monitored[0].Liveness == nil || st.Monitored[0].Liveness.State != "up" ||
			st.Monitored[0].Liveness.BootID != bootA {
			return fmt.Errorf("monitored: %+v", st.Monitored)
		}
		return nil
	})
	reg.none(t, 2*telemetryPeriod) // a first sighting is no reboot

	lab.boot(bootB, 1795312373+3600)
	first := lab.tableShows(bootB)
	g := reg.next(t, 10*time.Second)
	took := time.Since(first)
	t.Logf("callback %v after the table first showed the new boot", took)
	if took > 2*telemetryPeriod {
		t.Errorf("callback %v after the table showed the reboot, more than two sample periods", took)
	}
	if g.st.MonName != "127.0.0.1" || g.st.State%2 != 1 || g.st.Priv != [16]byte{9} {
		t.Errorf("callback %+v, want mon_name 127.0.0.1, an odd state, priv 9", g.st)
	}
	reg.none(t, 3*telemetryPeriod)

	// The client's statd, late, announces the same reboot (twice, as
	// nfs-utils does): no second callback.
	for i := 0; i < 2; i++ {
		if err := callNotify(ctx, c, "127.0.0.1", 41); err != nil {
			t.Fatal(err)
		}
	}
	reg.none(t, 3*time.Second)
	if !strings.Contains(td.logs.String(), "reboot seen by telemetry") {
		t.Errorf("no log naming the source")
	}

	// The client falls silent: silent, then gone after --gone-after; the
	// metrics count it under each state in turn.
	metrics := "http://" + td.status().Metrics + "/metrics"
	if v := scrapeMetrics(t, metrics).value("hosts_by_liveness", "state", "up"); v != 1 {
		t.Errorf("hosts_by_liveness{state=up} = %v, want 1", v)
	}
	lab.stopSend()
	for _, want := range []string{"silent", "gone"} {
		netlab.WaitFor(t, 15*time.Second, "the client "+want, func() error {
			if l := td.status().Monitored[0].Liveness; l.State != want || l.Since.IsZero() {
				return fmt.Errorf("liveness %+v", l)
			}
			if v := scrapeMetrics(t, metrics).value("hosts_by_liveness", "state", want); v != 1 {
				return fmt.Errorf("hosts_by_liveness{state=%s} = %v", want, v)
			}
			return nil
		})
	}
}

// After our reboot, the lock manager's grace period is ended (its file
// written) once every host owed a notification has it, not before.
func TestGraceEndsWhenEveryOwedHostNotified(t *testing.T) {
	grace := filepath.Join(t.TempDir(), "nlm_end_grace")
	if err := os.WriteFile(grace, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	td := newTestDaemon(t, func(c *Config) {
		c.Schedule = nsm.Schedule{FirstRetry: 100 * time.Millisecond, MaxRetry: 300 * time.Millisecond, FrequentFor: time.Minute, Slow: time.Second, GiveUpAfter: time.Hour}
		c.NotifyTimeout = 300 * time.Millisecond
		c.EndGracePath, c.GraceSettle = grace, 500*time.Millisecond
		c.MetricsAddr = "127.0.0.1:0"
	})
	graceMetric := func() float64 {
		return scrapeMetrics(t, "http://"+td.status().Metrics+"/metrics").value("grace_ended")
	}
	readGrace := func() string {
		b, err := os.ReadFile(grace)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	netlab.WaitFor(t, 5*time.Second, "grace ended at the first start (nothing owed)", func() error {
		if g := readGrace(); g != "Y" {
			return fmt.Errorf("grace file %q", g)
		}
		return nil
	})
	os.WriteFile(grace, nil, 0o644)
	newFakePeer(t, td.rpcb, "127.0.0.2")
	monitorHosts(t, td, "127.0.0.2", "127.0.0.6")
	writeBootID(t, td.bootID, "boot-2")
	td.restart()
	netlab.WaitFor(t, 5*time.Second, "127.0.0.2 notified, 127.0.0.6 tried twice", func() error {
		if st := td.status(); len(st.Owed) != 1 || st.Owed[0].Host != "127.0.0.6" || st.Owed[0].Attempts < 2 {
			return fmt.Errorf("owed %+v", st.Owed)
		}
		return nil
	})
	if g := readGrace(); g != "" {
		t.Fatalf("grace ended (%q) while 127.0.0.6 is still owed", g)
	}
	if v := graceMetric(); v != 0 {
		t.Errorf("grace_ended = %v while a host is still owed", v)
	}
	newFakePeer(t, td.rpcb, "127.0.0.6")
	netlab.WaitFor(t, 10*time.Second, "grace ended", func() error {
		if g := readGrace(); g != "Y" {
			return fmt.Errorf("grace file %q", g)
		}
		return nil
	})
	if v := graceMetric(); v != 1 {
		t.Errorf("grace_ended = %v after the grace file was written", v)
	}
	if !strings.Contains(td.logs.String(), "lock manager grace period ended") {
		t.Error("not logged")
	}
}

// A notification owed to a host telemetry shows down is not retried
// blindly (the schedule's next retry is a minute away) but sent the moment
// the host is seen up again: within a sample period or two of its return.
// The status shows it silent and without a give-up time meanwhile.
func TestTelemetryOwedNotifiedOnReturn(t *testing.T) {
	lab := newTelemetryLab(t)
	lab.boot("11111111-2222-4333-8444-555555555555", 1795312373)
	lab.tableShows("11111111-2222-4333-8444-555555555555")
	td := newTestDaemon(t, func(c *Config) {
		c.Telemetry, c.TelemetryPeriod = lab.shmDir, telemetryPeriod
		c.Schedule = nsm.Schedule{FirstRetry: time.Minute, MaxRetry: time.Minute, FrequentFor: time.Hour, Slow: time.Hour, GiveUpAfter: 2 * time.Hour}
		c.NotifyTimeout = 300 * time.Millisecond
	})
	monitorHosts(t, td, "127.0.0.1")
	lab.stopSend()
	netlab.WaitFor(t, 15*time.Second, "the client silent", func() error {
		if l := td.status().Monitored[0].Liveness; l.State != "silent" {
			return fmt.Errorf("liveness %+v", l)
		}
		return nil
	})
	writeBootID(t, td.bootID, "boot-2")
	td.restart() // our reboot: 127.0.0.1 is owed a notification, and down
	netlab.WaitFor(t, 15*time.Second, "the debt held, silent, no give-up", func() error {
		st := td.status()
		if len(st.Owed) != 1 || st.Owed[0].Liveness == nil || st.Owed[0].Liveness.State != "silent" || !st.Owed[0].GiveUp.IsZero() ||
			!strings.Contains(td.logs.String(), "notification waits for its return") {
			return fmt.Errorf("owed %+v", st.Owed)
		}
		return nil
	})
	peer := newFakePeer(t, td.rpcb, "127.0.0.1") // its statd is back, before telemetry sees it
	select {
	case n := <-peer.calls:
		t.Fatalf("notified %+v before the host was seen up", n)
	case <-time.After(3 * telemetryPeriod):
	}
	lab.boot("66666666-7777-4888-8999-aaaaaaaaaaaa", 1795312373+3600)
	first := lab.tableShows("66666666-7777-4888-8999-aaaaaaaaaaaa")
	select {
	case n := <-peer.calls:
		took := time.Since(first)
		t.Logf("notified %v after the table first showed the host again", took)
		if took > 2*telemetryPeriod {
			t.Errorf("notified %v after the host's return", took)
		}
		if n.state != td.status().State {
			t.Errorf("notified state %d", n.state)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("not notified after the host came back")
	}
	netlab.WaitFor(t, 5*time.Second, "nothing owed", func() error { return owedNone(td) })
}

// A client that falls silent becomes gone after --gone-after; statdctl
// forget then calls its registrant back with a new odd state (the release
// lock managers act on) and drops the registration durably: it is gone
// after a restart too. With --release-gone the same happens by itself.
func TestTelemetryGoneThenForget(t *testing.T) {
	for _, auto := range []bool{false, true} {
		t.Run(fmt.Sprintf("release-gone=%v", auto), func(t *testing.T) {
			lab := newTelemetryLab(t)
			lab.boot("11111111-2222-4333-8444-555555555555", 1795312373)
			lab.tableShows("11111111-2222-4333-8444-555555555555")
			td := newTestDaemon(t, func(c *Config) {
				c.Telemetry, c.TelemetryPeriod, c.GoneAfter, c.ReleaseGone = lab.shmDir, telemetryPeriod, 3*time.Second, auto
			})
			reg := newRegistrant(t, td.rpcb, 200100)
			ctx := ctxT(t, time.Minute)
			c := td.dial("udp")
			if r, err := callMon(ctx, c, nsm.Mon{ID: nsm.MonID{MonName: "127.0.0.1", MyID: reg.myID()}, Priv: [16]byte{5}}); err != nil || r.Res != nsm.StatSucc {
				t.Fatalf("SM_MON: %+v %v", r, err)
			}
			if err := callNotify(ctx, c, "127.0.0.1", 7); err != nil {
				t.Fatal(err)
			}
			if g := reg.next(t, 10*time.Second); g.st.State != 7 {
				t.Fatalf("callback %+v", g.st)
			}
			lab.stopSend()
			if !auto {
				netlab.WaitFor(t, 20*time.Second, "the client gone", func() error {
					if l := td.status().Monitored[0].Liveness; l.State != "gone" {
						return fmt.Errorf("liveness %+v", l)
					}
					return nil
				})
				reg.none(t, 2*telemetryPeriod) // gone alone releases nothing
				sum, err := Forget(ctx, td.cfg.StateDir, "127.0.0.1")
				if err != nil || sum.Released != 1 || sum.Registrations != 1 {
					t.Fatalf("forget: %+v %v", sum, err)
				}
			}
			g := reg.next(t, 20*time.Second)
			if g.st.MonName != "127.0.0.1" || g.st.State != 9 || g.st.Priv != [16]byte{5} {
				t.Errorf("release callback %+v, want 127.0.0.1 state 9 priv 5", g.st)
			}
			netlab.WaitFor(t, 5*time.Second, "the registration dropped", func() error {
				if st := td.status(); len(st.Monitored) != 0 {
					return fmt.Errorf("monitored %+v", st.Monitored)
				}
				return nil
			})
			td.restart()
			if st := td.status(); len(st.Monitored) != 0 {
				t.Fatalf("after a restart: monitored %+v", st.Monitored)
			}
			reg.none(t, 2*telemetryPeriod)
		})
	}
}

// A client b runs the real nfs-utils statd and sendstats; our rpc.statd
// (the real command, with --telemetry) on a monitors it for a registrant.
// b's way to a's rpcbind (port 111, UDP and TCP) is cut by a policy
// routing rule in b's namespace ("prohibit"), so the SM_NOTIFY its real
// sm-notify sends after b reboots never arrives; telemetry still sees the
// new boot, and the registrant is called back once, within two sample
// periods of the table showing it.
func TestInteropRebootWithBlockedSMNotify(t *testing.T) {
	ctx := ctxT(t, 2*time.Minute)
	lt := needLab(t)
	ip := netlab.RequireCommand(t, "ip")
	tbin := netlab.BuildCommands(t, "./cmd/recvstats", "./cmd/sendstats")
	lab := netlab.New(t)
	a, b := lab.AddHost("a"), lab.AddHost("b")
	dirA, dirB, shmDir := t.TempDir(), netlab.MakeStatdDir(t), t.TempDir()
	nodeMap := filepath.Join(t.TempDir(), "nodes")
	os.WriteFile(nodeMap, []byte("7 "+b.Addr.String()+"\n"), 0o644)
	a.Start(filepath.Join(tbin, "recvstats"), "-d", "--listen", a.Addr.String(), "-p", "3040", "--shm-dir", shmDir,
		"--node-map", nodeMap, "--down-after", "2500ms")
	proc := netlab.NewProcTree(t, "../telemetry/sample/testdata/proc/vm2")
	const bootA, bootB = "11111111-2222-4333-8444-555555555555", "66666666-7777-4888-8999-aaaaaaaaaaaa"
	proc.Boot(bootA, 1795312373)
	sendArgs := []string{"-d", "-a", a.Addr.String() + ":3040", "--node", "7", "-r", "1", "--proc", proc.Dir}
	send := b.Start(filepath.Join(tbin, "sendstats"), sendArgs...)
	tableShows(t, shmDir, bootA)

	startRPCBind(t, ctx, lt, a)
	startRPCBind(t, ctx, lt, b)
	a.Start(lt.ourStatd, "-F", "-d", "-P", dirA, "--callback-program", "300100", "--telemetry", shmDir)
	nfs := b.Start(lt.nfsStatd, "-F", "-d", "-L", "-P", dirB)
	registeredOn(t, ctx, lt, a, "100024")
	registeredOn(t, ctx, lt, b, "100024")
	regA := newLabRegistrant(t, a, 300100, 1, 1)
	regB := newLabRegistrant(t, b, 100021, 4, 16)
	// b's lock manager monitors a, so b's sm-notify has a to notify.
	if r, err := callMon(ctx, statdClient(t, b), nsm.Mon{ID: nsm.MonID{MonName: a.Addr.String(), MyID: regB.myID("b")}}); err != nil || r.Res != nsm.StatSucc {
		t.Fatalf("SM_MON on nfs-utils statd: %+v %v", r, err)
	}
	if r, err := callMon(ctx, statdClient(t, a), nsm.Mon{ID: nsm.MonID{MonName: b.Addr.String(), MyID: regA.myID("a")}, Priv: priv(0x33)}); err != nil || r.Res != nsm.StatSucc {
		t.Fatalf("SM_MON on our statd: %+v %v", r, err)
	}
	netlab.WaitFor(t, 15*time.Second, "b up in our status", func() error {
		st := ourStatus(t, ctx, lt, a, dirA)
		if len(st.Monitored) != 1 || st.Monitored[0].Liveness == nil || st.Monitored[0].Liveness.State != "up" {
			return fmt.Errorf("monitored %+v", st.Monitored)
		}
		return nil
	})

	for _, proto := range []string{"udp", "tcp"} {
		if out, err := b.Run(ctx, ip, "rule", "add", "to", a.Addr.String(), "ipproto", proto, "dport", "111", "prohibit"); err != nil {
			t.Fatalf("ip rule on b: %v\n%s", err, out)
		}
	}
	// b reboots: statd and sendstats stop, a new boot, sendstats and
	// sm-notify start again.
	nfs.Stop()
	send.Stop()
	proc.Boot(bootB, 1795312373+3600)
	b.Start(filepath.Join(tbin, "sendstats"), sendArgs...)
	notified := make(chan string, 1)
	go func() {
		nctx, cancel := context.WithTimeout(ctx, 8*time.Second)
		defer cancel()
		out, _ := b.Run(nctx, lt.smNotify, "-d", "-f", "-P", dirB)
		notified <- out
	}()
	first := tableShows(t, shmDir, bootB)
	g := regA.next(t, 10*time.Second)
	took := time.Since(first)
	t.Logf("callback %v after the table first showed b's new boot", took)
	if took > 2*telemetryPeriod {
		t.Errorf("callback %v after the table showed the reboot, more than two sample periods", took)
	}
	if g.st.MonName != b.Addr.String() || g.st.State%2 != 1 || g.st.Priv != priv(0x33) {
		t.Errorf("callback %+v, want %s, an odd state, priv 33", g.st, b.Addr)
	}
	out := <-notified
	if peer := nfsState(t, dirB); g.st.State == peer {
		t.Errorf("called back with b's own new state %d: its SM_NOTIFY got through?\nsm-notify: %s", peer, out)
	}
	select {
	case g := <-regA.got:
		t.Errorf("second callback %+v", g.st)
	case <-time.After(2 * time.Second):
	}
}
