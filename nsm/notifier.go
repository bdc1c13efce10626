package nsm

import (
	"container/heap"
	"sort"
	"time"
)

// Schedule is when to retry an SM_NOTIFY that failed. The defaults follow
// the BSD manual page ("frequent attempts for 10 minutes, then hourly, and
// finally gives up after 24 hours"); FreeBSD itself retries at fixed 5 s
// then 60 s intervals, nfs-utils' sm-notify backs off exponentially. Here
// the frequent phase backs off from FirstRetry, doubling up to MaxRetry, so
// a peer that is merely slow to boot is reached within seconds without
// flooding one that is gone.
type Schedule struct {
	FirstRetry  time.Duration // delay after the first failure
	MaxRetry    time.Duration // cap of the doubling delays of the frequent phase
	FrequentFor time.Duration // length of the frequent phase, from first owed
	Slow        time.Duration // delay between attempts after the frequent phase
	GiveUpAfter time.Duration // from first owed; the last attempt is made exactly then
}

// DefaultSchedule: retries after 1, 2, 4, 8, 16 s, then every 30 s for ten
// minutes, then hourly, a last attempt at 24 h, then give up.
func DefaultSchedule() Schedule {
	return Schedule{
		FirstRetry:  time.Second,
		MaxRetry:    30 * time.Second,
		FrequentFor: 10 * time.Minute,
		Slow:        time.Hour,
		GiveUpAfter: 24 * time.Hour,
	}
}

// withDefaults replaces non-positive fields by the default's, so a
// mistyped configuration cannot make the notifier spin.
func (s Schedule) withDefaults() Schedule {
	d := DefaultSchedule()
	for _, f := range []struct{ v, def *time.Duration }{
		{&s.FirstRetry, &d.FirstRetry}, {&s.MaxRetry, &d.MaxRetry},
		{&s.FrequentFor, &d.FrequentFor}, {&s.Slow, &d.Slow}, {&s.GiveUpAfter, &d.GiveUpAfter},
	} {
		if *f.v <= 0 {
			*f.v = *f.def
		}
	}
	if s.MaxRetry < s.FirstRetry {
		s.MaxRetry = s.FirstRetry
	}
	return s
}

// Retry says what follows the attempts-th failed attempt (counting from 1)
// of a notification first owed at firstOwed, the failure being seen at
// failedAt: the time of the next attempt, or give up.
func (s Schedule) Retry(firstOwed, failedAt time.Time, attempts int) (next time.Time, giveUp bool) {
	s = s.withDefaults()
	deadline := firstOwed.Add(s.GiveUpAfter)
	if !failedAt.Before(deadline) {
		return time.Time{}, true
	}
	delay := s.Slow
	if failedAt.Sub(firstOwed) < s.FrequentFor {
		delay = s.FirstRetry
		for i := 1; i < attempts && delay < s.MaxRetry; i++ {
			delay *= 2
		}
		delay = min(delay, s.MaxRetry)
	}
	next = failedAt.Add(delay)
	if next.After(deadline) {
		next = deadline
	}
	return next, false
}

// OutcomeKind is what became of a notification attempt.
type OutcomeKind int

const (
	// NotInFlight: Done named a host that had no attempt under way.
	NotInFlight OutcomeKind = iota
	// Delivered: forget the debt (Store.MarkNotified).
	Delivered
	// Retry: try again at Owed.NextTry (Store.Reschedule).
	Retry
	// Abandoned: the schedule ran out (Store.GiveUp).
	Abandoned
)

func (k OutcomeKind) String() string {
	return [...]string{"not in flight", "delivered", "retry", "abandoned"}[k]
}

// Outcome is the result of Notifier.Done: the kind, and the record it
// applies to (for Retry, already moved to its next try).
type Outcome struct {
	Kind OutcomeKind
	Owed Owed
}

// Notifier is the schedule of owed SM_NOTIFY calls as a pure state machine:
// the caller feeds it debts, the current time and the results of attempts,
// and it says what to send and what to persist. It has no goroutines, no
// timers and no clock of its own, and is not safe for concurrent use.
// Hosts are independent: one slow host never delays another.
type Notifier struct {
	sched Schedule
	hosts map[string]*owedEntry
	queue owedQueue // entries not in flight, soonest first
}

