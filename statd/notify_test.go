package statd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/netlab"
	"github.com/hoststat/hoststat/nsm"
)

// owedNone is a netlab.WaitFor condition: the daemon owes nobody.
func owedNone(td *testDaemon) error {
	if st := td.status(); len(st.Owed) != 0 {
		return fmt.Errorf("owed %+v", st.Owed)
	}
	return nil
}

func monitorHosts(t *testing.T, td *testDaemon, hosts ...string) {
	t.Helper()
	ctx := ctxT(t, 10*time.Second)
	c := td.dial("udp")
	for _, h := range hosts {
		r, err := callMon(ctx, c, nsm.Mon{ID: nsm.MonID{MonName: h, MyID: nsm.MyID{Name: "127.0.0.1", Prog: 100021, Vers: 4, Proc: 16}}})
		if err != nil || r.Res != nsm.StatSucc {
			t.Fatalf("SM_MON %s: %+v %v", h, r, err)
		}
	}
}

// TestNotifyOnce is `rpc.statd -n`: a forced reboot, one pass, a summary;
// reached hosts get SM_NOTIFY with our qualified and short names and the
// new state, an unreachable one stays owed, and the daemon started next
// (same boot) carries on with it.
func TestNotifyOnce(t *testing.T) {
	td := newTestDaemon(t, nil)
	peer := newFakePeer(t, td.rpcb, "127.0.0.2", "127.0.0.3")
	monitorHosts(t, td, "127.0.0.2", "127.0.0.3", "nowhere.invalid")
	state := td.status().State
	td.stop()

	ctx := ctxT(t, 20*time.Second)
	sum, err := NotifyOnce(ctx, td.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if sum != (NotifySummary{State: state + 2, Total: 3, Notified: 2, Owed: 1}) {
		t.Fatalf("summary %+v", sum)
	}
	var got []string
	for _, n := range peer.received() {
		if n.state != state+2 {
			t.Fatalf("notified state %d, want %d", n.state, state+2)
		}
		got = append(got, n.to.String()+" "+n.name)
	}
	sort.Strings(got)
	want := []string{"127.0.0.2 me", "127.0.0.2 me.example.com", "127.0.0.3 me", "127.0.0.3 me.example.com"}
	if len(got) != len(want) {
		t.Fatalf("notifications %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("notifications %q, want %q", got, want)
		}
	}
	td.cfg.NoNotify = true
	td.start()
	st := td.status()
	if st.State != state+2 || len(st.Owed) != 1 || st.Owed[0].Host != "nowhere.invalid" || st.Owed[0].Attempts != 1 || len(st.Monitored) != 0 {
		t.Fatalf("after -n: state %d owed %+v monitored %+v", st.State, st.Owed, st.Monitored)
	}
}

// TestOwedNotifiedWhenPeerReturns: a peer that does not answer at our
// reboot is retried on the (here shortened) schedule, also across a daemon
// restart, and notified once it is back; nothing is owed afterwards.
func TestOwedNotifiedWhenPeerReturns(t *testing.T) {
	td := newTestDaemon(t, func(c *Config) {
		c.Schedule = nsm.Schedule{FirstRetry: 100 * time.Millisecond, MaxRetry: 300 * time.Millisecond, FrequentFor: time.Minute, Slow: time.Second, GiveUpAfter: time.Hour}
		c.NotifyTimeout = 300 * time.Millisecond
	})
	// Something answers rpcbind for every 127.x host, but no statd listens
	// on 127.0.0.6 yet.
	newFakePeer(t, td.rpcb, "127.0.0.7")
	monitorHosts(t, td, "127.0.0.6")
	writeBootID(t, td.bootID, "boot-2")
	td.restart()
	netlab.WaitFor(t, 5*time.Second, "two failed attempts", func() error {
		if st := td.status(); len(st.Owed) != 1 || st.Owed[0].Attempts < 2 || st.Owed[0].LastErr == "" {
			return fmt.Errorf("owed %+v", st.Owed)
		}
		return nil
	})
	td.restart() // the debt survives a restart, attempts and all
	st := td.status()
	if len(st.Owed) != 1 || st.Owed[0].Attempts < 2 {
		t.Fatalf("after restart owed %+v", st.Owed)
	}
	state := st.State
	peer := newFakePeer(t, td.rpcb, "127.0.0.6")
	select {
	case n := <-peer.calls:
		if n.to.String() != "127.0.0.6" || n.state != state {
			t.Fatalf("notification %+v", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("peer not notified after it came back")
	}
	netlab.WaitFor(t, 5*time.Second, "nothing owed", func() error { return owedNone(td) })
}

// TestGiveUp: past GiveUpAfter the host is dropped from the owed list.
func TestGiveUp(t *testing.T) {
	td := newTestDaemon(t, func(c *Config) {
		c.Schedule = nsm.Schedule{FirstRetry: 50 * time.Millisecond, MaxRetry: 100 * time.Millisecond, FrequentFor: 200 * time.Millisecond, Slow: 200 * time.Millisecond, GiveUpAfter: time.Second}
		c.NotifyTimeout = 100 * time.Millisecond
	})
	monitorHosts(t, td, "nowhere.invalid")
	writeBootID(t, td.bootID, "boot-2")
	td.restart()
	netlab.WaitFor(t, 10*time.Second, "nothing owed", func() error { return owedNone(td) })
}

// The schedule in memory never runs ahead of the store: when the outcome
// of an attempt cannot be written, the attempt count stays where the store
// has it, the failure is counted for the admin view and shown for the
// host, and the host is tried again later. (The old loop advanced the
// schedule first and only logged the failed write.)
func TestNotifierOutcomeNotRecordedLeavesScheduleAsStored(t *testing.T) {
	store, err := nsm.OpenStore(filepath.Join(t.TempDir(), "statd.db"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	core := nsm.NewCore(nsm.CoreConfig{Notify: nsm.Schedule{FirstRetry: time.Second}})
	core.Restore(nsm.Boot{BootID: "b", State: 3}, []nsm.Owed{{Host: "peer", State: 3, FirstOwed: now, NextTry: now}})
	p := newProtocol(slog.New(slog.DiscardHandler), store, core, nil, nil, nil)
	p.now = func() time.Time { return now }
	p.ctx = context.Background()
	due := core.StartNotifying(now).Notify
	if len(due) != 1 {
		t.Fatalf("due %+v", due)
	}
	store.Close() // every write fails from here on
	if out := p.notifyDone(due[0], nsm.Failed, errors.New("peer unreachable").Error()); out != nsm.NotInFlight {
		t.Fatalf("outcome %v reported although not recorded", out)
	}
	pending := p.pendingOwed()
	if len(pending) != 1 || pending[0].Attempts != 0 || !pending[0].NextTry.Equal(now.Add(time.Second)) {
		t.Fatalf("schedule after a failed write: %+v", pending)
	}
	if p.storeErrors.Load() != 1 || !strings.Contains(pending[0].LastErr, "recording the attempt") {
		t.Fatalf("failed write not surfaced: %d errors, last error %q", p.storeErrors.Load(), pending[0].LastErr)
	}
}

// TestNotifyOnceAsksRunningDaemon is `rpc.statd -n` while the daemon runs
// with -L (systemd: the notify unit after nfs-server.service): the daemon,
// which made the reboot step when it started, makes the pass at its state
// (no second step), says so in the summary, keeps retrying the host it did
// not reach, and carries on with it after a restart in the same boot, still
// under -L. Before, -n failed on the store the daemon held.
func TestNotifyOnceAsksRunningDaemon(t *testing.T) {
	td := newTestDaemon(t, func(c *Config) {
		c.Schedule = nsm.Schedule{FirstRetry: 100 * time.Millisecond, MaxRetry: 200 * time.Millisecond, FrequentFor: time.Minute, Slow: time.Second, GiveUpAfter: time.Hour}
		c.NotifyTimeout = 300 * time.Millisecond
	})
	peer := newFakePeer(t, td.rpcb, "127.0.0.2", "127.0.0.3")
	monitorHosts(t, td, "127.0.0.2", "127.0.0.3", "nowhere.invalid")
	state := td.status().State
	td.stop()
	writeBootID(t, td.bootID, "boot-2")
	td.cfg.NoNotify = true
	td.start()
	if st := td.status(); st.State != state+2 || len(st.Owed) != 3 {
		t.Fatalf("after the reboot: state %d owed %+v", st.State, st.Owed)
	}
	time.Sleep(300 * time.Millisecond)
	if got := peer.received(); len(got) != 0 {
		t.Fatalf("notified under -L before -n: %+v", got)
	}

	sum, err := NotifyOnce(ctxT(t, 20*time.Second), td.cfg)
	if err != nil {
		t.Fatal(err)
	}
	pid := td.status().Pid
	if sum != (NotifySummary{State: state + 2, Total: 3, Notified: 2, Owed: 1, Daemon: pid}) {
		t.Fatalf("summary %+v (daemon pid %d)", sum, pid)
	}
	for _, n := range peer.received() {
		if n.state != state+2 {
			t.Fatalf("notified state %d, want %d", n.state, state+2)
		}
	}
	if n := len(peer.received()); n != 4 {
		t.Fatalf("%d notifications, want 4 (two hosts, two names each)", n)
	}
	retried := func(what string) {
		t.Helper()
		first := td.status().Owed
		if len(first) != 1 || first[0].Host != "nowhere.invalid" {
			t.Fatalf("%s: owed %+v", what, first)
		}
		netlab.WaitFor(t, 10*time.Second, what, func() error {
			st := td.status()
			if st.State != state+2 {
				t.Fatalf("state moved to %d", st.State)
			}
			if len(st.Owed) != 1 || st.Owed[0].Attempts <= first[0].Attempts {
				return fmt.Errorf("owed %+v", st.Owed)
			}
			return nil
		})
	}
	retried("the daemon retrying the host not reached")
	td.restart()
	retried("the restarted daemon (-L) retrying it")
}
