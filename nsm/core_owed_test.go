package nsm

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// defaultAttemptTimes is the default schedule written out from its rules,
// in seconds after the debt arose, for a host that never answers: doubling
// from 1 s to the 30 s cap for ten minutes, then hourly, then one last
// attempt at exactly 24 h.
func defaultAttemptTimes() []int {
	times := []int{0, 1, 3, 7, 15, 31}
	// Every failure before the ten minutes are up is followed 30 s later,
	// so the frequent phase ends with an attempt just past them.
	for t := 61; ; t += 30 {
		times = append(times, t)
		if t >= 600 {
			break
		}
	}
	last := times[len(times)-1] // 601: the first failure after ten minutes
	for t := last + 3600; t < 86400; t += 3600 {
		times = append(times, t)
	}
	return append(times, 86400)
}

// owingCore is a Core past its start at state, owing hosts (first owed at
// base), notifications going out from base on (the first Tick sends).
func owingCore(cfg CoreConfig, state int32, base time.Time, hosts ...string) *Core {
	c := NewCore(cfg)
	var owed []Owed
	for _, h := range hosts {
		owed = append(owed, Owed{Host: h, State: state, FirstOwed: base, NextTry: base})
	}
	c.Restore(Boot{BootID: "b", State: state}, owed)
	c.StartNotifying(base.Add(-time.Nanosecond))
	return c
}

// attempt is one SM_NOTIFY the walk sent.
type attempt struct {
	host string
	at   time.Duration // after base
	out  OutcomeKind
	rec  []Change
}

// walk is the shell on a fake clock and a store that never fails: it
// ticks the core at each wake-up until nothing is left or stop says so,
// answers every SM_NOTIFY with answer, persists (applies) each outcome,
// and returns the attempts made.
func walk(t *testing.T, c *Core, base time.Time, answer func(host string, n int) SendResult, stop func(now time.Time) bool) []attempt {
	t.Helper()
	var out []attempt
	n := map[string]int{}
	for steps := 0; ; steps++ {
		if steps > 100000 {
			t.Fatal("schedule does not end")
		}
		now, ok := c.NextWake()
		if !ok || stop != nil && stop(now) {
			return out
		}
		rd := c.Tick(now)
		if len(rd.Notify) == 0 {
			t.Fatalf("woke at %v and nothing was due", now.Sub(base))
		}
		for i := 0; i < len(rd.Notify); i++ {
			o := rd.Notify[i]
			n[o.Host]++
			done, kind := c.NotifyDone(o.Host, answer(o.Host, n[o.Host]), "no answer", now)
			c.Apply(done.Persist)
			out = append(out, attempt{o.Host, now.Sub(base), kind, done.Persist})
			rd.Notify = append(rd.Notify, done.Notify...)
		}
	}
}

func never(string, int) SendResult { return Failed }

func secondsOf(as []attempt, host string) []int {
	var out []int
	for _, a := range as {
		if a.host == host {
			out = append(out, int(a.at/time.Second))
		}
	}
	return out
}

// TestOwedScheduleFullDay runs the whole 24-hour schedule of one host
// that never answers on a fake clock: attempts at the times the rules
// give, each failure recorded before the next, and at the end the host
// recorded as given up on and forgotten.
func TestOwedScheduleFullDay(t *testing.T) {
	c := owingCore(CoreConfig{}, 3, t0, "peer")
	as := walk(t, c, t0, never, nil)
	want := defaultAttemptTimes()
	if got := secondsOf(as, "peer"); !slices.Equal(got, want) {
		t.Fatalf("attempts at %v s\nwant %v", got, want)
	}
	for i, a := range as[:len(as)-1] {
		if a.out != Retry || len(a.rec) != 1 || a.rec[0].Remove || a.rec[0].Owed.Attempts != i+1 {
			t.Fatalf("attempt %d: %v recording %+v, want a retry with %d attempts", i, a.out, a.rec, i+1)
		}
	}
	last := as[len(as)-1]
	if last.out != Abandoned || len(last.rec) != 1 || !last.rec[0].Remove || !last.rec[0].GaveUp || last.rec[0].Owed.State != 3 {
		t.Errorf("last attempt %v recording %+v, want given up", last.out, last.rec)
	}
	if c.OwedLen() != 0 {
		t.Errorf("%d hosts left after giving up", c.OwedLen())
	}
	if got := secondsOf(as, "peer"); got[len(got)-2]-got[len(got)-3] != 3600 || got[24] != 601 {
		t.Errorf("phases wrong: %v", got)
	}
}