type owedEntry struct {
	Owed
	inFlight bool
	held     bool  // waiting for the host to be seen up (Hold), out of the queue
	followed bool  // telemetry knows the host: no give-up until it is gone (Follow)
	dropped  bool  // dropped during an attempt: forgotten when it ends
	renewed  *Owed // a newer state became owed while an attempt was under way
	index    int   // in queue, or -1
}

// NewNotifier returns an empty Notifier; zero fields of s take the defaults.
func NewNotifier(s Schedule) *Notifier {
	return &Notifier{sched: s.withDefaults(), hosts: map[string]*owedEntry{}}
}

// Owe adds a notification of state to host, first owed at firstOwed and due
// at once. See Add.
func (n *Notifier) Owe(host string, state int32, firstOwed time.Time) {
	n.Add(Owed{Host: host, State: state, FirstOwed: firstOwed, NextTry: firstOwed})
}

// Add adds a debt as the store keeps it, so a daemon restarted from
// Store.Owed continues each schedule where it was (attempts made, next try)
// instead of starting it again. A debt for a host already owed replaces it
// only if its state is newer; during an attempt the replacement waits for
// Done, because the attempt under way still announces the old state.
func (n *Notifier) Add(o Owed) {
	if o.NextTry.IsZero() {
		o.NextTry = o.FirstOwed
	}
	e, ok := n.hosts[o.Host]
	switch {
	case !ok:
		e = &owedEntry{Owed: o, index: -1}
		n.hosts[o.Host] = e
		heap.Push(&n.queue, e)
	case o.State <= e.State:
		// Same or older news: the schedule under way already covers it.
	case e.inFlight:
		e.renewed = &o
	default:
		e.Owed = o
		heap.Fix(&n.queue, e.index)
	}
}

// Due returns the notifications to attempt at now, soonest first, and marks
// them in flight until Done.
func (n *Notifier) Due(now time.Time) []Owed {
	var due []Owed
	for n.queue.Len() > 0 && !n.queue[0].NextTry.After(now) {
		e := heap.Pop(&n.queue).(*owedEntry)
		e.inFlight = true
		due = append(due, e.Owed)
	}
	return due
}

// Hurry makes every waiting debt due at now: a notification pass was asked
// for (rpc.statd -n while the daemon runs). Attempts made and the give-up
// time are kept.
func (n *Notifier) Hurry(now time.Time) {
	for _, e := range n.queue {
		if e.NextTry.After(now) {
			e.NextTry = now
		}
	}
	heap.Init(&n.queue)
}

// Preview says what Done would record for the result of an attempt on
// host made at now, changing nothing: the shell persists the outcome, then
// calls Done, so the schedule in memory never runs ahead of the store.
func (n *Notifier) Preview(host string, ok bool, now time.Time) Outcome {
	out, _ := n.decide(host, ok, now)
	return out
}

// Done records the result of an attempt on host made at now.
func (n *Notifier) Done(host string, ok bool, now time.Time) Outcome {
	out, e := n.decide(host, ok, now)
	if e == nil {
		return out
	}
	e.inFlight = false
	switch out.Kind {
	case Retry:
		e.Owed, e.renewed = out.Owed, nil
		heap.Push(&n.queue, e)
	default:
		delete(n.hosts, host)
	}
	return out
}

func (n *Notifier) decide(host string, ok bool, now time.Time) (Outcome, *owedEntry) {
	e, found := n.hosts[host]
	if !found || !e.inFlight {
		return Outcome{Kind: NotInFlight, Owed: Owed{Host: host}}, nil
	}
	if e.dropped {
		return Outcome{Kind: NotInFlight, Owed: e.Owed}, e
	}
	if e.renewed != nil {
		// Whatever this attempt achieved, the newer state is still owed.
		return Outcome{Kind: Retry, Owed: *e.renewed}, e
	}
	if ok {
		return Outcome{Kind: Delivered, Owed: e.Owed}, e
	}
	o := e.Owed
	o.Attempts++
	next, giveUp := n.sched.Retry(o.FirstOwed, now, o.Attempts)
	if giveUp && e.followed {
		// Telemetry knows the host: it is tried until it is gone (the
		// shell drops it then), at the slow pace.
		next, giveUp = now.Add(n.sched.Slow), false
	}
	if giveUp {
		return Outcome{Kind: Abandoned, Owed: o}, e
	}
	o.NextTry = next
	return Outcome{Kind: Retry, Owed: o}, e
}

