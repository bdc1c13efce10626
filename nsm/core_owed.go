package nsm

import (
	"container/heap"
	"slices"
	"sort"
	"time"
)

// This file is the Core's side of our own reboots: the state number, the
// reboot-versus-restart step, SM_SIMU_CRASH and the schedule of the
// SM_NOTIFYs we owe. As for registrations, an input plans (Ready.Persist),
// the shell persists, and Core.Apply of the same changes moves memory: the
// owed schedule in memory holds the keys of the store's owed bucket, and
// the state number is the store's.

// ourState is what the Core keeps of our own reboots.
type ourState struct {
	state     int32
	bootID    string
	newStore  bool
	bootState int32 // the state set by the last start (NotifyOnRequest)
	sending   bool  // StartNotifying or NotifyAll was called

	owed      map[string]*owedEntry // host as kept on disk → debt
	queue     owedQueue             // debts waiting for their next try
	notifying int                   // SM_NOTIFYs being sent
}

// owedEntry is one debt and where it is on the schedule. An entry is in
// the queue, or in flight (sent, or its outcome being recorded), or held
// (telemetry shows the host down), or idle (NotifyOnRequest).
type owedEntry struct {
	Owed
	inFlight bool
	sending  bool  // in flight and counted in notifying
	held     bool  // waiting for the host to be seen up, out of the queue
	idle     bool  // waiting for NotifyAll, out of the queue
	down     bool  // telemetry shows the host down (OwedSeen)
	followed bool  // telemetry knows the host: no give-up until it is gone
	forced   bool  // NotifyAll: sent even if down
	dropped  bool  // removed during an attempt: forgotten when it ends
	renewed  *Owed // a newer state became owed during an attempt
	lastErr  string
	index    int // in queue, or -1
}

// SendResult is how one SM_NOTIFY from Ready.Notify ended.
type SendResult int

const (
	// Acked: the host answered; the debt is paid.
	Acked SendResult = iota
	// Failed: no answer, or a refusal (no statd registered with the
	// host's rpcbind, an RPC error): retried on the schedule, since a
	// statd that is not up yet refuses too.
	Failed
	// Aborted: the shell stopped before an answer; nothing advances.
	Aborted
)

// OwedInfo is one debt as the admin view shows it.
type OwedInfo struct {
	Owed
	LastErr string // why the last attempt failed, until the next one
	Held    bool   // waiting for the host to be seen up
}

// Restore gives the Core what the store holds of our state at start
// (after Load): the boot record and the owed notifications, each
// continuing its schedule where the store has it.
func (c *Core) Restore(b Boot, owed []Owed) {
	c.ours.state, c.ours.bootID, c.ours.newStore, c.ours.bootState = b.State, b.BootID, b.New, b.State
	for _, o := range owed {
		c.applyOwed(Change{Kind: ChangeOwed, Owed: o})
	}
}

// State is our state number.
func (c *Core) State() int32 { return c.ours.state }

// Start plans the reboot-versus-restart step of a daemon start
// (DecideStart; force as rpc.statd -n). On a reboot the state moves to
// the next odd number, every monitored host and every host already owed is
// owed it on a fresh schedule starting at now, and every registration goes
// (the registrants died with the host). On a restart only the boot id is
// recorded. Nothing changes until Apply.
func (c *Core) Start(bootID string, force bool, now time.Time) (rd Ready, res StartResult, err error) {
	prev := Boot{New: c.ours.newStore, BootID: c.ours.bootID, State: c.ours.state}
	dec, err := DecideStart(prev, bootID, force)
	if err != nil {
		return rd, res, err
	}
	res = StartResult{Rebooted: dec.Reboot, Reason: dec.Reason, PrevState: prev.State, State: dec.State, Owed: len(c.ours.owed)}
	rd.Persist = append(rd.Persist, Change{Kind: ChangeState, State: dec.State, BootID: bootID})
	if !dec.Reboot {
		return rd, res, nil
	}
	owe := c.oweAll(dec.State, now)
	res.Owed = len(owe)
	rd.Persist = append(rd.Persist, owe...)
	for _, h := range c.hosts {
		for _, r := range h.regs {
			res.Dropped += len(r.spellings)
		}
	}
	rd.Persist = append(rd.Persist, Change{Kind: ChangeDropRegs})
	return rd, res, nil
}