func TestOwedSuccessStopsRetries(t *testing.T) {
	c := owingCore(CoreConfig{}, 3, t0, "peer")
	as := walk(t, c, t0, func(_ string, n int) SendResult {
		if n == 4 {
			return Acked
		}
		return Failed
	}, nil)
	if got := secondsOf(as, "peer"); !slices.Equal(got, []int{0, 1, 3, 7}) {
		t.Fatalf("attempts at %v", got)
	}
	last := as[len(as)-1]
	if last.out != Delivered || len(last.rec) != 1 || !last.rec[0].Remove || last.rec[0].GaveUp || last.rec[0].Owed.State != 3 {
		t.Errorf("last %v recording %+v", last.out, last.rec)
	}
	if _, ok := c.NextWake(); ok || c.OwedLen() != 0 {
		t.Error("something left after success")
	}
}

// TestOwedRestartContinuesSchedule persists every outcome in a real store,
// stops the daemon mid-schedule, starts a new Core from the store in the
// same boot, and checks the attempts go on where they were (every
// acknowledged outcome reloaded) instead of starting over.
func TestOwedRestartContinuesSchedule(t *testing.T) {
	want := defaultAttemptTimes()
	ctx := context.Background()
	for _, cut := range []int{3, 10, 24, 30} {
		path := filepath.Join(t.TempDir(), "statd.db")
		s, err := OpenStore(path)
		if err != nil {
			t.Fatal(err)
		}
		c := NewCore(CoreConfig{})
		if _, err := StartCore(ctx, s, c, "b1", false, t0); err != nil {
			t.Fatal(err)
		}
		mustMonitor(t, s, reg("peer", lockdID, 1))
		c = NewCore(CoreConfig{})
		if _, err := StartCore(ctx, s, c, "b2", false, t0); err != nil { // a reboot: peer owed
			t.Fatal(err)
		}
		c.StartNotifying(t0.Add(-time.Nanosecond))
		var before []int
		for len(before) < cut {
			now, _ := c.NextWake()
			for _, o := range c.Tick(now).Notify {
				before = append(before, int(now.Sub(t0)/time.Second))
				rd, _ := c.NotifyDone(o.Host, Failed, "no answer", now)
				if err := s.Apply(ctx, rd.Persist); err != nil {
					t.Fatal(err)
				}
				c.Apply(rd.Persist)
			}
		}
		mem := c.Pending()
		s.Close()

		s, err = OpenStore(path)
		if err != nil {
			t.Fatal(err)
		}
		restarted := NewCore(CoreConfig{})
		res, err := StartCore(ctx, s, restarted, "b2", false, t0)
		if err != nil || res.Rebooted || res.State != c.State() {
			t.Fatalf("restart: %+v, %v", res, err)
		}
		if got := restarted.Pending(); !slices.EqualFunc(got, mem, func(a, b OwedInfo) bool { return owedEqual([]Owed{a.Owed}, []Owed{b.Owed}) }) {
			t.Fatalf("cut %d: reloaded %+v, acknowledged %+v", cut, got, mem)
		}
		restarted.StartNotifying(t0.Add(-time.Nanosecond))
		after := walk(t, restarted, t0, never, nil)
		if got := append(before, secondsOf(after, "peer")...); !slices.Equal(got, want) {
			t.Errorf("cut after %d attempts: attempts at %v\nwant %v", cut, got, want)
		}
		s.Close()
	}
}

