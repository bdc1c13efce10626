package statd

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hoststat/hoststat/nsm"
)

// owedShell is the I/O of our own SM_NOTIFYs, whose schedule is the
// core's (Ready.Notify, Core.NotifyDone): it sends, persists each outcome
// before the core takes it, and counts.
type owedShell struct {
	peer   *peerNotifier
	counts notifyCounts // attempts and their outcomes (metrics)

	grace *graceAfterReboot // nil when no grace is to end
	// graceEnded is set when grace ended; read by metrics at any time.
	graceEnded atomic.Bool

	passMu sync.Mutex // one rpc.statd -n pass at a time
	mu     sync.Mutex
	pass   *notifyPass // the pass under way, or nil
}

// notifyPass is one rpc.statd -n: the hosts whose attempt has not ended.
type notifyPass struct {
	left     map[string]bool
	notified int
	done     chan struct{}
}

// sendNotify makes one attempt at one host and hands the result to the
// core.
func (p *protocol) sendNotify(o nsm.Owed) {
	defer p.wg.Done()
	err := p.owed.peer.notify(p.ctx, o.Host, o.State)
	res, why := nsm.Acked, ""
	switch {
	case p.ctx.Err() != nil:
		res = nsm.Aborted // shutting down: the store still has the debt as it was
	case err != nil:
		res, why = nsm.Failed, err.Error()
	}
	p.notifyDone(o, res, why)
}

// notifyDone persists the outcome of an attempt and only then lets the
// core take it. A failed write leaves the core where the store is (the
// host is tried again after the first retry delay) and is counted and
// shown in the admin view, as well as logged.
func (p *protocol) notifyDone(o nsm.Owed, res nsm.SendResult, why string) nsm.OutcomeKind {
	unlock := p.lockHost(nsm.CanonicalName(o.Host))
	now := p.now()
	p.mu.Lock()
	rd, out := p.core.NotifyDone(o.Host, res, why, now)
	p.mu.Unlock()
	if len(rd.Persist) > 0 {
		if err := p.commit(context.WithoutCancel(p.ctx), rd.Persist); err != nil {
			p.log.Error("notification progress not recorded; the attempt will be repeated", "host", nsm.Quote(o.Host), "err", err)
			p.mu.Lock()
			p.core.Release(o.Host, now, "recording the attempt: "+err.Error())
			p.mu.Unlock()
			out = nsm.NotInFlight
		} else {
			p.owed.counts.settled(out)
			p.logOutcome(o, out, rd.Persist[0], why)
		}
	}
	unlock()
	// Every outcome may have ended a debt: paid, given up, or dropped
	// (forgotten) while this attempt was in flight.
	p.owedChanged()
	rd.Persist = nil
	p.act(rd)
	p.passEnded(o.Host, out)
	p.kick() // the next wake-up may have moved
	return out
}

func (p *protocol) logOutcome(o nsm.Owed, out nsm.OutcomeKind, rec nsm.Change, why string) {
	switch out {
	case nsm.Delivered:
		p.log.Info("notified host", "host", nsm.Quote(o.Host), "state", o.State)
	case nsm.Retry:
		p.log.Debug("notification failed; will retry", "host", nsm.Quote(o.Host), "state", rec.Owed.State,
			"attempts", rec.Owed.Attempts, "next_try", rec.Owed.NextTry, "err", why)
	case nsm.Abandoned:
		p.log.Warn("gave up notifying host", "host", nsm.Quote(o.Host), "state", o.State,
			"owed_since", o.FirstOwed, "attempts", o.Attempts+1, "err", why)
	}
}

// owedChanged is told after every commit that may have paid or dropped a
// debt: the grace period ends once nothing is owed.
func (p *protocol) owedChanged() {
	p.mu.Lock()
	n := p.core.OwedLen()
	p.mu.Unlock()
	p.owed.grace.settled(n)
}

// passEnded records that host's attempt (or debt) ended, for a pass.
func (p *protocol) passEnded(host string, out nsm.OutcomeKind) {
	s := p.owed
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pass == nil || !s.pass.left[host] {
		return
	}
	delete(s.pass.left, host)
	if out == nsm.Delivered {
		s.pass.notified++
	}
	if len(s.pass.left) == 0 {
		close(s.pass.done)
		s.pass = nil
	}
}

// notifyPass is `rpc.statd -n`: one attempt at every host owed, each
// outcome persisted; hosts not reached stay owed with their next try
// recorded (and, in a running daemon, kept on the schedule). It returns
// the hosts reached and the hosts of the pass.
func (p *protocol) notifyPass(ctx context.Context) (notified, total int) {
	p.owed.passMu.Lock()
	defer p.owed.passMu.Unlock()
	pass := &notifyPass{left: map[string]bool{}, done: make(chan struct{})}
	p.mu.Lock()
	rd, hosts := p.core.NotifyAll(p.now())
	for _, h := range hosts {
		pass.left[h] = true
	}
	if len(hosts) > 0 {
		p.owed.mu.Lock()
		p.owed.pass = pass
		p.owed.mu.Unlock()
	}
	p.mu.Unlock()
	p.act(rd)
	if len(hosts) == 0 {
		return 0, 0
	}
	select {
	case <-pass.done:
	case <-ctx.Done():
	}
	p.owed.mu.Lock()
	defer p.owed.mu.Unlock()
	if p.owed.pass == pass {
		p.owed.pass = nil
	}
	return pass.notified, len(hosts)
}

// returned makes the notification owed to the host named canon (any
// spelling owed) due now: telemetry saw the host up again.
func (p *protocol) returned(canon string) {
	p.mu.Lock()
	rd, woken := p.core.Returned(canon, p.now())
	p.mu.Unlock()
	for _, o := range woken {
		p.log.Info("host up again: notifying it now", "host", nsm.Quote(o.Host), "state", o.State, "source", "telemetry")
	}
	p.act(rd)
	p.kick()
}

// gone gives up the notification owed to a host telemetry says is gone,
// waiting for its return: on disk first, then in the core.
func (p *protocol) gone(host string, since time.Time) {
	unlock := p.lockHost(nsm.CanonicalName(host))
	defer unlock()
	p.mu.Lock()
	rd := p.core.Gone(host, p.now())
	p.mu.Unlock()
	if len(rd.Persist) == 0 {
		return // being tried, or not yet found down: its next attempt holds it
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.commit(ctx, rd.Persist); err != nil {
		p.log.Error("giving up a gone host not recorded; will try again", "host", nsm.Quote(host), "err", err)
		return
	}
	p.log.Warn("gave up notifying host: gone", "host", nsm.Quote(host), "state", rd.Persist[0].Owed.State,
		"silent_since", since, "source", "telemetry")
	p.passEnded(host, nsm.NotInFlight)
	p.owedChanged()
}

// pendingOwed is the admin view of the debts.
func (p *protocol) pendingOwed() []nsm.OwedInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.core.Pending()
}

// owedNow lists the core's debts (what its store acknowledged).
func (p *protocol) owedNow() []nsm.Owed {
	pending := p.pendingOwed()
	out := make([]nsm.Owed, len(pending))
	for i, o := range pending {
		out[i] = o.Owed
	}
	return out
}

// registrations lists the core's registrations (what its store
// acknowledged).
func (p *protocol) registrations() []nsm.Registration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.core.Registrations()
}
