package nsm

import "time"

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
// mistyped configuration cannot make the schedule spin.
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

// OutcomeKind is what became of a notification attempt (Core.NotifyDone).
type OutcomeKind int

const (
	// NotInFlight: nothing to record (no attempt under way, or one cut
	// short or dropped meanwhile).
	NotInFlight OutcomeKind = iota
	// Delivered: the debt is paid.
	Delivered
	// Retry: tried again at the next try recorded.
	Retry
	// Abandoned: the schedule ran out; the host is recorded as given up on.
	Abandoned
)

func (k OutcomeKind) String() string {
	return [...]string{"not in flight", "delivered", "retry", "abandoned"}[k]
}