// TestOwedRestartAfterDowntime: a record whose next try passed while the
// daemon was down is due at once, and keeps its place in the 24-hour
// window.
func TestOwedRestartAfterDowntime(t *testing.T) {
	c := NewCore(CoreConfig{})
	c.Restore(Boot{BootID: "b", State: 3}, []Owed{
		{Host: "peer", State: 3, FirstOwed: t0, Attempts: 8, NextTry: t0.Add(2 * time.Minute)},
		{Host: "late", State: 3, FirstOwed: t0, Attempts: 30, NextTry: t0.Add(25 * time.Hour)},
	})
	now := t0.Add(3 * time.Hour)
	rd := c.StartNotifying(now)
	if len(rd.Notify) != 1 || rd.Notify[0].Host != "peer" {
		t.Fatalf("due %+v", rd.Notify)
	}
	done, out := c.NotifyDone("peer", Failed, "", now)
	if r := done.Persist[0].Owed; out != Retry || !r.NextTry.Equal(now.Add(time.Hour)) || r.Attempts != 9 {
		t.Fatalf("%v %+v", out, done.Persist)
	}
	late := t0.Add(25 * time.Hour)
	c.Tick(late)
	if _, out := c.NotifyDone("late", Failed, "", late); out != Abandoned {
		t.Errorf("a failure past 24 h: %v, want abandoned", out)
	}
}

// TestOwedHostsAreIndependent: a host whose attempt hangs for hours does
// not hold up the others, and each follows its own schedule.
func TestOwedHostsAreIndependent(t *testing.T) {
	c := owingCore(CoreConfig{}, 3, t0, "hangs", "flaky")
	c.Apply([]Change{{Kind: ChangeOwed, Owed: Owed{Host: "later", State: 3, FirstOwed: t0.Add(5 * time.Second)}}})
	rd := c.Tick(t0)
	if len(rd.Notify) != 2 || rd.Notify[0].Host != "flaky" || rd.Notify[1].Host != "hangs" {
		t.Fatalf("due at start: %+v", rd.Notify)
	}
	// "hangs" never reports back during this test.
	done, _ := c.NotifyDone("flaky", Failed, "", t0)
	c.Apply(done.Persist)
	if next, ok := c.NextWake(); !ok || !next.Equal(t0.Add(time.Second)) {
		t.Fatalf("next wake %v, %v", next, ok)
	}
	var got []string
	for now := t0; now.Before(t0.Add(10 * time.Second)); now = now.Add(time.Second) {
		for _, o := range c.Tick(now).Notify {
			got = append(got, o.Host+"@"+now.Sub(t0).String())
			res := Failed
			if o.Host == "later" {
				res = Acked
			}
			done, _ := c.NotifyDone(o.Host, res, "", now)
			c.Apply(done.Persist)
		}
	}
	if want := []string{"flaky@1s", "flaky@3s", "later@5s", "flaky@7s"}; !slices.Equal(got, want) {
		t.Fatalf("attempts %v, want %v", got, want)
	}
	if c.OwedLen() != 2 {
		t.Errorf("%d owed, want hangs and flaky", c.OwedLen())
	}
	if _, out := c.NotifyDone("later", Acked, "", t0); out != NotInFlight {
		t.Errorf("result for a finished host: %v", out)
	}
	if _, out := c.NotifyDone("hangs", Acked, "", t0.Add(time.Hour)); out != Delivered {
		t.Errorf("late answer of the hung attempt: %v", out)
	}
}

// TestOwedInFlightBound: at most MaxNotifyInFlight SM_NOTIFYs at once;
// each result frees a slot for the next host due.
func TestOwedInFlightBound(t *testing.T) {
	var hosts []string
	for i := range 10 {
		hosts = append(hosts, clientName(i))
	}
	c := owingCore(CoreConfig{MaxNotifyInFlight: 3}, 3, t0, hosts...)
	rd := c.Tick(t0)
	if len(rd.Notify) != 3 {
		t.Fatalf("%d sent at once, bound 3", len(rd.Notify))
	}
	if _, ok := c.NextWake(); ok {
		t.Error("a wake-up asked for while the bound is reached (the shell would spin)")
	}
	sent := len(rd.Notify)
	for i := 0; i < len(rd.Notify); i++ {
		done, _ := c.NotifyDone(rd.Notify[i].Host, Acked, "", t0)
		if len(done.Notify) > 1 {
			t.Fatalf("one result freed %d slots", len(done.Notify))
		}
		c.Apply(done.Persist)
		sent += len(done.Notify)
		rd.Notify = append(rd.Notify, done.Notify...)
	}
	if sent != 10 || c.OwedLen() != 0 {
		t.Fatalf("%d sent, %d owed", sent, c.OwedLen())
	}
}

