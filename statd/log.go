package statd

import (
	"net/netip"
	"sync"
	"time"

	"github.com/hoststat/hoststat/nsm"
)

// refusalLog logs each (caller, reason) pair once, so a flood of refused
// calls cannot flood the log, and at most refusalBurst first refusals at
// once and refusalRate a second after that, so neither can a spray of
// spoofed callers, each of them new.
type refusalLog struct {
	mu      sync.Mutex
	seen    map[[2]string]int
	max     int              // distinct pairs remembered before the table is reset
	budget  *nsm.RateLimiter // one bucket, for all callers
	skipped int              // first refusals not logged for want of budget
}

const (
	refusalRate  = 10
	refusalBurst = 100
)

func newRefusalLog() *refusalLog {
	return &refusalLog{seen: make(map[[2]string]int), max: 4096, budget: nsm.NewRateLimiter(refusalRate, refusalBurst, 1)}
}

// first records a refusal at now and reports whether to log it: the first
// of its kind, when the budget allows. skipped counts the first refusals
// left unlogged since the last one logged.
func (r *refusalLog) first(caller, reason string, now time.Time) (log bool, skipped int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := [2]string{caller, reason}
	if _, ok := r.seen[k]; !ok && len(r.seen) >= r.max {
		// Bounded memory under a spray of spoofed callers.
		clear(r.seen)
	}
	r.seen[k]++
	if r.seen[k] != 1 {
		return false, 0
	}
	if !r.budget.Allow(netip.Addr{}, now) {
		r.skipped++
		return false, 0
	}
	skipped, r.skipped = r.skipped, 0
	return true, skipped
}
