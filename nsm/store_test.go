package nsm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func openTestStore(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "statd.db")
	s, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func reg(mon string, my MyID, priv byte) Registration {
	r := Registration{MonName: mon, MyID: my, Registered: t0}
	r.Priv[0] = priv
	return r
}

func mustMonitor(t *testing.T, s *Store, r Registration) {
	t.Helper()
	if err := s.Monitor(context.Background(), r); err != nil {
		t.Fatal(err)
	}
}

func regEqual(a, b Registration) bool {
	return a.MonName == b.MonName && a.MyID == b.MyID && a.Priv == b.Priv && a.Registered.Equal(b.Registered)
}

func mustRegs(t *testing.T, s *Store) []Registration {
	t.Helper()
	regs, err := s.Registrations()
	if err != nil {
		t.Fatal(err)
	}
	return regs
}

func owedHosts(t *testing.T, s *Store) []string {
	t.Helper()
	owed, err := s.Owed()
	if err != nil {
		t.Fatal(err)
	}
	var hosts []string
	for _, o := range owed {
		hosts = append(hosts, o.Host)
	}
	return hosts
}

var otherID = MyID{Name: "nfs-server-01", Prog: 200000, Vers: 1, Proc: 1}

func TestMonitorIsIdempotentAndUpdatesPriv(t *testing.T) {
	s, _ := openTestStore(t)
	mustMonitor(t, s, reg("peer-a", lockdID, 1))
	later := reg("peer-a", lockdID, 1)
	later.Registered = t0.Add(time.Hour)
	mustMonitor(t, s, later) // same cookie: nothing changes, not even the time
	regs := mustRegs(t, s)
	if len(regs) != 1 || !regEqual(regs[0], reg("peer-a", lockdID, 1)) {
		t.Fatalf("after a duplicate SM_MON: %+v", regs)
	}

	changed := reg("peer-a", lockdID, 2)
	changed.Registered = t0.Add(time.Hour)
	mustMonitor(t, s, changed)
	if regs := mustRegs(t, s); len(regs) != 1 || !regEqual(regs[0], changed) {
		t.Fatalf("after SM_MON with a new priv: %+v, want %+v", regs, changed)
	}

	mustMonitor(t, s, reg("peer-a", otherID, 3)) // another registrant of the same host
	mustMonitor(t, s, reg("peer-b", lockdID, 4))
	if regs := mustRegs(t, s); len(regs) != 3 {
		t.Fatalf("want 3 registrations, have %+v", regs)
	}
}

func TestMonitorRefusesBadNames(t *testing.T) {
	s, _ := openTestStore(t)
	for _, r := range []Registration{reg("a/b", lockdID, 0), reg(".x", lockdID, 0), reg("ok", MyID{Name: ""}, 0)} {
		var ne *NameError
		if err := s.Monitor(context.Background(), r); !errors.As(err, &ne) {
			t.Errorf("Monitor(%q, %q) = %v, want a NameError", r.MonName, r.MyID.Name, err)
		}
	}
	if regs := mustRegs(t, s); len(regs) != 0 {
		t.Fatalf("stored %+v", regs)
	}
}

func TestUnmonitorAndUnmonitorAll(t *testing.T) {
	s, _ := openTestStore(t)
	ctx := context.Background()
	for _, h := range []string{"a", "b", "c"} {
		mustMonitor(t, s, reg(h, lockdID, 1))
		mustMonitor(t, s, reg(h, otherID, 2))
	}
	if ok, err := s.Unmonitor(ctx, "b", lockdID); !ok || err != nil {
		t.Fatalf("Unmonitor(b) = %v, %v", ok, err)
	}
	if ok, err := s.Unmonitor(ctx, "b", lockdID); ok || err != nil {
		t.Fatalf("second Unmonitor(b) = %v, %v; want false", ok, err)
	}
	if ok, err := s.Unmonitor(ctx, "b", MyID{Name: "never-seen"}); ok || err != nil {
		t.Fatalf("Unmonitor for an unknown my_id = %v, %v", ok, err)
	}
	n, err := s.UnmonitorAll(ctx, otherID)
	if n != 3 || err != nil {
		t.Fatalf("UnmonitorAll = %d, %v; want 3", n, err)
	}
	var left []string
	for _, r := range mustRegs(t, s) {
		if r.MyID != lockdID {
			t.Errorf("registration of %+v survived", r.MyID)
		}
		left = append(left, r.MonName)
	}
	if !slices.Equal(left, []string{"a", "c"}) {
		t.Fatalf("left %v", left)
	}
	if n, err := s.UnmonitorAll(ctx, otherID); n != 0 || err != nil {
		t.Fatalf("second UnmonitorAll = %d, %v", n, err)
	}
}

