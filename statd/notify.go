package statd

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hoststat/hoststat/nsm"
)

// notifyLoop is the I/O shell around nsm.Notifier: it asks the state
// machine what is due, sends those SM_NOTIFYs on a bounded pool of
// goroutines, feeds the results back, persists what the machine decided,
// and sleeps until the next wake-up or a new debt.
type notifyLoop struct {
	log     *slog.Logger
	store   *nsm.Store
	peer    *peerNotifier
	now     func() time.Time
	sched   nsm.Schedule
	workers chan struct{}

	storeErrors atomic.Uint64 // outcomes not recorded
	counts      notifyCounts  // attempts and their outcomes (metrics)

	mu      sync.Mutex
	n       *nsm.Notifier
	lastErr map[string]string
	wake    chan struct{}
	wg      sync.WaitGroup

	grace *graceAfterReboot // nil when no grace is to end
	// graceEnded is set when grace ended; read by metrics at any time.
	graceEnded atomic.Bool
	// down says telemetry shows a host down: its notification waits for
	// the host's return (nil without telemetry).
	down func(host string) bool

	// onSettled, if set, is told of every delivery, retry and give-up (tests).
	onSettled func(nsm.Outcome)
}

func newNotifyLoop(log *slog.Logger, store *nsm.Store, peer *peerNotifier, sched nsm.Schedule, workers int) *notifyLoop {
	return &notifyLoop{
		log: log, store: store, peer: peer, now: time.Now, sched: sched,
		workers: make(chan struct{}, workers),
		n:       nsm.NewNotifier(sched),
		lastErr: map[string]string{},
		wake:    make(chan struct{}, 1),
	}
}

// add hands debts from the store to the schedule.
func (l *notifyLoop) add(owed []nsm.Owed) {
	l.mu.Lock()
	for _, o := range owed {
		l.n.Add(o)
	}
	l.mu.Unlock()
	l.kick()
}

func (l *notifyLoop) kick() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// pending is the admin view of the schedule.
func (l *notifyLoop) pending() ([]nsm.Owed, map[string]string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	errs := make(map[string]string, len(l.lastErr))
	for k, v := range l.lastErr {
		errs[k] = v
	}
	return l.n.Pending(), errs
}

// run sends notifications until ctx ends, then waits for attempts under way.
func (l *notifyLoop) run(ctx context.Context) {
	defer l.wg.Wait()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		l.mu.Lock()
		due := l.n.Due(l.now())
		l.mu.Unlock()
		for _, o := range due {
			if l.down != nil && l.down(o.Host) {
				l.mu.Lock()
				l.n.Hold(o.Host)
				l.mu.Unlock()
				l.log.Debug("host down by telemetry: notification waits for its return", "host", nsm.Quote(o.Host), "state", o.State)
				continue
			}
			select {
			case l.workers <- struct{}{}:
			case <-ctx.Done():
				return
			}
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				defer func() { <-l.workers }()
				l.attempt(ctx, o)
			}()
		}
		l.mu.Lock()
		next, ok := l.n.NextWake()
		l.mu.Unlock()
		wait := time.Hour
		if ok {
			wait = max(time.Until(next), 0)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-l.wake:
		case <-timer.C:
		}
	}
}

// attempt makes one try at one host and records the outcome.
func (l *notifyLoop) attempt(ctx context.Context, o nsm.Owed) {
	err := l.peer.notify(ctx, o.Host, o.State)
	if ctx.Err() != nil {
		// Shutting down: the store still has the debt as it was.
		l.mu.Lock()
		l.n.Release(o.Host, l.now())
		l.mu.Unlock()
		return
	}
	out := l.record(ctx, o, err)
	if l.onSettled != nil {
		l.onSettled(out)
	}
	l.kick()
}

// record persists the outcome of an attempt and only then advances the
// schedule in memory. A failed write leaves the schedule where it was (the
// host is tried again after the first retry delay) and is counted and shown
// in the admin view, as well as logged.
func (l *notifyLoop) record(ctx context.Context, tried nsm.Owed, err error) nsm.Outcome {
	now := l.now()
	l.mu.Lock()
	out := l.n.Preview(tried.Host, err == nil, now)
	l.mu.Unlock()
	perr := l.persist(ctx, tried, out, err, now)
	l.mu.Lock()
	defer l.mu.Unlock()
	if perr != nil {
		l.storeErrors.Add(1)
		l.n.Release(tried.Host, now.Add(max(l.sched.FirstRetry, time.Second)))
		l.lastErr[tried.Host] = "recording the attempt: " + perr.Error()
		return nsm.Outcome{Kind: nsm.NotInFlight, Owed: tried}
	}
	out = l.n.Done(tried.Host, err == nil, now)
	l.counts.settled(out.Kind)
	if err != nil && out.Kind == nsm.Retry {
		l.lastErr[tried.Host] = err.Error() // shown by the admin view until the next try
	} else {
		delete(l.lastErr, tried.Host)
	}
	l.grace.settled(l.n.Len())
	return out
}