// TestCoreSimuCrash: SM_SIMU_CRASH plans the state +2 and a fresh debt of
// it for every monitored host and every host still owed, registrations
// kept; nothing changes in memory until the plan is applied (the shell
// applies it after the write, and only then replies). An attempt under
// way when it lands keeps the newer debt whatever it achieved.
func TestCoreSimuCrash(t *testing.T) {
	c := owingCore(CoreConfig{}, 3, t0, "owed-host")
	disk := map[string][16]byte{}
	mon(t, c, disk, "peer-a", nlm, 1)
	mon(t, c, disk, "Peer-B", nlm, 1)
	sent := c.Tick(t0).Notify
	if len(sent) != 1 || sent[0].Host != "owed-host" {
		t.Fatalf("sent %+v", sent)
	}
	crash := t0.Add(time.Minute)
	rd, state, err := c.SimuCrash(crash)
	if err != nil || state != 5 {
		t.Fatalf("SimuCrash = %d, %v", state, err)
	}
	if c.State() != 3 || len(c.Pending()) != 1 || c.Pending()[0].State != 3 {
		t.Fatalf("the core moved before the write: state %d, owed %+v", c.State(), c.Pending())
	}
	var owed []string
	for _, ch := range rd.Persist[1:] {
		if ch.Kind != ChangeOwed || ch.Remove || ch.Owed.State != 5 || !ch.Owed.FirstOwed.Equal(crash) {
			t.Fatalf("change %+v", ch)
		}
		owed = append(owed, ch.Owed.Host)
	}
	if ch := rd.Persist[0]; ch.Kind != ChangeState || ch.State != 5 || ch.BootID != "" {
		t.Fatalf("first change %+v, want the state", ch)
	}
	if !slices.Equal(owed, []string{"Peer-B", "owed-host", "peer-a"}) {
		t.Fatalf("owed %v", owed)
	}
	c.Apply(rd.Persist)
	if c.State() != 5 || c.OwedLen() != 3 || c.Len() != 2 {
		t.Fatalf("after apply: state %d, %d owed, %d registrations", c.State(), c.OwedLen(), c.Len())
	}
	// The attempt of state 3 under way succeeds: state 5 is still owed.
	done, out := c.NotifyDone("owed-host", Acked, "", crash)
	if out != Retry || len(done.Persist) != 1 || done.Persist[0].Remove || done.Persist[0].Owed.State != 5 {
		t.Fatalf("late success: %v %+v", out, done.Persist)
	}
	c.Apply(done.Persist)
	var states []int32
	for _, o := range append(done.Notify, c.Tick(crash).Notify...) {
		states = append(states, o.State)
	}
	if !slices.Equal(states, []int32{5, 5, 5}) {
		t.Fatalf("sent states %v after the crash", states)
	}
}

