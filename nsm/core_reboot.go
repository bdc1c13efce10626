package nsm

import (
	"net/netip"
	"slices"
	"time"
)

// seenReboot is a reboot of a monitored host that telemetry saw: the boot
// id, the state its registrants were told (synthetic unless a real
// SM_NOTIFY came first), and the real SM_NOTIFY state taken as the same
// reboot, once one came.
type seenReboot struct {
	boot      [16]byte
	state     int32
	at        time.Time
	real      int32
	hasReal   bool
	synthetic bool
}

// RebootResult says what became of one reboot seen by telemetry.
type RebootResult struct {
	// State is what the registrants are told: a new odd state above the
	// last one known for the host. Zero when nobody is told.
	State int32
	// Matched is the number of registrations told.
	Matched int
	// Already says the host's own SM_NOTIFY announced this reboot, within
	// SameRebootWindow before: its registrants were called back then.
	Already bool
	// Repeated says this boot id was taken already.
	Repeated bool
}

// Rebooted takes a reboot of the monitored host canon (the name a
// registration holds, canonical) that telemetry saw as a new boot id, as
// if the host had sent SM_NOTIFY: every registration of it is told a new
// odd state above the last one known for it (told, being told, or last
// announced), once per boot id.
//
// The same reboot, announced twice, makes one callback. The rule: a
// reboot seen within SameRebootWindow after a real SM_NOTIFY matched the
// host is that notification's reboot (no callback); the first real
// SM_NOTIFY matching the host within SameRebootWindow after a reboot
// telemetry saw is that reboot's (no callback), and so are its repeats
// with the same state (nfs-utils sends the qualified name, then the short
// one). Limits: a host that reboots twice within the window, its statd
// notifying for one boot only, is called back once for the two; a host
// whose statd restarts without a reboot within the window has that
// notification taken as the reboot's. Nothing of this is on disk: a
// restart of rpc.statd between the two announcements makes a second
// callback (the safe side: lock managers take a repeated reboot as one).
// Nothing is persisted, since no registration changes: the Ready holds
// callbacks only.
func (c *Core) Rebooted(canon string, boot [16]byte, now time.Time) (rd Ready, res RebootResult) {
	h := c.hosts[CanonicalName(canon)]
	if h == nil {
		return rd, res
	}
	if s := h.seen; s != nil && s.boot == boot {
		res.Repeated = true
		return rd, res
	}
	if n := h.notified; n.ok && now.Sub(n.at) <= c.cfg.SameRebootWindow {
		h.seen = &seenReboot{boot: boot, state: n.state, at: now, real: n.state, hasReal: true}
		res.Already = true
		return rd, res
	}
	state := nextUp(c.lastKnown(h))
	h.seen = &seenReboot{boot: boot, state: state, at: now, synthetic: true}
	for _, r := range h.regs {
		res.Matched++
		c.tell(r, state, now)
	}
	res.State = state
	rd = c.dispatch(now)
	return rd, res
}

// sameReboot records a real SM_NOTIFY{state} matching h and reports
// whether it announces the reboot telemetry saw already (Rebooted's rule).
func (c *Core) sameReboot(h *coreHost, state int32, now time.Time) bool {
	h.notified.state, h.notified.at, h.notified.ok = state, now, true
	s := h.seen
	if s == nil || !s.synthetic {
		return false
	}
	if s.hasReal {
		return state == s.real
	}
	if now.Sub(s.at) > c.cfg.SameRebootWindow {
		return false
	}
	s.real, s.hasReal = state, true
	return true
}

// lastKnown is the highest state known for h: told, being told, to be
// told, announced or seen.
func (c *Core) lastKnown(h *coreHost) int32 {
	var m int32
	if h.notified.ok {
		m = max(m, h.notified.state)
	}
	if s := h.seen; s != nil {
		m = max(m, s.state, s.real)
	}
	for _, r := range h.regs {
		if r.hasTold {
			m = max(m, r.told)
		}
		if r.hasWant {
			m = max(m, r.want)
		}
		if r.inFlight {
			m = max(m, r.flight)
		}
	}
	return m
}

// nextUp is the first odd state above s.
func nextUp(s int32) int32 {
	if s < 0 {
		return 1
	}
	if s%2 == 0 {
		return s + 1
	}
	return s + 2
}

// MonitoredHost is one monitored host as the core knows it: its canonical
// name and the addresses it is matched by.
type MonitoredHost struct {
	Name  string
	Addrs []netip.Addr
}

// Hosts lists the monitored hosts with their addresses (a copy), for a
// shell that ties them to telemetry.
func (c *Core) Hosts() []MonitoredHost {
	out := make([]MonitoredHost, 0, len(c.hosts))
	for k, h := range c.hosts {
		out = append(out, MonitoredHost{Name: k, Addrs: slices.Clone(h.addrs)})
	}
	slices.SortFunc(out, func(a, b MonitoredHost) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out
}

// Lookup is what the core knows of the addresses of name, a host that is
// not monitored (one owed a notification): the literal itself, or its
// cached resolution; when that is missing or expired, Ready asks for a
// lookup (answered with Resolved, as for any name).
func (c *Core) Lookup(name string, now time.Time) (addrs []netip.Addr, rd Ready) {
	canon := CanonicalName(name)
	if a, ok := literal(canon); ok {
		return []netip.Addr{a}, rd
	}
	if res := c.cache[canon]; res != nil {
		addrs = slices.Clone(res.addrs)
	}
	if c.stale(canon, now) {
		rd.Resolve = c.ask(canon, nil)
	}
	return addrs, rd
}

// Forget plans the release of the host name matches (statdctl forget, or
// a host gone for good): the callbacks that tell each of its registrants
// a new odd state above the last known (lock managers drop the host's
// locks on it, as after a reboot), and the removal of its registrations
// and of the notifications owed to it (recorded as given up on). The
// shell makes the callbacks, then persists and applies the removals.
func (c *Core) Forget(name string, now time.Time) (release []Callback, remove []Change) {
	for _, h := range c.matchHosts(CanonicalName(name), netip.Addr{}, now) {
		state := nextUp(c.lastKnown(h))
		for _, r := range h.regs {
			release = append(release, r.callback(state))
			remove = append(remove, removals(r)...)
		}
	}
	return release, append(remove, c.forgetOwed(CanonicalName(name), now)...)
}
