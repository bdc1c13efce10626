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
	mu sync.Mutex
	b  *buckets[netip.Addr]
}

type tokens struct {
	n    float64
	last time.Time
}

// NewRateLimiter allows each sender burst calls at once and rate per second
// on average, tracking up to maxSenders senders.
func NewRateLimiter(rate float64, burst, maxSenders int) *RateLimiter {
	return &RateLimiter{b: newBuckets[netip.Addr](max(rate, 0), max(burst, 1), max(maxSenders, 1))}
}

// Allow takes a token from from's bucket at now and reports whether there
// was one.
func (l *RateLimiter) Allow(from netip.Addr, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.allow(from.Unmap(), now)
}