// TestCoreStartRebootVersusRestart: on a reboot the core plans the next
// odd state, a fresh debt for every monitored host (each spelling on
// disk) and every host owed, and the removal of every registration; on a
// restart in the same boot, only the boot record. Memory and the store
// hold the same afterwards.
func TestCoreStartRebootVersusRestart(t *testing.T) {
	ctx := context.Background()
	s, path := openTestStore(t)
	mustStart(t, s, "b1", t0)
	mustMonitor(t, s, reg("peer-a", lockdID, 1))
	mustMonitor(t, s, reg("peer-a", otherID, 1))
	mustMonitor(t, s, reg("PEER-B", lockdID, 1))
	if err := s.Apply(ctx, []Change{{Kind: ChangeOwed, Owed: Owed{Host: "old-debt", State: 1, FirstOwed: t0, Attempts: 4, NextTry: t0.Add(time.Hour)}}}); err != nil {
		t.Fatal(err)
	}
	check := func(what string, c *Core, wantState int32, wantRegs int, wantOwed []string) {
		t.Helper()
		b, _ := s.Boot()
		owed, _ := s.Owed()
		var disk, mem []string
		for _, o := range owed {
			disk = append(disk, o.Host)
		}
		for _, o := range c.Pending() {
			mem = append(mem, o.Host)
		}
		if b.State != wantState || c.State() != wantState || len(mustRegs(t, s)) != wantRegs || c.Len() != wantRegs ||
			!slices.Equal(disk, wantOwed) || !slices.Equal(mem, wantOwed) {
			t.Fatalf("%s: state %d/%d, registrations %d/%d, owed %v/%v (disk/memory); want %d, %d, %v",
				what, b.State, c.State(), len(mustRegs(t, s)), c.Len(), disk, mem, wantState, wantRegs, wantOwed)
		}
	}
	c := NewCore(CoreConfig{})
	res, err := StartCore(ctx, s, c, "b1", false, t0)
	if err != nil || res.Rebooted || res.State != 1 || res.Owed != 1 {
		t.Fatalf("restart: %+v, %v", res, err)
	}
	check("restart", c, 1, 3, []string{"old-debt"})
	if o := c.Pending()[0]; o.Attempts != 4 {
		t.Fatalf("a restart reset the schedule: %+v", o)
	}

	later := t0.Add(time.Hour)
	c = NewCore(CoreConfig{})
	res, err = StartCore(ctx, s, c, "b2", false, later)
	if err != nil || !res.Rebooted || res.State != 3 || res.PrevState != 1 || res.Dropped != 3 || res.Owed != 3 {
		t.Fatalf("reboot: %+v, %v", res, err)
	}
	check("reboot", c, 3, 0, []string{"PEER-B", "old-debt", "peer-a"})
	for _, o := range c.Pending() {
		if o.State != 3 || o.Attempts != 0 || !o.FirstOwed.Equal(later) {
			t.Fatalf("not a fresh debt of the new state: %+v", o)
		}
	}
	s.Close()
	s2, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if b, _ := s2.Boot(); b.BootID != "b2" || b.State != 3 {
		t.Fatalf("boot record %+v", b)
	}
}

// TestCoreFailedWriteLeavesCoreAsStored: when the outcome of an attempt, a
// simulated crash or a start cannot be written, the core stays where the
// store is: the attempt count unchanged, the host tried again after the
// first retry delay with the failure shown, the state number unmoved.
func TestCoreFailedWriteLeavesCoreAsStored(t *testing.T) {
	ctx := context.Background()
	s, _ := openTestStore(t)
	mustStart(t, s, "b1", t0)
	mustMonitor(t, s, reg("peer", lockdID, 1))
	c := NewCore(CoreConfig{Notify: Schedule{FirstRetry: 2 * time.Second}})
	if _, err := StartCore(ctx, s, c, "b2", false, t0); err != nil {
		t.Fatal(err)
	}
	sent := c.StartNotifying(t0).Notify
	if len(sent) != 1 {
		t.Fatalf("sent %+v", sent)
	}
	s.Close() // every write fails from here on
	now := t0.Add(time.Second)
	rd, _ := c.NotifyDone("peer", Failed, "peer unreachable", now)
	err := s.Apply(ctx, rd.Persist)
	if err == nil {
		t.Fatal("write to a closed store succeeded")
	}
	c.Release("peer", now, "recording the attempt: "+err.Error())
	p := c.Pending()
	if len(p) != 1 || p[0].Attempts != 0 || !p[0].NextTry.Equal(now.Add(2*time.Second)) || !strings.Contains(p[0].LastErr, "recording the attempt") {
		t.Fatalf("schedule after a failed write: %+v", p)
	}
	if got := c.Tick(now.Add(2 * time.Second)).Notify; len(got) != 1 || got[0].Attempts != 0 {
		t.Fatalf("not tried again: %+v", got)
	}

	rd, _, err = c.SimuCrash(now)
	if err != nil {
		t.Fatal(err)
	}
	if s.Apply(ctx, rd.Persist) == nil {
		t.Fatal("write to a closed store succeeded")
	}
	if c.State() != 3 || c.Pending()[0].State != 3 {
		t.Fatalf("a simulated crash not written moved the core: state %d, owed %+v", c.State(), c.Pending())
	}
	if _, err := StartCore(ctx, s, NewCore(CoreConfig{}), "b3", false, now); err == nil {
		t.Fatal("a start on a closed store succeeded")
	}
}

