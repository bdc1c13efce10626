package nsm

import (
	"net/netip"
	"testing"
	"time"
)

// A reboot telemetry sees calls the registrants back once with a new odd
// state above the last known; the host's own SM_NOTIFY for that reboot
// (and its short-name repeat) makes no second callback; a later real
// reboot does.
func TestCoreRebootedThenRealNotifyIsOneCallback(t *testing.T) {
	c := NewCore(CoreConfig{})
	disk := map[string][16]byte{}
	mon(t, c, disk, "client.example", nlm, 1)
	peer := netip.MustParseAddr("10.0.0.5")
	c.Resolved("client.example", []netip.Addr{peer}, t0) // not asked: ignored
	rd, _ := c.Notify("client.example", 5, peer, t0)
	done(c, rd, t0)

	now := t0.Add(time.Hour)
	rd, res := c.Rebooted("client.example", [16]byte{1}, now)
	if res.State != 7 || len(rd.Callbacks) != 1 || rd.Callbacks[0].State != 7 || rd.Callbacks[0].Priv != [16]byte{1} {
		t.Fatalf("Rebooted: %+v %+v, want one callback with state 7", rd, res)
	}
	done(c, rd, now)
	if rd, res := c.Rebooted("client.example", [16]byte{1}, now.Add(time.Second)); len(rd.Callbacks) != 0 || !res.Repeated {
		t.Fatalf("same boot id again: %+v %+v", rd, res)
	}
	now = now.Add(30 * time.Second)
	for _, name := range []string{"client.example", "client"} {
		rd, res := c.Notify(name, 9, peer, now)
		if len(rd.Callbacks) != 0 || res.Matched != 1 {
			t.Fatalf("real SM_NOTIFY %q for the same reboot: %+v %+v", name, rd, res)
		}
		now = now.Add(2 * time.Second)
	}
	rd = c.Tick(now.Add(time.Minute))
	if len(rd.Callbacks) != 0 {
		t.Fatalf("callbacks later: %+v", rd.Callbacks)
	}
	// The next reboot, announced by the host only, is news.
	now = now.Add(time.Hour)
	rd, _ = c.Notify("client.example", 11, peer, now)
	if len(rd.Callbacks) != 1 || rd.Callbacks[0].State != 11 {
		t.Fatalf("next real reboot: %+v", rd.Callbacks)
	}
}

// The host's SM_NOTIFY first, telemetry's sighting of the same reboot
// after: one callback. Outside the window, telemetry's is news.
func TestCoreRealNotifyThenRebootedIsOneCallback(t *testing.T) {
	c := NewCore(CoreConfig{SameRebootWindow: time.Minute})
	disk := map[string][16]byte{}
	mon(t, c, disk, "client", nlm, 1)
	rd, _ := c.Notify("client", 3, netip.MustParseAddr("10.0.0.5"), t0)
	if len(rd.Callbacks) != 1 {
		t.Fatalf("SM_NOTIFY: %+v", rd.Callbacks)
	}
	done(c, rd, t0)
	rd, res := c.Rebooted("client", [16]byte{2}, t0.Add(10*time.Second))
	if len(rd.Callbacks) != 0 || !res.Already {
		t.Fatalf("telemetry after SM_NOTIFY: %+v %+v", rd, res)
	}
	now := t0.Add(time.Hour)
	rd, res = c.Rebooted("client", [16]byte{3}, now)
	if len(rd.Callbacks) != 1 || res.State != 5 {
		t.Fatalf("a later reboot seen by telemetry only: %+v %+v", rd, res)
	}
	done(c, rd, now)
	// A real SM_NOTIFY long after is another reboot.
	rd, _ = c.Notify("client", 7, netip.MustParseAddr("10.0.0.5"), now.Add(time.Hour))
	if len(rd.Callbacks) != 1 || rd.Callbacks[0].State != 7 {
		t.Fatalf("SM_NOTIFY outside the window: %+v", rd.Callbacks)
	}
	if rd, res := c.Rebooted("nobody", [16]byte{4}, now); len(rd.Callbacks) != 0 || res.Matched != 0 {
		t.Fatalf("reboot of a host not monitored: %+v %+v", rd, res)
	}
}

func done(c *Core, rd Ready, now time.Time) {
	for _, cb := range rd.Callbacks {
		c.CallbackDone(cb, true, now)
	}
}

// A host monitored by address reboots, telemetry sees it first; its real
// statd then announces the reboot under its host name (nfs-utils sends
// the name, not the address), which has to be looked up first: the
// lookup's answer completes that SM_NOTIFY as the same reboot, no second
// callback.
func TestCoreRebootedThenRealNotifyByNameAfterLookup(t *testing.T) {
	c := NewCore(CoreConfig{})
	disk := map[string][16]byte{}
	mon(t, c, disk, "10.0.0.5", nlm, 1)
	peer := netip.MustParseAddr("10.0.0.5")
	rd, res := c.Rebooted("10.0.0.5", [16]byte{1}, t0)
	if len(rd.Callbacks) != 1 {
		t.Fatalf("Rebooted: %+v %+v, want one callback", rd, res)
	}
	done(c, rd, t0)
	now := t0.Add(2 * time.Second)
	for _, name := range []string{"client.example", "client"} {
		rd, _ := c.Notify(name, 9, peer, now)
		if len(rd.Callbacks) != 0 {
			t.Fatalf("real SM_NOTIFY %q for the same reboot: %+v", name, rd.Callbacks)
		}
		for _, q := range rd.Resolve {
			if rd := c.Resolved(q, []netip.Addr{peer}, now); len(rd.Callbacks) != 0 {
				t.Fatalf("lookup of %q for a real SM_NOTIFY of the same reboot: %+v", q, rd.Callbacks)
			}
		}
		now = now.Add(time.Second)
	}
	if rd := c.Tick(now.Add(time.Minute)); len(rd.Callbacks) != 0 {
		t.Fatalf("callbacks later: %+v", rd.Callbacks)
	}
}
