package nsm

import (
	"net/netip"
	"strings"
	"sync"
	"time"
)

// SameHost reports whether two mon_names name the same host. Names compare
// without regard to case (DNS names are case-insensitive), and a short name
// matches any fully qualified name that begins with it and a dot: "host",
// "HOST.domain" and "host.domain.example" all match "host". Two qualified
// names must be equal: "host.a" is not "host.b". Address literals (IPv4 or
// IPv6) match only the same address.
func SameHost(a, b string) bool {
	if strings.EqualFold(a, b) {
		return true
	}
	if pa, err := netip.ParseAddr(a); err == nil {
		pb, err := netip.ParseAddr(b)
		return err == nil && pa.Unmap() == pb.Unmap()
	}
	if _, err := netip.ParseAddr(b); err == nil {
		return false
	}
	ia, ib := strings.IndexByte(a, '.'), strings.IndexByte(b, '.')
	switch {
	case ia < 0 && ib > 0:
		return strings.EqualFold(a, b[:ib])
	case ib < 0 && ia > 0:
		return strings.EqualFold(a[:ia], b)
	}
	return false
}

// RateLimiter is a token bucket per sender address for SM_NOTIFY calls
// nobody asked for: each sender gets Burst calls at once and Rate per
// second after that. Time is passed in, so tests need no sleeping. It keeps
// at most maxSenders buckets, so a flood from spoofed addresses cannot
// grow it without bound. Safe for concurrent use.
type RateLimiter struct {
	rate       float64 // tokens per second
	burst      float64
	maxSenders int

	mu      sync.Mutex
	senders map[netip.Addr]*tokens
}

type tokens struct {
	n    float64
	last time.Time
}

// NewRateLimiter allows each sender burst calls at once and rate per second
// on average, tracking up to maxSenders senders.
func NewRateLimiter(rate float64, burst, maxSenders int) *RateLimiter {
	return &RateLimiter{
		rate:       max(rate, 0),
		burst:      float64(max(burst, 1)),
		maxSenders: max(maxSenders, 1),
		senders:    map[netip.Addr]*tokens{},
	}
}

// Allow takes a token from from's bucket at now and reports whether there
// was one.
func (l *RateLimiter) Allow(from netip.Addr, now time.Time) bool {
	from = from.Unmap()
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.senders[from]
	if !ok {
		if len(l.senders) >= l.maxSenders {
			l.evict(now)
		}
		t = &tokens{n: l.burst, last: now}
		l.senders[from] = t
	}
	if now.After(t.last) {
		t.n = min(l.burst, t.n+now.Sub(t.last).Seconds()*l.rate)
		t.last = now
	}
	if t.n < 1 {
		return false
	}
	t.n--
	return true
}

// evict drops the senders whose buckets have refilled (forgetting them
// loses nothing); if none has, it drops one arbitrary sender, so a flood
// of new addresses costs old senders at most their saved-up burst.
func (l *RateLimiter) evict(now time.Time) {
	for a, t := range l.senders {
		if t.n+now.Sub(t.last).Seconds()*l.rate >= l.burst {
			delete(l.senders, a)
		}
	}
	if len(l.senders) < l.maxSenders {
		return
	}
	for a := range l.senders {
		delete(l.senders, a)
		return
	}
}