// TestCoreOwedTelemetry: a host telemetry shows down is held off the
// schedule (no blind retries) and due the moment it is seen up; a host
// telemetry knows is never given up by the clock, only when it is gone
// (recorded as given up on); a debt forgotten during an attempt is
// dropped when the attempt ends, nothing recorded.
func TestCoreOwedTelemetry(t *testing.T) {
	c := owingCore(CoreConfig{}, 3, t0, "down")
	c.OwedSeen("down", true, true, t0)
	if got := c.Tick(t0).Notify; len(got) != 0 {
		t.Fatalf("sent to a host shown down: %+v", got)
	}
	if _, ok := c.NextWake(); ok || !c.Pending()[0].Held {
		t.Fatal("a held host is still on the schedule")
	}
	if got := c.Tick(t0.Add(48 * time.Hour)).Notify; len(got) != 0 {
		t.Fatalf("held host sent: %+v", got)
	}
	back := t0.Add(30 * time.Hour)
	rd, woken := c.Returned("down", back)
	if len(woken) != 1 || len(rd.Notify) != 1 || rd.Notify[0].Host != "down" || rd.Notify[0].State != 3 {
		t.Fatalf("woken %+v, sent %+v", woken, rd.Notify)
	}
	// Past the 24 h give-up, a followed host is retried, not abandoned.
	done, out := c.NotifyDone("down", Failed, "", back)
	if out != Retry || !done.Persist[0].Owed.NextTry.Equal(back.Add(time.Hour)) {
		t.Fatalf("followed host past give-up: %v %+v", out, done.Persist)
	}
	c.Apply(done.Persist)
	// Down again, held at its next try, then gone: given up on.
	c.OwedSeen("down", true, true, back)
	if got := c.Tick(back.Add(time.Hour)).Notify; len(got) != 0 {
		t.Fatalf("sent %+v", got)
	}
	gone := c.Gone("down", back.Add(2*time.Hour))
	if len(gone.Persist) != 1 || !gone.Persist[0].Remove || !gone.Persist[0].GaveUp {
		t.Fatalf("gone: %+v", gone.Persist)
	}
	c.Apply(gone.Persist)
	if c.OwedLen() != 0 {
		t.Fatal("a gone host is still owed")
	}

	// Forgotten during an attempt: nothing to record, dropped at its end.
	c = owingCore(CoreConfig{}, 3, t0, "forgotten")
	c.Tick(t0)
	_, remove := c.Forget("forgotten", t0)
	if len(remove) != 1 || remove[0].Kind != ChangeOwed || !remove[0].GaveUp {
		t.Fatalf("forget plans %+v", remove)
	}
	c.Apply(remove)
	if done, out := c.NotifyDone("forgotten", Failed, "", t0); out != NotInFlight || len(done.Persist) != 0 || c.OwedLen() != 0 {
		t.Fatalf("dropped in flight: %v %+v, %d owed", out, done.Persist, c.OwedLen())
	}
	// Not followed: the clock gives up as before.
	c = owingCore(CoreConfig{}, 3, t0, "unknown")
	c.Tick(t0)
	if _, out := c.NotifyDone("unknown", Failed, "", t0.Add(30*time.Hour)); out != Abandoned {
		t.Fatalf("unfollowed host past give-up: %v", out)
	}
}