func TestStartRebootVersusRestart(t *testing.T) {
	type step struct {
		bootID    string
		force     bool
		wantState int32
		reboot    bool
		regsAfter int
		owedAfter []string
	}
	cases := []struct {
		name  string
		steps []step
	}{
		{"first start ever", []step{{"b1", false, 1, true, 3, nil}}},
		{"daemon restart keeps everything", []step{
			{"b1", false, 1, true, 3, nil},
			{"b1", false, 1, false, 3, nil},
			{"b1", false, 1, false, 3, nil},
		}},
		{"reboot owes every monitored host and drops registrations", []step{
			{"b1", false, 1, true, 3, nil},
			{"b2", false, 3, true, 0, []string{"peer-a", "peer-b"}},
			{"b2", false, 3, false, 0, []string{"peer-a", "peer-b"}}, // restart: owed kept, nothing new
		}},
		{"forced reboot (-n) on the same boot", []step{
			{"b1", false, 1, true, 3, nil},
			{"b1", true, 3, true, 0, []string{"peer-a", "peer-b"}},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "statd.db")
			for i, st := range c.steps {
				s, err := OpenStore(path)
				if err != nil {
					t.Fatal(err)
				}
				res, err := StartCore(context.Background(), s, NewCore(CoreConfig{}), st.bootID, st.force, t0)
				if err != nil {
					t.Fatal(err)
				}
				if i == 0 {
					mustMonitor(t, s, reg("peer-a", lockdID, 1))
					mustMonitor(t, s, reg("peer-a", otherID, 1))
					mustMonitor(t, s, reg("peer-b", lockdID, 1))
				}
				state, _ := s.State()
				if res.State != st.wantState || state != st.wantState || res.Rebooted != st.reboot {
					t.Errorf("step %d: %+v, stored state %d; want state %d reboot %v", i, res, state, st.wantState, st.reboot)
				}
				if n := len(mustRegs(t, s)); n != st.regsAfter {
					t.Errorf("step %d: %d registrations, want %d", i, n, st.regsAfter)
				}
				if got := owedHosts(t, s); !slices.Equal(got, st.owedAfter) {
					t.Errorf("step %d: owed %v, want %v", i, got, st.owedAfter)
				}
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func TestRebootOwesNewStateOnFreshSchedule(t *testing.T) {
	s, _ := openTestStore(t)
	mustStart(t, s, "b1", t0)
	mustMonitor(t, s, reg("peer-a", lockdID, 1))
	res := mustStart(t, s, "b2", t0.Add(time.Hour))
	if res.Dropped != 1 || res.Owed != 1 || res.PrevState != 1 || res.State != 3 {
		t.Fatalf("%+v", res)
	}
	ctx := context.Background()
	tried := Owed{Host: "peer-a", State: 3, FirstOwed: t0.Add(time.Hour), Attempts: 5, NextTry: t0.Add(2 * time.Hour)}
	if err := s.Apply(ctx, []Change{{Kind: ChangeOwed, Owed: tried}}); err != nil {
		t.Fatal(err)
	}
	// A second reboot before peer-a was reached: it is owed the newer state,
	// on a schedule starting again.
	later := t0.Add(3 * time.Hour)
	res = mustStart(t, s, "b3", later)
	owed, _ := s.Owed()
	want := []Owed{{Host: "peer-a", State: 5, FirstOwed: later, NextTry: later}}
	if res.Owed != 1 || !owedEqual(owed, want) {
		t.Fatalf("owed %+v, want %+v", owed, want)
	}
}

func owedEqual(a, b []Owed) bool {
	return slices.EqualFunc(a, b, func(x, y Owed) bool {
		return x.Host == y.Host && x.State == y.State && x.Attempts == y.Attempts &&
			x.FirstOwed.Equal(y.FirstOwed) && x.NextTry.Equal(y.NextTry)
	})
}

func mustStart(t *testing.T, s *Store, bootID string, now time.Time) StartResult {
	t.Helper()
	res, err := StartCore(context.Background(), s, NewCore(CoreConfig{}), bootID, false, now)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// loadCore is a Core holding what s holds, as a daemon's after its start.
func loadCore(t testing.TB, s *Store) *Core {
	t.Helper()
	c := NewCore(CoreConfig{})
	regs, err := s.Registrations()
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Boot()
	if err != nil {
		t.Fatal(err)
	}
	owed, err := s.Owed()
	if err != nil {
		t.Fatal(err)
	}
	c.Load(regs)
	c.Restore(b, owed)
	return c
}

// simulateCrash is SM_SIMU_CRASH as the daemon runs it on s: planned by a
// Core holding what s holds, persisted, then applied.
func simulateCrash(t testing.TB, s *Store, now time.Time) int32 {
	t.Helper()
	c := loadCore(t, s)
	rd, state, err := c.SimuCrash(now)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(context.Background(), rd.Persist); err != nil {
		t.Fatal(err)
	}
	c.Apply(rd.Persist)
	return state
}

func TestSimulateCrash(t *testing.T) {
	s, _ := openTestStore(t)
	mustStart(t, s, "b1", t0)
	mustMonitor(t, s, reg("peer-a", lockdID, 1))
	mustMonitor(t, s, reg("peer-a", otherID, 1))
	mustMonitor(t, s, reg("peer-b", lockdID, 1))
	if state := simulateCrash(t, s, t0); state != 3 {
		t.Fatalf("SimuCrash = %d; want 3", state)
	}
	if n := len(mustRegs(t, s)); n != 3 {
		t.Errorf("%d registrations after SM_SIMU_CRASH, want all 3 kept", n)
	}
	if got := owedHosts(t, s); !slices.Equal(got, []string{"peer-a", "peer-b"}) {
		t.Errorf("owed %v", got)
	}
	if state := simulateCrash(t, s, t0); state != 5 {
		t.Errorf("second SimulateCrash = %d, want 5", state)
	}
	// A restart after SM_SIMU_CRASH keeps the advanced state.
	if res := mustStart(t, s, "b1", t0); res.State != 5 || res.Rebooted {
		t.Errorf("restart: %+v", res)
	}
}

// TestSettlingOwedNotifications: the store's rules for owed records, which
// hold whatever order two commits land in: a removal (delivered, given up)
// keeps a record owing a newer state; giving up is remembered until the
// host is registered again.
func TestSettlingOwedNotifications(t *testing.T) {
	s, _ := openTestStore(t)
	ctx := context.Background()
	mustStart(t, s, "b1", t0)
	for _, h := range []string{"a", "b", "c"} {
		mustMonitor(t, s, reg(h, lockdID, 1))
	}
	mustStart(t, s, "b2", t0) // state 3, a b c owed
	apply := func(chs ...Change) {
		t.Helper()
		if err := s.Apply(ctx, chs); err != nil {
			t.Fatal(err)
		}
	}
	paid := func(host string, state int32) Change {
		return Change{Kind: ChangeOwed, Remove: true, Owed: Owed{Host: host, State: state}}
	}
	apply(paid("a", 3), paid("a", 3)) // twice: no error
	apply(Change{Kind: ChangeOwed, Remove: true, GaveUp: true, At: t0.Add(24 * time.Hour), Owed: Owed{Host: "b", State: 3}})
	gave, err := s.GaveUp()
	if err != nil || len(gave) != 1 || gave[0].Host != "b" || gave[0].State != 3 || !gave[0].At.Equal(t0.Add(24*time.Hour)) {
		t.Fatalf("GaveUp() = %+v, %v", gave, err)
	}

	// An SM_SIMU_CRASH while c's attempt with state 3 was under way: the
	// late success must not erase the debt of state 5.
	mustMonitor(t, s, reg("c", lockdID, 1))
	simulateCrash(t, s, t0)
	apply(paid("c", 3))
	if got := owedHosts(t, s); !slices.Equal(got, []string{"c"}) {
		t.Fatalf("owed %v, want [c]", got)
	}
	next := t0.Add(90 * time.Second)
	apply(Change{Kind: ChangeOwed, Owed: Owed{Host: "c", State: 5, FirstOwed: t0, Attempts: 2, NextTry: next}})
	owed, _ := s.Owed()
	if want := []Owed{{Host: "c", State: 5, FirstOwed: t0, Attempts: 2, NextTry: next}}; !owedEqual(owed, want) {
		t.Fatalf("owed %+v, want %+v", owed, want)
	}

	// A new SM_MON for a host given up on clears the mark.
	mustMonitor(t, s, reg("b", lockdID, 1))
	if gave, _ := s.GaveUp(); len(gave) != 0 {
		t.Errorf("GaveUp() after a new SM_MON = %+v", gave)
	}
	// Bad records are refused before anything is written.
	if err := s.Apply(ctx, []Change{{Kind: ChangeOwed, Owed: Owed{Host: "bad/name", State: 5}}}); err == nil {
		t.Error("an owed record for an invalid name was written")
	}
	if err := s.Apply(ctx, []Change{{Kind: ChangeState, State: -1}}); err == nil {
		t.Error("a negative state number was written")
	}
}

func TestStoreSurvivesReopen(t *testing.T) {
	s, path := openTestStore(t)
	mustStart(t, s, "b1", t0)
	mustMonitor(t, s, reg("peer-a", lockdID, 7))
	simulateCrash(t, s, t0)
	s.Close()
	s2, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if st, _ := s2.State(); st != 3 {
		t.Errorf("state %d after reopen, want 3", st)
	}
	if regs := mustRegs(t, s2); len(regs) != 1 || !regEqual(regs[0], reg("peer-a", lockdID, 7)) {
		t.Errorf("registrations after reopen: %+v", regs)
	}
	if b, _ := s2.Boot(); b.BootID != "b1" || b.New {
		t.Errorf("boot after reopen: %+v", b)
	}
}

// TestConcurrentMonitorsShareCommits registers from many goroutines and
// checks every acknowledged registration is in the file after reopening,
// and that the acknowledgements did share commits.
func TestConcurrentMonitorsShareCommits(t *testing.T) {
	s, path := openTestStore(t)
	const n = 2000
	hosts := shuffledHosts(n)
	monitorAll(t, s, hosts, 64)
	s.Close()
	s2, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	regs := mustRegs(t, s2)
	if len(regs) != n {
		t.Fatalf("%d registrations after reopen, want %d", len(regs), n)
	}
	// bbolt's meta page id goes up by one per commit.
	var txid int
	s2.db.View(func(tx *bolt.Tx) error { txid = tx.ID(); return nil })
	t.Logf("%d SM_MON in %d commits", n, txid)
	if txid >= n {
		t.Errorf("%d commits for %d concurrent SM_MON: commits were not shared", txid, n)
	}
}

func TestStoreAfterClose(t *testing.T) {
	s, _ := openTestStore(t)
	s.Close()
	if err := s.Monitor(context.Background(), reg("a", lockdID, 1)); !errors.Is(err, ErrClosed) {
		t.Errorf("Monitor after Close = %v", err)
	}
	if err := s.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close = %v", err)
	}
}

func TestMonitorHonoursCancelledContext(t *testing.T) {
	s, _ := openTestStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := s.Monitor(ctx, reg("a", lockdID, 1))
	if err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Monitor with a cancelled context = %v", err)
	}
}

func TestOpenStoreRefusesForeignFiles(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage")
	os.WriteFile(garbage, []byte(strings.Repeat("this is not a database\n", 1000)), 0o600)
	text := filepath.Join(dir, "short")
	os.WriteFile(text, []byte("hello"), 0o600)

	other := filepath.Join(dir, "other.db")
	db, err := bolt.Open(other, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("users")); return err })
	db.Close()

	wrongMagic := filepath.Join(dir, "magic.db")
	db, _ = bolt.Open(wrongMagic, 0o600, nil)
	db.Update(func(tx *bolt.Tx) error {
		b, _ := tx.CreateBucket(bucketMeta)
		return b.Put(keyMagic, []byte("hoststat-nsm-store 99"))
	})
	db.Close()

	for _, c := range []struct{ path, want string }{
		{garbage, "not a hoststat NSM store or is damaged"},
		{text, "not a hoststat NSM store or is damaged"},
		{other, "not a hoststat NSM store"},
		{wrongMagic, `has store magic "hoststat-nsm-store 99"`},
		{filepath.Join(dir, "missing", "dir", "x.db"), "no such file"},
	} {
		before, _ := os.ReadFile(c.path)
		s, err := OpenStore(c.path)
		if err == nil {
			s.Close()
			t.Errorf("OpenStore(%s) succeeded", c.path)
			continue
		}
		if !strings.Contains(err.Error(), fmt.Sprintf("%q", c.path)) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("OpenStore(%s) = %q; want the path and %q", c.path, err, c.want)
		}
		if after, _ := os.ReadFile(c.path); string(after) != string(before) {
			t.Errorf("OpenStore(%s) changed the file", c.path)
		}
	}
}