// Follow says whether telemetry knows host: while it does, the schedule
// never gives up on it (the shell drops it once it is gone).
func (n *Notifier) Follow(host string, followed bool) {
	if e := n.hosts[host]; e != nil {
		e.followed = followed
	}
}

// Hold takes host, just returned by Due, off the schedule until Wake:
// telemetry shows it down, so trying it now is blind.
func (n *Notifier) Hold(host string) {
	e := n.hosts[host]
	if e == nil || !e.inFlight {
		return
	}
	if e.dropped {
		delete(n.hosts, host)
		return
	}
	e.inFlight = false
	if e.renewed != nil {
		e.Owed, e.renewed = *e.renewed, nil
	}
	e.held = true
}

// Wake makes host's notification due at now, held or waiting for its
// next retry: it was seen up again. It reports whether it was held or
// waiting (not when in flight or not owed).
func (n *Notifier) Wake(host string, now time.Time) bool {
	e := n.hosts[host]
	switch {
	case e == nil || e.inFlight:
		return false
	case e.held:
		e.held, e.NextTry = false, now
		heap.Push(&n.queue, e)
	case e.NextTry.After(now):
		e.NextTry = now
		heap.Fix(&n.queue, e.index)
	}
	return true
}

// Drop forgets host's debt: it is gone, or forgotten, and the shell has
// removed it from the store. During an attempt it is forgotten when the
// attempt ends (Done says NotInFlight: nothing to record).
func (n *Notifier) Drop(host string) {
	e := n.hosts[host]
	if e == nil {
		return
	}
	if e.inFlight {
		e.dropped = true
		return
	}
	if e.index >= 0 {
		heap.Remove(&n.queue, e.index)
	}
	delete(n.hosts, host)
}

// Held reports whether host waits to be seen up.
func (n *Notifier) Held(host string) bool {
	e := n.hosts[host]
	return e != nil && e.held
}

// Release ends an attempt on host whose outcome could not be recorded:
// nothing advances (attempts, first owed) but the next try, at.
func (n *Notifier) Release(host string, at time.Time) {
	e, found := n.hosts[host]
	if !found || !e.inFlight {
		return
	}
	if e.dropped {
		delete(n.hosts, host)
		return
	}
	e.inFlight = false
	if e.renewed != nil {
		e.Owed, e.renewed = *e.renewed, nil
	}
	e.NextTry = at
	heap.Push(&n.queue, e)
}

// NextWake is when the next notification falls due; false when nothing is
// waiting (everything is done or in flight).
func (n *Notifier) NextWake() (time.Time, bool) {
	if n.queue.Len() == 0 {
		return time.Time{}, false
	}
	return n.queue[0].NextTry, true
}

// Len is the number of hosts owed, in flight or waiting.
func (n *Notifier) Len() int { return len(n.hosts) }

// Pending lists every debt, ordered by host, for an admin view.
func (n *Notifier) Pending() []Owed {
	out := make([]Owed, 0, len(n.hosts))
	for _, e := range n.hosts {
		out = append(out, e.Owed)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Host < out[j].Host })
	return out
}

// owedQueue is a container/heap of entries by next try, then host, so the
// order of Due is deterministic.
type owedQueue []*owedEntry

func (q owedQueue) Len() int { return len(q) }
func (q owedQueue) Less(i, j int) bool {
	if !q[i].NextTry.Equal(q[j].NextTry) {
		return q[i].NextTry.Before(q[j].NextTry)
	}
	return q[i].Host < q[j].Host
}
func (q owedQueue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].index, q[j].index = i, j
}
func (q *owedQueue) Push(x any) {
	e := x.(*owedEntry)
	e.index = len(*q)
	*q = append(*q, e)
}
func (q *owedQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	e.index = -1
	return e
}
