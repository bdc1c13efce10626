package nsm

import (
	"slices"
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

// walk runs n with a fake clock until nothing is left or stop says so,
// answering each attempt with answer, and returns the attempts made per
// host in seconds after base.
func walk(t *testing.T, n *Notifier, base time.Time, answer func(host string, attempt int) bool, stop func(now time.Time) bool) (map[string][]int, []Outcome) {
	t.Helper()
	tries := map[string][]int{}
	var outcomes []Outcome
	for steps := 0; ; steps++ {
		if steps > 100000 {
			t.Fatal("schedule does not end")
		}
		now, ok := n.NextWake()
		if !ok || (stop != nil && stop(now)) {
			return tries, outcomes
		}
		due := n.Due(now)
		if len(due) == 0 {
			t.Fatalf("woke at %v and nothing was due", now)
		}
		for _, o := range due {
			tries[o.Host] = append(tries[o.Host], int(now.Sub(base)/time.Second))
			outcomes = append(outcomes, n.Done(o.Host, answer(o.Host, len(tries[o.Host])), now))
		}
	}
}

func never(string, int) bool { return false }

func TestScheduleFullDayThenGiveUp(t *testing.T) {
	n := NewNotifier(DefaultSchedule())
	n.Owe("peer", 3, t0)
	start := time.Now()
	tries, outcomes := walk(t, n, t0, never, nil)
	if took := time.Since(start); took > time.Second {
		t.Errorf("24 hours of schedule took %v of real time", took)
	}
	want := defaultAttemptTimes()
	if !slices.Equal(tries["peer"], want) {
		t.Fatalf("attempts at %v s\nwant %v", tries["peer"], want)
	}
	last := outcomes[len(outcomes)-1]
	if last.Kind != Abandoned || last.Owed.Attempts != len(want) || last.Owed.State != 3 {
		t.Errorf("last outcome %+v, want abandoned after %d failures", last, len(want))
	}
	for _, o := range outcomes[:len(outcomes)-1] {
		if o.Kind != Retry {
			t.Fatalf("outcome %+v before the end, want retry", o)
		}
	}
	if n.Len() != 0 {
		t.Errorf("%d hosts left after giving up", n.Len())
	}
	// The frequent phase is ten minutes, then hourly:
	if got := tries["peer"]; got[len(got)-2]-got[len(got)-3] != 3600 || got[24] != 601 {
		t.Errorf("phases wrong: %v", got)
	}
}

func TestSuccessStopsRetries(t *testing.T) {
	n := NewNotifier(DefaultSchedule())
	n.Owe("peer", 3, t0)
	tries, outcomes := walk(t, n, t0, func(_ string, attempt int) bool { return attempt == 4 }, nil)
	if !slices.Equal(tries["peer"], []int{0, 1, 3, 7}) {
		t.Fatalf("attempts at %v", tries["peer"])
	}
	if last := outcomes[len(outcomes)-1]; last.Kind != Delivered || last.Owed.Host != "peer" || last.Owed.State != 3 {
		t.Errorf("last outcome %+v", last)
	}
	if _, ok := n.NextWake(); ok || n.Len() != 0 {
		t.Error("something left after success")
	}
}

// TestRestartContinuesSchedule persists outcomes as the daemon does, drops
// the Notifier mid-schedule, rebuilds it from the records, and checks the
// attempts go on where they were instead of starting over.
func TestRestartContinuesSchedule(t *testing.T) {
	want := defaultAttemptTimes()
	for _, cut := range []int{3, 10, 24, 30} {
		n := NewNotifier(DefaultSchedule())
		n.Owe("peer", 5, t0)
		stored := Owed{Host: "peer", State: 5, FirstOwed: t0, NextTry: t0}
		var before []int
		for len(before) < cut {
			now, _ := n.NextWake()
			for _, o := range n.Due(now) {
				before = append(before, int(now.Sub(t0)/time.Second))
				out := n.Done(o.Host, false, now)
				stored.NextTry, stored.Attempts = out.Owed.NextTry, out.Owed.Attempts // Store.Reschedule
			}
		}
		restarted := NewNotifier(DefaultSchedule())
		restarted.Add(stored)
		after, _ := walk(t, restarted, t0, never, nil)
		if got := append(before, after["peer"]...); !slices.Equal(got, want) {
			t.Errorf("cut after %d attempts: attempts at %v\nwant %v", cut, got, want)
		}
	}
}

// TestRestartAfterDowntime: a record whose next try passed while the daemon
// was down is due at once, and keeps its place in the 24-hour window.
func TestRestartAfterDowntime(t *testing.T) {
	n := NewNotifier(DefaultSchedule())
	n.Add(Owed{Host: "peer", State: 3, FirstOwed: t0, Attempts: 8, NextTry: t0.Add(2 * time.Minute)})
	now := t0.Add(3 * time.Hour)
	if due := n.Due(now); len(due) != 1 {
		t.Fatalf("due %v", due)
	}
	out := n.Done("peer", false, now)
	if out.Kind != Retry || !out.Owed.NextTry.Equal(now.Add(time.Hour)) || out.Owed.Attempts != 9 {
		t.Fatalf("outcome %+v", out)
	}
	n.Add(Owed{Host: "late", State: 3, FirstOwed: t0, Attempts: 30, NextTry: t0.Add(25 * time.Hour)})
	n.Due(t0.Add(25 * time.Hour))
	if out := n.Done("late", false, t0.Add(25*time.Hour)); out.Kind != Abandoned {
		t.Errorf("a failure past 24 h: %+v, want abandoned", out)
	}
}

// TestHostsAreIndependent: a host whose attempt hangs for hours does not
// hold up the others, and each follows its own schedule.
func TestHostsAreIndependent(t *testing.T) {
	n := NewNotifier(DefaultSchedule())
	n.Owe("hangs", 3, t0)
	n.Owe("flaky", 3, t0)
	n.Owe("later", 3, t0.Add(5*time.Second))
	if due := n.Due(t0); len(due) != 2 || due[0].Host != "flaky" || due[1].Host != "hangs" {
		t.Fatalf("due at start: %+v", due)
	}
	// "hangs" never reports back during this test.
	n.Done("flaky", false, t0)
	next, ok := n.NextWake()
	if !ok || !next.Equal(t0.Add(time.Second)) {
		t.Fatalf("next wake %v, %v", next, ok)
	}
	var got []string
	for now := t0; now.Before(t0.Add(10 * time.Second)); now = now.Add(time.Second) {
		for _, o := range n.Due(now) {
			got = append(got, o.Host+"@"+now.Sub(t0).String())
			n.Done(o.Host, o.Host == "later", now)
		}
	}
	want := []string{"flaky@1s", "flaky@3s", "later@5s", "flaky@7s"}
	if !slices.Equal(got, want) {
		t.Fatalf("attempts %v, want %v", got, want)
	}
	if n.Len() != 2 {
		t.Errorf("%d owed, want hangs and flaky", n.Len())
	}
	if out := n.Done("later", true, t0); out.Kind != NotInFlight {
		t.Errorf("Done for a finished host: %+v", out)
	}
	if out := n.Done("hangs", true, t0.Add(time.Hour)); out.Kind != Delivered {
		t.Errorf("late answer of the hung attempt: %+v", out)
	}
}

// TestNewerStateDuringAttempt: an SM_SIMU_CRASH while an attempt is under
// way must not be lost when the older attempt succeeds.
func TestNewerStateDuringAttempt(t *testing.T) {
	n := NewNotifier(DefaultSchedule())
	n.Owe("peer", 3, t0)
	n.Due(t0)
	crash := t0.Add(2 * time.Second)
	n.Owe("peer", 5, crash)
	n.Owe("peer", 3, crash) // older news changes nothing
	out := n.Done("peer", true, crash.Add(time.Second))
	if out.Kind != Retry || out.Owed.State != 5 || out.Owed.Attempts != 0 || !out.Owed.NextTry.Equal(crash) {
		t.Fatalf("outcome %+v, want a fresh retry of state 5", out)
	}
	due := n.Due(crash.Add(time.Second))
	if len(due) != 1 || due[0].State != 5 {
		t.Fatalf("due %+v", due)
	}
	if out := n.Done("peer", true, crash.Add(time.Second)); out.Kind != Delivered || out.Owed.State != 5 {
		t.Fatalf("outcome %+v", out)
	}

	// Not in flight: a newer state replaces the schedule at once.
	n.Owe("idle", 3, t0)
	n.Due(t0)
	n.Done("idle", false, t0)
	n.Owe("idle", 5, t0.Add(time.Minute))
	p := n.Pending()
	if len(p) != 1 || p[0].State != 5 || p[0].Attempts != 0 || !p[0].NextTry.Equal(t0.Add(time.Minute)) {
		t.Fatalf("pending %+v", p)
	}
}

func TestScheduleConfigurable(t *testing.T) {
	short := Schedule{FirstRetry: 100 * time.Millisecond, MaxRetry: 200 * time.Millisecond, FrequentFor: time.Second, Slow: 2 * time.Second, GiveUpAfter: 5 * time.Second}
	n := NewNotifier(short)
	n.Owe("peer", 1, t0)
	var ms []int
	for {
		now, ok := n.NextWake()
		if !ok {
			break
		}
		for _, o := range n.Due(now) {
			ms = append(ms, int(now.Sub(t0)/time.Millisecond))
			n.Done(o.Host, false, now)
		}
	}
	want := []int{0, 100, 300, 500, 700, 900, 1100, 3100, 5000}
	if !slices.Equal(ms, want) {
		t.Fatalf("attempts at %v ms, want %v", ms, want)
	}
	// Zero or negative fields fall back to the defaults instead of spinning.
	if got := (Schedule{}).withDefaults(); got != DefaultSchedule() {
		t.Errorf("zero schedule became %+v", got)
	}
}

// BenchmarkNotifierReboot: ten thousand hosts owed at once, all answering.
func BenchmarkNotifierReboot(b *testing.B) {
	for range b.N {
		n := NewNotifier(DefaultSchedule())
		for i := range 10000 {
			n.Owe(clientName(i), 3, t0)
		}
		for _, o := range n.Due(t0) {
			n.Done(o.Host, true, t0)
		}
		if n.Len() != 0 {
			b.Fatal("left over")
		}
	}
}
