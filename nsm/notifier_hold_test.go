package nsm

import (
	"testing"
	"time"
)

// A host telemetry shows down is held off the schedule (no blind retries)
// and due the moment it is woken; a host telemetry knows is never given
// up by the clock, only dropped.
func TestNotifierHoldWakeFollow(t *testing.T) {
	base := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	n := NewNotifier(DefaultSchedule())
	n.Owe("down", 3, base)
	due := n.Due(base)
	if len(due) != 1 {
		t.Fatalf("due %+v", due)
	}
	n.Hold("down")
	if _, ok := n.NextWake(); ok || !n.Held("down") || n.Len() != 1 {
		t.Fatal("a held host is still on the schedule")
	}
	if got := n.Due(base.Add(48 * time.Hour)); len(got) != 0 {
		t.Fatalf("held host due: %+v", got)
	}
	back := base.Add(30 * time.Hour)
	if !n.Wake("down", back) {
		t.Fatal("Wake of a held host")
	}
	if got := n.Due(back); len(got) != 1 || got[0].Host != "down" || got[0].State != 3 {
		t.Fatalf("woken host not due at once: %+v", got)
	}
	// Past the 24 h give-up, a followed host is retried, not abandoned.
	n.Follow("down", true)
	if out := n.Done("down", false, back); out.Kind != Retry || !out.Owed.NextTry.Equal(back.Add(time.Hour)) {
		t.Fatalf("followed host past give-up: %+v", out)
	}
	n.Drop("down")
	if n.Len() != 0 {
		t.Fatal("Drop")
	}
	// Dropped during an attempt: nothing to record, forgotten when it ends.
	n.Owe("forgotten", 3, base)
	n.Due(base)
	n.Drop("forgotten")
	if out := n.Done("forgotten", false, base); out.Kind != NotInFlight || n.Len() != 0 {
		t.Fatalf("dropped in flight: %+v, %d owed", out, n.Len())
	}
	// Not followed: the clock gives up as before.
	n.Owe("unknown", 3, base)
	n.Due(base)
	if out := n.Done("unknown", false, back); out.Kind != Abandoned {
		t.Fatalf("unfollowed host past give-up: %+v", out)
	}
}