func (l *notifyLoop) persist(ctx context.Context, tried nsm.Owed, out nsm.Outcome, err error, now time.Time) error {
	var perr error
	switch out.Kind {
	case nsm.Delivered:
		l.log.Info("notified host", "host", nsm.Quote(tried.Host), "state", tried.State)
		_, perr = l.store.MarkNotified(ctx, tried.Host, tried.State)
	case nsm.Retry:
		l.log.Debug("notification failed; will retry", "host", nsm.Quote(tried.Host), "state", out.Owed.State,
			"attempts", out.Owed.Attempts, "next_try", out.Owed.NextTry, "err", err)
		perr = l.store.Reschedule(ctx, out.Owed.Host, out.Owed.NextTry, out.Owed.Attempts)
	case nsm.Abandoned:
		l.log.Warn("gave up notifying host", "host", nsm.Quote(tried.Host), "state", tried.State,
			"owed_since", tried.FirstOwed, "attempts", out.Owed.Attempts, "err", err)
		_, perr = l.store.GiveUp(ctx, tried.Host, tried.State, now)
	}
	if perr != nil {
		l.log.Error("notification progress not recorded; the attempt will be repeated", "host", nsm.Quote(tried.Host), "err", perr)
	}
	return perr
}

// onePass is `rpc.statd -n`: owed (the store's debts) joins the schedule,
// and one attempt is made at every host owed, all at once on the worker
// pool, each outcome persisted; hosts not reached stay owed with their next
// try recorded (and, in a running daemon, kept by the schedule).
func (l *notifyLoop) onePass(ctx context.Context, owed []nsm.Owed) (notified, total int) {
	now := l.now()
	l.mu.Lock()
	for _, o := range owed {
		l.n.Add(o)
	}
	// In one critical section with Add, so the daemon's loop cannot take
	// any of them first.
	l.n.Hurry(now)
	due := l.n.Due(now)
	l.mu.Unlock()
	defer l.kick() // the loop takes over what is left
	total = len(due)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, o := range due {
		select {
		case l.workers <- struct{}{}:
		case <-ctx.Done():
			l.mu.Lock()
			for _, o := range due[i:] {
				l.n.Release(o.Host, now)
			}
			l.mu.Unlock()
			wg.Wait()
			return notified, total
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-l.workers }()
			err := l.peer.notify(ctx, o.Host, o.State)
			out := l.record(context.WithoutCancel(ctx), o, err)
			if out.Kind == nsm.Delivered {
				mu.Lock()
				notified++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return notified, total
}

// returned makes the notification owed to the host named canon (the
// canonical name; any spelling owed) due now, when it was held: telemetry
// saw the host up again.
func (l *notifyLoop) returned(canon string) {
	now := l.now()
	l.mu.Lock()
	var woken []nsm.Owed
	for _, o := range l.n.Pending() {
		if nsm.CanonicalName(o.Host) == canon && l.n.Wake(o.Host, now) {
			woken = append(woken, o)
		}
	}
	l.mu.Unlock()
	for _, o := range woken {
		l.log.Info("host up again: notifying it now", "host", nsm.Quote(o.Host), "state", o.State, "source", "telemetry")
	}
	if len(woken) > 0 {
		l.kick()
	}
}

// wakeHeld puts a held host back on the schedule, due now.
func (l *notifyLoop) wakeHeld(host string) {
	l.mu.Lock()
	woken := l.n.Held(host) && l.n.Wake(host, l.now())
	l.mu.Unlock()
	if woken {
		l.kick()
	}
}

// follow says whether telemetry knows host (no give-up by the clock).
func (l *notifyLoop) follow(host string, known bool) {
	l.mu.Lock()
	l.n.Follow(host, known)
	l.mu.Unlock()
}

// gone gives up the notification owed to a host telemetry says is gone,
// waiting for its return: on disk first, then in the schedule.
func (l *notifyLoop) gone(o nsm.Owed, since time.Time) {
	l.mu.Lock()
	held := l.n.Held(o.Host)
	l.mu.Unlock()
	if !held {
		return // being tried, or not yet found down: its next attempt holds it
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := l.store.GiveUp(ctx, o.Host, o.State, l.now()); err != nil {
		l.storeErrors.Add(1)
		l.log.Error("giving up a gone host not recorded; will try again", "host", nsm.Quote(o.Host), "err", err)
		return
	}
	l.drop(o.Host)
	l.log.Warn("gave up notifying host: gone", "host", nsm.Quote(o.Host), "state", o.State, "silent_since", since, "source", "telemetry")
}

// drop forgets host's debt in the schedule (the store no longer has it).
func (l *notifyLoop) drop(host string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n.Drop(host)
	delete(l.lastErr, host)
	l.grace.settled(l.n.Len())
}
