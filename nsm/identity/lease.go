package identity

import "time"

// leaseClock is the owner's own account of how long its lease surely
// lasts, on its own clock. A renewal sent at t and answered with a TTL
// keeps the lease on the server until at least t+TTL (the server renewed
// it after t), so the owner may serve until t+TTL less a margin for clock
// rate differences, and never past it: by then no other statd can have
// been granted the identity. Pure: the caller supplies every time.
type leaseClock struct {
	margin     time.Duration
	validUntil time.Time
}

// renewed records a renewal sent at sent and answered with ttl.
func (c *leaseClock) renewed(sent time.Time, ttl time.Duration) {
	if u := sent.Add(ttl - c.margin); u.After(c.validUntil) {
		c.validUntil = u
	}
}

// valid says whether the owner may still serve at now.
func (c *leaseClock) valid(now time.Time) bool { return now.Before(c.validUntil) }