// SimuCrash plans SM_SIMU_CRASH as FreeBSD's rpc.statd does it: the state
// moves on by two (staying odd), every monitored host and every host still
// owed is owed the new state on a fresh schedule, and the registrations
// are kept, since the local lock manager did not crash and would not
// register again. (nfs-utils instead restarts its service loop and drops
// its in-memory notify list.) It returns the new state; nothing changes
// until Apply.
func (c *Core) SimuCrash(now time.Time) (rd Ready, state int32, err error) {
	if state, err = NextUpState(c.ours.state); err != nil {
		return rd, 0, err
	}
	rd.Persist = append([]Change{{Kind: ChangeState, State: state}}, c.oweAll(state, now)...)
	return rd, state, nil
}

// oweAll: a fresh debt of state for every spelling of every monitored
// host and every host owed, in key order (the store packs them densely).
func (c *Core) oweAll(state int32, now time.Time) []Change {
	hosts := make([]string, 0, len(c.ours.owed)+len(c.hosts))
	for h := range c.ours.owed {
		hosts = append(hosts, h)
	}
	for _, h := range c.hosts {
		for _, r := range h.regs {
			hosts = append(hosts, r.spellings...)
		}
	}
	slices.Sort(hosts)
	hosts = slices.Compact(hosts)
	out := make([]Change, len(hosts))
	for i, h := range hosts {
		out[i] = Change{Kind: ChangeOwed, Owed: Owed{Host: h, State: state, FirstOwed: now, NextTry: now}}
	}
	return out
}

func (c *Core) applyState(ch Change) {
	c.ours.state = ch.State
	if ch.BootID != "" {
		c.ours.bootID, c.ours.newStore, c.ours.bootState = ch.BootID, false, ch.State
	}
}

// applyOwed makes the schedule hold what the store now holds for
// ch.Owed.Host.
func (c *Core) applyOwed(ch Change) {
	o := ch.Owed
	if o.NextTry.IsZero() {
		o.NextTry = o.FirstOwed
	}
	e := c.ours.owed[o.Host]
	switch {
	case ch.Settles:
		if e == nil || !e.inFlight {
			return
		}
		c.endAttempt(e)
		switch {
		case e.dropped:
			c.deleteOwed(e)
		case e.renewed != nil:
			e.Owed, e.renewed = *e.renewed, nil
			c.queueOwed(e)
		case ch.Remove:
			c.deleteOwed(e)
		default:
			e.Owed = o
			c.queueOwed(e)
		}
	case ch.Remove:
		if e == nil || e.State > o.State || e.renewed != nil && e.renewed.State > o.State {
			return // the store kept a record owing a newer state
		}
		if e.inFlight {
			e.dropped = true
			return
		}
		c.deleteOwed(e)
	case e == nil:
		e = &owedEntry{Owed: o, index: -1}
		c.ours.owed[o.Host] = e
		c.queueOwed(e)
	case e.inFlight:
		if o.State > e.State {
			e.renewed = &o // the attempt under way still announces the old state
		}
	default:
		e.Owed = o
		if !e.held {
			c.queueOwed(e)
		}
	}
}

// queueOwed puts e on the schedule at e.NextTry, or idle (NotifyOnRequest).
func (c *Core) queueOwed(e *owedEntry) {
	e.idle = c.cfg.NotifyOnRequest && e.Attempts == 0 && e.State <= c.ours.bootState && !e.forced
	switch {
	case e.idle && e.index >= 0:
		heap.Remove(&c.ours.queue, e.index)
	case e.idle:
	case e.index >= 0:
		heap.Fix(&c.ours.queue, e.index)
	default:
		heap.Push(&c.ours.queue, e)
	}
}

func (c *Core) deleteOwed(e *owedEntry) {
	if e.index >= 0 {
		heap.Remove(&c.ours.queue, e.index)
	}
	delete(c.ours.owed, e.Host)
}

// endAttempt: e is no longer in flight.
func (c *Core) endAttempt(e *owedEntry) {
	if e.sending {
		e.sending = false
		c.ours.notifying--
	}
	e.inFlight = false
}

// StartNotifying lets owed notifications go out from now on (the daemon
// is listening and telemetry, if any, has said who is down).
func (c *Core) StartNotifying(now time.Time) Ready {
	c.ours.sending = true
	return c.dispatchOwed(now)
}