// TestCoreNotifyOnRequest is rpc.statd -L then -n: the debts of the start
// wait; NotifyAll sends every one (even to a host shown down), once; a
// debt already tried, and one a simulated crash owes, go as usual.
func TestCoreNotifyOnRequest(t *testing.T) {
	c := NewCore(CoreConfig{NotifyOnRequest: true})
	c.Restore(Boot{BootID: "b", State: 3}, []Owed{
		{Host: "fresh", State: 3, FirstOwed: t0},
		{Host: "down", State: 3, FirstOwed: t0},
		{Host: "tried", State: 3, FirstOwed: t0, Attempts: 2, NextTry: t0},
	})
	c.OwedSeen("down", true, true, t0)
	rd := c.StartNotifying(t0)
	if len(rd.Notify) != 1 || rd.Notify[0].Host != "tried" {
		t.Fatalf("sent under -L: %+v", rd.Notify)
	}
	rd, hosts := c.NotifyAll(t0)
	if !slices.Equal(hosts, []string{"down", "fresh"}) || len(rd.Notify) != 2 {
		t.Fatalf("pass of %v sent %+v", hosts, rd.Notify)
	}
	for _, o := range rd.Notify {
		done, _ := c.NotifyDone(o.Host, Failed, "", t0)
		c.Apply(done.Persist)
	}
	// Tried once: now on the schedule like any other, held while down.
	if got := c.Tick(t0.Add(time.Second)).Notify; len(got) != 1 || got[0].Host != "fresh" || got[0].Attempts != 1 {
		t.Fatalf("after the pass: %+v", got)
	}
	if p := c.Pending(); !p[0].Held || p[0].Host != "down" {
		t.Fatalf("after the pass: %+v", p)
	}

	c = NewCore(CoreConfig{NotifyOnRequest: true})
	c.Restore(Boot{BootID: "b", State: 3}, []Owed{{Host: "fresh", State: 3, FirstOwed: t0}})
	c.StartNotifying(t0)
	rd, _, _ = c.SimuCrash(t0)
	c.Apply(rd.Persist)
	if got := c.Tick(t0).Notify; len(got) != 1 || got[0].State != 5 {
		t.Fatalf("after SM_SIMU_CRASH under -L: %+v", got)
	}
}

func TestScheduleConfigurable(t *testing.T) {
	short := Schedule{FirstRetry: 100 * time.Millisecond, MaxRetry: 200 * time.Millisecond, FrequentFor: time.Second, Slow: 2 * time.Second, GiveUpAfter: 5 * time.Second}
	c := owingCore(CoreConfig{Notify: short}, 1, t0, "peer")
	var ms []int
	for _, a := range walk(t, c, t0, never, nil) {
		ms = append(ms, int(a.at/time.Millisecond))
	}
	if want := []int{0, 100, 300, 500, 700, 900, 1100, 3100, 5000}; !slices.Equal(ms, want) {
		t.Fatalf("attempts at %v ms, want %v", ms, want)
	}
	// Zero or negative fields fall back to the defaults instead of spinning.
	if got := (Schedule{}).withDefaults(); got != DefaultSchedule() {
		t.Errorf("zero schedule became %+v", got)
	}
}

// BenchmarkCoreOwedReboot: ten thousand hosts owed at once, all answering.
func BenchmarkCoreOwedReboot(b *testing.B) {
	hosts := make([]string, 10000)
	for i := range hosts {
		hosts[i] = clientName(i)
	}
	for range b.N {
		c := owingCore(CoreConfig{}, 3, t0, hosts...)
		rd := c.Tick(t0)
		for i := 0; i < len(rd.Notify); i++ {
			done, _ := c.NotifyDone(rd.Notify[i].Host, Acked, "", t0)
			c.Apply(done.Persist)
			rd.Notify = append(rd.Notify, done.Notify...)
		}
		if c.OwedLen() != 0 {
			b.Fatal("left over")
		}
	}
}