func TestOpenStoreRefusesSecondOpener(t *testing.T) {
	_, path := openTestStore(t)
	start := time.Now()
	s, err := OpenStore(path)
	if err == nil {
		s.Close()
		t.Fatal("a second OpenStore of a store in use succeeded")
	}
	if !strings.Contains(err.Error(), "locked by another process") || time.Since(start) > 10*time.Second {
		t.Errorf("second OpenStore = %v after %v", err, time.Since(start))
	}
}

// TestStateNeverDecreases drives the state through restarts, reboots and
// simulated crashes and checks it only ever grows and is odd after each.
func TestStateNeverDecreases(t *testing.T) {
	path := filepath.Join(t.TempDir(), "statd.db")
	last := int32(0)
	for i := range 20 {
		s, err := OpenStore(path)
		if err != nil {
			t.Fatal(err)
		}
		switch i % 4 {
		case 0, 1:
			mustStart(t, s, fmt.Sprintf("boot-%d", i/2), t0)
		case 2:
			if _, err := StartCore(context.Background(), s, NewCore(CoreConfig{}), "boot", true, t0); err != nil {
				t.Fatal(err)
			}
		case 3:
			simulateCrash(t, s, t0)
		}
		st, _ := s.State()
		if st < last || st%2 != 1 {
			t.Fatalf("round %d: state %d after %d", i, st, last)
		}
		last = st
		s.Close()
	}
}
