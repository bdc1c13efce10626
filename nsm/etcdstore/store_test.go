package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hoststat/hoststat/internal/etcdlab"
	"github.com/hoststat/hoststat/internal/netlab"
	"github.com/hoststat/hoststat/nsm"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// storeClient is a client as rpc.statd makes one (Config.Client).
func storeClient(t testing.TB, c *etcdlab.Cluster) *clientv3.Client {
	t.Helper()
	cli, err := Config{Endpoints: c.Endpoints()}.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func openStore(t testing.TB, cli *clientv3.Client, prefix string) *Store {
	t.Helper()
	s, err := Open(context.Background(), cli, prefix, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func reg(host string, i int) nsm.Registration {
	r := nsm.Registration{MonName: host, MyID: nsm.MyID{Name: "lockd", Prog: 100021, Vers: 3, Proc: 16}}
	r.Priv[0] = byte(i)
	return r
}

// An acknowledged SM_MON is in etcd: killing etcd with SIGKILL and
// starting it again loses none of them, and the state survives too.
func TestAcknowledgedSurvivesEtcdKill(t *testing.T) {
	c := etcdlab.Start(t, 1)
	s := openStore(t, storeClient(t, c), IdentityPrefix("/hoststat", "srv"))
	res, err := s.Start("boot-1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if res.State != 1 || !res.Rebooted {
		t.Fatalf("first start: %+v, want state 1, rebooted", res)
	}
	const n = 300
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			errs <- s.Apply(context.Background(), []nsm.Change{{Reg: reg(fmt.Sprintf("client%03d", i), i)}})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	c.Members[0].Kill()
	c.Members[0].Start()
	c.Members[0].WaitHealthy(30 * time.Second)

	regs, err := s.Registrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(regs) != n {
		t.Fatalf("after kill -9 of etcd: %d registrations, want %d", len(regs), n)
	}
	for i, r := range regs {
		if want := fmt.Sprintf("client%03d", i); r.MonName != want || r.Priv[0] != byte(i) || r.MyID.Prog != 100021 {
			t.Fatalf("registration %d = %+v, want %s with priv[0]=%d", i, r, want, i)
		}
	}
	// A restart in the same boot keeps them; a reboot owes every host the next odd state.
	if res, err = s.Start("boot-1", time.Now()); err != nil || res.Rebooted || res.State != 1 {
		t.Fatalf("restart: %+v, %v", res, err)
	}
	if res, err = s.Start("boot-2", time.Now()); err != nil || !res.Rebooted || res.State != 3 || res.Dropped != n || res.Owed != n {
		t.Fatalf("reboot: %+v, %v; want state 3, %d dropped and owed", res, err, n)
	}
	owed, err := s.Owed()
	if err != nil || len(owed) != n || owed[0].State != 3 || owed[0].Host != "client000" {
		t.Fatalf("owed after reboot: %d records (%v), first %+v", len(owed), err, owed[0])
	}
	if regs, _ := s.Registrations(); len(regs) != 0 {
		t.Fatalf("reboot kept %d registrations", len(regs))
	}
}

// Concurrent callers share transactions: 256 SM_MONs at once commit in far
// fewer etcd write transactions, counted by etcd itself.
func TestConcurrentApplySharesTransactions(t *testing.T) {
	c := etcdlab.Start(t, 1)
	cli := etcdlab.Client(t, c.Endpoints()...)
	s := openStore(t, cli, IdentityPrefix("/hoststat", "srv"))
	if _, err := s.Start("b", time.Now()); err != nil {
		t.Fatal(err)
	}
	const metric = "etcd_server_proposals_committed_total"
	before, err := c.Members[0].Metric(metric)
	if err != nil {
		t.Fatal(err)
	}
	const n = 256
	start := make(chan struct{})
	var wg sync.WaitGroup
	var failed sync.Map
	for i := range n {
		wg.Go(func() {
			<-start
			if err := s.Apply(context.Background(), []nsm.Change{{Reg: reg(fmt.Sprintf("c%d", i), i)}}); err != nil {
				failed.Store(i, err)
			}
		})
	}
	close(start)
	wg.Wait()
	failed.Range(func(k, v any) bool { t.Errorf("caller %v: %v", k, v); return true })
	after, err := c.Members[0].Metric(metric)
	if err != nil {
		t.Fatal(err)
	}
	proposals := int(after - before)
	t.Logf("%d SM_MONs: %d etcd proposals committed, %d store transactions", n, proposals, s.Txns())
	if proposals >= n/2 {
		t.Fatalf("%d concurrent SM_MONs took %d etcd proposals: transactions are not shared", n, proposals)
	}
	if regs, _ := s.Registrations(); len(regs) != n {
		t.Fatalf("%d registrations stored, want %d", len(regs), n)
	}
}

// Two writers on one identity racing to move the state never hand out
// the same number twice, and the number never goes backwards.
func TestStateNeverBackwardsUnderRacingWriters(t *testing.T) {
	c := etcdlab.Start(t, 1)
	prefix := IdentityPrefix("/hoststat", "srv")
	a := openStore(t, etcdlab.Client(t, c.Endpoints()...), prefix)
	b := openStore(t, etcdlab.Client(t, c.Endpoints()...), prefix)
	if err := a.Apply(context.Background(), []nsm.Change{{Reg: reg("peer", 1)}}); err != nil {
		t.Fatal(err)
	}
	const rounds = 25
	var mu sync.Mutex
	got := map[int32]string{}
	var wg sync.WaitGroup
	for name, s := range map[string]*Store{"a": a, "b": b} {
		wg.Go(func() {
			last := int32(0)
			for i := range rounds {
				var st int32
				var err error
				if i%2 == 0 {
					st, err = s.SimulateCrash(context.Background(), time.Now())
				} else {
					var res nsm.StartResult
					res, err = s.Reboot("boot", time.Now())
					st = res.State
				}
				if err != nil {
					t.Errorf("%s: %v", name, err)
					return
				}
				if st <= last || st%2 != 1 {
					t.Errorf("%s: state %d after %d", name, st, last)
				}
				last = st
				mu.Lock()
				if other, dup := got[st]; dup {
					t.Errorf("state %d handed out to %s and %s", st, other, name)
				}
				got[st] = name
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	final, err := a.State()
	if err != nil {
		t.Fatal(err)
	}
	if want := int32(4*rounds - 1); final != want || len(got) != 2*rounds {
		t.Fatalf("final state %d with %d distinct numbers handed out, want %d and %d", final, len(got), want, 2*rounds)
	}
}

// The notifier's outcomes: delivered, rescheduled, given up; a record owing
// a newer state survives an older delivery.
func TestOwedOutcomes(t *testing.T) {
	c := etcdlab.Start(t, 1)
	s := openStore(t, etcdlab.Client(t, c.Endpoints()...), IdentityPrefix("/hoststat", "srv"))
	ctx := context.Background()
	for _, h := range []string{"a", "b", "c"} {
		if err := s.Apply(ctx, []nsm.Change{{Reg: reg(h, 0)}}); err != nil {
			t.Fatal(err)
		}
	}
	st, err := s.SimulateCrash(ctx, time.Now())
	if err != nil || st != 1 {
		t.Fatalf("crash: %d, %v", st, err)
	}
	next := time.Now().Add(time.Minute).UTC().Truncate(time.Millisecond)
	if err := s.Reschedule(ctx, "a", next, 2); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.MarkNotified(ctx, "b", st); !ok || err != nil {
		t.Fatalf("mark notified: %v %v", ok, err)
	}
	if ok, err := s.GiveUp(ctx, "c", st, time.Now()); !ok || err != nil {
		t.Fatalf("give up: %v %v", ok, err)
	}
	owed, _ := s.Owed()
	if len(owed) != 1 || owed[0].Host != "a" || owed[0].Attempts != 2 || !owed[0].NextTry.Equal(next) {
		t.Fatalf("owed = %+v", owed)
	}
	if g, _ := s.GaveUp(); len(g) != 1 || g[0].Host != "c" || g[0].State != st {
		t.Fatalf("gave up = %+v", g)
	}
	st2, _ := s.SimulateCrash(ctx, time.Now())
	if ok, _ := s.MarkNotified(ctx, "a", st); ok {
		t.Fatalf("delivery of state %d removed a record owing %d", st, st2)
	}
	if g, _ := s.GaveUp(); len(g) != 0 {
		t.Fatalf("a host owed again is still listed as given up: %+v", g)
	}
	// SM_MON again with the same priv keeps the first registration time.
	r0, _ := s.Registrations()
	if err := s.Apply(ctx, []nsm.Change{{Reg: reg("a", 0)}}); err != nil {
		t.Fatal(err)
	}
	r1, _ := s.Registrations()
	if !r1[0].Registered.Equal(r0[0].Registered) {
		t.Fatalf("repeat SM_MON changed the registration time %v → %v", r0[0].Registered, r1[0].Registered)
	}
	if err := s.Apply(ctx, []nsm.Change{{Remove: true, Reg: reg("a", 0)}}); err != nil {
		t.Fatal(err)
	}
	if r2, _ := s.Registrations(); len(r2) != 2 {
		t.Fatalf("after SM_UNMON: %d registrations, want 2", len(r2))
	}
}

// A prefix holding something else is refused, and bad records are errors.
func TestForeignPrefixAndDamagedRecords(t *testing.T) {
	c := etcdlab.Start(t, 1)
	cli := etcdlab.Client(t, c.Endpoints()...)
	ctx := context.Background()
	if _, err := cli.Put(ctx, "/other/magic", "something else"); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, cli, "/other/", Options{}); err == nil {
		t.Fatal("opened a prefix holding another program's data")
	}
	s := openStore(t, cli, "/x/")
	if _, err := cli.Put(ctx, "/x/state", "-5"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Start("b", time.Now()); err == nil {
		t.Fatal("started on a negative state number")
	}
	if _, err := cli.Put(ctx, "/x/o/h", "{"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Owed(); err == nil {
		t.Fatal("listed a damaged owed record")
	}
	if _, err := s.MarkNotified(ctx, "h", 1); err == nil {
		t.Fatal("settled a damaged owed record")
	}
	// The store still serves other work.
	if err := s.Apply(ctx, []nsm.Change{{Reg: reg("ok", 1)}}); err != nil {
		t.Fatal(err)
	}
}

// etcd killed with SIGKILL in the middle of a burst of SM_MONs: every
// SM_MON that was acknowledged is there after etcd restarts; the others
// failed with an error (none is acknowledged and lost).
func TestEtcdKilledMidBurstLosesNoAcknowledged(t *testing.T) {
	c := etcdlab.Start(t, 1)
	s, err := Open(context.Background(), storeClient(t, c), IdentityPrefix("/hoststat", "srv"), Options{Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const callers, each = 64, 40
	var mu sync.Mutex
	acked := map[string]bool{}
	failed := 0
	var wg sync.WaitGroup
	for w := range callers {
		wg.Go(func() {
			for i := range each {
				host := fmt.Sprintf("w%02di%02d", w, i)
				err := s.Apply(context.Background(), []nsm.Change{{Reg: reg(host, i)}})
				mu.Lock()
				if err == nil {
					acked[host] = true
				} else {
					failed++
				}
				mu.Unlock()
				if err != nil {
					return // etcd is down: this caller gives up, as a lock manager's call times out
				}
			}
		})
	}
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= callers*each/4 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	c.Members[0].Kill()
	wg.Wait()
	c.Members[0].Start()
	c.Members[0].WaitHealthy(30 * time.Second)
	regs, err := s.Registrations()
	if err != nil {
		t.Fatal(err)
	}
	stored := map[string]bool{}
	for _, r := range regs {
		stored[r.MonName] = true
	}
	lost := 0
	for h := range acked {
		if !stored[h] {
			lost++
		}
	}
	t.Logf("%d acknowledged, %d failed while etcd was down, %d stored", len(acked), failed, len(regs))
	if lost > 0 {
		t.Fatalf("%d acknowledged SM_MONs lost by kill -9 of etcd", lost)
	}
	if failed == 0 {
		t.Fatal("no SM_MON failed: etcd was not killed mid-burst, the test proved nothing")
	}
}

// An Apply larger than one etcd transaction may carry (an SM_UNMON_ALL of
// a busy lock manager) commits in several and loses nothing.
func TestApplyLargerThanOneTransaction(t *testing.T) {
	c := etcdlab.Start(t, 1)
	s := openStore(t, storeClient(t, c), IdentityPrefix("/hoststat", "srv"))
	var puts, removes []nsm.Change
	for i := range 500 {
		r := reg(fmt.Sprintf("h%03d", i), i)
		puts = append(puts, nsm.Change{Reg: r})
		removes = append(removes, nsm.Change{Remove: true, Reg: r})
	}
	if err := s.Apply(context.Background(), puts); err != nil {
		t.Fatal(err)
	}
	if regs, err := s.Registrations(); err != nil || len(regs) != 500 {
		t.Fatalf("%d registrations after one Apply of 500 (%v)", len(regs), err)
	}
	if s.Txns() < 500/DefaultMaxTxnOps {
		t.Fatalf("500 registrations in %d transactions: over etcd's --max-txn-ops", s.Txns())
	}
	if err := s.Apply(context.Background(), removes[:499]); err != nil {
		t.Fatal(err)
	}
	if regs, _ := s.Registrations(); len(regs) != 1 || regs[0].MonName != "h499" {
		t.Fatalf("after removing 499: %+v", regs)
	}
}

// One member cut off by a partition (not killed: its connections die in
// silence, without a reset) loses no SM_MON: six identities' stores write
// at once, so the client's round robin sends some of their requests to
// the member cut off; those wait until gRPC's keepalive gives the
// connection up (keepalive 5 s + 5 s, so at most about 10 s after the
// member was last heard), then fail Unavailable and are retried through
// another member. The client first knows only member 0, so its
// connection there is up when the member is cut off.
func TestPartitionedMemberLosesNoWrite(t *testing.T) {
	lab := netlab.New(t)
	c := etcdlab.StartInLab(t, lab, 3)
	cli := etcdlab.ClientIn(t, lab.AddHost("statd"), c.Members[0].Endpoint())
	var stores []*Store
	for i := range 6 {
		s := openStore(t, cli, IdentityPrefix("/hoststat", fmt.Sprintf("srv%d", i)))
		if err := s.Apply(context.Background(), []nsm.Change{{Reg: reg("before", 0)}}); err != nil {
			t.Fatal(err)
		}
		stores = append(stores, s)
	}
	cli.SetEndpoints(c.Endpoints()...)
	c.Members[0].Partition()
	type result struct {
		err     error
		longest time.Duration
	}
	results := make(chan result, len(stores))
	for i, s := range stores {
		go func() {
			var r result
			for j := range 3 {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				start := time.Now()
				err := s.Apply(ctx, []nsm.Change{{Reg: reg(fmt.Sprintf("c%d", j), j)}})
				r.longest = max(r.longest, time.Since(start))
				cancel()
				if err != nil {
					r.err = fmt.Errorf("store %d: SM_MON %d with member 0 cut off: %w", i, j, err)
					break
				}
			}
			results <- r
		}()
	}
	var longest time.Duration
	for range stores {
		r := <-results
		if r.err != nil {
			t.Error(r.err)
		}
		longest = max(longest, r.longest)
	}
	t.Logf("longest SM_MON with a member cut off: %v", longest.Round(time.Millisecond))
	for i, s := range stores {
		if regs, err := s.Registrations(); err != nil || len(regs) != 4 {
			t.Errorf("store %d: %d registrations (%v), want 4", i, len(regs), err)
		}
	}
}

// The daemon's Core runs on this store as on bbolt: its start, SM_MON,
// reboot and SM_SIMU_CRASH are Changes written by Apply, and a restart
// reloads exactly what was written. A reboot owing more hosts than one
// transaction carries commits in several, the state last.
func TestCoreOnEtcdStore(t *testing.T) {
	c := etcdlab.Start(t, 1)
	cli := etcdlab.Client(t, c.Endpoints()...)
	prefix := IdentityPrefix("/hoststat", "srv")
	ctx := context.Background()
	now := time.Now()
	var told []int32
	start := func(boot string) (*Store, *nsm.Core, nsm.StartResult) {
		t.Helper()
		s, err := Open(ctx, cli, prefix, Options{OnState: func(n int32) { told = append(told, n) }})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		core := nsm.NewCore(nsm.CoreConfig{})
		res, err := nsm.StartCore(ctx, s, core, boot, false, now)
		if err != nil {
			t.Fatal(err)
		}
		return s, core, res
	}
	persist := func(s *Store, core *nsm.Core, rd nsm.Ready) {
		t.Helper()
		if err := s.Apply(ctx, rd.Persist); err != nil {
			t.Fatal(err)
		}
		core.Apply(rd.Persist)
	}
	s, core, res := start("boot-1")
	if !res.Rebooted || res.State != 1 {
		t.Fatalf("first start: %+v, want a reboot to state 1", res)
	}
	const n = 150 // 150 debts at the reboot: more than one transaction
	for i := range n {
		rd, err := core.Mon(reg(fmt.Sprintf("client%03d", i), i))
		if err != nil {
			t.Fatal(err)
		}
		persist(s, core, rd)
	}
	s.Close()

	s, core, res = start("boot-1")
	if res.Rebooted || res.State != 1 || core.Len() != n {
		t.Fatalf("restart: %+v with %d registrations, want state 1 kept and %d reloaded", res, core.Len(), n)
	}
	s.Close()

	txns := s.Txns()
	s, core, res = start("boot-2")
	if !res.Rebooted || res.State != 3 || res.Dropped != n || res.Owed != n || core.Len() != 0 {
		t.Fatalf("reboot: %+v, %d registrations left; want state 3, %d dropped and owed", res, core.Len(), n)
	}
	if st, _ := s.State(); st != 3 {
		t.Fatalf("state in etcd %d after the reboot, want 3", st)
	}
	regs, _ := s.Registrations()
	owed, err := s.Owed()
	if err != nil || len(regs) != 0 || len(owed) != n || owed[0].State != 3 {
		t.Fatalf("after the reboot etcd holds %d registrations and %d debts (%v), want 0 and %d owing 3", len(regs), len(owed), err, n)
	}
	if s.Txns()-txns < 3 {
		t.Errorf("reboot owing %d hosts took %d transactions, want several (owed records, then state)", n, s.Txns()-txns)
	}

	rd, st, err := core.SimuCrash(now)
	if err != nil {
		t.Fatal(err)
	}
	persist(s, core, rd)
	if got, _ := s.State(); st != 5 || got != 5 {
		t.Fatalf("SM_SIMU_CRASH: core %d, etcd %d, want 5", st, got)
	}
	if owed, _ = s.Owed(); len(owed) != n || owed[n-1].State != 5 {
		t.Fatalf("after SM_SIMU_CRASH: %d debts, last %+v", len(owed), owed[n-1])
	}
	if want := []int32{1, 1, 3, 5}; fmt.Sprint(told) != fmt.Sprint(want) {
		t.Errorf("OnState told %v, want %v", told, want)
	}

	// A debt removed (acknowledged) while it owes no newer state; one
	// given up on is remembered.
	persist(s, core, nsm.Ready{Persist: []nsm.Change{
		{Kind: nsm.ChangeOwed, Remove: true, Owed: nsm.Owed{Host: "client000", State: 5}},
		{Kind: nsm.ChangeOwed, Remove: true, Owed: nsm.Owed{Host: "client001", State: 3}},
		{Kind: nsm.ChangeOwed, Remove: true, GaveUp: true, At: now, Owed: nsm.Owed{Host: "client002", State: 5}},
	}})
	owed, _ = s.Owed()
	gave, _ := s.GaveUp()
	if len(owed) != n-2 || owed[0].Host != "client001" || len(gave) != 1 || gave[0].Host != "client002" || gave[0].State != 5 {
		t.Fatalf("after settling: owed from %s (%d), gave up %+v", owed[0].Host, len(owed), gave)
	}
}

// The state number never goes backwards, and a store does not move it
// from a number another writer of the identity set: nothing is written.
func TestApplyStateCompareAndSwap(t *testing.T) {
	c := etcdlab.Start(t, 1)
	cli := etcdlab.Client(t, c.Endpoints()...)
	prefix := IdentityPrefix("/hoststat", "srv")
	a, b := openStore(t, cli, prefix), openStore(t, cli, prefix)
	ctx := context.Background()
	if _, err := a.Start("boot", time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Boot(); err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(ctx, []nsm.Change{{Kind: nsm.ChangeState, State: 3}}); err != nil {
		t.Fatal(err)
	}
	err := a.Apply(ctx, []nsm.Change{{Reg: reg("kept-out", 1)}, {Kind: nsm.ChangeState, State: 1}})
	if err == nil || !strings.Contains(err.Error(), "backwards") {
		t.Errorf("state 3 → 1: %v, want refused", err)
	}
	err = b.Apply(ctx, []nsm.Change{{Reg: reg("kept-out", 2)}, {Kind: nsm.ChangeState, State: 3}})
	if err == nil || !strings.Contains(err.Error(), "another writer") {
		t.Errorf("second writer moving 1 → 3 after the first did: %v, want refused", err)
	}
	err = b.Apply(ctx, []nsm.Change{{Kind: nsm.ChangeDropRegs}, {Kind: nsm.ChangeState, State: 5, BootID: "b2"}})
	if err == nil || !strings.Contains(err.Error(), "another writer") {
		t.Errorf("second writer's reboot step: %v, want refused", err)
	}
	if st, _ := a.State(); st != 3 {
		t.Errorf("state %d, want 3", st)
	}
	if regs, _ := a.Registrations(); len(regs) != 0 {
		t.Errorf("registrations %+v written with a refused state change", regs)
	}
}

// brokenFence is ownership etcd says is gone: its comparison fails.
type brokenFence struct{ key string }

func (f brokenFence) Cmps() []clientv3.Cmp {
	return []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(f.key), ">", 0)}
}
func (brokenFence) Err() error { return nil }

// With a fence that no longer holds, every kind of change is refused
// with ErrFenced and nothing lands.
func TestApplyFencedEveryKind(t *testing.T) {
	c := etcdlab.Start(t, 1)
	cli := etcdlab.Client(t, c.Endpoints()...)
	prefix := IdentityPrefix("/hoststat", "srv")
	plain := openStore(t, cli, prefix)
	if _, err := plain.Start("boot", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := plain.Apply(context.Background(), []nsm.Change{{Reg: reg("kept", 1)}}); err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), cli, prefix, Options{Fence: brokenFence{"/hoststat/no-such-owner"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Boot(); err != nil {
		t.Fatal(err)
	}
	for _, chs := range [][]nsm.Change{
		{{Reg: reg("kept-out", 1)}},
		{{Kind: nsm.ChangeOwed, Owed: nsm.Owed{Host: "h", State: 3}}},
		{{Kind: nsm.ChangeState, State: 3}},
		{{Kind: nsm.ChangeDropRegs}},
		{{Kind: nsm.ChangeDropRegs}, {Kind: nsm.ChangeState, State: 3, BootID: "b2"}},
	} {
		if err := s.Apply(context.Background(), chs); !errors.Is(err, ErrFenced) {
			t.Errorf("fenced Apply of %+v: %v, want ErrFenced", chs, err)
		}
	}
	regs, _ := plain.Registrations()
	owed, _ := plain.Owed()
	if st, _ := plain.State(); st != 1 || len(regs) != 1 || len(owed) != 0 {
		t.Errorf("after fenced writes: state %d, %d registrations, %d owed; want 1, 1, 0", st, len(regs), len(owed))
	}
}