// NotifyAll is rpc.statd -n: every debt not held or in flight is due now
// (attempts made and the give-up time kept), sent even to a host telemetry
// shows down, one attempt each. It returns the hosts of the pass.
func (c *Core) NotifyAll(now time.Time) (rd Ready, hosts []string) {
	c.ours.sending = true
	for _, e := range c.ours.owed {
		if e.inFlight || e.held {
			continue
		}
		hosts = append(hosts, e.Host)
		e.forced = true
		if e.NextTry.After(now) {
			e.NextTry = now
		}
		c.queueOwed(e)
	}
	sort.Strings(hosts)
	return c.dispatchOwed(now), hosts
}

// dispatchOwed sends the debts due at now, within the in-flight bound;
// one to a host telemetry shows down is held until it is seen up.
func (c *Core) dispatchOwed(now time.Time) (rd Ready) {
	if !c.ours.sending {
		return rd
	}
	q := &c.ours.queue
	for q.Len() > 0 && c.ours.notifying < c.cfg.MaxNotifyInFlight && !(*q)[0].NextTry.After(now) {
		e := heap.Pop(q).(*owedEntry)
		if e.down && !e.forced {
			e.held = true
			continue
		}
		e.inFlight, e.sending, e.forced = true, true, false
		c.ours.notifying++
		rd.Notify = append(rd.Notify, e.Owed)
	}
	return rd
}

// nextOwed is when the next debt falls due, if one can be sent then.
func (c *Core) nextOwed() (time.Time, bool) {
	if !c.ours.sending || c.ours.queue.Len() == 0 || c.ours.notifying >= c.cfg.MaxNotifyInFlight {
		return time.Time{}, false
	}
	return c.ours.queue[0].NextTry, true
}

// NotifyDone takes how an SM_NOTIFY of Ready.Notify to host ended (why:
// the error, for the admin view) and plans what the store records: the
// debt paid (Delivered), its next try (Retry), or the host given up on
// (Abandoned). The attempt stays in flight until Apply of the plan, or
// Release when it could not be written. Its sending slot is free at once:
// the Ready holds the next notifications due.
func (c *Core) NotifyDone(host string, res SendResult, why string, now time.Time) (rd Ready, out OutcomeKind) {
	e := c.ours.owed[host]
	if e == nil || !e.sending {
		return c.dispatchOwed(now), NotInFlight
	}
	e.sending = false
	c.ours.notifying--
	switch {
	case e.dropped:
		e.inFlight = false
		c.deleteOwed(e)
		out = NotInFlight
	case res == Aborted:
		c.Release(host, now, "")
		out = NotInFlight
	case e.renewed != nil:
		// Whatever this attempt achieved, the newer state is still owed.
		rd.Persist = append(rd.Persist, Change{Kind: ChangeOwed, Owed: *e.renewed, Settles: true})
		out = Retry
	case res == Acked:
		e.lastErr = ""
		rd.Persist = append(rd.Persist, Change{Kind: ChangeOwed, Remove: true, Owed: e.Owed, Settles: true})
		out = Delivered
	default:
		e.lastErr = why
		o := e.Owed
		o.Attempts++
		next, giveUp := c.cfg.Notify.Retry(o.FirstOwed, now, o.Attempts)
		if giveUp && e.followed {
			// Telemetry knows the host: it is tried until it is gone
			// (Gone), at the slow pace.
			next, giveUp = now.Add(c.cfg.Notify.Slow), false
		}
		if giveUp {
			rd.Persist = append(rd.Persist, Change{Kind: ChangeOwed, Remove: true, Owed: e.Owed, GaveUp: true, At: now, Settles: true})
			out = Abandoned
		} else {
			o.NextTry = next
			rd.Persist = append(rd.Persist, Change{Kind: ChangeOwed, Owed: o, Settles: true})
			out = Retry
		}
	}
	rd.add(c.dispatchOwed(now))
	return rd, out
}

