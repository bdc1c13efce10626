package nsm

import (
	"net/netip"
	"testing"
	"time"
)

// Matched SM_NOTIFY for one monitored host from 10,000 senders, each
// within its own rate (one call each): the per-host rate still limits the
// answers, every registrant hears only the latest state once its callback
// is due, and one callback is in flight. (The per-sender rate alone, as in
// TestCoreCallbacksCoalesce, would let each new spoofed sender through.)
func TestCoreMatchedNotifyLimitedPerHost(t *testing.T) {
	c := NewCore(CoreConfig{})
	disk := map[string][16]byte{}
	mon(t, c, disk, "peer.example.com", nlm, 1)
	var started []Callback
	limited := 0
	for i := range 10000 {
		sender := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		rd, res := c.Notify("peer.example.com", int32(2*i+1), sender, t0.Add(time.Duration(i)*time.Microsecond))
		started = append(started, rd.Callbacks...)
		if res.Matched != 1 {
			t.Fatalf("notification %d matched %d registrations", i, res.Matched)
		}
		if res.Limited {
			limited++
		}
	}
	if limited < 9900 {
		t.Fatalf("only %d of 10,000 matched notifications from distinct senders over the per-host rate", limited)
	}
	if len(started) != 1 {
		t.Fatalf("%d callbacks started during the flood, want 1", len(started))
	}
	done := t0.Add(time.Second)
	c.CallbackDone(started[0], true, done)
	if rd := c.Tick(done.Add(time.Second)); len(rd.Callbacks) != 1 || rd.Callbacks[0].State != 19999 {
		t.Fatalf("after the first callback: %+v, want one with the latest state 19999", rd.Callbacks)
	}
}