// Release ends the attempt on host whose outcome could not be recorded
// (why says so in the admin view) or that was cut short: nothing advances
// (attempts, first owed) but the next try: after the first retry delay,
// or at now when why is empty.
func (c *Core) Release(host string, now time.Time, why string) {
	e := c.ours.owed[host]
	if e == nil || !e.inFlight {
		return
	}
	c.endAttempt(e)
	if e.dropped {
		c.deleteOwed(e)
		return
	}
	if e.renewed != nil {
		e.Owed, e.renewed = *e.renewed, nil
	}
	e.NextTry = now
	if why != "" {
		e.NextTry = now.Add(max(c.cfg.Notify.FirstRetry, time.Second))
		e.lastErr = why
	}
	c.queueOwed(e)
}

// OwedSeen takes what telemetry says of an owed host: whether it knows
// the host (followed: never given up by the clock) and whether it shows it
// down (its notification then waits for its return instead of a blind
// retry). A held host no longer down is due now. fell says the host is
// newly shown down.
func (c *Core) OwedSeen(host string, followed, down bool, now time.Time) (rd Ready, fell bool) {
	e := c.ours.owed[host]
	if e == nil {
		return rd, false
	}
	fell = down && !e.down
	e.followed, e.down = followed, down
	if !down && e.held {
		e.held, e.NextTry = false, now
		c.queueOwed(e)
	}
	return c.dispatchOwed(now), fell
}

// Returned takes a host telemetry saw up again (canonical name; every
// spelling owed): its notification, held or waiting for its next try, is
// due now. It returns the debts so woken.
func (c *Core) Returned(canon string, now time.Time) (rd Ready, woken []Owed) {
	for _, e := range c.ours.owed {
		if CanonicalName(e.Host) != canon || e.inFlight || e.idle {
			continue
		}
		e.down = false
		if e.held || e.NextTry.After(now) {
			woken = append(woken, e.Owed)
		}
		if e.held {
			e.held = false
			e.NextTry = now
			c.queueOwed(e)
		} else if e.NextTry.After(now) {
			e.NextTry = now
			heap.Fix(&c.ours.queue, e.index)
		}
	}
	return c.dispatchOwed(now), woken
}

// Gone plans giving up the debt of host, which telemetry says is gone,
// when it is held (waiting for the host's return); a debt being tried, or
// not yet found down, is held by its next attempt first.
func (c *Core) Gone(host string, now time.Time) (rd Ready) {
	if e := c.ours.owed[host]; e != nil && e.held && !e.inFlight {
		rd.Persist = append(rd.Persist, Change{Kind: ChangeOwed, Remove: true, Owed: e.Owed, GaveUp: true, At: now})
	}
	return rd
}

// forgetOwed plans dropping every debt to the host canon (statdctl
// forget), recorded as given up on.
func (c *Core) forgetOwed(canon string, now time.Time) (out []Change) {
	for _, e := range c.ours.owed {
		if CanonicalName(e.Host) == canon {
			o := e.Owed
			if e.renewed != nil {
				o.State = e.renewed.State
			}
			out = append(out, Change{Kind: ChangeOwed, Remove: true, Owed: o, GaveUp: true, At: now})
		}
	}
	slices.SortFunc(out, func(a, b Change) int {
		switch {
		case a.Owed.Host < b.Owed.Host:
			return -1
		case a.Owed.Host > b.Owed.Host:
			return 1
		}
		return 0
	})
	return out
}

// OwedLen is the number of hosts owed a notification.
func (c *Core) OwedLen() int { return len(c.ours.owed) }

// Pending lists every debt, ordered by host, for the admin view: the
// record as the store has it (a newer state owed during an attempt
// included).
func (c *Core) Pending() []OwedInfo {
	out := make([]OwedInfo, 0, len(c.ours.owed))
	for _, e := range c.ours.owed {
		o := e.Owed
		if e.renewed != nil {
			o = *e.renewed
		}
		out = append(out, OwedInfo{Owed: o, LastErr: e.lastErr, Held: e.held})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Host < out[j].Host })
	return out
}

// owedQueue holds the debts waiting for their next try, by next try, then
// host, so the order is the same on every run.
type owedQueue = indexedHeap[*owedEntry]

func (e *owedEntry) heapIndex() *int { return &e.index }
func (e *owedEntry) runsBefore(o *owedEntry) bool {
	if !e.NextTry.Equal(o.NextTry) {
		return e.NextTry.Before(o.NextTry)
	}
	return e.Host < o.Host
}
